//! Deep stacks: 128 committed layers, read through and compared with a flat reference tree.

use std::fs;
use std::path::Path;

use super::tree::{assert_trees_eq, tree_digest};
use super::util::*;
use super::Fixture;

/// Depth of the deep-stack scenarios (Docker's overlay2 limit, the depth the claims use).
pub const DEPTH: usize = 128;

/// Whether the backend can stack DEPTH layers; prints why not.
fn deep_enough(fx: &Fixture) -> bool {
    match fx.driver().capabilities().max_depth {
        Some(m) if m < DEPTH => {
            eprintln!("SKIPPED {} deep stack: the backend mounts at most {m} layers, the scenario needs {DEPTH}", fx.driver().name());
            false
        }
        _ => true,
    }
}

/// A file of the base is readable through 128 layers (a chain of 128 commits), from a view
/// of the top and from an active layer on it.
pub fn file_readable_through_128_layers(fx: &Fixture) {
    if !deep_enough(fx) {
        return;
    }
    let content = random_bytes(70_000, 128);
    layer(fx, "layer-0", None, |p| write(&p.join("base-file"), &content));
    for i in 1..DEPTH {
        let parent = format!("layer-{}", i - 1);
        layer(fx, &format!("layer-{i}"), Some(&parent), |p| write(&p.join(format!("layer-{i}")), i.to_string()));
    }
    let top = format!("layer-{}", DEPTH - 1);
    assert_eq!(fx.driver().list().unwrap().len(), DEPTH);
    with_view(fx, &top, |p| {
        assert_eq!(read(&p.join("base-file")), content, "base file through {DEPTH} layers");
        assert_eq!(read_string(&p.join("layer-1")), "1");
        assert_eq!(fs::read_dir(p).unwrap().count(), DEPTH);
    });
    // The committed top mounted directly, and an active layer on it (DEPTH lowers + upper).
    let g = mounted(fx, &top);
    assert_eq!(read(&g.path().join("base-file")), content);
    unmount(g);
    fx.driver().prepare("rw", Some(&top), &no_labels()).unwrap();
    active_write(fx, "rw", |p| {
        assert_eq!(read(&p.join("base-file")), content);
        write(&p.join("base-file"), b"changed on top");
    });
    with_view(fx, "layer-0", |p| assert_eq!(read(&p.join("base-file")), content, "base unchanged"));
}

/// The operations of layer `i` (applied to a layer mount and to the flat reference).
fn step(i: usize, p: &Path) {
    {
        // Modify: one of 16 files rewritten (a different size each time).
        write(&p.join(format!("files/f{:02}", i % 16)), format!("{i}:{}", "#".repeat(i)));
        // Delete: another one, when present.
        let del = p.join(format!("files/f{:02}", (i + 5) % 16));
        if i % 3 == 0 && exists(&del) {
            fs::remove_file(&del).unwrap();
        }
        // Add: a new directory entry per layer, in one of 7 directories.
        write(&p.join(format!("d{}/entry-{i}", i % 7)), i.to_string());
        // Remove a directory created 10 layers earlier (by then it exists in a lower layer).
        if i >= 10 && i % 5 == 0 {
            let old = p.join(format!("d{}/entry-{}", (i - 10) % 7, i - 10));
            if exists(&old) {
                fs::remove_file(old).unwrap();
            }
            let dir = p.join(format!("d{}", (i + 3) % 7));
            if exists(&dir) {
                fs::remove_dir_all(&dir).unwrap();
            }
        }
        // Metadata only: mode and owner of a lower file.
        if i % 4 == 1 {
            let f = p.join(format!("files/f{:02}", (i + 8) % 16));
            if exists(&f) {
                chmod(&f, 0o600 + (i as u32 % 8));
                chown(&f, i as u32, i as u32 * 2);
            }
        }
        // Rename within the tree.
        if i % 11 == 0 {
            let from = p.join(format!("files/f{:02}", (i + 1) % 16));
            if exists(&from) {
                fs::rename(&from, p.join(format!("renamed-{i}"))).unwrap();
            }
        }
    }
}

/// A 128-layer stack mounted is equal, entry by entry, to a flat reference tree that received
/// the same operations.
pub fn mount_128_equals_flat_reference(fx: &Fixture) {
    if !deep_enough(fx) {
        return;
    }
    let reference = fx.dir("reference");
    chmod(&reference, 0o755);
    for i in 0..DEPTH {
        let parent = if i == 0 { None } else { Some(format!("stack-{}", i - 1)) };
        layer(fx, &format!("stack-{i}"), parent.as_deref(), |p| {
            step(i, p);
            step(i, &reference);
        });
    }
    let top = format!("stack-{}", DEPTH - 1);
    let want = tree_digest(&reference);
    assert!(want.entries.len() > 30, "the reference tree is not trivial: {}", want.entries.len());
    let got = with_view(fx, &top, tree_digest);
    assert_trees_eq(&want, &got, false, "128-layer view vs flat reference");
    // And an intermediate layer against a reference built to that depth.
    let mid = fx.dir("reference-mid");
    chmod(&mid, 0o755);
    for i in 0..DEPTH / 2 {
        step(i, &mid);
    }
    let got = with_view(fx, &format!("stack-{}", DEPTH / 2 - 1), tree_digest);
    assert_trees_eq(&tree_digest(&mid), &got, false, "64-layer view vs flat reference");
}
