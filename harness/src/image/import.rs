//! Import of real images: `docker save` tarballs (`manifest.json` + config + layer tars) and
//! OCI image layouts (`index.json` → manifest → config + layer blobs, gzip or zstd), as a
//! directory or as a tar of one. Layers go through `driver.apply` (the archive module), the
//! image config's env, cmd, entrypoint and workdir become the [`ImageConfig`].
//!
//! Nothing an image names is trusted: digests are parsed into [`Digest`] (sha256/sha512 hex
//! only), file names into [`BlobPath`] (inside the image, see [`layout`](super::layout)), and
//! every blob is checked against its digest as it is read. The roots, `index.json` and
//! `manifest.json`, carry no digest; everything they reach does:
//!
//! - OCI: index, manifest, config and layer blobs by their descriptor's digest and size (a
//!   layer by its compressed blob digest, as stored).
//! - docker save: the config by the digest its file name carries (`<hex>.json` or
//!   `blobs/<alg>/<hex>`), each `Layers` entry by the config's `rootfs.diff_ids` entry at the
//!   same index, over the uncompressed tar.

use std::io::Read;
use std::path::Path;

use cowbench_drivers::{ApplyStats, Driver};
use serde_json::Value;

use super::digest::Verify;
use super::layout::{BlobPath, Source};
use super::{apply_verified, commit_stack, sanitize_name, Digest, Error, Identity, Image, ImageConfig, LayerSource, Result};

/// Index, manifest and config documents larger than this are refused unread.
const MAX_DOC_BYTES: u64 = 16 << 20;

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// The `config` part of an image config JSON (same keys in Docker and OCI).
pub fn parse_config(v: &Value) -> ImageConfig {
    let c = &v["config"];
    ImageConfig {
        env: strings(&c["Env"]),
        cmd: strings(&c["Cmd"]),
        entrypoint: strings(&c["Entrypoint"]),
        workdir: c["WorkingDir"].as_str().filter(|s| !s.is_empty()).map(String::from),
    }
}

/// What a layer blob's digest is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Covers {
    /// The blob as stored (OCI descriptors; compressed or not).
    Stored,
    /// The uncompressed tar (docker save's `rootfs.diff_ids`).
    Uncompressed,
}

/// One layer blob of the image being imported.
struct LayerBlob<'a> {
    src: &'a Source,
    /// The image's path, for errors (`image` in `apply` is the name it is imported as).
    origin: &'a str,
    what: String,
    path: BlobPath,
    digest: Digest,
    size: Option<u64>,
    covers: Covers,
}

impl LayerSource for LayerBlob<'_> {
    fn identity(&self, _image: &str) -> Result<Identity> {
        Ok(Identity::Digest(self.digest.clone()))
    }

    fn apply(&self, driver: &dyn Driver, key: &str, image: &str) -> Result<ApplyStats> {
        let digest = &self.digest;
        let image = &format!("{image} ({})", self.origin);
        let (mut raw, _) = self.src.open(&self.path).map_err(Error::io(image, format!("open {}", self.what)))?;
        match self.covers {
            Covers::Stored => apply_verified(driver, key, image, &self.what, raw, digest, self.size),
            Covers::Uncompressed => {
                // Decompress here (same detection the archive module uses) so the hash sees
                // the uncompressed tar; the archive module then gets a plain tar.
                let (_, plain) = cowbench_drivers::archive::compress::decompress(&mut raw)
                    .map_err(Error::io(image, format!("decompress {}", self.what)))?;
                apply_verified(driver, key, image, &self.what, plain, digest, None)
            }
        }
    }
}

/// The image being imported: its files and its label in errors.
struct Reader<'a> {
    src: &'a Source,
    image: &'a str,
}

impl Reader<'_> {
    fn format(&self, message: String) -> Error {
        Error::Format { image: self.image.into(), message }
    }

    fn path(&self, field: &str, text: &str) -> Result<BlobPath> {
        BlobPath::parse(text).map_err(|message| Error::Path { image: self.image.into(), field: field.into(), message })
    }

    fn digest(&self, field: &str, v: &Value) -> Result<Digest> {
        let text = v.as_str().ok_or_else(|| self.format(format!("{field}: missing (a digest string)")))?;
        Digest::parse(text).map_err(|source| Error::Digest { image: self.image.into(), field: field.into(), source })
    }

    /// A JSON document, checked against `expected` (digest, and size when known) if given.
    fn doc(&self, what: &str, path: &BlobPath, expected: Option<(&Digest, Option<u64>)>) -> Result<Value> {
        let (r, len) = self.src.open(path).map_err(Error::io(self.image, format!("open {what}")))?;
        if len > MAX_DOC_BYTES {
            return Err(self.format(format!("{what} is {len} bytes, more than an image document may be ({MAX_DOC_BYTES})")));
        }
        let mut bytes = Vec::new();
        match expected {
            Some((d, size)) => {
                let mut v = Verify::new(r, d.clone(), size);
                let read = v.read_to_end(&mut bytes);
                match v.finish() {
                    Err(Ok(m)) => return Err(Error::mismatch(self.image, what, m)),
                    Err(Err(e)) => return Err(Error::Io { image: self.image.into(), context: format!("read {what}"), source: e }),
                    Ok(()) => read.map_err(Error::io(self.image, format!("read {what}")))?,
                };
            }
            None => {
                r.take(MAX_DOC_BYTES).read_to_end(&mut bytes).map_err(Error::io(self.image, format!("read {what}")))?;
            }
        }
        serde_json::from_slice(&bytes).map_err(|e| self.format(format!("{what}: {e}")))
    }

    /// A blob named by an OCI descriptor: its digest, size and path.
    fn descriptor(&self, field: &str, d: &Value) -> Result<(Digest, Option<u64>, BlobPath)> {
        let digest = self.digest(&format!("{field}.digest"), &d["digest"])?;
        let path = self.path(&format!("{field}.digest"), &digest.blob_path())?;
        Ok((digest, d["size"].as_u64(), path))
    }
}

/// An image ready to commit: config, layers bottom → top, default name.
struct Plan<'a> {
    config: Value,
    layers: Vec<LayerBlob<'a>>,
    default_name: Option<String>,
}

fn docker_save<'a>(r: &Reader<'a>, manifest_path: &BlobPath) -> Result<Plan<'a>> {
    let m = r.doc("manifest.json", manifest_path, None)?;
    let first = m.as_array().and_then(|a| a.first()).ok_or_else(|| r.format("manifest.json lists no image".into()))?;
    let cfg_name = first["Config"].as_str().ok_or_else(|| r.format("manifest.json: no Config".into()))?;
    let cfg_path = r.path("manifest.json Config", cfg_name)?;
    let cfg_digest = config_digest(&cfg_path).ok_or_else(|| Error::Path {
        image: r.image.into(),
        field: "manifest.json Config".into(),
        message: format!("{cfg_name:?} does not carry the config's digest (<hex>.json or blobs/<alg>/<hex>)"),
    })?;
    let cfg_what = format!("config {cfg_path}");
    let config = r.doc(&cfg_what, &cfg_path, Some((&cfg_digest, None)))?;
    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
    let names = first["Layers"].as_array().cloned().unwrap_or_default();
    if names.len() != diff_ids.len() {
        return Err(r.format(format!(
            "manifest.json lists {} layers, the config's rootfs.diff_ids {}: every layer needs its digest",
            names.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, (name, diff_id)) in names.iter().zip(&diff_ids).enumerate() {
        let field = format!("manifest.json Layers[{i}]");
        let text = name.as_str().ok_or_else(|| r.format(format!("{field}: not a string")))?;
        let path = r.path(&field, text)?;
        let digest = r.digest(&format!("config rootfs.diff_ids[{i}]"), diff_id)?;
        layers.push(LayerBlob { src: r.src, origin: r.image, what: format!("layer {i} ({path})"), path, digest, size: None, covers: Covers::Uncompressed });
    }
    Ok(Plan { config, layers, default_name: strings(&first["RepoTags"]).into_iter().next() })
}

/// The digest a docker-save config's name carries: `<hex>.json` (sha256) or
/// `blobs/<alg>/<hex>` (docker 25 and later).
fn config_digest(p: &BlobPath) -> Option<Digest> {
    let s = p.to_string();
    let parts: Vec<&str> = s.split('/').collect();
    let text = match parts.as_slice() {
        [file] => format!("sha256:{}", file.strip_suffix(".json")?),
        ["blobs", alg, hex] => format!("{alg}:{hex}"),
        _ => return None,
    };
    Digest::parse(&text).ok()
}

const INDEX_TYPES: &[&str] = &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

fn oci_layout<'a>(r: &Reader<'a>, index_path: &BlobPath) -> Result<Plan<'a>> {
    let mut idx = r.doc("index.json", index_path, None)?;
    let mut idx_name = "index.json".to_string();
    let mut ref_name = None;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    // Follow nested indexes down to one manifest, preferring this machine's platform.
    let mut depth = 0;
    let (manifest, man_digest) = loop {
        depth += 1;
        if depth > 8 {
            return Err(r.format("indexes nested more than 8 deep".into()));
        }
        let ms = idx["manifests"].as_array().cloned().unwrap_or_default();
        let (i, pick) = ms
            .iter()
            .enumerate()
            .find(|(_, d)| d["platform"]["os"] == "linux" && d["platform"]["architecture"] == arch)
            .or_else(|| ms.iter().enumerate().next())
            .ok_or_else(|| r.format(format!("{idx_name} lists no manifest")))?;
        if ref_name.is_none() {
            ref_name = pick["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from);
        }
        let (digest, size, path) = r.descriptor(&format!("{idx_name} manifests[{i}]"), pick)?;
        let doc = r.doc(&format!("manifest {path}"), &path, Some((&digest, size)))?;
        let mt = pick["mediaType"].as_str().or_else(|| doc["mediaType"].as_str()).unwrap_or("");
        if INDEX_TYPES.contains(&mt) || doc.get("manifests").is_some() {
            idx = doc;
            idx_name = format!("index {digest}");
            continue;
        }
        break (doc, digest);
    };
    let field = format!("manifest {man_digest}");
    let (cfg_digest, cfg_size, cfg_path) = r.descriptor(&format!("{field} config"), &manifest["config"])?;
    let config = r.doc(&format!("config {cfg_path}"), &cfg_path, Some((&cfg_digest, cfg_size)))?;
    let mut layers = Vec::new();
    for (i, d) in manifest["layers"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        let (digest, size, path) = r.descriptor(&format!("{field} layers[{i}]"), d)?;
        layers.push(LayerBlob { src: r.src, origin: r.image, what: format!("layer {i} ({path})"), path, digest, size, covers: Covers::Stored });
    }
    Ok(Plan { config, layers, default_name: ref_name })
}

/// Import the image at `path` into `driver` as `name` (default: its tag, else the file name).
pub fn import(driver: &dyn Driver, path: &Path, name: Option<&str>) -> Result<Image> {
    let label = path.display().to_string();
    let src = Source::open_path(path, &label)?;
    let r = Reader { src: &src, image: &label };
    let stem = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let stem = stem.trim_end_matches(".tar").to_string();

    let manifest_json = BlobPath::parse("manifest.json").expect("a plain name");
    let index_json = BlobPath::parse("index.json").expect("a plain name");
    let plan = if src.exists(&manifest_json) {
        docker_save(&r, &manifest_json)?
    } else if src.exists(&index_json) {
        oci_layout(&r, &index_json)?
    } else {
        return Err(r.format("neither manifest.json (docker save) nor index.json (OCI layout) found".into()));
    };
    if plan.layers.is_empty() {
        return Err(r.format("the image has no layers".into()));
    }
    let cfg = parse_config(&plan.config);
    let name = sanitize_name(name.unwrap_or(plan.default_name.as_deref().unwrap_or(&stem)));
    let layers: Vec<&dyn LayerSource> = plan.layers.iter().map(|b| b as &dyn LayerSource).collect();
    commit_stack(driver, &name, &layers, &cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_carry_digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = |s: &str| config_digest(&BlobPath::parse(s).unwrap()).map(|d| d.to_string());
        assert_eq!(d(&format!("{hex}.json")), Some(format!("sha256:{hex}")));
        assert_eq!(d(&format!("blobs/sha256/{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(d("config.json"), None);
        assert_eq!(d(&format!("x/{hex}.json")), None);
        assert_eq!(d(&format!("blobs/md5/{hex}")), None);
    }

    #[test]
    fn config() {
        let v: Value = serde_json::json!({"config": {"Env": ["A=1"], "Cmd": null, "Entrypoint": ["/x"], "WorkingDir": "/w"}});
        let c = parse_config(&v);
        assert_eq!(c, ImageConfig { env: vec!["A=1".into()], cmd: vec![], entrypoint: vec!["/x".into()], workdir: Some("/w".into()) });
    }
}
