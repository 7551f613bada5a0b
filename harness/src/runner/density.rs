//! Executor of `density`: start N containers of the base image (busybox + probe), each holding
//! (probe `hold`), one after the other; per container the runtime's start timing (layer
//! prepare + mount + bundle + `create` + `start`), then — with all N up — the memory charged to
//! each container's cgroup and the bytes of each container's layer; then stop them all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cowbench_workloads::density::DensityParams;
use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use crate::container::{Container, ContainerSpec};
use crate::image::{self, Image, ImageSpec, Shape};

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = DensityParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    let img = image::build(&*s.driver, &ImageSpec::new("density", s.seed, Shape::Base)).map_err(anyhow::Error::from)?;
    Ok(Box::new(Density { s, p, img, reached: 0 }))
}

struct Density<'a> {
    s: &'a Session,
    p: DensityParams,
    img: Image,
    /// Most containers held at once so far.
    reached: usize,
}

impl CellExec for Density<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
        let mut held: Vec<Container<'_>> = Vec::with_capacity(self.p.containers as usize);
        let mut samples: RepSamples = Vec::new();
        let t0 = Instant::now();
        let result = (|| -> anyhow::Result<()> {
            for _ in 0..self.p.containers {
                if super::signals::stop_requested() {
                    anyhow::bail!("interrupted by signal");
                }
                let c = self.s.runtime.start(d, &self.img, &spec)?;
                c.wait_ready(Duration::from_secs(60))?;
                samples.push(("start_latency_ns", c.timings().total_ns as f64));
                samples.push(("layer_setup_ns", c.timings().setup_ns as f64));
                held.push(c);
                self.reached = self.reached.max(held.len());
            }
            samples.push(("total_start_ns", t0.elapsed().as_nanos() as f64));
            for c in &held {
                samples.push(("memory_per_container_bytes", c.accounting()?.memory_bytes as f64));
                samples.push(("disk_per_container_bytes", d.usage(c.layer_key())?.bytes as f64));
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
            return Err(e.into());
        }
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
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
