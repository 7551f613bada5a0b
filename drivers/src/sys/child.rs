//! Helper commands (mkfs, btrfs, zfs, zpool …) that die with the cowbench process that runs
//! them.
//!
//! A `cowbench run` killed with SIGKILL runs no cleanup, and a helper it had started goes on:
//! an orphaned `mkfs.btrfs` keeps the loop device open, so `cowbench clean`'s detach only marks
//! it for autoclear and the device outlives the clean. A parent-death signal ends such a helper
//! with its caller. Daemons are the opposite case and are started through [`super::daemon`].

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Make `cmd`'s process get SIGKILL when the thread that spawns it exits. Every caller waits for
/// the command on the spawning thread, so this only fires when cowbench itself dies.
pub fn die_with_caller(cmd: &mut Command) -> &mut Command {
    let caller = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and raise are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The caller may have died between fork and prctl: then nobody would send it.
            if libc::getppid() != caller {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A helper started from a thread that then dies without waiting is killed with it.
    #[test]
    fn helper_dies_with_its_caller() {
        let pid = std::thread::spawn(|| {
            let child = die_with_caller(Command::new("sleep").arg("60")).spawn().unwrap();
            child.id()
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The child is ours (spawned by a thread of this process): reap it.
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a status we own.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r == pid as libc::pid_t {
                break;
            }
            assert!(Instant::now() < deadline, "sleep {pid} still runs after its caller's thread exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "status {status:#x}");
    }
}
