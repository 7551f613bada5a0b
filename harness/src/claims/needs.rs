//! Which cells of a run plan the claims will decide on, and on which metrics — so that the
//! runner can give those cells the samples a verdict needs ([`RuleKind::min_samples`]) instead
//! of leaving a claim "inconclusive: too few samples" while it spends repetitions on cells
//! no claim reads.
//!
//! Mirrors the selection of [`super::rules::select`] on planned cells (parameters only, no
//! samples yet): the rule's workload on the claim's subject drivers, its competitors and its
//! reference driver; plain `where` filters must match (a filter on a parameter the cell does
//! not have is ignored, as there); "min"/"max" pick the extreme among that driver's planned
//! cells of the workload; the swept `x` is not filtered.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClaimSet, Rule, RuleKind};

/// A planned cell as the claims see it.
pub struct PlannedCell<'a> {
    pub workload: &'a str,
    pub driver: &'a str,
    pub params: &'a BTreeMap<String, serde_json::Value>,
}

/// What a planned cell must hold for the claims reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// metric → fewest samples a deciding group needs.
    pub samples: BTreeMap<String, usize>,
}

/// For each planned cell (same order), the metrics the claims decide on and the samples each
/// needs; empty for a cell no claim reads. A claim none of whose subject drivers can run here
/// (`available` false: devicemapper on a kernel without device-mapper) reads nothing: its
/// competitors' samples would decide nothing.
pub fn planned_needs(set: &ClaimSet, cells: &[PlannedCell], available: &dyn Fn(&str) -> bool) -> Vec<Needs> {
    let mut out = vec![Needs::default(); cells.len()];
    for claim in set.claims.iter().filter(|c| c.drivers.iter().any(|d| available(d))) {
        for rule in &claim.rules {
            let mut drivers: BTreeSet<&str> = claim.drivers.iter().map(String::as_str).collect();
            let mut reads: Vec<(&str, &str)> = vec![(rule.workload.as_str(), rule.metric.as_str())];
            match &rule.kind {
                RuleKind::Rank { competitors, .. } => drivers.extend(competitors.iter().map(String::as_str)),
                RuleKind::RatioToReference { reference_workload, reference_driver, .. } => {
                    if let Some(d) = reference_driver {
                        drivers.insert(d);
                    }
                    if let Some(w) = reference_workload {
                        reads.push((w.as_str(), rule.metric.as_str()));
                    }
                }
                RuleKind::MarginalCost { reference_metric, .. } => reads.push((rule.workload.as_str(), reference_metric.as_str())),
                _ => {}
            }
            let k = rule.kind.min_samples();
            for (workload, metric) in reads {
                for driver in &drivers {
                    for i in selected(rule, cells, workload, driver) {
                        let e = out[i].samples.entry(metric.to_string()).or_insert(0);
                        *e = (*e).max(k);
                    }
                }
            }
        }
    }
    out
}

/// Indices of `driver`'s planned `workload` cells that `rule`'s filters select.
fn selected(rule: &Rule, cells: &[PlannedCell], workload: &str, driver: &str) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..cells.len()).filter(|&i| cells[i].workload == workload && cells[i].driver == driver).collect();
    let is_extreme = |v: &serde_json::Value| matches!(v.as_str(), Some("min" | "max"));
    let has = |i: usize, k: &str| cells[i].params.contains_key(k);
    for (k, v) in rule.filter.iter().filter(|(_, v)| !is_extreme(v)) {
        if idx.iter().any(|&i| has(i, k)) {
            idx.retain(|&i| cells[i].params.get(k).is_some_and(|cv| super::rules::value_eq(cv, v)));
        }
    }
    for (k, v) in rule.filter.iter().filter(|(_, v)| is_extreme(v)) {
        let vals: Vec<f64> = idx.iter().filter_map(|&i| cells[i].params.get(k).and_then(serde_json::Value::as_f64)).collect();
        let pick = if v.as_str() == Some("max") { vals.iter().copied().reduce(f64::max) } else { vals.iter().copied().reduce(f64::min) };
        if let Some(p) = pick {
            idx.retain(|&i| cells[i].params.get(k).and_then(serde_json::Value::as_f64) == Some(p));
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn the_builtin_claims_read_the_copyup_sweep_and_not_unread_cells() {
        let set = ClaimSet::builtin();
        let sizes = [4096, 1 << 20, 64 << 20];
        let ps: Vec<_> = sizes
            .iter()
            .map(|&s| params(&[("file_bytes", s.into()), ("depth", 1.into()), ("write_at", "start".into())]))
            .chain([params(&[("file_bytes", (64 << 20).into()), ("depth", 1.into()), ("write_at", "middle".into())])])
            .collect();
        let mut cells: Vec<PlannedCell> = ps.iter().map(|p| PlannedCell { workload: "copyup", driver: "overlay", params: p }).collect();
        let unread = params(&[]);
        cells.push(PlannedCell { workload: "parallel-append", driver: "overlay", params: &unread });
        let needs = planned_needs(&set, &cells, &|_| true);
        for n in &needs[..3] {
            assert_eq!(n.samples.get("first_write_latency_ns"), Some(&6), "{needs:?}");
            assert_eq!(n.samples.get("reference_copy_latency_ns"), Some(&6), "{needs:?}");
        }
        assert!(!needs[3].samples.contains_key("first_write_latency_ns"), "write_at=middle is read by no claim: {needs:?}");
        assert!(needs[4].samples.is_empty(), "{needs:?}");
        // Without overlay (and aufs, the other copy-up subject) no claim reads these cells.
        let none = planned_needs(&set, &cells, &|d| d != "overlay" && d != "aufs");
        assert!(none.iter().all(|n| n.samples.is_empty()), "{none:?}");
    }
}
