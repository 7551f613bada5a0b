//! What the verdict engine reads: per run, the backends with their implementation and storage,
//! and the run document's cells ([`crate::results::Cell`]) with their raw samples. Built from a
//! `run.json` ([`crate::results::RunDoc`]) or by hand (tests, other front ends). Summaries
//! stored in results are never read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cowbench_workloads::Params;
use serde::Serialize;

use crate::host::Environment;
use crate::results::{Cell, CellStatus, Metric, RunDoc};

/// One backend as the run saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backend {
    pub available: bool,
    pub implementation: Option<String>,
    pub version: Option<String>,
    pub stand_in: bool,
    pub loop_backed: bool,
    /// Probe reason when unavailable.
    pub reason: Option<String>,
}

/// The engine reads the cells of the run document itself; these are the questions it asks
/// of one, and how tests and other front ends build one by hand.
impl Cell {
    /// An ok cell with no samples yet; the key follows from workload, driver and parameters.
    pub fn new(workload: &str, driver: &str, params: Params) -> Self {
        Cell {
            key: Cell::key_of(workload, driver, &params),
            workload: workload.into(),
            driver: driver.into(),
            implementation: None,
            stand_in: false,
            loop_backed: false,
            params,
            status: CellStatus::Ok,
            reason: None,
            warmup: 0,
            repetitions: 0,
            caches_dropped: false,
            cache_drop: Default::default(),
            metrics: BTreeMap::new(),
            notes: BTreeMap::new(),
            host_before: None,
            host_after: None,
            started_unix: 0,
            duration_s: 0.0,
            sampling: None,
        }
    }

    /// The cell with raw samples of `metric` (unit from the workload's spec; "count" for a
    /// metric no workload declares).
    pub fn with_metric(mut self, metric: &str, samples: Vec<f64>) -> Self {
        let unit = cowbench_workloads::metric_spec(&self.workload, metric).map_or_else(|| "count".into(), |s| s.unit.into());
        let sample_rep = (0..samples.len() as u32).collect();
        self.metrics.insert(metric.into(), Metric { unit, samples, sample_rep, summary: None });
        self
    }

    /// Raw samples of `metric` (stored summaries are never read).
    pub fn samples(&self, metric: &str) -> Option<&[f64]> {
        self.metrics.get(metric).map(|m| m.samples.as_slice())
    }

    /// Numeric value of a parameter (numbers, and strings that parse as numbers).
    pub fn param_f64(&self, name: &str) -> Option<f64> {
        match self.params.get(name)? {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.parse().ok(),
            serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    /// The cell ran on a stand-in for the kernel driver (aufs on unionfs-fuse, zfs on zfs-fuse).
    pub fn is_stand_in(&self) -> bool {
        self.stand_in || self.implementation.as_deref().is_some_and(implementation_is_stand_in)
    }
}

/// Implementations that are stand-ins for a kernel driver.
pub fn implementation_is_stand_in(imp: &str) -> bool {
    let i = imp.to_ascii_lowercase();
    i.contains("stand-in") || i.contains("unionfs-fuse") || i.contains("zfs-fuse")
}

/// One run (one host or environment).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunEvidence {
    /// Column title in merged reports: host and environment.
    pub label: String,
    pub dir: Option<PathBuf>,
    pub run_id: String,
    /// Where the numbers come from, as a key two runs must share to be compared:
    /// `host`, or `vm-<accel>` (`vm-tcg`: software-emulated CPU, `vm-kvm`).
    pub environment: String,
    /// The run finished (not still running, killed or interrupted).
    pub complete: bool,
    pub profile: String,
    pub drivers_requested: Vec<String>,
    pub workloads_requested: Vec<String>,
    pub backends: BTreeMap<String, Backend>,
    /// The run document's cells as they are.
    pub cells: Vec<Cell>,
    /// Host and reproducibility facts, in display order.
    pub facts: Vec<(String, String)>,
}

impl RunEvidence {
    /// A run with every given driver available on real storage (used to build evidence by hand).
    pub fn synthetic(label: &str, drivers: &[&str], workloads: &[&str]) -> Self {
        RunEvidence {
            label: label.into(),
            run_id: label.into(),
            environment: "host".into(),
            complete: true,
            profile: "quick".into(),
            drivers_requested: drivers.iter().map(|s| s.to_string()).collect(),
            workloads_requested: workloads.iter().map(|s| s.to_string()).collect(),
            backends: drivers
                .iter()
                .map(|d| (d.to_string(), Backend { available: true, ..Default::default() }))
                .collect(),
            ..Default::default()
        }
    }

    /// Ran inside the cowbench VM.
    pub fn is_vm(&self) -> bool {
        self.environment.starts_with("vm")
    }

    pub fn workload_ran(&self, workload: &str) -> bool {
        self.cells.iter().any(|c| c.workload == workload)
    }

    pub fn from_doc(doc: &RunDoc, dir: Option<&Path>) -> Self {
        let h = &doc.host;
        let host_name = dir
            .and_then(|d| d.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| doc.run_id.clone());
        // (comparison key, the fact shown in the report, the column title)
        let (environment, env, label) = match &h.environment {
            Environment::Host => ("host".to_string(), "host".to_string(), format!("{host_name} (host)")),
            Environment::Vm { accel, vcpus, mem_bytes } => (
                format!("vm-{accel}"),
                format!("VM ({accel}, {vcpus} vCPU, {})", cowbench_workloads::metric::fmt_bytes(*mem_bytes as f64)),
                format!("{host_name} (VM, {})", accel.to_uppercase()),
            ),
        };
        let backends = h
            .drivers
            .iter()
            .map(|b| {
                (
                    b.probe.name.clone(),
                    Backend {
                        available: b.probe.available,
                        implementation: b.probe.implementation.clone(),
                        version: b.probe.version.clone(),
                        stand_in: b.probe.stand_in,
                        loop_backed: b.storage.loop_backed,
                        reason: b.probe.reason.clone(),
                    },
                )
            })
            .collect();
        // The cells as stored; the engine reads raw samples only (summaries are ignored).
        let cells = doc.cells.clone();
        let runtime = h
            .runtime
            .as_ref()
            .map(|r| format!("{} {} ({})", r.name, r.version.clone().unwrap_or_default(), r.path))
            .unwrap_or_else(|| "none found".into());
        let root = &h.root;
        let facts = vec![
            ("run id".into(), doc.run_id.clone()),
            (
                "cowbench".into(),
                format!("{} (git {})", h.cowbench.version, h.cowbench.git_revision.clone().unwrap_or_else(|| "unknown".into())),
            ),
            ("profile".into(), doc.parameters.profile.clone()),
            (
                "parameters set".into(),
                if doc.parameters.sets.is_empty() {
                    "none (the profile's cells)".into()
                } else {
                    doc.parameters
                        .sets
                        .iter()
                        .map(|p| {
                            let spec = cowbench_workloads::params::param_spec(&p.workload, &p.param);
                            let vals: Vec<String> =
                                p.values.iter().map(|v| spec.map_or_else(|| v.to_string(), |s| s.kind.format(v))).collect();
                            format!("{}.{}={}", p.workload, p.param, vals.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                },
            ),
            ("command".into(), doc.parameters.command_line.join(" ")),
            ("environment".into(), env),
            ("kernel".into(), h.kernel.clone()),
            ("distro".into(), h.distro.clone()),
            ("CPU".into(), format!("{} × {}", h.cpu.count, h.cpu.model)),
            ("memory".into(), cowbench_workloads::metric::fmt_bytes(h.memory_bytes as f64)),
            ("cgroups".into(), format!("{:?}", h.cgroup).to_lowercase()),
            ("OCI runtime".into(), runtime),
            (
                "root storage".into(),
                format!(
                    "{} on {} ({}), scheduler {}, options {}",
                    root.path,
                    root.device.clone().unwrap_or_else(|| "?".into()),
                    root.filesystem.clone().unwrap_or_else(|| "?".into()),
                    root.scheduler.clone().unwrap_or_else(|| "?".into()),
                    root.mount_options.clone().unwrap_or_else(|| "?".into())
                ),
            ),
            ("duration".into(), doc.duration_s.map(|d| format!("{d:.0} s")).unwrap_or_else(|| format!("{:?}", doc.status).to_lowercase())),
            ("cells".into(), format!("{} ok, {} failed, {} skipped", doc.counts.ok, doc.counts.failed, doc.counts.skipped)),
        ];
        RunEvidence {
            label,
            dir: dir.map(Path::to_path_buf),
            run_id: doc.run_id.clone(),
            environment,
            complete: doc.status == crate::results::RunStatus::Complete,
            profile: doc.parameters.profile.clone(),
            drivers_requested: doc.parameters.drivers.clone(),
            workloads_requested: doc.parameters.workloads.clone(),
            backends,
            cells,
            facts,
        }
    }

    /// Which machine the numbers come from: the environment and the host facts that change
    /// what a number means (kernel, distro, CPU, memory). Only runs with the same key pool.
    pub fn machine(&self) -> String {
        let fact = |k: &str| self.facts.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.as_str()).unwrap_or("");
        format!("{} | {} | {} | {} | {}", self.environment, fact("kernel"), fact("distro"), fact("CPU"), fact("memory"))
    }

    /// Several runs of one machine as one: cells with the same key (workload, driver,
    /// parameters) that succeeded merge their samples (later runs' repetition indices follow
    /// the earlier ones', so a per-repetition series stays one series); a cell that failed or
    /// was skipped is kept only where no run has it succeeded. `label` titles the result.
    pub fn pooled(runs: &[&RunEvidence], label: &str) -> RunEvidence {
        let mut out = RunEvidence {
            label: label.into(),
            run_id: runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>().join("+"),
            environment: runs.first().map(|r| r.environment.clone()).unwrap_or_default(),
            complete: runs.iter().all(|r| r.complete),
            profile: runs.iter().map(|r| r.profile.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>().join("+"),
            facts: runs.first().map(|r| r.facts.clone()).unwrap_or_default(),
            ..Default::default()
        };
        for r in runs {
            for d in &r.drivers_requested {
                if !out.drivers_requested.contains(d) {
                    out.drivers_requested.push(d.clone());
                }
            }
            for w in &r.workloads_requested {
                if !out.workloads_requested.contains(w) {
                    out.workloads_requested.push(w.clone());
                }
            }
            for (d, b) in &r.backends {
                let e = out.backends.entry(d.clone()).or_insert_with(|| b.clone());
                if !e.available && b.available {
                    *e = b.clone();
                }
            }
            for c in &r.cells {
                match out.cells.iter_mut().position(|o| o.key == c.key) {
                    Some(i) if out.cells[i].status == CellStatus::Ok && c.status == CellStatus::Ok => {
                        let o = &mut out.cells[i];
                        for (name, m) in &c.metrics {
                            let e = o.metrics.entry(name.clone()).or_insert_with(|| Metric { samples: vec![], sample_rep: vec![], ..m.clone() });
                            let next = e.sample_rep.iter().max().map_or(0, |x| x + 1);
                            e.sample_rep.extend(m.sample_rep.iter().map(|x| x + next));
                            e.samples.extend(m.samples.iter().copied());
                            e.summary = None;
                        }
                        o.repetitions += c.repetitions;
                    }
                    Some(i) if c.status == CellStatus::Ok => out.cells[i] = c.clone(),
                    Some(_) => {}
                    None => out.cells.push(c.clone()),
                }
            }
        }
        out
    }

    /// Read `RUN_DIR/run.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = if dir.is_file() { dir.to_path_buf() } else { dir.join("run.json") };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let doc: RunDoc = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let run_dir = if dir.is_file() { dir.parent().unwrap_or(dir) } else { dir };
        Ok(Self::from_doc(&doc, Some(run_dir)))
    }
}
