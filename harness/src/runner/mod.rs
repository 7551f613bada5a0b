//! The runner: driver × workload × parameters, with warm-up, at least the workload's number of
//! recorded repetitions for every driver, caches dropped where the workload asks, results
//! written after every visit, and cleanup on success, error and SIGINT/SIGTERM.
//!
//! Order ([`schedule`]): interleaved rounds in a seeded random order, each cell visited once
//! per round (setup, warm-up on its first visit, a few recorded repetitions, finish) until its
//! median CIs are narrow enough or a cap on repetitions or run time is reached; `--order
//! driver-major` keeps plan order (for debugging). Every driver stays open from its first visit
//! to the end of the run, so images built for a driver are reused across its visits; all
//! backends' stores exist at once.

pub mod cell;
pub mod matrix;
pub mod progress;
pub mod schedule;
pub mod signals;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cowbench_drivers::{registry, DriverConfig, ProbeReport};
use cowbench_workloads::Profile;

use crate::results::schema::{Cell, CellStatus, Counts, Order, RunParameters, RunStatus, Schedule, Snapshot, StopReason};
use crate::results::{stats, RunDoc, ResultsWriter, SCHEMA_VERSION};
use crate::lab::HostLab;
use matrix::Planned;

/// What `cowbench run` was asked.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// None: every driver cowbench knows (unavailable ones are recorded as skipped).
    pub drivers: Option<Vec<String>>,
    /// None: every workload.
    pub workloads: Option<Vec<String>>,
    pub profile: Profile,
    pub runtime: String,
    pub out: PathBuf,
    pub repeat: Option<u32>,
    /// `--set WORKLOAD.PARAM=VALUES` (checked by the plan).
    pub sets: Vec<cowbench_workloads::ParamSet>,
    pub seed: u64,
    pub root: PathBuf,
    pub driver_options: BTreeMap<String, String>,
    pub command_line: Vec<String>,
    /// A visit still running after this long is recorded as failed and its driver is given up
    /// (a hung FUSE daemon or device cannot be interrupted from inside the process).
    pub cell_timeout: Duration,
    pub order: Order,
    /// Target relative half-width of a cell's median CIs (0.05 = ±5%).
    pub ci_target: f64,
    /// `--max-reps` (None: 3× each cell's minimum, at least 6).
    pub max_reps: Option<u32>,
    /// No extra repetitions past this much run time (None: no budget).
    pub time_budget: Option<Duration>,
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub doc: RunDoc,
}

use crate::results::now_unix;

fn snapshot(lab: &HostLab) -> Snapshot {
    Snapshot { unix: now_unix(), meminfo_bytes: crate::results::schema::meminfo(), backend_status: lab.status_snapshot() }
}

/// Run the matrix. Errors only for what prevents a run at all (bad selection, unwritable
/// output); a failing cell is recorded and the run goes on.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunOutcome> {
    let plan = matrix::plan(cfg.drivers.as_deref(), cfg.workloads.as_deref(), cfg.profile, cfg.repeat, &cfg.sets)?;
    signals::install();
    std::fs::create_dir_all(&cfg.root).with_context(|| format!("create root {}", cfg.root.display()))?;

    // The containers' cgroups are created by the runtime; the parent is recorded first so that
    // `cowbench clean` finds it even if everything else about the run is lost.
    let ledger = cowbench_drivers::ledger::Ledger::open(&cfg.root);
    ledger
        .record(cowbench_drivers::ledger::ResourceKind::Cgroup, &crate::clean::cgroup_parent(&cfg.root), "container cgroups of this root")
        .with_context(|| format!("write ledger {}", ledger.path().display()))?;

    let run_id = crate::results::new_run_id();
    let writer = ResultsWriter::create(&cfg.out, &run_id)?;
    let host = crate::host::probe(&cfg.root, &cfg.runtime, &cfg.driver_options);
    let started = Instant::now();
    let mut doc = RunDoc {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.clone(),
        status: RunStatus::Running,
        started_unix: now_unix(),
        finished_unix: None,
        duration_s: None,
        host,
        parameters: RunParameters {
            drivers: plan.drivers.clone(),
            workloads: plan.workloads.clone(),
            profile: cfg.profile.as_str().into(),
            repeat: cfg.repeat,
            seed: cfg.seed,
            runtime: cfg.runtime.clone(),
            root: cfg.root.display().to_string(),
            driver_options: cfg.driver_options.clone(),
            command_line: cfg.command_line.clone(),
            sets: cfg.sets.clone(),
            schedule: Some(Schedule {
                order: cfg.order,
                order_seed: cfg.seed,
                ci_target: if cfg.repeat.is_some() { None } else { Some(cfg.ci_target) },
                max_reps: cfg.max_reps,
                time_budget_s: cfg.time_budget.map(|d| d.as_secs_f64()),
                warmup_every_visit: schedule::WARMUP_EVERY_VISIT,
            }),
        },
        counts: Counts::default(),
        ci_method: stats::CI_METHOD.into(),
        cells: Vec::new(),
    };
    writer.write(&doc)?;
    eprintln!(
        "cowbench: run {run_id}: {} cells, {} order (seed {}), results in {}",
        plan.cells.len(),
        cfg.order.as_str(),
        cfg.seed,
        writer.dir().display()
    );

    let progress = progress::Progress::new(plan.total_reps());
    let policy = schedule::Policy {
        order: cfg.order,
        seed: cfg.seed,
        ci_target: cfg.ci_target,
        max_reps: cfg.max_reps,
        fixed: cfg.repeat.is_some(),
        time_budget: cfg.time_budget,
    };
    let mut visits = HostVisits { cfg, started, drivers: BTreeMap::new(), progress: progress.clone(), writer: &writer, doc: &mut doc, visit: 0 };
    let rounds = schedule::run_rounds(&plan.cells, &policy, &mut visits);
    // Every driver opened is closed, also when writing the results failed.
    let hung = visits.close_all();
    progress.finish();
    let cells = rounds?;
    doc.cells = cells.into_iter().flatten().collect();

    // A run owns its root: whatever a failed cell or an interrupted executor left is released —
    // unless a backend hung, where touching its mounts could hang the run too.
    if hung.is_empty() {
        let report = crate::clean::clean(&cfg.root, &crate::clean::CleanOptions { quiet: true, ..Default::default() });
        if !report.errors.is_empty() {
            eprintln!("cowbench: cleanup after the run left errors: {}", report.errors.join("; "));
        }
    } else {
        eprintln!(
            "cowbench: {} stopped responding; run `cowbench clean --root {}` once it responds again",
            hung.join(", "),
            cfg.root.display()
        );
    }

    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &doc.cells {
        *reasons.entry(c.sampling.as_ref().and_then(|s| s.stop_reason).map_or("none", StopReason::as_str)).or_default() += 1;
    }
    let extra = doc.cells.iter().filter(|c| c.sampling.as_ref().is_some_and(|s| c.repetitions > s.min_repetitions)).count();
    eprintln!(
        "cowbench: stop reasons: {}; {extra} cells got repetitions beyond their minimum",
        reasons.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
    );

    doc.status = if signals::stop_requested() { RunStatus::Interrupted } else { RunStatus::Complete };
    doc.finished_unix = Some(now_unix());
    doc.duration_s = Some(started.elapsed().as_secs_f64());
    doc.recount();
    writer.write(&doc)?;
    Ok(RunOutcome { dir: writer.dir().to_path_buf(), doc })
}

fn base_cell(p: &Planned, probe: &cowbench_drivers::ProbeReport) -> Cell {
    let mut c = cell::blank_cell(p);
    c.implementation = probe.implementation.as_ref().map(|i| match &probe.version {
        Some(v) => format!("{i} {v}"),
        None => i.clone(),
    });
    c.stand_in = probe.stand_in;
    c.started_unix = now_unix();
    c
}

/// A driver of the run: opened at its first visit, closed at the end of the run.
enum DriverSlot {
    Open {
        probe: ProbeReport,
        lab: Arc<HostLab>,
        /// Why its remaining visits are not run (it stopped responding).
        given_up: Option<String>,
    },
    /// Unavailable on this host (its cells are skipped) or failed to open (they fail).
    Closed { probe: ProbeReport, reason: String },
}

/// The runner's [`schedule::Visitor`]: visits on real drivers, each on its own thread under
/// the visit timeout, results written after every visit.
struct HostVisits<'a> {
    cfg: &'a RunConfig,
    started: Instant,
    drivers: BTreeMap<String, DriverSlot>,
    progress: progress::Progress,
    writer: &'a ResultsWriter,
    doc: &'a mut RunDoc,
    /// Visits run so far (for the progress message).
    visit: usize,
}

impl HostVisits<'_> {
    fn slot(&mut self, driver: &str) -> anyhow::Result<&mut DriverSlot> {
        if !self.drivers.contains_key(driver) {
            let probe = registry::probe(driver)?;
            let slot = if !probe.available {
                let reason = format!("driver unavailable: {}", probe.reason.clone().unwrap_or_default());
                DriverSlot::Closed { probe, reason }
            } else {
                let cfg = self.cfg;
                let driver_cfg = cfg.driver_options.iter().fold(DriverConfig::new(&cfg.root), |c, (k, v)| c.with_option(k, v));
                self.progress.line(&format!("opening {driver}"));
                match HostLab::open(driver, &driver_cfg, &cfg.runtime, cfg.seed) {
                    Ok(lab) => DriverSlot::Open { probe, lab: Arc::new(lab), given_up: None },
                    Err(e) => DriverSlot::Closed { probe, reason: format!("opening the driver failed: {e:#}") },
                }
            };
            self.drivers.insert(driver.to_string(), slot);
        }
        Ok(self.drivers.get_mut(driver).expect("inserted above"))
    }

    /// Tear every opened driver down; the names of those that hung (not torn down).
    fn close_all(&mut self) -> Vec<String> {
        let mut hung = Vec::new();
        for (driver, slot) in std::mem::take(&mut self.drivers) {
            let DriverSlot::Open { lab, .. } = slot else { continue };
            // A visit given up may still finish on its own (slow rather than hung): wait a little.
            let deadline = Instant::now() + Duration::from_secs(15);
            while Arc::strong_count(&lab) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            match Arc::try_unwrap(lab) {
                Ok(lab) => {
                    if let Err(e) = lab.close() {
                        self.progress.line(&format!("warning: teardown of {driver} failed: {e:#}"));
                    }
                }
                Err(s) => {
                    self.progress.line(&format!("warning: {driver} hung; not torn down"));
                    hung.push(driver);
                    // Never dropped: dropping would touch the hung backend from this thread.
                    std::mem::forget(s);
                }
            }
        }
        hung
    }
}

impl schedule::Visitor for HostVisits<'_> {
    fn visit(&mut self, p: &Planned, cell: Option<Cell>, v: cell::VisitSpec) -> anyhow::Result<(Cell, schedule::Outcome)> {
        self.visit += 1;
        let timeout = self.cfg.cell_timeout;
        let progress = self.progress.clone();
        let reps = if v.reps == 1 { format!("rep {}", v.first_rep + 1) } else { format!("reps {}-{}", v.first_rep + 1, v.first_rep + v.reps) };
        progress.cell(self.visit, &p.driver, &format!("{} ({reps})", p.key()));
        let slot = self.slot(&p.driver)?;
        let (cell, outcome) = match slot {
            DriverSlot::Closed { probe, reason } => {
                let mut c = cell.unwrap_or_else(|| base_cell(p, probe));
                c.status = if probe.available { CellStatus::Failed } else { CellStatus::Skipped };
                c.reason = Some(reason.clone());
                (c, schedule::Outcome::Ran)
            }
            DriverSlot::Open { probe, given_up: Some(why), .. } => {
                let mut c = cell.unwrap_or_else(|| base_cell(p, probe));
                // Repetitions recorded up to the cell's minimum stand; short of it the cell fails.
                if c.repetitions < p.repetitions {
                    c.status = CellStatus::Failed;
                    c.reason = Some(format!("not run: {why}"));
                } else {
                    c.reason = Some(format!("further repetitions not run: {why}"));
                }
                (c, schedule::Outcome::NotRun)
            }
            DriverSlot::Open { lab, given_up, .. } => match visit_watched(p, cell, v, lab, &progress, timeout) {
                Ok(c) => (c, schedule::Outcome::Ran),
                Err(c) => {
                    *given_up = Some(format!("{} stopped responding in {}", p.driver, p.key()));
                    (c, schedule::Outcome::Ran)
                }
            },
        };
        let line = match cell.status {
            CellStatus::Ok => format!("ok      {} ({reps})", cell.key),
            CellStatus::Failed => format!("FAILED  {}: {}", cell.key, cell.reason.as_deref().unwrap_or("")),
            CellStatus::Skipped => format!("skipped {}: {}", cell.key, cell.reason.as_deref().unwrap_or("")),
        };
        progress.line(&line);
        Ok((cell, outcome))
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn stop_requested(&self) -> bool {
        signals::stop_requested()
    }

    fn visited(&mut self, cells: &[&Cell], done: u64, bound: u64) -> anyhow::Result<()> {
        self.progress.set(done, bound);
        self.doc.cells = cells.iter().map(|c| (*c).clone()).collect();
        self.doc.recount();
        self.writer.write(self.doc)
    }
}

/// Run a visit on its own thread; Err(failed cell) when it did not finish within `timeout`
/// (the samples of earlier visits stay with the cell, this visit's are lost).
fn visit_watched(
    p: &Planned,
    cell: Option<Cell>,
    v: cell::VisitSpec,
    lab: &Arc<HostLab>,
    progress: &progress::Progress,
    timeout: Duration,
) -> Result<Cell, Cell> {
    let before = cell.clone().unwrap_or_else(|| base_cell(p, lab.probe_report()));
    let (tx, rx) = std::sync::mpsc::channel();
    let (pl, l, pr) = (p.clone(), Arc::clone(lab), progress.clone());
    let spawned = std::thread::Builder::new().name(format!("cell {}", p.key())).spawn(move || {
        let _ = tx.send(run_visit(&l, &pl, cell, v, &mut |n| pr.tick(n)));
    });
    if let Err(e) = spawned {
        let mut c = before;
        c.status = CellStatus::Failed;
        c.reason = Some(format!("cannot start the cell's thread: {e}"));
        return Ok(c);
    }
    match rx.recv_timeout(timeout) {
        Ok(cell) => Ok(cell),
        Err(_) => {
            let mut c = before;
            c.status = CellStatus::Failed;
            c.reason = Some(format!(
                "no answer after {} s: the backend stopped responding (the cell's thread is left behind; \
                 the driver's remaining visits are not run)",
                timeout.as_secs()
            ));
            c.duration_s += timeout.as_secs_f64();
            Err(c)
        }
    }
}

/// Run one cell on `lab` as a run does, in the calling thread, in a single visit (its warm-up
/// and all its recorded repetitions): see [`run_visit`]. Tests and benches call this, so they
/// measure what the runner measures.
pub fn run_cell(lab: &HostLab, p: &Planned, tick: &mut dyn FnMut(u64)) -> Cell {
    run_visit(lab, p, None, cell::VisitSpec::whole(p), tick)
}

/// One visit of a cell on `lab` (`cell` None on its first): the cell loop
/// ([`cell::visit`]) between host snapshots (`host_before` from the first visit, `host_after`
/// from the last), with the driver's implementation and flags and the samples' summaries.
/// `tick` is told of every repetition run.
pub fn run_visit(lab: &HostLab, p: &Planned, cell: Option<Cell>, v: cell::VisitSpec, tick: &mut dyn FnMut(u64)) -> Cell {
    let t0 = Instant::now();
    let mut c = cell.unwrap_or_else(|| base_cell(p, lab.probe_report()));
    let driver = cowbench_workloads::lab::Lab::driver(lab);
    c.implementation = Some(driver.implementation().to_string());
    let caps = driver.capabilities();
    c.stand_in = caps.stand_in || lab.probe_report().stand_in;
    c.loop_backed = caps.loop_backed;
    if c.host_before.is_none() {
        c.host_before = Some(snapshot(lab));
    }
    cell::visit(lab, p, &mut c, v, tick);
    c.host_after = Some(snapshot(lab));
    c.summarize();
    c.duration_s += t0.elapsed().as_secs_f64();
    c
}
