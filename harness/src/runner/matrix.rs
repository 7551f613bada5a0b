//! The run plan: which cells, with how many repetitions at least (the order of their visits is
//! the schedule's).

use cowbench_drivers::registry;
use cowbench_workloads::{ParamSet, Params, Profile, Workload};

#[derive(Clone)]
pub struct Planned {
    pub driver: String,
    pub workload: &'static dyn Workload,
    pub params: Params,
    /// Unrecorded repetitions before the first recorded one.
    pub warmup: u32,
    /// Recorded repetitions: the minimum of an adaptive run, the count of a fixed one
    /// (`--repeat`).
    pub repetitions: u32,
    /// Metrics the claims decide on from this cell → the samples a verdict needs of each
    /// (empty: no claim reads the cell). An adaptive run repeats the cell until it has them.
    pub claim_needs: std::collections::BTreeMap<String, usize>,
}

impl Planned {
    pub fn key(&self) -> String {
        crate::results::Cell::key_of(self.workload.id(), &self.driver, &self.params)
    }
    pub fn reps_total(&self) -> u32 {
        self.warmup + self.repetitions
    }
}

pub struct Plan {
    pub drivers: Vec<String>,
    pub workloads: Vec<String>,
    /// Driver-major, then workload, then parameters (the order of run.json's cells).
    pub cells: Vec<Planned>,
}

impl Plan {
    /// Repetitions of the minimum counts, warm-ups included.
    pub fn total_reps(&self) -> u64 {
        self.cells.iter().map(|c| c.reps_total() as u64).sum()
    }
}

/// Build the plan; unknown driver or workload names are an error naming the known ones, and so
/// is a `--set` for a workload not in the run or that yields a cell its workload rejects. All of
/// these are the caller's usage errors, found before anything is created.
pub fn plan(
    drivers: Option<&[String]>,
    workloads: Option<&[String]>,
    profile: Profile,
    repeat: Option<u32>,
    sets: &[ParamSet],
) -> anyhow::Result<Plan> {
    let drivers: Vec<String> = match drivers {
        Some(d) => d.to_vec(),
        None => registry::DRIVERS.iter().map(|s| s.to_string()).collect(),
    };
    for d in &drivers {
        if !registry::DRIVERS.contains(&d.as_str()) {
            anyhow::bail!("unknown driver '{d}'; known drivers: {}", registry::DRIVERS.join(", "));
        }
    }
    let all = cowbench_workloads::all();
    let workloads: Vec<&'static dyn Workload> = match workloads {
        Some(ws) => ws
            .iter()
            .map(|w| {
                cowbench_workloads::by_id(w).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown workload '{w}'; known workloads: {}",
                        all.iter().map(|w| w.id()).collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
        None => all,
    };
    if repeat == Some(0) {
        anyhow::bail!("--repeat must be at least 1");
    }
    for s in sets {
        if !workloads.iter().any(|w| w.id() == s.workload) {
            anyhow::bail!(
                "--set {}.{}: workload '{}' is not part of this run (--workloads {})",
                s.workload,
                s.param,
                s.workload,
                workloads.iter().map(|w| w.id()).collect::<Vec<_>>().join(",")
            );
        }
    }
    // Cells per workload, computed once: the same for every driver.
    let per_workload: Vec<Vec<Params>> = workloads
        .iter()
        .map(|w| cowbench_workloads::params::apply_sets(*w, w.cells(profile), sets))
        .collect::<Result<_, _>>()?;
    let mut cells = Vec::new();
    for d in &drivers {
        for (w, wcells) in workloads.iter().zip(&per_workload) {
            for params in wcells.iter().cloned() {
                cells.push(Planned {
                    driver: d.clone(),
                    workload: *w,
                    params,
                    warmup: w.warmup(profile),
                    // The same count for every driver: it depends on the workload and profile only.
                    repetitions: repeat.unwrap_or_else(|| w.repetitions(profile)),
                    claim_needs: Default::default(),
                });
            }
        }
    }
    // What the claims will decide on (only an adaptive run acts on it: `--repeat` is exact).
    if repeat.is_none() {
        let set = crate::claims::ClaimSet::builtin();
        let planned: Vec<_> = cells
            .iter()
            .map(|c| crate::claims::needs::PlannedCell { workload: c.workload.id(), driver: &c.driver, params: &c.params })
            .collect();
        let available: std::collections::BTreeSet<&str> =
            drivers.iter().filter(|d| registry::probe(d).is_ok_and(|p| p.available)).map(String::as_str).collect();
        let needs = crate::claims::needs::planned_needs(&set, &planned, &|d| available.contains(d));
        for (c, n) in cells.iter_mut().zip(needs) {
            c.claim_needs = n.samples;
        }
    }
    Ok(Plan { drivers, workloads: workloads.iter().map(|w| w.id().to_string()).collect(), cells })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_repetitions_for_every_driver() {
        let p = plan(Some(&["overlay".into(), "vfs".into()]), None, Profile::Quick, None, &[]).unwrap();
        assert_eq!(p.drivers, vec!["overlay", "vfs"]);
        let n = p.cells.len();
        assert!(n >= 2);
        assert_eq!(n / 2 * 2, n);
        for (a, b) in p.cells[..n / 2].iter().zip(&p.cells[n / 2..]) {
            assert_eq!((a.workload.id(), &a.params, a.repetitions, a.warmup), (b.workload.id(), &b.params, b.repetitions, b.warmup));
        }
        let r = plan(Some(&["vfs".into()]), Some(&["copyup".into()]), Profile::Quick, Some(7), &[]).unwrap();
        assert!(r.cells.iter().all(|c| c.repetitions == 7 && c.workload.id() == "copyup"));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(plan(Some(&["ext9".into()]), None, Profile::Quick, None, &[]).is_err());
        assert!(plan(None, Some(&["nope".into()]), Profile::Quick, None, &[]).is_err());
        assert!(plan(None, None, Profile::Quick, Some(0), &[]).is_err());
    }

    #[test]
    fn sets_change_the_cells_of_every_driver() {
        let sets: Vec<ParamSet> =
            ["copyup.file_bytes=4K,1M,256M", "density.containers=1,100,1000"].iter().map(|s| s.parse().unwrap()).collect();
        let p = plan(Some(&["overlay".into(), "vfs".into()]), Some(&["copyup".into(), "density".into()]), Profile::Quick, None, &sets).unwrap();
        // The values each driver's cells take (copyup also sweeps depth at the largest size).
        let of = |w: &str, d: &str, k: &str| -> Vec<u64> {
            let v: std::collections::BTreeSet<u64> =
                p.cells.iter().filter(|c| c.workload.id() == w && c.driver == d).map(|c| c.params[k].as_u64().unwrap()).collect();
            v.into_iter().collect()
        };
        assert_eq!(of("copyup", "vfs", "file_bytes"), vec![4096, 1 << 20, 256 << 20]);
        assert_eq!(of("density", "overlay", "containers"), vec![1, 100, 1000]);
        // A set for a workload outside the run is a usage error, not silently dropped.
        assert!(plan(None, Some(&["copyup".into()]), Profile::Quick, None, &sets).is_err());
    }
}
