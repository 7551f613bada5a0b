//! `cowbench run --drivers overlay,vfs --profile quick` end to end: real containers through
//! runc, then the shape of run.json and samples.csv.
//!
//! Skips (with a printed reason) when overlay, vfs or runc are unavailable, but fails when
//! COWBENCH_REQUIRE_DRIVERS lists the missing driver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cowbench_drivers::registry;
use cowbench_drivers::sys::{hostinfo, mounts};

fn required(driver: &str) -> bool {
    std::env::var("COWBENCH_REQUIRE_DRIVERS")
        .map(|v| v.split(',').any(|d| d.trim() == driver || d.trim() == "all"))
        .unwrap_or(false)
}

/// None when everything needed is there; Some(reason) to skip. Panics for a required driver.
fn missing(drivers: &[&str]) -> Option<String> {
    if !hostinfo::is_root() {
        return Some("needs root (mounts, containers)".into());
    }
    for d in drivers {
        let r = registry::probe(d).unwrap();
        if !r.available {
            let why = format!("{d} unavailable: {}", r.reason.unwrap_or_default());
            assert!(!required(d), "{d} is listed in COWBENCH_REQUIRE_DRIVERS but {why}");
            return Some(why);
        }
    }
    if hostinfo::which("runc").is_none() {
        assert!(drivers.iter().all(|d| !required(d)), "runc is needed for required drivers but not installed");
        return Some("runc not installed".into());
    }
    None
}

/// A cowbench root under /var/tmp that is cleaned (`cowbench clean`) and removed on drop, also
/// when the test panics.
struct Root(tempfile::TempDir);

impl Root {
    fn new(tag: &str) -> Root {
        Root(tempfile::Builder::new().prefix(&format!("cowbench-test-{tag}-")).tempdir_in("/var/tmp").unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_cowbench")).arg("clean").arg("--root").arg(self.path()).output();
    }
}

#[test]
fn run_overlay_vfs_quick_writes_results() {
    if let Some(why) = missing(&["overlay", "vfs"]) {
        eprintln!("SKIPPED run_overlay_vfs_quick_writes_results: {why}");
        return;
    }
    let root = Root::new("run");
    let out_dir = root.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_cowbench"))
        .args(["run", "--drivers", "overlay,vfs", "--profile", "quick", "--root"])
        .arg(root.path().join("root"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cowbench run failed ({}):\n{stderr}", out.status);

    // stdout is exactly one JSON document naming the results.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let run_json = PathBuf::from(summary["run_json"].as_str().unwrap());
    assert!(run_json.starts_with(&out_dir));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&run_json).unwrap()).unwrap();

    assert_eq!(doc["schema_version"], 2);
    let schedule = &doc["parameters"]["schedule"];
    assert_eq!(schedule["order"], "interleaved");
    assert_eq!(schedule["order_seed"], 1);
    assert_eq!(schedule["ci_target"], 0.05);
    assert_eq!(doc["status"], "complete");
    let rt = &doc["host"]["runtime"];
    assert_eq!(rt["name"], "runc");
    assert!(rt["version"].as_str().is_some_and(|v| !v.is_empty()), "runtime version missing: {rt}");
    assert_eq!(doc["parameters"]["runtime"], "runc");
    assert_eq!(doc["parameters"]["profile"], "quick");
    assert!(doc["host"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(doc["host"]["cgroup"].is_string());
    assert!(doc["host"]["drivers"].as_array().unwrap().iter().any(|d| d["name"] == "overlay" && d["available"] == true));

    let cells = doc["cells"].as_array().unwrap();
    let workloads: Vec<String> = cowbench_workloads::all().iter().map(|w| w.id().to_string()).collect();
    let expected: usize = cowbench_workloads::all().iter().map(|w| w.cells(cowbench_workloads::Profile::Quick).len()).sum();
    assert_eq!(cells.len(), 2 * expected, "one cell per driver × workload × parameters");

    // Samples per repetition for each (workload, params, metric) and driver.
    let mut n: BTreeMap<(String, String, String), BTreeMap<String, usize>> = BTreeMap::new();
    let mut total_samples = 0usize;
    for c in cells {
        let key = c["key"].as_str().unwrap();
        assert!(workloads.contains(&c["workload"].as_str().unwrap().to_string()));
        // A capability the backend lacks (discard on overlay ...) is a skip with its reason.
        if c["status"] == "skipped" {
            assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{key}: skipped without a reason");
            continue;
        }
        assert_eq!(c["status"], "ok", "{key}: {}", c["reason"]);
        assert!(c["implementation"].is_string(), "{key}");
        let w = cowbench_workloads::by_id(c["workload"].as_str().unwrap()).unwrap();
        let q = cowbench_workloads::Profile::Quick;
        assert_eq!(c["warmup"].as_u64().unwrap(), w.warmup(q) as u64, "{key}: warm-up as the workload defines it");
        // At least the workload's count, at most the cap; why it stopped; the visits adding up.
        let reps = c["repetitions"].as_u64().unwrap();
        let sampling = &c["sampling"];
        // The workload's count, or more where a claim decides on the cell and needs more samples.
        assert!(sampling["min_repetitions"].as_u64().unwrap() >= w.repetitions(q) as u64, "{key}");
        assert!(reps >= w.repetitions(q) as u64 && reps <= sampling["max_repetitions"].as_u64().unwrap(), "{key}: {reps} repetitions");
        assert!(sampling["stop_reason"].is_string(), "{key}: no stop reason");
        let visits = sampling["visits"].as_array().unwrap();
        assert_eq!(visits.iter().map(|v| v["reps"].as_u64().unwrap()).sum::<u64>(), reps, "{key}: visits add up");
        if w.repetitions(q) >= 2 {
            assert!(visits.len() >= 2, "{key}: the minimum is split over two rounds");
        }
        assert!(c["cache_drop"]["requested"].is_boolean());
        assert!(c["caches_dropped"].is_boolean());
        let metrics = c["metrics"].as_object().unwrap();
        // Every cell has samples or a reason: an ok cell has samples. A metric that only applies
        // to some backends (ARC growth on zfs) is present with no samples and no summary.
        assert!(metrics.values().any(|m| !m["samples"].as_array().unwrap().is_empty()), "{key}: no samples at all");
        for (name, m) in metrics {
            let samples = m["samples"].as_array().unwrap();
            assert!(name.ends_with(m["unit"].as_str().unwrap()), "{name}: unit in the field name");
            let s = &m["summary"];
            n.entry((c["workload"].as_str().unwrap().into(), serde_json::to_string(&c["params"]).unwrap(), name.clone()))
                .or_default()
                .insert(c["driver"].as_str().unwrap().into(), samples.len() / reps as usize);
            if samples.is_empty() {
                assert!(s.is_null(), "{key}: {name}: a summary without samples");
                continue;
            }
            assert_eq!(s["n"].as_u64().unwrap() as usize, samples.len());
            for f in ["min", "median", "p90", "p99", "max", "mean", "sd", "ci95_low", "ci95_high"] {
                assert!(s[f].is_number(), "{key}: {name}: summary.{f}");
            }
            assert!(s["min"].as_f64() <= s["median"].as_f64() && s["median"].as_f64() <= s["max"].as_f64());
            total_samples += samples.len();
        }
        assert!(c["host_before"]["meminfo_bytes"]["MemTotal_bytes"].as_u64().unwrap() > 0);
    }
    assert!(n.values().any(|d| d.len() == 2), "no cell ran on both drivers");
    for (k, per_driver) in n.iter().filter(|(_, d)| d.len() == 2) {
        // A metric only some backends have (copyup's reference copy) has no samples on the others.
        let counts: Vec<_> = per_driver.values().filter(|n| **n > 0).collect();
        if counts.len() < 2 {
            continue;
        }
        assert_eq!(counts[0], counts[1], "{k:?}: the same samples per repetition for every driver: {per_driver:?}");
    }

    // A property that must hold on real storage: overlay copies the whole 64 MiB file up.
    let big = cells
        .iter()
        .find(|c| c["driver"] == "overlay" && c["workload"] == "copyup" && c["params"]["file_bytes"] == 64 << 20)
        .expect("copyup 64 MiB on overlay");
    assert!(big["metrics"]["usage_delta_bytes"]["summary"]["min"].as_f64().unwrap() >= (64u64 << 20) as f64);

    // samples.csv: a header and one row per sample.
    let csv = std::fs::read_to_string(run_json.with_file_name("samples.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("run_id,workload,driver,params,metric,value,unit,sample,rep"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), total_samples);
    let run_id = doc["run_id"].as_str().unwrap();
    for r in &rows {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f.len(), 9, "{r}");
        assert_eq!(f[0], run_id);
        assert!(f[5].parse::<f64>().is_ok(), "{r}");
    }

    // The run cleaned up after itself.
    let under = mounts::mounts_under(&root.path().join("root")).unwrap();
    assert!(under.is_empty(), "mounts left by the run: {under:?}");
}

#[test]
fn unknown_driver_is_a_usage_error() {
    let root = Root::new("usage");
    let out = Command::new(env!("CARGO_BIN_EXE_cowbench"))
        .args(["run", "--drivers", "ext9", "--root"])
        .arg(root.path())
        .arg("--out")
        .arg(root.path().join("results"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(out.stdout.is_empty(), "nothing on stdout for an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown driver 'ext9'"));
}

#[test]
fn bad_set_is_a_usage_error_before_anything_is_created() {
    let root = Root::new("set");
    let run_root = root.path().join("root");
    let results = root.path().join("results");
    for (set, says) in [
        ("copyup.file_byts=4K", vec!["'copyup' has no parameter 'file_byts'", "file_bytes (bytes)", "write_at (start|middle)"]),
        ("copyup.file_bytes=4Q", vec!["copyup.file_bytes", "unknown unit 'Q'", "depth (count)"]),
        ("copyup.write_at=end", vec!["'end' is not one of start, middle"]),
        ("nosuch.x=1", vec!["unknown workload 'nosuch'", "copyup"]),
        ("density.containers=1..16", vec!["workload 'density' is not part of this run"]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cowbench"))
            .args(["run", "--workloads", "copyup", "--set", set, "--root"])
            .arg(&run_root)
            .arg("--out")
            .arg(&results)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: usage error: {err}");
        assert!(out.stdout.is_empty(), "nothing on stdout for an error");
        for s in says {
            assert!(err.contains(s), "{set}: stderr lacks '{s}': {err}");
        }
        assert!(!run_root.exists() && !results.exists(), "{set}: nothing created before the usage error");
    }
}

#[test]
fn set_cells_run_and_are_recorded() {
    if let Some(why) = missing(&["vfs"]) {
        eprintln!("SKIPPED set_cells_run_and_are_recorded: {why}");
        return;
    }
    let root = Root::new("setrun");
    let out_dir = root.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_cowbench"))
        .args(["run", "--drivers", "vfs", "--workloads", "density", "--set", "density.containers=1..2", "--repeat", "1", "--root"])
        .arg(root.path().join("root"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cowbench run failed ({}):\n{stderr}", out.status);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary["run_json"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(doc["parameters"]["sets"], serde_json::json!([{"workload": "density", "param": "containers", "values": [1, 2]}]));
    let ns: Vec<u64> = doc["cells"].as_array().unwrap().iter().map(|c| c["params"]["containers"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![1, 2]);
    // The report says which parameters were set.
    let md = std::fs::read_to_string(Path::new(summary["dir"].as_str().unwrap()).join("report.md")).unwrap();
    assert!(md.contains("| parameters set | density.containers=1,2 |"), "{md}");
}

#[test]
fn probe_json_keeps_drivers_and_adds_host() {
    let out = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["probe", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let drivers = doc["drivers"].as_array().unwrap();
    assert_eq!(drivers.len(), registry::DRIVERS.len());
    for d in drivers {
        assert!(d["name"].is_string() && d["available"].is_boolean());
        assert!(d["available"] == true || d["reason"].is_string(), "an unavailable driver says why: {d}");
    }
    let host = &doc["host"];
    for k in ["kernel", "distro", "cgroup"] {
        assert!(host[k].as_str().is_some_and(|v| !v.is_empty()), "host.{k}");
    }
    assert_eq!(host["cowbench"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(host["cpu"]["count"].as_u64().unwrap() >= 1);
    assert!(host["memory_bytes"].as_u64().unwrap() > 0);
    assert!(host["environment"]["kind"] == "host" || host["environment"]["kind"] == "vm");
    for d in host["drivers"].as_array().unwrap() {
        assert!(d["storage"]["loop_backed"].is_boolean(), "{d}");
        assert!(d["storage"]["filesystem"].is_string(), "backing filesystem of {}", d["name"]);
    }
}
