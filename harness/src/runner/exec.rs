//! The executor side of workloads: the workloads crate says *what* to measure, an executor here
//! does it with a driver, images and containers. One executor per workload id.

use std::collections::BTreeMap;

use cowbench_drivers::{registry, Driver, DriverConfig, ProbeReport};
use cowbench_workloads::Params;

use crate::container::{Runtime, RuntimeKind};

/// One opened driver and what the executors share on it (the run's runtime, seed, root).
pub struct Session {
    pub name: String,
    pub driver: Box<dyn Driver>,
    pub cfg: DriverConfig,
    pub probe: ProbeReport,
    /// The OCI runtime every container of the run starts through.
    pub runtime: Runtime,
    pub seed: u64,
}

impl Session {
    pub fn open(name: &str, cfg: &DriverConfig, runtime: &str, seed: u64) -> anyhow::Result<Session> {
        let probe = registry::probe(name)?;
        let kind: RuntimeKind = runtime.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let runtime = Runtime::new(kind, &cfg.root)?;
        let driver = registry::open(name, cfg)?;
        Ok(Session { name: name.into(), driver, cfg: cfg.clone(), probe, runtime, seed })
    }

    /// Release the driver's backing store (every layer the run made goes with it).
    pub fn close(self) -> anyhow::Result<()> {
        // Containers a failed cell left behind hold mounts of the driver's layers.
        let left = self.runtime.kill_all_ours()?;
        if !left.errors.is_empty() {
            log::warn!("{}: leftover containers: {}", self.name, left.errors.join("; "));
        }
        self.driver.teardown()?;
        // Only metadata is left; without it the run-end clean has nothing to re-open.
        let dir = self.cfg.driver_root(&self.name);
        if cowbench_drivers::sys::mounts::mounts_under(&dir).map(|m| m.is_empty()).unwrap_or(false) {
            std::fs::remove_dir_all(&dir).map_err(|e| anyhow::anyhow!("remove {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// Why a cell did not run.
pub enum SetupError {
    /// The backend cannot do what the cell needs (capability missing ...): recorded as skipped.
    Skip(String),
    Fail(anyhow::Error),
}

impl From<anyhow::Error> for SetupError {
    fn from(e: anyhow::Error) -> Self {
        SetupError::Fail(e)
    }
}

impl From<cowbench_drivers::Error> for SetupError {
    fn from(e: cowbench_drivers::Error) -> Self {
        SetupError::Fail(e.into())
    }
}

/// `(metric name, value)` pairs of one repetition.
pub type RepSamples = Vec<(&'static str, f64)>;

/// A cell being executed: set up (untimed) by [`setup`], then one call per repetition.
pub trait CellExec {
    /// One repetition (warm-up or recorded; the runner decides which are kept).
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples>;
    /// Facts worth keeping with the cell (image, layer counts ...).
    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// Release what setup made. Called after the last repetition, also after a failure.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// The executor of `workload` for one cell.
pub fn setup<'a>(workload: &str, session: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    match workload {
        "copyup" => super::copyup::setup(session, params),
        "density" => super::density::setup(session, params),
        "sharedcache" => super::sharedcache::setup(session, params),
        "churn" => super::churn::setup(session, params),
        "fragmentation" => super::fragmentation::setup(session, params),
        "concurrent" => super::concurrent::setup(session, params),
        "lookup" => super::lookup::setup(session, params),
        "metadata" => super::metadata::setup(session, params),
        "layers" => super::layers::setup(session, params),
        other => Err(SetupError::Skip(format!("no executor for workload '{other}'"))),
    }
}
