//! The unionfs-fuse stand-in for kernel aufs.
//!
//! unionfs-fuse has aufs's model: ordered branches, the first one writable, whole-file copy-up
//! to it (`-o cow`). What differs is how it records deletions. Found by reading its behaviour
//! on this host (unionfs-fuse 1.0; the man page still says `.unionfs/`, the program uses
//! `.unionfs-fuse/`):
//!
//! - **whiteout**: deleting `a/b` that lives in a lower branch creates the empty file
//!   `<top branch>/.unionfs-fuse/a/b_HIDDEN~`. A marker in branch *i* hides the path (and,
//!   when it names a directory, everything below it) in every branch below *i*, whether *i* is
//!   writable or read-only; it never hides the path in branch *i* itself.
//! - **opaque directory**: there is no separate marker. `rm -rf d; mkdir d` leaves `d/` in the
//!   top branch *and* `.unionfs-fuse/d_HIDDEN~` beside it: lookups find `d` in the top branch,
//!   and every lower `d/...` is hidden by the marker. cowbench writes OCI opaque markers the
//!   same way. The layer root itself cannot be marked (there is no name to hide), so an opaque
//!   root becomes one whiteout per entry of the lower branches' roots.
//! - creating a file through the mount removes a marker of the same path.
//! - the `.unionfs-fuse` directory shows up in the mounted root unless `hide_meta_files` is
//!   given (it still answers to its name, which containers never ask for).
//!
//! One FUSE daemon runs per mount. `unionfs` daemonizes once the mount is up (libfuse's
//! `fuse_daemonize`), so the spawning call returns when the mount is usable; the daemon's pid is
//! found by its command line (the mount target is its last argument) and recorded, so an
//! unmount in any process can wait for exactly that daemon to exit.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::archive::WhiteoutHandler;

/// The hidden directory unionfs-fuse keeps its markers in, at each branch root.
pub const META_DIR: &str = ".unionfs-fuse";
/// The daemons' log, in the driver root.
pub const LOG: &str = "unionfs.log";
/// Suffix of a whiteout marker.
pub const HIDE_TAG: &str = "_HIDDEN~";

/// Path of the marker that hides `rel` below branch `branch`.
pub fn marker_path(branch: &Path, rel: &Path) -> PathBuf {
    let mut s = branch.join(META_DIR).join(rel).into_os_string();
    s.push(HIDE_TAG);
    PathBuf::from(s)
}

/// The `unionfs` binary and its version, if installed.
pub fn find_tool() -> Option<(PathBuf, String)> {
    let bin = crate::sys::hostinfo::which("unionfs").or_else(|| crate::sys::hostinfo::which("unionfs-fuse"))?;
    let out = Command::new(&bin).arg("--version").output().ok()?;
    // `unionfs --version` prints (on stdout or stderr, depending on the version) a line
    // `unionfs-fuse version: 1.0` among libfuse's own lines.
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("unionfs-fuse version:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    Some((bin, version))
}

/// Writes OCI whiteouts and opaque markers as unionfs-fuse markers into one layer branch.
pub struct Markers<'a> {
    /// The branches below the layer, topmost first (to expand an opaque layer root).
    pub lowers: &'a [PathBuf],
}

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => crate::archive::remove_tree(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn touch_marker(branch: &Path, rel: &Path) -> io::Result<()> {
    let m = marker_path(branch, rel);
    if let Some(dir) = m.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&m)?;
    Ok(())
}

/// A marker path must stay inside the layer and must not touch the marker directory itself
/// (a tar whiting out `.unionfs-fuse` would otherwise wipe the layer's own markers).
fn check_rel(rel: &Path) -> io::Result<()> {
    use std::path::Component;
    let mut comps = rel.components().filter(|c| !matches!(c, Component::CurDir));
    let first = comps.clone().next();
    if comps.any(|c| !matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("whiteout path {} leaves the layer", rel.display())));
    }
    if matches!(first, Some(Component::Normal(n)) if n == META_DIR) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{META_DIR} is reserved for unionfs-fuse markers")));
    }
    Ok(())
}

impl WhiteoutHandler for Markers<'_> {
    fn whiteout(&self, layer: &Path, rel: &Path) -> io::Result<()> {
        check_rel(rel)?;
        // A whiteout in a layer that also holds the entry (applied twice, or a container wrote
        // it) must delete this layer's copy too, or the marker would only hide lower ones.
        remove_any(&layer.join(rel))?;
        touch_marker(layer, rel)
    }

    fn opaque(&self, layer: &Path, rel_dir: &Path) -> io::Result<()> {
        check_rel(rel_dir)?;
        if rel_dir.as_os_str().is_empty() || rel_dir == Path::new(".") {
            // No name to hide: hide every name the lower branches have at their roots.
            let mut names = BTreeSet::new();
            for lower in self.lowers {
                match std::fs::read_dir(lower) {
                    Ok(rd) => {
                        for e in rd {
                            let n = e?.file_name();
                            if n != META_DIR {
                                names.insert(n);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            for n in names {
                touch_marker(layer, Path::new(&n))?;
            }
            return Ok(());
        }
        // The directory stays in this layer; the marker beside it hides every lower `rel_dir/...`.
        touch_marker(layer, rel_dir)
    }
}

/// How one union is mounted.
pub struct MountSpec<'a> {
    pub bin: &'a Path,
    /// Branches, topmost first.
    pub branches: &'a [PathBuf],
    /// Top branch writable; otherwise every branch read-only and the mount `ro`.
    pub writable: bool,
    pub target: &'a Path,
    pub max_files: u64,
    /// Where the daemon's stdout and stderr go (appended): never the caller's pipes, which
    /// a daemon would hold open for as long as it runs.
    pub log: &'a Path,
}

/// The `-o` options and the branch argument of a mount.
pub fn mount_args(spec: &MountSpec<'_>) -> Vec<String> {
    let mut opts = vec![
        "cow".to_string(),
        "hide_meta_files".into(),
        // Containers run as root and other users: allow_other; setuid binaries and device
        // nodes of an image must work: suid, dev; inode numbers of the branches, so hard
        // links and `find -inum` behave: use_ino.
        "allow_other".into(),
        "use_ino".into(),
        "suid".into(),
        "dev".into(),
        "nonempty".into(),
        format!("max_files={}", spec.max_files),
        // Source `cowbench-aufs`, type `fuse.unionfs` in mountinfo: findable as cowbench's.
        "fsname=cowbench-aufs".into(),
        "subtype=unionfs".into(),
    ];
    if !spec.writable {
        opts.push("ro".into());
    }
    let branches = spec
        .branches
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}={}", canonical(b).display(), if i == 0 && spec.writable { "RW" } else { "RO" }))
        .collect::<Vec<_>>()
        .join(":");
    vec!["-o".into(), opts.join(","), branches, canonical(spec.target).display().to_string()]
}

/// The daemon's arguments name canonical paths: `cowbench clean` finds a daemon of a root by
/// the root's canonical path in its command line, whatever form of the root the run was given
/// (relative, through a symlink).
/// Only the parent is resolved: `p` itself may be a FUSE mount, and a stat of it would wait for
/// its daemon.
fn canonical(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir).map(|d| d.join(name)).unwrap_or(abs),
        _ => abs,
    }
}

/// The hard limit of open files: unionfs-fuse raises its own limit to `max_files` and may not
/// go above the hard limit (it fails to start otherwise).
pub fn default_max_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 || lim.rlim_max == libc::RLIM_INFINITY {
        return 32768;
    }
    lim.rlim_max.min(32768)
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // zombie or kernel thread
    }
    Some(raw.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// Whether `pid` is a live unionfs daemon serving `target`.
pub fn is_daemon_for(pid: u32, target: &Path) -> bool {
    if !alive(pid) {
        return false;
    }
    match cmdline(pid) {
        Some(args) => {
            let prog = Path::new(&args[0]).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (prog == "unionfs" || prog == "unionfs-fuse") && args.last().map(String::as_str) == canonical(target).to_str()
        }
        None => false,
    }
}

/// Live unionfs daemons serving `target`.
pub fn daemons_for(target: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if is_daemon_for(pid, target) {
                    out.push(pid);
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// Alive and not a zombie (exited daemons are reaped by init, sometimes later).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the parenthesised command name
            let state = s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Error of a failed mount: the command and its stderr.
pub struct SpawnError {
    pub command: String,
    pub status: String,
    pub stderr: String,
}

/// Start a daemon and return its pid once the union is mounted at `spec.target`.
pub fn mount(spec: &MountSpec<'_>) -> Result<u32, SpawnError> {
    let args = mount_args(spec);
    let before: BTreeSet<u32> = daemons_for(spec.target).into_iter().collect();
    let command = format!("{} {}", spec.bin.display(), shorten(&args.join(" ")));
    let not_started = |e: io::Error| SpawnError { command: command.clone(), status: "not started".into(), stderr: e.to_string() };
    let mut cmd = Command::new(spec.bin);
    cmd.args(&args);
    crate::sys::daemon::detach(&mut cmd, Some(spec.log)).map_err(not_started)?;
    // What this start writes to the shared log begins here.
    let log_start = std::fs::metadata(spec.log).map(|m| m.len()).unwrap_or(0);
    let status = cmd.status().map_err(not_started)?;
    let stderr = || {
        let b = std::fs::read(spec.log).unwrap_or_default();
        let from = (log_start as usize).min(b.len());
        String::from_utf8_lossy(&b[from..]).trim().to_string()
    };
    if !status.success() {
        return Err(SpawnError { command, status: status.to_string(), stderr: stderr() });
    }
    // The parent exits after the daemon signalled that the mount is up; the daemon is the
    // new process serving this target.
    let pid = daemons_for(spec.target).into_iter().find(|p| !before.contains(p));
    match pid {
        Some(p) => Ok(p),
        None => Err(SpawnError {
            command,
            status: status.to_string(),
            stderr: format!("the daemon exited right after mounting {}", stderr()),
        }),
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    } else {
        s.to_string()
    }
}

/// Wait for the daemon `pid` serving `target` to exit after its mount went away; stop it
/// (SIGTERM, then SIGKILL) if it lingers. Only ever signals a process that is verifiably the
/// daemon for `target`. Returns whether it had to be signalled.
pub fn wait_exit(pid: u32, target: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_daemon_for(pid, target) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        if !is_daemon_for(pid, target) {
            return true;
        }
        // SAFETY: kill(2) on a pid verified just above to be our daemon.
        unsafe { libc::kill(pid as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && is_daemon_for(pid, target) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_paths() {
        assert_eq!(marker_path(Path::new("/b"), Path::new("a/c")), PathBuf::from("/b/.unionfs-fuse/a/c_HIDDEN~"));
    }

    #[test]
    fn args_mark_only_the_top_branch_writable() {
        let br = vec![PathBuf::from("/l/3"), PathBuf::from("/l/2"), PathBuf::from("/l/1")];
        let spec = MountSpec {
            bin: Path::new("/usr/bin/unionfs"),
            branches: &br,
            writable: true,
            target: Path::new("/t"),
            max_files: 1024,
            log: Path::new("/l/unionfs.log"),
        };
        let a = mount_args(&spec);
        assert_eq!(a[2], "/l/3=RW:/l/2=RO:/l/1=RO");
        assert!(a[1].split(',').any(|o| o == "cow"));
        assert!(!a[1].split(',').any(|o| o == "ro"));
        let spec = MountSpec { writable: false, ..spec };
        let a = mount_args(&spec);
        assert_eq!(a[2], "/l/3=RO:/l/2=RO:/l/1=RO");
        assert!(a[1].split(',').any(|o| o == "ro"));
        assert_eq!(a[3], "/t");
    }

    #[test]
    fn markers_for_whiteouts_and_opaque_dirs() {
        let d = tempfile::tempdir().unwrap();
        let layer = d.path().join("top");
        let lower = d.path().join("low");
        std::fs::create_dir_all(layer.join("a")).unwrap();
        std::fs::write(layer.join("a/f"), b"x").unwrap();
        std::fs::create_dir_all(lower.join("x")).unwrap();
        std::fs::write(lower.join("y"), b"y").unwrap();
        let lowers = vec![lower.clone()];
        let m = Markers { lowers: &lowers };
        m.whiteout(&layer, Path::new("a/f")).unwrap();
        assert!(!layer.join("a/f").exists());
        assert!(marker_path(&layer, Path::new("a/f")).is_file());
        m.opaque(&layer, Path::new("a")).unwrap();
        assert!(layer.join("a").is_dir());
        assert!(marker_path(&layer, Path::new("a")).is_file());
        m.opaque(&layer, Path::new("")).unwrap();
        assert!(m.whiteout(&layer, Path::new("../escape")).is_err());
        assert!(m.whiteout(&layer, Path::new(META_DIR)).is_err());
        assert!(m.opaque(&layer, Path::new(".unionfs-fuse/a")).is_err());
        assert!(layer.join(META_DIR).is_dir(), "markers survive");
        assert!(marker_path(&layer, Path::new("x")).is_file());
        assert!(marker_path(&layer, Path::new("y")).is_file());
    }
}
