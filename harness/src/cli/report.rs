//! `cowbench report RUN_DIR...`: verdicts, charts and comparisons from raw samples.
//! stdout carries only the paths written (or, with --json, a JSON document); exit 3 when
//! `--fail-on-regression` finds a cell that got worse beyond noise.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::{self, Format, ReportOptions};

/// Exit code when a cell regressed against the baseline beyond noise.
pub const EXIT_REGRESSION: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directories (each holds a run.json); several merge into one report, a column per run.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Where to write the report (default: the first run directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compare the first run with this run, cell by cell.
    #[arg(long, value_name = "RUN_DIR")]
    pub baseline: Option<PathBuf>,
    /// Formats to write, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "md,html,json")]
    pub format: Vec<Format>,
    /// Exit 3 when a cell got worse than the baseline beyond noise.
    #[arg(long, requires = "baseline")]
    pub fail_on_regression: bool,
    /// Claims file to decide (default: the claims built into cowbench).
    #[arg(long, value_name = "FILE")]
    pub claims: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    // A claims file that cannot be read or names what does not exist is the caller's usage
    // error (exit 2), reported before any run is read.
    for d in a.run_dirs.iter().chain(&a.baseline) {
        if !d.exists() {
            return Err(super::UsageError(format!("report: no run directory or run.json at {}", d.display())).into());
        }
    }
    if let Some(p) = &a.claims {
        crate::claims::ClaimSet::load(p).map_err(|e| super::UsageError(format!("report --claims: {e:#}")))?;
    }
    let opts = ReportOptions { out: a.out, baseline: a.baseline, formats: a.format, claims: a.claims };
    let paths = report::write_report(&a.run_dirs, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&paths)?);
    } else {
        for p in [&paths.md, &paths.html, &paths.json].into_iter().flatten() {
            println!("{}", p.display());
        }
    }
    if opts.baseline.is_some() {
        eprintln!("cowbench report: {} regression(s) against the baseline", paths.regressions);
    }
    if a.fail_on_regression && paths.regressions > 0 {
        return Ok(ExitCode::from(EXIT_REGRESSION));
    }
    Ok(ExitCode::SUCCESS)
}
