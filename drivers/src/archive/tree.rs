//! A comparable summary of a directory tree, for checking a mounted layer against a reference
//! tree (conformance suite, archive round trips).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::fsutil;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// What [`tree_digest`] records of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySummary {
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of a regular file or symlink target; 0 for others.
    pub size: u64,
    /// SHA-256 of a regular file's content, hex.
    pub sha256: Option<String>,
    pub link_target: Option<PathBuf>,
    /// (major, minor) of a device node.
    pub rdev: Option<(u32, u32)>,
    /// All xattrs except overlayfs's own `trusted.overlay.*`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time in nanoseconds since the epoch, when asked for.
    pub mtime_ns: Option<i128>,
}

/// Which timestamps [`tree_digest`] records. Directory mtimes change whenever an entry is
/// created in them, so they are a separate choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestOptions {
    /// mtimes of everything but directories.
    pub mtimes: bool,
    /// mtimes of directories.
    pub dir_mtimes: bool,
}

impl DigestOptions {
    pub const CONTENT: DigestOptions = DigestOptions { mtimes: false, dir_mtimes: false };
    pub const ALL: DigestOptions = DigestOptions { mtimes: true, dir_mtimes: true };
}

/// Summarise every entry below `root` (not `root` itself), keyed by path relative to `root`.
/// Symlinks are recorded, never followed.
pub fn tree_digest(root: &Path, opts: DigestOptions) -> io::Result<BTreeMap<PathBuf, EntrySummary>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name().min_depth(1) {
        let e = e.map_err(|e| e.into_io_error().unwrap_or_else(|| io::Error::other("walk error")))?;
        let p = e.path();
        let st = fsutil::lstat(p)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, p.display().to_string()))?;
        let kind = match fsutil::file_type(&st) {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFCHR => EntryKind::CharDevice,
            libc::S_IFBLK => EntryKind::BlockDevice,
            libc::S_IFIFO => EntryKind::Fifo,
            _ => EntryKind::Socket,
        };
        let mut s = EntrySummary {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: 0,
            sha256: None,
            link_target: None,
            rdev: None,
            xattrs: BTreeMap::new(),
            mtime_ns: None,
        };
        match kind {
            EntryKind::File => {
                s.size = st.st_size as u64;
                let mut f = std::fs::File::open(p)?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                s.sha256 = Some(hex::encode(h.finalize()));
            }
            EntryKind::Symlink => {
                let t = std::fs::read_link(p)?;
                s.size = t.as_os_str().as_bytes().len() as u64;
                s.link_target = Some(t);
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                s.rdev = Some((libc::major(st.st_rdev), libc::minor(st.st_rdev)));
            }
            _ => {}
        }
        for (k, v) in fsutil::xattrs(p)? {
            if !fsutil::is_overlay_xattr(&k) {
                s.xattrs.insert(k.to_string_lossy().into_owned(), v);
            }
        }
        let want_mtime = if kind == EntryKind::Dir { opts.dir_mtimes } else { opts.mtimes };
        if want_mtime {
            s.mtime_ns = Some(st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128);
        }
        let rel = p.strip_prefix(root).expect("walkdir stays below root").to_path_buf();
        out.insert(rel, s);
    }
    Ok(out)
}

/// Human-readable differences between two digests (empty when equal), for test messages.
pub fn digest_differences(
    a: &BTreeMap<PathBuf, EntrySummary>,
    b: &BTreeMap<PathBuf, EntrySummary>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, x) in a {
        match b.get(p) {
            None => out.push(format!("only in first: {}", p.display())),
            Some(y) if x != y => out.push(format!("differs: {}: {x:?} != {y:?}", p.display())),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.push(format!("only in second: {}", p.display()));
        }
    }
    out
}
