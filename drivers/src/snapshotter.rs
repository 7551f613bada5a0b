//! One implementation of [`Driver`] for every [`Backend`]: the snapshotter bookkeeping that
//! used to be repeated in each backend.
//!
//! Modelled on containerd's `core/snapshots/storage/metastore.go`: the metadata store
//! ([`MetaStore`]) decides what exists, what kind it is and who its parent is, and calls the
//! backend inside its transaction, so storage and metadata change together or not at all. On
//! top of that the snapshotter:
//! - checks keys before anything is created;
//! - records mounts in the root's ledger before they are made (so `cowbench clean` finds them
//!   after a crash) and forgets them when they are undone;
//! - refuses to remove a layer this process has mounted (the kernel would either refuse too
//!   late, half-way through the storage, or let the mount point at freed storage);
//! - refuses apply to anything but an active layer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::archive;
use crate::backend::Backend;
use crate::driver::{ApplyStats, Capabilities, Change, Driver, Implementation, Kind, Labels, LayerInfo, Status, Usage};
use crate::error::{Error, IoContext, Result};
use crate::ledger::Ledger;
use crate::meta::MetaStore;

pub struct Snapshotter<B: Backend> {
    backend: B,
    meta: MetaStore,
    ledger: Ledger,
    /// Mounts this process made and has not undone: target → key. Live mounts block `remove`.
    mounted: Mutex<BTreeMap<PathBuf, String>>,
}

impl<B: Backend> Snapshotter<B> {
    /// `meta_dir` holds the metadata store (`layers.json`); `root` is the cowbench root whose
    /// ledger records mounts.
    pub fn new(backend: B, meta_dir: &Path, root: &Path) -> Result<Self> {
        let meta = MetaStore::open(backend.name(), meta_dir)?;
        Ok(Snapshotter { backend, meta, ledger: Ledger::open(root), mounted: Mutex::new(BTreeMap::new()) })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// A key names a layer in metadata, logs and the ledger: not empty, no control characters.
    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid(self.name(), key, "empty key"));
        }
        if key.chars().any(char::is_control) {
            return Err(Error::invalid(self.name(), key, "control characters in the key"));
        }
        Ok(())
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind, labels: &Labels) -> Result<LayerInfo> {
        self.check_key(key)?;
        let (info, ()) = self.meta.create_with(key, parent, kind, labels, |info, parents| {
            let mut chain = Vec::with_capacity(parents.len() + 1);
            chain.push(info.clone());
            chain.extend_from_slice(parents);
            self.backend.create(&chain)
        })?;
        Ok(info)
    }

    /// Targets where this process has `key` mounted right now.
    fn mounts_of(&self, key: &str) -> Vec<PathBuf> {
        let mut m = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        // A mount undone behind our back (teardown, clean, a lazy unmount) no longer counts.
        m.retain(|t, _| crate::sys::mounts::is_mountpoint(t));
        m.iter().filter(|(_, k)| k.as_str() == key).map(|(t, _)| t.clone()).collect()
    }
}

impl<B: Backend> Driver for Snapshotter<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn implementation(&self) -> Implementation {
        self.backend.implementation()
    }

    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<LayerInfo> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: &Labels) -> Result<LayerInfo> {
        self.create(key, Some(parent), Kind::View, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<LayerInfo> {
        self.check_key(name)?;
        let (info, ()) = self.meta.commit_with(name, key, labels, |active, committed| self.backend.freeze(active, committed))?;
        // Mounts of the active layer now show the committed one.
        let mut m = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        for k in m.values_mut().filter(|k| k.as_str() == key) {
            *k = name.to_string();
        }
        Ok(info)
    }

    fn mount(&self, key: &str, target: &Path) -> Result<()> {
        let chain = self.meta.chain(key)?;
        // In the ledger before it exists, so `cowbench clean` finds it after a crash; forgotten
        // again when the mount fails.
        let (kind, id) = (self.backend.mount_resource(), crate::sys::tree::mount_id(target));
        self.ledger
            .record(kind, &id, &format!("{} layer {key}", self.name()))
            .ctx(self.name(), Some(key), || format!("record the mount on {id} in the ledger"))?;
        if let Err(e) = self.backend.mount(&chain, target) {
            let _ = self.ledger.forget(kind, &id);
            return Err(e);
        }
        self.mounted.lock().unwrap_or_else(|p| p.into_inner()).insert(PathBuf::from(&id), key.to_string());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        let (kind, id) = (self.backend.mount_resource(), crate::sys::tree::mount_id(target));
        self.backend.unmount(target)?;
        self.mounted.lock().unwrap_or_else(|p| p.into_inner()).remove(Path::new(&id));
        self.ledger.forget(kind, &id).ctx(self.name(), None, || format!("forget the mount on {id} in the ledger"))
    }

    fn remove(&self, key: &str) -> Result<()> {
        if let Some(t) = self.mounts_of(key).first() {
            return Err(Error::invalid(self.name(), key, format!("is mounted at {}; unmount it first", t.display())));
        }
        let info = self.meta.remove_with(key, |info| self.backend.destroy(info).map(|()| info.clone()))?;
        self.backend.destroyed(&info)
    }

    fn apply(&self, key: &str, tar: &mut dyn Read) -> Result<ApplyStats> {
        let chain = self.meta.chain(key)?;
        if chain[0].kind != Kind::Active {
            return Err(Error::invalid(self.name(), key, format!("is {}, only an active layer can be written", chain[0].kind)));
        }
        self.backend.apply(&chain, tar)
    }

    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<u64> {
        let chain = self.meta.chain(key)?;
        let mut written = 0;
        self.backend.diff_source(&chain, &mut |src| {
            written = archive::write_diff(self.name(), key, src, &mut *out)?;
            Ok(())
        })?;
        Ok(written)
    }

    fn changes(&self, key: &str) -> Result<Vec<Change>> {
        let chain = self.meta.chain(key)?;
        let mut changes = Vec::new();
        self.backend.diff_source(&chain, &mut |src| {
            changes = archive::changes(self.name(), key, src)?;
            Ok(())
        })?;
        Ok(changes)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let chain = self.meta.chain(key)?;
        self.backend.usage(&chain)
    }

    fn stat(&self, key: &str) -> Result<LayerInfo> {
        self.meta.get(key)
    }

    fn list(&self) -> Result<Vec<LayerInfo>> {
        self.meta.list()
    }

    fn status(&self) -> Result<Status> {
        let mut s = self.backend.status()?;
        s.layers = self.meta.list()?.len();
        Ok(s)
    }

    fn sync(&self) -> Result<String> {
        self.backend.sync()
    }

    fn file_extents(&self, key: &str, path: &Path) -> Result<crate::extents::FileExtents> {
        let chain = self.meta.chain(key)?;
        self.backend.file_extents(&chain, path)
    }

    fn evict_cache(&self) -> Result<Option<String>> {
        self.backend.evict_cache(&self.meta.list()?)
    }

    fn teardown(&self) -> Result<()> {
        // The layers are gone or unreachable either way: forget them even when part of the
        // storage could not be released (the error says what is left for `cowbench clean`).
        let layers = self.meta.list().unwrap_or_default();
        let released = self.backend.teardown(&layers);
        self.mounted.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let forgotten = self.meta.clear();
        released.and(forgotten)
    }
}
