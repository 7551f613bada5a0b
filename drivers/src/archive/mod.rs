//! OCI layer archives, used by every backend: apply a layer tar into a layer directory,
//! list a layer's changes, and export them as a layer tar with `.wh.` whiteouts.
//!
//! - [`compress`]: plain / gzip / zstd, detected from the first bytes.
//! - [`safepath`]: entry names normalised lexically and resolved below the layer root without
//!   following symlinks; `..` that leaves the root and absolute names are refused.
//! - `apply`: writes entries and converts whiteouts per [`Whiteouts`].
//! - `changes`: the change set from a [`DiffSource`]; `write`: exports it as a tar.
//! - [`tree`]: [`tree_digest`], a comparable summary of a tree for tests.
//! - [`remove_tree`]: removal of a layer tree with open descriptors bounded whatever its depth,
//!   used by every backend that removes layer directories.

mod apply;
mod changes;
pub mod compress;
mod fsutil;
mod remove;
pub mod safepath;
mod stream;
pub mod tree;
mod write;
mod written;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::driver::{ApplyStats, Change};
use crate::error::{Error, Result};

pub use remove::remove_tree;
pub use stream::MAX_EXTENSION;
pub use tree::{digest_differences, tree_digest, DigestOptions, EntryKind, EntrySummary};

/// Prefix of a whiteout entry: `.wh.<name>` deletes `<name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of whiteout-format metadata entries (the opaque marker, aufs's own files).
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// Marks its directory opaque: nothing of the lower layers below it is visible.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

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
///
/// Refused: names that are absolute or whose `..` leaves `dest`, hardlinks whose target does
/// (or is not already in `dest`), and any entry whose parent directory is a symlink in `dest`
/// (also one the same tar created, and also one pointing inside `dest`). Symlink entries are
/// stored as they are. The root entry (`./`) is ignored: the root belongs to the backend.
/// overlayfs's own `trusted.overlay.*` xattrs in a tar are dropped.
///
/// A corrupt or malformed layer is refused with [`Error::Archive`] naming the entry (or, between
/// entries, the entry before): decompression errors and gzip CRC-32/length or zstd checksum
/// failures (the stream is read to its end for them), a tar that ends without its end-of-archive
/// marker or inside an entry's data (a zero-length stream is an empty layer), header checksum
/// errors, PAX `size`/`uid`/`gid`/`mtime`/`atime`/`ctime` records that are not plain decimal
/// numbers in range, PAX extended headers and GNU long name/link records over
/// [`MAX_EXTENSION`] bytes (refused before they are read), whiteouts naming `.`, `..` or an
/// entry below themselves, and entry types other than files, directories, links, devices and
/// fifos (refused by type byte and name, as containerd does, rather than skipped). Entry names
/// are shown escaped in messages.
///
/// There is no depth limit (a path is at most [`MAX_EXTENSION`] bytes): memory grows with the
/// number of distinct paths written, not with the square of their depth, and a layer of any
/// depth can be removed again with [`remove_tree`].
pub fn apply(driver: &str, key: &str, tar: &mut dyn Read, dest: &Path, whiteouts: Whiteouts<'_>) -> Result<ApplyStats> {
    apply::apply(driver, key, tar, dest, whiteouts)
}

fn collect_error(driver: &str, key: &str, e: changes::CollectError) -> Error {
    if e.source.kind() == std::io::ErrorKind::InvalidData {
        return Error::Archive { driver: driver.into(), key: key.into(), entry: Some(e.path), message: e.what };
    }
    Error::io(driver, Some(key), format!("{} {}", e.what, e.path.display()), e.source)
}

/// Changes of a layer relative to its parent, sorted by path.
///
/// A deleted directory is reported alone (not its children). For `OverlayUpper` and
/// `AufsBranch`, the lower content an opaque directory hides is reported as deleted, and a
/// directory that is only there because something below it changed (same metadata as in the
/// lower layers) is not reported.
pub fn changes(driver: &str, key: &str, source: &DiffSource<'_>) -> Result<Vec<Change>> {
    let items = changes::collect(source).map_err(|e| collect_error(driver, key, e))?;
    Ok(items.into_iter().map(|i| Change { kind: i.kind, path: i.path }).collect())
}

/// Write the changes as an uncompressed OCI layer tar; returns bytes written.
pub fn write_diff(driver: &str, key: &str, source: &DiffSource<'_>, out: &mut dyn Write) -> Result<u64> {
    let items = changes::collect(source).map_err(|e| collect_error(driver, key, e))?;
    let root = match source {
        DiffSource::OverlayUpper { upper, .. } => *upper,
        DiffSource::AufsBranch { branch, .. } => *branch,
        DiffSource::Compare { upper, .. } => *upper,
    };
    write::write(&items, root, out).map_err(|e| collect_error(driver, key, e))
}
