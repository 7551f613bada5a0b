//! `density`: start N containers of one small image that all stay alive, then stop them.
//!
//! Per container: start latency (create + start through the OCI runtime, until the probe inside
//! reports ready), memory charged to its cgroup (incl. page cache) and the bytes its writable
//! layer holds (driver usage). Answers fast-start, filelevel-density, btrfs-not-dense,
//! zfs-dense and layer-sharing.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::images::{ImageSpec, Shape};
use crate::kit;
use crate::lab::{Container, ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, Better, ParamKind, ParamSpec, Unit};

/// Parameters of one density cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DensityParams {
    /// Containers held alive at once.
    pub containers: u32,
}

impl TypedParams for DensityParams {}

/// Quick profile: a handful of containers, enough to see the per-container cost.
pub const QUICK_N: [u32; 3] = [1, 4, 16];
/// Full profile: up to a thousand, or until the backend fails (the failure is recorded).
pub const FULL_N: [u32; 8] = [1, 4, 16, 64, 128, 256, 512, 1000];

pub const METRICS: [MetricSpec; 5] = [
    MetricSpec {
        name: "start_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "runtime start timing of one container: layer prepare + mount + bundle + create + start",
    },
    MetricSpec {
        name: "layer_setup_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "the storage part of the start: prepare + mount of the container's layer (and the bundle)",
    },
    MetricSpec {
        name: "memory_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "memory charged to the container's cgroup (incl. page cache) while all N run",
    },
    MetricSpec {
        name: "disk_per_container_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "bytes of the container's writable layer (driver usage) while all N run",
    },
    MetricSpec {
        name: "total_start_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "wall time to have all N containers running (one value per repetition)",
    },
];

/// The parameters of a cell (`cowbench run --set density.NAME=…`).
pub const PARAMS: [ParamSpec; 1] = [
    ParamSpec { name: "containers", kind: ParamKind::Count, description: "containers held alive at once (N)" },
];

pub struct Density;

impl Workload for Density {
    fn id(&self) -> &'static str {
        "density"
    }
    fn description(&self) -> &'static str {
        "start N containers of one image that stay alive: start latency, memory and disk per container"
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
        DensityParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let ns: &[u32] = match profile {
            Profile::Quick => &QUICK_N,
            Profile::Full => &FULL_N,
        };
        ns.iter().map(|&containers| DensityParams { containers }.to_params()).collect()
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            Profile::Quick => 2,
            Profile::Full => 5,
        }
    }
    fn drop_caches(&self) -> bool {
        // A cold start is what a host sees after a pull; drop caches before each repetition.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: DensityParams = kit::params(self.id(), params)?;
        let img = lab.image(&ImageSpec::new("density", lab.seed(), Shape::Base))?;
        Ok(Box::new(DensityCell { lab, p, img, reached: 0 }))
    }
}

// The executor. Start N containers of the base image (busybox + probe), each holding (probe
// `hold`), one after the other; per container the runtime's start timing (layer prepare +
// mount + bundle + `create` + `start`), then — with all N up — the memory charged to each
// container's cgroup and the bytes of each container's layer; then stop them all.

struct DensityCell<'a> {
    lab: &'a dyn Lab,
    p: DensityParams,
    img: Image,
    /// Most containers held at once so far.
    reached: usize,
}

impl CellExec for DensityCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let lab = self.lab;
        let spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
        let mut held: Vec<Box<dyn Container + '_>> = Vec::with_capacity(self.p.containers as usize);
        let mut samples: RepSamples = Vec::new();
        let t0 = Instant::now();
        let result = (|| -> anyhow::Result<()> {
            for _ in 0..self.p.containers {
                if lab.stop_requested() {
                    anyhow::bail!("interrupted by signal");
                }
                let c = lab.start(&self.img, &spec)?;
                c.wait_ready(Duration::from_secs(60))?;
                samples.push(("start_latency_ns", c.timings().total_ns as f64));
                samples.push(("layer_setup_ns", c.timings().setup_ns as f64));
                held.push(c);
                self.reached = self.reached.max(held.len());
            }
            samples.push(("total_start_ns", t0.elapsed().as_nanos() as f64));
            for c in &held {
                samples.push(("memory_per_container_bytes", c.accounting()?.memory_bytes as f64));
                samples.push(("disk_per_container_bytes", lab.driver().usage(c.layer_key())?.bytes as f64));
            }
            Ok(())
        })();
        let mut stop_err = None;
        for c in held {
            if let Err(e) = c.stop() {
                stop_err.get_or_insert(e);
            }
        }
        result?;
        if let Some(e) = stop_err {
            return Err(e);
        }
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        Notes::from([
            ("image".into(), self.img.name.clone()),
            ("image_layers".into(), self.img.layers.len().to_string()),
            ("max_containers_held".into(), self.reached.to_string()),
            ("start_latency".into(), "runtime timing: layer prepare + mount + bundle + create + start".into()),
        ])
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
        let p = DensityParams { containers: 16 }.to_params();
        assert_eq!(p.get("containers"), Some(&serde_json::json!(16)));
        assert_eq!(DensityParams::from_params(&p).unwrap(), DensityParams { containers: 16 });
        assert_eq!(Density.cells(Profile::Quick).len(), QUICK_N.len());
    }
}
