//! Images on overlay and vfs: the synthetic generator is deterministic and reused, its
//! whiteouts and modifications show in the mounted image, the fixed shapes are what they say,
//! and real images (`docker save` tarballs, OCI layouts) import and run.

use std::io::Write;
use std::path::{Path, PathBuf};

use cowbench::container::{ContainerSpec, Runtime, RuntimeKind};
use cowbench::image::{self, synth, Image, ImageSpec, Shape, SizeDist, SynthSpec};
use cowbench_drivers::conformance::{fixture, Fixture};
use cowbench_drivers::{Driver, Labels, MountGuard};
use cowbench_workloads::probe::{Op, Request};
use sha2::{Digest, Sha256};

fn view<'a>(fx: &'a Fixture, img: &Image, name: &str) -> (MountGuard<'a>, String) {
    let key = format!("view-{name}");
    fx.driver().view(&key, &img.top, &Labels::new()).unwrap();
    let dir = fx.dir(name);
    (MountGuard::new(fx.driver(), &key, &dir).unwrap(), key)
}

fn synthetic_image(driver: &str) {
    let Some(fx) = fixture(driver, &[]) else { return };
    let s = SynthSpec {
        layers: 4,
        files_per_layer: 40,
        size: SizeDist::LogUniform { min: 1, max: 256 << 10 },
        dir_depth: 3,
        dir_fanout: 3,
        modify_fraction: 0.2,
        delete_fraction: 0.15,
    };
    let spec = ImageSpec::new("synth", 42, Shape::Synthetic(s.clone()));
    let a = image::build(fx.driver(), &spec).unwrap();
    assert_eq!(a.layers.len(), 5, "base + 4");
    assert_eq!(a.layers[0], "img-synth-0");
    assert_eq!(a.top, "img-synth-4");
    let before: Vec<_> = a.layers.iter().map(|k| fx.driver().stat(k).unwrap()).collect();
    for l in &before {
        assert!(l.labels[image::LABEL_RECIPE].starts_with("sha256:"), "a generated layer records its recipe");
    }
    // Same spec again: every layer reused (same ids), same image.
    let b = image::build(fx.driver(), &spec).unwrap();
    assert_eq!(a, b);
    let after: Vec<_> = b.layers.iter().map(|k| fx.driver().stat(k).unwrap()).collect();
    assert_eq!(before, after, "layers were rebuilt instead of reused");
    assert_eq!(image::load(fx.driver(), "synth").unwrap(), a);

    // What the mounted image shows is the plan: deleted files gone, modified files at their
    // last size, everything else present.
    let plans = synth::plan_synthetic(42, &s);
    let mut expect: std::collections::BTreeMap<String, Option<u64>> = Default::default();
    for p in &plans {
        for e in &p.entries {
            match e {
                synth::Entry::File { path, bytes, .. } => expect.insert(path.clone(), Some(*bytes)),
                synth::Entry::Whiteout { path } => expect.insert(path.clone(), None),
            };
        }
    }
    assert!(expect.values().any(|v| v.is_none()), "the spec deletes files");
    {
        let (m, _) = view(&fx, &a, "synth");
        for (p, size) in &expect {
            let meta = std::fs::symlink_metadata(m.path().join(p));
            match size {
                Some(n) => assert_eq!(meta.unwrap().len(), *n, "{p}"),
                None => assert!(meta.is_err(), "{p} was deleted in an upper layer"),
            }
        }
        assert!(m.path().join("bin/busybox").is_file());
    }
    fx.driver().remove("view-synth").unwrap();

    // Another seed replaces the stale layers (above the shared base).
    let c = image::build(fx.driver(), &ImageSpec::new("synth", 43, Shape::Synthetic(s))).unwrap();
    assert_eq!(fx.driver().stat(&c.layers[0]).unwrap(), before[0], "the base layer is shared");
    assert_ne!(fx.driver().stat(&c.layers[1]).unwrap().labels[image::LABEL_RECIPE], before[1].labels[image::LABEL_RECIPE]);
    image::remove(fx.driver(), "synth").unwrap();
    assert!(image::load(fx.driver(), "synth").is_err());
}

#[test]
fn synthetic_image_is_deterministic_and_reused_overlay() {
    synthetic_image("overlay");
}

#[test]
fn synthetic_image_is_deterministic_and_reused_vfs() {
    synthetic_image("vfs");
}

/// A layer a workload writes itself: one file `/custom` holding `text`.
fn custom_layer(recipe: &str, text: &'static str) -> cowbench_workloads::images::CustomLayer {
    cowbench_workloads::images::CustomLayer::new(recipe, move |w: &mut dyn Write| {
        let mut t = synth::TarWriter::new(w);
        t.file("custom", 0o644, text.len() as u64, text.as_bytes())?;
        t.finish()?.flush()
    })
}

/// Workload-made layers are reused by their recipe: the same recipe keeps the committed layer
/// (its writer is not run again), another recipe rebuilds it, the base layer below stays.
#[test]
fn custom_layers_are_reused_by_recipe_overlay() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let spec = |recipe: &str, text: &'static str| ImageSpec::new("custom", 1, Shape::Custom(vec![custom_layer(recipe, text)]));
    let a = image::build(fx.driver(), &spec("one file v1", "first")).unwrap();
    assert_eq!(a.layers.len(), 2, "base + 1");
    let before: Vec<_> = a.layers.iter().map(|k| fx.driver().stat(k).unwrap()).collect();
    // Same recipe, different writer output: the recipe decides, so the layer is kept.
    let b = image::build(fx.driver(), &spec("one file v1", "other")).unwrap();
    let same: Vec<_> = b.layers.iter().map(|k| fx.driver().stat(k).unwrap()).collect();
    assert_eq!(before, same, "same recipe: reused");
    let read = |img: &Image, n: &str| {
        let (m, key) = view(&fx, img, n);
        let text = std::fs::read_to_string(m.path().join("custom")).unwrap();
        drop(m);
        fx.driver().remove(&key).unwrap();
        text
    };
    assert_eq!(read(&b, "b"), "first");
    let c = image::build(fx.driver(), &spec("one file v2", "second")).unwrap();
    assert_eq!(fx.driver().stat(&c.layers[0]).unwrap(), before[0], "the base layer is shared");
    assert_ne!(fx.driver().stat(&c.layers[1]).unwrap().labels[image::LABEL_RECIPE], before[1].labels[image::LABEL_RECIPE]);
    assert_eq!(read(&c, "c"), "second");
    image::remove(fx.driver(), "custom").unwrap();
}

fn shapes(driver: &str) {
    let Some(fx) = fixture(driver, &[]) else { return };
    let big = 24u64 << 20;
    let large = image::build(fx.driver(), &ImageSpec::new("large", 1, Shape::LargeFile { path: "/data/big".into(), bytes: big })).unwrap();
    let small = image::build(fx.driver(), &ImageSpec::new("small", 1, Shape::SmallFiles { count: 500, bytes: 100, per_dir: 100 })).unwrap();
    let deep = image::build(
        fx.driver(),
        &ImageSpec::new("deep", 1, Shape::DeepStack { depth: 12, target: "/target".into(), target_bytes: 8192 }),
    )
    .unwrap();
    assert_eq!(deep.layers.len(), 13);
    {
        let (m, _) = view(&fx, &large, "large");
        assert_eq!(std::fs::metadata(m.path().join("data/big")).unwrap().len(), big);
        // The content is the generator's, byte for byte.
        let mut h = Sha256::new();
        std::io::copy(&mut synth::file_content(large_file_seed(), big), &mut h).unwrap();
        let mut f = std::fs::File::open(m.path().join("data/big")).unwrap();
        let mut h2 = Sha256::new();
        std::io::copy(&mut f, &mut h2).unwrap();
        assert_eq!(h.finalize(), h2.finalize());
        let (m2, _) = view(&fx, &small, "small");
        let n = walk_files(&m2.path().join("small"));
        assert_eq!(n, 500);
    }
    // The deep stack's target, from the bottom layer, is readable in a container.
    let rt = Runtime::new(RuntimeKind::Runc, &fx.root().join("cb")).unwrap();
    let req = Request::new(vec![Op::Read {
        path: "/target".into(),
        block_bytes: 4096,
        direct: false,
        random: false,
        count: None,
        per_block: false,
        seed: 0,
    }]);
    let out = rt.run(fx.driver(), &deep, &ContainerSpec::probe(&req)).unwrap();
    let resp = out.probe_response().unwrap();
    assert_eq!(resp.samples_of("read", "total").next().unwrap().bytes, 8192);
    fx.driver().remove("view-large").unwrap();
    fx.driver().remove("view-small").unwrap();
}

/// The content seed the generator gives the large file of seed 1.
fn large_file_seed() -> u64 {
    match &synth::plan_large_file(1, "/data/big", 1).entries[0] {
        synth::Entry::File { content_seed, .. } => *content_seed,
        _ => unreachable!(),
    }
}

fn walk_files(p: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn fixed_shapes_overlay() {
    shapes("overlay");
}

#[test]
fn fixed_shapes_vfs() {
    shapes("vfs");
}

fn base_layer_tar() -> Vec<u8> {
    let bb = image::probe_bin::busybox().unwrap();
    let probe = image::probe_bin::find_or_build().unwrap();
    let mut v = Vec::new();
    synth::write_base_layer(&bb, &probe, &mut v).unwrap();
    v
}

fn image_config_json(diff_id: &str) -> String {
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin:/usr/local/bin", "GREETING=from-config"],
            "Entrypoint": ["/bin/busybox"],
            "Cmd": ["echo", "hello"],
            "WorkingDir": "/tmp"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "cowbench test"}]
    })
    .to_string()
}

fn tar_add(b: &mut tar::Builder<std::fs::File>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// A `docker save` tarball: manifest.json, the config, and <id>/layer.tar.
fn docker_save_tarball(dir: &Path) -> PathBuf {
    let layer = base_layer_tar();
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = image_config_json(&diff_id);
    let config_name = format!("{}.json", hex::encode(Sha256::digest(config.as_bytes())));
    let layer_dir = hex::encode(&Sha256::digest(diff_id.as_bytes())[..16]);
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["cowbench/busybox:test"],
        "Layers": [format!("{layer_dir}/layer.tar")]
    }])
    .to_string();
    let path = dir.join("busybox-save.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    tar_add(&mut b, &format!("{layer_dir}/VERSION"), b"1.0");
    tar_add(&mut b, &format!("{layer_dir}/layer.tar"), &layer);
    tar_add(&mut b, &config_name, config.as_bytes());
    tar_add(&mut b, "manifest.json", manifest.as_bytes());
    tar_add(&mut b, "repositories", br#"{"cowbench/busybox":{"test":"x"}}"#);
    b.into_inner().unwrap().flush().unwrap();
    path
}

fn run_imported(fx: &Fixture, img: &Image) {
    assert_eq!(img.config.entrypoint, vec!["/bin/busybox"]);
    assert_eq!(img.config.workdir.as_deref(), Some("/tmp"));
    let rt = Runtime::new(RuntimeKind::Runc, &fx.root().join("cb")).unwrap();
    // The image's own entrypoint + cmd: `busybox echo hello`.
    let out = rt.run(fx.driver(), img, &ContainerSpec::default()).unwrap();
    assert!(out.success(), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "hello\n");
    // Env and workdir of the config, env overridable by the spec.
    let mut spec = ContainerSpec::command(["sh", "-c", "pwd; echo $GREETING; echo $EXTRA"]);
    spec.env = vec!["EXTRA=from-spec".into()];
    let out = rt.run(fx.driver(), img, &spec).unwrap();
    assert_eq!(out.stdout_str(), "/tmp\nfrom-config\nfrom-spec\n");
}

fn docker_save_import(driver: &str) {
    let Some(fx) = fixture(driver, &[]) else { return };
    let tarball = docker_save_tarball(&fx.dir("save"));
    let img = image::import(fx.driver(), &tarball, None).unwrap();
    assert_eq!(img.name, "cowbench_busybox_test");
    assert_eq!(img.layers, vec!["img-cowbench_busybox_test-0"]);
    run_imported(&fx, &img);
    // Importing again reuses the layer.
    let id = fx.driver().stat(&img.top).unwrap().id;
    let again = image::import(fx.driver(), &tarball, None).unwrap();
    assert_eq!(fx.driver().stat(&again.top).unwrap().id, id);
}

#[test]
fn docker_save_tarball_imports_and_runs_overlay() {
    docker_save_import("overlay");
}

#[test]
fn docker_save_tarball_imports_and_runs_vfs() {
    docker_save_import("vfs");
}

/// An OCI image layout directory with a gzip layer behind a nested index.
fn oci_layout(dir: &Path) -> PathBuf {
    let layer = base_layer_tar();
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let h = hex::encode(Sha256::digest(data));
        std::fs::write(blobs.join(&h), data).unwrap();
        (format!("sha256:{h}"), data.len())
    };
    let (layer_d, layer_n) = put(&gz);
    let (cfg_d, cfg_n) = put(image_config_json(&diff_id).as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg_n},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer_n}]
    })
    .to_string();
    let (man_d, man_n) = put(manifest.as_bytes());
    let inner = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d, "size": man_n,
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    })
    .to_string();
    let (idx_d, idx_n) = put(inner.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx_d, "size": idx_n,
                       "annotations": {"org.opencontainers.image.ref.name": "ocibox"}}]
    })
    .to_string();
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir.to_path_buf()
}

#[test]
fn oci_layout_imports_and_runs_overlay() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let layout = oci_layout(&fx.dir("oci"));
    let img = image::import(fx.driver(), &layout, None).unwrap();
    assert_eq!(img.name, "ocibox");
    run_imported(&fx, &img);
    // The same layout as a tar archive.
    let tarball = fx.dir("ocitar").join("layout.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    let img2 = image::import(fx.driver(), &tarball, Some("ocitar")).unwrap();
    assert_eq!(img2.layers, vec!["img-ocitar-0"]);
    assert_eq!(fx.driver().stat(&img2.top).unwrap().labels[image::LABEL_DIGEST], fx.driver().stat(&img.top).unwrap().labels[image::LABEL_DIGEST]);
    run_imported(&fx, &img2);
}

#[test]
fn image_import_cli_prints_top_and_layers() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let tarball = docker_save_tarball(&fx.dir("save"));
    // The CLI opens the driver on the fixture's root (same layers, same backing store).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cowbench"))
        .args(["image", "import"])
        .arg(&tarball)
        .args(["--driver", "overlay", "--name", "clibox", "--json", "--root"])
        .arg(fx.root().join("root"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img: Image = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(img.top, "img-clibox-0");
    assert_eq!(img.layers, vec!["img-clibox-0"]);
    assert_eq!(image::load(fx.driver(), "clibox").unwrap(), img);
    let d: &dyn Driver = fx.driver();
    assert!(d.stat("img-clibox-0").unwrap().labels.contains_key(image::LABEL_CHAIN));
}

// ---------------------------------------------------------------------------------------------
// Hostile images. Each builds its own layout next to a sentinel layer tar "outside" it, and
// checks: refused with an error naming the image and what is wrong, no layer holds the
// sentinel, the store is as before, and an honest image still imports under the same name.

const SECRET: &[u8] = b"sentinel: this file lives outside the image\n";
const HONEST: &[u8] = b"honest content\n";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A layer tar holding one file.
fn one_file_layer(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

/// `<dir>/outside/secret-layer.tar`: a valid layer whose only file is SENTINEL.
fn sentinel(dir: &Path) -> (PathBuf, Vec<u8>) {
    let layer = one_file_layer("SENTINEL", SECRET);
    std::fs::create_dir_all(dir.join("outside")).unwrap();
    let p = dir.join("outside/secret-layer.tar");
    std::fs::write(&p, &layer).unwrap();
    (p, layer)
}

fn small_config(diff_id: &str) -> Vec<u8> {
    serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    })
    .to_string()
    .into_bytes()
}

/// Where the files of a one-layer OCI layout went.
struct Oci {
    dir: PathBuf,
    layer: PathBuf,
    config: PathBuf,
    manifest: PathBuf,
    manifest_digest: String,
}

fn put_blob(dir: &Path, data: &[u8]) -> (String, PathBuf) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let d = sha256(data);
    let p = blobs.join(&d[7..]);
    std::fs::write(&p, data).unwrap();
    (d, p)
}

fn oci_manifest(config: &(String, usize), layer_digest: &str, layer_size: usize) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    })
    .to_string()
    .into_bytes()
}

/// A one-layer OCI layout with `layer` as its layer, the descriptor claiming `digest`
/// (default: the layer's own).
fn write_oci(dir: &Path, layer: &[u8], digest: Option<&str>) -> Oci {
    std::fs::create_dir_all(dir).unwrap();
    let (layer_d, layer_p) = put_blob(dir, layer);
    let cfg = small_config(&sha256(layer));
    let (cfg_d, cfg_p) = put_blob(dir, &cfg);
    let manifest = oci_manifest(&(cfg_d, cfg.len()), digest.unwrap_or(&layer_d), layer.len());
    let (man_d, man_p) = put_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "hostile"}}]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Oci { dir: dir.to_path_buf(), layer: layer_p, config: cfg_p, manifest: man_p, manifest_digest: man_d }
}

/// A `docker save` image as a directory: `Layers` = [`layer_entry`], diff_ids = [`diff_id`].
fn write_docker_dir(dir: &Path, layer_entry: &str, diff_id: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = small_config(diff_id);
    let cfg_name = format!("{}.json", &sha256(&cfg)[7..]);
    std::fs::write(dir.join(&cfg_name), &cfg).unwrap();
    let manifest = serde_json::json!([{"Config": cfg_name, "RepoTags": ["hostile:latest"], "Layers": [layer_entry]}]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    dir.to_path_buf()
}

/// `dir` as a tar archive next to it.
fn tar_of(dir: &Path) -> PathBuf {
    let p = dir.with_extension("tar");
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    p
}

/// Every layer in the store, for before/after comparison.
fn store(fx: &Fixture) -> Vec<cowbench_drivers::LayerInfo> {
    let mut l = fx.driver().list().unwrap();
    l.sort_by(|a, b| a.key.cmp(&b.key));
    l
}

/// No committed layer holds the sentinel: each is mounted read-only and walked.
fn assert_no_sentinel(fx: &Fixture) {
    for (i, l) in store(fx).into_iter().filter(|l| l.kind == cowbench_drivers::Kind::Committed).enumerate() {
        let key = format!("scan-{i}");
        fx.driver().view(&key, &l.key, &Labels::new()).unwrap();
        {
            let m = MountGuard::new(fx.driver(), &key, &fx.dir(&key)).unwrap();
            let mut stack = vec![m.path().to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let e = e.unwrap();
                    let t = e.file_type().unwrap();
                    assert_ne!(e.file_name(), "SENTINEL", "layer {} holds the sentinel", l.key);
                    if t.is_dir() {
                        stack.push(e.path());
                    } else if t.is_file() {
                        assert_ne!(std::fs::read(e.path()).unwrap(), SECRET, "layer {} holds the sentinel's content", l.key);
                    }
                }
            }
        }
        fx.driver().remove(&key).unwrap();
    }
}

/// The content of `/marker` in image `name`.
fn marker(fx: &Fixture, name: &str) -> Vec<u8> {
    let img = image::load(fx.driver(), name).unwrap();
    let key = format!("marker-{name}");
    fx.driver().view(&key, &img.top, &Labels::new()).unwrap();
    let data = {
        let m = MountGuard::new(fx.driver(), &key, &fx.dir(&key)).unwrap();
        std::fs::read(m.path().join("marker")).unwrap()
    };
    fx.driver().remove(&key).unwrap();
    data
}

/// Import `path` as `name`: refused with an error whose message has every one of `needles`;
/// nothing changed in the store, no sentinel in any layer, and an honest image imports under
/// the same name afterwards.
fn assert_refused(fx: &Fixture, path: &Path, name: &str, needles: &[&str]) {
    let before = store(fx);
    let err = image::import(fx.driver(), path, Some(name)).expect_err("hostile image imported").to_string();
    assert!(err.contains(&path.display().to_string()), "error does not name the image: {err}");
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}: {err}");
    }
    assert!(!err.contains('\n'), "multi-line error: {err}");
    assert_eq!(store(fx), before, "the store changed: {err}");
    assert!(image::load(fx.driver(), name).is_err() || before.iter().any(|l| l.key == image::layer_key(name, 0)));
    assert_no_sentinel(fx);
    let honest = write_oci(&fx.dir(&format!("honest-{name}")), &one_file_layer("marker", HONEST), None);
    image::import(fx.driver(), &honest.dir, Some(name)).unwrap();
    assert_eq!(marker(fx, name), HONEST);
    assert_no_sentinel(fx);
}

#[test]
fn oci_digest_with_dotdot_is_refused() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("dotdot");
    let (_, secret) = sentinel(&base);
    // blobs/sha256/../../../outside/secret-layer.tar from the layout is the sentinel.
    let oci = write_oci(&base.join("layout"), &secret, Some("sha256:../../../outside/secret-layer.tar"));
    assert!(oci.dir.join("blobs/sha256/../../../outside/secret-layer.tar").is_file());
    assert_refused(&fx, &oci.dir, "dotdot", &["layers[0].digest", "invalid digest", "../../../outside/secret-layer.tar"]);
    // The same layout as a tar.
    assert_refused(&fx, &tar_of(&oci.dir), "dotdot", &["layers[0].digest", "invalid digest"]);
}

#[test]
fn docker_save_absolute_layer_path_is_refused() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("abs");
    let (secret_path, secret) = sentinel(&base);
    // The diff_id is the sentinel's true digest: only the path check stands in the way.
    let dir = write_docker_dir(&base.join("save"), &secret_path.display().to_string(), &sha256(&secret));
    assert_refused(&fx, &dir, "abs", &["Layers[0]", "absolute path"]);
    assert_refused(&fx, &tar_of(&dir), "abs", &["Layers[0]", "absolute path"]);
    let dir = write_docker_dir(&base.join("save-dotdot"), "../outside/secret-layer.tar", &sha256(&secret));
    assert_refused(&fx, &dir, "abs", &["Layers[0]", "'..'"]);
}

#[test]
fn symlink_blob_out_of_the_layout_is_refused() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("symlink");
    let (secret_path, secret) = sentinel(&base);
    // The descriptor's digest is the sentinel's true digest: only the symlink check stands in
    // the way.
    let oci = write_oci(&base.join("layout"), &secret, None);
    std::fs::remove_file(&oci.layer).unwrap();
    std::os::unix::fs::symlink(&secret_path, &oci.layer).unwrap();
    assert_refused(&fx, &oci.dir, "symlink", &["symlink", &oci.layer.file_name().unwrap().to_string_lossy()]);
    // A relative symlink, as a tar: it would have to leave the archive.
    std::fs::remove_file(&oci.layer).unwrap();
    std::os::unix::fs::symlink("../../../outside/secret-layer.tar", &oci.layer).unwrap();
    assert_refused(&fx, &tar_of(&oci.dir), "symlink", &["not in"]);
    // The blobs directory itself a symlink to a copy outside.
    let oci = write_oci(&base.join("layout2"), &secret, None);
    let moved = base.join("outside/blobs-sha256");
    std::fs::rename(oci.dir.join("blobs/sha256"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, oci.dir.join("blobs/sha256")).unwrap();
    assert_refused(&fx, &oci.dir, "symlink", &["symlink", "sha256"]);
    // index.json a symlink to an index outside (whose blobs are there too).
    let oci = write_oci(&base.join("layout3"), &secret, None);
    let outside_index = base.join("outside/index.json");
    std::fs::rename(oci.dir.join("index.json"), &outside_index).unwrap();
    std::os::unix::fs::symlink(&outside_index, oci.dir.join("index.json")).unwrap();
    assert_refused(&fx, &oci.dir, "symlink", &["index.json", "symlink"]);
}

#[test]
fn blob_not_matching_its_digest_is_refused() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("mismatch");
    let (_, secret) = sentinel(&base);
    let honest = one_file_layer("marker", HONEST);

    // Layer: the sentinel stored under the honest layer's digest (same size would not help).
    let oci = write_oci(&base.join("layer"), &honest, None);
    std::fs::write(&oci.layer, &secret).unwrap();
    let size_fixed = {
        // Keep the descriptor's size true to the poisoned blob, so the digest is what fails.
        let m = std::fs::read(&oci.manifest).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        v["layers"][0]["size"] = secret.len().into();
        let m = serde_json::to_vec(&v).unwrap();
        let (d, _) = put_blob(&oci.dir, &m);
        let idx = std::fs::read_to_string(oci.dir.join("index.json")).unwrap();
        let idx = idx.replace(&oci.manifest_digest, &d).replace(&format!("\"size\":{}", std::fs::metadata(&oci.manifest).unwrap().len()), &format!("\"size\":{}", m.len()));
        std::fs::write(oci.dir.join("index.json"), idx).unwrap();
        oci.dir.clone()
    };
    assert_refused(&fx, &size_fixed, "poison", &["layer 0", "does not match its digest", &sha256(&honest), &sha256(&secret)]);

    // Config: one byte changed after its digest was taken.
    let oci = write_oci(&base.join("config"), &honest, None);
    let cfg = std::fs::read(&oci.config).unwrap();
    let bad = String::from_utf8(cfg.clone()).unwrap().replace("/bin/true", "/bin/fals").into_bytes();
    std::fs::write(&oci.config, &bad).unwrap();
    assert_refused(&fx, &oci.dir, "poison", &["config", "does not match its digest", &sha256(&cfg), &sha256(&bad)]);

    // Manifest: swapped for one that names the sentinel, stored as a blob of the layout.
    let oci = write_oci(&base.join("manifest"), &honest, None);
    let (sd, _) = put_blob(&oci.dir, &secret);
    let cfg = std::fs::read(&oci.config).unwrap();
    let man = oci_manifest(&(sha256(&cfg), cfg.len()), &sd, secret.len());
    let orig = std::fs::read(&oci.manifest).unwrap();
    // Same size as the original, so only the digest can tell.
    let mut man = String::from_utf8(man).unwrap();
    while man.len() < orig.len() {
        man.push(' ');
    }
    assert_eq!(man.len(), orig.len(), "padding");
    std::fs::write(&oci.manifest, &man).unwrap();
    assert_refused(&fx, &oci.dir, "poison", &["manifest", "does not match its digest", &oci.manifest_digest, &sha256(man.as_bytes())]);

    // docker save: layer.tar is the sentinel, the config's diff_id the honest layer's.
    let dir = write_docker_dir(&base.join("save"), "abc/layer.tar", &sha256(&honest));
    std::fs::create_dir_all(dir.join("abc")).unwrap();
    std::fs::write(dir.join("abc/layer.tar"), &secret).unwrap();
    // (Another name: "poison" now holds the honest layer of that very digest and config, which
    // an import reuses without reading the blob.)
    assert_refused(&fx, &tar_of(&dir), "poison-save", &["layer 0", "does not match its digest", &sha256(&honest), &sha256(&secret)]);
    image::remove(fx.driver(), "poison-save").unwrap();
    // ... and gzip-compressed: the diff_id is over the uncompressed tar.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&secret).unwrap();
    std::fs::write(dir.join("abc/layer.tar"), gz.finish().unwrap()).unwrap();
    assert_refused(&fx, &dir, "poison-save", &["layer 0", "does not match its digest", &sha256(&honest), &sha256(&secret)]);
    // While the honest layer, gzip-compressed, imports.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&honest).unwrap();
    std::fs::write(dir.join("abc/layer.tar"), gz.finish().unwrap()).unwrap();
    image::import(fx.driver(), &dir, Some("gz")).unwrap();
    assert_eq!(marker(&fx, "gz"), HONEST);
}

#[test]
fn truncated_blob_is_refused() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("trunc");
    sentinel(&base);
    let layer = one_file_layer("marker", HONEST);
    let oci = write_oci(&base.join("layout"), &layer, None);
    std::fs::write(&oci.layer, &layer[..layer.len() / 2]).unwrap();
    assert_refused(&fx, &oci.dir, "trunc", &["layer 0", "does not match its digest", &sha256(&layer), &sha256(&layer[..layer.len() / 2])]);
    // Longer than its descriptor: reading stops past the size.
    let mut long = layer.clone();
    long.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&oci.layer, &long).unwrap();
    // (Another name: "trunc" now holds the honest layer, which an import reuses unread.)
    assert_refused(&fx, &oci.dir, "trunc-long", &["layer 0", &format!("descriptor says {}", layer.len())]);
}

#[test]
fn unknown_digest_algorithm_is_refused() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("alg");
    let (_, secret) = sentinel(&base);
    let oci = write_oci(&base.join("md5"), &secret, Some("md5:d41d8cd98f00b204e9800998ecf8427e"));
    assert_refused(&fx, &oci.dir, "alg", &["layers[0].digest", "unsupported algorithm md5"]);
    let oci = write_oci(&base.join("upper"), &secret, Some(&sha256(&secret).to_uppercase().replace("SHA256", "sha256")));
    assert_refused(&fx, &oci.dir, "alg", &["layers[0].digest", "invalid digest"]);
    let dir = write_docker_dir(&base.join("save"), "abc/layer.tar", "crc32:deadbeef");
    assert_refused(&fx, &dir, "alg", &["rootfs.diff_ids[0]", "unsupported algorithm crc32"]);
}

#[test]
fn honest_image_after_a_poisoned_one_gets_the_honest_content() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("same");
    let poison = one_file_layer("marker", b"poisoned content\n");
    let honest = one_file_layer("marker", HONEST);
    // An older image of the name, honest in its own right, is there first.
    let v1 = write_oci(&base.join("v1"), &one_file_layer("marker", b"version 1\n"), None);
    image::import(fx.driver(), &v1.dir, Some("same")).unwrap();
    // The poisoned layout claims the honest layer's digest (and size).
    let bad = write_oci(&base.join("poisoned"), &honest, None);
    std::fs::write(&bad.layer, &poison).unwrap();
    assert_eq!(poison.len(), honest.len());
    let before = store(&fx);
    let err = image::import(fx.driver(), &bad.dir, Some("same")).unwrap_err();
    assert!(matches!(err, image::Error::DigestMismatch { .. }), "{err}");
    // Refused without harm: the older image is still there, untouched.
    assert_eq!(store(&fx), before);
    assert_eq!(marker(&fx, "same"), b"version 1\n");
    // The honest layout under the same name, same digests: its own content, not the poison.
    let good = write_oci(&base.join("honest"), &honest, None);
    let img = image::import(fx.driver(), &good.dir, Some("same")).unwrap();
    assert_eq!(marker(&fx, "same"), HONEST);
    assert_eq!(fx.driver().stat(&img.top).unwrap().labels[image::LABEL_DIGEST], sha256(&honest));
    // And importing it again reuses the verified layer.
    let id = fx.driver().stat(&img.top).unwrap().id;
    image::import(fx.driver(), &good.dir, Some("same")).unwrap();
    assert_eq!(fx.driver().stat(&img.top).unwrap().id, id);
    // The poisoned layout, now that a verified layer of its claimed digest is cached, gets
    // that layer (its own blob is never read): the content stays honest.
    image::import(fx.driver(), &bad.dir, Some("same")).unwrap();
    assert_eq!(marker(&fx, "same"), HONEST);
    assert_eq!(fx.driver().stat(&img.top).unwrap().id, id);
}

#[test]
fn image_import_cli_refuses_hostile_image_in_one_line() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("cli");
    let (_, secret) = sentinel(&base);
    let oci = write_oci(&base.join("layout"), &secret, Some("sha256:../../../outside/secret-layer.tar"));
    let before = store(&fx);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cowbench"))
        .args(["image", "import"])
        .arg(&oci.dir)
        .args(["--driver", "overlay", "--name", "cli", "--root"])
        .arg(fx.root().join("root"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cowbench: image ") && err.contains("layers[0].digest: invalid digest"), "{err}");
    assert_eq!(store(&fx), before);
}

#[test]
fn poisoned_upper_layer_leaves_no_half_image() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let dir = fx.dir("half").join("layout");
    let (_, secret) = sentinel(&fx.dir("half"));
    let lower = one_file_layer("lower", b"lower\n");
    let upper = one_file_layer("marker", HONEST);
    let (ld, _) = put_blob(&dir, &lower);
    let (ud, up) = put_blob(&dir, &upper);
    // The upper blob is swapped for the sentinel after its digest was taken.
    std::fs::write(&up, &secret).unwrap();
    let cfg = small_config(&sha256(&lower));
    let (cd, _) = put_blob(&dir, &cfg);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": lower.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ud, "size": upper.len()}
        ]
    })
    .to_string();
    let (md, _) = put_blob(&dir, manifest.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len()}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    // The lower layer applies, verifies and is committed; the upper fails: both are gone again.
    assert_refused(&fx, &dir, "half", &["layer 1", "does not match its digest", &ud, &sha256(&secret)]);
}
