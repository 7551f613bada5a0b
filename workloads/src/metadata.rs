//! `metadata`: metadata-heavy work in a container. The probe creates `files` small files in the
//! container layer, then stats, renames, chmods and unlinks every one of them (each phase timed
//! as a whole by the probe's own clock; the figure is per file). Then it chowns, recursively, a
//! directory of the image (`chown_files` files, `chown_bytes` in all): file-level backends
//! (overlay, aufs, vfs-style copies) must copy every file up to change its owner; block-level
//! ones change metadata only. The harness measures the bytes the container layer gained
//! (driver usage, after minus before). Answers filelevel-density (metadata cost per backend)
//! and the overlay chown cost (docker/for-linux#388).

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::content::Pattern;
use crate::images::synth::TarWriter;
use crate::images::{CustomLayer, ImageSpec, Shape};
use crate::kit;
use crate::lab::{ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, MIB, Better, ParamKind, ParamSpec, Unit};

/// Parameters of one metadata cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataParams {
    /// Small files created, stat'ed, renamed, chmod'ed and unlinked in the container layer.
    pub files: u64,
    /// Files of the image directory chowned recursively.
    pub chown_files: u64,
    /// Bytes of that directory (spread evenly over its files).
    pub chown_bytes: u64,
}

impl TypedParams for MetadataParams {}

impl MetadataParams {
    pub fn chown_file_bytes(&self) -> u64 {
        self.chown_bytes / self.chown_files.max(1)
    }
}

/// Bytes of each file the metadata phases create.
pub const SMALL_FILE_BYTES: u64 = 100;
/// Directory of the container layer the metadata phases work in.
pub const META_DIR: &str = "/var/tmp/cowbench-meta";
/// Image directory chowned recursively.
pub const CHOWN_DIR: &str = "/chown";
/// Owner the chown sets (nobody:nogroup).
pub const CHOWN_UID: u32 = 65534;

pub const QUICK_FILES: [u64; 1] = [1_000];
pub const FULL_FILES: [u64; 3] = [1_000, 10_000, 100_000];

pub const METRICS: [MetricSpec; 7] = [
    MetricSpec { name: "create_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "open(O_CREAT|O_EXCL) + write + close of one small file (phase time / files)" },
    MetricSpec { name: "stat_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "stat of one file (phase time / files)" },
    MetricSpec { name: "rename_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "rename of one file in the same directory (phase time / files)" },
    MetricSpec { name: "chmod_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "chmod of one file (phase time / files)" },
    MetricSpec { name: "unlink_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "unlink of one file (phase time / files)" },
    MetricSpec { name: "chown_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "recursive lchown of the image directory, timed inside the container" },
    MetricSpec {
        name: "usage_delta_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "bytes the container layer gained over the repetition (driver usage after minus before): the chown's copy-up",
    },
];

/// The parameters of a cell (`cowbench run --set metadata.NAME=…`).
pub const PARAMS: [ParamSpec; 3] = [
    ParamSpec { name: "files", kind: ParamKind::Count, description: "small files created, stat'ed, renamed, chmod'ed and unlinked" },
    ParamSpec { name: "chown_files", kind: ParamKind::Count, description: "files of the image directory chowned recursively" },
    ParamSpec { name: "chown_bytes", kind: ParamKind::Bytes, description: "bytes of that directory, spread evenly over its files" },
];

pub struct Metadata;

impl Workload for Metadata {
    fn id(&self) -> &'static str {
        "metadata"
    }
    fn description(&self) -> &'static str {
        "create, stat, rename, chmod, unlink many small files; recursive chown of an image directory"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["filelevel-density"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        MetadataParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        match profile {
            Profile::Quick => QUICK_FILES
                .iter()
                .map(|&files| MetadataParams { files, chown_files: 64, chown_bytes: MIB }.to_params())
                .collect(),
            Profile::Full => FULL_FILES
                .iter()
                .map(|&files| MetadataParams { files, chown_files: 1_000, chown_bytes: 64 * MIB }.to_params())
                .collect(),
        }
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            Profile::Quick => 3,
            Profile::Full => 10,
        }
    }
    fn drop_caches(&self) -> bool {
        // The chown reads the image files to copy them up: cold, as after a pull.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: MetadataParams = kit::params(self.id(), params)?;
        let img = lab.image(&image_spec(&p, lab.seed()))?;
        Ok(Box::new(MetadataCell { lab, p, img }))
    }
}

// The executor. A container holds while the harness reads the usage of its fresh layer; on
// SIGTERM the probe runs the metadata phases on small files of its own layer and the recursive
// chown of the image directory, timing each with its own clock; the harness reads the usage
// again once the container is gone (the layer is kept until then).

/// The image: the base layer and the directory the chown walks.
fn image_spec(p: &MetadataParams, seed: u64) -> ImageSpec {
    let (n, each) = (p.chown_files, p.chown_file_bytes());
    let dir = CHOWN_DIR.trim_start_matches('/');
    let layer = CustomLayer::new(
        format!("{n} files of {each} bytes at /{dir}/d<i/100>/f<i>, content Pattern(seed {seed}, salt i)"),
        move |w: &mut dyn Write| {
            let mut t = TarWriter::new(w);
            for i in 0..n {
                t.file(&format!("{dir}/d{}/f{i}", i / 100), 0o644, each, Pattern::new(seed, i, each))?;
            }
            t.finish()?.flush()
        },
    );
    ImageSpec::new(&format!("meta-c{}-b{}-s{seed}", p.chown_files, p.chown_bytes), seed, Shape::Custom(vec![layer]))
}

struct MetadataCell<'a> {
    lab: &'a dyn Lab,
    p: MetadataParams,
    img: Image,
}

impl CellExec for MetadataCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let req = Request::new(vec![
            Op::Hold,
            Op::Meta { dir: META_DIR.into(), count: self.p.files, bytes: SMALL_FILE_BYTES },
            Op::Chown { path: CHOWN_DIR.into(), uid: CHOWN_UID, gid: CHOWN_UID },
        ]);
        let spec = ContainerSpec { stop_timeout: Some(Duration::from_secs(600)), ..ContainerSpec::probe(&req) };
        kit::layer_usage_around_stop(self.lab, &self.img, spec, || (), |resp, ()| {
            let files = self.p.files.max(1) as f64;
            let mut v: RepSamples = Vec::new();
            for (phase, metric) in [
                ("create", "create_latency_ns"),
                ("stat", "stat_latency_ns"),
                ("rename", "rename_latency_ns"),
                ("chmod", "chmod_latency_ns"),
                ("unlink", "unlink_latency_ns"),
            ] {
                let s = resp.samples_of("meta", phase).next().ok_or_else(|| anyhow::anyhow!("no meta/{phase} sample"))?;
                v.push((metric, s.latency_ns as f64 / files));
            }
            let ch = resp.samples_of("chown", "total").next().ok_or_else(|| anyhow::anyhow!("no chown sample"))?;
            let entries = ch.values.get("entries_count").copied().unwrap_or(0);
            if entries < self.p.chown_files {
                anyhow::bail!("chown reached {entries} entries, the image directory has {} files", self.p.chown_files);
            }
            v.push(("chown_latency_ns", ch.latency_ns as f64));
            Ok(v)
        })
    }

    fn notes(&self) -> Notes {
        Notes::from([
            ("image".into(), self.img.name.clone()),
            ("meta_dir".into(), META_DIR.into()),
            ("chown_dir".into(), CHOWN_DIR.into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC); per-file figures are phase time / files".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        let q = Metadata.cells(Profile::Quick);
        assert_eq!(q.len(), 1);
        let p = MetadataParams::from_params(&q[0]).unwrap();
        assert_eq!(p.files, 1_000);
        assert_eq!(p.chown_file_bytes() * p.chown_files, MIB);
        assert_eq!(Metadata.cells(Profile::Full).len(), 3);
    }

    #[test]
    fn image_holds_the_chown_directory() {
        let p = MetadataParams { files: 10, chown_files: 150, chown_bytes: 150 * 1000 };
        let spec = image_spec(&p, 3);
        assert_eq!(spec.name, "meta-c150-b150000-s3");
        let Shape::Custom(layers) = &spec.shape else { panic!("{:?}", spec.shape) };
        let mut v = Vec::new();
        (layers[0].write)(&mut v).unwrap();
        let mut ar = tar::Archive::new(&v[..]);
        let files: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| (e.path().unwrap().to_string_lossy().into_owned(), e.size()))
            .collect();
        assert_eq!(files.len(), 150);
        assert!(files.iter().all(|(path, n)| path.starts_with("chown/d") && *n == 1000));
        assert_eq!(files[149].0, "chown/d1/f149");
        let Shape::Custom(other) = image_spec(&p, 4).shape else { unreachable!() };
        assert_ne!(layers[0].recipe, other[0].recipe, "the seed decides the content, so the recipe names it");
    }
}
