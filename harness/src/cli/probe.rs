//! `cowbench probe`: which backends can run here, with what, and why not.

use std::process::ExitCode;

use cowbench_drivers::registry;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Print JSON: {"drivers": [{"name", "available", "implementation", "version", "reason", ...}]}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let reports = registry::probe_all();
    if args.json {
        let doc = serde_json::json!({ "drivers": reports });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<13} {:<10} {:<40} {}", "DRIVER", "AVAILABLE", "IMPLEMENTATION", "NOTE");
    for r in &reports {
        let imp = match (&r.implementation, &r.version) {
            (Some(i), Some(v)) => format!("{i} {v}"),
            (Some(i), None) => i.clone(),
            _ => "-".into(),
        };
        let mut note = r.reason.clone().unwrap_or_default();
        if let Some(h) = &r.hint {
            note = if note.is_empty() { h.clone() } else { format!("{note} ({h})") };
        }
        println!("{:<13} {:<10} {:<40} {}", r.name, if r.available { "yes" } else { "no" }, imp, note);
    }
    Ok(ExitCode::SUCCESS)
}
