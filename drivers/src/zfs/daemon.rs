//! The zfs-fuse daemon: one per host, serving every pool through `/var/run/zfs_socket`.
//!
//! Debian starts it from its init script as `zfs-fuse --pidfile /var/run/zfs-fuse.pid` (it
//! daemonizes itself and reads `/etc/zfs/zfsrc`). cowbench starts it the same way when a
//! driver session needs it and it is not running — never to probe — with its own pid file,
//! no inherited descriptors and its output in [`LOG`], records it in the root's ledger, and
//! leaves a marker so that it stops the daemon again (at teardown, or `cowbench clean`) only
//! if cowbench started it and no pool is imported any more. Start, pool creation and
//! stop are serialized host-wide by a `flock` on [`LOCK`], so one test tearing down its pool
//! cannot stop the daemon under another that is about to create one.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::sys::cmd::run;
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

/// Whether `pid` is a zfs-fuse process.
pub fn is_running(pid: i32) -> bool {
    comm(pid).as_deref() == Some("zfs-fuse")
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

/// Ledger detail of a daemon cowbench is starting / has started (with its pid), so that
/// `cowbench clean` stops exactly that process and no other root's daemon.
fn ledger_detail(pid: Option<i32>) -> String {
    match pid {
        Some(p) => format!("zfs-fuse daemon pid {p}"),
        None => "zfs-fuse daemon".into(),
    }
}

/// The pid in a ledger detail written by [`ensure_recorded`].
pub fn recorded_pid(detail: &str) -> Option<i32> {
    detail.strip_prefix("zfs-fuse daemon pid ")?.trim().parse().ok()
}

/// Start the daemon unless one runs, recording a daemon it starts in `ledger` first (kind
/// Fuse, id [`PIDFILE`], detail with the pid once known; see [`release_recorded`]). Call with
/// [`lock`] held.
pub fn ensure_recorded(ledger: Option<&Ledger>) -> Result<()> {
    if running_pid().is_some() {
        return wait_responsive(Duration::from_secs(20));
    }
    if let Some(l) = ledger {
        l.record(ResourceKind::Fuse, PIDFILE, &ledger_detail(None)).ctx(NAME, None, || "record zfs-fuse in the ledger".into())?;
    }
    match start() {
        Ok(pid) => {
            if let Some(l) = ledger {
                l.record(ResourceKind::Fuse, PIDFILE, &ledger_detail(Some(pid)))
                    .ctx(NAME, None, || "record zfs-fuse's pid in the ledger".into())?;
            }
            Ok(())
        }
        Err(e) => {
            if running_pid().is_none() {
                if let Some(l) = ledger {
                    let _ = l.forget(ResourceKind::Fuse, PIDFILE);
                }
            }
            Err(e)
        }
    }
}

/// What [`release_recorded`] did with a daemon a root's ledger names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// It was running, idle and started for this root: stopped (pid).
    Stopped(i32),
    /// No zfs-fuse daemon of this root runs (never started, exited, or another one runs now).
    Gone,
    /// Still needed: another root's live session holds the turn, or pools are imported.
    InUse(String),
}

/// Stop the daemon a root's ledger recorded (pid from [`recorded_pid`], None when the start
/// was interrupted before the pid was known), unless something still uses it: a live session
/// of any root holding the [`Turn`], or an imported pool.
pub fn release_recorded(recorded: Option<i32>) -> Result<Release> {
    let _l = lock()?;
    let Some(pid) = running_pid() else { return Ok(Release::Gone) };
    // A daemon started for this root is the recorded pid; with no pid recorded, the daemon
    // cowbench started (marker) is the best attribution there is.
    let ours = match recorded {
        Some(r) => r == pid,
        None => marker_pid() == Some(pid),
    };
    if !ours {
        return Ok(Release::Gone);
    }
    let mut g = read_gate();
    g.holders.retain(|p| Path::new(&format!("/proc/{p}")).exists());
    if !g.holders.is_empty() {
        return Ok(Release::InUse(format!(
            "zfs-fuse (pid {pid}) serves root {} (pids {:?})",
            g.root.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            g.holders
        )));
    }
    let pools = imported_pools()?;
    if !pools.is_empty() {
        return Ok(Release::InUse(format!("zfs-fuse (pid {pid}) still has pools imported: {}", pools.join(", "))));
    }
    stop(pid)?;
    Ok(Release::Stopped(pid))
}

fn imported_pools() -> Result<Vec<String>> {
    let out = run(NAME, "zpool", &["list", "-H", "-o", "name"], Duration::from_secs(30))?;
    Ok(out.stdout.lines().map(str::trim).filter(|l| !l.is_empty() && !l.contains("no pools available")).map(String::from).collect())
}

/// The daemon's stdout and stderr (it has no caller to talk to once it runs).
pub const LOG: &str = "/run/cowbench/zfs-fuse.log";

fn start() -> Result<i32> {
    fs::create_dir_all(RUN_DIR).ctx(NAME, None, || format!("create {RUN_DIR}"))?;
    let exe = crate::sys::hostinfo::which("zfs-fuse")
        .ok_or_else(|| Error::unavailable(NAME, "zfs-fuse not found (Debian package zfs-fuse)"))?;
    let _ = fs::remove_file(PIDFILE);
    let mut cmd = Command::new(&exe);
    cmd.args(["--pidfile", PIDFILE]).env_remove("LANG");
    // The daemon keeps what it inherits for as long as it runs: none of the caller's
    // descriptors (pipes, lock files), its output into a log of its own.
    crate::sys::daemon::detach(&mut cmd, Some(Path::new(LOG))).ctx(NAME, None, || format!("prepare {LOG}"))?;
    let command = format!("{} --pidfile {PIDFILE}", exe.display());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Command { driver: NAME.into(), command: command.clone(), status: "not started".into(), stderr: e.to_string() })?;
    // The first process forks the daemon and exits.
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().ctx(NAME, None, || "wait for zfs-fuse".into())? {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Command { driver: NAME.into(), command, status: "did not daemonize in 30 s".into(), stderr: crate::sys::daemon::log_tail(Path::new(LOG), 2000) });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(Error::Command { driver: NAME.into(), command, status: status.to_string(), stderr: crate::sys::daemon::log_tail(Path::new(LOG), 2000) });
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
    wait_responsive(Duration::from_secs(20))?;
    Ok(pid)
}

/// Stop the daemon if cowbench started it and no pool is imported. Call with [`lock`] held.
pub fn stop_if_ours_and_idle() -> Result<()> {
    let Some(pid) = marker_pid() else { return Ok(()) };
    if comm(pid).as_deref() != Some("zfs-fuse") {
        // Gone already (or the pid was reused): forget it.
        let _ = fs::remove_file(MARKER);
        return Ok(());
    }
    if !imported_pools()?.is_empty() {
        return Ok(());
    }
    stop(pid)
}

/// SIGTERM (SIGKILL after 30 s) to the daemon `pid`, then remove what it leaves. Call with
/// [`lock`] held.
fn stop(pid: i32) -> Result<()> {
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
    if comm(pid).as_deref() == Some("zfs-fuse") {
        return Err(Error::Command { driver: NAME.into(), command: format!("kill {pid}"), status: "still running".into(), stderr: "zfs-fuse survived SIGTERM and SIGKILL".into() });
    }
    if marker_pid() == Some(pid) {
        let _ = fs::remove_file(MARKER);
    }
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
