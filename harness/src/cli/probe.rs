//! `cowbench probe`: which backends can run here, with what, and why not — plus the host facts
//! every run records (kernel, distro, CPU, memory, cgroups, runtime, storage of each backend).

use std::process::ExitCode;

use cowbench_drivers::registry;

use super::RootArgs;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Print JSON: {"drivers": [{"name", "available", "implementation", "version", "reason", ...}],
    /// "host": {...}}.
    #[arg(long)]
    pub json: bool,
    /// OCI runtime whose version to report: runc or crun.
    #[arg(long, default_value = "runc")]
    pub runtime: String,
    #[command(flatten)]
    pub root: RootArgs,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let options = args.root.driver_config().options;
    let host = crate::host::probe(&args.root.root, &args.runtime, &options);
    if args.json {
        let reports = registry::probe_all();
        let doc = serde_json::json!({ "drivers": reports, "host": host });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", crate::host::render_text(&host));
    Ok(ExitCode::SUCCESS)
}
