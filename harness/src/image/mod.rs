//! Images: stacks of committed layers in a driver.
//!
//! ```text
//! image::build(&dyn Driver, &ImageSpec) -> Result<Image>       synthetic, seeded, runnable
//! image::import(&dyn Driver, path: &Path, name: Option<&str>) -> Result<Image>
//!                                              `docker save` tarball or OCI layout (dir or tar)
//! load(&dyn Driver, name) -> Result<Image>               an image built or imported before
//! image::list(&dyn Driver) -> Result<Vec<Image>>
//! image::remove(&dyn Driver, name) -> Result<()>
//! image::commit_stack(&dyn Driver, name, &[&dyn LayerSource], &ImageConfig) -> Result<Image>
//! probe_bin::find_or_build() / probe_bin::busybox()             what the base layer holds
//! ```
//!
//! Layer `n` of image `name` is the committed layer `img-<name>-<n>`, built by `prepare`,
//! `apply` (the tar stream, through the driver's archive conversion) and `commit`.
//!
//! **One build-or-reuse policy.** Every layer carries the identity of its content and a
//! chain over the identities of it and every layer below (for the top layer, also the image
//! config); a layer whose chain label matches is reused as it is, a layer whose chain differs
//! is replaced together with everything above it, once its successor was applied. The
//! identity of an imported layer is the digest of its blob (`cowbench.digest`, checked while
//! it is applied); the identity of a generated layer is the hash of its recipe
//! (`cowbench.recipe`): the serialised [`ImageSpec`] (a workload-made layer serialises its
//! recipe) and the layer's index, or for the base layer the digests of the busybox and probe
//! binaries it holds. Deciding reuse of a generated image thus costs a few label reads, never
//! regenerating its content. The top layer also carries `cowbench.config` (the image config
//! as JSON): a stack without it is the remainder of a failed build, no image.

pub mod digest;
pub mod import;
pub mod layout;
pub mod probe_bin;

use std::io::{self, Read, Write};

use cowbench_drivers::{ApplyStats, Driver, Kind, Labels};

use sha2::{Digest as _, Sha256};

pub use digest::{Algorithm, Digest, DigestError};
use digest::{Mismatch, Verify};
pub use import::import;
pub use cowbench_workloads::images::{synth, ImageSpec, Shape, SizeDist, SynthSpec};
pub use cowbench_workloads::lab::{Image, ImageConfig};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Driver(#[from] cowbench_drivers::Error),
    #[error("image {image}: {context}: {source}")]
    Io {
        image: String,
        context: String,
        #[source]
        source: io::Error,
    },
    /// A `docker save` tarball or OCI layout that cannot be read as one.
    #[error("image {image}: {message}")]
    Format { image: String, message: String },
    /// A digest field that is not `sha256:<64 hex>` or `sha512:<128 hex>`.
    #[error("image {image}: {field}: {source}")]
    Digest {
        image: String,
        field: String,
        #[source]
        source: DigestError,
    },
    /// A file name that would leave the image (absolute, `..`, a symlink out).
    #[error("image {image}: {field}: {message}")]
    Path { image: String, field: String, message: String },
    /// A blob whose content is not what its digest says.
    #[error("image {image}: {blob} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { image: String, blob: String, expected: Digest, actual: Digest },
    /// A blob longer or shorter than its descriptor's size.
    #[error("image {image}: {blob} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { image: String, blob: String, expected: u64, actual: u64 },
    #[error("image {0} not found")]
    NotFound(String),
    /// The probe or busybox binary for the base layer.
    #[error("{0}")]
    Probe(String),
}

impl Error {
    fn io(image: &str, context: impl Into<String>) -> impl FnOnce(io::Error) -> Error + '_ {
        let context = context.into();
        move |source| Error::Io { image: image.into(), context, source }
    }

    fn mismatch(image: &str, blob: &str, m: Mismatch) -> Error {
        let (image, blob) = (image.to_string(), blob.to_string());
        match m {
            Mismatch::Digest { expected, actual } => Error::DigestMismatch { image, blob, expected, actual },
            Mismatch::Size { expected, actual } => Error::SizeMismatch { image, blob, expected, actual },
        }
    }
}

pub const LABEL_IMAGE: &str = "cowbench.image";
pub const LABEL_DIGEST: &str = "cowbench.digest";
pub const LABEL_RECIPE: &str = "cowbench.recipe";
pub const LABEL_CHAIN: &str = "cowbench.chain";
pub const LABEL_CONFIG: &str = "cowbench.config";

/// `img-<name>-<n>`.
pub fn layer_key(name: &str, n: usize) -> String {
    format!("img-{name}-{n}")
}

fn layer_index(name: &str, key: &str) -> Option<usize> {
    key.strip_prefix(&format!("img-{name}-"))?.parse().ok()
}

/// Image names become layer keys: keep them to `[A-Za-z0-9_.-]`.
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect();
    if s.is_empty() {
        "image".into()
    } else {
        s
    }
}

/// The image `name` as committed in `driver` before.
pub fn load(driver: &dyn Driver, name: &str) -> Result<Image> {
    let mut layers: Vec<(usize, cowbench_drivers::LayerInfo)> = driver
        .list()?
        .into_iter()
        .filter(|l| l.kind == Kind::Committed)
        .filter_map(|l| layer_index(name, &l.key).map(|n| (n, l)))
        .collect();
    layers.sort_by_key(|(n, _)| *n);
    if layers.is_empty() || layers.iter().enumerate().any(|(i, (n, _))| i != *n) {
        return Err(Error::NotFound(name.into()));
    }
    let top = layers.last().unwrap().1.clone();
    // Only a complete build labels its top with the config: a stack without it is the
    // remainder of a failed build, no image.
    let Some(config) = top.labels.get(LABEL_CONFIG) else {
        return Err(Error::NotFound(name.into()));
    };
    let config = serde_json::from_str(config).map_err(|e| Error::Format { image: name.into(), message: format!("config label: {e}") })?;
    Ok(Image {
        name: name.into(),
        layers: layers.iter().map(|(_, l)| l.key.clone()).collect(),
        top: top.key,
        config,
    })
}
/// Every image in `driver`.
pub fn list(driver: &dyn Driver) -> Result<Vec<Image>> {
    let mut names: Vec<String> = driver
        .list()?
        .into_iter()
        .filter(|l| l.kind == Kind::Committed)
        .filter_map(|l| l.labels.get(LABEL_IMAGE).cloned())
        .collect();
    names.sort();
    names.dedup();
    Ok(names.iter().filter_map(|n| load(driver, n).ok()).collect())
}

/// Remove image `name`'s layers, top first (refused while containers use them).
pub fn remove(driver: &dyn Driver, name: &str) -> Result<()> {
    remove_from(driver, name, 0)
}

fn remove_from(driver: &dyn Driver, name: &str, from: usize) -> Result<()> {
    let mut keys: Vec<(usize, String)> =
        driver.list()?.into_iter().filter_map(|l| layer_index(name, &l.key).map(|n| (n, l.key))).filter(|(n, _)| *n >= from).collect();
    keys.sort();
    for (_, k) in keys.into_iter().rev() {
        driver.remove(&k)?;
    }
    Ok(())
}

/// What identifies a layer's content, and so what deciding its reuse compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The digest of an imported blob, checked while it is applied.
    Digest(Digest),
    /// `sha256:<hex>` of the recipe of generated content: everything that determines it.
    Recipe(String),
}

impl Identity {
    /// The label that records it on the layer, and its value.
    fn label(&self) -> (&'static str, String) {
        match self {
            Identity::Digest(d) => (LABEL_DIGEST, d.to_string()),
            Identity::Recipe(r) => (LABEL_RECIPE, r.clone()),
        }
    }
}

/// A layer tar and the identity of its content.
pub trait LayerSource {
    fn identity(&self, image: &str) -> Result<Identity>;
    /// Stream the content into `driver.apply(key)`; an imported blob is checked against its
    /// digest as it flows (content that does not match fails the apply and the caller drops
    /// the layer).
    fn apply(&self, driver: &dyn Driver, key: &str, image: &str) -> Result<ApplyStats>;
}

/// Stream `r` into `driver.apply(key)` while hashing it. What the archive reader leaves unread
/// (end-of-archive blocks, a compressed stream's trailer) is drained and hashed too, so the
/// verdict covers the whole blob. A mismatch wins over the apply's own error: content that is
/// not what it claims is the reason the apply saw garbage.
pub(crate) fn apply_verified(
    driver: &dyn Driver,
    key: &str,
    image: &str,
    blob: &str,
    r: impl Read,
    expected: &Digest,
    size: Option<u64>,
) -> Result<ApplyStats> {
    let mut v = Verify::new(r, expected.clone(), size);
    let applied = driver.apply(key, &mut v);
    match v.finish() {
        Err(Ok(m)) => Err(Error::mismatch(image, blob, m)),
        Err(Err(e)) if applied.is_ok() => Err(Error::Io { image: image.into(), context: format!("read {blob}"), source: e }),
        _ => Ok(applied?),
    }
}

/// A layer produced by a writer function (generated content), identified by its recipe.
pub struct Generated<F: Fn(&mut dyn Write) -> io::Result<()> + Sync> {
    /// Everything that determines the content (hashed into its identity).
    pub recipe: String,
    pub write: F,
}

/// `sha256:<hex>` of a recipe.
fn recipe_identity(recipe: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(recipe.as_bytes())))
}

impl<F: Fn(&mut dyn Write) -> io::Result<()> + Sync> LayerSource for Generated<F> {
    fn identity(&self, _image: &str) -> Result<Identity> {
        Ok(Identity::Recipe(recipe_identity(&self.recipe)))
    }

    /// The tar streams through a pipe into `driver.apply`; the writer is ours and
    /// deterministic, so nothing is hashed on the way.
    fn apply(&self, driver: &dyn Driver, key: &str, _image: &str) -> Result<ApplyStats> {
        let (reader, writer) = io::pipe().map_err(|e| cowbench_drivers::Error::io(driver.name(), Some(key), "pipe", e))?;
        std::thread::scope(|s| {
            let gen = s.spawn(move || {
                let mut w = io::BufWriter::with_capacity(1 << 20, writer);
                (self.write)(&mut w)?;
                w.flush()
            });
            // The reader is dropped before the writer thread is joined, so a failed apply
            // gives the writer EPIPE instead of blocking it forever.
            let applied = (|mut r: io::PipeReader| {
                let stats = driver.apply(key, &mut r)?;
                // Drain what the archive reader left (end-of-archive blocks), so the writer
                // can finish.
                let _ = io::copy(&mut r, &mut io::sink());
                Ok::<_, Error>(stats)
            })(reader);
            let written = gen.join().unwrap_or_else(|_| Err(io::Error::other("layer writer panicked")));
            let gen_err = |e| cowbench_drivers::Error::io(driver.name(), Some(key), "generate layer tar", e).into();
            match (applied, written) {
                // A writer that failed on its own cut the stream short: that is the cause (an
                // apply that failed first leaves the writer with EPIPE instead).
                (_, Err(e)) if e.kind() != io::ErrorKind::BrokenPipe => Err(gen_err(e)),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(gen_err(e)),
                (Ok(stats), Ok(())) => Ok(stats),
            }
        })
    }
}

/// Chains start from this, so a layer committed under an earlier rule (a chain over digests
/// nobody checked, over generated content's digests) never matches and is rebuilt.
const CHAIN_DOMAIN: &[u8] = b"cowbench layer chain v3: blob digests and recipes\n";

/// Commit `layers` (bottom → top) as image `name`, reusing layers whose chain matches.
///
/// An imported layer is verified against its digest while it is applied, so a chain label
/// only ever covers verified content or content generated from the recipe it names. An existing
/// layer of the same name is replaced only after its successor was applied and verified;
/// when a layer fails, the layers this call committed are removed again, and a stack left
/// without its top (no config label) is no image to [`Image::load`].
pub fn commit_stack(driver: &dyn Driver, name: &str, layers: &[&dyn LayerSource], config: &ImageConfig) -> Result<Image> {
    let name = sanitize_name(name);
    if layers.is_empty() {
        return Err(Error::Format { image: name, message: "an image needs at least one layer".into() });
    }
    let mut built_from: Option<usize> = None;
    let res = build_stack(driver, &name, layers, config, &mut built_from);
    if res.is_err() {
        if let Some(k) = built_from {
            if let Err(e) = remove_from(driver, &name, k) {
                log::warn!("image {name}: removing the layers of the failed build: {e}");
            }
        }
    }
    res
}

fn build_stack(driver: &dyn Driver, name: &str, layers: &[&dyn LayerSource], config: &ImageConfig, built_from: &mut Option<usize>) -> Result<Image> {
    let config_json = serde_json::to_string(config).expect("config serialises");
    let mut keys = Vec::new();
    let mut chain = String::new();
    let mut parent: Option<String> = None;
    for (n, src) in layers.iter().enumerate() {
        let key = layer_key(name, n);
        let (id_label, id) = src.identity(name)?.label();
        let top = n + 1 == layers.len();
        let mut h = Sha256::new();
        h.update(CHAIN_DOMAIN);
        h.update(chain.as_bytes());
        h.update(b"\n");
        h.update(id_label.as_bytes());
        h.update(b"=");
        h.update(id.as_bytes());
        if top {
            h.update(b"\n");
            h.update(config_json.as_bytes());
        }
        chain = format!("sha256:{}", hex::encode(h.finalize()));
        let reuse = match driver.stat(&key) {
            Ok(info) => info.kind == Kind::Committed && info.labels.get(LABEL_CHAIN) == Some(&chain),
            Err(cowbench_drivers::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if !reuse {
            let active = format!("{key}.build");
            if driver.stat(&active).is_ok() {
                driver.remove(&active)?;
            }
            driver.prepare(&active, parent.as_deref(), &Labels::new())?;
            if let Err(e) = src.apply(driver, &active, name) {
                if let Err(e2) = driver.remove(&active) {
                    log::warn!("image {name}: removing half-built layer {active}: {e2}");
                }
                return Err(e);
            }
            // Verified: now the stale layer at this index (another seed, another image of the
            // same name, an interrupted build) and everything above it can go.
            if built_from.is_none() {
                *built_from = Some(n);
            }
            let committed = remove_from(driver, name, n).and_then(|()| {
                let mut labels = Labels::new();
                labels.insert(LABEL_IMAGE.into(), name.into());
                labels.insert(id_label.into(), id.clone());
                labels.insert(LABEL_CHAIN.into(), chain.clone());
                if top {
                    labels.insert(LABEL_CONFIG.into(), config_json.clone());
                }
                Ok(driver.commit(&key, &active, &labels)?)
            });
            if let Err(e) = committed {
                if let Err(e2) = driver.remove(&active) {
                    log::warn!("image {name}: removing half-built layer {active}: {e2}");
                }
                return Err(e);
            }
        }
        parent = Some(key.clone());
        keys.push(key);
    }
    // A previous, taller build of the same name leaves layers above the new top.
    remove_from(driver, name, layers.len())?;
    let top = keys.last().unwrap().clone();
    Ok(Image { name: name.into(), layers: keys, top, config: config.clone() })
}

/// The default config of synthetic images: run the probe, reading its request from stdin.
pub fn probe_config() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cmd: vec![cowbench_workloads::probe::PROBE_PATH.into()],
        entrypoint: vec![],
        workdir: Some("/".into()),
    }
}

/// What the content of generated layers depends on besides their recipe: bump it when the
/// generator (synth, the content pattern, the tar writer) changes what it writes.
const GENERATOR: &str = "cowbench synth v2 (Pattern content)";

/// sha256 of a file's content, once per process and (path, size, mtime): the base layer's
/// identity covers the binaries it holds.
fn file_digest(p: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    type Key = (std::path::PathBuf, u64, i64, i64);
    static SEEN: std::sync::Mutex<Vec<(Key, String)>> = std::sync::Mutex::new(Vec::new());
    let md = std::fs::metadata(p).map_err(|e| Error::Probe(format!("{}: {e}", p.display())))?;
    let key = (p.to_path_buf(), md.len(), md.mtime(), md.mtime_nsec());
    if let Some((_, d)) = SEEN.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(k, _)| *k == key) {
        return Ok(d.clone());
    }
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p).map_err(|e| Error::Probe(format!("{}: {e}", p.display())))?;
    io::copy(&mut f, &mut h).map_err(|e| Error::Probe(format!("read {}: {e}", p.display())))?;
    let d = format!("sha256:{}", hex::encode(h.finalize()));
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).push((key, d.clone()));
    Ok(d)
}

/// The image `spec` describes in `driver`: the base layer (busybox and the probe) and the
/// shape's layers, each reused when its chain of recipes matches what the driver holds, else
/// built (see the module docs: the one build-or-reuse policy of cowbench, also behind
/// `Lab::image`).
pub fn build(driver: &dyn Driver, spec: &ImageSpec) -> Result<Image> {
    let busybox = probe_bin::busybox()?;
    let probe = probe_bin::find_or_build()?;
    let plans = match &spec.shape {
        Shape::Base | Shape::Custom(_) => vec![],
        Shape::Synthetic(s) => synth::plan_synthetic(spec.seed, s),
        Shape::LargeFile { path, bytes } => vec![synth::plan_large_file(spec.seed, path, *bytes)],
        Shape::SmallFiles { count, bytes, per_dir } => vec![synth::plan_small_files(spec.seed, *count, *bytes, *per_dir)],
        Shape::DeepStack { depth, target, target_bytes } => synth::plan_deep_stack(spec.seed, *depth, target, *target_bytes),
    };
    let custom: &[cowbench_workloads::images::CustomLayer] = match &spec.shape {
        Shape::Custom(c) => c,
        _ => &[],
    };
    let spec_json = serde_json::to_string(spec).map_err(|e| Error::Format { image: spec.name.clone(), message: format!("spec: {e}") })?;
    let base = Generated {
        recipe: format!("{GENERATOR}\nbase layer\nbusybox {}\nprobe {}", file_digest(&busybox)?, file_digest(&probe)?),
        write: |w: &mut dyn Write| synth::write_base_layer(&busybox, &probe, w),
    };
    // Layer n of the spec: the whole spec and n (layers below are in the chain already).
    let recipe = |n: usize| format!("{GENERATOR}\nspec {spec_json}\nlayer {n}");
    let gens: Vec<Box<dyn LayerSource + '_>> = plans
        .iter()
        .enumerate()
        .map(|(n, p)| Box::new(Generated { recipe: recipe(n + 1), write: move |w: &mut dyn Write| synth::write_layer(p, w) }) as Box<dyn LayerSource>)
        .chain(custom.iter().enumerate().map(|(n, c)| {
            Box::new(Generated { recipe: recipe(plans.len() + n + 1), write: move |w: &mut dyn Write| (c.write)(w) }) as Box<dyn LayerSource>
        }))
        .collect();
    let mut layers: Vec<&dyn LayerSource> = vec![&base];
    layers.extend(gens.iter().map(|g| g.as_ref()));
    commit_stack(driver, &spec.name, &layers, &probe_config())
}
