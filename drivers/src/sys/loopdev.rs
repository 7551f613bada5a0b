//! Loop devices through the loop ioctls (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`), not `losetup`.
//!
//! Autoclear (`LO_FLAGS_AUTOCLEAR`) detaches a device on its *last close*, and attach itself
//! closes the device, so a device attached with autoclear is gone before anyone can mount it.
//! The pattern that works: attach without autoclear, let the holder take the device (mount,
//! thin pool, zpool import), then [`detach`]: on a busy device the kernel turns that into
//! autoclear, and the device goes away with its holder.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    // SAFETY: plain-old-data struct, all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Options for [`attach`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// Use direct IO to the backing file (`LO_FLAGS_DIRECT_IO`), which avoids double caching.
    pub direct_io: bool,
    /// Detach on the last close. Rarely what you want at attach time (see the module doc):
    /// attach's own close is that last close unless something already holds the device.
    pub autoclear: bool,
}

/// How often [`attach`] tries again after losing a free device to someone else.
const ATTACH_TRIES: usize = 256;

/// errnos that mean "this device went away (or is being set up or torn down) under us": a
/// device listed a moment ago can be detached, removed or half-configured by another thread or
/// process by the time it is opened or asked. Per device, these are not errors.
fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ENODEV) | Some(libc::ENOENT))
}

/// Attach `file` to a free loop device and return its path (`/dev/loopN`).
///
/// Safe against concurrent attaches from other threads and processes: `LOOP_CTL_GET_FREE` only
/// names a device that is free *now*, so two callers can be handed the same one; the loser's
/// `LOOP_CONFIGURE` (or `LOOP_SET_FD`) fails with EBUSY and it asks for another. A device torn
/// down between the two calls (ENXIO, ENODEV) is skipped the same way. The returned path is the
/// device this call configured: hold on to it rather than searching for it by file later.
pub fn attach(file: &Path, opts: AttachOptions) -> io::Result<PathBuf> {
    let backing = OpenOptions::new().read(true).write(true).open(file)?;
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    let mut info = zeroed_info();
    let name = file.as_os_str().as_encoded_bytes();
    let len = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..len].copy_from_slice(&name[..len]);
    if opts.autoclear {
        info.lo_flags |= LO_FLAGS_AUTOCLEAR;
    }
    if opts.direct_io {
        info.lo_flags |= LO_FLAGS_DIRECT_IO;
    }
    let mut last = None;
    for _ in 0..ATTACH_TRIES {
        // SAFETY: ioctl without argument on the loop control device.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dev_path = PathBuf::from(format!("/dev/loop{n}"));
        ensure_node(&dev_path, n as u32)?;
        let dev = match OpenOptions::new().read(true).write(true).open(&dev_path) {
            Ok(d) => d,
            Err(e) if vanished(&e) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        match configure(&dev, &backing, &info) {
            Ok(()) => return Ok(dev_path),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) || vanished(&e) => {
                last = Some(e);
                // Let the winner finish before asking for the next free device.
                std::thread::yield_now();
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::Other,
        format!(
            "no free loop device for {} after {ATTACH_TRIES} tries (last: {})",
            file.display(),
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

/// Attach `file` with direct IO to it where the kernel and the backing filesystem allow, else
/// buffered; returns the device and whether direct IO took (read back from the device, as the
/// kernel reports it, not as asked).
///
/// A buffered loop device caches every block twice: once in the page cache of the filesystem
/// on the device, once in the page cache of the backing file. Memory figures of a loop-backed
/// store then count the backing file's copy on top of the readers' own (and with cgroup v2 the
/// kernel charges it to the cgroup that issued the IO). With direct IO only the upper copy
/// exists, as on a real disk. Filesystems without O_DIRECT (tmpfs before 6.6, some FUSE and
/// network filesystems) refuse it with EINVAL; the device is then attached buffered.
pub fn attach_prefer_direct(file: &Path) -> io::Result<(PathBuf, bool)> {
    let dev = match attach(file, AttachOptions { direct_io: true, autoclear: false }) {
        Ok(dev) => dev,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::info!("loop: no direct IO to {} ({e}); attached buffered", file.display());
            attach(file, AttachOptions { direct_io: false, autoclear: false })?
        }
        Err(e) => return Err(e),
    };
    let dio = direct_io(&dev).unwrap_or(false);
    Ok((dev, dio))
}

/// Bind `backing` to the loop device `dev` in one step (`LOOP_CONFIGURE`), or with
/// `LOOP_SET_FD` + `LOOP_SET_STATUS64` on kernels before 5.8.
fn configure(dev: &File, backing: &File, info: &LoopInfo64) -> io::Result<()> {
    let cfg = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info: *info, reserved: [0; 8] };
    // SAFETY: LOOP_CONFIGURE reads a struct loop_config we own.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) {
        return Err(err);
    }
    // SAFETY: documented loop ioctls with a descriptor / struct we own.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, info as *const LoopInfo64) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: as above. The device is ours (SET_FD succeeded): give it back.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        return Err(e);
    }
    Ok(())
}

/// Detach a loop device. A device still in use is marked autoclear by the kernel and goes
/// away once released (EBUSY is not an error then); a device already gone is not an error.
///
/// Only for a device this process attached and still holds the path of. Anything found by
/// searching goes through [`detach_if_backed_by`]: its number may have been reused since.
pub fn detach(dev: &Path) -> io::Result<()> {
    let f = match OpenOptions::new().read(true).open(dev) {
        Ok(f) => f,
        Err(e) if vanished(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    clear(&f)
}

fn clear(f: &File) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no pointer.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if !vanished(&e) {
            return Err(e);
        }
    }
    Ok(())
}

/// Detach `dev` only if it is still backed by `file` (the same inode); whether it was.
///
/// The check and the detach happen on one open descriptor: while it is open the kernel turns
/// any other `LOOP_CLR_FD` into autoclear, so the device cannot be cleared and handed to someone
/// else's file between the two.
pub fn detach_if_backed_by(dev: &Path, file: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(file)?;
    let f = match OpenOptions::new().read(true).open(dev) {
        Ok(f) => f,
        Err(e) if vanished(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let info = match status(&f) {
        Ok(i) => i,
        Err(e) if vanished(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    if info.lo_inode != want.ino() || info.lo_device != want.dev() {
        return Ok(false);
    }
    clear(&f)?;
    Ok(true)
}

/// Detach every loop device backed by `file`; how many were.
pub fn detach_all_of(file: &Path) -> io::Result<usize> {
    let mut n = 0;
    for dev in find_by_file(file)? {
        if detach_if_backed_by(&dev, file)? {
            n += 1;
        }
    }
    Ok(n)
}

fn status(f: &File) -> io::Result<LoopInfo64> {
    let mut info = zeroed_info();
    // SAFETY: LOOP_GET_STATUS64 fills a struct we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// The backing file of a loop device, if attached (`None` also for a device that went away
/// while being asked).
pub fn backing_file(dev: &Path) -> io::Result<Option<PathBuf>> {
    // sysfs has the full path; the ioctl name field is truncated at 64 bytes. The `loop`
    // directory exists only while the device is bound, and a read racing with the detach that
    // removes it fails with ENODEV.
    let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) {
        Ok(s) => Ok(Some(PathBuf::from(s.trim_end_matches('\n')))),
        Err(e) if vanished(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Wait up to `timeout` until `dev` no longer serves `file`. A `LOOP_CLR_FD` on a device that
/// another process still holds open (an orphaned `mkfs`, a reader) only sets autoclear, and the
/// device stays bound until that process closes it: whether it was released in time.
pub fn wait_released(dev: &Path, file: &Path, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match backing_file(dev)? {
            Some(b) if Path::new(b.to_string_lossy().trim_end_matches(DELETED)) == file => {}
            _ => return Ok(true),
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// sysfs (d_path) marks a backing file unlinked since the attach with this suffix.
const DELETED: &str = " (deleted)";

/// Every attached loop device whose backing file is `file` (the file now at that path: a
/// device still holding an earlier, since unlinked file of the same name is not listed,
/// unless no file has the name any more).
///
/// Reads sysfs only and never opens a device (an open would delay someone else's detach).
/// Devices come and go while it looks: one that vanishes, or is half set up, is skipped; only
/// a failure to list `/sys/block` itself is an error. The scan is no snapshot: while a file
/// moves from one device to another it can list both, so detach what it finds only through
/// [`detach_if_backed_by`].
pub fn find_by_file(file: &Path) -> io::Result<Vec<PathBuf>> {
    let exists = file.exists();
    let want = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let dev = PathBuf::from(format!("/dev/{name}"));
        let b = match backing_file(&dev) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                log::debug!("loop: skip {}: {e}", dev.display());
                continue;
            }
        };
        let s = b.to_string_lossy();
        let b = match s.strip_suffix(DELETED) {
            Some(_) if exists => continue,
            Some(p) => PathBuf::from(p),
            None => b,
        };
        if b == want {
            out.push(dev);
        }
    }
    out.sort_by_key(|d| d.to_string_lossy().trim_start_matches("/dev/loop").parse::<u32>().unwrap_or(u32::MAX));
    Ok(out)
}

/// Whether direct IO is on for an attached device (`LO_FLAGS_DIRECT_IO`).
pub fn direct_io(dev: &Path) -> io::Result<bool> {
    let f = File::open(dev)?;
    Ok(status(&f)?.lo_flags & LO_FLAGS_DIRECT_IO != 0)
}

/// Without udev (the VM, containers) nothing may have made /dev/loopN: make the block node.
/// A node that is missing, or is not block device 7:N (a stale file), is replaced atomically
/// ([`replace_block_node`]), so the path never goes missing for a concurrent user and two
/// threads making it at once both succeed.
fn ensure_node(path: &Path, n: u32) -> io::Result<()> {
    let dev = libc::makedev(7, n);
    if is_block_node(path, dev) {
        return Ok(());
    }
    replace_block_node(path, dev)
}

/// Whether `path` itself (not a link) is the block node of `dev`.
pub(crate) fn is_block_node(path: &Path, dev: libc::dev_t) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == dev)
}

/// Make block node `path` for `dev` atomically: mknod under a name private to this thread,
/// then rename it over `path`.
pub(crate) fn replace_block_node(path: &Path, dev: libc::dev_t) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file}.{}.{seq}.new", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    mknod_block(&tmp, dev)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn mknod_block(path: &Path, dev: libc::dev_t) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: mknod with a valid C string.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o660, dev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Create a sparse file of `bytes` (or grow an existing one to it).
pub fn create_sparse(file: &Path, bytes: u64) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(file)?;
    if f.metadata()?.len() < bytes {
        f.set_len(bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    /// Whether loop devices can be attached here (root, /dev/loop-control); says so if not.
    fn can_attach() -> bool {
        let ok = nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists();
        if !ok {
            eprintln!("SKIPPED: needs root and /dev/loop-control");
        }
        ok
    }

    #[test]
    fn attach_find_detach() {
        if !can_attach() {
            return;
        }
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let (f, other) = (d.path().join("img"), d.path().join("other"));
        create_sparse(&f, 16 << 20).unwrap();
        create_sparse(&other, 16 << 20).unwrap();
        let dev = attach(&f, AttachOptions::default()).unwrap();
        assert_eq!(find_by_file(&f).unwrap(), vec![dev.clone()]);
        assert!(find_by_file(&other).unwrap().is_empty());
        assert!(!direct_io(&dev).unwrap());
        // Not over `other`: left alone.
        assert!(!detach_if_backed_by(&dev, &other).unwrap());
        assert_eq!(find_by_file(&f).unwrap(), vec![dev.clone()]);
        assert!(detach_if_backed_by(&dev, &f).unwrap());
        assert!(find_by_file(&f).unwrap().is_empty());
        // Gone already: neither is an error.
        detach(&dev).unwrap();
        assert!(!detach_if_backed_by(&dev, &f).unwrap());
    }

    #[test]
    fn direct_io_takes_on_a_filesystem_with_o_direct() {
        if !can_attach() {
            return;
        }
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let f = d.path().join("img");
        create_sparse(&f, 16 << 20).unwrap();
        // Whether /var/tmp takes O_DIRECT, asked independently of the loop driver.
        let o_direct = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&f).is_ok();
        let (dev, dio) = attach_prefer_direct(&f).unwrap();
        let reported = direct_io(&dev);
        detach(&dev).unwrap();
        assert_eq!(reported.unwrap(), dio);
        if o_direct {
            assert!(dio, "{} takes O_DIRECT, but the loop device over it does buffered IO", f.display());
        }
    }

    #[test]
    fn a_device_over_an_unlinked_file_is_not_the_new_file_of_that_name() {
        if !can_attach() {
            return;
        }
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let f = d.path().join("img");
        create_sparse(&f, 16 << 20).unwrap();
        let dev = attach(&f, AttachOptions::default()).unwrap();
        std::fs::remove_file(&f).unwrap();
        // No file of that name: the device over the unlinked one is what is left of it.
        let found = find_by_file(&f);
        create_sparse(&f, 16 << 20).unwrap();
        let found_new = find_by_file(&f);
        assert!(!detach_if_backed_by(&dev, &f).unwrap());
        detach(&dev).unwrap();
        assert_eq!(found.unwrap(), vec![dev]);
        assert!(found_new.unwrap().is_empty());
    }
}
