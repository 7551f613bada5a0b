//! What a backend reports about itself ([`crate::Driver::status`]): typed figures the harness
//! measures with (space, pool, read cache, backing store, daemon), plus display-only facts.
//!
//! Everything a caller computes with is a typed field; `facts` are for people (reports,
//! `cowbench snapshot status`) and nothing may parse them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A backend's state at one moment. Serialized into run.json host snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The implementation that runs (kernel driver or stand-in) and its version, as displayed.
    pub implementation: String,
    /// What the backend's own store reports used (None for directory backends, whose space is
    /// the host filesystem's).
    pub space: Option<SpaceUsage>,
    /// A pool's data and metadata (devicemapper thin pool).
    pub pool: Option<PoolUsage>,
    /// The backend's own read cache, which dropping the page cache does not empty (ZFS ARC).
    pub cache: Option<CacheUsage>,
    /// Where the backend's storage lives.
    pub backing: Option<Backing>,
    /// The daemon serving the backend (zfs-fuse), if one runs.
    pub daemon_pid: Option<u32>,
    /// The backend's discard setting; None when the backend has no discard option.
    pub discard: Option<bool>,
    /// Free-space fragmentation of the store in percent, where the backend reports it (zpool).
    pub fragmentation_percent: Option<u32>,
    /// Layers in the metadata store.
    pub layers: usize,
    /// Remaining human-readable facts, for display only.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

impl Status {
    /// A status with only the implementation and the layer count; backends fill in the rest.
    pub fn new(implementation: impl Into<String>, layers: usize) -> Self {
        Status {
            implementation: implementation.into(),
            space: None,
            pool: None,
            cache: None,
            backing: None,
            daemon_pid: None,
            discard: None,
            fragmentation_percent: None,
            layers,
            facts: BTreeMap::new(),
        }
    }

    pub fn fact(&mut self, k: impl Into<String>, v: impl ToString) {
        self.facts.insert(k.into(), v.to_string());
    }

    /// Every field as a (name, value) line, typed fields first, for display.
    pub fn display_rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = vec![("implementation".into(), self.implementation.clone())];
        let mut add = |k: &str, v: String| rows.push((k.to_string(), v));
        if let Some(s) = &self.space {
            add("space", format!("{} of {} bytes used ({})", s.used_bytes, s.total_bytes, s.source));
        }
        if let Some(p) = &self.pool {
            add("pool_data", format!("{} of {} bytes used", p.data_used_bytes, p.data_total_bytes));
            add("pool_metadata", format!("{} of {} bytes used", p.metadata_used_bytes, p.metadata_total_bytes));
        }
        if let Some(c) = &self.cache {
            add("read_cache", format!("{} bytes ({})", c.bytes, c.source));
        }
        if let Some(b) = &self.backing {
            add("backing", format!("{} {}", b.kind, b.path.display()));
            if let Some(m) = &b.mount_point {
                add("backing_mount_point", m.display().to_string());
            }
            if let (Some(al), Some(ap)) = (b.file_allocated_bytes, b.file_apparent_bytes) {
                add("backing_file", format!("{al} bytes allocated of {ap} apparent"));
            }
            if !b.loop_devices.is_empty() {
                let l: Vec<String> = b.loop_devices.iter().map(|d| d.display().to_string()).collect();
                add("loop_devices", l.join(","));
            }
            if let Some(d) = b.loop_direct_io {
                add("loop_direct_io", d.to_string());
            }
        }
        if let Some(p) = self.daemon_pid {
            add("daemon_pid", p.to_string());
        }
        if let Some(d) = self.discard {
            add("discard", d.to_string());
        }
        if let Some(f) = self.fragmentation_percent {
            add("fragmentation_percent", f.to_string());
        }
        add("layers", self.layers.to_string());
        rows.extend(self.facts.iter().map(|(k, v)| (k.clone(), v.clone())));
        rows
    }
}

/// Bytes used in the backend's own store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
    /// Where the figures come from.
    pub source: SpaceSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceSource {
    /// statvfs of the backend's own filesystem (btrfs).
    FilesystemStatvfs,
    /// `used` / `used + available` of the pool's root dataset (zfs).
    PoolRootDataset,
    /// thin-pool data blocks used / total (devicemapper).
    ThinPoolData,
}

impl std::fmt::Display for SpaceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpaceSource::FilesystemStatvfs => "statvfs of the backend's filesystem",
            SpaceSource::PoolRootDataset => "zpool root dataset used",
            SpaceSource::ThinPoolData => "thin-pool data used",
        })
    }
}

/// A pool's data and metadata space (devicemapper thin pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub data_used_bytes: u64,
    pub data_total_bytes: u64,
    pub metadata_used_bytes: u64,
    pub metadata_total_bytes: u64,
}

/// Size of the backend's own read cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUsage {
    pub bytes: u64,
    pub source: CacheSource,
    /// The most the cache may hold (ZFS `c_max`), where the backend says: a figure at the
    /// limit measures the limit, not what was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CacheSource {
    /// `size` in /proc/spl/kstat/zfs/arcstats (kernel OpenZFS).
    KernelArcstats,
    /// `size` in zfs-fuse's kstat mount (/zfs-kstat/zfs/arcstats).
    ZfsFuseKstat,
    /// The resident memory of the daemon holding the cache, when the cache itself is not
    /// exposed (zfs-fuse started without its kstat mount).
    DaemonRss { pid: u32 },
}

impl std::fmt::Display for CacheSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheSource::KernelArcstats => f.write_str("/proc/spl/kstat/zfs/arcstats size"),
            CacheSource::ZfsFuseKstat => f.write_str("zfs-fuse kstat arcstats size"),
            CacheSource::DaemonRss { pid } => write!(f, "daemon RSS (pid {pid}; cache size not exposed)"),
        }
    }
}

/// Where a backend's storage lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backing {
    pub kind: BackingKind,
    /// The loop / vdev / data file, the existing filesystem, dataset, pool device or directory.
    pub path: PathBuf,
    /// Blocks allocated to the backing file on the host (sparse files grow as they are used).
    pub file_allocated_bytes: Option<u64>,
    /// The backing file's length.
    pub file_apparent_bytes: Option<u64>,
    /// Loop devices attached to the backing file(s).
    #[serde(default)]
    pub loop_devices: Vec<PathBuf>,
    /// Whether the (first) loop device does direct IO to its file.
    pub loop_direct_io: Option<bool>,
    /// Mount point of the backend's own filesystem (btrfs store), if it has one.
    pub mount_point: Option<PathBuf>,
}

impl Backing {
    pub fn new(kind: BackingKind, path: impl Into<PathBuf>) -> Self {
        Backing {
            kind,
            path: path.into(),
            file_allocated_bytes: None,
            file_apparent_bytes: None,
            loop_devices: Vec::new(),
            loop_direct_io: None,
            mount_point: None,
        }
    }

    /// Fill in the allocated and apparent size of the backing file at `path`.
    pub fn with_file_sizes(mut self) -> Self {
        use std::os::unix::fs::MetadataExt;
        if let Ok(md) = std::fs::metadata(&self.path) {
            self.file_apparent_bytes = Some(md.len());
            self.file_allocated_bytes = Some(md.blocks() * 512);
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackingKind {
    /// A file under the driver root attached to a loop device (btrfs, devicemapper).
    LoopFile,
    /// A file used directly as a pool vdev (zfs): the same caveats as a loop file.
    VdevFile,
    /// A filesystem the user named (btrfs on an existing mount).
    ExistingFilesystem,
    /// A dataset the user named (zfs).
    ExistingDataset,
    /// A thin pool the user named (devicemapper).
    ExistingPool,
    /// Plain directories on the host filesystem (overlay, aufs, vfs).
    Directory,
}

impl std::fmt::Display for BackingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackingKind::LoopFile => "loop-backed file",
            BackingKind::VdevFile => "file vdev",
            BackingKind::ExistingFilesystem => "existing filesystem",
            BackingKind::ExistingDataset => "existing dataset",
            BackingKind::ExistingPool => "existing pool",
            BackingKind::Directory => "directory",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut s = Status::new("kernel btrfs", 3);
        s.space = Some(SpaceUsage { used_bytes: 10, total_bytes: 20, source: SpaceSource::FilesystemStatvfs });
        s.cache = Some(CacheUsage { bytes: 5, source: CacheSource::DaemonRss { pid: 42 }, limit_bytes: None });
        s.backing = Some(Backing::new(BackingKind::LoopFile, "/r/btrfs/image"));
        s.fact("quota", "off");
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&j).unwrap(), s);
    }

    #[test]
    fn an_old_string_map_is_not_a_status() {
        // run.json files before typed status held a map of strings; readers tell them apart.
        let old = r#"{"implementation":"kernel overlayfs","layers":"3","root":"/r"}"#;
        assert!(serde_json::from_str::<Status>(old).is_err());
    }
}
