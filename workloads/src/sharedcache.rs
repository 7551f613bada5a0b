//! `sharedcache`: N containers of one image read the same image file; how much memory does the
//! host spend caching it?
//!
//! After all N containers are up (each holding), the harness drops the page cache, lets every
//! container run the probe once without IO (so the probe binary and the runtime's exec path are
//! cached before the baseline), snapshots memory, then has each container read the whole file
//! through the probe (timed by the probe), one after the other, and snapshots again while all N
//! still exist. Growth of the system page cache (`/proc/meminfo` Cached + Buffers), of each
//! container's cgroup page cache, and for zfs of the ARC (kernel: arcstats `size`; zfs-fuse:
//! its kstat `size` where mounted, else the daemon's RSS growth as the stand-in). A backend
//! that shares cached blocks between containers grows ~1× the file, one that does not ~N×.
//! Answers dm-no-shared-cache, btrfs-no-shared-cache and zfs-shared-arc.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::{self, LARGE_PATH};
use crate::kit;
use crate::lab::{Container, ContainerSpec, Image, Lab, Notes};
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

/// 64 MiB, the file `fragmentation` and `concurrent` read too: one image build per driver.
pub const QUICK_FILE: u64 = 64 * MIB;
pub const QUICK_N: [u32; 3] = [1, 2, 4];
pub const FULL_FILE: u64 = 256 * MIB;
pub const FULL_N: [u32; 5] = [1, 2, 4, 8, 16];
/// Read block of the probe's sequential read.
pub const READ_BLOCK: u64 = 128 * 1024;

pub const METRICS: [MetricSpec; 8] = [
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
        Ok(Box::new(Exec { lab, p, img, arc_source: None, arc_withheld: None, disturbed: 0 }))
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
const ATTEMPTS: u32 = 5;

struct Exec<'a> {
    lab: &'a dyn Lab,
    p: SharedCacheParams,
    img: Image,
    arc_source: Option<String>,
    /// Why the last measurement's ARC growth was withheld, if it was.
    arc_withheld: Option<String>,
    /// Measurements thrown away because another process dropped the page cache meanwhile.
    disturbed: u32,
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
        if let (Some((b, src)), Some((a, _))) = (arc_before, arc_after) {
            self.arc_withheld = arc_growth_withheld(b, a, self.lab.backend_cache_limit(), retried);
            if self.arc_withheld.is_none() {
                samples.push(("arc_growth_bytes", a as f64 - b as f64));
            }
            self.arc_source = Some(src);
        }
        Ok(Some(samples))
    }
}

impl CellExec for Exec<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let lab = self.lab;
        let spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
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
                // The layers' caches are gone: measure again from a clean drop.
                self.disturbed += 1;
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
        assert_eq!(crate::params_string(&cells[1]), format!("containers=2;file_bytes={}", 64 * MIB));
        let p = SharedCacheParams::from_params(&SharedCache.cells(Profile::Full)[4]).unwrap();
        assert_eq!(p, SharedCacheParams { file_bytes: 256 * MIB, containers: 16 });
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
