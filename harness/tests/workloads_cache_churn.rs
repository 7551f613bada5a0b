//! The sharedcache, churn, fragmentation and concurrent executors on overlay and vfs with tiny
//! parameters, through the same cell function the runner uses, with real containers: each runs,
//! gives samples of the right shape, and a property that must hold does.
//!
//! Each driver runs on a fresh root under /var/tmp (the conformance fixture): a driver that
//! cannot run here is skipped with its reason, unless COWBENCH_REQUIRE_DRIVERS lists it.

use cowbench::lab::HostLab;
use cowbench_workloads::lab::Lab;
use cowbench_drivers::sys::mounts;
use cowbench_workloads::churn::ChurnParams;
use cowbench_workloads::concurrent::{ConcurrentParams, Mode};
use cowbench_workloads::fragmentation::FragmentationParams;
use cowbench_workloads::sharedcache::SharedCacheParams;
use cowbench_workloads::{TypedParams, MIB};

mod common;
use common::Samples;

/// A lab as the runner opens one, with this file's seed.
fn session(driver: &str) -> Option<(cowbench_drivers::conformance::Fixture, HostLab)> {
    common::lab(driver, 7)
}

use common::run_cell;

/// Nothing of the containers left: no runtime state, no rootfs mount, no container layer.
fn assert_clean(s: &HostLab) {
    assert_eq!(s.runtime().list_ours().unwrap(), Vec::<String>::new(), "runtime state left");
    let ms = mounts::mounts_under(&s.config().root.join("containers")).unwrap();
    assert!(ms.is_empty(), "mounts left: {ms:?}");
    let left: Vec<_> = s.driver().list().unwrap().into_iter().filter(|l| l.key.starts_with("ctr-")).collect();
    assert!(left.is_empty(), "container layers left: {left:?}");
}

fn n(s: &Samples, k: &str) -> usize {
    s.get(k).map_or(0, Vec::len)
}

/// What two readers of one file must cost, in copies of the file.
enum Copies {
    /// One copy, shared (overlay: both read the one lower file).
    Shared,
    /// One per reader (vfs, btrfs: a file per container layer, each cached on its own).
    Private,
    /// At least the one copy the first reader caches (zfs-fuse: page cache per clone plus the ARC).
    AtLeastOne,
}

fn sharedcache(driver: &str, expect: Copies) {
    let Some((_fx, s)) = session(driver) else { return };
    let file = 16 * MIB;
    let p = SharedCacheParams { file_bytes: file, containers: 2 }.to_params();
    let (m, notes) = run_cell(&s, "sharedcache", &p, 1).unwrap();
    assert_eq!(n(&m, "read_latency_ns"), 2);
    assert_eq!(n(&m, "cgroup_page_cache_bytes"), 2);
    for k in [
        "page_cache_growth_bytes",
        "growth_per_reader_bytes",
        "growth_per_file_ratio",
        "cgroup_page_cache_total_bytes",
    ] {
        assert_eq!(n(&m, k), 1, "{k}");
    }
    let own_cache = s.driver().capabilities().own_read_cache;
    if own_cache {
        // The ARC was emptied before the repetition (zfs exports its pool), so its growth is
        // what the reads cached.
        assert!(notes["backend_cache_eviction"].starts_with("emptied"), "{}", notes["backend_cache_eviction"]);
        // Unless another process's cache drop forced a retry (the discarded attempt's reads
        // stay in the ARC) or the reads filled the ARC to its limit: then it is withheld,
        // and so is the total.
        let withheld = notes["arc_growth"].starts_with("withheld");
        assert_eq!(n(&m, "arc_growth_bytes"), usize::from(!withheld), "{}", notes["arc_growth"]);
        if withheld {
            eprintln!("sharedcache {driver}: {}", notes["arc_growth"]);
            assert!(notes["measurements_disturbed"] != "0" || notes["arc_growth"].contains("limit"), "{}", notes["arc_growth"]);
            assert_eq!(n(&m, "reader_memory_bytes"), 0);
            assert_clean(&s);
            return;
        }
    } else {
        assert_eq!(n(&m, "arc_growth_bytes"), 0, "no ARC outside zfs");
        assert!(notes["arc_source"].starts_with("not applicable"));
    }
    let backing = s.backing_file_cache();
    if let Some(b) = &backing {
        assert_eq!(n(&m, "backing_file_cache_growth_bytes"), 1);
        if b.loop_direct_io == Some(true) {
            // Direct IO: the store's blocks are not cached a second time in its backing file.
            let g = m["backing_file_cache_growth_bytes"][0];
            assert!(g < 0.1 * file as f64, "{driver}: direct-IO loop, yet {} cached {g} bytes more", b.path.display());
        }
    }
    assert_eq!(n(&m, "reader_memory_bytes"), 1);
    assert_eq!(n(&m, "reader_memory_copies_ratio"), 1);
    let cost = m["reader_memory_bytes"][0];
    eprintln!(
        "sharedcache {driver} N=2 file {file}: readers cost {cost} bytes (cgroups {} bytes), host page cache growth {} bytes, backing file {:?}",
        m["cgroup_page_cache_total_bytes"][0],
        m["page_cache_growth_bytes"][0],
        backing.map(|b| (b.path, b.loop_direct_io)),
    );
    // The first reader always caches the file.
    assert!(cost >= 0.9 * file as f64, "{driver}: the readers cost only {cost} bytes for a {file}-byte file");
    match expect {
        Copies::Private => assert!(cost >= 1.8 * file as f64 && cost < 2.5 * file as f64, "{driver}: two readers cost {cost} bytes of a {file}-byte file"),
        Copies::Shared => assert!(cost < 1.5 * file as f64, "{driver}: two readers cost {cost} bytes of a {file}-byte file"),
        Copies::AtLeastOne => {}
    }
    assert_clean(&s);
}

#[test]
fn sharedcache_overlay_shares_the_page_cache() {
    sharedcache("overlay", Copies::Shared);
}

#[test]
fn sharedcache_vfs_caches_one_copy_per_container() {
    sharedcache("vfs", Copies::Private);
}

#[test]
fn sharedcache_btrfs_counts_each_copy_once() {
    // Two copies, not three: the loop file's cache is not one of them.
    sharedcache("btrfs", Copies::Private);
}

#[test]
fn sharedcache_zfs_starts_from_an_empty_arc() {
    sharedcache("zfs", Copies::AtLeastOne);
}

fn churn(driver: &str) {
    let Some((_fx, s)) = session(driver) else { return };
    let write = MIB;
    let p = ChurnParams { cycles: 3, write_bytes: write, discard: None }.to_params();
    let (m, notes) = run_cell(&s, "churn", &p, 1).unwrap();
    assert_eq!(m["cycles_count"], vec![3.0]);
    assert_eq!(n(&m, "backend_used_bytes"), 3);
    assert_eq!(n(&m, "backing_allocated_bytes"), 3);
    assert_eq!(n(&m, "write_latency_ns"), 3);
    assert_eq!(n(&m, "backend_growth_bytes"), 1);
    assert!(m["backend_used_bytes"].iter().all(|v| *v > 0.0));
    assert_eq!(notes["backend_used_source"], "blocks under the driver root");
    // A directory backend deletes a removed layer's files: three cycles of 1 MiB leave less
    // than one cycle's data behind (metadata only).
    let growth = m["backend_growth_bytes"][0];
    assert!(growth < write as f64, "{driver}: {growth} bytes left after 3 create/write/destroy cycles");
    // No discard option on directory backends: those cells are skipped, with the reason.
    let on = ChurnParams { cycles: 1, write_bytes: write, discard: Some(true) }.to_params();
    let r = run_cell(&s, "churn", &on, 1).unwrap_err();
    assert!(r.contains("no discard option"), "{r}");
    assert_clean(&s);
}

#[test]
fn churn_overlay_records_every_cycle() {
    churn("overlay");
}

#[test]
fn churn_vfs_records_every_cycle() {
    churn("vfs");
}

fn fragmentation(driver: &str) {
    let Some((_fx, s)) = session(driver) else { return };
    let p = FragmentationParams { file_bytes: 8 * MIB, overwrite_percent: 25 };
    let (m, notes) = run_cell(&s, "fragmentation", &p.to_params(), 2).unwrap();
    for k in ["seq_read_before_bytes_per_s", "seq_read_after_bytes_per_s", "after_before_ratio", "overwrite_bytes_per_s"] {
        assert_eq!(n(&m, k), 2, "{k}");
        assert!(m[k].iter().all(|v| v.is_finite() && *v > 0.0), "{k}: {:?}", m[k]);
    }
    // The ratio is the two reads' quotient, per repetition.
    for i in 0..2 {
        let r = m["seq_read_after_bytes_per_s"][i] / m["seq_read_before_bytes_per_s"][i];
        assert!((r - m["after_before_ratio"][i]).abs() < 1e-9);
    }
    assert_eq!(notes["overwrites"], p.overwrites().to_string());
    // The file's layout from the host (FIEMAP through the container's root): a file that
    // exists has at least one run, before and after, and the growth is their quotient.
    assert_eq!(notes["extents_method"], "FIEMAP", "{notes:?}");
    for i in 0..2 {
        let (b, a) = (m["extents_before_count"][i], m["extents_after_count"][i]);
        assert!(b >= 1.0 && a >= 1.0, "{driver}: {b} runs before, {a} after");
        assert_eq!(m["extents_growth_ratio"][i], a / b);
    }
    eprintln!("fragmentation {driver}: {:?} ({}; extents {})", m["after_before_ratio"], notes["read_mode"], notes["extents"]);
    assert_clean(&s);
}

#[test]
fn fragmentation_overlay_reads_before_and_after() {
    fragmentation("overlay");
}

#[test]
fn fragmentation_vfs_reads_before_and_after() {
    fragmentation("vfs");
}

fn concurrent(driver: &str, mode: Mode) {
    let Some((_fx, s)) = session(driver) else { return };
    let p = ConcurrentParams { containers: 3, mode, data_bytes: 4 * MIB, ios: 20, interval_us: 0 };
    let (m, notes) = run_cell(&s, "concurrent", &p.to_params(), 1).unwrap();
    assert_eq!(n(&m, "completion_ns"), 3);
    assert_eq!(n(&m, "mean_io_latency_ns"), 3);
    assert_eq!(n(&m, "total_completion_ns"), 1);
    assert_eq!(n(&m, "aggregate_ios_per_s"), 1);
    // All containers' IO lies within the window from the first release to the last end.
    let total = m["total_completion_ns"][0];
    assert!(m["completion_ns"].iter().all(|c| *c > 0.0 && *c <= total), "{m:?}");
    // An IO's latency cannot exceed its container's completion time.
    for (lat, c) in m["mean_io_latency_ns"].iter().zip(&m["completion_ns"]) {
        assert!(*lat > 0.0 && *lat <= *c, "{lat} > {c}");
    }
    eprintln!("concurrent {driver} {mode:?}: total {total} ns ({})", notes["io"]);
    assert_clean(&s);
}

#[test]
fn concurrent_overlay_updates_and_file_reads() {
    concurrent("overlay", Mode::Update);
    concurrent("overlay", Mode::FileRead);
}

#[test]
fn concurrent_vfs_reads_and_file_updates() {
    concurrent("vfs", Mode::Read);
    concurrent("vfs", Mode::FileUpdate);
}
