//! `cowbench workloads` (and `cowbench run --list`): every workload with its parameters (kind,
//! meaning, the values each profile runs), warm-up and repetitions per profile, and metrics
//! (unit, which direction is better). `--json` gives the same as data.

use std::fmt::Write;
use std::process::ExitCode;

use cowbench_workloads::{MetricSpec, ParamSpec, Profile, Workload};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct WorkloadsArgs {
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

const PROFILES: [Profile; 2] = [Profile::Quick, Profile::Full];

#[derive(Serialize)]
struct ProfileInfo {
    profile: Profile,
    warmup: u32,
    repetitions: u32,
    cells: usize,
}

#[derive(Serialize)]
struct ParamInfo {
    #[serde(flatten)]
    spec: ParamSpec,
    /// Distinct values per profile (`quick`, `full`), in run order (`null`: some cells leave it out).
    values: std::collections::BTreeMap<&'static str, Vec<serde_json::Value>>,
}

#[derive(Serialize)]
struct WorkloadInfo {
    id: &'static str,
    description: &'static str,
    claims: &'static [&'static str],
    drop_caches: bool,
    profiles: Vec<ProfileInfo>,
    params: Vec<ParamInfo>,
    metrics: &'static [MetricSpec],
}

/// The values `p` takes over the cells of a profile, first appearance first.
fn values(w: &dyn Workload, p: &ParamSpec, profile: Profile) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for c in w.cells(profile) {
        let v = c.get(p.name).cloned().unwrap_or(serde_json::Value::Null);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn info(w: &'static dyn Workload) -> WorkloadInfo {
    WorkloadInfo {
        id: w.id(),
        description: w.description(),
        claims: w.claims(),
        drop_caches: w.drop_caches(),
        profiles: PROFILES
            .iter()
            .map(|&profile| ProfileInfo {
                profile,
                warmup: w.warmup(profile),
                repetitions: w.repetitions(profile),
                cells: w.cells(profile).len(),
            })
            .collect(),
        params: w
            .params()
            .iter()
            .map(|p| ParamInfo { spec: *p, values: PROFILES.iter().map(|&pr| (pr.as_str(), values(w, p, pr))).collect() })
            .collect(),
        metrics: w.metrics(),
    }
}

/// The listing for people.
pub fn text() -> String {
    let mut o = String::new();
    for w in cowbench_workloads::all() {
        let i = info(w);
        let _ = writeln!(o, "{} — {}", i.id, i.description);
        let _ = writeln!(o, "  claims: {}", i.claims.join(", "));
        let reps: Vec<String> = i
            .profiles
            .iter()
            .map(|p| format!("{} {} cells × ({} warm-up + {} recorded)", p.profile.as_str(), p.cells, p.warmup, p.repetitions))
            .collect();
        let _ = writeln!(o, "  repetitions: {}; caches dropped: {}", reps.join(", "), if i.drop_caches { "yes" } else { "no" });
        let _ = writeln!(o, "  parameters (--set {}.NAME=VALUES):", i.id);
        let width = i.params.iter().map(|p| p.spec.name.len()).max().unwrap_or(0);
        for p in &i.params {
            let _ = writeln!(o, "    {:width$}  {:<15} {}", p.spec.name, p.spec.kind.describe(), p.spec.description);
            for profile in PROFILES {
                let shown: Vec<String> = p.values[profile.as_str()].iter().map(|v| p.spec.kind.format(v)).collect();
                let _ = writeln!(o, "    {:width$}  {:<15}   {}: {}", "", "", profile.as_str(), shown.join(", "));
            }
        }
        let _ = writeln!(o, "  metrics:");
        let width = i.metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in i.metrics {
            let _ = writeln!(o, "    {:width$}  {:<11} {:<7} {}", m.name, m.unit.as_str(), m.better.as_str(), m.description);
        }
        o.push('\n');
    }
    o
}

pub fn run(a: WorkloadsArgs) -> anyhow::Result<ExitCode> {
    if a.json {
        let all: Vec<WorkloadInfo> = cowbench_workloads::all().into_iter().map(info).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", text());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_workload_parameter_and_metric() {
        let t = text();
        for w in cowbench_workloads::all() {
            assert!(t.contains(&format!("{} — ", w.id())), "{}", w.id());
            for p in w.params() {
                assert!(t.contains(p.name), "{}.{}", w.id(), p.name);
            }
        }
        let line = t.lines().find(|l| l.trim_start().starts_with("after_before_ratio ")).unwrap();
        assert_eq!(line.split_whitespace().take(3).collect::<Vec<_>>(), ["after_before_ratio", "ratio", "higher"]);
        assert!(t.contains("quick: 4 KiB, 1 MiB, 16 MiB, 64 MiB"), "{t}");
        let j = serde_json::to_value(cowbench_workloads::all().into_iter().map(info).collect::<Vec<_>>()).unwrap();
        let copyup = j.as_array().unwrap().iter().find(|w| w["id"] == "copyup").unwrap();
        assert_eq!(copyup["metrics"][0]["unit"], "ns");
        assert_eq!(copyup["metrics"][0]["better"], "lower");
        assert_eq!(copyup["params"][0]["name"], "file_bytes");
        assert_eq!(copyup["params"][0]["kind"], "bytes");
    }
}
