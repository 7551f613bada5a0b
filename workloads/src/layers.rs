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

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use cowbench_drivers::Labels;
use serde::{Deserialize, Serialize};

use crate::images::content::Pattern;
use crate::images::synth::TarWriter;
use crate::kit;
use crate::lab::{Lab, Notes};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, MIB, Better, ParamKind, ParamSpec, Unit};

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
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: LayersParams = kit::params(self.id(), params)?;
        let tar = lab.scratch_dir("layers-tar")?.join(format!("b{}-f{}.tar", p.layer_bytes, p.files));
        let written = (|| -> anyhow::Result<u64> {
            let mut w = io::BufWriter::with_capacity(1 << 20, File::create(&tar)?);
            write_tar(&p, lab.seed(), &mut w)?;
            w.into_inner().map_err(|e| e.into_error())?;
            Ok(std::fs::metadata(&tar)?.len())
        })();
        let tar_bytes = written.with_context(|| format!("layers: write {}", tar.display()))?;
        Ok(Box::new(LayersCell { lab, p, tar, tar_bytes, left: Vec::new() }))
    }
}

// The executor. Pull (apply + commit) and push (diff + commit) of a synthetic layer, timed by
// the harness's monotonic clock around the driver calls only. The layer tar is written to a
// file once per cell (untimed); preparing the layers and removing them afterwards is outside
// the timed spans. What the timed calls include is the driver's whole `apply`, which takes a
// rollback checkpoint of the layer before it unpacks and drops it after (so that a failed
// apply leaves the layer as it was): the pull figure carries that cost too (see PULL_INCLUDES).

/// What the pull timing holds besides unpacking the tar, recorded with every cell.
const PULL_INCLUDES: &str = "apply + commit as the driver does them, including apply's rollback checkpoint of \
    the fresh layer, taken before and dropped after the unpack: a hardlink copy of the layer directory \
    (overlay, aufs, vfs) or a snapshot (btrfs, zfs, devicemapper); on btrfs dropping it also commits the \
    filesystem twice (BTRFS_IOC_SYNC, which writes the unpacked data out) and waits for the snapshot's \
    deletion (btrfs subvolume sync)";

/// Keys of this process's layers are unique across cells and repetitions.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write the layer tar of `p`: `files` files of `layer_bytes / files` bytes, 100 per directory.
pub fn write_tar(p: &LayersParams, seed: u64, out: &mut dyn Write) -> io::Result<()> {
    let each = p.layer_bytes / p.files.max(1);
    let mut t = TarWriter::new(out);
    for i in 0..p.files {
        t.file(&format!("layer/d{}/f{i}", i / 100), 0o644, each, Pattern::new(seed, i, each))?;
    }
    t.finish()?.flush()
}

struct LayersCell<'a> {
    lab: &'a dyn Lab,
    p: LayersParams,
    tar: PathBuf,
    tar_bytes: u64,
    /// Layers of a failed repetition, removed in `finish`.
    left: Vec<String>,
}

/// A sink that counts what the diff writes.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LayersCell<'_> {
    fn open_tar(&self) -> anyhow::Result<io::BufReader<File>> {
        let f = File::open(&self.tar).with_context(|| format!("layers: open {}", self.tar.display()))?;
        Ok(io::BufReader::with_capacity(1 << 20, f))
    }
}

impl CellExec for LayersCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = self.lab.driver();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let (pull_a, pull_c, push_a, push_c) =
            (format!("lyr-pull-{tag}.a"), format!("lyr-pull-{tag}"), format!("lyr-push-{tag}.a"), format!("lyr-push-{tag}"));
        let none = Labels::new();

        // Pull: apply + commit of a fresh layer.
        d.prepare(&pull_a, None, &none)?;
        self.left.push(pull_a.clone());
        let mut f = self.open_tar()?;
        let t0 = Instant::now();
        d.apply(&pull_a, &mut f)?;
        let t1 = Instant::now();
        d.commit(&pull_c, &pull_a, &none)?;
        let t2 = Instant::now();
        self.left.retain(|k| k != &pull_a);
        self.left.push(pull_c.clone());

        // Push: an active layer holding the same content (as a container would have written
        // it; untimed), then diff + commit.
        d.prepare(&push_a, None, &none)?;
        self.left.push(push_a.clone());
        d.apply(&push_a, &mut self.open_tar()?)?;
        let mut sink = Count(0);
        let t3 = Instant::now();
        d.diff(&push_a, &mut sink)?;
        d.commit(&push_c, &push_a, &none)?;
        let t4 = Instant::now();
        self.left.retain(|k| k != &push_a);
        self.left.push(push_c.clone());

        for k in [&pull_c, &push_c] {
            d.remove(k)?;
            self.left.retain(|x| x != k);
        }
        let bytes = self.p.layer_bytes as f64;
        let ns = |a: Instant, b: Instant| (b - a).as_nanos().max(1) as f64;
        Ok(vec![
            ("pull_latency_ns", ns(t0, t2)),
            ("pull_bytes_per_s", bytes * 1e9 / ns(t0, t2)),
            ("push_latency_ns", ns(t3, t4)),
            ("push_bytes_per_s", bytes * 1e9 / ns(t3, t4)),
            ("commit_latency_ns", ns(t1, t2)),
            ("diff_tar_bytes", sink.0 as f64),
        ])
    }

    fn notes(&self) -> Notes {
        Notes::from([
            ("tar_bytes".into(), self.tar_bytes.to_string()),
            ("timed_in".into(), "harness (monotonic clock around the driver's apply/diff/commit: host-side driver operations)".into()),
            ("tar_source".into(), "a file in the page cache, as a just-downloaded blob".into()),
            ("pull_includes".into(), PULL_INCLUDES.into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let d = self.lab.driver();
        let mut first = None;
        for k in &self.left {
            if let Err(e) = d.remove(k) {
                first.get_or_insert(e);
            }
        }
        // The scratch directory itself goes with the run.
        let _ = std::fs::remove_file(&self.tar);
        first.map_or(Ok(()), |e| Err(e.into()))
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

    #[test]
    fn tar_sizes_match_the_layer() {
        // The sizes cells recorded before the executor moved here (notes `tar_bytes`).
        for (files, bytes, tar_bytes) in [(10, 16 * MIB, 16_785_408u64), (1_000, 16 * MIB, 17_414_656)] {
            let mut v = Vec::new();
            write_tar(&LayersParams { layer_bytes: bytes, files }, 1, &mut v).unwrap();
            assert_eq!(v.len() as u64, tar_bytes, "files={files}");
        }
    }
}
