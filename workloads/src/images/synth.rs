//! Deterministic synthetic layers, written as OCI layer tar streams.
//!
//! Everything follows from the seed: one ChaCha8 stream decides the structure (directories,
//! sizes, which files upper layers modify or delete), and each file's content is the
//! [`Pattern`] salted with a content seed from (seed, layer, file), generated while it is
//! written, so a file of many GiB never sits in memory. Entries carry fixed owners and mtimes, so the
//! same spec gives byte-identical tars (and the same sha256) on every run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::content::Pattern;

/// mtime of every generated entry (fixed for reproducible digests).
pub const MTIME: u64 = 1_600_000_000;

/// File-size distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SizeDist {
    Fixed { bytes: u64 },
    Uniform { min: u64, max: u64 },
    /// log-uniform between min and max (many small files, few large ones, like real images).
    LogUniform { min: u64, max: u64 },
}

impl SizeDist {
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        match *self {
            SizeDist::Fixed { bytes } => bytes,
            SizeDist::Uniform { min, max } => {
                if max <= min {
                    min
                } else {
                    rng.gen_range(min..=max)
                }
            }
            SizeDist::LogUniform { min, max } => {
                let lo = (min.max(1) as f64).ln();
                let hi = (max.max(min.max(1)) as f64).ln();
                if hi <= lo {
                    return min;
                }
                (lo + rng.gen::<f64>() * (hi - lo)).exp().round() as u64
            }
        }
    }
}

/// A synthetic image: `layers` layers of `files_per_layer` new files each; every layer above
/// the first also rewrites `modify_fraction` and deletes (`.wh.` whiteouts) `delete_fraction`
/// of the files visible below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSpec {
    pub layers: usize,
    pub files_per_layer: usize,
    pub size: SizeDist,
    /// Directory levels below `/data` (0: all files in `/data`).
    pub dir_depth: usize,
    /// Sub-directories per level.
    pub dir_fanout: usize,
    pub modify_fraction: f64,
    pub delete_fraction: f64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            layers: 3,
            files_per_layer: 100,
            size: SizeDist::LogUniform { min: 512, max: 1 << 20 },
            dir_depth: 2,
            dir_fanout: 4,
            modify_fraction: 0.1,
            delete_fraction: 0.05,
        }
    }
}

/// One entry of a generated layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file whose content is [`file_content`] of `content_seed`.
    File { path: String, bytes: u64, content_seed: u64 },
    /// `.wh.<name>`: `path` is deleted in this layer.
    Whiteout { path: String },
}

/// The entries of a layer; written by [`write_layer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerPlan {
    pub entries: Vec<Entry>,
}

impl LayerPlan {
    pub fn file_bytes(&self) -> u64 {
        self.entries.iter().map(|e| if let Entry::File { bytes, .. } = e { *bytes } else { 0 }).sum()
    }
}

fn content_seed(seed: u64, layer: usize, n: u64) -> u64 {
    // splitmix64 of the three: distinct, well-mixed seeds per file.
    let mut z = seed ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Plan every layer of a synthetic spec.
pub fn plan_synthetic(seed: u64, s: &SynthSpec) -> Vec<LayerPlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    let mut plans = Vec::new();
    let mut counter = 0u64;
    for layer in 0..s.layers.max(1) {
        let mut plan = LayerPlan::default();
        if layer > 0 {
            let existing: Vec<String> = live.keys().cloned().collect();
            for p in existing {
                let r: f64 = rng.gen();
                if r < s.delete_fraction {
                    live.remove(&p);
                    plan.entries.push(Entry::Whiteout { path: p });
                } else if r < s.delete_fraction + s.modify_fraction {
                    let bytes = s.size.sample(&mut rng);
                    counter += 1;
                    live.insert(p.clone(), bytes);
                    plan.entries.push(Entry::File { path: p, bytes, content_seed: content_seed(seed, layer, counter) });
                }
            }
        }
        for _ in 0..s.files_per_layer {
            let mut dir = String::from("data");
            for _ in 0..s.dir_depth {
                dir.push_str(&format!("/d{}", rng.gen_range(0..s.dir_fanout.max(1))));
            }
            counter += 1;
            let path = format!("{dir}/f{layer}-{counter}");
            let bytes = s.size.sample(&mut rng);
            live.insert(path.clone(), bytes);
            plan.entries.push(Entry::File { path, bytes, content_seed: content_seed(seed, layer, counter) });
        }
        plans.push(plan);
    }
    plans
}

/// One large file (`bytes`) at `path`.
pub fn plan_large_file(seed: u64, path: &str, bytes: u64) -> LayerPlan {
    LayerPlan { entries: vec![Entry::File { path: path.trim_start_matches('/').into(), bytes, content_seed: content_seed(seed, 0, 0) }] }
}

/// `count` files of `bytes` each under `/small`, `per_dir` per directory.
pub fn plan_small_files(seed: u64, count: usize, bytes: u64, per_dir: usize) -> LayerPlan {
    let per_dir = per_dir.max(1);
    LayerPlan {
        entries: (0..count)
            .map(|i| Entry::File {
                path: format!("small/d{}/f{i}", i / per_dir),
                bytes,
                content_seed: content_seed(seed, 0, i as u64),
            })
            .collect(),
    }
}

/// A stack of `depth` layers: the bottom one holds `target` (`target_bytes`), every layer
/// above adds one small file `/stack/<n>`, so lookups of the target cross every layer.
pub fn plan_deep_stack(seed: u64, depth: usize, target: &str, target_bytes: u64) -> Vec<LayerPlan> {
    let mut plans = vec![plan_large_file(seed, target, target_bytes)];
    for n in 1..depth.max(1) {
        plans.push(LayerPlan {
            entries: vec![Entry::File { path: format!("stack/{n}"), bytes: 64, content_seed: content_seed(seed, n, 1) }],
        });
    }
    plans
}

/// Seed of the random block every generated file's content is cut from (the file's own
/// content seed salts it; see [`Pattern`]).
const PATTERN_SEED: u64 = 0x636f_7762_656e_6368;

/// The content of a generated file of content seed `content_seed`, `len` bytes: incompressible,
/// no 4 KiB block equal to another of any file, generated at memcpy speed.
pub fn file_content(content_seed: u64, len: u64) -> Pattern {
    Pattern::new(PATTERN_SEED, content_seed, len)
}

fn header(typ: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(typ);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Appends entries, emitting every parent directory once, before its first child.
pub struct TarWriter<W: Write> {
    b: tar::Builder<W>,
    dirs: BTreeSet<String>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Deterministic);
        TarWriter { b, dirs: BTreeSet::new() }
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            if self.dirs.insert(acc.clone()) {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                self.b.append_data(&mut h, format!("{acc}/"), io::empty())?;
            }
        }
        Ok(())
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let path = path.trim_matches('/');
        self.parents(path)?;
        if self.dirs.insert(path.to_string()) {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            self.b.append_data(&mut h, format!("{path}/"), io::empty())?;
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, size: u64, data: impl Read) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        let mut h = header(tar::EntryType::Regular, mode, size);
        self.b.append_data(&mut h, path, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target)
    }

    pub fn whiteout(&mut self, path: &str) -> io::Result<()> {
        let p = Path::new(path.trim_start_matches('/'));
        let name = p.file_name().and_then(|n| n.to_str()).ok_or_else(|| io::Error::other(format!("bad path {path}")))?;
        let wh = match p.parent().and_then(|d| d.to_str()).filter(|d| !d.is_empty()) {
            Some(d) => format!("{d}/.wh.{name}"),
            None => format!(".wh.{name}"),
        };
        self.file(&wh, 0o644, 0, io::empty())
    }

    pub fn finish(self) -> io::Result<W> {
        self.b.into_inner()
    }
}

/// Write a planned layer as a tar stream.
pub fn write_layer(plan: &LayerPlan, out: &mut dyn Write) -> io::Result<()> {
    let mut t = TarWriter::new(out);
    for e in &plan.entries {
        match e {
            Entry::File { path, bytes, content_seed } => t.file(path, 0o644, *bytes, file_content(*content_seed, *bytes))?,
            Entry::Whiteout { path } => t.whiteout(path)?,
        }
    }
    t.finish()?.flush()
}

/// busybox applets linked in /bin of the base layer.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "ls", "cat", "echo", "hostname", "sleep", "stat", "dd", "mkdir", "rm", "rmdir", "true", "false", "env",
    "ps", "id", "readlink", "mount", "grep", "head", "tail", "wc", "sync", "touch", "cp", "mv", "ln", "find", "uname",
    "test", "[", "printf", "du", "df", "md5sum", "sha256sum", "chmod", "chown", "xargs", "free", "top", "kill", "sed",
    "awk", "seq", "tr", "cut", "sort", "uniq", "date", "pwd", "basename", "dirname",
];

/// The base layer that makes an image runnable: /bin/busybox with applet symlinks,
/// /usr/local/bin/cowbench-probe, the usual top-level directories and a root user.
pub fn write_base_layer(busybox: &Path, probe: &Path, out: &mut dyn Write) -> io::Result<()> {
    let mut t = TarWriter::new(out);
    for (d, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr/local/bin", 0o755),
        ("var/tmp", 0o1777),
    ] {
        t.dir(d, mode)?;
    }
    let bb = std::fs::File::open(busybox)?;
    let len = bb.metadata()?.len();
    t.file("bin/busybox", 0o755, len, bb)?;
    for a in APPLETS {
        t.symlink(&format!("bin/{a}"), "busybox")?;
    }
    let pr = std::fs::File::open(probe)?;
    let len = pr.metadata()?.len();
    t.file(crate::probe::PROBE_PATH, 0o755, len, pr)?;
    for (p, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
    ] {
        t.file(p, 0o644, text.len() as u64, text.as_bytes())?;
    }
    t.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn digest(plan: &LayerPlan) -> String {
        let mut v = Vec::new();
        write_layer(plan, &mut v).unwrap();
        hex::encode(Sha256::digest(&v))
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let s = SynthSpec { layers: 3, files_per_layer: 20, modify_fraction: 0.3, delete_fraction: 0.2, ..Default::default() };
        let a = plan_synthetic(7, &s);
        let b = plan_synthetic(7, &s);
        let c = plan_synthetic(8, &s);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(digest(&a[1]), digest(&b[1]));
        assert_ne!(digest(&a[0]), digest(&c[0]));
        // Upper layers modify and delete files of lower layers.
        let whiteouts = a[1..].iter().flat_map(|p| &p.entries).filter(|e| matches!(e, Entry::Whiteout { .. })).count();
        assert!(whiteouts > 0);
        let lower: BTreeSet<_> = a[0].entries.iter().filter_map(|e| if let Entry::File { path, .. } = e { Some(path) } else { None }).collect();
        let modified = a[1].entries.iter().filter(|e| matches!(e, Entry::File { path, .. } if lower.contains(path))).count();
        assert!(modified > 0);
    }

    #[test]
    fn tar_has_whiteouts_and_sizes() {
        let plan = LayerPlan {
            entries: vec![
                Entry::File { path: "a/b/c".into(), bytes: 10_000, content_seed: 1 },
                Entry::Whiteout { path: "a/gone".into() },
                Entry::Whiteout { path: "top".into() },
            ],
        };
        let mut v = Vec::new();
        write_layer(&plan, &mut v).unwrap();
        let mut ar = tar::Archive::new(&v[..]);
        let names: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().size().unwrap())
            })
            .collect();
        assert_eq!(
            names,
            vec![("a/".into(), 0), ("a/b/".into(), 0), ("a/b/c".into(), 10_000), ("a/.wh.gone".into(), 0), (".wh.top".into(), 0)]
        );
    }

    #[test]
    fn size_distributions() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let u = SizeDist::Uniform { min: 10, max: 20 }.sample(&mut rng);
            assert!((10..=20).contains(&u));
            let l = SizeDist::LogUniform { min: 100, max: 1 << 20 }.sample(&mut rng);
            assert!((100..=(1 << 20)).contains(&l), "{l}");
        }
        assert_eq!(SizeDist::Fixed { bytes: 5 }.sample(&mut rng), 5);
    }

    #[test]
    fn content_streams_without_buffering() {
        let mut c = file_content(3, 10 << 20);
        let n = io::copy(&mut c, &mut io::sink()).unwrap();
        assert_eq!(n, 10 << 20);
    }

    #[test]
    fn shapes() {
        let d = plan_deep_stack(1, 5, "/target", 4096);
        assert_eq!(d.len(), 5);
        assert_eq!(d[0].file_bytes(), 4096);
        let s = plan_small_files(1, 250, 100, 100);
        assert_eq!(s.entries.len(), 250);
        assert!(matches!(&s.entries[249], Entry::File { path, .. } if path == "small/d2/f249"));
    }
}
