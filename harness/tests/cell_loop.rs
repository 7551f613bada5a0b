//! The runner's cell loop (runner::cell::execute) on an in-memory lab: warm-up repetitions are
//! not recorded, the recorded count is the plan's, caches are dropped before every repetition
//! when the workload asks (failures counted), samples land in their metrics with their
//! repetition index, a failing repetition fails the cell naming it and the cell is still
//! released, a skipped setup gives a skipped cell with its reason, a stop request interrupts.
//!
//! `FakeLab` records every call the loop makes into one log it shares with the test workload,
//! so the order of cache drops and repetitions is visible (after youki's recording syscall
//! fake and hyperfine's MockExecutor). No root, no driver is touched: the only driver is a vfs
//! handle on a temporary directory, which the loop never calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cowbench::results::schema::{Cell, CellStatus};
use cowbench::runner::cell::{blank_cell, execute};
use cowbench::runner::matrix::Planned;
use cowbench_drivers::{Driver, DriverConfig};
use cowbench_workloads::images::ImageSpec;
use cowbench_workloads::lab::{Container, ContainerSpec, HostMemory, Image, Lab, Notes, RunOutput, Space};
use cowbench_workloads::{Better, CellExec, MetricSpec, ParamSpec, Params, Profile, RepSamples, SetupError, Unit, Workload};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push(what.into());
}

/// An in-memory lab: cache drops and stop checks are recorded and scripted; everything a
/// workload would need storage or containers for is refused (the test workloads use none).
struct FakeLab {
    log: Log,
    driver: Box<dyn Driver>,
    _dir: tempfile::TempDir,
    /// 1-based numbers of the drop_caches calls that fail.
    failing_drops: Vec<usize>,
    drops: Mutex<usize>,
    /// Answer true to stop_requested from this (1-based) call on.
    stop_from: Option<usize>,
    stop_checks: Mutex<usize>,
}

impl FakeLab {
    fn new(log: &Log) -> FakeLab {
        let dir = tempfile::tempdir().unwrap();
        let driver = cowbench_drivers::registry::open("vfs", &DriverConfig::new(dir.path())).expect("vfs on a temporary directory");
        FakeLab { log: log.clone(), driver, _dir: dir, failing_drops: Vec::new(), drops: Mutex::new(0), stop_from: None, stop_checks: Mutex::new(0) }
    }
}

fn refused<T>(what: &str) -> anyhow::Result<T> {
    anyhow::bail!("FakeLab has no {what}")
}

impl Lab for FakeLab {
    fn driver(&self) -> &dyn Driver {
        &*self.driver
    }
    fn driver_name(&self) -> &str {
        "fake"
    }
    fn seed(&self) -> u64 {
        1
    }
    fn scratch_dir(&self, _what: &str) -> anyhow::Result<PathBuf> {
        refused("scratch directories")
    }
    fn image(&self, _spec: &ImageSpec) -> anyhow::Result<Image> {
        refused("images")
    }
    fn remove_image(&self, _image: &Image) -> anyhow::Result<()> {
        refused("images")
    }
    fn start<'a>(&'a self, _image: &Image, _spec: &ContainerSpec) -> anyhow::Result<Box<dyn Container + 'a>> {
        refused("containers")
    }
    fn run(&self, _image: &Image, _spec: &ContainerSpec) -> anyhow::Result<RunOutput> {
        refused("containers")
    }
    fn probe_binary(&self) -> anyhow::Result<PathBuf> {
        refused("probe")
    }
    fn drop_caches(&self) -> Result<(), String> {
        let mut n = self.drops.lock().unwrap();
        *n += 1;
        push(&self.log, "drop");
        if self.failing_drops.contains(&n) {
            return Err(format!("drop {n} refused"));
        }
        Ok(())
    }
    fn stop_requested(&self) -> bool {
        let mut n = self.stop_checks.lock().unwrap();
        *n += 1;
        self.stop_from.is_some_and(|from| *n >= from)
    }
    fn host_memory(&self) -> HostMemory {
        HostMemory::default()
    }
    fn cgroup_layout(&self) -> String {
        "none".into()
    }
    fn space(&self) -> anyhow::Result<Space> {
        refused("space")
    }
    fn settled_space(&self, _max: Duration) -> anyhow::Result<(Space, String)> {
        refused("space")
    }
    fn backend_cache(&self) -> Option<(u64, String)> {
        None
    }
    fn variant<'a>(&'a self, _options: &[(&str, &str)]) -> anyhow::Result<Box<dyn Lab + 'a>> {
        refused("second instances")
    }
}

const METRICS: &[MetricSpec] = &[
    MetricSpec { name: "step_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "the call's number × 100, twice per repetition" },
    MetricSpec { name: "size_bytes", unit: Unit::Bytes, better: Better::Neither, description: "7, or NaN on the second recorded repetition" },
];

/// How the test workload behaves.
#[derive(Clone, Default)]
struct Script {
    drop_caches: bool,
    /// Setup answers Skip with this reason.
    skip: Option<&'static str>,
    setup_fails: bool,
    /// 1-based number of the repetition call that fails.
    fail_call: Option<u32>,
    finish_fails: bool,
}

/// A workload whose executor records every call and returns scripted samples.
struct TestWorkload {
    log: Log,
    script: Script,
}

impl Workload for TestWorkload {
    fn id(&self) -> &'static str {
        "looptest"
    }
    fn description(&self) -> &'static str {
        "the cell loop's test workload"
    }
    fn claims(&self) -> &'static [&'static str] {
        &[]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn check_params(&self, _p: &Params) -> Result<(), String> {
        Ok(())
    }
    fn cells(&self, _profile: Profile) -> Vec<Params> {
        vec![Params::new()]
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        0
    }
    fn repetitions(&self, _profile: Profile) -> u32 {
        1
    }
    fn drop_caches(&self) -> bool {
        self.script.drop_caches
    }
    fn setup<'a>(&self, _lab: &'a dyn Lab, _params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        push(&self.log, "setup");
        if let Some(r) = self.script.skip {
            return Err(SetupError::Skip(r.into()));
        }
        if self.script.setup_fails {
            return Err(SetupError::Fail(anyhow::anyhow!("no image for you")));
        }
        Ok(Box::new(TestExec { log: self.log.clone(), script: self.script.clone(), calls: 0 }))
    }
}

struct TestExec {
    log: Log,
    script: Script,
    calls: u32,
}

impl CellExec for TestExec {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        self.calls += 1;
        push(&self.log, format!("rep {rep}"));
        if self.script.fail_call == Some(self.calls) {
            anyhow::bail!("the probe fell over");
        }
        let n = self.calls as f64;
        let size = if self.calls == 4 { f64::NAN } else { 7.0 };
        Ok(vec![("step_ns", n * 100.0), ("step_ns", n * 100.0 + 1.0), ("size_bytes", size), ("undeclared_ns", 1.0)])
    }
    fn notes(&self) -> Notes {
        Notes::from([("calls".to_string(), self.calls.to_string())])
    }
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        push(&self.log, "finish");
        if self.script.finish_fails {
            anyhow::bail!("the layer is busy");
        }
        Ok(())
    }
}

/// Run one cell of the test workload (`warmup` + `reps`) on `lab`: the cell, the log, the
/// ticks the loop reported.
fn run(script: Script, warmup: u32, reps: u32, lab: impl FnOnce(&Log) -> FakeLab) -> (Cell, Vec<String>, u64) {
    let log: Log = Arc::default();
    let lab = lab(&log);
    let w: &'static TestWorkload = Box::leak(Box::new(TestWorkload { log: log.clone(), script }));
    let p = Planned { driver: "fake".into(), workload: w, params: Params::new(), warmup, repetitions: reps };
    let mut c = blank_cell(&p);
    let mut ticks = 0;
    execute(&lab, &p, &mut c, &mut |n| ticks += n);
    let log = log.lock().unwrap().clone();
    (c, log, ticks)
}

fn plain(log: &Log) -> FakeLab {
    FakeLab::new(log)
}

#[test]
fn warm_up_is_run_but_not_recorded() {
    let (c, log, ticks) = run(Script::default(), 2, 3, plain);
    assert_eq!(c.status, CellStatus::Ok, "{:?}", c.reason);
    // Warm-ups run as repetition 0; the recorded ones are 0, 1, 2.
    assert_eq!(log, ["setup", "rep 0", "rep 0", "rep 0", "rep 1", "rep 2", "finish"]);
    assert_eq!(ticks, 5);
    // Calls 3, 4, 5 are recorded, two samples each, with their repetition index.
    let m = &c.metrics["step_ns"];
    assert_eq!(m.samples, [300.0, 301.0, 400.0, 401.0, 500.0, 501.0]);
    assert_eq!(m.sample_rep, [0, 0, 1, 1, 2, 2]);
    assert_eq!(c.notes["calls"], "5");
}

#[test]
fn samples_of_undeclared_metrics_and_non_finite_values_are_dropped() {
    let (c, _, _) = run(Script::default(), 1, 3, plain);
    assert_eq!(c.metrics.keys().collect::<Vec<_>>(), ["size_bytes", "step_ns"], "only declared metrics");
    // Call 4 (recorded repetition 2) reported NaN.
    assert_eq!(c.metrics["size_bytes"].samples, [7.0, 7.0]);
    assert_eq!(c.metrics["size_bytes"].sample_rep, [0, 1]);
    assert_eq!(c.metrics["size_bytes"].unit, "bytes");
}

#[test]
fn caches_are_dropped_before_every_repetition_when_asked() {
    let (c, log, _) = run(Script { drop_caches: true, ..Default::default() }, 1, 2, plain);
    assert_eq!(log, ["setup", "drop", "rep 0", "drop", "rep 0", "drop", "rep 1", "finish"]);
    assert!(c.cache_drop.requested);
    assert_eq!((c.cache_drop.attempts, c.cache_drop.succeeded), (3, 3));
    assert!(c.caches_dropped);
}

#[test]
fn failed_cache_drops_are_counted_and_the_first_error_kept() {
    let lab = |log: &Log| FakeLab { failing_drops: vec![2, 3], ..FakeLab::new(log) };
    let (c, _, _) = run(Script { drop_caches: true, ..Default::default() }, 0, 4, lab);
    assert_eq!(c.status, CellStatus::Ok, "a failed drop does not fail the cell");
    assert_eq!((c.cache_drop.attempts, c.cache_drop.succeeded), (4, 2));
    assert_eq!(c.cache_drop.error.as_deref(), Some("drop 2 refused"));
    assert!(!c.caches_dropped);
}

#[test]
fn no_cache_drops_unless_asked() {
    let (c, log, _) = run(Script::default(), 1, 2, plain);
    assert!(!log.iter().any(|l| l == "drop"), "{log:?}");
    assert!(!c.cache_drop.requested);
    assert_eq!(c.cache_drop.attempts, 0);
    assert!(!c.caches_dropped);
}

#[test]
fn a_failing_repetition_fails_the_cell_naming_it_and_still_finishes() {
    // Call 3 = recorded repetition 2 of 3 (after one warm-up).
    let (c, log, _) = run(Script { fail_call: Some(3), ..Default::default() }, 1, 3, plain);
    assert_eq!(c.status, CellStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(reason.contains("repetition 2 of 3") && reason.contains("the probe fell over"), "{reason}");
    assert_eq!(log, ["setup", "rep 0", "rep 0", "rep 1", "finish"], "no repetition after the failure, finish still called");
    assert_eq!(c.metrics["step_ns"].sample_rep, [0, 0], "what was recorded before stays");
    assert_eq!(c.notes["calls"], "3");
}

#[test]
fn a_failing_warm_up_is_named_as_one() {
    let (c, log, _) = run(Script { fail_call: Some(2), ..Default::default() }, 2, 3, plain);
    let reason = c.reason.unwrap();
    assert!(reason.contains("warm-up repetition 2 of 2"), "{reason}");
    assert_eq!(log.last().map(String::as_str), Some("finish"));
    assert!(c.metrics["step_ns"].samples.is_empty());
}

#[test]
fn a_failing_finish_fails_an_otherwise_good_cell() {
    let (c, _, _) = run(Script { finish_fails: true, ..Default::default() }, 0, 2, plain);
    assert_eq!(c.status, CellStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(reason.contains("releasing the cell") && reason.contains("the layer is busy"), "{reason}");
    assert_eq!(c.metrics["step_ns"].samples.len(), 4, "the samples stay with the failed cell");
}

#[test]
fn a_skipped_setup_gives_a_skipped_cell_with_its_reason() {
    let (c, log, ticks) = run(Script { skip: Some("overlay has no discard option"), drop_caches: true, ..Default::default() }, 1, 3, plain);
    assert_eq!(c.status, CellStatus::Skipped);
    assert_eq!(c.reason.as_deref(), Some("overlay has no discard option"));
    assert_eq!(log, ["setup"], "no repetition, no cache drop");
    assert_eq!(ticks, 4, "the skipped repetitions count as done for the progress");
    assert!(c.metrics.values().all(|m| m.samples.is_empty()));
}

#[test]
fn a_failed_setup_fails_the_cell() {
    let (c, log, _) = run(Script { setup_fails: true, ..Default::default() }, 1, 3, plain);
    assert_eq!(c.status, CellStatus::Failed);
    assert_eq!(c.reason.as_deref(), Some("no image for you"));
    assert_eq!(log, ["setup"]);
}

#[test]
fn a_stop_request_interrupts_the_cell_and_releases_it() {
    // The loop checks before every repetition: the third check (before recorded repetition 2)
    // sees the request.
    let lab = |log: &Log| FakeLab { stop_from: Some(3), ..FakeLab::new(log) };
    let (c, log, _) = run(Script::default(), 1, 3, lab);
    assert_eq!(c.status, CellStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(reason.contains("interrupted") && reason.contains("repetition 2 of 3"), "{reason}");
    assert_eq!(log, ["setup", "rep 0", "rep 0", "finish"]);
}
