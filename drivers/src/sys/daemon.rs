//! Starting a daemon (zfs-fuse, unionfs-fuse) so that it holds nothing of its caller.
//!
//! A daemon outlives the process that started it. Whatever descriptor it inherits stays open
//! as long as it runs: a caller's pipe never reaches end-of-file, a caller's `flock` is never
//! released (a zfs-fuse daemon once held a test's lock file for 11 minutes). So every
//! descriptor above stderr is closed at `exec`, and stdio goes to `/dev/null` or to a log file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `close_range(2)` flag: mark the range close-on-exec instead of closing it now.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Mark every descriptor from 3 up close-on-exec. Runs between fork and exec: no allocation.
fn cloexec_from_3() -> io::Result<()> {
    // Close-on-exec rather than close: std's own error pipe to the parent (already
    // close-on-exec) must stay open until exec so that a failed exec is still reported.
    // SAFETY: close_range only changes descriptor flags of this (forked) process.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fcntl per possible descriptor.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a struct we own.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur.min(1 << 20) } else { 1024 };
    for fd in 3..max as libc::c_int {
        // SAFETY: fcntl on a descriptor number; EBADF for the unused ones is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Prepare `cmd` to start a daemon: stdin from `/dev/null`, stdout and stderr appended to
/// `log` (created) or `/dev/null`, and no other inherited descriptor.
pub fn detach(cmd: &mut Command, log: Option<&Path>) -> io::Result<()> {
    let out: File = match log {
        Some(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            OpenOptions::new().create(true).append(true).open(p)?
        }
        None => OpenOptions::new().write(true).open("/dev/null")?,
    };
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe { cmd.pre_exec(cloexec_from_3) };
    Ok(())
}

/// The last `max` bytes of a daemon's log, for an error message.
pub fn log_tail(log: &Path, max: usize) -> String {
    let b = std::fs::read(log).unwrap_or_default();
    let from = b.len().saturating_sub(max);
    String::from_utf8_lossy(&b[from..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_detached_child_inherits_no_descriptor() {
        // A descriptor deliberately inheritable, like a shell's `exec 9>lock`.
        let f = tempfile::tempfile().unwrap();
        let fd = 57;
        // SAFETY: dup2 onto a number this test owns; dup2 leaves the copy inheritable.
        assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), fd) }, fd);
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ls /proc/self/fd; echo to-stderr >&2"]);
        detach(&mut cmd, Some(&log)).unwrap();
        assert!(cmd.status().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        let fds: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        // 0, 1, 2 and the descriptor `ls` opens on /proc/self/fd itself.
        assert!(fds.iter().all(|&n| n <= 3), "inherited descriptors: {fds:?}");
        // SAFETY: closing the copy made above.
        unsafe { libc::close(fd) };
        assert!(text.contains("to-stderr"), "{text}");
        assert_eq!(log_tail(&log, 10), "to-stderr");
    }

    #[test]
    fn a_failed_exec_is_still_reported() {
        let mut cmd = Command::new("/nonexistent/cowbench-daemon");
        detach(&mut cmd, None).unwrap();
        assert!(cmd.spawn().is_err());
    }
}
