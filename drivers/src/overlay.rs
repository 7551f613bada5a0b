//! The `overlay` backend: kernel overlayfs, laid out like Docker's overlay2 driver.
//!
//! Layout under the driver root:
//! ```text
//! layers.json, layers.lock    metadata (crate::meta)
//! layers/<id>/diff/            the layer's own changes (overlay upper dir)
//! layers/<id>/work/            overlay work dir (same filesystem as diff/)
//! layers/<id>/link             short name of this layer's link under l/
//! layers/<id>/lower            the lower layers as `l/<link>:l/<link>...`, topmost first
//! l/<link> -> ../layers/<id>/diff
//! ```
//! The short links keep the mount data of deep stacks small: `lowerdir=` with absolute paths
//! of 128 layers would not fit into the one page the kernel copies mount data into. Mounting
//! goes, in order:
//! 1. absolute paths, when the data fits a page;
//! 2. paths relative to `l/` (`lowerdir=ABC:DEF,upperdir=../layers/7/diff,...`), mounted from
//!    a forked child that `chdir`s into `l/` first — the working directory is per process, so
//!    the parent's (a test harness with many threads) is never changed;
//! 3. the new mount API, one `lowerdir+` per layer (Linux 6.8+), which has no page limit, up
//!    to the kernel's stack limit of 500 layers.
//!
//! Views and committed layers are mounted read-only: lowerdirs only, no upper. A read-only
//! mount of a single directory is a read-only bind mount (overlayfs needs two lowerdirs when
//! there is no upper). An active layer without parent is a bind mount of its `diff/`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::archive::{self, DiffSource, Whiteouts};
use crate::backend::Backend;
use crate::driver::{
    ApplyStats, Backing, BackingKind, Capabilities, Driver, DriverConfig, Implementation, Kind, LayerInfo, ProbeReport,
    Status, Usage,
};
use crate::error::{Error, IoContext, Result};
use crate::snapshotter::Snapshotter;
use crate::sys::{hostinfo, mounts};
use crate::sys::tree;

pub const NAME: &str = "overlay";

/// Length of the link names under `l/` (base32, 50 random bits). Shorter than overlay2's 26
/// characters so that more layers fit a page: relative to `l/` each lower costs 11 bytes.
const LINK_LEN: usize = 10;

/// overlayfs refuses more lower layers than this (OVL_MAX_STACK in fs/overlayfs/params.h).
pub const KERNEL_MAX_STACK: usize = 500;

/// Room kept in the mount data for `lowerdir=`, the upper and work dirs and extra options when
/// working out how many relative lower paths fit a page.
const MOUNT_DATA_RESERVE: usize = 256;

/// Whether the kernel takes one `lowerdir+` per layer through fsconfig (Linux 6.8+), which
/// lifts the page limit on mount data.
pub fn lowerdir_plus_supported() -> bool {
    let release = hostinfo::kernel_release();
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    matches!((it.next(), it.next()), (Some(major), Some(minor)) if (major, minor) >= (6, 8))
}

/// Deepest stack this kernel can mount: OVL_MAX_STACK with `lowerdir+`, otherwise as many
/// short links relative to `l/` as fit one page of mount data.
pub fn max_stack() -> usize {
    if lowerdir_plus_supported() {
        KERNEL_MAX_STACK
    } else {
        ((page_size() - 1 - MOUNT_DATA_RESERVE) / (LINK_LEN + 1)).min(KERNEL_MAX_STACK)
    }
}

const PARAMS_DIR: &str = "/sys/module/overlay/parameters";

pub fn probe() -> ProbeReport {
    if !hostinfo::kernel_has_fs("overlay") {
        return ProbeReport::unavailable(NAME, "the kernel does not list overlay in /proc/filesystems")
            .with_hint("load the overlay module (modprobe overlay) or use a kernel with CONFIG_OVERLAY_FS");
    }
    if !hostinfo::is_root() {
        return ProbeReport::unavailable(NAME, "mounting overlayfs needs root").with_hint("run as root");
    }
    let mut r = ProbeReport::available(NAME, &implementation());
    for (k, v) in module_params() {
        r = r.with_detail(format!("param.{k}"), v);
    }
    r
}

fn implementation() -> Implementation {
    Implementation { name: "kernel overlayfs".into(), version: Some(hostinfo::kernel_release()) }
}

/// `index`, `redirect_dir`, `metacopy` ... from /sys/module/overlay/parameters.
fn module_params() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in ["index", "redirect_dir", "metacopy", "xino_auto", "nfs_export"] {
        if let Ok(v) = fs::read_to_string(Path::new(PARAMS_DIR).join(k)) {
            out.insert(k.to_string(), v.trim().to_string());
        }
    }
    out
}

fn param_on(params: &BTreeMap<String, String>, k: &str) -> bool {
    params.get(k).map(|v| v == "Y" || v == "on").unwrap_or(false)
}

/// Open (set up or adopt) the backend under `cfg.root/overlay`.
pub fn open(cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    if let Some(k) = cfg.options.keys().next() {
        return Err(Error::config(NAME, format!("unknown option '{k}' (overlay takes none)")));
    }
    let root = cfg.driver_root(NAME);
    for d in ["layers", "l"] {
        let p = root.join(d);
        fs::create_dir_all(&p).ctx(NAME, None, || format!("create {}", p.display()))?;
    }
    let root = fs::canonicalize(&root).ctx(NAME, None, || format!("resolve {}", root.display()))?;
    let backing = mounts::fstype_of(&root).ctx(NAME, None, || format!("find the filesystem of {}", root.display()))?;
    if backing.fstype == "overlay" {
        return Err(Error::unavailable(
            NAME,
            format!("{} is itself on overlayfs; overlay on overlay is not supported as upper layer, use a root on another filesystem", root.display()),
        ));
    }
    if !supports_d_type(&root).ctx(NAME, None, || format!("check d_type on {}", root.display()))? {
        return Err(Error::unavailable(
            NAME,
            format!("the {} filesystem holding {} does not return d_type in directory entries (xfs needs ftype=1)", backing.fstype, root.display()),
        ));
    }
    check_mount(&root)?;
    let o_direct = tree::supports_o_direct(&root);
    let params = module_params();
    let overlay = Overlay { root: root.clone(), o_direct, params, backing_fs: backing.fstype, mounts_by: Default::default() };
    Ok(Box::new(Snapshotter::new(overlay, &root, &cfg.root)?))
}

/// Whether `readdir` on the filesystem of `dir` reports file types (overlayfs needs it to
/// find whiteouts).
fn supports_d_type(dir: &Path) -> io::Result<bool> {
    let probe = dir.join(".cowbench-dtype-probe");
    fs::write(&probe, b"")?;
    let res = (|| -> io::Result<bool> {
        let mut d = nix::dir::Dir::open(dir, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty())?;
        for e in d.iter() {
            let e = e?;
            if e.file_name().to_bytes() == b".cowbench-dtype-probe" {
                return Ok(e.file_type().is_some());
            }
        }
        Ok(false)
    })();
    let _ = fs::remove_file(&probe);
    res
}

/// Mount a small overlay once (two lowers and an upper) so that a filesystem overlayfs
/// refuses as upper (no trusted xattrs, no tmpfile ...) fails at open with the kernel's errno,
/// not at the first layer.
fn check_mount(root: &Path) -> Result<()> {
    // A name of its own: another process may be opening the same root right now.
    let name = random_link().map_err(|e| Error::io(NAME, None, "read /dev/urandom", e))?;
    let dir = root.join(format!("check-{name}"));
    let res = (|| -> io::Result<()> {
        for d in ["l1", "l2", "upper", "work", "merged"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let data = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            dir.join("l1").display(),
            dir.join("l2").display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        mounts::mount("overlay", &dir.join("merged"), "overlay", nix::mount::MsFlags::empty(), Some(&data))?;
        mounts::unmount(&dir.join("merged"))
    })();
    let _ = tree::remove_tree(&dir);
    res.map_err(|e| Error::unavailable(NAME, format!("a test overlay mount on {} failed: {e}", root.display())))
}

pub struct Overlay {
    root: PathBuf,
    o_direct: bool,
    params: BTreeMap<String, String>,
    backing_fs: String,
    /// How many mounts each method made (for status).
    mounts_by: MountCounts,
}

#[derive(Default)]
struct MountCounts {
    absolute: AtomicU64,
    relative: AtomicU64,
    new_api: AtomicU64,
    bind: AtomicU64,
}

/// What to mount for one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Bind { dir: PathBuf, readonly: bool },
    Overlay(OverlayPlan),
}

/// An overlay mount: lower layers topmost first, each as (layer dir id, link name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OverlayPlan {
    lowers: Vec<(u64, String)>,
    /// Layer id of the upper (active layers only).
    upper: Option<u64>,
    extra: Vec<String>,
}

impl OverlayPlan {
    /// Mount data with absolute paths.
    fn absolute(&self, root: &Path) -> String {
        let diff = |id: u64| root.join("layers").join(id.to_string()).join("diff").display().to_string();
        let lowers: Vec<String> = self.lowers.iter().map(|(id, _)| diff(*id)).collect();
        self.data(&lowers.join(":"), self.upper.map(|id| (diff(id), root.join("layers").join(id.to_string()).join("work").display().to_string())))
    }

    /// Mount data relative to `<root>/l/`.
    fn relative(&self) -> String {
        let lowers: Vec<&str> = self.lowers.iter().map(|(_, l)| l.as_str()).collect();
        self.data(&lowers.join(":"), self.upper.map(|id| (format!("../layers/{id}/diff"), format!("../layers/{id}/work"))))
    }

    fn data(&self, lowers: &str, upper: Option<(String, String)>) -> String {
        let mut s = format!("lowerdir={lowers}");
        if let Some((u, w)) = upper {
            s.push_str(&format!(",upperdir={u},workdir={w}"));
        }
        for e in &self.extra {
            s.push(',');
            s.push_str(e);
        }
        s
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

fn cstring(s: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(s.as_ref()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in mount argument"))
}

/// mount(2) from a forked child whose working directory is `cwd`, so that relative paths in
/// `data` resolve there. Only async-signal-safe calls happen between fork and _exit (every
/// string is prepared before the fork), which makes this safe in a multi-threaded process.
fn mount_in_dir(cwd: &Path, target: &Path, data: &str, flags: libc::c_ulong) -> io::Result<()> {
    let cwd = cstring(cwd.as_os_str().as_bytes())?;
    let target = cstring(target.as_os_str().as_bytes())?;
    let data = cstring(data)?;
    let fstype = cstring("overlay")?;
    // SAFETY: see above; the child only calls chdir, mount and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            if libc::chdir(cwd.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            if libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    } else {
        Err(io::Error::other(format!("mount child ended abnormally (status {status})")))
    }
}

/// The new mount API (fsopen/fsconfig/fsmount/move_mount) with one `lowerdir+` per layer:
/// no page limit on the number of layers (Linux 6.8+).
fn mount_new_api(lowers: &[PathBuf], upper: Option<(PathBuf, PathBuf)>, extra: &[String], target: &Path, readonly: bool) -> io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

    struct Fd(libc::c_int);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: closing a descriptor we own.
            unsafe { libc::close(self.0) };
        }
    }
    fn sys(rc: libc::c_long) -> io::Result<libc::c_long> {
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
    }
    let fstype = cstring("overlay")?;
    // SAFETY: raw syscalls with valid C strings; descriptors are closed by `Fd`.
    unsafe {
        let fs = Fd(sys(libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC))? as libc::c_int);
        let set = |k: &str, v: Option<&[u8]>| -> io::Result<()> {
            let k = cstring(k)?;
            match v {
                Some(v) => {
                    let v = cstring(v)?;
                    sys(libc::syscall(libc::SYS_fsconfig, fs.0, FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0))?;
                }
                None => {
                    sys(libc::syscall(libc::SYS_fsconfig, fs.0, FSCONFIG_SET_FLAG, k.as_ptr(), std::ptr::null::<libc::c_char>(), 0))?;
                }
            }
            Ok(())
        };
        for l in lowers {
            set("lowerdir+", Some(l.as_os_str().as_bytes()))?;
        }
        if let Some((u, w)) = &upper {
            set("upperdir", Some(u.as_os_str().as_bytes()))?;
            set("workdir", Some(w.as_os_str().as_bytes()))?;
        }
        for e in extra {
            match e.split_once('=') {
                Some((k, v)) => set(k, Some(v.as_bytes()))?,
                None => set(e, None)?,
            }
        }
        sys(libc::syscall(libc::SYS_fsconfig, fs.0, FSCONFIG_CMD_CREATE, std::ptr::null::<libc::c_char>(), std::ptr::null::<libc::c_char>(), 0))?;
        let attrs = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
        let mnt = Fd(sys(libc::syscall(libc::SYS_fsmount, fs.0, FSMOUNT_CLOEXEC, attrs))? as libc::c_int);
        let empty = cstring("")?;
        let target = cstring(target.as_os_str().as_bytes())?;
        sys(libc::syscall(libc::SYS_move_mount, mnt.0, empty.as_ptr(), libc::AT_FDCWD, target.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH))?;
    }
    Ok(())
}

/// A random base32 name of LINK_LEN characters.
fn random_link() -> io::Result<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; LINK_LEN];
    let mut f = fs::File::open("/dev/urandom")?;
    f.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect())
}

impl Overlay {
    fn layer_dir(&self, id: u64) -> PathBuf {
        self.root.join("layers").join(id.to_string())
    }

    fn diff_dir(&self, id: u64) -> PathBuf {
        self.layer_dir(id).join("diff")
    }

    fn link_of(&self, key: &str, id: u64) -> Result<String> {
        let p = self.layer_dir(id).join("link");
        let s = fs::read_to_string(&p).ctx(NAME, Some(key), || format!("read {}", p.display()))?;
        Ok(s.trim().to_string())
    }

    fn make_layer(&self, key: &str, dir: &Path, parents: &[LayerInfo]) -> Result<()> {
        let io = |what: &str, e: io::Error| Error::io(NAME, Some(key), format!("{what} in {}", dir.display()), e);
        fs::create_dir(dir).map_err(|e| io("create layer dir", e))?;
        let diff = dir.join("diff");
        fs::create_dir(&diff).map_err(|e| io("create diff/", e))?;
        // The layer root as an image root: 0755, owned by 0:0.
        tree::lchown(&diff, 0, 0).map_err(|e| io("chown diff/", e))?;
        fs::set_permissions(&diff, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(|e| io("chmod diff/", e))?;
        fs::create_dir(dir.join("work")).map_err(|e| io("create work/", e))?;
        // The short link (also for views: cheap, and keeps every layer dir alike).
        let link = loop {
            let name = random_link().map_err(|e| io("read /dev/urandom", e))?;
            let id = dir.file_name().unwrap().to_string_lossy().into_owned();
            match std::os::unix::fs::symlink(format!("../layers/{id}/diff"), self.root.join("l").join(&name)) {
                Ok(()) => break name,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create link under l/", e)),
            }
        };
        fs::write(dir.join("link"), &link).map_err(|e| io("write link", e))?;
        let mut lowers = Vec::new();
        for p in parents {
            lowers.push(format!("l/{}", self.link_of(key, p.id)?));
        }
        if !lowers.is_empty() {
            fs::write(dir.join("lower"), lowers.join(":")).map_err(|e| io("write lower", e))?;
        }
        Ok(())
    }

    /// Remove a layer's directory and its link.
    fn remove_storage(&self, key: &str, id: u64) -> Result<()> {
        let dir = self.layer_dir(id);
        if let Ok(link) = fs::read_to_string(dir.join("link")) {
            let l = self.root.join("l").join(link.trim());
            match fs::remove_file(&l) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(NAME, Some(key), format!("remove {}", l.display()), e))
                }
                _ => {}
            }
        }
        tree::remove_tree(&dir).ctx(NAME, Some(key), || format!("remove {}", dir.display()))
    }

    /// What mounting `chain[0]` takes.
    fn plan(&self, chain: &[LayerInfo]) -> Result<Plan> {
        let key = chain[0].key.as_str();
        let me = &chain[0];
        // Lower layers, topmost first. A committed layer's own diff is its top lower.
        let lower_layers: &[LayerInfo] = match me.kind {
            Kind::Committed => &chain[..],
            Kind::Active | Kind::View => &chain[1..],
        };
        let mut lowers = Vec::with_capacity(lower_layers.len());
        for l in lower_layers {
            lowers.push((l.id, self.link_of(key, l.id)?));
        }
        match me.kind {
            Kind::Active if lowers.is_empty() => Ok(Plan::Bind { dir: self.diff_dir(me.id), readonly: false }),
            Kind::Active => {
                // Native diff reads the upper dir as it is: keep features that store renames
                // or metadata-only copies in xattrs off, and the inode index off (layers are
                // recombined freely, which the index would refuse).
                let mut extra = Vec::new();
                for p in ["index", "redirect_dir", "metacopy"] {
                    if param_on(&self.params, p) {
                        extra.push(format!("{p}=off"));
                    }
                }
                Ok(Plan::Overlay(OverlayPlan { lowers, upper: Some(me.id), extra }))
            }
            Kind::View | Kind::Committed if lowers.len() == 1 => {
                Ok(Plan::Bind { dir: self.diff_dir(lowers[0].0), readonly: true })
            }
            Kind::View | Kind::Committed => Ok(Plan::Overlay(OverlayPlan { lowers, upper: None, extra: Vec::new() })),
        }
    }

    fn mount_overlay(&self, key: &str, plan: &OverlayPlan, target: &Path) -> Result<()> {
        let readonly = plan.upper.is_none();
        let flags = if readonly { libc::MS_RDONLY } else { 0 };
        let max = max_stack();
        if plan.lowers.len() > max {
            let why = if max == KERNEL_MAX_STACK {
                "overlayfs stacks at most".to_string()
            } else {
                format!("kernel {} has no lowerdir+ (Linux 6.8+) and one page of mount data holds at most", hostinfo::kernel_release())
            };
            return Err(Error::invalid(NAME, key, format!("{} lower layers, {why} {max}", plan.lowers.len())));
        }
        let limit = page_size() - 1; // the kernel copies one page, NUL-terminated
        let ctx = |how: &str| format!("mount overlay ({} lowers, {how}) on {}", plan.lowers.len(), target.display());
        let abs = plan.absolute(&self.root);
        if abs.len() <= limit {
            mounts::mount("overlay", target, "overlay", nix::mount::MsFlags::from_bits_truncate(flags), Some(&abs))
                .ctx(NAME, Some(key), || ctx("absolute paths"))?;
            self.mounts_by.absolute.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let rel = plan.relative();
        if rel.len() <= limit {
            mount_in_dir(&self.root.join("l"), target, &rel, flags).ctx(NAME, Some(key), || ctx("paths relative to l/"))?;
            self.mounts_by.relative.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let lowers: Vec<PathBuf> = plan.lowers.iter().map(|(id, _)| self.diff_dir(*id)).collect();
        let upper = plan.upper.map(|id| (self.diff_dir(id), self.layer_dir(id).join("work")));
        mount_new_api(&lowers, upper, &plan.extra, target, readonly).map_err(|e| {
            Error::io(
                NAME,
                Some(key),
                format!("{} (mount data of {} bytes exceeds a page even with short links)", ctx("lowerdir+ through fsconfig"), rel.len()),
                e,
            )
        })?;
        self.mounts_by.new_api.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn mount_plan(&self, key: &str, plan: Plan, target: &Path) -> Result<()> {
        match plan {
            Plan::Bind { dir, readonly } => {
                tree::bind_mount(&dir, target, readonly)
                    .ctx(NAME, Some(key), || format!("bind mount {} on {}", dir.display(), target.display()))?;
                self.mounts_by.bind.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Plan::Overlay(p) => self.mount_overlay(key, &p, target),
        }
    }

    fn lower_diffs(&self, chain: &[LayerInfo]) -> Vec<PathBuf> {
        chain[1..].iter().map(|l| self.diff_dir(l.id)).collect()
    }
}

impl Backend for Overlay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn implementation(&self) -> Implementation {
        implementation()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: true,
            quota: false,
            block_level_cow: false,
            // Lower files are opened from the lower filesystem: one page cache for all.
            shared_page_cache: true,
            shares_layers: true,
            max_depth: Some(max_stack()),
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
        let (key, id) = (chain[0].key.as_str(), chain[0].id);
        // A directory left by a crash before the metadata was saved is not a layer.
        self.remove_storage(key, id)?;
        let made = self.make_layer(key, &self.layer_dir(id), &chain[1..]);
        if made.is_err() {
            let _ = self.remove_storage(key, id);
        }
        made
    }

    fn freeze(&self, _active: &LayerInfo, _committed: &LayerInfo) -> Result<()> {
        // diff/ stays where it is: the committed layer keeps the id and the link, so children
        // find it under the same short name. Nothing to move (as overlay2).
        Ok(())
    }

    fn mount(&self, chain: &[LayerInfo], target: &Path) -> Result<()> {
        let plan = self.plan(chain)?;
        self.mount_plan(&chain[0].key, plan, target)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mounts::unmount(target).ctx(NAME, None, || format!("unmount {}", target.display()))
    }

    fn destroy(&self, layer: &LayerInfo) -> Result<()> {
        self.remove_storage(&layer.key, layer.id)
    }

    fn apply(&self, chain: &[LayerInfo], tar: &mut dyn Read) -> Result<ApplyStats> {
        let (key, id) = (chain[0].key.as_str(), chain[0].id);
        let diff = self.diff_dir(id);
        let cp = crate::rollback::TreeCheckpoint::take(NAME, key, &diff, &self.layer_dir(id).join("diff.pre-apply"))?;
        crate::rollback::apply_atomically(NAME, key, cp, || archive::apply(NAME, key, tar, &diff, Whiteouts::Overlay))
    }

    fn diff_source(&self, chain: &[LayerInfo], f: &mut dyn FnMut(&DiffSource) -> Result<()>) -> Result<()> {
        let lowers = self.lower_diffs(chain);
        let upper = self.diff_dir(chain[0].id);
        f(&DiffSource::OverlayUpper { upper: &upper, lowers: &lowers })
    }

    fn usage(&self, chain: &[LayerInfo]) -> Result<Usage> {
        // The layer's own diff/ (allocated bytes, inodes once each); parents are not counted.
        let diff = self.diff_dir(chain[0].id);
        tree::usage(&diff).ctx(NAME, Some(&chain[0].key), || format!("walk {}", diff.display()))
    }

    fn status(&self) -> Result<Status> {
        let mut s = Status::new(implementation().to_string(), 0);
        s.backing = Some(Backing::new(BackingKind::Directory, &self.root));
        s.fact("backing_filesystem", &self.backing_fs);
        if let Ok(m) = mounts::fstype_of(&self.root) {
            s.fact("backing_device", m.source);
            s.fact("backing_mount_options", format!("{},{}", m.options, m.super_options));
        }
        for (k, v) in &self.params {
            s.fact(format!("param.{k}"), v);
        }
        s.fact("max_lower_layers", max_stack());
        s.fact(
            "mounts",
            format!(
                "{} absolute, {} relative to l/, {} lowerdir+, {} bind",
                self.mounts_by.absolute.load(Ordering::Relaxed),
                self.mounts_by.relative.load(Ordering::Relaxed),
                self.mounts_by.new_api.load(Ordering::Relaxed),
                self.mounts_by.bind.load(Ordering::Relaxed)
            ),
        );
        s.fact("o_direct", self.o_direct);
        Ok(s)
    }

    fn teardown(&self, _layers: &[LayerInfo]) -> Result<()> {
        mounts::unmount_all_under(&self.root).ctx(NAME, None, || format!("unmount under {}", self.root.display()))?;
        for d in ["layers", "l"] {
            let p = self.root.join(d);
            tree::remove_tree(&p).ctx(NAME, None, || format!("remove {}", p.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_data_of_128_layers_fits_a_page() {
        let plan = OverlayPlan {
            lowers: (0..128u64).map(|i| (i, "A".repeat(LINK_LEN))).collect(),
            upper: Some(100_000),
            extra: vec!["index=off".into()],
        };
        let abs = plan.absolute(Path::new("/var/lib/cowbench/overlay"));
        assert!(abs.len() > 4095, "absolute data should not fit: {}", abs.len());
        let rel = plan.relative();
        assert!(rel.len() <= 4095, "relative data should fit: {}", rel.len());
        assert!(rel.starts_with(&format!("lowerdir={}:", "A".repeat(LINK_LEN))));
        assert!(rel.ends_with(",upperdir=../layers/100000/diff,workdir=../layers/100000/work,index=off"));
    }

    #[test]
    fn readonly_plan_has_no_upper() {
        let plan = OverlayPlan { lowers: vec![(2, "B".into()), (1, "A".into())], upper: None, extra: vec![] };
        assert_eq!(plan.relative(), "lowerdir=B:A");
    }
}
