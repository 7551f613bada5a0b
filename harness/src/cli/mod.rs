//! Command-line interface. stdout carries only the result document; logs go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod clean;
mod image;
mod probe;
mod report;
mod run;
mod snapshot;
pub mod workloads;

/// Default cowbench root: every backing store, pool and layer cowbench makes lives below it.
pub const DEFAULT_ROOT: &str = "/var/lib/cowbench";

#[derive(Debug, Parser)]
#[command(name = "cowbench", version, about = "Which container storage driver should I use, and why? Measured.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every storage driver with availability, implementation and the reason when unavailable.
    Probe(probe::ProbeArgs),
    /// Drive one backend's snapshotter by hand (prepare, commit, mount, apply, diff ...).
    Snapshot(snapshot::SnapshotArgs),
    /// Decide every claim of the trade-off table from run dirs; write report.md/html/json and charts.
    Report(report::ReportArgs),
    /// Run workloads on drivers in real containers; results in results/<run-id>/.
    Run(run::RunArgs),
    /// Remove everything cowbench created under the root (after a crash or kill -9).
    Clean(clean::CleanArgs),
    /// Import real images (`docker save` tarballs, OCI layouts) into a driver; list, remove.
    Image(image::ImageArgs),
    /// List every workload: parameters (kind, values per profile), repetitions and metrics.
    Workloads(workloads::WorkloadsArgs),
}

/// A command line that cannot be carried out as written (unknown name, bad value, bad claims
/// file): the binary exits 2, as for clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Exit code of a usage error.
pub const EXIT_USAGE: u8 = 2;

/// Options every command that opens a driver takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RootArgs {
    /// cowbench root: backing stores, pools and layers live below it.
    #[arg(long, global = true, env = "COWBENCH_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Backend option KEY=VALUE (repeatable), e.g. size=8G, discard=false, dataset=tank/cb.
    #[arg(short = 'o', long = "option", global = true, value_parser = parse_kv)]
    pub options: Vec<(String, String)>,
}

impl RootArgs {
    pub fn driver_config(&self) -> cowbench_drivers::DriverConfig {
        let mut cfg = cowbench_drivers::DriverConfig::new(&self.root);
        for (k, v) in &self.options {
            cfg = cfg.with_option(k, v);
        }
        cfg
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Probe(a) => probe::run(a),
        Command::Snapshot(a) => snapshot::run(a),
        Command::Report(a) => report::run(a),
        Command::Run(a) => run::run(a),
        Command::Clean(a) => clean::run(a),
        Command::Image(a) => image::run(a),
        Command::Workloads(a) => workloads::run(a),
    }
}
