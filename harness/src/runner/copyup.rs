//! Executor of `copyup`: a container holds (probe `hold`), the harness reads the usage of its
//! fresh layer, then SIGTERM lets the probe do the first write to the image file and time it
//! with its own clock; the harness reads the usage again. The layer is kept until both usage
//! figures are read, then removed.
//!
//! `usage_delta_bytes` is the driver's layer usage, which for a block backend (devicemapper)
//! counts every changed file whole: the snapshotter's file-level view. What a block backend
//! really allocated is its pool's own counter (`data_used_bytes` in the driver status, the
//! thin pool's used data blocks), recorded as `pool_data_used_delta_bytes` where there is one.
//!
//! Image: base layer (busybox + probe) and a stack of `depth` layers whose bottom one holds
//! `/data/copyup` of `file_bytes` (depth 1: the file is in the topmost image layer).

use std::collections::BTreeMap;
use std::time::Duration;

use cowbench_workloads::copyup::CopyupParams;
use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use crate::container::ContainerSpec;
use crate::image::{self, Image, ImageSpec, Shape};

const TARGET: &str = "/data/copyup";

/// The backend's pool-level allocation (bytes), if its status has one.
fn pool_data_used(d: &dyn cowbench_drivers::Driver) -> Option<u64> {
    d.status().ok()?.pool.map(|p| p.data_used_bytes)
}

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = CopyupParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if let Some(max) = s.driver.capabilities().max_depth {
        // The image is the base layer plus `depth` layers, and the container adds one.
        if p.depth as usize + 2 > max {
            return Err(SetupError::Skip(format!("{} mounts at most {max} layers", s.name)));
        }
    }
    let name = format!("copyup-d{}-b{}", p.depth, p.file_bytes);
    let spec = ImageSpec::new(
        &name,
        s.seed,
        Shape::DeepStack { depth: p.depth as usize, target: TARGET.into(), target_bytes: p.file_bytes },
    );
    let img = image::build(&*s.driver, &spec).map_err(anyhow::Error::from)?;
    // Asked once: for backends without the counter, status() (zpool CLI calls for zfs) would
    // only slow every repetition down.
    let pool_counter = pool_data_used(&*s.driver).is_some();
    Ok(Box::new(Copyup { s, p, img, pool_counter }))
}

struct Copyup<'a> {
    s: &'a Session,
    p: CopyupParams,
    img: Image,
    /// The backend's status has `data_used_bytes` (devicemapper's thin pool).
    pool_counter: bool,
}

impl CellExec for Copyup<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let req = Request::new(vec![
            Op::Hold,
            Op::Copyup { path: TARGET.into(), offset: self.p.write_offset(), bytes: self.p.write_len(), fsync: false },
        ]);
        let spec = ContainerSpec { keep_layer: true, ..ContainerSpec::probe(&req) };
        let c = self.s.runtime.start(d, &self.img, &spec)?;
        let layer = c.layer_key().to_string();
        let measured = (|| -> anyhow::Result<RepSamples> {
            c.wait_ready(Duration::from_secs(60))?;
            let before = d.usage(&layer)?.bytes;
            let pool_before = if self.pool_counter { pool_data_used(d) } else { None };
            let out = c.stop()?;
            let resp = out.probe_response()?;
            if let Some((s, e)) = resp.first_error() {
                anyhow::bail!("probe {} {}: {}", s.op, s.phase, e.message);
            }
            let phase = |ph: &str| {
                resp.samples_of("copyup", ph)
                    .next()
                    .map(|s| s.latency_ns as f64)
                    .ok_or_else(|| anyhow::anyhow!("probe response has no copyup/{ph} sample"))
            };
            let open = phase("open")?;
            let write = phase("pwrite")?;
            let after = d.usage(&layer)?.bytes;
            let mut samples = vec![
                ("open_latency_ns", open),
                ("write_latency_ns", write),
                ("first_write_latency_ns", open + write),
                ("usage_delta_bytes", after.saturating_sub(before) as f64),
            ];
            // After `stop`: the container's filesystem is unmounted, so its writes reached the pool.
            if let (Some(b), Some(a)) = (pool_before, pool_before.and_then(|_| pool_data_used(d))) {
                samples.push(("pool_data_used_delta_bytes", a.saturating_sub(b) as f64));
            }
            Ok(samples)
        })();
        // `stop` has unmounted and deleted the container; the kept layer goes now.
        let removed = d.remove(&layer);
        let samples = measured?;
        removed?;
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("image".into(), self.img.name.clone()),
            ("image_layers".into(), self.img.layers.len().to_string()),
            ("target".into(), TARGET.into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        image::remove(&*self.s.driver, &self.img.name)?;
        Ok(())
    }
}
