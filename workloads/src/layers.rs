//! `layers`: pull and push of synthetic layers through the driver, the host-side operations
//! behind `docker pull` and `docker commit`/`push`.
//!
//! - pull: `apply` of a layer tar (read from a file already in the page cache, as a downloaded
//!   blob would be) into a fresh active layer, then `commit`.
//! - push: `diff` of an active layer that holds the same content (written before, untimed) to
//!   a counting sink, then `commit`.
//!
//! These are driver operations on the host, not IO of a containerised process, so here the
//! harness's own monotonic clock IS the measurement (the probe has nothing to time); layer
//! preparation and removal stay outside the timed spans. Answers layer-sharing (what a layer
//! costs to bring in) and image build cost.

use serde::{Deserialize, Serialize};

use crate::{Better, MetricSpec, ParamKind, ParamSpec, Unit, Params, Profile, TypedParams, Workload, MIB};

/// Parameters of one layers cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayersParams {
    /// Bytes of file content in the layer.
    pub layer_bytes: u64,
    /// Files the content is spread over (evenly).
    pub files: u64,
}

impl TypedParams for LayersParams {}

pub const QUICK_SIZES: [u64; 2] = [16 * MIB, 64 * MIB];
pub const FULL_SIZES: [u64; 4] = [16 * MIB, 64 * MIB, 256 * MIB, 1024 * MIB];
pub const QUICK_FILES: [u64; 2] = [10, 1_000];
pub const FULL_FILES: [u64; 3] = [10, 1_000, 10_000];

pub const METRICS: [MetricSpec; 6] = [
    MetricSpec { name: "pull_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "apply of the layer tar + commit, harness clock" },
    MetricSpec { name: "pull_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "layer content bytes over the pull time" },
    MetricSpec { name: "push_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "diff of the active layer to a sink + commit, harness clock" },
    MetricSpec { name: "push_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "layer content bytes over the push time" },
    MetricSpec { name: "commit_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "the commit part of the pull" },
    MetricSpec { name: "diff_tar_bytes", unit: Unit::Bytes, better: Better::Neither, description: "size of the tar the diff wrote" },
];

/// The parameters of a cell (`cowbench run --set layers.NAME=…`).
pub const PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "layer_bytes", kind: ParamKind::Bytes, description: "bytes of file content in the layer" },
    ParamSpec { name: "files", kind: ParamKind::Count, description: "files the content is spread over" },
];

pub struct Layers;

impl Workload for Layers {
    fn id(&self) -> &'static str {
        "layers"
    }
    fn description(&self) -> &'static str {
        "apply + commit (pull) and diff + commit (push) of synthetic layers through the driver"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["layer-sharing"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        LayersParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let (sizes, files): (&[u64], &[u64]) = match profile {
            Profile::Quick => (&QUICK_SIZES, &QUICK_FILES),
            Profile::Full => (&FULL_SIZES, &FULL_FILES),
        };
        let mut v = Vec::new();
        for &files in files {
            for &layer_bytes in sizes {
                // Quick: the many-files case at the smallest size only (its cost is per file).
                if profile == Profile::Quick && files > QUICK_FILES[0] && layer_bytes > QUICK_SIZES[0] {
                    continue;
                }
                v.push(LayersParams { layer_bytes, files }.to_params());
            }
        }
        v
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            Profile::Quick => 2,
            Profile::Full => 10,
        }
    }
    fn drop_caches(&self) -> bool {
        // The tar stands for a blob just downloaded: in the page cache, as after a pull.
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
    fn cells() {
        let q = Layers.cells(Profile::Quick);
        assert_eq!(q.len(), 3);
        assert_eq!(crate::params_string(&q[0]), "files=10;layer_bytes=16777216");
        assert_eq!(crate::params_string(&q[2]), "files=1000;layer_bytes=16777216");
        assert_eq!(Layers.cells(Profile::Full).len(), 12);
    }
}
