//! Layer lifecycle: create, base content, snapshots, views, kinds and parents, the errors of
//! reused keys and removed parents, a second handle on the same root.

use std::fs;
use std::path::Path;

use crate::driver::{Kind, Labels};
use crate::error::Error;
use crate::registry;

use super::tree::{assert_trees_eq, tree_digest};
use super::util::*;
use super::Fixture;

/// moby graphtest's base: a 0705+sticky directory owned 1:2 holding a 0222+setuid file.
pub fn write_base(root: &Path) {
    let a = root.join("a");
    fs::create_dir(&a).unwrap();
    chown(&a, 1, 2);
    chmod(&a, 0o1705);
    let b = a.join("b");
    write(&b, b"base file content\n");
    chmod(&b, 0o4222);
    write(&root.join("top.txt"), b"top\n");
}

/// Check what [`write_base`] wrote, as seen through a mount.
pub fn check_base(root: &Path) {
    assert_eq!(mode_owner(&root.join("a")), (0o1705, 1, 2), "dir a: mode 01705 owned 1:2");
    assert_eq!(mode_owner(&root.join("a/b")), (0o4222, 0, 0), "file a/b: mode 04222 owned 0:0");
    assert_eq!(read(&root.join("a/b")), b"base file content\n");
    assert_eq!(read(&root.join("top.txt")), b"top\n");
}

/// An empty active layer: root 0755, owned 0:0, no entries.
pub fn create_empty(fx: &Fixture) {
    let d = fx.driver();
    let info = d.prepare("empty", None, &no_labels()).unwrap();
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent, None);
    let g = mounted(fx, "empty");
    assert_eq!(mode_owner(g.path()), (0o755, 0, 0), "root of an empty layer");
    let entries: Vec<_> = fs::read_dir(g.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(entries.is_empty(), "empty layer has entries: {entries:?}");
    unmount(g);
    // Committed, the empty layer is still empty.
    d.commit("empty-c", "empty", &no_labels()).unwrap();
    with_view(fx, "empty-c", |p| {
        assert_eq!(mode_owner(p), (0o755, 0, 0));
        assert_eq!(fs::read_dir(p).unwrap().count(), 0);
    });
}

/// The base layer keeps sticky, setuid, odd modes and owners, on the active mount, on the
/// committed layer mounted directly and through a view.
pub fn base_modes_and_owners(fx: &Fixture) {
    let d = fx.driver();
    d.prepare("base.active", None, &no_labels()).unwrap();
    let g = mounted(fx, "base.active");
    write_base(g.path());
    check_base(g.path());
    unmount(g);
    d.commit("base", "base.active", &no_labels()).unwrap();
    let g = mounted(fx, "base");
    check_base(g.path());
    unmount(g);
    with_view(fx, "base", check_base);
}

/// A snapshot (active child) of the base shows exactly the base's content.
pub fn snapshot_shows_parent(fx: &Fixture) {
    layer(fx, "base", None, write_base);
    let base = with_view(fx, "base", tree_digest);
    fx.driver().prepare("snap", Some("base"), &no_labels()).unwrap();
    let g = mounted(fx, "snap");
    check_base(g.path());
    assert_trees_eq(&base, &tree_digest(g.path()), true, "snapshot vs base");
    unmount(g);
}

/// Reusing a key for prepare, view or commit fails with AlreadyExists and changes nothing.
pub fn reused_key_fails(fx: &Fixture) {
    let d = fx.driver();
    layer(fx, "base", None, write_base);
    d.prepare("k", Some("base"), &no_labels()).unwrap();
    assert_err!(d.prepare("k", None, &no_labels()), Error::AlreadyExists { .. }, "prepare over an active key");
    assert_err!(d.view("k", "base", &no_labels()), Error::AlreadyExists { .. }, "view over an active key");
    assert_err!(d.prepare("base", None, &no_labels()), Error::AlreadyExists { .. }, "prepare over a committed key");
    d.prepare("k2", None, &no_labels()).unwrap();
    assert_err!(d.commit("base", "k2", &no_labels()), Error::AlreadyExists { .. }, "commit onto a committed name");
    assert_err!(d.commit("k", "k2", &no_labels()), Error::AlreadyExists { .. }, "commit onto an active key");
    // Nothing was replaced: k is still a child of base, k2 still active.
    assert_eq!(d.stat("k").unwrap().parent.as_deref(), Some("base"));
    assert_eq!(d.stat("k2").unwrap().kind, Kind::Active);
    let g = mounted(fx, "k");
    check_base(g.path());
    unmount(g);
}

/// A mounted layer cannot be removed (its storage would go from under the mount); once
/// unmounted it can. Keys with control characters are refused before anything is made.
pub fn remove_mounted_fails(fx: &Fixture) {
    let d = fx.driver();
    assert_err!(d.prepare("bad\nkey", None, &no_labels()), Error::InvalidState { .. }, "a key with a newline");
    d.prepare("busy", None, &no_labels()).unwrap();
    let g = mounted(fx, "busy");
    let e = assert_err!(d.remove("busy"), Error::InvalidState { .. }, "remove of a mounted layer");
    assert!(e.to_string().contains("'busy'"), "{e}");
    unmount(g);
    d.remove("busy").unwrap();
    assert!(d.list().unwrap().is_empty(), "layers left: {:?}", d.list().unwrap());
}

/// A parent with children cannot be removed; once the children are gone it can.
pub fn remove_parent_with_children_fails(fx: &Fixture) {
    let d = fx.driver();
    layer(fx, "base", None, write_base);
    d.prepare("child", Some("base"), &no_labels()).unwrap();
    d.view("viewer", "base", &no_labels()).unwrap();
    let e = assert_err!(d.remove("base"), Error::HasChildren { .. }, "remove of a parent");
    if let Error::HasChildren { children, .. } = e {
        let mut c = children.clone();
        c.sort();
        assert_eq!(c, vec!["child".to_string(), "viewer".to_string()]);
    }
    // Still intact and mountable.
    with_view(fx, "base", check_base);
    d.remove("child").unwrap();
    assert_err!(d.remove("base"), Error::HasChildren { .. }, "remove of a parent with a view");
    d.remove("viewer").unwrap();
    d.remove("base").unwrap();
    assert!(d.list().unwrap().is_empty(), "layers left: {:?}", d.list().unwrap());
    assert_err!(d.stat("base"), Error::NotFound { .. }, "stat of a removed layer");
    assert_err!(d.remove("base"), Error::NotFound { .. }, "second remove");
}

/// Views and committed layers mount read-only: writes give EROFS; apply to them is refused.
pub fn view_is_readonly(fx: &Fixture) {
    let d = fx.driver();
    layer(fx, "base", None, write_base);
    // A two-layer committed stack too, so multi-lower read-only mounts are covered.
    layer(fx, "upper", Some("base"), |p| write(&p.join("upper.txt"), b"upper"));
    for parent in ["base", "upper"] {
        let key = format!("ro-{parent}");
        d.view(&key, parent, &no_labels()).unwrap();
        for key in [key.as_str(), parent] {
            let g = mounted(fx, key);
            let p = g.path();
            check_base(p);
            let e = fs::write(p.join("new-file"), b"x").expect_err("write to a read-only mount succeeded");
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{key}: write gave {e}");
            let e = fs::create_dir(p.join("new-dir")).expect_err("mkdir on a read-only mount succeeded");
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{key}: mkdir gave {e}");
            let e = fs::OpenOptions::new().append(true).open(p.join("top.txt")).expect_err("open for append succeeded");
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{key}: append gave {e}");
            let e = fs::remove_file(p.join("top.txt")).expect_err("unlink on a read-only mount succeeded");
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{key}: unlink gave {e}");
            unmount(g);
        }
        let tar = RawTar::new().file("x", b"x").finish();
        assert_err!(d.apply(&key, &mut tar.as_slice()), Error::InvalidState { .. }, "apply to a view");
        assert_err!(d.apply(parent, &mut tar.as_slice()), Error::InvalidState { .. }, "apply to a committed layer");
    }
}

/// A ← B ← C: each layer sees its parents' content with its own changes on top, and
/// committing a child never changes its parent.
pub fn transitivity(fx: &Fixture) {
    layer(fx, "A", None, |p| {
        write(&p.join("foo"), b"A");
        write(&p.join("bar"), b"A");
        write(&p.join("dir/inner"), b"A");
    });
    layer(fx, "B", Some("A"), |p| {
        assert_eq!(read(&p.join("foo")), b"A");
        write(&p.join("foo"), b"B");
        write(&p.join("dir/fromb"), b"B");
    });
    layer(fx, "C", Some("B"), |p| {
        assert_eq!(read(&p.join("foo")), b"B");
        fs::remove_file(p.join("bar")).unwrap();
        write(&p.join("baz"), b"C");
    });
    with_view(fx, "A", |p| {
        assert_eq!(read(&p.join("foo")), b"A");
        assert_eq!(read(&p.join("bar")), b"A");
        assert!(!exists(&p.join("dir/fromb")) && !exists(&p.join("baz")));
    });
    with_view(fx, "B", |p| {
        assert_eq!(read(&p.join("foo")), b"B");
        assert_eq!(read(&p.join("bar")), b"A");
        assert_eq!(read(&p.join("dir/fromb")), b"B");
        assert_eq!(read(&p.join("dir/inner")), b"A");
        assert!(!exists(&p.join("baz")));
    });
    fx.driver().prepare("D", Some("C"), &no_labels()).unwrap();
    let g = mounted(fx, "D");
    let p = g.path();
    assert_eq!(read(&p.join("foo")), b"B");
    assert!(!exists(&p.join("bar")), "bar deleted in C is back");
    assert_eq!(read(&p.join("baz")), b"C");
    assert_eq!(read(&p.join("dir/inner")), b"A");
    assert_eq!(read(&p.join("dir/fromb")), b"B");
    unmount(g);
    let chain: Vec<_> = ["D", "C", "B", "A"].iter().map(|k| fx.driver().stat(k).unwrap().parent).collect();
    assert_eq!(chain, vec![Some("C".into()), Some("B".into()), Some("A".into()), None]);
}

/// Only active layers can be committed; parents must be committed and exist.
pub fn commit_of_view_or_committed_fails(fx: &Fixture) {
    let d = fx.driver();
    layer(fx, "base", None, write_base);
    d.view("v", "base", &no_labels()).unwrap();
    assert_err!(d.commit("v-c", "v", &no_labels()), Error::InvalidState { .. }, "commit of a view");
    assert_err!(d.commit("base-c", "base", &no_labels()), Error::InvalidState { .. }, "commit of a committed layer");
    assert_err!(d.commit("x", "missing", &no_labels()), Error::NotFound { .. }, "commit of a missing layer");
    d.prepare("act", Some("base"), &no_labels()).unwrap();
    assert_err!(d.prepare("on-active", Some("act"), &no_labels()), Error::InvalidState { .. }, "prepare on an active parent");
    assert_err!(d.view("view-active", "act", &no_labels()), Error::InvalidState { .. }, "view of an active layer");
    assert_err!(d.prepare("on-view", Some("v"), &no_labels()), Error::InvalidState { .. }, "prepare on a view");
    assert_err!(d.prepare("orphan", Some("missing"), &no_labels()), Error::NotFound { .. }, "prepare on a missing parent");
    // The failed calls left nothing behind.
    let mut keys: Vec<_> = d.list().unwrap().into_iter().map(|l| l.key).collect();
    keys.sort();
    assert_eq!(keys, vec!["act", "base", "v"]);
    let g = mounted(fx, "v");
    check_base(g.path());
    unmount(g);
}

/// stat and list report kinds, parents and labels.
pub fn stat_and_list(fx: &Fixture) {
    let d = fx.driver();
    let mut labels = Labels::new();
    labels.insert("cowbench.test".into(), "yes".into());
    d.prepare("base.active", None, &labels).unwrap();
    let mut more = Labels::new();
    more.insert("cowbench.committed".into(), "1".into());
    let base = d.commit("base", "base.active", &more).unwrap();
    assert_eq!(base.kind, Kind::Committed);
    assert_eq!(base.labels.get("cowbench.test").map(String::as_str), Some("yes"), "labels kept on commit");
    assert_eq!(base.labels.get("cowbench.committed").map(String::as_str), Some("1"));
    d.prepare("work", Some("base"), &no_labels()).unwrap();
    d.view("look", "base", &labels).unwrap();
    let want = [("base", Kind::Committed, None), ("look", Kind::View, Some("base")), ("work", Kind::Active, Some("base"))];
    for (k, kind, parent) in want {
        let s = d.stat(k).unwrap();
        assert_eq!((s.key.as_str(), s.kind, s.parent.as_deref()), (k, kind, parent), "stat {k}");
    }
    let mut list: Vec<_> = d.list().unwrap().into_iter().map(|l| (l.key, l.kind, l.parent)).collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<_> = want.iter().map(|(k, kind, p)| (k.to_string(), *kind, p.map(String::from))).collect();
    assert_eq!(list, want);
    assert_eq!(d.stat("look").unwrap().labels, labels);
    assert_err!(d.stat("nope"), Error::NotFound { .. }, "stat of a missing layer");
    let ids: std::collections::BTreeSet<u64> = d.list().unwrap().iter().map(|l| l.id).collect();
    assert_eq!(ids.len(), 3, "layer ids are distinct");
}

/// A second handle (registry::open on the same root) sees the same layers and content, and
/// what it creates is seen by the first.
pub fn second_handle_sees_layers(fx: &Fixture) {
    let d = fx.driver();
    layer(fx, "base", None, write_base);
    d.prepare("child", Some("base"), &no_labels()).unwrap();
    active_write(fx, "child", |p| write(&p.join("child.txt"), b"child"));
    let other = registry::open(d.name(), fx.config()).unwrap_or_else(|e| panic!("second open: {e}"));
    let mut a: Vec<_> = d.list().unwrap();
    let mut b: Vec<_> = other.list().unwrap();
    a.sort_by(|x, y| x.key.cmp(&y.key));
    b.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(a, b, "both handles list the same layers");
    {
        let target = fx.dir("second-handle");
        let g = crate::driver::MountGuard::new(other.as_ref(), "child", &target).unwrap();
        check_base(g.path());
        assert_eq!(read(&g.path().join("child.txt")), b"child");
        g.unmount().unwrap();
    }
    other.commit("child-c", "child", &no_labels()).unwrap();
    assert_eq!(d.stat("child-c").unwrap().kind, Kind::Committed, "commit by the second handle seen by the first");
    with_view(fx, "child-c", |p| assert_eq!(read(&p.join("child.txt")), b"child"));
    // Dropped without teardown: the second handle must not own the store.
    drop(other);
    with_view(fx, "base", check_base);
}
