//! `lookup`: open + stat of files that live in the bottom layer of a deep stack, cold (caches
//! dropped before the container starts) and warm (a second pass in the same container).
//!
//! The image is the base layer, a layer holding `files` small files under `/lookup/d<k>/`, and
//! `depth - 1` layers above it that each add a file to every one of those directories, so the
//! directories are merged across the whole stack and every lookup of a file crosses all
//! `depth` layers (the case that hurts union filesystems: a negative lookup per layer). The
//! in-container probe times stat + open + close of each file with its own clock. Answers
//! aufs-deep-lookup.

use serde::{Deserialize, Serialize};

use crate::{Better, MetricSpec, ParamKind, ParamSpec, Unit, Params, Profile, TypedParams, Workload};

/// Whether the timed pass finds the caches cold or warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// Page, dentry and inode caches dropped before the container starts; the first pass is timed.
    Cold,
    /// A first pass (not recorded) fills the caches; the second pass is timed.
    Warm,
}

/// Parameters of one lookup cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupParams {
    /// Layers of the image above the base layer; the files are in the bottom one of them.
    pub depth: u32,
    /// Files looked up, all in the bottom layer.
    pub files: u32,
    pub cache: Cache,
}

impl TypedParams for LookupParams {}

/// Files per directory of the bottom layer.
pub const FILES_PER_DIR: u32 = 100;
/// Bytes of each looked-up file.
pub const FILE_BYTES: u64 = 64;

impl LookupParams {
    pub fn dirs(&self) -> u32 {
        self.files.div_ceil(FILES_PER_DIR).max(1)
    }
    /// Path of file `i` inside the container.
    pub fn path(i: u32) -> String {
        format!("/lookup/d{}/f{i}", i / FILES_PER_DIR)
    }
}

pub const QUICK_DEPTHS: [u32; 3] = [1, 8, 32];
pub const FULL_DEPTHS: [u32; 5] = [1, 8, 32, 64, 128];
pub const QUICK_FILES: [u32; 1] = [100];
pub const FULL_FILES: [u32; 3] = [100, 1_000, 10_000];

pub const METRICS: [MetricSpec; 2] = [
    MetricSpec {
        name: "lookup_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "stat + open(O_RDONLY) + close of one file of the bottom layer, timed inside the container (one sample per file)",
    },
    MetricSpec {
        name: "found_count",
        unit: Unit::Count,
        better: Better::Neither,
        description: "files of the timed pass that were found (must equal `files`)",
    },
];

/// The parameters of a cell (`cowbench run --set lookup.NAME=…`).
pub const PARAMS: [ParamSpec; 3] = [
    ParamSpec { name: "depth", kind: ParamKind::Count, description: "layers of the image above the base layer; the files are in the bottom one" },
    ParamSpec { name: "files", kind: ParamKind::Count, description: "files looked up, all in the bottom layer" },
    ParamSpec { name: "cache", kind: ParamKind::Choice(&["cold", "warm"]), description: "caches dropped before the timed pass, or warmed by an unrecorded first pass" },
];

pub struct Lookup;

impl Workload for Lookup {
    fn id(&self) -> &'static str {
        "lookup"
    }
    fn description(&self) -> &'static str {
        "open + stat of files in the bottom layer of a deep stack, cold and warm"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["aufs-deep-lookup"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        LookupParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let (depths, files): (&[u32], &[u32]) = match profile {
            Profile::Quick => (&QUICK_DEPTHS, &QUICK_FILES),
            Profile::Full => (&FULL_DEPTHS, &FULL_FILES),
        };
        let mut v = Vec::new();
        for &files in files {
            for &depth in depths {
                for cache in [Cache::Cold, Cache::Warm] {
                    v.push(LookupParams { depth, files, cache }.to_params());
                }
            }
        }
        v
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        // Each repetition yields one sample per file: few repetitions give many samples.
        match profile {
            Profile::Quick => 2,
            Profile::Full => 10,
        }
    }
    fn drop_caches(&self) -> bool {
        // Cold cells need it; warm cells warm their own caches with an unrecorded first pass.
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
    fn cells_and_paths() {
        let q = Lookup.cells(Profile::Quick);
        assert_eq!(q.len(), 6);
        let p = LookupParams::from_params(&q[1]).unwrap();
        assert_eq!(p, LookupParams { depth: 1, files: 100, cache: Cache::Warm });
        assert_eq!(crate::params_string(&q[0]), "cache=cold;depth=1;files=100");
        assert_eq!(LookupParams::path(250), "/lookup/d2/f250");
        assert_eq!(LookupParams { depth: 1, files: 10_000, cache: Cache::Cold }.dirs(), 100);
        assert_eq!(Lookup.cells(Profile::Full).len(), 30);
    }
}
