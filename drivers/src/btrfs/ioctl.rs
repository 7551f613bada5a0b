//! The btrfs ioctls the backend needs, through `libc`.
//!
//! Why not the `btrfsutil` crate (libbtrfsutil bindings): its 0.2 release panics on the
//! libbtrfsutil 6.x error codes it does not know (27 and up), its `enable-glue-errors` feature
//! that would avoid the panic does not compile, it drops `errno` (so a full filesystem could
//! not be reported as out of space), and it waits for a transaction commit after every
//! subvolume creation. The ioctls are few and stable since Linux 3.x (the v2 destroy since
//! 5.7, with a fallback), so they are used directly, as moby's btrfs graphdriver does.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const MAGIC: u8 = 0x94;
/// `BTRFS_SUBVOL_NAME_MAX + 1`.
const SUBVOL_NAME_LEN: usize = 4040;
/// `BTRFS_PATH_NAME_MAX + 1`.
const PATH_NAME_LEN: usize = 4088;
/// `BTRFS_SUBVOL_RDONLY`.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// Inode number of the root directory of every subvolume (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOL_ROOT_INO: u64 = 256;
/// `st_ino` of the empty placeholder a snapshot leaves where the source had a nested subvolume.
pub const EMPTY_SUBVOL_DIR_INO: u64 = 2;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_LEN],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_LEN],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; 4096 - std::mem::size_of::<SearchKey>()],
}

fn rc(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn zeroed<T>() -> Box<T> {
    // SAFETY: every struct here is plain old data for which all-zero is valid.
    unsafe { Box::new(std::mem::zeroed()) }
}

fn set_name(dst: &mut [u8], name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= dst.len() || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad subvolume name {name:?}")));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

/// Parent directory (opened) and final component of `path`.
fn split(path: &Path) -> io::Result<(File, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no file name in {}", path.display())))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((File::open(parent)?, name))
}

/// Create an empty subvolume at `path`.
pub fn subvol_create(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let mut args = zeroed::<VolArgsV2>();
    set_name(&mut args.name, name)?;
    let req = nix::request_code_write!(MAGIC, 24, std::mem::size_of::<VolArgsV2>());
    // SAFETY: BTRFS_IOC_SUBVOL_CREATE_V2 reads a btrfs_ioctl_vol_args_v2 we own.
    rc(unsafe { libc::ioctl(dir.as_raw_fd(), req as _, &*args as *const VolArgsV2) })
}

/// Snapshot subvolume `src` to `dst` (read-only when `readonly`).
pub fn snapshot(src: &Path, dst: &Path, readonly: bool) -> io::Result<()> {
    let source = File::open(src)?;
    let (dir, name) = split(dst)?;
    let mut args = zeroed::<VolArgsV2>();
    args.fd = source.as_raw_fd() as i64;
    if readonly {
        args.flags = SUBVOL_RDONLY;
    }
    set_name(&mut args.name, name)?;
    let req = nix::request_code_write!(MAGIC, 23, std::mem::size_of::<VolArgsV2>());
    // SAFETY: BTRFS_IOC_SNAP_CREATE_V2 reads a btrfs_ioctl_vol_args_v2 we own.
    rc(unsafe { libc::ioctl(dir.as_raw_fd(), req as _, &*args as *const VolArgsV2) })
}

/// Delete the subvolume at `path` (which must contain no other subvolume).
pub fn subvol_destroy(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let mut args = zeroed::<VolArgsV2>();
    set_name(&mut args.name, name)?;
    let req = nix::request_code_write!(MAGIC, 63, std::mem::size_of::<VolArgsV2>());
    // SAFETY: BTRFS_IOC_SNAP_DESTROY_V2 reads a btrfs_ioctl_vol_args_v2 we own.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), req as _, &*args as *const VolArgsV2) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)) {
        return Err(e);
    }
    // Kernels before 5.7: the v1 call.
    let mut v1 = zeroed::<VolArgs>();
    set_name(&mut v1.name, name)?;
    let req = nix::request_code_write!(MAGIC, 15, std::mem::size_of::<VolArgs>());
    // SAFETY: BTRFS_IOC_SNAP_DESTROY reads a btrfs_ioctl_vol_args we own.
    rc(unsafe { libc::ioctl(dir.as_raw_fd(), req as _, &*v1 as *const VolArgs) })
}

/// Commit the current transaction of the filesystem holding `path` (BTRFS_IOC_SYNC). The
/// kernel also wakes the transaction thread, which wakes the cleaner that frees the extents of
/// deleted subvolumes; without it that waits for the next periodic commit (30 s by default).
pub fn sync(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    let req = nix::request_code_none!(MAGIC, 8);
    // SAFETY: BTRFS_IOC_SYNC takes no argument.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _) })
}

pub fn get_flags(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut flags: u64 = 0;
    let req = nix::request_code_read!(MAGIC, 25, std::mem::size_of::<u64>());
    // SAFETY: BTRFS_IOC_SUBVOL_GETFLAGS writes one u64.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _, &mut flags as *mut u64) })?;
    Ok(flags)
}

pub fn set_flags(path: &Path, flags: u64) -> io::Result<()> {
    let f = File::open(path)?;
    let req = nix::request_code_write!(MAGIC, 26, std::mem::size_of::<u64>());
    // SAFETY: BTRFS_IOC_SUBVOL_SETFLAGS reads one u64.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _, &flags as *const u64) })
}

/// Make a subvolume read-only or writable.
pub fn set_readonly(path: &Path, readonly: bool) -> io::Result<()> {
    let flags = get_flags(path)?;
    let new = if readonly { flags | SUBVOL_RDONLY } else { flags & !SUBVOL_RDONLY };
    if new == flags {
        return Ok(());
    }
    set_flags(path, new)
}

/// Enable quota groups on the filesystem holding `path` (idempotent).
pub fn quota_enable(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    let mut args = QuotaCtlArgs { cmd: 1, status: 0 };
    let req = nix::request_code_readwrite!(MAGIC, 40, std::mem::size_of::<QuotaCtlArgs>());
    // SAFETY: BTRFS_IOC_QUOTA_CTL reads/writes a struct we own.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _, &mut args as *mut QuotaCtlArgs) })
}

/// Limit the exclusive bytes of the subvolume at `path` (its own level-0 qgroup).
pub fn qgroup_limit_excl(path: &Path, bytes: u64) -> io::Result<()> {
    let f = File::open(path)?;
    let args = QgroupLimitArgs {
        // 0 means "the qgroup of the subvolume the ioctl is called on".
        qgroupid: 0,
        lim: QgroupLimit { flags: 1 << 1, max_rfer: 0, max_excl: bytes, rsv_rfer: 0, rsv_excl: 0 },
    };
    let req = nix::request_code_read!(MAGIC, 43, std::mem::size_of::<QgroupLimitArgs>());
    // SAFETY: BTRFS_IOC_QGROUP_LIMIT reads a struct we own.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _, &args as *const QgroupLimitArgs) })
}

/// The id of the subvolume whose root is `path`.
pub fn subvol_id(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut args = zeroed::<InoLookupArgs>();
    args.objectid = SUBVOL_ROOT_INO;
    let req = nix::request_code_readwrite!(MAGIC, 18, std::mem::size_of::<InoLookupArgs>());
    // SAFETY: BTRFS_IOC_INO_LOOKUP reads/writes a struct we own.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _, &mut *args as *mut InoLookupArgs) })?;
    Ok(args.treeid)
}

/// (referenced, exclusive) bytes of level-0 qgroup `subvolid`, read from the quota tree.
/// The numbers are those of the last committed transaction: `syncfs` first.
pub fn qgroup_info(fs_path: &Path, subvolid: u64) -> io::Result<Option<(u64, u64)>> {
    const QUOTA_TREE_OBJECTID: u64 = 8;
    const QGROUP_INFO_KEY: u32 = 242;
    let f = File::open(fs_path)?;
    let mut args = zeroed::<SearchArgs>();
    args.key.tree_id = QUOTA_TREE_OBJECTID;
    args.key.min_objectid = 0;
    args.key.max_objectid = 0;
    args.key.min_offset = subvolid;
    args.key.max_offset = subvolid;
    args.key.max_transid = u64::MAX;
    args.key.min_type = QGROUP_INFO_KEY;
    args.key.max_type = QGROUP_INFO_KEY;
    args.key.nr_items = 1;
    let req = nix::request_code_readwrite!(MAGIC, 17, std::mem::size_of::<SearchArgs>());
    // SAFETY: BTRFS_IOC_TREE_SEARCH reads/writes a struct we own.
    rc(unsafe { libc::ioctl(f.as_raw_fd(), req as _, &mut *args as *mut SearchArgs) })?;
    if args.key.nr_items == 0 {
        return Ok(None);
    }
    // btrfs_ioctl_search_header (32 bytes), then btrfs_qgroup_info_item:
    // generation, rfer, rfer_cmpr, excl, excl_cmpr (little-endian u64s).
    let u = |off: usize| u64::from_le_bytes(args.buf[off..off + 8].try_into().expect("8 bytes"));
    let ty = u32::from_le_bytes(args.buf[24..28].try_into().expect("4 bytes"));
    if ty != QGROUP_INFO_KEY || u(16) != subvolid {
        return Ok(None);
    }
    Ok(Some((u(32 + 8), u(32 + 24))))
}

/// Bytes of the extents of regular file `f` that no other file or snapshot shares.
pub fn exclusive_extent_bytes(f: &File) -> io::Result<u64> {
    let mut total = 0u64;
    crate::extents::for_each_extent(f, |e| {
        if e.flags & crate::extents::FIEMAP_EXTENT_SHARED == 0 {
            total += e.length;
        }
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<SearchKey>(), 104);
        assert_eq!(std::mem::size_of::<SearchArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
    }

    #[test]
    fn names_are_checked() {
        let mut b = [0u8; 8];
        assert!(set_name(&mut b, OsStr::new("a/b")).is_err());
        assert!(set_name(&mut b, OsStr::new("")).is_err());
        assert!(set_name(&mut b, OsStr::new("12345678")).is_err());
        set_name(&mut b, OsStr::new("abc")).unwrap();
        assert_eq!(&b[..4], b"abc\0");
    }
}
