//! The runner: driver × workload × parameters, with warm-up, the same number of recorded
//! repetitions for every driver, caches dropped where the workload asks, results written after
//! every cell, and cleanup on success, error and SIGINT/SIGTERM.
//!
//! Order: driver-major (a driver is opened once, every workload runs on it, then it is torn
//! down), so images built for a driver are reused across its cells and at most one backend's
//! store exists at a time.

mod copyup;
mod density;
mod sharedcache;
mod churn;
mod fragmentation;
mod concurrent;
mod lookup;
mod metadata;
mod seqio;
mod baremetal;
mod layers;
mod imgs;
pub mod inside;
pub mod exec;
pub mod matrix;
pub mod progress;
pub mod signals;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cowbench_drivers::{registry, DriverConfig};
use cowbench_workloads::Profile;

use crate::results::schema::{CacheDrop, Cell, CellStatus, Counts, Metric, RunParameters, RunStatus, Snapshot};
use crate::results::{stats, RunDoc, ResultsWriter, SCHEMA_VERSION};
use exec::{Session, SetupError};
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
    pub seed: u64,
    pub root: PathBuf,
    pub driver_options: BTreeMap<String, String>,
    pub command_line: Vec<String>,
    /// A cell still running after this long is recorded as failed and its driver is given up
    /// (a hung FUSE daemon or device cannot be interrupted from inside the process).
    pub cell_timeout: Duration,
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub doc: RunDoc,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> Result<(), String> {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("write /proc/sys/vm/drop_caches: {e}"))
}

fn snapshot(session: Option<&Session>) -> Snapshot {
    Snapshot {
        unix: now_unix(),
        meminfo_bytes: crate::results::schema::meminfo(),
        backend_status: session.and_then(|s| s.driver.status().ok()).map(crate::results::BackendStatus::Typed),
    }
}

/// Run the matrix. Errors only for what prevents a run at all (bad selection, unwritable
/// output); a failing cell is recorded and the run goes on.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunOutcome> {
    let plan = matrix::plan(cfg.drivers.as_deref(), cfg.workloads.as_deref(), cfg.profile, cfg.repeat)?;
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
        },
        counts: Counts::default(),
        ci_method: stats::CI_METHOD.into(),
        cells: Vec::new(),
    };
    writer.write(&doc)?;
    eprintln!("cowbench: run {run_id}: {} cells, results in {}", plan.cells.len(), writer.dir().display());

    let progress = progress::Progress::new(plan.total_reps());
    let total = plan.cells.len();
    let mut index = 0usize;
    let mut hung: Vec<String> = Vec::new();
    for driver in &plan.drivers {
        let cells: Vec<&Planned> = plan.cells.iter().filter(|c| &c.driver == driver).collect();
        if cells.is_empty() {
            continue;
        }
        if signals::stop_requested() {
            break;
        }
        let probe = registry::probe(driver)?;
        let driver_cfg = cfg.driver_options.iter().fold(DriverConfig::new(&cfg.root), |c, (k, v)| c.with_option(k, v));
        let opened: Result<Arc<Session>, String> = if !probe.available {
            Err(format!("driver unavailable: {}", probe.reason.clone().unwrap_or_default()))
        } else {
            Session::open(driver, &driver_cfg, &cfg.runtime, cfg.seed).map(Arc::new).map_err(|e| format!("{e:#}"))
        };
        let mut given_up: Option<String> = None;
        for planned in cells {
            if signals::stop_requested() {
                break;
            }
            progress.cell(index, total, driver, &planned.key());
            let cell = match (&opened, &given_up) {
                (Err(reason), _) if !probe.available => skipped(planned, &probe, reason),
                (Err(reason), _) => failed_open(planned, &probe, reason),
                (Ok(_), Some(why)) => not_run(planned, &probe, why),
                (Ok(session), None) => match run_cell_watched(planned, session, &progress, cfg.cell_timeout) {
                    Ok(cell) => cell,
                    Err(timeout_cell) => {
                        given_up = Some(format!("{driver} stopped responding in {}", planned.key()));
                        hung.push(driver.clone());
                        timeout_cell
                    }
                },
            };
            let line = match cell.status {
                CellStatus::Ok => format!("ok      {}", cell.key),
                CellStatus::Failed => format!("FAILED  {}: {}", cell.key, cell.reason.as_deref().unwrap_or("")),
                CellStatus::Skipped => format!("skipped {}: {}", cell.key, cell.reason.as_deref().unwrap_or("")),
            };
            if cell.status != CellStatus::Ok {
                progress.tick(planned.reps_total() as u64);
            }
            progress.line(&line);
            doc.cells.push(cell);
            doc.recount();
            writer.write(&doc)?;
            index += 1;
        }
        if let Ok(session) = opened {
            // A cell given up may still finish on its own (slow rather than hung): wait a little.
            let deadline = Instant::now() + Duration::from_secs(15);
            while Arc::strong_count(&session) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            match Arc::try_unwrap(session) {
                Ok(session) => {
                    hung.retain(|d| d != driver);
                    if let Err(e) = session.close() {
                        progress.line(&format!("warning: teardown of {driver} failed: {e:#}"));
                    }
                }
                Err(s) => {
                    progress.line(&format!("warning: {driver} hung; not torn down"));
                    // Never dropped: dropping would touch the hung backend from this thread.
                    std::mem::forget(s);
                }
            }
        }
    }
    progress.finish();

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

    doc.status = if signals::stop_requested() { RunStatus::Interrupted } else { RunStatus::Complete };
    doc.finished_unix = Some(now_unix());
    doc.duration_s = Some(started.elapsed().as_secs_f64());
    doc.recount();
    writer.write(&doc)?;
    Ok(RunOutcome { dir: writer.dir().to_path_buf(), doc })
}

fn base_cell(p: &Planned, probe: &cowbench_drivers::ProbeReport) -> Cell {
    Cell {
        key: p.key(),
        workload: p.workload.id().into(),
        driver: p.driver.clone(),
        implementation: probe.implementation.as_ref().map(|i| match &probe.version {
            Some(v) => format!("{i} {v}"),
            None => i.clone(),
        }),
        stand_in: probe.stand_in,
        loop_backed: false,
        params: p.params.clone(),
        status: CellStatus::Skipped,
        reason: None,
        warmup: p.warmup,
        repetitions: p.repetitions,
        caches_dropped: false,
        cache_drop: CacheDrop { requested: p.workload.drop_caches(), ..Default::default() },
        metrics: BTreeMap::new(),
        notes: BTreeMap::new(),
        host_before: None,
        host_after: None,
        started_unix: now_unix(),
        duration_s: 0.0,
    }
}

fn skipped(p: &Planned, probe: &cowbench_drivers::ProbeReport, reason: &str) -> Cell {
    let mut c = base_cell(p, probe);
    c.status = CellStatus::Skipped;
    c.reason = Some(reason.into());
    c
}

fn not_run(p: &Planned, probe: &cowbench_drivers::ProbeReport, why: &str) -> Cell {
    let mut c = base_cell(p, probe);
    c.status = CellStatus::Failed;
    c.reason = Some(format!("not run: {why}"));
    c
}

fn failed_open(p: &Planned, probe: &cowbench_drivers::ProbeReport, reason: &str) -> Cell {
    let mut c = base_cell(p, probe);
    c.status = CellStatus::Failed;
    c.reason = Some(format!("opening the driver failed: {reason}"));
    c
}

/// Run a cell on its own thread; Err(failed cell) when it did not finish within `timeout`.
fn run_cell_watched(p: &Planned, session: &Arc<Session>, progress: &progress::Progress, timeout: Duration) -> Result<Cell, Cell> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (pl, s, pr) = (p.clone(), Arc::clone(session), progress.clone());
    let spawned = std::thread::Builder::new().name(format!("cell {}", p.key())).spawn(move || {
        let _ = tx.send(run_cell(&pl, &s, &pr));
    });
    if let Err(e) = spawned {
        let mut c = base_cell(p, &session.probe);
        c.status = CellStatus::Failed;
        c.reason = Some(format!("cannot start the cell's thread: {e}"));
        return Ok(c);
    }
    match rx.recv_timeout(timeout) {
        Ok(cell) => Ok(cell),
        Err(_) => {
            let mut c = base_cell(p, &session.probe);
            c.status = CellStatus::Failed;
            c.reason = Some(format!(
                "no answer after {} s: the backend stopped responding (the cell's thread is left behind; \
                 the driver's remaining cells are not run)",
                timeout.as_secs()
            ));
            c.duration_s = timeout.as_secs_f64();
            Err(c)
        }
    }
}

fn run_cell(p: &Planned, session: &Session, progress: &progress::Progress) -> Cell {
    let t0 = Instant::now();
    let mut c = base_cell(p, &session.probe);
    c.implementation = Some(session.driver.implementation().to_string());
    let caps = session.driver.capabilities();
    c.stand_in = caps.stand_in || session.probe.stand_in;
    c.loop_backed = caps.loop_backed;
    for m in p.workload.metrics() {
        c.metrics.insert(
            m.name.into(),
            Metric { unit: m.unit.into(), samples: Vec::new(), sample_rep: Vec::new(), summary: None },
        );
    }
    c.host_before = Some(snapshot(Some(session)));
    let result = (|| -> Result<(), SetupError> {
        let mut ex = exec::setup(p.workload.id(), session, &p.params)?;
        let mut outcome = Ok(());
        for i in 0..p.warmup + p.repetitions {
            if signals::stop_requested() {
                outcome = Err(SetupError::Fail(anyhow::anyhow!("interrupted by signal")));
                break;
            }
            if p.workload.drop_caches() {
                c.cache_drop.attempts += 1;
                match drop_caches() {
                    Ok(()) => c.cache_drop.succeeded += 1,
                    Err(e) => {
                        c.cache_drop.error.get_or_insert(e);
                    }
                }
            }
            let warm = i < p.warmup;
            let rep = i.saturating_sub(p.warmup);
            match ex.repetition(rep) {
                Ok(samples) => {
                    if !warm {
                        for (name, v) in samples {
                            match c.metrics.get_mut(name) {
                                Some(m) if v.is_finite() => {
                                    m.samples.push(v);
                                    m.sample_rep.push(rep);
                                }
                                Some(_) => {}
                                None => log::warn!("{}: executor reported unknown metric {name}", p.key()),
                            }
                        }
                    }
                }
                Err(e) => {
                    outcome = Err(SetupError::Fail(e.context(format!("repetition {i} ({})", if warm { "warm-up" } else { "recorded" }))));
                    break;
                }
            }
            progress.tick(1);
        }
        c.notes = ex.notes();
        let fin = ex.finish();
        outcome?;
        fin.map_err(SetupError::Fail)
    })();
    match result {
        Ok(()) => c.status = CellStatus::Ok,
        Err(SetupError::Skip(r)) => {
            c.status = CellStatus::Skipped;
            c.reason = Some(r);
            progress.tick(p.reps_total() as u64);
        }
        Err(SetupError::Fail(e)) => {
            c.status = CellStatus::Failed;
            c.reason = Some(format!("{e:#}"));
        }
    }
    c.caches_dropped = c.cache_drop.requested && c.cache_drop.attempts > 0 && c.cache_drop.succeeded == c.cache_drop.attempts;
    c.host_after = Some(snapshot(Some(session)));
    c.summarize();
    c.duration_s = t0.elapsed().as_secs_f64();
    c
}
