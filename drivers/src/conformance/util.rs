//! Small helpers the scenarios share: mounting with a guard, building committed layers by
//! writing through a mount, file operations that panic with the path, raw tar entries.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::driver::{Labels, LayerInfo, MountGuard};
use crate::error::Error;

use super::Fixture;

static MOUNTS: AtomicU64 = AtomicU64::new(0);

/// Mount `key` on a fresh directory of the fixture; unmounted when the guard drops (also when
/// an assertion fails while it is mounted).
pub fn mounted<'a>(fx: &'a Fixture, key: &str) -> MountGuard<'a> {
    let n = MOUNTS.fetch_add(1, Ordering::Relaxed);
    let target = fx.dir(&format!("mnt-{n}"));
    MountGuard::new(fx.driver(), key, &target).unwrap_or_else(|e| panic!("mount {key}: {e}"))
}

/// Unmount explicitly, failing the test if that fails.
pub fn unmount(g: MountGuard<'_>) {
    let p = g.path().to_path_buf();
    g.unmount().unwrap_or_else(|e| panic!("unmount {}: {e}", p.display()));
}

pub fn no_labels() -> Labels {
    Labels::new()
}

/// Prepare `name.active` on `parent`, mount it, let `f` write into it, unmount, commit as
/// `name`.
pub fn layer(fx: &Fixture, name: &str, parent: Option<&str>, f: impl FnOnce(&Path)) -> LayerInfo {
    let key = format!("{name}.active");
    fx.driver().prepare(&key, parent, &no_labels()).unwrap_or_else(|e| panic!("prepare {key}: {e}"));
    active_write(fx, &key, f);
    fx.driver().commit(name, &key, &no_labels()).unwrap_or_else(|e| panic!("commit {key} as {name}: {e}"))
}

/// Mount active `key`, let `f` write into it, unmount.
pub fn active_write(fx: &Fixture, key: &str, f: impl FnOnce(&Path)) {
    let g = mounted(fx, key);
    f(g.path());
    sync();
    unmount(g);
}

/// Run `f` on a read-only view of committed `layer` (a fresh view, removed afterwards).
pub fn with_view<R>(fx: &Fixture, layer: &str, f: impl FnOnce(&Path) -> R) -> R {
    let n = MOUNTS.fetch_add(1, Ordering::Relaxed);
    let key = format!("view-{layer}-{n}");
    fx.driver().view(&key, layer, &no_labels()).unwrap_or_else(|e| panic!("view {key} of {layer}: {e}"));
    let out = {
        let g = mounted(fx, &key);
        let out = f(g.path());
        unmount(g);
        out
    };
    fx.driver().remove(&key).unwrap_or_else(|e| panic!("remove {key}: {e}"));
    out
}

pub fn sync() {
    // SAFETY: sync(2) has no arguments.
    unsafe { libc::sync() };
}

pub fn write(p: &Path, content: impl AsRef<[u8]>) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn read_string(p: &Path) -> String {
    String::from_utf8_lossy(&read(p)).into_owned()
}

pub fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    chmod(p, mode);
}

/// chmod (with setuid/setgid/sticky).
pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

pub fn remove_all(p: &Path) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    let r = if m.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
    r.unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
}

pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// (mode & 07777, uid, gid)
pub fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// `n` deterministic pseudo-random bytes (xorshift; incompressible for zfs/btrfs compression).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Assert `r` is the error variant `pat`, printing what came instead.
#[macro_export]
#[doc(hidden)]
macro_rules! __assert_err {
    ($r:expr, $pat:pat, $what:expr) => {
        match $r {
            Err(e @ $pat) => e,
            Err(other) => panic!("{}: expected {}, got error: {other}", $what, stringify!($pat)),
            Ok(v) => panic!("{}: expected {}, got Ok({v:?})", $what, stringify!($pat)),
        }
    };
}
pub use crate::__assert_err as assert_err;

/// The error's OS errno where there is one.
pub fn errno_of(e: &Error) -> Option<i32> {
    e.raw_os_error()
}

/// Raw tar writing for hostile archives: the `tar` crate refuses `..` and absolute names,
/// which is exactly what these archives must contain.
pub struct RawTar {
    buf: Vec<u8>,
}

impl Default for RawTar {
    fn default() -> Self {
        Self::new()
    }
}

impl RawTar {
    pub fn new() -> Self {
        RawTar { buf: Vec::new() }
    }

    fn long(&mut self, kind: u8, value: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_size(value.len() as u64 + 1);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        let mut data = value.to_vec();
        data.push(0);
        self.data(&data);
    }

    fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat(0u8).take(pad));
    }

    /// One entry with `name` and `link` written as given.
    pub fn entry(&mut self, kind: tar::EntryType, name: &str, link: &str, mode: u32, data: &[u8]) -> &mut Self {
        if name.len() > 99 {
            self.long(b'L', name.as_bytes());
        }
        if link.len() > 99 {
            self.long(b'K', link.as_bytes());
        }
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = name.len().min(99);
            old.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            let l = link.len().min(99);
            old.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
        }
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.data(data);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(tar::EntryType::Regular, name, "", 0o644, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(tar::EntryType::Directory, name, "", 0o755, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Symlink, name, target, 0o777, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Link, name, target, 0o644, b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.extend(std::iter::repeat(0u8).take(1024));
        out
    }
}

/// A layer tar of `files` regular files of `each` bytes (`big/0000` ...), written by a thread
/// into a pipe as it is read, so that a tar larger than the store under test needs no memory
/// or disk of its own. The writer stops when the reader is dropped.
pub fn streamed_tar(files: usize, each: usize, seed: u64) -> impl std::io::Read {
    let (reader, writer) = std::io::pipe().expect("pipe");
    std::thread::spawn(move || {
        let data = random_bytes(each, seed);
        let mut b = tar::Builder::new(writer);
        let header = |kind, mode, size| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(1_600_000_000);
            h
        };
        if b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), "big", std::io::empty()).is_err() {
            return;
        }
        for i in 0..files {
            let mut h = header(tar::EntryType::Regular, 0o644, each as u64);
            if b.append_data(&mut h, format!("big/{i:04}"), data.as_slice()).is_err() {
                return;
            }
        }
        let _ = b.finish();
    });
    reader
}
