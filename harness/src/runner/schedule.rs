//! The order of a run's visits and how many repetitions each cell gets.
//!
//! **Order** (randomized multiple interleaved trials, Abedi & Brecht, ICPE 2017): the run
//! proceeds in rounds; in each, every cell still needing repetitions is visited once, in a
//! fresh random order over drivers and parameter points together, drawn from an RNG seeded
//! with the run's order seed. Drift of the machine (other load, thermal state, cache state)
//! then falls on all drivers alike instead of on whole drivers. A cell's minimum count
//! (the workload's `repetitions(profile)`, or `--repeat`) is split over two rounds when it is
//! at least 2, so no cell's samples all come from one moment.
//!
//! **Samples the claims need**: a cell a claim decides on (the plan's `claim_needs`, from
//! [`crate::claims::needs`]) has a minimum of as many repetitions as give each deciding metric
//! the samples a verdict needs (6 for a median's 95% interval) — known after its first visit
//! from the samples per repetition; that part of the minimum is not cut by the time budget.
//!
//! **Adaptive count**: after its minimum, a cell gets further rounds while the median's CI of
//! any of its metrics is wider than the target (relative half-width, ±5% by default), until the
//! target is met with a 95% interval (n ≥ 6 samples of that metric, see
//! [`stats::median_ci_ranks`]), the cap on repetitions is reached, or another visit would run
//! past the run's time budget. When the budget cannot pay for every cell still wanting more,
//! the cells whose noise per second of visit is largest go first (noisy and cheap).
//!
//! Written against [`Visitor`] only (no clock, lab or signal of its own), so the rules are
//! unit-tested with in-memory labs and a fake clock (harness/tests/cell_loop.rs).

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::cell::VisitSpec;
use super::matrix::Planned;
use crate::results::schema::{Cell, CellStatus, Order, Sampling, StopReason, Visit};
use crate::results::stats;

/// Whether visits after a cell's first run the workload's warm-up again. They do not: every
/// visit sets its cell up anew, but what a warm-up warms (the runtime binary, the lab's images,
/// the store's metadata) stays warm across visits within a run. Measured on overlay, btrfs and
/// vfs (copyup, metadata, seqio, layers, lookup; 51 cells × 6 repetitions over 3–6 visits):
/// the first repetition of a later visit (no warm-up) against the repetitions after the first
/// visit's warm-up, per cell and time metric, has a median ratio of 1.02 and is slower in 80
/// of 153 — no systematic cost, within the noise of a shared 2-core machine (per workload the
/// medians ranged 0.85–1.49, interquartile ranges far wider). A warm-up per visit would cost a
/// third more repetitions in a quick run.
pub const WARMUP_EVERY_VISIT: bool = false;

/// Policy of a run's order and repetition count.
#[derive(Debug, Clone)]
pub struct Policy {
    pub order: Order,
    pub seed: u64,
    /// Target relative half-width of the median's 95% CI (0.05 = ±5%).
    pub ci_target: f64,
    /// Cap on recorded repetitions per cell (None: 3× the minimum, at least 6).
    pub max_reps: Option<u32>,
    /// `--repeat`: exactly the plan's count, no extra repetitions.
    pub fixed: bool,
    /// No extra visit is started that would end after this much run time.
    pub time_budget: Option<Duration>,
}

impl Policy {
    /// The cap on recorded repetitions of a cell whose minimum is `min`.
    pub fn cap(&self, min: u32) -> u32 {
        if self.fixed || min < 2 {
            return min;
        }
        self.max_reps.unwrap_or((3 * min).max(6)).max(min)
    }
}

/// What the visitor did with a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The cell loop ran (the cell's status says how it went).
    Ran,
    /// Not run (its driver stopped responding): the cell gets no further visits.
    NotRun,
}

/// Runs visits for [`run_rounds`]: the runner's on real drivers, the tests' on in-memory labs.
pub trait Visitor {
    /// Visit `p` (`cell` None on its first visit) and return the cell with the visit added.
    fn visit(&mut self, p: &Planned, cell: Option<Cell>, v: VisitSpec) -> anyhow::Result<(Cell, Outcome)>;
    /// Run time so far.
    fn elapsed(&self) -> Duration;
    fn stop_requested(&self) -> bool;
    /// After every visit: every cell visited so far, in plan order; `done` repetitions run and
    /// `bound` the most the run can still come to (warm-ups included).
    fn visited(&mut self, cells: &[&Cell], done: u64, bound: u64) -> anyhow::Result<()>;
}

/// Where a cell stands.
struct Track {
    /// The minimum: the plan's count, raised after a visit to what the claims reading the
    /// cell need ([`reps_for_claims`]).
    min: u32,
    cap: u32,
    warmup: u32,
    /// Recorded repetitions completed (the next repetition index).
    done: u32,
    visits: u32,
    /// Run time spent in visits and the repetitions (warm-up included) they asked for.
    spent: Duration,
    spent_reps: u32,
    stopped: Option<StopReason>,
    /// Noise at the last decision: relative half-width over the target (∞ when not finite).
    noise: f64,
    /// Metric → samples the claims reading this cell need (the plan's `claim_needs`).
    claim_needs: std::collections::BTreeMap<String, usize>,
}

impl Track {
    fn active(&self) -> bool {
        self.stopped.is_none()
    }

    /// Recorded repetitions of the next visit.
    fn next_reps(&self, order: Order) -> u32 {
        if self.done < self.min {
            // The minimum in two rounds (interleaved), first the larger half.
            let first = if order == Order::Interleaved && self.min >= 2 { self.min.div_ceil(2) } else { self.min };
            if self.done == 0 { first } else { self.min - self.done }
        } else {
            // Extra visits the size of the minimum's halves.
            self.min.div_ceil(2).max(1).min(self.cap - self.done)
        }
    }

    fn next_warmup(&self) -> u32 {
        if self.visits == 0 || WARMUP_EVERY_VISIT { self.warmup } else { 0 }
    }

    /// Estimated run time of a visit of `reps` (plus warm-up): this cell's time per
    /// repetition so far, setup and finish spread over its repetitions.
    fn estimate(&self, reps: u32) -> Duration {
        if self.spent_reps == 0 {
            return Duration::ZERO;
        }
        self.spent.mul_f64((reps + self.next_warmup()) as f64 / self.spent_reps as f64)
    }

    /// Repetitions the cell can still run, warm-ups of future visits included (at most one
    /// visit per repetition left).
    fn bound_left(&self) -> u64 {
        if !self.active() {
            return 0;
        }
        let left = self.cap - self.done;
        let warm = if self.visits == 0 { self.warmup } else { 0 } + if WARMUP_EVERY_VISIT { self.warmup * left } else { 0 };
        (left + warm) as u64
    }
}

/// The largest relative half-width of the median's CI over `c`'s metrics with samples:
/// (half-width, metric, whether the interval covers 95%). A metric whose median is 0 has
/// half-width 0 when its interval is [0, 0], ∞ otherwise. None when no metric has samples.
pub fn worst_half_width(c: &Cell) -> Option<(f64, String, bool)> {
    let mut worst: Option<(f64, String, bool)> = None;
    for (name, m) in &c.metrics {
        let Some(s) = stats::summarize(&m.samples) else { continue };
        let half = (s.median - s.ci95_low).max(s.ci95_high - s.median);
        let rel = if s.median != 0.0 {
            half / s.median.abs()
        } else if half == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let covered = s.ci_coverage >= 0.95;
        // Worst first by coverage (an interval below 95% does not meet any target), then width.
        let worse = match &worst {
            None => true,
            Some((w, _, cov)) => (!covered && *cov) || (covered == *cov && rel > *w),
        };
        if worse {
            worst = Some((rel, name.clone(), covered));
        }
    }
    worst
}

/// Run the plan's cells in rounds under `pol`; the cells visited, in plan order (never-visited
/// cells — a run interrupted early — are None).
pub fn run_rounds(plan: &[Planned], pol: &Policy, v: &mut dyn Visitor) -> anyhow::Result<Vec<Option<Cell>>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(pol.seed);
    let mut cells: Vec<Option<Cell>> = vec![None; plan.len()];
    let mut track: Vec<Track> = plan
        .iter()
        .map(|p| Track {
            min: p.repetitions,
            cap: pol.cap(p.repetitions),
            warmup: p.warmup,
            done: 0,
            visits: 0,
            spent: Duration::ZERO,
            spent_reps: 0,
            stopped: None,
            noise: f64::INFINITY,
            claim_needs: p.claim_needs.clone(),
        })
        .collect();
    let mut done_reps = 0u64;
    let mut round = 0u32;
    'rounds: loop {
        let mut due: Vec<usize> = (0..plan.len()).filter(|&i| track[i].active()).collect();
        if due.is_empty() {
            break;
        }
        // Extra repetitions only while the budget pays for them; the noisiest per second first.
        let extra = |t: &Track| t.done >= t.min;
        if let Some(budget) = pol.time_budget {
            let mut candidates: Vec<usize> = due.iter().copied().filter(|&i| extra(&track[i])).collect();
            if !candidates.is_empty() {
                let score = |t: &Track| {
                    let secs = t.estimate(t.next_reps(pol.order)).as_secs_f64().max(1e-3);
                    // Beyond ten times the target every cell counts as equally noisy: cost decides.
                    t.noise.min(10.0) / secs
                };
                candidates.sort_by(|&a, &b| score(&track[b]).total_cmp(&score(&track[a])).then(a.cmp(&b)));
                let mut left = budget.saturating_sub(v.elapsed());
                let mut chosen = Vec::new();
                for i in candidates {
                    let est = track[i].estimate(track[i].next_reps(pol.order));
                    if est <= left {
                        left -= est;
                        chosen.push(i);
                    }
                }
                let all_extra = due.iter().all(|&i| extra(&track[i]));
                if chosen.is_empty() && all_extra {
                    for &i in &due {
                        track[i].stopped = Some(StopReason::TimeBudget);
                        finish_sampling(cells[i].as_mut(), &track[i]);
                    }
                    v.visited(&visited(&cells), done_reps, bound(&track, done_reps))?;
                    break;
                }
                due.retain(|i| !extra(&track[*i]) || chosen.contains(i));
            }
        }
        if pol.order == Order::Interleaved {
            due.shuffle(&mut rng);
        }
        for (position, &i) in due.iter().enumerate() {
            if v.stop_requested() {
                interrupt(&mut track, &mut cells);
                break 'rounds;
            }
            let t = &track[i];
            let spec = VisitSpec { warmup: t.next_warmup(), first_rep: t.done, reps: t.next_reps(pol.order) };
            if let Some(budget) = pol.time_budget {
                if extra(t) && v.elapsed() + t.estimate(spec.reps) > budget {
                    track[i].stopped = Some(StopReason::TimeBudget);
                    finish_sampling(cells[i].as_mut(), &track[i]);
                    continue;
                }
            }
            let t0 = v.elapsed();
            let started_unix = crate::results::now_unix();
            let (mut cell, outcome) = v.visit(&plan[i], cells[i].take(), spec)?;
            let dt = v.elapsed().saturating_sub(t0);
            let t = &mut track[i];
            t.visits += 1;
            t.done = cell.repetitions.max(t.done);
            t.spent += dt;
            t.spent_reps += spec.warmup + spec.reps;
            done_reps += (spec.warmup + spec.reps) as u64;
            let sampling = cell.sampling.get_or_insert_with(Sampling::default);
            if outcome == Outcome::Ran {
                sampling.visits.push(Visit {
                    round,
                    position: position as u32,
                    warmup: spec.warmup,
                    first_rep: spec.first_rep,
                    reps: spec.reps,
                    started_unix,
                    duration_s: dt.as_secs_f64(),
                });
            }
            decide(t, &mut cell, pol, outcome, v.stop_requested());
            cells[i] = Some(cell);
            v.visited(&visited(&cells), done_reps, bound(&track, done_reps))?;
        }
        round += 1;
    }
    if v.stop_requested() {
        interrupt(&mut track, &mut cells);
    }
    Ok(cells)
}

/// After a visit: whether the cell wants more, and why not.
fn decide(t: &mut Track, cell: &mut Cell, pol: &Policy, outcome: Outcome, stop: bool) {
    let hw = worst_half_width(cell);
    if let Some(s) = cell.sampling.as_mut() {
        s.ci_half_width = hw.as_ref().map(|h| h.0).filter(|h| h.is_finite());
        s.ci_half_width_metric = hw.as_ref().map(|h| h.1.clone());
        s.ci_half_width_95 = hw.as_ref().is_some_and(|h| h.2);
    }
    t.noise = hw.as_ref().map_or(0.0, |h| h.0 / pol.ci_target);
    // Samples a verdict needs are part of the minimum, not extras the time budget may cut.
    if !pol.fixed && outcome == Outcome::Ran && cell.status == CellStatus::Ok {
        if let Some(need) = reps_for_claims(t.done, &t.claim_needs, cell) {
            t.min = t.min.max(need);
            t.cap = t.cap.max(t.min);
        }
    }
    if let Some(s) = cell.sampling.as_mut() {
        s.min_repetitions = t.min;
        s.max_repetitions = t.cap;
    }
    let met = hw.as_ref().is_none_or(|h| h.2 && h.0 <= pol.ci_target);
    t.stopped = if stop {
        Some(StopReason::Interrupted)
    } else if outcome == Outcome::NotRun || cell.status == CellStatus::Failed {
        Some(StopReason::Failed)
    } else if cell.status == CellStatus::Skipped {
        Some(StopReason::Skipped)
    } else if t.done < t.min {
        None
    } else if pol.fixed || t.min < 2 {
        Some(StopReason::Fixed)
    } else if met {
        Some(StopReason::CiTargetMet)
    } else if t.done >= t.cap {
        Some(StopReason::MaxReps)
    } else {
        None
    };
    finish_sampling(Some(cell), t);
}

/// Recorded repetitions the cell needs in all so that every metric the claims decide on has
/// the samples they need, at the samples per repetition seen so far; None when it has them.
/// A metric without samples (one the driver does not record) asks for nothing.
pub fn reps_for_claims(done: u32, needs: &std::collections::BTreeMap<String, usize>, cell: &Cell) -> Option<u32> {
    if done == 0 {
        return None;
    }
    needs
        .iter()
        .filter_map(|(metric, &k)| {
            let n = cell.metrics.get(metric).map_or(0, |m| m.samples.len());
            if n == 0 || n >= k {
                return None;
            }
            let per_rep = n as f64 / done as f64;
            Some(done + ((k - n) as f64 / per_rep).ceil() as u32)
        })
        .max()
}

fn finish_sampling(cell: Option<&mut Cell>, t: &Track) {
    if let Some(s) = cell.and_then(|c| c.sampling.as_mut()) {
        s.stop_reason = t.stopped;
    }
}

fn interrupt(track: &mut [Track], cells: &mut [Option<Cell>]) {
    for (t, c) in track.iter_mut().zip(cells.iter_mut()) {
        if t.active() {
            t.stopped = Some(StopReason::Interrupted);
            finish_sampling(c.as_mut(), t);
        }
    }
}

fn visited(cells: &[Option<Cell>]) -> Vec<&Cell> {
    cells.iter().flatten().collect()
}

fn bound(track: &[Track], done: u64) -> u64 {
    done + track.iter().map(Track::bound_left).sum::<u64>()
}
