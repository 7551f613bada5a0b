//! `cargo bench`: criterion benchmarks of every cowbench workload on every backend available
//! here, with real containers, through the same [`HostLab`] and `Workload::setup` the runner
//! uses — no per-workload code: a new workload appears here by being in
//! `cowbench_workloads::all()`.
//!
//! One benchmark per (workload, driver): the workload's first quick-profile cell. Benchmark ids
//! are `workload/driver/parameters`, so `cargo bench -- density/overlay` runs density on
//! overlay only, `cargo bench -- lookup` every lookup benchmark. A driver that cannot run here
//! is skipped with its reason printed, a cell the backend cannot do (setup skips it) too;
//! without root nothing can run (the benches mount filesystems, attach loop devices and start
//! containers) and the bench says so.
//!
//! What criterion times: one call of criterion's routine runs ONE real repetition of the cell
//! (caches dropped first where the workload asks) and reports the cell's **primary time
//! metric**: the first metric the workload declares whose unit is `ns`, as the mean of its
//! samples in that repetition (per container, file or IO where a repetition yields several:
//! e.g. density `start_latency_ns`, lookup `lookup_latency_ns`). A workload with no time
//! metric (fragmentation) is timed by the harness clock around the whole repetition. The
//! figure is scaled to the iteration count criterion asked for: criterion picks iteration
//! counts from the measured figure (often microseconds), and a container per iteration would
//! turn them into hours; so each criterion sample is one real repetition. Setup (driver,
//! images, the workload's warm-up repetitions) happens before criterion measures anything.
//! Samples, warm-up and measurement time are small (set below, overridable on the command
//! line) so `cargo bench -- copyup` takes a few minutes.
//!
//! State lives under a fresh root in /var/tmp (`COWBENCH_BENCH_ROOT` overrides the parent),
//! torn down at the end, also after a panic.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cowbench::lab::HostLab;
use cowbench_drivers::sys::hostinfo;
use cowbench_drivers::{registry, DriverConfig};
use cowbench_workloads::lab::Lab;
use cowbench_workloads::{params_string, CellExec, MetricSpec, Params, Profile, SetupError, Workload};
use criterion::{BenchmarkId, Criterion};

/// The metric a benchmark reports: the workload's first time metric.
fn time_metric(w: &dyn Workload) -> Option<&'static MetricSpec> {
    w.metrics().iter().find(|m| m.unit == cowbench_workloads::Unit::Nanoseconds)
}

/// The cell a benchmark runs: the first of the quick profile (the smallest the project runs
/// by default).
fn bench_cell(w: &dyn Workload) -> Option<Params> {
    w.cells(Profile::Quick).into_iter().next()
}

fn filters() -> Vec<String> {
    // criterion options that take a value.
    const WITH_VALUE: &[&str] = &[
        "--save-baseline", "-s", "--baseline", "-b", "--baseline-lenient", "--load-baseline", "--sample-size",
        "--warm-up-time", "--measurement-time", "--nresamples", "--noise-threshold", "--confidence-level",
        "--significance-level", "--plotting-backend", "--output-format", "--color", "-c", "--profile-time", "--format",
    ];
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            out.push(a);
        }
    }
    out
}

fn wanted(filters: &[String], id: &str) -> bool {
    // criterion reads a filter as a regex; for plain text (the usual case) that is a substring
    // match. Anything with regex syntax is left to criterion to decide.
    filters.is_empty()
        || filters.iter().any(|f| id.contains(f.as_str()) || f.chars().any(|c| "^$.*+?()[]{}|\\".contains(c)))
}

/// The bench root and every lab on it, torn down on drop (also after a panic).
struct Root {
    dir: tempfile::TempDir,
    labs: Vec<HostLab>,
}

impl Root {
    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for lab in self.labs.drain(..) {
            let name = lab.name().to_string();
            if let Err(e) = lab.close() {
                eprintln!("cowbench bench: teardown of {name}: {e:#}");
            }
        }
        let rep = cowbench::clean::clean(&self.path(), &cowbench::clean::CleanOptions { quiet: true, ..Default::default() });
        if !rep.errors.is_empty() {
            eprintln!("cowbench bench: cleanup left errors: {}", rep.errors.join("; "));
        }
    }
}

/// Run one repetition the way the runner does (caches dropped first where the workload asks)
/// and return the benchmark's time, ns: the mean of the time metric's samples, else the
/// repetition's wall clock.
fn one(lab: &dyn Lab, w: &dyn Workload, ex: &mut dyn CellExec, id: &str, rep: u32) -> f64 {
    if w.drop_caches() {
        if let Err(e) = lab.drop_caches() {
            eprintln!("cowbench bench: dropping caches failed ({e}); this sample is warm");
        }
    }
    let t0 = Instant::now();
    let samples = ex.repetition(rep).unwrap_or_else(|e| panic!("{id}: {e:#}"));
    let wall = t0.elapsed().as_nanos() as f64;
    let Some(m) = time_metric(w) else { return wall };
    let vals: Vec<f64> = samples.iter().filter(|(k, _)| *k == m.name).map(|(_, v)| *v).collect();
    assert!(!vals.is_empty(), "{id}: no {} sample", m.name);
    vals.iter().sum::<f64>() / vals.len() as f64
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .nresamples(10_000)
        .configure_from_args();
    if !hostinfo::is_root() {
        eprintln!(
            "cowbench bench: NOT RUN — the benchmarks need root (they mount filesystems, attach loop devices \
             and start containers through runc). Run `sudo -E cargo bench`."
        );
        return;
    }
    if hostinfo::which("runc").is_none() {
        eprintln!("cowbench bench: NOT RUN — runc is not installed (Debian package runc)");
        return;
    }
    let filters = filters();
    let parent = std::env::var_os("COWBENCH_BENCH_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&parent).expect("bench root parent");
    let mut root = Root { dir: tempfile::Builder::new().prefix("cowbench-bench-").tempdir_in(&parent).expect("bench root"), labs: Vec::new() };
    for driver in registry::DRIVERS {
        let mine: Vec<(&'static dyn Workload, Params)> = cowbench_workloads::all()
            .into_iter()
            .filter_map(|w| bench_cell(w).map(|p| (w, p)))
            .filter(|(w, p)| wanted(&filters, &format!("{}/{driver}/{}", w.id(), params_string(p))))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let probe = registry::probe(driver).expect("known driver");
        if !probe.available {
            eprintln!("cowbench bench: skipping {driver}: {}", probe.reason.unwrap_or_default());
            continue;
        }
        match HostLab::open(driver, &DriverConfig::new(root.path()), "runc", 1) {
            Ok(lab) => root.labs.push(lab),
            Err(e) => {
                eprintln!("cowbench bench: skipping {driver}: opening it failed: {e:#}");
                continue;
            }
        }
        let lab = root.labs.last().expect("just pushed");
        for (w, params) in mine {
            let id = format!("{}/{driver}/{}", w.id(), params_string(&params));
            // Setup (images, layers, files) and the workload's warm-up happen here, untimed.
            let mut ex = match w.setup(lab, &params) {
                Ok(ex) => ex,
                Err(SetupError::Skip(r)) => {
                    eprintln!("cowbench bench: skipping {id}: {r}");
                    continue;
                }
                Err(SetupError::Fail(e)) => panic!("{id}: setup failed: {e:#}"),
            };
            for _ in 0..w.warmup(Profile::Quick) {
                one(lab, w, &mut *ex, &id, 0);
            }
            let what = time_metric(w).map_or("wall clock of one repetition", |m| m.name);
            eprintln!("cowbench bench: {id}: criterion times {what}");
            let mut g = c.benchmark_group(format!("{}/{driver}", w.id()));
            g.sampling_mode(criterion::SamplingMode::Flat);
            let mut rep = 0u32;
            g.bench_function(BenchmarkId::from_parameter(params_string(&params)), |bencher| {
                bencher.iter_custom(|iters| {
                    let ns = one(lab, w, &mut *ex, &id, rep);
                    rep += 1;
                    Duration::from_nanos((ns * iters as f64) as u64)
                })
            });
            g.finish();
            if let Err(e) = ex.finish() {
                eprintln!("cowbench bench: {id}: releasing the cell failed: {e:#}");
            }
        }
    }
    drop(root);
    c.final_summary();
}
