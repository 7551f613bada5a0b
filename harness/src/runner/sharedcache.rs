//! Executor of `sharedcache`: N containers of an image with one large file hold (probe
//! `hold`); with all N up the harness drops the page cache, runs the probe once in each
//! container without IO (so the probe binary, every container's own copy of it on vfs, and the
//! runtime's exec path are cached before the baseline), snapshots the host's page cache, each
//! container's cgroup page cache and for zfs the ARC, has each container read the whole file
//! (`<runtime> exec` of the probe, one container after the other, timed by the probe), and
//! snapshots again while all N still exist (a container's layer going away would free its
//! private copy's cache). Then the containers are stopped. A measurement during which another
//! process dropped the page cache (`/proc/vmstat` `drop_pagecache` moved) is thrown away and
//! taken again, up to five times (the count is in the notes).
//!
//! ARC source (zfs only, recorded in the cell's notes as `arc_source`): the kernel's
//! `/proc/spl/kstat/zfs/arcstats` `size`, or zfs-fuse's kstat `size`, both as the driver's
//! status reports them (`arc_size`); where neither is exposed, the zfs-fuse daemon's RSS
//! (`/proc/<daemon_pid>/status` VmRSS): its ARC lives in that process's heap.

use std::collections::BTreeMap;
use std::time::Duration;

use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::sharedcache::{SharedCacheParams, READ_BLOCK};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::fragmentation::{large_file_image, LARGE_PATH};
use super::inside::{drop_pagecache_count, exec_probe, page_cache_bytes, total_of};
use crate::container::{Container, ContainerSpec};
use crate::image::Image;

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = SharedCacheParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if p.containers == 0 {
        return Err(SetupError::Fail(anyhow::anyhow!("sharedcache needs at least one reader")));
    }
    // The image `fragmentation` and `concurrent` use too: one build per driver and size.
    let img = large_file_image(s, p.file_bytes)?;
    Ok(Box::new(SharedCache { s, p, img, arc_source: None, disturbed: 0 }))
}

struct SharedCache<'a> {
    s: &'a Session,
    p: SharedCacheParams,
    img: Image,
    arc_source: Option<String>,
    /// Measurements thrown away because another process dropped the page cache meanwhile.
    disturbed: u32,
}

/// ARC figure of a zfs session and where it came from; None for other backends.
fn arc_bytes(s: &Session) -> Option<(u64, String)> {
    if !s.driver.capabilities().own_read_cache {
        return None;
    }
    let cache = s.driver.status().ok()?.cache?;
    Some((cache.bytes, cache.source.to_string()))
}

/// Attempts at a measurement that another process's cache drop did not disturb.
const ATTEMPTS: u32 = 5;

impl SharedCache<'_> {
    /// One measurement with all containers up: drop caches, warm the exec path, baseline,
    /// the reads, after. None when the page cache was dropped by someone else meanwhile.
    fn measure(&mut self, held: &[Container<'_>]) -> anyhow::Result<Option<RepSamples>> {
        super::drop_caches().map_err(|e| anyhow::anyhow!(e))?;
        let warm = Request::new(vec![Op::Sleep { ms: 0 }]);
        for c in held {
            exec_probe(c, &warm)?;
        }
        let drops_before = drop_pagecache_count();
        let cg_before: Vec<u64> = held.iter().map(|c| c.accounting().map(|a| a.page_cache_bytes)).collect::<Result<_, _>>()?;
        let arc_before = arc_bytes(self.s);
        let sys_before = page_cache_bytes();
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
            let resp = exec_probe(c, &read)?;
            let (ns, bytes) = total_of(&resp, "read")?;
            if bytes != self.p.file_bytes {
                anyhow::bail!("container {} read {bytes} bytes of {LARGE_PATH}, expected {}", c.id(), self.p.file_bytes);
            }
            samples.push(("read_latency_ns", ns as f64));
            samples.push(("read_bytes_per_s", bytes as f64 / (ns.max(1) as f64 / 1e9)));
        }
        let sys_after = page_cache_bytes();
        let arc_after = arc_bytes(self.s);
        let mut cg_total = 0.0;
        for (c, before) in held.iter().zip(&cg_before) {
            let grown = c.accounting()?.page_cache_bytes as f64 - *before as f64;
            samples.push(("cgroup_page_cache_bytes", grown));
            cg_total += grown;
        }
        if drop_pagecache_count() != drops_before {
            return Ok(None);
        }
        samples.push(("cgroup_page_cache_total_bytes", cg_total));
        let growth = sys_after as f64 - sys_before as f64;
        let n = held.len() as f64;
        samples.push(("page_cache_growth_bytes", growth));
        samples.push(("growth_per_reader_bytes", growth / n));
        samples.push(("growth_per_file_ratio", growth / self.p.file_bytes as f64));
        if let (Some((b, src)), Some((a, _))) = (arc_before, arc_after) {
            samples.push(("arc_growth_bytes", a as f64 - b as f64));
            self.arc_source = Some(src);
        }
        Ok(Some(samples))
    }
}

impl CellExec for SharedCache<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
        let mut held: Vec<Container<'_>> = Vec::with_capacity(self.p.containers as usize);
        let result = (|| -> anyhow::Result<RepSamples> {
            for _ in 0..self.p.containers {
                let c = self.s.runtime.start(d, &self.img, &spec)?;
                c.wait_ready(Duration::from_secs(60))?;
                held.push(c);
            }
            for _ in 0..ATTEMPTS {
                if let Some(samples) = self.measure(&held)? {
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
            return Err(e.into());
        }
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        let mut n = BTreeMap::from([
            ("image".into(), self.img.name.clone()),
            ("target".into(), LARGE_PATH.into()),
            ("page_cache_source".into(), "/proc/meminfo Cached + Buffers, host-wide (other host activity adds noise)".into()),
            ("cgroup_page_cache_source".into(), format!("cgroup ({}) page cache of each container, growth over the reads", self.s.runtime.cgroup_layout())),
            ("reads".into(), "one container after the other, buffered, 128 KiB blocks, after dropping caches".into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
        ]);
        n.insert("measurements_disturbed".into(), self.disturbed.to_string());
        n.insert("arc_source".into(), self.arc_source.clone().unwrap_or_else(|| "not applicable (no ARC)".into()));
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Shared by the cells of the same file size; the driver's teardown removes it.
        Ok(())
    }
}
