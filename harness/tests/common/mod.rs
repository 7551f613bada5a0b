//! Shared by the workload tests: a [`HostLab`] on a conformance fixture's root, and one cell
//! run through the runner's own cell function.

use std::collections::BTreeMap;

use cowbench::container::{Runtime, RuntimeKind};
use cowbench::lab::HostLab;
use cowbench::results::schema::CellStatus;
use cowbench::runner::matrix::Planned;
use cowbench_drivers::conformance::{fixture, Fixture};
use cowbench_drivers::registry;
use cowbench_drivers::sys::hostinfo;
use cowbench_workloads::{by_id, Params};

/// Samples of one cell by metric name (metrics without samples are absent).
pub type Samples = BTreeMap<&'static str, Vec<f64>>;

/// A lab on a fixture's root (a second handle of the fixture's driver), as the runner opens
/// one, with image and access-pattern seed `seed`. The fixture tears the backend down when
/// dropped; None (reason printed) when the driver cannot run here.
pub fn lab(driver: &str, seed: u64) -> Option<(Fixture, HostLab)> {
    let fx = fixture(driver, &[])?;
    if hostinfo::which("runc").is_none() {
        panic!("runc is not installed (Debian package runc)");
    }
    let cfg = fx.config().clone();
    let lab = HostLab::from_parts(
        registry::open(driver, &cfg).expect("second handle"),
        cfg.clone(),
        registry::probe(driver).unwrap(),
        Runtime::new(RuntimeKind::Runc, &cfg.root).expect("runtime"),
        seed,
    );
    Some((fx, lab))
}

/// Run `reps` recorded repetitions (no warm-up) of workload `id` with `params` through the
/// runner's cell function (caches dropped where the workload asks): samples by metric name and
/// the notes; Err(reason) when the cell was skipped. A failed cell panics with its reason.
pub fn run_cell(lab: &HostLab, id: &str, params: &Params, reps: u32) -> Result<(Samples, BTreeMap<String, String>), String> {
    let w = by_id(id).unwrap_or_else(|| panic!("no workload {id}"));
    let p = Planned { driver: lab.name().to_string(), workload: w, params: params.clone(), warmup: 0, repetitions: reps, claim_needs: Default::default() };
    let cell = cowbench::runner::run_cell(lab, &p, &mut |_| {});
    match cell.status {
        CellStatus::Ok => {}
        CellStatus::Skipped => return Err(format!("skip: {}", cell.reason.unwrap_or_default())),
        CellStatus::Failed => panic!("{id} on {}: {}", lab.name(), cell.reason.unwrap_or_default()),
    }
    let mut out = Samples::new();
    for m in w.metrics() {
        let v = &cell.metrics[m.name].samples;
        if !v.is_empty() {
            out.insert(m.name, v.clone());
        }
    }
    Ok((out, cell.notes))
}
