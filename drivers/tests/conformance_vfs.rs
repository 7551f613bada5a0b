//! The conformance suite on the `vfs` backend (full copy per layer), plus what only vfs has:
//! every layer is a complete, independent copy.

use std::os::unix::fs::MetadataExt;

use cowbench_drivers::conformance::{fixture, util};
use cowbench_drivers::Labels;

cowbench_drivers::conformance_tests!("vfs");

/// A child layer owns a full copy of its parent: its usage includes the parent's data, and its
/// files are distinct inodes (changing one never shows in the other).
#[test]
fn every_layer_is_a_full_copy() {
    let Some(fx) = fixture("vfs", &[]) else { return };
    let d = fx.driver();
    assert!(!d.capabilities().shares_layers);
    let data = util::random_bytes(2 << 20, 5);
    util::layer(&fx, "base", None, |p| util::write(&p.join("big"), &data));
    d.prepare("child", Some("base"), &Labels::new()).unwrap();
    let base = d.usage("base").unwrap();
    let child = d.usage("child").unwrap();
    assert!(base.bytes >= 2 << 20, "{base:?}");
    assert!(child.bytes >= base.bytes * 9 / 10 || d.status().unwrap().facts["copy_method"].starts_with("reflink"), "child {child:?} vs base {base:?}");
    assert_eq!(child.inodes, base.inodes);
    let status = d.status().unwrap();
    assert!(status.facts.contains_key("copy_method") && status.facts.contains_key("last_copy"), "{status:?}");
    eprintln!("vfs status: {status:?}");
    let a = util::mounted(&fx, "base");
    let b = util::mounted(&fx, "child");
    assert_ne!(std::fs::metadata(a.path().join("big")).unwrap().ino(), std::fs::metadata(b.path().join("big")).unwrap().ino());
    std::fs::write(b.path().join("big"), b"changed").unwrap();
    assert_eq!(util::read(&a.path().join("big")), data);
    util::unmount(b);
    util::unmount(a);
}

/// Mounts are recorded in the root's resource ledger while they exist (for `cowbench clean`).
#[test]
fn mounts_are_in_the_ledger() {
    use cowbench_drivers::ledger::{Ledger, ResourceKind};
    let Some(fx) = fixture("vfs", &[]) else { return };
    fx.driver().prepare("a", None, &Labels::new()).unwrap();
    let ledger = Ledger::open(&fx.config().root);
    let g = util::mounted(&fx, "a");
    let target = std::fs::canonicalize(g.path()).unwrap();
    let live = ledger.entries().unwrap();
    assert!(
        live.iter().any(|e| e.kind == ResourceKind::Mount && std::path::Path::new(&e.id) == target),
        "{live:?}"
    );
    util::unmount(g);
    assert!(ledger.entries().unwrap().is_empty(), "{:?}", ledger.entries());
}

/// A mount follows its layer through a commit: the committed layer is then the one that is
/// busy (the rest of the busy check is the suite's `layers::remove_mounted_fails`).
#[test]
fn commit_of_a_mounted_layer_keeps_it_busy() {
    let Some(fx) = fixture("vfs", &[]) else { return };
    let d = fx.driver();
    d.prepare("a", None, &Labels::new()).unwrap();
    let g = util::mounted(&fx, "a");
    d.commit("a-c", "a", &Labels::new()).unwrap();
    assert!(d.remove("a-c").is_err(), "the mount of the committed layer blocks its removal");
    util::unmount(g);
    d.remove("a-c").unwrap();
    assert!(d.list().unwrap().is_empty());
}
