//! The resource ledger: every mount, loop device, pool, dm device, FUSE daemon, container and
//! cgroup cowbench creates under a root is written to `<root>/ledger.jsonl` *before* it is
//! created, so that `cowbench clean` can remove it after a crash or `kill -9` — and never touch
//! what cowbench did not create.
//!
//! The file is append-only JSON lines. [`Ledger::record`] appends an entry and fsyncs it;
//! [`Ledger::forget`] appends a tombstone (`"op":"forget"`) instead of rewriting the file, so
//! several processes may use one ledger at once (each line is written with one `write(2)` on an
//! `O_APPEND` descriptor). [`Ledger::entries`] replays the file and returns what is still live.
//! A torn last line (power loss mid-write) is skipped, never an error.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the ledger inside the cowbench root.
pub const LEDGER_FILE: &str = "ledger.jsonl";

/// What kind of resource an entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A mount point (id: the target path).
    Mount,
    /// A loop device (id: the backing file; detail: the device, when known).
    Loop,
    /// A storage pool (id: zpool name).
    Pool,
    /// A device-mapper device (id: dm name).
    Dm,
    /// A FUSE daemon (id: its mount point; detail: pid when known).
    Fuse,
    /// An OCI container (id: container id; detail: runtime state dir).
    Container,
    /// A cgroup (id: path relative to each hierarchy's root, e.g. `cowbench/ab12/c1`).
    Cgroup,
}

impl ResourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ResourceKind::Mount => "mount",
            ResourceKind::Loop => "loop",
            ResourceKind::Pool => "pool",
            ResourceKind::Dm => "dm",
            ResourceKind::Fuse => "fuse",
            ResourceKind::Container => "container",
            ResourceKind::Cgroup => "cgroup",
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Record,
    Forget,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    op: Op,
    kind: ResourceKind,
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    detail: String,
    created_unix: u64,
    pid: u32,
}

/// One live resource of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: ResourceKind,
    pub id: String,
    /// Free-form facts needed to remove it (device path, runtime root, cgroup controllers ...).
    pub detail: String,
    pub created_unix: u64,
    /// The process that recorded it.
    pub pid: u32,
}

/// The ledger of one cowbench root. Cheap to open; opening never creates anything.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Ledger {
    /// The ledger of `root` (`<root>/ledger.jsonl`). The file and the root are created on the
    /// first [`Ledger::record`].
    pub fn open(root: &Path) -> Ledger {
        Ledger { path: root.join(LEDGER_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, line: &Line) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
        text.push('\n');
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        // One write on an O_APPEND descriptor: concurrent writers never interleave a line.
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// Record a resource that is about to be created. Call this *before* creating it: an entry
    /// for something that never came to be costs `clean` nothing, a missing entry leaks.
    pub fn record(&self, kind: ResourceKind, id: &str, detail: &str) -> io::Result<()> {
        self.append(&Line {
            op: Op::Record,
            kind,
            id: id.into(),
            detail: detail.into(),
            created_unix: now_unix(),
            pid: std::process::id(),
        })
    }

    /// The resource is gone (released normally): drop it from the live entries.
    pub fn forget(&self, kind: ResourceKind, id: &str) -> io::Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        self.append(&Line {
            op: Op::Forget,
            kind,
            id: id.into(),
            detail: String::new(),
            created_unix: now_unix(),
            pid: std::process::id(),
        })
    }

    /// Mount `driver`'s layer `key` on `target` by `mount`, recorded in the ledger first (so
    /// `cowbench clean` finds it after a crash) and forgotten again when `mount` fails.
    pub fn tracked_mount(
        &self,
        driver: &str,
        key: &str,
        target: &Path,
        mount: impl FnOnce() -> crate::Result<()>,
    ) -> crate::Result<()> {
        use crate::error::IoContext;
        let id = crate::sys::tree::mount_id(target);
        self.record(ResourceKind::Mount, &id, &format!("{driver} layer {key}"))
            .ctx(driver, Some(key), || format!("record the mount on {id} in the ledger"))?;
        let r = mount();
        if r.is_err() {
            let _ = self.forget(ResourceKind::Mount, &id);
        }
        r
    }

    /// Unmount what [`Ledger::tracked_mount`] mounted on `target` and forget it.
    pub fn tracked_unmount(&self, driver: &str, target: &Path) -> crate::Result<()> {
        use crate::error::IoContext;
        let id = crate::sys::tree::mount_id(target);
        crate::sys::mounts::unmount(target).ctx(driver, None, || format!("unmount {}", target.display()))?;
        self.forget(ResourceKind::Mount, &id).ctx(driver, None, || format!("forget the mount on {id} in the ledger"))
    }

    /// Live entries in the order they were recorded (a resource recorded again after being
    /// forgotten is live again). A missing ledger has no entries.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut live: Vec<Entry> = Vec::new();
        for raw in text.lines() {
            // A line torn by a crash mid-write does not parse: skip it.
            let Ok(line) = serde_json::from_str::<Line>(raw) else { continue };
            live.retain(|e| !(e.kind == line.kind && e.id == line.id));
            if line.op == Op::Record {
                live.push(Entry {
                    kind: line.kind,
                    id: line.id,
                    detail: line.detail,
                    created_unix: line.created_unix,
                    pid: line.pid,
                });
            }
        }
        Ok(live)
    }

    /// Remove the ledger file once everything in it has been released (`cowbench clean`).
    pub fn clear(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_forget_replay() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let l = Ledger::open(&root);
        assert!(l.entries().unwrap().is_empty());
        l.forget(ResourceKind::Mount, "/x").unwrap();
        assert!(!l.path().exists(), "forget on a missing ledger creates nothing");
        l.record(ResourceKind::Mount, "/m1", "").unwrap();
        l.record(ResourceKind::Loop, "/f.img", "/dev/loop9").unwrap();
        l.record(ResourceKind::Container, "c1", "runc").unwrap();
        l.forget(ResourceKind::Mount, "/m1").unwrap();
        let e = Ledger::open(&root).entries().unwrap();
        let ids: Vec<_> = e.iter().map(|e| (e.kind, e.id.as_str())).collect();
        assert_eq!(ids, vec![(ResourceKind::Loop, "/f.img"), (ResourceKind::Container, "c1")]);
        assert_eq!(e[0].detail, "/dev/loop9");
        assert_eq!(e[0].pid, std::process::id());
        // Recorded again after a forget: live again, once.
        l.record(ResourceKind::Mount, "/m1", "").unwrap();
        l.record(ResourceKind::Mount, "/m1", "").unwrap();
        assert_eq!(l.entries().unwrap().iter().filter(|e| e.id == "/m1").count(), 1);
    }

    #[test]
    fn torn_line_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let l = Ledger::open(d.path());
        l.record(ResourceKind::Cgroup, "cowbench/a", "").unwrap();
        let mut f = OpenOptions::new().append(true).open(l.path()).unwrap();
        f.write_all(b"{\"op\":\"record\",\"kind\":\"mou").unwrap();
        assert_eq!(l.entries().unwrap().len(), 1);
        l.clear().unwrap();
        assert!(l.entries().unwrap().is_empty());
    }
}
