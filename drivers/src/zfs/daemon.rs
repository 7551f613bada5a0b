//! The zfs-fuse daemon: one per host, serving every pool through `/var/run/zfs_socket`.
//!
//! Debian starts it from its init script as `zfs-fuse --pidfile /var/run/zfs-fuse.pid` (it
//! daemonizes itself and reads `/etc/zfs/zfsrc`). cowbench starts it the same way when it is
//! not running, with its own pid file, and leaves a marker so that it stops the daemon again
//! only if cowbench started it and no pool is imported any more. Start, pool creation and
//! stop are serialized host-wide by a `flock` on [`LOCK`], so one test tearing down its pool
//! cannot stop the daemon under another that is about to create one.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd::run;
use super::NAME;
use crate::error::{Error, IoContext, Result};
use crate::ledger::{Ledger, ResourceKind};

const RUN_DIR: &str = "/run/cowbench";
pub const LOCK: &str = "/run/cowbench/zfs-fuse.lock";
pub const PIDFILE: &str = "/run/cowbench/zfs-fuse.pid";
/// Present while a daemon started by cowbench runs; holds its pid.
const MARKER: &str = "/run/cowbench/zfs-fuse.started-by-cowbench";

/// The host-wide lock (see the module doc).
pub fn lock() -> Result<super::FileLock> {
    fs::create_dir_all(RUN_DIR).ctx(NAME, None, || format!("create {RUN_DIR}"))?;
    super::FileLock::acquire(Path::new(LOCK))
}

fn comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string())
}

/// Pid of a running zfs-fuse daemon, if any.
pub fn running_pid() -> Option<i32> {
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| comm(pid).as_deref() == Some("zfs-fuse"))
}

/// Whether the daemon answers (the CLI connects to its socket).
fn responsive() -> bool {
    run(NAME, "zpool", &["list", "-H", "-o", "name"], Duration::from_secs(10)).is_ok()
}

fn wait_responsive(limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if responsive() {
            return Ok(());
        }
        if start.elapsed() > limit {
            // One more call, for its error text.
            return run(NAME, "zpool", &["list", "-H", "-o", "name"], Duration::from_secs(10)).map(|_| ());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the running daemon was started by cowbench.
pub fn started_by_us() -> bool {
    marker_pid().is_some_and(|p| Some(p) == running_pid())
}

fn marker_pid() -> Option<i32> {
    fs::read_to_string(MARKER).ok()?.trim().parse().ok()
}

/// Start the daemon unless one runs. Call with [`lock`] held.
pub fn ensure() -> Result<()> {
    ensure_recorded(None)
}

/// [`ensure`], recording a daemon it starts in `ledger` first (kind Fuse, id [`PIDFILE`]: the
/// daemon's command line names it, which is how `cowbench clean` finds the process).
pub fn ensure_recorded(ledger: Option<&Ledger>) -> Result<()> {
    if running_pid().is_some() {
        return wait_responsive(Duration::from_secs(20));
    }
    if let Some(l) = ledger {
        l.record(ResourceKind::Fuse, PIDFILE, "zfs-fuse daemon").ctx(NAME, None, || "record zfs-fuse in the ledger".into())?;
    }
    let r = start();
    if r.is_err() && running_pid().is_none() {
        if let Some(l) = ledger {
            let _ = l.forget(ResourceKind::Fuse, PIDFILE);
        }
    }
    r
}

fn start() -> Result<()> {
    fs::create_dir_all(RUN_DIR).ctx(NAME, None, || format!("create {RUN_DIR}"))?;
    let exe = crate::sys::hostinfo::which("zfs-fuse")
        .ok_or_else(|| Error::unavailable(NAME, "zfs-fuse not found (Debian package zfs-fuse)"))?;
    let _ = fs::remove_file(PIDFILE);
    // Null stdio: the daemon keeps its descriptors, and a pipe would never be closed.
    let mut child = Command::new(&exe)
        .args(["--pidfile", PIDFILE])
        .env_remove("LANG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command { driver: NAME.into(), command: format!("{} --pidfile {PIDFILE}", exe.display()), status: "not started".into(), stderr: e.to_string() })?;
    // The first process forks the daemon and exits.
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().ctx(NAME, None, || "wait for zfs-fuse".into())? {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Command { driver: NAME.into(), command: "zfs-fuse".into(), status: "did not daemonize in 30 s".into(), stderr: String::new() });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(Error::Command { driver: NAME.into(), command: format!("zfs-fuse --pidfile {PIDFILE}"), status: status.to_string(), stderr: err });
    }
    let pid = (0..100)
        .find_map(|_| {
            let p = fs::read_to_string(PIDFILE).ok().and_then(|s| s.trim().parse::<i32>().ok());
            if p.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            p
        })
        .or_else(running_pid)
        .ok_or_else(|| Error::Command { driver: NAME.into(), command: "zfs-fuse".into(), status: "exited".into(), stderr: "no daemon process after start".into() })?;
    fs::write(MARKER, pid.to_string()).ctx(NAME, None, || format!("write {MARKER}"))?;
    // Like Debian's init script: the OOM killer must not take the daemon (and every pool).
    let _ = fs::write(format!("/proc/{pid}/oom_score_adj"), "-1000");
    wait_responsive(Duration::from_secs(20))
}

/// Stop the daemon if cowbench started it and no pool is imported. Call with [`lock`] held.
pub fn stop_if_ours_and_idle() -> Result<()> {
    let Some(pid) = marker_pid() else { return Ok(()) };
    if comm(pid).as_deref() != Some("zfs-fuse") {
        // Gone already (or the pid was reused): forget it.
        let _ = fs::remove_file(MARKER);
        return Ok(());
    }
    let pools = run(NAME, "zpool", &["list", "-H", "-o", "name"], Duration::from_secs(30))?;
    if pools.stdout.lines().any(|l| !l.trim().is_empty() && !l.contains("no pools available")) {
        return Ok(());
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .ctx(NAME, None, || format!("stop zfs-fuse (pid {pid})"))?;
    let start = Instant::now();
    while comm(pid).as_deref() == Some("zfs-fuse") {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(MARKER);
    let _ = fs::remove_file(PIDFILE);
    // The daemon mounts its kstats at /zfs-kstat and unmounts them when it exits; make sure.
    if crate::sys::mounts::is_mountpoint(Path::new("/zfs-kstat")) && running_pid().is_none() {
        let _ = crate::sys::mounts::unmount(Path::new("/zfs-kstat"));
    }
    Ok(())
}

/// Which driver root may use zfs-fuse now, host-wide: `{"root": ..., "holders": [pid, ...]}`,
/// read and written under [`LOCK`].
const GATE: &str = "/run/cowbench/zfs-fuse.gate";
/// How long a handle waits for another root to finish with zfs-fuse.
const GATE_WAIT: Duration = Duration::from_secs(1800);

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct GateState {
    root: Option<std::path::PathBuf>,
    /// One entry per open handle (a pid may appear several times).
    holders: Vec<i32>,
}

fn read_gate() -> GateState {
    fs::read(GATE).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn write_gate(g: &GateState) -> Result<()> {
    let b = serde_json::to_vec(g).expect("serializable");
    let tmp = format!("{GATE}.tmp");
    fs::write(&tmp, b).and_then(|_| fs::rename(&tmp, GATE)).ctx(NAME, None, || format!("write {GATE}"))
}

/// One driver root at a time uses zfs-fuse, host-wide.
///
/// zfs-fuse 0.7's FUSE listener can hang for good, holding its lock while it reads from the
/// wrong descriptor, when filesystems are mounted and unmounted while requests for other
/// mounts are in flight: seen here whenever two roots (two tests, or a test and a benchmark
/// run) worked at once; then every zfs-fuse mount on the host blocks. The work on one root is
/// sequential and never triggered it. So handles on different roots wait for each other,
/// while handles on the same root (a second handle, a second process) share the turn. A turn
/// whose holders have all exited is free again. The OpenZFS kernel module needs none of this.
pub struct Turn {
    pid: i32,
}

impl Turn {
    pub fn take(root: &Path) -> Result<Turn> {
        let pid = std::process::id() as i32;
        let start = Instant::now();
        loop {
            {
                let _l = lock()?;
                let mut g = read_gate();
                g.holders.retain(|p| Path::new(&format!("/proc/{p}")).exists());
                if g.holders.is_empty() || g.root.as_deref() == Some(root) {
                    g.root = Some(root.to_path_buf());
                    g.holders.push(pid);
                    write_gate(&g)?;
                    return Ok(Turn { pid });
                }
                if start.elapsed() > GATE_WAIT {
                    return Err(Error::unavailable(
                        NAME,
                        format!(
                            "zfs-fuse is in use by root {} (pids {:?}) and runs one root at a time",
                            g.root.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                            g.holders
                        ),
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Ok(_l) = lock() else { return };
        let mut g = read_gate();
        if let Some(i) = g.holders.iter().position(|p| *p == self.pid) {
            g.holders.remove(i);
        }
        if g.holders.is_empty() {
            g.root = None;
        }
        let _ = write_gate(&g);
    }
}
