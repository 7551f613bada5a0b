//! The rule engine: pure functions from a run's raw samples to verdicts. Every threshold comes
//! from claims.toml; the semantics of each rule kind are documented there and in `rule_text`.

use std::collections::{BTreeMap, BTreeSet};

use super::stats::{self, MedianCi};
use super::*;
use super::evidence;
use crate::results::{Cell, CellStatus};
use cowbench_workloads::metric::{fmt_bytes, fmt_pct, fmt_ratio, format_metric as fmt_value};
use cowbench_workloads::params::format_param as fmt_param;

/// Every claim of `set` on one run.
pub fn evaluate_all(set: &ClaimSet, run: &RunEvidence) -> Vec<ClaimVerdict> {
    set.claims.iter().map(|c| evaluate_claim(c, run)).collect()
}

/// One claim on one run: each subject driver, then the claim's aggregate.
pub fn evaluate_claim(claim: &Claim, run: &RunEvidence) -> ClaimVerdict {
    let drivers: Vec<DriverVerdict> = claim.drivers.iter().map(|d| evaluate_driver(claim, run, d)).collect();
    let verdict = aggregate(claim.aggregate, &drivers);
    ClaimVerdict { claim: claim.id.clone(), run: run.label.clone(), verdict, drivers }
}

fn evaluate_driver(claim: &Claim, run: &RunEvidence, driver: &str) -> DriverVerdict {
    let backend = run.backends.get(driver);
    let implementation = backend.and_then(|b| b.implementation.clone());
    let stand_in = backend.is_some_and(|b| b.stand_in || b.implementation.as_deref().is_some_and(evidence::implementation_is_stand_in))
        || run.cells.iter().any(|c| c.driver == driver && c.is_stand_in());
    let pre = match backend {
        Some(b) if !b.available => Some(Why::BackendUnavailable(
            b.reason.clone().unwrap_or_else(|| format!("{driver} is not available on this host")),
        )),
        None if !run.cells.iter().any(|c| c.driver == driver) => {
            Some(Why::DriverNotRun(format!("{driver} was not part of this run")))
        }
        _ if !run.drivers_requested.is_empty()
            && !run.drivers_requested.iter().any(|d| d == driver)
            && !run.cells.iter().any(|c| c.driver == driver) =>
        {
            Some(Why::DriverNotRun(format!("{driver} was not selected for this run")))
        }
        _ => None,
    };
    if let Some(why) = pre {
        let mut v = Verdict::not_measured(why);
        v.marks.vm = run.is_vm();
        return DriverVerdict { driver: driver.into(), implementation, stand_in, verdict: v, rules: vec![] };
    }
    let rules: Vec<RuleOutcome> = claim.rules.iter().map(|r| evaluate_rule(r, run, driver)).collect();
    let verdict = combine_rules(&rules);
    DriverVerdict { driver: driver.into(), implementation, stand_in, verdict, rules }
}

/// Parts of a claim combine as "all"; optional parts that could not be measured are skipped.
/// A refuting part refutes; otherwise an invalid part makes the driver's verdict invalid (its
/// measurement cannot carry a confirmation of the other parts either).
fn combine_rules(rules: &[RuleOutcome]) -> Verdict {
    let counted: Vec<&RuleOutcome> =
        rules.iter().filter(|r| r.required || r.verdict.kind != VerdictKind::NotMeasured).collect();
    let mut marks = Marks::default();
    for r in &counted {
        marks.merge(&r.verdict.marks);
    }
    // Part names only matter when several parts decide.
    let several = counted.len() > 1;
    let label = |r: &RuleOutcome| if several { r.label.clone().map(|l| format!("{l}: ")).unwrap_or_default() } else { String::new() };
    let keys = counted
        .iter()
        .filter(|r| !r.verdict.key.is_empty())
        .map(|r| format!("{}{}", label(r), r.verdict.key))
        .collect::<Vec<_>>()
        .join("; ");
    let mut v = if counted.is_empty() {
        rules.first().map(|r| r.verdict.clone()).unwrap_or_else(|| Verdict::not_measured(Why::NotAClaim("no rule".into())))
    } else if let Some(r) = counted.iter().find(|r| r.verdict.kind == VerdictKind::Refuted) {
        Verdict::new(VerdictKind::Refuted, format!("{}{}", label(r), r.verdict.key))
    } else if let Some(r) = counted.iter().find(|r| r.verdict.kind == VerdictKind::Invalid) {
        let why = r.verdict.why.as_ref().map(|w| w.with_detail(format!("{}{}", label(r), w.detail())));
        Verdict { kind: VerdictKind::Invalid, why, key: keys, marks: Marks::default() }
    } else if counted.iter().all(|r| r.verdict.kind == VerdictKind::Confirmed) {
        Verdict::new(VerdictKind::Confirmed, keys)
    } else if counted.iter().all(|r| r.verdict.kind == VerdictKind::NotMeasured) {
        counted[0].verdict.clone()
    } else {
        let open: Vec<&&RuleOutcome> = counted.iter().filter(|r| r.verdict.kind != VerdictKind::Confirmed).collect();
        let why = if open.len() == 1 && counted.len() == 1 {
            open[0].verdict.why.clone()
        } else if let Some(w) = only_too_few(open.iter().map(|r| (label(r), &r.verdict))) {
            Some(w)
        } else {
            Some(Why::Mixed(
                open.iter()
                    .map(|r| format!("{}{}", label(r), r.verdict.why.as_ref().map(Why::text).unwrap_or_else(|| r.verdict.kind.as_str().into())))
                    .collect::<Vec<_>>()
                    .join("; "),
            ))
        };
        Verdict { kind: VerdictKind::Inconclusive, why, key: keys, marks: Marks::default() }
    };
    v.marks = marks;
    v
}

/// When every open part (or driver) is open for too few samples alone, that is the reason
/// ("n=2, needs ≥ 6", or each part's count when they differ), not "mixed".
fn only_too_few<'a>(open: impl Iterator<Item = (String, &'a Verdict)>) -> Option<Why> {
    let mut details: Vec<(String, String)> = Vec::new();
    for (label, v) in open {
        match &v.why {
            Some(Why::TooFewSamples(d)) if v.kind == VerdictKind::Inconclusive => details.push((label, d.clone())),
            _ => return None,
        }
    }
    let first = details.first()?.1.clone();
    Some(Why::TooFewSamples(if details.iter().all(|d| d.1 == first) {
        first
    } else {
        details.iter().map(|(l, d)| format!("{l}{d}")).collect::<Vec<_>>().join("; ")
    }))
}

/// The claim's verdict from its drivers' verdicts. Drivers not measured and drivers whose
/// measurement is invalid are set aside (named after the key); stand-ins are set aside too when
/// a kernel driver has a valid verdict — a FUSE stand-in's overhead says nothing about the kernel
/// drivers — and decide (marked) only when nothing else was measured. Of the deciding drivers,
/// `all`: one refutation refutes, every one must confirm; `any`: one confirmation confirms.
fn aggregate(how: Aggregate, drivers: &[DriverVerdict]) -> Verdict {
    let measured: Vec<&DriverVerdict> = drivers.iter().filter(|d| d.verdict.kind != VerdictKind::NotMeasured).collect();
    let valid: Vec<&DriverVerdict> = measured.iter().copied().filter(|d| d.verdict.kind != VerdictKind::Invalid).collect();
    let kernel: Vec<&DriverVerdict> = valid.iter().copied().filter(|d| !d.stand_in).collect();
    let deciding = if kernel.is_empty() { valid.clone() } else { kernel };
    let mut marks = Marks::default();
    for d in if deciding.is_empty() { &measured } else { &deciding } {
        marks.merge(&d.verdict.marks);
    }
    let single = drivers.len() == 1;
    let keyed = |ds: &[&DriverVerdict]| {
        ds.iter()
            .filter(|d| !d.verdict.key.is_empty())
            .map(|d| if single { d.verdict.key.clone() } else { format!("{}: {}", d.driver, d.verdict.key) })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if measured.is_empty() {
        if single {
            return drivers[0].verdict.clone();
        }
        // Group drivers by reason: "workload not run: … (overlay, aufs); backend unavailable: … (devicemapper)".
        let mut groups: Vec<(String, Vec<&str>, Option<Why>)> = Vec::new();
        for d in drivers {
            let t = d.verdict.why.as_ref().map(Why::text).unwrap_or_default();
            match groups.iter_mut().find(|g| g.0 == t) {
                Some(g) => g.1.push(&d.driver),
                None => groups.push((t, vec![&d.driver], d.verdict.why.clone())),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
        let detail = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let t = match (&g.2, i) {
                    (Some(w), 0) => w.detail().to_string(),
                    _ => g.0.clone(),
                };
                format!("{t} ({})", g.1.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let first = groups[0].2.clone().unwrap_or(Why::DriverNotRun(String::new()));
        let mut v = Verdict::not_measured(first.with_detail(detail));
        v.marks.vm = drivers.iter().any(|d| d.verdict.marks.vm);
        return v;
    }
    if deciding.is_empty() {
        // Every measured driver's measurement is invalid.
        let mut v = if measured.len() == 1 {
            measured[0].verdict.clone()
        } else {
            let why = measured
                .iter()
                .map(|d| format!("{}: {}", d.driver, d.verdict.why.as_ref().map(|w| w.detail().to_string()).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ");
            Verdict::because(VerdictKind::Invalid, Why::InvalidMeasurement(why), keyed(&measured))
        };
        v.marks = marks;
        return v;
    }
    let measured = deciding;
    let of = |k: VerdictKind| measured.iter().copied().filter(|d| d.verdict.kind == k).collect::<Vec<_>>();
    let (conf, refu) = (of(VerdictKind::Confirmed), of(VerdictKind::Refuted));
    let names = |k: &dyn Fn(&DriverVerdict) -> bool| drivers.iter().filter(|d| k(d)).map(|d| d.driver.as_str()).collect::<Vec<_>>();
    let unmeasured = names(&|d| d.verdict.kind == VerdictKind::NotMeasured);
    let invalid = names(&|d| d.verdict.kind == VerdictKind::Invalid);
    let aside: Vec<String> = valid
        .iter()
        .filter(|d| !measured.iter().any(|m| m.driver == d.driver))
        .map(|d| format!("{} {}", d.driver, d.verdict.kind.as_str()))
        .collect();
    let mut suffix = String::new();
    for (what, list) in [
        ("stand-in, not deciding", aside),
        ("invalid, excluded", invalid.iter().map(|s| s.to_string()).collect()),
        ("not measured", unmeasured.iter().map(|s| s.to_string()).collect()),
    ] {
        if !list.is_empty() {
            suffix.push_str(&format!(" ({what}: {})", list.join(", ")));
        }
    }
    let mut v = match how {
        Aggregate::All if !refu.is_empty() => Verdict::new(VerdictKind::Refuted, keyed(&refu) + &suffix),
        Aggregate::All if conf.len() == measured.len() => Verdict::new(VerdictKind::Confirmed, keyed(&conf) + &suffix),
        Aggregate::Any if !conf.is_empty() => Verdict::new(VerdictKind::Confirmed, keyed(&conf) + &suffix),
        Aggregate::Any if refu.len() == measured.len() => Verdict::new(VerdictKind::Refuted, keyed(&refu) + &suffix),
        _ => {
            let open: Vec<&DriverVerdict> =
                measured.iter().copied().filter(|d| d.verdict.kind == VerdictKind::Inconclusive).collect();
            let why = if measured.len() == 1 {
                measured[0].verdict.why.clone()
            } else if let Some(w) = only_too_few(
                measured.iter().filter(|d| d.verdict.kind != VerdictKind::Confirmed).map(|d| (format!("{}: ", d.driver), &d.verdict)),
            ) {
                Some(w)
            } else {
                Some(Why::Mixed(
                    measured
                        .iter()
                        .map(|d| {
                            let w = d.verdict.why.as_ref().map(|w| format!(" ({})", w.text())).unwrap_or_default();
                            format!("{} {}{w}", d.driver, d.verdict.kind.as_str())
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ))
            };
            let _ = open;
            Verdict { kind: VerdictKind::Inconclusive, why, key: keyed(&measured) + &suffix, marks: Marks::default() }
        }
    };
    v.marks = marks;
    v
}

// ---------------------------------------------------------------------------------------------
// Selecting samples
// ---------------------------------------------------------------------------------------------

/// Cells of (workload, driver) with samples of `metric`, after the rule's filters; or why none.
pub fn select<'a>(
    run: &'a RunEvidence,
    workload: &str,
    driver: &str,
    metric: &str,
    filter: &BTreeMap<String, serde_json::Value>,
    include_failed: bool,
) -> Result<Vec<&'a Cell>, Why> {
    let all: Vec<&Cell> = run.cells.iter().filter(|c| c.workload == workload && c.driver == driver).collect();
    if all.is_empty() {
        if !run.workload_ran(workload) {
            let sel = if run.workloads_requested.is_empty() || run.workloads_requested.iter().any(|w| w == workload) {
                "it has no cells in this run"
            } else {
                "not selected for this run"
            };
            return Err(Why::WorkloadNotRun(format!("{workload}: {sel}")));
        }
        return Err(Why::DriverNotRun(format!("no {workload} cells for {driver}")));
    }
    let usable: Vec<&Cell> = all
        .iter()
        .copied()
        .filter(|c| {
            (include_failed && c.status != CellStatus::Ok)
                || (c.status == CellStatus::Ok && c.samples(metric).is_some_and(|s| !s.is_empty()))
        })
        .collect();
    if usable.is_empty() {
        let reason = all
            .iter()
            .find_map(|c| {
                let r = c.reason.as_deref();
                match c.status {
                    CellStatus::Failed => Some(format!("{workload} on {driver} failed: {}", r.unwrap_or("failed"))),
                    CellStatus::Skipped => Some(format!("{workload} on {driver} skipped: {}", r.unwrap_or("skipped"))),
                    CellStatus::Ok => None,
                }
            })
            .unwrap_or_else(|| format!("{workload} on {driver} recorded no '{metric}' samples"));
        return Err(Why::CellsFailed(reason));
    }
    let mut cells = usable;
    // Plain filters first, then "min"/"max" over what remains.
    let (extremes, plain): (Vec<_>, Vec<_>) =
        filter.iter().partition(|(_, v)| matches!(v.as_str(), Some("max") | Some("min")));
    for (k, v) in plain.into_iter().chain(extremes) {
        // Every filter names a parameter of the workload (checked when the claims were read); a
        // cell without it (an optional parameter left out) does not match a value of it.
        let pick = match v.as_str() {
            Some(e @ ("max" | "min")) => {
                let vals: Vec<f64> = cells.iter().filter_map(|c| c.param_f64(k)).collect();
                if vals.is_empty() {
                    None
                } else if e == "max" {
                    Some(vals.iter().copied().fold(f64::MIN, f64::max))
                } else {
                    Some(vals.iter().copied().fold(f64::MAX, f64::min))
                }
            }
            _ => None,
        };
        let before = cells.len();
        cells.retain(|c| match pick {
            Some(p) => c.param_f64(k) == Some(p),
            None => c.params.get(k).is_some_and(|cv| value_eq(cv, v)),
        });
        if cells.is_empty() {
            let _ = before;
            return Err(Why::ParameterNotInProfile(format!("no {workload} cell on {driver} with {k}={}", show(v))));
        }
    }
    Ok(cells)
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        o => o.to_string(),
    }
}

/// A `where` value against a cell's parameter: equal as numbers (1 and 1.0), as JSON, or as shown.
pub(crate) fn value_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b || show(a) == show(b),
    }
}

/// Samples per x value, ascending x.
pub type XGroups = Vec<(f64, Vec<f64>)>;

/// Samples grouped by the numeric value of parameter `x`, ascending.
pub fn by_x(cells: &[&Cell], x: &str, metric: &str) -> Vec<(f64, Vec<f64>)> {
    let mut m: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
    for c in cells {
        if c.status != CellStatus::Ok {
            continue;
        }
        let (Some(xv), Some(s)) = (c.param_f64(x), c.samples(metric)) else { continue };
        // Order key that sorts finite f64 correctly (all x here are ≥ 0).
        m.entry(xv.to_bits()).or_insert((xv, vec![])).1.extend(s.iter().copied());
    }
    let mut v: Vec<(f64, Vec<f64>)> = m.into_values().filter(|(_, s)| !s.is_empty()).collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    v
}

fn point(driver: &str, x: Option<f64>, label: String, ci: &MedianCi) -> Point {
    Point {
        driver: driver.into(),
        x,
        label,
        n: ci.n,
        median: ci.median,
        ci_lo: ci.lo,
        ci_hi: ci.hi,
        ci_coverage: ci.coverage,
    }
}

fn marks_of(run: &RunEvidence, cells: &[&Cell]) -> Marks {
    let mut m = Marks { vm: run.is_vm(), ..Default::default() };
    for c in cells {
        let b = run.backends.get(&c.driver);
        if c.is_stand_in() || b.is_some_and(|b| b.stand_in) {
            let imp = c
                .implementation
                .clone()
                .or_else(|| b.and_then(|b| b.implementation.clone()))
                .unwrap_or_else(|| format!("{} stand-in", c.driver));
            if !m.stand_in.contains(&imp) {
                m.stand_in.push(imp);
            }
        }
        m.loop_backed |= c.loop_backed || b.is_some_and(|b| b.loop_backed);
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// One rule for one driver.
pub fn evaluate_rule(rule: &Rule, run: &RunEvidence, driver: &str) -> RuleOutcome {
    let mut points = Vec::new();
    let mut marks = Marks { vm: run.is_vm(), ..Default::default() };
    let verdict = match decide(rule, run, driver, &mut points, &mut marks) {
        Ok(v) => v,
        Err(why) => Verdict::not_measured(why),
    };
    let mut verdict = verdict;
    if verdict.kind != VerdictKind::NotMeasured {
        verdict.marks = marks;
    } else {
        verdict.marks.vm = run.is_vm();
    }
    RuleOutcome {
        label: rule.label.clone(),
        kind: rule.kind.name().into(),
        workload: rule.workload.clone(),
        metric: rule.metric.clone(),
        required: rule.required,
        verdict,
        points,
        rule_text: rule_text(rule),
    }
}

fn need_x(rule: &Rule) -> Result<&str, Why> {
    rule.x.as_deref().ok_or_else(|| Why::NotAClaim(format!("rule '{}' needs an x parameter", rule.kind.name())))
}

fn inconclusive(why: Why, key: String) -> Verdict {
    Verdict::because(VerdictKind::Inconclusive, why, key)
}

/// `invalid` when the decided quantity's whole interval `[lo, hi]` lies outside the rule's
/// validity bounds. Checked before the sample count: more samples of a physically impossible
/// value would not make it a verdict. `shown` is the quantity with its interval, in words.
fn invalid(rule: &Rule, lo: f64, hi: f64, shown: &str, key: &str) -> Option<Verdict> {
    let (vmin, vmax) = rule.valid_bounds();
    let out = if let Some(m) = vmin.filter(|m| hi < *m) {
        format!("{} {shown} lies below the possible minimum {}", rule.kind.decided(), fmt_num(m))
    } else if let Some(m) = vmax.filter(|m| lo > *m) {
        format!("{} {shown} lies above the possible maximum {}", rule.kind.decided(), fmt_num(m))
    } else {
        return None;
    };
    let why = match &rule.invalid_reason {
        Some(r) => format!("{r} ({out})"),
        None => format!("impossible value, excluded: {out}"),
    };
    Some(Verdict::because(VerdictKind::Invalid, Why::InvalidMeasurement(why), key))
}

/// `too few samples` when a deciding group has fewer samples than the rule kind needs
/// ([`RuleKind::min_samples`]).
fn too_few(rule: &Rule, cis: &[&MedianCi]) -> Option<Why> {
    let k = rule.kind.min_samples();
    let n = cis.iter().map(|c| c.n).min()?;
    (n < k).then(|| Why::TooFewSamples(format!("n={n}, needs ≥ {k}")))
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// "×3.13 (interval [×2.32, ×4.00], range of 2 samples, 50% coverage)".
fn ratio_shown(r: f64, lo: f64, hi: f64, cis: &[&MedianCi]) -> String {
    format!("{} (interval {}, {})", fmt_ratio(r), fmt_interval(lo, hi), stats::joint_interval_name(cis))
}

/// The invalid and too-few-samples guards, in that order, for a decided quantity with the
/// medians it came from.
fn guards(rule: &Rule, lo: f64, hi: f64, shown: &str, cis: &[&MedianCi], key: &str) -> Option<Verdict> {
    invalid(rule, lo, hi, shown, key).or_else(|| too_few(rule, cis).map(|why| inconclusive(why, key.to_string())))
}

fn decide(rule: &Rule, run: &RunEvidence, driver: &str, points: &mut Vec<Point>, marks: &mut Marks) -> Result<Verdict, Why> {
    let (w, m) = (rule.workload.as_str(), rule.metric.as_str());
    match &rule.kind {
        RuleKind::Growth { min_ratio, min_slope, refute_max_ratio, fit, min_span } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let (a, b, r, lo, hi, slope, key) = sweep_ends(w, driver, x, m, &cells, *min_span, *fit, points)?;
            if let Some(v) = guards(rule, lo, hi, &ratio_shown(r, lo, hi, &[&a, &b]), &[&a, &b], &key) {
                return Ok(v);
            }
            let confirm = r >= *min_ratio && slope >= *min_slope;
            Ok(if confirm && lo > refute_max_ratio.max(1.0) {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if r <= *refute_max_ratio && hi < *min_ratio {
                Verdict::new(VerdictKind::Refuted, key)
            } else if confirm {
                inconclusive(Why::Noise(format!("ratio interval {} reaches ×{refute_max_ratio} or overlaps", fmt_interval(lo, hi))), key)
            } else if r <= *refute_max_ratio {
                inconclusive(Why::Noise(format!("ratio interval {} reaches ×{min_ratio}", fmt_interval(lo, hi))), key)
            } else {
                inconclusive(
                    Why::BelowThreshold(format!(
                        "confirm needs ≥ ×{min_ratio} with slope ≥ {min_slope}; refute needs ≤ ×{refute_max_ratio}"
                    )),
                    key,
                )
            })
        }
        RuleKind::Flat { max_ratio, max_abs_slope, refute_min_ratio, refute_min_slope, min_span } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let (a, b, r, lo, hi, slope, key) = sweep_ends(w, driver, x, m, &cells, *min_span, Fit::All, points)?;
            if let Some(v) = guards(rule, lo, hi, &ratio_shown(r, lo, hi, &[&a, &b]), &[&a, &b], &key) {
                return Ok(v);
            }
            let confirm = r <= *max_ratio && slope.abs() <= *max_abs_slope;
            let refute = r >= *refute_min_ratio && slope >= *refute_min_slope;
            Ok(if confirm && hi < *refute_min_ratio {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if refute && lo > *max_ratio {
                Verdict::new(VerdictKind::Refuted, key)
            } else if confirm || refute {
                inconclusive(Why::Noise(format!("ratio interval {} spans both thresholds", fmt_interval(lo, hi))), key)
            } else {
                inconclusive(
                    Why::BelowThreshold(format!(
                        "flat needs ≤ ×{max_ratio} and |slope| ≤ {max_abs_slope}; growth needs ≥ ×{refute_min_ratio} with slope ≥ {refute_min_slope}"
                    )),
                    key,
                )
            })
        }
        RuleKind::ScalingWithN { expect, confirm_fraction, refute_fraction, min_span } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let groups = by_x(&cells, x, m);
            push_points(w, driver, &groups, x, points);
            if groups.len() < 2 {
                return Err(Why::ParameterNotInProfile(format!("{x} has one value here; the rule needs a sweep")));
            }
            let (x0, x1) = (groups[0].0, groups[groups.len() - 1].0);
            let n = if x0 > 0.0 { x1 / x0 } else { f64::INFINITY };
            if !n.is_finite() || n < *min_span {
                return Err(Why::ParameterNotInProfile(format!("{x} spans ×{n:.0}; the rule needs ×{min_span}")));
            }
            let a = stats::median_ci(&groups[0].1).unwrap();
            let b = stats::median_ci(&groups[groups.len() - 1].1).unwrap();
            if a.median <= 0.0 {
                return Ok(inconclusive(Why::Noise(format!("{} at {x}={} is 0: nothing to scale from", m, fmt_param(w, x, x0))), String::new()));
            }
            let (c, clo, chi) = stats::ratio_interval(&a, &b);
            let f = |c: f64| (c - 1.0) / (n - 1.0);
            let (fv, flo, fhi) = (f(c), f(clo), f(chi));
            let key = format!(
                "{} vs {}: ×{:.1} ({:.0}% private; 0% = one shared copy)",
                fmt_param(w, x, x1),
                fmt_param(w, x, x0),
                c,
                fv * 100.0
            );
            let shown = format!("{c:.2} (interval [{clo:.2}, {chi:.2}], {})", stats::joint_interval_name(&[&a, &b]));
            if let Some(v) = guards(rule, clo, chi, &shown, &[&a, &b], &key) {
                return Ok(v);
            }
            let (cf, rf) = (*confirm_fraction, *refute_fraction);
            let (conf, refu) = match expect {
                Expect::Private => (fv >= cf && flo > rf, fv <= rf && fhi < cf),
                Expect::Shared => (fv <= cf && fhi < rf, fv >= rf && flo > cf),
            };
            let between = match expect {
                Expect::Private => fv < cf && fv > rf,
                Expect::Shared => fv > cf && fv < rf,
            };
            Ok(if conf {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if refu {
                Verdict::new(VerdictKind::Refuted, key)
            } else if between {
                inconclusive(Why::BelowThreshold(format!("private fraction {fv:.2} between {} and {}", cf.min(rf), cf.max(rf))), key)
            } else {
                inconclusive(Why::Noise(format!("private fraction interval [{flo:.2}, {fhi:.2}] spans both thresholds")), key)
            })
        }
        RuleKind::RatioToReference { reference_workload, reference_driver, confirm_min, confirm_max, refute_below, refute_above } => {
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            let (rw, rd) = (
                reference_workload.clone().unwrap_or_else(|| rule.workload.clone()),
                reference_driver.clone().unwrap_or_else(|| driver.to_string()),
            );
            if rd == driver && rw == rule.workload {
                return Err(Why::NotAClaim("reference equals subject".into()));
            }
            if let Some(b) = run.backends.get(&rd) {
                if !b.available && reference_driver.is_some() {
                    return Err(Why::BackendUnavailable(format!(
                        "reference {rd}: {}",
                        b.reason.clone().unwrap_or_default()
                    )));
                }
            }
            // The reference: same driver (host-direct IO on that backend's storage), else any
            // driver of the reference workload when it has just one (one backing filesystem).
            let mut refs = select(run, &rw, &rd, m, &BTreeMap::new(), false);
            if refs.is_err() && reference_driver.is_none() {
                let ds: BTreeSet<&str> =
                    run.cells.iter().filter(|c| c.workload == rw).map(|c| c.driver.as_str()).collect();
                if ds.len() == 1 {
                    refs = select(run, &rw, ds.iter().next().unwrap(), m, &BTreeMap::new(), false);
                }
            }
            let refs = refs.map_err(|w| match w {
                Why::WorkloadNotRun(s) => Why::WorkloadNotRun(format!("reference {s}")),
                o => Why::DriverNotRun(format!("reference: {}", o.text())),
            })?;
            let mut all = cells.clone();
            all.extend(refs.iter().copied());
            *marks = marks_of(run, &all);
            let mut outcomes = Vec::new();
            for c in &cells {
                // Same parameters on the keys both sides have.
                let matched: Vec<&&Cell> = refs
                    .iter()
                    .filter(|r| c.params.iter().all(|(k, v)| r.params.get(k).map(|rv| value_eq(rv, v)).unwrap_or(true)))
                    .collect();
                if matched.is_empty() {
                    continue;
                }
                let rs: Vec<f64> = matched.iter().flat_map(|r| r.metrics[m].samples.iter().copied()).collect();
                let a = stats::median_ci(&rs).unwrap();
                let b = stats::median_ci(&c.metrics[m].samples).unwrap();
                let label = cowbench_workloads::params_string(&c.params);
                points.push(point(driver, None, label.clone(), &b));
                points.push(point(&format!("{rd} ({rw})"), None, label.clone(), &a));
                if a.median <= 0.0 {
                    outcomes.push((VerdictKind::Inconclusive, f64::NAN, f64::NAN, f64::NAN, label, None));
                    continue;
                }
                let (r, lo, hi) = stats::ratio_interval(&a, &b);
                // Each parameter point passes the guards on its own: one impossible point makes
                // the driver's measurement invalid, one thin point leaves it open.
                if let Some(v) = guards(rule, lo, hi, &ratio_shown(r, lo, hi, &[&a, &b]), &[&a, &b], "") {
                    outcomes.push((v.kind, r, lo, hi, label, v.why));
                    continue;
                }
                let below = refute_below.unwrap_or(f64::NEG_INFINITY);
                let above = refute_above.unwrap_or(f64::INFINITY);
                let kind = if r >= *confirm_min && r <= *confirm_max && lo > below && hi < above {
                    VerdictKind::Confirmed
                } else if (r <= below && hi < *confirm_min) || (r >= above && lo > *confirm_max) {
                    VerdictKind::Refuted
                } else {
                    VerdictKind::Inconclusive
                };
                outcomes.push((kind, r, lo, hi, label, None));
            }
            if outcomes.is_empty() {
                return Err(Why::ParameterNotInProfile(format!("no {rw} cell on {rd} with the parameters of {}", rule.workload)));
            }
            let refd = if reference_driver.is_some() { rd.clone() } else { rw.clone() };
            let rs: Vec<f64> = outcomes.iter().map(|o| o.1).filter(|r| r.is_finite()).collect();
            let range = if rs.is_empty() {
                "reference median is 0".to_string()
            } else {
                let (mn, mx) = (rs.iter().copied().fold(f64::MAX, f64::min), rs.iter().copied().fold(f64::MIN, f64::max));
                if outcomes.len() == 1 {
                    format!("{} of {refd}", fmt_pct(mn))
                } else {
                    format!("{}…{} of {refd} over {} parameter sets", fmt_pct(mn), fmt_pct(mx), outcomes.len())
                }
            };
            Ok(if let Some(o) = outcomes.iter().find(|o| o.0 == VerdictKind::Refuted) {
                Verdict::new(VerdictKind::Refuted, format!("{} of {refd} at {}", fmt_pct(o.1), o.4))
            } else if let Some(o) = outcomes.iter().find(|o| o.0 == VerdictKind::Invalid) {
                let why = o.5.as_ref().map(|w| Why::InvalidMeasurement(format!("at {}: {}", o.4, w.detail())));
                Verdict { kind: VerdictKind::Invalid, why, key: format!("{} of {refd} at {}", fmt_pct(o.1), o.4), marks: Marks::default() }
            } else if outcomes.iter().all(|o| o.0 == VerdictKind::Confirmed) {
                Verdict::new(VerdictKind::Confirmed, range)
            } else {
                let o = outcomes.iter().find(|o| o.0 != VerdictKind::Confirmed).unwrap();
                let why = if let Some(w) = &o.5 {
                    w.clone()
                } else if !o.1.is_finite() {
                    Why::Noise("reference median is 0".into())
                } else if o.1 >= *confirm_min && o.1 <= *confirm_max {
                    Why::Noise(format!("at {}: ratio interval {} reaches the refute side", o.4, fmt_interval(o.2, o.3)))
                } else if o.1 > *confirm_max {
                    Why::BelowThreshold(format!(
                        "at {}: {} is above ×{confirm_max} but not beyond the refute line — caching, or storage ignoring O_DIRECT?",
                        o.4,
                        fmt_ratio(o.1)
                    ))
                } else {
                    Why::BelowThreshold(format!("at {}: {} outside [×{confirm_min}, ×{confirm_max}]", o.4, fmt_ratio(o.1)))
                };
                inconclusive(why, range)
            })
        }
        RuleKind::Rank { expect, competitors, margin, min_competitors } => {
            let higher_is_better = &super::check::higher_is_better(rule);
            let x = need_x(rule)?;
            let own = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            let mut field: Vec<(String, Vec<&Cell>)> = vec![(driver.to_string(), own)];
            let mut missing = Vec::new();
            for c in competitors.iter().filter(|c| *c != driver) {
                match select(run, &rule.workload, c, m, &rule.filter, false) {
                    Ok(cells) => field.push((c.clone(), cells)),
                    Err(_) => missing.push(c.clone()),
                }
            }
            let all: Vec<&Cell> = field.iter().flat_map(|(_, c)| c.iter().copied()).collect();
            *marks = marks_of(run, &all);
            // Rank only at an x every compared driver reached.
            let groups: Vec<(String, XGroups)> =
                field.iter().map(|(d, cells)| (d.clone(), by_x(cells, x, m))).collect();
            let xs_of = |g: &Vec<(f64, Vec<f64>)>| g.iter().map(|p| p.0.to_bits()).collect::<BTreeSet<u64>>();
            let mut common = xs_of(&groups[0].1);
            let mut used = vec![0usize];
            for (i, (_, g)) in groups.iter().enumerate().skip(1) {
                let inter: BTreeSet<u64> = common.intersection(&xs_of(g)).copied().collect();
                if inter.is_empty() {
                    missing.push(format!("{} (no {x} in common)", groups[i].0));
                } else {
                    common = inter;
                    used.push(i);
                }
            }
            let k = used.len() - 1;
            if k < *min_competitors {
                return Err(Why::DriverNotRun(format!(
                    "ranking needs ≥ {min_competitors} competitor(s) measured in this run; missing: {}",
                    missing.join(", ")
                )));
            }
            let xstar = f64::from_bits(*common.iter().max_by(|a, b| f64::from_bits(**a).partial_cmp(&f64::from_bits(**b)).unwrap()).unwrap());
            let cis: Vec<(String, MedianCi)> = used
                .iter()
                .map(|&i| {
                    let s = &groups[i].1.iter().find(|p| p.0 == xstar).unwrap().1;
                    (groups[i].0.clone(), stats::median_ci(s).unwrap())
                })
                .collect();
            for (d, ci) in &cis {
                points.push(point(d, Some(xstar), fmt_param(w, x, xstar), ci));
            }
            let key_all = || cis.iter().map(|(d, c)| format!("{d} {}", fmt_value(w, m, c.median))).collect::<Vec<_>>().join(", ");
            for (d, ci) in &cis {
                let shown = format!(
                    "of {d}: {} ({})",
                    fmt_value(w, m, ci.median),
                    stats::describe_interval(&fmt_value(w, m, ci.lo), &fmt_value(w, m, ci.hi), ci.n, ci.coverage)
                );
                if let Some(v) = invalid(rule, ci.lo, ci.hi, &shown, &format!("at {}: {}", fmt_param(w, x, xstar), key_all())) {
                    return Ok(v);
                }
            }
            let all_cis: Vec<&MedianCi> = cis.iter().map(|(_, c)| c).collect();
            if let Some(why) = too_few(rule, &all_cis) {
                return Ok(inconclusive(why, format!("at {}: {}", fmt_param(w, x, xstar), key_all())));
            }
            let better = |a: &MedianCi, b: &MedianCi| {
                if *higher_is_better {
                    a.median >= b.median * margin && a.lo > b.hi
                } else {
                    a.median * margin <= b.median && a.hi < b.lo
                }
            };
            let me = &cis[0].1;
            let beats = cis[1..].iter().filter(|(_, c)| better(me, c)).count();
            let loses = cis[1..].iter().filter(|(_, c)| better(c, me)).count();
            let half = k.div_ceil(2);
            let (conf, refu) = match expect {
                RankExpect::Best => (beats == k, loses >= 1),
                RankExpect::Worst => (loses == k, beats >= 1),
                RankExpect::Upper => (beats >= half && loses < half, loses >= half),
                RankExpect::Lower => (loses >= half && beats < half, beats >= half),
            };
            let mut order: Vec<&(String, MedianCi)> = cis.iter().collect();
            order.sort_by(|a, b| {
                let o = a.1.median.partial_cmp(&b.1.median).unwrap();
                if *higher_is_better { o.reverse() } else { o }
            });
            let key = format!(
                "at {}: {} (beats {beats}/{k}, beaten by {loses}/{k})",
                fmt_param(w, x, xstar),
                order.iter().map(|(d, c)| format!("{d} {}", fmt_value(w, m, c.median))).collect::<Vec<_>>().join(" < ").replace(" < ", if *higher_is_better { " > " } else { " < " })
            );
            Ok(if conf {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if refu {
                Verdict::new(VerdictKind::Refuted, key)
            } else {
                let undecided = k - beats - loses;
                if undecided > 0 {
                    inconclusive(Why::Noise(format!("{undecided} of {k} comparisons within noise (CIs overlap or < {margin}×)")), key)
                } else {
                    inconclusive(Why::BelowThreshold("position between the confirm and refute counts".into()), key)
                }
            })
        }
        RuleKind::Threshold { at, stat, confirm_max, refute_min } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let groups = by_x(&cells, x, m);
            push_points(w, driver, &groups, x, points);
            let g = match at {
                At::Max => groups.last(),
                At::Min => groups.first(),
            }
            .ok_or_else(|| Why::ParameterNotInProfile(format!("no {x} parameter in the cells")))?;
            if stat != "median" {
                return Err(Why::NotAClaim(format!("threshold supports stat = \"median\", not '{stat}'")));
            }
            let ci = stats::median_ci(&g.1).unwrap();
            let key = format!(
                "median {} at {} ({})",
                fmt_value(w, m, ci.median),
                fmt_param(w, x, g.0),
                stats::describe_interval(&fmt_value(w, m, ci.lo), &fmt_value(w, m, ci.hi), ci.n, ci.coverage)
            );
            let shown = format!(
                "{} ({})",
                fmt_value(w, m, ci.median),
                stats::describe_interval(&fmt_value(w, m, ci.lo), &fmt_value(w, m, ci.hi), ci.n, ci.coverage)
            );
            if let Some(v) = guards(rule, ci.lo, ci.hi, &shown, &[&ci], &key) {
                return Ok(v);
            }
            Ok(if ci.median <= *confirm_max && ci.hi < *refute_min {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if ci.median >= *refute_min && ci.lo > *confirm_max {
                Verdict::new(VerdictKind::Refuted, key)
            } else if ci.median <= *confirm_max || ci.median >= *refute_min {
                inconclusive(Why::Noise("the CI crosses both thresholds".into()), key)
            } else {
                inconclusive(
                    Why::BelowThreshold(format!("between {} and {}", fmt_value(w, m, *confirm_max), fmt_value(w, m, *refute_min))),
                    key,
                )
            })
        }
        RuleKind::Capacity { min } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, true)?;
            *marks = marks_of(run, &cells);
            // (x asked for, x reached) of every cell that succeeded.
            let ok: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.status == CellStatus::Ok)
                .filter_map(|c| Some((c.param_f64(x)?, capacity_reached(w, m, x, c)?)))
                .collect();
            let failed: Vec<f64> =
                cells.iter().filter(|c| c.status == CellStatus::Failed).filter_map(|c| c.param_f64(x)).collect();
            let best = ok.iter().map(|p| p.1).fold(0.0, f64::max);
            let first_fail = failed.iter().copied().filter(|f| *f > best).fold(f64::INFINITY, f64::min);
            // A cell that asked for at least `min` and stopped short of it (a host limit).
            let short = ok.iter().filter(|(asked, reached)| asked >= min && reached < min).map(|p| p.0).fold(f64::INFINITY, f64::min);
            let key = if first_fail.is_finite() {
                format!("{} reached, {} failed", fmt_param(w, x, best), fmt_param(w, x, first_fail))
            } else if short.is_finite() {
                format!("{} reached; the cell of {} stopped short", fmt_param(w, x, best), fmt_param(w, x, short))
            } else {
                format!("{} reached (largest in the sweep)", fmt_param(w, x, best))
            };
            // Success or failure of cells decides: no interval, one cell is a sample.
            if let Some(v) = invalid(rule, best, best, &fmt_param(w, x, best), &key) {
                return Ok(v);
            }
            Ok(if best >= *min {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if first_fail.is_finite() || short.is_finite() {
                Verdict::new(VerdictKind::Refuted, key)
            } else {
                return Err(Why::ParameterNotInProfile(format!(
                    "the largest {x} run is {best}; the rule needs ≥ {min} (full profile)"
                )));
            })
        }
        RuleKind::BeforeAfter { param, before, after, confirm_max_ratio, refute_min_ratio } => {
            let higher_is_better = &super::check::higher_is_better(rule);
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let side = |v: &serde_json::Value| -> Vec<f64> {
                cells
                    .iter()
                    .filter(|c| c.params.get(param).is_some_and(|p| value_eq(p, v)))
                    .flat_map(|c| c.metrics[m].samples.iter().copied())
                    .collect()
            };
            let (b0, a0) = (side(before), side(after));
            if b0.is_empty() || a0.is_empty() {
                return Err(Why::ParameterNotInProfile(format!("needs cells with {param}={} and {param}={}", show(before), show(after))));
            }
            let (bc, ac) = (stats::median_ci(&b0).unwrap(), stats::median_ci(&a0).unwrap());
            points.push(point(driver, None, show(before), &bc));
            points.push(point(driver, None, show(after), &ac));
            if bc.median <= 0.0 || ac.median <= 0.0 {
                return Ok(inconclusive(Why::Noise("a median is 0".into()), String::new()));
            }
            // Degradation as a ratio below 1 whatever the direction of the metric.
            let (r, lo, hi) = if *higher_is_better {
                stats::ratio_interval(&bc, &ac)
            } else {
                stats::ratio_interval(&ac, &bc)
            };
            let key = format!(
                "{} → {} ({} of before)",
                fmt_value(w, m, bc.median),
                fmt_value(w, m, ac.median),
                fmt_ratio(ac.median / bc.median)
            );
            if let Some(v) = guards(rule, lo, hi, &ratio_shown(r, lo, hi, &[&bc, &ac]), &[&bc, &ac], &key) {
                return Ok(v);
            }
            Ok(if r <= *confirm_max_ratio && hi < *refute_min_ratio {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if r >= *refute_min_ratio && lo > *confirm_max_ratio {
                Verdict::new(VerdictKind::Refuted, key)
            } else if r <= *confirm_max_ratio || r >= *refute_min_ratio {
                inconclusive(Why::Noise(format!("interval {} spans both thresholds", fmt_interval(lo, hi))), key)
            } else {
                inconclusive(Why::BelowThreshold(format!("between ×{confirm_max_ratio} and ×{refute_min_ratio}")), key)
            })
        }
        RuleKind::GrowthOverCycles { per_cycle_param, confirm_min_fraction, refute_max_fraction, min_points } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let mut pts: Vec<(f64, f64)> = Vec::new();
            let groups = by_x(&cells, x, m);
            if groups.len() >= 2 {
                for (xv, s) in &groups {
                    pts.extend(s.iter().map(|y| (*xv, *y)));
                }
                push_points(w, driver, &groups, x, points);
            } else {
                // One cell holding the series: within one repetition, sample i is the value
                // after cycle i+1 (several repetitions, or pooled runs, each hold a series).
                // A series is recognised by samples sharing a repetition index; samples that each
                // have their own index (or none) are one series in order.
                let metric = &cells[0].metrics[m];
                let reps: BTreeSet<u32> = metric.sample_rep.iter().copied().collect();
                let per_rep = metric.sample_rep.len() == metric.samples.len() && reps.len() < metric.samples.len();
                let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
                pts = metric
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, y)| {
                        let rep = if per_rep { metric.sample_rep[i] } else { 0 };
                        let k = seen.entry(rep).or_default();
                        *k += 1;
                        (*k as f64, *y)
                    })
                    .collect();
                for (xv, y) in &pts {
                    let ci = stats::median_ci(&[*y]).unwrap();
                    points.push(point(driver, Some(*xv), fmt_param(w, x, *xv), &ci));
                }
            }
            if pts.len() < *min_points {
                return Err(Why::ParameterNotInProfile(format!("{} points over {x}; the rule needs ≥ {min_points}", pts.len())));
            }
            let per = cells.iter().find_map(|c| c.param_f64(per_cycle_param)).ok_or_else(|| {
                Why::ParameterNotInProfile(format!("no '{per_cycle_param}' parameter: bytes written per cycle unknown"))
            })?;
            let fit = stats::ols(&pts).ok_or_else(|| Why::ParameterNotInProfile(format!("{x} does not vary")))?;
            let (f, flo, fhi) = (fit.slope / per, fit.slope_lo / per, fit.slope_hi / per);
            let key = format!(
                "{} per cycle = {:.0}% of the {} written per cycle, over {} cycles",
                fmt_value(w, m, fit.slope),
                f * 100.0,
                fmt_bytes(per),
                pts.iter().map(|p| p.0).fold(0.0, f64::max)
            );
            let shown = format!("{:.0}% (95% interval [{:.0}%, {:.0}%])", f * 100.0, flo * 100.0, fhi * 100.0);
            if let Some(v) = invalid(rule, flo, fhi, &shown, &key) {
                return Ok(v);
            }
            // The t interval of a slope needs one residual degree of freedom: three points.
            if pts.len() < rule.kind.min_samples() {
                return Ok(inconclusive(Why::TooFewSamples(format!("n={} points, needs ≥ {}", pts.len(), rule.kind.min_samples())), key));
            }
            Ok(if f >= *confirm_min_fraction && flo > *refute_max_fraction {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if f <= *refute_max_fraction && fhi < *confirm_min_fraction {
                Verdict::new(VerdictKind::Refuted, key)
            } else if f >= *confirm_min_fraction || f <= *refute_max_fraction {
                inconclusive(Why::Noise(format!("slope interval [{:.0}%, {:.0}%] spans both thresholds", flo * 100.0, fhi * 100.0)), key)
            } else {
                inconclusive(Why::BelowThreshold(format!("between {:.0}% and {:.0}%", refute_max_fraction * 100.0, confirm_min_fraction * 100.0)), key)
            })
        }
        RuleKind::MarginalCost { reference_metric, confirm_min_ratio, refute_max_ratio, min_span } => {
            let x = need_x(rule)?;
            let cells = select(run, &rule.workload, driver, m, &rule.filter, false)?;
            *marks = marks_of(run, &cells);
            let groups = by_x(&cells, x, m);
            let refs = by_x(&cells, x, reference_metric);
            push_points(w, driver, &groups, x, points);
            for (xv, s) in &refs {
                if let Some(ci) = stats::median_ci(s) {
                    points.push(point(&format!("{driver} ({reference_metric})"), Some(*xv), fmt_param(w, x, *xv), &ci));
                }
            }
            // Both lines over the same x values: the cells that recorded both metrics.
            let xs: BTreeSet<u64> = groups.iter().map(|g| g.0.to_bits()).filter(|b| refs.iter().any(|r| r.0.to_bits() == *b)).collect();
            let (groups, refs): (XGroups, XGroups) = (
                groups.into_iter().filter(|g| xs.contains(&g.0.to_bits())).collect(),
                refs.into_iter().filter(|g| xs.contains(&g.0.to_bits())).collect(),
            );
            if groups.len() < 2 {
                return Err(Why::ParameterNotInProfile(format!(
                    "{} value(s) of {x} with both {m} and {reference_metric}; the rule needs a sweep",
                    groups.len()
                )));
            }
            let (x0, x1) = sweep_span(w, x, &groups, *min_span)?;
            let line = |g: &XGroups| -> Result<(f64, f64, f64, MedianCi, MedianCi), Why> {
                let meds: Vec<(f64, f64)> = g.iter().map(|(xv, s)| (*xv, stats::median(s).unwrap())).collect();
                let fit = stats::ols(&meds).ok_or_else(|| Why::ParameterNotInProfile(format!("{x} does not vary")))?;
                let a = stats::median_ci(&g[0].1).unwrap();
                let b = stats::median_ci(&g[g.len() - 1].1).unwrap();
                // Conservative: the steepest and flattest lines through the end points' intervals.
                let dx = x1 - x0;
                Ok((fit.slope, ((b.lo - a.hi) / dx).min(fit.slope), ((b.hi - a.lo) / dx).max(fit.slope), a, b))
            };
            let (b, blo, bhi, ma, mb) = line(&groups)?;
            let (bref, rlo, rhi, ra, rb) = line(&refs)?;
            let ends = [&ma, &mb, &ra, &rb];
            if bref <= 0.0 {
                return Ok(inconclusive(
                    Why::Noise(format!("the reference {reference_metric} does not grow with {x} (slope {})", fmt_num(bref))),
                    String::new(),
                ));
            }
            let r = b / bref;
            let lo = if rhi > 0.0 { (blo / rhi).min(r) } else { f64::NEG_INFINITY };
            let hi = if rlo > 0.0 { (bhi / rlo).max(r) } else { f64::INFINITY };
            // Per the unit of x the sweep is in: a MiB for sizes, one for counts.
            let unit = if cowbench_workloads::params::param_spec(w, x).is_some_and(|p| matches!(p.kind, cowbench_workloads::ParamKind::Bytes)) {
                1024.0 * 1024.0
            } else {
                1.0
            };
            let key = format!(
                "{} of the reference: {} vs {} per {} of {x} ({} to {})",
                fmt_ratio(r),
                fmt_value(w, m, b * unit),
                fmt_value(w, m, bref * unit),
                fmt_param(w, x, unit),
                fmt_param(w, x, x0),
                fmt_param(w, x, x1)
            );
            if let Some(v) = guards(rule, lo, hi, &ratio_shown(r, lo, hi, &ends), &ends, &key) {
                return Ok(v);
            }
            Ok(if r >= *confirm_min_ratio && lo > *refute_max_ratio {
                Verdict::new(VerdictKind::Confirmed, key)
            } else if r <= *refute_max_ratio && hi < *confirm_min_ratio {
                Verdict::new(VerdictKind::Refuted, key)
            } else if r >= *confirm_min_ratio || r <= *refute_max_ratio {
                inconclusive(Why::Noise(format!("slope ratio interval {} spans both thresholds", fmt_interval(lo, hi))), key)
            } else {
                inconclusive(Why::BelowThreshold(format!("between ×{refute_max_ratio} and ×{confirm_min_ratio}")), key)
            })
        }
    }
}

/// How far an ok cell got for a capacity rule on `x`: its x; or, when the rule's metric is a
/// count of what the cell reached (a cell stopped by a host limit is a result, not a failure),
/// the smaller of its x and the fewest any of its repetitions reached. None without samples.
fn capacity_reached(w: &str, m: &str, x: &str, c: &Cell) -> Option<f64> {
    let asked = c.param_f64(x)?;
    let s = c.samples(m).filter(|s| !s.is_empty())?;
    let counts = cowbench_workloads::metric_spec(w, m).is_some_and(|spec| spec.unit == cowbench_workloads::Unit::Count);
    Some(if counts { s.iter().copied().fold(asked, f64::min) } else { asked })
}

fn push_points(w: &str, driver: &str, groups: &[(f64, Vec<f64>)], x: &str, points: &mut Vec<Point>) {
    for (xv, s) in groups {
        if let Some(ci) = stats::median_ci(s) {
            points.push(point(driver, Some(*xv), fmt_param(w, x, *xv), &ci));
        }
    }
}

fn fmt_interval(lo: f64, hi: f64) -> String {
    format!("[{}, {}]", fmt_ratio(lo), fmt_ratio(hi))
}

/// The ends of a sweep (ascending groups, at least two), when it spans at least `min_span`.
fn sweep_span(w: &str, x: &str, groups: &[(f64, Vec<f64>)], min_span: f64) -> Result<(f64, f64), Why> {
    let (x0, x1) = (groups[0].0, groups[groups.len() - 1].0);
    let span = if x0 > 0.0 { x1 / x0 } else { f64::INFINITY };
    if span < min_span {
        return Err(Why::ParameterNotInProfile(format!(
            "{x} spans {}…{} (×{span:.0}); the rule needs ×{min_span}",
            fmt_param(w, x, x0),
            fmt_param(w, x, x1)
        )));
    }
    Ok((x0, x1))
}

/// Ratio of the end points of a sweep, its interval and the log-log slope.
#[allow(clippy::type_complexity)]
fn sweep_ends(
    w: &str,
    driver: &str,
    x: &str,
    metric: &str,
    cells: &[&Cell],
    min_span: f64,
    fit: Fit,
    points: &mut Vec<Point>,
) -> Result<(MedianCi, MedianCi, f64, f64, f64, f64, String), Why> {
    let groups = by_x(cells, x, metric);
    push_points(w, driver, &groups, x, points);
    if groups.len() < 2 {
        return Err(Why::ParameterNotInProfile(format!(
            "{x} has {} value(s) here; the rule needs a sweep",
            groups.len()
        )));
    }
    let (x0, x1) = sweep_span(w, x, &groups, min_span)?;
    let a = stats::median_ci(&groups[0].1).unwrap();
    let b = stats::median_ci(&groups[groups.len() - 1].1).unwrap();
    let meds: Vec<(f64, f64)> = groups.iter().map(|(xv, s)| (*xv, stats::median(s).unwrap())).collect();
    let fit_pts: Vec<(f64, f64)> = match fit {
        Fit::All => meds.clone(),
        Fit::Upper => {
            let mid = (x0.max(f64::MIN_POSITIVE) * x1).sqrt();
            let up: Vec<(f64, f64)> = meds.iter().copied().filter(|p| p.0 >= mid).collect();
            if up.len() >= 2 { up } else { meds.clone() }
        }
    };
    let slope = stats::loglog_slope(&fit_pts).unwrap_or(0.0);
    if a.median <= 0.0 {
        return Err(Why::CellsFailed(format!("{metric} median at {} is 0", fmt_param(w, x, x0))));
    }
    let (r, lo, hi) = stats::ratio_interval(&a, &b);
    let key = format!(
        "{} from {} to {}, slope {:.2}",
        fmt_ratio(r),
        fmt_param(w, x, x0),
        fmt_param(w, x, x1),
        slope
    );
    Ok((a, b, r, lo, hi, slope, key))
}

/// The rule in words, with its thresholds (printed under every claim).
pub fn rule_text(rule: &Rule) -> String {
    let x = rule.x.clone().unwrap_or_default();
    let sel = {
        let f: Vec<String> = rule.filter.iter().map(|(k, v)| format!("{k}={}", show(v))).collect();
        let w = if f.is_empty() { String::new() } else { format!(" where {}", f.join(", ")) };
        format!("`{}` of workload `{}`{w}", rule.metric, rule.workload)
    };
    let body = match &rule.kind {
        RuleKind::Growth { min_ratio, min_slope, refute_max_ratio, fit, min_span } => format!(
            "growth over `{x}` (sweep ≥ ×{min_span}): confirmed when the median grows ≥ ×{min_ratio} from the smallest to the largest `{x}`, the log-log slope{} is ≥ {min_slope} and the 95% CIs of the two medians do not overlap (ratio interval above ×{}); refuted when it grows ≤ ×{refute_max_ratio} with the ratio interval below ×{min_ratio}; inconclusive otherwise.",
            if *fit == Fit::Upper { " over the upper half of the sweep" } else { "" },
            refute_max_ratio.max(1.0)
        ),
        RuleKind::Flat { max_ratio, max_abs_slope, refute_min_ratio, refute_min_slope, min_span } => format!(
            "flat over `{x}` (sweep ≥ ×{min_span}): confirmed when the median changes ≤ ×{max_ratio} from the smallest to the largest `{x}` with |log-log slope| ≤ {max_abs_slope} and the ratio interval below ×{refute_min_ratio}; refuted when it grows ≥ ×{refute_min_ratio} with slope ≥ {refute_min_slope} and the ratio interval above ×{max_ratio}; inconclusive otherwise."
        ),
        RuleKind::ScalingWithN { expect, confirm_fraction, refute_fraction, min_span } => format!(
            "scaling with `{x}` (sweep ≥ ×{min_span}): copies c = median(N max)/median(N min), private fraction f = (c−1)/(N−1). Expect {}: confirmed when f {} {confirm_fraction} with its interval clear of {refute_fraction}; refuted when f {} {refute_fraction} with its interval clear of {confirm_fraction}.",
            match expect { Expect::Private => "N private copies", Expect::Shared => "one shared copy" },
            match expect { Expect::Private => "≥", Expect::Shared => "≤" },
            match expect { Expect::Private => "≤", Expect::Shared => "≥" },
        ),
        RuleKind::RatioToReference { reference_workload, reference_driver, confirm_min, confirm_max, refute_below, refute_above } => format!(
            "ratio to the reference ({}) for the same parameters: confirmed when every ratio lies in [×{confirm_min}, ×{confirm_max}] with its interval clear of the refute lines; refuted when one lies {}{} with its interval clear of the band; inconclusive otherwise.",
            match (reference_workload, reference_driver) {
                (Some(w), _) => format!("workload `{w}` on the same backend"),
                (None, Some(d)) => format!("driver `{d}`"),
                _ => "?".into(),
            },
            refute_below.map(|b| format!("≤ ×{b}")).unwrap_or_default(),
            refute_above.map(|a| format!("{}≥ ×{a}", if refute_below.is_some() { " or " } else { "" })).unwrap_or_default(),
        ),
        RuleKind::Rank { expect, competitors, margin, min_competitors } => format!(
            "rank at the largest `{x}` every compared driver reached, {} is better, against {} (≥ {min_competitors} measured). A clearly beats B when its median is better by ≥ {margin}× and the 95% CIs do not overlap. Expect {}: {}.",
            if super::check::higher_is_better(rule) { "higher" } else { "lower" },
            competitors.join(", "),
            format!("{expect:?}").to_lowercase(),
            match expect {
                RankExpect::Best => "confirmed when it clearly beats every competitor, refuted when one clearly beats it",
                RankExpect::Worst => "confirmed when every competitor clearly beats it, refuted when it clearly beats one",
                RankExpect::Upper => "confirmed when it clearly beats at least half and fewer than half clearly beat it, refuted when at least half clearly beat it",
                RankExpect::Lower => "confirmed when at least half clearly beat it and it clearly beats fewer than half, refuted when it clearly beats at least half",
            }
        ),
        RuleKind::Threshold { at, stat, confirm_max, refute_min } => format!(
            "threshold on the {stat} at the {} `{x}`: confirmed when it is ≤ {} and its 95% CI stays below {}; refuted when it is ≥ {} and its CI stays above {}; inconclusive otherwise.",
            match at { At::Max => "largest", At::Min => "smallest" },
            fmt_value(&rule.workload, &rule.metric, *confirm_max), fmt_value(&rule.workload, &rule.metric, *refute_min),
            fmt_value(&rule.workload, &rule.metric, *refute_min), fmt_value(&rule.workload, &rule.metric, *confirm_max)
        ),
        RuleKind::Capacity { min } => format!(
            "capacity: confirmed when a cell with `{x}` ≥ {min} succeeded (reached it, where the metric counts what was reached); refuted when the sweep failed, or a cell stopped short, before {min}; not measured when the sweep stops below {min}{}.",
            if rule.required { "" } else { " (optional part)" }
        ),
        RuleKind::BeforeAfter { param, before, after, confirm_max_ratio, refute_min_ratio } => format!(
            "before/after on `{param}` ({} → {}), {} is better: confirmed when after/before (as a degradation ratio) ≤ ×{confirm_max_ratio} with its interval below ×{refute_min_ratio}; refuted when ≥ ×{refute_min_ratio} with its interval above ×{confirm_max_ratio}.",
            show(before), show(after), if super::check::higher_is_better(rule) { "higher" } else { "lower" }
        ),
        RuleKind::GrowthOverCycles { per_cycle_param, confirm_min_fraction, refute_max_fraction, min_points } => format!(
            "growth over `{x}` (≥ {min_points} points): least-squares slope with its 95% interval, divided by `{per_cycle_param}`. Confirmed when ≥ {:.0}% of each cycle's writes stays allocated with the interval above {:.0}%; refuted when ≤ {:.0}% with the interval below {:.0}%.",
            confirm_min_fraction * 100.0, refute_max_fraction * 100.0, refute_max_fraction * 100.0, confirm_min_fraction * 100.0
        ),
        RuleKind::MarginalCost { reference_metric, confirm_min_ratio, refute_max_ratio, min_span } => format!(
            "marginal cost over `{x}` (sweep ≥ ×{min_span}): least-squares lines metric = a + b·x and `{reference_metric}` = a' + b_ref·x over the medians per x (same cells); r = b/b_ref with a conservative interval from the end points' intervals. Confirmed when r ≥ ×{confirm_min_ratio} with its interval above ×{refute_max_ratio}; refuted when r ≤ ×{refute_max_ratio} with its interval below ×{confirm_min_ratio}; inconclusive otherwise."
        ),
    };
    let k = rule.kind.min_samples();
    let samples = match &rule.kind {
        RuleKind::Capacity { .. } => String::new(),
        RuleKind::GrowthOverCycles { .. } => format!(" The slope interval needs ≥ {k} points (fewer: inconclusive, too few samples)."),
        _ => format!(
            " Intervals of a median are 95% CIs only from {k} samples on: a group with fewer leaves the rule inconclusive (too few samples)."
        ),
    };
    let valid = match rule.valid_bounds() {
        (None, None) => String::new(),
        (lo, hi) => format!(
            " Valid range of the {}: {}; an interval wholly outside is an invalid measurement{}, never a verdict.",
            rule.kind.decided(),
            match (lo, hi) {
                (Some(l), Some(h)) => format!("[{}, {}]", fmt_num(l), fmt_num(h)),
                (Some(l), None) => format!("≥ {}", fmt_num(l)),
                (None, Some(h)) => format!("≤ {}", fmt_num(h)),
                (None, None) => unreachable!(),
            },
            rule.invalid_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    };
    format!("{sel} — {body}{samples}{valid}")
}
