//! `cargo bench`: criterion benchmarks of the cowbench workloads (copyup, lookup, metadata,
//! seqio, randio, layers) on every backend available here, with real containers.
//!
//! Benchmark ids are `workload/driver/parameters`, so `cargo bench -- copyup/overlay` runs the
//! copy-up benchmarks on overlay only, `cargo bench -- lookup` every lookup benchmark. A driver
//! that cannot run here is skipped with its reason printed; without root nothing can run (the
//! benches mount filesystems, attach loop devices and start containers) and the bench says so.
//!
//! Timing: everything a benchmark needs (driver, images, executor) is set up once before
//! criterion measures it. Where the operation runs in a container, the time criterion records
//! is the probe's own figure (`iter_custom`), never the container's start and stop; `layers`
//! records the harness clock around the driver calls, as the workload does. One criterion
//! call runs ONE real repetition (one container) and reports its time scaled to the iteration
//! count criterion asked for: criterion picks iteration counts from the measured figure (often
//! microseconds), and a container per iteration would turn them into hours. So each criterion
//! sample is one real repetition; samples, warm-up and measurement time are small (set below,
//! overridable on the command line) so `cargo bench -- copyup` takes a few minutes.
//!
//! State lives under a fresh root in /var/tmp (`COWBENCH_BENCH_ROOT` overrides the parent),
//! torn down at the end, also after a panic.

use std::path::PathBuf;
use std::time::Duration;

use cowbench::container::{Runtime, RuntimeKind};
use cowbench::runner::exec::{self, CellExec, Session, SetupError};
use cowbench_drivers::sys::hostinfo;
use cowbench_drivers::{registry, DriverConfig};
use cowbench_workloads::copyup::{CopyupParams, WriteAt};
use cowbench_workloads::layers::LayersParams;
use cowbench_workloads::lookup::{Cache, LookupParams};
use cowbench_workloads::metadata::MetadataParams;
use cowbench_workloads::seqio::{IoParams, Target};
use cowbench_workloads::{by_id, params_string, Params, TypedParams, KIB, MIB};
use criterion::{BenchmarkId, Criterion, Throughput};

/// One benchmark: a workload cell and the metric whose value is the measured time.
struct Bench {
    workload: &'static str,
    params: Params,
    /// Metric giving the time, ns (the mean when a repetition yields several samples).
    metric: &'static str,
    /// Multiply the metric by this (per-IO latency × IOs = the pass).
    scale: f64,
    /// Bytes one iteration moves, for criterion's throughput figures.
    bytes: Option<u64>,
    /// Extra part of the id (which metric), appended to the parameters.
    tag: Option<&'static str>,
}

impl Bench {
    fn new(workload: &'static str, params: Params, metric: &'static str) -> Bench {
        Bench { workload, params, metric, scale: 1.0, bytes: None, tag: None }
    }
    fn id(&self) -> String {
        match self.tag {
            Some(t) => format!("{};{t}", params_string(&self.params)),
            None => params_string(&self.params),
        }
    }
}

fn benches() -> Vec<Bench> {
    let mut v = Vec::new();
    for file_bytes in [4 * KIB, 16 * MIB] {
        let p = CopyupParams { file_bytes, depth: 1, write_at: WriteAt::Start };
        v.push(Bench::new("copyup", p.to_params(), "first_write_latency_ns"));
    }
    for depth in [1, 32] {
        let p = LookupParams { depth, files: 100, cache: Cache::Cold };
        v.push(Bench::new("lookup", p.to_params(), "lookup_latency_ns"));
    }
    let m = MetadataParams { files: 1_000, chown_files: 64, chown_bytes: MIB }.to_params();
    v.push(Bench { tag: Some("op=create"), ..Bench::new("metadata", m.clone(), "create_latency_ns") });
    v.push(Bench { tag: Some("op=chown"), ..Bench::new("metadata", m, "chown_latency_ns") });
    let seq = IoParams::seq(Target::Image, false, false, 64 * MIB, 1);
    v.push(Bench {
        scale: seq.ios() as f64,
        bytes: Some(seq.file_bytes),
        tag: Some("phase=read"),
        ..Bench::new("seqio", seq.to_params(), "read_latency_ns")
    });
    let rand = IoParams::rand(Target::Image, true, false, 64 * MIB, 1, 2048);
    v.push(Bench {
        scale: rand.ios() as f64,
        bytes: Some(rand.ios() * rand.block_bytes),
        tag: Some("phase=write"),
        ..Bench::new("randio", rand.to_params(), "write_latency_ns")
    });
    let l = LayersParams { layer_bytes: 16 * MIB, files: 10 };
    v.push(Bench { bytes: Some(l.layer_bytes), tag: Some("op=pull"), ..Bench::new("layers", l.to_params(), "pull_latency_ns") });
    v.push(Bench { bytes: Some(l.layer_bytes), tag: Some("op=push"), ..Bench::new("layers", l.to_params(), "push_latency_ns") });
    v
}

/// Positional filters of the command line (what criterion matches benchmark ids against), so
/// that drivers and images no selected benchmark needs are never set up.
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

/// The bench root and every session on it, torn down on drop (also after a panic).
struct Root {
    dir: tempfile::TempDir,
    sessions: Vec<Session>,
}

impl Root {
    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for s in self.sessions.drain(..) {
            let name = s.name.clone();
            if let Err(e) = s.close() {
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
/// and return the benchmark's time, ns.
fn one(ex: &mut dyn CellExec, b: &Bench, rep: u32) -> f64 {
    if by_id(b.workload).is_some_and(|w| w.drop_caches()) {
        if let Err(e) = cowbench::runner::drop_caches() {
            eprintln!("cowbench bench: dropping caches failed ({e}); this sample is warm");
        }
    }
    let samples = ex.repetition(rep).unwrap_or_else(|e| panic!("{} {}: {e:#}", b.workload, b.id()));
    let vals: Vec<f64> = samples.iter().filter(|(k, _)| *k == b.metric).map(|(_, v)| *v).collect();
    assert!(!vals.is_empty(), "{}: no {} sample", b.workload, b.metric);
    vals.iter().sum::<f64>() / vals.len() as f64 * b.scale
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
    let all = benches();
    let parent = std::env::var_os("COWBENCH_BENCH_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&parent).expect("bench root parent");
    let mut root = Root {
        dir: tempfile::Builder::new().prefix("cowbench-bench-").tempdir_in(&parent).expect("bench root"),
        sessions: Vec::new(),
    };
    for driver in registry::DRIVERS {
        let mine: Vec<&Bench> = all.iter().filter(|b| wanted(&filters, &format!("{}/{driver}/{}", b.workload, b.id()))).collect();
        if mine.is_empty() {
            continue;
        }
        let probe = registry::probe(driver).expect("known driver");
        if !probe.available {
            eprintln!("cowbench bench: skipping {driver}: {}", probe.reason.unwrap_or_default());
            continue;
        }
        let cfg = DriverConfig::new(root.path());
        let session = match Runtime::new(RuntimeKind::Runc, &cfg.root)
            .map_err(anyhow::Error::from)
            .and_then(|rt| Ok((rt, registry::open(driver, &cfg)?)))
        {
            Ok((runtime, d)) => Session { name: driver.to_string(), driver: d, cfg: cfg.clone(), probe, runtime, seed: 1 },
            Err(e) => {
                eprintln!("cowbench bench: skipping {driver}: opening it failed: {e:#}");
                continue;
            }
        };
        root.sessions.push(session);
        let s = root.sessions.last().expect("just pushed");
        for b in mine {
            let mut g = c.benchmark_group(format!("{}/{driver}", b.workload));
            g.sampling_mode(criterion::SamplingMode::Flat);
            if let Some(bytes) = b.bytes {
                g.throughput(Throughput::Bytes(bytes));
            }
            // Setup (images, layers, tar files) happens here, outside anything timed.
            let mut ex = match exec::setup(b.workload, s, &b.params) {
                Ok(ex) => ex,
                Err(SetupError::Skip(r)) => {
                    eprintln!("cowbench bench: skipping {}/{driver}/{}: {r}", b.workload, b.id());
                    continue;
                }
                Err(SetupError::Fail(e)) => panic!("{}/{driver}/{}: setup failed: {e:#}", b.workload, b.id()),
            };
            let mut rep = 0u32;
            g.bench_function(BenchmarkId::from_parameter(b.id()), |bencher| {
                bencher.iter_custom(|iters| {
                    let ns = one(&mut *ex, b, rep);
                    rep += 1;
                    Duration::from_nanos((ns * iters as f64) as u64)
                })
            });
            g.finish();
            if let Err(e) = ex.finish() {
                eprintln!("cowbench bench: {}/{driver}: releasing the cell failed: {e:#}", b.workload);
            }
        }
    }
    drop(root);
    c.final_summary();
}
