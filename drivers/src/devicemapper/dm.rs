//! The device-mapper calls the backend makes, all through the `devicemapper` crate's ioctl
//! context on /dev/mapper/control (no dmsetup, no udev).
//!
//! Without udev nothing creates `/dev/mapper/<name>`; [`ensure_node`] makes the block node
//! from the device's major:minor. The crate only waits on udev cookies when udev runs
//! (`/run/udev/control`), so nothing here blocks on a missing udev. Where udev does run, the
//! ioctls carry the flags `DM_DISABLE_UDEV` makes libdevmapper send ([`opts`]): udev's rules
//! leave these devices alone, so cowbench alone makes and removes their nodes and no udev
//! worker races it for `/dev/mapper/<name>`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use devicemapper::{
    DevId, Device, DmError, DmFlags, DmName, DmOptions, DmUdevFlags, Sectors, TargetParams, ThinDevId, ThinPoolStatus, ThinStatus,
    DM,
};

use crate::sys::loopdev;

/// Options for the ioctls that make uevents (create, resume, remove): udev's device-mapper,
/// disk and other rules off, as libdevmapper does under `DM_DISABLE_UDEV`.
fn opts() -> DmOptions {
    DmOptions::default().set_udev_flags(
        DmUdevFlags::DM_UDEV_DISABLE_DM_RULES_FLAG
            | DmUdevFlags::DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG
            | DmUdevFlags::DM_UDEV_DISABLE_DISK_RULES_FLAG
            | DmUdevFlags::DM_UDEV_DISABLE_OTHER_RULES_FLAG,
    )
}

/// errno of a failed DM ioctl, if that is what failed.
pub fn errno(e: &DmError) -> Option<i32> {
    match e {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, err)) => Some(**err as i32),
        _ => None,
    }
}

pub fn io_err(e: DmError) -> io::Error {
    match errno(&e) {
        Some(n) => io::Error::new(io::Error::from_raw_os_error(n).kind(), format!("{e}")),
        None => io::Error::other(e.to_string()),
    }
}

fn name(n: &str) -> io::Result<&DmName> {
    DmName::new(n).map_err(io_err)
}

/// Every device-mapper device: name and major:minor.
pub fn list(dm: &DM) -> io::Result<Vec<(String, Device)>> {
    Ok(dm.list_devices().map_err(io_err)?.into_iter().map(|(n, d, _)| (n.to_string(), d)).collect())
}

pub fn exists(dm: &DM, n: &str) -> io::Result<Option<Device>> {
    Ok(list(dm)?.into_iter().find(|(x, _)| x == n).map(|(_, d)| d))
}

/// A thin device id as dm-thin takes it: below 2^24, or an error saying so.
pub fn thin_id(v: u64) -> io::Result<ThinDevId> {
    ThinDevId::new_u64(v).map_err(io_err)
}

/// The messages cowbench sends to a thin pool. Typed, so the text dm-thin parses is written
/// in one place ([`std::fmt::Display`]) and every id in it is a checked [`ThinDevId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMessage {
    /// A new, empty thin device.
    CreateThin(ThinDevId),
    /// A thin snapshot `new` of `origin` (the origin must be suspended if it is active).
    CreateSnap { new: ThinDevId, origin: ThinDevId },
    /// Drop a thin device and give its blocks back to the pool.
    Delete(ThinDevId),
    /// Keep a snapshot of the pool's metadata for userspace readers (`thin_dump -m`) of a
    /// live pool; one at a time.
    ReserveMetadataSnap,
    ReleaseMetadataSnap,
}

impl std::fmt::Display for PoolMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolMessage::CreateThin(id) => write!(f, "create_thin {id}"),
            PoolMessage::CreateSnap { new, origin } => write!(f, "create_snap {new} {origin}"),
            PoolMessage::Delete(id) => write!(f, "delete {id}"),
            PoolMessage::ReserveMetadataSnap => f.write_str("reserve_metadata_snap"),
            PoolMessage::ReleaseMetadataSnap => f.write_str("release_metadata_snap"),
        }
    }
}

/// Create device `n` with a one-line table of `length` sectors (target type and parameters
/// from the crate's typed `params`) and resume it.
pub fn create(dm: &DM, n: &str, length: Sectors, params: &impl TargetParams, read_only: bool) -> io::Result<Device> {
    let nm = name(n)?;
    let flags = if read_only { DmFlags::DM_READONLY } else { DmFlags::empty() };
    dm.device_create(nm, None, opts().set_flags(flags)).map_err(io_err)?;
    let id = DevId::Name(nm);
    let table = vec![(0u64, *length, params.target_type().to_string(), params.param_str())];
    let loaded = dm.table_load(&id, &table, DmOptions::default().set_flags(flags));
    if let Err(e) = loaded {
        let _ = dm.device_remove(&id, opts());
        return Err(io_err(e));
    }
    match dm.device_suspend(&id, opts()) {
        Ok(info) => Ok(info.device()),
        Err(e) => {
            let _ = dm.device_remove(&id, opts());
            Err(io_err(e))
        }
    }
}

/// Remove device `n` (its node in /dev/mapper too). A missing device is not an error.
pub fn remove(dm: &DM, n: &str) -> io::Result<()> {
    let nm = name(n)?;
    let Some(dev) = exists(dm, n)? else {
        remove_node(n, None);
        return Ok(());
    };
    // A device just unmounted can still be held for a moment (the filesystem's last
    // reference going away): retry briefly on EBUSY.
    let mut last = None;
    for _ in 0..50 {
        match dm.device_remove(&DevId::Name(nm), opts()) {
            Ok(_) => {
                remove_node(n, Some(dev));
                return Ok(());
            }
            Err(e) if errno(&e) == Some(libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            // removed by another thread or process in the meantime
            Err(e) if errno(&e) == Some(libc::ENXIO) => {
                remove_node(n, Some(dev));
                return Ok(());
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(io_err(last.expect("loop ran")))
}

pub fn suspend(dm: &DM, n: &str) -> io::Result<()> {
    dm.device_suspend(&DevId::Name(name(n)?), DmOptions::default().set_flags(DmFlags::DM_SUSPEND))
        .map(|_| ())
        .map_err(io_err)
}

pub fn resume(dm: &DM, n: &str) -> io::Result<()> {
    dm.device_suspend(&DevId::Name(name(n)?), opts()).map(|_| ()).map_err(io_err)
}

/// Send `msg` to thin pool `pool`.
pub fn message(dm: &DM, pool: &str, msg: PoolMessage) -> io::Result<()> {
    dm.target_msg(&DevId::Name(name(pool)?), None, &msg.to_string()).map(|_| ()).map_err(io_err)
}

fn status_line(dm: &DM, n: &str) -> io::Result<(String, String)> {
    let (_, lines) = dm.table_status(&DevId::Name(name(n)?), DmOptions::default()).map_err(io_err)?;
    let l = lines.into_iter().next().ok_or_else(|| io::Error::other(format!("{n}: no table")))?;
    Ok((l.2, l.3))
}

/// Active table of `n`: target type and parameters.
pub fn table(dm: &DM, n: &str) -> io::Result<(u64, String, String)> {
    let (_, lines) = dm
        .table_status(&DevId::Name(name(n)?), DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE))
        .map_err(io_err)?;
    let l = lines.into_iter().next().ok_or_else(|| io::Error::other(format!("{n}: no table")))?;
    Ok((l.1, l.2, l.3))
}

pub fn pool_status(dm: &DM, pool: &str) -> io::Result<(ThinPoolStatus, String)> {
    let (_, line) = status_line(dm, pool)?;
    let st = ThinPoolStatus::from_str(&line).map_err(io_err)?;
    Ok((st, line))
}

/// Sectors mapped by thin device `n` (must be active).
pub fn thin_mapped_sectors(dm: &DM, n: &str) -> io::Result<u64> {
    let (_, line) = status_line(dm, n)?;
    match ThinStatus::from_str(&line).map_err(io_err)? {
        ThinStatus::Working(w) => Ok(*w.nr_mapped_sectors),
        _ => Err(io::Error::other(format!("{n}: thin device failed ({line})"))),
    }
}

/// Target types and versions the kernel has loaded (`dmsetup targets`).
pub fn targets(dm: &DM) -> io::Result<Vec<(String, String)>> {
    Ok(dm
        .list_versions()
        .map_err(io_err)?
        .into_iter()
        .map(|(n, a, b, c)| (n, format!("{a}.{b}.{c}")))
        .collect())
}

/// The node a device is used through.
pub fn node(n: &str) -> PathBuf {
    Path::new("/dev/mapper").join(n)
}

/// Make `/dev/mapper/<n>` a block node for `dev` (udev's job on a normal host).
///
/// Parallel users of one device (two threads activating the same layer) can both get here:
/// the node is made under a private name and renamed into place, so it is never missing or
/// half made for the other, and a stale node (a device of that name removed and made again
/// with another minor) is replaced the same way.
pub fn ensure_node(n: &str, dev: Device) -> io::Result<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let p = node(n);
    let want = libc::makedev(dev.major, dev.minor);
    if loopdev::is_block_node(&p, want) {
        return Ok(p);
    }
    // udev's link to ../dm-N: fine if it points at the right device
    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::metadata(&p).is_ok_and(|t| t.file_type().is_block_device() && t.rdev() == want)
    {
        return Ok(p);
    }
    std::fs::create_dir_all("/dev/mapper")?;
    loopdev::replace_block_node(&p, want)?;
    Ok(p)
}

/// Remove `/dev/mapper/<n>` after its device is gone: only if it is still the node of the
/// removed device `dev` (when known), so a node another thread made meanwhile for a new
/// device of the same name stays.
pub fn remove_node(n: &str, dev: Option<Device>) {
    use std::os::unix::fs::MetadataExt;
    let p = node(n);
    let Ok(m) = std::fs::symlink_metadata(&p) else { return };
    if dev.is_some_and(|d| m.rdev() != libc::makedev(d.major, d.minor)) {
        return;
    }
    let _ = std::fs::remove_file(&p);
}

/// /dev/mapper/control, made from /proc/misc when the node is missing.
pub fn ensure_control() -> io::Result<()> {
    let p = Path::new("/dev/mapper/control");
    if p.exists() {
        return Ok(());
    }
    let misc = std::fs::read_to_string("/proc/misc")?;
    let minor = misc
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let m = it.next()?;
            (it.next()? == "device-mapper").then(|| m.parse::<u32>().ok()).flatten()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no device-mapper in /proc/misc"))?;
    std::fs::create_dir_all("/dev/mapper")?;
    let c = std::ffi::CString::new("/dev/mapper/control").expect("no NUL");
    // SAFETY: mknod with a valid C string.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, minor)) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(())
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKDISCARD: libc::c_ulong = 0x1277;

pub fn size_bytes(dev: &Path) -> io::Result<u64> {
    let f = OpenOptions::new().read(true).open(dev)?;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Discard every block of `dev` (blkdiscard): the pool unmaps them and passes the discard
/// down to the loop device, which punches holes in its backing file.
pub fn discard_all(dev: &Path) -> io::Result<()> {
    let size = size_bytes(dev)?;
    let f = OpenOptions::new().write(true).open(dev)?;
    let range: [u64; 2] = [0, size];
    // SAFETY: BLKDISCARD reads two u64 (start, length).
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKDISCARD as _, range.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kernel device number of a block device node.
pub fn device_of(path: &Path) -> io::Result<Device> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Device::from(m.rdev()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_messages_as_dm_thin_reads_them() {
        let (a, b) = (thin_id(7).unwrap(), thin_id(3).unwrap());
        assert_eq!(PoolMessage::CreateThin(a).to_string(), "create_thin 7");
        assert_eq!(PoolMessage::CreateSnap { new: a, origin: b }.to_string(), "create_snap 7 3");
        assert_eq!(PoolMessage::Delete(b).to_string(), "delete 3");
        assert!(thin_id(1 << 24).is_err(), "dm-thin ids have 24 bits");
    }
}
