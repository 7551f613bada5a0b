//! `concurrent`: Tarasov-style IO from M containers at once (Tarasov et al., FAS*W 2017).
//!
//! M containers of one image start and hold; then all are released together and each does
//! `ios` synchronous IOs: random 4 KiB reads (`read`) or O_DSYNC overwrites (`update`) of one
//! large image file, or whole-file reads (`file_read`) / fsynced whole-file overwrites
//! (`file_update`) of 64 KiB image files. The first write to an image file copies it up on
//! overlay and aufs (the whole 1 GiB file in Tarasov's runs: the copy-up-under-load case).
//! Completion time per container and for all M come from the probes' CLOCK_MONOTONIC (one
//! clock on the host, the same inside every container). Answers dm-io-intensive and the
//! "overlay/aufs: many containers, little IO" rows.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::images::{self, ImageSpec, Shape, LARGE_PATH};
use crate::kit;
use crate::lab::{Container, ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request, Response};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, GIB, KIB, MIB, Better, ParamKind, ParamSpec, Unit};

/// What each container does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Random 4 KiB reads of the single large file.
    Read,
    /// Random 4 KiB O_DSYNC overwrites of the single large file.
    Update,
    /// Whole-file reads of 64 KiB files.
    FileRead,
    /// Whole-file fsynced overwrites of 64 KiB files.
    FileUpdate,
}

/// Parameters of one concurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrentParams {
    /// Containers running at once (M).
    pub containers: u32,
    pub mode: Mode,
    /// Image data: the single file's size, or the total of the 64 KiB files.
    pub data_bytes: u64,
    /// IOs per container (a 64 KiB file counts as one).
    pub ios: u64,
    /// Pause between IO starts in a container (Tarasov: 100 ms = 10 IOPS); 0 = back to back.
    pub interval_us: u64,
}

impl TypedParams for ConcurrentParams {}

/// Random IO size.
pub const BLOCK: u64 = 4 * KIB;
/// Size of each small file.
pub const SMALL_FILE: u64 = 64 * KIB;
pub const QUICK_M: u32 = 4;
pub const QUICK_DATA: u64 = 64 * MIB;
pub const QUICK_IOS: u64 = 200;
pub const QUICK_MODES: [Mode; 2] = [Mode::Read, Mode::Update];
pub const FULL_M: [u32; 4] = [4, 16, 32, 64];
pub const FULL_DATA: u64 = GIB;
pub const FULL_IOS: u64 = 600;
pub const FULL_INTERVAL_US: u64 = 100_000;

pub const METRICS: [MetricSpec; 4] = [
    MetricSpec {
        name: "completion_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "one container's IOs from its release to its last IO, timed by its probe (one sample per container)",
    },
    MetricSpec {
        name: "total_completion_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "from the first container's release to the last container's last IO (probe clocks)",
    },
    MetricSpec {
        name: "mean_io_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "one container's IO time / its IO count (one sample per container)",
    },
    MetricSpec {
        name: "aggregate_ios_per_s",
        unit: Unit::IosPerSecond,
        better: Better::Higher,
        description: "M × ios / total_completion",
    },
];

/// The parameters of a cell (`cowbench run --set concurrent.NAME=…`).
pub const PARAMS: [ParamSpec; 5] = [
    ParamSpec { name: "containers", kind: ParamKind::Count, description: "containers running at once (M)" },
    ParamSpec { name: "mode", kind: ParamKind::Choice(&["read", "update", "file_read", "file_update"]), description: "what each container does" },
    ParamSpec { name: "data_bytes", kind: ParamKind::Bytes, description: "image data: the single file's size, or the total of the 64 KiB files" },
    ParamSpec { name: "ios", kind: ParamKind::Count, description: "IOs per container (a 64 KiB file counts as one)" },
    ParamSpec { name: "interval_us", kind: ParamKind::Count, description: "pause between IO starts in a container, in microseconds (0 = back to back)" },
];

pub struct Concurrent;

impl Workload for Concurrent {
    fn id(&self) -> &'static str {
        "concurrent"
    }
    fn description(&self) -> &'static str {
        "Tarasov-style: M containers at once doing synchronous random IO on an image file (or many small files)"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["dm-io-intensive", "overlay-copyup-whole-file"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        ConcurrentParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        match profile {
            Profile::Quick => QUICK_MODES
                .iter()
                .map(|&mode| {
                    ConcurrentParams { containers: QUICK_M, mode, data_bytes: QUICK_DATA, ios: QUICK_IOS, interval_us: 0 }
                        .to_params()
                })
                .collect(),
            Profile::Full => {
                let mut v = Vec::new();
                for mode in [Mode::Read, Mode::Update, Mode::FileRead, Mode::FileUpdate] {
                    for &containers in &FULL_M {
                        v.push(
                            ConcurrentParams {
                                containers,
                                mode,
                                data_bytes: FULL_DATA,
                                ios: FULL_IOS,
                                interval_us: FULL_INTERVAL_US,
                            }
                            .to_params(),
                        );
                    }
                }
                v
            }
        }
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        0
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            Profile::Quick => 1,
            Profile::Full => 3,
        }
    }
    fn drop_caches(&self) -> bool {
        // Tarasov measured cold: caches dropped before each repetition, and again by the
        // executor once the containers are up.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: ConcurrentParams = kit::params(self.id(), params)?;
        if p.containers == 0 || p.ios == 0 {
            return Err(SetupError::Fail(anyhow::anyhow!("concurrent needs containers > 0 and ios > 0")));
        }
        let (spec, files) = match p.mode {
            // The image `sharedcache` and `fragmentation` read too: one build per driver and size.
            Mode::Read | Mode::Update => (images::large_file(lab.seed(), p.data_bytes), 0),
            Mode::FileRead | Mode::FileUpdate => {
                let count = (p.data_bytes / SMALL_FILE).max(1) as usize;
                let spec = ImageSpec::new(
                    &format!("smallfiles-{count}x{SMALL_FILE}"),
                    lab.seed(),
                    Shape::SmallFiles { count, bytes: SMALL_FILE, per_dir: PER_DIR },
                );
                (spec, count)
            }
        };
        let img = lab.image(&spec)?;
        Ok(Box::new(Exec { lab, p, img, files }))
    }
}

// The executor: M containers start and hold (probe `hold`, then in the same request the
// container's IO operations, then a second `hold`); with all M up it drops the page cache and
// sends SIGTERM to every container's init at once ([`Container::sigterm`], a signal from the
// host), which ends the first holds and starts the IO everywhere; then it stops each container
// (its SIGTERM ends the second hold, at once if it came during the IO) and takes its probe
// response.
//
// A container's IO runs from the end of its first hold (`started_ns` + its latency) to the
// start of the second (`finished_ns` − its latency), CLOCK_MONOTONIC inside the container,
// which is the host's one clock (runc gives containers no time namespace): completion per
// container, and from the first release to the last end for all M.

/// Files per directory of the small-file image.
const PER_DIR: usize = 256;

struct Exec<'a> {
    lab: &'a dyn Lab,
    p: ConcurrentParams,
    img: Image,
    /// Files of the small-file image (0 for the single-file modes).
    files: usize,
}

/// The IO operations of container `i` in repetition `rep` (`files`: of the small-file image).
fn io_ops(p: &ConcurrentParams, run_seed: u64, files: usize, rep: u32, i: u32) -> Vec<Op> {
    let seed = ((rep as u64) << 32) | i as u64;
    match p.mode {
        Mode::Read | Mode::Update => vec![Op::RandomIo {
            path: LARGE_PATH.into(),
            block_bytes: BLOCK,
            count: p.ios,
            write: p.mode == Mode::Update,
            direct: false,
            // Tarasov's updates are synchronous: each reaches the device before the next.
            dsync: p.mode == Mode::Update,
            fsync: false,
            interval_us: p.interval_us,
            per_block: true,
            seed,
        }],
        Mode::FileRead | Mode::FileUpdate => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(run_seed ^ seed);
            let mut ops = Vec::new();
            for _ in 0..p.ios {
                let f = rng.gen_range(0..files);
                let path = format!("/small/d{}/f{f}", f / PER_DIR);
                ops.push(if p.mode == Mode::FileRead {
                    Op::Read { path, block_bytes: SMALL_FILE, direct: false, random: false, count: None, per_block: false, seed: 0 }
                } else {
                    Op::Write {
                        path,
                        block_bytes: SMALL_FILE,
                        bytes: SMALL_FILE,
                        direct: false,
                        random: false,
                        fsync: true,
                        create: false,
                        per_block: false,
                        seed: 0,
                    }
                });
                if p.interval_us >= 1000 {
                    ops.push(Op::Sleep { ms: p.interval_us / 1000 });
                }
            }
            ops
        }
    }
}

/// (IO start, IO end, summed IO latency, IOs) of one container's response.
fn io_window(resp: &Response) -> anyhow::Result<(u64, u64, u64, u64)> {
    kit::check(resp)?;
    let holds: Vec<_> = resp.samples_of("hold", "total").collect();
    if holds.len() != 2 {
        anyhow::bail!("expected 2 hold samples, got {}", holds.len());
    }
    let start = resp.started_ns + holds[0].latency_ns;
    let end = resp.finished_ns.saturating_sub(holds[1].latency_ns);
    let (mut lat, mut n) = (0u64, 0u64);
    for s in &resp.samples {
        let io = match (s.op.as_str(), s.phase.as_str()) {
            ("random_io", "block") => true,
            ("read" | "write", "total") => true,
            _ => false,
        };
        if io {
            lat += s.latency_ns;
            n += 1;
        }
    }
    Ok((start, end, lat, n))
}

/// The samples of one repetition from every container's IO window.
fn samples_of(windows: &[(u64, u64, u64, u64)]) -> RepSamples {
    let mut samples: RepSamples = Vec::new();
    let mut ios = 0;
    for &(start, end, lat, n) in windows {
        samples.push(("completion_ns", end.saturating_sub(start) as f64));
        samples.push(("mean_io_latency_ns", lat as f64 / n.max(1) as f64));
        ios += n;
    }
    let first = windows.iter().map(|w| w.0).min().unwrap_or(0);
    let last = windows.iter().map(|w| w.1).max().unwrap_or(0);
    let total = last.saturating_sub(first);
    samples.push(("total_completion_ns", total as f64));
    samples.push(("aggregate_ios_per_s", ios as f64 / (total.max(1) as f64 / 1e9)));
    samples
}

impl CellExec for Exec<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let lab = self.lab;
        // Generous: the paced full profile keeps a container busy for ios × interval.
        let busy = Duration::from_micros(self.p.ios * self.p.interval_us);
        let mut held: Vec<Box<dyn Container + '_>> = Vec::with_capacity(self.p.containers as usize);
        let result = (|| -> anyhow::Result<()> {
            for i in 0..self.p.containers {
                // The trailing hold keeps the container alive until `stop` (whose SIGTERM may
                // come while the IO still runs: blocked, it ends that hold at once).
                let mut ops = vec![Op::Hold];
                ops.extend(io_ops(&self.p, lab.seed(), self.files, rep, i));
                ops.push(Op::Hold);
                let spec = ContainerSpec {
                    stop_timeout: Some(Duration::from_secs(600) + busy * 2),
                    ..ContainerSpec::probe(&Request::new(ops))
                };
                let c = lab.start(&self.img, &spec)?;
                c.wait_ready(Duration::from_secs(60))?;
                held.push(c);
            }
            lab.drop_caches().map_err(|e| anyhow::anyhow!("{}: drop caches: {e}", lab.driver_name()))?;
            for c in &held {
                c.sigterm()?;
            }
            Ok(())
        })();
        let mut windows = Vec::new();
        let mut err = result.err();
        for c in held {
            match c.stop() {
                Ok(out) if err.is_none() => match out.probe_response().map_err(anyhow::Error::from).and_then(|r| io_window(&r)) {
                    Ok(w) => windows.push(w),
                    Err(e) => err = Some(e.context(format!("container {}", out.id))),
                },
                Ok(_) => {}
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        Ok(samples_of(&windows))
    }

    fn notes(&self) -> Notes {
        let what = match self.p.mode {
            Mode::Read => format!("random {BLOCK}-byte preads of {LARGE_PATH}"),
            Mode::Update => format!("random {BLOCK}-byte O_DSYNC pwrites of {LARGE_PATH} (first one copies up on file-level backends)"),
            Mode::FileRead => format!("whole-file reads of random {SMALL_FILE}-byte files of {}", self.files),
            Mode::FileUpdate => format!("fsynced whole-file overwrites of random {SMALL_FILE}-byte files of {}", self.files),
        };
        Notes::from([
            ("image".into(), self.img.name.clone()),
            ("io".into(), what),
            ("release".into(), "SIGTERM to every container's init at once after dropping caches".into()),
            ("timed_in".into(), "containers (probe CLOCK_MONOTONIC, the host's clock)".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Images stay for the other cells (and workloads) of the run; the driver's teardown
        // removes them.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_params() {
        let cells = Concurrent.cells(Profile::Quick);
        assert_eq!(cells.len(), 2);
        let p = ConcurrentParams::from_params(&cells[1]).unwrap();
        assert_eq!((p.containers, p.mode, p.ios), (4, Mode::Update, 200));
        assert_eq!(crate::params_string(&cells[0]), format!("containers=4;data_bytes={};interval_us=0;ios=200;mode=read", 64 * MIB));
        assert_eq!(Concurrent.cells(Profile::Full).len(), 16);
    }

    fn sample(op: &str, phase: &str, latency_ns: u64) -> crate::probe::Sample {
        crate::probe::Sample { latency_ns, ..crate::probe::Sample::new(op, 0, phase) }
    }

    fn response(samples: Vec<crate::probe::Sample>) -> Response {
        Response {
            protocol_version: 1,
            probe_version: "test".into(),
            pid: 1,
            hostname: "c".into(),
            samples,
            errors: 0,
            started_ns: 1_000,
            finished_ns: 10_000,
        }
    }

    #[test]
    fn io_window_lies_between_the_holds() {
        // hold 500 ns, two random IOs, then the second hold for the last 1500 ns.
        let r = response(vec![
            sample("hold", "total", 500),
            sample("random_io", "block", 300),
            sample("random_io", "block", 700),
            sample("random_io", "total", 1_000),
            sample("hold", "total", 1_500),
        ]);
        assert_eq!(io_window(&r).unwrap(), (1_500, 8_500, 1_000, 2));
        let one_hold = response(vec![sample("hold", "total", 500)]);
        assert!(io_window(&one_hold).is_err());
        let mut failed = r.clone();
        failed.samples[1].error = Some(crate::probe::OpError { errno: Some(5), message: "EIO".into() });
        assert!(io_window(&failed).is_err(), "a failed IO must fail the repetition");
    }

    #[test]
    fn total_completion_spans_first_release_to_last_end() {
        let s = samples_of(&[(100, 1_100, 500, 5), (300, 2_100, 900, 5)]);
        let get = |m: &str| s.iter().filter(|(n, _)| *n == m).map(|(_, v)| *v).collect::<Vec<_>>();
        assert_eq!(get("completion_ns"), vec![1_000.0, 1_800.0]);
        assert_eq!(get("mean_io_latency_ns"), vec![100.0, 180.0]);
        assert_eq!(get("total_completion_ns"), vec![2_000.0]);
        assert_eq!(get("aggregate_ios_per_s"), vec![10.0 / 2e-6]);
    }

    #[test]
    fn small_file_ops_stay_inside_the_image() {
        let p = ConcurrentParams { containers: 2, mode: Mode::FileUpdate, data_bytes: 300 * SMALL_FILE, ios: 50, interval_us: 2_000 };
        let ops = io_ops(&p, 42, 300, 0, 1);
        // One write and one 2 ms pause per IO.
        assert_eq!(ops.len(), 100);
        for op in &ops {
            match op {
                Op::Write { path, create, .. } => {
                    assert!(!create, "overwrites of image files, not new files");
                    let f: usize = path.rsplit_once("/f").unwrap().1.parse().unwrap();
                    assert!(f < 300 && path.starts_with(&format!("/small/d{}/", f / PER_DIR)), "{path}");
                }
                Op::Sleep { ms } => assert_eq!(*ms, 2),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Containers of one repetition do not all touch the same files.
        assert_ne!(io_ops(&p, 42, 300, 0, 0), ops);
    }
}
