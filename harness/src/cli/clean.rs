//! `cowbench clean`: remove every container, cgroup, mount, loop device, pool, dm device and FUSE
//! daemon cowbench created under the root (after a crash or kill -9), and nothing else.
//! Each removal is printed on stderr; `--json` prints a summary on stdout.

use std::process::ExitCode;

use super::RootArgs;

#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Print {"root", "removed": [{"kind", "id"}], "errors": [...]} on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

pub fn run(args: CleanArgs) -> anyhow::Result<ExitCode> {
    // Never pull the storage from under a live run; a killed run's lock is gone with it.
    let _lock = if args.root.root.exists() {
        match crate::clean::lock_root(&args.root.root)? {
            Ok(l) => Some(l),
            Err(pid) => {
                eprintln!("cowbench clean: a cowbench run (pid {pid}) is using {}; stop it first", args.root.root.display());
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        None
    };
    let opts = crate::clean::CleanOptions { quiet: false, driver_options: args.root.driver_config().options };
    let report = crate::clean::clean(&args.root.root, &opts);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.removed.is_empty() && report.errors.is_empty() {
        eprintln!("cowbench clean: nothing of cowbench under {}", report.root);
    } else {
        eprintln!("cowbench clean: removed {} resources under {}", report.removed.len(), report.root);
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
