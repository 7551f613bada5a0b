//! The `devicemapper` backend: a dm-thin pool, each layer a thin snapshot of its parent.
//!
//! Set up as Docker's loop-lvm: two sparse files under the driver root (`data`, `metadata`)
//! attached to loop devices, a `thin-pool` target on them with 64 KiB blocks, a base thin
//! device formatted once (ext4 or xfs, `base_size`), and every layer a `create_snap` of its
//! parent (of the base for a layer without parent). `thinpool=/dev/mapper/NAME` uses an existing
//! pool instead; the base device's thin id is then chosen free and stored with the driver.
//!
//! Everything goes through the `devicemapper` crate's ioctls ([`dm`]); device names carry a
//! prefix unique per root (`cowbench-<8 hex of sha256(root)>-`), so `open` can adopt what a
//! previous process left (the pool, active thin devices) and remove what is stale.
//!
//! Options (Docker's loop-lvm defaults in brackets, where cowbench's differ to keep test pools
//! small — all sparse, so the sizes cost nothing until written):
//! `data_size` 8G [100G], `metadata_size` 256M [2G], `base_size` 10G [10G], `fs` ext4|xfs,
//! `discard` true|false (default true), `min_free_space` percent (10), `thinpool`.
//!
//! **Discard.** Deleting a thin device frees its blocks in the pool, but a loop-backed pool's
//! data file keeps them allocated: only a discard passed down to the loop device punches the
//! holes back. With `discard=true` (Docker's `dm.blkdiscard`), layers are mounted with
//! `-o discard` (files deleted inside a layer return their blocks at once) and the whole thin
//! device is discarded before `delete`. With `discard=false` neither happens, and the data
//! file only grows under churn: `status` reports its allocated bytes so both are measurable.

pub mod dm;
pub mod thinmap;

use std::io::Read;
use std::path::{Path, PathBuf};

use devicemapper::{
    DataBlocks, Sectors, ThinDevId, ThinPoolStatus, ThinPoolStatusSummary, ThinPoolTargetParams, ThinTargetParams, DM,
};
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{self, DiffSource, Whiteouts};
use crate::backend::Backend;
use crate::driver::{
    ApplyStats, Backing, BackingKind, Capabilities, Change, Driver, DriverConfig, Implementation, Kind, LayerInfo,
    PoolUsage, ProbeReport, SpaceSource, SpaceUsage, Status, Usage,
};
use crate::error::{Error, IoContext, Result};
use crate::ledger::{Ledger, ResourceKind};
use crate::snapshotter::Snapshotter;
use crate::sys::{hostinfo, loopdev, mounts};
use crate::sys::tree::mount_id;
use dm::PoolMessage;

pub const NAME: &str = "devicemapper";
pub const IMPLEMENTATION: &str = "kernel dm-thin";

/// Pool block size: 64 KiB, Docker's default (the smallest dm-thin allows).
const BLOCK_SECTORS: u64 = 128;
const SECTOR: u64 = 512;
/// Docker's low water mark (in data blocks), capped to a tenth of a small pool.
const LOW_WATER_BLOCKS: u64 = 32768;

const HINT: &str = "run it inside scripts/vm (a VM with Debian's kernel)";

fn kernel_lists_device_mapper() -> bool {
    let listed = |f: &str| {
        std::fs::read_to_string(f).map(|t| t.lines().any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))).unwrap_or(false)
    };
    listed("/proc/misc") || listed("/proc/devices")
}

/// device-mapper is loaded, or its control node exists (opening it may load dm-mod).
fn has_device_mapper() -> bool {
    kernel_lists_device_mapper() || Path::new("/dev/mapper/control").exists()
}

/// Open the control device and check the thin targets; the implementation on success.
fn detect() -> std::result::Result<(DM, Implementation), (String, Option<&'static str>)> {
    if !has_device_mapper() {
        return Err(("no device-mapper in this kernel".into(), Some(HINT)));
    }
    if let Err(e) = dm::ensure_control() {
        return Err((format!("cannot create /dev/mapper/control: {e}"), None));
    }
    let ctl = DM::new().map_err(|e| {
        // A /dev/mapper/control node can outlive the kernel that had device-mapper (a copied
        // /dev, a package's postinst): opening it then fails with ENODEV. Only the kernel's own
        // lists say device-mapper is there.
        if kernel_lists_device_mapper() {
            (format!("cannot open /dev/mapper/control: {e}"), None)
        } else {
            ("no device-mapper in this kernel".into(), Some(HINT))
        }
    })?;
    let targets = dm::targets(&ctl).map_err(|e| (format!("cannot list device-mapper targets: {e}"), None))?;
    let version = |t: &str| targets.iter().find(|(n, _)| n == t).map(|(_, v)| v.clone());
    let (Some(pool_v), Some(_)) = (version("thin-pool"), version("thin")) else {
        return Err((
            "device-mapper has no thin-pool target (dm-thin-pool not loaded, and this process cannot load it)".into(),
            Some(HINT),
        ));
    };
    if hostinfo::which("mkfs.ext4").is_none() && hostinfo::which("mkfs.xfs").is_none() {
        return Err(("neither mkfs.ext4 nor mkfs.xfs is installed".into(), None));
    }
    let imp = Implementation {
        name: IMPLEMENTATION.into(),
        version: Some(format!("thin-pool {pool_v}, kernel {}", hostinfo::kernel_release())),
    };
    Ok((ctl, imp))
}

/// Remove every device-mapper device whose name starts with one of `prefixes` (thin devices
/// before their pool: longer names first): what a process that died before saving its state
/// left behind, which no open of the backend adopts. Returns each device found and how its
/// removal went. No device-mapper: nothing to find.
pub fn release_devices(prefixes: &[String]) -> Vec<(String, Result<()>)> {
    if !Path::new("/dev/mapper/control").exists() {
        return Vec::new();
    }
    let Ok(ctl) = DM::new() else { return Vec::new() };
    let Ok(all) = dm::list(&ctl) else { return Vec::new() };
    let mut names: Vec<String> = all.into_iter().map(|(n, _)| n).filter(|n| prefixes.iter().any(|p| n.starts_with(p.as_str()))).collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names
        .into_iter()
        .map(|n| {
            let r = dm::remove(&ctl, &n).map_err(|e| dmerr(None, format!("remove {n}"), e));
            (n, r)
        })
        .collect()
}

pub fn probe() -> ProbeReport {
    match detect() {
        Ok((ctl, imp)) => {
            let mut r = ProbeReport::available(NAME, &imp);
            if let Ok((a, b, c)) = ctl.version() {
                r = r.with_detail("dm_ioctl_version", format!("{a}.{b}.{c}"));
            }
            r.with_detail("kernel", hostinfo::kernel_release())
        }
        Err((reason, hint)) => {
            let r = ProbeReport::unavailable(NAME, reason);
            match hint {
                Some(h) => r.with_hint(h),
                None => r,
            }
        }
    }
}

/// Open (set up or adopt) the backend under `cfg.root/devicemapper`.
pub fn open(cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    Ok(Box::new(DeviceMapper::open(cfg)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Fs {
    Ext4,
    Xfs,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    data_size: u64,
    metadata_size: u64,
    base_size: u64,
    fs: Fs,
    discard: bool,
    min_free_pct: u64,
    thinpool: Option<String>,
}

fn parse_opts(cfg: &DriverConfig) -> Result<Opts> {
    let mut o = Opts {
        data_size: 8 << 30,
        metadata_size: 256 << 20,
        base_size: 10 << 30,
        fs: Fs::Ext4,
        discard: true,
        min_free_pct: 10,
        thinpool: None,
    };
    let size = |k: &str, v: &str| crate::sys::units::size_option(NAME, k, v);
    for (k, v) in &cfg.options {
        match k.as_str() {
            "data_size" => o.data_size = size(k, v)?,
            "metadata_size" => o.metadata_size = size(k, v)?,
            "base_size" => o.base_size = size(k, v)?,
            "fs" => {
                o.fs = match v.as_str() {
                    "ext4" => Fs::Ext4,
                    "xfs" => Fs::Xfs,
                    _ => return Err(Error::config(NAME, format!("fs={v}: must be ext4 or xfs"))),
                }
            }
            "discard" => {
                o.discard = match v.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(Error::config(NAME, format!("discard={v}: must be true or false"))),
                }
            }
            "min_free_space" => {
                o.min_free_pct = v
                    .trim_end_matches('%')
                    .parse()
                    .ok()
                    .filter(|p| *p < 100)
                    .ok_or_else(|| Error::config(NAME, format!("min_free_space={v}: a percentage below 100")))?
            }
            "thinpool" => {
                let n = v.strip_prefix("/dev/mapper/").unwrap_or(v);
                if n.is_empty() || n.contains('/') {
                    return Err(Error::config(NAME, format!("thinpool={v}: expected /dev/mapper/NAME")));
                }
                o.thinpool = Some(n.to_string());
            }
            other => {
                return Err(Error::config(
                    NAME,
                    format!("unknown option '{other}' (known: data_size, metadata_size, base_size, fs, discard, min_free_space, thinpool)"),
                ))
            }
        }
    }
    if o.base_size == 0 || o.base_size % (BLOCK_SECTORS * SECTOR) != 0 {
        return Err(Error::config(NAME, "base_size must be a non-zero multiple of 64K"));
    }
    if o.thinpool.is_none() && (o.data_size < (64 << 20) || o.metadata_size < (2 << 20)) {
        return Err(Error::config(NAME, "data_size must be at least 64M and metadata_size at least 2M"));
    }
    Ok(o)
}

/// What `open` must find again: the pool, the base device, how it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PoolState {
    /// Name of the pool device.
    pool: String,
    /// Whether cowbench created the pool (and owns its loop files).
    owned: bool,
    /// Thin id of the base device; layer `id` has thin id `base_thin_id + id`.
    base_thin_id: u64,
    base_sectors: u64,
    fs: Fs,
    block_sectors: u64,
}

/// Where a layer is mounted (for `unmount` from any process).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MountRecord {
    target: PathBuf,
    key: String,
    device: String,
}

pub struct DeviceMapper {
    root: PathBuf,
    dm: DM,
    imp: Implementation,
    opts: Opts,
    prefix: String,
    state: PoolState,
    /// Users of each layer's own mountpoint in this process (layer id -> users, and the device
    /// name when this process mounted it): nested and concurrent diffs share one mount.
    own_mounts: std::sync::Mutex<std::collections::HashMap<u64, (usize, Option<String>)>>,
    ledger: Ledger,
}

fn dmerr(key: Option<&str>, what: impl Into<String>, e: std::io::Error) -> Error {
    Error::io(NAME, key, what.into(), e)
}

fn allocated_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

impl DeviceMapper {
    /// Set up or adopt the thin pool of `cfg.root/devicemapper`, behind the generic
    /// snapshotter.
    pub fn open(cfg: &DriverConfig) -> Result<Snapshotter<DeviceMapper>> {
        let opts = parse_opts(cfg)?;
        let (ctl, imp) = detect().map_err(|(r, _)| Error::unavailable(NAME, r))?;
        let root = cfg.driver_root(NAME);
        std::fs::create_dir_all(root.join("mnt")).ctx(NAME, None, || format!("create {}", root.display()))?;
        std::fs::create_dir_all(root.join("mounts")).ctx(NAME, None, || format!("create {}", root.display()))?;
        let canon = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        let prefix = format!("cowbench-{}", &hex::encode(Sha256::digest(canon.as_os_str().as_encoded_bytes()))[..8]);
        let state_path = root.join("pool.json");
        let saved: Option<PoolState> = match std::fs::read(&state_path) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| Error::Metadata {
                driver: NAME.into(),
                path: state_path.clone(),
                message: e.to_string(),
            })?),
            Err(_) => None,
        };
        let placeholder = PoolState {
            pool: String::new(),
            owned: opts.thinpool.is_none(),
            base_thin_id: 0,
            base_sectors: opts.base_size / SECTOR,
            fs: opts.fs,
            block_sectors: BLOCK_SECTORS,
        };
        let mut me = DeviceMapper {
            root,
            dm: ctl,
            imp,
            opts,
            prefix,
            state: saved.clone().unwrap_or(placeholder),
            own_mounts: Default::default(),
            ledger: Ledger::open(&cfg.root),
        };
        // The layers metadata and pool.json are taken under the metadata lock's neighbour: one
        // setup at a time per root.
        let _setup = SetupLock::take(&me.root)?;
        match saved {
            Some(s) => {
                me.state = s;
                me.adopt()?;
            }
            None => me.create_pool()?,
        }
        me.remove_stale();
        let meta_dir = me.root.clone();
        Snapshotter::new(me, &meta_dir, &cfg.root)
    }

    fn data_file(&self) -> PathBuf {
        self.root.join("data")
    }

    fn meta_file(&self) -> PathBuf {
        self.root.join("metadata")
    }

    fn pool_name(&self) -> String {
        format!("{}-pool", self.prefix)
    }

    fn base_name(&self) -> String {
        format!("{}-base", self.prefix)
    }

    fn thin_name(&self, info: &LayerInfo) -> String {
        format!("{}-{}", self.prefix, self.thin_id(info))
    }

    fn thin_id(&self, info: &LayerInfo) -> u64 {
        self.state.base_thin_id + info.id
    }

    fn mnt_dir(&self, info: &LayerInfo) -> PathBuf {
        self.root.join("mnt").join(info.id.to_string())
    }

    fn save_state(&self) -> Result<()> {
        let p = self.root.join("pool.json");
        let tmp = self.root.join("pool.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(std::io::Error::other).ctx(NAME, None, || "encode pool state".into())?;
        std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &p)).ctx(NAME, None, || format!("write {}", p.display()))
    }

    /// Attach the data and metadata files to loop devices of their own; the paths returned
    /// are the devices this call configured (the pool table is made from them, no search).
    fn attach_loops(&self) -> Result<(PathBuf, PathBuf)> {
        let data = self.attach_loop(&self.data_file())?;
        match self.attach_loop(&self.meta_file()) {
            Ok(meta) => Ok((data, meta)),
            Err(e) => {
                let _ = loopdev::detach(&data);
                self.forget_loops();
                Err(e)
            }
        }
    }

    fn attach_loop(&self, f: &Path) -> Result<PathBuf> {
        // Not autoclear: that detaches a device on the last close, which is the close
        // right after attaching, before the pool holds it. Teardown detaches them.
        let id = f.display().to_string();
        self.ledger
            .record(ResourceKind::Loop, &id, &format!("{NAME} pool file"))
            .ctx(NAME, None, || format!("record the loop device of {id} in the ledger"))?;
        // Direct IO where the backing filesystem takes it: a buffered loop device caches every
        // block a second time in the pool file's page cache (status reports `loop_direct_io`).
        let r = loopdev::attach_prefer_direct(f)
            .map(|(d, _)| d)
            .ctx(NAME, None, || format!("attach {}", f.display()));
        if r.is_err() {
            let _ = self.ledger.forget(ResourceKind::Loop, &id);
        }
        r
    }

    /// The loop devices a previous process left attached to the pool files (a pool device
    /// removed, as by a reboot that kept /dev), or fresh ones.
    fn adopt_loops(&self) -> Result<(PathBuf, PathBuf)> {
        let found = |f: &Path| loopdev::find_by_file(f).ok().and_then(|v| v.into_iter().next());
        match (found(&self.data_file()), found(&self.meta_file())) {
            (Some(d), Some(m)) => Ok((d, m)),
            (Some(d), None) => Ok((d, self.attach_loop(&self.meta_file())?)),
            (None, Some(m)) => Ok((self.attach_loop(&self.data_file())?, m)),
            (None, None) => self.attach_loops(),
        }
    }

    /// The loop devices the pool is made of, read from its table (`meta data ...`): the
    /// pool holds what was attached for it, so nothing is searched for by file.
    fn pool_loops(&self) -> Vec<(&'static str, PathBuf)> {
        let Ok((_, _, params)) = dm::table(&self.dm, &self.state.pool) else { return Vec::new() };
        let mut it = params.split_whitespace();
        let (Some(meta), Some(data)) = (it.next(), it.next()) else { return Vec::new() };
        [("metadata", meta), ("data", data)]
            .into_iter()
            .filter_map(|(k, mm)| {
                let (maj, min) = mm.split_once(':')?;
                // /sys/dev/block/M:m links to the device's sysfs directory, named as in /dev.
                let link = std::fs::read_link(format!("/sys/dev/block/{maj}:{min}")).ok()?;
                let name = link.file_name()?.to_string_lossy().into_owned();
                name.starts_with("loop").then(|| (k, Path::new("/dev").join(name)))
            })
            .collect()
    }

    fn pool_table(&self, data_loop: &Path, meta_loop: &Path) -> Result<(Sectors, ThinPoolTargetParams)> {
        let data = dm::device_of(data_loop).ctx(NAME, None, || format!("stat {}", data_loop.display()))?;
        let meta = dm::device_of(meta_loop).ctx(NAME, None, || format!("stat {}", meta_loop.display()))?;
        let sectors = self.opts.data_size / SECTOR / BLOCK_SECTORS * BLOCK_SECTORS;
        let blocks = sectors / BLOCK_SECTORS;
        let lwm = LOW_WATER_BLOCKS.min(blocks / 10).max(1);
        // Docker's table, plus error_if_no_space so a full pool fails writes instead of
        // queueing them forever.
        let features = vec!["skip_block_zeroing".to_string(), "error_if_no_space".to_string()];
        Ok((Sectors(sectors), ThinPoolTargetParams::new(meta, data, Sectors(BLOCK_SECTORS), DataBlocks(lwm), features)))
    }

    /// The pool's metadata device (the first device of its table), as a /dev node.
    fn metadata_device(&self) -> Result<PathBuf> {
        let (_, _, params) = dm::table(&self.dm, &self.state.pool).map_err(|e| dmerr(None, format!("table of {}", self.state.pool), e))?;
        let mm = params.split_whitespace().next().unwrap_or_default().to_string();
        let link = std::fs::read_link(format!("/sys/dev/block/{mm}")).ctx(NAME, None, || format!("metadata device {mm} of {}", self.state.pool))?;
        Ok(Path::new("/dev").join(link.file_name().unwrap_or_default()))
    }

    /// Thin block → data block of layer `info`'s thin device, from a metadata snapshot of the
    /// live pool (see [`thinmap`]), released again whatever happened.
    fn thin_map(&self, info: &LayerInfo) -> Result<std::collections::BTreeMap<u64, u64>> {
        let key = Some(info.key.as_str());
        let meta = self.metadata_device()?;
        dm::message(&self.dm, &self.state.pool, PoolMessage::ReserveMetadataSnap)
            .map_err(|e| dmerr(key, format!("reserve a metadata snapshot of {}", self.state.pool), e))?;
        let id = self.thin_id(info).to_string();
        let dumped = crate::sys::cmd::run(
            NAME,
            "thin_dump",
            &["-m", "--dev-id", &id, &meta.to_string_lossy()],
            std::time::Duration::from_secs(60),
        );
        let released = dm::message(&self.dm, &self.state.pool, PoolMessage::ReleaseMetadataSnap)
            .map_err(|e| dmerr(key, format!("release the metadata snapshot of {}", self.state.pool), e));
        let out = dumped?;
        released?;
        thinmap::parse_thin_dump(&out.stdout).map_err(|why| Error::invalid(NAME, &info.key, format!("thin_dump --dev-id {id}: {why}")))
    }

    /// `v` as a thin id of the pool, or an error naming the layer.
    fn checked_thin_id(&self, v: u64, key: Option<&str>) -> Result<ThinDevId> {
        dm::thin_id(v).map_err(|e| dmerr(key, format!("thin id {v}"), e))
    }

    /// A fresh pool (or the user's pool) and a freshly formatted base device.
    fn create_pool(&mut self) -> Result<()> {
        match self.opts.thinpool.clone() {
            Some(pool) => {
                if dm::exists(&self.dm, &pool).ctx(NAME, None, || "list devices".into())?.is_none() {
                    return Err(Error::config(NAME, format!("thinpool /dev/mapper/{pool} does not exist")));
                }
                let (_, target, _) = dm::table(&self.dm, &pool).ctx(NAME, None, || format!("table of {pool}"))?;
                if target != "thin-pool" {
                    return Err(Error::config(NAME, format!("/dev/mapper/{pool} is a {target} device, not a thin-pool")));
                }
                self.state.pool = pool;
                self.state.owned = false;
                // Thin ids in a shared pool: start at a place derived from the root, move on
                // while taken. Layers use the ids right above the base's.
                let seed = u64::from_str_radix(&self.prefix[self.prefix.len() - 6..], 16).unwrap_or(0);
                let mut id = (1 << 20) + (seed % (1 << 22));
                loop {
                    match dm::message(&self.dm, &self.state.pool, PoolMessage::CreateThin(self.checked_thin_id(id, None)?)) {
                        Ok(()) => break,
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) && id < (1 << 24) - (1 << 16) => id += 1 << 12,
                        Err(e) => return Err(dmerr(None, format!("create_thin {id} in {}", self.state.pool), e)),
                    }
                }
                self.state.base_thin_id = id;
            }
            None => {
                // Whatever an interrupted setup left behind goes first: a fresh pool needs a
                // zeroed metadata device.
                let pool = self.pool_name();
                self.state.pool = pool.clone();
                self.state.owned = true;
                self.deactivate_all();
                let _ = dm::remove(&self.dm, &pool);
                for f in [self.data_file(), self.meta_file()] {
                    if f.exists() {
                        let _ = loopdev::detach_all_of(&f);
                    }
                    let _ = std::fs::remove_file(&f);
                }
                loopdev::create_sparse(&self.data_file(), self.opts.data_size).ctx(NAME, None, || "create data file".into())?;
                loopdev::create_sparse(&self.meta_file(), self.opts.metadata_size).ctx(NAME, None, || "create metadata file".into())?;
                let (data_loop, meta_loop) = self.attach_loops()?;
                let (sectors, params) = self.pool_table(&data_loop, &meta_loop)?;
                self.record_dm(&pool, "thin pool", None)?;
                if let Err(e) = dm::create(&self.dm, &pool, sectors, &params, false) {
                    let _ = loopdev::detach(&data_loop);
                    let _ = loopdev::detach(&meta_loop);
                    let _ = self.ledger.forget(ResourceKind::Dm, &pool);
                    self.forget_loops();
                    return Err(dmerr(None, format!("create thin pool {pool} ({params})"), e));
                }
                self.state.base_thin_id = 0;
                dm::message(&self.dm, &pool, PoolMessage::CreateThin(self.checked_thin_id(0, None)?))
                    .ctx(NAME, None, || "create base thin device".into())?;
            }
        }
        self.state.base_sectors = self.opts.base_size / SECTOR;
        self.state.fs = self.opts.fs;
        self.state.block_sectors = BLOCK_SECTORS;
        if let Err(e) = self.format_base() {
            let _ = dm::remove(&self.dm, &self.base_name());
            if let Ok(id) = dm::thin_id(self.state.base_thin_id) {
                let _ = dm::message(&self.dm, &self.state.pool, PoolMessage::Delete(id));
            }
            if self.state.owned && dm::remove(&self.dm, &self.state.pool).is_ok() {
                let _ = self.ledger.forget(ResourceKind::Dm, &self.state.pool);
            }
            return Err(e);
        }
        self.save_state()
    }

    fn format_base(&self) -> Result<()> {
        let name = self.base_name();
        let node = self.activate(&name, self.state.base_thin_id, None)?;
        let (tool, args): (&str, Vec<&str>) = match self.state.fs {
            // Docker's flags: no discard of the whole (already empty) device, inode tables and
            // journal written now rather than by a background thread in every snapshot.
            Fs::Ext4 => ("mkfs.ext4", vec!["-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"]),
            Fs::Xfs => ("mkfs.xfs", vec!["-q", "-f", "-K"]),
        };
        let bin = hostinfo::which(tool).ok_or_else(|| Error::config(NAME, format!("fs={} needs {tool}", self.state.fs.name())))?;
        let out = crate::sys::child::die_with_caller(&mut std::process::Command::new(&bin)).args(&args).arg(&node).output().ctx(NAME, None, || format!("run {tool}"));
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.remove_dm(&name);
                return Err(e);
            }
        };
        if !out.status.success() {
            self.remove_dm(&name);
            return Err(Error::Command {
                driver: NAME.into(),
                command: format!("{tool} {} {}", args.join(" "), node.display()),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        // An empty layer is empty: mke2fs's lost+found goes (e2fsck makes it again if it
        // ever needs it), as every other backend starts from an empty directory.
        let r = if self.state.fs == Fs::Ext4 { self.remove_lost_found(&node) } else { Ok(()) };
        self.remove_dm(&name);
        r
    }

    fn remove_lost_found(&self, node: &Path) -> Result<()> {
        let dir = self.root.join("mnt").join("base");
        std::fs::create_dir_all(&dir).ctx(NAME, None, || format!("create {}", dir.display()))?;
        let id = mount_id(&dir);
        self.ledger.record(ResourceKind::Mount, &id, "devicemapper base").ctx(NAME, None, || format!("record the mount on {id} in the ledger"))?;
        if let Err(e) = mounts::mount(&node.to_string_lossy(), &dir, "ext4", MsFlags::empty(), None) {
            let _ = self.ledger.forget(ResourceKind::Mount, &id);
            return Err(dmerr(None, format!("mount base {} at {}", node.display(), dir.display()), e));
        }
        let r = std::fs::remove_dir(dir.join("lost+found")).ctx(NAME, None, || "remove lost+found from the base".into());
        let u = mounts::unmount(&dir).ctx(NAME, None, || format!("unmount {}", dir.display()));
        if u.is_ok() {
            let _ = self.ledger.forget(ResourceKind::Mount, &id);
        }
        let _ = std::fs::remove_dir(&dir);
        r.and(u)
    }

    /// After a crash or from a second process: find the pool again (or rebuild its device
    /// from the files, as after a reboot).
    fn adopt(&mut self) -> Result<()> {
        if self.opts.thinpool.as_deref().is_some_and(|p| p != self.state.pool) {
            return Err(Error::config(
                NAME,
                format!("this root uses pool {}, not {}", self.state.pool, self.opts.thinpool.as_deref().unwrap_or_default()),
            ));
        }
        let exists = dm::exists(&self.dm, &self.state.pool).ctx(NAME, None, || "list devices".into())?.is_some();
        if exists {
            return Ok(());
        }
        if !self.state.owned {
            return Err(Error::config(NAME, format!("thinpool /dev/mapper/{} is gone", self.state.pool)));
        }
        if !self.data_file().exists() || !self.meta_file().exists() {
            return Err(Error::Metadata {
                driver: NAME.into(),
                path: self.root.join("pool.json"),
                message: "pool files are missing; remove the root to start over".into(),
            });
        }
        let (data_loop, meta_loop) = self.adopt_loops()?;
        let (sectors, params) = self.pool_table(&data_loop, &meta_loop)?;
        self.record_dm(&self.state.pool, "thin pool", None)?;
        if let Err(e) = dm::create(&self.dm, &self.state.pool, sectors, &params, false) {
            let _ = self.ledger.forget(ResourceKind::Dm, &self.state.pool);
            return Err(dmerr(None, format!("set up thin pool {} again", self.state.pool), e));
        }
        Ok(())
    }

    /// Thin devices of this root that are active but not in use (a process died between
    /// activating and deactivating) are deactivated; the thin data stays in the pool.
    fn remove_stale(&self) {
        let Ok(devs) = dm::list(&self.dm) else { return };
        for (n, _) in devs {
            if n.starts_with(&format!("{}-", self.prefix)) && n != self.state.pool && !self.in_use(&n) {
                self.remove_dm(&n);
            }
        }
    }

    fn deactivate_all(&self) {
        if let Ok(devs) = dm::list(&self.dm) {
            for (n, _) in devs {
                if n.starts_with(&format!("{}-", self.prefix)) && n != self.pool_name() && n != self.state.pool {
                    self.remove_dm(&n);
                }
            }
        }
    }

    fn in_use(&self, name: &str) -> bool {
        use devicemapper::{DevId, DmName};
        match DmName::new(name) {
            Ok(nm) => self.dm.device_info(&DevId::Name(nm)).map(|i| i.open_count() > 0).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Activate thin device `thin_id` as `name` (if not active) and return its node.
    fn activate(&self, name: &str, thin_id: u64, key: Option<&str>) -> Result<PathBuf> {
        let dev = match dm::exists(&self.dm, name).ctx(NAME, key, || "list devices".into())? {
            Some(d) => d,
            None => {
                let pool = dm::exists(&self.dm, &self.state.pool)
                    .ctx(NAME, key, || "list devices".into())?
                    .ok_or_else(|| Error::unavailable(NAME, format!("thin pool {} is not active", self.state.pool)))?;
                self.record_dm(name, "thin device", key)?;
                let params = ThinTargetParams::new(pool, self.checked_thin_id(thin_id, key)?, None);
                match dm::create(&self.dm, name, Sectors(self.state.base_sectors), &params, false) {
                    Ok(d) => d,
                    // activated by another thread or process in the meantime
                    Err(e) => match dm::exists(&self.dm, name) {
                        Ok(Some(d)) => d,
                        _ => {
                            let _ = self.ledger.forget(ResourceKind::Dm, name);
                            return Err(dmerr(key, format!("activate thin device {thin_id} as {name}"), e));
                        }
                    },
                }
            }
        };
        dm::ensure_node(name, dev).map_err(|e| dmerr(key, format!("create {}", dm::node(name).display()), e))
    }

    fn deactivate_if_unused(&self, name: &str) {
        if !self.in_use(name) {
            match dm::remove(&self.dm, name) {
                Ok(_) => {
                    let _ = self.ledger.forget(ResourceKind::Dm, name);
                }
                Err(e) => log::warn!("{NAME}: deactivate {name}: {e}"),
            }
        }
    }

    /// Record dm device `name` in the ledger before it is created.
    fn record_dm(&self, name: &str, what: &str, key: Option<&str>) -> Result<()> {
        self.ledger
            .record(ResourceKind::Dm, name, &format!("{NAME} {what}"))
            .ctx(NAME, key, || format!("record dm device {name} in the ledger"))
    }

    /// Remove dm device `name` (errors ignored, as by the callers) and forget it once gone.
    fn remove_dm(&self, name: &str) {
        if dm::remove(&self.dm, name).is_ok() {
            let _ = self.ledger.forget(ResourceKind::Dm, name);
        }
    }

    /// The pool files' loop devices are gone (detached, or never attached).
    fn forget_loops(&self) {
        for f in [self.data_file(), self.meta_file()] {
            if loopdev::find_by_file(&f).map(|v| v.is_empty()).unwrap_or(false) {
                let _ = self.ledger.forget(ResourceKind::Loop, &f.display().to_string());
            }
        }
    }

    fn pool_status(&self) -> Result<(ThinPoolStatus, String)> {
        dm::pool_status(&self.dm, &self.state.pool).ctx(NAME, None, || format!("status of {}", self.state.pool))
    }

    /// Docker's minimum free space guard: no new thin device when less than
    /// `min_free_space` percent of the pool's data or metadata is free.
    fn check_free(&self, key: &str) -> Result<()> {
        let (st, line) = self.pool_status()?;
        let ThinPoolStatus::Working(w) = st else {
            return Err(Error::NoSpace { driver: NAME.into(), key: key.into(), detail: format!("thin pool failed: {line}") });
        };
        if w.summary == ThinPoolStatusSummary::OutOfSpace {
            return Err(Error::NoSpace { driver: NAME.into(), key: key.into(), detail: "thin pool is out of data space".into() });
        }
        let u = &w.usage;
        let pct = self.opts.min_free_pct;
        let (used_d, total_d) = (*u.used_data, *u.total_data);
        let (used_m, total_m) = (*u.used_meta, *u.total_meta);
        if (total_d - used_d) * 100 < total_d * pct {
            return Err(Error::NoSpace {
                driver: NAME.into(),
                key: key.into(),
                detail: format!(
                    "thin pool data has {} of {} blocks free, below the {pct}% minimum free space",
                    total_d - used_d,
                    total_d
                ),
            });
        }
        if (total_m - used_m) * 100 < total_m * pct {
            return Err(Error::NoSpace {
                driver: NAME.into(),
                key: key.into(),
                detail: format!("thin pool metadata has {} of {} blocks free, below the {pct}% minimum", total_m - used_m, total_m),
            });
        }
        Ok(())
    }

    /// An error from writing into a layer: out of space when the pool says so.
    fn classify(&self, key: &str, e: Error) -> Error {
        if matches!(e, Error::NoSpace { .. }) {
            return e;
        }
        if let Ok((ThinPoolStatus::Working(w), _)) = self.pool_status() {
            let full = w.summary == ThinPoolStatusSummary::OutOfSpace || *w.usage.used_data >= *w.usage.total_data;
            if full {
                return Error::NoSpace { driver: NAME.into(), key: key.into(), detail: format!("thin pool is full ({e})") };
            }
        }
        e
    }

    /// `create_snap new origin`, the origin suspended while it is active (its filesystem is
    /// frozen for that moment, so the snapshot is consistent).
    fn snapshot(&self, key: &str, new_id: u64, origin_id: u64, origin_name: &str) -> Result<()> {
        let active = dm::exists(&self.dm, origin_name).ctx(NAME, Some(key), || "list devices".into())?.is_some();
        if active {
            dm::suspend(&self.dm, origin_name).map_err(|e| dmerr(Some(key), format!("suspend {origin_name}"), e))?;
        }
        let snap = PoolMessage::CreateSnap { new: self.checked_thin_id(new_id, Some(key))?, origin: self.checked_thin_id(origin_id, Some(key))? };
        let mut r = dm::message(&self.dm, &self.state.pool, snap);
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EEXIST)) {
            // A thin id left by a process that died before recording its layer: reuse the id.
            let _ = dm::message(&self.dm, &self.state.pool, PoolMessage::Delete(self.checked_thin_id(new_id, Some(key))?));
            r = dm::message(&self.dm, &self.state.pool, snap);
        }
        if active {
            let _ = dm::resume(&self.dm, origin_name);
        }
        r.map_err(|e| dmerr(Some(key), format!("create_snap {new_id} {origin_id}"), e))
    }


    fn mount_flags(&self, writable: bool) -> (MsFlags, String) {
        let mut data = Vec::new();
        if self.opts.discard {
            data.push("discard");
        }
        if self.state.fs == Fs::Xfs {
            // every snapshot carries the base's filesystem UUID
            data.push("nouuid");
        }
        let flags = if writable { MsFlags::empty() } else { MsFlags::MS_RDONLY };
        (flags, data.join(","))
    }

    /// Activate layer `info`'s thin device and mount its filesystem at `target`; returns the
    /// device name. The caller has recorded the mount in the ledger.
    fn mount_device(&self, info: &LayerInfo, writable: bool, target: &Path) -> Result<String> {
        let name = self.thin_name(info);
        let node = self.activate(&name, self.thin_id(info), Some(&info.key))?;
        let (flags, data) = self.mount_flags(writable);
        let fs = self.state.fs.name();
        let r = mounts::mount(&node.to_string_lossy(), target, fs, flags, Some(&data).filter(|d| !d.is_empty()).map(|d| d.as_str()))
            .map_err(|e| dmerr(Some(&info.key), format!("mount {} ({fs}) at {}", node.display(), target.display()), e));
        if let Err(e) = r {
            self.deactivate_if_unused(&name);
            return Err(e);
        }
        Ok(name)
    }

    /// Run `f` on layer `info` mounted at its own mountpoint (`mnt/<id>`), reusing a mount
    /// that is already there.
    fn with_own_mount<T>(&self, info: &LayerInfo, writable: bool, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let dir = self.mnt_dir(info);
        // The device may already be mounted elsewhere, e.g. as a running container's rootfs. A
        // second mount of the same ext4/xfs device with other flags fails with EBUSY, so read
        // (or write) through the mount that is there.
        let ours = self.own_mounts.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&info.id);
        if !ours && !mounts::is_mountpoint(&dir) {
            if let Some(existing) = self.existing_mount(info, writable) {
                return f(&existing);
            }
        }
        {
            let mut users = self.own_mounts.lock().unwrap_or_else(|p| p.into_inner());
            match users.get_mut(&info.id) {
                Some(u) => u.0 += 1,
                None => {
                    std::fs::create_dir_all(&dir).ctx(NAME, Some(&info.key), || format!("create {}", dir.display()))?;
                    // Mounted there by another process: use it, leave it.
                    let name = if mounts::is_mountpoint(&dir) {
                        None
                    } else {
                        let mut name = None;
                        self.ledger.tracked_mount(NAME, &info.key, &dir, || {
                            name = Some(self.mount_device(info, writable, &dir)?);
                            Ok(())
                        })?;
                        name
                    };
                    users.insert(info.id, (1, name));
                }
            }
        }
        let out = f(&dir);
        let mut users = self.own_mounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = users.get_mut(&info.id) {
            u.0 -= 1;
            if u.0 == 0 {
                if let Some((_, Some(name))) = users.remove(&info.id) {
                    match mounts::unmount(&dir) {
                        Ok(()) => {
                            let _ = self.ledger.forget(ResourceKind::Mount, &mount_id(&dir));
                        }
                        Err(e) => log::warn!("{NAME}: unmount {}: {e}", dir.display()),
                    }
                    self.deactivate_if_unused(&name);
                }
            }
        }
        out
    }

    /// A mount of layer `info`'s whole filesystem somewhere on the host (writable if asked).
    fn existing_mount(&self, info: &LayerInfo, writable: bool) -> Option<PathBuf> {
        let suffix = format!("/{}", self.thin_name(info));
        mounts::mounts()
            .ok()?
            .into_iter()
            .find(|m| m.source.ends_with(&suffix) && m.root == "/" && (!writable || !m.options.split(',').any(|o| o == "ro")))
            .map(|m| m.target)
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        let h = Sha256::digest(target.as_os_str().as_encoded_bytes());
        self.root.join("mounts").join(format!("{}.json", &hex::encode(h)[..16]))
    }

    fn records(&self) -> Vec<(PathBuf, MountRecord)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("mounts")) {
            for e in rd.flatten() {
                if let Some(r) = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                    out.push((e.path(), r));
                }
            }
        }
        out
    }

    /// Bytes and inodes of what this layer changed: the files added or modified relative to
    /// its parent (their allocated blocks), found by comparing the two mounted snapshots.
    /// The pool's own counters cannot say it: a thin device's mapped blocks include those it
    /// shares with its origin, and an overwrite remaps a block without changing the count.
    fn layer_usage(&self, chain: &[LayerInfo]) -> Result<Usage> {
        use std::os::unix::fs::MetadataExt;
        let key = chain[0].key.as_str();
        let sum = |upper: &Path, changes: Vec<Change>| -> Usage {
            let mut u = Usage::default();
            for c in changes.into_iter().filter(|c| c.kind != crate::driver::ChangeKind::Deleted) {
                if let Ok(m) = std::fs::symlink_metadata(upper.join(&c.path)) {
                    u.inodes += 1;
                    if !m.is_dir() {
                        u.bytes += m.blocks() * 512;
                    }
                }
            }
            u
        };
        self.with_own_mount(&chain[0], false, |upper| {
            let changes = match chain.get(1) {
                Some(p) => self.with_own_mount(p, false, |lower| {
                    archive::changes(NAME, key, &DiffSource::Compare { lower: Some(lower), upper })
                })?,
                None => archive::changes(NAME, key, &DiffSource::Compare { lower: None, upper })?,
            };
            Ok(sum(upper, changes))
        })
    }
}

/// One `open` at a time per root sets up or adopts the pool.
struct SetupLock(std::fs::File);

impl SetupLock {
    fn take(root: &Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let p = root.join("pool.lock");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).ctx(NAME, None, || format!("open {}", p.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(NAME, None, "flock pool.lock", std::io::Error::last_os_error()));
        }
        Ok(SetupLock(f))
    }
}

impl Drop for SetupLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: plain flock on a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Thin ids of pre-apply checkpoints: the layer's thin id in the upper half of the 24-bit thin
/// id space, which layer ids do not reach.
const CHECKPOINT_ID_OFFSET: u64 = 1 << 23;

/// A thin snapshot of an active layer taken before an apply. A failed apply deletes the
/// layer's thin device (which gives its blocks back to the pool) and snapshots the checkpoint
/// back under the layer's thin id; a good one deletes the checkpoint.
struct ThinCheckpoint<'a> {
    d: &'a DeviceMapper,
    info: &'a LayerInfo,
    id: u64,
}

impl<'a> ThinCheckpoint<'a> {
    fn take(d: &'a DeviceMapper, info: &'a LayerInfo) -> Result<Self> {
        let id = d.thin_id(info) + CHECKPOINT_ID_OFFSET;
        // Not `snapshot`'s reuse of a taken id: in a thin pool the user named, that id may be
        // someone else's device.
        let name = d.thin_name(info);
        let active = dm::exists(&d.dm, &name).ctx(NAME, Some(&info.key), || "list devices".into())?.is_some();
        if active {
            dm::suspend(&d.dm, &name).map_err(|e| dmerr(Some(&info.key), format!("suspend {name}"), e))?;
        }
        let snap = PoolMessage::CreateSnap {
            new: d.checked_thin_id(id, Some(&info.key))?,
            origin: d.checked_thin_id(d.thin_id(info), Some(&info.key))?,
        };
        let r = dm::message(&d.dm, &d.state.pool, snap);
        if active {
            let _ = dm::resume(&d.dm, &name);
        }
        r.map_err(|e| dmerr(Some(&info.key), format!("checkpoint before apply: create_snap {id} {}", d.thin_id(info)), e))?;
        Ok(ThinCheckpoint { d, info, id })
    }
}

impl crate::rollback::Checkpoint for ThinCheckpoint<'_> {
    fn restore(self) -> Result<()> {
        let (d, key) = (self.d, Some(self.info.key.as_str()));
        let (name, thin) = (d.thin_name(self.info), d.thin_id(self.info));
        if d.in_use(&name) {
            return Err(Error::invalid(NAME, &self.info.key, format!("is in use (mounted): {}", dm::node(&name).display())));
        }
        if dm::exists(&d.dm, &name).ctx(NAME, key, || "list devices".into())?.is_some() {
            dm::remove(&d.dm, &name).map_err(|e| dmerr(key, format!("deactivate {name}"), e))?;
            let _ = d.ledger.forget(ResourceKind::Dm, &name);
        }
        dm::message(&d.dm, &d.state.pool, PoolMessage::Delete(d.checked_thin_id(thin, key)?))
            .map_err(|e| dmerr(key, format!("delete thin device {thin}"), e))?;
        // The checkpoint was never activated: nothing to suspend.
        d.snapshot(&self.info.key, thin, self.id, &format!("{}-{}", d.prefix, self.id))?;
        self.discard()
    }

    fn discard(self) -> Result<()> {
        dm::message(&self.d.dm, &self.d.state.pool, PoolMessage::Delete(self.d.checked_thin_id(self.id, Some(&self.info.key))?))
            .map_err(|e| dmerr(Some(&self.info.key), format!("delete checkpoint thin device {}", self.id), e))
    }
}

impl DeviceMapper {
    /// Apply into the layer's filesystem, mounted for the purpose.
    fn apply_mounted(&self, info: &LayerInfo, tar: &mut dyn Read) -> Result<ApplyStats> {
        let key = info.key.as_str();
        let r = self.with_own_mount(info, true, |dir| {
            let stats = archive::apply(NAME, key, tar, dir, Whiteouts::Delete)?;
            // Data on the device before the mount goes away (syncfs of this filesystem), so a
            // full pool is reported here rather than lost at unmount.
            let f = std::fs::File::open(dir).ctx(NAME, Some(key), || "open layer root".into())?;
            // SAFETY: syncfs on a descriptor we own.
            if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
                return Err(Error::io(NAME, Some(key), "sync layer", std::io::Error::last_os_error()));
            }
            Ok(stats)
        });
        r.map_err(|e| self.classify(key, e))
    }
}

impl Backend for DeviceMapper {
    fn name(&self) -> &'static str {
        NAME
    }

    fn implementation(&self) -> Implementation {
        self.imp.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            // Every layer is bounded by base_size, but no per-layer limit can be set.
            quota: false,
            block_level_cow: true,
            shared_page_cache: false, // each thin device has its own page cache
            shares_layers: true,
            max_depth: None,
            stand_in: false,
            loop_backed: self.state.owned,
            discard: self.opts.discard,
            o_direct: true,
            native_fs_layer: false,
            own_read_cache: false,
            deferred_free: false,
        }
    }

    fn create(&self, chain: &[LayerInfo]) -> Result<()> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        self.check_free(key)?;
        let (origin_id, origin_name) = match chain.get(1) {
            Some(p) => (self.thin_id(p), self.thin_name(p)),
            None => (self.state.base_thin_id, self.base_name()),
        };
        self.snapshot(key, self.thin_id(info), origin_id, &origin_name)
    }

    fn freeze(&self, _active: &LayerInfo, _committed: &LayerInfo) -> Result<()> {
        // The thin device keeps its id; it is simply never mounted writable again.
        Ok(())
    }

    fn mount(&self, chain: &[LayerInfo], target: &Path) -> Result<()> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        let target = std::fs::canonicalize(target).ctx(NAME, Some(key), || format!("mount target {}", target.display()))?;
        let device = self.mount_device(info, info.kind == Kind::Active, &target)?;
        let rec = MountRecord { target: target.clone(), key: key.into(), device };
        let p = self.record_path(&target);
        if let Err(e) = serde_json::to_vec(&rec).map_err(std::io::Error::other).and_then(|b| std::fs::write(&p, b)) {
            let _ = mounts::unmount(&target);
            self.deactivate_if_unused(&rec.device);
            return Err(dmerr(Some(key), format!("record mount in {}", p.display()), e));
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        let p = self.record_path(&target);
        let rec: Option<MountRecord> = std::fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok());
        mounts::unmount(&target).ctx(NAME, rec.as_ref().map(|r| r.key.as_str()), || format!("unmount {}", target.display()))?;
        if let Some(rec) = rec {
            self.deactivate_if_unused(&rec.device);
            let _ = std::fs::remove_file(&p);
        }
        Ok(())
    }

    fn destroy(&self, info: &LayerInfo) -> Result<()> {
        let key = info.key.as_str();
        let name = self.thin_name(info);
        // Mounted by any process (the device is open): the pool would refuse to delete it.
        if self.in_use(&name) {
            return Err(Error::invalid(NAME, key, format!("is in use (mounted): {}", dm::node(&name).display())));
        }
        if self.opts.discard {
            // Return the blocks to the loop file before the pool forgets the device.
            let node = self.activate(&name, self.thin_id(info), Some(key))?;
            dm::discard_all(&node).map_err(|e| dmerr(Some(key), format!("discard {}", node.display()), e))?;
        }
        dm::remove(&self.dm, &name).map_err(|e| dmerr(Some(key), format!("deactivate {name}"), e))?;
        dm::message(&self.dm, &self.state.pool, PoolMessage::Delete(self.checked_thin_id(self.thin_id(info), Some(key))?))
            .map_err(|e| dmerr(Some(key), format!("delete thin device {}", self.thin_id(info)), e))?;
        let _ = std::fs::remove_dir(self.mnt_dir(info));
        Ok(())
    }

    fn apply(&self, chain: &[LayerInfo], tar: &mut dyn Read) -> Result<ApplyStats> {
        let info = &chain[0];
        let cp = ThinCheckpoint::take(self, info)?;
        crate::rollback::apply_atomically(NAME, &info.key, cp, || self.apply_mounted(info, tar))
    }

    fn diff_source(&self, chain: &[LayerInfo], f: &mut dyn FnMut(&DiffSource) -> Result<()>) -> Result<()> {
        self.with_own_mount(&chain[0], false, |upper| match chain.get(1) {
            Some(p) => self.with_own_mount(p, false, |lower| f(&DiffSource::Compare { lower: Some(lower), upper })),
            None => f(&DiffSource::Compare { lower: None, upper }),
        })
    }

    fn usage(&self, chain: &[LayerInfo]) -> Result<Usage> {
        self.layer_usage(chain)
    }

    fn file_extents(&self, chain: &[LayerInfo], path: &Path) -> Result<crate::extents::FileExtents> {
        let (info, key) = (&chain[0], chain[0].key.as_str());
        let fs_pieces = crate::extents::fiemap_pieces(path).ctx(NAME, Some(key), || format!("FIEMAP of {}", path.display()))?;
        let map = self.thin_map(info)?;
        let block_bytes = self.state.block_sectors * SECTOR;
        let placed = thinmap::through_map(&fs_pieces, &map, block_bytes).map_err(|why| Error::invalid(NAME, key, why))?;
        Ok(crate::extents::FileExtents::of(&placed, crate::extents::ExtentMethod::FiemapThinMap))
    }

    fn status(&self) -> Result<Status> {
        let mut s = Status::new(self.imp.to_string(), 0);
        let pool_dev = PathBuf::from(format!("/dev/mapper/{}", self.state.pool));
        s.discard = Some(self.opts.discard);
        s.fact("pool", pool_dev.display());
        s.fact("block_size_bytes", self.state.block_sectors * SECTOR);
        s.fact("base_size_bytes", self.state.base_sectors * SECTOR);
        s.fact("fs", self.state.fs.name());
        s.fact("min_free_space_pct", self.opts.min_free_pct);
        s.fact("device_prefix", &self.prefix);
        let (st, line) = self.pool_status()?;
        s.fact("pool_status", line);
        if let ThinPoolStatus::Working(w) = st {
            let bs = self.state.block_sectors * SECTOR;
            let pool = PoolUsage {
                data_used_bytes: *w.usage.used_data * bs,
                data_total_bytes: *w.usage.total_data * bs,
                // thin-pool metadata blocks are 4 KiB
                metadata_used_bytes: *w.usage.used_meta * 4096,
                metadata_total_bytes: *w.usage.total_meta * 4096,
            };
            s.space = Some(SpaceUsage {
                used_bytes: pool.data_used_bytes,
                total_bytes: pool.data_total_bytes,
                source: SpaceSource::ThinPoolData,
            });
            s.pool = Some(pool);
            s.fact(
                "pool_mode",
                match w.summary {
                    ThinPoolStatusSummary::Good => "rw",
                    ThinPoolStatusSummary::ReadOnly => "ro",
                    ThinPoolStatusSummary::OutOfSpace => "out_of_data_space",
                },
            );
        }
        s.backing = Some(if self.state.owned {
            // The data file is what grows with the layers; the metadata file is a fact.
            let mut b = Backing::new(BackingKind::LoopFile, self.data_file()).with_file_sizes();
            let loops = self.pool_loops();
            b.loop_direct_io = loops.iter().find(|(k, _)| *k == "data").and_then(|(_, d)| loopdev::direct_io(d).ok());
            b.loop_devices = loops.into_iter().map(|(_, d)| d).collect();
            let meta = self.meta_file();
            s.fact("metadata_file", meta.display());
            s.fact("metadata_file_allocated_bytes", allocated_bytes(&meta));
            b
        } else {
            Backing::new(BackingKind::ExistingPool, pool_dev)
        });
        let active = dm::list(&self.dm)
            .map(|v| v.iter().filter(|(n, _)| n.starts_with(&format!("{}-", self.prefix)) && *n != self.state.pool).count())
            .unwrap_or(0);
        s.fact("active_thin_devices", active);
        Ok(s)
    }

    fn teardown(&self, layers: &[LayerInfo]) -> Result<()> {
        for (p, r) in self.records() {
            if mounts::unmount(&r.target).is_ok() || !mounts::is_mountpoint(&r.target) {
                let _ = self.ledger.forget(ResourceKind::Mount, &mount_id(&r.target));
            }
            let _ = std::fs::remove_file(p);
        }
        let own: Vec<PathBuf> = mounts::mounts_under(&self.root.join("mnt")).unwrap_or_default().into_iter().map(|m| m.target).collect();
        mounts::unmount_all_under(&self.root.join("mnt")).ctx(NAME, None, || "unmount layer mountpoints".into())?;
        for t in own {
            let _ = self.ledger.forget(ResourceKind::Mount, &mount_id(&t));
        }
        self.deactivate_all();
        let mut first_err = None;
        if self.state.owned {
            let loops = self.pool_loops();
            match dm::remove(&self.dm, &self.state.pool) {
                Ok(_) => {
                    let _ = self.ledger.forget(ResourceKind::Dm, &self.state.pool);
                }
                Err(e) => {
                    first_err.get_or_insert(dmerr(None, format!("remove pool {}", self.state.pool), e));
                }
            }
            // The pool's own devices, then any other over the files (attached by a process
            // that died before the pool was made). Each only while it still has our file.
            for (k, d) in loops {
                let f = if k == "data" { self.data_file() } else { self.meta_file() };
                if !f.exists() {
                    continue;
                }
                if let Err(e) = loopdev::detach_if_backed_by(&d, &f) {
                    first_err.get_or_insert(dmerr(None, format!("detach {}", d.display()), e));
                }
            }
            for f in [self.data_file(), self.meta_file()] {
                if f.exists() {
                    if let Err(e) = loopdev::detach_all_of(&f) {
                        first_err.get_or_insert(dmerr(None, format!("detach the loop devices of {}", f.display()), e));
                    }
                }
            }
            self.forget_loops();
            for f in [self.data_file(), self.meta_file()] {
                let _ = std::fs::remove_file(&f);
            }
        } else {
            // The user's pool stays; only the thin devices made here go.
            let mut ids: Vec<u64> = layers.iter().map(|l| self.thin_id(l)).collect();
            ids.push(self.state.base_thin_id);
            for id in ids {
                if let Err(e) = dm::message(&self.dm, &self.state.pool, PoolMessage::Delete(self.checked_thin_id(id, None)?)) {
                    if e.raw_os_error() != Some(libc::ENODATA) {
                        first_err.get_or_insert(dmerr(None, format!("delete thin device {id}"), e));
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let _ = std::fs::remove_file(self.root.join("pool.json"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Labels;
    use std::io::Write;

    #[test]
    fn options() {
        let o = parse_opts(&DriverConfig::new("/r")).unwrap();
        assert_eq!((o.data_size, o.metadata_size, o.base_size), (8 << 30, 256 << 20, 10 << 30));
        assert!(o.discard && o.fs == Fs::Ext4 && o.min_free_pct == 10 && o.thinpool.is_none());
        let o = parse_opts(
            &DriverConfig::new("/r")
                .with_option("thinpool", "/dev/mapper/docker-pool")
                .with_option("discard", "false")
                .with_option("fs", "xfs"),
        )
        .unwrap();
        assert_eq!(o.thinpool.as_deref(), Some("docker-pool"));
        assert!(!o.discard && o.fs == Fs::Xfs);
        assert!(matches!(parse_opts(&DriverConfig::new("/r").with_option("bogus", "1")), Err(Error::Config { .. })));
        assert!(matches!(parse_opts(&DriverConfig::new("/r").with_option("base_size", "1000")), Err(Error::Config { .. })));
    }

    use crate::conformance::fixture;
    use crate::driver::MountGuard;

    /// A typed figure of the status, by the name the test reads best.
    fn status_num(d: &dyn Driver, k: &str) -> u64 {
        let st = d.status().unwrap();
        let pool = st.pool.expect("a working thin pool");
        match k {
            "data_file_allocated_bytes" => st.backing.and_then(|b| b.file_allocated_bytes).expect("an owned data file"),
            "data_used_bytes" => pool.data_used_bytes,
            "data_total_bytes" => pool.data_total_bytes,
            other => panic!("no status figure {other}"),
        }
    }

    /// Write `mib` MiB of incompressible data into `key` through a mount.
    fn fill(d: &dyn Driver, key: &str, target: &Path, mib: usize) -> std::io::Result<()> {
        let _m = MountGuard::new(d, key, target).unwrap();
        let mut f = std::fs::File::create(target.join("blob"))?;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf)?;
        }
        f.sync_all()
    }

    /// Both discard behaviours, measured: the pool frees a removed layer's blocks either
    /// way; only with discard do they leave the loop-backed data file.
    #[test]
    fn discard_on_and_off_measured() {
        for discard in ["true", "false"] {
            let Some(fx) = fixture(NAME, &[("base_size", "1G"), ("discard", discard)]) else { return };
            let d = fx.driver();
            let t = fx.dir("t");
            d.prepare("w", None, &Labels::new()).unwrap();
            let file0 = status_num(d, "data_file_allocated_bytes");
            let used0 = status_num(d, "data_used_bytes");
            fill(d, "w", &t, 64).unwrap();
            let file1 = status_num(d, "data_file_allocated_bytes");
            let used1 = status_num(d, "data_used_bytes");
            assert!(used1 >= used0 + (60 << 20), "pool data used {used0} -> {used1}");
            assert!(d.usage("w").unwrap().bytes >= 60 << 20);
            d.remove("w").unwrap();
            let file2 = status_num(d, "data_file_allocated_bytes");
            let used2 = status_num(d, "data_used_bytes");
            eprintln!(
                "discard={discard}: data file allocated {file0} -> {file1} -> {file2} bytes; pool data used {used0} -> {used1} -> {used2} bytes"
            );
            assert!(used2 <= used0 + (1 << 20), "pool keeps the removed layer's blocks: {used2} vs {used0}");
            if discard == "true" {
                assert!(file2 + (56 << 20) <= file1, "discard did not shrink the data file: {file1} -> {file2}");
            } else {
                assert!(file2 + (8 << 20) >= file1, "data file shrank without discard: {file1} -> {file2}");
            }
        }
    }

    #[test]
    fn full_pool_is_an_error_not_a_hang() {
        let Some(fx) = fixture(NAME, &[("base_size", "1G"), ("data_size", "192M"), ("min_free_space", "0")]) else { return };
        let d = fx.driver();
        let t = fx.dir("t");
        d.prepare("w", None, &Labels::new()).unwrap();
        let e = fill(d, "w", &t, 400).expect_err("400 MiB fit in a 192 MiB pool");
        eprintln!("writing past the pool's end: {e}");
        assert_eq!(d.status().unwrap().facts["pool_mode"], "out_of_data_space");
        match d.prepare("x", None, &Labels::new()) {
            Err(Error::NoSpace { detail, .. }) => eprintln!("prepare on a full pool: {detail}"),
            other => panic!("prepare on a full pool: {other:?}"),
        }
        d.remove("w").unwrap();
    }

    /// A layer larger than the pool ends in NoSpace naming the layer; the rollback gives its
    /// blocks back to the pool and a small layer applies afterwards.
    #[test]
    fn layer_larger_than_the_pool_is_no_space_and_rolled_back() {
        use crate::conformance::util::streamed_tar;
        let Some(fx) = fixture(NAME, &[("base_size", "1G"), ("data_size", "192M"), ("min_free_space", "0")]) else { return };
        let d = fx.driver();
        d.prepare("big", None, &Labels::new()).unwrap();
        let used0 = status_num(d, "data_used_bytes");
        let err = d.apply("big", &mut streamed_tar(50, 8 << 20, 1)).unwrap_err();
        assert!(matches!(&err, Error::NoSpace { key, .. } if key == "big"), "{err}");
        let used1 = status_num(d, "data_used_bytes");
        eprintln!("apply past the pool's end: {err}; pool data used {used0} -> {used1} bytes after the rollback");
        assert!(used1 <= used0 + (4 << 20), "the failed apply's blocks stay in the pool: {used0} -> {used1}");
        let t = fx.dir("t");
        {
            let _m = MountGuard::new(d, "big", &t).unwrap();
            assert_eq!(std::fs::read_dir(&t).unwrap().count(), 0, "the failed apply left entries");
        }
        d.prepare("small", None, &Labels::new()).unwrap();
        d.apply("small", &mut streamed_tar(4, 1 << 20, 2)).unwrap_or_else(|e| panic!("small layer after a full pool: {e}"));
        d.commit("small-c", "small", &Labels::new()).unwrap();
    }

    #[test]
    fn free_space_guard_refuses_new_layers() {
        let Some(fx) = fixture(NAME, &[("base_size", "1G"), ("data_size", "256M")]) else { return };
        let d = fx.driver();
        let t = fx.dir("t");
        d.prepare("w", None, &Labels::new()).unwrap();
        let total = status_num(d, "data_total_bytes");
        let used = status_num(d, "data_used_bytes");
        // leave less than 10% free
        let mib = ((total - used) - total / 20) >> 20;
        fill(d, "w", &t, mib as usize).unwrap();
        match d.prepare("x", None, &Labels::new()) {
            Err(Error::NoSpace { detail, .. }) => assert!(detail.contains("minimum free space"), "{detail}"),
            other => panic!("expected NoSpace, got {other:?}"),
        }
        d.remove("w").unwrap();
        d.prepare("x", None, &Labels::new()).unwrap();
    }

    #[test]
    fn second_handle_and_restart_adopt_the_pool() {
        let Some(fx) = fixture(NAME, &[("base_size", "1G")]) else { return };
        let d = fx.driver();
        let t = fx.dir("t");
        d.prepare("w", None, &Labels::new()).unwrap();
        {
            let _m = MountGuard::new(d, "w", &t).unwrap();
            std::fs::write(t.join("hello"), b"world").unwrap();
        }
        d.commit("c", "w", &Labels::new()).unwrap();
        let cfg = DriverConfig::new(fx.root().join("root")).with_option("base_size", "1G");
        let second = open(&cfg).unwrap();
        assert_eq!(second.list().unwrap().len(), 1);
        assert_eq!(second.status().unwrap().facts["pool"], d.status().unwrap().facts["pool"]);
        // A "reboot": every device of this root gone, the files and loop devices kept.
        let st = d.status().unwrap();
        let prefix = st.facts["device_prefix"].clone();
        let ctl = DM::new().unwrap();
        for (n, _) in dm::list(&ctl).unwrap() {
            if n.starts_with(&prefix) && !n.ends_with("-pool") {
                dm::remove(&ctl, &n).unwrap();
            }
        }
        dm::remove(&ctl, &format!("{prefix}-pool")).unwrap();
        let third = open(&cfg).unwrap();
        third.view("v", "c", &Labels::new()).unwrap();
        let _m = MountGuard::new(third.as_ref(), "v", &t).unwrap();
        assert_eq!(std::fs::read(t.join("hello")).unwrap(), b"world");
    }

    #[test]
    fn xfs_snapshots_mount_side_by_side() {
        let Some(fx) = fixture(NAME, &[("base_size", "1G"), ("fs", "xfs")]) else { return };
        let d = fx.driver();
        assert_eq!(d.status().unwrap().facts["fs"], "xfs");
        let (t1, t2) = (fx.dir("t1"), fx.dir("t2"));
        d.prepare("w", None, &Labels::new()).unwrap();
        {
            let _m = MountGuard::new(d, "w", &t1).unwrap();
            std::fs::write(t1.join("f"), b"base").unwrap();
        }
        d.commit("c", "w", &Labels::new()).unwrap();
        d.prepare("child", Some("c"), &Labels::new()).unwrap();
        d.view("v", "c", &Labels::new()).unwrap();
        // Both carry the base's filesystem UUID: only `nouuid` lets them mount together.
        let _a = MountGuard::new(d, "child", &t1).unwrap();
        let _b = MountGuard::new(d, "v", &t2).unwrap();
        std::fs::write(t1.join("f"), b"child").unwrap();
        assert_eq!(std::fs::read(t2.join("f")).unwrap(), b"base");
    }

    /// A pool made outside cowbench, removed (with its loop devices) on drop.
    struct UserPool {
        ctl: DM,
        name: String,
        loops: Vec<PathBuf>,
    }

    impl Drop for UserPool {
        fn drop(&mut self) {
            if let Err(e) = dm::remove(&self.ctl, &self.name) {
                eprintln!("remove {}: {e}", self.name);
            }
            for l in &self.loops {
                let _ = loopdev::detach(l);
            }
        }
    }

    #[test]
    fn existing_thinpool_is_used_and_left_in_place() {
        // The fixture only says whether device-mapper runs here (and fails when required).
        let Some(fx) = fixture(NAME, &[("base_size", "1G")]) else { return };
        let dir = fx.dir("userpool");
        let (data, metaf) = (dir.join("data"), dir.join("meta"));
        loopdev::create_sparse(&data, 1 << 30).unwrap();
        loopdev::create_sparse(&metaf, 16 << 20).unwrap();
        let mut pool = UserPool { ctl: DM::new().unwrap(), name: format!("cowbench-userpool-{}", std::process::id()), loops: vec![] };
        for f in [&data, &metaf] {
            pool.loops.push(loopdev::attach(f, loopdev::AttachOptions::default()).unwrap());
        }
        let dd = dm::device_of(&pool.loops[0]).unwrap();
        let md = dm::device_of(&pool.loops[1]).unwrap();
        let params = ThinPoolTargetParams::new(md, dd, Sectors(128), DataBlocks(100), vec![]);
        dm::create(&pool.ctl, &pool.name, Sectors((1 << 30) / 512), &params, false).unwrap();
        let cfg = DriverConfig::new(fx.root().join("root2"))
            .with_option("thinpool", format!("/dev/mapper/{}", pool.name))
            .with_option("base_size", "1G");
        let d = open(&cfg).unwrap();
        assert_eq!(d.status().unwrap().backing.map(|b| b.kind), Some(BackingKind::ExistingPool));
        assert!(!d.capabilities().loop_backed);
        let t = fx.dir("t");
        d.prepare("w", None, &Labels::new()).unwrap();
        {
            let _m = MountGuard::new(d.as_ref(), "w", &t).unwrap();
            std::fs::write(t.join("f"), b"in the user's pool").unwrap();
        }
        d.commit("c", "w", &Labels::new()).unwrap();
        // a second handle on the same root adopts the same pool and devices
        let d2 = open(&cfg).unwrap();
        d2.view("v", "c", &Labels::new()).unwrap();
        {
            let _m = MountGuard::new(d2.as_ref(), "v", &t).unwrap();
            assert_eq!(std::fs::read(t.join("f")).unwrap(), b"in the user's pool");
        }
        d.teardown().unwrap();
        // the pool stays, with every thin device made here deleted
        assert!(dm::exists(&pool.ctl, &pool.name).unwrap().is_some());
        let (st, line) = dm::pool_status(&pool.ctl, &pool.name).unwrap();
        match st {
            ThinPoolStatus::Working(w) => assert_eq!(*w.usage.used_data, 0, "{line}"),
            _ => panic!("pool failed: {line}"),
        }
        drop(d2);
        drop(pool);
    }

    #[test]
    fn probe_says_why() {
        let r = probe();
        if !kernel_lists_device_mapper() && !r.available {
            assert_eq!(r.reason.as_deref(), Some("no device-mapper in this kernel"));
            assert!(r.hint.as_deref().unwrap().contains("scripts/vm"));
        } else if r.available {
            assert_eq!(r.implementation.as_deref(), Some(IMPLEMENTATION));
        }
    }
}
