//! Executor of `layers`: pull (apply + commit) and push (diff + commit) of a synthetic layer,
//! timed by the harness's monotonic clock around the driver calls only — these are host-side
//! driver operations, with no process in a container to time them. The layer tar is written to
//! a file once per cell (untimed); preparing the layers and removing them afterwards is outside
//! the timed spans.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cowbench_drivers::Labels;
use cowbench_workloads::layers::LayersParams;
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::imgs::Pattern;
use crate::image::synth::TarWriter;

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

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = LayersParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    let dir = s.cfg.root.join("layers-tar");
    std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
    let tar = dir.join(format!("{}-b{}-f{}.tar", s.name, p.layer_bytes, p.files));
    let mut w = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tar).map_err(anyhow::Error::from)?);
    write_tar(&p, s.seed, &mut w).map_err(anyhow::Error::from)?;
    w.into_inner().map_err(|e| anyhow::anyhow!("write {}: {e}", tar.display()))?;
    let tar_bytes = std::fs::metadata(&tar).map_err(anyhow::Error::from)?.len();
    Ok(Box::new(Layers { s, p, tar, tar_bytes, left: Vec::new() }))
}

struct Layers<'a> {
    s: &'a Session,
    p: LayersParams,
    tar: PathBuf,
    tar_bytes: u64,
    /// Layers of a failed repetition, removed in `finish`.
    left: Vec<String>,
}

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

impl CellExec for Layers<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let (pull_a, pull_c, push_a, push_c) =
            (format!("lyr-pull-{tag}.a"), format!("lyr-pull-{tag}"), format!("lyr-push-{tag}.a"), format!("lyr-push-{tag}"));
        let none = Labels::new();

        // Pull: apply + commit of a fresh layer.
        d.prepare(&pull_a, None, &none)?;
        self.left.push(pull_a.clone());
        let mut f = io::BufReader::with_capacity(1 << 20, std::fs::File::open(&self.tar)?);
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
        d.apply(&push_a, &mut io::BufReader::with_capacity(1 << 20, std::fs::File::open(&self.tar)?))?;
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

    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("tar_bytes".into(), self.tar_bytes.to_string()),
            ("timed_in".into(), "harness (monotonic clock around the driver's apply/diff/commit: host-side driver operations)".into()),
            ("tar_source".into(), "a file in the page cache, as a just-downloaded blob".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let mut first = None;
        for k in &self.left {
            if let Err(e) = self.s.driver.remove(k) {
                first.get_or_insert(e);
            }
        }
        let _ = std::fs::remove_file(&self.tar);
        let _ = std::fs::remove_dir(self.tar.parent().unwrap_or(&self.tar));
        first.map_or(Ok(()), |e| Err(e.into()))
    }
}
