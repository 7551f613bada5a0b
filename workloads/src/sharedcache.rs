//! `sharedcache`: N containers of one image read the same image file; how much memory does the
//! host spend caching it?
//!
//! Before the containers start, the backend's own cache (the ZFS ARC, which dropping the page
//! cache leaves as it is) is emptied ([`Lab::evict_backend_cache`]: zfs exports and imports its
//! pool). After all N containers are up (each holding), the harness drops the page cache, lets
//! every container run the probe once without IO (so the probe binary and the runtime's exec
//! path are cached before the baseline), snapshots memory, then has each container read the
//! whole file through the probe (timed by the probe, which reports the bytes it read: a reader
//! that did not read the whole file fails the repetition), one after the other, and snapshots
//! again while all N still exist.
//!
//! The decided quantity is `reader_memory_bytes`, the memory the N readers cost:
//! - the page cache charged to the readers' cgroups (memory.stat file pages, summed over the
//!   N containers): the kernel charges a cached page to one cgroup only, so pages the readers
//!   share count once and private copies N times, whatever else the host does meanwhile;
//! - minus the backing file's cache where it was charged to them: a buffered loop device keeps
//!   a second copy of every block in the page cache of its backing file, which cgroup v2
//!   charges to the cgroup that issued the IO. Loop devices are attached with direct IO where
//!   the backing filesystem takes it (then there is no such copy); its growth is recorded
//!   (`backing_file_cache_growth_bytes`, `mincore` of the file) either way;
//! - plus the backend's own cache growth outside the cgroups: the ARC (kernel arcstats `size`;
//!   zfs-fuse its kstat), or the zfs-fuse daemon's RSS growth where that is larger (the daemon
//!   holds the ARC and whatever else the reads made it allocate).
//!
//! A backend that shares cached blocks between containers costs ~1× the file for any N, one
//! that does not ~N×; fewer than one copy is not a possible outcome (the claims treat it as an
//! invalid measurement). The host-wide page cache growth is recorded as well (it includes the
//! backing file's copy and other host activity). Answers dm-no-shared-cache,
//! btrfs-no-shared-cache and zfs-shared-arc.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::{self, LARGE_PATH};
use crate::kit;
use crate::lab::{CacheEviction, Container, ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, MIB, Better, ParamKind, ParamSpec, Unit};

/// Parameters of one sharedcache cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCacheParams {
    /// Size of the image file every container reads.
    pub file_bytes: u64,
    /// Containers reading it (N).
    pub containers: u32,
}

impl TypedParams for SharedCacheParams {}

/// 16 MiB: four private copies (zfs-fuse keeps one per clone in its ARC) still fit
/// zfs-fuse's 100 MiB ARC limit, so the ARC's growth is measured, not withheld at the limit.
pub const QUICK_FILE: u64 = 16 * MIB;
pub const QUICK_N: [u32; 3] = [1, 2, 4];
pub const FULL_FILE: u64 = 256 * MIB;
pub const FULL_N: [u32; 5] = [1, 2, 4, 8, 16];
/// Read block of the probe's sequential read.
pub const READ_BLOCK: u64 = 128 * 1024;

pub const METRICS: [MetricSpec; 13] = [
    MetricSpec {
        name: "reader_memory_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "memory the N readers cost: their cgroups' page cache growth, minus the backing file's cache where it was charged to them (buffered loop device, cgroup v2), plus the backend's own cache growth (ARC, or the zfs-fuse daemon's RSS growth where larger)",
    },
    MetricSpec {
        name: "reader_memory_copies_ratio",
        unit: Unit::Ratio,
        better: Better::Lower,
        description: "reader_memory_bytes / file size: copies of the file the N readers hold in memory (~1 shared, ~N private; below 1 impossible)",
    },
    MetricSpec {
        name: "backing_file_cache_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "loop- or vdev-backed stores: growth of the backing file's pages in the host page cache over the reads (mincore); ~0 with a direct-IO loop device",
    },
    MetricSpec {
        name: "daemon_rss_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "userspace backends (zfs-fuse): growth of the daemon's resident memory over the reads",
    },
    MetricSpec {
        name: "backend_cache_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "the part of reader_memory_bytes outside the cgroups: ARC growth, or the daemon's RSS growth where larger",
    },
    MetricSpec {
        name: "page_cache_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "system page cache (/proc/meminfo Cached + Buffers) after all N read the file minus before",
    },
    MetricSpec {
        name: "growth_per_reader_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "page_cache_growth_bytes / N",
    },
    MetricSpec {
        name: "growth_per_file_ratio",
        unit: Unit::Ratio,
        better: Better::Lower,
        description: "page_cache_growth_bytes / file size: ~1 when cached blocks are shared, ~N when not",
    },
    MetricSpec {
        name: "cgroup_page_cache_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "growth of one container's cgroup page cache (one sample per container)",
    },
    MetricSpec {
        name: "cgroup_page_cache_total_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "sum of the N containers' cgroup page cache growth: what the readers' own reads cached (immune to other host activity; misses what FUSE daemons cache for them)",
    },
    MetricSpec {
        name: "arc_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "zfs only: ARC size after minus before (kernel arcstats / zfs-fuse kstat), or the zfs-fuse daemon's RSS growth where the ARC is not exposed",
    },
    MetricSpec {
        name: "read_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "whole-file sequential read (128 KiB blocks), timed by the probe (one sample per container)",
    },
    MetricSpec {
        name: "read_bytes_per_s",
        unit: Unit::BytesPerSecond,
        better: Better::Higher,
        description: "file size / read_latency (one sample per container)",
    },
];

/// The parameters of a cell (`cowbench run --set sharedcache.NAME=…`).
pub const PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "file_bytes", kind: ParamKind::Bytes, description: "size of the image file every container reads" },
    ParamSpec { name: "containers", kind: ParamKind::Count, description: "containers reading it (N)" },
];

pub struct SharedCache;

impl Workload for SharedCache {
    fn id(&self) -> &'static str {
        "sharedcache"
    }
    fn description(&self) -> &'static str {
        "N containers read the same image file: page cache (and ARC) growth per container"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["dm-no-shared-cache", "btrfs-no-shared-cache", "zfs-shared-arc"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        SharedCacheParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let (file_bytes, ns): (u64, &[u32]) = match profile {
            Profile::Quick => (QUICK_FILE, &QUICK_N),
            Profile::Full => (FULL_FILE, &FULL_N),
        };
        ns.iter().map(|&containers| SharedCacheParams { file_bytes, containers }.to_params()).collect()
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        0
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            // One repetition gives N per-container samples; the quick budget allows no more.
            Profile::Quick => 1,
            Profile::Full => 5,
        }
    }
    fn drop_caches(&self) -> bool {
        // The executor drops caches itself once the containers are up (and before its baseline).
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: SharedCacheParams = kit::params(self.id(), params)?;
        if p.containers == 0 {
            return Err(SetupError::Fail(anyhow::anyhow!("sharedcache needs at least one reader")));
        }
        // The image `fragmentation` and `concurrent` use too: one build per driver and size.
        let img = lab.image(&images::large_file(lab.seed(), p.file_bytes))?;
        Ok(Box::new(Exec {
            lab,
            p,
            img,
            arc_source: None,
            arc_withheld: None,
            disturbed: 0,
            eviction: None,
            charged_backing: None,
            backing: None,
        }))
    }
}

// The executor: N containers of the large-file image hold (probe `hold`); with all N up it
// drops the page cache, runs the probe once in each container without IO (so the probe
// binary, every container's own copy of it on vfs, and the runtime's exec path are cached
// before the baseline), snapshots the host's page cache, each container's cgroup page cache
// and the backend's own cache (ARC), has each container read the whole file (`exec` of the
// probe, one container after the other, timed by the probe), and snapshots again while all N
// still exist (a container's layer going away would free its private copy's cache). Then the
// containers are stopped. A measurement during which another process dropped the page cache
// (`drop_pagecache` moved) is thrown away and taken again, up to five times (the count is in
// the notes). Where the backend's cache figure comes from is the Lab's business
// ([`Lab::backend_cache`]); the cell's notes record it as `arc_source`.
//
// Dropping the page cache does not empty the ARC, so its growth is only what the reads cached
// when the ARC neither held the file before the baseline nor was at its limit. Two cases where
// it is not are known and the figure is withheld (the note `arc_growth` says why): a retried
// measurement (the discarded attempt's reads left the file in the ARC: the retry grows it by
// next to nothing, whatever N), and an ARC at its limit (`c_max`) after the reads (it evicted
// as much as they added: the growth is the limit minus the baseline, and the baseline depends
// on what earlier cells and the image build left, not on N).

/// An ARC within this fraction of its limit counts as at the limit (arcstats `size` runs a
/// little over `c_max` while eviction catches up).
const ARC_LIMIT_SLACK: f64 = 0.02;

/// Why the ARC growth over one measurement is not what the reads cached, if it is not.
fn arc_growth_withheld(before: u64, after: u64, limit: Option<u64>, retried: bool) -> Option<String> {
    if retried {
        return Some(
            "withheld: the measurement was retried after another process dropped the page cache, and the \
             discarded attempt's reads stayed in the ARC (dropping the page cache does not empty it)"
                .into(),
        );
    }
    let limit = limit?;
    let top = before.max(after);
    if top as f64 >= limit as f64 * (1.0 - ARC_LIMIT_SLACK) {
        return Some(format!(
            "withheld: the ARC was at its limit (c_max {limit} bytes; {before} before the reads, {after} after), \
             so it evicted as much as the reads added"
        ));
    }
    None
}

/// Attempts at a measurement that another process's cache drop did not disturb.
const ATTEMPTS: u32 = 8;
/// Before another attempt: no cache drop by anyone for this long ...
const QUIET: Duration = Duration::from_secs(3);
/// ... waited for at most this long (then the attempt is made anyway).
const QUIET_WAIT_MAX: Duration = Duration::from_secs(60);

/// Wait until nobody has dropped the page cache for [`QUIET`] (other benchmarks on the host
/// drop it in bursts), for [`QUIET_WAIT_MAX`] at most. Whether it got quiet.
fn wait_quiet(lab: &dyn Lab) -> bool {
    let start = std::time::Instant::now();
    let mut last = lab.host_memory().drop_pagecache_count;
    let mut since = std::time::Instant::now();
    while start.elapsed() < QUIET_WAIT_MAX && !lab.stop_requested() {
        std::thread::sleep(Duration::from_millis(250));
        let now = lab.host_memory().drop_pagecache_count;
        if now != last {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= QUIET {
            return true;
        }
    }
    false
}

struct Exec<'a> {
    lab: &'a dyn Lab,
    p: SharedCacheParams,
    img: Image,
    arc_source: Option<String>,
    /// Why the last measurement's ARC growth was withheld, if it was.
    arc_withheld: Option<String>,
    /// Measurements thrown away because another process dropped the page cache meanwhile.
    disturbed: u32,
    /// What emptying the backend's cache before the last repetition did.
    eviction: Option<Result<CacheEviction, String>>,
    /// Whether the backing file's cache growth was taken off the cgroups' figure (and why),
    /// for the last measurement.
    charged_backing: Option<String>,
    /// The backing file and whether its loop device does direct IO, as last seen.
    backing: Option<(std::path::PathBuf, Option<bool>)>,
}

/// Whether the page cache of a loop device's backing file is charged to the cgroup of the
/// process whose reads caused it: the loop driver issues the IO on behalf of the reader's
/// memory cgroup (since Linux 5.14), which it can find only on the unified hierarchy (v2). On
/// v1 and hybrid layouts it lands in the root cgroup. Direct IO: there is no such cache.
fn backing_cache_charged_to_readers(loop_direct_io: Option<bool>, cgroup_layout: &str) -> bool {
    loop_direct_io == Some(false) && cgroup_layout == "v2"
}

/// What the backend caches outside the readers' cgroups: the ARC growth, or the daemon's RSS
/// growth where that is larger (zfs-fuse holds the ARC in its own memory, with what else the
/// reads made it allocate; its RSS need not grow when the ARC reuses memory the daemon freed
/// at the export, hence the larger of the two). None when neither is known.
fn backend_growth(arc: Option<f64>, daemon_rss: Option<f64>) -> Option<f64> {
    match (arc, daemon_rss) {
        (Some(a), Some(d)) => Some(a.max(d)),
        (a, d) => a.or(d),
    }
}

impl Exec<'_> {
    /// One measurement with all containers up: drop caches, warm the exec path, baseline,
    /// the reads, after. None when the page cache was dropped by someone else meanwhile.
    /// `retried`: an earlier attempt of this repetition read the file (and was thrown away).
    fn measure(&mut self, held: &[Box<dyn Container + '_>], retried: bool) -> anyhow::Result<Option<RepSamples>> {
        self.lab.drop_caches().map_err(|e| anyhow::anyhow!("{}: drop caches: {e}", self.lab.driver_name()))?;
        let warm = Request::new(vec![Op::Sleep { ms: 0 }]);
        for c in held {
            kit::exec_probe(c.as_ref(), &warm)?;
        }
        let mem_before = self.lab.host_memory();
        let cg_before: Vec<u64> = held.iter().map(|c| c.accounting().map(|a| a.page_cache_bytes)).collect::<Result<_, _>>()?;
        let arc_before = self.lab.backend_cache();
        let rss_before = self.lab.backend_daemon_rss();
        let backing_before = self.lab.backing_file_cache();
        // The baseline comes last, so that what the cgroup and cache reads above cached does
        // not count as growth.
        let sys_before = self.lab.host_memory().page_cache_bytes;
        let read = Request::new(vec![Op::Read {
            path: LARGE_PATH.into(),
            block_bytes: READ_BLOCK,
            direct: false,
            random: false,
            count: None,
            per_block: false,
            seed: 0,
        }]);
        let mut samples: RepSamples = Vec::new();
        for c in held {
            let resp = kit::exec_probe(c.as_ref(), &read)?;
            let (ns, bytes) = kit::total_of(&resp, "read")?;
            if bytes != self.p.file_bytes {
                anyhow::bail!("container {} read {bytes} bytes of {LARGE_PATH}, expected {}", c.id(), self.p.file_bytes);
            }
            samples.push(("read_latency_ns", ns as f64));
            samples.push(("read_bytes_per_s", bytes as f64 / (ns.max(1) as f64 / 1e9)));
        }
        let mem_after = self.lab.host_memory();
        let arc_after = self.lab.backend_cache();
        let rss_after = self.lab.backend_daemon_rss();
        let backing_after = self.lab.backing_file_cache();
        let mut cg_total = 0.0;
        for (c, before) in held.iter().zip(&cg_before) {
            let grown = c.accounting()?.page_cache_bytes as f64 - *before as f64;
            samples.push(("cgroup_page_cache_bytes", grown));
            cg_total += grown;
        }
        if self.lab.host_memory().drop_pagecache_count != mem_before.drop_pagecache_count {
            return Ok(None);
        }
        samples.push(("cgroup_page_cache_total_bytes", cg_total));
        let growth = mem_after.page_cache_bytes as f64 - sys_before as f64;
        let n = held.len() as f64;
        samples.push(("page_cache_growth_bytes", growth));
        samples.push(("growth_per_reader_bytes", growth / n));
        samples.push(("growth_per_file_ratio", growth / self.p.file_bytes as f64));
        // The backend's own cache: a figure that cannot be what the reads cached leaves the
        // total unknown, not smaller.
        let mut arc_growth = None;
        let mut backend_unknown = None;
        if let (Some((b, src)), Some((a, _))) = (arc_before, arc_after) {
            self.arc_withheld = arc_growth_withheld(b, a, self.lab.backend_cache_limit(), retried);
            match (&self.arc_withheld, &self.eviction) {
                (Some(why), _) => backend_unknown = Some(why.clone()),
                (None, Some(Ok(CacheEviction::Evicted(_)))) => {}
                (None, Some(Ok(CacheEviction::Unsupported(why)))) | (None, Some(Err(why))) => {
                    backend_unknown = Some(format!("the ARC was not emptied before the repetition ({why})"))
                }
                (None, None) => backend_unknown = Some("the ARC was not emptied before the repetition".into()),
            }
            if self.arc_withheld.is_none() {
                let g = a as f64 - b as f64;
                samples.push(("arc_growth_bytes", g));
                arc_growth = Some(g);
            }
            self.arc_source = Some(src);
        }
        let rss_growth = match (rss_before, rss_after) {
            (Some(b), Some(a)) if a.pid == b.pid => {
                let g = a.bytes as f64 - b.bytes as f64;
                samples.push(("daemon_rss_growth_bytes", g));
                Some(g)
            }
            (Some(b), Some(a)) => anyhow::bail!("{}: the backend's daemon changed during the reads (pid {} -> {})", self.lab.driver_name(), b.pid, a.pid),
            _ => None,
        };
        let mut charged = 0.0;
        if let (Some(b), Some(a)) = (&backing_before, &backing_after) {
            let g = a.resident_bytes as f64 - b.resident_bytes as f64;
            samples.push(("backing_file_cache_growth_bytes", g));
            let layout = self.lab.cgroup_layout();
            self.charged_backing = Some(if backing_cache_charged_to_readers(a.loop_direct_io, &layout) {
                // Taken off only what the cgroups hold: the rest was charged elsewhere.
                charged = g.clamp(0.0, cg_total);
                format!("taken off: buffered loop device under cgroup {layout}, which charges its backing file's cache to the reader")
            } else {
                match a.loop_direct_io {
                    Some(true) => "nothing to take off: the loop device does direct IO".to_string(),
                    Some(false) => format!("not taken off: buffered loop device, but cgroup {layout} charges its backing file's cache to the root cgroup"),
                    None => "not taken off: the backend reads its file through its own process, outside the readers' cgroups".to_string(),
                }
            });
            self.backing = Some((a.path.clone(), a.loop_direct_io));
        }
        let own = backend_growth(arc_growth, rss_growth);
        if backend_unknown.is_none() {
            let total = cg_total - charged + own.unwrap_or(0.0);
            samples.push(("backend_cache_growth_bytes", own.unwrap_or(0.0)));
            samples.push(("reader_memory_bytes", total));
            samples.push(("reader_memory_copies_ratio", total / self.p.file_bytes as f64));
        }
        Ok(Some(samples))
    }
}

impl CellExec for Exec<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let lab = self.lab;
        let spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
        // Before any container holds a layer: zfs exports its pool to empty the ARC. A failure
        // is recorded and leaves the total unreported (the ARC's growth would not be what
        // these reads cached), it does not end the cell.
        self.eviction = Some(lab.evict_backend_cache().map_err(|e| format!("{e:#}")));
        let mut held: Vec<Box<dyn Container + '_>> = Vec::with_capacity(self.p.containers as usize);
        let result = (|| -> anyhow::Result<RepSamples> {
            for _ in 0..self.p.containers {
                let c = lab.start(&self.img, &spec)?;
                c.wait_ready(Duration::from_secs(60))?;
                held.push(c);
            }
            for attempt in 0..ATTEMPTS {
                if let Some(samples) = self.measure(&held, attempt > 0)? {
                    return Ok(samples);
                }
                // The layers' caches are gone: measure again from a clean drop, once the
                // host is quiet.
                self.disturbed += 1;
                wait_quiet(lab);
            }
            anyhow::bail!("another process dropped the page cache during each of {ATTEMPTS} measurements")
        })();
        let mut stop_err = None;
        for c in held {
            if let Err(e) = c.stop() {
                stop_err.get_or_insert(e);
            }
        }
        let samples = result?;
        if let Some(e) = stop_err {
            return Err(e);
        }
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        Notes::from([
            ("image".into(), self.img.name.clone()),
            ("target".into(), LARGE_PATH.into()),
            ("page_cache_source".into(), "/proc/meminfo Cached + Buffers, host-wide (other host activity adds noise)".into()),
            (
                "cgroup_page_cache_source".into(),
                format!("cgroup ({}) page cache of each container, growth over the reads", self.lab.cgroup_layout()),
            ),
            ("reads".into(), "one container after the other, buffered, 128 KiB blocks, after dropping caches".into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
            ("measurements_disturbed".into(), self.disturbed.to_string()),
            (
                "reader_memory_method".into(),
                "sum over the N containers of the cgroup page cache growth (memory.stat file pages: a page is charged to \
                 one cgroup, so shared pages count once), minus the backing file's cache growth (mincore) where charged to \
                 the readers, plus the backend's own cache growth (ARC, or daemon RSS where larger)"
                    .into(),
            ),
            ("reads_checked".into(), "each reader's probe reported reading the whole file (else the repetition fails)".into()),
            (
                "backend_cache_eviction".into(),
                match &self.eviction {
                    None => "not attempted".into(),
                    Some(Ok(CacheEviction::Evicted(how))) => format!("emptied before each repetition: {how}"),
                    Some(Ok(CacheEviction::Unsupported(why))) => format!("not emptied: {why}"),
                    Some(Err(e)) => format!("failed: {e}"),
                },
            ),
            (
                "backing_file".into(),
                match &self.backing {
                    None => "none (not loop- or vdev-backed)".into(),
                    Some((path, dio)) => format!(
                        "{}; loop direct IO: {}",
                        path.display(),
                        dio.map_or_else(|| "no loop device".into(), |d| d.to_string())
                    ),
                },
            ),
            ("backing_file_cache".into(), self.charged_backing.clone().unwrap_or_else(|| "not applicable".into())),
            ("arc_source".into(), self.arc_source.clone().unwrap_or_else(|| "not applicable (no ARC)".into())),
            (
                "arc_growth".into(),
                match (&self.arc_source, &self.arc_withheld) {
                    (None, _) => "not applicable (no ARC)".into(),
                    (Some(_), None) => "reported: the ARC stayed below its limit and the measurement was the first attempt".into(),
                    (Some(_), Some(why)) => why.clone(),
                },
            ),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Shared by the cells of the same file size and by other workloads; the driver's
        // teardown removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_params() {
        let cells = SharedCache.cells(Profile::Quick);
        assert_eq!(cells.len(), QUICK_N.len());
        assert_eq!(crate::params_string(&cells[1]), format!("containers=2;file_bytes={}", 16 * MIB));
        let p = SharedCacheParams::from_params(&SharedCache.cells(Profile::Full)[4]).unwrap();
        assert_eq!(p, SharedCacheParams { file_bytes: 256 * MIB, containers: 16 });
    }

    #[test]
    fn the_backing_file_cache_is_taken_off_only_where_the_readers_were_charged_for_it() {
        // Buffered loop device, unified hierarchy: the loop driver charges the reader.
        assert!(backing_cache_charged_to_readers(Some(false), "v2"));
        // v1 / hybrid: the memory controller is not where the loop driver looks.
        assert!(!backing_cache_charged_to_readers(Some(false), "v1"));
        assert!(!backing_cache_charged_to_readers(Some(false), "hybrid"));
        // Direct IO: nothing cached; no loop device (zfs-fuse vdev): the daemon reads it.
        assert!(!backing_cache_charged_to_readers(Some(true), "v2"));
        assert!(!backing_cache_charged_to_readers(None, "v2"));
    }

    #[test]
    fn the_backend_cost_is_the_larger_of_arc_and_daemon_growth() {
        assert_eq!(backend_growth(None, None), None);
        assert_eq!(backend_growth(Some(64.0), None), Some(64.0));
        assert_eq!(backend_growth(None, Some(3.0)), Some(3.0));
        // zfs-fuse after an export: the ARC refills memory the daemon already holds.
        assert_eq!(backend_growth(Some(64.0), Some(1.0)), Some(64.0));
        assert_eq!(backend_growth(Some(64.0), Some(80.0)), Some(80.0));
    }

    #[test]
    fn arc_growth_is_withheld_when_it_cannot_be_what_the_reads_cached() {
        let limit = Some(100 * MIB);
        // First attempt, ARC well below its limit: the growth stands.
        assert_eq!(arc_growth_withheld(10 * MIB, 80 * MIB, limit, false), None);
        // No known limit: only the retry rule applies.
        assert_eq!(arc_growth_withheld(10 * MIB, 100 * MIB, None, false), None);
        // A retry starts with the discarded attempt's reads in the ARC.
        assert!(arc_growth_withheld(10 * MIB, 80 * MIB, limit, true).unwrap().contains("retried"));
        // Figures of a zfs-fuse run with max-arc-size = 100: size ends a little over c_max.
        let at_limit = arc_growth_withheld(74_529_072, 104_963_056, Some(104_857_600), false).unwrap();
        assert!(at_limit.contains("c_max 104857600"), "{at_limit}");
        // Just under the slack still counts as at the limit.
        assert!(arc_growth_withheld(0, 99 * MIB, limit, false).is_some());
        assert_eq!(arc_growth_withheld(0, 97 * MIB, limit, false), None);
    }
}
