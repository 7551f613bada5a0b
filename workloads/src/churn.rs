//! `churn`: K cycles of create container / write X MiB / destroy container and its layer,
//! reading the backend's space after every cycle.
//!
//! A backend that returns freed space stays flat; one that leaks (moby#3182: devicemapper's
//! loop-backed data file keeps every block ever written unless discards reach it) grows with
//! K. Two figures per cycle: what the backend says it uses (thin-pool data used, zpool used,
//! the btrfs filesystem's used blocks, or the blocks under the driver root for directory
//! backends) and what the backing store holds on the host (allocated blocks of the loop / vdev
//! / data file, or again the blocks under the driver root). `discard` = true / false opens the
//! backend with that option (devicemapper's `discard`); backends without it skip those cells,
//! and backends with it skip the cell without `discard` (it would repeat one of the two).
//!
//! dm-churn-overflow is decided on the second figure: a thin pool frees a deleted device's
//! blocks in its own counter at once, so "used" stays flat either way, while the loop-backed
//! data file under it keeps every block ever written unless a discard reaches it. Quick:
//! 30 cycles with and 30 without discard (a trend, not one cycle's filesystem metadata);
//! 10 for the reference cell of backends without the option.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::{ImageSpec, Shape};
use crate::kit;
use crate::lab::{ContainerSpec, Image, Lab, Notes, Space};
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, MIB, Better, ParamKind, ParamSpec, Unit};

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

/// Cycles of the cells that decide dm-churn-overflow (discard on and off): enough for a
/// trend, not one cycle's noise (a few MiB of filesystem metadata either way).
pub const QUICK_CYCLES: u32 = 30;
/// Cycles of the cell of a driver as the run opened it: a reference for backends without a
/// discard option, where churn decides no claim.
pub const QUICK_REFERENCE_CYCLES: u32 = 10;
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
                .map(|&discard| {
                    let cycles = if discard.is_some() { QUICK_CYCLES } else { QUICK_REFERENCE_CYCLES };
                    ChurnParams { cycles, write_bytes: QUICK_WRITE, discard }.to_params()
                })
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
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: ChurnParams = kit::params(self.id(), params)?;
        let mut own = None;
        let mut discard_note = "as the run opened the backend".to_string();
        let current = lab.driver().status()?.discard.map(|d| d.to_string());
        if let (None, Some(cur)) = (p.discard, &current) {
            // The backend has the option: the discard=<cur> cell measures this driver as it is.
            return Err(SetupError::Skip(format!("{} runs with discard={cur}: measured by the discard={cur} cell", lab.driver_name())));
        }
        if let Some(v) = p.discard_option() {
            match current {
                None => return Err(SetupError::Skip(format!("{} has no discard option", lab.driver_name()))),
                Some(cur) if cur == v => discard_note = format!("discard={v} (the run's driver)"),
                Some(_) => {
                    own = Some(lab.variant(&[("discard", v)])?);
                    discard_note = format!("discard={v} (second instance of the backend, on a root of its own)");
                }
            }
        }
        let target = own.as_deref().unwrap_or(lab);
        // On a second instance this builds the image there; it goes when the instance does.
        let img = target.image(&ImageSpec::new("churn", lab.seed(), Shape::Base))?;
        Ok(Box::new(Exec { lab, own, p, img, discard_note, sources: None, settle: None }))
    }
}

// The executor: K cycles of `run` of a container that writes X bytes to a new file (fsynced,
// timed by the probe) and exits, after which the container and its layer are deleted; the
// backend's space ([`Lab::space`]) is read after every cycle, and once settled
// ([`Lab::settled_space`]) before the first and after the last.
//
// Per-cell discard: the run opens a driver once, with the run's options. A cell asking for
// `discard=true|false` on a backend that has a `discard` option uses the run's driver when it
// already has that value; otherwise a second instance of the backend with `discard=<v>`
// ([`Lab::variant`]), which holds the cell's image and is torn down when the cell ends (also
// after a failure). Backends without the option skip those cells with the reason.

const TARGET: &str = "/churn.dat";
const BLOCK: u64 = 1024 * 1024;
/// Longest wait for deferred frees after the last cycle.
const SETTLE_MAX: Duration = Duration::from_secs(5);

struct Exec<'a> {
    lab: &'a dyn Lab,
    /// A second instance of the backend with the cell's discard option.
    own: Option<Box<dyn Lab + 'a>>,
    p: ChurnParams,
    img: Image,
    discard_note: String,
    /// Where the two space figures come from (first reading).
    sources: Option<(String, String)>,
    /// How the last repetition's settled reading was reached.
    settle: Option<String>,
}

impl Exec<'_> {
    /// The driver instance the cell measures.
    fn target(&self) -> &dyn Lab {
        self.own.as_deref().unwrap_or(self.lab)
    }

    fn space(&mut self) -> anyhow::Result<Space> {
        let sp = self.target().space()?;
        self.sources.get_or_insert((sp.used_source.clone(), sp.allocated_source.clone()));
        Ok(sp)
    }
}

impl CellExec for Exec<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let req = Request::new(vec![Op::Write {
            path: TARGET.into(),
            block_bytes: BLOCK.min(self.p.write_bytes.max(1)),
            bytes: self.p.write_bytes,
            direct: false,
            random: false,
            fsync: true,
            create: true,
            per_block: false,
            seed: rep as u64,
        }]);
        let spec = ContainerSpec::probe(&req);
        let (first, _) = self.target().settled_space(SETTLE_MAX)?;
        let mut last = first.clone();
        let mut samples: RepSamples = Vec::new();
        let mut done = 0u32;
        for _ in 0..self.p.cycles {
            if self.lab.stop_requested() {
                anyhow::bail!("interrupted by signal");
            }
            let out = self.target().run(&self.img, &spec)?;
            if !out.success() {
                anyhow::bail!("container {} exited {:?}: {}", out.id, out.exit_code, out.stderr_str().trim());
            }
            let resp = out.probe_response()?;
            kit::check(&resp)?;
            let (ns, bytes) = kit::total_of(&resp, "write")?;
            if bytes != self.p.write_bytes {
                anyhow::bail!("container {} wrote {bytes} of {} bytes", out.id, self.p.write_bytes);
            }
            samples.push(("write_latency_ns", ns as f64));
            last = self.space()?;
            samples.push(("backend_used_bytes", last.used as f64));
            samples.push(("backing_allocated_bytes", last.allocated as f64));
            done += 1;
        }
        samples.push(("backend_growth_bytes", last.used as f64 - first.used as f64));
        samples.push(("backing_growth_bytes", last.allocated as f64 - first.allocated as f64));
        samples.push(("cycles_count", done as f64));
        let (settled, how) = self.target().settled_space(SETTLE_MAX)?;
        samples.push(("backend_settled_growth_bytes", settled.used as f64 - first.used as f64));
        samples.push(("backing_settled_growth_bytes", settled.allocated as f64 - first.allocated as f64));
        self.settle = Some(how);
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::from([
            ("image".into(), "churn (base layer only)".into()),
            ("discard".into(), self.discard_note.clone()),
            ("cycle".into(), format!("`run` of a container writing {TARGET} (fsync), then delete container and layer")),
        ]);
        if let Some(how) = &self.settle {
            n.insert("settled".into(), how.clone());
        }
        if let Some((u, a)) = &self.sources {
            n.insert("backend_used_source".into(), u.clone());
            n.insert("backing_allocated_source".into(), a.clone());
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // A second instance is torn down (its root removed) as it drops here; the run's driver
        // keeps the base-only image and its teardown removes it.
        drop(self.own);
        Ok(())
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
        assert_eq!(crate::params_string(&cells[1]), format!("cycles=30;discard=true;write_bytes={}", 4 * MIB));
        let p = ChurnParams::from_params(&cells[2]).unwrap();
        assert_eq!(p.discard_option(), Some("false"));
        assert_eq!(ChurnParams::from_params(&cells[0]).unwrap().discard, None);
        assert!(Churn.cells(Profile::Full).iter().any(|c| c["cycles"] == 200));
    }
}
