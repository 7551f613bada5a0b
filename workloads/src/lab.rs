//! What a workload gets from the harness: the [`Lab`].
//!
//! A workload's executor (its `setup` and the [`crate::CellExec`] it returns) is written only
//! against this trait: the driver under test, images, containers running the in-container
//! probe, cache drops, host memory and backend space. The harness implements it on real
//! storage and a real OCI runtime (harness/src/lab.rs); tests of the runner loop implement it
//! in memory. Nothing here knows which driver it is talking to: differences between backends
//! reach a workload as the driver's typed capabilities and status, never as a driver name.
//!
//! The data types a container hands back (timings, accounting, outputs) live here too, so
//! that workloads and the harness share one definition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cowbench_drivers::{Driver, Labels};
use serde::{Deserialize, Serialize};

use crate::images::ImageSpec;
use crate::probe::{Request, Response, PROBE_PATH};

/// The services a workload's executor needs. One `Lab` is one opened driver of a run.
pub trait Lab: Sync {
    /// The driver under test.
    fn driver(&self) -> &dyn Driver;
    /// The driver's name, for notes and messages only: decisions go by
    /// `driver().capabilities()` and `driver().status()`, never by name.
    fn driver_name(&self) -> &str;
    /// The run's seed: images and random IO derive their content from it.
    fn seed(&self) -> u64;
    /// An empty directory of this run for the workload's own files (`what` names it; one per
    /// driver), on the cowbench root's filesystem. The harness removes it at the end of the run.
    fn scratch_dir(&self, what: &str) -> anyhow::Result<PathBuf>;

    /// The image `spec` describes, in this driver: reused when the driver already holds an
    /// image built from the same spec, else built (base layer with busybox and the probe, then
    /// the spec's layers). The one build-or-reuse policy of cowbench.
    fn image(&self, spec: &ImageSpec) -> anyhow::Result<Image>;
    /// Remove an image's layers (refused while containers use them).
    fn remove_image(&self, image: &Image) -> anyhow::Result<()>;

    /// Start a long-lived container of `image` (its layer prepared and mounted, the OCI
    /// runtime's `create` + `start`). Dropping the returned container kills and removes it.
    fn start<'a>(&'a self, image: &Image, spec: &ContainerSpec) -> anyhow::Result<Box<dyn Container + 'a>>;
    /// Run a container of `image` to completion and remove it.
    fn run(&self, image: &Image, spec: &ContainerSpec) -> anyhow::Result<RunOutput>;
    /// The static probe binary on the host (for measurements outside any container).
    fn probe_binary(&self) -> anyhow::Result<PathBuf>;

    /// `sync`, then empty the page cache, dentries and inodes (`drop_caches` = 3).
    fn drop_caches(&self) -> Result<(), String>;
    /// The user asked the run to stop (SIGINT/SIGTERM): long loops give up early.
    fn stop_requested(&self) -> bool;
    /// The host's memory now.
    fn host_memory(&self) -> HostMemory;
    /// The OCI runtime's cgroup layout (`v1`, `v2`, `hybrid`), for notes.
    fn cgroup_layout(&self) -> String;

    /// Space the backend holds, read after syncing its own filesystems.
    fn space(&self) -> anyhow::Result<Space>;
    /// [`Lab::space`] once deferred frees have landed (btrfs frees deleted subvolumes in a
    /// background cleaner): read until two readings agree, for `max` at most. Returns the
    /// reading and how it settled.
    fn settled_space(&self, max: Duration) -> anyhow::Result<(Space, String)>;
    /// The backend's own read cache (ZFS ARC), bytes, and where the figure came from; None for
    /// backends without one.
    fn backend_cache(&self) -> Option<(u64, String)>;
    /// The size the backend's read cache is kept to (ARC `c_max`), bytes, where the backend
    /// says: a cache at its limit evicts as much as the reads add, so its growth is not what
    /// they cached. None where unknown or not applicable.
    fn backend_cache_limit(&self) -> Option<u64> {
        None
    }

    /// A second instance of this driver, on a root of its own, with `options` set on top of the
    /// run's driver options (e.g. `discard=false`). Torn down when dropped.
    fn variant<'a>(&'a self, options: &[(&str, &str)]) -> anyhow::Result<Box<dyn Lab + 'a>>;

    /// Empty the backend's own read cache (the ZFS ARC: dropping the page cache leaves it as
    /// it is), so that what reads cache next starts cold. Only while no container of this lab
    /// runs (zfs exports and imports its pool).
    fn evict_backend_cache(&self) -> anyhow::Result<CacheEviction> {
        Ok(CacheEviction::Unsupported("this lab cannot empty a backend cache".into()))
    }
    /// Resident memory of the daemon serving the backend (zfs-fuse), where there is one: a
    /// userspace backend caches in its own memory, outside every container's cgroup.
    fn backend_daemon_rss(&self) -> Option<DaemonRss> {
        None
    }
    /// How much of the backend's backing file (loop file, file vdev) the host's page cache
    /// holds: a buffered loop device or file vdev caches every block read a second time
    /// there. None for backends without a backing file.
    fn backing_file_cache(&self) -> Option<BackingFileCache> {
        None
    }
    /// The memory the driver itself holds now, outside the containers' own cgroups (see
    /// [`DriverMemory`]). Its growth across N starts is what the driver costs for N containers
    /// beyond what their cgroups are charged. All zero where the harness cannot tell.
    fn driver_memory(&self) -> DriverMemory {
        DriverMemory::default()
    }
    /// The host's limits that bound how many containers it can hold (pid and thread maxima,
    /// inotify instances, open files, the containers' pids cgroup ...), name → value, for the
    /// notes of a cell that reports how far it got and why it stopped.
    fn host_limits(&self) -> Notes {
        Notes::new()
    }
}

/// What [`Lab::evict_backend_cache`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEviction {
    /// Emptied; how (for notes).
    Evicted(String),
    /// Not done, and why: the backend has no cache of its own, or it cannot be emptied here.
    Unsupported(String),
}

/// The resident memory of a backend's daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonRss {
    pub pid: u32,
    pub bytes: u64,
}

/// A backend's backing file in the host's page cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingFileCache {
    pub path: PathBuf,
    /// Bytes of the file resident in the page cache (`mincore`).
    pub resident_bytes: u64,
    /// Whether the loop device over it does direct IO (None: no loop device, e.g. a zfs-fuse
    /// file vdev, which the daemon reads through the page cache).
    pub loop_direct_io: Option<bool>,
}

/// Memory the driver holds outside the containers' cgroups, bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverMemory {
    /// The harness's own memory cgroup (v1 `usage_in_bytes`, v2 `memory.current`): its layer
    /// metadata and bundles, the page cache of what it wrote (a vfs layer's copy), the kernel
    /// memory of the mounts it made, and the FUSE daemons it started (unionfs-fuse), which
    /// live in the cgroup they were started from.
    pub harness_bytes: u64,
    /// Of which page cache (v1 `total_cache`, v2 `file`).
    pub harness_page_cache_bytes: u64,
    /// Resident memory of the backend's daemon when it lives outside the harness's cgroup (a
    /// zfs-fuse started earlier, by init or another run); its read cache (ARC) is in it.
    pub daemon_rss_bytes: u64,
    /// A backend read cache held by the kernel and charged to no cgroup (kernel ZFS ARC); 0
    /// where the cache lives in a daemon (zfs-fuse) or there is none.
    pub kernel_cache_bytes: u64,
    /// Where the figures came from, for notes.
    pub source: String,
}

impl DriverMemory {
    /// Everything the driver holds: harness cgroup + outside daemon + kernel cache.
    pub fn total(&self) -> u64 {
        self.harness_bytes + self.daemon_rss_bytes + self.kernel_cache_bytes
    }
}

/// A running container. Dropping it kills and removes everything it holds.
pub trait Container: Send {
    fn id(&self) -> &str;
    /// The key of the container's writable layer in the driver.
    fn layer_key(&self) -> &str;
    /// Where the start's time went.
    fn timings(&self) -> StartTimings;
    /// Wait until the probe has reached its `hold` operation.
    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()>;
    /// Run `args` as a second process in the container's namespaces and cgroup.
    fn exec(&self, args: &[&str]) -> anyhow::Result<ExecOutput>;
    /// The container's cgroup accounting now.
    fn accounting(&self) -> anyhow::Result<Accounting>;
    /// Send SIGTERM to the container's init and return at once, without waiting for it (ends
    /// the probe's `hold`; [`Container::stop`] still has to follow). A signal from the host
    /// releases several containers within microseconds of each other, which one `exec` per
    /// container (tens of ms each) could not.
    fn sigterm(&self) -> anyhow::Result<()>;
    /// SIGTERM (SIGKILL after the spec's stop timeout), then delete the container and unmount
    /// and remove its layer (unless the spec keeps it).
    fn stop(self: Box<Self>) -> anyhow::Result<StopOutput>;
    /// Where `path` (absolute in the container) is seen on the host: through the mount of the
    /// container's layer, for measurements from outside (the file's extents). None where the
    /// container has no root on the host.
    fn host_path(&self, _path: &str) -> Option<PathBuf> {
        None
    }
}

/// An image in one driver: committed layers, bottom to top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    /// Committed layer keys, bottom → top.
    pub layers: Vec<String>,
    /// The top layer (the parent of every container's active layer).
    pub top: String,
    pub config: ImageConfig,
}

/// What a container of this image runs by default (the OCI image config's `config` part).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
}

/// Host memory figures, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMemory {
    /// `/proc/meminfo` Cached + Buffers: the host's page cache.
    pub page_cache_bytes: u64,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// `/proc/vmstat` `drop_pagecache` + `drop_slab`: how often anyone on the host has dropped
    /// the page cache (or the unused inodes holding it). A change across a measurement means
    /// another process dropped it meanwhile.
    pub drop_pagecache_count: Option<u64>,
}

/// Space of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// What the backend reports used (thin pool / zpool / btrfs filesystem / driver root).
    pub used: u64,
    pub used_source: String,
    /// Blocks its backing store holds on the host (loop, vdev or data file; else the driver
    /// root's blocks).
    pub allocated: u64,
    pub allocated_source: String,
}

/// Optional cgroup limits of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU bandwidth in CPUs (1.5 = 150 ms per 100 ms period).
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    pub io_weight: Option<u16>,
    /// (major, minor, bytes per second) per block device.
    pub io_read_bps: Vec<(u64, u64, u64)>,
    pub io_write_bps: Vec<(u64, u64, u64)>,
}

/// What to run. Empty `args` means the image's entrypoint + cmd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container id (default: generated, unique per process and time).
    pub id: Option<String>,
    pub args: Vec<String>,
    /// `KEY=VALUE`, added to (and overriding) the image's environment.
    pub env: Vec<String>,
    /// Working directory (default: the image's, else `/`).
    pub cwd: Option<String>,
    /// Default: the container id.
    pub hostname: Option<String>,
    pub limits: Limits,
    /// Keep the container's layer after it is gone (to inspect its diff or usage).
    pub keep_layer: bool,
    pub readonly_rootfs: bool,
    /// `run`: kill the container after this long (default 10 minutes).
    pub timeout: Option<Duration>,
    /// `stop`: SIGKILL when SIGTERM has not ended the container after this long (default 10 s).
    pub stop_timeout: Option<Duration>,
    /// Labels of the container's layer.
    pub labels: Labels,
}

impl ContainerSpec {
    pub fn command<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        ContainerSpec { args: args.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Run the in-container probe with `req` (passed as its argument).
    pub fn probe(req: &Request) -> Self {
        Self::command([PROBE_PATH.to_string(), req.to_json()])
    }
}

/// Where the time of a `run` went, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimings {
    /// prepare + mount of the container's layer, and the bundle.
    pub setup_ns: u64,
    /// `<runtime> run` until the process exited.
    pub run_ns: u64,
    /// delete + unmount + layer removal.
    pub teardown_ns: u64,
    pub total_ns: u64,
}

/// Start latency of a long-lived container, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTimings {
    /// prepare + mount of the layer and the bundle.
    pub setup_ns: u64,
    /// `<runtime> create`: namespaces, mounts, cgroup, init waiting to exec.
    pub create_ns: u64,
    /// `<runtime> start`: until the process is exec'd.
    pub start_ns: u64,
    /// From the call to `start` until it returned.
    pub total_ns: u64,
}

/// What a container's cgroup has used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Memory charged to the cgroup (v1 usage_in_bytes, v2 memory.current): page cache + anon
    /// + kernel.
    pub memory_bytes: u64,
    /// Page cache charged (v1 total_cache, v2 file).
    pub page_cache_bytes: u64,
    /// Anonymous memory (v1 total_rss, v2 anon).
    pub rss_bytes: u64,
    /// Peak of memory_bytes (v1 max_usage_in_bytes, v2 memory.peak) where the kernel keeps it.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes read from / written to block devices (v1 blkio throttle io_service_bytes, v2 io.stat).
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// `cgroup v1` or `cgroup v2`: which hierarchy the memory figures came from.
    pub source: String,
}

/// Output of a container that was not the probe's JSON response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {container}: {message}; stderr: {stderr}")]
pub struct ProbeOutputError {
    pub container: String,
    pub message: String,
    pub stderr: String,
}

/// The result of [`Lab::run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    pub id: String,
    /// Exit code of the container's process (None when killed by a signal).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The cgroup's accounting after the process ended (None if it could not be read).
    pub accounting: Option<Accounting>,
    pub timings: RunTimings,
    pub layer_key: String,
    pub cgroup_path: String,
    pub timed_out: bool,
    /// The accounting was read after the process ended (runc); false: it is the last sample
    /// taken while the container ran (crun, which removes the cgroup at exit).
    pub accounting_final: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_response(id: &str, stdout: &[u8], stderr: &[u8]) -> Result<Response, ProbeOutputError> {
    Response::from_json(&lossy(stdout))
        .map_err(|e| ProbeOutputError { container: id.into(), message: e.to_string(), stderr: lossy(stderr).trim().into() })
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        lossy(&self.stdout)
    }

    pub fn stderr_str(&self) -> String {
        lossy(&self.stderr)
    }

    /// Parse stdout as the probe's response.
    pub fn probe_response(&self) -> Result<Response, ProbeOutputError> {
        parse_response(&self.id, &self.stdout, &self.stderr)
    }
}

/// The result of [`Container::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        lossy(&self.stdout)
    }
}

/// The result of [`Container::stop`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopOutput {
    pub id: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub accounting: Option<Accounting>,
    /// SIGTERM until the process was gone.
    pub stop_ns: u64,
    /// SIGTERM was not enough.
    pub killed: bool,
}

impl StopOutput {
    pub fn probe_response(&self) -> Result<Response, ProbeOutputError> {
        parse_response(&self.id, &self.stdout, &self.stderr)
    }
}

/// Notes of a cell: facts worth keeping with its samples.
pub type Notes = BTreeMap<String, String>;
