//! `copyup`: the first write of 1 byte to a file that lives in the image.
//!
//! File-level backends (overlay, aufs, vfs-style copies) copy the whole file up before the first
//! write; block-level ones (btrfs, zfs, dm-thin) copy one block. The in-container probe times
//! the open-for-write and the write with its own monotonic clock; the harness measures the bytes
//! the backend consumed (driver usage of the container layer, after minus before). Answers
//! overlay-copyup-whole-file, aufs-copyup-size-depth and dm-block-copyup.
//!
//! The figure is the *first write in a fresh container*: on overlay and aufs it includes
//! copying up the parent directory (`/data`) as well as the file, so it has a fixed part that
//! does not depend on the file size. What grows with the size is compared with
//! `reference_copy_latency_ns`, a plain copy of a same-size file on the same backing
//! filesystem, taken cold in the same cell (the `marginal_cost` rule compares the two slopes).
//!
//! Cold means cold: the page cache is dropped after the layer usage is read (a backend whose
//! usage compares file contents reads the very file the write goes to), and the probe checks
//! with `mincore` right before the timed open that none of the target is resident; a repetition
//! that finds any of it resident fails instead of recording a warm time as a cold one.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use cowbench_drivers::{BackingKind, Driver};
use serde::{Deserialize, Serialize};

use crate::images::content::Pattern;
use crate::images::{ImageSpec, Shape};
use crate::kit;
use crate::lab::{ContainerSpec, Image, Lab, Notes};
use crate::probe::{Op, Request, Response};
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
/// Depths of the quick profile, swept only at the largest quick size (where the depth rule of
/// aufs-copyup-size-depth looks, and where a per-layer cost is least hidden by noise).
pub const QUICK_DEPTHS: [u32; 3] = [1, 8, 32];

/// Block size of the reference copy (overlay copies up in chunks of 1 MiB too).
const REFERENCE_BLOCK: u64 = MIB;

pub const METRICS: [MetricSpec; 7] = [
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
    MetricSpec {
        name: "target_resident_before_bytes",
        unit: Unit::Bytes,
        better: Better::Lower,
        description: "bytes of the image file in the page cache right before the timed open (mincore inside the container); a repetition with any fails",
    },
    MetricSpec {
        name: "reference_copy_latency_ns",
        unit: Unit::Nanoseconds,
        better: Better::Lower,
        description: "a plain cold copy of a same-size file on the driver's backing filesystem (host probe: read/write 1 MiB blocks, fsync, like overlay's copy-up); only file-level union drivers (overlay, aufs), whose layers are directories of that filesystem",
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
            Profile::Quick => {
                // The size sweep at depth 1, then the depth sweep at the largest size only.
                let largest = QUICK_SIZES[QUICK_SIZES.len() - 1];
                let sizes = QUICK_SIZES.iter().map(|&file_bytes| (file_bytes, 1));
                let depths = QUICK_DEPTHS.iter().filter(|&&d| d != 1).map(|&depth| (largest, depth));
                sizes
                    .chain(depths)
                    .map(|(file_bytes, depth)| CopyupParams { file_bytes, depth, write_at: WriteAt::Start }.to_params())
                    .collect()
            }
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
            // Six: below that a median's order-statistic interval is no 95% interval, and the
            // claims' rules decide on no fewer.
            Profile::Quick => 6,
            Profile::Full => 15,
        }
    }
    fn drop_caches(&self) -> bool {
        // The copy reads the lower file: a cold cache is the case the claim is about.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: CopyupParams = kit::params(self.id(), params)?;
        if p.depth > 1 && !copies_files_up(lab.driver()) {
            // Keeps the depth sweep (32 and 128 layer builds) to where it can show something.
            return Err(SetupError::Skip(format!(
                "depth > 1 is swept only where layers stack at run time: {} turns an image of any depth into one snapshot or copy when the container is created, so the file's depth is not on the first write's path",
                lab.driver_name()
            )));
        }
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
        let reference = match Reference::new(lab, p.file_bytes) {
            Ok(r) => r,
            Err(e) => {
                let _ = lab.remove_image(&img);
                return Err(SetupError::Fail(e));
            }
        };
        Ok(Box::new(CopyupCell { lab, p, img, pool_counter, reference }))
    }
}

/// The plain copy a copy-up is compared with: a file of the same size on the filesystem the
/// driver's layers live on, copied cold by the probe binary as a host process (the same
/// CLOCK_MONOTONIC code as inside the container, so both figures have the same clock and the
/// same granularity). Read/write in 1 MiB blocks and fsync, as overlay's copy-up does (it
/// copies in 1 MiB chunks and syncs the copy before renaming it into place); what the copy-up
/// does on top (the parent directory, xattrs, the rename) is a fixed cost per write, which the
/// `marginal_cost` rule's slopes leave out. Taken only where files are copied up
/// ([`copies_files_up`]), whose layers are directories of the cowbench root's filesystem, the
/// one the lab's scratch directory is on (checked).
enum Reference {
    Taken { probe: PathBuf, dir: PathBuf, src: PathBuf, dst: PathBuf },
    /// Why there is none for this driver.
    NotTaken(String),
}

impl Reference {
    fn new(lab: &dyn Lab, file_bytes: u64) -> anyhow::Result<Reference> {
        let name = lab.driver_name();
        if !copies_files_up(lab.driver()) {
            return Ok(Reference::NotTaken(format!("{name} copies no file up on the first write: nothing to compare with a copy")));
        }
        let backing = lab.driver().status().ok().and_then(|s| s.backing);
        let Some(backing) = backing.filter(|b| b.kind == BackingKind::Directory) else {
            return Ok(Reference::NotTaken(format!("{name} keeps its layers in a store of its own, not in directories of the host filesystem")));
        };
        let dir = lab.scratch_dir("copyup")?;
        // The scratch directory is on the cowbench root's filesystem; the driver's directories
        // normally are too, but a driver root elsewhere would make the comparison meaningless.
        let dev = |p: &std::path::Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        let (d_scratch, d_backing) = (dev(&dir)?, dev(&backing.path).with_context(|| format!("{name}: stat {}", backing.path.display()))?);
        if d_scratch != d_backing {
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(Reference::NotTaken(format!(
                "{name}'s directory {} is not on the filesystem of the scratch directory {}",
                backing.path.display(),
                dir.display()
            )));
        }
        let (src, dst) = (dir.join("reference-src"), dir.join("reference-dst"));
        let written = (|| -> std::io::Result<()> {
            let mut w = std::fs::File::create(&src)?;
            std::io::copy(&mut Pattern::new(lab.seed(), 0, file_bytes), &mut w)?;
            w.sync_all()
        })();
        written.with_context(|| format!("{name}: write the reference file {}", src.display()))?;
        Ok(Reference::Taken { probe: lab.probe_binary()?, dir, src, dst })
    }

    /// One cold copy: drop the caches, check that the source is not resident, copy, remove the
    /// copy. None when the driver has no reference.
    fn time(&self, lab: &dyn Lab) -> anyhow::Result<Option<f64>> {
        let Reference::Taken { probe, src, dst, .. } = self else { return Ok(None) };
        let name = lab.driver_name();
        let path = |p: &PathBuf| p.to_str().map(String::from).ok_or_else(|| anyhow::anyhow!("{name}: non-UTF-8 path {}", p.display()));
        let (s, d) = (path(src)?, path(dst)?);
        let req = Request::new(vec![
            Op::Resident { path: s.clone() },
            Op::Copy { src: s, dst: d, block_bytes: REFERENCE_BLOCK, fsync: true },
        ]);
        lab.drop_caches().map_err(|e| anyhow::anyhow!("{name}: before the reference copy: {e}"))?;
        let out = Command::new(probe).arg(req.to_json()).stdin(Stdio::null()).output().with_context(|| format!("{name}: run the host probe {}", probe.display()))?;
        let removed = std::fs::remove_file(dst);
        if !out.status.success() {
            anyhow::bail!("{name}: host probe exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        let resp = Response::from_json(&String::from_utf8_lossy(&out.stdout)).map_err(|e| anyhow::anyhow!("{name}: reference copy: {e}"))?;
        kit::check(&resp).with_context(|| format!("{name}: reference copy"))?;
        cold(&resp).with_context(|| format!("{name}: reference copy of {}", src.display()))?;
        removed.with_context(|| format!("{name}: remove {}", dst.display()))?;
        let copy = resp.samples_of("copy", "total").next().ok_or_else(|| anyhow::anyhow!("{name}: reference copy: no copy/total sample"))?;
        Ok(Some(copy.latency_ns as f64))
    }
}

/// The `resident` sample of a response, which must show none of the file in the page cache:
/// the bytes resident (always 0) or why the timing that followed was not cold.
fn cold(resp: &Response) -> anyhow::Result<f64> {
    let s = resp.samples_of("resident", "resident").next().ok_or_else(|| anyhow::anyhow!("probe response has no resident sample"))?;
    let (resident, size) = (s.values.get("resident_bytes").copied(), s.values.get("size_bytes").copied());
    let (Some(resident), Some(size)) = (resident, size) else {
        anyhow::bail!("resident sample without resident_bytes/size_bytes");
    };
    if resident > 0 {
        anyhow::bail!(
            "{resident} of the {size} bytes of {} were in the page cache when the timing started: a warm time is not recorded as a cold one",
            s.path.as_deref().unwrap_or("?")
        );
    }
    Ok(resident as f64)
}

// The executor. A container holds (probe `hold`), the harness reads the usage of its fresh
// layer and drops the caches again (btrfs and zfs read the usage by comparing the layer with
// its parent, content included for whole-second mtimes: that read the target into the page
// cache), then SIGTERM lets the probe check that no page of the target is resident (`mincore`;
// its open also walks the path, so lookups are warm and data cold in every driver alike) and
// do the first write to the image file, timed with its own clock; the harness reads the usage
// again. The layer is kept until both usage figures are read, then removed. Last, the
// reference copy (cold too) on the driver's backing filesystem.
//
// `usage_delta_bytes` is the driver's layer usage, which for a block backend (devicemapper)
// counts every changed file whole: the snapshotter's file-level view. What a block backend
// really allocated is its pool's own counter (the thin pool's used data blocks), recorded as
// `pool_data_used_delta_bytes` where there is one.
//
// Image: base layer (busybox + probe) and a stack of `depth` layers whose bottom one holds
// `/data/copyup` of `file_bytes` (depth 1: the file is in the topmost image layer).

const TARGET: &str = "/data/copyup";

/// The backend stacks the image's layers at run time and copies a whole file up on its first
/// write (file-level union: overlay, aufs). Not block-level backends (they copy a block of a
/// snapshot), nor full copies made at create time (vfs).
fn copies_files_up(d: &dyn Driver) -> bool {
    let c = d.capabilities();
    !c.block_level_cow && c.shares_layers
}

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
    reference: Reference,
}

impl CellExec for CopyupCell<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = self.lab.driver();
        let req = Request::new(vec![
            Op::Hold,
            Op::Resident { path: TARGET.into() },
            Op::Copyup { path: TARGET.into(), offset: self.p.write_offset(), bytes: self.p.write_len(), fsync: false },
        ]);
        let (lab, pool_counter) = (self.lab, self.pool_counter);
        let mut samples = kit::layer_usage_around_stop(
            self.lab,
            &self.img,
            ContainerSpec::probe(&req),
            || -> anyhow::Result<Option<u64>> {
                // Reading the usage may have read the target (see above): cold again.
                lab.drop_caches().map_err(|e| anyhow::anyhow!("{}: after reading the layer usage: {e}", lab.driver_name()))?;
                Ok(if pool_counter { pool_data_used(d) } else { None })
            },
            |resp, pool_before| {
                let pool_before = pool_before?;
                let resident = cold(resp).with_context(|| format!("{}: first write to {TARGET}", lab.driver_name()))?;
                let phase = |ph: &str| {
                    resp.samples_of("copyup", ph)
                        .next()
                        .map(|s| s.latency_ns as f64)
                        .ok_or_else(|| anyhow::anyhow!("probe response has no copyup/{ph} sample"))
                };
                let (open, write) = (phase("open")?, phase("pwrite")?);
                let mut samples = vec![
                    ("open_latency_ns", open),
                    ("write_latency_ns", write),
                    ("first_write_latency_ns", open + write),
                    ("target_resident_before_bytes", resident),
                ];
                // After `stop`: the container's filesystem is unmounted, so its writes reached the pool.
                if let (Some(b), Some(a)) = (pool_before, pool_before.and_then(|_| pool_data_used(d))) {
                    samples.push(("pool_data_used_delta_bytes", a.saturating_sub(b) as f64));
                }
                Ok(samples)
            },
        )?;
        if let Some(ns) = self.reference.time(self.lab)? {
            samples.push(("reference_copy_latency_ns", ns));
        }
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::from([
            ("image".into(), self.img.name.clone()),
            ("image_layers".into(), self.img.layers.len().to_string()),
            ("target".into(), TARGET.into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
            ("figure".into(), "first write in a fresh container: open O_WRONLY + pwrite, including the copy-up of the parent directory on file-level backends".into()),
            ("cold".into(), "caches dropped before the repetition and again after the usage read; mincore inside the container before the timed open must find 0 bytes of the target resident".into()),
            (
                "reference_copy".into(),
                match &self.reference {
                    Reference::Taken { dir, .. } => format!(
                        "host probe (CLOCK_MONOTONIC, same code as in the container) in {}: open, read/write {} KiB blocks, fsync, close; caches dropped before",
                        dir.display(),
                        REFERENCE_BLOCK / KIB
                    ),
                    Reference::NotTaken(why) => format!("not taken: {why}"),
                },
            ),
        ]);
        if self.lab.driver().capabilities().own_read_cache {
            n.insert(
                "cold_caveat".into(),
                format!("{} keeps a read cache of its own (ARC) that dropping the page cache does not empty and mincore does not see: the block the first write rewrites may come from it", self.lab.driver_name()),
            );
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        if let Reference::Taken { dir, .. } = &self.reference {
            let _ = std::fs::remove_dir_all(dir);
        }
        self.lab.remove_image(&self.img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_cells() {
        let cells = Copyup.cells(Profile::Quick);
        assert_eq!(cells.len(), 6);
        let p: Vec<CopyupParams> = cells.iter().map(|c| CopyupParams::from_params(c).unwrap()).collect();
        assert_eq!(p[3], CopyupParams { file_bytes: 64 * MIB, depth: 1, write_at: WriteAt::Start });
        // The depth sweep (1, 8, 32) at the largest size only.
        let at_64m: Vec<u32> = p.iter().filter(|c| c.file_bytes == 64 * MIB).map(|c| c.depth).collect();
        assert_eq!(at_64m, QUICK_DEPTHS);
        assert!(p.iter().filter(|c| c.depth != 1).all(|c| c.file_bytes == 64 * MIB));
        assert_eq!(crate::params_string(&cells[0]), "depth=1;file_bytes=4096;write_at=start");
        let mid = CopyupParams { file_bytes: 4096, depth: 1, write_at: WriteAt::Middle };
        assert_eq!((mid.write_offset(), mid.write_len()), (2048, 4));
    }

    fn response(resident: Option<(u64, u64)>) -> Response {
        let mut samples = Vec::new();
        if let Some((size, res)) = resident {
            let mut s = crate::probe::Sample::new("resident", 1, "resident");
            s.path = Some(TARGET.into());
            s.values.insert("size_bytes".into(), size);
            s.values.insert("resident_bytes".into(), res);
            samples.push(s);
        }
        Response {
            protocol_version: crate::probe::PROTOCOL_VERSION,
            probe_version: "t".into(),
            pid: 1,
            hostname: "h".into(),
            samples,
            errors: 0,
            started_ns: 0,
            finished_ns: 1,
        }
    }

    #[test]
    fn a_resident_target_fails_the_repetition() {
        assert_eq!(cold(&response(Some((64 * MIB, 0)))).unwrap(), 0.0);
        let e = cold(&response(Some((64 * MIB, 64 * MIB)))).unwrap_err().to_string();
        assert!(e.contains("67108864 of the 67108864 bytes of /data/copyup") && e.contains("warm"), "{e}");
        // One page is enough: a partly warm file is not cold.
        assert!(cold(&response(Some((64 * MIB, 4096)))).is_err());
        assert!(cold(&response(None)).unwrap_err().to_string().contains("no resident sample"));
    }
}
