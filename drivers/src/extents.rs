//! Where a file's data lies on its storage: the count of physically contiguous runs.
//!
//! A file written once in order lies in few runs; copy-on-write of random overwrites puts each
//! rewritten block somewhere else and splits them. The count is the direct evidence of
//! fragmentation, beside any read timing.
//!
//! Two sources: the FIEMAP ioctl (ext4, xfs, btrfs, and overlayfs, which answers for the file
//! of the layer that holds it), the default of [`crate::backend::Backend::file_extents`]; and a
//! backend's own tool where the filesystem has no FIEMAP (ZFS: `zdb`'s block pointers). Both
//! go through [`runs`], so a "run" means the same everywhere: neighbouring pieces that continue
//! each other both in the file and on the device are one run.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How the pieces of a file were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtentMethod {
    /// `FS_IOC_FIEMAP` on the file (after syncing it), from the host.
    Fiemap,
    /// Level-0 block pointers of the file's object, as `zdb -ddddd` prints them from the pool
    /// on disk (after a transaction-group sync).
    ZdbBlockPointers,
    /// FIEMAP of the filesystem on a dm-thin device, each piece then followed through the
    /// thin device's block mapping into the pool's data device (`thin_dump` of a metadata
    /// snapshot): where the blocks really are after the pool's copy-on-write.
    FiemapThinMap,
}

impl std::fmt::Display for ExtentMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExtentMethod::Fiemap => "FIEMAP",
            ExtentMethod::ZdbBlockPointers => "zdb level-0 block pointers",
            ExtentMethod::FiemapThinMap => "FIEMAP through the thin pool's block mapping (thin_dump)",
        })
    }
}

/// A file's layout on its storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileExtents {
    /// Physically contiguous runs (see [`runs`]).
    pub runs: u64,
    /// Pieces as the source lists them (FIEMAP extents, block pointers), before merging.
    pub pieces: u64,
    /// Bytes the pieces map (holes and inline data excluded).
    pub mapped_bytes: u64,
    pub method: ExtentMethod,
    /// What the count leaves out, where the backend knows (a layer of mapping below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

impl FileExtents {
    /// The layout `pieces` make.
    pub fn of(pieces: &[Piece], method: ExtentMethod) -> FileExtents {
        FileExtents {
            runs: runs(pieces),
            pieces: pieces.len() as u64,
            mapped_bytes: pieces.iter().map(|p| p.length).sum(),
            method,
            caveat: None,
        }
    }
}

/// One mapped piece of a file: offset and length in the file, and where it lies on the device
/// (`device` tells apart several devices of a pool; `physical_length` differs from `length`
/// where the piece is compressed or padded on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub logical: u64,
    pub length: u64,
    pub device: u64,
    pub physical: u64,
    pub physical_length: u64,
}

/// Runs of `pieces`: sorted by file offset, a piece starting on the same device where the
/// previous one ends, both in the file and on the device, continues its run.
pub fn runs(pieces: &[Piece]) -> u64 {
    let mut v = pieces.to_vec();
    v.sort_by_key(|p| p.logical);
    let mut n = 0;
    let mut prev: Option<Piece> = None;
    for p in v {
        let continues = prev.is_some_and(|q| {
            q.device == p.device && q.logical + q.length == p.logical && q.physical + q.physical_length == p.physical
        });
        if !continues {
            n += 1;
        }
        prev = Some(p);
    }
    n
}

/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)` (the header's size: 32 bytes).
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// The extent's data is not on disk in a place of its own (inline, packed with others):
/// nothing physical to compare.
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
/// Another file or snapshot references the extent too (btrfs reflinks and snapshots).
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
/// Extents asked for per call.
const BATCH: usize = 512;

/// One extent as `FS_IOC_FIEMAP` reports it (`struct fiemap_extent`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FiemapExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    reserved64: [u64; 2],
    pub flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; BATCH],
}

/// Every extent of regular file `f` by FIEMAP, in file order. The file's dirty data is
/// written first (`FIEMAP_FLAG_SYNC`): delayed allocation has no place on disk before. Fails
/// with the ioctl's error where the filesystem has no FIEMAP (FUSE, ZFS: `EOPNOTSUPP` /
/// `ENOTTY`).
pub fn for_each_extent(f: &File, mut each: impl FnMut(&FiemapExtent)) -> io::Result<()> {
    let mut start = 0u64;
    loop {
        let mut m = Box::new(Fiemap {
            start,
            length: u64::MAX - start,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); BATCH],
        });
        // SAFETY: `m` is a properly sized `struct fiemap` with room for `extent_count` extents,
        // alive for the call; the fd is open.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *m as *mut Fiemap) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let got = &m.extents[..m.mapped_extents as usize];
        let Some(last) = got.last() else { return Ok(()) };
        got.iter().for_each(&mut each);
        if last.flags & FIEMAP_EXTENT_LAST != 0 || got.len() < BATCH {
            return Ok(());
        }
        start = last.logical + last.length;
    }
}

/// The layout of `path` by FIEMAP (see [`fiemap_pieces`]).
pub fn fiemap(path: &Path) -> io::Result<FileExtents> {
    Ok(FileExtents::of(&fiemap_pieces(path)?, ExtentMethod::Fiemap))
}

/// The pieces of `path` that have a place of their own on disk, by FIEMAP.
pub fn fiemap_pieces(path: &Path) -> io::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    for_each_extent(&File::open(path)?, |e| {
        if e.flags & (FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED) == 0 {
            pieces.push(Piece { logical: e.logical, length: e.length, device: 0, physical: e.physical, physical_length: e.length });
        }
    })?;
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(logical: u64, physical: u64, length: u64) -> Piece {
        Piece { logical, length, device: 0, physical, physical_length: length }
    }

    #[test]
    fn neighbours_in_file_and_on_disk_merge() {
        assert_eq!(runs(&[]), 0);
        // In order on disk: one run, whatever the listing order.
        assert_eq!(runs(&[p(4096, 104096, 4096), p(0, 100000, 4096)]), 1);
        // Adjacent in the file, elsewhere on disk: two.
        assert_eq!(runs(&[p(0, 100000, 4096), p(4096, 900000, 4096)]), 2);
        // Adjacent on disk but a gap (hole) in the file: two.
        assert_eq!(runs(&[p(0, 100000, 4096), p(8192, 104096, 4096)]), 2);
        // Same offsets on another device of the pool: two.
        assert_eq!(runs(&[p(0, 0, 4096), Piece { device: 1, ..p(4096, 4096, 4096) }]), 2);
        // Compressed pieces back to back on disk: one run.
        assert_eq!(runs(&[Piece { physical_length: 1024, ..p(0, 0, 4096) }, p(4096, 1024, 4096)]), 1);
    }

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<FiemapExtent>(), 56);
        assert_eq!(std::mem::size_of::<Fiemap>() - std::mem::size_of::<[FiemapExtent; BATCH]>(), 32);
        assert_eq!(FS_IOC_FIEMAP, nix::request_code_readwrite!(b'f', 11, 32) as libc::c_ulong);
    }

    #[test]
    fn fiemap_counts_what_filefrag_counts() {
        use std::os::unix::fs::FileExt;
        // /var/tmp, not /tmp: tmpfs has no FIEMAP. Every other 4 KiB block first, the rest
        // after a sync: the filesystem places the second half elsewhere.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let blocks = 256u64;
        for half in [0, 1] {
            for b in (half..blocks).step_by(2) {
                f.write_all_at(&[b as u8 | 1; 4096], b * 4096).unwrap();
            }
            f.sync_all().unwrap();
        }
        let e = match fiemap(&path) {
            Ok(e) => e,
            // A host whose /var/tmp has no FIEMAP proves nothing here.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY)) => return,
            Err(e) => panic!("fiemap: {e}"),
        };
        assert_eq!(e.mapped_bytes, blocks * 4096, "{e:?}");
        assert!(e.runs >= 1 && e.runs <= e.pieces, "{e:?}");
        // The independent count: e2fsprogs' filefrag ("f: N extents found"), where installed.
        let Ok(out) = std::process::Command::new("filefrag").arg(&path).output() else { return };
        let text = String::from_utf8_lossy(&out.stdout);
        let n: u64 = text.rsplit(": ").next().and_then(|t| t.split_whitespace().next()).and_then(|t| t.parse().ok()).expect(&text);
        assert_eq!(e.runs, n, "FIEMAP runs {e:?} against filefrag: {text}");
    }
}
