//! A layer tar that fails part way (a refused entry, a truncated stream) leaves the layer as it
//! was before the apply, with its usage back where it was, and the store usable.

use std::path::Path;

use crate::driver::{Driver, Usage};
use crate::error::Error;

use super::tree::{assert_trees_eq, tree_digest, Tree};
use super::util::*;
use super::Fixture;

const MIB: usize = 1 << 20;

/// Content of active `key` (mounted, digested, unmounted) and its usage.
fn state(fx: &Fixture, key: &str) -> (Tree, Usage) {
    let g = mounted(fx, key);
    let t = tree_digest(g.path());
    unmount(g);
    (t, fx.driver().usage(key).unwrap_or_else(|e| panic!("usage of {key}: {e}")))
}

/// Entries that are fine, written before the bad part: a new directory with 1 MiB in it, a
/// replacement of a file the layer already has, a whiteout of a parent's file.
fn good_prefix(t: &mut RawTar) -> &mut RawTar {
    t.dir("partial").file("partial/big", &random_bytes(MIB, 21)).file("kept", b"replaced by the failing tar").file(".wh.base", b"")
}

fn assert_unchanged(fx: &Fixture, key: &str, before: &(Tree, Usage), case: &str) {
    let after = state(fx, key);
    assert_trees_eq(&before.0, &after.0, true, &format!("{case}: layer after the failed apply vs before it"));
    assert_eq!(before.1, after.1, "{case}: usage of the layer before vs after the failed apply");
}

fn check_store_usable(fx: &Fixture, key: &str, expect: impl Fn(&Path)) {
    let d: &dyn Driver = fx.driver();
    let name = format!("{key}-committed");
    d.commit(&name, key, &no_labels()).unwrap_or_else(|e| panic!("commit after a failed apply: {e}"));
    let child = format!("{key}-child");
    d.prepare(&child, Some(&name), &no_labels()).unwrap_or_else(|e| panic!("prepare on it: {e}"));
    let g = mounted(fx, &child);
    expect(g.path());
    unmount(g);
    d.remove(&child).unwrap_or_else(|e| panic!("remove {child}: {e}"));
    d.remove(&name).unwrap_or_else(|e| panic!("remove {name}: {e}"));
}

/// Apply a good layer, then a tar whose first entries are fine and a later one (`../escape`)
/// is refused: the error names the layer, the layer is as the good apply left it (content and
/// usage), and commit, prepare and remove still work. A fresh layer rolls back to its parent.
pub fn refused_apply_leaves_layer_as_it_was(fx: &Fixture) {
    layer(fx, "base", None, |p| {
        write(&p.join("base"), b"base");
        write(&p.join("dir/f"), b"f");
    });
    let d = fx.driver();
    let bad = good_prefix(&mut RawTar::new()).file("../escape", b"x").file("after", b"never").finish();

    d.prepare("fresh", Some("base"), &no_labels()).unwrap();
    let before = state(fx, "fresh");
    let e = assert_err!(d.apply("fresh", &mut bad.as_slice()), Error::Archive { .. }, "refused entry on a fresh layer");
    assert!(e.to_string().contains("fresh"), "the error names the layer: {e}");
    assert_unchanged(fx, "fresh", &before, "fresh layer");
    check_store_usable(fx, "fresh", |p| {
        assert_eq!(read(&p.join("base")), b"base");
        assert!(!exists(&p.join("partial")), "an entry of the failed apply is visible");
    });

    d.prepare("twice", Some("base"), &no_labels()).unwrap();
    let good = RawTar::new().dir("mine").file("mine/a", &random_bytes(MIB, 22)).file("kept", b"first apply").finish();
    d.apply("twice", &mut good.as_slice()).unwrap_or_else(|e| panic!("good apply: {e}"));
    let before = state(fx, "twice");
    assert_err!(d.apply("twice", &mut bad.as_slice()), Error::Archive { .. }, "refused entry after a good apply");
    assert_unchanged(fx, "twice", &before, "layer with content");
    check_store_usable(fx, "twice", |p| {
        assert_eq!(read(&p.join("kept")), b"first apply");
        assert_eq!(read(&p.join("base")), b"base");
        assert!(exists(&p.join("mine/a")));
        assert!(!exists(&p.join("partial")), "an entry of the failed apply is visible");
    });
}

/// A stream cut off in the middle of a file's data (after good entries) fails and leaves the
/// layer as it was.
pub fn truncated_apply_leaves_layer_as_it_was(fx: &Fixture) {
    layer(fx, "base", None, |p| write(&p.join("base"), b"base"));
    let d = fx.driver();
    d.prepare("cut", Some("base"), &no_labels()).unwrap();
    let good = RawTar::new().file("kept", b"first apply").finish();
    d.apply("cut", &mut good.as_slice()).unwrap_or_else(|e| panic!("good apply: {e}"));
    let before = state(fx, "cut");
    let mut whole = good_prefix(&mut RawTar::new()).file("last", &random_bytes(MIB, 23)).finish();
    whole.truncate(whole.len() - 1024 - MIB / 2);
    let r = d.apply("cut", &mut whole.as_slice());
    assert!(r.is_err(), "a truncated tar applied: {r:?}");
    assert_unchanged(fx, "cut", &before, "truncated tar");
    check_store_usable(fx, "cut", |p| assert_eq!(read(&p.join("kept")), b"first apply"));
}
