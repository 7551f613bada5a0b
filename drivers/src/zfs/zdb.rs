//! A file's block layout from `zdb`: ZFS has no FIEMAP, but `zdb -ddddd DATASET OBJECT` prints
//! every level-0 block pointer of a file (`<file offset> L0 <vdev>:<offset>:<asize>
//! <lsize>L/<psize>P …`), read from the pool on disk.
//!
//! The object is the file's inode number (a ZPL object id, on kernel OpenZFS and zfs-fuse
//! alike); zdb's `path` line for the object is checked against the file asked for, so a wrong
//! mapping is an error and not a layout of another file. cowbench's pools have
//! `cachefile=none`, so zdb finds the pool by searching the vdev's directory or device (`-e -p`,
//! read-only; it works on an imported pool, both on zfs-fuse 0.7 and OpenZFS). What zdb reads
//! is what the last transaction group wrote: the caller syncs one first.

use std::path::Path;

use crate::extents::{ExtentMethod, FileExtents, Piece};

/// zdb's arguments for object `object` of `dataset`; `search`: the pool is not in a cache
/// file and is found through these paths (`-e -p`).
pub fn args(search: Option<&[String]>, dataset: &str, object: u64) -> Vec<String> {
    let mut a = vec!["-ddddd".to_string()];
    if let Some(search) = search {
        a.push("-e".into());
        for p in search {
            a.push("-p".into());
            a.push(p.clone());
        }
    }
    a.push(dataset.into());
    a.push(object.to_string());
    a
}

/// The layout of the file seen at `host_path` from zdb's dump of its object, whose path in the
/// dataset must end `host_path`. Errors say what did not match.
pub fn parse(out: &str, host_path: &Path) -> Result<FileExtents, String> {
    let path = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("path").map(|p| p.trim().to_string()))
        .ok_or_else(|| "zdb printed no path for the object (not a file of this dataset?)".to_string())?;
    let rel = Path::new(path.trim_start_matches('/'));
    if path.is_empty() || !host_path.ends_with(rel) {
        return Err(format!("zdb's object is {path}, not {}", host_path.display()));
    }
    let mut pieces = Vec::new();
    for l in out.lines() {
        let mut it = l.split_whitespace();
        let (Some(off), Some("L0")) = (it.next(), it.next()) else { continue };
        let Ok(logical) = u64::from_str_radix(off, 16) else { continue };
        let rest: Vec<&str> = it.collect();
        // The first DVA (`0:59000:20000`, or `DVA[0]=<0:59000:20000>` in the long form) and
        // the logical size (`20000L/20000P`, or `size=20000L/20000P`).
        let dva = rest.iter().find_map(|t| dva(t));
        let lsize = rest.iter().find_map(|t| {
            let t = t.strip_prefix("size=").unwrap_or(t);
            u64::from_str_radix(t.split_once("L/")?.0, 16).ok()
        });
        if let (Some((device, physical, asize)), Some(length)) = (dva, lsize) {
            pieces.push(Piece { logical, length, device, physical, physical_length: asize });
        }
        // Holes and embedded blocks have no DVA: no place on disk to count.
    }
    if pieces.is_empty() {
        return Err("zdb listed no level-0 block pointers for the file".into());
    }
    Ok(FileExtents::of(&pieces, ExtentMethod::ZdbBlockPointers))
}

/// `vdev:offset:asize` (hex), bare or as `DVA[0]=<…>`.
fn dva(t: &str) -> Option<(u64, u64, u64)> {
    let t = t.strip_prefix("DVA[0]=").unwrap_or(t).trim_start_matches('<').trim_end_matches('>');
    let mut f = t.split(':');
    let v = f.next()?.parse().ok()?;
    let o = u64::from_str_radix(f.next()?, 16).ok()?;
    let a = u64::from_str_radix(f.next()?, 16).ok()?;
    f.next().is_none().then_some((v, o, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    // zfs-fuse 0.7's zdb on a 2 MiB file written in order, then one record rewritten.
    const FUSE: &str = "\
    Object  lvl   iblk   dblk  dsize  lsize   %full  type
         5    2    16K   128K  2.01M     2M  100.00  ZFS plain file
\tpath\t/f
\tsize\t2097152
Indirect blocks:
               0 L1  0:279000:1000 4000L/600P F=16 B=10/10
               0  L0 0:59000:20000 20000L/20000P F=1 B=9/9
           20000  L0 0:79000:20000 20000L/20000P F=1 B=9/9
           40000  L0 0:99000:20000 20000L/20000P F=1 B=9/9
           60000  L0 0:4a9000:20000 20000L/20000P F=1 B=12/12
           80000  L0 0:d9000:20000 20000L/20000P F=1 B=9/9

\t\tsegment [0000000000000000, 00000000000a0000) size  640K
";

    #[test]
    fn compact_block_pointers() {
        let e = parse(FUSE, Path::new("/r/rootfs/f")).unwrap();
        assert_eq!((e.pieces, e.runs, e.mapped_bytes), (5, 3, 5 * 0x20000), "{e:?}");
        assert!(parse(FUSE, Path::new("/r/rootfs/g")).unwrap_err().contains("not /r/rootfs/g"));
        assert!(parse(FUSE, Path::new("/r/rootfs/xf")).is_err());
        assert!(parse("Object 5\n", Path::new("/f")).is_err());
    }

    #[test]
    fn long_form_block_pointers() {
        let out = "\tpath\t/data/large.bin\n\
            0  L0 DVA[0]=<0:400000:20000> [L0 ZFS plain file] fletcher4 uncompressed LE contiguous unique single size=20000L/20000P birth=9L/9P fill=1\n\
            20000  L0 DVA[0]=<0:420000:20000> [L0 ZFS plain file] fletcher4 uncompressed LE contiguous unique single size=20000L/20000P birth=9L/9P fill=1\n";
        let e = parse(out, Path::new("/c/rootfs/data/large.bin")).unwrap();
        assert_eq!((e.pieces, e.runs), (2, 1));
        assert_eq!(args(Some(&["/d".into()]), "p/7", 5), ["-ddddd", "-e", "-p", "/d", "p/7", "5"]);
        assert_eq!(args(None, "p/7", 5), ["-ddddd", "p/7", "5"]);
    }
}
