//! Layer archives: hostile tars, compression, whiteout conversion, metadata, and round trips
//! apply → changes → write_diff → apply (against plain trees and a real overlayfs mount).
//!
//! Runs as root (mknod, chown, trusted.* xattrs, overlay mounts). Every mount is undone by a
//! Drop guard; every tree lives in a temp dir removed on drop.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cowbench_drivers::archive::{
    self, digest_differences, tree_digest, DiffSource, DigestOptions, EntryKind, EntrySummary, WhiteoutHandler, Whiteouts,
};
use cowbench_drivers::{ApplyStats, Change, ChangeKind, Error};
use tar::{EntryType, Header};

// ------------------------------------------------------------------------------------------
// Building tars

const T0: i64 = 1_600_000_000;

struct E {
    path: String,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    data: Vec<u8>,
    link: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    dev: (u32, u32),
}

impl E {
    fn new(path: &str, kind: EntryType, mode: u32) -> E {
        E { path: path.into(), kind, mode, uid: 0, gid: 0, mtime: (T0, 0), data: Vec::new(), link: None, xattrs: Vec::new(), dev: (0, 0) }
    }
    fn dir(path: &str) -> E {
        E::new(path, EntryType::Directory, 0o755)
    }
    fn file(path: &str, data: &[u8]) -> E {
        let mut e = E::new(path, EntryType::Regular, 0o644);
        e.data = data.to_vec();
        e
    }
    fn symlink(path: &str, target: &str) -> E {
        let mut e = E::new(path, EntryType::Symlink, 0o777);
        e.link = Some(target.into());
        e
    }
    fn hardlink(path: &str, target: &str) -> E {
        let mut e = E::new(path, EntryType::Link, 0o644);
        e.link = Some(target.into());
        e
    }
    fn device(path: &str, kind: EntryType, major: u32, minor: u32) -> E {
        let mut e = E::new(path, kind, 0o600);
        e.dev = (major, minor);
        e
    }
    fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn mtime(mut self, s: i64, ns: u32) -> E {
        self.mtime = (s, ns);
        self
    }
    fn xattr(mut self, k: &str, v: &[u8]) -> E {
        self.xattrs.push((k.into(), v.to_vec()));
        self
    }
}

struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Tar {
        Tar { b: tar::Builder::new(Vec::new()) }
    }

    fn add(mut self, e: E) -> Tar {
        let mut pax: Vec<(String, Vec<u8>)> = e.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect();
        if e.mtime.1 != 0 {
            pax.push(("mtime".into(), format!("{}.{:09}", e.mtime.0, e.mtime.1).into_bytes()));
        }
        if !pax.is_empty() {
            self.b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime.0 as u64);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        match &e.link {
            Some(l) => self.b.append_link(&mut h, &e.path, l).unwrap(),
            None => self.b.append_data(&mut h, &e.path, e.data.as_slice()).unwrap(),
        }
        self
    }

    /// An entry whose name (and link name) bytes go into the header unchecked, as a hostile
    /// tar would carry them (tar-rs's `set_path` refuses `..` and absolute names).
    fn raw(mut self, name: &[u8], kind: EntryType, link: Option<&[u8]>, data: &[u8]) -> Tar {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            assert!(name.len() < old.name.len(), "raw names must fit the header");
            old.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(T0 as u64);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn apply(dest: &Path, tar: &[u8], wh: Whiteouts<'_>) -> cowbench_drivers::Result<ApplyStats> {
    archive::apply("test", "layer", &mut &tar[..], dest, wh)
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("cowbench-archive-").tempdir_in("/var/tmp").unwrap()
}

fn lstat(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0, "mkfifo {}", p.display());
}

fn mknod_chr(p: &Path, major: u32, minor: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(major, minor)) };
    assert_eq!(rc, 0, "mknod {}", p.display());
}

fn set_mtime(p: &Path, s: i64, ns: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec { tv_sec: s as _, tv_nsec: ns as _ };
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [ts, ts].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

fn cp_a(from: &Path, to: &Path) {
    // GNU cp -a keeps modes, owners, ns mtimes, xattrs (trusted.* too, as root) and hardlinks.
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn assert_same_tree(a: &Path, b: &Path, opts: DigestOptions) {
    let da = tree_digest(a, opts).unwrap();
    let db = tree_digest(b, opts).unwrap();
    let d = digest_differences(&da, &db);
    assert!(d.is_empty(), "trees {} and {} differ:\n{}", a.display(), b.display(), d.join("\n"));
}

// ------------------------------------------------------------------------------------------
// Hostile tars

/// A layer dir with sentinels next to it: `outside/victim`, `outside/dir/`, and the scratch
/// root's parent checked for a stray escape name.
struct Jail {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    victim: PathBuf,
    before: BTreeMap<PathBuf, EntrySummary>,
    before_parent: Vec<std::ffi::OsString>,
    victim_nlink: u64,
}

impl Jail {
    fn new() -> Jail {
        let tmp = tmp();
        let root = tmp.path().to_path_buf();
        let dest = root.join("layer");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir_all(root.join("outside/dir")).unwrap();
        let victim = root.join("outside/victim");
        std::fs::write(&victim, b"original").unwrap();
        std::fs::write(root.join("sentinel"), b"sentinel").unwrap();
        let mut j = Jail {
            _tmp: tmp,
            root,
            dest,
            victim: victim.clone(),
            before: BTreeMap::new(),
            before_parent: Vec::new(),
            victim_nlink: lstat(&victim).nlink(),
        };
        j.before = j.outside_digest();
        j.before_parent = j.parent_names();
        j
    }

    /// Everything next to the layer dir, with mtimes (an entry created in `outside/` would
    /// show as a new key and a changed directory mtime).
    fn outside_digest(&self) -> BTreeMap<PathBuf, EntrySummary> {
        let mut d = tree_digest(&self.root, DigestOptions::ALL).unwrap();
        d.retain(|p, _| !p.starts_with("layer"));
        d
    }

    fn parent_names(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = std::fs::read_dir(self.root.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.retain(|n| n.as_bytes().starts_with(b"escaped"));
        v.sort();
        v
    }

    fn assert_untouched(&self) {
        let after = self.outside_digest();
        let d = digest_differences(&self.before, &after);
        assert!(d.is_empty(), "something outside the layer changed:\n{}", d.join("\n"));
        assert_eq!(std::fs::read(&self.victim).unwrap(), b"original");
        assert_eq!(lstat(&self.victim).nlink(), self.victim_nlink, "victim gained a hardlink");
        assert_eq!(self.parent_names(), self.before_parent, "an entry escaped above the scratch dir");
    }
}

fn assert_refused(res: cowbench_drivers::Result<ApplyStats>, entry: &str) {
    match res {
        Err(Error::Archive { driver, key, entry: Some(p), message }) => {
            assert_eq!(driver, "test");
            assert_eq!(key, "layer");
            assert_eq!(p, PathBuf::from(entry), "error names the wrong entry ({message})");
            assert!(!message.is_empty());
        }
        other => panic!("entry {entry:?} was not refused as an archive error: {other:?}"),
    }
}

fn refused_in_fresh_jail(setup: impl Fn(&Jail), tar: Vec<u8>, entry: &str, wh: fn() -> Whiteouts<'static>) {
    let j = Jail::new();
    setup(&j);
    // Setup may create things in the layer only; take the outside snapshot again.
    let j = Jail { before: j.outside_digest(), ..j };
    assert_refused(apply(&j.dest, &tar, wh()), entry);
    j.assert_untouched();
}

#[test]
fn hostile_dotdot_escape_is_refused() {
    for name in ["../escaped", "../outside/victim", "./../outside/dir/new"] {
        let tar = Tar::new().add(E::file("ok", b"ok")).raw(name.as_bytes(), EntryType::Regular, None, b"pwned").bytes();
        refused_in_fresh_jail(|_| {}, tar, name, || Whiteouts::Delete);
    }
    // A directory entry that escapes.
    let tar = Tar::new().raw(b"../escaped_dir/", EntryType::Directory, None, b"").bytes();
    refused_in_fresh_jail(|_| {}, tar, "../escaped_dir/", || Whiteouts::Overlay);
}

#[test]
fn hostile_nested_dotdot_escape_is_refused() {
    for name in ["dir/../../escaped", "a/b/../../../outside/victim", "a/../../../escaped2", "x/./../../outside/dir/n"] {
        let tar = Tar::new().add(E::dir("dir")).raw(name.as_bytes(), EntryType::Regular, None, b"pwned").bytes();
        refused_in_fresh_jail(|_| {}, tar, name, || Whiteouts::Delete);
    }
}

#[test]
fn hostile_names_in_pax_and_gnu_long_name_records_are_refused() {
    // The name the reader uses comes from a PAX `path` record (or a GNU long-name record),
    // not from the harmless-looking header name.
    let j = Jail::new();
    let long_escape = format!("{}../escaped_long", "a/../".repeat(40));
    for (name, how) in [("../escaped_pax", "pax"), (j.victim.to_str().unwrap(), "pax"), (long_escape.as_str(), "gnu")] {
        let mut b = tar::Builder::new(Vec::new());
        match how {
            "pax" => b.append_pax_extensions([("path", name.as_bytes())]).unwrap(),
            _ => {
                let mut h = Header::new_gnu();
                h.set_entry_type(EntryType::GNULongName);
                h.set_size(name.len() as u64 + 1);
                h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                h.set_cksum();
                let mut data = name.as_bytes().to_vec();
                data.push(0);
                b.append(&h, &data[..]).unwrap();
            }
        }
        let mut h = Header::new_gnu();
        h.set_path("harmless").unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(5);
        h.set_cksum();
        b.append(&h, &b"pwned"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert_refused(apply(&j.dest, &tar, Whiteouts::Delete), name);
        j.assert_untouched();
        assert!(!exists(&j.dest.join("harmless")));
    }
}

#[test]
fn dotdot_that_stays_inside_is_resolved_lexically() {
    let t = tmp();
    let tar = Tar::new().add(E::dir("a")).raw(b"a/../b", EntryType::Regular, None, b"inside").bytes();
    apply(t.path(), &tar, Whiteouts::Delete).unwrap();
    assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"inside");
}

#[test]
fn hostile_absolute_path_is_refused() {
    let j = Jail::new();
    let abs = j.victim.to_str().unwrap().to_string();
    let tar = Tar::new().raw(abs.as_bytes(), EntryType::Regular, None, b"pwned").bytes();
    assert_refused(apply(&j.dest, &tar, Whiteouts::Delete), &abs);
    j.assert_untouched();
    assert!(!exists(&j.dest.join(abs.trim_start_matches('/'))), "absolute names are refused, not re-rooted");
}

#[test]
fn hostile_hardlink_out_is_refused() {
    for target in ["../outside/victim", "dir/../../outside/victim", "ABS"] {
        let j = Jail::new();
        let t = if target == "ABS" { j.victim.to_str().unwrap().to_string() } else { target.to_string() };
        let tar = Tar::new().add(E::dir("dir")).raw(b"dir/h", EntryType::Link, Some(t.as_bytes()), b"").bytes();
        assert_refused(apply(&j.dest, &tar, Whiteouts::Delete), "dir/h");
        j.assert_untouched();
        assert!(!exists(&j.dest.join("dir/h")));
    }
}

#[test]
fn hostile_hardlink_through_symlink_is_refused() {
    // `l` points outside; a hardlink to `l/victim` would link the outside file in.
    let j = Jail::new();
    let abs_outside = j.root.join("outside");
    let tar = Tar::new()
        .add(E::symlink("l", abs_outside.to_str().unwrap()))
        .raw(b"h", EntryType::Link, Some(b"l/victim"), b"")
        .bytes();
    assert_refused(apply(&j.dest, &tar, Whiteouts::Delete), "h");
    j.assert_untouched();
}

#[test]
fn hostile_symlinked_parent_dir_is_refused() {
    // Relative symlink out, absolute symlink out, and a symlink that points inside the layer:
    // all are refused as parents, whichever way they point.
    type Setup = Box<dyn Fn(&Jail)>;
    let cases: Vec<(&str, Setup)> = vec![
        ("a/victim", Box::new(|j: &Jail| std::os::unix::fs::symlink("../outside", j.dest.join("a")).unwrap())),
        (
            "abs/victim",
            Box::new(|j: &Jail| std::os::unix::fs::symlink(j.root.join("outside"), j.dest.join("abs")).unwrap()),
        ),
        (
            "in/x",
            Box::new(|j: &Jail| {
                std::fs::create_dir(j.dest.join("sub")).unwrap();
                std::os::unix::fs::symlink("sub", j.dest.join("in")).unwrap();
            }),
        ),
        ("deep/dir/new", Box::new(|j: &Jail| std::os::unix::fs::symlink("../outside", j.dest.join("deep")).unwrap())),
    ];
    for (entry, setup) in cases {
        let tar = Tar::new().raw(entry.as_bytes(), EntryType::Regular, None, b"pwned").bytes();
        refused_in_fresh_jail(&setup, tar, entry, || Whiteouts::Delete);
    }
    // The inside case must not have written through either.
    let j = Jail::new();
    std::fs::create_dir(j.dest.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", j.dest.join("in")).unwrap();
    let tar = Tar::new().raw(b"in/x", EntryType::Regular, None, b"x").bytes();
    assert!(apply(&j.dest, &tar, Whiteouts::Delete).is_err());
    assert!(!exists(&j.dest.join("sub/x")));
}

#[test]
fn hostile_symlink_then_write_through_is_refused() {
    let j = Jail::new();
    let abs_outside = j.root.join("outside");
    let tar = Tar::new()
        .add(E::symlink("l", abs_outside.to_str().unwrap()))
        .raw(b"l/victim", EntryType::Regular, None, b"pwned")
        .bytes();
    assert_refused(apply(&j.dest, &tar, Whiteouts::Delete), "l/victim");
    j.assert_untouched();
    // The symlink itself was stored as it is (symlinks may point anywhere).
    assert_eq!(std::fs::read_link(j.dest.join("l")).unwrap(), abs_outside);

    // Relative symlink, then a directory and a device created through it.
    for (second, kind) in [("l2/newdir/", EntryType::Directory), ("l2/dev", EntryType::Fifo), ("l2/s", EntryType::Symlink)] {
        let j = Jail::new();
        let link = if kind == EntryType::Symlink { Some(&b"x"[..]) } else { None };
        let tar = Tar::new().add(E::symlink("l2", "../outside")).raw(second.as_bytes(), kind, link, b"").bytes();
        assert_refused(apply(&j.dest, &tar, Whiteouts::Overlay), second);
        j.assert_untouched();
    }
}

#[test]
fn hostile_whiteout_through_symlink_is_refused() {
    for wh in [(|| Whiteouts::Delete) as fn() -> Whiteouts<'static>, || Whiteouts::Overlay, || Whiteouts::Aufs] {
        let j = Jail::new();
        std::os::unix::fs::symlink("../outside", j.dest.join("a")).unwrap();
        let j = Jail { before: j.outside_digest(), ..j };
        let tar = Tar::new().raw(b"a/.wh.victim", EntryType::Regular, None, b"").bytes();
        assert_refused(apply(&j.dest, &tar, wh()), "a/.wh.victim");
        j.assert_untouched();
        let tar = Tar::new().raw(b"a/.wh..wh..opq", EntryType::Regular, None, b"").bytes();
        assert_refused(apply(&j.dest, &tar, wh()), "a/.wh..wh..opq");
        j.assert_untouched();
    }
    // `.wh..` would name the parent.
    let j = Jail::new();
    let tar = Tar::new().add(E::dir("d")).raw(b"d/.wh..", EntryType::Regular, None, b"").bytes();
    assert_refused(apply(&j.dest, &tar, Whiteouts::Delete), "d/.wh..");
    j.assert_untouched();
    assert!(exists(&j.dest.join("d")));
}

#[test]
fn symlink_entry_is_replaced_not_followed() {
    let j = Jail::new();
    let tar = Tar::new()
        .add(E::symlink("l", "../outside/victim"))
        .add(E::file("l", b"replaced"))
        .add(E::symlink("m", j.victim.to_str().unwrap()))
        .add(E::dir("m"))
        .bytes();
    apply(&j.dest, &tar, Whiteouts::Delete).unwrap();
    j.assert_untouched();
    assert!(lstat(&j.dest.join("l")).file_type().is_file());
    assert_eq!(std::fs::read(j.dest.join("l")).unwrap(), b"replaced");
    assert!(lstat(&j.dest.join("m")).file_type().is_dir());
}

// ------------------------------------------------------------------------------------------
// Compression

fn sample_tar() -> Vec<u8> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    Tar::new()
        .add(E::dir("etc"))
        .add(E::file("etc/hosts", b"127.0.0.1 localhost\n"))
        .add(E::file("big", &big).mode(0o600))
        .add(E::symlink("hosts", "etc/hosts"))
        .bytes()
}

#[test]
fn gzip_and_zstd_layers_apply_like_plain() {
    use std::io::Write;
    let plain = sample_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    assert_ne!(gz[..2], plain[..2]);

    let reference = tmp();
    let st = apply(reference.path(), &plain, Whiteouts::Delete).unwrap();
    assert_eq!(st.entries, 4);
    assert_eq!(st.bytes, 300_000 + 20);
    for (name, data) in [("gzip", &gz), ("zstd", &zst)] {
        let t = tmp();
        let s = apply(t.path(), data, Whiteouts::Delete).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s, st, "{name}");
        assert_same_tree(reference.path(), t.path(), DigestOptions::ALL);
    }
    // A reader that hands out one byte at a time (a pipe) still gets the magic right.
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let t = tmp();
    archive::apply("test", "layer", &mut Trickle(&zst), t.path(), Whiteouts::Delete).unwrap();
    assert_same_tree(reference.path(), t.path(), DigestOptions::ALL);

    // Truncated compressed data is an archive error, not a panic or a silent partial success.
    let t = tmp();
    match apply(t.path(), &gz[..gz.len() / 2], Whiteouts::Delete) {
        Err(Error::Archive { .. }) => {}
        other => panic!("truncated gzip: {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Whiteouts

/// Content a layer tar with whiteouts is applied on.
fn whiteout_lower(dir: &Path) {
    let tar = Tar::new()
        .add(E::dir("d"))
        .add(E::file("d/old1", b"1"))
        .add(E::dir("d/sub"))
        .add(E::file("d/sub/old2", b"2"))
        .add(E::file("gone", b"g"))
        .add(E::dir("gonedir"))
        .add(E::dir("gonedir/sub"))
        .add(E::file("gonedir/sub/f", b"f"))
        .add(E::file("keep", b"k"))
        .bytes();
    apply(dir, &tar, Whiteouts::Delete).unwrap();
}

/// Opaque `d` with entries before and after the marker, and two whiteouts. `d/sub` is
/// re-created by the tar before the marker: its lower content must still go.
fn whiteout_tar() -> Vec<u8> {
    Tar::new()
        .add(E::dir("d").mode(0o750))
        .add(E::file("d/new_before", b"b"))
        .add(E::dir("d/sub"))
        .raw(b"d/.wh..wh..opq", EntryType::Regular, None, b"")
        .add(E::file("d/new_after", b"a"))
        .raw(b".wh.gone", EntryType::Regular, None, b"")
        .raw(b".wh.gonedir", EntryType::Regular, None, b"")
        .raw(b".wh..wh.plnk", EntryType::Directory, None, b"")
        .add(E::file("added", b"new"))
        .bytes()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn expect_merged_result(root: &Path) {
    assert_eq!(names(root), ["added", "d", "keep"]);
    assert_eq!(names(&root.join("d")), ["new_after", "new_before", "sub"]);
    assert!(names(&root.join("d/sub")).is_empty());
    assert_eq!(lstat(&root.join("d")).mode() & 0o7777, 0o750);
    assert_eq!(std::fs::read(root.join("keep")).unwrap(), b"k");
}

#[test]
fn whiteouts_delete_mode_on_full_tree() {
    let t = tmp();
    whiteout_lower(t.path());
    let st = apply(t.path(), &whiteout_tar(), Whiteouts::Delete).unwrap();
    assert_eq!(st.whiteouts, 3);
    expect_merged_result(t.path());
}

struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Read-write overlay when `upper` is given, else a read-only stack of `lowers`.
    fn new(lowers: &[&Path], upper: Option<(&Path, &Path)>, target: &Path) -> OverlayMount {
        let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        let mut opts = format!("lowerdir={lower}");
        if let Some((u, w)) = upper {
            opts.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
        }
        // Native diffs need every change to live in the upper dir itself.
        opts.push_str(",redirect_dir=off,index=off,metacopy=off");
        cowbench_drivers::sys::mounts::mount("overlay", target, "overlay", nix::mount::MsFlags::empty(), Some(&opts))
            .unwrap_or_else(|e| panic!("mount overlay {opts}: {e}"));
        OverlayMount { target: target.to_path_buf() }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Err(e) = cowbench_drivers::sys::mounts::unmount(&self.target) {
            eprintln!("unmount {}: {e}", self.target.display());
        }
    }
}

#[test]
fn whiteouts_overlay_mode_native_form_and_mounted_view() {
    let t = tmp();
    let (lower, upper, work, merged) = (t.path().join("lower"), t.path().join("upper"), t.path().join("work"), t.path().join("merged"));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    whiteout_lower(&lower);
    let st = apply(&upper, &whiteout_tar(), Whiteouts::Overlay).unwrap();
    assert_eq!(st.whiteouts, 3);
    // Native form: 0/0 character devices, opaque xattr on the directory, no .wh. files.
    for w in ["gone", "gonedir"] {
        let m = lstat(&upper.join(w));
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()), "{w}");
        assert_eq!(m.rdev(), 0);
    }
    assert_eq!(xattr::get(upper.join("d"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr::get(upper.join("d/sub"), "trusted.overlay.opaque").unwrap(), None);
    assert!(!names(&upper).iter().any(|n| n.starts_with(".wh.")));
    assert!(!exists(&upper.join("d/.wh..wh..opq")));
    // The kernel sees what the OCI layer means. d/sub is not opaque itself, but d is.
    {
        let _m = OverlayMount::new(&[&lower], Some((&upper, &work)), &merged);
        expect_merged_result(&merged);
    }
    assert!(!cowbench_drivers::sys::mounts::is_mountpoint(&merged));
}

#[test]
fn whiteouts_aufs_mode_keeps_whiteout_files() {
    let t = tmp();
    let st = apply(t.path(), &whiteout_tar(), Whiteouts::Aufs).unwrap();
    assert_eq!(st.whiteouts, 3);
    assert_eq!(names(t.path()), [".wh.gone", ".wh.gonedir", "added", "d"]);
    assert_eq!(names(&t.path().join("d")), [".wh..wh..opq", "new_after", "new_before", "sub"]);
    assert!(lstat(&t.path().join(".wh.gone")).file_type().is_file());

    // On an existing branch the whited-out entries and the opaque dir's old content go.
    let t = tmp();
    whiteout_lower(t.path());
    apply(t.path(), &whiteout_tar(), Whiteouts::Aufs).unwrap();
    assert_eq!(names(t.path()), [".wh.gone", ".wh.gonedir", "added", "d", "keep"]);
    assert_eq!(names(&t.path().join("d")), [".wh..wh..opq", "new_after", "new_before", "sub"]);
}

#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<String>>,
}

impl WhiteoutHandler for Recorder {
    fn whiteout(&self, layer: &Path, rel: &Path) -> std::io::Result<()> {
        assert!(layer.is_dir());
        self.calls.borrow_mut().push(format!("whiteout {}", rel.display()));
        Ok(())
    }
    fn opaque(&self, layer: &Path, rel_dir: &Path) -> std::io::Result<()> {
        assert!(layer.join(rel_dir).is_dir());
        self.calls.borrow_mut().push(format!("opaque {}", rel_dir.display()));
        Ok(())
    }
}

#[test]
fn whiteouts_custom_handler_is_called() {
    let t = tmp();
    let rec = Recorder::default();
    let st = apply(t.path(), &whiteout_tar(), Whiteouts::Custom(&rec)).unwrap();
    assert_eq!(st.whiteouts, 3);
    assert_eq!(*rec.calls.borrow(), ["opaque d", "whiteout gone", "whiteout gonedir"]);
    assert_eq!(names(t.path()), ["added", "d"]);
    // A failing handler fails the apply and names the entry.
    struct Fails;
    impl WhiteoutHandler for Fails {
        fn whiteout(&self, _: &Path, _: &Path) -> std::io::Result<()> {
            Err(std::io::Error::other("no"))
        }
        fn opaque(&self, _: &Path, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
    }
    let t = tmp();
    assert_refused(apply(t.path(), &whiteout_tar(), Whiteouts::Custom(&Fails)), ".wh.gone");
}

// ------------------------------------------------------------------------------------------
// Metadata

#[test]
fn special_files_modes_owners_xattrs_and_mtimes_are_kept() {
    let t = tmp();
    let r = t.path();
    let tar = Tar::new()
        .add(E::dir("base").mode(0o1705).owner(1, 2).mtime(T0 + 5, 123_456_789).xattr("user.dir", b"d"))
        .add(E::file("base/suid", b"x").mode(0o4222).owner(1, 2).mtime(T0 + 1, 1))
        .add(E::file("base/sgid", b"yy").mode(0o2755).owner(1, 2))
        .add(E::file("base/x", b"with xattrs").xattr("user.one", b"1").xattr("trusted.cowbench", b"\x00\x01bin"))
        .add(E::file("base/ovl", b"o").xattr("trusted.overlay.redirect", b"/evil"))
        .add(E::hardlink("base/x-link", "base/x"))
        .add(E::symlink("base/sym", "/nowhere/at/all").owner(1, 2).mtime(T0 + 2, 0).xattr("trusted.sym", b"s"))
        .add(E::device("base/null", EntryType::Char, 1, 3).mode(0o666))
        .add(E::device("base/blk", EntryType::Block, 7, 200).owner(3, 4))
        .add(E::new("base/fifo", EntryType::Fifo, 0o640).owner(1, 2))
        .add(E::file("base/deep/implicit/parent", b"p"))
        .bytes();
    let st = apply(r, &tar, Whiteouts::Delete).unwrap();
    assert_eq!(st.entries, 11);

    let m = lstat(&r.join("base"));
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o1705, 1, 2));
    assert_eq!((m.mtime(), m.mtime_nsec()), (T0 + 5, 123_456_789), "dir mtime set after its content");
    assert_eq!(xattr::get(r.join("base"), "user.dir").unwrap().as_deref(), Some(&b"d"[..]));

    let m = lstat(&r.join("base/suid"));
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4222, 1, 2), "setuid survives chown");
    assert_eq!((m.mtime(), m.mtime_nsec()), (T0 + 1, 1));
    assert_eq!(lstat(&r.join("base/sgid")).mode() & 0o7777, 0o2755);

    assert_eq!(xattr::get(r.join("base/x"), "user.one").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(xattr::get(r.join("base/x"), "trusted.cowbench").unwrap().as_deref(), Some(&b"\x00\x01bin"[..]));
    assert_eq!(xattr::get(r.join("base/ovl"), "trusted.overlay.redirect").unwrap(), None, "overlay xattrs are dropped");
    assert_eq!(lstat(&r.join("base/x")).ino(), lstat(&r.join("base/x-link")).ino());
    assert_eq!(lstat(&r.join("base/x")).nlink(), 2);

    let m = lstat(&r.join("base/sym"));
    assert!(m.file_type().is_symlink());
    assert_eq!(std::fs::read_link(r.join("base/sym")).unwrap(), PathBuf::from("/nowhere/at/all"));
    assert_eq!((m.uid(), m.gid(), m.mtime()), (1, 2, T0 + 2));
    assert_eq!(xattr::get(r.join("base/sym"), "trusted.sym").unwrap().as_deref(), Some(&b"s"[..]));

    use std::os::unix::fs::FileTypeExt;
    let m = lstat(&r.join("base/null"));
    assert!(m.file_type().is_char_device());
    assert_eq!((libc::major(m.rdev()), libc::minor(m.rdev()), m.mode() & 0o7777), (1, 3, 0o666));
    let m = lstat(&r.join("base/blk"));
    assert!(m.file_type().is_block_device());
    assert_eq!((libc::major(m.rdev()), libc::minor(m.rdev()), m.uid(), m.gid()), (7, 200, 3, 4));
    let m = lstat(&r.join("base/fifo"));
    assert!(m.file_type().is_fifo());
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1, 2));
    assert_eq!(std::fs::read(r.join("base/deep/implicit/parent")).unwrap(), b"p");

    // The digest sees all of it.
    let d = tree_digest(r, DigestOptions::ALL).unwrap();
    assert_eq!(d[Path::new("base/null")].kind, EntryKind::CharDevice);
    assert_eq!(d[Path::new("base/null")].rdev, Some((1, 3)));
    assert_eq!(d[Path::new("base/sym")].link_target.as_deref(), Some(Path::new("/nowhere/at/all")));
    assert_eq!(d[Path::new("base/x")].xattrs.len(), 2);
    assert_eq!(d[Path::new("base")].mtime_ns, Some((T0 as i128 + 5) * 1_000_000_000 + 123_456_789));
}

#[test]
fn existing_entries_are_replaced_and_existing_dirs_kept() {
    let t = tmp();
    let r = t.path();
    std::fs::create_dir_all(r.join("dir2file/sub")).unwrap();
    std::fs::write(r.join("dir2file/sub/f"), b"f").unwrap();
    std::fs::write(r.join("file2dir"), b"f").unwrap();
    std::fs::create_dir(r.join("kept")).unwrap();
    std::fs::write(r.join("kept/old"), b"old").unwrap();
    xattr::set(r.join("kept"), "user.stale", b"1").unwrap();
    std::os::unix::fs::symlink("kept", r.join("sym2file")).unwrap();
    std::fs::write(r.join("file"), b"old content that is longer").unwrap();
    let tar = Tar::new()
        .add(E::file("dir2file", b"now a file"))
        .add(E::dir("file2dir").mode(0o700))
        .add(E::file("file2dir/in", b"in"))
        .add(E::dir("kept").mode(0o711).owner(1, 2))
        .add(E::file("kept/new", b"new"))
        .add(E::file("sym2file", b"s"))
        .add(E::file("file", b"short"))
        .bytes();
    apply(r, &tar, Whiteouts::Delete).unwrap();
    assert_eq!(std::fs::read(r.join("dir2file")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(r.join("file2dir/in")).unwrap(), b"in");
    assert_eq!(names(&r.join("kept")), ["new", "old"]);
    let m = lstat(&r.join("kept"));
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o711, 1, 2));
    assert_eq!(xattr::get(r.join("kept"), "user.stale").unwrap(), None, "the tar describes the dir's xattrs");
    assert!(lstat(&r.join("sym2file")).file_type().is_file());
    assert_eq!(std::fs::read(r.join("file")).unwrap(), b"short");
    assert_eq!(std::fs::read(r.join("kept/old")).unwrap(), b"old", "not written through the replaced symlink");
}

// ------------------------------------------------------------------------------------------
// Round trips

fn base_tar() -> Vec<u8> {
    Tar::new()
        .add(E::dir("bin"))
        .add(E::file("bin/tool", b"tool").mode(0o755))
        .add(E::dir("d"))
        .add(E::file("d/keep", b"k"))
        .add(E::dir("d2r"))
        .add(E::file("d2r/child", b"c"))
        .add(E::dir("data"))
        .add(E::file("data/owned", b"o"))
        .add(E::dir("etc").mode(0o751))
        .add(E::file("etc/conf", b"conf v1"))
        .add(E::file("etc/conf2", b"c2"))
        .add(E::file("etc/same", b"aaaa"))
        .add(E::file("f2d", b"file"))
        .add(E::symlink("link", "etc/conf"))
        .add(E::file("movesrc", b"m"))
        .add(E::file("old.txt", b"old"))
        .add(E::dir("olddir"))
        .add(E::file("olddir/a", b"a"))
        .add(E::dir("olddir/sub"))
        .add(E::file("olddir/sub/b", b"b"))
        .add(E::dir("opq"))
        .add(E::file("opq/x", b"x"))
        .add(E::file("opq/y", b"y"))
        .add(E::file("touched", b"t"))
        .add(E::file("xfile", b"x").xattr("user.x", b"1"))
        .bytes()
}

/// The same edits a container would make, on a full tree or on a mounted overlay.
fn mutate(r: &Path) {
    use std::os::unix::fs::symlink;
    std::fs::write(r.join("new.txt"), b"new").unwrap();
    std::fs::write(r.join("etc/conf"), b"conf version 2").unwrap();
    // Same size and the same whole-second mtime: only the content tells.
    std::fs::write(r.join("etc/same"), b"bbbb").unwrap();
    set_mtime(&r.join("etc/same"), T0, 0);
    std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::lchown(r.join("data/owned"), Some(1), Some(2)).unwrap();
    std::fs::remove_file(r.join("old.txt")).unwrap();
    std::fs::remove_dir_all(r.join("olddir")).unwrap();
    std::fs::remove_dir_all(r.join("d2r")).unwrap();
    std::fs::write(r.join("d2r"), b"now a file").unwrap();
    std::fs::remove_file(r.join("f2d")).unwrap();
    std::fs::create_dir(r.join("f2d")).unwrap();
    std::fs::write(r.join("f2d/inner"), b"inner").unwrap();
    xattr::set(r.join("etc/conf2"), "user.new", b"v").unwrap();
    xattr::remove(r.join("xfile"), "user.x").unwrap();
    std::fs::create_dir(r.join("hl")).unwrap();
    std::fs::write(r.join("hl/a"), b"shared inode").unwrap();
    std::fs::hard_link(r.join("hl/a"), r.join("hl/b")).unwrap();
    std::fs::remove_file(r.join("link")).unwrap();
    symlink("etc/conf2", r.join("link")).unwrap();
    mkfifo(&r.join("fifo"));
    mknod_chr(&r.join("chr"), 1, 7);
    set_mtime(&r.join("touched"), 1_700_000_000, 123);
    std::fs::rename(r.join("movesrc"), r.join("data/moved")).unwrap();
    std::fs::remove_dir_all(r.join("opq")).unwrap();
    std::fs::create_dir(r.join("opq")).unwrap();
    std::fs::write(r.join("opq/z"), b"z").unwrap();
}

fn expected_changes() -> Vec<Change> {
    use ChangeKind::*;
    [
        (Modified, "bin/tool"),
        (Added, "chr"),
        (Modified, "d2r"),
        (Modified, "data"),
        (Added, "data/moved"),
        (Modified, "data/owned"),
        (Modified, "etc/conf"),
        (Modified, "etc/conf2"),
        (Modified, "etc/same"),
        (Modified, "f2d"),
        (Added, "f2d/inner"),
        (Added, "fifo"),
        (Added, "hl"),
        (Added, "hl/a"),
        (Added, "hl/b"),
        (Modified, "link"),
        (Deleted, "movesrc"),
        (Added, "new.txt"),
        (Deleted, "old.txt"),
        (Deleted, "olddir"),
        (Modified, "opq"),
        (Deleted, "opq/x"),
        (Deleted, "opq/y"),
        (Added, "opq/z"),
        (Modified, "touched"),
        (Modified, "xfile"),
    ]
    .into_iter()
    .map(|(kind, p)| Change { kind, path: PathBuf::from(p) })
    .collect()
}

fn show(c: &[Change]) -> String {
    c.iter().map(|c| format!("{:?} {}", c.kind, c.path.display())).collect::<Vec<_>>().join("\n")
}

fn read_tar_names(tar: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar);
    ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
}

#[test]
fn round_trip_compare_full_trees() {
    let t = tmp();
    let (lower, upper, target) = (t.path().join("lower"), t.path().join("upper"), t.path().join("target"));
    std::fs::create_dir(&lower).unwrap();
    apply(&lower, &base_tar(), Whiteouts::Delete).unwrap();
    cp_a(&lower, &upper);
    mutate(&upper);

    let src = DiffSource::Compare { lower: Some(&lower), upper: &upper };
    let ch = archive::changes("test", "layer", &src).unwrap();
    assert_eq!(show(&ch), show(&expected_changes()));

    let mut tar = Vec::new();
    let n = archive::write_diff("test", "layer", &src, &mut tar).unwrap();
    assert_eq!(n as usize, tar.len());
    let names = read_tar_names(&tar);
    assert!(names.contains(&".wh.olddir".to_string()), "{names:?}");
    assert!(names.contains(&"opq/.wh.x".to_string()), "full-tree diffs delete one by one: {names:?}");
    assert!(!names.iter().any(|n| n.starts_with("olddir/")), "a deleted dir is one whiteout: {names:?}");
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} not in {names:?}"));
    assert!(pos("hl/") < pos("hl/a") && pos("hl/a") < pos("hl/b"), "parents before children");
    {
        let mut ar = tar::Archive::new(&tar[..]);
        let hb = ar.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap() == Path::new("hl/b")).unwrap();
        assert_eq!(hb.header().entry_type(), EntryType::Link);
        assert_eq!(hb.link_name().unwrap().unwrap(), Path::new("hl/a"));
    }

    cp_a(&lower, &target);
    apply(&target, &tar, Whiteouts::Delete).unwrap();
    assert_same_tree(&upper, &target, DigestOptions::ALL);
    assert_eq!(lstat(&target.join("hl/a")).ino(), lstat(&target.join("hl/b")).ino(), "hardlink kept");
    // And nothing is left to diff.
    let again = archive::changes("test", "layer", &DiffSource::Compare { lower: Some(&upper), upper: &target }).unwrap();
    assert!(again.is_empty(), "{}", show(&again));

    // From an empty parent: everything is Added, and the tar rebuilds the tree.
    let empty_src = DiffSource::Compare { lower: None, upper: &upper };
    let all = archive::changes("test", "layer", &empty_src).unwrap();
    assert!(all.iter().all(|c| c.kind == ChangeKind::Added));
    let mut tar = Vec::new();
    archive::write_diff("test", "layer", &empty_src, &mut tar).unwrap();
    let fresh = t.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    apply(&fresh, &tar, Whiteouts::Delete).unwrap();
    assert_same_tree(&upper, &fresh, DigestOptions::ALL);
}

#[test]
fn round_trip_overlay_upper_through_a_real_mount() {
    let t = tmp();
    let p = |n: &str| t.path().join(n);
    for d in ["lower", "upper", "work", "merged", "upper2", "work2", "merged2"] {
        std::fs::create_dir(p(d)).unwrap();
    }
    apply(&p("lower"), &base_tar(), Whiteouts::Delete).unwrap();
    let merged_digest = {
        let _m = OverlayMount::new(&[&p("lower")], Some((&p("upper"), &p("work"))), &p("merged"));
        mutate(&p("merged"));
        tree_digest(&p("merged"), DigestOptions::ALL).unwrap()
    };
    assert!(!cowbench_drivers::sys::mounts::is_mountpoint(&p("merged")));

    let lowers = [p("lower")];
    let src = DiffSource::OverlayUpper { upper: &p("upper"), lowers: &lowers };
    let ch = archive::changes("test", "layer", &src).unwrap();
    assert_eq!(show(&ch), show(&expected_changes()));

    let mut tar = Vec::new();
    archive::write_diff("test", "layer", &src, &mut tar).unwrap();
    let names = read_tar_names(&tar);
    assert!(names.contains(&"opq/.wh..wh..opq".to_string()), "{names:?}");
    assert!(!names.contains(&"opq/.wh.x".to_string()), "the opaque marker covers hidden entries: {names:?}");
    assert!(names.contains(&".wh.movesrc".to_string()) && names.contains(&".wh.olddir".to_string()), "{names:?}");
    // Unchanged parents travel with their children so that their mtimes come back.
    assert!(names.contains(&"etc/".to_string()), "{names:?}");

    // Re-applied onto a copy of the parent as a full tree: the merged view comes back.
    let target = p("target");
    cp_a(&p("lower"), &target);
    apply(&target, &tar, Whiteouts::Delete).unwrap();
    let d = digest_differences(&merged_digest, &tree_digest(&target, DigestOptions::ALL).unwrap());
    assert!(d.is_empty(), "full-tree re-apply differs from the merged view:\n{}", d.join("\n"));

    // Re-applied in overlay form into a fresh upper: the kernel shows the same merged view.
    apply(&p("upper2"), &tar, Whiteouts::Overlay).unwrap();
    {
        let _m = OverlayMount::new(&[&p("lower")], Some((&p("upper2"), &p("work2"))), &p("merged2"));
        let d = digest_differences(&merged_digest, &tree_digest(&p("merged2"), DigestOptions::ALL).unwrap());
        assert!(d.is_empty(), "overlay re-apply differs from the merged view:\n{}", d.join("\n"));
    }
    // The upper written by apply diffs to the same change set.
    let src2 = DiffSource::OverlayUpper { upper: &p("upper2"), lowers: &lowers };
    assert_eq!(show(&archive::changes("test", "layer", &src2).unwrap()), show(&expected_changes()));
}

#[test]
fn overlay_upper_on_a_stack_respects_lower_whiteouts() {
    // lower0 (bottom) has a, b/, c; lower1 deletes a and makes b opaque; the upper adds a and
    // b/old again: both are Added (hidden below), c is Modified.
    let t = tmp();
    let p = |n: &str| t.path().join(n);
    for d in ["l0", "l1", "up"] {
        std::fs::create_dir(p(d)).unwrap();
    }
    apply(&p("l0"), &Tar::new().add(E::file("a", b"a")).add(E::dir("b")).add(E::file("b/old", b"o")).add(E::file("c", b"c")).bytes(), Whiteouts::Delete)
        .unwrap();
    apply(&p("l1"), &Tar::new().raw(b".wh.a", EntryType::Regular, None, b"").add(E::dir("b")).raw(b"b/.wh..wh..opq", EntryType::Regular, None, b"").bytes(), Whiteouts::Overlay).unwrap();
    apply(&p("up"), &Tar::new().add(E::file("a", b"a2")).add(E::dir("b")).add(E::file("b/old", b"o2")).add(E::file("c", b"c2")).bytes(), Whiteouts::Overlay).unwrap();
    let lowers = [p("l1"), p("l0")];
    let ch = archive::changes("test", "layer", &DiffSource::OverlayUpper { upper: &p("up"), lowers: &lowers }).unwrap();
    let got: Vec<(ChangeKind, String)> = ch.iter().map(|c| (c.kind, c.path.display().to_string())).collect();
    assert!(got.contains(&(ChangeKind::Added, "a".into())), "{got:?}");
    assert!(got.contains(&(ChangeKind::Added, "b/old".into())), "{got:?}");
    assert!(got.contains(&(ChangeKind::Modified, "c".into())), "{got:?}");
}

#[test]
fn aufs_branch_changes_and_round_trip() {
    let t = tmp();
    let p = |n: &str| t.path().join(n);
    std::fs::create_dir(p("lower")).unwrap();
    std::fs::create_dir(p("branch")).unwrap();
    whiteout_lower(&p("lower"));
    // The branch as aufs leaves it: whiteout files, an opaque dir, and aufs's own dirs.
    apply(&p("branch"), &whiteout_tar(), Whiteouts::Aufs).unwrap();
    for meta in [".wh..wh.plnk", ".wh..wh.aufs"] {
        std::fs::create_dir(p("branch").join(meta)).unwrap();
        std::fs::write(p("branch").join(meta).join("junk"), b"j").unwrap();
    }
    std::fs::write(p("branch/.wh..wh.orph"), b"").unwrap();
    std::fs::write(p("branch/keep"), b"k2").unwrap();

    let lowers = [p("lower")];
    let src = DiffSource::AufsBranch { branch: &p("branch"), lowers: &lowers };
    let ch = archive::changes("test", "layer", &src).unwrap();
    use ChangeKind::*;
    let want: Vec<Change> = [
        (Added, "added"),
        (Modified, "d"),
        (Deleted, "d/old1"),
        (Added, "d/new_after"),
        (Added, "d/new_before"),
        (Added, "d/sub"),
        (Deleted, "gone"),
        (Deleted, "gonedir"),
        (Modified, "keep"),
    ]
    .into_iter()
    .map(|(kind, p)| Change { kind, path: PathBuf::from(p) })
    .collect();
    let mut want = want;
    want.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(show(&ch), show(&want));

    let mut tar = Vec::new();
    archive::write_diff("test", "layer", &src, &mut tar).unwrap();
    let names = read_tar_names(&tar);
    assert!(!names.iter().any(|n| n.contains(".wh..wh.plnk") || n.contains(".wh..wh.aufs") || n.contains(".wh..wh.orph")), "{names:?}");
    assert!(names.contains(&"d/.wh..wh..opq".to_string()), "{names:?}");
    let target = p("target");
    cp_a(&p("lower"), &target);
    apply(&target, &tar, Whiteouts::Delete).unwrap();
    expect_merged_result_keep(&target, b"k2");
}

fn expect_merged_result_keep(root: &Path, keep: &[u8]) {
    assert_eq!(names(root), ["added", "d", "keep"]);
    assert_eq!(names(&root.join("d")), ["new_after", "new_before", "sub"]);
    assert!(names(&root.join("d/sub")).is_empty());
    assert_eq!(std::fs::read(root.join("keep")).unwrap(), keep);
}

#[test]
fn long_names_and_link_targets_round_trip() {
    let t = tmp();
    let (lower, upper, target) = (t.path().join("lower"), t.path().join("upper"), t.path().join("target"));
    std::fs::create_dir(&lower).unwrap();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(200));
    let long_target = "t".repeat(300);
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(upper.join(&long_dir)).unwrap();
    std::fs::write(upper.join(&long_file), b"long").unwrap();
    std::os::unix::fs::symlink(&long_target, upper.join(format!("{long_dir}/s"))).unwrap();
    std::fs::hard_link(upper.join(&long_file), upper.join(format!("{long_dir}/{}", "h".repeat(150)))).unwrap();
    let src = DiffSource::Compare { lower: Some(&lower), upper: &upper };
    let mut tar = Vec::new();
    archive::write_diff("test", "layer", &src, &mut tar).unwrap();
    cp_a(&lower, &target);
    apply(&target, &tar, Whiteouts::Delete).unwrap();
    assert_same_tree(&upper, &target, DigestOptions::ALL);
}

// ------------------------------------------------------------------------------------------
// Corrupt and malformed layers: refused with an archive error naming the layer and the entry,
// nothing written outside the layer.

/// Apply `tar` in a fresh jail; it must be refused as an archive error of layer "test"/"layer"
/// naming `entry` (None: an error about the stream, not one entry) with `needle` in the
/// message. Returns the error's text.
fn refused_corrupt(tar: &[u8], entry: Option<&str>, needle: &str) -> String {
    let j = Jail::new();
    let res = apply(&j.dest, tar, Whiteouts::Delete);
    let text = match &res {
        Err(e @ Error::Archive { driver, key, entry: got, message }) => {
            assert_eq!((driver.as_str(), key.as_str()), ("test", "layer"));
            assert_eq!(got.as_deref(), entry.map(Path::new), "wrong entry named in: {e}");
            assert!(message.contains(needle), "{needle:?} not in: {e}");
            e.to_string()
        }
        other => panic!("not refused as an archive error (wanted {needle:?}): {other:?}"),
    };
    assert!(text.starts_with("test: layer 'layer': archive entry "), "{text}");
    j.assert_untouched();
    text
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn zstd_checked(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    z.include_checksum(true).unwrap();
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A layer whose file "big" does not compress, so that a compressed stream cut in half is
/// cut inside it.
fn incompressible_tar() -> Vec<u8> {
    let mut x: u32 = 12345;
    let big: Vec<u8> = (0..300_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    Tar::new().add(E::dir("etc")).add(E::file("etc/hosts", b"127.0.0.1 localhost\n")).add(E::file("big", &big)).add(E::symlink("hosts", "etc/hosts")).bytes()
}

#[test]
fn corrupt_gzip_streams_are_refused() {
    let plain = incompressible_tar();
    let gz = gzip(&plain);
    // Cut short: inside the deflate data, and inside the trailer.
    refused_corrupt(&gz[..gz.len() / 2], Some("big"), "corrupt gzip layer stream");
    refused_corrupt(&gz[..gz.len() - 3], None, "corrupt gzip layer stream");
    // Trailer CRC-32 and ISIZE: only checked when the stream is read past the tar's end.
    for at in [gz.len() - 8, gz.len() - 2] {
        let mut bad = gz.clone();
        bad[at] ^= 0x55;
        refused_corrupt(&bad, None, "corrupt gzip layer stream");
    }
    // A corrupt deflate block.
    let mut bad = gz.clone();
    for b in &mut bad[gz.len() / 3..gz.len() / 3 + 64] {
        *b = !*b;
    }
    let j = Jail::new();
    match apply(&j.dest, &bad, Whiteouts::Delete) {
        Err(Error::Archive { key, message, .. }) => assert!(key == "layer" && message.contains("gzip"), "{message}"),
        other => panic!("corrupt deflate data: {other:?}"),
    }
    j.assert_untouched();
}

#[test]
fn corrupt_zstd_streams_are_refused() {
    let plain = incompressible_tar();
    let z = zstd_checked(&plain);
    refused_corrupt(&z[..z.len() / 2], Some("big"), "corrupt zstd layer stream");
    refused_corrupt(&z[..z.len() - 2], None, "corrupt zstd layer stream");
    // Frame checksum (the last 4 bytes).
    let mut bad = z.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    refused_corrupt(&bad, None, "corrupt zstd layer stream");
    // Corrupt compressed data.
    let mut bad = z.clone();
    for b in &mut bad[z.len() / 2..z.len() / 2 + 32] {
        *b = !*b;
    }
    let j = Jail::new();
    match apply(&j.dest, &bad, Whiteouts::Delete) {
        Err(Error::Archive { key, message, .. }) => assert!(key == "layer" && message.contains("zstd"), "{message}"),
        other => panic!("corrupt zstd data: {other:?}"),
    }
    j.assert_untouched();
}

#[test]
fn truncated_tars_are_refused() {
    let plain = sample_tar();
    // No end-of-archive blocks (the stream ends right after the last entry).
    let end = plain.len() - 1024;
    assert!(plain[end..].iter().all(|b| *b == 0));
    let text = refused_corrupt(&plain[..end], None, "without the end-of-archive marker");
    assert!(text.contains("after entry \"hosts\""), "{text}");
    // A short entry body (cut inside "big"), plain and gzip-compressed.
    let cut = plain.len() / 2;
    refused_corrupt(&plain[..cut], Some("big"), "truncated layer tar");
    refused_corrupt(&gzip(&plain[..cut]), Some("big"), "truncated layer tar");
    // Cut inside a header block.
    let hosts_header = 512 * 2 + 512;
    refused_corrupt(&plain[..hosts_header + 100], None, "corrupt or truncated layer tar");
    // An empty stream is an empty layer.
    let j = Jail::new();
    assert_eq!(apply(&j.dest, b"", Whiteouts::Delete).unwrap().entries, 0);
}

#[test]
fn header_checksum_errors_are_refused() {
    let plain = sample_tar();
    // Second header ("etc/hosts"): one byte of its name changed.
    let mut bad = plain.clone();
    bad[512 + 2] = b'X';
    let text = refused_corrupt(&bad, None, "checksum");
    assert!(text.contains("after entry \"etc\""), "{text}");
}

/// A tar with PAX records `recs` for a 5-byte file "f".
fn pax_tar(recs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions(recs.iter().copied()).unwrap();
    let mut h = Header::new_ustar();
    h.set_path("f").unwrap();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(5);
    h.set_cksum();
    b.append(&h, &b"hello"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn bad_pax_records_are_refused() {
    for (k, v) in [
        ("size", &b"-1"[..]),
        ("size", b"abc"),
        ("size", b""),
        ("size", b"+5"),
        ("size", b"99999999999999999999999"),
        ("mtime", b"yesterday"),
        ("mtime", b"99999999999999999999999"),
        ("atime", b"1.x"),
        ("uid", b"-1"),
        ("uid", b"4294967296"),
        ("gid", b"x"),
    ] {
        let tar = pax_tar(&[(k, v)]);
        refused_corrupt(&tar, Some("f"), k);
    }
    // A size larger than the data that follows: the body is cut short.
    refused_corrupt(&pax_tar(&[("size", b"1000000000000")]), Some("f"), "truncated");
    // Valid records apply.
    let j = Jail::new();
    apply(&j.dest, &pax_tar(&[("size", b"5"), ("uid", b"7"), ("mtime", b"1600000000.5")]), Whiteouts::Delete).unwrap();
    assert_eq!(std::fs::read(j.dest.join("f")).unwrap(), b"hello");
    assert_eq!(lstat(&j.dest.join("f")).uid(), 7);
}

/// A header of type `kind` named `name` that declares `size` bytes, followed by `data` only.
fn extension_header(kind: EntryType, name: &str, size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

#[test]
fn oversized_extension_headers_are_refused_before_they_are_read() {
    // 1 GiB of PAX records declared, 1 MiB present: refused on the header, so the records are
    // never read (reading them would end in a truncation error instead).
    let rec = b"30 SCHILY.xattr.user.k=vvvvvv\n";
    let data: Vec<u8> = rec.iter().copied().cycle().take(1 << 20).collect();
    for (kind, name) in [
        (EntryType::XHeader, "PaxHeaders.0/big"),
        (EntryType::GNULongName, "@LongLink"),
        (EntryType::GNULongLink, "@LongLink"),
    ] {
        let tar = extension_header(kind, name, 1 << 30, &data);
        let text = refused_corrupt(&tar, None, "over the limit");
        assert!(text.contains(&format!("{name:?}")), "{text}");
    }
    // Just over the limit, after a valid entry.
    let mut tar = Tar::new().add(E::file("ok", b"ok")).bytes();
    tar.truncate(tar.len() - 1024);
    tar.extend(extension_header(EntryType::XHeader, "PaxHeaders.0/x", archive::MAX_EXTENSION + 1, &[]));
    let text = refused_corrupt(&tar, None, "over the limit");
    assert!(text.contains("after entry \"ok\""), "{text}");
    // At the limit: accepted (a long path record).
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/f", "d".repeat(200));
    b.append_pax_extensions([("path", long.as_bytes())]).unwrap();
    let mut h = Header::new_ustar();
    h.set_path("short").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    let j = Jail::new();
    apply(&j.dest, &b.into_inner().unwrap(), Whiteouts::Delete).unwrap();
    assert!(exists(&j.dest.join(long)));
}

#[test]
fn malformed_whiteouts_are_refused() {
    for name in [".wh..", ".wh...", "a/.wh..", "a/.wh.b/../c", "a/../.wh.x", ".wh.x/y", "d/.wh.x/./y", ".wh."] {
        for wh in [|| Whiteouts::Delete, || Whiteouts::Overlay, || Whiteouts::Aufs] {
            let tar = Tar::new().add(E::dir("a")).raw(name.as_bytes(), EntryType::Regular, None, b"").bytes();
            refused_in_fresh_jail(|_| {}, tar, name, wh);
        }
    }
}

#[test]
fn unknown_entry_types_are_refused_by_name() {
    for (t, shown) in [(b'V', "'V' (GNU volume label)"), (b'D', "'D' (GNU dump directory)"), (b'Z', "'Z' (unknown type)"), (200u8, "200 (unknown type)")] {
        let tar = Tar::new().add(E::file("ok", b"ok")).raw(b"odd", EntryType::new(t), None, b"data").bytes();
        let text = refused_corrupt(&tar, Some("odd"), "unsupported tar entry type");
        assert!(text.contains(shown), "{text}");
        assert!(!text.contains("Nonexhaustive"), "{text}");
    }
}

#[test]
fn names_in_errors_are_escaped() {
    let name = b"bad\x1b[2J\xff\n";
    let tar = Tar::new().raw(name, EntryType::new(b'V'), None, b"").bytes();
    let j = Jail::new();
    let e = apply(&j.dest, &tar, Whiteouts::Delete).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(r#""bad\u{1b}[2J\xFF\n""#), "{text}");
    assert!(!text.bytes().any(|b| b == 0x1b || b == b'\n'), "{text:?}");
    assert!(!text.contains('\u{fffd}'), "{text}");
}

// ------------------------------------------------------------------------------------------
// Pathological but valid layers: applied, and removable again with few descriptors.

const CHILD_ENV: &str = "COWBENCH_ARCHIVE_CHILD";

/// Run `action` in a child process (this test binary, running only `child_process_entry`),
/// with RLIMIT_NOFILE `nofile` if given. Returns the lines it printed after `CHILD: `.
fn run_child(action: &str, a: &Path, b: &Path, nofile: Option<u64>) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, action)
        .env("COWBENCH_ARCHIVE_CHILD_A", a)
        .env("COWBENCH_ARCHIVE_CHILD_B", b);
    if let Some(n) = nofile {
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit { rlim_cur: n, rlim_max: n };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child {action} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // libtest may print its "test ... " prefix on the same line.
    let lines: Vec<String> = stdout.lines().filter_map(|l| l.split_once("CHILD: ")).map(|(_, r)| r.to_string()).collect();
    assert!(!lines.is_empty(), "child {action} printed nothing:\n{stdout}");
    lines
}

/// The work of [`run_child`]; a no-op in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(action) = std::env::var(CHILD_ENV) else { return };
    let a = PathBuf::from(std::env::var_os("COWBENCH_ARCHIVE_CHILD_A").unwrap());
    let b = PathBuf::from(std::env::var_os("COWBENCH_ARCHIVE_CHILD_B").unwrap());
    match action.as_str() {
        // Apply tar file `a` into `b`, streamed from the file; report the peak RSS.
        "apply" => {
            let mut f = std::fs::File::open(&a).unwrap();
            let st = archive::apply("test", "layer", &mut f, &b, Whiteouts::Delete).unwrap();
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
            println!("CHILD: entries {}", st.entries);
            println!("CHILD: vmhwm_kib {hwm}");
        }
        "remove" => {
            archive::remove_tree(&a).unwrap();
            println!("CHILD: removed");
        }
        other => panic!("unknown child action {other}"),
    }
}

/// A layer with one empty file below `depth` directories (named by a PAX path record, the
/// parents implied).
fn deep_tar(depth: usize) -> Vec<u8> {
    let path = format!("{}f", "d/".repeat(depth));
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", path.as_bytes())]).unwrap();
    let mut h = Header::new_ustar();
    h.set_path("deep-file").unwrap();
    h.set_mode(0o644);
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

fn depth_below(root: &Path) -> usize {
    // Walk down the single chain "d/d/d/..." with openat (no path length limit).
    let mut fd = unsafe { libc::open(CString::new(root.as_os_str().as_bytes()).unwrap().as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    let mut depth = 0;
    loop {
        let next = unsafe { libc::openat(fd, c"d".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) };
        if next < 0 {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::fstatat(fd, c"f".as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }, 0, "no file at the bottom");
            unsafe { libc::close(fd) };
            return depth;
        }
        unsafe { libc::close(fd) };
        fd = next;
        depth += 1;
    }
}

/// Removes a tree too deep for `TempDir`'s own removal (std's, one stack frame and descriptor
/// per level) before the TempDir goes, also when the test fails.
struct DeepCleanup(PathBuf);

impl Drop for DeepCleanup {
    fn drop(&mut self) {
        let _ = archive::remove_tree(&self.0);
    }
}

#[test]
fn very_deep_layer_applies_and_is_removed_with_few_descriptors() {
    let t = tmp();
    let _cleanup = DeepCleanup(t.path().join("layer"));
    let tar_path = t.path().join("deep.tar");
    std::fs::write(&tar_path, deep_tar(25_000)).unwrap();
    let layer = t.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    // Both in a process allowed 64 open files (std's remove_dir_all needs one per level).
    let out = run_child("apply", &tar_path, &layer, Some(64));
    assert_eq!(out[0], "entries 1");
    assert_eq!(depth_below(&layer), 25_000);
    run_child("remove", &layer, Path::new("-"), Some(64));
    assert!(!exists(&layer));
}

#[test]
fn many_files_and_longest_names_apply_and_are_removed() {
    let t = tmp();
    let layer = t.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..200_000u32 {
        let mut h = Header::new_ustar();
        h.set_path(format!("d{}/f{i}", i / 2000)).unwrap();
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
    }
    let n255 = "n".repeat(255);
    for (p, kind) in [(format!("{n255}/"), EntryType::Directory), (format!("{n255}/{n255}"), EntryType::Regular)] {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, &p, &b""[..]).unwrap();
    }
    let st = apply(&layer, &b.into_inner().unwrap(), Whiteouts::Delete).unwrap();
    assert_eq!(st.entries, 200_002);
    assert_eq!(std::fs::read_dir(layer.join("d99")).unwrap().count(), 2000);
    assert!(exists(&layer.join(format!("{n255}/{n255}"))));
    archive::remove_tree(&layer).unwrap();
    assert!(!exists(&layer));
    // One byte longer than a name may be: a clear error naming the entry.
    let j = Jail::new();
    let n256 = "n".repeat(256);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(0);
    b.append_data(&mut h, &n256, &b""[..]).unwrap();
    assert_refused(apply(&j.dest, &b.into_inner().unwrap(), Whiteouts::Delete), &n256);
    j.assert_untouched();
}

/// Peak memory of applying a one-file layer 8,000 directories deep, against a flat one-file
/// layer, each in its own process (VmHWM). Printed; the deep one must stay within 2x.
#[test]
fn memory_of_a_deep_layer_stays_close_to_a_flat_one() {
    let t = tmp();
    let _cleanup: Vec<DeepCleanup> = [0, 8_000].iter().map(|d| DeepCleanup(t.path().join(format!("layer{d}")))).collect();
    let mut peak = BTreeMap::new();
    for depth in [0usize, 8_000] {
        let tar_path = t.path().join(format!("{depth}.tar"));
        std::fs::write(&tar_path, deep_tar(depth)).unwrap();
        let layer = t.path().join(format!("layer{depth}"));
        std::fs::create_dir(&layer).unwrap();
        let out = run_child("apply", &tar_path, &layer, None);
        let kib: u64 = out.iter().find_map(|l| l.strip_prefix("vmhwm_kib ")).unwrap().parse().unwrap();
        println!("apply of a one-file layer {depth} directories deep ({} bytes of tar): peak RSS {kib} KiB", std::fs::metadata(&tar_path).unwrap().len());
        peak.insert(depth, kib);
        archive::remove_tree(&layer).unwrap();
    }
    assert!(peak[&8_000] <= 2 * peak[&0], "8,000 deep: {} KiB, flat: {} KiB", peak[&8_000], peak[&0]);
}

// ------------------------------------------------------------------------------------------
// Fuzzing: random mutations of small valid layers. Whatever the bytes, apply returns (no
// panic, no hang), writes nothing outside the layer, and the layer can be removed.

/// Small valid layers to mutate: nested dirs, files, symlinks, hardlinks, whiteouts, an
/// opaque marker, PAX records and a GNU long name.
fn fuzz_seeds() -> Vec<Vec<u8>> {
    let long = format!("a/b/{}", "l".repeat(150));
    vec![
        Tar::new()
            .add(E::dir("a"))
            .add(E::dir("a/b"))
            .add(E::file("a/b/f", b"hello"))
            .add(E::file("a/g", &[7u8; 1500]).mtime(T0, 5).xattr("user.k", b"v"))
            .add(E::symlink("a/s", "b/f"))
            .add(E::hardlink("a/h", "a/b/f"))
            .add(E::file(&long, b"long"))
            .add(E::file("a/.wh.gone", b""))
            .add(E::file("a/b/.wh..wh..opq", b""))
            .add(E::symlink("up", "../outside"))
            .bytes(),
        Tar::new()
            .add(E::dir("d").mode(0o700).owner(1, 2))
            .add(E::file("d/x", b"x"))
            .add(E::new("d/fifo", EntryType::Fifo, 0o600))
            .add(E::device("d/null", EntryType::Char, 1, 3))
            .add(E::file(".wh.lower", b""))
            .add(E::hardlink("d/y", "d/x"))
            .bytes(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    /// Copy the 512-byte block at one index over another.
    Splice(usize, usize),
    /// Insert a header block (valid checksum) with this type byte and size.
    Header(usize, u8, u64),
}

fn mutate_bytes(data: &mut Vec<u8>, m: &Mutation) {
    let blocks = data.len().div_ceil(512).max(1);
    match *m {
        Mutation::Flip(i, v) if !data.is_empty() => {
            let n = data.len();
            data[i % n] ^= v | 1;
        }
        Mutation::Truncate(i) => data.truncate(i % (data.len() + 1)),
        Mutation::Splice(from, to) => {
            let (from, to) = ((from % blocks) * 512, (to % blocks) * 512);
            let block: Vec<u8> = data.iter().skip(from).take(512).copied().collect();
            for (k, b) in block.into_iter().enumerate() {
                if let Some(d) = data.get_mut(to + k) {
                    *d = b;
                }
            }
        }
        Mutation::Header(at, t, size) => {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..3].copy_from_slice(b"new");
            h.set_entry_type(EntryType::new(t));
            h.set_mode(0o644);
            h.set_size(size);
            h.set_cksum();
            let at = ((at % blocks) * 512).min(data.len());
            data.splice(at..at, h.as_bytes().iter().copied());
        }
        _ => {}
    }
}

#[test]
fn fuzzed_layers_never_escape_panic_or_hang() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let seeds = fuzz_seeds();
    for (i, seed) in seeds.iter().enumerate() {
        for data in [seed.clone(), gzip(seed), zstd_checked(seed)] {
            let j = Jail::new();
            let wh = if i % 2 == 0 { Whiteouts::Delete } else { Whiteouts::Overlay };
            apply(&j.dest, &data, wh).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        }
    }
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Flip(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
        (any::<usize>(), any::<u8>(), 0u64..4096).prop_map(|(a, t, s)| Mutation::Header(a, t, s)),
    ];
    // Seed, compression (none, gzip, zstd), whether to mutate the compressed bytes, mutations.
    let case = (0..seeds.len(), 0u8..3, any::<bool>(), proptest::collection::vec(mutation, 0..6));
    // PROPTEST_CASES runs more (a longer campaign by hand).
    let n: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let mut runner = TestRunner::new(Config { cases: n, failure_persistence: None, ..Config::default() });
    let (cases, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let started = std::time::Instant::now();
    runner
        .run(&case, |(seed, compression, mutate_compressed, muts)| {
            let compress = |d: &[u8]| match compression {
                1 => gzip(d),
                2 => zstd_checked(d),
                _ => d.to_vec(),
            };
            let mut data = seeds[seed].clone();
            if mutate_compressed {
                data = compress(&data);
            }
            for m in &muts {
                mutate_bytes(&mut data, m);
            }
            if !mutate_compressed {
                data = compress(&data);
            }
            let j = Jail::new();
            let dest = j.dest.clone();
            let wh = seed % 2;
            let (tx, rx) = std::sync::mpsc::channel();
            let worker = std::thread::spawn(move || {
                let wh = if wh == 0 { Whiteouts::Delete } else { Whiteouts::Overlay };
                let r = archive::apply("test", "layer", &mut &data[..], &dest, wh);
                let _ = tx.send(r.map_err(|e| e.to_string()));
            });
            let result = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(r) => r,
                Err(_) => {
                    let panicked = worker.join().is_err();
                    panic!("apply did not return within 30 s (panicked: {panicked}) for {muts:?}");
                }
            };
            worker.join().unwrap();
            cases.set(cases.get() + 1);
            refused.set(refused.get() + u32::from(result.is_err()));
            j.assert_untouched();
            archive::remove_tree(&j.dest).unwrap();
            assert!(!exists(&j.dest));
            Ok(())
        })
        .unwrap();
    println!("fuzzed layers: {} cases ({} refused) in {:.1} s", cases.get(), refused.get(), started.elapsed().as_secs_f64());
    assert!(cases.get() >= n);
}
