//! Mount helpers: mount(2)/umount2(2) via nix, and reading /proc/self/mountinfo.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside the source filesystem that is mounted (a bind mount's or subvolume's
    /// directory; `/` for a whole filesystem).
    pub root: String,
    pub target: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
    pub super_options: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount visible to this process.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let (pre, post) = match line.split_once(" - ") {
            Some(x) => x,
            None => continue,
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 6 || post.len() < 3 {
            continue;
        }
        out.push(MountEntry {
            root: unescape(pre[3]),
            target: PathBuf::from(unescape(pre[4])),
            options: pre[5].to_string(),
            fstype: post[0].to_string(),
            source: unescape(post[1]),
            super_options: post[2].to_string(),
        });
    }
    Ok(out)
}

/// The mount at exactly `path`, if any (the last one, when mounts are stacked).
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(mounts()?.into_iter().rev().find(|m| m.target == path))
}

pub fn is_mountpoint(path: &Path) -> bool {
    matches!(mount_at(path), Ok(Some(_)))
}

/// Mounts at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> io::Result<Vec<MountEntry>> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut v: Vec<MountEntry> = mounts()?.into_iter().filter(|m| m.target.starts_with(&dir)).collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.target.components().count()));
    Ok(v)
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(io::Error::from)
}

/// Unmount `target`; EINVAL (not a mount point) counts as done. FUSE mounts are unmounted the
/// same way (as root, umount2 works for them and the daemon exits).
pub fn unmount(target: &Path) -> io::Result<()> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            // Something still has files open (a dying container): retry briefly, then detach
            // lazily so teardown never hangs on a busy mount.
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                match nix::mount::umount2(target, MntFlags::empty()) {
                    Ok(()) | Err(nix::errno::Errno::EINVAL) => return Ok(()),
                    Err(nix::errno::Errno::EBUSY) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Unmount everything at or below `dir`, deepest first.
pub fn unmount_all_under(dir: &Path) -> io::Result<()> {
    let mut first_err = None;
    for m in mounts_under(dir)? {
        if let Err(e) = unmount(&m.target) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Filesystem type name of the filesystem holding `path` (from mountinfo, longest prefix).
pub fn fstype_of(path: &Path) -> io::Result<MountEntry> {
    let path = std::fs::canonicalize(path)?;
    mounts()?
        .into_iter()
        .filter(|m| path.starts_with(&m.target))
        .max_by_key(|m| m.target.components().count())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no mount holds this path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mountpoint(Path::new("/")));
        assert!(fstype_of(Path::new("/proc/self")).unwrap().fstype == "proc");
    }
}
