//! What a layer changes and whether commit keeps it: modified, deleted, moved, chowned files,
//! removed directories, directory permissions, repeated updates, usage.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::driver::{Change, ChangeKind};

use super::tree::{assert_trees_eq, tree_digest};
use super::util::*;
use super::Fixture;

fn changes_of(fx: &Fixture, key: &str) -> Vec<Change> {
    let c = fx.driver().changes(key).unwrap_or_else(|e| panic!("changes of {key}: {e}"));
    let mut sorted = c.clone();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(c, sorted, "changes of {key} are sorted by path");
    c
}

/// Check a change set: exactly `want` (path, kind) for everything but directories; a change
/// not in `want` is allowed only when it is a `Modified` directory that is an ancestor of a
/// wanted path (backends differ there: overlay copies parent directories up, a tree compare
/// sees their mtimes unchanged).
fn assert_changes(got: &[Change], want: &[(&str, ChangeKind)], what: &str) {
    let want_set: BTreeSet<(PathBuf, ChangeKind)> = want.iter().map(|(p, k)| (PathBuf::from(p), *k)).collect();
    let got_set: BTreeSet<(PathBuf, ChangeKind)> = got.iter().map(|c| (c.path.clone(), c.kind)).collect();
    let missing: Vec<_> = want_set.difference(&got_set).collect();
    let extra: Vec<_> = got_set
        .difference(&want_set)
        .filter(|(p, k)| !(*k == ChangeKind::Modified && want_set.iter().any(|(w, _)| w.starts_with(p) && w != p)))
        .collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, unexpected {extra:?}; all: {got:?}");
    for c in got {
        assert!(c.path.is_relative() && !c.path.as_os_str().is_empty(), "{what}: change path {:?} must be relative", c.path);
    }
}

/// Twenty files of the base modified in a layer are listed as twenty modifications.
pub fn changes_of_20_modified_files(fx: &Fixture) {
    layer(fx, "base", None, |p| {
        for i in 0..20 {
            write(&p.join(format!("dir-{}/file-{i}", i % 3)), format!("base {i}\n"));
        }
        write(&p.join("untouched"), b"same");
    });
    let d = fx.driver();
    d.prepare("upper", Some("base"), &no_labels()).unwrap();
    active_write(fx, "upper", |p| {
        for i in 0..20 {
            // Longer than before, so even a size-only comparison sees the change.
            write(&p.join(format!("dir-{}/file-{i}", i % 3)), format!("changed in upper {i}\n"));
        }
    });
    let want: Vec<(String, ChangeKind)> =
        (0..20).map(|i| (format!("dir-{}/file-{i}", i % 3), ChangeKind::Modified)).collect();
    let want: Vec<(&str, ChangeKind)> = want.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    assert_changes(&changes_of(fx, "upper"), &want, "changes of the active layer");
    d.commit("upper-c", "upper", &no_labels()).unwrap();
    assert_changes(&changes_of(fx, "upper-c"), &want, "changes of the committed layer");
    // A layer without parent: everything is added.
    let base = changes_of(fx, "base");
    assert!(base.iter().all(|c| c.kind == ChangeKind::Added), "base changes: {base:?}");
    assert_eq!(base.iter().filter(|c| c.path.starts_with("dir-0") || c.path.starts_with("dir-1") || c.path.starts_with("dir-2")).count(), 23);
}

/// Deleted files and directories stay deleted after commit, in the committed layer and in its
/// children.
pub fn deleted_stay_deleted(fx: &Fixture) {
    layer(fx, "base", None, |p| {
        write(&p.join("keep/file"), b"kept");
        write(&p.join("d1/gone"), b"x");
        write(&p.join("d1/stays"), b"x");
        write(&p.join("gone.txt"), b"x");
        write(&p.join("d2/x"), b"x");
        write(&p.join("d2/sub/y"), b"y");
        fs::create_dir(p.join("d3")).unwrap();
    });
    layer(fx, "del", Some("base"), |p| {
        fs::remove_file(p.join("gone.txt")).unwrap();
        fs::remove_file(p.join("d1/gone")).unwrap();
        fs::remove_dir_all(p.join("d2")).unwrap();
        fs::remove_dir(p.join("d3")).unwrap();
    });
    let check = |p: &Path| {
        for gone in ["gone.txt", "d1/gone", "d2", "d3"] {
            assert!(!exists(&p.join(gone)), "{gone} is back");
        }
        assert_eq!(read(&p.join("keep/file")), b"kept");
        assert_eq!(read(&p.join("d1/stays")), b"x");
        let names: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        let names: BTreeSet<_> = names.into_iter().collect();
        assert_eq!(names, ["d1", "keep"].iter().map(|s| s.to_string()).collect(), "root listing");
    };
    let g = mounted(fx, "del");
    check(g.path());
    unmount(g);
    with_view(fx, "del", check);
    layer(fx, "after", Some("del"), |p| check(p));
    with_view(fx, "after", check);
    assert_changes(
        &changes_of(fx, "del"),
        &[("gone.txt", ChangeKind::Deleted), ("d1/gone", ChangeKind::Deleted), ("d2", ChangeKind::Deleted), ("d3", ChangeKind::Deleted)],
        "changes of the deleting layer",
    );
}

/// A file renamed out of a lower layer is gone from its old place and whole at the new one.
pub fn file_moved_from_lower(fx: &Fixture) {
    let content = random_bytes(100_000, 7);
    layer(fx, "base", None, |p| {
        write(&p.join("src/moved"), &content);
        chmod(&p.join("src/moved"), 0o640);
        chown(&p.join("src/moved"), 7, 8);
        fs::create_dir(p.join("dst")).unwrap();
    });
    layer(fx, "mv", Some("base"), |p| fs::rename(p.join("src/moved"), p.join("dst/moved")).unwrap());
    with_view(fx, "mv", |p| {
        assert!(!exists(&p.join("src/moved")), "old name still there");
        assert_eq!(read(&p.join("dst/moved")), content);
        assert_eq!(mode_owner(&p.join("dst/moved")), (0o640, 7, 8));
    });
    with_view(fx, "base", |p| {
        assert_eq!(read(&p.join("src/moved")), content, "the lower layer is unchanged");
        assert!(!exists(&p.join("dst/moved")));
    });
    assert_changes(
        &changes_of(fx, "mv"),
        &[("src/moved", ChangeKind::Deleted), ("dst/moved", ChangeKind::Added)],
        "changes of the rename",
    );
}

/// A directory tree removed in an upper layer stays removed, and a directory of the same name
/// created later does not bring the old entries back.
pub fn dir_removed_from_lower(fx: &Fixture) {
    layer(fx, "base", None, |p| {
        write(&p.join("tree/a/b/c"), b"c");
        write(&p.join("tree/a/d"), b"d");
        write(&p.join("tree/e"), b"e");
    });
    layer(fx, "rm", Some("base"), |p| fs::remove_dir_all(p.join("tree/a")).unwrap());
    with_view(fx, "rm", |p| {
        assert!(!exists(&p.join("tree/a")));
        assert_eq!(read(&p.join("tree/e")), b"e");
    });
    layer(fx, "again", Some("rm"), |p| {
        fs::create_dir(p.join("tree/a")).unwrap();
        write(&p.join("tree/a/new"), b"new");
    });
    with_view(fx, "again", |p| {
        let names: Vec<_> = fs::read_dir(p.join("tree/a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("new")], "old entries resurrected under tree/a");
    });
    // Recreated in the same layer that removed it: the directory is opaque there.
    layer(fx, "replace", Some("base"), |p| {
        fs::remove_dir_all(p.join("tree/a")).unwrap();
        fs::create_dir(p.join("tree/a")).unwrap();
        write(&p.join("tree/a/only"), b"only");
    });
    with_view(fx, "replace", |p| {
        let names: Vec<_> = fs::read_dir(p.join("tree/a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("only")]);
    });
    assert_changes(&changes_of(fx, "rm"), &[("tree/a", ChangeKind::Deleted)], "changes of the removal");
}

/// chown of a lower file changes owner only (content and mode kept), in the upper layer only.
pub fn chown_lower_file(fx: &Fixture) {
    let content = random_bytes(300_000, 3);
    layer(fx, "base", None, |p| {
        write(&p.join("owned"), &content);
        chmod(&p.join("owned"), 0o4750);
        fs::create_dir(p.join("dir")).unwrap();
    });
    layer(fx, "chowned", Some("base"), |p| {
        chown(&p.join("owned"), 1000, 1001);
        chown(&p.join("dir"), 5, 6);
    });
    with_view(fx, "chowned", |p| {
        let (mode, uid, gid) = mode_owner(&p.join("owned"));
        assert_eq!((uid, gid), (1000, 1001));
        // chown(2) clears setuid on a regular file (it did so in the layer too).
        assert_eq!(mode & 0o777, 0o750);
        assert_eq!(read(&p.join("owned")), content);
        assert_eq!(mode_owner(&p.join("dir")), (0o755, 5, 6));
    });
    with_view(fx, "base", |p| {
        assert_eq!(mode_owner(&p.join("owned")), (0o4750, 0, 0), "lower file unchanged");
        assert_eq!(mode_owner(&p.join("dir")), (0o755, 0, 0));
    });
    assert_changes(
        &changes_of(fx, "chowned"),
        &[("owned", ChangeKind::Modified), ("dir", ChangeKind::Modified)],
        "changes of the chown",
    );
}

/// Directory modes and owners set in a layer (new dirs and lower dirs) survive commit and are
/// seen by children.
pub fn dir_permissions_kept_on_commit(fx: &Fixture) {
    let dirs: [(&str, u32, u32, u32); 5] =
        [("private", 0o700, 0, 0), ("traverse", 0o711, 1, 1), ("tmp", 0o1777, 0, 0), ("setgid", 0o2755, 10, 20), ("odd", 0o505, 3, 4)];
    layer(fx, "base", None, |p| {
        fs::create_dir(p.join("lowerdir")).unwrap();
        write(&p.join("lowerdir/f"), b"f");
    });
    layer(fx, "perms", Some("base"), |p| {
        for (d, mode, uid, gid) in dirs {
            fs::create_dir(p.join(d)).unwrap();
            write(&p.join(d).join("inside"), b"i");
            chown(&p.join(d), uid, gid);
            chmod(&p.join(d), mode);
        }
        chmod(&p.join("lowerdir"), 0o750);
        chown(&p.join("lowerdir"), 9, 9);
    });
    let check = |p: &Path| {
        for (d, mode, uid, gid) in dirs {
            assert_eq!(mode_owner(&p.join(d)), (mode, uid, gid), "dir {d}");
            assert_eq!(read(&p.join(d).join("inside")), b"i");
        }
        assert_eq!(mode_owner(&p.join("lowerdir")), (0o750, 9, 9), "lower dir changed in the layer");
        assert_eq!(read(&p.join("lowerdir/f")), b"f");
    };
    with_view(fx, "perms", check);
    layer(fx, "child", Some("perms"), |p| {
        check(p);
        write(&p.join("tmp/new"), b"n");
    });
    with_view(fx, "child", |p| {
        check(p);
        assert_eq!(mode_owner(&p.join("tmp")), (0o1777, 0, 0), "tmp after a child wrote into it");
    });
}

/// One file updated in five successive layers: each layer shows its own version, the lower
/// ones keep theirs.
pub fn file_updated_five_times(fx: &Fixture) {
    // Alternate growing and shrinking content.
    let versions: Vec<String> =
        (0..=5).map(|i| if i % 2 == 1 { format!("version {i} {}", "x".repeat(i * 1000)) } else { format!("version {i}") }).collect();
    layer(fx, "v0", None, |p| write(&p.join("etc/file"), &versions[0]));
    for i in 1..=5 {
        let parent = format!("v{}", i - 1);
        layer(fx, &format!("v{i}"), Some(&parent), |p| {
            assert_eq!(read_string(&p.join("etc/file")), versions[i - 1], "v{i} before its update");
            write(&p.join("etc/file"), &versions[i]);
        });
    }
    for i in 0..=5 {
        with_view(fx, &format!("v{i}"), |p| assert_eq!(read_string(&p.join("etc/file")), versions[i], "v{i}"));
        if i > 0 {
            assert_changes(&changes_of(fx, &format!("v{i}")), &[("etc/file", ChangeKind::Modified)], "changes of an update");
        }
    }
    fx.driver().prepare("top", Some("v5"), &no_labels()).unwrap();
    let g = mounted(fx, "top");
    assert_eq!(read_string(&g.path().join("etc/file")), versions[5]);
    unmount(g);
}

/// A layer's usage grows by (at least about) 1 MiB after writing 1 MiB, and by one inode.
pub fn usage_grows_after_write(fx: &Fixture) {
    const MIB: u64 = 1 << 20;
    layer(fx, "base", None, |p| write(&p.join("base"), random_bytes(64 << 10, 1)));
    let d = fx.driver();
    d.prepare("grow", Some("base"), &no_labels()).unwrap();
    let before = d.usage("grow").unwrap();
    active_write(fx, "grow", |p| write(&p.join("one-mib"), random_bytes(MIB as usize, 2)));
    let after = d.usage("grow").unwrap();
    // Allocation granularity and metadata differ between backends; 15/16 of the data written
    // is the least any of them can account for incompressible data.
    assert!(after.bytes >= before.bytes + MIB * 15 / 16, "usage {before:?} -> {after:?} after writing 1 MiB");
    assert!(after.inodes > before.inodes, "inodes {before:?} -> {after:?} after creating a file");
    // The parent's data is not counted again for a layer that shares it.
    if fx.driver().capabilities().shares_layers {
        let base = d.usage("base").unwrap();
        assert!(after.bytes < base.bytes + MIB * 2, "usage of the layer {after:?} includes its parent {base:?}?");
    }
}

/// The same content twice in two independent layers digests equal (the comparison itself
/// works on this backend: file kinds, modes and xattrs read back through its mounts).
pub fn digest_is_stable(fx: &Fixture) {
    let build = |p: &Path| {
        write(&p.join("f"), b"f");
        std::os::unix::fs::symlink("f", p.join("link")).unwrap();
        fs::hard_link(p.join("f"), p.join("hard")).unwrap();
        mkdir(&p.join("d"), 0o700);
        let fifo = std::ffi::CString::new(p.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        xattr::set(p.join("f"), "user.cowbench", b"v").ok();
    };
    layer(fx, "one", None, build);
    layer(fx, "two", None, build);
    let a = with_view_or_mount(fx, "one");
    let b = with_view_or_mount(fx, "two");
    assert_trees_eq(&a, &b, false, "same content built twice");
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.get("fifo").map(|e| e.kind), Some(super::tree::EntryKind::Fifo));
    assert_eq!(a.get("link").and_then(|e| e.link_target.clone()), Some(PathBuf::from("f")));
    assert_eq!(a.get("f").map(|e| e.xattrs.get("user.cowbench").cloned()), b.get("f").map(|e| e.xattrs.get("user.cowbench").cloned()));
}

fn with_view_or_mount(fx: &Fixture, key: &str) -> super::tree::Tree {
    let g = mounted(fx, key);
    let t = tree_digest(g.path());
    unmount(g);
    t
}
