//! Executor of `lookup`: one container per repetition, whose probe stats and opens every file
//! of the bottom layer (twice for warm cells: the first pass fills the caches and is not
//! recorded). Caches are dropped by the runner before each repetition, i.e. before the
//! container starts.

use std::collections::BTreeMap;
use std::io::Write;

use cowbench_workloads::lookup::{Cache, LookupParams, FILES_PER_DIR, FILE_BYTES};
use cowbench_workloads::probe::{Op, Request};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::imgs::{self, LayerFn};
use crate::container::ContainerSpec;
use crate::image::synth::{Content, TarWriter};
use crate::image::Image;

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = LookupParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if let Some(max) = s.driver.capabilities().max_depth {
        // base + depth image layers + the container's layer.
        if p.depth as usize + 2 > max {
            return Err(SetupError::Skip(format!("{} mounts at most {max} layers", s.name)));
        }
    }
    let img = image(s, &p)?;
    Ok(Box::new(Lookup { s, p, img }))
}

/// The image of a (depth, files) pair; cold and warm cells share it.
fn image(s: &Session, p: &LookupParams) -> anyhow::Result<Image> {
    let (files, dirs, seed) = (p.files, p.dirs(), s.seed);
    let mut layers: Vec<LayerFn<'_>> = vec![Box::new(move |w: &mut dyn Write| {
        let mut t = TarWriter::new(w);
        for i in 0..files {
            let path = LookupParams::path(i);
            t.file(&path, 0o644, FILE_BYTES, Content::new(seed ^ i as u64, FILE_BYTES))?;
        }
        t.finish()?.flush()
    })];
    for n in 1..p.depth {
        // Every layer above adds a file to every directory, so each directory is merged over
        // the whole stack and each lookup in it visits every layer.
        layers.push(Box::new(move |w: &mut dyn Write| {
            let mut t = TarWriter::new(w);
            for d in 0..dirs {
                t.file(&format!("lookup/d{d}/layer{n}"), 0o644, 1, &b"x"[..])?;
            }
            t.finish()?.flush()
        }));
    }
    imgs::load_or_build(&*s.driver, &format!("lookup-d{}-f{}-s{seed}", p.depth, p.files), layers)
}

struct Lookup<'a> {
    s: &'a Session,
    p: LookupParams,
    img: Image,
}

impl CellExec for Lookup<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let paths: Vec<String> = (0..self.p.files).map(LookupParams::path).collect();
        let pass = Op::Stat { paths, open: true };
        let ops = match self.p.cache {
            Cache::Cold => vec![pass],
            Cache::Warm => vec![pass.clone(), pass],
        };
        let timed = ops.len() - 1;
        let out = self.s.runtime.run(&*self.s.driver, &self.img, &ContainerSpec::probe(&Request::new(ops)))?;
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

    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
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
