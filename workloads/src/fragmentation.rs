//! `fragmentation`: does a file read sequentially slower after random 4 KiB overwrites, and
//! how scattered is it on disk?
//!
//! In one container: a sequential read of a large image file (O_DIRECT where the backend
//! takes it, else buffered; the page cache is dropped before every read either way), then
//! random 4 KiB overwrites of `overwrite_percent` % of its blocks (fsynced), then the same
//! sequential read again, all in the same container layer. Copy-on-write backends that place
//! every rewritten block elsewhere (zfs, btrfs) leave the file scattered; in-place writers
//! (overlay and aufs after their copy-up, ext4 on dm-thin after the block copy) do not. All
//! three phases are timed by the probe.
//!
//! The direct evidence is the file's layout: its physically contiguous runs before the
//! overwrites and after them, read from the host through the container's root
//! ([`cowbench_drivers::Driver::file_extents`]: FIEMAP, or zdb's block pointers on ZFS).
//!
//! Reads are cold only when no cache holds the file: the page cache is dropped, and a backend
//! with a read cache of its own (the ZFS ARC, which survives the drop) must be smaller than the
//! file, else the cell is skipped with the reason. Every CoW backend runs the same cells, so
//! the claim compares zfs with the others. Answers zfs-fragmentation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::{self, LARGE_PATH};
use crate::kit;
use crate::lab::{Container, ContainerSpec, Image, Lab, Notes};
use cowbench_drivers::FileExtents;
use crate::probe::{Op, Request};
use crate::{CellExec, MetricSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload, GIB, MIB, Better, ParamKind, ParamSpec, Unit};

/// Parameters of one fragmentation cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentationParams {
    /// Size of the image file.
    pub file_bytes: u64,
    /// Share of the file's 4 KiB blocks overwritten at random offsets (%, with repeats).
    pub overwrite_percent: u32,
}

impl TypedParams for FragmentationParams {}

impl FragmentationParams {
    /// Number of random 4 KiB overwrites.
    pub fn overwrites(&self) -> u64 {
        (self.file_bytes / BLOCK) * self.overwrite_percent as u64 / 100
    }
}

/// Size of one random overwrite.
pub const BLOCK: u64 = 4096;
/// Block of the sequential reads.
pub const SEQ_BLOCK: u64 = 1024 * 1024;
/// Quick: 128 MiB, above zfs-fuse's ARC limit (100 MiB) and the one `scripts/run --vm` sets for
/// kernel OpenZFS (96 MiB), so the ARC cannot hold the file; 10% of the
/// blocks rewritten already touches nearly every 128 KiB ZFS record and most 64 KiB dm-thin
/// blocks (1 − e^−3.2, 1 − e^−1.6), at 40% of the cost of 25% (kernel ZFS under TCG rewrites
/// at well below 1 MB/s).
pub const QUICK: FragmentationParams = FragmentationParams { file_bytes: 128 * MIB, overwrite_percent: 10 };
pub const FULL_SIZES: [u64; 2] = [256 * MIB, GIB];
pub const FULL_PCTS: [u32; 3] = [10, 25, 50];

pub const METRICS: [MetricSpec; 7] = [
    MetricSpec {
        name: "seq_read_before_bytes_per_s",
        unit: Unit::BytesPerSecond,
        better: Better::Higher,
        description: "sequential read of the image file before the overwrites, timed by the probe",
    },
    MetricSpec {
        name: "seq_read_after_bytes_per_s",
        unit: Unit::BytesPerSecond,
        better: Better::Higher,
        description: "the same read after the random overwrites, same container layer",
    },
    MetricSpec {
        name: "after_before_ratio",
        unit: Unit::Ratio,
        better: Better::Higher,
        description: "seq_read_after / seq_read_before (throughput after over throughput before): below 1 when the overwrites fragmented the file, so higher is better",
    },
    MetricSpec {
        name: "overwrite_bytes_per_s",
        unit: Unit::BytesPerSecond,
        better: Better::Higher,
        description: "the random 4 KiB overwrites incl. the final fsync (the first one copies up on file-level backends)",
    },
    MetricSpec {
        name: "extents_before_count",
        unit: Unit::Count,
        better: Better::Lower,
        description: "physically contiguous runs of the file before the overwrites (FIEMAP from the host; zdb level-0 block pointers on ZFS)",
    },
    MetricSpec {
        name: "extents_after_count",
        unit: Unit::Count,
        better: Better::Lower,
        description: "physically contiguous runs of the file after the overwrites, same source",
    },
    MetricSpec {
        name: "extents_growth_ratio",
        unit: Unit::Ratio,
        better: Better::Lower,
        description: "extents_after / extents_before: how many times more pieces the overwrites left the file in",
    },
];

/// The parameters of a cell (`cowbench run --set fragmentation.NAME=…`).
pub const PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "file_bytes", kind: ParamKind::Bytes, description: "size of the image file" },
    ParamSpec { name: "overwrite_percent", kind: ParamKind::Count, description: "share of the file's 4 KiB blocks overwritten at random (%)" },
];

pub struct Fragmentation;

impl Workload for Fragmentation {
    fn id(&self) -> &'static str {
        "fragmentation"
    }
    fn description(&self) -> &'static str {
        "sequential read of an image file before and after random 4 KiB overwrites from a container"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["zfs-fragmentation"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        FragmentationParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        match profile {
            Profile::Quick => vec![QUICK.to_params()],
            Profile::Full => {
                let mut v = Vec::new();
                for &file_bytes in &FULL_SIZES {
                    for &overwrite_percent in &FULL_PCTS {
                        v.push(FragmentationParams { file_bytes, overwrite_percent }.to_params());
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
            Profile::Quick => 2,
            Profile::Full => 5,
        }
    }
    fn drop_caches(&self) -> bool {
        // The executor drops caches before each of the two reads.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: FragmentationParams = kit::params(self.id(), params)?;
        if p.file_bytes < SEQ_BLOCK || p.overwrites() == 0 {
            return Err(SetupError::Fail(anyhow::anyhow!(
                "fragmentation: file of {} bytes with {}% overwrites does nothing",
                p.file_bytes,
                p.overwrite_percent
            )));
        }
        let caps = lab.driver().capabilities();
        let cache_note = if caps.own_read_cache {
            match lab.backend_cache_limit() {
                Some(limit) if limit >= p.file_bytes => {
                    return Err(SetupError::Skip(format!(
                        "{}: the file ({} MiB) fits the backend's own read cache (limit {} MiB), which dropping the page cache does not empty: reads would not be cold",
                        lab.driver_name(),
                        p.file_bytes / MIB,
                        limit / MIB
                    )))
                }
                Some(limit) => Some(format!("file {} MiB > the backend's read cache limit {} MiB", p.file_bytes / MIB, limit / MIB)),
                None => Some("the backend's read cache limit is unknown: reads may be partly warm".to_string()),
            }
        } else {
            None
        };
        // The image `sharedcache` and `concurrent` read too: one build per driver and size.
        let img = lab.image(&images::large_file(lab.seed(), p.file_bytes))?;
        Ok(Box::new(Exec {
            lab,
            p,
            img,
            direct: caps.o_direct,
            fell_back: None,
            status: Vec::new(),
            cache_note,
            layout: None,
            layout_missing: None,
        }))
    }
}

// The executor: one container of the large-file image stays up (probe `hold`); through `exec`
// of the probe in that container: a sequential read of the file (O_DIRECT where the backend
// accepts it on this file, else buffered), random 4 KiB overwrites of `overwrite_percent` % of
// its blocks with one fsync at the end, and the same read again. The page cache is dropped
// before each read. All three timed by the probe.

struct Exec<'a> {
    lab: &'a dyn Lab,
    p: FragmentationParams,
    img: Image,
    /// Reads with O_DIRECT (the backend says it takes it and no open has refused it yet).
    direct: bool,
    /// Why O_DIRECT was given up.
    fell_back: Option<String>,
    /// Backend facts about fragmentation before/after (zfs `pool_fragmentation`).
    status: Vec<(String, String)>,
    /// How the file's size compares with the backend's own read cache.
    cache_note: Option<String>,
    /// The last repetition's layout before and after, for the notes.
    layout: Option<(FileExtents, FileExtents)>,
    /// Why the layout could not be read (the filesystem has no FIEMAP: FUSE).
    layout_missing: Option<String>,
}

impl Exec<'_> {
    fn drop_caches(&self) -> anyhow::Result<()> {
        self.lab.drop_caches().map_err(|e| anyhow::anyhow!("{}: drop caches: {e}", self.lab.driver_name()))
    }

    /// Sequential read of the whole file; (ns, bytes).
    fn seq_read(&mut self, c: &dyn Container) -> anyhow::Result<(u64, u64)> {
        self.drop_caches()?;
        let req = |direct| {
            Request::new(vec![Op::Read {
                path: LARGE_PATH.into(),
                block_bytes: SEQ_BLOCK,
                direct,
                random: false,
                count: None,
                per_block: false,
                seed: 0,
            }])
        };
        if self.direct {
            let r = kit::exec_probe_unchecked(c, &req(true))?;
            match r.first_error() {
                None => return kit::total_of(&r, "read"),
                Some((s, e)) if e.errno == Some(libc::EINVAL) => {
                    // This layer's filesystem refuses O_DIRECT (at open, or at the first read
                    // as unionfs-fuse does): the cell goes buffered from here on (a repetition
                    // whose two reads differ is refused below).
                    self.direct = false;
                    self.fell_back = Some(format!("O_DIRECT {} of {LARGE_PATH}: {}", s.phase, e.message));
                    self.drop_caches()?;
                }
                Some(_) => kit::check(&r)?,
            }
        }
        kit::total_of(&kit::exec_probe(c, &req(false))?, "read")
    }

    /// The file's layout, read from the host through the container's root; None (and the
    /// reason kept) where the backend cannot tell.
    fn layout(&mut self, c: &dyn Container) -> Option<FileExtents> {
        let Some(host) = c.host_path(LARGE_PATH) else {
            self.layout_missing = Some("the container has no root on the host".into());
            return None;
        };
        match self.lab.driver().file_extents(c.layer_key(), &host) {
            Ok(e) => Some(e),
            Err(e) => {
                self.layout_missing = Some(e.to_string());
                None
            }
        }
    }

    /// Keep the backend's own fragmentation figure (zfs `pool_fragmentation`), where it has
    /// one, in the notes.
    fn note_status(&mut self, when: &str) {
        if let Ok(st) = self.lab.driver().status() {
            if let Some(v) = st.fragmentation_percent {
                self.status.push((format!("pool_fragmentation_{when}"), format!("{v}%")));
            }
        }
    }
}

fn rate(bytes: u64, ns: u64) -> f64 {
    bytes as f64 / (ns.max(1) as f64 / 1e9)
}

impl CellExec for Exec<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let c = self.lab.start(&self.img, &ContainerSpec::probe(&Request::new(vec![Op::Hold])))?;
        let result = (|| -> anyhow::Result<RepSamples> {
            c.wait_ready(Duration::from_secs(60))?;
            self.note_status("before");
            let layout_before = self.layout(c.as_ref());
            let (b_ns, b_bytes) = self.seq_read(c.as_ref())?;
            let direct_before = self.direct;
            let w = kit::exec_probe(
                c.as_ref(),
                &Request::new(vec![Op::RandomIo {
                    path: LARGE_PATH.into(),
                    block_bytes: BLOCK,
                    count: self.p.overwrites(),
                    write: true,
                    direct: false,
                    dsync: false,
                    fsync: true,
                    interval_us: 0,
                    per_block: false,
                    seed: 0xF4A6 + rep as u64,
                }]),
            )?;
            let (w_ns, w_bytes) = kit::total_of(&w, "random_io")?;
            // Before the read: the read drops the caches the layout's sync or zdb touched.
            let layout_after = self.layout(c.as_ref());
            let (a_ns, a_bytes) = self.seq_read(c.as_ref())?;
            if direct_before != self.direct {
                // The first read was direct, the second not: not comparable; read before again.
                anyhow::bail!("O_DIRECT refused between the two reads; repetition not comparable");
            }
            self.note_status("after");
            if b_bytes != self.p.file_bytes || a_bytes != self.p.file_bytes {
                anyhow::bail!("reads returned {b_bytes} and {a_bytes} bytes of {}", self.p.file_bytes);
            }
            let (before, after) = (rate(b_bytes, b_ns), rate(a_bytes, a_ns));
            let mut samples = vec![
                ("seq_read_before_bytes_per_s", before),
                ("seq_read_after_bytes_per_s", after),
                ("after_before_ratio", after / before),
                ("overwrite_bytes_per_s", rate(w_bytes, w_ns)),
            ];
            if let (Some(lb), Some(la)) = (layout_before, layout_after) {
                for (when, l) in [("before", &lb), ("after", &la)] {
                    // A layout that does not cover the file is not the file's.
                    if l.mapped_bytes < self.p.file_bytes {
                        anyhow::bail!("the layout {when} maps {} of the file's {} bytes ({})", l.mapped_bytes, self.p.file_bytes, l.method);
                    }
                }
                samples.push(("extents_before_count", lb.runs as f64));
                samples.push(("extents_after_count", la.runs as f64));
                samples.push(("extents_growth_ratio", la.runs as f64 / lb.runs.max(1) as f64));
                self.layout = Some((lb, la));
            }
            Ok(samples)
        })();
        let stopped = c.stop();
        let samples = result?;
        stopped?;
        Ok(samples)
    }

    fn notes(&self) -> Notes {
        let caps = self.lab.driver().capabilities();
        let mut n = Notes::from([
            ("image".into(), self.img.name.clone()),
            ("target".into(), LARGE_PATH.into()),
            ("overwrites".into(), self.p.overwrites().to_string()),
            (
                "read_mode".into(),
                if self.direct { "O_DIRECT, 1 MiB blocks".into() } else { "buffered after dropping caches, 1 MiB blocks".into() },
            ),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
        ]);
        if let Some(why) = &self.fell_back {
            n.insert("o_direct_refused".into(), why.clone());
        }
        if let Some(c) = &self.cache_note {
            n.insert("backend_read_cache".into(), c.clone());
        }
        match (&self.layout, &self.layout_missing) {
            (Some((b, a)), _) => {
                n.insert("extents_method".into(), b.method.to_string());
                n.insert(
                    "extents".into(),
                    format!("last repetition: {} runs ({} pieces) before, {} runs ({} pieces) after", b.runs, b.pieces, a.runs, a.pieces),
                );
                if let Some(c) = &a.caveat {
                    n.insert("extents_caveat".into(), c.clone());
                }
            }
            (None, Some(why)) => {
                n.insert("extents_not_measured".into(), why.clone());
            }
            (None, None) => {}
        }
        if self.direct && caps.stand_in {
            n.insert("o_direct_caveat".into(), "FUSE stand-in: O_DIRECT opens may be served through caches".into());
        }
        n.extend(self.status.iter().cloned());
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Shared with `sharedcache` and `concurrent`; the driver's teardown removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_overwrites() {
        let cells = Fragmentation.cells(Profile::Quick);
        assert_eq!(cells.len(), 1);
        let p = FragmentationParams::from_params(&cells[0]).unwrap();
        assert_eq!(p.overwrites(), 128 * MIB / 4096 / 10);
        assert_eq!(Fragmentation.cells(Profile::Full).len(), 6);
    }
}
