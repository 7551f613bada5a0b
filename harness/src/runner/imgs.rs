//! Images for the lookup, metadata and IO workloads, built once per driver and reused by every
//! cell that needs them, and fast incompressible file content.
//!
//! `image::build` hashes every layer to decide reuse, which for a 64 MiB file costs more than the
//! cells that use it; these images are named after everything that determines their content
//! (shape, sizes, seed), so an image of that name that is complete in the driver is reused as it
//! is. The driver's teardown at the end of a run removes them.

use std::io::{self, Read, Write};

use cowbench_drivers::{Driver, Labels};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::image::{self, probe_bin, synth, Generated, Image};

/// Bytes of the random block that [`Pattern`] repeats.
const BLOCK: usize = 1 << 20;

/// Incompressible content at memcpy speed: a 1 MiB ChaCha8 block (from the seed, generated once
/// per process), every 4 KiB of it stamped with the absolute offset and a per-file salt, so no
/// two 4 KiB blocks of a file or of two files are equal (no dedup, no compression).
pub struct Pattern {
    block: std::sync::Arc<Vec<u8>>,
    salt: u64,
    pos: u64,
    len: u64,
}

fn random_block(seed: u64) -> std::sync::Arc<Vec<u8>> {
    static CACHE: std::sync::Mutex<Vec<(u64, std::sync::Arc<Vec<u8>>)>> = std::sync::Mutex::new(Vec::new());
    let mut c = CACHE.lock().unwrap();
    if let Some((_, b)) = c.iter().find(|(s, _)| *s == seed) {
        return b.clone();
    }
    let mut block = vec![0u8; BLOCK];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut block);
    let b = std::sync::Arc::new(block);
    c.push((seed, b.clone()));
    b
}

impl Pattern {
    /// `len` bytes of the content of `seed`, salted with `salt` (one per file).
    pub fn new(seed: u64, salt: u64, len: u64) -> Pattern {
        Pattern { block: random_block(seed), salt, pos: 0, len }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        let off = (self.pos % BLOCK as u64) as usize;
        let n = (buf.len() as u64).min(left).min((BLOCK - off) as u64) as usize;
        buf[..n].copy_from_slice(&self.block[off..off + n]);
        // Stamp offset and salt into the first 16 bytes of each 4 KiB block, also where a
        // read ends or starts inside a stamp.
        let (lo, hi) = (self.pos, self.pos + n as u64);
        let mut b = lo - lo % 4096;
        while b < hi {
            let mut stamp = [0u8; 16];
            stamp[..8].copy_from_slice(&b.to_le_bytes());
            stamp[8..].copy_from_slice(&self.salt.to_le_bytes());
            let (s, e) = (b.max(lo), (b + 16).min(hi));
            if s < e {
                buf[(s - lo) as usize..(e - lo) as usize].copy_from_slice(&stamp[(s - b) as usize..(e - b) as usize]);
            }
            b += 4096;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A layer tar written by `f`.
pub type LayerFn<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + Sync + 'a>;

/// The base layer: busybox with its applets and the static probe.
pub fn base_layer() -> anyhow::Result<LayerFn<'static>> {
    let busybox = probe_bin::busybox()?;
    let probe = probe_bin::find_or_build()?;
    Ok(Box::new(move |w: &mut dyn Write| synth::write_base_layer(&busybox, &probe, w)))
}

/// Image `name` with the base layer and `layers` above it: reused when complete in `driver`,
/// else (re)built layer by layer (prepare, apply, commit).
pub fn load_or_build(driver: &dyn Driver, name: &str, layers: Vec<LayerFn<'_>>) -> anyhow::Result<Image> {
    let total = layers.len() + 1;
    if let Ok(img) = Image::load(driver, name) {
        if img.layers.len() == total {
            return Ok(img);
        }
    }
    // A partial or different image of the same name (an interrupted build) goes first.
    image::remove(driver, name)?;
    let config = image::probe_config();
    let config_json = serde_json::to_string(&config)?;
    let mut all = vec![base_layer()?];
    all.extend(layers);
    let mut parent: Option<String> = None;
    let mut keys = Vec::new();
    for (n, write) in all.into_iter().enumerate() {
        let key = image::layer_key(name, n);
        let active = format!("{key}.build");
        driver.prepare(&active, parent.as_deref(), &Labels::new())?;
        let src = Generated { write: move |w: &mut dyn Write| write(w) };
        if let Err(e) = src.apply_unhashed(driver, &active) {
            if let Err(e2) = driver.remove(&active) {
                log::warn!("image {name}: removing half-built layer {active}: {e2}");
            }
            return Err(e.into());
        }
        let mut labels = Labels::new();
        labels.insert(image::LABEL_IMAGE.into(), name.into());
        if n + 1 == total {
            labels.insert(image::LABEL_CONFIG.into(), config_json.clone());
        }
        driver.commit(&key, &active, &labels)?;
        parent = Some(key.clone());
        keys.push(key);
    }
    Ok(Image { name: name.into(), top: keys.last().cloned().expect("at least the base layer"), layers: keys, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_stamped_and_sized() {
        let mut p = Pattern::new(1, 9, 3 * BLOCK as u64 + 100);
        let mut v = Vec::new();
        // Small odd reads cross block and stamp boundaries.
        let mut buf = [0u8; 3000];
        loop {
            let n = p.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            v.extend_from_slice(&buf[..n]);
        }
        assert_eq!(v.len(), 3 * BLOCK + 100);
        for b in (0..v.len() - 8).step_by(4096) {
            assert_eq!(u64::from_le_bytes(v[b..b + 8].try_into().unwrap()), b as u64);
            assert_eq!(u64::from_le_bytes(v[b + 8..b + 16].try_into().unwrap()), 9);
        }
        // The same 4 KiB blocks one MiB apart differ only in their stamp.
        assert_eq!(v[16..4096], v[BLOCK + 16..BLOCK + 4096]);
    }
}
