//! Executor of `churn`: K cycles of `<runtime> run` of a container that writes X bytes to a new
//! file (fsynced, timed by the probe) and exits, after which the container and its layer are
//! deleted; the backend's space is read after every cycle (see [`super::inside::space`]).
//!
//! **Per-cell discard.** A driver is opened once per run with the run's options. A cell asking
//! for `discard=true|false` on a backend that has a `discard` option (its status reports
//! `discard`) uses the run's driver when it already has that value; otherwise the executor
//! opens a second instance of the backend on a sub-root of the run's root,
//! `<root>/churn-discard-<true|false>/`, with the run's options plus `discard=<v>`, builds the
//! image there, and tears that instance down and removes the sub-root when the cell ends (also
//! after a failure). Backends without the option skip those cells with the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cowbench_drivers::{registry, Driver, DriverConfig};
use cowbench_workloads::churn::ChurnParams;
use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::inside::{check, settled_space, space, total_of, Space};
use crate::container::ContainerSpec;
use crate::image::{Image, ImageSpec, Shape};

const TARGET: &str = "/churn.dat";
const BLOCK: u64 = 1024 * 1024;
/// Longest wait for deferred frees after the last cycle.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = ChurnParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    let mut own: Option<(Box<dyn Driver>, PathBuf)> = None;
    let mut discard_note = "as the run opened the backend".to_string();
    if let Some(v) = p.discard_option() {
        let st = s.driver.status()?;
        match st.discard.map(|d| d.to_string()) {
            None => return Err(SetupError::Skip(format!("{} has no discard option", s.name))),
            Some(cur) if cur == v => discard_note = format!("discard={v} (the run's driver)"),
            Some(_) => {
                let root = s.cfg.root.join(format!("churn-discard-{v}"));
                let mut cfg = DriverConfig::new(&root);
                for (k, val) in &s.cfg.options {
                    cfg = cfg.with_option(k, val);
                }
                cfg = cfg.with_option("discard", v);
                let d = registry::open(&s.name, &cfg)?;
                discard_note = format!("discard={v} (second instance on {})", root.display());
                own = Some((d, root));
            }
        }
    }
    let mut ex = Churn { s, p, own, img: None, discard_note, sources: None, settle: None };
    let img = super::inside::build_image(ex.driver(), &ex.driver_root(), &ImageSpec::new("churn", s.seed, Shape::Base));
    match img {
        Ok(i) => ex.img = Some(i),
        Err(e) => {
            // The executor is not returned, so release a second instance here.
            let _ = Box::new(ex).finish();
            return Err(SetupError::Fail(e));
        }
    }
    Ok(Box::new(ex))
}

struct Churn<'a> {
    s: &'a Session,
    p: ChurnParams,
    /// A second instance of the backend with the cell's discard option, and its root.
    own: Option<(Box<dyn Driver>, PathBuf)>,
    img: Option<Image>,
    discard_note: String,
    sources: Option<(String, String)>,
    /// How the last repetition's settled reading was reached.
    settle: Option<String>,
}

impl Churn<'_> {
    fn driver(&self) -> &dyn Driver {
        match &self.own {
            Some((d, _)) => d.as_ref(),
            None => self.s.driver.as_ref(),
        }
    }

    fn driver_root(&self) -> PathBuf {
        match &self.own {
            Some((_, root)) => root.join(&self.s.name),
            None => self.s.cfg.driver_root(&self.s.name),
        }
    }

    fn space(&mut self) -> anyhow::Result<Space> {
        let sp = space(self.driver(), &self.driver_root())?;
        self.sources.get_or_insert((sp.used_source.clone(), sp.allocated_source.clone()));
        Ok(sp)
    }
}

impl CellExec for Churn<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let img = self.img.clone().expect("image built in setup");
        let req = Request::new(vec![Op::Write {
            path: TARGET.into(),
            block_bytes: BLOCK.min(self.p.write_bytes.max(1)),
            bytes: self.p.write_bytes,
            direct: false,
            random: false,
            fsync: true,
            create: true,
            per_block: false,
            seed: rep as u64,
        }]);
        let spec = ContainerSpec::probe(&req);
        let (first, _) = settled_space(self.driver(), &self.driver_root(), SETTLE_MAX)?;
        let mut last = first.clone();
        let mut samples: RepSamples = Vec::new();
        let mut done = 0u32;
        for _ in 0..self.p.cycles {
            if super::signals::stop_requested() {
                anyhow::bail!("interrupted by signal");
            }
            let out = self.s.runtime.run(self.driver(), &img, &spec)?;
            if !out.success() {
                anyhow::bail!("container {} exited {:?}: {}", out.id, out.exit_code, out.stderr_str().trim());
            }
            let resp = out.probe_response()?;
            check(&resp)?;
            let (ns, bytes) = total_of(&resp, "write")?;
            if bytes != self.p.write_bytes {
                anyhow::bail!("container {} wrote {bytes} of {} bytes", out.id, self.p.write_bytes);
            }
            samples.push(("write_latency_ns", ns as f64));
            last = self.space()?;
            samples.push(("backend_used_bytes", last.used as f64));
            samples.push(("backing_allocated_bytes", last.allocated as f64));
            done += 1;
        }
        samples.push(("backend_growth_bytes", last.used as f64 - first.used as f64));
        samples.push(("backing_growth_bytes", last.allocated as f64 - first.allocated as f64));
        samples.push(("cycles_count", done as f64));
        let (settled, how) = settled_space(self.driver(), &self.driver_root(), SETTLE_MAX)?;
        samples.push(("backend_settled_growth_bytes", settled.used as f64 - first.used as f64));
        samples.push(("backing_settled_growth_bytes", settled.allocated as f64 - first.allocated as f64));
        self.settle = Some(how);
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        let mut n = BTreeMap::from([
            ("image".into(), "churn (base layer only)".into()),
            ("discard".into(), self.discard_note.clone()),
            ("cycle".into(), format!("`run` of a container writing {TARGET} (fsync), then delete container and layer")),
        ]);
        if let Some(how) = &self.settle {
            n.insert("settled".into(), how.clone());
        }
        if let Some((u, a)) = &self.sources {
            n.insert("backend_used_source".into(), u.clone());
            n.insert("backing_allocated_source".into(), a.clone());
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        if let Some((d, root)) = self.own {
            d.teardown()?;
            drop(d);
            std::fs::remove_dir_all(&root).map_err(|e| anyhow::anyhow!("remove {}: {e}", root.display()))?;
        }
        // The run's driver keeps the (base-only) image; its teardown removes it.
        Ok(())
    }
}
