//! The claims of the trade-off table as data (`harness/claims.toml`) and the engine that turns
//! raw samples into a verdict for each: confirmed, refuted, inconclusive (and why) or not
//! measured (and why). Everything here is a pure function of the samples; the decision rule of
//! every claim is written in claims.toml and documented there.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub mod check;
pub mod evidence;
pub mod needs;
pub mod rules;
pub mod stats;

pub use evidence::{Backend, RunEvidence};
pub use rules::{evaluate_claim, evaluate_all};

/// The claims file shipped with cowbench.
pub const DEFAULT_CLAIMS_TOML: &str = include_str!("../../claims.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimSet {
    #[serde(rename = "row")]
    pub rows: Vec<Row>,
    #[serde(rename = "claim")]
    pub claims: Vec<Claim>,
}

/// One row of the table: the four cells in English and the claims that give evidence for each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub driver: String,
    pub traits: String,
    pub advantage: String,
    pub disadvantage: String,
    pub suited_for: String,
    #[serde(default)]
    pub traits_claims: Vec<String>,
    #[serde(default)]
    pub advantage_claims: Vec<String>,
    #[serde(default)]
    pub disadvantage_claims: Vec<String>,
    #[serde(default)]
    pub suited_for_claims: Vec<String>,
    #[serde(default)]
    pub traits_note: Option<String>,
    #[serde(default)]
    pub advantage_note: Option<String>,
    #[serde(default)]
    pub disadvantage_note: Option<String>,
    #[serde(default)]
    pub suited_for_note: Option<String>,
}

impl Row {
    /// (column title, text, claim ids, note) for the four cells.
    pub fn cells(&self) -> [(&'static str, &str, &[String], Option<&str>); 4] {
        [
            ("Traits", &self.traits, &self.traits_claims, self.traits_note.as_deref()),
            ("Advantage", &self.advantage, &self.advantage_claims, self.advantage_note.as_deref()),
            ("Disadvantage", &self.disadvantage, &self.disadvantage_claims, self.disadvantage_note.as_deref()),
            ("Suited for", &self.suited_for, &self.suited_for_claims, self.suited_for_note.as_deref()),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Every subject driver must confirm; one refutation refutes.
    #[default]
    All,
    /// One confirmation confirms; every measured subject must refute to refute.
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub id: String,
    pub statement: String,
    pub source: String,
    pub workloads: Vec<String>,
    pub drivers: Vec<String>,
    #[serde(default)]
    pub aggregate: Aggregate,
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

/// A decision rule: which samples, and how they decide.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rule {
    /// Name of this part of the claim when a claim has several rules.
    #[serde(default)]
    pub label: Option<String>,
    pub workload: String,
    pub metric: String,
    /// The swept parameter.
    #[serde(default)]
    pub x: Option<String>,
    /// Parameter filters; "max"/"min" pick the largest/smallest value present.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, serde_json::Value>,
    /// A rule that could not be measured does not block the claim's verdict when false.
    #[serde(default = "yes")]
    pub required: bool,
    /// Physically possible range of the rule's decided quantity (see [`RuleKind::decided`]): a
    /// value whose whole interval lies outside it is an invalid measurement, never a verdict.
    #[serde(default)]
    pub valid_min: Option<f64>,
    #[serde(default)]
    pub valid_max: Option<f64>,
    /// What an out-of-bounds value means, printed with the invalid verdict ("faster than bare
    /// metal: cache artefact, excluded").
    #[serde(default)]
    pub invalid_reason: Option<String>,
    #[serde(flatten)]
    pub kind: RuleKind,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    All,
    Upper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Private,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankExpect {
    Best,
    Worst,
    Upper,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum At {
    Min,
    Max,
}

/// The rule kinds; claims.toml documents each one's exact semantics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleKind {
    Growth { min_ratio: f64, min_slope: f64, refute_max_ratio: f64, fit: Fit, min_span: f64 },
    Flat { max_ratio: f64, max_abs_slope: f64, refute_min_ratio: f64, refute_min_slope: f64, min_span: f64 },
    ScalingWithN { expect: Expect, confirm_fraction: f64, refute_fraction: f64, min_span: f64 },
    RatioToReference {
        #[serde(default)]
        reference_workload: Option<String>,
        #[serde(default)]
        reference_driver: Option<String>,
        confirm_min: f64,
        confirm_max: f64,
        #[serde(default)]
        refute_below: Option<f64>,
        #[serde(default)]
        refute_above: Option<f64>,
    },
    /// Better is the direction the metric's spec says ([`check::higher_is_better`]).
    Rank {
        expect: RankExpect,
        competitors: Vec<String>,
        margin: f64,
        min_competitors: usize,
    },
    Threshold { at: At, stat: String, confirm_max: f64, refute_min: f64 },
    Capacity { min: f64 },
    BeforeAfter {
        param: String,
        before: serde_json::Value,
        after: serde_json::Value,
        confirm_max_ratio: f64,
        refute_min_ratio: f64,
    },
    GrowthOverCycles {
        per_cycle_param: String,
        confirm_min_fraction: f64,
        refute_max_fraction: f64,
        min_points: usize,
    },
    /// Slope of `metric` over x against the slope of `reference_metric` (same workload, same
    /// cells): the marginal cost per unit of x, as a ratio to a reference operation's.
    MarginalCost { reference_metric: String, confirm_min_ratio: f64, refute_max_ratio: f64, min_span: f64 },
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Growth { .. } => "growth",
            RuleKind::Flat { .. } => "flat",
            RuleKind::ScalingWithN { .. } => "scaling_with_n",
            RuleKind::RatioToReference { .. } => "ratio_to_reference",
            RuleKind::Rank { .. } => "rank",
            RuleKind::Threshold { .. } => "threshold",
            RuleKind::Capacity { .. } => "capacity",
            RuleKind::BeforeAfter { .. } => "before_after",
            RuleKind::GrowthOverCycles { .. } => "growth_over_cycles",
            RuleKind::MarginalCost { .. } => "marginal_cost",
        }
    }

    /// What `valid_min`/`valid_max` bound: the quantity the rule decides on.
    pub fn decided(&self) -> &'static str {
        match self {
            RuleKind::Growth { .. } | RuleKind::Flat { .. } => "ratio r of the end medians",
            RuleKind::ScalingWithN { .. } => "copies c",
            RuleKind::RatioToReference { .. } => "ratio r to the reference",
            RuleKind::Rank { .. } => "each driver's median",
            RuleKind::Threshold { .. } => "the median",
            RuleKind::Capacity { .. } => "the largest x reached",
            RuleKind::BeforeAfter { .. } => "degradation ratio after/before",
            RuleKind::GrowthOverCycles { .. } => "fraction of each cycle's writes kept",
            RuleKind::MarginalCost { .. } => "slope ratio r = b/b_ref",
        }
    }

    /// Fewest samples each deciding group needs: the order-statistic median CI reaches 95%
    /// coverage only from [`stats::min_n_95`] samples on; the least-squares slope of
    /// `growth_over_cycles` has a t interval from 3 points (one residual degree of freedom);
    /// `capacity` decides on whether cells succeeded, one cell is enough.
    pub fn min_samples(&self) -> usize {
        match self {
            RuleKind::Capacity { .. } => 1,
            RuleKind::GrowthOverCycles { .. } => 3,
            _ => stats::min_n_95(),
        }
    }
}

impl Rule {
    /// The validity bounds, with the implicit ones: `scaling_with_n` readers cannot hold fewer
    /// than one copy of what they read (c ≥ 1).
    pub fn valid_bounds(&self) -> (Option<f64>, Option<f64>) {
        let min = match self.kind {
            RuleKind::ScalingWithN { .. } => Some(self.valid_min.unwrap_or(1.0)),
            _ => self.valid_min,
        };
        (min, self.valid_max)
    }
}

impl ClaimSet {
    /// The claims shipped with cowbench.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_CLAIMS_TOML).expect("harness/claims.toml parses (checked by tests)")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let set: ClaimSet = toml::from_str(text).context("parsing claims")?;
        set.check()?;
        Ok(set)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn claim(&self, id: &str) -> Option<&Claim> {
        self.claims.iter().find(|c| c.id == id)
    }

    /// Ids unique, every row's claim ids exist, every claim has a rule, and every workload,
    /// metric, parameter and driver a claim names exists ([`check::names`]).
    fn check(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.claims {
            anyhow::ensure!(seen.insert(c.id.as_str()), "claim id '{}' appears twice", c.id);
            anyhow::ensure!(!c.rules.is_empty(), "claim '{}' has no rule", c.id);
            anyhow::ensure!(!c.drivers.is_empty(), "claim '{}' names no driver", c.id);
        }
        for r in &self.rows {
            for (col, _, ids, _) in r.cells() {
                for id in ids {
                    anyhow::ensure!(seen.contains(id.as_str()), "row {} ({col}) names unknown claim '{id}'", r.driver);
                }
            }
        }
        check::names(self)
    }
}

/// The verdicts. `Invalid`: the measurement is physically impossible or was not taken as
/// intended; never counted as a confirmation or a refutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Confirmed,
    Refuted,
    Inconclusive,
    Invalid,
    NotMeasured,
}

impl VerdictKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            VerdictKind::Confirmed => "confirmed",
            VerdictKind::Refuted => "refuted",
            VerdictKind::Inconclusive => "inconclusive",
            VerdictKind::Invalid => "invalid",
            VerdictKind::NotMeasured => "not measured",
        }
    }
    pub fn symbol(&self) -> &'static str {
        match self {
            VerdictKind::Confirmed => "✔",
            VerdictKind::Refuted => "✘",
            VerdictKind::Inconclusive => "?",
            VerdictKind::Invalid => "⚠",
            VerdictKind::NotMeasured => "–",
        }
    }
}

/// Why a verdict is inconclusive or not measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", content = "detail", rename_all = "snake_case")]
pub enum Why {
    /// The 95% intervals reach both the confirm and the refute side.
    Noise(String),
    /// The effect lies between the confirm and the refute thresholds.
    BelowThreshold(String),
    /// A deciding group has fewer samples than the rule's interval needs ("n=2, needs ≥ 6").
    TooFewSamples(String),
    /// The decided quantity is physically impossible (outside `valid_min`/`valid_max`).
    InvalidMeasurement(String),
    /// Subjects disagree, or parts of the claim do.
    Mixed(String),
    /// The backend could not run here (probe reason).
    BackendUnavailable(String),
    /// The backend was not part of this run.
    DriverNotRun(String),
    WorkloadNotRun(String),
    ParameterNotInProfile(String),
    /// Cells ran but failed or were skipped (their reason).
    CellsFailed(String),
    /// The claim is not something a benchmark decides.
    NotAClaim(String),
}

impl Why {
    /// The detail without the kind's prefix.
    pub fn detail(&self) -> &str {
        match self {
            Why::Noise(s)
            | Why::BelowThreshold(s)
            | Why::TooFewSamples(s)
            | Why::InvalidMeasurement(s)
            | Why::Mixed(s)
            | Why::BackendUnavailable(s)
            | Why::DriverNotRun(s)
            | Why::WorkloadNotRun(s)
            | Why::ParameterNotInProfile(s)
            | Why::CellsFailed(s)
            | Why::NotAClaim(s) => s,
        }
    }

    /// The same kind of reason with another detail.
    pub fn with_detail(&self, d: String) -> Why {
        match self {
            Why::Noise(_) => Why::Noise(d),
            Why::BelowThreshold(_) => Why::BelowThreshold(d),
            Why::TooFewSamples(_) => Why::TooFewSamples(d),
            Why::InvalidMeasurement(_) => Why::InvalidMeasurement(d),
            Why::Mixed(_) => Why::Mixed(d),
            Why::BackendUnavailable(_) => Why::BackendUnavailable(d),
            Why::DriverNotRun(_) => Why::DriverNotRun(d),
            Why::WorkloadNotRun(_) => Why::WorkloadNotRun(d),
            Why::ParameterNotInProfile(_) => Why::ParameterNotInProfile(d),
            Why::CellsFailed(_) => Why::CellsFailed(d),
            Why::NotAClaim(_) => Why::NotAClaim(d),
        }
    }

    /// The kind of reason alone (for compact cells where the key number already speaks).
    pub fn short(&self) -> &'static str {
        match self {
            Why::Noise(_) => "noise",
            Why::BelowThreshold(_) => "effect below threshold",
            Why::TooFewSamples(_) => "too few samples",
            Why::InvalidMeasurement(_) => "invalid measurement",
            Why::Mixed(_) => "parts disagree or are open",
            Why::BackendUnavailable(_) => "backend unavailable",
            Why::DriverNotRun(_) => "driver not run",
            Why::WorkloadNotRun(_) => "workload not run",
            Why::ParameterNotInProfile(_) => "parameter not in this profile",
            Why::CellsFailed(_) => "cells failed",
            Why::NotAClaim(_) => "not a measurable claim",
        }
    }

    /// Reasons that are the verdict's headline, shown before the key number: "inconclusive:
    /// too few samples (n=2, needs ≥ 6) — …", "invalid: faster than bare metal … — …".
    pub fn leads(&self) -> bool {
        matches!(self, Why::TooFewSamples(_) | Why::InvalidMeasurement(_))
    }

    pub fn text(&self) -> String {
        match self {
            Why::Noise(s) => format!("noise: {s}"),
            Why::BelowThreshold(s) => format!("effect below threshold: {s}"),
            Why::TooFewSamples(s) => format!("too few samples ({s})"),
            Why::InvalidMeasurement(s) => s.clone(),
            Why::Mixed(s) => format!("mixed: {s}"),
            Why::BackendUnavailable(s) => format!("backend unavailable: {s}"),
            Why::DriverNotRun(s) => format!("driver not run: {s}"),
            Why::WorkloadNotRun(s) => format!("workload not run: {s}"),
            Why::ParameterNotInProfile(s) => format!("parameter not in this profile: {s}"),
            Why::CellsFailed(s) => format!("cells failed: {s}"),
            Why::NotAClaim(s) => s.clone(),
        }
    }
}

/// Conditions a verdict was obtained under; always shown beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// Stand-in implementations that produced the samples (e.g. "aufs (unionfs-fuse stand-in)").
    pub stand_in: Vec<String>,
    pub loop_backed: bool,
    pub vm: bool,
}

impl Marks {
    pub fn merge(&mut self, o: &Marks) {
        for s in &o.stand_in {
            if !self.stand_in.contains(s) {
                self.stand_in.push(s.clone());
            }
        }
        self.loop_backed |= o.loop_backed;
        self.vm |= o.vm;
    }
    pub fn labels(&self) -> Vec<String> {
        let mut v = Vec::new();
        for s in &self.stand_in {
            v.push(format!("stand-in: {s}"));
        }
        if self.loop_backed {
            v.push("loop-backed storage".into());
        }
        if self.vm {
            v.push("VM".into());
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub why: Option<Why>,
    /// The number that decided, e.g. "×812 from 4 KiB to 64 MiB, slope 0.93".
    pub key: String,
    pub marks: Marks,
}

impl Verdict {
    pub fn new(kind: VerdictKind, key: impl Into<String>) -> Self {
        Verdict { kind, why: None, key: key.into(), marks: Marks::default() }
    }
    pub fn because(kind: VerdictKind, why: Why, key: impl Into<String>) -> Self {
        Verdict { kind, why: Some(why), key: key.into(), marks: Marks::default() }
    }
    pub fn not_measured(why: Why) -> Self {
        Self::because(VerdictKind::NotMeasured, why, "")
    }
    /// One line: "confirmed — ×812 … [stand-in …]" or "not measured — why".
    pub fn summary(&self) -> String {
        let mut s = self.kind.as_str().to_string();
        let lead = self.why.as_ref().filter(|w| w.leads());
        if let Some(w) = lead {
            s.push_str(&format!(": {}", w.text()));
        }
        if !self.key.is_empty() {
            s.push_str(&format!(" — {}", self.key));
        }
        if let Some(w) = self.why.as_ref().filter(|_| lead.is_none()) {
            s.push_str(&format!(" ({})", w.text()));
        }
        let marks = self.marks.labels();
        if !marks.is_empty() {
            s.push_str(&format!(" [{}]", marks.join("; ")));
        }
        s
    }
}

/// One group of samples: a driver at one x value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub driver: String,
    /// The x parameter's value (None when the rule has no x).
    pub x: Option<f64>,
    /// Label of the group (x value, or e.g. "before"/"after").
    pub label: String,
    pub n: usize,
    pub median: f64,
    pub ci_lo: f64,
    pub ci_hi: f64,
    pub ci_coverage: f64,
}

/// What one rule decided for one driver, with the numbers it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleOutcome {
    pub label: Option<String>,
    pub kind: String,
    pub workload: String,
    /// The metric of `points` (unit in the name).
    pub metric: String,
    pub required: bool,
    pub verdict: Verdict,
    pub points: Vec<Point>,
    /// The rule in words, with its thresholds.
    pub rule_text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverVerdict {
    pub driver: String,
    pub implementation: Option<String>,
    /// A stand-in ran this driver (unionfs-fuse for aufs, zfs-fuse for zfs): its verdict is
    /// shown, but decides a claim about several drivers only when no kernel driver does.
    #[serde(default)]
    pub stand_in: bool,
    pub verdict: Verdict,
    pub rules: Vec<RuleOutcome>,
}

/// A claim's verdict in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimVerdict {
    pub claim: String,
    pub run: String,
    pub verdict: Verdict,
    pub drivers: Vec<DriverVerdict>,
}
