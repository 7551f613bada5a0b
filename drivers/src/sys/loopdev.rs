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

/// Attach `file` to a free loop device and return its path (`/dev/loopN`).
pub fn attach(file: &Path, opts: AttachOptions) -> io::Result<PathBuf> {
    let backing = OpenOptions::new().read(true).write(true).open(file)?;
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    // Another process can take the device between GET_FREE and CONFIGURE: retry on EBUSY.
    for _ in 0..32 {
        // SAFETY: ioctl without argument on the loop control device.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dev_path = PathBuf::from(format!("/dev/loop{n}"));
        ensure_node(&dev_path, n as u32)?;
        let dev = OpenOptions::new().read(true).write(true).open(&dev_path)?;
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
        let cfg = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info, reserved: [0; 8] };
        // SAFETY: LOOP_CONFIGURE reads a struct loop_config we own.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) };
        if rc == 0 {
            return Ok(dev_path);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => continue,
            // Kernels before 5.8 lack LOOP_CONFIGURE: fall back to SET_FD + SET_STATUS64.
            Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                // SAFETY: documented loop ioctls with a descriptor / struct we own.
                let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        continue;
                    }
                    return Err(e);
                }
                let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info as *const LoopInfo64) };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
                    return Err(e);
                }
                return Ok(dev_path);
            }
            _ => return Err(err),
        }
    }
    Err(io::Error::new(io::ErrorKind::Other, "no free loop device after 32 tries"))
}

/// Detach a loop device. A device still in use is marked autoclear by the kernel and goes
/// away once released (EBUSY is not an error then).
pub fn detach(dev: &Path) -> io::Result<()> {
    let f = match OpenOptions::new().read(true).open(dev) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: LOOP_CLR_FD takes no pointer.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(e);
        }
    }
    Ok(())
}

/// The backing file of a loop device, if attached.
pub fn backing_file(dev: &Path) -> io::Result<Option<PathBuf>> {
    // sysfs has the full path; the ioctl name field is truncated at 64 bytes.
    let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) {
        Ok(s) => Ok(Some(PathBuf::from(s.trim_end()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every attached loop device whose backing file is `file`.
pub fn find_by_file(file: &Path) -> io::Result<Vec<PathBuf>> {
    let want = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let dev = PathBuf::from(format!("/dev/{name}"));
        if let Some(b) = backing_file(&dev)? {
            // sysfs appends " (deleted)" when the file was unlinked.
            let b = PathBuf::from(b.to_string_lossy().trim_end_matches(" (deleted)"));
            if b == want {
                out.push(dev);
            }
        }
    }
    Ok(out)
}

/// Whether direct IO is on for an attached device (`LO_FLAGS_DIRECT_IO`).
pub fn direct_io(dev: &Path) -> io::Result<bool> {
    let f = File::open(dev)?;
    let mut info = zeroed_info();
    // SAFETY: LOOP_GET_STATUS64 fills a struct we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.lo_flags & LO_FLAGS_DIRECT_IO != 0)
}

/// Without udev (containers, the VM host) /dev/loopN may not exist yet: make the node.
fn ensure_node(path: &Path, n: u32) -> io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dev = libc::makedev(7, n);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    // SAFETY: mknod with a valid C string.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o660, dev) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
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

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn attach_find_detach() {
        if !is_root() || !Path::new("/dev/loop-control").exists() {
            eprintln!("SKIPPED: needs root and /dev/loop-control");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("img");
        create_sparse(&f, 16 << 20).unwrap();
        let dev = attach(&f, AttachOptions::default()).unwrap();
        assert_eq!(find_by_file(&f).unwrap(), vec![dev.clone()]);
        assert!(!direct_io(&dev).unwrap());
        detach(&dev).unwrap();
        assert!(find_by_file(&f).unwrap().is_empty());
    }
}
