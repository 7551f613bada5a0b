//! `churn`: K cycles of create container / write X MiB / destroy container and its layer,
//! reading the backend's space after every cycle.
//!
//! A backend that returns freed space stays flat; one that leaks (moby#3182: devicemapper's
//! loop-backed data file keeps every block ever written unless discards reach it) grows with
//! K. Two figures per cycle: what the backend says it uses (thin-pool data used, zpool used,
//! the btrfs filesystem's used blocks, or the blocks under the driver root for directory
//! backends) and what the backing store holds on the host (allocated blocks of the loop / vdev
//! / data file, or again the blocks under the driver root). `discard` = true / false opens the
//! backend with that option (devicemapper's `discard`); backends without it skip those cells.
//! Answers dm-churn-overflow.

use serde::{Deserialize, Serialize};

use crate::{Better, MetricSpec, ParamKind, ParamSpec, Unit, Params, Profile, TypedParams, Workload, MIB};

/// Parameters of one churn cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnParams {
    /// Create/write/destroy cycles per repetition (K).
    pub cycles: u32,
    /// Bytes each container writes to a new file (X), fsynced.
    pub write_bytes: u64,
    /// The backend's `discard` option for this cell (devicemapper: whether removed layers'
    /// blocks are discarded down to the loop-backed data file); None: the driver as the run
    /// opened it. Backends without the option skip `Some` cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<bool>,
}

impl ChurnParams {
    /// The value of the backend's `discard` option, None for the run's driver as it is.
    pub fn discard_option(&self) -> Option<&'static str> {
        self.discard.map(|d| if d { "true" } else { "false" })
    }
}

impl TypedParams for ChurnParams {}

pub const QUICK_CYCLES: u32 = 10;
pub const QUICK_WRITE: u64 = 4 * MIB;
pub const FULL_CYCLES: [u32; 2] = [50, 200];
pub const FULL_WRITE: [u64; 2] = [4 * MIB, 64 * MIB];

pub const METRICS: [MetricSpec; 8] = [
    MetricSpec {
        name: "backend_used_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "space the backend reports used after each cycle (one sample per cycle, in cycle order)",
    },
    MetricSpec {
        name: "backing_allocated_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "blocks the backing store holds on the host after each cycle (loop/vdev/data file, or the driver root)",
    },
    MetricSpec {
        name: "backend_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "backend_used after the last cycle minus before the first (signed)",
    },
    MetricSpec {
        name: "backing_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "backing_allocated after the last cycle minus before the first (signed)",
    },
    MetricSpec {
        name: "backend_settled_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "as backend_growth, both readings taken once deferred frees landed (btrfs cleaner; readings stable for 500 ms)",
    },
    MetricSpec {
        name: "backing_settled_growth_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "as backing_growth, both readings settled",
    },
    MetricSpec {
        name: "cycles_count",
        unit: Unit::Count,
        better: Better::Neither,
        description: "cycles completed in the repetition",
    },
    MetricSpec {
        name: "write_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "the container's write of X bytes + fsync, timed by the probe (one sample per cycle)",
    },
];

/// The parameters of a cell (`cowbench run --set churn.NAME=…`).
pub const PARAMS: [ParamSpec; 3] = [
    ParamSpec { name: "cycles", kind: ParamKind::Count, description: "create/write/destroy cycles per repetition (K)" },
    ParamSpec { name: "write_bytes", kind: ParamKind::Bytes, description: "bytes each container writes to a new file, fsynced (X)" },
    ParamSpec { name: "discard", kind: ParamKind::OptionalBool, description: "the backend's discard option for the cell; none: the driver as the run opened it" },
];

pub struct Churn;

impl Workload for Churn {
    fn id(&self) -> &'static str {
        "churn"
    }
    fn description(&self) -> &'static str {
        "K cycles of create container / write X / destroy: backend space after each cycle, with and without discard"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["dm-churn-overflow"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        ChurnParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let discards = [None, Some(true), Some(false)];
        match profile {
            Profile::Quick => discards
                .iter()
                .map(|&discard| ChurnParams { cycles: QUICK_CYCLES, write_bytes: QUICK_WRITE, discard }.to_params())
                .collect(),
            Profile::Full => {
                let mut v = Vec::new();
                for &cycles in &FULL_CYCLES {
                    for &write_bytes in &FULL_WRITE {
                        for &discard in &discards {
                            v.push(ChurnParams { cycles, write_bytes, discard }.to_params());
                        }
                    }
                }
                v
            }
        }
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        0
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            // One repetition: a cell's samples are one series over its cycles.
            Profile::Quick | Profile::Full => 1,
        }
    }
    fn drop_caches(&self) -> bool {
        false
    }
    fn setup<'a>(&self, _lab: &'a dyn crate::lab::Lab, _params: &Params) -> Result<Box<dyn crate::CellExec + 'a>, crate::SetupError> {
        Err(crate::SetupError::Skip("MOVE-PENDING: executor still in harness/src/runner".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_params() {
        let cells = Churn.cells(Profile::Quick);
        assert_eq!(cells.len(), 3);
        assert_eq!(crate::params_string(&cells[0]), format!("cycles=10;write_bytes={}", 4 * MIB));
        assert_eq!(crate::params_string(&cells[1]), format!("cycles=10;discard=true;write_bytes={}", 4 * MIB));
        let p = ChurnParams::from_params(&cells[2]).unwrap();
        assert_eq!(p.discard_option(), Some("false"));
        assert_eq!(ChurnParams::from_params(&cells[0]).unwrap().discard, None);
        assert!(Churn.cells(Profile::Full).iter().any(|c| c["cycles"] == 200));
    }
}
