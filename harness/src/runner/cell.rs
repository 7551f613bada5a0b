//! The cell loop: one visit of a cell — set it up on a [`Lab`], run its warm-up and recorded
//! repetitions (caches dropped before each where the workload asks), route the recorded
//! samples into the cell's metrics, keep the notes and release the cell — also after a failure
//! or a stop request. A cell visited again (interleaved rounds, extra repetitions) accumulates:
//! its repetition index keeps counting and its samples, notes and cache drops add up.
//!
//! Written against the `Lab` and `Workload` traits only, with no threads, clocks or
//! snapshots (the runner adds those around it), so its rules are unit-tested on an in-memory
//! lab (harness/tests/cell_loop.rs).

use std::collections::BTreeMap;

use cowbench_workloads::lab::Lab;
use cowbench_workloads::SetupError;

use super::matrix::Planned;
use crate::results::schema::{CacheDrop, Cell, CellStatus, Metric};

/// A cell of `p` as it is before it runs: every declared metric present without samples,
/// status skipped until the loop has decided.
pub fn blank_cell(p: &Planned) -> Cell {
    Cell {
        key: p.key(),
        workload: p.workload.id().into(),
        driver: p.driver.clone(),
        implementation: None,
        stand_in: false,
        loop_backed: false,
        params: p.params.clone(),
        status: CellStatus::Skipped,
        reason: None,
        warmup: p.warmup,
        // Recorded repetitions completed: counted up by the visits.
        repetitions: 0,
        caches_dropped: false,
        cache_drop: CacheDrop { requested: p.workload.drop_caches(), ..Default::default() },
        metrics: BTreeMap::new(),
        notes: BTreeMap::new(),
        host_before: None,
        host_after: None,
        started_unix: 0,
        duration_s: 0.0,
        sampling: None,
    }
}

/// What one visit runs: `warmup` unrecorded repetitions, then recorded repetitions
/// `first_rep .. first_rep + reps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitSpec {
    pub warmup: u32,
    pub first_rep: u32,
    pub reps: u32,
}

impl VisitSpec {
    /// The whole cell of the plan in one visit (what [`execute`] runs).
    pub fn whole(p: &Planned) -> VisitSpec {
        VisitSpec { warmup: p.warmup, first_rep: 0, reps: p.repetitions }
    }
}

/// Run cell `p` on `lab` into `c` (a [`blank_cell`] or the runner's richer one) in one visit:
/// its warm-up and all its recorded repetitions.
pub fn execute(lab: &dyn Lab, p: &Planned, c: &mut Cell, tick: &mut dyn FnMut(u64)) {
    visit(lab, p, c, VisitSpec::whole(p), tick)
}

/// One visit of cell `p` on `lab`, added to `c`: status, reason, samples with their repetition
/// index, notes and cache drops. `c.repetitions` becomes the number of recorded repetitions
/// completed over all visits. `tick` is called once per repetition run, and with the
/// repetitions left when the cell is skipped.
pub fn visit(lab: &dyn Lab, p: &Planned, c: &mut Cell, v: VisitSpec, tick: &mut dyn FnMut(u64)) {
    for m in p.workload.metrics() {
        c.metrics.entry(m.name.into()).or_insert_with(|| Metric {
            unit: m.unit.into(),
            samples: Vec::new(),
            sample_rep: Vec::new(),
            summary: None,
        });
    }
    c.repetitions = v.first_rep;
    match run_reps(lab, p, c, v, tick) {
        Ok(()) => c.status = CellStatus::Ok,
        Err(SetupError::Skip(r)) => {
            c.status = CellStatus::Skipped;
            c.reason = Some(r);
            tick((v.warmup + v.reps) as u64);
        }
        Err(SetupError::Fail(e)) => {
            c.status = CellStatus::Failed;
            c.reason = Some(format!("{e:#}"));
        }
    }
    c.caches_dropped = c.cache_drop.requested && c.cache_drop.attempts > 0 && c.cache_drop.succeeded == c.cache_drop.attempts;
}

fn run_reps(lab: &dyn Lab, p: &Planned, c: &mut Cell, v: VisitSpec, tick: &mut dyn FnMut(u64)) -> Result<(), SetupError> {
    let mut ex = p.workload.setup(lab, &p.params)?;
    let mut outcome = Ok(());
    let last = v.first_rep + v.reps;
    for i in 0..v.warmup + v.reps {
        let warm = i < v.warmup;
        // Warm-ups run as the visit's first recorded repetition, unrecorded.
        let rep = v.first_rep + i.saturating_sub(v.warmup);
        let which = if warm {
            format!("warm-up repetition {} of {}", i + 1, v.warmup)
        } else if v.first_rep == 0 && v.reps == p.repetitions {
            format!("repetition {} of {}", rep + 1, p.repetitions)
        } else {
            format!("repetition {} (of {}..{} in this visit)", rep + 1, v.first_rep + 1, last)
        };
        if lab.stop_requested() {
            outcome = Err(anyhow::anyhow!("interrupted by signal before {which}"));
            break;
        }
        if p.workload.drop_caches() {
            c.cache_drop.attempts += 1;
            match lab.drop_caches() {
                Ok(()) => c.cache_drop.succeeded += 1,
                Err(e) => {
                    c.cache_drop.error.get_or_insert(e);
                }
            }
        }
        match ex.repetition(rep) {
            Ok(samples) if !warm => {
                route(c, rep, samples);
                c.repetitions = rep + 1;
            }
            Ok(_) => {}
            Err(e) => {
                outcome = Err(e.context(which));
                break;
            }
        }
        tick(1);
    }
    // A later visit's notes replace an earlier one's of the same name.
    c.notes.extend(ex.notes());
    let fin = ex.finish();
    outcome.map_err(SetupError::Fail)?;
    fin.map_err(|e| SetupError::Fail(e.context("releasing the cell")))
}

/// Recorded samples into their metrics; a metric the workload does not declare is a bug of
/// the workload, warned about and dropped (a non-finite value too: it has no place in a mean).
fn route(c: &mut Cell, rep: u32, samples: cowbench_workloads::RepSamples) {
    for (name, v) in samples {
        match c.metrics.get_mut(name) {
            Some(m) if v.is_finite() => {
                m.samples.push(v);
                m.sample_rep.push(rep);
            }
            Some(_) => log::warn!("{}: {name} = {v} dropped (not finite)", c.key),
            None => log::warn!("{}: executor reported unknown metric {name}", c.key),
        }
    }
}
