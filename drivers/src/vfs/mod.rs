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
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::archive::{self, DiffSource, Whiteouts};
use crate::driver::{
    ApplyStats, Backing, BackingKind, Capabilities, Change, Driver, DriverConfig, Implementation, Kind, Labels,
    LayerInfo, ProbeReport, Status, Usage,
};
use crate::error::{Error, IoContext, Result};
use crate::ledger::Ledger;
use crate::meta::MetaStore;
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
    let meta = MetaStore::open(NAME, &root)?;
    let reflink = tree::supports_reflink(&root);
    let o_direct = tree::supports_o_direct(&root);
    let ledger = Ledger::open(&cfg.root);
    Ok(Box::new(Vfs { root, meta, ledger, reflink, o_direct, last_copy: Mutex::new(None) }))
}

pub struct Vfs {
    root: PathBuf,
    meta: MetaStore,
    /// Mounts are recorded before they are made, so `cowbench clean` finds them after a crash.
    ledger: Ledger,
    reflink: bool,
    o_direct: bool,
    last_copy: Mutex<Option<tree::CopyStats>>,
}

impl Vfs {
    fn layer_dir(&self, id: u64) -> PathBuf {
        self.root.join("layers").join(id.to_string())
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind, labels: &Labels) -> Result<LayerInfo> {
        let (info, ()) = self.meta.create_with(key, parent, kind, labels, |info, parents| {
            let dir = self.layer_dir(info.id);
            // A directory left by a crash before the metadata was saved is not a layer.
            tree::remove_tree(&dir).ctx(NAME, Some(key), || format!("clear stale {}", dir.display()))?;
            let made = (|| -> std::io::Result<()> {
                fs::create_dir(&dir)?;
                match parents.first() {
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
        })?;
        Ok(info)
    }

    fn parent_dir(&self, info: &LayerInfo) -> Result<Option<PathBuf>> {
        match &info.parent {
            Some(p) => Ok(Some(self.layer_dir(self.meta.get(p)?.id))),
            None => Ok(None),
        }
    }
}

impl Driver for Vfs {
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

    fn prepare(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<LayerInfo> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: &Labels) -> Result<LayerInfo> {
        self.create(key, Some(parent), Kind::View, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<LayerInfo> {
        // The tree stays where it is (the committed layer keeps the id); read-only from now on
        // because every later mount of it is read-only.
        let (info, ()) = self.meta.commit_with(name, key, labels, |_, _| Ok(()))?;
        Ok(info)
    }

    fn mount(&self, key: &str, target: &Path) -> Result<()> {
        let info = self.meta.get(key)?;
        let dir = self.layer_dir(info.id);
        self.ledger.tracked_mount(NAME, key, target, || {
            tree::bind_mount(&dir, target, info.kind != Kind::Active)
                .ctx(NAME, Some(key), || format!("bind mount {} on {}", dir.display(), target.display()))
        })
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        self.ledger.tracked_unmount(NAME, target)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.meta.remove_with(key, |info| {
            let dir = self.layer_dir(info.id);
            tree::remove_tree(&dir).ctx(NAME, Some(key), || format!("remove {}", dir.display()))
        })
    }

    fn apply(&self, key: &str, tar: &mut dyn Read) -> Result<ApplyStats> {
        let info = self.meta.get(key)?;
        if info.kind != Kind::Active {
            return Err(Error::invalid(NAME, key, format!("is {}, only an active layer can be written", info.kind)));
        }
        let dir = self.layer_dir(info.id);
        let cp = crate::rollback::TreeCheckpoint::take(NAME, key, &dir, &dir.with_extension("pre-apply"))?;
        crate::rollback::apply_atomically(NAME, key, cp, || archive::apply(NAME, key, tar, &dir, Whiteouts::Delete))
    }

    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<u64> {
        let info = self.meta.get(key)?;
        let lower = self.parent_dir(&info)?;
        let upper = self.layer_dir(info.id);
        archive::write_diff(NAME, key, &DiffSource::Compare { lower: lower.as_deref(), upper: &upper }, out)
    }

    fn changes(&self, key: &str) -> Result<Vec<Change>> {
        let info = self.meta.get(key)?;
        let lower = self.parent_dir(&info)?;
        let upper = self.layer_dir(info.id);
        archive::changes(NAME, key, &DiffSource::Compare { lower: lower.as_deref(), upper: &upper })
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        // A vfs layer owns its whole tree: the full copy is what it costs.
        let info = self.meta.get(key)?;
        let dir = self.layer_dir(info.id);
        tree::usage(&dir).ctx(NAME, Some(key), || format!("walk {}", dir.display()))
    }

    fn stat(&self, key: &str) -> Result<LayerInfo> {
        self.meta.get(key)
    }

    fn list(&self) -> Result<Vec<LayerInfo>> {
        self.meta.list()
    }

    fn status(&self) -> Result<Status> {
        let mut s = Status::new(implementation().to_string(), self.meta.list()?.len());
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

    fn sync(&self) -> Result<String> {
        Ok(String::new())
    }

    fn teardown(&self) -> Result<()> {
        // Nothing but directories and bind mounts: unmount whatever is still mounted from the
        // layers, then drop the trees and the metadata.
        mounts::unmount_all_under(&self.root).ctx(NAME, None, || format!("unmount under {}", self.root.display()))?;
        let layers = self.root.join("layers");
        tree::remove_tree(&layers).ctx(NAME, None, || format!("remove {}", layers.display()))?;
        self.meta.clear()
    }
}
