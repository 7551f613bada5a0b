//! Shared by the workload tests: a runner session on a conformance fixture's root.

use std::collections::BTreeMap;

use cowbench::container::{Runtime, RuntimeKind};
use cowbench::runner::exec::Session;
use cowbench_drivers::conformance::{fixture, Fixture};
use cowbench_drivers::registry;
use cowbench_drivers::sys::hostinfo;

/// Samples of one cell by metric name.
pub type Samples = BTreeMap<&'static str, Vec<f64>>;

/// A session on a fixture's root (a second handle of the fixture's driver), as the runner
/// opens one, with image and access-pattern seed `seed`. The fixture tears the backend down
/// when dropped; None (reason printed) when the driver cannot run here.
pub fn session(driver: &str, seed: u64) -> Option<(Fixture, Session)> {
    let fx = fixture(driver, &[])?;
    if hostinfo::which("runc").is_none() {
        panic!("runc is not installed (Debian package runc)");
    }
    let cfg = fx.config().clone();
    let s = Session {
        name: driver.into(),
        driver: registry::open(driver, &cfg).expect("second handle"),
        probe: registry::probe(driver).unwrap(),
        runtime: Runtime::new(RuntimeKind::Runc, &cfg.root).expect("runtime"),
        cfg,
        seed,
    };
    Some((fx, s))
}
