//! Executor of `metadata`: a container holds while the harness reads the usage of its fresh
//! layer; on SIGTERM the probe runs the metadata phases on small files of its own layer and the
//! recursive chown of the image directory, timing each with its own clock; the harness reads the
//! usage again once the container is gone (the layer is kept until then).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use cowbench_workloads::metadata::{MetadataParams, CHOWN_DIR, CHOWN_UID, META_DIR, SMALL_FILE_BYTES};
use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::imgs::{self, LayerFn, Pattern};
use crate::container::ContainerSpec;
use crate::image::synth::TarWriter;
use crate::image::Image;

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = MetadataParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    let (n, each, seed) = (p.chown_files, p.chown_file_bytes(), s.seed);
    let layer: LayerFn<'_> = Box::new(move |w: &mut dyn Write| {
        let mut t = TarWriter::new(w);
        for i in 0..n {
            let path = format!("{}/d{}/f{i}", CHOWN_DIR.trim_start_matches('/'), i / 100);
            t.file(&path, 0o644, each, Pattern::new(seed, i, each))?;
        }
        t.finish()?.flush()
    });
    let name = format!("meta-c{}-b{}-s{seed}", p.chown_files, p.chown_bytes);
    let img = imgs::load_or_build(&*s.driver, &name, vec![layer])?;
    Ok(Box::new(Metadata { s, p, img }))
}

struct Metadata<'a> {
    s: &'a Session,
    p: MetadataParams,
    img: Image,
}

impl CellExec for Metadata<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let req = Request::new(vec![
            Op::Hold,
            Op::Meta { dir: META_DIR.into(), count: self.p.files, bytes: SMALL_FILE_BYTES },
            Op::Chown { path: CHOWN_DIR.into(), uid: CHOWN_UID, gid: CHOWN_UID },
        ]);
        let spec = ContainerSpec { keep_layer: true, stop_timeout: Some(Duration::from_secs(600)), ..ContainerSpec::probe(&req) };
        let c = self.s.runtime.start(d, &self.img, &spec)?;
        let layer = c.layer_key().to_string();
        let measured = (|| -> anyhow::Result<RepSamples> {
            c.wait_ready(Duration::from_secs(60))?;
            let before = d.usage(&layer)?.bytes;
            let out = c.stop()?;
            let resp = out.probe_response()?;
            if let Some((s, e)) = resp.first_error() {
                anyhow::bail!("probe {} {}: {}", s.op, s.phase, e.message);
            }
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
            let after = d.usage(&layer)?.bytes;
            v.push(("usage_delta_bytes", after.saturating_sub(before) as f64));
            Ok(v)
        })();
        let removed = d.remove(&layer);
        let v = measured?;
        removed?;
        Ok(v)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
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
