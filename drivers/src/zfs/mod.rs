//! The `zfs` backend, driving the `zfs`/`zpool` CLI as moby's zfs graphdriver does.
//!
//! - base layer: `zfs create` of a filesystem; child layer: `zfs snapshot parent@<id>` +
//!   `zfs clone`, after which the snapshot is marked for deferred destruction (`destroy -d`),
//!   so it goes away with its last clone (moby does the same);
//! - view: a clone with `readonly=on`; commit: `zfs set readonly=on`;
//! - remove: unmount, destroy the clone, then its origin snapshot if it is still there.
//!
//! Two implementations run the same CLI:
//! - the OpenZFS kernel module: datasets get `mountpoint=legacy` and cowbench mounts them with
//!   mount(2) (type `zfs`), like moby;
//! - zfs-fuse (Debian `zfs-fuse`, ZFS in a userspace daemon): it has no `mount -t zfs` and
//!   ignores legacy mounts (its mounts are FUSE mounts made by the daemon itself), so every
//!   dataset gets `mountpoint=<driver root>/mnt/<id>` and the daemon mounts it there when it is
//!   created or its pool imported. Tried here: `mount -t zfs` fails (unknown filesystem
//!   type), `zfs mount` refuses legacy datasets, a clone is mounted at creation whatever
//!   `canmount` says. A just-unmounted dataset is sometimes reported busy for a moment, so
//!   destroys are retried.
//!
//! In both cases each layer is mounted at `<driver root>/mnt/<id>` while it exists, and
//! [`Driver::mount`] is a bind mount of that directory (read-only for views and committed
//! layers); apply, changes and diff work on those directories.
//!
//! Storage: by default a pool `cowbench-<8 hex of sha256(driver root)>` on a sparse file
//! `<driver root>/pool.img` (option `size`, default 2G), created with `cachefile=none` so that
//! no daemon or boot imports it behind cowbench's back, and with a quota on its root dataset a
//! little below its size (see `keep_headroom`), so that a full store still takes property
//! changes. `dataset=POOL/DS` uses an existing dataset instead: layers go to
//! `POOL/DS/cowbench-<hash>`, which teardown destroys; the dataset itself is never touched.
//!
//! Usage: the `used` property of the layer's dataset (its unique bytes; clones share the rest
//! with their origin), read after a pool sync: properties are updated when a transaction group
//! syncs, and setting a property is a sync task that returns only after one has.

pub mod daemon;
pub mod openzfs;
pub mod zdb;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::archive::{self, DiffSource, Whiteouts};
use crate::backend::Backend;
use crate::driver::{
    ApplyStats, Backing, BackingKind, CacheSource, CacheUsage, Capabilities, ChangeKind, Driver, DriverConfig,
    Implementation, Kind, LayerInfo, ProbeReport, SpaceSource, SpaceUsage, Status, Usage,
};
use crate::error::{Error, IoContext, Result};
use crate::ledger::{Ledger, ResourceKind};
use crate::snapshotter::Snapshotter;
use crate::sys::cmd::run;
use crate::sys::{hostinfo, loopdev, mounts, tree};

pub const NAME: &str = "zfs";

const DEFAULT_SIZE: u64 = 2 << 30;
/// ZFS refuses vdevs below 64 MiB.
const MIN_SIZE: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(120);
const KNOWN_OPTIONS: [&str; 2] = ["size", "dataset"];

/// Which code runs ZFS here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// The OpenZFS kernel module, with its version.
    Kernel(Option<String>),
    /// zfs-fuse, with the Debian package version.
    Fuse(Option<String>),
}

impl Flavor {
    fn implementation(&self) -> Implementation {
        match self {
            Flavor::Kernel(v) => Implementation {
                name: format!("kernel (OpenZFS {})", v.as_deref().unwrap_or("unknown version")),
                version: v.clone(),
            },
            Flavor::Fuse(v) => Implementation { name: "zfs-fuse".into(), version: v.clone() },
        }
    }

    fn is_fuse(&self) -> bool {
        matches!(self, Flavor::Fuse(_))
    }
}

/// Look at the host without changing anything.
pub fn detect() -> std::result::Result<Flavor, String> {
    if let Some(r) = openzfs::detect() {
        return r;
    }
    if hostinfo::which("zfs").is_none() || hostinfo::which("zpool").is_none() {
        return Err("the zfs/zpool commands are not installed (Debian zfsutils-linux with the OpenZFS module, or zfs-fuse)".into());
    }
    if hostinfo::kernel_has_fs("zfs") || Path::new("/sys/module/zfs").exists() {
        if !Path::new("/dev/zfs").exists() {
            return Err("the zfs kernel module is loaded but /dev/zfs is missing".into());
        }
        let v = fs::read_to_string("/sys/module/zfs/version").ok().map(|s| s.trim().split('-').next().unwrap_or("").to_string());
        return Ok(Flavor::Kernel(v.filter(|s| !s.is_empty())));
    }
    if hostinfo::which("zfs-fuse").is_none() {
        return Err(format!(
            "kernel {} has no zfs module and zfs-fuse is not installed",
            hostinfo::kernel_release()
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("zfs-fuse needs /dev/fuse, which is missing".into());
    }
    Ok(Flavor::Fuse(fuse_version()))
}

fn fuse_version() -> Option<String> {
    let out = run(NAME, "dpkg-query", &["-W", "-f", "${Version}", "zfs-fuse"], Duration::from_secs(10)).ok()?;
    let v = out.stdout.trim();
    // "0.7.0-25+b1": the upstream part is the zfs-fuse version.
    (!v.is_empty()).then(|| v.split('-').next().unwrap_or(v).to_string())
}

pub fn probe() -> ProbeReport {
    if !hostinfo::is_root() {
        return ProbeReport::unavailable(NAME, "needs root (zfs/zpool, mounts)");
    }
    let flavor = match detect() {
        Ok(f) => f,
        Err(reason) => {
            return ProbeReport::unavailable(NAME, reason)
                .with_hint("install zfsutils-linux with the OpenZFS module, or the Debian package zfs-fuse")
        }
    };
    if flavor.is_fuse() {
        // Probing starts nothing: the daemon is started by the driver session that needs it
        // (and stopped at its teardown). What it needs to start is checked here instead.
        if let Err(e) = fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
            return ProbeReport::unavailable(NAME, format!("zfs-fuse cannot open /dev/fuse: {e}"));
        }
    }
    let mut r = ProbeReport::available(NAME, &flavor.implementation());
    r.stand_in = flavor.is_fuse();
    let daemon_pid = if flavor.is_fuse() { daemon::running_pid() } else { None };
    // zfs-fuse's CLI answers only through a running daemon.
    if !flavor.is_fuse() || daemon_pid.is_some() {
        if let Ok(out) = run(NAME, &openzfs::tool("zpool"), &["upgrade", "-v"], Duration::from_secs(10)) {
            if let Some(v) = out.stdout.lines().find_map(|l| l.split("pool version ").nth(1)) {
                r = r.with_detail("pool_version", v.trim_end_matches('.'));
            }
        }
    }
    if flavor.is_fuse() {
        r = r
            .with_detail("daemon_pid", daemon_pid.map(|p| p.to_string()).unwrap_or_default())
            .with_detail("daemon_started_by_cowbench", daemon::started_by_us().to_string());
    }
    r
}

/// An exclusive `flock`, released on drop.
pub struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx(NAME, None, || format!("open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(NAME, None, format!("flock {}", path.display()), std::io::Error::last_os_error()));
        }
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Where the layers live; persisted so that a second process finds the same store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
enum Store {
    /// cowbench's own pool on a sparse file; layers are `<pool>/<id>`.
    Pool { pool: String, image: PathBuf },
    /// Below a dataset the user named; layers are `<base>/<id>`.
    Dataset { dataset: String, base: String },
}

impl Store {
    fn base(&self) -> &str {
        match self {
            Store::Pool { pool, .. } => pool,
            Store::Dataset { base, .. } => base,
        }
    }

    fn pool(&self) -> &str {
        match self {
            Store::Pool { pool, .. } => pool,
            Store::Dataset { dataset, .. } => dataset.split('/').next().unwrap_or(dataset),
        }
    }
}

pub struct Zfs {
    root: PathBuf,
    store: Store,
    flavor: Flavor,
    /// zfs-fuse only (see [`daemon::Turn`]); given back when the handle is dropped.
    _turn: Option<daemon::Turn>,
    ledger: Ledger,
}

fn hash8(p: &Path) -> String {
    let canon = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    hex::encode(&sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes())[..4])
}

/// A zfs/zpool failure that means "full" becomes [`Error::NoSpace`].
fn classify(e: Error, key: Option<&str>) -> Error {
    match e {
        Error::Command { ref stderr, ref command, .. } if stderr.contains("out of space") => Error::NoSpace {
            driver: NAME.into(),
            key: key.unwrap_or("-").into(),
            detail: format!("{command}: {stderr}"),
        },
        e => e,
    }
}

fn zfs(key: Option<&str>, args: &[&str]) -> Result<String> {
    run(NAME, &openzfs::tool("zfs"), args, TIMEOUT).map(|o| o.stdout).map_err(|e| classify(e, key))
}

fn zpool(args: &[&str]) -> Result<String> {
    run(NAME, &openzfs::tool("zpool"), args, TIMEOUT).map(|o| o.stdout).map_err(|e| classify(e, None))
}

fn stderr_has(e: &Error, what: &[&str]) -> bool {
    matches!(e, Error::Command { stderr, .. } if what.iter().any(|w| stderr.contains(w)))
}

fn exists(ds: &str) -> bool {
    run(NAME, &openzfs::tool("zfs"), &["list", "-H", "-o", "name", ds], TIMEOUT).is_ok()
}

fn pool_imported(pool: &str) -> bool {
    run(NAME, &openzfs::tool("zpool"), &["list", "-H", "-o", "name", pool], TIMEOUT).is_ok()
}

/// `zfs destroy` (with `extra` flags), retried while the dataset is briefly busy after an
/// unmount (zfs-fuse); a dataset that is already gone counts as destroyed.
fn destroy(key: Option<&str>, extra: &[&str], ds: &str) -> Result<()> {
    let mut args = vec!["destroy"];
    args.extend_from_slice(extra);
    args.push(ds);
    let mut last = None;
    for i in 0..40u64 {
        match zfs(key, &args) {
            Ok(_) => return Ok(()),
            Err(e) if stderr_has(&e, &["does not exist", "could not find"]) => return Ok(()),
            Err(e) if stderr_has(&e, &["busy"]) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(50 + 25 * i.min(8)));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one try"))
}

/// Cap the pool's root dataset (and so every layer below it) a little below what the pool
/// holds. A write into a full layer then fails with EDQUOT, reported as out of space, while the
/// pool keeps room for the property changes that commit (`readonly=on`), usage (its sync stamp)
/// and a rollback need: on a really full pool zfs-fuse refuses every one of them.
fn keep_headroom(pool: &str) -> Result<()> {
    let avail = zfs(None, &["get", "-Hp", "-o", "value", "available", pool])?;
    let avail: u64 = avail.trim().parse().map_err(|_| Error::Command {
        driver: NAME.into(),
        command: format!("zfs get -Hp -o value available {pool}"),
        status: "unparsable output".into(),
        stderr: avail.clone(),
    })?;
    let quota = avail - (avail / 16).max(HEADROOM_MIN).min(avail / 2);
    zfs(None, &["set", &format!("quota={quota}"), pool]).map(|_| ())
}

/// The least room kept free in a pool cowbench created, whatever its size.
const HEADROOM_MIN: u64 = 4 << 20;

/// A snapshot `<layer>@pre-apply` taken before an apply; a failed apply rolls the dataset back
/// to it (which also frees what the apply wrote), a good one destroys it.
struct SnapshotCheckpoint<'a> {
    key: &'a str,
    snap: String,
}

impl<'a> SnapshotCheckpoint<'a> {
    fn take(key: &'a str, ds: &str) -> Result<Self> {
        let snap = format!("{ds}@pre-apply");
        if let Err(e) = zfs(Some(key), &["snapshot", &snap]) {
            if !stderr_has(&e, &["already exists"]) {
                return Err(e);
            }
            // Left by a process that died during an apply.
            destroy(Some(key), &[], &snap)?;
            zfs(Some(key), &["snapshot", &snap])?;
        }
        Ok(SnapshotCheckpoint { key, snap })
    }
}

impl crate::rollback::Checkpoint for SnapshotCheckpoint<'_> {
    fn restore(self) -> Result<()> {
        zfs(Some(self.key), &["rollback", &self.snap])?;
        destroy(Some(self.key), &[], &self.snap)
    }

    fn discard(self) -> Result<()> {
        destroy(Some(self.key), &[], &self.snap)
    }
}

/// Destroy every imported pool named `<prefix>` or `<prefix>-...` for one of `prefixes`: what a
/// process that died between creating a pool and saving its state left behind, which no open
/// of the backend adopts. Returns each pool found and how its destroy went. No zpool tool or
/// no daemon answering: nothing to find.
pub fn release_pools(prefixes: &[String]) -> Vec<(String, Result<()>)> {
    let Ok(list) = zpool(&["list", "-H", "-o", "name"]) else { return Vec::new() };
    list.lines()
        .map(str::trim)
        .filter(|n| prefixes.iter().any(|p| n == p || n.starts_with(&format!("{p}-"))))
        .map(|n| (n.to_string(), zpool(&["destroy", "-f", n]).map(|_| ())))
        .collect()
}

/// Import cowbench's pool `pool` on `image` (the file, or the loop device over it).
fn import(flavor: &Flavor, pool: &str, image: &Path, root: &Path) -> Result<()> {
    let mut args = vec!["import", "-o", "cachefile=none"];
    let dirs = openzfs::import_dirs(flavor, image, root)?;
    dirs.iter().for_each(|d| args.extend(["-d", d.as_str()]));
    args.push(pool);
    zpool(&args).map(|_| ())
}

/// Run `zpool` with `args`, retried while it reports the pool busy (zfs-fuse counts a
/// just-unmounted dataset as busy for a moment).
fn zpool_retry_busy(args: &[&str]) -> Result<()> {
    let mut r = Ok(());
    for i in 0..40u64 {
        r = zpool(args).map(|_| ());
        match &r {
            Err(e) if stderr_has(e, &["busy"]) => std::thread::sleep(Duration::from_millis(50 + 25 * i.min(8))),
            _ => break,
        }
    }
    r
}

/// Open (set up or adopt) the backend under `cfg.root/zfs`.
pub fn open(cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    Ok(Box::new(Zfs::open(cfg)?))
}

impl Zfs {
    /// Set up or adopt the pool or dataset under `cfg.root/zfs`, behind the generic
    /// snapshotter; every layer's dataset is mounted at `mnt/<id>` again.
    pub fn open(cfg: &DriverConfig) -> Result<Snapshotter<Zfs>> {
        for k in cfg.options.keys() {
            if !KNOWN_OPTIONS.contains(&k.as_str()) {
                return Err(Error::config(NAME, format!("unknown option '{k}' (known: {})", KNOWN_OPTIONS.join(", "))));
            }
        }
        let size = match cfg.option("size") {
            Some(v) => crate::sys::units::size_option(NAME, "size", v)?,
            None => DEFAULT_SIZE,
        };
        if size < MIN_SIZE {
            return Err(Error::config(NAME, format!("size {size} is below the {MIN_SIZE} bytes a ZFS vdev needs")));
        }
        let flavor = detect().map_err(|r| Error::unavailable(NAME, r))?;
        let root = cfg.driver_root(NAME);
        fs::create_dir_all(root.join("mnt")).ctx(NAME, None, || format!("create {}", root.display()))?;
        let root = fs::canonicalize(&root).unwrap_or(root);
        let turn = if flavor.is_fuse() { Some(daemon::Turn::take(&root)?) } else { None };
        let _root_lock = FileLock::acquire(&root.join("setup.lock"))?;
        let _host_lock = daemon::lock()?;
        let ledger = Ledger::open(&cfg.root);
        if flavor.is_fuse() {
            daemon::ensure_recorded(Some(&ledger))?;
        }
        let state_path = root.join("store.json");
        let saved: Option<Store> = match fs::read(&state_path) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| Error::Metadata {
                driver: NAME.into(),
                path: state_path.clone(),
                message: e.to_string(),
            })?),
            Err(_) => None,
        };
        let wanted = match cfg.option("dataset") {
            Some(ds) => {
                if !exists(ds) {
                    return Err(Error::config(NAME, format!("dataset={ds} does not exist")));
                }
                Store::Dataset { dataset: ds.into(), base: format!("{ds}/cowbench-{}", hash8(&root)) }
            }
            None => Store::Pool { pool: format!("cowbench-{}", hash8(&root)), image: root.join("pool.img") },
        };
        if let Some(s) = &saved {
            if *s != wanted {
                return Err(Error::config(
                    NAME,
                    format!("{} was set up with {s:?}; open it with the same options or tear it down first", root.display()),
                ));
            }
        }
        match &wanted {
            Store::Pool { pool, image } => {
                if !pool_imported(pool) {
                    // Pool (and the loop device under it with the kernel module) in the ledger
                    // before import or create, so that `cowbench clean` destroys it after a crash.
                    ledger
                        .record(ResourceKind::Pool, pool, &image.display().to_string())
                        .ctx(NAME, None, || format!("record pool {pool} in the ledger"))?;
                    if !flavor.is_fuse() {
                        let id = image.display().to_string();
                        ledger.record(ResourceKind::Loop, &id, "zfs vdev").ctx(NAME, None, || format!("record the loop device of {id} in the ledger"))?;
                    }
                    if image.exists() {
                        import(&flavor, pool, image, &root)?;
                    } else {
                        loopdev::create_sparse(image, size).ctx(NAME, None, || format!("create {}", image.display()))?;
                        let img = openzfs::vdev(&flavor, image)?;
                        // No cache file: only cowbench imports this pool, and only from here.
                        let r = zpool(&["create", "-o", "cachefile=none", "-m", "none", pool, &img]);
                        if let Err(e) = r {
                            let _ = openzfs::release_vdev(image);
                            let _ = fs::remove_file(image);
                            let _ = ledger.forget(ResourceKind::Pool, pool);
                            let _ = ledger.forget(ResourceKind::Loop, &image.display().to_string());
                            return Err(e);
                        }
                        if let Err(e) = keep_headroom(pool) {
                            // The store works without it; only a full pool is less usable.
                            log::warn!("{NAME}: no headroom kept in pool {pool}: {e}");
                        }
                    }
                }
            }
            Store::Dataset { base, .. } => {
                if !exists(base) {
                    zfs(None, &["create", "-o", "mountpoint=none", base])?;
                }
            }
        }
        if saved.is_none() {
            let bytes = serde_json::to_vec_pretty(&wanted).expect("serializable");
            fs::write(&state_path, bytes).ctx(NAME, None, || format!("write {}", state_path.display()))?;
        }
        // The turn joins the handle last: a handle dropped on an error below must not give
        // the turn back (which takes the host lock) while this function still holds that lock.
        let meta_dir = root.clone();
        let mut z = Snapshotter::new(Zfs { root, store: wanted, flavor, _turn: None, ledger }, &meta_dir, &cfg.root)?;
        // After a reboot or a daemon restart the layers exist but are not mounted.
        for l in z.meta().list()? {
            z.backend().mount_internal(&l)?;
        }
        z.backend_mut()._turn = turn;
        Ok(z)
    }

    /// Sync a transaction group of the pool, with `layer`'s dirty data in it. A property
    /// change is a sync task: it returns once a transaction group has synced (zfs-fuse has no
    /// `zpool sync`).
    fn sync_txg(&self, layer: &LayerInfo) -> Result<()> {
        if let Ok(f) = File::open(self.mnt(layer.id)) {
            let _ = nix::unistd::syncfs(f.as_raw_fd());
        }
        let stamp = format!("cowbench:usage-sync={}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        zfs(Some(&layer.key), &["set", &stamp, &self.ds(layer.id)]).map(drop)
    }

    fn ds(&self, id: u64) -> String {
        format!("{}/{id}", self.store.base())
    }

    fn mnt(&self, id: u64) -> PathBuf {
        self.root.join("mnt").join(id.to_string())
    }

    fn mountpoint_prop(&self, id: u64) -> String {
        match self.flavor {
            Flavor::Kernel(_) => "mountpoint=legacy".into(),
            Flavor::Fuse(_) => format!("mountpoint={}", self.mnt(id).display()),
        }
    }

    /// Mount layer `l`'s dataset at its directory under `mnt/` unless it is mounted.
    fn mount_internal(&self, l: &LayerInfo) -> Result<()> {
        let dir = self.mnt(l.id);
        if mounts::is_mountpoint(&dir) {
            return Ok(());
        }
        let ds = self.ds(l.id);
        let id = tree::mount_id(&dir);
        self.ledger
            .record(ResourceKind::Mount, &id, &format!("{NAME} dataset {ds}"))
            .ctx(NAME, Some(&l.key), || format!("record the mount on {id} in the ledger"))?;
        let r = self.mount_dataset(l, &ds, &dir);
        if r.is_err() && !mounts::is_mountpoint(&dir) {
            let _ = self.ledger.forget(ResourceKind::Mount, &id);
        }
        r
    }

    fn mount_dataset(&self, l: &LayerInfo, ds: &str, dir: &Path) -> Result<()> {
        let (ds, dir) = (ds.to_string(), dir.to_path_buf());
        match self.flavor {
            Flavor::Kernel(_) => {
                fs::create_dir_all(&dir).ctx(NAME, Some(&l.key), || format!("create {}", dir.display()))?;
                let flags = if l.kind == Kind::Active { MsFlags::empty() } else { MsFlags::MS_RDONLY };
                mounts::mount(&ds, &dir, "zfs", flags, None)
                    .ctx(NAME, Some(&l.key), || format!("mount {ds} on {}", dir.display()))
            }
            Flavor::Fuse(_) => {
                match zfs(Some(&l.key), &["mount", &ds]) {
                    Err(e) if stderr_has(&e, &["already mounted"]) => {}
                    r => r.map(|_| ())?,
                }
                // zfs-fuse may still count a dataset as mounted after a kernel unmount; never
                // let a caller write into the bare directory instead of the dataset.
                let start = std::time::Instant::now();
                while !mounts::is_mountpoint(&dir) && start.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if mounts::is_mountpoint(&dir) {
                    Ok(())
                } else {
                    Err(Error::invalid(NAME, &l.key, format!("{ds} is not mounted at {} (zfs-fuse still counts it as mounted)", dir.display())))
                }
            }
        }
    }

    fn unmount_internal(&self, key: &str, id: u64) -> Result<()> {
        let dir = self.mnt(id);
        let mid = tree::mount_id(&dir);
        let r = self.unmount_dataset(key, &dir);
        if !mounts::is_mountpoint(&dir) {
            let _ = self.ledger.forget(ResourceKind::Mount, &mid);
        }
        r
    }

    fn unmount_dataset(&self, key: &str, dir: &Path) -> Result<()> {
        match self.flavor {
            Flavor::Kernel(_) => mounts::unmount(&dir).ctx(NAME, Some(key), || format!("unmount {}", dir.display())),
            // Not `zfs umount`: in zfs-fuse that removes the mount's channel from the daemon's
            // FUSE listener from another thread, and under concurrent I/O on other mounts the
            // listener was seen reading a reused descriptor while holding its lock, which hangs
            // every zfs-fuse mount on the host. A kernel unmount instead closes the connection,
            // and the listener cleans up in its own thread; the destroy that follows retries
            // while the daemon still counts the dataset as busy.
            Flavor::Fuse(_) => mounts::unmount(&dir).ctx(NAME, Some(key), || format!("unmount {}", dir.display())),
        }
    }

    /// A new layer's dataset: created empty or cloned from a snapshot of the parent, then
    /// mounted at `mnt/<id>`.
    fn create_dataset(&self, chain: &[LayerInfo]) -> Result<()> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        let ds = self.ds(info.id);
        if exists(&ds) {
            // Left by a process that died between creating it and recording it.
            let _ = self.unmount_internal(key, info.id);
            destroy(Some(key), &["-r"], &ds)?;
        }
        let mp = self.mountpoint_prop(info.id);
        // zfs-fuse mounts a dataset as it creates it: in the ledger first.
        let mid = tree::mount_id(&self.mnt(info.id));
        self.ledger
            .record(ResourceKind::Mount, &mid, &format!("{NAME} dataset {ds}"))
            .ctx(NAME, Some(key), || format!("record the mount on {mid} in the ledger"))?;
        let made = (|| -> Result<()> {
            match chain.get(1) {
                None => {
                    zfs(Some(key), &["create", "-o", &mp, &ds])?;
                }
                Some(p) => {
                    let snap = format!("{}@{}", self.ds(p.id), info.id);
                    zfs(Some(key), &["snapshot", &snap])?;
                    let mut args = vec!["clone", "-o", &mp];
                    if chain[0].kind == Kind::View {
                        args.extend(["-o", "readonly=on"]);
                    }
                    args.extend([snap.as_str(), ds.as_str()]);
                    if let Err(e) = zfs(Some(key), &args) {
                        let _ = destroy(Some(key), &[], &snap);
                        return Err(e);
                    }
                    // Deferred: the snapshot goes away by itself with the clone (as in moby).
                    if let Err(e) = zfs(Some(key), &["destroy", "-d", &snap]) {
                        log::warn!("zfs: deferred destroy of {snap}: {e}");
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            if !mounts::is_mountpoint(&self.mnt(info.id)) {
                let _ = self.ledger.forget(ResourceKind::Mount, &mid);
            }
            return Err(e);
        }
        if let Err(e) = self.mount_internal(info) {
            let _ = self.unmount_internal(key, info.id);
            let _ = destroy(Some(key), &[], &ds);
            return Err(e);
        }
        Ok(())
    }

    /// Mounts of our datasets outside `mnt/` (bind mounts made by [`Driver::mount`]),
    /// deepest first.
    fn foreign_mounts(&self) -> Vec<PathBuf> {
        let prefix = format!("{}/", self.store.base());
        let internal = self.root.join("mnt");
        let internal = fs::canonicalize(&internal).unwrap_or(internal);
        let mut v: Vec<PathBuf> = mounts::mounts()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.source.starts_with(&prefix) && m.target.parent() != Some(internal.as_path()))
            .map(|m| m.target)
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        v.dedup();
        v
    }

    /// The ARC: its size as [`Status::cache`], the rest as facts. zfs-fuse without its kstat
    /// mount exposes no ARC figure; the daemon's resident memory (which holds the ARC) stands in.
    fn arc_facts(&self, s: &mut Status) {
        let wanted = ["size", "c", "c_max", "hits", "misses"];
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        let source = match self.flavor {
            Flavor::Kernel(_) => {
                if let Ok(t) = fs::read_to_string("/proc/spl/kstat/zfs/arcstats") {
                    for l in t.lines() {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        if f.len() == 3 && wanted.contains(&f[0]) {
                            found.insert(f[0].to_string(), f[2].to_string());
                        }
                    }
                }
                CacheSource::KernelArcstats
            }
            Flavor::Fuse(_) => {
                // zfs-fuse mounts its kstats (one file per counter) at /zfs-kstat unless
                // started with --no-kstat-mount.
                let dir = Path::new("/zfs-kstat/zfs/arcstats");
                for w in wanted {
                    if let Ok(v) = fs::read_to_string(dir.join(w)) {
                        found.insert(w.to_string(), v.trim().to_string());
                    }
                }
                CacheSource::ZfsFuseKstat
            }
        };
        let limit_bytes = found.get("c_max").and_then(|v| v.parse().ok());
        if let Some(bytes) = found.get("size").and_then(|v| v.parse().ok()) {
            s.cache = Some(CacheUsage { bytes, source, limit_bytes });
        } else if let Some(pid) = s.daemon_pid {
            if let Some(bytes) = hostinfo::process_rss_bytes(pid) {
                s.cache = Some(CacheUsage { bytes, source: CacheSource::DaemonRss { pid }, limit_bytes });
            }
        }
        if found.is_empty() {
            let why = match source {
                CacheSource::KernelArcstats => "not exposed (/proc/spl/kstat/zfs/arcstats unreadable)",
                _ => "not exposed (no /zfs-kstat: daemon started with --no-kstat-mount?)",
            };
            s.fact("arc", why);
        }
        for (k, v) in found {
            s.fact(format!("arc_{k}"), v);
        }
    }
}

impl Backend for Zfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn implementation(&self) -> Implementation {
        self.flavor.implementation()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            // Per-dataset quotas exist in ZFS but cowbench does not set them (yet).
            quota: false,
            // Copy-on-write per record (128 KiB by default), not per file.
            block_level_cow: true,
            // The claim to test: clones read shared blocks through one ARC.
            shared_page_cache: true,
            shares_layers: true,
            max_depth: None,
            stand_in: self.flavor.is_fuse(),
            // A pool on a file vdev (not a loop device, but the same caveat: the host's page
            // cache and filesystem sit under the pool).
            loop_backed: matches!(self.store, Store::Pool { .. }),
            discard: false,
            // OpenZFS before 2.3 and zfs-fuse accept O_DIRECT opens and serve them cached.
            o_direct: true,
            // A parentless layer is a dataset of its own.
            native_fs_layer: true,
            // The ARC, which dropping the page cache leaves as it is.
            own_read_cache: true,
            deferred_free: false,
        }
    }

    fn create(&self, chain: &[LayerInfo]) -> Result<()> {
        self.create_dataset(chain)
    }

    fn freeze(&self, active: &LayerInfo, _committed: &LayerInfo) -> Result<()> {
        // Flush what writers left in the page cache before the dataset turns read-only.
        if let Ok(f) = File::open(self.mnt(active.id)) {
            let _ = nix::unistd::syncfs(f.as_raw_fd());
        }
        zfs(Some(&active.key), &["set", "readonly=on", &self.ds(active.id)]).map(|_| ())
    }

    fn mount(&self, chain: &[LayerInfo], target: &Path) -> Result<()> {
        let info = &chain[0];
        self.mount_internal(info)?;
        let src = self.mnt(info.id);
        // Committed layers and views are mounted read-only.
        tree::bind_mount(&src, target, info.kind != Kind::Active)
            .ctx(NAME, Some(&info.key), || format!("bind mount {} on {}", src.display(), target.display()))
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mounts::unmount(target).ctx(NAME, None, || format!("unmount {}", target.display()))
    }

    fn destroy(&self, info: &LayerInfo) -> Result<()> {
        let key = info.key.as_str();
        let ds = self.ds(info.id);
        let origin = zfs(Some(key), &["get", "-H", "-o", "value", "origin", &ds]).map(|s| s.trim().to_string()).unwrap_or_default();
        self.unmount_internal(key, info.id)?;
        destroy(Some(key), &[], &ds)?;
        // Normally gone already (deferred destroy); not when -d was refused.
        if origin.contains('@') {
            destroy(Some(key), &[], &origin)?;
        }
        let _ = fs::remove_dir(self.mnt(info.id));
        Ok(())
    }

    fn apply(&self, chain: &[LayerInfo], tar: &mut dyn Read) -> Result<ApplyStats> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        self.mount_internal(info)?;
        let cp = SnapshotCheckpoint::take(key, &self.ds(info.id))?;
        crate::rollback::apply_atomically(NAME, key, cp, || {
            archive::apply(NAME, key, tar, &self.mnt(info.id), Whiteouts::Delete).map_err(|e| match e {
                // EDQUOT from the headroom quota reads as a quota the user never set.
                Error::NoSpace { driver, key, detail } => {
                    Error::NoSpace { driver, key, detail: format!("{detail}; the layers filled {}", self.store.base()) }
                }
                e => e,
            })
        })
    }

    fn diff_source(&self, chain: &[LayerInfo], f: &mut dyn FnMut(&DiffSource) -> Result<()>) -> Result<()> {
        let lower = chain.get(1).map(|p| self.mnt(p.id));
        let upper = self.mnt(chain[0].id);
        f(&DiffSource::Compare { lower: lower.as_deref(), upper: &upper })
    }

    fn usage(&self, chain: &[LayerInfo]) -> Result<Usage> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        let ds = self.ds(info.id);
        // `used` below includes everything written so far.
        self.sync_txg(info)?;
        let out = zfs(Some(key), &["get", "-Hp", "-o", "value", "used", &ds])?;
        let bytes = out.trim().parse::<u64>().map_err(|_| Error::Command {
            driver: NAME.into(),
            command: format!("zfs get -Hp -o value used {ds}"),
            status: "unparsable output".into(),
            stderr: out.clone(),
        })?;
        let lower = chain.get(1).map(|p| self.mnt(p.id));
        let changes = archive::changes(NAME, key, &DiffSource::Compare { lower: lower.as_deref(), upper: &self.mnt(info.id) })?;
        let inodes = changes.iter().filter(|c| c.kind != ChangeKind::Deleted).count() as u64;
        Ok(Usage { bytes, inodes })
    }

    fn file_extents(&self, chain: &[LayerInfo], path: &Path) -> Result<crate::extents::FileExtents> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        use std::os::unix::fs::MetadataExt;
        // A ZPL file's inode number is its object id.
        let object = fs::metadata(path).ctx(NAME, Some(key), || format!("stat {}", path.display()))?.ino();
        // zdb reads the pool on disk: what the last transaction group wrote.
        self.sync_txg(info)?;
        let search = match &self.store {
            Store::Pool { image, .. } => {
                let dir = image.parent().unwrap_or(Path::new("/")).to_path_buf();
                Some(openzfs::import_dirs(&self.flavor, image, &dir)?)
            }
            // A pool of the user's: zdb finds it through its cache file.
            Store::Dataset { .. } => None,
        };
        let args = zdb::args(search.as_deref(), &self.ds(info.id), object);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(NAME, &openzfs::tool("zdb"), &argv, TIMEOUT).map_err(|e| classify(e, Some(key)))?;
        zdb::parse(&out.stdout, path).map_err(|why| Error::Command {
            driver: NAME.into(),
            command: format!("zdb {}", args.join(" ")),
            status: "unusable output".into(),
            stderr: why,
        })
    }

    fn status(&self) -> Result<Status> {
        let mut s = Status::new(self.flavor.implementation().to_string(), 0);
        let pool = self.store.pool().to_string();
        s.fact("pool", &pool);
        s.fact("layers_dataset", self.store.base());
        s.backing = Some(match &self.store {
            Store::Pool { image, .. } => {
                let mut b = Backing::new(BackingKind::VdevFile, image).with_file_sizes();
                // The kernel module's vdev is a loop device over the file (none for zfs-fuse).
                if !self.flavor.is_fuse() {
                    b.loop_devices = loopdev::find_by_file(image).unwrap_or_default();
                    b.loop_direct_io = b.loop_devices.first().and_then(|d| loopdev::direct_io(d).ok());
                }
                b
            }
            Store::Dataset { dataset, .. } => Backing::new(BackingKind::ExistingDataset, dataset),
        });
        // zfs-fuse's zpool has no -p (exact numbers): the pool line is as zpool prints it; the
        // exact figures come from the pool's root dataset.
        let cols = ["size", "allocated", "free", "capacity", "health", "dedupratio"];
        let line = zpool(&["list", "-H", "-o", &cols.join(","), &pool])?;
        for (k, v) in cols.iter().zip(line.trim().split('\t')) {
            s.fact(format!("pool_{k}"), v);
        }
        match zpool(&["get", "-H", "-o", "value", "fragmentation", &pool]) {
            // "12%", or "-" where the pool cannot tell
            Ok(v) => s.fragmentation_percent = v.trim().trim_end_matches('%').parse().ok(),
            Err(_) => s.fact("pool_fragmentation", "not exposed by this pool version"),
        }
        if let Ok(v) = zfs(None, &["get", "-Hp", "-o", "value", "used,available", &pool]) {
            let mut it = v.lines().map(|l| l.trim().parse::<u64>());
            if let (Some(Ok(used)), Some(Ok(avail))) = (it.next(), it.next()) {
                s.space = Some(SpaceUsage { used_bytes: used, total_bytes: used + avail, source: SpaceSource::PoolRootDataset });
            }
        }
        if let Ok(v) = zpool(&["get", "-H", "-o", "value", "version", &pool]) {
            s.fact("pool_version", v.trim());
        }
        if self.flavor.is_fuse() {
            s.daemon_pid = daemon::running_pid().and_then(|p| u32::try_from(p).ok());
            s.fact("daemon_started_by_cowbench", daemon::started_by_us());
            s.fact("mounts", "FUSE mounts by zfs-fuse at mnt/<id>, bind-mounted to targets");
        } else {
            s.fact("mounts", "mountpoint=legacy, mount(2) at mnt/<id>, bind-mounted to targets");
        }
        self.arc_facts(&mut s);
        s.fact("usage_method", "zfs used property after a txg sync");
        Ok(s)
    }

    /// Export and import the pool: exporting evicts every block of the pool from the ARC
    /// (dropping the page cache does not, and the ARC keeps what the image build and earlier
    /// cells read). Only cowbench's own pool, and only while no layer is mounted outside
    /// `mnt/` (a running container's root would hold the pool busy). The layers are unmounted
    /// from `mnt/` by the kernel first (as at teardown: zfs-fuse's own unmount path can hang
    /// its FUSE listener) and mounted there again after the import.
    fn evict_cache(&self, layers: &[LayerInfo]) -> Result<Option<String>> {
        let Store::Pool { pool, image } = &self.store else { return Ok(None) };
        let foreign = self.foreign_mounts();
        if let Some(m) = foreign.first() {
            return Err(Error::config(
                NAME,
                format!("cannot export pool {pool} to empty the ARC: {} layer mount(s) outside the driver (first: {})", foreign.len(), m.display()),
            ));
        }
        let arc = || {
            let mut s = Status::new(String::new(), 0);
            self.arc_facts(&mut s);
            s.cache.map(|c| c.bytes)
        };
        let before = arc();
        {
            let _root_lock = FileLock::acquire(&self.root.join("setup.lock"))?;
            let _host_lock = daemon::lock()?;
            for l in layers {
                self.unmount_internal(&l.key, l.id)?;
            }
            zpool_retry_busy(&["export", pool])?;
            import(&self.flavor, pool, image, &self.root)?;
        }
        for l in layers {
            self.mount_internal(l)?;
        }
        let fmt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |b| b.to_string());
        Ok(Some(format!("zpool export + import of {pool}: ARC size {} -> {} bytes", fmt(before), fmt(arc()))))
    }

    fn teardown(&self, _layers: &[LayerInfo]) -> Result<()> {
        let _root_lock = FileLock::acquire(&self.root.join("setup.lock"))?;
        let _host_lock = daemon::lock()?;
        let mut first: Option<Error> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                log::warn!("zfs teardown: {e}");
                first.get_or_insert(e);
            }
        };
        for t in self.foreign_mounts() {
            let id = tree::mount_id(&t);
            let r = mounts::unmount(&t).ctx(NAME, None, || format!("unmount {}", t.display()));
            if r.is_ok() {
                let _ = self.ledger.forget(ResourceKind::Mount, &id);
            }
            note(r);
        }
        // Kernel unmounts first, for both implementations (see `unmount_internal`).
        note(mounts::unmount_all_under(&self.root.join("mnt")).ctx(NAME, None, || "unmount layers".into()));
        // The layers' own mount points, mnt/<id>: forgotten once nothing is mounted there.
        for e in fs::read_dir(self.root.join("mnt")).into_iter().flatten().flatten() {
            let dir = e.path();
            if !mounts::is_mountpoint(&dir) {
                let _ = self.ledger.forget(ResourceKind::Mount, &tree::mount_id(&dir));
            }
        }
        match &self.store {
            Store::Pool { pool, image } => {
                if pool_imported(pool) {
                    let r = zpool_retry_busy(&["destroy", "-f", pool]);
                    if r.is_ok() {
                        let _ = self.ledger.forget(ResourceKind::Pool, pool);
                    }
                    note(r);
                } else {
                    let _ = self.ledger.forget(ResourceKind::Pool, pool);
                }
                let released = openzfs::release_vdev(image);
                if released.is_ok() && !self.flavor.is_fuse() {
                    let _ = self.ledger.forget(ResourceKind::Loop, &image.display().to_string());
                }
                note(released);
                if image.exists() {
                    note(fs::remove_file(image).ctx(NAME, None, || format!("remove {}", image.display())));
                }
            }
            Store::Dataset { base, .. } => {
                if exists(base) {
                    note(destroy(None, &["-r", "-f"], base));
                }
            }
        }
        note(mounts::unmount_all_under(&self.root).ctx(NAME, None, || format!("unmount under {}", self.root.display())));
        let _ = fs::remove_file(self.root.join("store.json"));
        if self.flavor.is_fuse() {
            // Stopped, or left running for pools of other roots: either way no longer this
            // root's to clean up.
            let r = daemon::stop_if_ours_and_idle();
            if r.is_ok() {
                let _ = self.ledger.forget(ResourceKind::Fuse, daemon::PIDFILE);
            }
            note(r);
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Labels;
    use std::io::Write;

    /// A driver on a fresh root under /var/tmp, torn down (files removed) on drop.
    struct Env {
        driver: Option<Snapshotter<Zfs>>,
        dir: Option<tempfile::TempDir>,
    }

    impl Env {
        fn new(options: &[(&str, &str)]) -> Option<Env> {
            let p = probe();
            if !p.available {
                eprintln!("SKIPPED zfs: {}", p.reason.unwrap_or_default());
                return None;
            }
            let dir = tempfile::Builder::new().prefix("cowbench-zfs-unit-").tempdir_in("/var/tmp").unwrap();
            let mut cfg = DriverConfig::new(dir.path().join("root"));
            for (k, v) in options {
                cfg = cfg.with_option(*k, *v);
            }
            let driver = Zfs::open(&cfg).unwrap();
            Some(Env { driver: Some(driver), dir: Some(dir) })
        }

        fn d(&self) -> &Snapshotter<Zfs> {
            self.driver.as_ref().unwrap()
        }

        fn target(&self, name: &str) -> PathBuf {
            let p = self.dir.as_ref().unwrap().path().join("targets").join(name);
            fs::create_dir_all(&p).unwrap();
            p
        }
    }

    impl Drop for Env {
        fn drop(&mut self) {
            let dir = self.dir.take().unwrap();
            let _ = mounts::unmount_all_under(&dir.path().join("targets"));
            if let Some(d) = self.driver.take() {
                let pool = d.backend().store.pool().to_string();
                if let Err(e) = d.teardown() {
                    eprintln!("teardown: {e}");
                }
                drop(d);
                if !std::thread::panicking() {
                    assert!(!pool_imported(&pool), "pool {pool} left imported");
                }
            }
            let left = mounts::mounts_under(dir.path()).unwrap();
            let _ = mounts::unmount_all_under(dir.path());
            if !std::thread::panicking() {
                assert!(left.is_empty(), "mounts left: {left:?}");
            }
            let _ = dir.close();
        }
    }

    #[test]
    fn ledger_records_pool_dataset_and_bind_mounts() {
        let Some(env) = Env::new(&[("size", "256M")]) else { return };
        let d = env.d();
        let ledger = Ledger::open(&env.dir.as_ref().unwrap().path().join("root"));
        let live = |k: ResourceKind, id: &str| ledger.entries().unwrap().iter().any(|e| e.kind == k && e.id == id);
        let pool = d.backend().store.pool().to_string();
        assert!(live(ResourceKind::Pool, &pool), "{:?}", ledger.entries());
        let info = d.prepare("a", None, &Labels::new()).unwrap();
        let ds_mnt = tree::mount_id(&d.backend().mnt(info.id));
        assert!(live(ResourceKind::Mount, &ds_mnt), "{:?}", ledger.entries());
        let t = env.target("a");
        d.mount("a", &t).unwrap();
        let id = tree::mount_id(&t);
        assert!(live(ResourceKind::Mount, &id), "{:?}", ledger.entries());
        d.unmount(&t).unwrap();
        assert!(!live(ResourceKind::Mount, &id));
        d.remove("a").unwrap();
        assert!(!live(ResourceKind::Mount, &ds_mnt), "{:?}", ledger.entries());
        d.teardown().unwrap();
        assert!(ledger.entries().unwrap().is_empty(), "{:?}", ledger.entries());
    }

    #[test]
    fn clones_commit_views_usage_and_remove() {
        let Some(env) = Env::new(&[("size", "256M")]) else { return };
        let d = env.d();
        let l = Labels::new();
        d.prepare("a", None, &l).unwrap();
        let t = env.target("a");
        d.mount("a", &t).unwrap();
        fs::write(t.join("big"), vec![5u8; 2 << 20]).unwrap();
        fs::write(t.join("small"), b"hello").unwrap();
        d.unmount(&t).unwrap();
        let u = d.usage("a").unwrap();
        assert!(u.bytes >= 2 << 20, "{u:?}");
        assert_eq!(u.inodes, 2);
        d.commit("base", "a", &l).unwrap();
        let base_ds = d.backend().ds(d.stat("base").unwrap().id);
        // Committed: the dataset refuses writes, also through cowbench's own mount of it.
        let err = fs::write(d.backend().mnt(d.stat("base").unwrap().id).join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));

        d.prepare("child", Some("base"), &l).unwrap();
        let child_ds = d.backend().ds(d.stat("child").unwrap().id);
        let origin = zfs(None, &["get", "-H", "-o", "value", "origin", &child_ds]).unwrap();
        assert!(origin.trim().starts_with(&format!("{base_ds}@")), "a child is a clone of a snapshot of its parent: {origin}");
        let tc = env.target("child");
        d.mount("child", &tc).unwrap();
        assert_eq!(fs::read(tc.join("small")).unwrap(), b"hello");
        fs::write(tc.join("small"), b"changed").unwrap();
        d.unmount(&tc).unwrap();
        let cu = d.usage("child").unwrap();
        assert!(cu.bytes < 2 << 20, "a clone owns only what it changed: {cu:?}");
        assert_eq!(cu.inodes, 1);

        d.view("v", "base", &l).unwrap();
        let tv = env.target("v");
        d.mount("v", &tv).unwrap();
        assert_eq!(fs::read(tv.join("small")).unwrap(), b"hello");
        assert_eq!(fs::write(tv.join("new"), b"x").unwrap_err().raw_os_error(), Some(libc::EROFS));
        d.unmount(&tv).unwrap();

        assert!(matches!(d.remove("base"), Err(Error::HasChildren { .. })));
        d.remove("v").unwrap();
        d.remove("child").unwrap();
        assert!(!exists(&child_ds));
        // The origin snapshot went with its last clone: the parent can go now.
        let snaps = zfs(None, &["list", "-H", "-t", "snapshot", "-o", "name"]).unwrap_or_default();
        assert!(!snaps.lines().any(|s| s.starts_with(&format!("{base_ds}@"))), "{snaps}");
        d.remove("base").unwrap();
        assert!(!exists(&base_ds));
        let st = d.status().unwrap();
        assert!(st.facts.contains_key("pool_size") && st.facts.contains_key("pool_free"), "{st:?}");
        assert!(st.space.is_some_and(|s| s.used_bytes > 0 && s.total_bytes > s.used_bytes), "{st:?}");
        assert_eq!(st.implementation, d.implementation().to_string());
        assert_eq!(st.backing.as_ref().map(|b| b.kind), Some(BackingKind::VdevFile));
        if d.backend().flavor.is_fuse() {
            assert!(d.capabilities().stand_in);
            assert!(st.daemon_pid.is_some(), "{st:?}");
            assert!(st.cache.is_some_and(|c| c.bytes > 0), "{st:?}");
        }
    }

    /// A writer that fills the pool gets out of space, and the pool keeps room for what
    /// follows: usage, commit and a new layer work.
    #[test]
    fn full_pool_is_no_space() {
        let Some(env) = Env::new(&[("size", "64M")]) else { return };
        let d = env.d();
        d.prepare("a", None, &Labels::new()).unwrap();
        let p = d.backend().mnt(d.stat("a").unwrap().id);
        let mut f = File::create(p.join("fill")).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        let err = (0..200)
            .find_map(|_| f.write_all(&chunk).and_then(|_| f.sync_data()).err())
            .expect("a 64M pool fills before 200M");
        // EDQUOT from the headroom quota, or ENOSPC; both are reported as out of space.
        assert!(matches!(Error::io(NAME, Some("a"), "write", err), Error::NoSpace { .. }));
        drop(f);
        let u = d.usage("a").unwrap_or_else(|e| panic!("usage on a full pool: {e}"));
        assert!(u.bytes >= 16 << 20, "{u:?}");
        let info = d.commit("full", "a", &Labels::new()).unwrap_or_else(|e| panic!("commit on a full pool: {e}"));
        assert_eq!(info.kind, Kind::Committed);
        d.prepare("other", None, &Labels::new()).unwrap_or_else(|e| panic!("prepare on a full pool: {e}"));
        // The new layer is as full as its pool.
        let p = d.backend().mnt(d.stat("other").unwrap().id);
        let err = fs::write(p.join("more"), &chunk).and_then(|_| File::open(p.join("more"))?.sync_all());
        assert!(matches!(Error::io(NAME, Some("other"), "write", err.unwrap_err()), Error::NoSpace { .. }));
        d.remove("other").unwrap();
        d.remove("full").unwrap();
    }

    /// A layer larger than the pool ends in NoSpace naming the layer, is rolled back (empty,
    /// its space freed) and the pool takes a small layer afterwards.
    #[test]
    fn layer_larger_than_the_pool_is_no_space_and_rolled_back() {
        use crate::conformance::util::streamed_tar;
        let Some(env) = Env::new(&[("size", "128M")]) else { return };
        let d = env.d();
        let l = Labels::new();
        d.prepare("big", None, &l).unwrap();
        let fresh = d.usage("big").unwrap();
        let start = std::time::Instant::now();
        let err = d.apply("big", &mut streamed_tar(32, 8 << 20, 1)).unwrap_err();
        eprintln!("256 MB into a 128 MB pool: failed and rolled back in {:?}: {err}", start.elapsed());
        assert!(matches!(&err, Error::NoSpace { key, .. } if key == "big"), "{err}");
        let p = d.backend().mnt(d.stat("big").unwrap().id);
        assert_eq!(fs::read_dir(&p).unwrap().count(), 0, "the failed apply left entries");
        let after = d.usage("big").unwrap();
        assert_eq!(after.inodes, 0);
        assert!(after.bytes < fresh.bytes + (1 << 20), "space of the failed apply not freed: {fresh:?} -> {after:?}");
        let snaps = zfs(None, &["list", "-H", "-t", "snapshot", "-o", "name", "-r", d.backend().store.base()]).unwrap();
        assert!(!snaps.contains("pre-apply"), "checkpoint left: {snaps}");
        d.prepare("small", None, &l).unwrap();
        d.apply("small", &mut streamed_tar(4, 1 << 20, 2)).unwrap();
        d.commit("small-c", "small", &l).unwrap();
        d.commit("big-c", "big", &l).unwrap();
    }

    /// Run by `second_process_sees_the_same_layers` in a child process.
    #[test]
    fn second_process_child() {
        let Ok(root) = std::env::var("COWBENCH_ZFS_CHILD_ROOT") else { return };
        let d = Zfs::open(&DriverConfig::new(root).with_option("size", "256M")).unwrap();
        let info = d.stat("shared").unwrap();
        assert_eq!(fs::read(d.backend().mnt(info.id).join("f")).unwrap(), b"from the first process");
        d.prepare("made-by-child", Some("shared"), &Labels::new()).unwrap();
    }

    #[test]
    fn second_process_sees_the_same_layers() {
        let Some(env) = Env::new(&[("size", "256M")]) else { return };
        let d = env.d();
        d.prepare("a", None, &Labels::new()).unwrap();
        fs::write(d.backend().mnt(d.stat("a").unwrap().id).join("f"), b"from the first process").unwrap();
        d.commit("shared", "a", &Labels::new()).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "zfs::tests::second_process_child", "--nocapture", "--test-threads=1"])
            .env("COWBENCH_ZFS_CHILD_ROOT", env.dir.as_ref().unwrap().path().join("root"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
        let child = d.stat("made-by-child").unwrap();
        assert!(d.backend().mnt(child.id).join("f").exists());
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DriverConfig::new(dir.path()).with_option("pool", "x");
        assert!(matches!(Zfs::open(&cfg), Err(Error::Config { .. })));
        let cfg = DriverConfig::new(dir.path()).with_option("size", "1M");
        assert!(matches!(Zfs::open(&cfg), Err(Error::Config { .. })));
    }

    #[test]
    fn out_of_space_errors_are_classified() {
        let e = Error::Command { driver: NAME.into(), command: "zfs snapshot p/1@2".into(), status: "exit status: 1".into(), stderr: "cannot create snapshot 'p/1@2': out of space".into() };
        assert!(matches!(classify(e, Some("k")), Error::NoSpace { key, .. } if key == "k"));
        let e = Error::Command { driver: NAME.into(), command: "zfs x".into(), status: "1".into(), stderr: "dataset is busy".into() };
        assert!(matches!(classify(e, None), Error::Command { .. }));
    }
}
