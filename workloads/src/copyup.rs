//! `copyup`: the first write of 1 byte to a file that lives in the image.
//!
//! File-level backends (overlay, aufs, vfs-style copies) copy the whole file up before the first
//! write; block-level ones (btrfs, zfs, dm-thin) copy one block. The in-container probe times
//! the open-for-write and the write with its own monotonic clock; the harness measures the bytes
//! the backend consumed (driver usage of the container layer, after minus before). Answers
//! overlay-copyup-whole-file, aufs-copyup-size-depth and dm-block-copyup.

use cowbench_drivers::Driver;
use serde::{Deserialize, Serialize};

use crate::images::{ImageSpec, Shape};
use crate::kit;
use crate::lab::{ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, GIB, KIB, MIB, Better, ParamKind, ParamSpec, Unit};

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
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: CopyupParams = kit::params(self.id(), params)?;
        if let Some(max) = lab.driver().capabilities().max_depth {
            // The image is the base layer plus `depth` layers, and the container adds one.
            if p.depth as usize + 2 > max {
                return Err(SetupError::Skip(format!("{} mounts at most {max} layers", lab.driver_name())));
            }
        }
        let spec = ImageSpec::new(
            &format!("copyup-d{}-b{}", p.depth, p.file_bytes),
            lab.seed(),
            Shape::DeepStack { depth: p.depth as usize, target: TARGET.into(), target_bytes: p.file_bytes },
        );
        let img = lab.image(&spec)?;
        // Asked once: for backends without the counter, status() (zpool CLI calls for zfs) would
        // only slow every repetition down.
        let pool_counter = pool_data_used(lab.driver()).is_some();
        Ok(Box::new(CopyupCell { lab, p, img, pool_counter }))
    }
}

// The executor. A container holds (probe `hold`), the harness reads the usage of its fresh
// layer, then SIGTERM lets the probe do the first write to the image file and time it with its
// own clock; the harness reads the usage again. The layer is kept until both usage figures are
// read, then removed.
//
// `usage_delta_bytes` is the driver's layer usage, which for a block backend (devicemapper)
// counts every changed file whole: the snapshotter's file-level view. What a block backend
// really allocated is its pool's own counter (the thin pool's used data blocks), recorded as
// `pool_data_used_delta_bytes` where there is one.
//
// Image: base layer (busybox + probe) and a stack of `depth` layers whose bottom one holds
// `/data/copyup` of `file_bytes` (depth 1: the file is in the topmost image layer).

const TARGET: &str = "/data/copyup";

/// The backend's pool-level allocation (bytes), if it has one.
fn pool_data_used(d: &dyn Driver) -> Option<u64> {
    d.status().ok()?.pool.map(|p| p.data_used_bytes)
}

struct CopyupCell<'a> {
    lab: &'a dyn Lab,
    p: CopyupParams,
    img: Image,
    /// The backend has a pool counter (devicemapper's thin pool).
    pool_counter: bool,
}

impl CellExec for CopyupCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = self.lab.driver();
        let req = Request::new(vec![
            Op::Hold,
            Op::Copyup { path: TARGET.into(), offset: self.p.write_offset(), bytes: self.p.write_len(), fsync: false },
        ]);
        let pool_counter = self.pool_counter;
        kit::layer_usage_around_stop(
            self.lab,
            &self.img,
            ContainerSpec::probe(&req),
            || if pool_counter { pool_data_used(d) } else { None },
            |resp, pool_before| {
                let phase = |ph: &str| {
                    resp.samples_of("copyup", ph)
                        .next()
                        .map(|s| s.latency_ns as f64)
                        .ok_or_else(|| anyhow::anyhow!("probe response has no copyup/{ph} sample"))
                };
                let (open, write) = (phase("open")?, phase("pwrite")?);
                let mut samples = vec![("open_latency_ns", open), ("write_latency_ns", write), ("first_write_latency_ns", open + write)];
                // After `stop`: the container's filesystem is unmounted, so its writes reached the pool.
                if let (Some(b), Some(a)) = (pool_before, pool_before.and_then(|_| pool_data_used(d))) {
                    samples.push(("pool_data_used_delta_bytes", a.saturating_sub(b) as f64));
                }
                Ok(samples)
            },
        )
    }

    fn notes(&self) -> Notes {
        Notes::from([
            ("image".into(), self.img.name.clone()),
            ("image_layers".into(), self.img.layers.len().to_string()),
            ("target".into(), TARGET.into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        self.lab.remove_image(&self.img)
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
