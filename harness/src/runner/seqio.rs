//! Executor of `seqio` and `randio` (one executor, the pattern is a parameter), and the probe
//! requests and result arithmetic that `baremetal` shares.
//!
//! Per repetition and job, one container on the IO image. Its probe request (see
//! [`io_ops`]) holds at one point; the harness waits until every job holds, drops the caches,
//! then signals all jobs at once, so the timed IO of every job starts together and cold.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use cowbench_workloads::probe::{Op, Response, Sample};
use cowbench_workloads::seqio::{IoParams, Pattern as Access, Target, IMAGE_FILE, NEW_FILE};
use cowbench_workloads::{Params, TypedParams, MIB};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::imgs::{self, LayerFn, Pattern};
use crate::container::{Container, ContainerSpec};
use crate::image::synth::TarWriter;
use crate::image::Image;

/// The probe operations of one job on `file` (the image file or a new one), with the index of
/// the `hold` and of the recorded read and write.
pub struct IoOps {
    pub ops: Vec<Op>,
    pub hold: usize,
    pub read: usize,
    pub write: usize,
}

pub fn io_ops(p: &IoParams, file: &str, seed: u64) -> IoOps {
    // Sequential passes cover the file once; random ones do `ios` IOs at random block offsets
    // anywhere in the existing file (never extending it).
    let read = match p.pattern {
        Access::Seq => Op::Read {
            path: file.into(),
            block_bytes: p.block_bytes,
            direct: p.direct,
            random: false,
            count: Some(p.ios()),
            per_block: false,
            seed,
        },
        Access::Rand => random_io(p, file, false, seed),
    };
    let seq_write = |create: bool, fsync: bool| Op::Write {
        path: file.into(),
        block_bytes: p.block_bytes,
        bytes: p.file_bytes,
        direct: p.direct,
        random: false,
        fsync,
        create,
        per_block: false,
        seed,
    };
    let write = match p.pattern {
        Access::Seq => seq_write(false, p.fsync),
        Access::Rand => random_io(p, file, true, seed),
    };
    match (p.target, p.pattern) {
        // Read the file as it comes, then the first writes to it (copy-up where the backend
        // copies up).
        (Target::Image, _) => IoOps { ops: vec![Op::Hold, read, write], hold: 0, read: 1, write: 2 },
        // The timed write creates the file; it is read back after the caches are dropped.
        (Target::New, Access::Seq) => IoOps { ops: vec![seq_write(true, p.fsync), Op::Hold, read], hold: 1, read: 2, write: 0 },
        // An unrecorded fill (buffered 1 MiB blocks, synced), then random reads and overwrites.
        (Target::New, Access::Rand) => {
            let fill = Op::Write {
                path: file.into(),
                block_bytes: MIB,
                bytes: p.file_bytes,
                direct: false,
                random: false,
                fsync: true,
                create: true,
                per_block: false,
                seed,
            };
            IoOps { ops: vec![fill, Op::Hold, read, write], hold: 1, read: 2, write: 3 }
        }
    }
}

fn random_io(p: &IoParams, file: &str, write: bool, seed: u64) -> Op {
    Op::RandomIo {
        path: file.into(),
        block_bytes: p.block_bytes,
        count: p.ios(),
        write,
        direct: p.direct,
        dsync: false,
        fsync: write && p.fsync,
        interval_us: 0,
        per_block: false,
        seed,
    }
}

/// The `total` sample of operation `index`, failing on any error of the request.
pub fn total<'r>(r: &'r Response, index: usize, what: &str) -> anyhow::Result<&'r Sample> {
    if let Some((s, e)) = r.first_error() {
        if s.phase == "open" && e.errno == Some(libc::EINVAL) {
            anyhow::bail!("{what}: open of {} refused with EINVAL (O_DIRECT not supported here)", s.path.as_deref().unwrap_or("?"));
        }
        anyhow::bail!("{what}: probe {} {}: {}", s.op, s.phase, e.message);
    }
    r.samples.iter().find(|s| s.index == index && s.phase == "total").ok_or_else(|| anyhow::anyhow!("{what}: no sample of op {index}"))
}

/// Metrics of one repetition from every job's (read, write) `total` samples.
pub fn io_samples(p: &IoParams, jobs: &[(Sample, Sample)]) -> RepSamples {
    let mut v: RepSamples = Vec::new();
    let ios = p.ios() as f64;
    for (label, pick) in [("read", 0usize), ("write", 1)] {
        let ss: Vec<&Sample> = jobs.iter().map(|j| if pick == 0 { &j.0 } else { &j.1 }).collect();
        let bytes: u64 = ss.iter().map(|s| s.bytes).sum();
        let slowest = ss.iter().map(|s| s.latency_ns).max().unwrap_or(0).max(1);
        let (tp, lat) = if label == "read" { ("read_bytes_per_s", "read_latency_ns") } else { ("write_bytes_per_s", "write_latency_ns") };
        v.push((tp, bytes as f64 * 1e9 / slowest as f64));
        for s in ss {
            v.push((lat, s.latency_ns as f64 / ios));
        }
    }
    v
}

/// (read, write) samples of one job's response.
pub fn job_result(r: &Response, o: &IoOps, what: &str) -> anyhow::Result<(Sample, Sample)> {
    Ok((total(r, o.read, what)?.clone(), total(r, o.write, what)?.clone()))
}

/// Whether an O_DIRECT open works on a fresh mounted layer of the session's driver: EINVAL
/// there means the backend refuses O_DIRECT, and direct cells are skipped with that reason.
/// Checked once per driver root.
pub fn o_direct_refused(s: &Session) -> anyhow::Result<Option<String>> {
    static SEEN: Mutex<BTreeMap<String, Option<String>>> = Mutex::new(BTreeMap::new());
    let id = s.cfg.driver_root(&s.name).display().to_string();
    if let Some(v) = SEEN.lock().unwrap().get(&id) {
        return Ok(v.clone());
    }
    let d = &*s.driver;
    let key = format!("odirect-check-{}", std::process::id());
    let target = s.cfg.root.join("odirect-check");
    std::fs::create_dir_all(&target)?;
    d.prepare(&key, None, &Default::default())?;
    let res = (|| -> anyhow::Result<Option<String>> {
        let guard = cowbench_drivers::MountGuard::new(d, &key, &target)?;
        let f = guard.path().join("f");
        let c = std::ffi::CString::new(f.to_str().unwrap_or_default())?;
        // Open, write and read back one aligned block: some backends (FUSE ones) accept the
        // O_DIRECT open and refuse the IO.
        // SAFETY: c is a valid path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_DIRECT | libc::O_CLOEXEC, 0o644) };
        let refused = if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                Some(format!("{} refuses O_DIRECT: open(O_DIRECT) on a mounted layer fails with EINVAL", s.name))
            } else {
                anyhow::bail!("open(O_DIRECT) of {}: {e}", f.display());
            }
        } else {
            let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
            // SAFETY: non-zero size; freed below.
            let buf = unsafe { std::alloc::alloc_zeroed(layout) };
            // SAFETY: buf holds 4096 bytes; fd is open.
            let w = unsafe { libc::pwrite(fd, buf.cast(), 4096, 0) };
            let we = std::io::Error::last_os_error();
            // SAFETY: as above.
            let r = if w == 4096 { unsafe { libc::pread(fd, buf.cast(), 4096, 0) } } else { -1 };
            let re = std::io::Error::last_os_error();
            // SAFETY: allocated above with this layout; fd is ours.
            unsafe {
                std::alloc::dealloc(buf, layout);
                libc::close(fd);
            }
            match (w, r) {
                (4096, 4096) => None,
                (4096, _) => Some(format!("{} refuses O_DIRECT: a 4 KiB O_DIRECT read on a mounted layer fails ({re})", s.name)),
                _ => Some(format!("{} refuses O_DIRECT: a 4 KiB O_DIRECT write on a mounted layer fails ({we})", s.name)),
            }
        };
        let _ = std::fs::remove_file(&f);
        guard.unmount()?;
        Ok(refused)
    })();
    let removed = d.remove(&key);
    let _ = std::fs::remove_dir(&target);
    let v = res?;
    removed?;
    SEEN.lock().unwrap().insert(id, v.clone());
    Ok(v)
}

/// What O_DIRECT means on this backend, for the cell's notes.
pub fn o_direct_note(s: &Session) -> String {
    let caps = s.driver.capabilities();
    if caps.loop_backed {
        let dio = s.driver.status().ok().and_then(|m| m.backing?.loop_direct_io).map_or_else(|| "unknown".into(), |d| d.to_string());
        format!("accepted; storage is loop-backed (loop direct IO: {dio}): without it the loop device serves O_DIRECT from the host page cache")
    } else {
        "accepted".into()
    }
}

/// The IO image of one file size: base layer + `/data/io`. Shared by every seqio and randio cell.
pub fn io_image(s: &Session, file_bytes: u64) -> anyhow::Result<Image> {
    let seed = s.seed;
    let layer: LayerFn<'_> = Box::new(move |w: &mut dyn Write| {
        let mut t = TarWriter::new(w);
        t.file(IMAGE_FILE, 0o644, file_bytes, Pattern::new(seed, 0, file_bytes))?;
        t.finish()?.flush()
    });
    imgs::load_or_build(&*s.driver, &format!("io-b{file_bytes}-s{seed}"), vec![layer])
}

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = IoParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if p.direct {
        if let Some(why) = o_direct_refused(s)? {
            return Err(SetupError::Skip(why));
        }
    }
    let img = match p.target {
        Target::Image => io_image(s, p.file_bytes)?,
        // New files need only the base layer.
        Target::New => imgs::load_or_build(&*s.driver, &format!("io-base-s{}", s.seed), vec![])?,
    };
    Ok(Box::new(Io { s, p, img }))
}

struct Io<'a> {
    s: &'a Session,
    p: IoParams,
    img: Image,
}

impl CellExec for Io<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let file = if self.p.target == Target::Image { IMAGE_FILE } else { NEW_FILE };
        let mut held: Vec<(Container<'_>, IoOps)> = Vec::new();
        let result = (|| -> anyhow::Result<Vec<(Sample, Sample)>> {
            for j in 0..self.p.jobs {
                let o = io_ops(&self.p, file, self.s.seed ^ ((rep as u64) << 32) ^ j as u64);
                let spec = ContainerSpec {
                    stop_timeout: Some(Duration::from_secs(900)),
                    ..ContainerSpec::probe(&cowbench_workloads::probe::Request::new(o.ops.clone()))
                };
                let c = self.s.runtime.start(d, &self.img, &spec)?;
                held.push((c, o));
            }
            for (c, _) in &held {
                c.wait_ready(Duration::from_secs(600))?;
            }
            // The timed IO starts cold whatever the container's start did: new files were
            // written before the hold, and vfs copies the image file when the layer is made.
            super::drop_caches().map_err(|e| anyhow::anyhow!(e))?;
            // Every job is stopped (SIGTERM, then wait) from its own thread, so the jobs start
            // their timed IO together.
            let stopped: Vec<anyhow::Result<(Sample, Sample)>> = std::thread::scope(|sc| {
                let hs: Vec<_> = held
                    .drain(..)
                    .map(|(c, o)| {
                        sc.spawn(move || -> anyhow::Result<(Sample, Sample)> {
                            let id = c.id().to_string();
                            let out = c.stop()?;
                            job_result(&out.probe_response()?, &o, &format!("container {id}"))
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("job thread panicked")))).collect()
            });
            let jobs = stopped.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            Ok(jobs)
        })();
        // Containers of a failed repetition are removed (dropping them kills and cleans up).
        drop(held);
        Ok(io_samples(&self.p, &result?))
    }

    fn notes(&self) -> BTreeMap<String, String> {
        let mut n = BTreeMap::from([
            ("image".into(), self.img.name.clone()),
            ("file".into(), if self.p.target == Target::Image { IMAGE_FILE } else { NEW_FILE }.into()),
            ("ios_per_pass".into(), self.p.ios().to_string()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC), open to close, fsync included".into()),
        ]);
        if self.p.direct {
            n.insert("o_direct".into(), o_direct_note(self.s));
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}
