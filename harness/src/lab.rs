//! The harness's [`Lab`]: one opened driver of a run on real storage, with the run's OCI
//! runtime, seed and root. Workloads see only the `Lab` trait (workloads/src/lab.rs); this is
//! where its services meet the host: images (the one build-or-reuse policy of
//! [`crate::image::build`]), containers through [`crate::container::Runtime`], cache drops,
//! host memory, backend space and cache, scratch directories and second driver instances.
//!
//! Backend facts come from the driver's typed status and capabilities, never from its name.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use cowbench_drivers::{registry, Driver, DriverConfig, ProbeReport};
use cowbench_workloads::images::ImageSpec;
use cowbench_workloads::lab::{
    Accounting, BackingFileCache, CacheEviction, Container, ContainerSpec, DaemonRss, DriverMemory, ExecOutput, HostMemory, Image, Lab, Notes, RunOutput, Space, StartTimings, StopOutput,
};

use crate::container::{Runtime, RuntimeKind};

/// Where a run's scratch directories live (`<root>/scratch/<what>/<driver>`): one name, so
/// `cowbench clean` removes whatever a workload left there after a crash.
pub const SCRATCH: &str = "scratch";
/// Prefix of a second driver instance's root (`<root>/variant-<options>`).
pub const VARIANT_PREFIX: &str = "variant-";

/// One opened driver and what every cell on it shares.
pub struct HostLab {
    name: String,
    driver: Box<dyn Driver>,
    cfg: DriverConfig,
    probe: ProbeReport,
    /// The OCI runtime every container of the run starts through (a variant shares its
    /// parent's: one state dir and cgroup parent per cowbench root).
    runtime: Runtime,
    seed: u64,
    /// Scratch directories handed out, removed by [`HostLab::close`].
    scratch: Mutex<Vec<PathBuf>>,
    /// Image builds one at a time: two cells asking for the same spec must not both build it.
    building: Mutex<()>,
    /// A variant's own root, removed after its teardown.
    own_root: Option<PathBuf>,
}

impl HostLab {
    /// Open driver `name` as the runner does, with the run's runtime (`runc`, `crun`) and seed.
    pub fn open(name: &str, cfg: &DriverConfig, runtime: &str, seed: u64) -> anyhow::Result<HostLab> {
        let probe = registry::probe(name)?;
        let kind: RuntimeKind = runtime.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let runtime = Runtime::new(kind, &cfg.root)?;
        let driver = registry::open(name, cfg)?;
        Ok(HostLab::from_parts(driver, cfg.clone(), probe, runtime, seed))
    }

    /// A lab on a driver opened elsewhere (a test fixture's second handle, a bench root).
    pub fn from_parts(driver: Box<dyn Driver>, cfg: DriverConfig, probe: ProbeReport, runtime: Runtime, seed: u64) -> HostLab {
        HostLab {
            name: driver.name().to_string(),
            driver,
            cfg,
            probe,
            runtime,
            seed,
            scratch: Mutex::new(Vec::new()),
            building: Mutex::new(()),
            own_root: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn probe_report(&self) -> &ProbeReport {
        &self.probe
    }

    pub fn config(&self) -> &DriverConfig {
        &self.cfg
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The driver's own directory under the root.
    pub fn driver_root(&self) -> PathBuf {
        self.cfg.driver_root(&self.name)
    }

    /// The backend's status for a result snapshot.
    pub fn status_snapshot(&self) -> Option<crate::results::BackendStatus> {
        self.driver.status().ok().map(crate::results::BackendStatus::Typed)
    }

    /// Release everything of the run on this driver: containers a failed cell left behind,
    /// scratch directories, then the backing store (every layer goes with it) and the driver's
    /// metadata directory.
    pub fn close(self) -> anyhow::Result<()> {
        if self.own_root.is_none() {
            // Containers a failed cell left behind hold mounts of the driver's layers. (A
            // variant shares the runtime with its parent, whose containers are not its own.)
            let left = self.runtime.kill_all_ours()?;
            if !left.errors.is_empty() {
                log::warn!("{}: leftover containers: {}", self.name, left.errors.join("; "));
            }
        }
        self.release()
    }

    fn release(&self) -> anyhow::Result<()> {
        let dirs = std::mem::take(&mut *self.scratch.lock().unwrap_or_else(|p| p.into_inner()));
        let mut first: Option<anyhow::Error> = None;
        for d in dirs {
            if let Err(e) = remove_unmounted(&d) {
                log::warn!("{}: scratch: {e:#}", self.name);
                first.get_or_insert(e);
            }
        }
        self.driver.teardown().with_context(|| format!("{}: teardown", self.name))?;
        // Only metadata is left; without it the run-end clean has nothing to re-open.
        remove_unmounted(&self.driver_root())?;
        if let Some(root) = &self.own_root {
            remove_unmounted(root)?;
        }
        first.map_or(Ok(()), Err)
    }
}

/// Remove `dir` unless something is mounted below it (removing through a mount would delete
/// the mounted filesystem's content).
fn remove_unmounted(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let ms = cowbench_drivers::sys::mounts::mounts_under(dir).with_context(|| format!("read mounts under {}", dir.display()))?;
    if !ms.is_empty() {
        anyhow::bail!("{} still has mounts ({}); left for `cowbench clean`", dir.display(), ms.len());
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))
}

/// `sync`, then empty the page cache, dentries and inodes.
pub fn drop_caches() -> Result<(), String> {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("write /proc/sys/vm/drop_caches: {e}"))
}

/// The host's memory now (`/proc/meminfo`, `/proc/vmstat`).
pub fn host_memory() -> HostMemory {
    let m = crate::results::schema::meminfo();
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    HostMemory {
        page_cache_bytes: get("Cached_bytes") + get("Buffers_bytes"),
        total_bytes: get("MemTotal_bytes"),
        available_bytes: get("MemAvailable_bytes"),
        drop_pagecache_count: drop_pagecache_count(),
    }
}

/// `/proc/vmstat` `drop_pagecache` + `drop_slab`: how often anyone on the host has dropped
/// cached file pages. Dropping the slab caches alone (`drop_caches` = 2) frees unused inodes,
/// and their page cache with them.
fn drop_pagecache_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<u64>().ok());
    Some(get("drop_pagecache ")? + get("drop_slab ").unwrap_or(0))
}

impl Lab for HostLab {
    fn driver(&self) -> &dyn Driver {
        &*self.driver
    }

    fn driver_name(&self) -> &str {
        &self.name
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn scratch_dir(&self, what: &str) -> anyhow::Result<PathBuf> {
        if what.is_empty() || !what.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) || what.starts_with('.') {
            anyhow::bail!("{}: scratch directory name {what:?}: use [A-Za-z0-9._-]", self.name);
        }
        let dir = self.cfg.root.join(SCRATCH).join(what).join(&self.name);
        if dir.exists() {
            // Left by an earlier cell or run: the directory is handed out empty.
            remove_unmounted(&dir).with_context(|| format!("{}: scratch {what}", self.name))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: create {}", self.name, dir.display()))?;
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(&dir) {
            s.push(dir.clone());
        }
        Ok(dir)
    }

    fn image(&self, spec: &ImageSpec) -> anyhow::Result<Image> {
        let _one = self.building.lock().unwrap_or_else(|p| p.into_inner());
        crate::image::build(&*self.driver, spec).with_context(|| format!("{}: image {}", self.name, spec.name))
    }

    fn remove_image(&self, image: &Image) -> anyhow::Result<()> {
        crate::image::remove(&*self.driver, &image.name).with_context(|| format!("{}: remove image {}", self.name, image.name))
    }

    fn start<'a>(&'a self, image: &Image, spec: &ContainerSpec) -> anyhow::Result<Box<dyn Container + 'a>> {
        let c = self
            .runtime
            .start(&*self.driver, image, spec)
            .with_context(|| format!("{}: start a container of {}", self.name, image.name))?;
        Ok(Box::new(HostContainer(c)))
    }

    fn run(&self, image: &Image, spec: &ContainerSpec) -> anyhow::Result<RunOutput> {
        self.runtime.run(&*self.driver, image, spec).with_context(|| format!("{}: run a container of {}", self.name, image.name))
    }

    fn probe_binary(&self) -> anyhow::Result<PathBuf> {
        Ok(crate::image::probe_bin::find_or_build()?)
    }

    fn drop_caches(&self) -> Result<(), String> {
        drop_caches()
    }

    fn stop_requested(&self) -> bool {
        crate::runner::signals::stop_requested()
    }

    fn host_memory(&self) -> HostMemory {
        host_memory()
    }

    fn cgroup_layout(&self) -> String {
        self.runtime.cgroup_layout().to_string()
    }

    fn space(&self) -> anyhow::Result<Space> {
        space(&*self.driver, &self.driver_root()).with_context(|| format!("{}: space", self.name))
    }

    fn settled_space(&self, max: Duration) -> anyhow::Result<(Space, String)> {
        settled_space(&*self.driver, &self.driver_root(), max).with_context(|| format!("{}: settled space", self.name))
    }

    fn backend_cache(&self) -> Option<(u64, String)> {
        let caps = self.driver.capabilities();
        if !caps.own_read_cache {
            return None;
        }
        let cache = self.driver.status().ok()?.cache?;
        Some((cache.bytes, cache.source.to_string()))
    }

    fn backend_cache_limit(&self) -> Option<u64> {
        if !self.driver.capabilities().own_read_cache {
            return None;
        }
        // arcstats `c_max` (kernel kstat or zfs-fuse's), as the driver's status reports it.
        self.driver.status().ok()?.cache?.limit_bytes
    }

    fn variant<'a>(&'a self, options: &[(&str, &str)]) -> anyhow::Result<Box<dyn Lab + 'a>> {
        let tag: String = options
            .iter()
            .map(|(k, v)| format!("{k}-{v}"))
            .collect::<Vec<_>>()
            .join("_")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        let root = self.cfg.root.join(format!("{VARIANT_PREFIX}{tag}"));
        let mut cfg = self.cfg.options.iter().fold(DriverConfig::new(&root), |c, (k, v)| c.with_option(k, v));
        for (k, v) in options {
            cfg = cfg.with_option(*k, *v);
        }
        let driver = registry::open(&self.name, &cfg).with_context(|| format!("{}: second instance on {}", self.name, root.display()))?;
        let mut lab = HostLab::from_parts(driver, cfg, self.probe.clone(), self.runtime.clone(), self.seed);
        lab.own_root = Some(root);
        Ok(Box::new(Variant(Some(lab))))
    }

    fn evict_backend_cache(&self) -> anyhow::Result<CacheEviction> {
        if !self.driver.capabilities().own_read_cache {
            return Ok(CacheEviction::Unsupported(format!("{} has no read cache of its own (the page cache is dropped instead)", self.name)));
        }
        Ok(match self.driver.evict_cache().with_context(|| format!("{}: empty the backend cache", self.name))? {
            Some(how) => CacheEviction::Evicted(how),
            None => CacheEviction::Unsupported(format!("{} cannot empty its cache here (a store the user named is not exported)", self.name)),
        })
    }

    fn backend_daemon_rss(&self) -> Option<DaemonRss> {
        let pid = self.driver.status().ok()?.daemon_pid?;
        Some(DaemonRss { pid, bytes: cowbench_drivers::sys::hostinfo::process_rss_bytes(pid)? })
    }

    fn backing_file_cache(&self) -> Option<BackingFileCache> {
        use cowbench_drivers::BackingKind;
        let b = self.driver.status().ok()?.backing?;
        if !matches!(b.kind, BackingKind::LoopFile | BackingKind::VdevFile) {
            return None;
        }
        match cowbench_drivers::sys::pagecache::resident_bytes(&b.path) {
            Ok(resident_bytes) => Some(BackingFileCache { path: b.path, resident_bytes, loop_direct_io: b.loop_direct_io }),
            Err(e) => {
                log::warn!("{}: page cache residency of {}: {e}", self.name, b.path.display());
                None
            }
        }
    }

    fn driver_memory(&self) -> DriverMemory {
        let hier = self.runtime.hierarchies();
        let own = hier.memory_cgroup_of("self");
        let mut m = DriverMemory::default();
        let mut src = Vec::new();
        match own.as_deref().map(|p| (p, hier.accounting(p))) {
            Some((p, Ok(a))) => {
                m.harness_bytes = a.memory_bytes;
                m.harness_page_cache_bytes = a.page_cache_bytes;
                src.push(format!("harness memory cgroup {p} ({})", a.source));
            }
            Some((p, Err(e))) => src.push(format!("harness memory cgroup {p} unreadable ({e})")),
            None => src.push("no memory cgroup for the harness".into()),
        }
        // Only backends with a daemon or a cache of their own need their status (zfs runs a
        // command for it).
        let caps = self.driver.capabilities();
        if caps.own_read_cache || caps.stand_in {
            if let Ok(st) = self.driver.status() {
                match st.daemon_pid {
                    // A daemon this process started lives in its cgroup: already counted.
                    Some(pid) if hier.memory_cgroup_of(&pid.to_string()) != own => {
                        m.daemon_rss_bytes = cowbench_drivers::sys::hostinfo::process_rss_bytes(pid).unwrap_or(0);
                        src.push(format!("RSS of daemon pid {pid} (in another cgroup; its cache is in it)"));
                    }
                    Some(pid) => src.push(format!("daemon pid {pid} in the harness cgroup")),
                    None => {
                        if let Some(c) = st.cache.filter(|_| caps.own_read_cache) {
                            m.kernel_cache_bytes = c.bytes;
                            src.push(format!("kernel read cache ({})", c.source));
                        }
                    }
                }
            }
        }
        m.source = src.join("; ");
        m
    }

    fn host_limits(&self) -> Notes {
        let mut n = Notes::new();
        for (k, p) in [
            ("kernel.pid_max", "/proc/sys/kernel/pid_max"),
            ("kernel.threads-max", "/proc/sys/kernel/threads-max"),
            ("fs.file-max", "/proc/sys/fs/file-max"),
            ("fs.inotify.max_user_instances", "/proc/sys/fs/inotify/max_user_instances"),
            ("fs.inotify.max_user_watches", "/proc/sys/fs/inotify/max_user_watches"),
            ("fuse.max_user_bgreq", "/sys/module/fuse/parameters/max_user_bgreq"),
        ] {
            if let Ok(v) = std::fs::read_to_string(p) {
                n.insert(k.into(), v.trim().into());
            }
        }
        // The containers' pids cgroup: its limit counts every process below it.
        let hier = self.runtime.hierarchies();
        if let Some(dir) = hier.v1.get("pids").or(hier.v2.as_ref()) {
            let d = dir.join(self.runtime.cgroup_parent().trim_start_matches('/'));
            if let Ok(v) = std::fs::read_to_string(d.join("pids.max")) {
                n.insert("containers' pids.max".into(), v.trim().into());
            }
        }
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills a struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            n.insert("harness RLIMIT_NOFILE".into(), lim.rlim_cur.to_string());
        }
        n
    }
}

/// A second instance of a driver: torn down (and its root removed) when dropped.
struct Variant(Option<HostLab>);

impl Variant {
    fn lab(&self) -> &HostLab {
        self.0.as_ref().expect("a variant is open until dropped")
    }
}

impl Drop for Variant {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            let name = lab.name.clone();
            if let Err(e) = lab.close() {
                log::warn!("{name}: tearing down the second instance: {e:#}");
            }
        }
    }
}

/// Every call goes to the variant's own lab.
impl Lab for Variant {
    fn driver(&self) -> &dyn Driver {
        self.lab().driver()
    }
    fn driver_name(&self) -> &str {
        self.lab().driver_name()
    }
    fn seed(&self) -> u64 {
        self.lab().seed()
    }
    fn scratch_dir(&self, what: &str) -> anyhow::Result<PathBuf> {
        self.lab().scratch_dir(what)
    }
    fn image(&self, spec: &ImageSpec) -> anyhow::Result<Image> {
        self.lab().image(spec)
    }
    fn remove_image(&self, image: &Image) -> anyhow::Result<()> {
        self.lab().remove_image(image)
    }
    fn start<'a>(&'a self, image: &Image, spec: &ContainerSpec) -> anyhow::Result<Box<dyn Container + 'a>> {
        self.lab().start(image, spec)
    }
    fn run(&self, image: &Image, spec: &ContainerSpec) -> anyhow::Result<RunOutput> {
        self.lab().run(image, spec)
    }
    fn probe_binary(&self) -> anyhow::Result<PathBuf> {
        self.lab().probe_binary()
    }
    fn drop_caches(&self) -> Result<(), String> {
        self.lab().drop_caches()
    }
    fn stop_requested(&self) -> bool {
        self.lab().stop_requested()
    }
    fn host_memory(&self) -> HostMemory {
        self.lab().host_memory()
    }
    fn cgroup_layout(&self) -> String {
        self.lab().cgroup_layout()
    }
    fn space(&self) -> anyhow::Result<Space> {
        self.lab().space()
    }
    fn settled_space(&self, max: Duration) -> anyhow::Result<(Space, String)> {
        self.lab().settled_space(max)
    }
    fn backend_cache(&self) -> Option<(u64, String)> {
        self.lab().backend_cache()
    }
    fn backend_cache_limit(&self) -> Option<u64> {
        self.lab().backend_cache_limit()
    }
    fn variant<'a>(&'a self, options: &[(&str, &str)]) -> anyhow::Result<Box<dyn Lab + 'a>> {
        self.lab().variant(options)
    }
    fn evict_backend_cache(&self) -> anyhow::Result<CacheEviction> {
        self.lab().evict_backend_cache()
    }
    fn backend_daemon_rss(&self) -> Option<DaemonRss> {
        self.lab().backend_daemon_rss()
    }
    fn backing_file_cache(&self) -> Option<BackingFileCache> {
        self.lab().backing_file_cache()
    }
    fn driver_memory(&self) -> DriverMemory {
        self.lab().driver_memory()
    }
    fn host_limits(&self) -> Notes {
        self.lab().host_limits()
    }
}

/// A running container of the harness's runtime.
pub struct HostContainer<'d>(pub crate::container::Container<'d>);

impl Container for HostContainer<'_> {
    fn id(&self) -> &str {
        self.0.id()
    }
    fn layer_key(&self) -> &str {
        self.0.layer_key()
    }
    fn timings(&self) -> StartTimings {
        self.0.timings()
    }
    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        self.0.wait_ready(timeout)?;
        Ok(())
    }
    fn exec(&self, args: &[&str]) -> anyhow::Result<ExecOutput> {
        Ok(self.0.exec(args)?)
    }
    fn accounting(&self) -> anyhow::Result<Accounting> {
        Ok(self.0.accounting()?)
    }
    fn sigterm(&self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the container's init, a process of this container that lives until
        // `stop` deletes the container (kill(2) takes no memory, only the pid).
        if unsafe { libc::kill(self.0.pid(), libc::SIGTERM) } != 0 {
            anyhow::bail!("container {}: kill(SIGTERM): {}", self.0.id(), std::io::Error::last_os_error());
        }
        Ok(())
    }
    fn stop(self: Box<Self>) -> anyhow::Result<StopOutput> {
        Ok(self.0.stop()?)
    }
    fn host_path(&self, path: &str) -> Option<PathBuf> {
        Some(self.0.rootfs().join(path.trim_start_matches('/')))
    }
}

/// Blocks allocated under `dir` (bytes), without crossing into other filesystems and counting
/// hard-linked files once: the disk a directory-based backend holds.
pub fn du_bytes(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else { return 0 };
    let dev = top.dev();
    let mut seen = HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}


/// `syncfs(2)` of the filesystem holding `p`; best effort (a FUSE filesystem may ignore it).
fn syncfs(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the duration of the call.
        unsafe { libc::syncfs(f.as_raw_fd()) };
    }
}

/// Backend space: what the backend's own store reports used (thin-pool data, zpool root
/// dataset, the btrfs filesystem), else the blocks under the driver root; allocation of the
/// backing file where there is one, else the driver root's blocks again.
fn space(driver: &dyn Driver, driver_root: &Path) -> anyhow::Result<Space> {
    // syncfs(2) of the backend's own filesystems only: a host-wide sync(2) would wait for
    // every other writer on the host.
    syncfs(driver_root);
    let mut st = driver.status()?;
    // The backend's own filesystem (btrfs): synced, then its figures read again.
    if let Some(m) = st.backing.as_ref().and_then(|b| b.mount_point.clone()) {
        syncfs(&m);
        st = driver.status()?;
    }
    let (used, used_source) = match st.space {
        Some(s) => (s.used_bytes, s.source.to_string()),
        None => (du_bytes(driver_root), "blocks under the driver root".to_string()),
    };
    let (allocated, allocated_source) = match st.backing.as_ref().and_then(|b| Some((b.file_allocated_bytes?, b))) {
        Some((v, b)) => (v, format!("blocks allocated to {} ({})", b.path.display(), b.kind)),
        None => (du_bytes(driver_root), "blocks under the driver root".into()),
    };
    Ok(Space { used, used_source, allocated, allocated_source })
}

/// Backend space once deferred frees have landed: a backend that frees space in the
/// background (btrfs deletes subvolumes in a cleaner thread) is synced first
/// (`Driver::sync`); then the backend's used space is read every 500 ms until two readings
/// agree, for `max` at most. Returns the last reading and how it settled. (The host-side
/// allocation of a loop file may go on changing: it is not waited for.)
fn settled_space(driver: &dyn Driver, driver_root: &Path, max: Duration) -> anyhow::Result<(Space, String)> {
    let t0 = Instant::now();
    let mut how = String::new();
    if driver.capabilities().deferred_free {
        match driver.sync() {
            Ok(done) => how.push_str(&format!("{done}; ")),
            Err(e) => how.push_str(&format!("sync failed ({e}); ")),
        }
    }
    let mut last = space(driver, driver_root)?;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = space(driver, driver_root)?;
        let stable = now.used == last.used;
        last = now;
        if stable {
            how.push_str(&format!("used stable after {:.1} s", t0.elapsed().as_secs_f64()));
            return Ok((last, how));
        }
        if t0.elapsed() >= max {
            how.push_str(&format!("used still changing after {:.1} s", t0.elapsed().as_secs_f64()));
            return Ok((last, how));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_counts_blocks_and_hardlinks_once() {
        let t = tempfile::tempdir().unwrap();
        let base = du_bytes(t.path());
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(t.path().join("d/a"), t.path().join("b")).unwrap();
        let after = du_bytes(t.path());
        assert!(after >= base + (1 << 20), "{base} -> {after}");
        assert!(after < base + (2 << 20), "hard link counted twice: {base} -> {after}");
        assert!(host_memory().page_cache_bytes > 0);
        assert!(host_memory().total_bytes >= host_memory().available_bytes);
    }
}
