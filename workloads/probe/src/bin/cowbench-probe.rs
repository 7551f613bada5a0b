//! `cowbench-probe`: the process inside every cowbench container.
//!
//! Reads one JSON request (argv[1]; `@FILE` reads it from FILE; stdin when there is no argument
//! or it is `-`), performs
//! its operations, and prints one JSON response on stdout. Built as a static binary
//! (`-C target-feature=+crt-static`) so it runs in any image, including busybox-only ones.
//! Exit codes: 0 the request ran (failed operations are in the response), 2 invalid request.

use std::io::{Read, Write};
use std::process::ExitCode;

use cowbench_probe::{ops, Request};

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let text = match arg.as_deref() {
        Some("-h") | Some("--help") => {
            println!("usage: cowbench-probe [REQUEST_JSON | @FILE | -]\nreads a request (argv or stdin), prints JSON samples");
            return ExitCode::SUCCESS;
        }
        Some("--version") => {
            println!("cowbench-probe {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        // `@FILE`: a request too long for an argument (the harness bind-mounts it in).
        Some(s) if s.starts_with('@') => match std::fs::read_to_string(&s[1..]) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cowbench-probe: reading the request from {}: {e}", &s[1..]);
                return ExitCode::from(2);
            }
        },
        Some(s) if s != "-" => s.to_string(),
        _ => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("cowbench-probe: reading the request from stdin: {e}");
                return ExitCode::from(2);
            }
            s
        }
    };
    let req = match Request::from_json(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cowbench-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let resp = ops::run(&req);
    let mut out = std::io::stdout().lock();
    let ok = serde_json::to_writer(&mut out, &resp).is_ok() && writeln!(out).is_ok() && out.flush().is_ok();
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("cowbench-probe: cannot write the response");
        ExitCode::from(1)
    }
}
