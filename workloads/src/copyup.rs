//! `copyup`: the first write of 1 byte to a file that lives in the image.
//!
//! File-level backends (overlay, aufs, vfs-style copies) copy the whole file up before the first
//! write; block-level ones (btrfs, zfs, dm-thin) copy one block. The in-container probe times
//! the open-for-write and the write with its own monotonic clock; the harness measures the bytes
//! the backend consumed (driver usage of the container layer, after minus before). Answers
//! overlay-copyup-whole-file, aufs-copyup-size-depth and dm-block-copyup.

use serde::{Deserialize, Serialize};

use crate::{Better, MetricSpec, ParamKind, ParamSpec, Unit, Params, Profile, TypedParams, Workload, GIB, KIB, MIB};

/// Where in the file the write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteAt {
    /// 1 byte at offset 0.
    Start,
    /// 4 bytes in the middle of the file (containerd's benchmark).
    Middle,
}

/// Parameters of one copy-up cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyupParams {
    /// Size of the image file written to.
    pub file_bytes: u64,
    /// Layer of the image (counted from the top, 1 = the topmost image layer) that holds it.
    pub depth: u32,
    pub write_at: WriteAt,
}

impl TypedParams for CopyupParams {}

impl CopyupParams {
    /// Bytes the probe writes.
    pub fn write_len(&self) -> u64 {
        match self.write_at {
            WriteAt::Start => 1,
            WriteAt::Middle => 4,
        }
    }
    pub fn write_offset(&self) -> u64 {
        match self.write_at {
            WriteAt::Start => 0,
            WriteAt::Middle => self.file_bytes / 2,
        }
    }
}

pub const QUICK_SIZES: [u64; 4] = [4 * KIB, MIB, 16 * MIB, 64 * MIB];
pub const FULL_SIZES: [u64; 10] =
    [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB, GIB];
pub const FULL_DEPTHS: [u32; 4] = [1, 8, 32, 128];

pub const METRICS: [MetricSpec; 5] = [
    MetricSpec {
        name: "open_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "open(O_WRONLY) of the image file, timed inside the container (where overlay and aufs copy up)",
    },
    MetricSpec {
        name: "write_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "the first pwrite, timed inside the container (where block-level backends copy a block)",
    },
    MetricSpec {
        name: "first_write_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "open + first write: the sum of the two above",
    },
    MetricSpec {
        name: "usage_delta_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "bytes of the container layer after the write minus before (driver usage; block backends count changed files whole)",
    },
    MetricSpec {
        name: "pool_data_used_delta_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "data the backend's pool allocated for the write (devicemapper: thin-pool used data blocks); only backends with a pool counter",
    },
];

/// The parameters of a cell (`cowbench run --set copyup.NAME=…`).
pub const PARAMS: [ParamSpec; 3] = [
    ParamSpec { name: "file_bytes", kind: ParamKind::Bytes, description: "size of the image file written to" },
    ParamSpec { name: "depth", kind: ParamKind::Count, description: "image layer (from the top, 1 = topmost) that holds the file" },
    ParamSpec { name: "write_at", kind: ParamKind::Choice(&["start", "middle"]), description: "where the write goes: 1 byte at offset 0, or 4 bytes in the middle" },
];

pub struct Copyup;

impl Workload for Copyup {
    fn id(&self) -> &'static str {
        "copyup"
    }
    fn description(&self) -> &'static str {
        "first small write to an image file: latency and bytes the backend copies up"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["overlay-copyup-whole-file", "aufs-copyup-size-depth", "dm-block-copyup"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        CopyupParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        match profile {
            Profile::Quick => QUICK_SIZES
                .iter()
                .map(|&file_bytes| CopyupParams { file_bytes, depth: 1, write_at: WriteAt::Start }.to_params())
                .collect(),
            Profile::Full => {
                let mut v = Vec::new();
                for &depth in &FULL_DEPTHS {
                    for &file_bytes in &FULL_SIZES {
                        for write_at in [WriteAt::Start, WriteAt::Middle] {
                            v.push(CopyupParams { file_bytes, depth, write_at }.to_params());
                        }
                    }
                }
                v
            }
        }
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            Profile::Quick => 5,
            Profile::Full => 15,
        }
    }
    fn drop_caches(&self) -> bool {
        // The copy reads the lower file: a cold cache is the case the claim is about.
        true
    }
    fn setup<'a>(&self, _lab: &'a dyn crate::lab::Lab, _params: &Params) -> Result<Box<dyn crate::CellExec + 'a>, crate::SetupError> {
        Err(crate::SetupError::Skip("MOVE-PENDING: executor still in harness/src/runner".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_cells() {
        let cells = Copyup.cells(Profile::Quick);
        assert_eq!(cells.len(), 4);
        let p = CopyupParams::from_params(&cells[3]).unwrap();
        assert_eq!(p, CopyupParams { file_bytes: 64 * MIB, depth: 1, write_at: WriteAt::Start });
        assert_eq!(crate::params_string(&cells[0]), "depth=1;file_bytes=4096;write_at=start");
        let mid = CopyupParams { file_bytes: 4096, depth: 1, write_at: WriteAt::Middle };
        assert_eq!((mid.write_offset(), mid.write_len()), (2048, 4));
    }
}
