//! Run results: the `run.json` schema, summary statistics and the atomic writer.
//!
//! `results/<run-id>/run.json` (run-id: UTC start time + 4 random hex digits, e.g.
//! `20261122T173000Z-ab12`), written atomically after every visit of a cell:
//!
//! ```text
//! schema_version   2 (1: driver-major, fixed counts, no schedule/sampling)
//! run_id, status   running | complete | interrupted   (a killed run stays "running")
//! started_unix, finished_unix, duration_s
//! host             crate::host::HostInfo: cowbench {version, git_revision}, kernel, distro,
//!                  cpu {model, count}, memory_bytes, cgroup (v1|v2|hybrid|unknown),
//!                  runtime {name, path, version}, runtimes_found, environment
//!                  ({kind: host} | {kind: vm, accel, vcpus, mem_bytes}), root (storage),
//!                  drivers [{name, available, implementation, version, reason, hint, stand_in,
//!                  details, storage {path, filesystem, device, scheduler, mount_options,
//!                  loop_backed}}]
//! parameters       drivers, workloads, profile, repeat, seed, runtime, root, driver_options,
//!                  command_line, sets, schedule {order (interleaved|driver-major),
//!                  order_seed, ci_target (relative, null with --repeat), max_reps,
//!                  time_budget_s, warmup_every_visit}
//! counts           {ok, failed, skipped}
//! ci_method        how ci95_low/high were computed (see stats)
//! cells[]          key ("workload/driver/k=v;k=v"), workload, driver, implementation, stand_in,
//!                  loop_backed, params {k: v}, status (ok|failed|skipped), reason,
//!                  warmup, repetitions (recorded, may differ between drivers), caches_dropped,
//!                  cache_drop {requested, attempts,
//!                  succeeded, error}, metrics {<name_with_unit>: {unit, samples[], sample_rep[],
//!                  summary {n, min, median, p90, p99, max, mean, sd, ci95_low, ci95_high,
//!                  ci_coverage}}}, notes {k: v}, host_before/host_after {unix, meminfo_bytes,
//!                  backend_status} (before the first visit, after the last), started_unix,
//!                  duration_s, sampling {min_repetitions, max_repetitions, stop_reason
//!                  (ci_target_met|max_reps|time_budget|failed|interrupted|fixed|skipped),
//!                  ci_half_width, ci_half_width_metric, ci_half_width_95, visits[] {round,
//!                  position, warmup, first_rep, reps, started_unix, duration_s}}
//! ```
//!
//! Cells are listed in plan order (driver, workload, parameters), not in the order they ran;
//! a cell's visits say when it ran.
//!
//! `samples.csv` beside it: `run_id,workload,driver,params,metric,value,unit,sample,rep`, one
//! row per recorded sample (params as `k=v;k=v`).

pub mod schema;
pub mod stats;
pub mod writer;

pub use schema::{BackendStatus, Cell, CellStatus, Metric, RunDoc, RunParameters, RunStatus, Snapshot, SCHEMA_VERSION};
pub use writer::{new_run_id, ResultsWriter};

/// Seconds since the epoch, as results record times (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
