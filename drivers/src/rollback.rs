//! All or nothing for `apply`: a layer tar that fails part way (a refused entry, a corrupt
//! stream, a full store) leaves the layer exactly as it was before, with the space the partial
//! apply took given back, and the caller gets the apply's own error.
//!
//! Every backend takes a [`Checkpoint`] of the layer before it applies and hands both to
//! [`apply_atomically`]. Directory-based layers (overlay's and aufs's upper dirs, vfs) use
//! [`TreeCheckpoint`]; btrfs and zfs use their own snapshots, which cost nothing and also
//! restore a layer that is mounted through a filesystem without hardlinks across it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::driver::ApplyStats;
use crate::error::{Error, IoContext, Result};
use crate::sys::tree;

/// The state of one layer before an apply.
pub trait Checkpoint {
    /// Put the layer back as it was when the checkpoint was taken and release what the
    /// failed apply wrote.
    fn restore(self) -> Result<()>;
    /// The apply succeeded: drop the checkpoint.
    fn discard(self) -> Result<()>;
}

/// Run `apply`; when it fails, restore `checkpoint` and return the apply's error unchanged.
/// When the rollback itself fails the layer is partial, and the error says so.
pub fn apply_atomically<C: Checkpoint>(
    driver: &str,
    key: &str,
    checkpoint: C,
    apply: impl FnOnce() -> Result<ApplyStats>,
) -> Result<ApplyStats> {
    match apply() {
        Ok(stats) => {
            // The layer is complete; a checkpoint left behind only costs space until the next
            // apply to this layer replaces it.
            if let Err(e) = checkpoint.discard() {
                log::warn!("{driver}: layer '{key}': dropping the pre-apply checkpoint: {e}");
            }
            Ok(stats)
        }
        Err(e) => match checkpoint.restore() {
            Ok(()) => Err(e),
            Err(r) => Err(Error::invalid(
                driver,
                key,
                format!("apply failed ({e}) and the layer could not be rolled back ({r}); remove it"),
            )),
        },
    }
}

/// A hardlink copy of a layer directory next to it (same filesystem). The archive applier
/// replaces an existing file by a new inode rather than writing into it, so the links keep the
/// old content; directories are real copies, so their metadata and xattrs (overlay's opaque
/// marker) are kept too.
pub struct TreeCheckpoint {
    driver: &'static str,
    key: String,
    dest: PathBuf,
    stash: PathBuf,
}

impl TreeCheckpoint {
    /// Checkpoint `dest` into `stash`, which must be on the same filesystem and outside
    /// `dest`. A stash left by an earlier crash is replaced.
    pub fn take(driver: &'static str, key: &str, dest: &Path, stash: &Path) -> Result<Self> {
        tree::remove_tree(stash).ctx(driver, Some(key), || format!("remove stale {}", stash.display()))?;
        fs::create_dir(stash).ctx(driver, Some(key), || format!("create {}", stash.display()))?;
        let cp = TreeCheckpoint { driver, key: key.into(), dest: dest.into(), stash: stash.into() };
        if let Err(e) = tree::link_tree(dest, stash) {
            let _ = tree::remove_tree(stash);
            return Err(Error::io(driver, Some(key), format!("checkpoint {} before apply", dest.display()), e));
        }
        Ok(cp)
    }
}

impl Checkpoint for TreeCheckpoint {
    fn restore(self) -> Result<()> {
        let (driver, key) = (self.driver, Some(self.key.as_str()));
        let entries = |dir: &Path| -> Result<Vec<fs::DirEntry>> {
            fs::read_dir(dir)
                .and_then(|rd| rd.collect::<std::io::Result<Vec<_>>>())
                .ctx(driver, key, || format!("list {}", dir.display()))
        };
        // Read before the entries move out, which changes it.
        let md = fs::symlink_metadata(&self.stash).ctx(driver, key, || format!("stat {}", self.stash.display()))?;
        for e in entries(&self.dest)? {
            let p = e.path();
            let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) { tree::remove_tree(&p) } else { fs::remove_file(&p) };
            r.ctx(driver, key, || format!("roll back {}", p.display()))?;
        }
        for e in entries(&self.stash)? {
            let to = self.dest.join(e.file_name());
            fs::rename(e.path(), &to).ctx(driver, key, || format!("roll back {}", to.display()))?;
        }
        // The root's own owner, mode and xattrs are the backend's (apply never sets them);
        // only its mtime moved.
        tree::set_times(&self.dest, &md).ctx(driver, key, || format!("restore times of {}", self.dest.display()))?;
        fs::remove_dir(&self.stash).ctx(driver, key, || format!("remove {}", self.stash.display()))
    }

    fn discard(self) -> Result<()> {
        tree::remove_tree(&self.stash).ctx(self.driver, Some(&self.key), || format!("remove {}", self.stash.display()))
    }
}
