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
        assert!(l.labels[image::LABEL_DIGEST].starts_with("sha256:"));
    }
    // Same spec again: every layer reused (same ids), same image.
    let b = image::build(fx.driver(), &spec).unwrap();
    assert_eq!(a, b);
    let after: Vec<_> = b.layers.iter().map(|k| fx.driver().stat(k).unwrap()).collect();
    assert_eq!(before, after, "layers were rebuilt instead of reused");
    assert_eq!(Image::load(fx.driver(), "synth").unwrap(), a);

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
    assert_ne!(fx.driver().stat(&c.layers[1]).unwrap().labels[image::LABEL_DIGEST], before[1].labels[image::LABEL_DIGEST]);
    image::remove(fx.driver(), "synth").unwrap();
    assert!(Image::load(fx.driver(), "synth").is_err());
}

#[test]
fn synthetic_image_is_deterministic_and_reused_overlay() {
    synthetic_image("overlay");
}

#[test]
fn synthetic_image_is_deterministic_and_reused_vfs() {
    synthetic_image("vfs");
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
        // The content is the seeded stream, byte for byte.
        let mut h = Sha256::new();
        std::io::copy(&mut synth::Content::new(large_file_seed(), big), &mut h).unwrap();
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
    assert_eq!(Image::load(fx.driver(), "clibox").unwrap(), img);
    let d: &dyn Driver = fx.driver();
    assert!(d.stat("img-clibox-0").unwrap().labels.contains_key(image::LABEL_CHAIN));
}
