//! The host report: everything needed to reproduce a run or to judge its numbers — cowbench
//! version and revision, kernel, distro, CPU, memory, cgroup layout, OCI runtime, whether this
//! is the cowbench VM, and per backend its availability, implementation and the storage it will
//! use (filesystem, device, IO scheduler, mount options, loop-backed or not).
//! Printed by `cowbench probe` and stored in every `run.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cowbench_drivers::sys::{hostinfo, mounts};
use cowbench_drivers::{registry, ProbeReport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub cowbench: CowbenchVersion,
    pub kernel: String,
    pub distro: String,
    pub cpu: Cpu,
    pub memory_bytes: u64,
    pub cgroup: CgroupLayout,
    /// The OCI runtime a run uses (None when it is not installed).
    pub runtime: Option<RuntimeInfo>,
    /// Every OCI runtime found (runc, crun).
    pub runtimes_found: Vec<RuntimeInfo>,
    pub environment: Environment,
    /// The cowbench root and the filesystem holding it.
    pub root: Storage,
    pub drivers: Vec<BackendInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CowbenchVersion {
    pub version: String,
    /// `git rev-parse --short=12 HEAD` of the source tree, `-dirty` when it has local changes;
    /// None when the tree is not there any more.
    pub git_revision: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub model: String,
    pub count: usize,
}

/// cgroup layout, detected like youki's `libcgroups::common`: the filesystem type of
/// /sys/fs/cgroup (cgroup2 → v2; tmpfs → v1, or hybrid when /sys/fs/cgroup/unified is cgroup2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    V1,
    V2,
    Hybrid,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub name: String,
    pub path: String,
    pub version: Option<String>,
}

/// Where the numbers come from: the machine itself or the cowbench VM (scripts/vm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Environment {
    Host,
    Vm { accel: String, vcpus: usize, mem_bytes: u64 },
}

/// The storage a backend (or the root) sits on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// The directory the backend keeps its state in.
    pub path: String,
    /// Filesystem holding `path` (for loop-backed backends: the filesystem holding the image file).
    pub filesystem: Option<String>,
    pub device: Option<String>,
    /// Active IO scheduler of the device (`/sys/block/<dev>/queue/scheduler`).
    pub scheduler: Option<String>,
    pub mount_options: Option<String>,
    /// Storage is a file attached to a loop device: O_DIRECT and device effects may be hidden.
    pub loop_backed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    #[serde(flatten)]
    pub probe: ProbeReport,
    pub storage: Storage,
}

/// Options that point a backend at real storage instead.
const REAL_STORAGE_OPTIONS: [&str; 4] = ["device", "dataset", "thinpool", "pool"];

/// Probe the host. `runtime` is the runtime a run will use (`runc` or `crun`).
pub fn probe(root: &Path, runtime: &str, options: &std::collections::BTreeMap<String, String>) -> HostInfo {
    let runtimes_found: Vec<RuntimeInfo> = ["runc", "crun"].iter().filter_map(|n| runtime_info(n)).collect();
    let drivers = registry::probe_all()
        .into_iter()
        .map(|probe| {
            let dir = root.join(&probe.name);
            let user_storage = REAL_STORAGE_OPTIONS.iter().any(|o| options.contains_key(*o));
            let loop_backed = probe.loop_backed_by_default && !user_storage;
            let mut storage = storage_of(&dir);
            storage.loop_backed = loop_backed;
            BackendInfo { probe, storage }
        })
        .collect();
    HostInfo {
        cowbench: CowbenchVersion { version: env!("CARGO_PKG_VERSION").into(), git_revision: git_revision() },
        kernel: hostinfo::kernel_release(),
        distro: distro(),
        cpu: cpu(),
        memory_bytes: mem_total(),
        cgroup: cgroup_layout(),
        runtime: runtimes_found.iter().find(|r| r.name == runtime).cloned(),
        runtimes_found,
        environment: environment(),
        root: storage_of(root),
        drivers,
    }
}

fn git_revision() -> Option<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let out = Command::new("git").arg("-C").arg(src).args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = Command::new("git")
        .arg("-C")
        .arg(src)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        rev.push_str("-dirty");
    }
    Some(rev)
}

/// PRETTY_NAME of /etc/os-release.
pub fn distro() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    parse_os_release(&text).unwrap_or_else(|| "unknown".into())
}

fn parse_os_release(text: &str) -> Option<String> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    field("PRETTY_NAME").or_else(|| field("NAME"))
}

fn cpu() -> Cpu {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let count = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Cpu { model, count }
}

fn mem_total() -> u64 {
    crate::results::schema::meminfo().get("MemTotal_bytes").copied().unwrap_or(0)
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

// The magic's type differs between architectures (i64 here, i32 on some 32-bit targets).
#[allow(clippy::unnecessary_cast)]
fn fs_magic(p: &str) -> Option<i64> {
    nix::sys::statfs::statfs(p).ok().map(|s| s.filesystem_type().0 as i64)
}

pub fn cgroup_layout() -> CgroupLayout {
    match fs_magic("/sys/fs/cgroup") {
        Some(CGROUP2_SUPER_MAGIC) => CgroupLayout::V2,
        Some(TMPFS_MAGIC) => {
            if fs_magic("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
                CgroupLayout::Hybrid
            } else {
                CgroupLayout::V1
            }
        }
        _ => CgroupLayout::Unknown,
    }
}

/// Mount points of every cgroup hierarchy (each v1 controller and the unified one).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    mounts::mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.target)
        .collect()
}

pub fn runtime_info(name: &str) -> Option<RuntimeInfo> {
    let path = hostinfo::which(name)?;
    let version = Command::new(&path).arg("--version").output().ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        // "runc version 1.1.5+ds1" / "crun version 1.8.1"
        text.lines().next().and_then(|l| l.split_whitespace().nth(2)).map(str::to_string)
    });
    Some(RuntimeInfo { name: name.into(), path: path.display().to_string(), version })
}

/// How many times slower than a native host this process runs: software emulation (QEMU TCG)
/// translates every guest instruction, ~5× for the quick profile measured here. Defaults that
/// are durations (cell timeouts) scale by it; measurements never do.
pub fn emulation_slowdown() -> u64 {
    match environment() {
        Environment::Vm { accel, .. } if accel == "tcg" => 5,
        _ => 1,
    }
}

fn environment() -> Environment {
    if std::env::var("COWBENCH_VM").as_deref() == Ok("1") {
        Environment::Vm {
            accel: std::env::var("COWBENCH_VM_ACCEL").unwrap_or_else(|_| "unknown".into()),
            vcpus: cpu().count,
            mem_bytes: mem_total(),
        }
    } else {
        Environment::Host
    }
}

/// Storage facts for `path` (which may not exist yet: its nearest existing ancestor is used).
pub fn storage_of(path: &Path) -> Storage {
    let mut existing = path.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            break;
        }
    }
    let mut s = Storage { path: path.display().to_string(), ..Default::default() };
    if let Ok(m) = mounts::fstype_of(&existing) {
        s.filesystem = Some(m.fstype);
        s.mount_options = Some(merge_options(&m.options, &m.super_options));
        if m.source.starts_with("/dev/") {
            s.scheduler = scheduler_of(&m.source);
        }
        s.device = Some(m.source);
    }
    s
}

/// Per-mount and superblock options as one list, each option once.
fn merge_options(mount: &str, sb: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for o in mount.split(',').chain(sb.split(',')) {
        if !o.is_empty() && !seen.contains(&o) {
            seen.push(o);
        }
    }
    seen.join(",")
}

/// Active scheduler (the bracketed one) of a block device or of the disk a partition is on.
pub fn scheduler_of(dev: &str) -> Option<String> {
    let real = std::fs::canonicalize(dev).ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let class = PathBuf::from("/sys/class/block").join(&name);
    // A partition's queue is its parent disk's.
    let disk = if class.join("partition").exists() {
        std::fs::canonicalize(&class).ok()?.parent()?.file_name()?.to_str()?.to_string()
    } else {
        name
    };
    let text = std::fs::read_to_string(format!("/sys/block/{disk}/queue/scheduler")).ok()?;
    parse_scheduler(&text)
}

fn parse_scheduler(text: &str) -> Option<String> {
    let t = text.trim();
    match (t.find('['), t.find(']')) {
        (Some(a), Some(b)) if b > a => Some(t[a + 1..b].to_string()),
        _ if !t.is_empty() && !t.contains(' ') => Some(t.to_string()),
        _ => None,
    }
}

/// Human-readable report for `cowbench probe`.
pub fn render_text(h: &HostInfo) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let rev = h.cowbench.git_revision.as_deref().unwrap_or("unknown revision");
    let _ = writeln!(o, "cowbench     {} ({rev})", h.cowbench.version);
    let _ = writeln!(o, "kernel       {}", h.kernel);
    let _ = writeln!(o, "distro       {}", h.distro);
    let _ = writeln!(o, "cpu          {} x {}", h.cpu.count, h.cpu.model);
    let _ = writeln!(o, "memory       {:.1} GiB", h.memory_bytes as f64 / (1u64 << 30) as f64);
    let _ = writeln!(o, "cgroups      {:?}", h.cgroup);
    match &h.runtime {
        Some(r) => {
            let _ = writeln!(o, "runtime      {} {} ({})", r.name, r.version.as_deref().unwrap_or("?"), r.path);
        }
        None => {
            let _ = writeln!(o, "runtime      not found");
        }
    }
    let env = match &h.environment {
        Environment::Host => "host".to_string(),
        Environment::Vm { accel, vcpus, mem_bytes } => {
            format!("cowbench VM (accel {accel}, {vcpus} vCPUs, {:.1} GiB)", *mem_bytes as f64 / (1u64 << 30) as f64)
        }
    };
    let _ = writeln!(o, "environment  {env}");
    let _ = writeln!(o, "root         {} on {}", h.root.path, storage_line(&h.root));
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<13} {:<10} {:<40} NOTE", "DRIVER", "AVAILABLE", "IMPLEMENTATION");
    for b in &h.drivers {
        let r = &b.probe;
        let imp = match (&r.implementation, &r.version) {
            (Some(i), Some(v)) => format!("{i} {v}"),
            (Some(i), None) => i.clone(),
            _ => "-".into(),
        };
        let mut note = r.reason.clone().unwrap_or_default();
        if let Some(hint) = &r.hint {
            note = if note.is_empty() { hint.clone() } else { format!("{note} ({hint})") };
        }
        if r.available {
            note = format!("storage: {}", storage_line(&b.storage));
        }
        let _ = writeln!(o, "{:<13} {:<10} {:<40} {}", r.name, if r.available { "yes" } else { "no" }, imp, note);
    }
    o
}

fn storage_line(s: &Storage) -> String {
    let mut l = format!(
        "{} {} (scheduler {}, {})",
        s.filesystem.as_deref().unwrap_or("?"),
        s.device.as_deref().unwrap_or("?"),
        s.scheduler.as_deref().unwrap_or("n/a"),
        s.mount_options.as_deref().unwrap_or("?")
    );
    if s.loop_backed {
        l.push_str(", LOOP-BACKED file");
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_scheduler("none [mq-deadline] kyber bfq\n").as_deref(), Some("mq-deadline"));
        assert_eq!(parse_scheduler("none\n").as_deref(), Some("none"));
        assert_eq!(merge_options("rw,relatime", "rw,discard"), "rw,relatime,discard");
        assert_eq!(
            parse_os_release("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn probe_this_host() {
        let h = probe(Path::new("/var/lib/cowbench-nonexistent/x"), "runc", &Default::default());
        assert!(h.cpu.count >= 1);
        assert!(h.memory_bytes > 0);
        assert_eq!(h.drivers.len(), registry::DRIVERS.len());
        // The nearest existing ancestor is used for a root that does not exist yet.
        assert!(h.root.filesystem.is_some());
        assert_ne!(h.cgroup, CgroupLayout::Unknown);
        let j = serde_json::to_value(&h).unwrap();
        assert!(j["environment"]["kind"].is_string());
    }
}
