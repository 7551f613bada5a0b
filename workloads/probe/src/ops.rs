//! Executing a probe [`Request`]: plain system calls through libc, each phase timed with
//! `CLOCK_MONOTONIC`. Runs the same inside a container (the probe binary) and in a tempdir
//! (unit tests).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Op, OpError, Request, Response, Sample, HOLD_MARKER, PROTOCOL_VERSION};

/// CLOCK_MONOTONIC in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn cpath(p: &str) -> io::Result<CString> {
    CString::new(Path::new(p).as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn check_size(r: libc::ssize_t) -> io::Result<u64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// An owned file descriptor closed on drop.
struct Fd(libc::c_int);

impl Fd {
    fn open(path: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<Fd> {
        let c = cpath(path)?;
        // SAFETY: c is a valid NUL-terminated path.
        check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) }).map(Fd)
    }

    fn close(mut self) -> io::Result<()> {
        let fd = std::mem::replace(&mut self.0, -1);
        // SAFETY: fd is ours and closed once.
        check(unsafe { libc::close(fd) }).map(|_| ())
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: fd is ours and closed once.
            unsafe { libc::close(self.0) };
        }
    }
}

/// A buffer aligned for O_DIRECT (4 KiB covers every logical block size in use).
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize, fill: u8) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).expect("layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory allocating {len} bytes");
        // SAFETY: ptr points to len writable bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        AlignedBuf { ptr, len, layout }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// xorshift64*: random block offsets without pulling a RNG crate into the static probe.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Time `f`, returning (ns, result).
fn timed<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let t0 = monotonic_ns();
    let r = f();
    (monotonic_ns() - t0, r)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Run every operation of `req` in order.
pub fn run(req: &Request) -> Response {
    let started_ns = monotonic_ns();
    let mut samples = Vec::new();
    let mut errors = 0;
    for (i, op) in req.ops.iter().enumerate() {
        let before = samples.len();
        run_op(i, op, &mut samples);
        if samples[before..].iter().any(|s: &Sample| s.error.is_some()) {
            errors += 1;
        }
    }
    Response {
        protocol_version: PROTOCOL_VERSION,
        probe_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        hostname: hostname(),
        samples,
        errors,
        started_ns,
        finished_ns: monotonic_ns(),
    }
}

fn run_op(i: usize, op: &Op, out: &mut Vec<Sample>) {
    let name = op.name();
    let fail = |out: &mut Vec<Sample>, phase: &str, path: Option<&str>, e: io::Error| {
        let mut s = Sample::new(name, i, phase);
        s.path = path.map(Into::into);
        s.error = Some(OpError::from(e));
        out.push(s);
    };
    match op {
        Op::RandomIo { path, block_bytes, count, write, direct, dsync, fsync, interval_us, per_block, seed } => {
            let a = super::random_io::RandomIoArgs {
                path,
                block_bytes: *block_bytes,
                count: *count,
                write: *write,
                direct: *direct,
                dsync: *dsync,
                fsync: *fsync,
                interval_us: *interval_us,
                per_block: *per_block,
                seed: *seed,
            };
            super::random_io::run(i, &a, out)
        }
        Op::Meta { dir, count, bytes } => super::meta::meta(name, i, dir, *count, *bytes, out),
        Op::Chown { path, uid, gid } => super::meta::chown(name, i, path, *uid, *gid, out),
        Op::Append { path, block_bytes, count, writers, create, fsync } => {
            append(name, i, path, *block_bytes, *count, *writers, *create, *fsync, out)
        }
        Op::Hold => {
            let (ns, r) = timed(hold);
            let mut s = Sample::new(name, i, "total");
            s.latency_ns = ns;
            if let Err(e) = r {
                s.error = Some(e.into());
            }
            out.push(s);
        }
        Op::Sleep { ms } => {
            let (ns, _) = timed(|| std::thread::sleep(std::time::Duration::from_millis(*ms)));
            let mut s = Sample::new(name, i, "total");
            s.latency_ns = ns;
            out.push(s);
        }
        Op::Meminfo => {
            let mut s = Sample::new(name, i, "total");
            match std::fs::read_to_string("/proc/self/status") {
                Ok(text) => s.values = parse_status(&text),
                Err(e) => s.error = Some(e.into()),
            }
            out.push(s);
        }
        Op::Stat { paths, open } => {
            for p in paths {
                let mut s = Sample::new(name, i, "stat");
                s.path = Some(p.clone());
                let (ns, r) = timed(|| -> io::Result<u64> {
                    let c = cpath(p)?;
                    // SAFETY: st is a valid out-pointer, c a valid path.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    check(unsafe { libc::stat(c.as_ptr(), &mut st) })?;
                    if *open {
                        Fd::open(p, libc::O_RDONLY, 0)?.close()?;
                    }
                    Ok(st.st_size as u64)
                });
                s.latency_ns = ns;
                match r {
                    Ok(size) => {
                        s.values.insert("size_bytes".into(), size);
                    }
                    Err(e) => s.error = Some(e.into()),
                }
                out.push(s);
            }
        }
        Op::Resident { path } => {
            let mut s = Sample::new(name, i, "resident");
            s.path = Some(path.clone());
            let (ns, r) = timed(|| resident(path));
            s.latency_ns = ns;
            match r {
                Ok((size, resident)) => {
                    s.values.insert("size_bytes".into(), size);
                    s.values.insert("resident_bytes".into(), resident);
                }
                Err(e) => s.error = Some(e.into()),
            }
            out.push(s);
        }
        Op::Copy { src, dst, block_bytes, fsync } => {
            let mut s = Sample::new(name, i, "total");
            s.path = Some(dst.clone());
            let (ns, r) = timed(|| copy(src, dst, *block_bytes, *fsync));
            s.latency_ns = ns;
            match r {
                Ok(n) => s.bytes = n,
                Err(e) => s.error = Some(e.into()),
            }
            out.push(s);
        }
        Op::Copyup { path, offset, bytes, fsync } => {
            let (ns, fd) = timed(|| Fd::open(path, libc::O_WRONLY, 0));
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) => return fail(out, "open", Some(path), e),
            };
            let mut s = Sample::new(name, i, "open");
            s.latency_ns = ns;
            s.path = Some(path.clone());
            out.push(s);
            let buf = AlignedBuf::new(*bytes as usize, 0xA5);
            let (ns, r) = timed(|| pwrite_all(&fd, &buf, *offset));
            let mut s = Sample::new(name, i, "pwrite");
            s.latency_ns = ns;
            s.path = Some(path.clone());
            match r {
                Ok(n) => s.bytes = n,
                Err(e) => s.error = Some(e.into()),
            }
            out.push(s);
            if *fsync {
                // SAFETY: fd is open.
                let (ns, r) = timed(|| check(unsafe { libc::fsync(fd.0) }));
                let mut s = Sample::new(name, i, "fsync");
                s.latency_ns = ns;
                s.path = Some(path.clone());
                if let Err(e) = r {
                    s.error = Some(e.into());
                }
                out.push(s);
            }
            if let Err(e) = fd.close() {
                fail(out, "close", Some(path), e);
            }
        }
        Op::Read { path, block_bytes, direct, random, count, per_block, seed } => {
            let flags = libc::O_RDONLY | if *direct { libc::O_DIRECT } else { 0 };
            let t0 = monotonic_ns();
            let fd = match Fd::open(path, flags, 0) {
                Ok(fd) => fd,
                Err(e) => return fail(out, "open", Some(path), e),
            };
            let size = match file_size(&fd) {
                Ok(s) => s,
                Err(e) => return fail(out, "fstat", Some(path), e),
            };
            let nblocks = size.div_ceil(*block_bytes).max(1);
            let count = count.unwrap_or(nblocks);
            let buf = AlignedBuf::new(*block_bytes as usize, 0);
            let mut rng = Rng::new(*seed);
            let mut total = 0u64;
            let mut err = None;
            for b in 0..count {
                let off = if *random { (rng.next() % nblocks) * block_bytes } else { (b % nblocks) * block_bytes };
                // SAFETY: buf has block_bytes writable bytes; fd is open.
                let (ns, r) = timed(|| check_size(unsafe { libc::pread(fd.0, buf.ptr.cast(), buf.len, off as libc::off_t) }));
                match r {
                    Ok(n) => {
                        total += n;
                        if *per_block {
                            let mut s = Sample::new(name, i, "block");
                            s.latency_ns = ns;
                            s.bytes = n;
                            out.push(s);
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            drop(fd);
            let mut s = Sample::new(name, i, "total");
            s.latency_ns = monotonic_ns() - t0;
            s.bytes = total;
            s.path = Some(path.clone());
            s.error = err.map(Into::into);
            out.push(s);
        }
        Op::Write { path, block_bytes, bytes, direct, random, fsync, create, per_block, seed } => {
            let flags = libc::O_WRONLY
                | if *direct { libc::O_DIRECT } else { 0 }
                | if *create { libc::O_CREAT | libc::O_TRUNC } else { 0 };
            let t0 = monotonic_ns();
            let fd = match Fd::open(path, flags, 0o644) {
                Ok(fd) => fd,
                Err(e) => return fail(out, "open", Some(path), e),
            };
            let buf = AlignedBuf::new(*block_bytes as usize, 0x5A);
            let nblocks = bytes.div_ceil(*block_bytes).max(1);
            let mut rng = Rng::new(*seed);
            let mut total = 0u64;
            let mut err = None;
            for b in 0..nblocks {
                let off = if *random { (rng.next() % nblocks) * block_bytes } else { b * block_bytes };
                let (ns, r) = timed(|| pwrite_all(&fd, &buf, off));
                match r {
                    Ok(n) => {
                        total += n;
                        if *per_block {
                            let mut s = Sample::new(name, i, "block");
                            s.latency_ns = ns;
                            s.bytes = n;
                            out.push(s);
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            if err.is_none() && *fsync {
                // SAFETY: fd is open.
                let (ns, r) = timed(|| check(unsafe { libc::fsync(fd.0) }));
                let mut s = Sample::new(name, i, "fsync");
                s.latency_ns = ns;
                s.path = Some(path.clone());
                s.error = r.err().map(Into::into);
                out.push(s);
            }
            if let Err(e) = fd.close() {
                err.get_or_insert(e);
            }
            let mut s = Sample::new(name, i, "total");
            s.latency_ns = monotonic_ns() - t0;
            s.bytes = total;
            s.path = Some(path.clone());
            s.error = err.map(Into::into);
            out.push(s);
        }
    }
}

/// One writer of [`Op::Append`]: (start, end of its first write, end, bytes) or the failed
/// phase.
type Appended = Result<(u64, u64, u64, u64), (&'static str, io::Error)>;

/// [`Op::Append`]: `writers` threads, released together by a barrier, each appending `count`
/// blocks through its own O_APPEND descriptor (the kernel places every write at the end, so
/// concurrent writers never overwrite each other).
#[allow(clippy::too_many_arguments)]
pub fn append(name: &str, i: usize, path: &str, block_bytes: u64, count: u64, writers: u32, create: bool, fsync: bool, out: &mut Vec<Sample>) {
    let flags = libc::O_WRONLY | libc::O_APPEND | if create { libc::O_CREAT } else { 0 };
    let barrier = std::sync::Barrier::new(writers as usize);
    let writer = || -> Appended {
        let buf = AlignedBuf::new(block_bytes as usize, 0xA7);
        barrier.wait();
        let t0 = monotonic_ns();
        let fd = Fd::open(path, flags, 0o644).map_err(|e| ("open", e))?;
        let mut first = t0;
        for b in 0..count {
            // The offset is ignored: O_APPEND puts every write at the end of the file.
            // SAFETY: buf holds block_bytes bytes; fd is open.
            let n = check_size(unsafe { libc::write(fd.0, buf.ptr.cast(), buf.len) }).map_err(|e| ("write", e))?;
            if n != block_bytes {
                return Err(("write", io::Error::new(io::ErrorKind::WriteZero, format!("short append: {n} of {block_bytes} bytes"))));
            }
            if b == 0 {
                first = monotonic_ns();
            }
        }
        if fsync {
            // SAFETY: fd is open.
            check(unsafe { libc::fsync(fd.0) }).map_err(|e| ("fsync", e))?;
        }
        fd.close().map_err(|e| ("close", e))?;
        Ok((t0, first, monotonic_ns(), count * block_bytes))
    };
    let results: Vec<Appended> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..writers).map(|_| sc.spawn(writer)).collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(("thread", io::Error::other("writer thread panicked"))))).collect()
    });
    let mut total = Sample::new(name, i, "total");
    total.path = Some(path.into());
    let (mut start, mut end) = (u64::MAX, 0);
    for r in results {
        let mut s = Sample::new(name, i, "first");
        s.path = Some(path.into());
        match r {
            Ok((t0, first, t1, bytes)) => {
                s.latency_ns = first - t0;
                s.bytes = block_bytes.min(bytes);
                (start, end) = (start.min(t0), end.max(t1));
                total.bytes += bytes;
            }
            Err((phase, e)) => {
                s.phase = phase.into();
                s.error = Some(e.into());
            }
        }
        out.push(s);
    }
    total.latency_ns = end.saturating_sub(start);
    out.push(total);
}

/// (size, bytes of it in the page cache) of `path`, read with `mincore` on a read-only mapping:
/// no page is faulted in, so the check leaves the file as cold as it found it.
pub fn resident(path: &str) -> io::Result<(u64, u64)> {
    let fd = Fd::open(path, libc::O_RDONLY, 0)?;
    let size = file_size(&fd)?;
    if size == 0 {
        return Ok((0, 0));
    }
    // SAFETY: plain sysconf query.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let len = size as usize;
    // SAFETY: a fresh read-only shared mapping of an open file; unmapped below.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.0, 0) };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vec = vec![0u8; size.div_ceil(page) as usize];
    // SAFETY: addr..addr+len is our mapping; vec has one byte per page of it.
    let r = check(unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) });
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(addr, len) };
    r?;
    let pages = vec.iter().filter(|b| **b & 1 == 1).count() as u64;
    fd.close()?;
    // The last page counts only up to the end of the file.
    Ok((size, (pages * page).min(size)))
}

/// [`Op::Copy`]: bytes copied.
fn copy(src: &str, dst: &str, block_bytes: u64, fsync: bool) -> io::Result<u64> {
    let from = Fd::open(src, libc::O_RDONLY, 0)?;
    let to = Fd::open(dst, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    let buf = AlignedBuf::new(block_bytes as usize, 0);
    let mut total = 0u64;
    loop {
        // SAFETY: buf holds block_bytes writable bytes; from is open.
        let n = check_size(unsafe { libc::read(from.0, buf.ptr.cast(), buf.len) })?;
        if n == 0 {
            break;
        }
        let mut done = 0usize;
        while done < n as usize {
            // SAFETY: [done, n) of buf was just read; to is open.
            let w = check_size(unsafe { libc::write(to.0, buf.ptr.add(done).cast(), n as usize - done) })?;
            if w == 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            done += w as usize;
        }
        total += n;
    }
    if fsync {
        // SAFETY: to is open.
        check(unsafe { libc::fsync(to.0) })?;
    }
    from.close()?;
    to.close()?;
    Ok(total)
}

fn file_size(fd: &Fd) -> io::Result<u64> {
    // SAFETY: st is a valid out-pointer, fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.0, &mut st) })?;
    Ok(st.st_size as u64)
}

fn pwrite_all(fd: &Fd, buf: &AlignedBuf, offset: u64) -> io::Result<u64> {
    let mut done = 0usize;
    while done < buf.len {
        // SAFETY: the range [done, len) of buf is valid; fd is open.
        let n = check_size(unsafe {
            libc::pwrite(fd.0, buf.ptr.add(done).cast(), buf.len - done, (offset + done as u64) as libc::off_t)
        })?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        done += n as usize;
    }
    Ok(done as u64)
}

/// Wait for SIGTERM or SIGINT. As a container's pid 1 the probe would otherwise never see
/// SIGTERM (the kernel drops signals init has no handler for), so they are blocked and
/// taken synchronously with sigwait.
fn hold() -> io::Result<()> {
    // SAFETY: plain signal-mask manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        eprintln!("{HOLD_MARKER}");
        let mut sig = 0;
        let r = libc::sigwait(&set, &mut sig);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// /proc/self/status memory lines (kB) as `<name>_bytes`.
pub fn parse_status(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let key = match k {
            "VmPeak" => "vm_peak_bytes",
            "VmSize" => "vm_size_bytes",
            "VmHWM" => "vm_hwm_bytes",
            "VmRSS" => "vm_rss_bytes",
            "RssAnon" => "rss_anon_bytes",
            "RssFile" => "rss_file_bytes",
            "RssShmem" => "rss_shmem_bytes",
            _ => continue,
        };
        let mut it = v.split_whitespace();
        if let (Some(n), Some("kB")) = (it.next().and_then(|n| n.parse::<u64>().ok()), it.next()) {
            m.insert(key.into(), n * 1024);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(dir: &Path, name: &str) -> String {
        dir.join(name).to_str().unwrap().to_string()
    }

    #[test]
    fn ops_in_a_tempdir() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::write(dir.join("lower"), vec![7u8; 64 * 1024]).unwrap();
        let req = Request::new(vec![
            Op::Copyup { path: p(dir, "lower"), offset: 4096, bytes: 4096, fsync: true },
            Op::Stat { paths: vec![p(dir, "lower"), p(dir, "missing")], open: true },
            Op::Write { path: p(dir, "new"), block_bytes: 4096, bytes: 32 * 1024, direct: false, random: false, fsync: true, create: true, per_block: true, seed: 0 },
            Op::Read { path: p(dir, "new"), block_bytes: 4096, direct: false, random: false, count: None, per_block: false, seed: 0 },
            Op::Read { path: p(dir, "lower"), block_bytes: 4096, direct: false, random: true, count: Some(5), per_block: true, seed: 3 },
            Op::Meminfo,
            Op::Copyup { path: p(dir, "absent"), offset: 0, bytes: 1, fsync: false },
        ]);
        let r = run(&req);
        assert_eq!(r.protocol_version, PROTOCOL_VERSION);
        let phases: Vec<_> = r.samples_of("copyup", "pwrite").collect();
        assert_eq!(phases.len(), 1);
        assert_eq!(phases[0].bytes, 4096);
        assert!(r.samples_of("copyup", "open").next().is_some());
        assert!(r.samples_of("copyup", "fsync").next().is_some());
        let data = std::fs::read(dir.join("lower")).unwrap();
        assert_eq!(data.len(), 64 * 1024);
        assert!(data[4096..8192].iter().all(|b| *b == 0xA5) && data[0] == 7 && data[8192] == 7);

        let stats: Vec<_> = r.samples_of("stat", "stat").collect();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].values["size_bytes"], 64 * 1024);
        assert!(stats[0].error.is_none());
        assert_eq!(stats[1].error.as_ref().unwrap().errno, Some(libc::ENOENT));

        assert_eq!(r.samples_of("write", "block").count(), 8);
        assert_eq!(r.samples_of("write", "total").next().unwrap().bytes, 32 * 1024);
        assert_eq!(std::fs::metadata(dir.join("new")).unwrap().len(), 32 * 1024);
        let reads: Vec<_> = r.samples_of("read", "total").collect();
        assert_eq!(reads[0].bytes, 32 * 1024);
        assert_eq!(reads[1].bytes, 5 * 4096);
        assert_eq!(r.samples_of("read", "block").count(), 5);

        let mem = r.samples_of("meminfo", "total").next().unwrap();
        assert!(mem.values["vm_rss_bytes"] > 0);

        // The failing copyup is reported, not fatal, and counted once.
        let (s, e) = r.first_error().unwrap();
        assert_eq!((s.op.as_str(), e.errno), ("stat", Some(libc::ENOENT)));
        let last = r.samples.last().unwrap();
        assert_eq!((last.op.as_str(), last.phase.as_str()), ("copyup", "open"));
        assert_eq!(last.error.as_ref().unwrap().errno, Some(libc::ENOENT));
        assert_eq!(r.errors, 2);
        assert!(r.finished_ns >= r.started_ns);
    }

    #[test]
    fn writers_append_without_overwriting_each_other() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::write(dir.join("big"), vec![1u8; 10_000]).unwrap();
        let req = Request::new(vec![
            Op::Append { path: p(dir, "fresh"), block_bytes: 100, count: 50, writers: 4, create: true, fsync: true },
            Op::Append { path: p(dir, "big"), block_bytes: 4096, count: 3, writers: 2, create: false, fsync: false },
            Op::Append { path: p(dir, "absent"), block_bytes: 1, count: 1, writers: 2, create: false, fsync: false },
        ]);
        let r = run(&req);
        let firsts: Vec<_> = r.samples.iter().filter(|s| s.index == 0 && s.phase == "first").collect();
        assert_eq!(firsts.len(), 4, "one first-append sample per writer");
        assert!(firsts.iter().all(|s| s.bytes == 100 && s.error.is_none()));
        let totals: Vec<_> = r.samples_of("append", "total").collect();
        assert_eq!((totals[0].bytes, totals[1].bytes), (4 * 50 * 100, 2 * 3 * 4096));
        assert!(totals[0].latency_ns >= firsts.iter().map(|s| s.latency_ns).max().unwrap());
        assert_eq!(std::fs::metadata(dir.join("fresh")).unwrap().len(), 4 * 50 * 100);
        let big = std::fs::read(dir.join("big")).unwrap();
        assert_eq!(big.len(), 10_000 + 2 * 3 * 4096, "appended at the end, nothing overwritten");
        assert!(big[..10_000].iter().all(|b| *b == 1) && big[10_000..].iter().all(|b| *b == 0xA7));
        // Without create, a missing file fails in every writer's open; the probe goes on.
        let failed: Vec<_> = r.samples.iter().filter(|s| s.index == 2 && s.error.is_some()).collect();
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|s| s.phase == "open" && s.error.as_ref().unwrap().errno == Some(libc::ENOENT)));
        assert_eq!(r.errors, 1);
    }

    #[test]
    fn resident_reads_nothing_and_copy_copies() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let data: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("src"), &data).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        let req = Request::new(vec![
            Op::Resident { path: p(dir, "src") },
            Op::Copy { src: p(dir, "src"), dst: p(dir, "dst"), block_bytes: 65536, fsync: true },
            Op::Resident { path: p(dir, "empty") },
            Op::Resident { path: p(dir, "absent") },
            Op::Copy { src: p(dir, "absent"), dst: p(dir, "dst2"), block_bytes: 4096, fsync: false },
        ]);
        let r = run(&req);
        let res: Vec<_> = r.samples_of("resident", "resident").collect();
        assert_eq!(res.len(), 3);
        // Just written: some of it is in the page cache, never more than the file.
        assert_eq!(res[0].values["size_bytes"], 300_001);
        assert!(res[0].values["resident_bytes"] <= 300_001);
        assert_eq!((res[1].values["size_bytes"], res[1].values["resident_bytes"]), (0, 0));
        assert_eq!(res[2].error.as_ref().unwrap().errno, Some(libc::ENOENT));
        let copies: Vec<_> = r.samples_of("copy", "total").collect();
        assert_eq!(copies[0].bytes, 300_001);
        assert!(copies[0].error.is_none());
        assert_eq!(std::fs::read(dir.join("dst")).unwrap(), data);
        assert_eq!(copies[1].error.as_ref().unwrap().errno, Some(libc::ENOENT));
        assert!(!dir.join("dst2").exists());
        assert_eq!(r.errors, 2);
        // mincore sees what a read brings in.
        std::fs::read(dir.join("dst")).unwrap();
        assert_eq!(resident(&p(dir, "dst")).unwrap(), (300_001, 300_001));
    }

    #[test]
    fn status_parsing() {
        let m = parse_status("Name:\tx\nVmRSS:\t  1200 kB\nRssFile:\t 4 kB\nThreads: 1\n");
        assert_eq!(m["vm_rss_bytes"], 1200 * 1024);
        assert_eq!(m["rss_file_bytes"], 4096);
        assert_eq!(m.len(), 2);
    }
}
