//! The verdict engine on synthetic samples built to confirm, refute and be inconclusive for the
//! claims — so every rule can fail — and the not-measured reasons.

use cowbench::claims::{
    evaluate_claim, Backend, ClaimSet, ClaimVerdict, RunEvidence, VerdictKind, Why,
};
use cowbench::results::{Cell, CellStatus};
use serde_json::json;

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Deterministic jitter in [1 − amp, 1 + amp] (a tiny LCG: reproducible, no rand seed games).
struct Jitter(u64);
impl Jitter {
    fn next(&mut self, amp: f64) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + amp * (2.0 * u - 1.0)
    }
    fn samples(&mut self, center: f64, amp: f64, n: usize) -> Vec<f64> {
        (0..n).map(|_| center * self.next(amp)).collect()
    }
}

fn claims() -> ClaimSet {
    ClaimSet::builtin()
}

fn verdict(run: &RunEvidence, id: &str) -> ClaimVerdict {
    let set = claims();
    let c = set.claim(id).unwrap_or_else(|| panic!("claim {id} missing"));
    let v = evaluate_claim(c, run);
    eprintln!("{id}: {}", v.verdict.summary());
    v
}

/// copyup cells for one driver: latency = fixed + per_byte·size (with noise `amp`); the layer
/// gains the whole file (file-level CoW) or one 4 KiB block (block-level).
#[allow(clippy::too_many_arguments)]
fn copyup(run: &mut RunEvidence, driver: &str, fixed_ns: f64, per_byte_ns: f64, amp: f64, sizes: &[f64], seed: u64, whole_file: bool) {
    let mut j = Jitter(seed);
    for &s in sizes {
        let p = [("file_bytes", json!(s as u64)), ("depth", json!(1)), ("write_at", json!("start"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let lat = j.samples(fixed_ns + per_byte_ns * s, amp, 9);
        let usage = if whole_file { s + 8192.0 } else { 4096.0 };
        // The plain copy of a same-size file the workload records beside a copy-up: 1 ms + 1 ns/byte.
        let reference = j.samples(1e6 + s, amp, 9);
        let mut cell = Cell::new("copyup", driver, p)
            .with_metric("first_write_latency_ns", lat)
            .with_metric("reference_copy_latency_ns", reference)
            .with_metric("usage_delta_bytes", vec![usage; 7]);
        if driver == "devicemapper" {
            // The thin pool's own counter: one 64 KiB block, or the whole file. (The layer's
            // file-level usage counts the changed file whole either way.)
            let pool = if whole_file { s + 65536.0 } else { 65536.0 };
            cell = cell.with_metric("pool_data_used_delta_bytes", vec![pool; 7]).with_metric("usage_delta_bytes", vec![s; 7]);
        }
        run.cells.push(cell);
    }
}

const SIZES: [f64; 4] = [4.0 * KIB, MIB, 16.0 * MIB, 64.0 * MIB];

#[test]
fn claims_file_has_every_id_and_row() {
    let set = claims();
    let ids = [
        "overlay-copyup-whole-file", "aufs-copyup-size-depth", "aufs-deep-lookup", "dm-block-copyup",
        "dm-no-shared-cache", "btrfs-no-shared-cache", "zfs-shared-arc", "zfs-fragmentation",
        "dm-churn-overflow", "filelevel-density", "dm-io-intensive", "btrfs-not-dense", "zfs-dense",
        "near-bare-metal", "layer-sharing", "fast-start",
    ];
    assert_eq!(set.claims.len(), 16);
    for id in ids {
        assert!(set.claim(id).is_some(), "{id}");
    }
    let rows: Vec<&str> = set.rows.iter().map(|r| r.driver.as_str()).collect();
    assert_eq!(rows, ["aufs", "overlay", "devicemapper", "btrfs", "zfs"]);
    // Every claim's rules name a metric with its unit and a workload of the claim.
    for c in &set.claims {
        for r in &c.rules {
            assert!(c.workloads.contains(&r.workload), "{}: {}", c.id, r.workload);
        }
    }
}

/// The built-in claims file with one substitution.
fn claims_with(from: &str, to: &str) -> anyhow::Result<ClaimSet> {
    let text = cowbench::claims::DEFAULT_CLAIMS_TOML;
    assert!(text.contains(from), "claims.toml has no '{from}'");
    ClaimSet::parse(&text.replacen(from, to, 1))
}

#[test]
fn misspelt_names_fail_at_load() {
    let err = |from: &str, to: &str| format!("{:#}", claims_with(from, to).expect_err(to));
    // A metric: names the claim, the bad name and the metrics that exist.
    let e = err("metric = \"after_before_ratio\"", "metric = \"after_before_ratoi\"");
    assert!(e.contains("claim 'zfs-fragmentation'") && e.contains("'after_before_ratoi'") && e.contains("after_before_ratio"), "{e}");
    // A `where` on a parameter the workload does not have is no longer ignored.
    let e = err("where = { cache = \"cold\" }", "where = { cache = \"cold\", colour = \"blue\" }");
    assert!(e.contains("claim 'aufs-deep-lookup'") && e.contains("where") && e.contains("'colour'") && e.contains("depth (count)"), "{e}");
    // A value that is not one of the parameter's choices.
    let e = err("where = { cache = \"cold\" }", "where = { cache = \"cool\" }");
    assert!(e.contains("\"cool\"") && e.contains("cold|warm"), "{e}");
    // x, workloads, the reference workload and drivers.
    let e = err("x = \"overwrite_percent\"", "x = \"overwrite_pct\"");
    assert!(e.contains("x names unknown parameter 'overwrite_pct'"), "{e}");
    let e = err("workloads = [\"lookup\"]", "workloads = [\"lokup\"]");
    assert!(e.contains("unknown workload 'lokup'"), "{e}");
    let e = err("reference_workload = \"baremetal\"", "reference_workload = \"baremetl\"");
    assert!(e.contains("unknown workload 'baremetl'"), "{e}");
    let e = err("per_cycle_param = \"write_bytes\"", "per_cycle_param = \"write_byte\"");
    assert!(e.contains("per_cycle_param names unknown parameter 'write_byte'"), "{e}");
    let e = err("reference_driver = \"vfs\"", "reference_driver = \"vsf\"");
    assert!(e.contains("unknown driver 'vsf'"), "{e}");
    // Rank and before/after need a metric whose spec has a better direction.
    let neither = r#"
[[claim]]
id = "lookups-found"
statement = "s"
source = "t"
workloads = ["lookup"]
drivers = ["overlay"]
[[claim.rule]]
kind = "rank"
workload = "lookup"
metric = "found_count"
x = "depth"
expect = "best"
competitors = ["aufs"]
margin = 1.1
min_competitors = 1
"#;
    let e = format!("{:#}", ClaimSet::parse(&format!("row = []\n{neither}")).unwrap_err());
    assert!(e.contains("claim 'lookups-found'") && e.contains("'found_count'") && e.contains("neither"), "{e}");
    assert!(ClaimSet::parse(&format!("row = []\n{}", neither.replace("found_count", "lookup_latency_ns"))).is_ok());
    // The shipped file passes.
    claims_with("x = \"overwrite_percent\"", "x = \"overwrite_percent\"").unwrap();
}

#[test]
fn overlay_copyup_confirmed_refuted_inconclusive() {
    // Whole-file copy: 30 µs + 1 ns/byte (≈ 1 GB/s) → ×~2000 from 4 KiB to 64 MiB.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    copyup(&mut run, "overlay", 30e3, 1.0, 0.1, &SIZES, 1, true);
    let v = verdict(&run, "overlay-copyup-whole-file");
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed, "{}", v.verdict.summary());
    assert!(v.verdict.key.contains("from 4 KiB to 64 MiB"), "{}", v.verdict.key);

    // Block-level behaviour: constant 40 µs → refuted.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    copyup(&mut run, "overlay", 40e3, 0.0, 0.1, &SIZES, 2, false);
    assert_eq!(verdict(&run, "overlay-copyup-whole-file").verdict.kind, VerdictKind::Refuted);

    // A quarter of a copy's cost per byte: between the thresholds.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    copyup(&mut run, "overlay", 100e3, 0.25, 0.05, &SIZES, 3, true);
    let v = verdict(&run, "overlay-copyup-whole-file");
    assert_eq!(v.verdict.kind, VerdictKind::Inconclusive);
    // The whole file was copied (usage part confirmed); the time part is between thresholds.
    let rules = &v.drivers[0].rules;
    assert_eq!(rules[1].verdict.kind, VerdictKind::Confirmed);
    assert!(matches!(rules[0].verdict.why, Some(Why::BelowThreshold(_))), "{:?}", rules[0].verdict.why);

    // Large growth drowned in noise: samples spread ×50 around the centre → CIs overlap.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    let mut j = Jitter(9);
    for (i, &s) in SIZES.iter().enumerate() {
        let p = [("file_bytes", json!(s as u64)), ("depth", json!(1)), ("write_at", json!("start"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // Grows like a copy, but half the samples are ×20 off: the end points' intervals span everything.
        let center = 1e6 + s;
        let lat: Vec<f64> = (0..9).map(|k| center * if k % 2 == 0 { 0.05 } else { 1.0 } * j.next(0.05)).collect();
        let mut lat = lat;
        if i == 0 {
            lat.push(center * 80.0);
            lat.push(center * 90.0);
            lat.push(center * 95.0);
            lat.push(center * 99.0);
        }
        let reference = (0..9).map(|_| (1e6 + s) * j.next(0.05)).collect();
        run.cells.push(Cell::new("copyup", "overlay", p).with_metric("first_write_latency_ns", lat).with_metric("reference_copy_latency_ns", reference));
    }
    let v = verdict(&run, "overlay-copyup-whole-file");
    assert_eq!(v.verdict.kind, VerdictKind::Inconclusive, "{}", v.verdict.summary());
    let time = &v.drivers[0].rules[0];
    assert!(matches!(time.verdict.why, Some(Why::Noise(_))), "{:?}", time.verdict.why);
}

#[test]
fn dm_block_copyup_three_ways() {
    let mut run = RunEvidence::synthetic("t", &["devicemapper"], &["copyup"]);
    copyup(&mut run, "devicemapper", 120e3, 0.0, 0.2, &SIZES, 4, false);
    assert_eq!(verdict(&run, "dm-block-copyup").verdict.kind, VerdictKind::Confirmed);

    let mut run = RunEvidence::synthetic("t", &["devicemapper"], &["copyup"]);
    copyup(&mut run, "devicemapper", 30e3, 1.0, 0.1, &SIZES, 5, true);
    assert_eq!(verdict(&run, "dm-block-copyup").verdict.kind, VerdictKind::Refuted);

    // ×~8 growth: neither flat nor whole-file.
    let mut run = RunEvidence::synthetic("t", &["devicemapper"], &["copyup"]);
    copyup(&mut run, "devicemapper", 100e3, 700e3 / (64.0 * MIB), 0.05, &SIZES, 6, false);
    assert_eq!(verdict(&run, "dm-block-copyup").verdict.kind, VerdictKind::Inconclusive);
}

/// sharedcache cells: cache growth for N readers of a 256 MiB file = copies(N) × 256 MiB.
fn sharedcache(run: &mut RunEvidence, driver: &str, metric: &str, copies: impl Fn(f64) -> f64, amp: f64, seed: u64) {
    let mut j = Jitter(seed);
    for n in [1.0, 2.0, 4.0, 8.0, 16.0] {
        let p = [("containers".to_string(), json!(n as u64))].into_iter().collect();
        run.cells.push(Cell::new("sharedcache", driver, p).with_metric(metric, j.samples(copies(n) * 256.0 * MIB, amp, 7)));
    }
}

#[test]
fn page_cache_n_times_rule() {
    let id = "btrfs-no-shared-cache";
    let mut run = RunEvidence::synthetic("t", &["btrfs"], &["sharedcache"]);
    sharedcache(&mut run, "btrfs", "reader_memory_bytes", |n| n, 0.05, 7);
    let v = verdict(&run, id);
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed);
    assert!(v.verdict.key.contains("private"), "{}", v.verdict.key);

    let mut run = RunEvidence::synthetic("t", &["btrfs"], &["sharedcache"]);
    sharedcache(&mut run, "btrfs", "reader_memory_bytes", |n| 1.0 + 0.02 * (n - 1.0), 0.05, 8);
    assert_eq!(verdict(&run, id).verdict.kind, VerdictKind::Refuted);

    let mut run = RunEvidence::synthetic("t", &["btrfs"], &["sharedcache"]);
    sharedcache(&mut run, "btrfs", "reader_memory_bytes", |n| 1.0 + 0.5 * (n - 1.0), 0.05, 9);
    assert_eq!(verdict(&run, id).verdict.kind, VerdictKind::Inconclusive);

    // The ARC claim expects the opposite: one shared copy.
    let mut run = RunEvidence::synthetic("t", &["zfs"], &["sharedcache"]);
    sharedcache(&mut run, "zfs", "reader_memory_bytes", |_| 1.0, 0.05, 10);
    assert_eq!(verdict(&run, "zfs-shared-arc").verdict.kind, VerdictKind::Confirmed);
    let mut run = RunEvidence::synthetic("t", &["zfs"], &["sharedcache"]);
    sharedcache(&mut run, "zfs", "reader_memory_bytes", |n| n, 0.05, 11);
    assert_eq!(verdict(&run, "zfs-shared-arc").verdict.kind, VerdictKind::Refuted);
}

/// density cells at N = 1, 16, 256: per container ready latency around `ready_ns` and memory
/// around `memory`; every round reaches its N.
fn density(run: &mut RunEvidence, driver: &str, ready_ns: f64, memory: f64, amp: f64, seed: u64) {
    density_to(run, driver, ready_ns, memory, amp, seed, &[1, 16, 256]);
}

fn density_to(run: &mut RunEvidence, driver: &str, ready_ns: f64, memory: f64, amp: f64, seed: u64, ns: &[u64]) {
    let mut j = Jitter(seed);
    for &n in ns {
        let p = [("containers".to_string(), json!(n)), ("memory_budget_bytes".to_string(), json!(2u64 << 30))].into_iter().collect();
        let k = (n as usize).max(16);
        run.cells.push(
            Cell::new("density", driver, p)
                .with_metric("ready_latency_ns", j.samples(ready_ns, amp, k))
                .with_metric("memory_per_container_bytes", j.samples(memory, amp, k))
                .with_metric("containers_started_count", vec![n as f64])
                .with_metric("disk_per_container_bytes", j.samples(if driver == "vfs" { 80.0 * MIB } else { 24.0 * KIB }, 0.1, 10)),
        );
    }
}

#[test]
fn fast_start_threshold_and_hundreds() {
    let only = |ns: f64, amp: f64| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["density"]);
        density(&mut run, "overlay", ns, 400.0 * KIB, amp, 12);
        // The claim names five drivers; here only overlay is part of the run.
        verdict(&run, "fast-start")
    };
    let v = only(0.3e9, 0.2);
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed, "{}", v.verdict.summary());
    // "Hundreds per host" is required: 256 containers started and held.
    let part = &v.drivers[0].rules[1];
    assert_eq!(part.verdict.kind, VerdictKind::Confirmed, "{}", part.verdict.summary());
    assert!(v.drivers.iter().filter(|d| d.driver != "overlay").all(|d| d.verdict.kind == VerdictKind::NotMeasured));
    assert_eq!(only(5e9, 0.2).verdict.kind, VerdictKind::Refuted);
    let v = only(2.2e9, 0.05);
    assert_eq!(v.verdict.kind, VerdictKind::Inconclusive);
    assert!(matches!(v.drivers[0].rules[0].verdict.why, Some(Why::BelowThreshold(_))), "{:?}", v.verdict.why);

    // A host limit stopped the N = 256 cell at 200 containers: the cell is a result (ok), and
    // the capacity part is refuted on what it reached.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["density"]);
    density(&mut run, "overlay", 0.3e9, 400.0 * KIB, 0.1, 13);
    let big = run.cells.iter_mut().find(|c| c.param_f64("containers") == Some(256.0)).unwrap();
    big.metrics.get_mut("containers_started_count").unwrap().samples = vec![200.0];
    let v = verdict(&run, "fast-start");
    let part = &v.drivers[0].rules[1];
    assert_eq!(part.verdict.kind, VerdictKind::Refuted, "{}", part.verdict.summary());
    assert!(part.verdict.key.contains("stopped short"), "{}", part.verdict.key);
    assert_eq!(v.verdict.kind, VerdictKind::Refuted);

    // A sweep that stops at 16 (no limit hit): the required part is not measured, so the claim
    // is not confirmed.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["density"]);
    density_to(&mut run, "overlay", 0.3e9, 400.0 * KIB, 0.1, 14, &[1, 16]);
    let v = verdict(&run, "fast-start");
    let part = &v.drivers[0].rules[1];
    assert_eq!(part.verdict.kind, VerdictKind::NotMeasured);
    assert!(matches!(part.verdict.why, Some(Why::ParameterNotInProfile(_))));
    assert_ne!(v.verdict.kind, VerdictKind::Confirmed);
}

#[test]
fn density_ranks_on_memory_per_container() {
    let field = |overlay: f64, aufs: f64, amp: f64| {
        let mut run = RunEvidence::synthetic("t", &["overlay", "aufs", "btrfs", "zfs", "vfs"], &["density"]);
        // Start latencies the other way round: they must not decide.
        density(&mut run, "overlay", 0.9e9, overlay, amp, 20);
        density(&mut run, "aufs", 0.9e9, aufs, amp, 21);
        density(&mut run, "btrfs", 0.1e9, 2.0 * MIB, amp, 22);
        density(&mut run, "zfs", 0.1e9, 3.0 * MIB, amp, 23);
        // vfs (memory without its copies) is no competitor.
        density(&mut run, "vfs", 0.1e9, 100.0 * KIB, amp, 24);
        verdict(&run, "filelevel-density")
    };
    // overlay clearly leanest (aufs heavier than btrfs): "any" of the two suffices.
    let v = field(400.0 * KIB, 5.0 * MIB, 0.05);
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed, "{}", v.verdict.summary());
    assert!(v.verdict.key.contains("containers=256"), "{}", v.verdict.key);
    // Both file-level drivers clearly heavier than btrfs.
    assert_eq!(field(4.0 * MIB, 5.0 * MIB, 0.05).verdict.kind, VerdictKind::Refuted);
    // Within noise of btrfs.
    let v = field(1.95 * MIB, 2.05 * MIB, 0.3);
    assert_eq!(v.verdict.kind, VerdictKind::Inconclusive, "{}", v.verdict.summary());

    // btrfs-not-dense and zfs-dense use the same samples with other expectations: memory per
    // container of (overlay, aufs, btrfs, zfs) → (btrfs-not-dense, zfs-dense).
    let cases = [
        ([400.0 * KIB, 800.0 * KIB, 3.0 * MIB, 500.0 * KIB], (VerdictKind::Confirmed, VerdictKind::Confirmed)),
        // zfs the heaviest, btrfs the leanest: both refuted.
        ([400.0 * KIB, 800.0 * KIB, 300.0 * KIB, 6.0 * MIB], (VerdictKind::Refuted, VerdictKind::Refuted)),
    ];
    for (k, (mem, want)) in cases.into_iter().enumerate() {
        let drivers = ["overlay", "aufs", "btrfs", "zfs"];
        let mut run = RunEvidence::synthetic("t", &drivers, &["density"]);
        for (i, (d, m)) in drivers.iter().zip(mem).enumerate() {
            density(&mut run, d, 0.1e9, m, 0.05, 30 + 4 * k as u64 + i as u64);
        }
        assert_eq!((verdict(&run, "btrfs-not-dense").verdict.kind, verdict(&run, "zfs-dense").verdict.kind), want, "{mem:?}");
    }
}

#[test]
fn not_measured_says_why() {
    // Backend unavailable: the probe's reason is carried.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    run.backends.insert(
        "devicemapper".into(),
        Backend { available: false, reason: Some("no dm-thin-pool in this kernel".into()), ..Default::default() },
    );
    copyup(&mut run, "overlay", 30e3, 1.0, 0.1, &SIZES, 40, true);
    let v = verdict(&run, "dm-block-copyup");
    assert_eq!(v.verdict.kind, VerdictKind::NotMeasured);
    match &v.verdict.why {
        Some(Why::BackendUnavailable(r)) => assert!(r.contains("dm-thin-pool"), "{r}"),
        o => panic!("{o:?}"),
    }
    // Workload not run.
    let v = verdict(&run, "zfs-fragmentation");
    assert_eq!(v.verdict.kind, VerdictKind::NotMeasured);
    let v = verdict(&run, "aufs-deep-lookup");
    assert!(matches!(v.verdict.why, Some(Why::DriverNotRun(_)) | Some(Why::WorkloadNotRun(_))), "{:?}", v.verdict.why);
    let mut run2 = RunEvidence::synthetic("t", &["aufs"], &["copyup"]);
    copyup(&mut run2, "aufs", 30e3, 1.0, 0.1, &SIZES, 41, true);
    let v = verdict(&run2, "aufs-deep-lookup");
    assert!(matches!(v.verdict.why, Some(Why::WorkloadNotRun(_))), "{:?}", v.verdict.why);

    // Parameter not in this profile: a single file size.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    copyup(&mut run, "overlay", 30e3, 1.0, 0.1, &[4.0 * KIB], 42, true);
    let v = verdict(&run, "overlay-copyup-whole-file");
    assert_eq!(v.verdict.kind, VerdictKind::NotMeasured);
    assert!(matches!(v.verdict.why, Some(Why::ParameterNotInProfile(_))));

    // Failed cells carry their reason.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    copyup(&mut run, "overlay", 30e3, 1.0, 0.1, &SIZES, 43, true);
    for c in &mut run.cells {
        c.status = CellStatus::Failed;
        c.reason = Some("runc create: EPERM".into());
    }
    let v = verdict(&run, "overlay-copyup-whole-file");
    match &v.verdict.why {
        Some(Why::CellsFailed(r)) => assert!(r.contains("EPERM")),
        o => panic!("{o:?}"),
    }
}

#[test]
fn aufs_depth_part_and_stand_in_mark() {
    // Size sweep present, depth sweep absent (quick profile): the claim stays open, and the
    // unionfs-fuse implementation is marked.
    let mut run = RunEvidence::synthetic("t", &["aufs"], &["copyup"]);
    copyup(&mut run, "aufs", 200e3, 2.0, 0.1, &SIZES, 50, true);
    for c in &mut run.cells {
        c.implementation = Some("aufs (unionfs-fuse stand-in)".into());
        c.loop_backed = true;
    }
    let v = verdict(&run, "aufs-copyup-size-depth");
    assert_eq!(v.verdict.kind, VerdictKind::Inconclusive, "{}", v.verdict.summary());
    assert!(v.verdict.marks.stand_in.iter().any(|s| s.contains("unionfs-fuse")));
    assert!(v.verdict.marks.loop_backed);
    assert_eq!(v.drivers[0].rules[0].verdict.kind, VerdictKind::Confirmed);
    assert_eq!(v.drivers[0].rules[1].verdict.kind, VerdictKind::NotMeasured);

    // With a depth sweep where deeper is slower, both parts confirm.
    let mut j = Jitter(51);
    for depth in [1u64, 8, 32] {
        let p = [("file_bytes", json!(64 * 1024 * 1024)), ("depth", json!(depth)), ("write_at", json!("start"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let lat = j.samples(140e6 * (1.0 + 0.05 * depth as f64), 0.03, 9);
        run.cells.push(Cell::new("copyup", "aufs", p).with_metric("first_write_latency_ns", lat));
    }
    assert_eq!(verdict(&run, "aufs-copyup-size-depth").verdict.kind, VerdictKind::Confirmed);
}

#[test]
fn other_rule_kinds() {
    // Fragmentation is a comparison: zfs against the other backends of the same run, on the
    // file's extents after the overwrites and on the read slowdown. zfs worst on both: confirmed; btrfs
    // clearly worse than zfs on one: refuted; all alike: inconclusive.
    let frag = |zfs: (f64, f64), btrfs: (f64, f64), seed: u64| {
        let mut run = RunEvidence::synthetic("t", &["zfs", "btrfs", "overlay"], &["fragmentation"]);
        let mut j = Jitter(seed);
        for (d, (growth, ratio)) in [("zfs", zfs), ("btrfs", btrfs), ("overlay", (1.0, 1.0))] {
            let p = [("file_bytes", json!(256 * 1024 * 1024)), ("overwrite_percent", json!(25))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            run.cells.push(
                Cell::new("fragmentation", d, p)
                    .with_metric("extents_after_count", j.samples(growth, 0.02, 7))
                    .with_metric("after_before_ratio", j.samples(ratio, 0.02, 7)),
            );
        }
        verdict(&run, "zfs-fragmentation").verdict.kind
    };
    assert_eq!(frag((400.0, 0.4), (20.0, 0.8), 60), VerdictKind::Confirmed);
    assert_eq!(frag((20.0, 0.4), (400.0, 0.8), 60), VerdictKind::Refuted);
    assert_eq!(frag((1.0, 1.0), (1.0, 1.0), 60), VerdictKind::Inconclusive);

    // Churn: the loop data file under the pool, one cell holding the series of 30 cycles of
    // 4 MiB: 110% of each cycle's writes stay allocated / nothing stays.
    for (leak, want) in [(1.1, VerdictKind::Confirmed), (0.0, VerdictKind::Refuted)] {
        let mut run = RunEvidence::synthetic("t", &["devicemapper"], &["churn"]);
        let mut j = Jitter(61);
        let p = [("cycles", json!(30)), ("write_bytes", json!(4 * 1024 * 1024)), ("discard", json!(false))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let series = (1..=30u64).map(|k| 237.0 * MIB + leak * 4.0 * MIB * k as f64 + 0.2 * MIB * (j.next(1.0) - 1.0)).collect();
        run.cells.push(Cell::new("churn", "devicemapper", p).with_metric("backing_allocated_bytes", series));
        assert_eq!(verdict(&run, "dm-churn-overflow").verdict.kind, want, "leak {leak}");
    }

    // Layer sharing: CoW drivers use a few KiB per container, vfs a full image copy.
    let mut run = RunEvidence::synthetic("t", &["overlay", "vfs"], &["density"]);
    density(&mut run, "overlay", 0.2e9, 400.0 * KIB, 0.1, 62);
    density(&mut run, "vfs", 0.5e9, 100.0 * KIB, 0.1, 63);
    assert_eq!(verdict(&run, "layer-sharing").verdict.kind, VerdictKind::Confirmed);

    // Near bare metal: 95% of host-direct throughput / 30%.
    for (frac, want) in [(0.95, VerdictKind::Confirmed), (0.3, VerdictKind::Refuted)] {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["seqio", "baremetal"]);
        let mut j = Jitter(64);
        let p: cowbench_workloads::Params = [("file_bytes".to_string(), json!(256 * 1024 * 1024))].into_iter().collect();
        run.cells.push(Cell::new("seqio", "overlay", p.clone()).with_metric("read_bytes_per_s", j.samples(frac * 500.0 * MIB, 0.03, 7)));
        run.cells.push(Cell::new("baremetal", "overlay", p).with_metric("read_bytes_per_s", j.samples(500.0 * MIB, 0.03, 7)));
        assert_eq!(verdict(&run, "near-bare-metal").verdict.kind, want);
    }
}

#[test]
fn vm_and_loop_marks_travel_with_the_verdict() {
    let mut run = RunEvidence::synthetic("vm", &["overlay"], &["copyup"]);
    run.environment = "vm-tcg".into();
    copyup(&mut run, "overlay", 30e3, 1.0, 0.1, &SIZES, 70, true);
    let v = verdict(&run, "overlay-copyup-whole-file");
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed);
    assert!(v.verdict.marks.vm && !v.verdict.marks.loop_backed && v.verdict.marks.stand_in.is_empty());
    assert!(v.verdict.summary().contains("[VM]"), "{}", v.verdict.summary());
    // Loop-backed storage of the backend marks every verdict drawn from it.
    run.backends.get_mut("overlay").unwrap().loop_backed = true;
    assert!(verdict(&run, "overlay-copyup-whole-file").verdict.marks.loop_backed);
}

// ---------------------------------------------------------------------------------------------
// Every rule kind on its own: confirmed, refuted, inconclusive (too few samples; effect below
// threshold where the kind has one) and invalid, each from synthetic samples.
// ---------------------------------------------------------------------------------------------

use cowbench::claims::Verdict;

/// A claims file with one claim `t` about `drivers`, decided by one rule (`rule`: the body of
/// its `[[claim.rule]]` table).
fn one_rule(drivers: &[&str], rule: &str) -> ClaimSet {
    let ds = drivers.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
    let text = format!(
        "row = []\n[[claim]]\nid = \"t\"\nstatement = \"s\"\nsource = \"test\"\nworkloads = []\ndrivers = [{ds}]\n[[claim.rule]]\n{rule}\n"
    );
    ClaimSet::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

fn decide(set: &ClaimSet, run: &RunEvidence) -> Verdict {
    let v = evaluate_claim(&set.claims[0], run);
    eprintln!("{}", v.verdict.summary());
    v.verdict
}

fn params(kv: &[(&str, serde_json::Value)]) -> cowbench_workloads::Params {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Cells of `workload` on `driver`, one per x value, `n` samples of `metric` around `y(x)`.
#[allow(clippy::too_many_arguments)]
fn sweep(run: &mut RunEvidence, workload: &str, driver: &str, x: &str, metric: &str, xs: &[f64], y: impl Fn(f64) -> f64, n: usize, seed: u64) {
    let mut j = Jitter(seed);
    for &xv in xs {
        let cell = Cell::new(workload, driver, params(&[(x, json!(xv as u64))])).with_metric(metric, j.samples(y(xv), 0.02, n));
        run.cells.push(cell);
    }
}

/// Which of the outcomes a verdict is.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Got {
    Confirmed,
    Refuted,
    TooFew,
    Below,
    Noise,
    Invalid,
    NotMeasured,
}

fn got(v: &Verdict) -> Got {
    match (v.kind, &v.why) {
        (VerdictKind::Confirmed, _) => Got::Confirmed,
        (VerdictKind::Refuted, _) => Got::Refuted,
        (VerdictKind::Invalid, Some(Why::InvalidMeasurement(_))) => Got::Invalid,
        (VerdictKind::Inconclusive, Some(Why::TooFewSamples(_))) => Got::TooFew,
        (VerdictKind::Inconclusive, Some(Why::BelowThreshold(_))) => Got::Below,
        (VerdictKind::Inconclusive, Some(Why::Noise(_))) => Got::Noise,
        (VerdictKind::NotMeasured, _) => Got::NotMeasured,
        o => panic!("unexpected verdict {o:?}: {}", v.summary()),
    }
}

const COPYUP_SIZES: [f64; 3] = [4096.0, MIB, 64.0 * MIB];

#[test]
fn growth_four_ways() {
    let rule = |extra: &str| {
        one_rule(&["overlay"], &format!(
            "kind = \"growth\"\nworkload = \"copyup\"\nmetric = \"first_write_latency_ns\"\nx = \"file_bytes\"\nmin_ratio = 10.0\nmin_slope = 0.5\nrefute_max_ratio = 2.0\nfit = \"all\"\nmin_span = 100.0\n{extra}"
        ))
    };
    let case = |set: &ClaimSet, y: &dyn Fn(f64) -> f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
        sweep(&mut run, "copyup", "overlay", "file_bytes", "first_write_latency_ns", &COPYUP_SIZES, y, n, 80);
        got(&decide(set, &run))
    };
    let plain = rule("");
    assert_eq!(case(&plain, &|x| x, 7), Got::Confirmed);
    assert_eq!(case(&plain, &|_| 1e5, 7), Got::Refuted);
    assert_eq!(case(&plain, &|x| 1e5 * (1.0 + 4.0 * x / (64.0 * MIB)), 7), Got::Below);
    // The same proportional growth from five samples: not a 95% interval, no verdict.
    assert_eq!(case(&plain, &|x| x, 5), Got::TooFew);
    // Growing ×16384 where at most ×1000 is possible: an invalid measurement, even from few samples.
    assert_eq!(case(&rule("valid_max = 1000.0"), &|x| x, 3), Got::Invalid);
}

#[test]
fn flat_four_ways() {
    let rule = |extra: &str| {
        one_rule(&["btrfs"], &format!(
            "kind = \"flat\"\nworkload = \"copyup\"\nmetric = \"first_write_latency_ns\"\nx = \"file_bytes\"\nmax_ratio = 1.5\nmax_abs_slope = 0.1\nrefute_min_ratio = 4.0\nrefute_min_slope = 0.3\nmin_span = 100.0\n{extra}"
        ))
    };
    let case = |set: &ClaimSet, y: &dyn Fn(f64) -> f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["btrfs"], &["copyup"]);
        sweep(&mut run, "copyup", "btrfs", "file_bytes", "first_write_latency_ns", &COPYUP_SIZES, y, n, 81);
        got(&decide(set, &run))
    };
    let plain = rule("");
    assert_eq!(case(&plain, &|_| 1e5, 7), Got::Confirmed);
    assert_eq!(case(&plain, &|x| x, 7), Got::Refuted);
    assert_eq!(case(&plain, &|x| 1e5 * (1.0 + 1.5 * x / (64.0 * MIB)), 7), Got::Below);
    assert_eq!(case(&plain, &|_| 1e5, 2), Got::TooFew);
    assert_eq!(case(&rule("valid_min = 2.0"), &|_| 1e5, 7), Got::Invalid);
}

#[test]
fn scaling_with_n_four_ways_and_fewer_than_one_copy_is_invalid() {
    let set = one_rule(&["btrfs"], "kind = \"scaling_with_n\"\nworkload = \"sharedcache\"\nmetric = \"cgroup_page_cache_total_bytes\"\nx = \"containers\"\nexpect = \"private\"\nconfirm_fraction = 0.7\nrefute_fraction = 0.3\nmin_span = 4.0");
    let case = |copies: f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["btrfs"], &["sharedcache"]);
        sweep(&mut run, "sharedcache", "btrfs", "containers", "cgroup_page_cache_total_bytes", &[1.0, 4.0], |x| if x > 1.0 { copies * 64.0 * MIB } else { 64.0 * MIB }, n, 82);
        decide(&set, &run)
    };
    assert_eq!(got(&case(4.0, 7)), Got::Confirmed);
    assert_eq!(got(&case(1.0, 7)), Got::Refuted);
    assert_eq!(got(&case(2.5, 7)), Got::Below);
    assert_eq!(got(&case(4.0, 1)), Got::TooFew);
    // Four readers holding 0.4 of one copy: no valid_min in the file, the implicit c ≥ 1 holds.
    let v = case(0.4, 7);
    assert_eq!(got(&v), Got::Invalid);
    assert!(v.summary().starts_with("invalid: "), "{}", v.summary());
    assert!(v.summary().contains("below the possible minimum 1"), "{}", v.summary());
}

#[test]
fn ratio_to_reference_four_ways_and_faster_than_bare_metal_is_invalid() {
    let rule = "kind = \"ratio_to_reference\"\nworkload = \"seqio\"\nmetric = \"read_bytes_per_s\"\nreference_workload = \"baremetal\"\nconfirm_min = 0.8\nconfirm_max = 1.25\nrefute_below = 0.5\nvalid_max = 1.5\ninvalid_reason = \"faster than bare metal: cache artefact, excluded\"";
    let set = one_rule(&["overlay"], rule);
    let case = |frac: f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["seqio", "baremetal"]);
        let mut j = Jitter(83);
        let p = params(&[("file_bytes", json!(256u64 << 20))]);
        run.cells.push(Cell::new("seqio", "overlay", p.clone()).with_metric("read_bytes_per_s", j.samples(frac * 500.0 * MIB, 0.03, n)));
        run.cells.push(Cell::new("baremetal", "overlay", p).with_metric("read_bytes_per_s", j.samples(500.0 * MIB, 0.03, n)));
        decide(&set, &run)
    };
    assert_eq!(got(&case(1.0, 7)), Got::Confirmed);
    assert_eq!(got(&case(0.3, 7)), Got::Refuted);
    assert_eq!(got(&case(0.65, 7)), Got::Below);
    let few = case(1.0, 2);
    assert_eq!(got(&few), Got::TooFew);
    assert!(few.summary().contains("too few samples (n=2, needs ≥ 6)"), "{}", few.summary());
    let fast = case(3.13, 2);
    assert_eq!(got(&fast), Got::Invalid, "×3.13 of bare metal is a cache artefact, not a refutation");
    assert!(fast.summary().contains("faster than bare metal: cache artefact, excluded"), "{}", fast.summary());
    assert!(fast.summary().contains("range of 2 samples, 50% coverage"), "{}", fast.summary());
    assert!(!fast.summary().contains("95%"), "{}", fast.summary());
}

#[test]
fn rank_confirmed_refuted_noise_too_few_invalid() {
    let rule = |extra: &str| {
        one_rule(&["overlay"], &format!(
            "kind = \"rank\"\nworkload = \"density\"\nmetric = \"start_latency_ns\"\nx = \"containers\"\nexpect = \"best\"\ncompetitors = [\"overlay\", \"btrfs\"]\nmargin = 1.1\nmin_competitors = 1\n{extra}"
        ))
    };
    let case = |set: &ClaimSet, mine: f64, theirs: f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["overlay", "btrfs"], &["density"]);
        sweep(&mut run, "density", "overlay", "containers", "start_latency_ns", &[16.0], |_| mine, n, 84);
        sweep(&mut run, "density", "btrfs", "containers", "start_latency_ns", &[16.0], |_| theirs, n, 85);
        got(&decide(set, &run))
    };
    let plain = rule("");
    assert_eq!(case(&plain, 0.1e9, 0.3e9, 7), Got::Confirmed);
    assert_eq!(case(&plain, 0.3e9, 0.1e9, 7), Got::Refuted);
    // "best" has no position between its confirm and refute counts: what is left is noise.
    assert_eq!(case(&plain, 0.1e9, 0.102e9, 7), Got::Noise);
    assert_eq!(case(&plain, 0.1e9, 0.3e9, 4), Got::TooFew);
    assert_eq!(case(&rule("valid_max = 1e9"), 0.1e9, 5e9, 7), Got::Invalid);
}

#[test]
fn threshold_four_ways() {
    let rule = |extra: &str| {
        one_rule(&["overlay"], &format!(
            "kind = \"threshold\"\nworkload = \"density\"\nmetric = \"start_latency_ns\"\nx = \"containers\"\nat = \"max\"\nstat = \"median\"\nconfirm_max = 1e9\nrefute_min = 3e9\n{extra}"
        ))
    };
    let case = |set: &ClaimSet, ns: f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["density"]);
        sweep(&mut run, "density", "overlay", "containers", "start_latency_ns", &[1.0, 16.0], |_| ns, n, 86);
        decide(set, &run)
    };
    let plain = rule("");
    let v = case(&plain, 0.5e9, 7);
    assert_eq!(got(&v), Got::Confirmed);
    assert!(v.key.contains("95% CI") && v.key.contains("n=7"), "{}", v.key);
    assert_eq!(got(&case(&plain, 5e9, 7)), Got::Refuted);
    assert_eq!(got(&case(&plain, 2e9, 7)), Got::Below);
    let few = case(&plain, 0.5e9, 3);
    assert_eq!(got(&few), Got::TooFew);
    assert!(!few.key.contains("95% CI") && few.key.contains("range of 3 samples, 75% coverage"), "{}", few.key);
    // Starting a container in 10 µs is not possible: the probe did not measure a start.
    assert_eq!(got(&case(&rule("valid_min = 1e6"), 1e4, 7)), Got::Invalid);
}

#[test]
fn capacity_confirmed_refuted_invalid() {
    // Success or failure of cells decides: no interval, so never "too few samples" and no band
    // between confirm and refute (a sweep that stops short is not measured).
    let rule = |extra: &str| {
        one_rule(&["overlay"], &format!("kind = \"capacity\"\nworkload = \"density\"\nmetric = \"start_latency_ns\"\nx = \"containers\"\nmin = 256.0\n{extra}"))
    };
    let case = |set: &ClaimSet, ok: &[f64], failed: &[f64]| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["density"]);
        sweep(&mut run, "density", "overlay", "containers", "start_latency_ns", ok, |_| 0.2e9, 2, 87);
        for &f in failed {
            let mut c = Cell::new("density", "overlay", params(&[("containers", json!(f as u64))]));
            c.status = CellStatus::Failed;
            c.reason = Some("out of memory".into());
            run.cells.push(c);
        }
        got(&decide(set, &run))
    };
    let plain = rule("");
    assert_eq!(case(&plain, &[16.0, 256.0], &[]), Got::Confirmed);
    assert_eq!(case(&plain, &[16.0], &[64.0]), Got::Refuted);
    assert_eq!(case(&plain, &[16.0, 64.0], &[]), Got::NotMeasured);
    assert_eq!(case(&rule("valid_max = 100000.0"), &[16.0, 1_000_000.0], &[]), Got::Invalid);
}

#[test]
fn before_after_four_ways() {
    let rule = |extra: &str| {
        one_rule(&["overlay"], &format!(
            "kind = \"before_after\"\nworkload = \"density\"\nmetric = \"start_latency_ns\"\nparam = \"containers\"\nbefore = 1\nafter = 16\nconfirm_max_ratio = 0.8\nrefute_min_ratio = 0.95\n{extra}"
        ))
    };
    // Start latency is lower-is-better: after/before as a degradation ratio is before/after.
    let case = |set: &ClaimSet, slower: f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["density"]);
        sweep(&mut run, "density", "overlay", "containers", "start_latency_ns", &[1.0, 16.0], |x| if x > 1.0 { slower * 0.1e9 } else { 0.1e9 }, n, 88);
        got(&decide(set, &run))
    };
    let plain = rule("");
    assert_eq!(case(&plain, 2.0, 7), Got::Confirmed);
    assert_eq!(case(&plain, 1.0, 7), Got::Refuted);
    assert_eq!(case(&plain, 1.15, 7), Got::Below);
    assert_eq!(case(&plain, 2.0, 5), Got::TooFew);
    assert_eq!(case(&rule("valid_min = 0.1"), 20.0, 7), Got::Invalid);
}

#[test]
fn growth_over_cycles_four_ways() {
    let rule = |extra: &str| {
        one_rule(&["devicemapper"], &format!(
            "kind = \"growth_over_cycles\"\nworkload = \"churn\"\nmetric = \"backend_used_bytes\"\nx = \"cycle\"\nper_cycle_param = \"write_bytes\"\nconfirm_min_fraction = 0.5\nrefute_max_fraction = 0.1\nmin_points = 2\n{extra}"
        ))
    };
    // One cell holding the series: sample i is the allocation after cycle i+1.
    let case = |set: &ClaimSet, kept: f64, cycles: usize| {
        let mut run = RunEvidence::synthetic("t", &["devicemapper"], &["churn"]);
        let mut j = Jitter(89);
        let series: Vec<f64> = (1..=cycles).map(|k| 100.0 * MIB + kept * 4.0 * MIB * k as f64 + 0.05 * MIB * (j.next(1.0) - 1.0)).collect();
        let cell = Cell::new("churn", "devicemapper", params(&[("write_bytes", json!(4u64 << 20)), ("cycles", json!(cycles as u64))]))
            .with_metric("backend_used_bytes", series);
        run.cells.push(cell);
        got(&decide(set, &run))
    };
    let plain = rule("");
    assert_eq!(case(&plain, 1.0, 10), Got::Confirmed);
    assert_eq!(case(&plain, 0.0, 10), Got::Refuted);
    assert_eq!(case(&plain, 0.3, 10), Got::Below);
    // Two points draw a line but give no interval of its slope.
    assert_eq!(case(&plain, 1.0, 2), Got::TooFew);
    // Keeping twice what was written: the counter is not the allocation it claims to be.
    assert_eq!(case(&rule("valid_max = 1.0"), 2.0, 10), Got::Invalid);
}

#[test]
fn marginal_cost_four_ways() {
    let rule = |extra: &str| {
        one_rule(&["overlay"], &format!(
            "kind = \"marginal_cost\"\nworkload = \"copyup\"\nmetric = \"first_write_latency_ns\"\nreference_metric = \"write_latency_ns\"\nx = \"file_bytes\"\nconfirm_min_ratio = 0.5\nrefute_max_ratio = 0.1\nmin_span = 100.0\n{extra}"
        ))
    };
    // metric = fixed + per_byte·size; the reference costs 1 ns per byte over its own fixed cost.
    let case = |set: &ClaimSet, per_byte: f64, n: usize| {
        let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
        let mut j = Jitter(90);
        for s in COPYUP_SIZES {
            let c = Cell::new("copyup", "overlay", params(&[("file_bytes", json!(s as u64))]))
                .with_metric("first_write_latency_ns", j.samples(200e3 + per_byte * s, 0.02, n))
                .with_metric("write_latency_ns", j.samples(20e3 + s, 0.02, n));
            run.cells.push(c);
        }
        decide(set, &run)
    };
    let plain = rule("");
    let v = case(&plain, 1.0, 7);
    assert_eq!(got(&v), Got::Confirmed, "a fixed 200 µs per write does not hide the proportional part");
    assert!(v.key.contains("of the reference"), "{}", v.key);
    assert_eq!(got(&case(&plain, 0.01, 7)), Got::Refuted);
    assert_eq!(got(&case(&plain, 0.3, 7)), Got::Below);
    assert_eq!(got(&case(&plain, 1.0, 3)), Got::TooFew);
    assert_eq!(got(&case(&rule("valid_max = 5.0"), 20.0, 7)), Got::Invalid);
}

#[test]
fn invalid_part_makes_the_driver_invalid_unless_another_refutes() {
    let two = |second: &str| {
        let text = format!(
            "row = []\n[[claim]]\nid = \"t\"\nstatement = \"s\"\nsource = \"test\"\nworkloads = []\ndrivers = [\"overlay\"]\n\
             [[claim.rule]]\nlabel = \"grows\"\nkind = \"growth\"\nworkload = \"copyup\"\nmetric = \"first_write_latency_ns\"\nx = \"file_bytes\"\nmin_ratio = 10.0\nmin_slope = 0.5\nrefute_max_ratio = 2.0\nfit = \"all\"\nmin_span = 100.0\nvalid_max = 1000.0\n\
             [[claim.rule]]\nlabel = \"second\"\n{second}\n"
        );
        ClaimSet::parse(&text).unwrap()
    };
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    sweep(&mut run, "copyup", "overlay", "file_bytes", "first_write_latency_ns", &COPYUP_SIZES, |x| x, 7, 91);
    for c in &mut run.cells {
        let s = c.param_f64("file_bytes").unwrap();
        *c = c.clone().with_metric("usage_delta_bytes", vec![s; 7]);
    }
    // The second part confirms (usage grows with size): the invalid first part still wins.
    let confirms = two("kind = \"growth\"\nworkload = \"copyup\"\nmetric = \"usage_delta_bytes\"\nx = \"file_bytes\"\nmin_ratio = 10.0\nmin_slope = 0.5\nrefute_max_ratio = 2.0\nfit = \"all\"\nmin_span = 100.0");
    let v = decide(&confirms, &run);
    assert_eq!(v.kind, VerdictKind::Invalid, "{}", v.summary());
    assert!(v.summary().contains("grows: "), "names the invalid part: {}", v.summary());
    // The second part refutes (usage should be flat): a refutation stands on its own samples.
    let refutes = two("kind = \"flat\"\nworkload = \"copyup\"\nmetric = \"usage_delta_bytes\"\nx = \"file_bytes\"\nmax_ratio = 1.5\nmax_abs_slope = 0.1\nrefute_min_ratio = 4.0\nrefute_min_slope = 0.3\nmin_span = 100.0");
    assert_eq!(decide(&refutes, &run).kind, VerdictKind::Refuted);
}

#[test]
fn near_bare_metal_per_driver_stand_in_and_cache_artefact_do_not_decide() {
    // overlay at 97% of bare metal, btrfs "313%" (a cache artefact), the aufs stand-in at 38%
    // (its FUSE overhead): overlay decides, btrfs is invalid, aufs is reported, not deciding.
    let mut run = RunEvidence::synthetic("t", &["overlay", "btrfs", "aufs"], &["seqio", "baremetal"]);
    run.backends.get_mut("aufs").unwrap().stand_in = true;
    run.backends.get_mut("aufs").unwrap().implementation = Some("aufs (unionfs-fuse stand-in)".into());
    let mut j = Jitter(92);
    let p = params(&[("file_bytes", json!(256u64 << 20))]);
    for (d, frac) in [("overlay", 0.97), ("btrfs", 3.13), ("aufs", 0.38)] {
        run.cells.push(Cell::new("seqio", d, p.clone()).with_metric("read_bytes_per_s", j.samples(frac * 500.0 * MIB, 0.03, 7)));
        run.cells.push(Cell::new("baremetal", d, p.clone()).with_metric("read_bytes_per_s", j.samples(500.0 * MIB, 0.03, 7)));
    }
    let v = verdict(&run, "near-bare-metal");
    let of = |d: &str| v.drivers.iter().find(|x| x.driver == d).unwrap();
    assert_eq!(of("overlay").verdict.kind, VerdictKind::Confirmed);
    assert_eq!(of("btrfs").verdict.kind, VerdictKind::Invalid, "{}", of("btrfs").verdict.summary());
    assert!(of("btrfs").verdict.summary().contains("faster than bare metal: cache artefact, excluded"));
    assert_eq!(of("aufs").verdict.kind, VerdictKind::Refuted, "the stand-in's own verdict is still shown");
    assert!(of("aufs").stand_in && !of("overlay").stand_in);
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed, "{}", v.verdict.summary());
    assert!(v.verdict.key.contains("stand-in, not deciding: aufs refuted"), "{}", v.verdict.key);
    assert!(v.verdict.key.contains("invalid, excluded: btrfs"), "{}", v.verdict.key);
    // With no kernel driver measured the stand-in decides, marked.
    let mut only = run.clone();
    only.cells.retain(|c| c.driver == "aufs");
    let v = verdict(&only, "near-bare-metal");
    assert_eq!(v.verdict.kind, VerdictKind::Refuted);
    assert!(!v.verdict.marks.stand_in.is_empty());
}
