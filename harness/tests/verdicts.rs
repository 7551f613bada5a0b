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
        let mut cell = Cell::new("copyup", driver, p)
            .with_metric("first_write_latency_ns", lat)
            .with_metric("usage_delta_bytes", vec![usage; 5]);
        if driver == "devicemapper" {
            // The thin pool's own counter: one 64 KiB block, or the whole file. (The layer's
            // file-level usage counts the changed file whole either way.)
            let pool = if whole_file { s + 65536.0 } else { 65536.0 };
            cell = cell.with_metric("pool_data_used_delta_bytes", vec![pool; 5]).with_metric("usage_delta_bytes", vec![s; 5]);
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

    // Growth of only ×~10: between the thresholds.
    let mut run = RunEvidence::synthetic("t", &["overlay"], &["copyup"]);
    copyup(&mut run, "overlay", 100e3, 900e3 / (64.0 * MIB), 0.05, &SIZES, 3, true);
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
        let center = 1e5 * 60f64.powf(i as f64 / 3.0);
        let lat: Vec<f64> = (0..9).map(|k| center * if k % 2 == 0 { 0.05 } else { 1.0 } * j.next(0.05)).collect();
        let mut lat = lat;
        if i == 0 {
            lat.push(center * 80.0);
            lat.push(center * 90.0);
            lat.push(center * 95.0);
            lat.push(center * 99.0);
        }
        run.cells.push(Cell::new("copyup", "overlay", p).with_metric("first_write_latency_ns", lat));
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
    sharedcache(&mut run, "btrfs", "cgroup_page_cache_total_bytes", |n| n, 0.05, 7);
    let v = verdict(&run, id);
    assert_eq!(v.verdict.kind, VerdictKind::Confirmed);
    assert!(v.verdict.key.contains("private"), "{}", v.verdict.key);

    let mut run = RunEvidence::synthetic("t", &["btrfs"], &["sharedcache"]);
    sharedcache(&mut run, "btrfs", "cgroup_page_cache_total_bytes", |n| 1.0 + 0.02 * (n - 1.0), 0.05, 8);
    assert_eq!(verdict(&run, id).verdict.kind, VerdictKind::Refuted);

    let mut run = RunEvidence::synthetic("t", &["btrfs"], &["sharedcache"]);
    sharedcache(&mut run, "btrfs", "cgroup_page_cache_total_bytes", |n| 1.0 + 0.5 * (n - 1.0), 0.05, 9);
    assert_eq!(verdict(&run, id).verdict.kind, VerdictKind::Inconclusive);

    // The ARC claim expects the opposite: one shared copy.
    let mut run = RunEvidence::synthetic("t", &["zfs"], &["sharedcache"]);
    sharedcache(&mut run, "zfs", "arc_growth_bytes", |_| 1.0, 0.05, 10);
    assert_eq!(verdict(&run, "zfs-shared-arc").verdict.kind, VerdictKind::Confirmed);
    let mut run = RunEvidence::synthetic("t", &["zfs"], &["sharedcache"]);
    sharedcache(&mut run, "zfs", "arc_growth_bytes", |n| n, 0.05, 11);
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
    // Fragmentation: sequential read after random overwrites / before, paired per repetition:
    // 40% of the speed is left (confirmed), all of it (refuted), 88% (between: inconclusive).
    for (ratio, want) in [(0.4, VerdictKind::Confirmed), (1.0, VerdictKind::Refuted), (0.88, VerdictKind::Inconclusive)] {
        let mut run = RunEvidence::synthetic("t", &["zfs"], &["fragmentation"]);
        let mut j = Jitter(60);
        for pct in [10u64, 25] {
            let p = [("file_bytes", json!(256 * 1024 * 1024)), ("overwrite_percent", json!(pct))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            run.cells.push(Cell::new("fragmentation", "zfs", p).with_metric("after_before_ratio", j.samples(ratio, 0.02, 7)));
        }
        assert_eq!(verdict(&run, "zfs-fragmentation").verdict.kind, want, "after/before = {ratio}");
    }

    // Churn: 30% of each cycle's 64 MiB stays allocated / nothing stays.
    for (leak, want) in [(0.3, VerdictKind::Confirmed), (0.0, VerdictKind::Refuted)] {
        let mut run = RunEvidence::synthetic("t", &["devicemapper"], &["churn"]);
        let mut j = Jitter(61);
        for k in 1..=20u64 {
            let p = [("cycle", json!(k)), ("write_bytes", json!(64 * 1024 * 1024)), ("discard", json!(false))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let used = 500.0 * MIB + leak * 64.0 * MIB * k as f64 + 2.0 * MIB * (j.next(1.0) - 1.0);
            run.cells.push(Cell::new("churn", "devicemapper", p).with_metric("backend_used_bytes", vec![used]));
        }
        assert_eq!(verdict(&run, "dm-churn-overflow").verdict.kind, want);
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
