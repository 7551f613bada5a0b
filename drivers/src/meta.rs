//! Layer metadata shared by every backend: keys, kinds, parents, labels, internal ids.
//!
//! Stored as one JSON document (`<driver root>/layers.json`) and changed only under an
//! exclusive `flock` on `<driver root>/layers.lock`, so several processes (the CLI called
//! twice, a test and `cowbench clean`) see one consistent state. Every change is written to a
//! temporary file and renamed into place, so a crash leaves either the old or the new state.
//!
//! Backends do their storage work inside the `*_with` closures: the metadata change is
//! persisted only when the closure succeeds, which keeps the two in step (the devicemapper-rs
//! habit of rolling back a half-created device, applied to metadata).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::driver::{Kind, LayerInfo, Labels};
use crate::error::{Error, Result};

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Db {
    format_version: u32,
    next_id: u64,
    layers: BTreeMap<String, LayerInfo>,
}

/// The metadata store of one driver root.
#[derive(Debug, Clone)]
pub struct MetaStore {
    driver: &'static str,
    dir: PathBuf,
}

/// An exclusive lock on the store, held for one transaction.
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: plain flock on a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl MetaStore {
    /// Open (creating if needed) the store in `dir`.
    pub fn open(driver: &'static str, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(driver, None, format!("create {}", dir.display()), e))?;
        Ok(MetaStore { driver, dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("layers.json")
    }

    fn meta_err(&self, message: impl Into<String>) -> Error {
        Error::Metadata { driver: self.driver.into(), path: self.db_path(), message: message.into() }
    }

    fn lock(&self) -> Result<Lock> {
        let path = self.dir.join("layers.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(self.driver, None, format!("open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own; blocks until the other process is done.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::io(self.driver, None, "flock metadata", std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }

    fn load(&self) -> Result<Db> {
        match fs::read(self.db_path()) {
            Ok(bytes) => {
                let db: Db = serde_json::from_slice(&bytes).map_err(|e| self.meta_err(format!("corrupt: {e}")))?;
                if db.format_version != FORMAT_VERSION {
                    return Err(self.meta_err(format!("format version {} (expected {FORMAT_VERSION})", db.format_version)));
                }
                Ok(db)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Db { format_version: FORMAT_VERSION, next_id: 1, layers: BTreeMap::new() })
            }
            Err(e) => Err(Error::io(self.driver, None, format!("read {}", self.db_path().display()), e)),
        }
    }

    fn save(&self, db: &Db) -> Result<()> {
        let tmp = self.dir.join("layers.json.tmp");
        let bytes = serde_json::to_vec_pretty(db).map_err(|e| self.meta_err(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.db_path())
        };
        write().map_err(|e| Error::io(self.driver, None, format!("write {}", self.db_path().display()), e))
    }

    /// Run `f` on the locked database; persist when it returns Ok and `dirty` was set.
    fn transact<T>(&self, f: impl FnOnce(&mut Db) -> Result<(T, bool)>) -> Result<T> {
        let _lock = self.lock()?;
        let mut db = self.load()?;
        let (out, dirty) = f(&mut db)?;
        if dirty {
            self.save(&db)?;
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Result<LayerInfo> {
        self.transact(|db| {
            let info = db.layers.get(key).cloned().ok_or_else(|| Error::not_found(self.driver, key))?;
            Ok((info, false))
        })
    }

    /// Every layer, sorted by key.
    pub fn list(&self) -> Result<Vec<LayerInfo>> {
        self.transact(|db| Ok((db.layers.values().cloned().collect(), false)))
    }

    /// `key` followed by its parent, grandparent ... down to the base layer.
    pub fn chain(&self, key: &str) -> Result<Vec<LayerInfo>> {
        self.transact(|db| Ok((chain_of(self.driver, db, key)?, false)))
    }

    /// Keys of the layers whose parent is `key`.
    pub fn children(&self, key: &str) -> Result<Vec<String>> {
        self.transact(|db| Ok((children_of(db, key), false)))
    }

    /// Create layer `key` of `kind` on `parent`, calling `f` with the new record and the
    /// parent chain (parent first) to create the storage. Persisted only if `f` succeeds.
    pub fn create_with<T>(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: &Labels,
        f: impl FnOnce(&LayerInfo, &[LayerInfo]) -> Result<T>,
    ) -> Result<(LayerInfo, T)> {
        if key.is_empty() {
            return Err(Error::invalid(self.driver, key, "empty key"));
        }
        if kind == Kind::Committed {
            return Err(Error::invalid(self.driver, key, "a committed layer is made by commit, not created"));
        }
        self.transact(|db| {
            if db.layers.contains_key(key) {
                return Err(Error::AlreadyExists { driver: self.driver.into(), key: key.into() });
            }
            let parents = match parent {
                Some(p) => {
                    let chain = chain_of(self.driver, db, p)?;
                    if chain[0].kind != Kind::Committed {
                        return Err(Error::invalid(
                            self.driver,
                            key,
                            format!("parent '{p}' is {}, only a committed layer can be a parent", chain[0].kind),
                        ));
                    }
                    chain
                }
                None if kind == Kind::View => {
                    return Err(Error::invalid(self.driver, key, "a view needs a parent"));
                }
                None => Vec::new(),
            };
            let info = LayerInfo {
                key: key.into(),
                kind,
                parent: parent.map(Into::into),
                labels: labels.clone(),
                id: db.next_id,
                created_unix: now(),
            };
            let out = f(&info, &parents)?;
            db.next_id += 1;
            db.layers.insert(key.into(), info.clone());
            Ok(((info, out), true))
        })
    }

    /// Commit active `key` as `name`, calling `f(active, committed)` to freeze the storage.
    /// The committed layer keeps the active layer's id; `key` is gone afterwards.
    pub fn commit_with<T>(
        &self,
        name: &str,
        key: &str,
        labels: &Labels,
        f: impl FnOnce(&LayerInfo, &LayerInfo) -> Result<T>,
    ) -> Result<(LayerInfo, T)> {
        if name.is_empty() {
            return Err(Error::invalid(self.driver, name, "empty name"));
        }
        self.transact(|db| {
            let active = db.layers.get(key).cloned().ok_or_else(|| Error::not_found(self.driver, key))?;
            if active.kind != Kind::Active {
                return Err(Error::invalid(self.driver, key, format!("is {}, only an active layer can be committed", active.kind)));
            }
            if db.layers.contains_key(name) {
                return Err(Error::AlreadyExists { driver: self.driver.into(), key: name.into() });
            }
            let mut all_labels = active.labels.clone();
            all_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            let committed = LayerInfo {
                key: name.into(),
                kind: Kind::Committed,
                parent: active.parent.clone(),
                labels: all_labels,
                id: active.id,
                created_unix: now(),
            };
            let out = f(&active, &committed)?;
            db.layers.remove(key);
            db.layers.insert(name.into(), committed.clone());
            Ok(((committed, out), true))
        })
    }

    /// Remove `key`, calling `f` to delete the storage. Refused while children exist.
    pub fn remove_with<T>(&self, key: &str, f: impl FnOnce(&LayerInfo) -> Result<T>) -> Result<T> {
        self.transact(|db| {
            let info = db.layers.get(key).cloned().ok_or_else(|| Error::not_found(self.driver, key))?;
            let children = children_of(db, key);
            if !children.is_empty() {
                return Err(Error::HasChildren { driver: self.driver.into(), key: key.into(), children });
            }
            let out = f(&info)?;
            db.layers.remove(key);
            Ok((out, true))
        })
    }

    /// Forget every layer (after the backing store was destroyed).
    pub fn clear(&self) -> Result<()> {
        self.transact(|db| {
            db.layers.clear();
            Ok(((), true))
        })
    }
}

fn chain_of(driver: &str, db: &Db, key: &str) -> Result<Vec<LayerInfo>> {
    let mut out = Vec::new();
    let mut cur = Some(key.to_string());
    while let Some(k) = cur {
        let info = db.layers.get(&k).cloned().ok_or_else(|| Error::not_found(driver, &k))?;
        cur = info.parent.clone();
        out.push(info);
        if out.len() > 100_000 {
            return Err(Error::invalid(driver, key, "parent chain loops"));
        }
    }
    Ok(out)
}

fn children_of(db: &Db, key: &str) -> Vec<String> {
    db.layers.values().filter(|l| l.parent.as_deref() == Some(key)).map(|l| l.key.clone()).collect()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open("test", d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn create_commit_remove() {
        let (_d, s) = store();
        let l = Labels::new();
        let (a, ()) = s.create_with("a", None, Kind::Active, &l, |_, p| {
            assert!(p.is_empty());
            Ok(())
        }).unwrap();
        assert_eq!(a.kind, Kind::Active);
        // an active layer cannot be a parent
        assert!(matches!(s.create_with("b", Some("a"), Kind::Active, &l, |_, _| Ok(())), Err(Error::InvalidState { .. })));
        let (c, ()) = s.commit_with("base", "a", &l, |_, _| Ok(())).unwrap();
        assert_eq!(c.id, a.id);
        assert!(matches!(s.get("a"), Err(Error::NotFound { .. })));
        s.create_with("b", Some("base"), Kind::Active, &l, |_, p| {
            assert_eq!(p[0].key, "base");
            Ok(())
        }).unwrap();
        assert!(matches!(s.remove_with("base", |_| Ok(())), Err(Error::HasChildren { .. })));
        assert!(matches!(s.create_with("b", None, Kind::Active, &l, |_, _| Ok(())), Err(Error::AlreadyExists { .. })));
        s.remove_with("b", |_| Ok(())).unwrap();
        s.remove_with("base", |_| Ok(())).unwrap();
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn failed_storage_op_leaves_no_record() {
        let (_d, s) = store();
        let r = s.create_with("a", None, Kind::Active, &Labels::new(), |_, _| -> Result<()> {
            Err(Error::invalid("test", "a", "boom"))
        });
        assert!(r.is_err());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn second_handle_sees_same_state() {
        let (d, s) = store();
        s.create_with("a", None, Kind::Active, &Labels::new(), |_, _| Ok(())).unwrap();
        let s2 = MetaStore::open("test", d.path()).unwrap();
        assert_eq!(s2.get("a").unwrap().key, "a");
    }
}
