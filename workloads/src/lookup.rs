//! `lookup`: open + stat of files that live in the bottom layer of a deep stack, cold (caches
//! dropped before the container starts) and warm (a second pass in the same container).
//!
//! The image is the base layer, a layer holding `files` small files under `/lookup/d<k>/`, and
//! `depth - 1` layers above it that each add a file to every one of those directories, so the
//! directories are merged across the whole stack and every lookup of a file crosses all
//! `depth` layers (the case that hurts union filesystems: a negative lookup per layer). The
//! in-container probe times stat + open + close of each file with its own clock. Answers
//! aufs-deep-lookup.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::images::content::Pattern;
use crate::images::synth::TarWriter;
use crate::images::{CustomLayer, ImageSpec, Shape};
use crate::kit;
use crate::lab::{ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, Better, ParamKind, ParamSpec, Unit};

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
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: LookupParams = kit::params(self.id(), params)?;
        if let Some(max) = lab.driver().capabilities().max_depth {
            // base + depth image layers + the container's layer.
            if p.depth as usize + 2 > max {
                return Err(SetupError::Skip(format!("{} mounts at most {max} layers", lab.driver_name())));
            }
        }
        let img = lab.image(&image_spec(&p, lab.seed()))?;
        Ok(Box::new(LookupCell { lab, p, img }))
    }
}

// The executor. One container per repetition, whose probe stats and opens every file of the
// bottom layer (twice for warm cells: the first pass fills the caches and is not recorded).
// Caches are dropped by the runner before each repetition, i.e. before the container starts.

/// The image of a (depth, files) pair; cold and warm cells share it.
fn image_spec(p: &LookupParams, seed: u64) -> ImageSpec {
    let (files, dirs) = (p.files, p.dirs());
    let mut layers = vec![CustomLayer::new(
        format!("{files} files of {FILE_BYTES} bytes at /lookup/d<i/{FILES_PER_DIR}>/f<i>, content Pattern(seed {seed}, salt i)"),
        move |w: &mut dyn Write| {
            let mut t = TarWriter::new(w);
            for i in 0..files {
                t.file(&LookupParams::path(i), 0o644, FILE_BYTES, Pattern::new(seed, i as u64, FILE_BYTES))?;
            }
            t.finish()?.flush()
        },
    )];
    for n in 1..p.depth {
        // Every layer above adds a file to every directory, so each directory is merged over
        // the whole stack and each lookup in it visits every layer.
        layers.push(CustomLayer::new(format!("/lookup/d<d>/layer{n} of 1 byte 'x' for d in 0..{dirs}"), move |w: &mut dyn Write| {
            let mut t = TarWriter::new(w);
            for d in 0..dirs {
                t.file(&format!("lookup/d{d}/layer{n}"), 0o644, 1, &b"x"[..])?;
            }
            t.finish()?.flush()
        }));
    }
    ImageSpec::new(&format!("lookup-d{}-f{}-s{seed}", p.depth, p.files), seed, Shape::Custom(layers))
}

struct LookupCell<'a> {
    lab: &'a dyn Lab,
    p: LookupParams,
    img: Image,
}

impl CellExec for LookupCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let paths: Vec<String> = (0..self.p.files).map(LookupParams::path).collect();
        let pass = Op::Stat { paths, open: true };
        let ops = match self.p.cache {
            Cache::Cold => vec![pass],
            Cache::Warm => vec![pass.clone(), pass],
        };
        let timed = ops.len() - 1;
        let out = self.lab.run(&self.img, &ContainerSpec::probe(&Request::new(ops)))?;
        if !out.success() {
            anyhow::bail!("probe exited with {:?}: {}", out.exit_code, out.stderr_str().trim());
        }
        let resp = out.probe_response()?;
        let mut samples: RepSamples = Vec::with_capacity(self.p.files as usize + 1);
        let mut found = 0u64;
        let mut first_err = None;
        for s in resp.samples.iter().filter(|s| s.index == timed && s.phase == "stat") {
            match &s.error {
                None => {
                    found += 1;
                    samples.push(("lookup_latency_ns", s.latency_ns as f64));
                }
                Some(e) => {
                    first_err.get_or_insert_with(|| format!("{}: {}", s.path.as_deref().unwrap_or("?"), e.message));
                }
            }
        }
        if let Some(e) = first_err {
            // A file of the image that cannot be found is a broken backend, not a slow one.
            anyhow::bail!("{} of {} files not found, first: {e}", self.p.files as u64 - found, self.p.files);
        }
        samples.push(("found_count", found as f64));
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        Notes::from([
            ("image".into(), self.img.name.clone()),
            ("image_layers".into(), self.img.layers.len().to_string()),
            ("files_per_dir".into(), FILES_PER_DIR.to_string()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC): stat + open + close per file".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Cold and warm cells share the image; the driver's teardown removes it.
        Ok(())
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

    /// (path, size) of every regular file a custom layer writes.
    fn files_of(layer: &CustomLayer) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        (layer.write)(&mut v).unwrap();
        let mut ar = tar::Archive::new(&v[..]);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type().is_file() {
                out.push((e.path().unwrap().to_string_lossy().into_owned(), e.size()));
            }
        }
        out
    }

    #[test]
    fn image_merges_every_directory_across_the_stack() {
        let p = LookupParams { depth: 3, files: 250, cache: Cache::Cold };
        let spec = image_spec(&p, 7);
        assert_eq!(spec.name, "lookup-d3-f250-s7");
        let Shape::Custom(layers) = &spec.shape else { panic!("{:?}", spec.shape) };
        assert_eq!(layers.len(), 3);
        let bottom = files_of(&layers[0]);
        assert_eq!(bottom.len(), 250);
        assert!(bottom.iter().all(|(_, n)| *n == FILE_BYTES));
        assert_eq!(bottom[249].0, LookupParams::path(249).trim_start_matches('/'));
        for (n, layer) in layers.iter().enumerate().skip(1) {
            let names: Vec<String> = files_of(layer).into_iter().map(|(p, _)| p).collect();
            assert_eq!(names, (0..3).map(|d| format!("lookup/d{d}/layer{n}")).collect::<Vec<_>>());
        }
        // Reuse compares recipes: each layer's differs from the others and with the seed.
        let other = image_spec(&p, 8);
        let Shape::Custom(other) = &other.shape else { unreachable!() };
        assert_ne!(layers[0].recipe, other[0].recipe);
        assert_ne!(layers[1].recipe, layers[2].recipe);
    }
}
