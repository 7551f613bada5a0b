//! The results document (`run.json`). Units are in field names; raw samples are always stored,
//! summaries are a convenience (the report recomputes them).
//!
//! Top level: `schema_version`, `run_id`, `status`, `started_unix`, `finished_unix`,
//! `duration_s`, `host` (see [`crate::host::HostInfo`]), `parameters`, `counts`, `cells`.
//! A cell is identified by `key` = `workload/driver/k=v;k=v`, stable across runs and hosts so that
//! runs can be merged and compared cell by cell.

use std::collections::BTreeMap;

use cowbench_workloads::Params;
use serde::{Deserialize, Serialize};

use super::stats::{self, Summary};
use crate::host::HostInfo;

/// Bumped on any change a reader must know about.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Still running (or killed: a run killed halfway keeps this status and its finished cells).
    Running,
    Complete,
    /// Stopped by SIGINT/SIGTERM; finished cells are kept.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDoc {
    pub schema_version: u32,
    pub run_id: String,
    pub status: RunStatus,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    pub duration_s: Option<f64>,
    pub host: HostInfo,
    pub parameters: RunParameters,
    pub counts: Counts,
    /// How `ci95_low`/`ci95_high` of every summary were computed.
    pub ci_method: String,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// What the run was asked to do (enough to repeat it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunParameters {
    pub drivers: Vec<String>,
    pub workloads: Vec<String>,
    pub profile: String,
    /// `--repeat`: recorded repetitions per cell (None: each workload's default for the profile).
    pub repeat: Option<u32>,
    pub seed: u64,
    /// OCI runtime name (`runc`, `crun`); its path and version are in `host.runtime`.
    pub runtime: String,
    pub root: String,
    /// Backend options given with `-o KEY=VALUE`.
    pub driver_options: BTreeMap<String, String>,
    /// The command line, for copy-paste.
    pub command_line: Vec<String>,
    /// `--set WORKLOAD.PARAM=VALUES`, resolved (sizes in bytes), in the order they applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<cowbench_workloads::ParamSet>,
    /// How cells were ordered and repeated. None in run documents of schema 1, which ran
    /// driver-major with the workload's fixed count.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

/// The order of visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Rounds; in each, every cell still needing repetitions is visited once, drivers and
    /// parameter points shuffled together (randomized multiple interleaved trials).
    Interleaved,
    /// One driver after the other, cells in plan order, the minimum in one visit (debugging).
    DriverMajor,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Interleaved => "interleaved",
            Order::DriverMajor => "driver-major",
        }
    }
}

/// The run's ordering and repetition policy, as applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub order: Order,
    /// Seed of the visit order (the same seed and plan give the same first rounds).
    pub order_seed: u64,
    /// Target relative half-width of the median's 95% CI (0.05 = ±5%) for every metric of a
    /// cell; None with `--repeat` (fixed counts).
    pub ci_target: Option<f64>,
    /// `--max-reps` as given (None: each cell's cap is 3× its minimum, at least 6; see
    /// `Sampling::max_repetitions`).
    pub max_reps: Option<u32>,
    /// Run time after which no extra repetitions are started (None: no budget). The minimum
    /// repetitions always run.
    pub time_budget_s: Option<f64>,
    /// Whether visits after a cell's first run its warm-up again.
    pub warmup_every_visit: bool,
}

/// Why a cell got no more repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every metric's median CI (95% coverage) is within the target.
    CiTargetMet,
    /// The cap on recorded repetitions was reached with some metric above the target.
    MaxReps,
    /// Another visit would have run past the run's time budget.
    TimeBudget,
    /// A visit failed, or the cell's driver stopped responding before its next visit.
    Failed,
    /// The run was stopped by a signal.
    Interrupted,
    /// The count was fixed: `--repeat N`, or a workload whose minimum is one repetition
    /// (its samples are one series, not repetitions of one measurement).
    Fixed,
    /// The backend cannot run the cell.
    Skipped,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::CiTargetMet => "ci_target_met",
            StopReason::MaxReps => "max_reps",
            StopReason::TimeBudget => "time_budget",
            StopReason::Failed => "failed",
            StopReason::Interrupted => "interrupted",
            StopReason::Fixed => "fixed",
            StopReason::Skipped => "skipped",
        }
    }
}

/// One visit of a cell: setup, warm-up, recorded repetitions `first_rep..first_rep+reps`,
/// finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    /// 0-based round of the run.
    pub round: u32,
    /// 0-based position of this visit in its round's order.
    pub position: u32,
    pub warmup: u32,
    pub first_rep: u32,
    /// Recorded repetitions asked for (fewer ran when the visit failed).
    pub reps: u32,
    pub started_unix: u64,
    pub duration_s: f64,
}

/// How a cell's repetitions came about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// The workload's count for the profile (or `--repeat`), raised to what the claims reading
    /// the cell need ([`crate::claims::needs`]).
    pub min_repetitions: u32,
    /// The cap on recorded repetitions.
    pub max_repetitions: u32,
    pub stop_reason: Option<StopReason>,
    /// Largest relative half-width (|CI bound − median| / |median|) of the median's CI over the
    /// cell's metrics at the last decision; None when not finite (median 0 with spread).
    pub ci_half_width: Option<f64>,
    /// The metric it belongs to.
    pub ci_half_width_metric: Option<String>,
    /// Whether that interval had 95% coverage (n ≥ 6 samples).
    pub ci_half_width_95: bool,
    pub visits: Vec<Visit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellStatus {
    Ok,
    Failed,
    Skipped,
}

/// Page-cache dropping between repetitions (`sync; echo 3 > /proc/sys/vm/drop_caches`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDrop {
    /// The workload asks for it.
    pub requested: bool,
    pub attempts: u32,
    pub succeeded: u32,
    /// First failure (e.g. read-only /proc/sys inside an unprivileged container).
    pub error: Option<String>,
}

/// One metric of a cell: every recorded sample, which repetition it came from, and a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub unit: String,
    pub samples: Vec<f64>,
    /// Repetition index of each sample (several samples per repetition for density).
    pub sample_rep: Vec<u32>,
    pub summary: Option<Summary>,
}

/// Host-side figures around a cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub unix: u64,
    /// /proc/meminfo in bytes (`MemFree_bytes` ...; HugePages counts kept as counts).
    pub meminfo_bytes: BTreeMap<String, u64>,
    /// The driver's `status()` (space and pool usage, ARC size, backing store ...).
    #[serde(default)]
    pub backend_status: Option<BackendStatus>,
}

/// A backend status as run.json holds it: typed since statuses were typed, a map of strings
/// in older run documents (kept as it was, for display).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BackendStatus {
    Typed(cowbench_drivers::Status),
    /// run.json written before typed status: display only.
    Legacy(BTreeMap<String, String>),
}

impl BackendStatus {
    /// The typed status; None for an old run document.
    pub fn typed(&self) -> Option<&cowbench_drivers::Status> {
        match self {
            BackendStatus::Typed(s) => Some(s),
            BackendStatus::Legacy(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub key: String,
    pub workload: String,
    pub driver: String,
    /// What actually ran (kernel driver or stand-in) and its version.
    pub implementation: Option<String>,
    pub stand_in: bool,
    pub loop_backed: bool,
    pub params: Params,
    pub status: CellStatus,
    /// Why failed or skipped.
    pub reason: Option<String>,
    /// Repetitions run before recording (not counted).
    pub warmup: u32,
    /// Recorded repetitions run (schema 1: the same for every driver of a workload; since
    /// schema 2 it may differ: see `sampling`).
    pub repetitions: u32,
    /// True when caches were requested and every drop worked.
    pub caches_dropped: bool,
    pub cache_drop: CacheDrop,
    /// metric name (unit in the name) → samples.
    pub metrics: BTreeMap<String, Metric>,
    /// Facts the executor reports about the cell (image id, layer count ...).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
    pub host_before: Option<Snapshot>,
    pub host_after: Option<Snapshot>,
    pub started_unix: u64,
    /// Sum over the cell's visits.
    pub duration_s: f64,
    /// Visits, repetition cap and stop reason (None in schema 1 documents).
    #[serde(default)]
    pub sampling: Option<Sampling>,
}

impl Cell {
    pub fn key_of(workload: &str, driver: &str, params: &Params) -> String {
        format!("{workload}/{driver}/{}", cowbench_workloads::params_string(params))
    }

    /// Fill every metric's summary from its samples.
    pub fn summarize(&mut self) {
        for m in self.metrics.values_mut() {
            m.summary = stats::summarize(&m.samples);
        }
    }
}

impl RunDoc {
    pub fn recount(&mut self) {
        let mut c = Counts::default();
        for cell in &self.cells {
            match cell.status {
                CellStatus::Ok => c.ok += 1,
                CellStatus::Failed => c.failed += 1,
                CellStatus::Skipped => c.skipped += 1,
            }
        }
        self.counts = c;
    }
}

/// Read /proc/meminfo into bytes (kB lines ×1024).
pub fn meminfo() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_meminfo(&text)
}

pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some((k, rest)) = line.split_once(':') else { continue };
        let mut it = rest.split_whitespace();
        let Some(Ok(v)) = it.next().map(str::parse::<u64>) else { continue };
        match it.next() {
            Some("kB") => m.insert(format!("{k}_bytes"), v * 1024),
            _ => m.insert(k.to_string(), v),
        };
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_units() {
        let m = parse_meminfo("MemTotal:       24684000 kB\nHugePages_Total:       0\nbad line\n");
        assert_eq!(m.get("MemTotal_bytes"), Some(&(24684000 * 1024)));
        assert_eq!(m.get("HugePages_Total"), Some(&0));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn backend_status_typed_and_old_map_both_read() {
        let mut st = cowbench_drivers::Status::new("kernel overlayfs 6.1", 2);
        st.fact("o_direct", true);
        let snap = Snapshot { unix: 1, meminfo_bytes: BTreeMap::new(), backend_status: Some(BackendStatus::Typed(st.clone())) };
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        assert_eq!(back.backend_status.as_ref().and_then(BackendStatus::typed), Some(&st));
        // run.json before typed status: a map of strings, kept for display.
        let old = r#"{"unix":1,"meminfo_bytes":{},"backend_status":{"implementation":"kernel overlayfs","layers":"2"}}"#;
        let back: Snapshot = serde_json::from_str(old).unwrap();
        assert!(matches!(&back.backend_status, Some(BackendStatus::Legacy(m)) if m["layers"] == "2"));
        let none: Snapshot = serde_json::from_str(r#"{"unix":1,"meminfo_bytes":{}}"#).unwrap();
        assert_eq!(none.backend_status, None);
    }

    #[test]
    fn schema_1_documents_read_without_schedule_and_sampling() {
        // A committed run of schema 1 (driver-major, fixed counts).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/20261122T185713Z-2284/run.json");
        let text = std::fs::read_to_string(path).unwrap();
        let doc: RunDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(doc.schema_version, 1);
        assert_eq!(doc.parameters.schedule, None);
        assert!(doc.cells.iter().all(|c| c.sampling.is_none()));
    }

    #[test]
    fn stop_reasons_as_run_json_spells_them() {
        for r in [
            StopReason::CiTargetMet,
            StopReason::MaxReps,
            StopReason::TimeBudget,
            StopReason::Failed,
            StopReason::Interrupted,
            StopReason::Fixed,
            StopReason::Skipped,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!(r.as_str()));
        }
        for o in [Order::Interleaved, Order::DriverMajor] {
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(o.as_str()));
        }
    }
}
