//! `cowbench run`: the matrix driver × workload × parameters, results in `results/<run-id>/`.
//! stdout: one JSON document naming the results; progress and logs on stderr.
//! The run ends by writing its report (report.md, report.html, report.json) into the run dir.
//! Exit code 1 when any cell failed or the report could not be written (skipped cells are not
//! failures).

use std::path::PathBuf;
use std::process::ExitCode;

use cowbench_workloads::{ParamSet, Profile};

use super::RootArgs;
use crate::results::schema::Order;
use crate::results::CellStatus;
use crate::runner::{self, RunConfig};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Drivers to run, comma-separated (default: every driver; unavailable ones are recorded as
    /// skipped with their reason).
    #[arg(long, value_delimiter = ',')]
    pub drivers: Option<Vec<String>>,
    /// Workloads to run, comma-separated (default: every workload).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,
    /// quick (the default `cowbench run`, minutes) or full (hours).
    #[arg(long, default_value = "quick")]
    pub profile: Profile,
    /// OCI runtime: runc or crun.
    #[arg(long, default_value = "runc", value_parser = ["runc", "crun"])]
    pub runtime: String,
    /// Where run directories are written.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Exactly N recorded repetitions per cell, no extra ones (default: at least the workload's
    /// count for the profile, more where the samples are noisy; see --ci-target).
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Visit order: interleaved (rounds in a seeded random order over drivers and parameter
    /// points, against drift of the machine) or driver-major (plan order, for debugging).
    #[arg(long, value_enum, default_value = "interleaved")]
    pub order: Order,
    /// Repeat a cell until the median's 95% CI of each of its metrics is within ±TARGET of the
    /// median (e.g. 5% or 0.05), or until --max-reps or --time-budget.
    #[arg(long, default_value = "5%", value_parser = parse_ci_target, conflicts_with = "repeat")]
    pub ci_target: f64,
    /// Cap on recorded repetitions per cell (default: 3× the workload's count, at least 6).
    #[arg(long, conflicts_with = "repeat")]
    pub max_reps: Option<u32>,
    /// Start no extra repetitions that would take the run past this many seconds (0: no
    /// budget). The minimum repetitions always run. Default: 270 for quick (the run then ends
    /// within 5 minutes), none for full.
    #[arg(long, conflicts_with = "repeat")]
    pub time_budget: Option<u64>,
    /// Set a workload parameter to each of VALUES in every cell of the profile (repeatable;
    /// later sets apply to the cells of earlier ones), e.g. copyup.file_bytes=4K,1M,256M or
    /// density.containers=1..1024:x2. Sizes take binary suffixes; ranges are a..b (step 1),
    /// a..b:xF (geometric) and a..b:+S. `cowbench workloads` lists every parameter.
    #[arg(long = "set", value_name = "WORKLOAD.PARAM=VALUES")]
    pub sets: Vec<ParamSet>,
    /// List every workload with its parameters, values per profile and metrics, then exit.
    #[arg(long)]
    pub list: bool,
    /// Give a cell up after this many seconds (its backend is then considered hung and its
    /// remaining cells are not run). Default: 300 for quick, 7200 for full; five times that
    /// under software emulation (a VM without KVM).
    #[arg(long)]
    pub cell_timeout: Option<u64>,
    /// Seed of every generated image and random access pattern.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub root: RootArgs,
}

/// Default time budget of a quick run: extra repetitions stop in time for the run (teardown and
/// cleanup included) to end within 5 minutes.
const QUICK_TIME_BUDGET_S: u64 = 270;

/// `5%` or `0.05`: a relative half-width in (0, 1).
fn parse_ci_target(s: &str) -> Result<f64, String> {
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|e| format!("'{s}': {e} (give e.g. 5% or 0.05)"))?;
    if !(v > 0.0 && v < 1.0) {
        return Err(format!("'{s}': the target must be above 0% and below 100%"));
    }
    Ok(v)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        print!("{}", super::workloads::text());
        return Ok(ExitCode::SUCCESS);
    }
    // Unknown driver or workload names and --set values no cell accepts are usage errors
    // (exit 2), found before anything (run dir, root, ledger) is created.
    if args.max_reps == Some(0) {
        return Err(super::UsageError("run: --max-reps must be at least 1".into()).into());
    }
    if let Err(e) = runner::matrix::plan(args.drivers.as_deref(), args.workloads.as_deref(), args.profile, args.repeat, &args.sets) {
        return Err(super::UsageError(format!("run: {e:#}")).into());
    }
    // A run owns its root (it cleans it at the end): one run per root at a time.
    let _lock = match crate::clean::lock_root(&args.root.root)? {
        Ok(l) => l,
        Err(pid) => {
            eprintln!("cowbench run: another cowbench run (pid {pid}) uses {}", args.root.root.display());
            return Ok(ExitCode::from(1));
        }
    };
    let cfg = RunConfig {
        drivers: args.drivers,
        workloads: args.workloads,
        profile: args.profile,
        runtime: args.runtime,
        out: args.out,
        repeat: args.repeat,
        sets: args.sets,
        seed: args.seed,
        root: args.root.root.clone(),
        driver_options: args.root.driver_config().options,
        command_line: std::env::args().collect(),
        cell_timeout: std::time::Duration::from_secs(args.cell_timeout.unwrap_or(
            match args.profile {
                Profile::Quick => 300,
                Profile::Full => 7200,
            } * crate::host::emulation_slowdown(),
        )),
        order: args.order,
        ci_target: args.ci_target,
        max_reps: args.max_reps,
        time_budget: match args.time_budget.or(match args.profile {
            Profile::Quick => Some(QUICK_TIME_BUDGET_S),
            Profile::Full => None,
        }) {
            Some(0) | None => None,
            Some(s) => Some(std::time::Duration::from_secs(s)),
        },
    };
    let out = runner::run(&cfg)?;
    let d = &out.doc;
    let failed: Vec<&str> = d.cells.iter().filter(|c| c.status == CellStatus::Failed).map(|c| c.key.as_str()).collect();
    eprintln!(
        "cowbench: {} cells ok, {} failed, {} skipped in {:.0} s — results: {}",
        d.counts.ok,
        d.counts.failed,
        d.counts.skipped,
        d.duration_s.unwrap_or(0.0),
        out.dir.display()
    );
    // The report is drawn from the raw samples just written, exactly as `cowbench report` would.
    let report = crate::report::write_report(&[out.dir.clone()], &crate::report::ReportOptions::default());
    let report_html = match &report {
        Ok(paths) => {
            let html = paths.html.clone().unwrap_or_else(|| paths.dir.join("report.html"));
            eprintln!("cowbench: report: {}", html.display());
            Some(html)
        }
        Err(e) => {
            eprintln!("cowbench: writing the report failed: {e:#}");
            None
        }
    };
    let summary = serde_json::json!({
        "run_id": d.run_id,
        "status": d.status,
        "dir": out.dir,
        "run_json": out.dir.join("run.json"),
        "samples_csv": out.dir.join("samples.csv"),
        "report_html": report_html,
        "counts": d.counts,
        "failed_cells": failed,
        "duration_s": d.duration_s,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(if d.counts.failed > 0 || d.status != crate::results::RunStatus::Complete || report.is_err() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::parse_ci_target;

    #[test]
    fn ci_target_as_percent_or_fraction() {
        assert_eq!(parse_ci_target("5%"), Ok(0.05));
        assert_eq!(parse_ci_target("0.05"), Ok(0.05));
        assert_eq!(parse_ci_target(" 2.5 %"), Ok(0.025));
        for bad in ["0%", "100%", "-1%", "5x", "", "1"] {
            assert!(parse_ci_target(bad).is_err(), "{bad}");
        }
    }
}
