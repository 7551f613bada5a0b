//! Import of real images: `docker save` tarballs (`manifest.json` + config + layer tars) and
//! OCI image layouts (`index.json` → manifest → config + layer blobs, gzip or zstd), as a
//! directory or as a tar of one. Layers go through `driver.apply` (the archive module), the
//! image config's env, cmd, entrypoint and workdir become the [`ImageConfig`].
//!
//! A tarball is indexed once (entry name → offset and size) and each blob is then read in
//! place, so nothing is extracted to disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use cowbench_drivers::Driver;
use serde_json::Value;

use super::{commit_stack, sanitize_name, Blob, Error, Image, ImageConfig, LayerSource, Result};

/// Where the files of an image come from.
enum Source {
    Dir(PathBuf),
    Tar { file: PathBuf, entries: HashMap<String, TarEntry> },
}

#[derive(Clone)]
enum TarEntry {
    File { offset: u64, size: u64 },
    Link(String),
}

fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Source {
    fn open_path(path: &Path, image: &str) -> Result<Source> {
        if path.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let f = File::open(path).map_err(Error::io(image, format!("open {}", path.display())))?;
        let mut ar = tar::Archive::new(f);
        let mut entries = HashMap::new();
        let fmt = |m: String| Error::Format { image: image.into(), message: m };
        for e in ar.entries().map_err(|e| fmt(format!("{} is not a tar archive: {e}", path.display())))? {
            let e = e.map_err(|e| fmt(format!("{}: bad tar entry (a compressed tarball must be uncompressed first): {e}", path.display())))?;
            let name = normalize(&e.path().map_err(|e| fmt(e.to_string()))?.to_string_lossy());
            let h = e.header();
            let entry = match h.entry_type() {
                tar::EntryType::Symlink => {
                    let target = e.link_name().ok().flatten().map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
                    let dir = Path::new(&name).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                    TarEntry::Link(normalize(&format!("{dir}/{target}")))
                }
                tar::EntryType::Link => {
                    TarEntry::Link(normalize(&e.link_name().ok().flatten().map(|t| t.to_string_lossy().into_owned()).unwrap_or_default()))
                }
                t if t.is_file() => TarEntry::File { offset: e.raw_file_position(), size: e.size() },
                _ => continue,
            };
            entries.insert(name, entry);
        }
        Ok(Source::Tar { file: path.to_path_buf(), entries })
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(name).is_file(),
            Source::Tar { entries, .. } => entries.contains_key(&normalize(name)),
        }
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Source::Dir(d) => Ok(Box::new(io::BufReader::new(File::open(d.join(name))?))),
            Source::Tar { file, entries } => {
                let mut n = normalize(name);
                for _ in 0..16 {
                    match entries.get(&n) {
                        Some(TarEntry::File { offset, size }) => {
                            let mut f = File::open(file)?;
                            f.seek(SeekFrom::Start(*offset))?;
                            return Ok(Box::new(io::BufReader::with_capacity(1 << 20, f.take(*size))));
                        }
                        Some(TarEntry::Link(t)) => n = t.clone(),
                        None => break,
                    }
                }
                Err(io::Error::new(io::ErrorKind::NotFound, format!("{name} not in {}", file.display())))
            }
        }
    }

    fn json(&self, name: &str, image: &str) -> Result<Value> {
        let mut r = self.open(name).map_err(Error::io(image, format!("open {name}")))?;
        let mut s = String::new();
        r.read_to_string(&mut s).map_err(Error::io(image, format!("read {name}")))?;
        serde_json::from_str(&s).map_err(|e| Error::Format { image: image.into(), message: format!("{name}: {e}") })
    }
}

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

fn blob_path(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

const INDEX_TYPES: &[&str] = &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// Import the image at `path` into `driver` as `name` (default: its tag, else the file name).
pub fn import(driver: &dyn Driver, path: &Path, name: Option<&str>) -> Result<Image> {
    let label = path.display().to_string();
    let src = Source::open_path(path, &label)?;
    let fmt = |m: String| Error::Format { image: label.clone(), message: m };
    let stem = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let stem = stem.trim_end_matches(".tar").to_string();

    // (config JSON, layer sources, default name)
    let (config, blobs, default_name): (Value, Vec<Blob<'_>>, String) = if src.exists("manifest.json") {
        let m = src.json("manifest.json", &label)?;
        let first = m.as_array().and_then(|a| a.first()).ok_or_else(|| fmt("manifest.json lists no image".into()))?;
        let cfg_name = first["Config"].as_str().ok_or_else(|| fmt("manifest.json: no Config".into()))?;
        let config = src.json(cfg_name, &label)?;
        let tag = strings(&first["RepoTags"]).into_iter().next();
        let layers = strings(&first["Layers"]);
        let srcr = &src;
        let blobs = layers
            .into_iter()
            .map(|l| Blob { open: Box::new(move || srcr.open(&l)), digest: None })
            .collect();
        (config, blobs, tag.unwrap_or(stem))
    } else if src.exists("index.json") {
        let mut idx = src.json("index.json", &label)?;
        let mut ref_name = None;
        // Follow nested indexes down to one manifest, preferring this machine's platform.
        let manifest = loop {
            let ms = idx["manifests"].as_array().cloned().unwrap_or_default();
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                a => a,
            };
            let pick = ms
                .iter()
                .find(|d| d["platform"]["os"] == "linux" && d["platform"]["architecture"] == arch)
                .or_else(|| ms.first())
                .cloned()
                .ok_or_else(|| fmt("index.json lists no manifest".into()))?;
            if ref_name.is_none() {
                ref_name = pick["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from);
            }
            let digest = pick["digest"].as_str().ok_or_else(|| fmt("descriptor without digest".into()))?;
            let doc = src.json(&blob_path(digest), &label)?;
            let mt = pick["mediaType"].as_str().or_else(|| doc["mediaType"].as_str()).unwrap_or("");
            if INDEX_TYPES.contains(&mt) || doc.get("manifests").is_some() {
                idx = doc;
                continue;
            }
            break doc;
        };
        let cfg_digest = manifest["config"]["digest"].as_str().ok_or_else(|| fmt("manifest without config".into()))?;
        let config = src.json(&blob_path(cfg_digest), &label)?;
        let srcr = &src;
        let blobs = manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d["digest"].as_str().map(String::from))
            .map(|d| {
                let p = blob_path(&d);
                Blob { open: Box::new(move || srcr.open(&p)), digest: Some(d) }
            })
            .collect();
        (config, blobs, ref_name.unwrap_or(stem))
    } else {
        return Err(fmt("neither manifest.json (docker save) nor index.json (OCI layout) found".into()));
    };
    if blobs.is_empty() {
        return Err(fmt("the image has no layers".into()));
    }
    let cfg = parse_config(&config);
    let name = sanitize_name(name.unwrap_or(&default_name));
    let layers: Vec<&dyn LayerSource> = blobs.iter().map(|b| b as &dyn LayerSource).collect();
    commit_stack(driver, &name, &layers, &cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_config() {
        assert_eq!(normalize("./a/../b//c"), "b/c");
        assert_eq!(blob_path("sha256:ab"), "blobs/sha256/ab");
        let v: Value = serde_json::json!({"config": {"Env": ["A=1"], "Cmd": null, "Entrypoint": ["/x"], "WorkingDir": "/w"}});
        let c = parse_config(&v);
        assert_eq!(c, ImageConfig { env: vec!["A=1".into()], cmd: vec![], entrypoint: vec!["/x".into()], workdir: Some("/w".into()) });
    }
}
