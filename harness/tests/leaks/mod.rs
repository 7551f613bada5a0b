//! What a cowbench root may leave on the host, found without touching anything: the checks
//! behind the `cowbench clean` tests. Every check is scoped to one root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cowbench_drivers::registry;
use cowbench_drivers::sys::{hostinfo, loopdev, mounts};

pub fn runc_list(root: &Path) -> Vec<String> {
    let state = root.join("runtime/runc");
    // `runc list` would create the state dir: looking must not leave anything behind.
    if !state.is_dir() {
        return Vec::new();
    }
    let out = Command::new("runc").arg("--root").arg(&state).args(["list", "-q"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    mounts::mounts().unwrap().into_iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2").map(|m| m.target).collect()
}

/// Every cgroup dir of this root: `cowbench/<hash>` in any hierarchy.
pub fn our_cgroups(root: &Path) -> Vec<PathBuf> {
    let parent = cowbench::clean::cgroup_parent(root);
    cgroup_hierarchies().into_iter().map(|h| h.join(&parent)).filter(|p| p.exists()).collect()
}

pub fn loops_under(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") {
            let dev = PathBuf::from(format!("/dev/{name}"));
            if let Ok(Some(b)) = loopdev::backing_file(&dev) {
                if b.starts_with(root) {
                    v.push(dev);
                }
            }
        }
    }
    v
}

/// Mounts whose target or source is under the root.
pub fn mounts_of(root: &Path) -> Vec<String> {
    mounts::mounts()
        .unwrap()
        .into_iter()
        .filter(|m| m.target.starts_with(root) || Path::new(&m.source).starts_with(root))
        .map(|m| format!("{} on {} ({})", m.source, m.target.display(), m.fstype))
        .collect()
}

/// Processes (FUSE daemons, container inits, runc) whose command line mentions the root.
pub fn processes_mentioning(root: &Path) -> Vec<String> {
    let want = root.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&want) && !cmd.contains(" clean ") {
                v.push(format!("{pid}: {cmd}"));
            }
        }
    }
    v
}

/// Whether COWBENCH_REQUIRE_DRIVERS lists `driver`: then it must run, not be skipped.
pub fn required(driver: &str) -> bool {
    std::env::var("COWBENCH_REQUIRE_DRIVERS")
        .map(|v| v.split(',').any(|d| d.trim() == driver || d.trim() == "all"))
        .unwrap_or(false)
}

/// Why a run of `driver` cannot be tested here (not root, driver or runc unavailable); panics
/// instead when the driver is required.
pub fn skip_reason(driver: &str) -> Option<String> {
    if !hostinfo::is_root() {
        return Some("needs root (mounts, containers)".into());
    }
    let r = registry::probe(driver).unwrap();
    if !r.available {
        let why = format!("{driver} unavailable: {}", r.reason.unwrap_or_default());
        assert!(!required(driver), "{driver} is listed in COWBENCH_REQUIRE_DRIVERS but {why}");
        return Some(why);
    }
    if hostinfo::which("runc").is_none() {
        assert!(!required(driver), "runc is needed for {driver} but not installed");
        return Some("runc not installed".into());
    }
    None
}
