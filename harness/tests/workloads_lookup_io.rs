//! The lookup, metadata, seqio, randio, baremetal and layers executors on overlay and vfs with
//! tiny parameters, through the same cell function the runner uses, with real containers: each
//! runs, gives samples of the right shape, and a property that must hold does.
//!
//! Each driver runs on a fresh root under /var/tmp (the conformance fixture): a driver that
//! cannot run here is skipped with its reason, unless COWBENCH_REQUIRE_DRIVERS lists it.

use std::collections::BTreeMap;

use cowbench::lab::HostLab;
use cowbench_workloads::lab::Lab;
use cowbench_drivers::sys::mounts;
use cowbench_workloads::baremetal::{BaremetalParams, Site};
use cowbench_workloads::layers::LayersParams;
use cowbench_workloads::lookup::{Cache, LookupParams};
use cowbench_workloads::metadata::MetadataParams;
use cowbench_workloads::seqio::{IoParams, Target};
use cowbench_workloads::{by_id, Params, TypedParams, KIB, MIB};

mod common;
use common::Samples;

/// A lab as the runner opens one, with this file's seed.
fn session(driver: &str) -> Option<(cowbench_drivers::conformance::Fixture, HostLab)> {
    common::lab(driver, 11)
}

/// Run `reps` repetitions of workload `id` with `params` as the runner does: samples by metric
/// name, and the notes. Every metric the workload declares has samples, none negative.
fn run_cell(s: &HostLab, id: &str, params: &Params, reps: u32) -> (Samples, BTreeMap<String, String>) {
    let (out, notes) = common::run_cell(s, id, params, reps).unwrap_or_else(|r| panic!("{id} on {}: {r}", s.name()));
    for m in by_id(id).unwrap().metrics() {
        assert!(out.get(m.name).is_some_and(|v| !v.is_empty()), "{id} on {}: no {} samples", s.name(), m.name);
    }
    for (k, v) in &out {
        assert!(v.iter().all(|v| *v >= 0.0), "{id}: {k} = {v:?}");
    }
    (out, notes)
}

/// Nothing of the containers left: no runtime state, no rootfs mount, no container layer.
fn assert_clean(s: &HostLab) {
    assert_eq!(s.runtime().list_ours().unwrap(), Vec::<String>::new(), "runtime state left");
    let ms = mounts::mounts_under(&s.config().root.join("containers")).unwrap();
    assert!(ms.is_empty(), "mounts left: {ms:?}");
    let left: Vec<_> = s
        .driver()
        .list()
        .unwrap()
        .into_iter()
        .filter(|l| l.key.starts_with("ctr-") || l.key.starts_with("lyr-") || l.key.starts_with("baremetal-"))
        .collect();
    assert!(left.is_empty(), "layers left: {left:?}");
}

fn lookup(driver: &str) {
    let Some((_fx, s)) = session(driver) else { return };
    for cache in [Cache::Cold, Cache::Warm] {
        // 150 files: two directories, both merged over 4 layers.
        let p = LookupParams { depth: 4, files: 150, cache };
        let (out, notes) = run_cell(&s, "lookup", &p.to_params(), 2);
        assert_eq!(out["found_count"], vec![150.0, 150.0], "{driver} {cache:?}: every file is found");
        assert_eq!(out["lookup_latency_ns"].len(), 300, "one sample per file and repetition");
        assert!(out["lookup_latency_ns"].iter().all(|v| *v > 0.0));
        assert_eq!(notes["image_layers"], "5", "base + 4");
    }
    assert_clean(&s);
}

#[test]
fn lookup_overlay_finds_every_file() {
    lookup("overlay");
}

#[test]
fn lookup_vfs_finds_every_file() {
    lookup("vfs");
}

fn metadata(driver: &str) -> Samples {
    let Some((_fx, s)) = session(driver) else { return Samples::new() };
    let p = MetadataParams { files: 200, chown_files: 64, chown_bytes: MIB };
    let (out, _) = run_cell(&s, "metadata", &p.to_params(), 2);
    for m in ["create_latency_ns", "stat_latency_ns", "rename_latency_ns", "chmod_latency_ns", "unlink_latency_ns", "chown_latency_ns"] {
        assert_eq!(out[m].len(), 2, "{m}: one sample per repetition");
        assert!(out[m].iter().all(|v| *v > 0.0), "{m}");
    }
    assert_clean(&s);
    out
}

#[test]
fn metadata_overlay_chown_copies_the_directory_up() {
    let out = metadata("overlay");
    if let Some(d) = out.get("usage_delta_bytes") {
        // overlay must copy every file up to change its owner: the 1 MiB directory lands in the upper.
        assert!(d.iter().all(|v| *v >= MIB as f64), "usage deltas {d:?} < 1 MiB");
    }
}

#[test]
fn metadata_vfs_chown_changes_owners_only() {
    let out = metadata("vfs");
    if let Some(d) = out.get("usage_delta_bytes") {
        // vfs copied the image when the container's layer was made: the chown adds no data.
        assert!(d.iter().all(|v| *v < (MIB / 2) as f64), "usage deltas {d:?}");
    }
}

fn io(driver: &str) {
    let Some((_fx, s)) = session(driver) else { return };
    let file = 4 * MIB;
    let cells = [
        ("seqio", IoParams::seq(Target::Image, false, false, file, 1)),
        ("seqio", IoParams::seq(Target::New, true, true, file, 2)),
        ("randio", IoParams::rand(Target::Image, true, false, file, 1, 256)),
        ("randio", IoParams::rand(Target::New, false, true, file, 1, 256)),
    ];
    for (id, p) in cells {
        let (out, notes) = run_cell(&s, id, &p.to_params(), 2);
        let jobs = p.jobs as usize;
        for m in ["read_bytes_per_s", "write_bytes_per_s"] {
            assert_eq!(out[m].len(), 2, "{id} {m}: one aggregate per repetition");
            assert!(out[m].iter().all(|v| *v > 0.0), "{id} {m}");
        }
        for m in ["read_latency_ns", "write_latency_ns"] {
            assert_eq!(out[m].len(), 2 * jobs, "{id} {m}: one sample per job and repetition");
        }
        assert_eq!(notes["ios_per_pass"], p.ios().to_string());
        assert_eq!(notes.contains_key("o_direct"), p.direct);
    }
    assert_clean(&s);
}

#[test]
fn io_overlay_seqio_randio_shapes() {
    io("overlay");
}

#[test]
fn io_vfs_seqio_randio_shapes() {
    io("vfs");
}

fn baremetal(driver: &str) {
    let Some((_fx, s)) = session(driver) else { return };
    for io in [IoParams::seq(Target::Image, false, false, 2 * MIB, 1), IoParams::rand(Target::New, true, true, 2 * MIB, 2, 128)] {
        let p = BaremetalParams { io, site: Site::Host };
        let (out, notes) = run_cell(&s, "baremetal", &p.to_params(), 2);
        assert_eq!(out["read_bytes_per_s"].len(), 2);
        assert_eq!(out["write_latency_ns"].len(), 2 * io.jobs as usize);
        // overlay and vfs keep their layers on the root's filesystem: the reference runs there,
        // with no container and no driver mount in the way.
        assert!(notes["site"].contains("cowbench root"), "{}", notes["site"]);
        let dir = std::path::PathBuf::from(&notes["dir"]);
        assert!(dir.starts_with(&s.config().root));
        assert!(!dir.exists(), "the host-side files are removed after the cell");
    }
    assert_clean(&s);
}

#[test]
fn baremetal_overlay_runs_on_the_root_filesystem() {
    baremetal("overlay");
}

#[test]
fn baremetal_vfs_runs_on_the_root_filesystem() {
    baremetal("vfs");
}

fn layers(driver: &str) {
    let Some((_fx, s)) = session(driver) else { return };
    let before = s.driver().list().unwrap().len();
    for p in [LayersParams { layer_bytes: 2 * MIB, files: 10 }, LayersParams { layer_bytes: 512 * KIB, files: 100 }] {
        let (out, _) = run_cell(&s, "layers", &p.to_params(), 2);
        for m in ["pull_latency_ns", "pull_bytes_per_s", "push_latency_ns", "push_bytes_per_s", "commit_latency_ns"] {
            assert_eq!(out[m].len(), 2, "{m}");
            assert!(out[m].iter().all(|v| *v > 0.0), "{m}");
        }
        // The pushed tar carries every byte of the layer (plus headers).
        assert!(out["diff_tar_bytes"].iter().all(|v| *v >= p.layer_bytes as f64), "{:?}", out["diff_tar_bytes"]);
    }
    assert_eq!(s.driver().list().unwrap().len(), before, "every layer of the cell removed");
    assert_clean(&s);
}

#[test]
fn layers_overlay_push_carries_the_layer() {
    layers("overlay");
}

#[test]
fn layers_vfs_push_carries_the_layer() {
    layers("vfs");
}
