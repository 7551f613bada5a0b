//! The probe's `random_io` operation: `count` reads or overwrites of `block_bytes` at random
//! block-aligned offsets across the whole of an existing file, optionally synchronous
//! (O_DSYNC) and paced. Used by `fragmentation` (random overwrites of an image file) and
//! `concurrent` (Tarasov-style synchronous random IO from many containers at once).
//!
//! Unlike `write` with `random`, the offsets span the file's current size and the file is
//! never created, truncated or extended: the first write to an image file is the copy-up.

use std::ffi::CString;
use std::io;

use super::ops::monotonic_ns;
use super::{OpError, Sample};

/// What one `random_io` operation does (the fields of [`super::Op::RandomIo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomIoArgs<'a> {
    pub path: &'a str,
    pub block_bytes: u64,
    pub count: u64,
    pub write: bool,
    pub direct: bool,
    pub dsync: bool,
    pub fsync: bool,
    pub interval_us: u64,
    pub per_block: bool,
    pub seed: u64,
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// Block-aligned buffer (O_DIRECT needs the alignment).
struct Buf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Buf {
    fn new(len: usize, fill: u8) -> Buf {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory allocating {len} bytes");
        // SAFETY: ptr points to len writable bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        Buf { ptr, layout }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// splitmix64: offsets from the seed, the same sequence inside and outside a container.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Run one `random_io` operation (operation index `i`), appending its samples to `out`.
pub fn run(i: usize, a: &RandomIoArgs<'_>, out: &mut Vec<Sample>) {
    let name = "random_io";
    let fail = |out: &mut Vec<Sample>, phase: &str, e: io::Error| {
        let mut s = Sample::new(name, i, phase);
        s.path = Some(a.path.into());
        s.error = Some(OpError::from(e));
        out.push(s);
    };
    if a.block_bytes == 0 {
        return fail(out, "open", io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut flags = if a.write { libc::O_WRONLY } else { libc::O_RDONLY } | libc::O_CLOEXEC;
    if a.direct {
        flags |= libc::O_DIRECT;
    }
    if a.dsync && a.write {
        flags |= libc::O_DSYNC;
    }
    let Ok(c) = CString::new(a.path) else {
        return fail(out, "open", io::Error::from_raw_os_error(libc::EINVAL));
    };
    let start = monotonic_ns();
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return fail(out, "open", last_err());
    }
    let fd = Fd(fd);
    // SAFETY: st is a valid out-pointer, fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.0, &mut st) } < 0 {
        return fail(out, "fstat", last_err());
    }
    let nblocks = st.st_size as u64 / a.block_bytes;
    if nblocks == 0 {
        return fail(out, "fstat", io::Error::from_raw_os_error(libc::EINVAL));
    }
    let buf = Buf::new(a.block_bytes as usize, 0xC3);
    let mut rng = a.seed ^ 0x5DEE_CE66_D1CE_F00D;
    let mut total = 0u64;
    let mut err: Option<io::Error> = None;
    for k in 0..a.count {
        if a.interval_us > 0 {
            // Pace IO starts, like a client issuing a fixed rate of requests.
            let due = start + k * a.interval_us * 1000;
            let now = monotonic_ns();
            if due > now {
                std::thread::sleep(std::time::Duration::from_nanos(due - now));
            }
        }
        let off = (splitmix(&mut rng) % nblocks) * a.block_bytes;
        let t0 = monotonic_ns();
        // SAFETY: buf holds block_bytes bytes; fd is open.
        let r = unsafe {
            if a.write {
                libc::pwrite(fd.0, buf.ptr.cast(), a.block_bytes as usize, off as libc::off_t)
            } else {
                libc::pread(fd.0, buf.ptr.cast(), a.block_bytes as usize, off as libc::off_t)
            }
        };
        let ns = monotonic_ns() - t0;
        if r < 0 {
            err = Some(last_err());
            break;
        }
        total += r as u64;
        if a.per_block {
            let mut s = Sample::new(name, i, "block");
            s.latency_ns = ns;
            s.bytes = r as u64;
            out.push(s);
        }
    }
    if err.is_none() && a.fsync && a.write {
        let t0 = monotonic_ns();
        // SAFETY: fd is open.
        let r = unsafe { libc::fsync(fd.0) };
        let mut s = Sample::new(name, i, "fsync");
        s.latency_ns = monotonic_ns() - t0;
        s.path = Some(a.path.into());
        if r < 0 {
            s.error = Some(last_err().into());
        }
        out.push(s);
    }
    drop(fd);
    let end = monotonic_ns();
    let mut s = Sample::new(name, i, "total");
    s.latency_ns = end - start;
    s.bytes = total;
    s.path = Some(a.path.into());
    s.values.insert("start_mono_ns".into(), start);
    s.values.insert("end_mono_ns".into(), end);
    s.values.insert("ios_count".into(), if err.is_some() { total / a.block_bytes } else { a.count });
    s.error = err.map(Into::into);
    out.push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrites_stay_inside_the_file_and_reads_count() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, vec![0u8; 64 * 4096]).unwrap();
        let path = p.to_str().unwrap();
        let mut out = Vec::new();
        let w = RandomIoArgs {
            path,
            block_bytes: 4096,
            count: 16,
            write: true,
            direct: false,
            dsync: true,
            fsync: true,
            interval_us: 0,
            per_block: true,
            seed: 7,
        };
        run(0, &w, &mut out);
        assert!(out.iter().all(|s| s.error.is_none()), "{out:?}");
        assert_eq!(out.iter().filter(|s| s.phase == "block").count(), 16);
        let total = out.iter().find(|s| s.phase == "total").unwrap();
        assert_eq!(total.bytes, 16 * 4096);
        assert!(total.values["end_mono_ns"] >= total.values["start_mono_ns"]);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 64 * 4096, "overwrites never extend the file");
        let touched = data.chunks(4096).filter(|b| b.iter().all(|x| *x == 0xC3)).count();
        assert!((1..=16).contains(&touched), "{touched} blocks overwritten");

        let mut out = Vec::new();
        run(1, &RandomIoArgs { write: false, per_block: false, count: 10, ..w }, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, 10 * 4096);

        let mut out = Vec::new();
        run(2, &RandomIoArgs { path: "/nonexistent/x", ..w }, &mut out);
        assert_eq!(out[0].error.as_ref().unwrap().errno, Some(libc::ENOENT));
    }
}
