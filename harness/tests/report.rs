//! `cowbench report` on synthetic run dirs written in the results schema: every claim and every
//! table row in report.md/html, every chart embedded, baseline regressions exit 3, and the HTML
//! renders in headless Chromium with every chart image loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cowbench::report::{write_report, ReportOptions};
use cowbench::results::schema::{CacheDrop, Counts};
use cowbench::results::{Cell, CellStatus, Metric, RunDoc, RunParameters, RunStatus, ResultsWriter, SCHEMA_VERSION};
use serde_json::json;

const MIB: f64 = 1024.0 * 1024.0;

const CLAIM_IDS: [&str; 16] = [
    "overlay-copyup-whole-file", "aufs-copyup-size-depth", "aufs-deep-lookup", "dm-block-copyup",
    "dm-no-shared-cache", "btrfs-no-shared-cache", "zfs-shared-arc", "zfs-fragmentation",
    "dm-churn-overflow", "filelevel-density", "dm-io-intensive", "btrfs-not-dense", "zfs-dense",
    "near-bare-metal", "layer-sharing", "fast-start",
];
const ROWS: [&str; 5] = ["aufs", "overlay", "devicemapper", "btrfs", "zfs"];

/// Deterministic jitter in [1 − amp, 1 + amp].
struct Jitter(u64);
impl Jitter {
    fn samples(&mut self, center: f64, amp: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
                center * (1.0 + amp * (2.0 * u - 1.0))
            })
            .collect()
    }
}

fn cell(doc_host: &cowbench::host::HostInfo, workload: &str, driver: &str, params: serde_json::Value, metrics: Vec<(&str, Vec<f64>)>) -> Cell {
    let params: cowbench_workloads::Params = params.as_object().unwrap().clone().into_iter().collect();
    let b = doc_host.drivers.iter().find(|b| b.probe.name == driver);
    // The unit run.json stores comes from the metric's spec (a metric without one: "count").
    let unit = |m: &str| cowbench_workloads::metric_spec(workload, m).map_or("count".to_string(), |s| s.unit.into());
    Cell {
        key: Cell::key_of(workload, driver, &params),
        workload: workload.into(),
        driver: driver.into(),
        implementation: b.and_then(|b| b.probe.implementation.clone()),
        stand_in: b.is_some_and(|b| b.probe.stand_in),
        loop_backed: b.is_some_and(|b| b.storage.loop_backed),
        params,
        status: CellStatus::Ok,
        reason: None,
        warmup: 1,
        repetitions: 5,
        caches_dropped: true,
        cache_drop: CacheDrop::default(),
        metrics: metrics
            .into_iter()
            .map(|(m, s)| {
                let n = s.len();
                // A wrong stored summary: the report must recompute from the samples.
                let summary = cowbench::results::stats::summarize(&[1.0]);
                (m.to_string(), Metric { unit: unit(m), samples: s, sample_rep: (0..n as u32).collect(), summary })
            })
            .collect(),
        notes: BTreeMap::new(),
        host_before: None,
        host_after: None,
        started_unix: 0,
        duration_s: 0.1,
        sampling: None,
    }
}

/// A run dir with copyup and density cells on overlay, aufs, btrfs, zfs and vfs.
/// `slow` multiplies overlay's copy-up latency (a synthetic regression).
fn synthetic_run(parent: &Path, run_id: &str, seed: u64, slow: f64) -> PathBuf {
    synthetic_run_in(parent, run_id, seed, slow, false)
}

/// `vm`: the run says it ran inside the cowbench VM.
fn synthetic_run_in(parent: &Path, run_id: &str, seed: u64, slow: f64, vm: bool) -> PathBuf {
    let root = parent.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut host = cowbench::host::probe(&root, "runc", &BTreeMap::new());
    if vm {
        host.environment = cowbench::host::Environment::Vm { accel: "tcg".into(), vcpus: 2, mem_bytes: 4 << 30 };
    }
    let mut j = Jitter(seed);
    let mut cells = Vec::new();
    let sizes = [4096.0, MIB, 16.0 * MIB, 64.0 * MIB];
    // overlay copies whole files (≈1 GB/s), btrfs/zfs copy a block, aufs copies slower, vfs like overlay.
    let per_byte = [("overlay", 1.0 * slow, 30e3), ("aufs", 2.5, 150e3), ("btrfs", 0.0, 60e3), ("zfs", 0.0, 400e3), ("vfs", 1.0, 30e3)];
    for (d, pb, fixed) in per_byte {
        for s in sizes {
            cells.push(cell(
                &host,
                "copyup",
                d,
                json!({"file_bytes": s as u64, "depth": 1, "write_at": "start"}),
                vec![
                    // Seven samples: a rule decides only on 95% intervals (six samples and up).
                    ("first_write_latency_ns", j.samples((fixed + pb * s) * if d == "overlay" { slow } else { 1.0 }, 0.08, 7)),
                    ("usage_delta_bytes", j.samples(if pb > 0.0 { s } else { 4096.0 }, 0.0, 7)),
                    // A plain copy of a same-size file: 1 ms + 1 ns/byte.
                    ("reference_copy_latency_ns", j.samples(1e6 + s, 0.08, 7)),
                ],
            ));
        }
    }
    // (driver, start latency, memory per container)
    let start = [("overlay", 0.12e9, 0.4 * MIB), ("aufs", 0.25e9, 1.0 * MIB), ("btrfs", 0.30e9, 2.0 * MIB), ("zfs", 0.9e9, 4.0 * MIB), ("vfs", 0.6e9, 0.3 * MIB)];
    for (d, ns, mem) in start {
        for n in [1u64, 4, 16] {
            let k = (n as usize).max(2) * 2;
            cells.push(cell(
                &host,
                "density",
                d,
                json!({"containers": n}),
                vec![
                    ("start_latency_ns", j.samples(ns, 0.1, k)),
                    ("disk_per_container_bytes", j.samples(if d == "vfs" { 40.0 * MIB } else { 20e3 }, 0.1, k)),
                    ("memory_per_container_bytes", j.samples(mem, 0.1, k)),
                ],
            ));
        }
    }
    let mut doc = RunDoc {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.into(),
        status: RunStatus::Complete,
        started_unix: 1_790_000_000,
        finished_unix: Some(1_790_000_300),
        duration_s: Some(300.0),
        host,
        parameters: RunParameters {
            drivers: vec!["overlay".into(), "aufs".into(), "btrfs".into(), "devicemapper".into(), "zfs".into(), "vfs".into()],
            workloads: vec!["density".into(), "copyup".into()],
            profile: "quick".into(),
            repeat: None,
            seed,
            runtime: "runc".into(),
            root: root.display().to_string(),
            driver_options: BTreeMap::new(),
            command_line: vec!["cowbench".into(), "run".into()],
            sets: vec![],
            schedule: None,
        },
        counts: Counts::default(),
        ci_method: "order statistics".into(),
        cells,
    };
    doc.recount();
    let w = ResultsWriter::create(parent, run_id).unwrap();
    w.write(&doc).unwrap();
    w.dir().to_path_buf()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn report_has_every_claim_row_and_embedded_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let run = synthetic_run(tmp.path(), "run-a", 1, 1.0);
    let paths = write_report(std::slice::from_ref(&run), &ReportOptions::default()).unwrap();
    let md = read(paths.md.as_ref().unwrap());
    let html = read(paths.html.as_ref().unwrap());
    for id in CLAIM_IDS {
        assert!(md.contains(&format!("### {id}")), "report.md lacks section {id}");
        assert!(html.contains(&format!("<section class=\"claim\" id=\"{id}\">")), "report.html lacks section {id}");
        assert!(html.contains(&format!("data-claim=\"{id}\"")), "claims table lacks {id}");
    }
    for row in ROWS {
        assert!(md.contains(&format!("| **{row}** |")), "report.md lacks table row {row}");
        assert!(html.contains(&format!("<tr data-driver=\"{row}\">")), "report.html lacks table row {row}");
    }
    // Every image is embedded; the page references nothing outside itself.
    let imgs: Vec<&str> = html.split("<img ").skip(1).collect();
    assert!(!imgs.is_empty());
    for i in &imgs {
        assert!(i.starts_with("src=\"data:image/png;base64,iVBORw0KGgo"), "image not embedded: {}", &i[..60.min(i.len())]);
    }
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<link"));
    assert_eq!(imgs.len(), paths.charts.len(), "one <img> per chart");
    for c in &paths.charts {
        assert!(c.svg.exists() && c.png.exists(), "{}", c.id);
        assert!(read(&c.svg).contains("<svg"));
    }
    // Charts for both workloads and for the copy-up claim.
    assert!(paths.charts.iter().any(|c| c.id == "claim-overlay-copyup-whole-file"));
    assert!(paths.charts.iter().any(|c| c.id.starts_with("wl-copyup-first_write_latency_ns")));
    assert!(paths.charts.iter().any(|c| c.id.starts_with("wl-density-start_latency_ns")));

    // Verdicts as data; the synthetic numbers decide what they were built to decide.
    let json: serde_json::Value = serde_json::from_str(&read(paths.json.as_ref().unwrap())).unwrap();
    let claims = json["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 16);
    assert!(json["charts"].as_array().unwrap().iter().all(|c| c["png"].as_str().unwrap().starts_with("charts/")), "portable chart paths");
    let kind = |id: &str| {
        claims.iter().find(|c| c["id"] == id).unwrap()["verdicts"][0]["verdict"]["kind"].as_str().unwrap().to_string()
    };
    assert_eq!(kind("overlay-copyup-whole-file"), "confirmed");
    assert_eq!(kind("filelevel-density"), "confirmed");
    assert_eq!(kind("btrfs-not-dense"), "confirmed"); // heavier than overlay and aufs, lighter only than zfs
    assert_eq!(kind("zfs-shared-arc"), "not_measured");
    // devicemapper is unavailable on this kernel: the probe's reason is carried.
    let dm = claims.iter().find(|c| c["id"] == "dm-block-copyup").unwrap()["verdicts"][0]["verdict"].clone();
    if dm["kind"] == "not_measured" {
        assert!(dm["why"]["why"] == "backend_unavailable" || dm["why"]["why"] == "driver_not_run" || dm["why"]["why"] == "workload_not_run", "{dm}");
    }
    // Host facts come first, then the table, then the claims.
    let (h, t, c) = (html.find("id=\"host\"").unwrap(), html.find("id=\"tradeoffs\"").unwrap(), html.find("id=\"claims\"").unwrap());
    assert!(h < t && t < c);
    // The aufs stand-in is marked wherever its numbers decide.
    assert!(md.contains("stand-in: aufs (unionfs-fuse stand-in)"), "stand-in mark missing");
}

#[test]
fn several_runs_merge_with_a_column_each() {
    let tmp = tempfile::tempdir().unwrap();
    let a = synthetic_run(&tmp.path().join("a"), "host-a", 2, 1.0);
    let b = synthetic_run_in(&tmp.path().join("b"), "host-b", 3, 1.0, true);
    let out = tmp.path().join("merged");
    let opts = ReportOptions { out: Some(out.clone()), ..Default::default() };
    let paths = write_report(&[a, b], &opts).unwrap();
    let md = read(&paths.md.unwrap());
    assert!(md.contains("| Claim | host-a (host) | host-b (VM, TCG) |"), "one column per run");
    assert!(
        md.contains("**Warning (host-b (VM, TCG)):** Measured inside the cowbench VM under software emulation (QEMU TCG"),
        "TCG warning at the top"
    );
    assert!(md.find("**Warning (host-b (VM, TCG))").unwrap() < md.find("## Host and reproducibility").unwrap());
    assert!(!md.contains("**Warning (host-a (host)):** Measured inside"), "the host run carries no VM warning");
    assert!(md.contains("*[stand-in: aufs (unionfs-fuse stand-in); VM]*") || md.contains("; VM]*"), "VM mark on verdicts");
    let json: serde_json::Value = serde_json::from_str(&read(&paths.json.unwrap())).unwrap();
    assert!(json["claims"].as_array().unwrap().iter().all(|c| c["verdicts"].as_array().unwrap().len() == 2));
    assert!(paths.charts.iter().any(|c| c.id.starts_with("run2-")));
}

#[test]
fn baseline_from_another_environment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let host = synthetic_run(&tmp.path().join("host"), "host-run", 7, 1.0);
    let vm = synthetic_run_in(&tmp.path().join("vm"), "vm-run", 8, 1.0, true);
    let out = tmp.path().join("out");
    let s = |p: &Path| p.display().to_string();
    for (run, base) in [(&vm, &host), (&host, &vm)] {
        let o = cowbench(&["report", &s(run), "--baseline", &s(base), "--out", &s(&out), "--format", "json"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "a host run and a VM run must not be compared: {err}");
        assert!(err.contains("different environments"), "readable reason: {err}");
        assert!(err.contains("vm-tcg") && err.contains("host"), "names both environments: {err}");
    }
    assert!(!out.join("report.json").exists(), "no comparison written");
}

fn cowbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cowbench")).args(args).output().unwrap()
}

#[test]
fn baseline_regression_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let base = synthetic_run(&tmp.path().join("base"), "base", 4, 1.0);
    let same = synthetic_run(&tmp.path().join("same"), "same", 5, 1.0);
    let slow = synthetic_run(&tmp.path().join("slow"), "slow", 6, 3.0);
    let out = tmp.path().join("out");
    let s = |p: &Path| p.display().to_string();

    let o = cowbench(&["report", &s(&same), "--baseline", &s(&base), "--fail-on-regression", "--out", &s(&out), "--format", "md,json"]);
    assert_eq!(o.status.code(), Some(0), "no regression: {}", String::from_utf8_lossy(&o.stderr));

    let o = cowbench(&["report", &s(&slow), "--baseline", &s(&base), "--fail-on-regression", "--out", &s(&out), "--format", "md,json"]);
    assert_eq!(o.status.code(), Some(3), "overlay copy-up 3× slower: {}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_str(&read(&out.join("report.json"))).unwrap();
    let rows = json["comparison"]["rows"].as_array().unwrap();
    let slower: Vec<&serde_json::Value> = rows.iter().filter(|r| r["change"] == "slower").collect();
    assert!(!slower.is_empty());
    assert!(slower.iter().all(|r| r["cell"].as_str().unwrap().starts_with("copyup/overlay/")), "only overlay copy-up regressed");
    assert!(read(&out.join("report.md")).contains("**slower**"));

    // Without --fail-on-regression the same comparison exits 0; usage errors exit 2.
    let o = cowbench(&["report", &s(&slow), "--baseline", &s(&base), "--out", &s(&out), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(cowbench(&["report", &s(&slow), "--format", "pdf"]).status.code(), Some(2));
}

/// A run dir holding the given (workload, params, metric, samples) cells on overlay.
fn small_run(parent: &Path, run_id: &str, cells: &[(&str, serde_json::Value, &str, Vec<f64>)]) -> PathBuf {
    small_run_in(parent, run_id, cells, false)
}

/// `vm`: the run says it ran inside the cowbench VM.
fn small_run_in(parent: &Path, run_id: &str, cells: &[(&str, serde_json::Value, &str, Vec<f64>)], vm: bool) -> PathBuf {
    let root = parent.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut host = cowbench::host::probe(&root, "runc", &BTreeMap::new());
    if vm {
        host.environment = cowbench::host::Environment::Vm { accel: "tcg".into(), vcpus: 2, mem_bytes: 4 << 30 };
    }
    let cells = cells.iter().map(|(w, p, m, s)| cell(&host, w, "overlay", p.clone(), vec![(m, s.clone())])).collect();
    let mut doc = RunDoc {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.into(),
        status: RunStatus::Complete,
        started_unix: 1_790_000_000,
        finished_unix: Some(1_790_000_300),
        duration_s: Some(300.0),
        host,
        parameters: RunParameters {
            drivers: vec!["overlay".into()],
            workloads: vec![],
            profile: "quick".into(),
            repeat: None,
            seed: 1,
            runtime: "runc".into(),
            root: root.display().to_string(),
            driver_options: BTreeMap::new(),
            command_line: vec!["cowbench".into(), "run".into()],
            sets: vec![],
            schedule: None,
        },
        counts: Counts::default(),
        ci_method: "order statistics".into(),
        cells,
    };
    doc.recount();
    let w = ResultsWriter::create(parent, run_id).unwrap();
    w.write(&doc).unwrap();
    w.dir().to_path_buf()
}

/// Exit code and comparison rows of `cowbench report NEW --baseline OLD --fail-on-regression`.
fn regression_check(tmp: &Path, new: &[(&str, serde_json::Value, &str, Vec<f64>)], old: &[(&str, serde_json::Value, &str, Vec<f64>)]) -> (Option<i32>, serde_json::Value) {
    let n = small_run(&tmp.join("new"), "new", new);
    let o = small_run(&tmp.join("old"), "old", old);
    let out = tmp.join("out");
    let s = |p: &Path| p.display().to_string();
    let r = cowbench(&["report", &s(&n), "--baseline", &s(&o), "--fail-on-regression", "--out", &s(&out), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&read(&out.join("report.json"))).unwrap();
    (r.status.code(), json["comparison"].clone())
}

#[test]
fn regression_direction_comes_from_the_metric_spec() {
    let frag = json!({"file_bytes": 64u64 << 20, "overwrite_percent": 25});
    let ratio = |v: f64| vec![("fragmentation", frag.clone(), "after_before_ratio", vec![v - 0.002, v - 0.001, v, v + 0.001, v + 0.002, v, v])];
    // after_before_ratio is read throughput after the overwrites over before: higher is better,
    // so 0.890 → 0.979 is an improvement (a name-based guess called it a regression) …
    let tmp = tempfile::tempdir().unwrap();
    let (code, cmp) = regression_check(tmp.path(), &ratio(0.979), &ratio(0.890));
    assert_eq!(code, Some(0), "{cmp}");
    assert_eq!(cmp["rows"][0]["change"], "better");
    assert_eq!(cmp["rows"][0]["better"], "higher");
    // … and 0.979 → 0.890 a regression.
    let tmp = tempfile::tempdir().unwrap();
    let (code, cmp) = regression_check(tmp.path(), &ratio(0.890), &ratio(0.979));
    assert_eq!(code, Some(3), "{cmp}");
    assert_eq!(cmp["rows"][0]["change"], "worse");

    // A throughput (higher is better) halved regresses; a latency (lower is better) halved does not.
    let io = json!({"pattern": "seq", "target": "image", "direct": false, "fsync": false, "file_bytes": 64u64 << 20, "block_bytes": 131072, "jobs": 1, "ios": 512});
    let seq = |m: &'static str, v: f64| ("seqio", io.clone(), m, vec![v * 0.99, v, v * 1.01, v, v * 0.995, v * 1.005, v]);
    let tmp = tempfile::tempdir().unwrap();
    let (code, cmp) = regression_check(tmp.path(), &[seq("read_bytes_per_s", 1e8)], &[seq("read_bytes_per_s", 2e8)]);
    assert_eq!((code, cmp["rows"][0]["change"].as_str()), (Some(3), Some("worse")), "{cmp}");
    let tmp = tempfile::tempdir().unwrap();
    let (code, cmp) = regression_check(tmp.path(), &[seq("read_latency_ns", 1e5)], &[seq("read_latency_ns", 2e5)]);
    assert_eq!((code, cmp["rows"][0]["change"].as_str()), (Some(0), Some("faster")), "{cmp}");

    // A metric no workload declares is compared but never a regression, and is listed.
    let tmp = tempfile::tempdir().unwrap();
    let (code, cmp) = regression_check(tmp.path(), &[seq("mystery_ns", 9e5)], &[seq("mystery_ns", 1e5)]);
    assert_eq!((code, cmp["rows"][0]["change"].as_str()), (Some(0), Some("changed")), "{cmp}");
    assert_eq!(cmp["without_spec"], json!(["seqio/mystery_ns"]));
}

#[test]
fn misspelt_metric_in_claims_file_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = synthetic_run(&tmp.path().join("r"), "r", 7, 1.0);
    let bad = tmp.path().join("bad.toml");
    let text = cowbench::claims::DEFAULT_CLAIMS_TOML.replacen("metric = \"after_before_ratio\"", "metric = \"after_before_ratoi\"", 1);
    std::fs::write(&bad, text).unwrap();
    let out = tmp.path().join("out");
    let s = |p: &Path| p.display().to_string();
    let o = cowbench(&["report", &s(&run), "--claims", &s(&bad), "--out", &s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("zfs-fragmentation") && err.contains("after_before_ratoi"), "names the claim and the name: {err}");
    assert!(!out.join("report.md").exists(), "nothing written");
    // A run directory that does not exist is a usage error too.
    let o = cowbench(&["report", &s(&tmp.path().join("nope")), "--out", &s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new("which").arg(name).output() {
            if o.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            }
        }
    }
    panic!("headless Chromium not found: install Debian's `chromium` (scripts/setup does)");
}

fn chromium_cmd(bin: &Path, profile: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.arg("120").arg(bin).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn html_renders_in_headless_chromium() {
    let bin = chromium();
    let tmp = tempfile::tempdir().unwrap();
    let run = synthetic_run(tmp.path(), "run-browser", 7, 1.0);
    let paths = write_report(&[run], &ReportOptions::default()).unwrap();
    let html = paths.html.unwrap();
    let url = format!("file://{}", html.display());
    let profile = tmp.path().join("chromium-profile");

    let o = chromium_cmd(&bin, &profile).arg("--dump-dom").arg(&url).output().unwrap();
    assert!(o.status.success(), "chromium --dump-dom: {}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8_lossy(&o.stdout);
    let attr = |name: &str| -> usize {
        let i = dom.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("{name} not set: the load check did not run"));
        let rest = &dom[i + name.len() + 2..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    let (total, loaded) = (attr("data-images-total"), attr("data-images-loaded"));
    assert_eq!(total, paths.charts.len());
    assert!(total > 0);
    assert_eq!(loaded, total, "every chart image decodes in the browser");
    assert!(dom.contains("id=\"tradeoffs\"") && dom.contains("id=\"claims-table\""));

    let shot = tmp.path().join("report.png");
    let o = chromium_cmd(&bin, &profile)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,4000")
        .arg(&url)
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium --screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "screenshot is a real picture");
    eprintln!("screenshot: {}", shot.display());
    if let Ok(keep) = std::env::var("COWBENCH_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, &keep).unwrap();
        std::fs::copy(&html, format!("{keep}.html")).unwrap();
    }
}

/// Copy-up cells of overlay whose first-write time grows with the file, `n` samples each.
fn growing_copyup(seed: u64, n: usize) -> Vec<(&'static str, serde_json::Value, &'static str, Vec<f64>)> {
    let mut j = Jitter(seed);
    [4096.0, MIB, 64.0 * MIB]
        .iter()
        .map(|&s| ("copyup", json!({"file_bytes": s as u64}), "first_write_latency_ns", j.samples(30e3 + s, 0.03, n)))
        .collect()
}

/// One claim decided by growth of overlay's first-write time over the file size.
const GROWTH_CLAIM: &str = "row = []\n[[claim]]\nid = \"grows\"\nstatement = \"s\"\nsource = \"test\"\nworkloads = [\"copyup\"]\ndrivers = [\"overlay\"]\n[[claim.rule]]\nkind = \"growth\"\nworkload = \"copyup\"\nmetric = \"first_write_latency_ns\"\nx = \"file_bytes\"\nmin_ratio = 10.0\nmin_slope = 0.5\nrefute_max_ratio = 2.0\nfit = \"all\"\nmin_span = 100.0\n";

/// report.json of `runs` decided on [`GROWTH_CLAIM`], and report.md.
fn pooled_report(tmp: &Path, runs: &[PathBuf]) -> (serde_json::Value, String) {
    let claims = tmp.join("claims.toml");
    std::fs::write(&claims, GROWTH_CLAIM).unwrap();
    let out = tmp.join("out");
    let opts = ReportOptions { out: Some(out.clone()), claims: Some(claims), ..Default::default() };
    let paths = write_report(runs, &opts).unwrap();
    (serde_json::from_str(&read(&paths.json.unwrap())).unwrap(), read(&paths.md.unwrap()))
}

#[test]
fn runs_of_one_host_pool_and_a_flip_is_marked() {
    // Three samples a run is too few alone; two such runs pooled give six: decided.
    let tmp = tempfile::tempdir().unwrap();
    let a = small_run(&tmp.path().join("a"), "a", &growing_copyup(1, 3));
    let b = small_run(&tmp.path().join("b"), "b", &growing_copyup(2, 3));
    let (json, md) = pooled_report(tmp.path(), &[a.clone(), b]);
    let c = &json["claims"][0];
    for v in c["verdicts"].as_array().unwrap() {
        assert_eq!(v["verdict"]["why"]["why"], "too_few_samples", "{v}");
    }
    let comb = &c["combined"][0];
    assert_eq!(comb["tag"], "R1+R2 pooled");
    assert_eq!(comb["verdict"]["verdict"]["kind"], "confirmed", "{comb}");
    assert!(comb["flipped"].is_null(), "both runs alone say the same: {comb}");
    assert!(md.contains("**Combined verdict** (R1+R2 pooled: decided on the pooled samples of"), "{md}");
    assert!(md.contains("| Claim | a (host) | b (host) | R1+R2 pooled |"), "a pooled column");

    // One run decides, the other has too few samples: the claim flipped, and says why.
    let tmp = tempfile::tempdir().unwrap();
    let a = small_run(&tmp.path().join("a"), "a", &growing_copyup(1, 7));
    let b = small_run(&tmp.path().join("b"), "b", &growing_copyup(2, 3));
    let (json, md) = pooled_report(tmp.path(), &[a, b]);
    let flipped = json["claims"][0]["combined"][0]["flipped"].as_str().unwrap().to_string();
    assert_eq!(flipped, "confirmed in R1, inconclusive in R2 (too few samples (n=3, needs ≥ 6))");
    assert!(md.contains("**Flipped between runs:** confirmed in R1, inconclusive in R2"), "{md}");
    assert!(md.contains("*flipped between runs*"), "marked in the claims table");
}

#[test]
fn a_vm_run_never_pools_with_a_host_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = small_run(&tmp.path().join("a"), "a", &growing_copyup(1, 3));
    let v = small_run_in(&tmp.path().join("v"), "v", &growing_copyup(2, 3), true);
    let (json, md) = pooled_report(tmp.path(), &[a, v]);
    assert!(json["claims"][0]["combined"].as_array().unwrap().is_empty(), "{}", json["claims"][0]["combined"]);
    assert!(!md.contains("pooled samples of"), "no combined verdict across environments");
}
