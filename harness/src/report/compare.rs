//! Run against baseline, cell by cell and metric by metric, from raw samples.
//!
//! ratio = median(run)/median(baseline) with the conservative interval from the two medians'
//! intervals (95% CIs from 6 samples on; below that the samples' range, shown with its coverage).
//! "no change" when the CIs overlap or the change is under 5%; otherwise the metric's
//! [`MetricSpec`] decides: faster/slower (durations) or better/worse by its `better`, "changed"
//! when neither direction is better or no workload declares the metric. A regression is a cell
//! that got worse beyond noise; a metric without a spec is never one (and the comparison lists it).

use std::collections::BTreeMap;

use serde::Serialize;

use cowbench_workloads::{Better, MetricSpec, Unit};

use crate::claims::{stats, RunEvidence};
use crate::results::{Cell, CellStatus};

/// Changes smaller than this are "no change" even with tight CIs.
pub const MIN_CHANGE: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Faster,
    Slower,
    Better,
    Worse,
    /// Beyond noise, but neither direction is better (or the metric has no spec).
    Changed,
    NoChange,
}

impl Change {
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Faster => "faster",
            Change::Slower => "slower",
            Change::Better => "better",
            Change::Worse => "worse",
            Change::Changed => "changed",
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
    /// From the workload's spec; None when no workload declares the metric.
    pub unit: Option<Unit>,
    pub better: Option<Better>,
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
    /// `workload/metric` pairs no workload declares: compared, never counted as regressions.
    pub without_spec: Vec<String>,
    pub regressions: usize,
}

impl CompareRow {
    /// A value of this row's metric for people.
    pub fn format(&self, v: f64) -> String {
        match self.unit {
            Some(u) => u.format(v),
            None => cowbench_workloads::metric::sig3(v),
        }
    }
}

/// The change a ratio beyond noise means for a metric: its spec says which way is better.
pub fn judge(spec: Option<&MetricSpec>, ratio: f64) -> Change {
    let Some(spec) = spec else { return Change::Changed };
    let up = ratio > 1.0;
    let good = match spec.better {
        Better::Higher => up,
        Better::Lower => !up,
        Better::Neither => return Change::Changed,
    };
    match (spec.unit.is_time(), good) {
        (true, true) => Change::Faster,
        (true, false) => Change::Slower,
        (false, true) => Change::Better,
        (false, false) => Change::Worse,
    }
}

fn key(c: &Cell) -> String {
    format!("{}/{}/{}", c.workload, c.driver, cowbench_workloads::params_string(&c.params))
}

pub fn compare_runs(run: &RunEvidence, baseline: &RunEvidence) -> Comparison {
    // cell key → (workload, metric → samples)
    let index = |r: &RunEvidence| -> BTreeMap<String, (String, BTreeMap<String, Vec<f64>>)> {
        let mut m: BTreeMap<String, (String, BTreeMap<String, Vec<f64>>)> = BTreeMap::new();
        for c in r.cells.iter().filter(|c| c.status == CellStatus::Ok) {
            let e = &mut m.entry(key(c)).or_insert_with(|| (c.workload.clone(), BTreeMap::new())).1;
            for (k, s) in &c.metrics {
                e.entry(k.clone()).or_default().extend(s.samples.iter().copied());
            }
        }
        m
    };
    let (a, b) = (index(baseline), index(run));
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    let mut without_spec = Vec::new();
    for (cell, (workload, metrics)) in &b {
        let Some((_, base)) = a.get(cell) else {
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
            let spec = cowbench_workloads::metric_spec(workload, m);
            if spec.is_none() {
                let name = format!("{workload}/{m}");
                if !without_spec.contains(&name) {
                    without_spec.push(name);
                }
            }
            let change = if overlap || (r - 1.0).abs() < MIN_CHANGE { Change::NoChange } else { judge(spec, r) };
            rows.push(CompareRow {
                cell: cell.clone(),
                metric: m.clone(),
                unit: spec.map(|s| s.unit),
                better: spec.map(|s| s.better),
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
    Comparison { run: run.label.clone(), baseline: baseline.label.clone(), rows, unmatched, without_spec, regressions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_comes_from_the_spec() {
        let ratio = cowbench_workloads::metric_spec("fragmentation", "after_before_ratio");
        // after/before throughput: 0.890 → 0.979 is less fragmentation, an improvement.
        assert_eq!(judge(ratio, 0.979 / 0.890), Change::Better);
        assert_eq!(judge(ratio, 0.890 / 0.979), Change::Worse);
        let lat = cowbench_workloads::metric_spec("copyup", "first_write_latency_ns");
        assert_eq!(judge(lat, 1.5), Change::Slower);
        assert_eq!(judge(lat, 0.5), Change::Faster);
        let found = cowbench_workloads::metric_spec("lookup", "found_count");
        assert_eq!(judge(found, 2.0), Change::Changed);
        assert_eq!(judge(None, 0.1), Change::Changed);
        assert!(!Change::Changed.is_regression());
    }
}
