//! `seqio`: sequential reads and writes of 128 KiB blocks, in a container, on a file of the
//! image (`target = image`: reads come from the image layers, the first write goes through the
//! backend's copy-on-write) and on a new file of the container layer (`target = new`), buffered
//! and with O_DIRECT, with and without a final fsync. `randio` is the same with random 4 KiB
//! blocks; `baremetal` runs both on the host. The parameter types live here.
//!
//! One repetition per job: a container holds (probe `hold`) until every job is up and the
//! harness has dropped the caches, then the probe reads and writes and times both with its own
//! clock (open to close, fsync included). For `target = new` the probe first writes the file
//! (the timed sequential write of seqio; for randio an unrecorded fill), holds while the
//! harness drops the caches, then reads it. Throughput is bytes over the probe's time; with
//! several jobs, the sum of bytes over the slowest job's time.
//!
//! O_DIRECT: a backend that refuses it (open fails with EINVAL) has its direct cells skipped
//! with that reason. On loop-backed storage (btrfs, zfs here) O_DIRECT reaches the loop device,
//! which may serve it from the host page cache: such cells are marked `loop_backed` and the
//! note says so. Answers dm-io-intensive and (with `baremetal`) near-bare-metal.

use serde::{Deserialize, Serialize};

use crate::{Better, MetricSpec, ParamKind, ParamSpec, Unit, Params, Profile, TypedParams, Workload, GIB, KIB, MIB};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `/data/io`, a file of the image.
    Image,
    /// A file created in the container layer.
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Seq,
    Rand,
}

/// Parameters of one seqio / randio / baremetal cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoParams {
    pub pattern: Pattern,
    pub target: Target,
    /// O_DIRECT on every open.
    pub direct: bool,
    /// fsync before close of the written file (included in the write time).
    pub fsync: bool,
    pub file_bytes: u64,
    pub block_bytes: u64,
    /// Concurrent jobs (containers), each on its own file copy.
    pub jobs: u32,
    /// IOs of one read pass and of one write pass: every block once for `seq`; for `rand`
    /// that many random block-aligned offsets anywhere in the file (which is never extended).
    pub ios: u64,
}

impl TypedParams for IoParams {}

impl IoParams {
    pub fn ios(&self) -> u64 {
        self.ios.max(1)
    }
    pub fn seq(target: Target, direct: bool, fsync: bool, file_bytes: u64, jobs: u32) -> Self {
        let ios = file_bytes.div_ceil(SEQ_BLOCK).max(1);
        IoParams { pattern: Pattern::Seq, target, direct, fsync, file_bytes, block_bytes: SEQ_BLOCK, jobs, ios }
    }
    /// Random IO: `ios` 4 KiB IOs per pass (at most one per block of the file).
    pub fn rand(target: Target, direct: bool, fsync: bool, file_bytes: u64, jobs: u32, ios: u64) -> Self {
        let ios = ios.min(file_bytes / RAND_BLOCK).max(1);
        IoParams { pattern: Pattern::Rand, target, direct, fsync, file_bytes, block_bytes: RAND_BLOCK, jobs, ios }
    }
}

pub const SEQ_BLOCK: u64 = 128 * KIB;
pub const RAND_BLOCK: u64 = 4 * KIB;
/// Random IOs per pass in the quick profile (8 MiB of 4 KiB IOs, spread over the whole file);
/// the full profile does one per 4 blocks of the file, at least this many.
pub const RAND_IOS_QUICK: u64 = 2048;
pub const QUICK_FILE: u64 = 64 * MIB;
pub const FULL_FILES: [u64; 3] = [64 * MIB, 256 * MIB, GIB];
pub const FULL_JOBS: [u32; 2] = [1, 4];

/// Path of the image file inside the container.
pub const IMAGE_FILE: &str = "/data/io";
/// Path of the new file inside the container.
pub const NEW_FILE: &str = "/var/tmp/cowbench-io";

pub const METRICS: [MetricSpec; 4] = [
    MetricSpec { name: "read_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "bytes read over the probe's read time (all jobs: sum over the slowest)" },
    MetricSpec { name: "write_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "bytes written over the probe's write time, open to close, fsync included" },
    MetricSpec { name: "read_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "mean time of one read IO (read time / IOs), one sample per job" },
    MetricSpec { name: "write_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "mean time of one write IO (write time / IOs), one sample per job" },
];

/// Quick cells, one 64 MiB file and one job: buffered and direct on the image file (what
/// dm-io-intensive compares), and on a new file buffered + fsync (seqio) or direct + fsync
/// (randio). The full profile has every combination.
pub fn quick_cells(rand: bool) -> Vec<IoParams> {
    if rand {
        let mk = |t, d, f| IoParams::rand(t, d, f, QUICK_FILE, 1, RAND_IOS_QUICK);
        vec![mk(Target::Image, false, false), mk(Target::Image, true, false), mk(Target::New, true, true)]
    } else {
        let mk = |t, d, f| IoParams::seq(t, d, f, QUICK_FILE, 1);
        vec![mk(Target::Image, false, false), mk(Target::Image, true, false), mk(Target::New, false, true)]
    }
}

/// Full cells: every target × buffered/direct × fsync × size × jobs.
pub fn full_cells(rand: bool) -> Vec<IoParams> {
    let mk = |t, d, f, b: u64, j| {
        if rand {
            IoParams::rand(t, d, f, b, j, (b / RAND_BLOCK / 4).max(RAND_IOS_QUICK))
        } else {
            IoParams::seq(t, d, f, b, j)
        }
    };
    let mut v = Vec::new();
    for &jobs in &FULL_JOBS {
        for &size in &FULL_FILES {
            for target in [Target::Image, Target::New] {
                for direct in [false, true] {
                    for fsync in [false, true] {
                        v.push(mk(target, direct, fsync, size, jobs));
                    }
                }
            }
        }
    }
    v
}

/// `ios` from the other parameters after a `--set` (shared by seqio, randio and baremetal):
/// one IO per block for a sequential pass, at most one per block for a random one.
pub fn derive_ios(p: &mut Params) {
    let Ok(io) = IoParams::from_params(p) else { return };
    let blocks = io.file_bytes.div_ceil(io.block_bytes.max(1)).max(1);
    let ios = match io.pattern {
        Pattern::Seq => blocks,
        Pattern::Rand => io.ios.min(io.file_bytes / io.block_bytes.max(1)).max(1),
    };
    p.insert("ios".into(), ios.into());
}

pub fn repetitions(profile: Profile) -> u32 {
    match profile {
        Profile::Quick => 2,
        Profile::Full => 10,
    }
}

/// The parameters of a seqio or randio cell (`cowbench run --set seqio.NAME=…`).
pub const PARAMS: [ParamSpec; 8] = [
    ParamSpec { name: "pattern", kind: ParamKind::Choice(&["seq", "rand"]), description: "sequential 128 KiB or random 4 KiB IO" },
    ParamSpec { name: "target", kind: ParamKind::Choice(&["image", "new"]), description: "a file of the image, or a new file of the container layer" },
    ParamSpec { name: "direct", kind: ParamKind::Bool, description: "O_DIRECT on every open" },
    ParamSpec { name: "fsync", kind: ParamKind::Bool, description: "fsync before close of the written file" },
    ParamSpec { name: "file_bytes", kind: ParamKind::Bytes, description: "size of the file" },
    ParamSpec { name: "block_bytes", kind: ParamKind::Bytes, description: "size of one IO" },
    ParamSpec { name: "jobs", kind: ParamKind::Count, description: "concurrent jobs (containers), each on its own file copy" },
    ParamSpec { name: "ios", kind: ParamKind::Count, description: "IOs of one read pass and of one write pass" },
];

pub struct Seqio;

impl Workload for Seqio {
    fn id(&self) -> &'static str {
        "seqio"
    }
    fn description(&self) -> &'static str {
        "sequential 128 KiB reads and writes on an image file and a new file, buffered and O_DIRECT"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["near-bare-metal", "dm-io-intensive"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        IoParams::from_params(p).map(drop)
    }
    fn derive_params(&self, p: &mut Params) {
        derive_ios(p);
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let c = match profile {
            Profile::Quick => quick_cells(false),
            Profile::Full => full_cells(false),
        };
        c.iter().map(|p| p.to_params()).collect()
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        repetitions(profile)
    }
    fn drop_caches(&self) -> bool {
        true
    }
    fn setup<'a>(&self, lab: &'a dyn crate::lab::Lab, params: &Params) -> Result<Box<dyn crate::CellExec + 'a>, crate::SetupError> {
        crate::fileio::setup_in_container(self.id(), lab, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        let q = Seqio.cells(Profile::Quick);
        assert_eq!(q.len(), 3);
        assert_eq!(
            crate::params_string(&q[0]),
            "block_bytes=131072;direct=false;file_bytes=67108864;fsync=false;ios=512;jobs=1;pattern=seq;target=image"
        );
        let p = IoParams::from_params(&q[1]).unwrap();
        assert!(p.direct && p.target == Target::Image && p.ios() == 512);
        assert_eq!(Seqio.cells(Profile::Full).len(), 2 * 3 * 2 * 2 * 2);
        assert_eq!(IoParams::rand(Target::New, false, false, MIB, 1, RAND_IOS_QUICK).ios(), 256);
        assert_eq!(IoParams::rand(Target::New, false, false, QUICK_FILE, 1, RAND_IOS_QUICK).ios(), RAND_IOS_QUICK);
    }
}
