//! The runner's cell loop (runner::cell::execute) on an in-memory lab: warm-up repetitions are
//! not recorded, the recorded count is the plan's, caches are dropped before every repetition
//! when the workload asks (failures counted), samples land in their metrics with their
//! repetition index, a failing repetition fails the cell naming it and the cell is still
//! released, a skipped setup gives a skipped cell with its reason, a stop request interrupts.
//!
//! And the run's schedule (runner::schedule::run_rounds) over several in-memory labs with a
//! fake clock: interleaved order (not driver-major, the same for the same seed), every cell
//! its minimum split over two visits, samples of visits accumulating in one cell, extra
//! repetitions until the CI target or the cap, the time budget, a stop request.
//!
//! `FakeLab` records every call the loop makes into one log it shares with the test workload,
//! so the order of cache drops and repetitions is visible (after youki's recording syscall
//! fake and hyperfine's MockExecutor). No root, no driver is touched: the only driver is a vfs
//! handle on a temporary directory, which the loop never calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::BTreeMap;

use cowbench::results::schema::{Cell, CellStatus, Order, StopReason};
use cowbench::runner::cell::{blank_cell, execute, visit, VisitSpec};
use cowbench::runner::matrix::Planned;
use cowbench::runner::schedule::{run_rounds, Outcome, Policy, Visitor};
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
    /// Instead of the call-numbered samples: one `step_ns` of this value of the repetition
    /// index and one `size_bytes` of 7 per repetition.
    value: Option<fn(u32) -> f64>,
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
        if let Some(f) = self.script.value {
            return Ok(vec![("step_ns", f(rep)), ("size_bytes", 7.0)]);
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
    let p = Planned { driver: "fake".into(), workload: w, params: Params::new(), warmup, repetitions: reps, claim_needs: Default::default() };
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

// ---- the schedule ----

/// A workload of the schedule tests: the test workload with `warmup` 1, scripted values.
fn schedule_workload(log: &Log, value: fn(u32) -> f64) -> &'static TestWorkload {
    Box::leak(Box::new(TestWorkload { log: log.clone(), script: Script { value: Some(value), ..Default::default() } }))
}

/// Cells `i = 0..per_driver` of `w` on each driver, driver-major as the plan lists them; a
/// cell's `cost` parameter is its fake run time per repetition in seconds.
fn schedule_plan(w: &'static TestWorkload, drivers: &[&str], per_driver: u64, min: u32, cost: impl Fn(u64) -> u64) -> Vec<Planned> {
    let mut plan = Vec::new();
    for d in drivers {
        for i in 0..per_driver {
            let params = Params::from_iter([("i".to_string(), serde_json::json!(i)), ("cost".to_string(), serde_json::json!(cost(i)))]);
            plan.push(Planned { driver: d.to_string(), workload: w, params, warmup: 1, repetitions: min, claim_needs: Default::default() });
        }
    }
    plan
}

/// The runner's visitor on in-memory labs (one per driver, opened at its first visit) and a
/// fake clock: a visit takes `cost` seconds per repetition run (warm-up included).
struct FakeRun {
    log: Log,
    labs: BTreeMap<String, FakeLab>,
    clock: Duration,
    /// Stop requested once this many visits ran.
    stop_after: Option<usize>,
    /// (cell key, visit) in the order they ran.
    visits: Vec<(String, VisitSpec)>,
    writes: usize,
}

impl FakeRun {
    fn new(log: &Log) -> FakeRun {
        FakeRun { log: log.clone(), labs: BTreeMap::new(), clock: Duration::ZERO, stop_after: None, visits: Vec::new(), writes: 0 }
    }
}

impl Visitor for FakeRun {
    fn visit(&mut self, p: &Planned, cell: Option<Cell>, v: VisitSpec) -> anyhow::Result<(Cell, Outcome)> {
        let log = self.log.clone();
        let lab = self.labs.entry(p.driver.clone()).or_insert_with(|| FakeLab::new(&log));
        let mut c = cell.unwrap_or_else(|| blank_cell(p));
        visit(lab, p, &mut c, v, &mut |_| {});
        self.clock += Duration::from_secs(p.params["cost"].as_u64().unwrap() * u64::from(v.warmup + v.reps));
        self.visits.push((p.key(), v));
        Ok((c, Outcome::Ran))
    }
    fn elapsed(&self) -> Duration {
        self.clock
    }
    fn stop_requested(&self) -> bool {
        self.stop_after.is_some_and(|n| self.visits.len() >= n)
    }
    fn visited(&mut self, _cells: &[&Cell], done: u64, bound: u64) -> anyhow::Result<()> {
        assert!(done <= bound, "progress {done} of at most {bound}");
        self.writes += 1;
        Ok(())
    }
}

fn policy(order: Order, seed: u64) -> Policy {
    Policy { order, seed, ci_target: 0.05, max_reps: None, fixed: false, time_budget: None }
}

fn constant(_rep: u32) -> f64 {
    100.0
}

/// ±50% around 150, whatever the count: never within a 5% target.
fn noisy(rep: u32) -> f64 {
    100.0 + 50.0 * (rep % 3) as f64
}

fn keys(visits: &[(String, VisitSpec)]) -> Vec<&str> {
    visits.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn interleaved_order_is_not_driver_major_and_the_same_for_the_same_seed() {
    let log: Log = Arc::default();
    let w = schedule_workload(&log, constant);
    let plan = schedule_plan(w, &["a", "b", "c"], 4, 2, |_| 1);
    let run = |order, seed| {
        let mut r = FakeRun::new(&log);
        let pol = Policy { fixed: true, ..policy(order, seed) };
        let cells = run_rounds(&plan, &pol, &mut r).unwrap();
        assert!(cells.iter().all(|c| c.as_ref().unwrap().repetitions == 2));
        r.visits
    };
    let plan_order: Vec<String> = plan.iter().map(Planned::key).collect();
    let (one, again, other) = (run(Order::Interleaved, 1), run(Order::Interleaved, 1), run(Order::Interleaved, 2));
    assert_eq!(keys(&one), keys(&again), "the same seed gives the same order");
    assert_ne!(keys(&one), keys(&other), "another seed, another order");
    // Two rounds, each visiting every cell once, in two different orders, neither the plan's.
    assert_eq!(one.len(), 24);
    let (r0, r1) = (keys(&one[..12]), keys(&one[12..]));
    for round in [&r0, &r1] {
        let mut sorted = round.clone();
        sorted.sort();
        let mut expected: Vec<&str> = plan_order.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(sorted, expected, "every cell once per round");
        assert_ne!(*round, plan_order, "not driver-major");
    }
    assert_ne!(r0, r1, "a fresh order every round");
    // Drivers are mixed: the first round does not visit the drivers one after the other.
    let drivers: Vec<char> = r0.iter().map(|k| k.split('/').nth(1).unwrap().chars().next().unwrap()).collect();
    assert!(drivers.windows(2).filter(|p| p[0] != p[1]).count() > 2, "{drivers:?}");
    // driver-major: plan order, the minimum in one visit.
    let dm = run(Order::DriverMajor, 1);
    assert_eq!(keys(&dm), plan_order);
    assert!(dm.iter().all(|(_, v)| v.reps == 2 && v.first_rep == 0));
}

#[test]
fn every_cell_gets_its_minimum_over_two_visits_and_their_samples_in_one_cell() {
    let log: Log = Arc::default();
    let w = schedule_workload(&log, constant);
    let plan = schedule_plan(w, &["a", "b"], 3, 5, |_| 1);
    let mut r = FakeRun::new(&log);
    // A budget already spent: no extra repetitions, but the minimum always runs.
    let pol = Policy { time_budget: Some(Duration::ZERO), ..policy(Order::Interleaved, 7) };
    let cells = run_rounds(&plan, &pol, &mut r).unwrap();
    // After every visit, and once more when the budget stopped the cells.
    assert_eq!(r.writes, r.visits.len() + 1, "results written after every visit");
    for c in cells.iter().map(|c| c.as_ref().unwrap()) {
        assert_eq!(c.status, CellStatus::Ok, "{:?}", c.reason);
        assert_eq!(c.repetitions, 5, "{}", c.key);
        let s = c.sampling.as_ref().unwrap();
        assert_eq!((s.min_repetitions, s.max_repetitions), (5, 15));
        // 5 = 3 + 2 over two rounds, the warm-up on the first visit only.
        let v: Vec<(u32, u32, u32, u32)> = s.visits.iter().map(|v| (v.round, v.warmup, v.first_rep, v.reps)).collect();
        assert_eq!(v, [(0, 1, 0, 3), (1, 0, 3, 2)], "{}", c.key);
        assert_eq!(s.stop_reason, Some(StopReason::TimeBudget));
        // One sample per repetition, repetition indices counting on across the visits.
        assert_eq!(c.metrics["step_ns"].sample_rep, [0, 1, 2, 3, 4]);
        assert_eq!(c.metrics["size_bytes"].samples, [7.0; 5]);
    }
    // Each visit sets up and finishes on its own.
    let log = log.lock().unwrap();
    assert_eq!(log.iter().filter(|l| *l == "setup").count(), 12);
    assert_eq!(log.iter().filter(|l| *l == "finish").count(), 12);
    assert_eq!(log[..6], ["setup", "rep 0", "rep 0", "rep 1", "rep 2", "finish"]);
}

#[test]
fn a_constant_metric_meets_the_target_and_a_noisy_one_runs_to_the_cap() {
    let log: Log = Arc::default();
    let run = |value: fn(u32) -> f64| {
        let plan = schedule_plan(schedule_workload(&log, value), &["a", "b"], 2, 4, |_| 1);
        let mut r = FakeRun::new(&log);
        let cells = run_rounds(&plan, &policy(Order::Interleaved, 3), &mut r).unwrap();
        cells.into_iter().map(Option::unwrap).collect::<Vec<_>>()
    };
    for c in run(constant) {
        let s = c.sampling.as_ref().unwrap();
        // 4 repetitions give no 95% interval; the first extra visit (2 more) reaches n = 6.
        assert_eq!((c.repetitions, s.stop_reason), (6, Some(StopReason::CiTargetMet)), "{}", c.key);
        assert_eq!(s.ci_half_width, Some(0.0));
        assert!(s.ci_half_width_95);
        assert_eq!(s.visits.len(), 3);
    }
    for c in run(noisy) {
        let s = c.sampling.as_ref().unwrap();
        assert_eq!((c.repetitions, s.stop_reason), (12, Some(StopReason::MaxReps)), "{}", c.key);
        assert_eq!(s.max_repetitions, 12, "3× the minimum");
        assert_eq!(s.ci_half_width_metric.as_deref(), Some("step_ns"));
        assert!(s.ci_half_width.unwrap() > 0.05);
        let reps = &c.metrics["step_ns"].sample_rep;
        assert_eq!(*reps, (0..12).collect::<Vec<u32>>());
    }
}

#[test]
fn fixed_repeat_gets_exactly_its_count() {
    let log: Log = Arc::default();
    let plan = schedule_plan(schedule_workload(&log, noisy), &["a"], 2, 3, |_| 1);
    let mut r = FakeRun::new(&log);
    let cells = run_rounds(&plan, &Policy { fixed: true, ..policy(Order::Interleaved, 3) }, &mut r).unwrap();
    for c in cells.iter().map(|c| c.as_ref().unwrap()) {
        let s = c.sampling.as_ref().unwrap();
        assert_eq!((c.repetitions, s.stop_reason, s.max_repetitions), (3, Some(StopReason::Fixed), 3));
    }
}

#[test]
fn the_time_budget_stops_extra_repetitions_cheap_cells_first() {
    let log: Log = Arc::default();
    // Cell 0 costs 1 s per repetition, cell 1 10 s; both noisy, minimum 2 (cap 6).
    let plan = schedule_plan(schedule_workload(&log, noisy), &["a"], 2, 2, |i| if i == 0 { 1 } else { 10 });
    let mut r = FakeRun::new(&log);
    // The minimum takes 3 + 30 s; 10 s are left: one more visit of the dear cell, or every
    // extra visit of the cheap one — which goes first.
    let pol = Policy { time_budget: Some(Duration::from_secs(43)), ..policy(Order::Interleaved, 5) };
    let cells: Vec<Cell> = run_rounds(&plan, &pol, &mut r).unwrap().into_iter().map(Option::unwrap).collect();
    let (cheap, dear) = (&cells[0], &cells[1]);
    assert_eq!(cheap.repetitions, 6);
    assert_eq!(cheap.sampling.as_ref().unwrap().stop_reason, Some(StopReason::MaxReps));
    assert_eq!(dear.repetitions, 2);
    assert_eq!(dear.sampling.as_ref().unwrap().stop_reason, Some(StopReason::TimeBudget));
    assert!(r.clock <= Duration::from_secs(43), "{:?}", r.clock);
}

#[test]
fn a_stop_request_ends_the_run_with_the_cells_visited_so_far() {
    let log: Log = Arc::default();
    let plan = schedule_plan(schedule_workload(&log, constant), &["a", "b", "c"], 4, 2, |_| 1);
    let mut r = FakeRun::new(&log);
    r.stop_after = Some(5);
    let cells = run_rounds(&plan, &policy(Order::Interleaved, 1), &mut r).unwrap();
    assert_eq!(r.visits.len(), 5, "no visit after the request");
    let visited: Vec<&Cell> = cells.iter().flatten().collect();
    assert_eq!(visited.len(), 5);
    for c in visited {
        assert_eq!(c.repetitions, 1, "half its minimum");
        assert_eq!(c.sampling.as_ref().unwrap().stop_reason, Some(StopReason::Interrupted), "{}", c.key);
    }
}

#[test]
fn a_failed_visit_ends_the_cell() {
    let log: Log = Arc::default();
    // The executor fails its second call: the first visit's recorded repetition.
    let w: &'static TestWorkload = Box::leak(Box::new(TestWorkload {
        log: log.clone(),
        script: Script { value: Some(noisy), fail_call: Some(2), ..Default::default() },
    }));
    let plan = schedule_plan(w, &["a"], 1, 4, |_| 1);
    let mut r = FakeRun::new(&log);
    let cells = run_rounds(&plan, &policy(Order::Interleaved, 1), &mut r).unwrap();
    let c = cells[0].as_ref().unwrap();
    assert_eq!(c.status, CellStatus::Failed);
    assert_eq!(c.sampling.as_ref().unwrap().stop_reason, Some(StopReason::Failed));
    assert_eq!(r.visits.len(), 1, "no visit after a failure");
}

#[test]
fn a_cell_a_claim_reads_gets_the_samples_a_verdict_needs_whatever_the_budget() {
    let log: Log = Arc::default();
    // Minimum 1 repetition (no adaptivity of its own), no time left for extras; the claims
    // read step_ns of cell 0 (6 samples needed), no claim reads cell 1.
    let mut plan = schedule_plan(schedule_workload(&log, constant), &["a"], 2, 1, |_| 1);
    plan[0].claim_needs = BTreeMap::from([("step_ns".to_string(), 6)]);
    let mut r = FakeRun::new(&log);
    let pol = Policy { time_budget: Some(Duration::ZERO), ..policy(Order::Interleaved, 9) };
    let cells: Vec<Cell> = run_rounds(&plan, &pol, &mut r).unwrap().into_iter().map(Option::unwrap).collect();
    let (read, unread) = (&cells[0], &cells[1]);
    let per_rep = unread.metrics["step_ns"].samples.len();
    assert!(per_rep >= 1 && per_rep < 6, "the test needs a metric with fewer than 6 samples per repetition: {per_rep}");
    assert!(read.metrics["step_ns"].samples.len() >= 6, "{:?}", read.metrics["step_ns"].samples);
    assert_eq!(read.repetitions as usize, 6usize.div_ceil(per_rep), "no more repetitions than the samples need");
    assert_eq!(read.sampling.as_ref().unwrap().min_repetitions, read.repetitions, "recorded as part of the minimum");
    assert_eq!(unread.repetitions, 1);
    assert_eq!(unread.sampling.as_ref().unwrap().stop_reason, Some(StopReason::Fixed));
    // --repeat stays exact.
    let mut r = FakeRun::new(&log);
    let fixed = run_rounds(&plan, &Policy { fixed: true, ..pol }, &mut r).unwrap();
    assert_eq!(fixed[0].as_ref().unwrap().repetitions, 1);
}
