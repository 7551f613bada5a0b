//! The `vfs` backend: every layer is a full copy of its parent — the no-CoW baseline.
//!
//! Layout under the driver root:
//! ```text
//! layers.json, layers.lock   metadata (crate::meta)
//! layers/<id>/                the layer's complete tree
//! ```
//! A new layer is a copy of its parent's tree made with reflinks (FICLONE) where the
//! filesystem allows, else copy_file_range, else read/write — so on btrfs or xfs the "copy"
//! shares extents, and on ext4 it really is a copy. Which one ran is reported by `status`.
//! Mounting is a bind mount (read-only for views and committed layers). Diffs come from
//! comparing a layer's tree with its parent's.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::archive::{self, DiffSource, Whiteouts};
use crate::backend::Backend;
use crate::driver::{
    ApplyStats, Backing, BackingKind, Capabilities, Driver, DriverConfig, Implementation, Kind, LayerInfo, ProbeReport,
    Status, Usage,
};
use crate::error::{Error, IoContext, Result};
use crate::snapshotter::Snapshotter;
use crate::sys::{hostinfo, mounts, tree};

pub const NAME: &str = "vfs";

pub fn probe() -> ProbeReport {
    let imp = implementation();
    // Plain directories and bind mounts work on every Linux host; mounting needs root.
    if !hostinfo::is_root() {
        return ProbeReport::unavailable(NAME, "bind mounts need root").with_hint("run as root");
    }
    ProbeReport::available(NAME, &imp)
}

fn implementation() -> Implementation {
    Implementation { name: "vfs (full copy per layer)".into(), version: Some(hostinfo::kernel_release()) }
}

/// Open (set up or adopt) the backend under `cfg.root/vfs`.
pub fn open(cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    if let Some(k) = cfg.options.keys().next() {
        return Err(Error::config(NAME, format!("unknown option '{k}' (vfs takes none)")));
    }
    let root = cfg.driver_root(NAME);
    fs::create_dir_all(root.join("layers")).ctx(NAME, None, || format!("create {}", root.display()))?;
    let root = fs::canonicalize(&root).ctx(NAME, None, || format!("resolve {}", root.display()))?;
    let reflink = tree::supports_reflink(&root);
    let o_direct = tree::supports_o_direct(&root);
    let vfs = Vfs { root: root.clone(), reflink, o_direct, last_copy: Mutex::new(None) };
    Ok(Box::new(Snapshotter::new(vfs, &root, &cfg.root)?))
}

pub struct Vfs {
    root: PathBuf,
    reflink: bool,
    o_direct: bool,
    last_copy: Mutex<Option<tree::CopyStats>>,
}

impl Vfs {
    fn layer_dir(&self, id: u64) -> PathBuf {
        self.root.join("layers").join(id.to_string())
    }

    /// Where the changes of `chain[0]` are read from: its tree against its parent's.
    fn trees(&self, chain: &[LayerInfo]) -> (Option<PathBuf>, PathBuf) {
        (chain.get(1).map(|p| self.layer_dir(p.id)), self.layer_dir(chain[0].id))
    }
}

impl Backend for Vfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn implementation(&self) -> Implementation {
        implementation()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            quota: false,
            block_level_cow: false,
            // With reflinks the copies share extents on disk, but each file is its own inode
            // with its own page-cache pages.
            shared_page_cache: false,
            shares_layers: false,
            max_depth: None,
            stand_in: false,
            loop_backed: false,
            discard: false,
            o_direct: self.o_direct,
            native_fs_layer: false,
            own_read_cache: false,
            deferred_free: false,
        }
    }

    fn create(&self, chain: &[LayerInfo]) -> Result<()> {
        let key = chain[0].key.as_str();
        let dir = self.layer_dir(chain[0].id);
        // A directory left by a crash before the metadata was saved is not a layer.
        tree::remove_tree(&dir).ctx(NAME, Some(key), || format!("clear stale {}", dir.display()))?;
        let made = (|| -> std::io::Result<()> {
            fs::create_dir(&dir)?;
            match chain.get(1) {
                Some(p) => {
                    let st = tree::copy_tree(&self.layer_dir(p.id), &dir)?;
                    *self.last_copy.lock().unwrap() = Some(st);
                }
                None => {
                    // An empty layer: root directory 0755 owned by 0:0, as an image root.
                    tree::lchown(&dir, 0, 0)?;
                    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = tree::remove_tree(&dir);
            return Err(Error::io(NAME, Some(key), format!("copy parent into {}", dir.display()), e));
        }
        Ok(())
    }

    fn freeze(&self, _active: &LayerInfo, _committed: &LayerInfo) -> Result<()> {
        // The tree stays where it is (the committed layer keeps the id); read-only from now on
        // because every later mount of it is read-only.
        Ok(())
    }

    fn mount(&self, chain: &[LayerInfo], target: &Path) -> Result<()> {
        let dir = self.layer_dir(chain[0].id);
        tree::bind_mount(&dir, target, chain[0].kind != Kind::Active)
            .ctx(NAME, Some(&chain[0].key), || format!("bind mount {} on {}", dir.display(), target.display()))
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mounts::unmount(target).ctx(NAME, None, || format!("unmount {}", target.display()))
    }

    fn destroy(&self, layer: &LayerInfo) -> Result<()> {
        let dir = self.layer_dir(layer.id);
        tree::remove_tree(&dir).ctx(NAME, Some(&layer.key), || format!("remove {}", dir.display()))
    }

    fn apply(&self, chain: &[LayerInfo], tar: &mut dyn Read) -> Result<ApplyStats> {
        let key = chain[0].key.as_str();
        let dir = self.layer_dir(chain[0].id);
        let cp = crate::rollback::TreeCheckpoint::take(NAME, key, &dir, &dir.with_extension("pre-apply"))?;
        crate::rollback::apply_atomically(NAME, key, cp, || archive::apply(NAME, key, tar, &dir, Whiteouts::Delete))
    }

    fn diff_source(&self, chain: &[LayerInfo], f: &mut dyn FnMut(&DiffSource) -> Result<()>) -> Result<()> {
        let (lower, upper) = self.trees(chain);
        f(&DiffSource::Compare { lower: lower.as_deref(), upper: &upper })
    }

    fn usage(&self, chain: &[LayerInfo]) -> Result<Usage> {
        // A vfs layer owns its whole tree: the full copy is what it costs.
        let dir = self.layer_dir(chain[0].id);
        tree::usage(&dir).ctx(NAME, Some(&chain[0].key), || format!("walk {}", dir.display()))
    }

    fn status(&self) -> Result<Status> {
        let mut s = Status::new(implementation().to_string(), 0);
        s.backing = Some(Backing::new(BackingKind::Directory, &self.root));
        if let Ok(m) = mounts::fstype_of(&self.root) {
            s.fact("backing_filesystem", m.fstype);
            s.fact("backing_device", m.source);
            s.fact("backing_mount_options", format!("{},{}", m.options, m.super_options));
        }
        let method = if self.reflink { tree::CopyMethod::Reflink } else { tree::CopyMethod::CopyFileRange };
        s.fact("copy_method", format!("{} (falls back to read/write where refused)", method.as_str()));
        if let Some(st) = *self.last_copy.lock().unwrap() {
            s.fact(
                "last_copy",
                format!(
                    "{} files, {} bytes: {} reflinked, {} copy_file_range, {} read/write",
                    st.files, st.bytes, st.reflinked, st.copy_file_range, st.read_write
                ),
            );
        }
        s.fact("o_direct", self.o_direct);
        Ok(s)
    }

    fn teardown(&self, _layers: &[LayerInfo]) -> Result<()> {
        // Nothing but directories and bind mounts: unmount whatever is still mounted from the
        // layers, then drop the trees (the snapshotter drops the metadata).
        mounts::unmount_all_under(&self.root).ctx(NAME, None, || format!("unmount under {}", self.root.display()))?;
        let layers = self.root.join("layers");
        tree::remove_tree(&layers).ctx(NAME, None, || format!("remove {}", layers.display()))
    }
}
