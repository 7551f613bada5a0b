//! Comparing file trees: the archive module's per-entry digest (kind, mode, owner, size,
//! content hash, link target, device number, xattrs, mtime) plus the root's own entry, and an
//! assertion that prints what differs.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::archive::DigestOptions;
pub use crate::archive::{EntryKind, EntrySummary as Entry};

/// A tree: entries by path relative to its root (`.` is the root itself), as summarised by
/// [`crate::archive::tree_digest`], with mtimes of files and symlinks in whole seconds (what
/// a ustar header keeps) and none for directories (they change with every entry added).
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, e) in &self.entries {
            writeln!(f, "{:?} {} {:o} {}:{} {} {:?} {:?}", e.kind, p.display(), e.mode, e.uid, e.gid, e.size, e.sha256, e.link_target)?;
        }
        Ok(())
    }
}

impl Tree {
    /// One sha256 over the whole tree (without mtimes), for a short comparison in messages.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (p, e) in &self.entries {
            let mut e = e.clone();
            e.mtime_ns = None;
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(format!("\0{e:?}\0"));
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

/// Digest of the tree at `root` (a mounted layer or a plain directory). Panics on IO errors:
/// it is a test helper, and an unreadable tree is a failure.
pub fn tree_digest(root: &Path) -> Tree {
    let opts = DigestOptions { mtimes: true, dir_mtimes: false };
    let mut entries =
        crate::archive::tree_digest(root, opts).unwrap_or_else(|e| panic!("digest of {}: {e}", root.display()));
    for e in entries.values_mut() {
        e.mtime_ns = e.mtime_ns.map(|ns| ns.div_euclid(1_000_000_000) * 1_000_000_000);
    }
    // The root itself (the archive digest covers what is below it): mode and owner matter.
    let m = std::fs::symlink_metadata(root).unwrap_or_else(|e| panic!("stat {}: {e}", root.display()));
    let mut xattrs = BTreeMap::new();
    for n in xattr::list(root).into_iter().flatten() {
        let name = n.to_string_lossy().into_owned();
        if !name.starts_with("trusted.overlay.") {
            if let Ok(Some(v)) = xattr::get(root, &n) {
                xattrs.insert(name, v);
            }
        }
    }
    entries.insert(
        PathBuf::from("."),
        Entry {
            kind: EntryKind::Dir,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: 0,
            sha256: None,
            link_target: None,
            rdev: None,
            xattrs,
            mtime_ns: None,
        },
    );
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
                    a.mtime_ns = None;
                    b.mtime_ns = None;
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
