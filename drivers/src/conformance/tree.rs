//! Comparing file trees: a per-entry digest (kind, mode, owner, size, content hash, link
//! target, device number, xattrs, mtime) and an assertion that prints what differs.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d` dir, `f` file, `l` symlink, `c` char dev, `b` block dev, `p` fifo, `s` socket.
    pub kind: char,
    /// Permission bits including setuid, setgid, sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of files and symlinks (directory sizes depend on the filesystem: 0 here).
    pub size: u64,
    /// sha256 of a file's content, or the target of a symlink.
    pub content: String,
    pub rdev: u64,
    /// Extended attributes, except the overlayfs-private `trusted.overlay.*`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time in whole seconds (files and symlinks; a directory's changes with
    /// every entry added below it, so it is not compared).
    pub mtime: i64,
}

/// A tree: entries by path relative to its root (`.` is the root itself).
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, e) in &self.entries {
            writeln!(f, "{} {} {:o} {}:{} {} {}", e.kind, p.display(), e.mode, e.uid, e.gid, e.size, e.content)?;
        }
        Ok(())
    }
}

impl Tree {
    /// One sha256 over the whole tree (without mtimes), for a short comparison in messages.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (p, e) in &self.entries {
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(format!("\0{}{:o}:{}:{}:{}:{}:{}\0", e.kind, e.mode, e.uid, e.gid, e.size, e.content, e.rdev));
            for (k, v) in &e.xattrs {
                h.update(k.as_bytes());
                h.update(v);
            }
        }
        hex::encode(h.finalize())
    }

    pub fn get(&self, p: &str) -> Option<&Entry> {
        self.entries.get(Path::new(p))
    }

    /// Paths only.
    pub fn paths(&self) -> Vec<String> {
        self.entries.keys().map(|p| p.display().to_string()).collect()
    }
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn entry(p: &Path) -> std::io::Result<Entry> {
    let m = fs::symlink_metadata(p)?;
    let ft = m.file_type();
    let (kind, size, content) = if ft.is_dir() {
        ('d', 0, String::new())
    } else if ft.is_symlink() {
        let t = fs::read_link(p)?;
        ('l', m.len(), t.display().to_string())
    } else if ft.is_file() {
        ('f', m.len(), hash_file(p)?)
    } else if ft.is_char_device() {
        ('c', 0, String::new())
    } else if ft.is_block_device() {
        ('b', 0, String::new())
    } else if ft.is_fifo() {
        ('p', 0, String::new())
    } else {
        ('s', 0, String::new())
    };
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = xattr::list(p) {
        for n in names {
            let name = n.to_string_lossy().into_owned();
            if name.starts_with("trusted.overlay.") || name == "security.selinux" {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(p, &n) {
                xattrs.insert(name, v);
            }
        }
    }
    Ok(Entry {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size,
        content,
        rdev: if kind == 'c' || kind == 'b' { m.rdev() } else { 0 },
        xattrs,
        mtime: if kind == 'd' { 0 } else { m.mtime() },
    })
}

/// Digest of the tree at `root` (a mounted layer or a plain directory). Panics on IO errors:
/// it is a test helper, and an unreadable tree is a failure.
pub fn tree_digest(root: &Path) -> Tree {
    let mut entries = BTreeMap::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let abs = if rel == Path::new(".") { root.to_path_buf() } else { root.join(&rel) };
        let e = entry(&abs).unwrap_or_else(|e| panic!("stat {}: {e}", abs.display()));
        if e.kind == 'd' {
            for c in fs::read_dir(&abs).unwrap_or_else(|e| panic!("read_dir {}: {e}", abs.display())) {
                let c = c.unwrap_or_else(|e| panic!("read_dir {}: {e}", abs.display()));
                let r = if rel == Path::new(".") { PathBuf::from(c.file_name()) } else { rel.join(c.file_name()) };
                stack.push(r);
            }
        }
        entries.insert(rel, e);
    }
    Tree { entries }
}

/// Assert two trees are equal; `mtimes` also compares file and symlink mtimes. The message
/// lists every differing path.
pub fn assert_trees_eq(left: &Tree, right: &Tree, mtimes: bool, what: &str) {
    let mut diffs = Vec::new();
    for (p, a) in &left.entries {
        match right.entries.get(p) {
            None => diffs.push(format!("only left: {} {:?}", p.display(), a)),
            Some(b) => {
                let mut a = a.clone();
                let mut b = b.clone();
                if !mtimes {
                    a.mtime = 0;
                    b.mtime = 0;
                }
                if a != b {
                    diffs.push(format!("differs: {}\n   left  {:?}\n   right {:?}", p.display(), a, b));
                }
            }
        }
    }
    for (p, b) in &right.entries {
        if !left.entries.contains_key(p) {
            diffs.push(format!("only right: {} {:?}", p.display(), b));
        }
    }
    assert!(diffs.is_empty(), "{what}: trees differ in {} entries:\n{}", diffs.len(), diffs.join("\n"));
}
