//! Where a container's cgroup lives and what it has used.
//!
//! Three layouts exist (youki's `libcgroups/src/common.rs` detects them the same way):
//! - **legacy** (v1): one hierarchy per controller under `/sys/fs/cgroup/<controller>`;
//! - **unified** (v2): one hierarchy at `/sys/fs/cgroup` with `cgroup.controllers`;
//! - **hybrid**: v1 controllers plus a controller-less (or nearly so) v2 mount, usually
//!   `/sys/fs/cgroup/unified`. This machine kind is hybrid.
//!
//! Each controller is read from the hierarchy it is actually bound to: on a hybrid host the
//! memory and blkio figures come from v1, on a unified host from v2.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Legacy,
    Unified,
    Hybrid,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Legacy => "v1",
            Layout::Unified => "v2",
            Layout::Hybrid => "hybrid",
        })
    }
}

/// The cgroup mounts of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// v1 controller (or `name=` hierarchy) → mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// The v2 mount, if any.
    pub v2: Option<PathBuf>,
    /// Controllers bound to the v2 hierarchy (its root `cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl Hierarchies {
    /// Read the host's cgroup mounts from /proc/self/mounts.
    pub fn detect() -> io::Result<Hierarchies> {
        let text = fs::read_to_string("/proc/self/mounts")?;
        let mut h = Self::parse_mounts(&text);
        if let Some(v2) = &h.v2 {
            h.v2_controllers = fs::read_to_string(v2.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
        }
        Ok(h)
    }

    /// The cgroup part of a mounts table (unit-testable).
    pub fn parse_mounts(text: &str) -> Hierarchies {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let target = PathBuf::from(f[1].replace("\\040", " "));
            match f[2] {
                "cgroup2" => {
                    v2.get_or_insert(target);
                }
                "cgroup" => {
                    for opt in f[3].split(',') {
                        let known = matches!(
                            opt,
                            "cpu" | "cpuacct" | "cpuset" | "memory" | "devices" | "freezer" | "blkio" | "pids"
                                | "net_cls" | "net_prio" | "perf_event" | "hugetlb" | "rdma" | "misc"
                        );
                        if known || opt.starts_with("name=") {
                            v1.entry(opt.to_string()).or_insert_with(|| target.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        Hierarchies { v1, v2, v2_controllers: Vec::new() }
    }

    pub fn layout(&self) -> Layout {
        let has_v1 = self.v1.keys().any(|k| !k.starts_with("name="));
        match (has_v1, self.v2.is_some()) {
            (true, true) => Layout::Hybrid,
            (false, true) => Layout::Unified,
            _ => Layout::Legacy,
        }
    }

    /// Directories of cgroup `path` (absolute, e.g. `/cowbench/ab12/c1`) in every hierarchy.
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = path.trim_start_matches('/');
        let mut mounts: Vec<&PathBuf> = self.v1.values().collect();
        mounts.extend(self.v2.iter());
        mounts.sort();
        mounts.dedup();
        mounts.into_iter().map(|m| m.join(rel)).collect()
    }

    /// Whether cgroup `path` exists in any hierarchy.
    pub fn exists(&self, path: &str) -> bool {
        self.dirs(path).iter().any(|d| d.is_dir())
    }

    /// Remove cgroup `path` and everything below it (deepest first) in every hierarchy.
    /// Only empty cgroups can be removed; a cgroup with processes gives EBUSY.
    pub fn remove_tree(&self, path: &str) -> io::Result<()> {
        let mut first_err = None;
        for d in self.dirs(path) {
            if let Err(e) = remove_cgroup_dir(&d) {
                if e.kind() != io::ErrorKind::NotFound {
                    first_err.get_or_insert(io::Error::new(e.kind(), format!("rmdir {}: {e}", d.display())));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sub-cgroups (names) directly below `path`, from any hierarchy.
    pub fn children(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.dirs(path) {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The memory cgroup of process `pid` (`self` for this process), from `/proc/<pid>/cgroup`:
    /// the path in the hierarchy [`Hierarchies::accounting`] reads memory from (the v1
    /// `memory` line where memory is bound to v1, else the v2 `0::` line).
    pub fn memory_cgroup_of(&self, pid: &str) -> Option<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        self.memory_cgroup_in(&text)
    }

    /// [`Hierarchies::memory_cgroup_of`] on the text of a `/proc/<pid>/cgroup` file.
    pub fn memory_cgroup_in(&self, proc_cgroup: &str) -> Option<String> {
        let v1 = self.v1.contains_key("memory");
        proc_cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if v1 { controllers.split(',').any(|c| c == "memory") } else { controllers.is_empty() };
            hit.then(|| path.to_string())
        })
    }

    fn memory_dir(&self, path: &str) -> Option<(PathBuf, bool)> {
        let rel = path.trim_start_matches('/');
        if let Some(m) = self.v1.get("memory") {
            return Some((m.join(rel), true));
        }
        self.v2.as_ref().map(|m| (m.join(rel), false))
    }

    fn io_dir(&self, path: &str) -> Option<(PathBuf, bool)> {
        let rel = path.trim_start_matches('/');
        if let Some(m) = self.v1.get("blkio") {
            return Some((m.join(rel), true));
        }
        self.v2.as_ref().map(|m| (m.join(rel), false))
    }

    /// Memory and IO used by cgroup `path` (and its descendants).
    pub fn accounting(&self, path: &str) -> io::Result<Accounting> {
        let mut a = Accounting::default();
        let (mdir, v1) = self.memory_dir(path).ok_or_else(|| io::Error::other("no memory cgroup hierarchy"))?;
        let stat = read_kv(&mdir.join("memory.stat"))?;
        if v1 {
            a.source = "cgroup v1".into();
            // total_* include descendants; plain fields are this cgroup alone.
            let get = |k: &str| stat.get(&format!("total_{k}")).or_else(|| stat.get(k)).copied().unwrap_or(0);
            a.page_cache_bytes = get("cache");
            a.rss_bytes = get("rss");
            a.memory_bytes = read_u64(&mdir.join("memory.usage_in_bytes")).unwrap_or(a.page_cache_bytes + a.rss_bytes);
            a.memory_peak_bytes = read_u64(&mdir.join("memory.max_usage_in_bytes")).ok();
        } else {
            a.source = "cgroup v2".into();
            a.page_cache_bytes = stat.get("file").copied().unwrap_or(0);
            a.rss_bytes = stat.get("anon").copied().unwrap_or(0);
            a.memory_bytes = read_u64(&mdir.join("memory.current")).unwrap_or(a.page_cache_bytes + a.rss_bytes);
            a.memory_peak_bytes = read_u64(&mdir.join("memory.peak")).ok();
        }
        if let Some((idir, v1)) = self.io_dir(path) {
            if v1 {
                // The throttle file counts every bio whatever the IO scheduler; the
                // io_service_bytes of CFQ/BFQ only exists with those schedulers.
                if let Ok(text) = fs::read_to_string(idir.join("blkio.throttle.io_service_bytes_recursive"))
                    .or_else(|_| fs::read_to_string(idir.join("blkio.throttle.io_service_bytes")))
                {
                    let (r, w) = parse_blkio_v1(&text);
                    a.io_read_bytes = r;
                    a.io_write_bytes = w;
                }
            } else if let Ok(text) = fs::read_to_string(idir.join("io.stat")) {
                let (r, w) = parse_io_stat_v2(&text);
                a.io_read_bytes = r;
                a.io_write_bytes = w;
            }
        }
        Ok(a)
    }
}

fn remove_cgroup_dir(d: &Path) -> io::Result<()> {
    // cgroup directories hold only virtual files: rmdir of the directory is how they go, and
    // children must go first.
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_dir(&e.path())?;
            }
        }
    }
    fs::remove_dir(d)
}

pub use cowbench_workloads::lab::Accounting;

fn read_u64(p: &Path) -> io::Result<u64> {
    let s = fs::read_to_string(p)?;
    s.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a number", p.display())))
}

fn read_kv(p: &Path) -> io::Result<BTreeMap<String, u64>> {
    let text = fs::read_to_string(p).map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", p.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect())
}

/// v1 `blkio.throttle.io_service_bytes`: `8:0 Read 4096` lines, summed over devices.
pub fn parse_blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let n: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    (r, w)
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=...` lines, summed over devices.
pub fn parse_io_stat_v2(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        for kv in l.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("rbytes", v)) => r += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => w += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (r, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn layouts() {
        let h = Hierarchies::parse_mounts(HYBRID);
        assert_eq!(h.layout(), Layout::Hybrid);
        assert_eq!(h.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(h.memory_dir("/a/b").unwrap(), (PathBuf::from("/sys/fs/cgroup/memory/a/b"), true));
        assert!(h.dirs("/x").contains(&PathBuf::from("/sys/fs/cgroup/unified/x")));
        let u = Hierarchies::parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n");
        assert_eq!(u.layout(), Layout::Unified);
        assert_eq!(u.io_dir("/a").unwrap(), (PathBuf::from("/sys/fs/cgroup/a"), false));
        let l = Hierarchies::parse_mounts("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n");
        assert_eq!(l.layout(), Layout::Legacy);
    }

    #[test]
    fn memory_cgroup_of_a_process() {
        let text = "9:name=systemd:/\n4:memory:/jobs/a1\n1:cpu,cpuacct:/\n0::/u/b2\n";
        assert_eq!(Hierarchies::parse_mounts(HYBRID).memory_cgroup_in(text).as_deref(), Some("/jobs/a1"));
        let u = Hierarchies::parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n");
        assert_eq!(u.memory_cgroup_in(text).as_deref(), Some("/u/b2"));
        let h = Hierarchies::detect().unwrap();
        assert!(h.memory_cgroup_of("self").is_some_and(|p| p.starts_with('/')));
    }

    #[test]
    fn io_parsers() {
        assert_eq!(parse_blkio_v1("8:0 Read 4096\n8:0 Write 10\n8:0 Sync 3\n8:16 Read 4\nTotal 4110\n"), (4100, 10));
        assert_eq!(parse_io_stat_v2("8:0 rbytes=5 wbytes=7 rios=1 wios=1\n8:16 rbytes=1 wbytes=0\n"), (6, 7));
    }

    #[test]
    fn v2_accounting_from_files() {
        // A unified hierarchy's files, laid out as the kernel does, in a plain directory.
        let t = tempfile::tempdir().unwrap();
        let cg = t.path().join("cowbench/ab/c1");
        fs::create_dir_all(&cg).unwrap();
        fs::write(cg.join("memory.stat"), "anon 4096\nfile 8192\nkernel 100\n").unwrap();
        fs::write(cg.join("memory.current"), "12388\n").unwrap();
        fs::write(cg.join("memory.peak"), "20000\n").unwrap();
        fs::write(cg.join("io.stat"), "254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n").unwrap();
        let h = Hierarchies { v1: BTreeMap::new(), v2: Some(t.path().to_path_buf()), v2_controllers: vec!["memory".into(), "io".into()] };
        assert_eq!(h.layout(), Layout::Unified);
        assert!(h.exists("/cowbench/ab/c1"));
        assert_eq!(h.children("/cowbench/ab"), vec!["c1"]);
        let a = h.accounting("/cowbench/ab/c1").unwrap();
        assert_eq!(
            a,
            Accounting {
                memory_bytes: 12388,
                page_cache_bytes: 8192,
                rss_bytes: 4096,
                memory_peak_bytes: Some(20000),
                io_read_bytes: 10,
                io_write_bytes: 20,
                source: "cgroup v2".into(),
            }
        );
    }

    #[test]
    fn this_host_is_detected() {
        let h = Hierarchies::detect().unwrap();
        // Every Linux host running containers has some cgroup hierarchy.
        assert!(!h.v1.is_empty() || h.v2.is_some());
    }
}
