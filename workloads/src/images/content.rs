//! Fast incompressible file content for workloads' images and files.

use std::io::{self, Read};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
