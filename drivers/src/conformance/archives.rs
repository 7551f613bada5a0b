//! Layer tars through the driver: diff and re-apply, whiteouts and opaque directories, and
//! hostile archives that must be refused without touching anything outside the layer.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::driver::ChangeKind;
use crate::error::Error;

use super::tree::{assert_trees_eq, tree_digest};
use super::util::*;
use super::Fixture;

fn diff_of(fx: &Fixture, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = fx.driver().diff(key, &mut out).unwrap_or_else(|e| panic!("diff of {key}: {e}"));
    assert_eq!(n, out.len() as u64, "diff of {key}: returned size vs bytes written");
    out
}

fn entry_names(tar_bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string().trim_end_matches('/').to_string())
        .collect()
}

/// The diff of a layer applied on a fresh layer of the same parent gives identical content
/// (tree digest with file mtimes), the same change set and a diff of the same size.
pub fn diff_reapplied_on_fresh_parent(fx: &Fixture) {
    let big = random_bytes(1 << 20, 11);
    layer(fx, "base", None, |p| {
        write(&p.join("etc/config"), b"base config\n");
        write(&p.join("etc/removed"), b"to be removed\n");
        write(&p.join("bin/tool"), b"#!/bin/sh\necho base\n");
        chmod(&p.join("bin/tool"), 0o755);
        write(&p.join("gone/a"), b"a");
        write(&p.join("gone/b/c"), b"c");
        write(&p.join("opaque/old"), b"old");
        write(&p.join("owned"), b"o");
    });
    layer(fx, "changes", Some("base"), |p| {
        write(&p.join("etc/config"), b"changed config, longer than before\n");
        fs::remove_file(p.join("etc/removed")).unwrap();
        fs::remove_dir_all(p.join("gone")).unwrap();
        fs::remove_dir_all(p.join("opaque")).unwrap();
        write(&p.join("opaque/new"), b"new");
        write(&p.join("data/big"), &big);
        write(&p.join("data/sparse-ish"), vec![0u8; 10_000]);
        chown(&p.join("owned"), 33, 44);
        std::os::unix::fs::symlink("../etc/config", p.join("data/link")).unwrap();
        fs::hard_link(p.join("data/big"), p.join("data/big-hardlink")).unwrap();
        mkdir(&p.join("data/private"), 0o700);
        chown(&p.join("data/private"), 5, 5);
        let fifo = std::ffi::CString::new(p.join("data/fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        xattr::set(p.join("data/big"), "user.cowbench", b"kept").ok();
    });
    let tar1 = diff_of(fx, "changes");
    let names = entry_names(&tar1);
    for want in ["etc/config", "etc/.wh.removed", ".wh.gone", "data/big", "data/link"] {
        assert!(names.iter().any(|n| n == want), "diff lacks {want}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("gone/")), "diff exports entries below a whiteout: {names:?}");
    assert!(!names.iter().any(|n| n == "bin/tool"), "diff exports an unchanged file: {names:?}");
    let d = fx.driver();
    d.prepare("reapplied", Some("base"), &no_labels()).unwrap();
    let stats = d.apply("reapplied", &mut tar1.as_slice()).unwrap_or_else(|e| panic!("apply the diff: {e}"));
    assert!(stats.entries >= 8, "apply stats {stats:?}");
    assert!(stats.whiteouts >= 2, "apply stats {stats:?}");
    assert!(stats.bytes >= big.len() as u64, "apply stats {stats:?}");
    d.commit("reapplied-c", "reapplied", &no_labels()).unwrap();
    let original = with_view(fx, "changes", tree_digest);
    let copy = with_view(fx, "reapplied-c", tree_digest);
    assert_trees_eq(&original, &copy, true, "layer vs its diff re-applied");
    let g = mounted(fx, "reapplied-c");
    let a = fs::metadata(g.path().join("data/big")).unwrap();
    let b = fs::metadata(g.path().join("data/big-hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlink re-applied as a hardlink");
    unmount(g);
    let mut c1 = d.changes("changes").unwrap();
    let mut c2 = d.changes("reapplied-c").unwrap();
    c1.sort();
    c2.sort();
    assert_eq!(c1, c2, "change sets");
    assert!(c1.iter().any(|c| c.path == Path::new("etc/removed") && c.kind == ChangeKind::Deleted));
    let tar2 = diff_of(fx, "reapplied-c");
    assert_eq!(tar1.len(), tar2.len(), "diff sizes of the layer and of its re-application");
    assert_eq!(entry_names(&tar1), entry_names(&tar2));
}

/// An OCI layer tar with `.wh.` whiteouts and an opaque marker, gzip-compressed, applied on a
/// parent: the whiteouts hide the parent's entries and are not visible as files.
pub fn apply_whiteouts_and_opaque(fx: &Fixture) {
    layer(fx, "base", None, |p| {
        write(&p.join("keep"), b"keep");
        write(&p.join("del"), b"del");
        write(&p.join("dir/old1"), b"1");
        write(&p.join("dir/old2"), b"2");
        write(&p.join("deldir/x"), b"x");
    });
    let mut tar = RawTar::new();
    tar.file(".wh.del", b"")
        .file(".wh.deldir", b"")
        .dir("dir")
        .file("dir/.wh..wh..opq", b"")
        .file("dir/new", b"new")
        .file("added", b"added");
    let plain = tar.finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let d = fx.driver();
    d.prepare("wh", Some("base"), &no_labels()).unwrap();
    let st = d.apply("wh", &mut gz.as_slice()).unwrap_or_else(|e| panic!("apply gzip layer: {e}"));
    assert_eq!(st.whiteouts, 3, "whiteouts counted: {st:?}");
    d.commit("wh-c", "wh", &no_labels()).unwrap();
    let check = |p: &Path| {
        let t = tree_digest(p);
        let paths = t.paths();
        assert_eq!(paths, vec![".", "added", "dir", "dir/new", "keep"], "tree after whiteouts");
        assert_eq!(read(&p.join("dir/new")), b"new");
    };
    with_view(fx, "wh-c", check);
    layer(fx, "child", Some("wh-c"), check);
    let mut changes: Vec<_> = d.changes("wh-c").unwrap().into_iter().map(|c| (c.path, c.kind)).collect();
    changes.retain(|(p, _)| p != Path::new("dir"));
    changes.sort();
    let mut want = vec![
        (PathBuf::from("added"), ChangeKind::Added),
        (PathBuf::from("del"), ChangeKind::Deleted),
        (PathBuf::from("deldir"), ChangeKind::Deleted),
        (PathBuf::from("dir/new"), ChangeKind::Added),
    ];
    want.sort();
    // An opaque directory may also list the hidden entries as deleted.
    changes.retain(|(p, k)| !(p.starts_with("dir") && *k == ChangeKind::Deleted));
    assert_eq!(changes, want);
}

/// What an escaping entry would hit.
struct Outside {
    dir: PathBuf,
    secret: PathBuf,
}

impl Outside {
    fn new(fx: &Fixture) -> Self {
        let dir = fx.dir("outside");
        let secret = dir.join("secret");
        write(&secret, b"secret");
        Outside { dir, secret }
    }

    /// Nothing was created, changed or linked outside the layer.
    fn check(&self, fx: &Fixture, case: &str) {
        let names: Vec<_> = fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")], "{case}: outside dir changed");
        assert_eq!(read(&self.secret), b"secret", "{case}: secret overwritten");
        let m = fs::metadata(&self.secret).unwrap();
        assert_eq!(m.nlink(), 1, "{case}: secret got a hardlink");
        assert_eq!(m.mode() & 0o7777, 0o644, "{case}: secret's mode changed");
        // Escapes with fewer `..` land somewhere in the test root (the driver's own tree):
        // no file of that name may exist anywhere under it, nor at the filesystem root.
        for e in walkdir::WalkDir::new(fx.root()).into_iter().filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy();
            assert!(!n.starts_with("cowbench-pwned"), "{case}: {} was created", e.path().display());
        }
        assert!(!exists(Path::new("/cowbench-pwned")), "{case}: /cowbench-pwned was created");
    }
}

/// Hostile layer tars applied through the driver give `Error::Archive` and change nothing
/// outside the layer: `..` paths, absolute paths, symlinks and hardlinks pointing outside,
/// a symlinked parent directory.
pub fn hostile_tar_apply(fx: &Fixture) {
    let out = Outside::new(fx);
    let outside = out.dir.display().to_string();
    let climb = "../".repeat(40);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot file", RawTar::new().file("../cowbench-pwned-1", b"x").finish()),
        ("deep dotdot file", RawTar::new().file(&format!("{climb}{}/cowbench-pwned-2", &outside[1..]), b"x").finish()),
        ("dotdot in the middle", RawTar::new().dir("a").file("a/../../cowbench-pwned-3", b"x").finish()),
        ("absolute path", RawTar::new().file(&format!("{outside}/cowbench-pwned-4"), b"x").finish()),
        (
            "write through an absolute symlink",
            RawTar::new().symlink("evil", &outside).file("evil/cowbench-pwned-5", b"x").finish(),
        ),
        (
            "write through a relative escaping symlink",
            RawTar::new().symlink("evil", &format!("{climb}{}", &outside[1..])).file("evil/cowbench-pwned-6", b"x").finish(),
        ),
        (
            "symlinked parent directory",
            RawTar::new().dir("d").symlink("d/up", "../..").file("d/up/cowbench-pwned-7", b"x").finish(),
        ),
        (
            "overwrite a file through a symlink",
            RawTar::new().symlink("s", &out.secret.display().to_string()).file("s", b"pwned").finish(),
        ),
        ("hardlink to an absolute path", RawTar::new().hardlink("h", &out.secret.display().to_string()).finish()),
        ("hardlink with dotdot", RawTar::new().hardlink("h", &format!("{climb}{}", &out.secret.display().to_string()[1..])).finish()),
        (
            "hardlink through a symlink",
            RawTar::new().symlink("s", &outside).hardlink("h", "s/secret").finish(),
        ),
        (
            "whiteout outside",
            RawTar::new().file(&format!("{climb}{}/.wh.secret", &outside[1..]), b"").finish(),
        ),
    ];
    layer(fx, "base", None, |p| write(&p.join("base"), b"base"));
    let d = fx.driver();
    for (i, (case, tar)) in cases.iter().enumerate() {
        let key = format!("hostile-{i}");
        d.prepare(&key, Some("base"), &no_labels()).unwrap();
        let r = d.apply(&key, &mut tar.as_slice());
        match &r {
            Err(Error::Archive { key: k, .. }) => assert_eq!(k, &key, "{case}: error names the layer"),
            other => {
                // The symlink-overwrite case may legitimately succeed by replacing the symlink
                // inside the layer (the entry's own path is inside); it must not follow it.
                if !(other.is_ok() && *case == "overwrite a file through a symlink") {
                    panic!("{case}: expected Error::Archive, got {other:?}");
                }
            }
        }
        out.check(fx, case);
        // The layer is still usable and the parent untouched.
        let g = mounted(fx, &key);
        assert_eq!(read(&g.path().join("base")), b"base", "{case}");
        unmount(g);
        d.remove(&key).unwrap();
    }
    with_view(fx, "base", |p| {
        let t = tree_digest(p);
        assert_eq!(t.paths(), vec![".", "base"]);
    });
    out.check(fx, "after all cases");
}
