//! Real containers through an OCI runtime (runc by default, crun selectable), the way Docker
//! starts them: a bundle whose rootfs is the driver's mount of a fresh active layer on top of
//! an image, its own namespaces and its own cgroup.
//!
//! # API
//!
//! ```text
//! Runtime::new(kind: RuntimeKind, cowbench_root: &Path) -> Result<Runtime>
//! runtime.kind() -> RuntimeKind
//! runtime.version() -> String                       e.g. "runc 1.1.5+ds1 (spec 1.0.2-dev)"
//! runtime.cgroup_layout() -> cgroup::Layout          v1, v2 or hybrid
//! runtime.cgroup_parent() -> &str                    "/cowbench/<hash of root>": every cgroup of ours
//! runtime.run(&dyn Driver, &Image, &ContainerSpec) -> Result<RunOutput>
//!     prepare layer `ctr-<id>` on image.top, mount it at <root>/containers/<id>/rootfs, write
//!     the bundle, `<runtime> run --keep`, collect stdout/stderr/exit status, read the cgroup's
//!     accounting after the process exited (the cgroup is kept until delete), then delete the
//!     container, unmount and remove the layer (unless spec.keep_layer).
//! runtime.start(&'d dyn Driver, &Image, &ContainerSpec) -> Result<Container<'d>>
//!     the same up to the bundle, then `<runtime> create` + `<runtime> start` (timed apart);
//!     the container's stdout/stderr go to files in its directory.
//! container.id() / pid() / cgroup_path() / rootfs() / layer_key() / timings() -> StartTimings
//! container.wait_ready(Duration) -> Result<Duration> until the probe's `hold` has begun
//! container.accounting() -> Result<Accounting>      memory, page cache, rss, IO bytes (cgroup)
//! container.exec(&[&str]) -> Result<ExecOutput>     `<runtime> exec`
//! container.stop() -> Result<StopOutput>            SIGTERM, wait (SIGKILL after stop_timeout),
//!                                                    accounting, stdout/stderr, full cleanup
//! drop(container)                                   kill, delete, unmount, remove layer; errors logged
//! runtime.list_ours() -> Result<Vec<String>>        containers in our state dir only
//! runtime.kill_all_ours() -> Result<CleanReport>    delete them, their cgroups, rootfs mounts, bundles
//! Runtime::remove_container_layers(&dyn Driver) -> Result<Vec<String>>   leftover `ctr-*` layers
//! ```
//!
//! The runtime keeps its state in `<root>/runtime/<runc|crun>` (`--root`), so that `clean` finds
//! our containers and only ours; the cgroups are `/cowbench/<hash of root>/<id>` in every
//! hierarchy. Everything created is undone by guards, also when the caller panics.
//!
//! IO accounting on cgroup v1: the kernel keeps `blkio.throttle.io_service_bytes` only for a
//! cgroup with a throttle rule on the device, so every container gets read and write rules of
//! 2^60 B/s (never reached) on the block device under its rootfs. Buffered writes are written
//! back by the kernel's flusher, which v1 charges to the root blkio cgroup: a container's
//! `io_write_bytes` counts its direct and synchronous-path IO only (v2 charges writeback to
//! the container).
//!
//! crun 1.8 refuses to run on a hybrid host whose v2 hierarchy has any controller bound
//! ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2" — here
//! `hugetlb`), even with `--cgroup-manager=disabled`. cowbench runs crun in a private mount
//! namespace where the v2 root's `cgroup.controllers` reads empty (a bind mount of an empty
//! file), so crun uses the v1 controllers with its cgroupfs manager and the container gets a
//! real cgroup with accounting, as with runc.

pub mod bundle;
pub mod cgroup;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cowbench_drivers::ledger::{Ledger, ResourceKind};
use cowbench_drivers::Driver;
use cowbench_workloads::probe::{HOLD_MARKER, PROBE_PATH};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cgroup::{Hierarchies, Layout};
pub use cowbench_workloads::lab::Accounting;

use crate::image::Image;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Driver(#[from] cowbench_drivers::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The OCI runtime failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Runtime { command: String, status: String, stderr: String },
    #[error("container {id}: {message}")]
    Container { id: String, message: String },
    #[error("runtime spec: {0}")]
    Spec(String),
    #[error("probe: {0}")]
    Probe(String),
    #[error(transparent)]
    ProbeOutput(#[from] ProbeOutputError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Which OCI runtime starts the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Runc,
    Crun,
}

impl RuntimeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "runc" => Ok(RuntimeKind::Runc),
            "crun" => Ok(RuntimeKind::Crun),
            o => Err(format!("unknown runtime '{o}' (runc or crun)")),
        }
    }
}

pub use cowbench_workloads::lab::{ContainerSpec, ExecOutput, Limits, ProbeOutputError, RunOutput, RunTimings, StartTimings, StopOutput};

/// What [`Runtime::kill_all_ours`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanReport {
    pub containers: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<String>,
    pub errors: Vec<String>,
}

/// An OCI runtime bound to one cowbench root.
#[derive(Debug, Clone)]
pub struct Runtime {
    kind: RuntimeKind,
    binary: PathBuf,
    root: PathBuf,
    state_dir: PathBuf,
    cgroup_parent: String,
    hier: Hierarchies,
    version: String,
    /// crun on a hybrid host: (empty file, v2 `cgroup.controllers`) to bind over it.
    hide_v2_controllers: Option<(PathBuf, PathBuf)>,
    /// Removes the (empty) cgroup parent when the last handle (runtime or container) is gone.
    _parent: std::sync::Arc<ParentCgroup>,
}

/// The per-root cgroup parent, removed when empty and no longer used by this process. Not
/// removed after each container: another thread may be creating the next one below it.
#[derive(Debug)]
struct ParentCgroup {
    hier: Hierarchies,
    parent: String,
}

impl Drop for ParentCgroup {
    fn drop(&mut self) {
        // rmdir fails on a cgroup that still has children (another process on the same root):
        // then it stays, which is right.
        for d in self.hier.dirs(&self.parent) {
            let _ = fs::remove_dir(&d);
            if let Some(top) = d.parent() {
                let _ = fs::remove_dir(top);
            }
        }
    }
}

/// Longest probe request passed as an argument; longer ones go through [`REQUEST_MOUNT`].
const REQUEST_ARG_MAX: usize = 64 * 1024;
/// Where a long probe request is bind-mounted in the container.
pub const REQUEST_MOUNT: &str = "/run/cowbench-request.json";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("cb{:x}-{:x}-{}", std::process::id(), (nanos / 1000) & 0xff_ffff, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn status_string(s: std::process::ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown".into(),
    }
}

impl Runtime {
    /// Find the runtime binary (`COWBENCH_RUNC` / `COWBENCH_CRUN` override PATH), check it runs,
    /// and set up its state directory under `cowbench_root`.
    pub fn new(kind: RuntimeKind, cowbench_root: &Path) -> Result<Runtime> {
        let env = match kind {
            RuntimeKind::Runc => "COWBENCH_RUNC",
            RuntimeKind::Crun => "COWBENCH_CRUN",
        };
        let binary = std::env::var_os(env)
            .map(PathBuf::from)
            .or_else(|| cowbench_drivers::sys::hostinfo::which(kind.as_str()))
            .ok_or_else(|| Error::Container {
                id: "-".into(),
                message: format!("{kind} not found in PATH (Debian package `{kind}`)"),
            })?;
        let out = Command::new(&binary).arg("--version").output().map_err(io_err(format!("run {} --version", binary.display())))?;
        if !out.status.success() {
            return Err(Error::Runtime {
                command: format!("{} --version", binary.display()),
                status: status_string(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        let version = parse_version(kind, &String::from_utf8_lossy(&out.stdout));
        fs::create_dir_all(cowbench_root).map_err(io_err(format!("create {}", cowbench_root.display())))?;
        let root = fs::canonicalize(cowbench_root).map_err(io_err(format!("resolve {}", cowbench_root.display())))?;
        let state_dir = root.join("runtime").join(kind.as_str());
        fs::create_dir_all(&state_dir).map_err(io_err(format!("create {}", state_dir.display())))?;
        fs::create_dir_all(root.join("containers")).map_err(io_err("create containers dir"))?;
        let hier = Hierarchies::detect().map_err(io_err("read cgroup mounts"))?;
        let hash = hex::encode(&Sha256::digest(root.as_os_str().as_bytes())[..6]);
        let mut hide_v2_controllers = None;
        if kind == RuntimeKind::Crun && hier.layout() == Layout::Hybrid && !hier.v2_controllers.is_empty() {
            let empty = state_dir.join("empty-cgroup.controllers");
            fs::write(&empty, b"").map_err(io_err(format!("create {}", empty.display())))?;
            let v2 = hier.v2.clone().expect("hybrid has v2");
            hide_v2_controllers = Some((empty, v2.join("cgroup.controllers")));
        }
        let cgroup_parent = format!("/cowbench/{hash}");
        let _parent = std::sync::Arc::new(ParentCgroup { hier: hier.clone(), parent: cgroup_parent.clone() });
        Ok(Runtime { kind, binary, root, state_dir, cgroup_parent, hier, version, hide_v2_controllers, _parent })
    }

    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// Name, version and OCI spec version of the runtime, e.g. `runc 1.1.5+ds1 (spec 1.0.2-dev)`.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The runtime's state directory (its `--root`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn cgroup_layout(&self) -> Layout {
        self.hier.layout()
    }

    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hier
    }

    /// Parent of every cgroup this root's containers get: `/cowbench/<hash of root>`.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// cgroup of container `id`.
    pub fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// The ledger of this root (see `cowbench_drivers::ledger`).
    fn ledger(&self) -> Ledger {
        Ledger::open(&self.root)
    }

    /// Record container `id` and its cgroup in the ledger before the runtime creates them, so
    /// that `cowbench clean` removes both after a crash.
    fn record_container(&self, id: &str) -> Result<()> {
        let l = self.ledger();
        let detail = format!("{} {}", self.kind, self.state_dir.display());
        l.record(ResourceKind::Container, id, &detail)
            .and_then(|_| l.record(ResourceKind::Cgroup, self.cgroup_path(id).trim_matches('/'), &format!("container {id}")))
            .map_err(io_err(format!("record container {id} in {}", l.path().display())))
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// A runtime command with our state dir (and, for crun on a hybrid host, the private
    /// mount namespace described in the module docs).
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.state_dir);
        if self.kind == RuntimeKind::Crun {
            c.arg("--cgroup-manager=cgroupfs");
            if let Some((empty, target)) = &self.hide_v2_controllers {
                let src = CString::new(empty.as_os_str().as_bytes()).expect("path without NUL");
                let dst = CString::new(target.as_os_str().as_bytes()).expect("path without NUL");
                let slash = CString::new("/").unwrap();
                // SAFETY: only async-signal-safe syscalls on pre-allocated strings run between
                // fork and exec.
                unsafe {
                    c.pre_exec(move || {
                        if libc::unshare(libc::CLONE_NEWNS) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        let flags = libc::MS_REC | libc::MS_PRIVATE;
                        if libc::mount(std::ptr::null(), slash.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        if libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        }
        c
    }

    /// Run a runtime subcommand to completion; an error carries its stderr.
    fn exec_runtime(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("run {} {}", self.kind, args.join(" "))))?;
        if !out.status.success() {
            return Err(Error::Runtime {
                command: format!("{} {}", self.kind, args.join(" ")),
                status: status_string(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        Ok(out)
    }

    /// Layer, mount and bundle of a new container; undone on drop.
    fn stage<'d>(&self, driver: &'d dyn Driver, image: &Image, spec: &ContainerSpec) -> Result<Staged<'d>> {
        let id = spec.id.clone().unwrap_or_else(new_id);
        if id.is_empty() || id.contains('/') || id.len() > 64 {
            return Err(Error::Container { id, message: "invalid container id".into() });
        }
        let dir = self.container_dir(&id);
        if dir.exists() {
            return Err(Error::Container { id, message: format!("{} already exists", dir.display()) });
        }
        let mut st = Staged {
            rt: self.clone(),
            driver,
            id: id.clone(),
            dir: dir.clone(),
            layer_key: format!("ctr-{id}"),
            layer_made: false,
            mounted: false,
            created: false,
            keep_layer: spec.keep_layer,
            done: false,
        };
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(io_err(format!("create {}", rootfs.display())))?;
        let mut labels = spec.labels.clone();
        labels.insert("cowbench.container".into(), id.clone());
        labels.insert("cowbench.image".into(), image.name.clone());
        driver.prepare(&st.layer_key, Some(&image.top), &labels)?;
        st.layer_made = true;
        driver.mount(&st.layer_key, &rootfs)?;
        st.mounted = true;

        let cfg = &image.config;
        let mut args = if spec.args.is_empty() {
            cfg.entrypoint.iter().chain(cfg.cmd.iter()).cloned().collect::<Vec<_>>()
        } else {
            spec.args.clone()
        };
        // The kernel limits one argument to 128 KiB: a longer probe request goes in a file
        // bind-mounted read-only into the container, passed as `@FILE`.
        let mut extra_mounts = Vec::new();
        if args.len() == 2 && args[0] == PROBE_PATH && args[1].len() > REQUEST_ARG_MAX {
            let file = dir.join("request.json");
            fs::write(&file, &args[1]).map_err(io_err(format!("write {}", file.display())))?;
            extra_mounts.push(bundle::bind_ro(&file, REQUEST_MOUNT)?);
            args[1] = format!("@{REQUEST_MOUNT}");
        }
        if args.is_empty() {
            return Err(Error::Container { id, message: "no command: neither the spec nor the image config gives one".into() });
        }
        let env = merge_env(&cfg.env, &spec.env);
        let cwd = spec.cwd.clone().or_else(|| cfg.workdir.clone().filter(|w| !w.is_empty())).unwrap_or_else(|| "/".into());
        let cgroups_path = self.cgroup_path(&id);
        let mut spec = spec.clone();
        if self.hier.v1.contains_key("blkio") {
            if let Some((maj, min)) = self.backing_device(&rootfs) {
                // cgroup v1 keeps blkio.throttle.io_service_bytes only for a cgroup with a
                // throttle rule on the device: a rule of 2^60 B/s (never reached) makes the
                // kernel count the container's IO without limiting it.
                const UNLIMITED: u64 = 1 << 60;
                if !spec.limits.io_read_bps.iter().any(|d| (d.0, d.1) == (maj, min)) {
                    spec.limits.io_read_bps.push((maj, min, UNLIMITED));
                }
                if !spec.limits.io_write_bps.iter().any(|d| (d.0, d.1) == (maj, min)) {
                    spec.limits.io_write_bps.push((maj, min, UNLIMITED));
                }
            }
        }
        let spec = &spec;
        let oci = bundle::build(
            spec,
            &bundle::BundleParams {
                rootfs,
                hostname: spec.hostname.as_deref().unwrap_or(&id),
                cgroups_path: &cgroups_path,
                args,
                env,
                cwd,
                extra_mounts,
            },
        )?;
        oci.save(dir.join("config.json")).map_err(|e| Error::Spec(format!("write config.json: {e}")))?;
        Ok(st)
    }

    /// The block device (major, minor) holding a container's files: the rootfs mount's source
    /// when it is a device (btrfs, ext4 on a loop device ...), else the device of the cowbench
    /// root (overlay and vfs layers live there). None for storage without one (tmpfs, FUSE).
    fn backing_device(&self, rootfs: &Path) -> Option<(u64, u64)> {
        let dev_of = |p: &Path| -> Option<(u64, u64)> {
            let m = cowbench_drivers::sys::mounts::fstype_of(p).ok()?;
            if !m.source.starts_with("/dev/") {
                return None;
            }
            let st = nix::sys::stat::stat(Path::new(&m.source)).ok()?;
            if st.st_mode & libc::S_IFMT != libc::S_IFBLK {
                return None;
            }
            let (maj, min) = (libc::major(st.st_rdev) as u64, libc::minor(st.st_rdev) as u64);
            // Partitions are not throttle targets; their whole disk is.
            let whole = fs::canonicalize(format!("/sys/dev/block/{maj}:{min}/.."))
                .ok()
                .and_then(|p| fs::read_to_string(p.join("dev")).ok())
                .filter(|_| Path::new(&format!("/sys/dev/block/{maj}:{min}/partition")).exists())
                .and_then(|d| {
                    let (a, b) = d.trim().split_once(':')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                });
            Some(whole.unwrap_or((maj, min)))
        };
        dev_of(rootfs).or_else(|| dev_of(&self.root))
    }

    /// Run a container to completion. See the module docs.
    pub fn run(&self, driver: &dyn Driver, image: &Image, spec: &ContainerSpec) -> Result<RunOutput> {
        let t0 = Instant::now();
        let mut st = self.stage(driver, image, spec)?;
        let setup_ns = ns(t0.elapsed());
        let id = st.id.clone();
        let t1 = Instant::now();
        let bundle = st.dir.to_string_lossy().into_owned();
        // runc keeps a stopped container (and its cgroup, with the final accounting) with
        // --keep; crun 1.8 has no --keep and removes the cgroup when the process exits, so its
        // accounting is the last sample taken while the container ran.
        let keep = self.kind == RuntimeKind::Runc;
        let mut args = vec!["run"];
        if keep {
            args.push("--keep");
        }
        args.extend(["--bundle", &bundle, &id]);
        self.record_container(&id)?;
        let child = self
            .command()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(format!("run {} run", self.kind)))?;
        st.created = true;
        let cgroup_path = self.cgroup_path(&id);
        // Watchdog (kills the container when it overstays its timeout) and, without --keep,
        // accounting sampler.
        let (tx, rx) = mpsc::channel::<()>();
        let timeout = spec.timeout.unwrap_or(Duration::from_secs(600));
        let rt = self.clone();
        let wid = id.clone();
        let wcg = cgroup_path.clone();
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            let tick = if keep { timeout } else { Duration::from_millis(5) };
            let mut last = None;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(tick.min(left)) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return (false, last),
                    Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                        let _ = rt.exec_runtime(&["kill", &wid, "KILL"]);
                        return (true, last);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Ok(a) = rt.hier.accounting(&wcg) {
                            last = Some(a);
                        }
                    }
                }
            }
        });
        let out = child.wait_with_output().map_err(io_err(format!("wait for {} run {id}", self.kind)));
        let _ = tx.send(());
        let (timed_out, sampled) = watchdog.join().unwrap_or((false, None));
        let out = out?;
        let run_ns = ns(t1.elapsed());
        let runtime_failed = |out: &std::process::Output| Error::Runtime {
            command: format!("{} run {id}", self.kind),
            status: status_string(out.status),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        };
        let accounting = if keep {
            // The runtime's own failure (bad bundle, mount error) leaves no container state
            // behind; a container that ran and exited non-zero does.
            if !self.state_dir.join(&id).exists() && !out.status.success() {
                return Err(runtime_failed(&out));
            }
            match self.hier.accounting(&cgroup_path) {
                Ok(a) => Some(a),
                Err(e) => {
                    log::warn!("container {id}: accounting: {e}");
                    None
                }
            }
        } else {
            sampled
        };
        let accounting_final = keep;
        let (exit_code, signal) = match out.status.code() {
            Some(c) if c > 128 && timed_out => (None, Some(c - 128)),
            Some(c) => (Some(c), None),
            None => (None, out.status.signal()),
        };
        let t2 = Instant::now();
        st.finish()?;
        let teardown_ns = ns(t2.elapsed());
        Ok(RunOutput {
            id,
            exit_code,
            signal,
            stdout: out.stdout,
            stderr: out.stderr,
            accounting,
            timings: RunTimings { setup_ns, run_ns, teardown_ns, total_ns: ns(t0.elapsed()) },
            layer_key: st.layer_key.clone(),
            cgroup_path,
            timed_out,
            accounting_final,
        })
    }

    /// Start a long-lived container (create + start, timed apart). See the module docs.
    pub fn start<'d>(&self, driver: &'d dyn Driver, image: &Image, spec: &ContainerSpec) -> Result<Container<'d>> {
        let t0 = Instant::now();
        let mut st = self.stage(driver, image, spec)?;
        let setup_ns = ns(t0.elapsed());
        let id = st.id.clone();
        let stdout_path = st.dir.join("stdout");
        let stderr_path = st.dir.join("stderr");
        let pid_path = st.dir.join("pid");
        let so = fs::File::create(&stdout_path).map_err(io_err(format!("create {}", stdout_path.display())))?;
        let se = fs::File::create(&stderr_path).map_err(io_err(format!("create {}", stderr_path.display())))?;
        let bundle = st.dir.to_string_lossy().into_owned();
        let pid_file = pid_path.to_string_lossy().into_owned();
        let t1 = Instant::now();
        self.record_container(&id)?;
        st.created = true;
        // The container's stdio are these files: runc/crun hand their own stdio to the process.
        let status = self
            .command()
            .args(["create", "--bundle", &bundle, "--pid-file", &pid_file, &id])
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            .status()
            .map_err(io_err(format!("run {} create", self.kind)))?;
        if !status.success() {
            return Err(Error::Runtime {
                command: format!("{} create {id}", self.kind),
                status: status_string(status),
                stderr: fs::read_to_string(&stderr_path).unwrap_or_default().trim().into(),
            });
        }
        let create_ns = ns(t1.elapsed());
        let t2 = Instant::now();
        self.exec_runtime(&["start", &id])?;
        let start_ns = ns(t2.elapsed());
        let pid: i32 = fs::read_to_string(&pid_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::Container { id: id.clone(), message: "no pid file after create".into() })?;
        let timings = StartTimings { setup_ns, create_ns, start_ns, total_ns: ns(t0.elapsed()) };
        Ok(Container {
            st,
            pid,
            timings,
            stdout_path,
            stderr_path,
            stop_timeout: spec.stop_timeout.unwrap_or(Duration::from_secs(10)),
        })
    }

    /// Containers in our state directory (and only there).
    pub fn list_ours(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let rd = match fs::read_dir(&self.state_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(io_err(format!("read {}", self.state_dir.display()))(e)),
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                ids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Delete every container of ours (running or not), then remove what a crash may have left:
    /// cgroups under our parent, rootfs mounts and bundle directories under `<root>/containers`.
    /// Layers belong to drivers: see [`Runtime::remove_container_layers`].
    pub fn kill_all_ours(&self) -> Result<CleanReport> {
        let mut rep = CleanReport::default();
        for id in self.list_ours()? {
            match self.exec_runtime(&["delete", "--force", &id]) {
                Ok(_) => rep.containers.push(id),
                Err(e) => {
                    // A state dir whose init is long gone can confuse the runtime; the state
                    // is ours, so remove it by hand.
                    let dir = self.state_dir.join(&id);
                    if fs::remove_dir_all(&dir).is_ok() {
                        rep.containers.push(id);
                    } else {
                        rep.errors.push(e.to_string());
                    }
                }
            }
        }
        let cgroups = self.hier.children(&self.cgroup_parent);
        for c in &cgroups {
            match self.hier.remove_tree(&self.cgroup_path(c)) {
                Ok(()) => rep.cgroups.push(self.cgroup_path(c)),
                Err(e) => rep.errors.push(format!("cgroup {}: {e}", self.cgroup_path(c))),
            }
        }
        let _ = self.hier.remove_tree(&self.cgroup_parent);
        let containers = self.root.join("containers");
        if let Ok(ms) = cowbench_drivers::sys::mounts::mounts_under(&containers) {
            let mut targets: Vec<PathBuf> = ms.into_iter().map(|m| m.target).collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.as_os_str().len()));
            for t in targets {
                match cowbench_drivers::sys::mounts::unmount(&t) {
                    Ok(()) => rep.mounts.push(t),
                    Err(e) => rep.errors.push(format!("unmount {}: {e}", t.display())),
                }
            }
        }
        if let Ok(rd) = fs::read_dir(&containers) {
            for e in rd.flatten() {
                if let Err(err) = fs::remove_dir_all(e.path()) {
                    rep.errors.push(format!("remove {}: {err}", e.path().display()));
                }
            }
        }
        Ok(rep)
    }

    /// Remove the container layers (`ctr-*`) a crash left in `driver`. Returns their keys.
    pub fn remove_container_layers(driver: &dyn Driver) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for l in driver.list()? {
            if l.key.starts_with("ctr-") && l.kind != cowbench_drivers::Kind::Committed {
                driver.remove(&l.key)?;
                removed.push(l.key);
            }
        }
        Ok(removed)
    }
}

fn parse_version(kind: RuntimeKind, text: &str) -> String {
    // runc: "runc version 1.1.5+ds1\ncommit: ...\nspec: 1.0.2-dev"; crun: "crun version 1.8.1\n...spec: 1.0.0"
    let mut version = None;
    let mut spec = None;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix(&format!("{} version ", kind.as_str())) {
            version = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("spec: ") {
            spec = Some(v.trim().to_string());
        }
    }
    match (version, spec) {
        (Some(v), Some(s)) => format!("{kind} {v} (spec {s})"),
        (Some(v), None) => format!("{kind} {v}"),
        _ => format!("{kind} {}", text.lines().next().unwrap_or("").trim()),
    }
}

/// Image environment overridden by the spec's entries of the same name; PATH defaulted.
fn merge_env(image: &[String], extra: &[String]) -> Vec<String> {
    let key = |s: &String| s.split('=').next().unwrap_or("").to_string();
    let mut out: Vec<String> = Vec::new();
    for e in image.iter().chain(extra) {
        let k = key(e);
        out.retain(|o| key(o) != k);
        out.push(e.clone());
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    out
}

/// The resources of one container, released in reverse order on drop.
struct Staged<'d> {
    rt: Runtime,
    driver: &'d dyn Driver,
    id: String,
    dir: PathBuf,
    layer_key: String,
    layer_made: bool,
    mounted: bool,
    created: bool,
    keep_layer: bool,
    done: bool,
}

impl Staged<'_> {
    /// Delete the container, its cgroup, the rootfs mount, the layer and the bundle. Every step
    /// is tried; the first error is returned.
    fn finish(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut first: Option<Error> = None;
        let mut note = |e: Error| {
            log::warn!("container {}: cleanup: {e}", self.id);
            first.get_or_insert(e);
        };
        if self.created {
            if let Err(e) = self.rt.exec_runtime(&["delete", "--force", &self.id]) {
                // "does not exist" after a failed create is not an error.
                if self.rt.state_dir.join(&self.id).exists() {
                    note(e);
                }
            }
            let ledger = self.rt.ledger();
            if !self.rt.state_dir.join(&self.id).exists() {
                let _ = ledger.forget(ResourceKind::Container, &self.id);
            }
            let cg = self.rt.cgroup_path(&self.id);
            if self.rt.hier.exists(&cg) {
                if let Err(e) = self.rt.hier.remove_tree(&cg) {
                    note(Error::Io { context: format!("remove cgroup {cg}"), source: e });
                }
            }
            if !self.rt.hier.exists(&cg) {
                let _ = ledger.forget(ResourceKind::Cgroup, cg.trim_matches('/'));
            }
        }
        let rootfs = self.dir.join("rootfs");
        if self.mounted {
            if let Err(e) = self.driver.unmount(&rootfs) {
                note(e.into());
            }
        }
        if self.layer_made && !self.keep_layer {
            if let Err(e) = self.driver.remove(&self.layer_key) {
                note(e.into());
            }
        }
        if !cowbench_drivers::sys::mounts::is_mountpoint(&rootfs) {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    note(Error::Io { context: format!("remove {}", self.dir.display()), source: e });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("cowbench: container {}: cleanup failed: {e}", self.id);
        }
    }
}

/// A long-lived container. Dropping it kills and removes everything it holds.
pub struct Container<'d> {
    st: Staged<'d>,
    pid: i32,
    timings: StartTimings,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    stop_timeout: Duration,
}

impl<'d> Container<'d> {
    pub fn id(&self) -> &str {
        &self.st.id
    }

    /// Host pid of the container's init process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    pub fn cgroup_path(&self) -> String {
        self.st.rt.cgroup_path(&self.st.id)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.st.dir.join("rootfs")
    }

    pub fn layer_key(&self) -> &str {
        &self.st.layer_key
    }

    /// Wait until the probe has started its `hold` operation (its marker line on stderr).
    /// Returns how long this call waited (polling every 2 ms).
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let err = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            if err.contains(HOLD_MARKER) {
                return Ok(t0.elapsed());
            }
            if !process_alive(self.pid) {
                return Err(Error::Container {
                    id: self.st.id.clone(),
                    message: format!("exited before it was ready; stderr: {}", err.trim()),
                });
            }
            if t0.elapsed() > timeout {
                return Err(Error::Container { id: self.st.id.clone(), message: format!("not ready after {timeout:?}") });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The container's cgroup accounting now.
    pub fn accounting(&self) -> Result<Accounting> {
        let cg = self.cgroup_path();
        self.st.rt.hier.accounting(&cg).map_err(io_err(format!("container {}: accounting of {cg}", self.st.id)))
    }

    /// Run a process in the container (`<runtime> exec`).
    pub fn exec<S: AsRef<str>>(&self, args: &[S]) -> Result<ExecOutput> {
        let mut c = self.st.rt.command();
        c.arg("exec").arg(&self.st.id);
        for a in args {
            c.arg(a.as_ref());
        }
        let out = c.stdin(Stdio::null()).output().map_err(io_err(format!("{} exec {}", self.st.rt.kind, self.st.id)))?;
        Ok(ExecOutput { exit_code: out.status.code(), stdout: out.stdout, stderr: out.stderr })
    }

    /// SIGTERM, wait for the process (SIGKILL after the stop timeout), read the accounting and
    /// the output, then remove everything.
    pub fn stop(mut self) -> Result<StopOutput> {
        let id = self.st.id.clone();
        let t0 = Instant::now();
        let mut killed = false;
        // A container already ended (`Container::sigterm` from the host) needs no runtime call
        // to be signalled.
        if !wait_exit(self.pid, Duration::ZERO) {
            if let Err(e) = self.st.rt.exec_runtime(&["kill", &id, "TERM"]) {
                // Ended meanwhile: the runtime says "not running" while the init may still wait
                // to be reaped. Only a process that does not end is an error.
                if !wait_exit(self.pid, Duration::from_secs(2)) {
                    return Err(e);
                }
            }
        }
        if !wait_exit(self.pid, self.stop_timeout) {
            killed = true;
            let _ = self.st.rt.exec_runtime(&["kill", &id, "KILL"]);
            if !wait_exit(self.pid, Duration::from_secs(10)) {
                return Err(Error::Container { id, message: "still running after SIGKILL".into() });
            }
        }
        let stop_ns = ns(t0.elapsed());
        let accounting = self.accounting().map_err(|e| log::warn!("{e}")).ok();
        let stdout = fs::read(&self.stdout_path).unwrap_or_default();
        let stderr = fs::read(&self.stderr_path).unwrap_or_default();
        self.st.finish()?;
        Ok(StopOutput { id, stdout, stderr, accounting, stop_ns, killed })
    }
}

fn process_alive(pid: i32) -> bool {
    // The init is not our child, so there is no zombie to confuse kill(0): once it has exited
    // (and been reaped by its parent) the pid is gone.
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Wait until process `pid` (not our child) has exited, with a pidfd; false on timeout.
fn wait_exit(pid: i32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // ESRCH: already gone.
        return !process_alive(pid);
    }
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let deadline = Instant::now() + timeout;
    let done = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: pfd is a valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r > 0 {
            break true;
        }
        if r == 0 || Instant::now() >= deadline {
            break false;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break !process_alive(pid);
        }
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = parse_version(RuntimeKind::Runc, "runc version 1.1.5+ds1\ncommit: x\nspec: 1.0.2-dev\ngo: go1.19\n");
        assert_eq!(v, "runc 1.1.5+ds1 (spec 1.0.2-dev)");
        let v = parse_version(RuntimeKind::Crun, "crun version 1.8.1\ncommit: f8\nrundir: /run/crun\nspec: 1.0.0\n");
        assert_eq!(v, "crun 1.8.1 (spec 1.0.0)");
    }

    #[test]
    fn env_merge() {
        let e = merge_env(&["A=1".into(), "B=2".into()], &["A=3".into()]);
        assert_eq!(e, vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "B=2", "A=3"]);
        let e = merge_env(&["PATH=/x".into()], &[]);
        assert_eq!(e, vec!["PATH=/x"]);
    }

    #[test]
    fn ids_are_unique() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(a.len() <= 64 && !a.contains('/'));
    }
}
