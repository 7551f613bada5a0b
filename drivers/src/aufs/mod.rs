//! The `aufs` backend: one directory (branch) per layer, a layer mounted as the union of its
//! own branch over its parents' branches, whole-file copy-up to the top branch.
//!
//! Two implementations of the same branch model:
//! - **kernel aufs**, where the kernel has it (`aufs` in /proc/filesystems): Docker's aufs
//!   graphdriver mount options (see [`kernel`]); `.wh.` whiteouts are aufs's own format, so
//!   layer tars go in and out unchanged.
//! - **unionfs-fuse**, everywhere else (no mainline kernel has aufs): a FUSE daemon per mount,
//!   whiteouts and opaque directories translated to its hidden-file markers (see [`unionfs`]).
//!   It is a stand-in and every probe, status and result says `aufs (unionfs-fuse stand-in)`.
//!
//! Layout under `<root>/aufs/`: `layers.json` (shared metadata), `l/<id>/` (one branch per
//! layer, kept short because a deep stack passes every branch path in one argument),
//! `mounts/<hash>.json` (what is mounted where, and by which daemon), `tmp/` (private mounts
//! used to compute diffs).

pub mod kernel;
pub mod unionfs;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{self, DiffSource, Whiteouts};
use crate::backend::Backend;
use crate::driver::{
    ApplyStats, Backing, BackingKind, Capabilities, Driver, DriverConfig, Implementation, Kind, LayerInfo, ProbeReport,
    Status, Usage,
};
use crate::error::{Error, IoContext, Result};
use crate::ledger::{Ledger, ResourceKind};
use crate::snapshotter::Snapshotter;
use crate::sys::{hostinfo, mounts, tree};

pub const NAME: &str = "aufs";
/// The implementation name of the stand-in; never plain `aufs`.
pub const STAND_IN: &str = "aufs (unionfs-fuse stand-in)";
/// The implementation name of the real thing.
pub const KERNEL: &str = "kernel aufs";

/// Kernel aufs is built with at most 127 branches by default (CONFIG_AUFS_BRANCH_MAX_127).
const KERNEL_MAX_BRANCHES: usize = 127;
/// Longest single argument the kernel passes to a program (MAX_ARG_STRLEN): unionfs-fuse
/// takes every branch in one argument, which bounds the depth of a stack.
const MAX_ARG_STRLEN: usize = 32 * 4096;
/// How long an unmounted daemon may take to exit before it is stopped.
const DAEMON_EXIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Union {
    Kernel,
    UnionFs { bin: PathBuf, version: String },
}

fn detect() -> std::result::Result<Union, String> {
    if hostinfo::kernel_has_fs("aufs") {
        return Ok(Union::Kernel);
    }
    if !hostinfo::kernel_has_fs("fuse") || !Path::new("/dev/fuse").exists() {
        return Err("the kernel has no aufs and no FUSE for the unionfs-fuse stand-in".into());
    }
    match unionfs::find_tool() {
        Some((bin, version)) => Ok(Union::UnionFs { bin, version }),
        None => Err("the kernel has no aufs and unionfs-fuse (Debian package `unionfs-fuse`) is not installed".into()),
    }
}

fn implementation_of(b: &Union) -> Implementation {
    match b {
        Union::Kernel => Implementation { name: KERNEL.into(), version: Some(hostinfo::kernel_release()) },
        Union::UnionFs { version, .. } => {
            Implementation { name: STAND_IN.into(), version: Some(format!("unionfs-fuse {version}")) }
        }
    }
}

pub fn probe() -> ProbeReport {
    match detect() {
        Ok(b) => {
            let mut r = ProbeReport::available(NAME, &implementation_of(&b));
            match &b {
                Union::Kernel => r.with_detail("kernel", hostinfo::kernel_release()),
                Union::UnionFs { bin, .. } => {
                    r.stand_in = true;
                    r.with_detail("tool", bin.display().to_string()).with_detail("kernel_aufs", "no")
                }
            }
        }
        Err(reason) => ProbeReport::unavailable(NAME, reason).with_hint("install unionfs-fuse (scripts/setup)"),
    }
}

/// Open (set up or adopt) the backend under `cfg.root/aufs`.
pub fn open(cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    Ok(Box::new(Aufs::open(cfg)?))
}

/// What one mount is: recorded so any process can unmount it and wait for its daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MountRecord {
    target: PathBuf,
    key: String,
    /// The unionfs-fuse daemon serving the mount (None for kernel aufs).
    pid: Option<u32>,
}

pub struct Aufs {
    root: PathBuf,
    backend: Union,
    max_files: u64,
    ledger: Ledger,
}

impl Aufs {
    /// Set up or adopt the branches under `cfg.root/aufs`, behind the generic snapshotter.
    pub fn open(cfg: &DriverConfig) -> Result<Snapshotter<Aufs>> {
        let backend = detect().map_err(|r| Error::unavailable(NAME, r))?;
        let mut max_files = unionfs::default_max_files();
        for (k, v) in &cfg.options {
            match k.as_str() {
                "max_files" => {
                    max_files = v.parse().map_err(|_| Error::config(NAME, format!("max_files={v}: not a number")))?
                }
                other => return Err(Error::config(NAME, format!("unknown option '{other}' (known: max_files)"))),
            }
        }
        let root = cfg.driver_root(NAME);
        // unionfs-fuse separates branches with ':' and modes with '='; aufs options with ','.
        if root.to_string_lossy().contains([':', '=', ',']) {
            return Err(Error::config(NAME, format!("root {} contains ':', '=' or ','", root.display())));
        }
        for d in ["l", "mounts", "tmp"] {
            std::fs::create_dir_all(root.join(d)).ctx(NAME, None, || format!("create {}", root.join(d).display()))?;
        }
        let me = Aufs { root: root.clone(), backend, max_files, ledger: Ledger::open(&cfg.root) };
        me.clean_tmp();
        Snapshotter::new(me, &root, &cfg.root)
    }

    fn layer_dir(&self, id: u64) -> PathBuf {
        self.root.join("l").join(id.to_string())
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        let h = Sha256::digest(target.as_os_str().as_encoded_bytes());
        self.root.join("mounts").join(format!("{}.json", &hex::encode(h)[..16]))
    }

    fn records(&self) -> Vec<(PathBuf, MountRecord)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("mounts")) {
            for e in rd.flatten() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if let Ok(r) = serde_json::from_slice::<MountRecord>(&bytes) {
                        out.push((e.path(), r));
                    }
                }
            }
        }
        out
    }

    /// Private mounts left by a process that died while computing a diff.
    fn clean_tmp(&self) {
        let tmp = self.root.join("tmp");
        // Names are `<pid>-<layer id>-<upper|lower>`: only a dead process's mounts are stale.
        let stale = |p: &Path| {
            let pid = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('-').next()).and_then(|n| n.parse::<u32>().ok());
            match pid {
                Some(pid) => !unionfs::alive(pid),
                None => true,
            }
        };
        for (path, rec) in self.records() {
            if rec.target.starts_with(&tmp) && stale(&rec.target) {
                self.release(&rec);
                let _ = std::fs::remove_file(path);
            }
        }
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten().filter(|e| stale(&e.path())) {
                let _ = mounts::unmount(&e.path());
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }

    /// Branches of `key`'s union, topmost first.
    fn branches(&self, chain: &[LayerInfo]) -> Vec<PathBuf> {
        chain.iter().map(|l| self.layer_dir(l.id)).collect()
    }

    fn max_depth(&self) -> usize {
        match self.backend {
            Union::Kernel => KERNEL_MAX_BRANCHES,
            Union::UnionFs { .. } => {
                // "<root>/l/<id>=RO:" per branch, ids up to 10 digits
                MAX_ARG_STRLEN / (self.root.as_os_str().len() + "/l/".len() + 10 + "=RO:".len())
            }
        }
    }

    /// Mount the union of `branches` at `target`; returns the daemon pid for unionfs-fuse.
    fn mount_union(&self, key: &str, branches: &[PathBuf], writable: bool, target: &Path) -> Result<Option<u32>> {
        if branches.len() > self.max_depth() {
            return Err(Error::invalid(
                NAME,
                key,
                format!("stack of {} branches exceeds the {} this implementation can mount", branches.len(), self.max_depth()),
            ));
        }
        match &self.backend {
            Union::Kernel => {
                kernel::mount(branches, writable, target)
                    .ctx(NAME, Some(key), || format!("mount aufs ({} branches) at {}", branches.len(), target.display()))?;
                Ok(None)
            }
            Union::UnionFs { bin, .. } => {
                let log = self.root.join(unionfs::LOG);
                let spec = unionfs::MountSpec { bin, branches, writable, target, max_files: self.max_files, log: &log };
                match unionfs::mount(&spec) {
                    Ok(pid) => Ok(Some(pid)),
                    Err(e) => Err(Error::Command { driver: NAME.into(), command: e.command, status: e.status, stderr: e.stderr }),
                }
            }
        }
    }

    /// How a union is recorded in the ledger: a FUSE daemon for unionfs-fuse (so that `cowbench
    /// clean` also stops the daemon), a plain mount for kernel aufs.
    fn ledger_kind(&self) -> ResourceKind {
        match self.backend {
            Union::Kernel => ResourceKind::Mount,
            Union::UnionFs { .. } => ResourceKind::Fuse,
        }
    }

    /// Unmount a recorded mount and wait for its daemon.
    fn release(&self, rec: &MountRecord) -> Option<std::io::Error> {
        let err = if mounts::is_mountpoint(&rec.target) && self.is_ours(&rec.target) {
            mounts::unmount(&rec.target).err()
        } else {
            None
        };
        if let Some(pid) = rec.pid {
            unionfs::wait_exit(pid, &rec.target, DAEMON_EXIT);
        }
        if err.is_none() {
            let _ = self.ledger.forget(self.ledger_kind(), &rec.target.display().to_string());
        }
        err
    }

    /// Whether the mount at `target` is one of this backend's (aufs or our unionfs daemon).
    fn is_ours(&self, target: &Path) -> bool {
        match mounts::mount_at(target) {
            Ok(Some(m)) => m.fstype == "aufs" || m.fstype == "fuse.unionfs" || m.source == "cowbench-aufs",
            _ => false,
        }
    }

    /// Mount the union of `branches` at `target` and write its record. The mount is in the
    /// ledger already (as [`Backend::mount_resource`] says); the daemon's pid is added here.
    fn mount_recorded(&self, key: &str, branches: &[PathBuf], writable: bool, target: &Path) -> Result<()> {
        let target = std::fs::canonicalize(target).ctx(NAME, Some(key), || format!("mount target {}", target.display()))?;
        // A second union over a live one would orphan the first one's daemon in the records.
        let existing = std::fs::read(self.record_path(&target)).ok().and_then(|b| serde_json::from_slice::<MountRecord>(&b).ok());
        if let Some(r) = existing.filter(|r| mounts::is_mountpoint(&r.target) && self.is_ours(&r.target)) {
            return Err(Error::invalid(NAME, key, format!("{} already has layer '{}' mounted", target.display(), r.key)));
        }
        let id = target.display().to_string();
        let kind = self.ledger_kind();
        let pid = self.mount_union(key, branches, writable, &target)?;
        if let Some(p) = pid {
            let _ = self.ledger.record(kind, &id, &p.to_string());
        }
        let rec = MountRecord { target: target.clone(), key: key.into(), pid };
        let path = self.record_path(&target);
        let write = serde_json::to_vec(&rec).map_err(std::io::Error::other).and_then(|b| std::fs::write(&path, b));
        if let Err(e) = write {
            self.release(&rec);
            return Err(Error::io(NAME, Some(key), format!("record mount in {}", path.display()), e));
        }
        Ok(())
    }

    fn unmount_recorded(&self, target: &Path) -> Result<()> {
        let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        let path = self.record_path(&target);
        let rec = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<MountRecord>(&b).ok(),
            Err(_) => None,
        };
        match rec {
            Some(rec) => {
                if let Some(e) = self.release(&rec) {
                    return Err(Error::io(NAME, Some(&rec.key), format!("unmount {}", target.display()), e));
                }
                let _ = std::fs::remove_file(&path);
                Ok(())
            }
            // Not recorded (mounted by an older process, or already gone): plain unmount.
            None => mounts::unmount(&target).ctx(NAME, None, || format!("unmount {}", target.display())),
        }
    }

    /// Keys mounted now (targets still mounted), to refuse removing a layer in use.
    fn mounted_at(&self, key: &str) -> Vec<PathBuf> {
        self.records()
            .into_iter()
            .filter(|(_, r)| r.key == key && mounts::is_mountpoint(&r.target))
            .map(|(_, r)| r.target)
            .collect()
    }

    /// A private read-only mount of `chain`, gone on drop.
    fn temp_mount(&self, key: &str, chain: &[LayerInfo], tag: &str) -> Result<TempMount<'_>> {
        let dir = self.root.join("tmp").join(format!("{}-{}-{tag}", std::process::id(), chain[0].id));
        std::fs::create_dir_all(&dir).ctx(NAME, Some(key), || format!("create {}", dir.display()))?;
        // In the ledger before it exists, as every mount.
        let (kind, id) = (self.ledger_kind(), tree::mount_id(&dir));
        let recorded = self.ledger.record(kind, &id, &format!("{NAME} diff mount of layer {key}"));
        let mounted = recorded
            .ctx(NAME, Some(key), || format!("record the mount on {id} in the ledger"))
            .and_then(|()| self.mount_recorded(key, &self.branches(chain), false, &dir));
        if let Err(e) = mounted {
            let _ = self.ledger.forget(kind, &id);
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(TempMount { driver: self, dir })
    }

    /// Where the changes of `key` come from. Kernel aufs: its branch with `.wh.` files (native).
    /// unionfs-fuse: its markers hide lower entries, but the branch alone cannot tell a marker
    /// of this layer that hides nothing from one that hides something; comparing the mounted
    /// layer with its mounted parent is exact, so diffs come from that comparison.
    fn with_diff_source<T>(&self, chain: &[LayerInfo], f: impl FnOnce(&DiffSource<'_>) -> Result<T>) -> Result<T> {
        let key = chain[0].key.as_str();
        match self.backend {
            Union::Kernel => {
                let branches = self.branches(chain);
                f(&DiffSource::AufsBranch { branch: &branches[0], lowers: &branches[1..] })
            }
            Union::UnionFs { .. } => {
                let upper = self.temp_mount(key, chain, "upper")?;
                let lower = if chain.len() > 1 { Some(self.temp_mount(key, &chain[1..], "lower")?) } else { None };
                let out = f(&DiffSource::Compare { lower: lower.as_ref().map(|m| m.dir.as_path()), upper: &upper.dir });
                drop(lower);
                drop(upper);
                out
            }
        }
    }
}

struct TempMount<'a> {
    driver: &'a Aufs,
    dir: PathBuf,
}

impl Drop for TempMount<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.driver.unmount_recorded(&self.dir) {
            log::warn!("{e}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn tree_usage(dir: &Path, skip: Option<&str>) -> std::io::Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut u = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let walker = walkdir::WalkDir::new(dir).min_depth(1).into_iter().filter_entry(|e| {
        !(e.depth() == 1 && skip.is_some_and(|s| e.file_name() == s))
    });
    for e in walker {
        let e = e.map_err(|e| e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk")))?;
        let m = e.metadata().map_err(|e| e.into_io_error().unwrap_or_else(|| std::io::Error::other("stat")))?;
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue; // a hard link to an inode already counted
        }
        u.inodes += 1;
        u.bytes += m.blocks() * 512;
    }
    Ok(u)
}

impl Backend for Aufs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn implementation(&self) -> Implementation {
        implementation_of(&self.backend)
    }

    fn capabilities(&self) -> Capabilities {
        let kernel = matches!(self.backend, Union::Kernel);
        Capabilities {
            native_diff: kernel,
            quota: false,
            block_level_cow: false,
            // Kernel aufs passes file pages through to the branch's inode; a FUSE mount has
            // page cache of its own per mount.
            shared_page_cache: kernel,
            shares_layers: true,
            max_depth: Some(self.max_depth()),
            stand_in: !kernel,
            loop_backed: false,
            discard: false,
            o_direct: true,
            native_fs_layer: false,
            own_read_cache: false,
            deferred_free: false,
        }
    }

    fn create(&self, chain: &[LayerInfo]) -> Result<()> {
        // A view has an (always empty) branch of its own, so every layer mounts the same way.
        let d = self.layer_dir(chain[0].id);
        std::fs::create_dir(&d).ctx(NAME, Some(&chain[0].key), || format!("create {}", d.display()))
    }

    fn freeze(&self, _active: &LayerInfo, _committed: &LayerInfo) -> Result<()> {
        // The branch stays where it is: committing only freezes it (no later mount is writable).
        Ok(())
    }

    fn mount(&self, chain: &[LayerInfo], target: &Path) -> Result<()> {
        let writable = chain[0].kind == Kind::Active;
        self.mount_recorded(&chain[0].key, &self.branches(chain), writable, target)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        self.unmount_recorded(target)
    }

    fn mount_resource(&self) -> ResourceKind {
        self.ledger_kind()
    }

    fn destroy(&self, info: &LayerInfo) -> Result<()> {
        // Mounted by any process (the records are shared): the branch would go from under it.
        let busy = self.mounted_at(&info.key);
        if !busy.is_empty() {
            return Err(Error::invalid(NAME, &info.key, format!("is mounted at {}", busy[0].display())));
        }
        let d = self.layer_dir(info.id);
        match crate::archive::remove_tree(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(NAME, Some(&info.key), format!("remove {}", d.display()), e))
            }
            _ => Ok(()),
        }
    }

    fn apply(&self, chain: &[LayerInfo], tar: &mut dyn Read) -> Result<ApplyStats> {
        let key = chain[0].key.as_str();
        let branches = self.branches(chain);
        let cp = crate::rollback::TreeCheckpoint::take(NAME, key, &branches[0], &branches[0].with_extension("pre-apply"))?;
        crate::rollback::apply_atomically(NAME, key, cp, || match self.backend {
            Union::Kernel => archive::apply(NAME, key, tar, &branches[0], Whiteouts::Aufs),
            Union::UnionFs { .. } => {
                let markers = unionfs::Markers { lowers: &branches[1..] };
                archive::apply(NAME, key, tar, &branches[0], Whiteouts::Custom(&markers))
            }
        })
    }

    fn diff_source(&self, chain: &[LayerInfo], f: &mut dyn FnMut(&DiffSource) -> Result<()>) -> Result<()> {
        self.with_diff_source(chain, f)
    }

    fn usage(&self, chain: &[LayerInfo]) -> Result<Usage> {
        let d = self.layer_dir(chain[0].id);
        let skip = match self.backend {
            Union::Kernel => None,
            Union::UnionFs { .. } => Some(unionfs::META_DIR),
        };
        tree_usage(&d, skip).ctx(NAME, Some(&chain[0].key), || format!("usage of {}", d.display()))
    }

    fn status(&self) -> Result<Status> {
        let imp = self.implementation();
        let mut s = Status::new(imp.to_string(), 0);
        s.backing = Some(Backing::new(BackingKind::Directory, &self.root));
        let live: Vec<MountRecord> =
            self.records().into_iter().map(|(_, r)| r).filter(|r| mounts::is_mountpoint(&r.target)).collect();
        s.fact("mounts", live.len());
        s.fact("max_depth", self.max_depth());
        if let Ok(m) = mounts::fstype_of(&self.root) {
            s.fact("backing_fs", m.fstype);
        }
        match &self.backend {
            Union::Kernel => s.fact("stand_in", false),
            Union::UnionFs { bin, .. } => {
                s.fact("stand_in", true);
                s.fact("tool", bin.display());
                s.fact("daemons", live.iter().filter(|r| r.pid.is_some()).count());
                s.fact("max_files", self.max_files);
            }
        }
        Ok(s)
    }

    fn teardown(&self, _layers: &[LayerInfo]) -> Result<()> {
        // Every mount this backend made (and only those), then the daemons behind them.
        let mut first_err = None;
        for (path, rec) in self.records() {
            match self.release(&rec) {
                Some(e) => {
                    first_err.get_or_insert(Error::io(NAME, Some(&rec.key), format!("unmount {}", rec.target.display()), e));
                }
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let l = self.root.join("l");
        crate::archive::remove_tree(&l).ctx(NAME, None, || format!("remove {}", l.display()))?;
        std::fs::create_dir_all(&l).ctx(NAME, None, || format!("create {}", l.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Labels;
    use crate::archive::WhiteoutHandler;
    use crate::conformance::fixture;
    use crate::driver::MountGuard;

    fn no_labels() -> Labels {
        Labels::new()
    }

    #[test]
    fn ledger_records_each_union_until_it_is_released() {
        let Some(f) = fixture(NAME, &[]) else { return };
        let d = f.driver();
        let ledger = Ledger::open(&f.config().root);
        let kind = if hostinfo::kernel_has_fs("aufs") { ResourceKind::Mount } else { ResourceKind::Fuse };
        d.prepare("a", None, &no_labels()).unwrap();
        let t = f.dir("a");
        d.mount("a", &t).unwrap();
        let id = std::fs::canonicalize(&t).unwrap().display().to_string();
        let e = ledger.entries().unwrap().into_iter().find(|e| e.kind == kind && e.id == id);
        let e = e.unwrap_or_else(|| panic!("no live {kind} entry for {id}: {:?}", ledger.entries()));
        if kind == ResourceKind::Fuse {
            assert!(unionfs::is_daemon_for(e.detail.parse().unwrap(), &t.canonicalize().unwrap()), "{e:?}");
        }
        d.unmount(&t).unwrap();
        // The private mounts a diff makes come and go through the ledger as well.
        d.changes("a").unwrap();
        assert!(ledger.entries().unwrap().is_empty(), "{:?}", ledger.entries());
    }

    #[test]
    fn probe_names_the_stand_in() {
        let r = probe();
        if hostinfo::kernel_has_fs("aufs") {
            assert_eq!(r.implementation.as_deref(), Some(KERNEL));
            return;
        }
        if r.available {
            assert_eq!(r.implementation.as_deref(), Some(STAND_IN));
            assert!(r.stand_in);
            assert!(r.version.as_deref().is_some_and(|v| v.starts_with("unionfs-fuse ")), "{r:?}");
        } else {
            assert!(r.reason.is_some());
        }
    }

    #[test]
    fn round_trip_through_the_union() {
        let Some(fx) = fixture(NAME, &[]) else { return };
        let d = fx.driver();
        assert_eq!(d.name(), NAME);
        if !hostinfo::kernel_has_fs("aufs") {
            assert_eq!(d.implementation().name, STAND_IN);
            assert!(d.capabilities().stand_in);
            assert!(d.status().unwrap().implementation.starts_with(STAND_IN));
        }
        d.prepare("base-w", None, &no_labels()).unwrap();
        let t = fx.dir("t");
        {
            let m = MountGuard::new(d, "base-w", &t).unwrap();
            std::fs::create_dir_all(t.join("etc/sub")).unwrap();
            std::fs::write(t.join("etc/a"), b"base a").unwrap();
            std::fs::write(t.join("etc/sub/b"), b"base b").unwrap();
            std::fs::write(t.join("keep"), b"k").unwrap();
            m.unmount().unwrap();
        }
        d.commit("base", "base-w", &no_labels()).unwrap();
        d.prepare("c1", Some("base"), &no_labels()).unwrap();
        {
            let _m = MountGuard::new(d, "c1", &t).unwrap();
            assert_eq!(std::fs::read(t.join("etc/a")).unwrap(), b"base a");
            // copy-up on write, deletion of a lower file, opaque-by-recreation of a lower dir
            std::fs::write(t.join("etc/a"), b"c1 a").unwrap();
            std::fs::remove_file(t.join("keep")).unwrap();
            std::fs::remove_dir_all(t.join("etc/sub")).unwrap();
            std::fs::create_dir(t.join("etc/sub")).unwrap();
            std::fs::write(t.join("etc/sub/new"), b"n").unwrap();
            assert!(!t.join("keep").exists());
            assert!(!t.join("etc/sub/b").exists());
            // the marker directory is hidden from listings
            let names: Vec<_> = std::fs::read_dir(&t).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(!names.iter().any(|n| n == unionfs::META_DIR), "{names:?}");
        }
        d.commit("l1", "c1", &no_labels()).unwrap();
        d.view("v", "l1", &no_labels()).unwrap();
        {
            let _m = MountGuard::new(d, "v", &t).unwrap();
            assert_eq!(std::fs::read(t.join("etc/a")).unwrap(), b"c1 a");
            assert!(!t.join("keep").exists());
            assert!(!t.join("etc/sub/b").exists());
            assert!(t.join("etc/sub/new").exists());
            let e = std::fs::write(t.join("x"), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        }
        // the lower layer is untouched
        d.view("vb", "base", &no_labels()).unwrap();
        {
            let _m = MountGuard::new(d, "vb", &t).unwrap();
            assert_eq!(std::fs::read(t.join("etc/a")).unwrap(), b"base a");
            assert!(t.join("keep").exists());
            assert!(t.join("etc/sub/b").exists());
        }
        assert!(matches!(d.remove("base"), Err(Error::HasChildren { .. })));
        let u = d.usage("l1").unwrap();
        assert!(u.inodes >= 3 && u.bytes > 0, "{u:?}");
        for k in ["v", "vb", "l1", "base"] {
            d.remove(k).unwrap();
        }
        assert!(d.list().unwrap().is_empty());
    }

    #[test]
    fn remove_refuses_a_mounted_layer() {
        let Some(fx) = fixture(NAME, &[]) else { return };
        let d = fx.driver();
        d.prepare("a", None, &no_labels()).unwrap();
        let t = fx.dir("t");
        let m = MountGuard::new(d, "a", &t).unwrap();
        assert!(matches!(d.remove("a"), Err(Error::InvalidState { .. })));
        m.unmount().unwrap();
        d.remove("a").unwrap();
    }

    #[test]
    fn markers_written_by_apply_are_honoured_by_unionfs() {
        if hostinfo::kernel_has_fs("aufs") {
            return;
        }
        let Some(fx) = fixture(NAME, &[]) else { return };
        let d = fx.driver();
        d.prepare("w", None, &no_labels()).unwrap();
        let t = fx.dir("t");
        {
            let _m = MountGuard::new(d, "w", &t).unwrap();
            std::fs::create_dir_all(t.join("d/deep")).unwrap();
            std::fs::write(t.join("d/deep/f"), b"f").unwrap();
            std::fs::write(t.join("d/g"), b"g").unwrap();
            std::fs::write(t.join("h"), b"h").unwrap();
            std::fs::write(t.join("i"), b"i").unwrap();
        }
        d.commit("b", "w", &no_labels()).unwrap();
        d.prepare("top", Some("b"), &no_labels()).unwrap();
        // Write the markers the way apply does, straight into the top branch.
        let root = fx.root().join("root").join(NAME);
        let ids: Vec<u64> = ["top", "b"].iter().map(|k| d.stat(k).unwrap().id).collect();
        let top = root.join("l").join(ids[0].to_string());
        let lowers = vec![root.join("l").join(ids[1].to_string())];
        let m = unionfs::Markers { lowers: &lowers };
        m.whiteout(&top, Path::new("h")).unwrap();
        std::fs::create_dir(top.join("d")).unwrap();
        std::fs::write(top.join("d/mine"), b"m").unwrap();
        m.opaque(&top, Path::new("d")).unwrap();
        {
            let _m = MountGuard::new(d, "top", &t).unwrap();
            assert!(!t.join("h").exists());
            assert!(t.join("i").exists());
            let names: Vec<_> = std::fs::read_dir(t.join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("mine")]);
            assert!(!t.join("d/deep/f").exists());
        }
        // an opaque layer root hides every lower entry
        d.prepare("top2", Some("b"), &no_labels()).unwrap();
        let top2 = root.join("l").join(d.stat("top2").unwrap().id.to_string());
        std::fs::write(top2.join("only"), b"o").unwrap();
        m.opaque(&top2, Path::new("")).unwrap();
        {
            let _m = MountGuard::new(d, "top2", &t).unwrap();
            let names: Vec<_> = std::fs::read_dir(&t).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("only")]);
        }
    }

    #[test]
    fn deep_stack_of_128_branches() {
        let Some(fx) = fixture(NAME, &[]) else { return };
        let d = fx.driver();
        let depth = 130;
        assert!(d.capabilities().max_depth.unwrap() >= depth);
        let root = fx.root().join("root").join(NAME);
        let mut parent: Option<String> = None;
        for i in 0..depth {
            let k = format!("w{i}");
            let info = d.prepare(&k, parent.as_deref(), &no_labels()).unwrap();
            // fill the branch directly: one file per layer, and layer i rewrites `shared`
            let b = root.join("l").join(info.id.to_string());
            std::fs::write(b.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(b.join("shared"), i.to_string()).unwrap();
            let name = format!("l{i}");
            d.commit(&name, &k, &no_labels()).unwrap();
            parent = Some(name);
        }
        d.prepare("top", parent.as_deref(), &no_labels()).unwrap();
        let t = fx.dir("t");
        let _m = MountGuard::new(d, "top", &t).unwrap();
        assert_eq!(std::fs::read_to_string(t.join("f0")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(t.join(format!("f{}", depth - 1))).unwrap(), (depth - 1).to_string());
        assert_eq!(std::fs::read_to_string(t.join("shared")).unwrap(), (depth - 1).to_string());
        assert_eq!(std::fs::read_dir(&t).unwrap().count(), depth + 1);
        // copy-up from the bottom of the stack
        std::fs::write(t.join("f0"), b"top").unwrap();
        assert_eq!(std::fs::read_to_string(t.join("f0")).unwrap(), "top");
    }

    #[test]
    fn a_second_handle_unmounts_and_collects_the_daemon() {
        if hostinfo::kernel_has_fs("aufs") {
            return;
        }
        let Some(fx) = fixture(NAME, &[]) else { return };
        let d = fx.driver();
        d.prepare("a", None, &no_labels()).unwrap();
        let t = std::fs::canonicalize(fx.dir("t")).unwrap();
        d.mount("a", &t).unwrap();
        // a second mount over a live one is refused, not stacked
        assert!(matches!(d.mount("a", &t), Err(Error::InvalidState { .. })));
        let pids = unionfs::daemons_for(&t);
        assert_eq!(pids.len(), 1);
        let other = crate::registry::open(NAME, &DriverConfig::new(fx.root().join("root"))).unwrap();
        assert_eq!(other.status().unwrap().facts["mounts"], "1");
        other.unmount(&t).unwrap();
        assert!(!mounts::is_mountpoint(&t));
        assert!(!unionfs::alive(pids[0]), "daemon {} still running after unmount", pids[0]);
        assert_eq!(other.status().unwrap().facts["mounts"], "0");
    }

    #[test]
    fn teardown_leaves_no_mount_and_no_daemon() {
        if hostinfo::kernel_has_fs("aufs") {
            return;
        }
        let Some(fx) = fixture(NAME, &[]) else { return };
        let d = fx.driver();
        d.prepare("a", None, &no_labels()).unwrap();
        d.prepare("b", None, &no_labels()).unwrap();
        let ta = fx.dir("ta");
        let tb = fx.dir("tb");
        d.mount("a", &ta).unwrap();
        d.mount("b", &tb).unwrap();
        let ta = std::fs::canonicalize(&ta).unwrap();
        let pids: Vec<u32> = unionfs::daemons_for(&ta).into_iter().chain(unionfs::daemons_for(&tb)).collect();
        assert_eq!(pids.len(), 2, "one daemon per mount");
        // an unmount made behind the driver's back still lets teardown collect the daemon
        mounts::unmount(&tb).unwrap();
        d.teardown().unwrap();
        assert!(!mounts::is_mountpoint(&ta));
        for p in pids {
            assert!(!unionfs::alive(p), "daemon {p} still running");
        }
        assert!(d.list().unwrap().is_empty());
    }
}
