//! A container that writes until its store is full: on a small loop-backed btrfs store the
//! writer gets ENOSPC (never a hang: the run has a timeout that turns one into a failure), and
//! the store takes the next container's writes once the full layer is gone.

use std::time::Duration;

use cowbench::container::{ContainerSpec, Runtime, RuntimeKind};
use cowbench::image::{self, ImageSpec, Shape};
use cowbench_drivers::conformance::fixture;
use cowbench_drivers::sys::hostinfo;
use cowbench_workloads::probe::{Op, Request};

fn write_op(bytes: u64) -> Op {
    Op::Write {
        path: "/fill".into(),
        block_bytes: 1 << 20,
        bytes,
        direct: false,
        random: false,
        fsync: true,
        create: true,
        per_block: false,
        seed: 7,
    }
}

#[test]
fn container_writer_fills_btrfs_store_and_store_recovers() {
    let Some(fx) = fixture("btrfs", &[("size", "512M")]) else { return };
    assert!(hostinfo::which("runc").is_some(), "runc is not installed (Debian package runc)");
    let rt = Runtime::new(RuntimeKind::Runc, &fx.root().join("cb")).expect("runtime");
    let img = image::build(fx.driver(), &ImageSpec::new("base", 1, Shape::Base)).expect("base image");

    // Twice the store: the writer must be stopped by the store, not by running out of data.
    let mut spec = ContainerSpec::probe(&Request::new(vec![write_op(1 << 30)]));
    spec.timeout = Some(Duration::from_secs(300));
    let out = rt.run(fx.driver(), &img, &spec).expect("run the writer");
    assert!(!out.timed_out, "the writer hung on a full store");
    let resp = out.probe_response().unwrap();
    let (_, err) = resp.first_error().expect("a write of twice the store's size succeeded");
    assert_eq!(err.errno, Some(libc::ENOSPC), "{err:?}");
    eprintln!("writer stopped with ENOSPC after {:.1} s in the container", out.timings.run_ns as f64 / 1e9);

    // The writer's layer went with its container; the next one writes again.
    let mut spec = ContainerSpec::probe(&Request::new(vec![write_op(64 << 20)]));
    spec.timeout = Some(Duration::from_secs(300));
    let out = rt.run(fx.driver(), &img, &spec).expect("run after the store was full");
    let resp = out.probe_response().unwrap();
    assert_eq!(resp.errors, 0, "{:?}", resp.first_error());
    assert_eq!(resp.samples_of("write", "total").next().unwrap().bytes, 64 << 20);
    assert_eq!(rt.list_ours().unwrap(), Vec::<String>::new(), "runtime state left");
}
