//! External commands with a deadline. Used by the zfs backend (which drives the `zfs`/`zpool`
//! CLI like moby does) and by the btrfs backend for its set-up tools (`mkfs.btrfs`,
//! `btrfs --version`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Output of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Run `prog args...`, killing it after `timeout`. A non-zero exit, a signal or the deadline
/// give [`Error::Command`] with the command line and its stderr.
pub fn run(driver: &str, prog: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let line = std::iter::once(prog).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let fail = |status: String, stderr: String| Error::Command {
        driver: driver.into(),
        command: line.clone(),
        status,
        stderr: stderr.trim().to_string(),
    };
    let mut child = crate::sys::child::die_with_caller(&mut Command::new(prog))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // zfs-fuse's tools print localized messages otherwise; the errors are matched on.
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|e| fail("not started".into(), e.to_string()))?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail("wait failed".into(), e.to_string())),
        }
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    match status {
        None => Err(fail(format!("killed after {} s", timeout.as_secs()), stderr)),
        Some(st) if st.success() => Ok(Output { stdout, stderr }),
        Some(st) => {
            let stderr = if stderr.trim().is_empty() { stdout } else { stderr };
            Err(fail(st.to_string(), stderr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_carry_stderr_and_deadline() {
        let e = run("test", "sh", &["-c", "echo boom >&2; exit 3"], Duration::from_secs(10)).unwrap_err();
        match e {
            Error::Command { stderr, status, command, .. } => {
                assert_eq!(stderr, "boom");
                assert!(status.contains('3'), "{status}");
                assert!(command.starts_with("sh -c"));
            }
            other => panic!("unexpected {other}"),
        }
        let e = run("test", "sleep", &["5"], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Command { ref status, .. } if status.contains("killed")), "{e}");
        assert_eq!(run("test", "echo", &["hi"], Duration::from_secs(10)).unwrap().stdout, "hi\n");
    }
}
