//! The conformance suite on the `overlay` backend (kernel overlayfs), plus what only overlay
//! has: stacks up to the kernel's limit of lower layers, and its refusals at open.

use std::path::Path;

use cowbench_drivers::conformance::{fixture, util};
use cowbench_drivers::{overlay, Driver, DriverConfig, Error, Labels, MountGuard};

cowbench_drivers::conformance_tests!("overlay");

fn mount_counts(d: &dyn Driver) -> String {
    d.status().unwrap().facts.get("mounts").cloned().unwrap_or_default()
}

/// The deepest stack the kernel allows (500 with lowerdir+, else a page of relative short links) mounts and reads; one more is refused with a
/// clear error. Shallow stacks mount with absolute paths, deeper ones with paths relative to
/// `l/`, the deepest through `lowerdir+`.
#[test]
fn stack_to_the_kernel_limit() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let d = fx.driver();
    let none = Labels::new();
    // 500 (OVL_MAX_STACK) where the kernel has lowerdir+, else what one page of mount data holds.
    let max = d.capabilities().max_depth.expect("overlay reports its depth limit");
    assert_eq!(max, overlay::max_stack());
    for i in 0..=max {
        let key = format!("l{i}.active");
        let parent = (i > 0).then(|| format!("l{}", i - 1));
        d.prepare(&key, parent.as_deref(), &none).unwrap();
        let tar = util::RawTar::new().file(&format!("file-{i}"), i.to_string().as_bytes()).finish();
        d.apply(&key, &mut tar.as_slice()).unwrap();
        d.commit(&format!("l{i}"), &key, &none).unwrap();
    }
    let check = |layer: usize, want_method: &str| {
        let before = mount_counts(d);
        let target = fx.dir(&format!("depth-{layer}"));
        let g = MountGuard::new(d, &format!("l{layer}"), &target).unwrap_or_else(|e| panic!("mount of {} layers: {e}", layer + 1));
        assert_eq!(std::fs::read_to_string(g.path().join("file-0")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(g.path().join(format!("file-{layer}"))).unwrap(), layer.to_string());
        assert_eq!(std::fs::read_dir(g.path()).unwrap().count(), layer + 1);
        g.unmount().unwrap();
        let after = mount_counts(d);
        eprintln!("{} layers: mounts {before} -> {after}", layer + 1);
        assert_ne!(before, after);
        assert!(method_count(&after, want_method) == method_count(&before, want_method) + 1, "{} layers: expected a mount by {want_method}: {before} -> {after}", layer + 1);
    };
    check(9, "absolute");
    check(127, "relative to l/");
    check(max - 1, if overlay::lowerdir_plus_supported() { "lowerdir+" } else { "relative to l/" });
    let target = fx.dir("too-deep");
    let e = MountGuard::new(d, &format!("l{max}"), &target).err().expect("501 layers mounted");
    assert!(matches!(e, Error::InvalidState { .. }), "{e}");
    assert!(e.to_string().contains(&max.to_string()), "{e}");
    // An active layer on the deepest stack of lowers (plus its upper) is within the limit.
    d.prepare("rw", Some(&format!("l{}", max - 1)), &none).unwrap();
    let target = fx.dir("rw");
    let g = MountGuard::new(d, "rw", &target).unwrap();
    std::fs::write(g.path().join("file-0"), "rewritten").unwrap();
    g.unmount().unwrap();
    let c = d.changes("rw").unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
}

fn method_count(counts: &str, method: &str) -> u64 {
    // "N absolute, N relative to l/, N lowerdir+, N bind"
    counts
        .split(", ")
        .find_map(|part| part.split_once(' ').filter(|(_, m)| *m == method).map(|(n, _)| n.parse().unwrap()))
        .unwrap_or_else(|| panic!("no {method} in {counts}"))
}

/// A root on overlayfs is refused at open, saying why.
#[test]
fn refuses_a_root_on_overlay() {
    // Uses the fixture only for its scratch space and teardown.
    let Some(fx) = fixture("overlay", &[]) else { return };
    let base = fx.dir("ovl");
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.join("lower").display(),
        base.join("upper").display(),
        base.join("work").display()
    );
    let merged = base.join("merged");
    cowbench_drivers::sys::mounts::mount("overlay", &merged, "overlay", nix::mount::MsFlags::empty(), Some(&data)).unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = cowbench_drivers::sys::mounts::unmount(self.0);
        }
    }
    let _guard = Unmount(&merged);
    let e = overlay::open(&DriverConfig::new(merged.join("root"))).err().expect("overlay on overlay opened");
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("overlay"), "{e}");
}

/// Capabilities and status say what runs.
#[test]
fn capabilities_and_status() {
    let Some(fx) = fixture("overlay", &[]) else { return };
    let d = fx.driver();
    let c = d.capabilities();
    assert!(c.native_diff && c.shared_page_cache && c.shares_layers && !c.stand_in && !c.loop_backed);
    assert_eq!(c.max_depth, Some(overlay::max_stack()));
    assert_eq!(d.implementation().name, "kernel overlayfs");
    let s = d.status().unwrap();
    for k in ["backing_filesystem", "backing_mount_options", "param.index", "param.redirect_dir", "param.metacopy"] {
        assert!(s.facts.contains_key(k), "status lacks {k}: {s:?}");
    }
    assert_eq!(s.implementation, d.implementation().to_string());
    assert_eq!(s.backing.map(|b| b.kind), Some(cowbench_drivers::BackingKind::Directory));
    assert!(s.space.is_none() && s.pool.is_none() && s.cache.is_none() && s.discard.is_none(), "a directory backend has no store figures");
}

/// Mounts are recorded in the root's resource ledger while they exist (for `cowbench clean`).
#[test]
fn mounts_are_in_the_ledger() {
    use cowbench_drivers::ledger::{Ledger, ResourceKind};
    let Some(fx) = fixture("overlay", &[]) else { return };
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
