//! Executor of `fragmentation`: one container of an image holding one large file stays up
//! (probe `hold`); through `<runtime> exec` of the probe, in that container: a sequential read
//! of the file (O_DIRECT where the backend accepts it on this file, else buffered), random
//! 4 KiB overwrites of `overwrite_percent` % of its blocks with one fsync at the end, and the same
//! read again. The page cache is dropped before each read. All three timed by the probe.
//!
//! The image (`largefile-<bytes>`, file `/data/large`) is the one `concurrent` uses too, so a
//! run builds it once per driver.

use std::collections::BTreeMap;
use std::time::Duration;

use cowbench_workloads::fragmentation::{FragmentationParams, BLOCK, SEQ_BLOCK};
use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::inside::{check, exec_probe, exec_probe_unchecked, total_of};
use crate::container::{Container, ContainerSpec};
use crate::image::{Image, ImageSpec, Shape};

pub const LARGE_PATH: &str = "/data/large";

/// The image with one file of `bytes` at [`LARGE_PATH`] (shared with `concurrent`).
pub fn large_file_image(s: &Session, bytes: u64) -> Result<Image, SetupError> {
    let spec = ImageSpec::new(&format!("largefile-{bytes}"), s.seed, Shape::LargeFile { path: LARGE_PATH.into(), bytes });
    Ok(super::inside::session_image(s, &spec)?)
}

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = FragmentationParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if p.file_bytes < SEQ_BLOCK || p.overwrites() == 0 {
        return Err(SetupError::Fail(anyhow::anyhow!("file of {} bytes with {}% overwrites does nothing", p.file_bytes, p.overwrite_percent)));
    }
    let img = large_file_image(s, p.file_bytes)?;
    let direct = s.driver.capabilities().o_direct;
    Ok(Box::new(Fragmentation { s, p, img, direct, fell_back: None, status: Vec::new() }))
}

struct Fragmentation<'a> {
    s: &'a Session,
    p: FragmentationParams,
    img: Image,
    /// Reads with O_DIRECT (the backend says it takes it and no open has refused it yet).
    direct: bool,
    /// Why O_DIRECT was given up.
    fell_back: Option<String>,
    /// Backend facts about fragmentation before/after (zfs `pool_fragmentation`).
    status: Vec<(String, String)>,
}

impl Fragmentation<'_> {
    /// Sequential read of the whole file; (ns, bytes).
    fn seq_read(&mut self, c: &Container<'_>) -> anyhow::Result<(u64, u64)> {
        super::drop_caches().map_err(|e| anyhow::anyhow!(e))?;
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
            let r = exec_probe_unchecked(c, &req(true))?;
            match r.first_error() {
                None => return total_of(&r, "read"),
                Some((s, e)) if e.errno == Some(libc::EINVAL) => {
                    // This layer's filesystem refuses O_DIRECT (at open, or at the first read
                    // as unionfs-fuse does): the cell goes buffered from here on (a repetition
                    // whose two reads differ is refused below).
                    self.direct = false;
                    self.fell_back = Some(format!("O_DIRECT {} of {LARGE_PATH}: {}", s.phase, e.message));
                    super::drop_caches().map_err(|e| anyhow::anyhow!(e))?;
                }
                Some(_) => check(&r)?,
            }
        }
        total_of(&exec_probe(c, &req(false))?, "read")
    }

    fn note_status(&mut self, when: &str) {
        if let Ok(st) = self.s.driver.status() {
            if let Some(v) = st.fragmentation_percent {
                self.status.push((format!("pool_fragmentation_{when}"), format!("{v}%")));
            }
        }
    }
}

fn rate(bytes: u64, ns: u64) -> f64 {
    bytes as f64 / (ns.max(1) as f64 / 1e9)
}

impl CellExec for Fragmentation<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let c = self.s.runtime.start(d, &self.img, &ContainerSpec::probe(&Request::new(vec![Op::Hold])))?;
        let result = (|| -> anyhow::Result<RepSamples> {
            c.wait_ready(Duration::from_secs(60))?;
            self.note_status("before");
            let (b_ns, b_bytes) = self.seq_read(&c)?;
            let direct_before = self.direct;
            let w = exec_probe(
                &c,
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
            let (w_ns, w_bytes) = total_of(&w, "random_io")?;
            let (a_ns, a_bytes) = self.seq_read(&c)?;
            if direct_before != self.direct {
                // The first read was direct, the second not: not comparable; read before again.
                anyhow::bail!("O_DIRECT refused between the two reads; repetition not comparable");
            }
            self.note_status("after");
            if b_bytes != self.p.file_bytes || a_bytes != self.p.file_bytes {
                anyhow::bail!("reads returned {b_bytes} and {a_bytes} bytes of {}", self.p.file_bytes);
            }
            let (before, after) = (rate(b_bytes, b_ns), rate(a_bytes, a_ns));
            Ok(vec![
                ("seq_read_before_bytes_per_s", before),
                ("seq_read_after_bytes_per_s", after),
                ("after_before_ratio", after / before),
                ("overwrite_bytes_per_s", rate(w_bytes, w_ns)),
            ])
        })();
        let stopped = c.stop();
        let samples = result?;
        stopped?;
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        let mut n = BTreeMap::from([
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
        if self.s.driver.capabilities().own_read_cache {
            n.insert(
                "arc_caveat".into(),
                "dropping the page cache does not empty the ZFS ARC: reads of a file smaller than the ARC may be served from it (full profile: 256 MiB and 1 GiB files)".into(),
            );
        }
        if self.direct && self.s.driver.capabilities().stand_in {
            n.insert("o_direct_caveat".into(), "FUSE stand-in: O_DIRECT opens may be served through caches".into());
        }
        for (k, v) in &self.status {
            n.insert(k.clone(), v.clone());
        }
        n
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Shared with `concurrent`; the driver's teardown removes it.
        Ok(())
    }
}
