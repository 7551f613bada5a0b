//! cowbench-workloads: what each workload measures, with which parameters, and why.
//!
//! One workload, one file: `<id>.rs` holds its typed parameters, its cells per profile, its
//! metric specs and its executor. The executor is written against the [`lab::Lab`] trait —
//! the driver, images, containers running the in-container probe, cache drops and space and
//! memory accounting, all given by the harness — so this crate knows nothing of the harness,
//! the runner loop can be tested without root, and [`all`] is the only registry: a workload
//! without an executor does not compile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod copyup;
pub mod density;
pub mod sharedcache;
pub mod churn;
pub mod fragmentation;
pub mod concurrent;
pub mod lookup;
pub mod metadata;
pub mod seqio;
pub mod randio;
pub mod baremetal;
pub mod layers;
pub mod parallel_append;
/// The in-container probe (crate `cowbench-probe`, workloads/probe/): its protocol and operations.
pub use cowbench_probe as probe;
pub mod lab;
pub mod images;
pub mod kit;
pub mod fileio;
pub mod metric;
pub mod params;

pub use metric::{Better, MetricSpec, Unit};
pub use params::{ParamKind, ParamSet, ParamSpec};

/// How much of a workload's sweep to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A subset that keeps the default `cowbench run` (every workload × every driver) short.
    Quick,
    /// The whole sweep; may take hours.
    Full,
}

impl Profile {
    pub fn as_str(&self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quick" => Ok(Profile::Quick),
            "full" => Ok(Profile::Full),
            o => Err(format!("unknown profile '{o}' (quick or full)")),
        }
    }
}

/// Parameters of one cell, as stored in results: name → JSON value (numbers, strings, bools).
/// Each workload has a typed struct that converts to and from this map.
pub type Params = BTreeMap<String, serde_json::Value>;

/// `k=v;k=v` in key order: how a cell's parameters appear in CSV and cell keys.
pub fn params_string(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Typed parameters of a workload: serialisable to a flat [`Params`] map.
pub trait TypedParams: Serialize + for<'de> Deserialize<'de> + Sized {
    fn to_params(&self) -> Params {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
            _ => Params::new(),
        }
    }
    fn from_params(p: &Params) -> Result<Self, String> {
        let obj: serde_json::Map<String, serde_json::Value> = p.clone().into_iter().collect();
        serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| format!("bad parameters: {e}"))
    }
}

/// Why a cell did not run.
#[derive(Debug)]
pub enum SetupError {
    /// The backend cannot do what the cell needs (capability missing ...): recorded as skipped,
    /// with this reason.
    Skip(String),
    Fail(anyhow::Error),
}

impl From<anyhow::Error> for SetupError {
    fn from(e: anyhow::Error) -> Self {
        SetupError::Fail(e)
    }
}

impl From<cowbench_drivers::Error> for SetupError {
    fn from(e: cowbench_drivers::Error) -> Self {
        SetupError::Fail(e.into())
    }
}

/// `(metric name, value)` pairs of one repetition.
pub type RepSamples = Vec<(&'static str, f64)>;

/// A cell being executed: set up (untimed) by [`Workload::setup`], then one call per
/// repetition; the runner decides which repetitions are warm-up and drops caches before each
/// when the workload asks.
pub trait CellExec {
    /// One repetition (warm-up or recorded; the runner decides which are kept).
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples>;
    /// Facts worth keeping with the cell (image, layer counts ...).
    fn notes(&self) -> lab::Notes {
        lab::Notes::new()
    }
    /// Release what setup made. Called after the last repetition, also after a failure.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// A workload: what it measures, with which parameters, and how.
pub trait Workload: Sync {
    fn id(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Claim ids of the trade-off table this workload's numbers answer.
    fn claims(&self) -> &'static [&'static str];
    /// What one sample yields. Every sample of every cell reports these metrics.
    fn metrics(&self) -> &'static [MetricSpec];
    /// Every parameter a cell of this workload has (`cowbench run --set`, `cowbench workloads`).
    fn params(&self) -> &'static [ParamSpec];
    /// Whether `p` is a valid parameter set: parses into the workload's typed parameters.
    fn check_params(&self, p: &Params) -> Result<(), String>;
    /// Recompute parameters that follow from others after `--set` changed a cell (a
    /// sequential pass has one IO per block of the file). Most workloads have none.
    fn derive_params(&self, _p: &mut Params) {}
    /// The parameter sets (cells) of a profile, in run order.
    fn cells(&self, profile: Profile) -> Vec<Params>;
    /// Repetitions per cell that are not recorded (warm the runtime, dentry cache ...).
    fn warmup(&self, profile: Profile) -> u32;
    /// Recorded repetitions per cell (the same for every driver). `--repeat` overrides it.
    fn repetitions(&self, profile: Profile) -> u32;
    /// Whether the page cache is dropped before every repetition.
    fn drop_caches(&self) -> bool;
    /// Prepare one cell (`params` is one of [`Workload::cells`]) on `lab`: images, files,
    /// whatever the repetitions need, untimed.
    fn setup<'a>(&self, lab: &'a dyn lab::Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError>;
}

/// The spec of `metric` of `workload`, if both exist.
pub fn metric_spec(workload: &str, metric: &str) -> Option<&'static MetricSpec> {
    by_id(workload)?.metrics().iter().find(|m| m.name == metric)
}

/// Every workload, in the order a run executes them.
pub fn all() -> Vec<&'static dyn Workload> {
    vec![&density::Density, &copyup::Copyup, &sharedcache::SharedCache, &churn::Churn, &fragmentation::Fragmentation, &concurrent::Concurrent, &lookup::Lookup, &metadata::Metadata, &seqio::Seqio, &randio::Randio, &baremetal::Baremetal, &layers::Layers, &parallel_append::ParallelAppend]
}

/// A workload by id.
pub fn by_id(id: &str) -> Option<&'static dyn Workload> {
    all().into_iter().find(|w| w.id() == id)
}

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_unique_and_cells_nonempty() {
        let ids: Vec<_> = all().iter().map(|w| w.id()).collect();
        let mut d = ids.clone();
        d.dedup();
        assert_eq!(ids, d);
        for w in all() {
            for p in [Profile::Quick, Profile::Full] {
                assert!(!w.cells(p).is_empty(), "{} {p:?}", w.id());
                assert!(w.repetitions(p) >= 1);
            }
            assert!(w.metrics().iter().all(|m| m.name.ends_with(m.unit.as_str())), "{}: unit in the metric name", w.id());
        }
    }

    #[test]
    fn param_specs_match_the_cells() {
        for w in all() {
            let names: Vec<&str> = w.params().iter().map(|p| p.name).collect();
            for p in [Profile::Quick, Profile::Full] {
                for c in w.cells(p) {
                    assert!(c.keys().all(|k| names.contains(&k.as_str())), "{}: {c:?} has a key without a spec", w.id());
                    w.check_params(&c).unwrap();
                }
            }
            // Every spec'd parameter appears in some cell (optional ones may be left out of others).
            for n in &names {
                assert!(w.cells(Profile::Full).iter().any(|c| c.contains_key(*n)), "{}: {n} in no cell", w.id());
            }
        }
    }

    #[test]
    fn params_string_is_key_ordered() {
        let mut p = Params::new();
        p.insert("size".into(), 4096.into());
        p.insert("depth".into(), 1.into());
        p.insert("mode".into(), "direct".into());
        assert_eq!(params_string(&p), "depth=1;mode=direct;size=4096");
    }
}
