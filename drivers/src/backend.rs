//! The storage half of a driver: what a backend does with its own storage, and nothing else.
//!
//! A [`Backend`] never sees a key that does not exist, a parent that is not committed, a
//! commit of a view or a remove of a layer with children: [`crate::snapshotter::Snapshotter`]
//! owns that bookkeeping (as containerd's metastore does for its snapshotters) and calls the
//! backend with layers that are already checked. Layers are named to the backend by their
//! [`LayerInfo`] (its `id` is the backend's storage name), chains parent-last:
//! `chain[0]` is the layer itself, `chain[1]` its parent, and so on down to the base layer.

use std::io::Read;
use std::path::Path;

use crate::archive::DiffSource;
use crate::driver::{ApplyStats, Capabilities, Implementation, LayerInfo, Status, Usage};
use crate::error::{IoContext, Result};
use crate::ledger::ResourceKind;

pub trait Backend: Send + Sync {
    /// Short name: `overlay`, `aufs`, `btrfs`, `devicemapper`, `zfs`, `vfs`.
    fn name(&self) -> &'static str;

    /// The implementation that runs (kernel driver or stand-in) and its version.
    fn implementation(&self) -> Implementation;

    fn capabilities(&self) -> Capabilities;

    /// Make the storage of a new active layer or view `chain[0]` on top of its parents
    /// (`chain[1..]`, empty for a parentless layer). Storage with this id left by a crash
    /// before the metadata was saved is not a layer and may be replaced. On error nothing of
    /// the new layer may be left.
    fn create(&self, chain: &[LayerInfo]) -> Result<()>;

    /// Freeze active layer `active` into `committed` (same id, same parents): from now on it
    /// is only mounted read-only and may be a parent.
    fn freeze(&self, active: &LayerInfo, committed: &LayerInfo) -> Result<()>;

    /// Mount `chain[0]` with its parents on `target` (an existing directory), read-only
    /// unless it is active. The snapshotter has recorded the mount in the root's ledger.
    fn mount(&self, chain: &[LayerInfo], target: &Path) -> Result<()>;

    /// Undo [`Backend::mount`] on `target`.
    fn unmount(&self, target: &Path) -> Result<()>;

    /// How a layer mount is recorded in the root's ledger: a plain mount, or a FUSE daemon
    /// (so that `cowbench clean` also stops the daemon behind it).
    fn mount_resource(&self) -> ResourceKind {
        ResourceKind::Mount
    }

    /// Delete the storage of `layer`, which has no children and is not mounted.
    fn destroy(&self, layer: &LayerInfo) -> Result<()>;

    /// After `layer` is gone from the metadata, outside its lock: wait for what the backend
    /// frees in the background (btrfs: the cleaner), so the space is usable when `remove`
    /// returns.
    fn destroyed(&self, _layer: &LayerInfo) -> Result<()> {
        Ok(())
    }

    /// Apply an OCI layer tar to active layer `chain[0]`, all or nothing (see
    /// [`crate::rollback`]), whiteouts converted to the backend's native form.
    fn apply(&self, chain: &[LayerInfo], tar: &mut dyn Read) -> Result<ApplyStats>;

    /// Call `f` with where the changes of `chain[0]` relative to its parent can be read.
    fn diff_source(&self, chain: &[LayerInfo], f: &mut dyn FnMut(&DiffSource) -> Result<()>) -> Result<()>;

    /// Bytes and inodes of `chain[0]` alone.
    fn usage(&self, chain: &[LayerInfo]) -> Result<Usage>;

    /// The backend's state (the snapshotter fills in the layer count).
    fn status(&self) -> Result<Status>;

    /// Make space figures current (see [`crate::Driver::sync`]).
    fn sync(&self) -> Result<String> {
        Ok(String::new())
    }

    /// How the file at `path` (seen through a mount of `chain[0]`) lies on the storage (see
    /// [`crate::Driver::file_extents`]): FIEMAP, unless the backend's filesystem has none.
    fn file_extents(&self, chain: &[LayerInfo], path: &Path) -> Result<crate::extents::FileExtents> {
        crate::extents::fiemap(path).ctx(self.name(), Some(&chain[0].key), || format!("FIEMAP of {}", path.display()))
    }

    /// Release the backing store created under the driver root (mounts of layers, loop
    /// devices, pools); `layers` are every layer the metadata knows. Storage the user named is
    /// left as it is (only what was made in it goes). The snapshotter forgets the layers
    /// afterwards.
    fn teardown(&self, layers: &[LayerInfo]) -> Result<()>;

    /// Empty the backend's own read cache (see [`crate::Driver::evict_cache`]); `layers` are
    /// every layer the metadata knows (to mount again afterwards). None: the backend has no
    /// such cache, or cannot empty it.
    fn evict_cache(&self, _layers: &[LayerInfo]) -> Result<Option<String>> {
        Ok(None)
    }
}
