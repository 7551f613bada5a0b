//! The `Driver` trait: containerd-snapshotter semantics over every backend.
//!
//! A layer (snapshot) is named by a caller-chosen *key* and is one of three kinds:
//! - **active**: writable, made by [`Driver::prepare`] on top of a committed parent (or empty);
//! - **view**: read-only, made by [`Driver::view`] on top of a committed parent;
//! - **committed**: frozen by [`Driver::commit`] from an active layer; the only kind that can be
//!   a parent.
//!
//! The bookkeeping (kinds, parents, labels, "refuse while children exist") is shared by every
//! backend through [`crate::meta::MetaStore`]; a backend only does the storage work.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::status::{Backing, BackingKind, CacheSource, CacheUsage, PoolUsage, SpaceSource, SpaceUsage, Status};

/// Free-form labels stored with a layer (e.g. `cowbench.image=alpine`).
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        })
    }
}

/// What the caller sees of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub key: String,
    pub kind: Kind,
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// Backend-internal id (directory name, subvolume, dataset or thin device id).
    pub id: u64,
    /// Seconds since the epoch.
    pub created_unix: u64,
}

/// Bytes and inodes used by one layer alone (not its parents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of a layer's change set, relative to its parent. `path` is relative to the
/// layer root, without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: PathBuf,
}

/// What one `apply` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStats {
    /// Entries written (files, dirs, links, devices).
    pub entries: u64,
    /// Whiteouts and opaque markers converted.
    pub whiteouts: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// What a backend can do, so the runner skips what it cannot and says why.
/// Modelled on OpenDAL's `Capability`: plain flags, all false by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Diff comes from the backend's own record of changes (overlay upper dir, aufs branch),
    /// not from comparing two trees.
    pub native_diff: bool,
    /// Per-layer size limits can be set.
    pub quota: bool,
    /// Copy-on-write works on blocks, not whole files.
    pub block_level_cow: bool,
    /// N containers reading the same image file share one copy in the page cache (or ARC).
    pub shared_page_cache: bool,
    /// Layers share image data at all (false for vfs: every layer is a full copy).
    pub shares_layers: bool,
    /// Deepest stack the backend can mount (None: no limit known).
    pub max_depth: Option<usize>,
    /// The backend runs on a stand-in for the real kernel driver (aufs on unionfs-fuse,
    /// zfs on zfs-fuse). Results must say so.
    pub stand_in: bool,
    /// Storage is a loop-backed file (O_DIRECT and device effects may be hidden).
    pub loop_backed: bool,
    /// Freed blocks are returned to the backing store on layer removal (discard).
    pub discard: bool,
    /// O_DIRECT opens succeed on a mounted layer.
    pub o_direct: bool,
    /// A parentless empty layer is a plain filesystem of the backend's own kind (a btrfs
    /// subvolume, a zfs dataset), so it can stand for "the filesystem without containers".
    pub native_fs_layer: bool,
    /// The backend keeps a read cache of its own that dropping the page cache does not empty
    /// (the ZFS ARC); its size is in [`crate::Status::cache`].
    pub own_read_cache: bool,
    /// Space of removed layers is freed later, in the background (btrfs deletes subvolumes in
    /// its cleaner thread): call [`Driver::sync`] before reading space figures.
    pub deferred_free: bool,
}

/// Which code actually runs a backend. Never report a stand-in as the kernel driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Implementation {
    /// e.g. `kernel overlayfs`, `aufs (unionfs-fuse stand-in)`, `zfs-fuse`, `kernel (OpenZFS 2.1.11)`.
    pub name: String,
    /// Version of that implementation where it can be found (kernel release, tool version).
    pub version: Option<String>,
}

impl std::fmt::Display for Implementation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} {v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The answer of a backend's host probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub name: String,
    pub available: bool,
    pub implementation: Option<String>,
    pub version: Option<String>,
    /// Why the backend is unavailable (None when available).
    pub reason: Option<String>,
    /// What the user can do about it (e.g. "run it inside scripts/vm").
    pub hint: Option<String>,
    /// Whether this is a stand-in for the kernel driver.
    pub stand_in: bool,
    /// Unless given storage of the user's (a device, dataset or thin pool), the backend
    /// builds its store in a file under its root (a loop device or a file vdev): O_DIRECT and
    /// device effects may be hidden by the host filesystem under it.
    #[serde(default)]
    pub loop_backed_by_default: bool,
    /// Further facts for display: kernel module, tool paths ... Nothing parses them.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

impl ProbeReport {
    pub fn available(name: &str, implementation: &Implementation) -> Self {
        ProbeReport {
            name: name.into(),
            available: true,
            implementation: Some(implementation.name.clone()),
            version: implementation.version.clone(),
            reason: None,
            hint: None,
            stand_in: false,
            loop_backed_by_default: false,
            details: BTreeMap::new(),
        }
    }

    pub fn unavailable(name: &str, reason: impl Into<String>) -> Self {
        ProbeReport {
            name: name.into(),
            available: false,
            implementation: None,
            version: None,
            reason: Some(reason.into()),
            hint: None,
            stand_in: false,
            loop_backed_by_default: false,
            details: BTreeMap::new(),
        }
    }

    /// Mark a backend that builds its store in a file under its root unless told otherwise.
    pub fn loop_backed_by_default(mut self) -> Self {
        self.loop_backed_by_default = true;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
}

/// How a backend is set up. Every backend keeps its state under `root/<driver name>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverConfig {
    /// The cowbench root (default `/var/lib/cowbench`).
    pub root: PathBuf,
    /// Backend options, e.g. `size=8G`, `discard=true`, `dataset=tank/cb`, `thinpool=/dev/mapper/x`,
    /// `device=/dev/sdb`, `fs=ext4`. Unknown options are an error naming the option.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl DriverConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DriverConfig { root: root.into(), options: BTreeMap::new() }
    }

    pub fn with_option(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.options.insert(k.into(), v.into());
        self
    }

    pub fn option(&self, k: &str) -> Option<&str> {
        self.options.get(k).map(String::as_str)
    }

    /// The directory a driver named `name` owns.
    pub fn driver_root(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// A storage backend with containerd-snapshotter semantics.
///
/// All methods take `&self`; state lives on disk (metadata store, backend storage) so that a
/// second process opening the same root sees the same layers.
pub trait Driver: Send + Sync {
    /// Short name: `overlay`, `aufs`, `btrfs`, `devicemapper`, `zfs`, `vfs`.
    fn name(&self) -> &'static str;

    /// The implementation that runs (kernel driver or stand-in) and its version.
    fn implementation(&self) -> Implementation;

    fn capabilities(&self) -> Capabilities;

    /// Writable layer `key` on top of committed `parent` (or empty).
    fn prepare(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<LayerInfo>;

    /// Read-only view `key` of committed `parent`.
    fn view(&self, key: &str, parent: &str, labels: &Labels) -> Result<LayerInfo>;

    /// Freeze active layer `key` into committed layer `name`; `key` ceases to exist.
    fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<LayerInfo>;

    /// Mount layer `key` (with all its parents) at `target`, which must exist.
    /// Views and committed layers are mounted read-only.
    fn mount(&self, key: &str, target: &Path) -> Result<()>;

    /// Undo a [`Driver::mount`] at `target`.
    fn unmount(&self, target: &Path) -> Result<()>;

    /// Delete layer `key`; refused while other layers have it as parent.
    fn remove(&self, key: &str) -> Result<()>;

    /// Apply an OCI layer tar (plain, gzip or zstd) to active layer `key`, converting
    /// whiteouts to the backend's native form. Nothing outside the layer is ever written.
    fn apply(&self, key: &str, tar: &mut dyn Read) -> Result<ApplyStats>;

    /// Write the changes of `key` relative to its parent as an OCI layer tar (uncompressed)
    /// with `.wh.` whiteouts. Returns bytes written.
    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<u64>;

    /// Changes of `key` relative to its parent, sorted by path.
    fn changes(&self, key: &str) -> Result<Vec<Change>>;

    /// Bytes and inodes of `key` alone.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// One layer.
    fn stat(&self, key: &str) -> Result<LayerInfo>;

    /// Every layer.
    fn list(&self) -> Result<Vec<LayerInfo>>;

    /// The backend's state: space and pool usage, read cache, backing store, daemon,
    /// implementation in use.
    fn status(&self) -> Result<Status>;

    /// Make space figures current: commit what the backend frees or writes in the background
    /// (btrfs: a filesystem sync, so deleted subvolumes release their extents). Returns what
    /// was done, for notes.
    fn sync(&self) -> Result<String>;

    /// How the file at `path` lies on the backend's storage: its physically contiguous runs.
    /// `path` is where the file is seen on the host through a mount of layer `key` (a
    /// container's rootfs); the layer tells backends without FIEMAP which object to read.
    fn file_extents(&self, key: &str, path: &Path) -> Result<crate::extents::FileExtents>;

    /// Release the backing store this driver created under its root (unmount the loop-backed
    /// filesystem, detach loop devices, destroy the pool). Layers are lost. Storage the user
    /// named (an existing dataset, thin pool or mount) is left as it is.
    fn teardown(&self) -> Result<()>;

    /// Empty the backend's own read cache (the ZFS ARC), which dropping the page cache leaves
    /// as it is, so that a measurement of what reads cache starts cold. Only while no layer is
    /// mounted outside the driver (no container runs): the zfs backend exports and imports its
    /// pool. Returns what was done, for notes; None where the backend has no cache of its own
    /// or cannot empty it (a dataset the user named is not exported).
    fn evict_cache(&self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Unmounts on drop. Prefer this to pairing `mount` and `unmount` by hand.
pub struct MountGuard<'a> {
    driver: &'a dyn Driver,
    target: PathBuf,
    mounted: bool,
}

impl<'a> MountGuard<'a> {
    pub fn new(driver: &'a dyn Driver, key: &str, target: &Path) -> Result<Self> {
        driver.mount(key, target)?;
        Ok(MountGuard { driver, target: target.to_path_buf(), mounted: true })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmount now and report the error, instead of logging it on drop.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        self.driver.unmount(&self.target)
    }
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = self.driver.unmount(&self.target) {
                log::warn!("unmount of {} on drop failed: {e}", self.target.display());
            }
        }
    }
}
