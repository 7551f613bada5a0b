//! OCI layer archives, used by every backend: apply a layer tar into a layer directory,
//! list a layer's changes, and export them as a layer tar with `.wh.` whiteouts.
//!
//! (Interface fixed here; implementation being written.)

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::driver::{ApplyStats, Change};
use crate::error::{Error, Result};

/// How whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) of a layer tar become the
/// backend's native form when applied.
pub enum Whiteouts<'a> {
    /// overlayfs: a 0/0 character device for a deleted entry, `trusted.overlay.opaque=y` on an
    /// opaque directory. The destination is the layer's own upper (`diff/`) directory.
    Overlay,
    /// The destination is a full view of the layer (btrfs, zfs, devicemapper, vfs): a whiteout
    /// deletes the entry, an opaque marker empties the directory.
    Delete,
    /// aufs: keep `.wh.` files as they are (the OCI format is aufs's own).
    Aufs,
    /// Anything else (the unionfs-fuse stand-in keeps its own hidden-file markers).
    Custom(&'a dyn WhiteoutHandler),
}

/// Native whiteout conversion supplied by a backend.
pub trait WhiteoutHandler {
    /// Record that `rel` (relative to `layer`) is deleted in this layer.
    fn whiteout(&self, layer: &Path, rel: &Path) -> std::io::Result<()>;
    /// Record that directory `rel_dir` hides everything below it from lower layers.
    fn opaque(&self, layer: &Path, rel_dir: &Path) -> std::io::Result<()>;
}

/// Where the changes of a layer come from.
pub enum DiffSource<'a> {
    /// overlayfs upper dir, with the lower layers' dirs (topmost first) to tell added from
    /// modified.
    OverlayUpper { upper: &'a Path, lowers: &'a [PathBuf] },
    /// An aufs branch with `.wh.` files, with the lower branches (topmost first).
    AufsBranch { branch: &'a Path, lowers: &'a [PathBuf] },
    /// Compare two full trees (any backend): `lower` is the parent's content (None: empty).
    Compare { lower: Option<&'a Path>, upper: &'a Path },
}

/// Apply a layer tar (plain, gzip or zstd, detected from the first bytes) into `dest`.
/// `driver` and `key` name the layer in errors. Nothing outside `dest` is ever created or
/// written; a hostile entry gives [`Error::Archive`] naming it.
pub fn apply(driver: &str, key: &str, tar: &mut dyn Read, dest: &Path, whiteouts: Whiteouts<'_>) -> Result<ApplyStats> {
    let _ = (tar, dest, whiteouts);
    Err(Error::invalid(driver, key, "layer archives not implemented yet"))
}

/// Changes of a layer relative to its parent, sorted by path.
pub fn changes(driver: &str, key: &str, source: &DiffSource<'_>) -> Result<Vec<Change>> {
    let _ = source;
    Err(Error::invalid(driver, key, "layer archives not implemented yet"))
}

/// Write the changes as an uncompressed OCI layer tar; returns bytes written.
pub fn write_diff(driver: &str, key: &str, source: &DiffSource<'_>, out: &mut dyn Write) -> Result<u64> {
    let _ = (source, out);
    Err(Error::invalid(driver, key, "layer archives not implemented yet"))
}
