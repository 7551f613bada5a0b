//! Run against baseline, cell by cell and metric by metric, from raw samples.
//!
//! ratio = median(run)/median(baseline) with the conservative interval from the two medians'
//! 95% CIs. "no change" when the CIs overlap or the change is under 5%; otherwise faster/slower
//! (time metrics) or better/worse. A regression is a cell that got worse beyond noise.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fmt::{unit_of, Unit};
use crate::claims::{stats, CellState, RunEvidence};

/// Changes smaller than this are "no change" even with tight CIs.
pub const MIN_CHANGE: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Faster,
    Slower,
    Better,
    Worse,
    NoChange,
}

impl Change {
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Faster => "faster",
            Change::Slower => "slower",
            Change::Better => "better",
            Change::Worse => "worse",
            Change::NoChange => "no change",
        }
    }
    pub fn is_regression(&self) -> bool {
        matches!(self, Change::Slower | Change::Worse)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// `workload/driver/k=v;…`
    pub cell: String,
    pub metric: String,
    pub baseline_median: f64,
    pub median: f64,
    pub baseline_n: usize,
    pub n: usize,
    pub ratio: f64,
    pub ratio_lo: f64,
    pub ratio_hi: f64,
    pub change: Change,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub run: String,
    pub baseline: String,
    pub rows: Vec<CompareRow>,
    /// Cells present on one side only.
    pub unmatched: Vec<String>,
    pub regressions: usize,
}

/// Whether a larger value is better for this metric (throughput, rates, counts started).
pub fn higher_is_better(metric: &str) -> bool {
    unit_of(metric) == Unit::BytesPerS || metric.contains("per_s") || metric.contains("iops") || metric.ends_with("_started")
}

fn key(c: &crate::claims::EvCell) -> String {
    format!("{}/{}/{}", c.workload, c.driver, cowbench_workloads::params_string(&c.params))
}

pub fn compare_runs(run: &RunEvidence, baseline: &RunEvidence) -> Comparison {
    let index = |r: &RunEvidence| -> BTreeMap<String, BTreeMap<String, Vec<f64>>> {
        let mut m: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        for c in r.cells.iter().filter(|c| c.state == CellState::Ok) {
            let e = m.entry(key(c)).or_default();
            for (k, s) in &c.metrics {
                e.entry(k.clone()).or_default().extend(s.iter().copied());
            }
        }
        m
    };
    let (a, b) = (index(baseline), index(run));
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    for (cell, metrics) in &b {
        let Some(base) = a.get(cell) else {
            unmatched.push(format!("{cell} (not in baseline)"));
            continue;
        };
        for (m, s) in metrics {
            let (Some(bs), Some(ci_b), Some(ci_a)) = (base.get(m), stats::median_ci(s), base.get(m).and_then(|x| stats::median_ci(x))) else {
                continue;
            };
            let _ = bs;
            if ci_a.median <= 0.0 {
                continue;
            }
            let (r, lo, hi) = stats::ratio_interval(&ci_a, &ci_b);
            let overlap = lo <= 1.0 && hi >= 1.0;
            let change = if overlap || (r - 1.0).abs() < MIN_CHANGE {
                Change::NoChange
            } else {
                let up = r > 1.0;
                let good = up == higher_is_better(m);
                match (unit_of(m) == Unit::Ns, good) {
                    (true, true) => Change::Faster,
                    (true, false) => Change::Slower,
                    (false, true) => Change::Better,
                    (false, false) => Change::Worse,
                }
            };
            rows.push(CompareRow {
                cell: cell.clone(),
                metric: m.clone(),
                baseline_median: ci_a.median,
                median: ci_b.median,
                baseline_n: ci_a.n,
                n: ci_b.n,
                ratio: r,
                ratio_lo: lo,
                ratio_hi: hi,
                change,
            });
        }
    }
    for cell in a.keys().filter(|k| !b.contains_key(*k)) {
        unmatched.push(format!("{cell} (only in baseline)"));
    }
    let regressions = rows.iter().filter(|r| r.change.is_regression()).count();
    Comparison { run: run.label.clone(), baseline: baseline.label.clone(), rows, unmatched, regressions }
}
