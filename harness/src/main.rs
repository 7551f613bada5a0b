//! The `cowbench` binary. Exit codes: 0 ok, 1 a run or operation failed, 2 usage error,
//! 3 `report --fail-on-regression` found a regression.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match cowbench::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cowbench::cli::run(cli) {
        Ok(code) => code,
        // A usage error anywhere in the chain (bad --set, misspelt name in a claims file).
        Err(e) if e.chain().any(|c| c.is::<cowbench::cli::UsageError>()) => {
            eprintln!("cowbench: {e:#}");
            ExitCode::from(cowbench::cli::EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("cowbench: {e:#}");
            ExitCode::from(1)
        }
    }
}
