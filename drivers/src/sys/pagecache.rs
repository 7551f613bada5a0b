//! How much of a file the page cache holds (`mincore(2)` over a read-only mapping, as
//! `fincore(1)` does).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Mapped and asked about at most this much at a time, so a multi-GiB backing file needs a
/// small residency vector only.
const CHUNK: u64 = 1 << 30;

/// Bytes of `path` resident in the page cache now (whole pages; the last may run past EOF).
pub fn resident_bytes(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut resident_pages = 0u64;
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK);
        // SAFETY: a fresh shared read-only mapping of a file we hold open; only mincore
        // looks at it (never dereferenced), and it is unmapped below.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), n as usize, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), off as libc::off_t) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut vec = vec![0u8; n.div_ceil(page) as usize];
        // SAFETY: `vec` has one byte per page of the mapping.
        let rc = unsafe { libc::mincore(addr, n as usize, vec.as_mut_ptr()) };
        let err = io::Error::last_os_error();
        // SAFETY: the mapping made above, of that length.
        unsafe { libc::munmap(addr, n as usize) };
        if rc != 0 {
            return Err(err);
        }
        resident_pages += vec.iter().filter(|b| **b & 1 != 0).count() as u64;
        off += n;
    }
    Ok(resident_pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_written_file_is_resident_and_a_sparse_one_is_not() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = d.path().join("f");
        let mut f = File::create(&p).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        drop(f);
        // Just written: in the page cache (dirty or clean).
        assert_eq!(resident_bytes(&p).unwrap(), 1 << 20);
        let s = d.path().join("sparse");
        File::create(&s).unwrap().set_len(8 << 20).unwrap();
        assert_eq!(resident_bytes(&s).unwrap(), 0);
        // Reading the first MiB of the sparse file brings (at least) that much in.
        let mut buf = vec![0u8; 1 << 20];
        File::open(&s).unwrap().read_exact(&mut buf).unwrap();
        let r = resident_bytes(&s).unwrap();
        assert!(r >= 1 << 20 && r <= 8 << 20, "{r}");
    }
}
