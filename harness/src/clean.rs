//! `cowbench clean`: remove everything cowbench created under a root after a crash or `kill -9`
//! — and nothing else. Idempotent: a second call finds nothing and removes nothing.
//!
//! Order matters, each step frees what the next one needs:
//! 1. containers in cowbench's runtime state dirs `<root>/runtime/{runc,crun}` (kill, delete);
//! 2. cgroups of this root (`cowbench/<hash>` in every v1 controller and the unified hierarchy,
//!    plus the ledger's), processes killed, removed deepest first;
//! 3. every mount under the root, deepest first (FUSE daemons serving them exit; any left are
//!    killed);
//! 4. each backend whose directory exists: `registry::open(name).teardown()` (open adopts the
//!    backend's store, teardown releases it); then, whether or not that worked, what no open
//!    adopts, released by the backend that makes it (`registry::release_named`): zpools named
//!    `cowbench-<tag>`, dm devices with that prefix; then FUSE daemons whose command line names a path under the root, mounts, loop
//!    devices whose backing file is under the root; then the backend's directory;
//! 5. the ledger (`<root>/ledger.jsonl`) as a second safety net for anything still live — a
//!    zfs-fuse daemon (host-wide) only when the root's run started it (pid in the ledger) and
//!    no live run of any root holds its turn (see `zfs::daemon::release_recorded`);
//! 6. the state that only means something to a live run: `containers/`, `runtime/`, workload
//!    scratch dirs, `run.lock` (unless a live run holds it), the ledger.
//!
//! Every step that fails and leaves something behind is in [`CleanReport::errors`] (exit code
//! 1 for `cowbench clean`): clean never reports success over what it could not remove.
//!
//! `<tag>` is 8 hex digits of sha256 of the canonical root path ([`root_tag`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cowbench_drivers::ledger::{Entry, Ledger, ResourceKind};
use cowbench_drivers::sys::{hostinfo, loopdev, mounts};
use cowbench_drivers::zfs::daemon as zfs_daemon;
use cowbench_drivers::{registry, DriverConfig};
use serde::Serialize;

use crate::container::{Runtime, RuntimeKind};
use sha2::Digest;

/// Runtimes whose state dirs live under `<root>/runtime/`.
pub const RUNTIMES: [&str; 2] = ["runc", "crun"];

#[derive(Debug, Clone, Default)]
pub struct CleanOptions {
    /// Do not print each removal on stderr.
    pub quiet: bool,
    /// Backend options (as given to `run`), passed to `registry::open` for teardown.
    pub driver_options: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanReport {
    pub root: String,
    pub removed: Vec<Removed>,
    /// Steps that failed and left something behind; non-empty means exit code 1.
    pub errors: Vec<String>,
    /// What clean deliberately left (a host-wide daemon another root's live run uses) or a
    /// driver teardown that failed while its resources were still removed directly.
    pub warnings: Vec<String>,
}

impl CleanReport {
    fn removed(&mut self, quiet: bool, kind: &str, id: impl Into<String>) {
        let id = id.into();
        if !quiet {
            eprintln!("removed {kind} {id}");
        }
        self.removed.push(Removed { kind: kind.into(), id });
    }
    fn error(&mut self, quiet: bool, e: String) {
        if !quiet {
            eprintln!("error: {e}");
        }
        self.errors.push(e);
    }
    fn warning(&mut self, quiet: bool, w: String) {
        if !quiet {
            eprintln!("warning: {w}");
        }
        self.warnings.push(w);
    }
}

/// The canonical form of `root` (which may no longer exist: then as given, made absolute).
pub fn canonical_root(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()))
}

/// 8 hex digits naming this root in host-wide namespaces (cgroups, zpools, dm devices).
pub fn root_tag(root: &Path) -> String {
    let canon = canonical_root(root);
    hex::encode(&sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes())[..4])
}

/// The cgroup (relative to every hierarchy's root) under which cowbench puts the containers of
/// `root`: `cowbench/<12 hex of sha256(canonical root)>`, as `container::Runtime` names it.
pub fn cgroup_parent(root: &Path) -> String {
    let canon = canonical_root(root);
    format!("cowbench/{}", hex::encode(&sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes())[..6]))
}

/// An exclusive hold on a root for the length of a run (`<root>/run.lock`, flock). The kernel
/// drops it when the process dies, so a `kill -9` never leaves a stale lock behind.
pub struct RootLock {
    _file: std::fs::File,
}

/// The lock file of a run, in the root.
pub const RUN_LOCK: &str = "run.lock";

/// Take the root's lock. Err(pid text) when another process holds it.
///
/// `cowbench clean` removes the lock file while holding it; a process that opened the old
/// file meanwhile would lock an unlinked inode, so the lock only counts when the path still
/// names the locked file.
pub fn lock_root(root: &Path) -> std::io::Result<Result<RootLock, String>> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(root)?;
    let path = root.join(RUN_LOCK);
    loop {
        // std opens with O_CLOEXEC: no daemon started by the run inherits the lock.
        let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                return Ok(Err(holder.trim().to_string()));
            }
            return Err(e);
        }
        let locked = f.metadata()?;
        match std::fs::metadata(&path) {
            Ok(m) if m.ino() == locked.ino() && m.dev() == locked.dev() => {}
            // Removed or replaced between open and flock: lock the file the path names now.
            _ => continue,
        }
        f.set_len(0)?;
        f.rewind()?;
        write!(f, "{}", std::process::id())?;
        return Ok(Ok(RootLock { _file: f }));
    }
}

/// The runtime state dir cowbench uses for `runtime` under `root`.
pub fn runtime_state_dir(root: &Path, runtime: &str) -> PathBuf {
    root.join("runtime").join(runtime)
}

pub fn clean(root: &Path, opts: &CleanOptions) -> CleanReport {
    let q = opts.quiet;
    let root = canonical_root(root);
    let mut rep = CleanReport { root: root.display().to_string(), ..Default::default() };
    let ledger = Ledger::open(&root);
    let entries = ledger.entries().unwrap_or_else(|e| {
        rep.error(q, format!("read ledger {}: {e}", ledger.path().display()));
        Vec::new()
    });

    let zfs_daemons_before: Vec<i32> = entries
        .iter()
        .filter(|e| e.kind == ResourceKind::Fuse && e.id == zfs_daemon::PIDFILE)
        .filter_map(|e| zfs_daemon::recorded_pid(&e.detail))
        .filter(|&pid| zfs_daemon::is_running(pid))
        .collect();

    // 1. Containers: through the container module first (it knows how each runtime must be
    //    called on this host), then directly for anything it could not handle.
    for kind in [RuntimeKind::Runc, RuntimeKind::Crun] {
        if !runtime_state_dir(&root, kind.as_str()).is_dir() {
            continue;
        }
        match Runtime::new(kind, &root).and_then(|rt| rt.kill_all_ours()) {
            Ok(r) => {
                for c in r.containers {
                    rep.removed(q, "container", format!("{kind}:{c}"));
                }
                for c in r.cgroups {
                    rep.removed(q, "cgroup", c);
                }
                for m in r.mounts {
                    rep.removed(q, "mount", m.display().to_string());
                }
                for e in r.errors {
                    log::info!("{kind}: {e} (retried below)");
                }
            }
            Err(e) => log::info!("{kind}: {e} (removing its containers directly)"),
        }
    }
    for rt in RUNTIMES {
        clean_runtime_dir(&root, rt, &runtime_state_dir(&root, rt), &mut rep, q);
    }
    for e in entries.iter().filter(|e| e.kind == ResourceKind::Container) {
        // detail: "<runtime> <state dir>" — state dirs outside the root are not ours to touch.
        if let Some((rt, dir)) = e.detail.split_once(' ') {
            let dir = PathBuf::from(dir);
            if dir.starts_with(&root) && dir != runtime_state_dir(&root, rt) {
                clean_runtime_dir(&root, rt, &dir, &mut rep, q);
            }
        }
    }

    // 2. Cgroups.
    let mut cgroups = vec![cgroup_parent(&root)];
    cgroups.extend(entries.iter().filter(|e| e.kind == ResourceKind::Cgroup).map(|e| e.id.trim_matches('/').to_string()));
    cgroups.sort();
    cgroups.dedup();
    for hierarchy in crate::host::cgroup_hierarchies() {
        for cg in &cgroups {
            if cg.is_empty() || cg.split('/').any(|c| c == "..") {
                continue;
            }
            let dir = hierarchy.join(cg);
            if dir.is_dir() {
                remove_cgroup_tree(&dir, &mut rep, q);
            }
        }
    }

    // The shared parent `cowbench` goes when no other root has containers in it.
    for hierarchy in crate::host::cgroup_hierarchies() {
        let _ = std::fs::remove_dir(hierarchy.join("cowbench"));
    }

    // 3. Mounts under the root (and FUSE daemons serving them).
    unmount_under(&root, &mut rep, q);

    // 4. Backends.
    let mut cfg = DriverConfig::new(&root);
    for (k, v) in &opts.driver_options {
        cfg = cfg.with_option(k, v);
    }
    let mut failed_teardowns = Vec::new();
    for name in registry::DRIVERS {
        if !root.join(name).exists() {
            continue;
        }
        let per_driver = DriverConfig { root: root.clone(), options: cfg.options.clone() };
        match registry::open(name, &per_driver).and_then(|d| d.teardown()) {
            Ok(()) => rep.removed(q, "backend", name),
            Err(e) => {
                log::info!("teardown of {name} through the driver failed ({e}); removing its resources directly");
                failed_teardowns.push((name, e.to_string()));
            }
        }
    }
    let tags = [root_tag(&root), registry::DRIVERS.iter().map(|n| root_tag(&root.join(n))).collect::<Vec<_>>().join(",")];
    let prefixes: Vec<String> =
        tags.iter().flat_map(|t| t.split(',').map(|t| format!("cowbench-{t}")).collect::<Vec<_>>()).collect();
    release_named(ResourceKind::Pool, &prefixes, &mut rep, q);
    release_named(ResourceKind::Dm, &prefixes, &mut rep, q);
    stop_root_daemons(&root, &mut rep, q);
    unmount_under(&root, &mut rep, q);
    detach_loops_under(&root, &mut rep, q);
    // Teardown leaves the metadata; with nothing mounted below it the directory goes too, so
    // that a second clean finds nothing. A teardown that failed is an error only if what it
    // should have removed is still there after the direct removal.
    for name in registry::DRIVERS {
        let dir = root.join(name);
        if !dir.exists() {
            continue;
        }
        let failed = failed_teardowns.iter().find(|(n, _)| *n == name).map(|(_, e)| e.clone());
        match remove_state_dir(&dir) {
            Ok(()) => {
                if let Some(e) = failed {
                    rep.warning(q, format!("teardown of {name} failed ({e}); its resources were removed directly"));
                    rep.removed(q, "backend", name);
                }
            }
            Err(rm) => match failed {
                Some(e) => rep.error(q, format!("teardown of {name} failed: {e}; {rm}")),
                None => rep.error(q, rm),
            },
        }
    }

    // 5. The ledger.
    for e in &entries {
        ledger_entry(&root, e, &mut rep, q);
    }
    // The zfs backend's teardown stops the daemon it started itself: report that too.
    for pid in zfs_daemons_before {
        let listed = rep.removed.iter().any(|r| r.id == format!("zfs-fuse pid {pid}"));
        if !listed && !zfs_daemon::is_running(pid) {
            rep.removed(q, "fuse-daemon", format!("zfs-fuse pid {pid}"));
        }
    }

    // 6. State that only means something to a live run: container bundles and runtime state,
    //    workload scratch dirs, the run lock (unless a live run holds it), the ledger.
    remove_run_state(&root, &mut rep, q);
    if rep.errors.is_empty() {
        if let Err(e) = ledger.clear() {
            rep.error(q, format!("remove ledger: {e}"));
        }
    }
    rep
}

/// Entries of a root that cowbench's runs create besides the driver dirs (names ending in `*`
/// are prefixes): containers and runtime state, the workloads' scratch directories and second
/// driver instances (harness/src/lab.rs), and where versions before those kept workload
/// files, so an older run's root is cleaned too.
const RUN_STATE: [&str; 8] = [
    "containers",
    "runtime",
    crate::lab::SCRATCH,
    "variant-*",
    "layers-tar",
    "baremetal",
    "odirect-check",
    "churn-discard-*",
];

fn remove_run_state(root: &Path, rep: &mut CleanReport, q: bool) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = RUN_STATE.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *p,
        });
        if !ours {
            continue;
        }
        match remove_state_dir(&e.path()) {
            Ok(()) => rep.removed(q, "state", e.path().display().to_string()),
            Err(err) => rep.error(q, err),
        }
    }
    remove_run_lock(root, rep, q);
}

/// Remove `dir` (a directory or file) unless something is still mounted below it.
fn remove_state_dir(dir: &Path) -> Result<(), String> {
    match mounts::mounts_under(dir) {
        Ok(m) if !m.is_empty() => {
            return Err(format!("{} still has mounts: {}", dir.display(), m.iter().map(|m| m.target.display().to_string()).collect::<Vec<_>>().join(", ")))
        }
        Err(e) => return Err(format!("read mounts: {e}")),
        Ok(_) => {}
    }
    // Descriptors bounded whatever the depth: a layer 25,000 directories deep must go too.
    let r = match cowbench_drivers::archive::remove_tree(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    r.map_err(|e| format!("remove {}: {e}", dir.display()))
}

/// `run.lock` goes unless a live run other than this process holds it (the kernel drops a
/// killed run's flock; `cowbench clean` and a run's final clean hold it themselves).
fn remove_run_lock(root: &Path, rep: &mut CleanReport, q: bool) {
    let path = root.join(RUN_LOCK);
    let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else { return };
    // SAFETY: flock on a descriptor we own.
    let free = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    let holder = std::fs::read_to_string(&path).unwrap_or_default();
    if !free && holder.trim() != std::process::id().to_string() {
        return;
    }
    // Not listed as removed: `cowbench clean` itself creates the file to take the lock.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => rep.error(q, format!("remove {}: {e}", path.display())),
    }
}

fn run_quiet(cmd: &mut Command) -> Result<String, String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!("{:?}: {}: {}", cmd, o.status, String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("{:?}: {e}", cmd)),
    }
}

fn clean_runtime_dir(_root: &Path, rt: &str, dir: &Path, rep: &mut CleanReport, q: bool) {
    if !dir.is_dir() {
        return;
    }
    let Some(bin) = hostinfo::which(rt) else {
        rep.error(q, format!("{} holds {rt} state but {rt} is not installed", dir.display()));
        return;
    };
    let mut ids: Vec<String> = run_quiet(Command::new(&bin).arg("--root").arg(dir).args(["list", "-q"]))
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    // A container whose state exists but that `list` could not read is still a directory here.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    for id in ids {
        let _ = run_quiet(Command::new(&bin).arg("--root").arg(dir).args(["kill", &id, "KILL"]));
        match run_quiet(Command::new(&bin).arg("--root").arg(dir).args(["delete", "-f", &id])) {
            Ok(_) => rep.removed(q, "container", format!("{rt}:{id}")),
            Err(e) => {
                // Already gone as far as the runtime knows: drop the leftover state dir.
                let state = dir.join(&id);
                if state.exists() && std::fs::remove_dir_all(&state).is_ok() {
                    rep.removed(q, "container-state", format!("{rt}:{id}"));
                } else if state.exists() {
                    rep.error(q, format!("delete {rt} container {id}: {e}"));
                }
            }
        }
    }
}

/// Kill every process in the cgroup tree at `dir`, then remove it deepest first.
fn remove_cgroup_tree(dir: &Path, rep: &mut CleanReport, q: bool) {
    let mut dirs: Vec<PathBuf> = walkdir_dirs(dir);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        kill_cgroup_procs(d);
    }
    for d in &dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => {
                    rep.removed(q, "cgroup", d.display().to_string());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline => {
                    // EBUSY while dying processes are still being reaped.
                    log::debug!("rmdir {}: {e}", d.display());
                    kill_cgroup_procs(d);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    rep.error(q, format!("remove cgroup {}: {e}", d.display()));
                    break;
                }
            }
        }
    }
}

fn walkdir_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn kill_cgroup_procs(d: &Path) {
    // v1 freezer: thaw first, a frozen task never dies.
    let state = d.join("freezer.state");
    if state.exists() {
        let _ = std::fs::write(&state, "THAWED");
    }
    if d.join("cgroup.kill").exists() {
        let _ = std::fs::write(d.join("cgroup.kill"), "1");
    }
    for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn unmount_under(root: &Path, rep: &mut CleanReport, q: bool) {
    let ms = match mounts::mounts_under(root) {
        Ok(m) => m,
        Err(e) => return rep.error(q, format!("read mounts: {e}")),
    };
    let mut fuse_targets = Vec::new();
    for m in ms {
        if m.fstype.starts_with("fuse") {
            fuse_targets.push(m.target.clone());
        }
        match mounts::unmount(&m.target) {
            Ok(()) => rep.removed(q, "mount", format!("{} ({})", m.target.display(), m.fstype)),
            Err(e) => rep.error(q, format!("unmount {}: {e}", m.target.display())),
        }
    }
    for t in fuse_targets {
        kill_fuse_daemons(&t, rep, q);
    }
}

/// Programs of the FUSE daemons cowbench starts for a root (zfs-fuse is host-wide and
/// handled through its ledger entry, see [`ledger_entry`]).
const FUSE_DAEMONS: [&str; 3] = ["unionfs", "unionfs-fuse", "fuse-overlayfs"];

/// A process's arguments; None for kernel threads, zombies and processes gone meanwhile.
fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (!raw.is_empty()).then(|| raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect())
}

fn is_fuse_daemon(args: &[Vec<u8>]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let prog = args.first().and_then(|a| Path::new(std::ffi::OsStr::from_bytes(a)).file_name().map(|n| n.to_string_lossy().into_owned()));
    prog.is_some_and(|n| FUSE_DAEMONS.contains(&n.as_str()))
}

/// Whether an argument names `root` or a path below it, alone or as one item of a list
/// (`-o lowerdir=A:B`, unionfs's `A=RW:B=RO`).
fn mentions(arg: &[u8], root: &Path) -> bool {
    let root = root.as_os_str().as_encoded_bytes();
    arg.split(|b| matches!(b, b':' | b'=' | b',')).any(|item| item == root || (item.starts_with(root) && item.get(root.len()) == Some(&b'/')))
}

/// Live FUSE daemons (see [`FUSE_DAEMONS`]) whose command line satisfies `pred`.
fn fuse_daemons(pred: impl Fn(&[Vec<u8>]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| cmdline(pid).is_some_and(|a| is_fuse_daemon(&a) && pred(&a)))
        .collect()
}

/// SIGTERM, then SIGKILL, to each daemon still matching `pred`; an error for one that survives.
fn stop_daemons(pids: Vec<i32>, pred: impl Fn(&[Vec<u8>]) -> bool, what: &str, rep: &mut CleanReport, q: bool) {
    use nix::sys::signal::{kill, Signal};
    let alive = |pid: i32| cmdline(pid).is_some_and(|a| is_fuse_daemon(&a) && pred(&a));
    for pid in pids {
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            if !alive(pid) {
                break;
            }
            let _ = kill(nix::unistd::Pid::from_raw(pid), sig);
            let deadline = Instant::now() + Duration::from_secs(3);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if alive(pid) {
            rep.error(q, format!("FUSE daemon pid {pid} for {what} survived SIGTERM and SIGKILL"));
        } else {
            rep.removed(q, "fuse-daemon", format!("pid {pid} for {what}"));
        }
    }
}

/// FUSE daemons whose command line names the mount point `target`.
fn kill_fuse_daemons(target: &Path, rep: &mut CleanReport, q: bool) {
    let want = target.as_os_str().as_encoded_bytes().to_vec();
    let pred = move |a: &[Vec<u8>]| a.contains(&want);
    stop_daemons(fuse_daemons(&pred), &pred, &target.display().to_string(), rep, q);
}

/// Every FUSE daemon whose command line names a path under `root`: a daemon killed before
/// its mount came up, or whose mount is gone already, has no mount for [`unmount_under`] to find.
fn stop_root_daemons(root: &Path, rep: &mut CleanReport, q: bool) {
    let root = root.to_path_buf();
    let pred = move |a: &[Vec<u8>]| a.iter().skip(1).any(|arg| mentions(arg, &root));
    let pids = fuse_daemons(&pred);
    if !pids.is_empty() {
        stop_daemons(pids, &pred, "this root", rep, q);
    }
}

/// Detach `dev` (backed by `file`) and report it removed only once it is really gone: a helper
/// of the killed run that still holds the device open (mkfs, a reader) turns the detach into
/// autoclear, and the device lives until that process closes it.
fn detach_loop(dev: &Path, file: &Path, rep: &mut CleanReport, q: bool) {
    const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);
    if let Err(e) = loopdev::detach(dev) {
        return rep.error(q, format!("detach {}: {e}", dev.display()));
    }
    match loopdev::wait_released(dev, file, SETTLE) {
        Ok(true) => rep.removed(q, "loop", format!("{} ({})", dev.display(), file.display())),
        Ok(false) => rep.error(
            q,
            format!(
                "{} ({}) is still attached {}s after its detach: held open by {}",
                dev.display(),
                file.display(),
                SETTLE.as_secs(),
                holders(dev).unwrap_or_else(|| "a mount or the kernel".into())
            ),
        ),
        Err(e) => rep.error(q, format!("wait for {} to go: {e}", dev.display())),
    }
}

/// The processes that have `dev` open, as "pid (comm)", for an error message.
fn holders(dev: &Path) -> Option<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).map(|t| t == dev).unwrap_or(false)) {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} ({})", comm.trim()));
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

fn detach_loops_under(root: &Path, rep: &mut CleanReport, q: bool) {
    let Ok(rd) = std::fs::read_dir("/sys/block") else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let dev = PathBuf::from(format!("/dev/{name}"));
        if let Ok(Some(b)) = loopdev::backing_file(&dev) {
            let b = PathBuf::from(b.to_string_lossy().trim_end_matches(" (deleted)"));
            if b.starts_with(root) {
                detach_loop(&dev, &b, rep, q);
            }
        }
    }
}

/// Pools or dm devices named for this root that the backend's teardown did not reach,
/// released by the backend that makes them (`registry::release_named`).
fn release_named(kind: ResourceKind, prefixes: &[String], rep: &mut CleanReport, q: bool) {
    for r in registry::release_named(kind, prefixes) {
        match r.result {
            Ok(()) => rep.removed(q, kind.as_str(), r.id),
            Err(e) => rep.error(q, e.to_string()),
        }
    }
}

fn ledger_entry(root: &Path, e: &Entry, rep: &mut CleanReport, q: bool) {
    match e.kind {
        ResourceKind::Mount | ResourceKind::Fuse => {
            let t = PathBuf::from(&e.id);
            if t.starts_with(root) && mounts::is_mountpoint(&t) {
                match mounts::unmount(&t) {
                    Ok(()) => rep.removed(q, "mount", e.id.clone()),
                    Err(err) => rep.error(q, format!("unmount {}: {err}", e.id)),
                }
            }
            if e.kind == ResourceKind::Fuse && e.id == zfs_daemon::PIDFILE {
                // Host-wide: stop it only if this root's run started it and nothing uses it.
                match zfs_daemon::release_recorded(zfs_daemon::recorded_pid(&e.detail)) {
                    Ok(zfs_daemon::Release::Stopped(pid)) => rep.removed(q, "fuse-daemon", format!("zfs-fuse pid {pid}")),
                    Ok(zfs_daemon::Release::Gone) => {}
                    Ok(zfs_daemon::Release::InUse(why)) => rep.warning(q, format!("left running: {why}")),
                    Err(err) => rep.error(q, format!("stop zfs-fuse: {err}")),
                }
            } else if e.kind == ResourceKind::Fuse {
                kill_fuse_daemons(&t, rep, q);
            }
        }
        ResourceKind::Loop => {
            for dev in loopdev::find_by_file(Path::new(&e.id)).unwrap_or_default() {
                detach_loop(&dev, Path::new(&e.id), rep, q);
            }
        }
        ResourceKind::Pool | ResourceKind::Dm => release_named(e.kind, std::slice::from_ref(&e.id), rep, q),
        ResourceKind::Cgroup => {
            let rel = e.id.trim_matches('/');
            if !rel.is_empty() && !rel.split('/').any(|c| c == "..") {
                for h in crate::host::cgroup_hierarchies() {
                    let d = h.join(rel);
                    if d.is_dir() {
                        remove_cgroup_tree(&d, rep, q);
                    }
                }
            }
        }
        // Done in step 1 (runtime state dirs, ledger-named ones included).
        ResourceKind::Container => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_distinct() {
        let a = root_tag(Path::new("/var/lib/cowbench-test-a"));
        assert_eq!(a.len(), 8);
        assert_eq!(a, root_tag(Path::new("/var/lib/cowbench-test-a")));
        assert_ne!(a, root_tag(Path::new("/var/lib/cowbench-test-b")));
        let cg = cgroup_parent(Path::new("/var/lib/cowbench-test-a"));
        assert!(cg.starts_with("cowbench/") && cg.len() == "cowbench/".len() + 12, "{cg}");
    }

    #[test]
    fn clean_of_empty_root_removes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let r = clean(d.path(), &CleanOptions { quiet: true, ..Default::default() });
        assert!(r.removed.is_empty(), "{:?}", r.removed);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
}
