//! `density`: how many containers of one small image a host holds, and what each one costs.
//!
//! A round starts N containers one after the other and keeps them all alive (the probe's
//! `hold`; every container is really started: its probe reports ready before the next one
//! starts), then stops and removes them all. Per container: the **start latency** (from the call
//! to `Lab::start` until the OCI runtime's `create` + `start` returned: layer prepare + mount +
//! bundle + create + start) and the **ready latency** (from the same call until the probe inside
//! reported ready, polled every 2 ms: the start latency plus the exec of the probe). Per round:
//!
//! - **memory per container**, the marginal memory cost of one more container, one sample per
//!   tenth of the starts: the mean of its containers' cgroups (anon, kernel and page cache
//!   charged to them) plus what the driver itself grew by in that tenth, per container ([`DriverMemory`]: the harness's cgroup with the
//!   layer metadata, the kernel memory of the mounts and the FUSE daemons it started
//!   (unionfs-fuse), the RSS of a daemon living elsewhere (zfs-fuse, ARC included), a kernel
//!   read cache no cgroup is charged for (kernel ZFS ARC)). A driver whose layers share nothing
//!   (vfs) writes a full copy of the image per container, and that copy's page cache is charged
//!   to whoever touched it first (the harness that copied it, the container reading it): it is
//!   the disk copy's cost, not what a running container needs, so for such a driver all page
//!   cache is taken out of the memory figure and recorded as `copy_cache_per_container_bytes`.
//! - **disk per container**: growth of the backend's used space (its own store's figure, else
//!   the blocks under the driver root) per container, per tenth of the starts.
//! - **how far it got**: containers started (N unless a host limit, the memory budget, the host's
//!   free memory or the time budget stopped the round; the note `stopped_by` says which, and the
//!   cell stays a result), and the containers the memory budget (a parameter) would hold at the
//!   measured memory per container (extrapolated, and named so).
//! - **how start latency grows with N**: start p50/p90/p99 by position tenth (note
//!   `start_by_tenth`) and the ratio of the last tenth's p50 to the first tenth's.
//!
//! Small N run several rounds per repetition so that every cell has enough starts to give a
//! median.
//!
//! What the figures leave out: kernel objects charged to no cgroup (on a cgroup v1 host the
//! slab of the N cgroup directories and mounts grows by about as much again as the containers'
//! cgroups hold); the host's MemAvailable drop (`host_memory_per_container_bytes`) includes them
//! but moves with every other process on the host, so it is kept as a cross-check only. The
//! harness's cgroup is read as a whole: run cowbench in a cgroup of its own. Answers fast-start, filelevel-density, btrfs-not-dense, zfs-dense and layer-sharing.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::images::{ImageSpec, Shape};
use crate::kit;
use crate::lab::{Container, ContainerSpec, DriverMemory, Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{Better, CellExec, MetricSpec, ParamKind, ParamSpec, Params, Profile, RepSamples, SetupError, TypedParams, Unit, Workload, GIB, MIB};

/// Parameters of one density cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DensityParams {
    /// Containers held alive at once.
    pub containers: u32,
    /// Memory the containers and the driver may use together: a round stops starting when the
    /// measured total would pass it, and `budget_containers_count` extrapolates to it.
    pub memory_budget_bytes: u64,
}

impl TypedParams for DensityParams {}

/// The default memory budget: a small host's share for containers.
pub const MEMORY_BUDGET: u64 = 2 * GIB;
/// Quick profile: to a few hundred, the "hundreds per host" of the claims (64 is left to the
/// full profile: a quick run of every driver must stay within minutes).
pub const QUICK_N: [u32; 3] = [1, 16, 256];
/// Full profile: to a thousand, or as far as the host goes (how far, and why, is recorded).
pub const FULL_N: [u32; 6] = [1, 16, 64, 256, 512, 1000];
/// Starts per repetition at least: a cell of N < this runs ⌈this / N⌉ rounds.
pub const MIN_STARTS: u32 = 16;
/// A round stops starting containers when the host's available memory falls below this: the
/// machine is shared, and the kernel's OOM killer is not a measurement.
pub const HOST_MEMORY_FLOOR: u64 = 1536 * MIB;
/// A round stops starting containers after this long (a time budget, recorded as the reason).
pub const START_TIME_BUDGET: Duration = Duration::from_secs(600);
/// Threads that stop containers at the end of a round (starts are one at a time: their latency
/// is the measurement).
pub const STOP_WORKERS: usize = 4;
/// How long one probe may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub const METRICS: [MetricSpec; 14] = [
    MetricSpec {
        name: "start_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "per container: from the start call until the runtime's create + start returned (layer prepare + mount + bundle + create + start)",
    },
    MetricSpec {
        name: "ready_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "per container: from the start call until the probe inside reported ready (polled every 2 ms)",
    },
    MetricSpec {
        name: "layer_setup_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "per container: the storage part of the start: prepare + mount of its layer (and the bundle)",
    },
    MetricSpec {
        name: "memory_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "per tenth of the starts, all N running: the mean memory of its containers' cgroups + the driver's memory growth per container in it (page cache excluded for a driver whose layers are full copies: see copy_cache_per_container_bytes)",
    },
    MetricSpec {
        name: "container_memory_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "per container, all N running: memory charged to its cgroup (v1 usage_in_bytes, v2 memory.current), as read",
    },
    MetricSpec {
        name: "driver_memory_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "per tenth of the starts: growth of the driver's own memory (harness cgroup, daemons, kernel read cache) per container started; whatever else runs in the harness's cgroup counts too, so run cowbench in a cgroup of its own",
    },
    MetricSpec {
        name: "copy_cache_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "per tenth of the starts: page cache of a full-copy driver's private image copies per container (its containers' cgroups' + the harness's growth); 0 where layers are shared",
    },
    MetricSpec {
        name: "host_memory_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "per round, cross-check: drop of the host's MemAvailable from before the first start to all N running, / N (noisy: every process on the host moves it)",
    },
    MetricSpec {
        name: "disk_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "per tenth of the starts: growth of the backend's used space per container started",
    },
    MetricSpec {
        name: "containers_started_count",
        unit: Unit::Count,
        better: Better::Higher,
        description: "per round: containers started and held at once (N unless a limit stopped the round: note stopped_by)",
    },
    MetricSpec {
        name: "budget_containers_count",
        unit: Unit::Count,
        better: Better::Higher,
        description: "per round, extrapolated: memory_budget_bytes / the round's mean memory per container",
    },
    MetricSpec {
        name: "start_growth_ratio",
        unit: Unit::Ratio,
        better: Better::Lower,
        description: "per round of N >= 20: start p50 of the last tenth of the starts / p50 of the first tenth",
    },
    MetricSpec {
        name: "total_start_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "per round: wall time to have all N containers running (absent when the round stopped early)",
    },
    MetricSpec {
        name: "total_stop_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "per round: wall time to stop, delete and remove the layers of all containers started",
    },
];


/// The parameters of a cell (`cowbench run --set density.NAME=…`).
pub const PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "containers", kind: ParamKind::Count, description: "containers held alive at once (N)" },
    ParamSpec {
        name: "memory_budget_bytes",
        kind: ParamKind::Bytes,
        description: "memory the containers and the driver may use together (stops a round; budget_containers_count extrapolates to it)",
    },
];

pub struct Density;

impl Workload for Density {
    fn id(&self) -> &'static str {
        "density"
    }
    fn description(&self) -> &'static str {
        "hold N containers of one image alive: start and ready latency by position, memory and disk per container, how far N goes"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["fast-start", "filelevel-density", "btrfs-not-dense", "zfs-dense", "layer-sharing"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        let d = DensityParams::from_params(p)?;
        if d.containers == 0 {
            return Err("containers: at least 1".into());
        }
        Ok(())
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let ns: &[u32] = match profile {
            Profile::Quick => &QUICK_N,
            Profile::Full => &FULL_N,
        };
        ns.iter().map(|&containers| DensityParams { containers, memory_budget_bytes: MEMORY_BUDGET }.to_params()).collect()
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        // The first start after the cache drop is a cold start, which is what a host sees
        // after a pull; it is one sample of many (and shows in the first tenth).
        0
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        // One repetition of N = 256 gives 256 starts; small N run several rounds instead.
        match profile {
            Profile::Quick => 1,
            Profile::Full => 2,
        }
    }
    fn drop_caches(&self) -> bool {
        // A cold start is what a host sees after a pull; drop caches before each repetition.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: DensityParams = kit::params(self.id(), params)?;
        let img = lab.image(&ImageSpec::new("density", lab.seed(), Shape::Base))?;
        Ok(Box::new(DensityCell { lab, p, img, stopped: Vec::new(), by_tenth: String::new(), memory_source: String::new() }))
    }
}

// The executor.

struct DensityCell<'a> {
    lab: &'a dyn Lab,
    p: DensityParams,
    img: Image,
    /// Per round that stopped early: how far it got and why.
    stopped: Vec<String>,
    /// Start p50/p90/p99 by position tenth of the last round with N ≥ 10.
    by_tenth: String,
    /// Where the driver's memory figures came from.
    memory_source: String,
}

/// The timings of one started container.
struct Started {
    start_ns: u64,
    ready_ns: u64,
    setup_ns: u64,
    /// Index of the checkpoint (tenth) its start falls in.
    tenth: usize,
}

/// What the driver held and the backend used after a number of starts.
struct Checkpoint {
    started: usize,
    driver: DriverMemory,
    used: u64,
}

/// After how many starts the driver's memory and the backend's space are read: at each tenth
/// of N (after every start when N < 10).
pub fn checkpoints(n: usize) -> Vec<usize> {
    let parts = n.min(10);
    let mut v: Vec<usize> = (1..=parts).map(|k| (n * k).div_ceil(parts)).collect();
    v.dedup();
    v
}

/// Nearest-rank percentile of ascending `sorted` (`p` in [0, 1]).
fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Start p50/p90/p99 of each position tenth, ms: `t1 p50/p90/p99 | t2 …`; and the ratio of the
/// last tenth's p50 to the first's (None below 20 starts: a tenth needs two).
pub fn by_tenth(starts_ns: &[u64]) -> (String, Option<f64>) {
    let n = starts_ns.len();
    if n < 10 {
        return (String::new(), None);
    }
    let mut cuts = vec![0];
    cuts.extend(checkpoints(n));
    let mut parts = Vec::new();
    let mut p50s = Vec::new();
    for (k, w) in cuts.windows(2).enumerate() {
        let mut s = starts_ns[w[0]..w[1]].to_vec();
        s.sort_unstable();
        let ms = |v: u64| v as f64 / 1e6;
        parts.push(format!("t{} {:.1}/{:.1}/{:.1}", k + 1, ms(pct(&s, 0.5)), ms(pct(&s, 0.9)), ms(pct(&s, 0.99))));
        p50s.push(pct(&s, 0.5) as f64);
    }
    let ratio = (n >= 20).then(|| p50s[p50s.len() - 1] / p50s[0]);
    (format!("p50/p90/p99 ms by position tenth: {}", parts.join(" | ")), ratio)
}

/// Why a failed start is a host limit (the round's result), not a failure of the cell: the
/// errno texts the kernel, runc and FUSE give when a host-wide resource runs out.
pub fn host_limit(err: &str) -> Option<&'static str> {
    const LIMITS: [(&str, &str); 7] = [
        ("Resource temporarily unavailable", "pids or threads (EAGAIN from fork/clone)"),
        ("Cannot allocate memory", "memory (ENOMEM)"),
        ("No space left on device", "disk space or inotify watches (ENOSPC)"),
        ("Too many open files", "open files (EMFILE/ENFILE)"),
        ("Too many links", "links per directory (EMLINK)"),
        ("Transport endpoint is not connected", "a FUSE daemon (ENOTCONN)"),
        ("pids.max", "the pids cgroup limit"),
    ];
    LIMITS.iter().find(|(text, _)| err.contains(text)).map(|(_, why)| *why)
}

impl DensityCell<'_> {
    /// Why the round must not start another container now, if it must not.
    fn must_stop(&self, started: usize, t0: Instant, committed: u64) -> Option<String> {
        let avail = self.lab.host_memory().available_bytes;
        if avail > 0 && avail < HOST_MEMORY_FLOOR {
            return Some(format!("host memory: {} MiB available, below the {} MiB floor", avail / MIB, HOST_MEMORY_FLOOR / MIB));
        }
        if committed > self.p.memory_budget_bytes {
            return Some(format!(
                "memory budget: {} MiB used by {started} containers and the driver, budget {} MiB",
                committed / MIB,
                self.p.memory_budget_bytes / MIB
            ));
        }
        if t0.elapsed() > START_TIME_BUDGET {
            return Some(format!("time budget: {} s of starts", START_TIME_BUDGET.as_secs()));
        }
        None
    }

    fn checkpoint(&mut self, started: usize) -> anyhow::Result<Checkpoint> {
        let driver = self.lab.driver_memory();
        self.memory_source = driver.source.clone();
        Ok(Checkpoint { started, driver, used: self.lab.space()?.used })
    }

    /// Start N containers (fewer when a limit stops it), measure them, stop them all.
    fn round(&mut self, samples: &mut RepSamples) -> anyhow::Result<()> {
        let lab = self.lab;
        let n = self.p.containers as usize;
        let spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
        let marks = checkpoints(n);
        let host0 = lab.host_memory();
        let mut cps = vec![self.checkpoint(0)?];
        let mut held: Vec<Box<dyn Container + '_>> = Vec::with_capacity(n);
        let mut info: Vec<Started> = Vec::with_capacity(n);
        let mut stopped_by: Option<String> = None;
        // Memory of the containers started so far (each read at its checkpoint).
        let mut cgroups_so_far = 0u64;
        let t0 = Instant::now();
        let started = (|| -> anyhow::Result<()> {
            while held.len() < n {
                if lab.stop_requested() {
                    anyhow::bail!("interrupted by signal");
                }
                let driver_so_far = cps.last().map_or(0, |c| c.driver.total().saturating_sub(cps[0].driver.total()));
                if let Some(why) = self.must_stop(held.len(), t0, cgroups_so_far + driver_so_far) {
                    stopped_by = Some(why);
                    break;
                }
                let t = Instant::now();
                let c = match lab.start(&self.img, &spec) {
                    Ok(c) => c,
                    Err(e) => {
                        let text = format!("{e:#}");
                        match host_limit(&text).filter(|_| !held.is_empty()) {
                            Some(why) => {
                                stopped_by = Some(format!("{why}: start {} failed: {text}", held.len() + 1));
                                break;
                            }
                            None => return Err(e),
                        }
                    }
                };
                let start_ns = t.elapsed().as_nanos() as u64;
                let setup_ns = c.timings().setup_ns;
                // Held before waiting, so that it is stopped also when it never gets ready.
                held.push(c);
                held.last().expect("just pushed").wait_ready(READY_TIMEOUT)?;
                let ready_ns = t.elapsed().as_nanos() as u64;
                info.push(Started { start_ns, ready_ns, setup_ns, tenth: cps.len() - 1 });
                if marks.contains(&held.len()) {
                    let from = cps.last().map_or(0, |c| c.started);
                    for c in &held[from..] {
                        cgroups_so_far += c.accounting()?.memory_bytes;
                    }
                    cps.push(self.checkpoint(held.len())?);
                }
            }
            Ok(())
        })();
        let start_wall = t0.elapsed();
        // With all of them up: each container's cgroup, then the host's figure.
        let measured = started.and_then(|()| {
            if held.is_empty() {
                anyhow::bail!("no container started: {}", stopped_by.as_deref().unwrap_or("?"));
            }
            if cps.last().map(|c| c.started) != Some(held.len()) {
                cps.push(self.checkpoint(held.len())?);
            }
            let acc = held.iter().map(|c| c.accounting()).collect::<anyhow::Result<Vec<_>>>()?;
            Ok((acc, lab.host_memory()))
        });
        // Stop them all, also after a failure: SIGTERM to every one first, so that the probes
        // exit together, then delete each and remove its layer.
        let t_stop = Instant::now();
        for c in &held {
            // A probe that already exited is stopped all the same below.
            let _ = c.sigterm();
        }
        let count = held.len();
        let stop_err = stop_all(held);
        let stop_wall = t_stop.elapsed();
        let (acc, host1) = measured?;
        if let Some(e) = stop_err {
            return Err(e);
        }

        let shares = lab.driver().capabilities().shares_layers;
        // Per tenth: driver growth (page cache apart for a full-copy driver) and space growth,
        // per container started in it.
        let mut driver_share = Vec::new();
        let mut copy_share = Vec::new();
        for w in cps.windows(2) {
            let k = (w[1].started - w[0].started).max(1) as f64;
            let cache = w[1].driver.harness_page_cache_bytes as f64 - w[0].driver.harness_page_cache_bytes as f64;
            let all = w[1].driver.total() as f64 - w[0].driver.total() as f64;
            let (mem, copy) = if shares { (all, 0.0) } else { (all - cache, cache) };
            driver_share.push(mem / k);
            copy_share.push(copy / k);
            samples.push(("driver_memory_per_container_bytes", mem / k));
            samples.push(("disk_per_container_bytes", (w[1].used as f64 - w[0].used as f64) / k));
        }
        // Memory per container, one sample per tenth (the driver's growth is known per tenth
        // only, so a tenth is the unit that varies independently): the mean of its containers'
        // cgroups plus the driver's growth per container in it.
        let mut per_tenth = vec![(0.0f64, 0.0f64, 0usize); driver_share.len()];
        for (h, a) in info.iter().zip(&acc) {
            let cache = if shares { 0.0 } else { a.page_cache_bytes as f64 };
            let t = &mut per_tenth[h.tenth];
            t.0 += a.memory_bytes as f64 - cache;
            t.1 += cache;
            t.2 += 1;
            samples.push(("start_latency_ns", h.start_ns as f64));
            samples.push(("ready_latency_ns", h.ready_ns as f64));
            samples.push(("layer_setup_ns", h.setup_ns as f64));
            samples.push(("container_memory_bytes", a.memory_bytes as f64));
        }
        let mut total_memory = 0.0;
        for (i, (mem, cache, k)) in per_tenth.into_iter().enumerate().filter(|t| t.1 .2 > 0) {
            let k = k as f64;
            total_memory += mem + driver_share[i] * k;
            samples.push(("memory_per_container_bytes", mem / k + driver_share[i]));
            samples.push(("copy_cache_per_container_bytes", cache / k + copy_share[i]));
        }
        let avail_drop = host0.available_bytes as f64 - host1.available_bytes as f64;
        samples.push(("host_memory_per_container_bytes", avail_drop / count as f64));
        samples.push(("containers_started_count", count as f64));
        if total_memory > 0.0 {
            samples.push(("budget_containers_count", (self.p.memory_budget_bytes as f64 / (total_memory / count as f64)).floor()));
        }
        let starts: Vec<u64> = info.iter().map(|h| h.start_ns).collect();
        let (tenths, growth) = by_tenth(&starts);
        if !tenths.is_empty() {
            self.by_tenth = tenths;
        }
        if let Some(g) = growth {
            samples.push(("start_growth_ratio", g));
        }
        match stopped_by {
            None => samples.push(("total_start_ns", start_wall.as_nanos() as f64)),
            Some(why) => self.stopped.push(format!("{count} of {n} started; stopped by {why}")),
        }
        samples.push(("total_stop_ns", stop_wall.as_nanos() as f64));
        Ok(())
    }
}

/// Stop, delete and remove `held` with [`STOP_WORKERS`] threads (the runtime's delete is most
/// of a stop, and they do not depend on each other); the first error.
fn stop_all(held: Vec<Box<dyn Container + '_>>) -> Option<anyhow::Error> {
    let queue = std::sync::Mutex::new(held);
    let first = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..STOP_WORKERS {
            s.spawn(|| loop {
                let Some(c) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else { break };
                if let Err(e) = c.stop() {
                    first.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
            });
        }
    });
    first.into_inner().unwrap_or_else(|p| p.into_inner())
}

impl CellExec for DensityCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let rounds = MIN_STARTS.div_ceil(self.p.containers).max(1);
        let mut samples = RepSamples::new();
        for _ in 0..rounds {
            self.round(&mut samples)?;
        }
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::from([
            ("image".into(), self.img.name.clone()),
            ("image_layers".into(), self.img.layers.len().to_string()),
            (
                "start_latency".into(),
                "start_latency_ns: the start call until create + start returned; ready_latency_ns: until the probe reported ready".into(),
            ),
            (
                "stopped_by".into(),
                if self.stopped.is_empty() { "nothing: every round started all N".into() } else { self.stopped.join("; ") },
            ),
            ("memory_budget".into(), format!("{} MiB", self.p.memory_budget_bytes / MIB)),
            ("stop_workers".into(), STOP_WORKERS.to_string()),
            ("driver_memory_source".into(), self.memory_source.clone()),
        ]);
        if !self.lab.driver().capabilities().shares_layers {
            n.insert(
                "memory_accounting".into(),
                "layers are full copies: their page cache is the copy's cost (copy_cache_per_container_bytes), not in memory_per_container_bytes".into(),
            );
        }
        if !self.by_tenth.is_empty() {
            n.insert("start_by_tenth".into(), self.by_tenth.clone());
        }
        for (k, v) in self.lab.host_limits() {
            n.insert(format!("host_limit {k}"), v);
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // The image is shared by every density cell of this driver; the driver's teardown at
        // the end of the run removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_roundtrip() {
        let d = DensityParams { containers: 16, memory_budget_bytes: MEMORY_BUDGET };
        let p = d.to_params();
        assert_eq!(p.get("containers"), Some(&serde_json::json!(16)));
        assert_eq!(DensityParams::from_params(&p).unwrap(), d);
        assert_eq!(Density.cells(Profile::Quick).len(), QUICK_N.len());
        assert!(Density.check_params(&DensityParams { containers: 0, memory_budget_bytes: 1 }.to_params()).is_err());
    }

    #[test]
    fn quick_reaches_hundreds() {
        let max = |p| Density.cells(p).iter().filter_map(|c| c["containers"].as_u64()).max().unwrap();
        assert!(max(Profile::Quick) >= 256);
        assert!(max(Profile::Full) >= 1000);
    }

    #[test]
    fn checkpoints_are_tenths() {
        assert_eq!(checkpoints(1), vec![1]);
        assert_eq!(checkpoints(3), vec![1, 2, 3]);
        assert_eq!(checkpoints(10), (1..=10).collect::<Vec<_>>());
        let c = checkpoints(256);
        assert_eq!(c.len(), 10);
        assert_eq!(c[0], 26);
        assert_eq!(*c.last().unwrap(), 256);
        assert!(c.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn tenths_and_growth() {
        // 20 starts: first tenth 10 ms, last tenth 30 ms.
        let mut s = vec![10_000_000u64; 2];
        s.extend(vec![20_000_000; 16]);
        s.extend(vec![30_000_000; 2]);
        let (text, g) = by_tenth(&s);
        assert!(text.starts_with("p50/p90/p99 ms by position tenth: t1 10.0/10.0/10.0"), "{text}");
        assert!(text.ends_with("t10 30.0/30.0/30.0"), "{text}");
        assert_eq!(g, Some(3.0));
        assert_eq!(by_tenth(&[1; 12]).1, None);
        assert!(by_tenth(&[1; 5]).0.is_empty());
    }

    #[test]
    fn limits_are_named() {
        assert!(host_limit("runc create: fork/exec: Resource temporarily unavailable").unwrap().contains("pids"));
        assert!(host_limit("inotify_add_watch: No space left on device").unwrap().contains("ENOSPC"));
        assert_eq!(host_limit("permission denied"), None);
    }
}
