//! File IO of `seqio`, `randio` and `baremetal`: the probe requests of one IO job, the
//! arithmetic from the probe's samples to the metrics, the O_DIRECT check, the IO image, and
//! the in-container executor that `seqio` and `randio` share (one executor, the pattern is a
//! parameter). `baremetal` runs the same requests on the host (its own executor).
//!
//! In a container, per repetition and job: one container on the IO image. Its probe request
//! (see [`io_ops`]) holds at one point; the executor waits until every job holds, drops the
//! caches, then signals all jobs at once, so the timed IO of every job starts together and cold.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::images::content::Pattern as Content;
use crate::images::synth::TarWriter;
use crate::images::{CustomLayer, ImageSpec, Shape};
use crate::lab::{Container, ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request, Response, Sample};
use serde::{Deserialize, Serialize};

use crate::{Better, CellExec, MetricSpec, ParamKind, ParamSpec, Params, Profile, RepSamples, SetupError, TypedParams, Unit, GIB, KIB, MIB};

/// `Pattern` as the executor reads it: which access pattern a cell does.
use Pattern as Access;

// --- Parameters and metrics of the IO workloads (seqio, randio; baremetal adds its site) ---

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `/data/io`, a file of the image.
    Image,
    /// A file created in the container layer.
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Seq,
    Rand,
}

/// Parameters of one seqio / randio / baremetal cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoParams {
    pub pattern: Pattern,
    pub target: Target,
    /// O_DIRECT on every open.
    pub direct: bool,
    /// fsync before close of the written file (included in the write time).
    pub fsync: bool,
    pub file_bytes: u64,
    pub block_bytes: u64,
    /// Concurrent jobs (containers), each on its own file copy.
    pub jobs: u32,
    /// IOs of one read pass and of one write pass: every block once for `seq`; for `rand`
    /// that many random block-aligned offsets anywhere in the file (which is never extended).
    pub ios: u64,
}

impl TypedParams for IoParams {}

impl IoParams {
    pub fn ios(&self) -> u64 {
        self.ios.max(1)
    }
    pub fn seq(target: Target, direct: bool, fsync: bool, file_bytes: u64, jobs: u32) -> Self {
        let ios = file_bytes.div_ceil(SEQ_BLOCK).max(1);
        IoParams { pattern: Pattern::Seq, target, direct, fsync, file_bytes, block_bytes: SEQ_BLOCK, jobs, ios }
    }
    /// Random IO: `ios` 4 KiB IOs per pass (at most one per block of the file).
    pub fn rand(target: Target, direct: bool, fsync: bool, file_bytes: u64, jobs: u32, ios: u64) -> Self {
        let ios = ios.min(file_bytes / RAND_BLOCK).max(1);
        IoParams { pattern: Pattern::Rand, target, direct, fsync, file_bytes, block_bytes: RAND_BLOCK, jobs, ios }
    }
}

pub const SEQ_BLOCK: u64 = 128 * KIB;
pub const RAND_BLOCK: u64 = 4 * KIB;
/// Random IOs per pass in the quick profile (8 MiB of 4 KiB IOs, spread over the whole file);
/// the full profile does one per 4 blocks of the file, at least this many.
pub const RAND_IOS_QUICK: u64 = 2048;
pub const QUICK_FILE: u64 = 64 * MIB;
pub const FULL_FILES: [u64; 3] = [64 * MIB, 256 * MIB, GIB];
pub const FULL_JOBS: [u32; 2] = [1, 4];

/// Path of the image file inside the container.
pub const IMAGE_FILE: &str = "/data/io";
/// Path of the new file inside the container.
pub const NEW_FILE: &str = "/var/tmp/cowbench-io";

pub const METRICS: [MetricSpec; 4] = [
    MetricSpec { name: "read_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "bytes read over the probe's read time (all jobs: sum over the slowest)" },
    MetricSpec { name: "write_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "bytes written over the probe's write time, open to close, fsync included" },
    MetricSpec { name: "read_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "mean time of one read IO (read time / IOs), one sample per job" },
    MetricSpec { name: "write_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "mean time of one write IO (write time / IOs), one sample per job" },
];

/// Quick cells, one 64 MiB file and one job: buffered and direct on the image file (what
/// dm-io-intensive compares), and on a new file buffered + fsync (seqio) or direct + fsync
/// (randio). The full profile has every combination.
pub fn quick_cells(rand: bool) -> Vec<IoParams> {
    if rand {
        let mk = |t, d, f| IoParams::rand(t, d, f, QUICK_FILE, 1, RAND_IOS_QUICK);
        vec![mk(Target::Image, false, false), mk(Target::Image, true, false), mk(Target::New, true, true)]
    } else {
        let mk = |t, d, f| IoParams::seq(t, d, f, QUICK_FILE, 1);
        vec![mk(Target::Image, false, false), mk(Target::Image, true, false), mk(Target::New, false, true)]
    }
}

/// Full cells: every target × buffered/direct × fsync × size × jobs.
pub fn full_cells(rand: bool) -> Vec<IoParams> {
    let mk = |t, d, f, b: u64, j| {
        if rand {
            IoParams::rand(t, d, f, b, j, (b / RAND_BLOCK / 4).max(RAND_IOS_QUICK))
        } else {
            IoParams::seq(t, d, f, b, j)
        }
    };
    let mut v = Vec::new();
    for &jobs in &FULL_JOBS {
        for &size in &FULL_FILES {
            for target in [Target::Image, Target::New] {
                for direct in [false, true] {
                    for fsync in [false, true] {
                        v.push(mk(target, direct, fsync, size, jobs));
                    }
                }
            }
        }
    }
    v
}

/// `ios` from the other parameters after a `--set` (shared by seqio, randio and baremetal):
/// one IO per block for a sequential pass, at most one per block for a random one.
pub fn derive_ios(p: &mut Params) {
    let Ok(io) = IoParams::from_params(p) else { return };
    let blocks = io.file_bytes.div_ceil(io.block_bytes.max(1)).max(1);
    let ios = match io.pattern {
        Pattern::Seq => blocks,
        Pattern::Rand => io.ios.min(io.file_bytes / io.block_bytes.max(1)).max(1),
    };
    p.insert("ios".into(), ios.into());
}

pub fn repetitions(profile: Profile) -> u32 {
    match profile {
        Profile::Quick => 2,
        Profile::Full => 10,
    }
}

/// The parameters of a seqio or randio cell (`cowbench run --set seqio.NAME=…`).
pub const PARAMS: [ParamSpec; 8] = [
    ParamSpec { name: "pattern", kind: ParamKind::Choice(&["seq", "rand"]), description: "sequential 128 KiB or random 4 KiB IO" },
    ParamSpec { name: "target", kind: ParamKind::Choice(&["image", "new"]), description: "a file of the image, or a new file of the container layer" },
    ParamSpec { name: "direct", kind: ParamKind::Bool, description: "O_DIRECT on every open" },
    ParamSpec { name: "fsync", kind: ParamKind::Bool, description: "fsync before close of the written file" },
    ParamSpec { name: "file_bytes", kind: ParamKind::Bytes, description: "size of the file" },
    ParamSpec { name: "block_bytes", kind: ParamKind::Bytes, description: "size of one IO" },
    ParamSpec { name: "jobs", kind: ParamKind::Count, description: "concurrent jobs (containers), each on its own file copy" },
    ParamSpec { name: "ios", kind: ParamKind::Count, description: "IOs of one read pass and of one write pass" },
];

// --- The executor ---

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

/// The seed of job `job` in repetition `rep`: every job and repetition gets its own random
/// offsets.
pub fn job_seed(seed: u64, rep: u32, job: u32) -> u64 {
    seed ^ ((rep as u64) << 32) ^ job as u64
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

/// Whether an O_DIRECT open works on a fresh mounted layer of the lab's driver: EINVAL there
/// means the backend refuses O_DIRECT, and direct cells are skipped with that reason. Checked
/// once per driver of a run (the capability flag says what the backend should do; this says
/// what it does on this host, e.g. FUSE stand-ins that accept the open and refuse the IO).
pub fn o_direct_refused(lab: &dyn Lab) -> anyhow::Result<Option<String>> {
    // Keyed by the scratch directory, which is one per driver and run.
    static SEEN: Mutex<BTreeMap<std::path::PathBuf, Option<String>>> = Mutex::new(BTreeMap::new());
    let target = lab.scratch_dir("odirect-check")?;
    if let Some(v) = SEEN.lock().unwrap().get(&target) {
        return Ok(v.clone());
    }
    let d = lab.driver();
    let name = lab.driver_name();
    let key = format!("odirect-check-{}", std::process::id());
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
                Some(format!("{name} refuses O_DIRECT: open(O_DIRECT) on a mounted layer fails with EINVAL"))
            } else {
                anyhow::bail!("{name}: open(O_DIRECT) of {}: {e}", f.display());
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
                (4096, _) => Some(format!("{name} refuses O_DIRECT: a 4 KiB O_DIRECT read on a mounted layer fails ({re})")),
                _ => Some(format!("{name} refuses O_DIRECT: a 4 KiB O_DIRECT write on a mounted layer fails ({we})")),
            }
        };
        let _ = std::fs::remove_file(&f);
        guard.unmount()?;
        Ok(refused)
    })();
    let removed = d.remove(&key);
    let v = res?;
    removed?;
    SEEN.lock().unwrap().insert(target, v.clone());
    Ok(v)
}

/// What O_DIRECT means on this backend, for the cell's notes.
pub fn o_direct_note(lab: &dyn Lab) -> String {
    if lab.driver().capabilities().loop_backed {
        let status = lab.driver().status().ok();
        let dio = status.and_then(|m| m.backing?.loop_direct_io).map_or_else(|| "unknown".into(), |d| d.to_string());
        format!("accepted; storage is loop-backed (loop direct IO: {dio}): without it the loop device serves O_DIRECT from the host page cache")
    } else {
        "accepted".into()
    }
}

/// The IO image of one file size: base layer + `/data/io`. Shared by every seqio and randio cell.
pub fn io_image(lab: &dyn Lab, file_bytes: u64) -> anyhow::Result<Image> {
    let seed = lab.seed();
    let layer = CustomLayer::new(format!("{IMAGE_FILE} of {file_bytes} bytes, content::Pattern(seed {seed}, salt 0)"), move |w| {
        let mut t = TarWriter::new(w);
        t.file(IMAGE_FILE, 0o644, file_bytes, Content::new(seed, 0, file_bytes))?;
        t.finish()?.flush()
    });
    lab.image(&ImageSpec::new(&format!("io-b{file_bytes}-s{seed}"), seed, Shape::Custom(vec![layer])))
}

/// The executor of a `seqio` or `randio` cell: containers on the IO image.
pub fn setup_in_container<'a>(workload: &str, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p: IoParams = crate::kit::params(workload, params)?;
    if p.direct {
        if let Some(why) = o_direct_refused(lab)? {
            return Err(SetupError::Skip(why));
        }
    }
    let img = match p.target {
        Target::Image => io_image(lab, p.file_bytes)?,
        // New files need only the base layer.
        Target::New => lab.image(&ImageSpec::new(&format!("io-base-s{}", lab.seed()), lab.seed(), Shape::Base))?,
    };
    Ok(Box::new(InContainer { lab, p, img }))
}

struct InContainer<'a> {
    lab: &'a dyn Lab,
    p: IoParams,
    img: Image,
}

impl InContainer<'_> {
    fn file(&self) -> &'static str {
        if self.p.target == Target::Image {
            IMAGE_FILE
        } else {
            NEW_FILE
        }
    }
}

impl CellExec for InContainer<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let mut held: Vec<(Box<dyn Container + '_>, IoOps)> = Vec::new();
        let result = (|| -> anyhow::Result<Vec<(Sample, Sample)>> {
            for j in 0..self.p.jobs {
                let o = io_ops(&self.p, self.file(), job_seed(self.lab.seed(), rep, j));
                let spec = ContainerSpec { stop_timeout: Some(Duration::from_secs(900)), ..ContainerSpec::probe(&Request::new(o.ops.clone())) };
                let c = self.lab.start(&self.img, &spec)?;
                held.push((c, o));
            }
            for (c, _) in &held {
                c.wait_ready(Duration::from_secs(600))?;
            }
            // The timed IO starts cold whatever the container's start did: new files were
            // written before the hold, and vfs copies the image file when the layer is made.
            self.lab.drop_caches().map_err(|e| anyhow::anyhow!("{}: {e}", self.lab.driver_name()))?;
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
            stopped.into_iter().collect::<anyhow::Result<Vec<_>>>()
        })();
        // Containers of a failed repetition are removed (dropping them kills and cleans up).
        drop(held);
        Ok(io_samples(&self.p, &result?))
    }

    fn notes(&self) -> Notes {
        let mut n = BTreeMap::from([
            ("image".into(), self.img.name.clone()),
            ("file".into(), self.file().into()),
            ("ios_per_pass".into(), self.p.ios().to_string()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC), open to close, fsync included".into()),
        ]);
        if self.p.direct {
            n.insert("o_direct".into(), o_direct_note(self.lab));
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // The IO image stays: every seqio and randio cell of the run shares it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_read_and_write_are_where_the_indices_say() {
        for p in [
            IoParams::seq(Target::Image, false, false, MIB, 1),
            IoParams::seq(Target::New, true, true, MIB, 1),
            IoParams::rand(Target::Image, true, false, MIB, 1, 16),
            IoParams::rand(Target::New, false, true, MIB, 1, 16),
        ] {
            let o = io_ops(&p, "/f", 7);
            assert_eq!(o.ops[o.hold], Op::Hold, "{p:?}");
            assert!(matches!(o.ops[o.read], Op::Read { .. } | Op::RandomIo { write: false, .. }), "{p:?}");
            assert!(matches!(o.ops[o.write], Op::Write { .. } | Op::RandomIo { write: true, .. }), "{p:?}");
            // A new file exists before the caches are dropped; the image file is never created.
            let creates = o.ops.iter().position(|op| matches!(op, Op::Write { create: true, .. }));
            match p.target {
                Target::New => assert!(creates.is_some_and(|i| i < o.hold), "{p:?}"),
                Target::Image => assert_eq!(creates, None, "{p:?}"),
            }
        }
    }

    #[test]
    fn throughput_is_all_bytes_over_the_slowest_job() {
        let p = IoParams::seq(Target::Image, false, false, MIB, 2);
        let s = |ns: u64, bytes: u64| Sample { latency_ns: ns, bytes, ..Sample::new("read", 1, "total") };
        let v = io_samples(&p, &[(s(1_000_000, MIB), s(4_000_000, MIB)), (s(2_000_000, MIB), s(2_000_000, MIB))]);
        let get = |m: &str| v.iter().filter(|(n, _)| *n == m).map(|(_, x)| *x).collect::<Vec<_>>();
        assert_eq!(get("read_bytes_per_s"), vec![2.0 * MIB as f64 / 2e-3]);
        assert_eq!(get("write_bytes_per_s"), vec![2.0 * MIB as f64 / 4e-3]);
        // One latency per job: its time over the IOs of a pass (8 blocks of 128 KiB).
        assert_eq!(get("read_latency_ns"), vec![125_000.0, 250_000.0]);
        assert_eq!(get("write_latency_ns"), vec![500_000.0, 250_000.0]);
    }
}
