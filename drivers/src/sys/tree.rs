//! Whole-tree operations on plain directories: a faithful copy (the vfs backend's "layer"),
//! the size of a tree, removal, bind mounts and mount ids, and small checks of what the
//! backing filesystem can do. Used by vfs, overlay, btrfs, zfs, devicemapper, the rollback of
//! applies and the ledger.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::MsFlags;

use crate::driver::Usage;

/// How regular-file contents were copied. Recorded so status can say which one ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// FICLONE: the destination shares the source's extents (btrfs, xfs with reflink).
    Reflink,
    /// copy_file_range(2): in-kernel copy (server-side on NFS, plain copy on ext4).
    CopyFileRange,
    /// read/write through user space.
    ReadWrite,
}

impl CopyMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink (FICLONE)",
            CopyMethod::CopyFileRange => "copy_file_range",
            CopyMethod::ReadWrite => "read/write",
        }
    }
}

/// Counts of one tree copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub reflinked: u64,
    pub copy_file_range: u64,
    pub read_write: u64,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `lchown` (does not follow a symlink).
pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

/// Set atime and mtime without following a symlink.
pub fn set_times(p: &Path, md: &fs::Metadata) -> io::Result<()> {
    let c = cstr(p)?;
    let ts = [
        libc::timespec { tv_sec: md.atime() as _, tv_nsec: md.atime_nsec() as _ },
        libc::timespec { tv_sec: md.mtime() as _, tv_nsec: md.mtime_nsec() as _ },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let names = match xattr::list(src) {
        Ok(n) => n,
        // Filesystems without xattr support have nothing to copy.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(v) = xattr::get(src, &name)? {
            xattr::set(dst, &name, &v)?;
        }
    }
    Ok(())
}

/// Copy the contents of one regular file, preferring a reflink, then copy_file_range, then
/// read/write. The destination must not exist.
pub fn copy_file_data(src: &Path, dst: &Path, stats: &mut CopyStats) -> io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst)?;
    let len = from.metadata()?.len();
    stats.files += 1;
    stats.bytes += len;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source descriptor as its argument.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
    if rc == 0 {
        stats.reflinked += 1;
        return Ok(());
    }
    let mut left = len;
    let mut used_cfr = true;
    while left > 0 {
        // SAFETY: both descriptors are open; null offsets use and advance the file offsets.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                left.min(1 << 30) as usize,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Not supported between these files: fall back to a plain copy of the rest.
                Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                    used_cfr = false;
                    break;
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            break; // file shrank under us
        }
        left -= n as u64;
    }
    if used_cfr {
        stats.copy_file_range += 1;
        return Ok(());
    }
    stats.read_write += 1;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])?;
    }
    Ok(())
}

/// Copy the tree at `src` into `dst` (which must exist as a directory; its own owner, mode,
/// xattrs and times are set from `src`). Keeps modes (setuid, sticky), owners, mtimes,
/// xattrs, hardlinks (within the tree), symlinks, device nodes, fifos and sockets.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    copy_dir(src, dst, &mut links, &mut stats, false)?;
    Ok(stats)
}

/// Like [`copy_tree`], but every entry that is not a directory is hard-linked rather than
/// copied: a snapshot of the tree's shape that costs one link per file, valid as long as the
/// files are replaced rather than written in place. `dst` must be on the same filesystem.
pub fn link_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    copy_dir(src, dst, &mut HashMap::new(), &mut stats, true)?;
    Ok(stats)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
    stats: &mut CopyStats,
    link_files: bool,
) -> io::Result<()> {
    let md = fs::symlink_metadata(src)?;
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s)?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&d)?;
            copy_dir(&s, &d, links, stats, link_files)?;
            continue;
        }
        if link_files {
            fs::hard_link(&s, &d)?;
            stats.files += 1;
            continue;
        }
        if m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &d)?;
                continue;
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            copy_file_data(&s, &d, stats)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            mknod(&d, m.mode(), m.rdev())?;
        } else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("unknown file type at {}", s.display())));
        }
        set_attrs(&s, &d, &m, ft.is_symlink())?;
    }
    // Directory attributes last: adding entries changes the mtime.
    set_attrs(src, dst, &md, false)
}

fn set_attrs(src: &Path, dst: &Path, m: &fs::Metadata, symlink: bool) -> io::Result<()> {
    lchown(dst, m.uid(), m.gid())?;
    if !symlink {
        // After chown, which clears setuid/setgid.
        fs::set_permissions(dst, std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777))?;
    }
    copy_xattrs(src, dst)?;
    set_times(dst, m)
}

/// Bytes and inodes of a tree. Bytes are allocated bytes (`st_blocks * 512`), which is what
/// the layer costs on disk (sparse files count what they allocate); every inode is counted
/// once, so hardlinks are not double-counted. The root directory itself is included.
pub fn usage(root: &Path) -> io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p)?;
        if seen.insert((m.dev(), m.ino())) {
            u.inodes += 1;
            u.bytes += m.blocks() * 512;
        }
        if m.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(u)
}

/// Bind-mount `src` on `target`; read-only when asked (a bind mount ignores MS_RDONLY, so
/// that takes a second, remounting call).
pub fn bind_mount(src: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    nix::mount::mount(Some(src), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)?;
    if readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = crate::sys::mounts::unmount(target);
            return Err(e.into());
        }
    }
    Ok(())
}

/// The ledger id of a mount on `target`: its canonical path (as /proc/self/mountinfo shows it).
pub fn mount_id(target: &Path) -> String {
    fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf()).display().to_string()
}

/// Whether files in `dir` can be opened with O_DIRECT.
pub fn supports_o_direct(dir: &Path) -> bool {
    let p = dir.join(".cowbench-odirect-probe");
    let ok = OpenOptions::new().create(true).truncate(true).write(true).custom_flags(libc::O_DIRECT).open(&p).is_ok();
    let _ = fs::remove_file(&p);
    ok
}

/// Whether `FICLONE` works between two files in `dir`.
pub fn supports_reflink(dir: &Path) -> bool {
    let a = dir.join(".cowbench-reflink-probe-a");
    let b = dir.join(".cowbench-reflink-probe-b");
    let _ = fs::remove_file(&b);
    let ok = (|| -> io::Result<bool> {
        fs::write(&a, b"cowbench")?;
        let mut st = CopyStats::default();
        copy_file_data(&a, &b, &mut st)?;
        Ok(st.reflinked == 1)
    })()
    .unwrap_or(false);
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    ok
}

/// Remove a tree, also when it holds read-only directories or immutable-looking modes
/// (root ignores modes), with NotFound counted as done. Open descriptors stay bounded however
/// deep the tree is ([`crate::archive::remove_tree`]).
pub fn remove_tree(p: &Path) -> io::Result<()> {
    match crate::archive::remove_tree(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copy_keeps_modes_links_and_times() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let dst = d.path().join("dst");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"hello").unwrap();
        fs::hard_link(src.join("sub/f"), src.join("h")).unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o1705)).unwrap();
        fs::create_dir(&dst).unwrap();
        let st = copy_tree(&src, &dst).unwrap();
        assert_eq!(st.files, 1);
        assert_eq!(fs::read(dst.join("h")).unwrap(), b"hello");
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("sub/f"));
        let a = fs::metadata(dst.join("sub/f")).unwrap();
        let b = fs::metadata(dst.join("h")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(fs::metadata(dst.join("sub")).unwrap().mode() & 0o7777, 0o1705);
        assert_eq!(fs::metadata(src.join("sub")).unwrap().mtime(), fs::metadata(dst.join("sub")).unwrap().mtime());
        let u = usage(&dst).unwrap();
        assert_eq!(u.inodes, 4); // dst, sub, f (= h), l
    }
}
