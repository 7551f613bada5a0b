//! Executor of `copyup`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use cowbench_drivers::{Labels, MountGuard};
use cowbench_workloads::copyup::CopyupParams;
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = CopyupParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    let tag = format!("copyup-{}-{}", p.file_bytes, p.depth);
    let d = &*s.driver;
    let labels = Labels::new();
    // Image: `depth` layers, the file in the lowest one.
    let mut parent: Option<String> = None;
    for i in 0..p.depth {
        let key = format!("{tag}-img{i}");
        let active = format!("{key}-active");
        d.prepare(&active, parent.as_deref(), &labels)?;
        let mnt = tempfile::tempdir().map_err(anyhow::Error::from)?;
        {
            let g = MountGuard::new(d, &active, mnt.path())?;
            if i == 0 {
                write_file(&g.path().join("file"), p.file_bytes, s.seed).map_err(anyhow::Error::from)?;
            } else {
                std::fs::write(g.path().join(format!("layer{i}")), b"x").map_err(anyhow::Error::from)?;
            }
            g.unmount()?;
        }
        d.commit(&key, &active, &labels)?;
        parent = Some(key);
    }
    Ok(Box::new(Copyup { s, p, image: parent.expect("depth >= 1"), tag, layers: p.depth }))
}

fn write_file(path: &std::path::Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    use rand::RngCore;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ bytes);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()
}

struct Copyup<'a> {
    s: &'a Session,
    p: CopyupParams,
    image: String,
    tag: String,
    layers: u32,
}

impl CellExec for Copyup<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        let key = format!("{}-c{rep}-{}", self.tag, rand::random::<u32>());
        d.prepare(&key, Some(&self.image), &Labels::new())?;
        let out = (|| -> anyhow::Result<RepSamples> {
            let before = d.usage(&key)?.bytes;
            let mnt = tempfile::tempdir()?;
            let g = MountGuard::new(d, &key, mnt.path())?;
            let path = g.path().join("file");
            let t0 = Instant::now();
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            let open_ns = t0.elapsed().as_nanos() as f64;
            std::os::unix::fs::FileExt::write_all_at(&f, &vec![0x5au8; self.p.write_len() as usize], self.p.write_offset())?;
            drop(f);
            let total_ns = t0.elapsed().as_nanos() as f64;
            g.unmount()?;
            let after = d.usage(&key)?.bytes;
            Ok(vec![
                ("open_latency_ns", open_ns),
                ("first_write_latency_ns", total_ns),
                ("usage_delta_bytes", after.saturating_sub(before) as f64),
            ])
        })();
        let rm = d.remove(&key);
        let samples = out?;
        rm?;
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("image_layers".into(), self.layers.to_string()), ("timed_in".into(), "host".into())])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let d = &*self.s.driver;
        for i in (0..self.layers).rev() {
            d.remove(&format!("{}-img{i}", self.tag))?;
        }
        Ok(())
    }
}
