//! A claims file checked against what cowbench can measure, when it is read: every workload,
//! metric, parameter (`x`, `where`, `param`, `per_cycle_param`) and driver a claim names must
//! exist in the workloads' specs (`cowbench_workloads::all()`) and the driver registry. A
//! misspelt name is an error naming the claim, the name and what exists — not a claim that
//! reads "not measured" after a whole run.

use cowbench_workloads::{Better, ParamKind, Workload};

use super::{Claim, ClaimSet, Rule, RuleKind};

/// The pseudo-parameter of `growth_over_cycles`: a churn cell's samples, one per cycle, in order.
pub const CYCLE_INDEX: &str = "cycle";

fn workload(claim: &str, id: &str) -> anyhow::Result<&'static dyn Workload> {
    cowbench_workloads::by_id(id).ok_or_else(|| {
        anyhow::anyhow!(
            "claim '{claim}' names unknown workload '{id}'; workloads: {}",
            cowbench_workloads::all().iter().map(|w| w.id()).collect::<Vec<_>>().join(", ")
        )
    })
}

fn metric(claim: &str, w: &dyn Workload, m: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        w.metrics().iter().any(|s| s.name == m),
        "claim '{claim}' names unknown metric '{m}' of workload '{}'; its metrics: {}",
        w.id(),
        w.metrics().iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

fn param(claim: &str, w: &dyn Workload, p: &str, role: &str) -> anyhow::Result<ParamKind> {
    w.params().iter().find(|s| s.name == p).map(|s| s.kind).ok_or_else(|| {
        anyhow::anyhow!(
            "claim '{claim}': {role} names unknown parameter '{p}' of workload '{}'; its parameters: {}",
            w.id(),
            cowbench_workloads::params::known_params(w)
        )
    })
}

/// A value a rule compares a parameter with: of the parameter's kind, or "max"/"min" (`where`).
fn value(claim: &str, w: &dyn Workload, p: &str, kind: ParamKind, v: &serde_json::Value, extremes: bool) -> anyhow::Result<()> {
    let ok = match (kind, v) {
        (ParamKind::Bytes | ParamKind::Count | ParamKind::Bool | ParamKind::OptionalBool, serde_json::Value::String(s)) => {
            extremes && (s == "max" || s == "min")
        }
        (ParamKind::Bytes | ParamKind::Count, v) => v.as_u64().is_some(),
        (ParamKind::Bool | ParamKind::OptionalBool, v) => v.is_boolean(),
        (ParamKind::Choice(c), serde_json::Value::String(s)) => c.contains(&s.as_str()),
        (ParamKind::Choice(_), _) => false,
    };
    anyhow::ensure!(
        ok,
        "claim '{claim}': {v} is not a value of parameter '{p}' of workload '{}' ({}{})",
        w.id(),
        kind.describe(),
        if extremes && !matches!(kind, ParamKind::Choice(_)) { ", or \"max\"/\"min\"" } else { "" }
    );
    Ok(())
}

/// Whether larger values of the rule's metric are better: the metric's spec decides. A rule
/// that compares directions (rank, before_after) on a metric whose spec says neither is an
/// error at load, so after [`names`] passed this is never asked of such a metric.
pub fn higher_is_better(rule: &Rule) -> bool {
    cowbench_workloads::metric_spec(&rule.workload, &rule.metric).is_some_and(|s| s.better == Better::Higher)
}

fn direction(claim: &str, r: &Rule) -> anyhow::Result<()> {
    let better = cowbench_workloads::metric_spec(&r.workload, &r.metric).map(|s| s.better);
    anyhow::ensure!(
        matches!(better, Some(Better::Higher | Better::Lower)),
        "claim '{claim}': a {} rule needs a metric with a better direction; '{}' of '{}' is neither higher- nor lower-is-better",
        r.kind.name(),
        r.metric,
        r.workload
    );
    Ok(())
}

fn driver(claim: &str, d: &str, role: &str) -> anyhow::Result<()> {
    let known = cowbench_drivers::registry::DRIVERS;
    anyhow::ensure!(known.contains(&d), "claim '{claim}': {role} names unknown driver '{d}'; drivers: {}", known.join(", "));
    Ok(())
}

fn rule(c: &Claim, r: &Rule) -> anyhow::Result<()> {
    let id = c.id.as_str();
    let w = workload(id, &r.workload)?;
    metric(id, w, &r.metric)?;
    if let Some(x) = &r.x {
        let cycle_index = matches!(r.kind, RuleKind::GrowthOverCycles { .. }) && x == CYCLE_INDEX;
        if !cycle_index {
            param(id, w, x, "x")?;
        }
    }
    if let (Some(lo), Some(hi)) = r.valid_bounds() {
        anyhow::ensure!(lo < hi, "claim '{id}': valid_min {lo} is not below valid_max {hi}");
    }
    for (k, v) in &r.filter {
        let kind = param(id, w, k, "where")?;
        value(id, w, k, kind, v, true)?;
    }
    match &r.kind {
        RuleKind::RatioToReference { reference_workload, reference_driver, .. } => {
            if let Some(rw) = reference_workload {
                // The reference is read with the subject's metric.
                metric(id, workload(id, rw)?, &r.metric)?;
            }
            if let Some(d) = reference_driver {
                driver(id, d, "reference_driver")?;
            }
        }
        RuleKind::Rank { competitors, .. } => {
            direction(id, r)?;
            for d in competitors {
                driver(id, d, "competitors")?;
            }
        }
        RuleKind::BeforeAfter { param: p, before, after, .. } => {
            direction(id, r)?;
            let kind = param(id, w, p, "param")?;
            value(id, w, p, kind, before, false)?;
            value(id, w, p, kind, after, false)?;
        }
        RuleKind::GrowthOverCycles { per_cycle_param, .. } => {
            param(id, w, per_cycle_param, "per_cycle_param")?;
        }
        RuleKind::MarginalCost { reference_metric, .. } => {
            // Read from the same cells as the metric.
            metric(id, w, reference_metric)?;
            anyhow::ensure!(r.x.is_some(), "claim '{id}': a marginal_cost rule needs `x`, the parameter the cost is per unit of");
        }
        RuleKind::Growth { .. }
        | RuleKind::Flat { .. }
        | RuleKind::ScalingWithN { .. }
        | RuleKind::Threshold { .. }
        | RuleKind::Capacity { .. } => {}
    }
    Ok(())
}

/// Every name in `set` against the workloads' specs and the driver registry.
pub fn names(set: &ClaimSet) -> anyhow::Result<()> {
    for c in &set.claims {
        for w in &c.workloads {
            workload(&c.id, w)?;
        }
        for d in &c.drivers {
            driver(&c.id, d, "drivers")?;
        }
        for r in &c.rules {
            rule(c, r)?;
        }
    }
    for r in &set.rows {
        let known = cowbench_drivers::registry::DRIVERS;
        anyhow::ensure!(
            known.contains(&r.driver.as_str()),
            "table row names unknown driver '{}'; drivers: {}",
            r.driver,
            known.join(", ")
        );
    }
    Ok(())
}
