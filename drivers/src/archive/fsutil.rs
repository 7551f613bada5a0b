//! Thin wrappers over the `*at` system calls, working on directory file descriptors.
//!
//! Every write of [`super::apply`] goes through a [`Dir`] that was reached from the layer root
//! one component at a time with `O_NOFOLLOW`, and names a single component inside it. A
//! symlink can therefore never redirect a write, whatever the tar contains.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An open directory (an `O_PATH`-less, readable directory descriptor).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// `lstat` result of one directory entry.
pub type Stat = libc::stat;

pub fn file_type(st: &Stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

pub fn is_dir(st: &Stat) -> bool {
    file_type(st) == libc::S_IFDIR
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Dir {
    /// Open `path` itself as a directory, refusing a symlink at its last component.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str())?;
        let fd = unsafe {
            libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Open `path` as a directory, following symlinks (for a path given by the caller, not
    /// one taken from a layer).
    pub fn open_following(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str())?;
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir { fd: self.fd.try_clone()? })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A path that names `name` inside this directory through `/proc/self/fd`, for the calls
    /// that have no `*at` form (xattrs). The directory part is the open descriptor itself, so
    /// only `name` is resolved, and the `l*` calls used on it do not follow a final symlink.
    pub fn proc_path(&self, name: &OsStr) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.raw()));
        if !name.is_empty() {
            p.push(name);
        }
        p
    }

    /// Open child directory `name` without following a symlink. ENOTDIR / ELOOP when it is
    /// not a directory (a symlink gives ELOOP or ENOTDIR depending on the kernel path taken).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let c = cstr(name)?;
        let fd = unsafe {
            libc::openat(self.raw(), c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)`; `Ok(None)` when the entry does not exist.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let c = cstr(name)?;
        let mut st: Stat = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(st))
    }

    /// `fstat` of the directory itself.
    pub fn stat_self(&self) -> io::Result<Stat> {
        let mut st: Stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(self.raw(), &mut st) })?;
        Ok(st)
    }

    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::mkdirat(self.raw(), c.as_ptr(), mode as libc::mode_t) })
    }

    /// Create a regular file that must not exist yet (`O_EXCL|O_NOFOLLOW`).
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
        let c = cstr(name)?;
        let fd = unsafe {
            libc::openat(
                self.raw(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// Open an existing regular file for reading, refusing a symlink.
    pub fn open_file(&self, name: &OsStr) -> io::Result<std::fs::File> {
        let c = cstr(name)?;
        let fd = unsafe { libc::openat(self.raw(), c.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        let t = cstr(target)?;
        let c = cstr(name)?;
        check(unsafe { libc::symlinkat(t.as_ptr(), self.raw(), c.as_ptr()) })
    }

    /// Hard link `src_dir/src_name` as `self/name`; a symlink source is linked itself (no
    /// `AT_SYMLINK_FOLLOW`).
    pub fn link_from(&self, src_dir: &Dir, src_name: &OsStr, name: &OsStr) -> io::Result<()> {
        let s = cstr(src_name)?;
        let c = cstr(name)?;
        check(unsafe { libc::linkat(src_dir.raw(), s.as_ptr(), self.raw(), c.as_ptr(), 0) })
    }

    pub fn mknod(&self, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::mknodat(self.raw(), c.as_ptr(), mode as libc::mode_t, dev) })
    }

    pub fn lchown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::fchownat(self.raw(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
    }

    /// chmod of a non-symlink entry. Linux has no `lchmod`; callers only use this on entries
    /// they just created or checked with `stat` (never a symlink), and the entry is named by
    /// one component inside an already-resolved directory.
    pub fn chmod(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::fchmodat(self.raw(), c.as_ptr(), mode as libc::mode_t, 0) })
    }

    /// Set atime and mtime (both to `mtime`), not following a symlink.
    pub fn set_mtime(&self, name: &OsStr, secs: i64, nsecs: u32) -> io::Result<()> {
        let c = cstr(name)?;
        let ts = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsecs as _ };
        let times = [ts, ts];
        check(unsafe { libc::utimensat(self.raw(), c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
    }

    pub fn set_mtime_self(&self, secs: i64, nsecs: u32) -> io::Result<()> {
        let ts = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsecs as _ };
        let times = [ts, ts];
        check(unsafe { libc::futimens(self.raw(), times.as_ptr()) })
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) })
    }

    pub fn rmdir(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), libc::AT_REMOVEDIR) })
    }

    /// Names in this directory (without `.` and `..`), sorted. Reads through a fresh open of
    /// `.` (its own file offset), so repeated calls each see the whole directory.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        let d = self.open_dir(OsStr::new("."))?;
        let fd = unsafe { libc::fcntl(d.raw(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rd = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
        let mut v = Vec::new();
        for e in rd.iter() {
            let e = e.map_err(io::Error::from)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                v.push(std::ffi::OsString::from(OsStr::from_bytes(n)));
            }
        }
        v.sort();
        Ok(v)
    }

    /// Remove `name` and, when it is a directory, everything below it. Never follows a
    /// symlink: a symlink is unlinked, not its target. Open descriptors stay bounded whatever
    /// the depth ([`super::remove`]).
    pub fn remove_all(&self, name: &OsStr) -> io::Result<()> {
        super::remove::remove_all_at(self, name)
    }

    /// Set an xattr on `name` (empty: the directory itself) without following a symlink.
    pub fn set_xattr(&self, name: &OsStr, key: &OsStr, value: &[u8]) -> io::Result<()> {
        let k = cstr(key)?;
        if name.is_empty() {
            return check(unsafe {
                libc::fsetxattr(self.raw(), k.as_ptr(), value.as_ptr() as *const libc::c_void, value.len(), 0)
            });
        }
        let p = cstr(self.proc_path(name).as_os_str())?;
        check(unsafe {
            libc::lsetxattr(p.as_ptr(), k.as_ptr(), value.as_ptr() as *const libc::c_void, value.len(), 0)
        })
    }
}

/// `lstat` of a path (no `*at`), `Ok(None)` when absent.
pub fn lstat(path: &Path) -> io::Result<Option<Stat>> {
    let c = cstr(path.as_os_str())?;
    let mut st: Stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::lstat(c.as_ptr(), &mut st) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// All xattrs of `path` (not following a symlink), sorted by name. Filesystems without xattr
/// support give an empty list.
pub fn xattrs(path: &Path) -> io::Result<Vec<(std::ffi::OsString, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        if let Some(v) = xattr::get(path, &n)? {
            out.push((n, v));
        }
    }
    out.sort();
    Ok(out)
}

/// True for xattrs that belong to overlayfs itself and never travel in a layer tar.
pub fn is_overlay_xattr(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"trusted.overlay.")
}

/// The 0/0 character device overlayfs uses as a whiteout.
pub fn is_overlay_whiteout(st: &Stat) -> bool {
    file_type(st) == libc::S_IFCHR && st.st_rdev == 0
}

pub fn is_overlay_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}
