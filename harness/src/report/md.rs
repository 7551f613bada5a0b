//! report.md: the same content as the HTML, for pasting into issues and READMEs.

use std::fmt::Write;
use std::path::Path;

use cowbench_workloads::metric::{fmt_ratio, format_metric};
use super::{CellVerdict, Report};
use crate::claims::{ClaimVerdict, Verdict};

fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// "✔ **confirmed** — key (why) *[marks]*"
pub fn verdict_md(v: &Verdict) -> String {
    verdict_md_as(v, false)
}

/// `compact`: only the kind of reason when a key number is shown (table cells).
pub fn verdict_md_as(v: &Verdict, compact: bool) -> String {
    let mut s = format!("{} **{}**", v.kind.symbol(), v.kind.as_str());
    if !v.key.is_empty() {
        let _ = write!(s, " — {}", v.key);
    }
    if let Some(w) = &v.why {
        let t = if compact && !v.key.is_empty() { w.short().to_string() } else { w.text() };
        let _ = write!(s, " ({t})");
    }
    let m = v.marks.labels();
    if !m.is_empty() {
        let _ = write!(s, " *[{}]*", m.join("; "));
    }
    esc(&s)
}

/// One line per run, tagged R1, R2 …; a verdict every run shares is printed once.
fn cell_verdicts(vs: &[CellVerdict], multi: bool) -> String {
    if multi && vs.windows(2).all(|w| w[0].verdict == w[1].verdict) {
        return format!("all runs: {}", verdict_md_as(&vs[0].verdict, true));
    }
    vs.iter()
        .enumerate()
        .map(|(i, c)| if multi { format!("R{}: {}", i + 1, verdict_md_as(&c.verdict, true)) } else { verdict_md_as(&c.verdict, true) })
        .collect::<Vec<_>>()
        .join("<br>")
}

pub fn numbers_md(out: &mut String, cv: &ClaimVerdict) {
    let mut rows = Vec::new();
    for d in &cv.drivers {
        for r in &d.rules {
            for p in &r.points {
                let cov = if p.ci_coverage < 0.95 { format!(" (coverage {:.0}%)", p.ci_coverage * 100.0) } else { String::new() };
                let row = format!(
                    "| {} | {} | {} | {} | {} | {} – {}{} |",
                    esc(r.label.as_deref().unwrap_or(&r.metric)),
                    esc(&p.driver),
                    esc(&p.label),
                    p.n,
                    format_metric(&r.workload, &r.metric, p.median),
                    format_metric(&r.workload, &r.metric, p.ci_lo),
                    format_metric(&r.workload, &r.metric, p.ci_hi),
                    cov
                );
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push_str("\n| rule / metric | driver | parameters | n | median | 95% CI |\n|---|---|---|---:|---:|---|\n");
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
}

pub fn render(r: &Report, _dir: &Path) -> String {
    let multi = r.runs.len() > 1;
    let mut o = String::new();
    let _ = writeln!(o, "# cowbench report\n");
    let _ = writeln!(
        o,
        "Which container storage driver should I use, and why? Every claim of the storage-driver trade-off table, decided from raw samples. {} · runs: {}\n",
        r.generated_by,
        r.runs.iter().map(|x| format!("`{}`", x.label)).collect::<Vec<_>>().join(", ")
    );
    for run in &r.runs {
        for w in &run.warnings {
            let _ = writeln!(o, "> **Warning{}:** {w}\n", if multi { format!(" ({})", run.label) } else { String::new() });
        }
    }

    // Host and reproducibility.
    let _ = writeln!(o, "## Host and reproducibility\n");
    let _ = writeln!(o, "| | {} |", r.runs.iter().map(|x| esc(&x.label)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(o, "|---|{}", "---|".repeat(r.runs.len()));
    let mut keys: Vec<&String> = Vec::new();
    for run in &r.runs {
        for (k, _) in &run.facts {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for k in keys {
        let vals: Vec<String> = r
            .runs
            .iter()
            .map(|x| x.facts.iter().find(|(fk, _)| fk == k).map(|(_, v)| esc(v)).unwrap_or_default())
            .collect();
        let _ = writeln!(o, "| {k} | {} |", vals.join(" | "));
    }
    let _ = writeln!(o, "\n### Backends\n");
    let _ = writeln!(o, "| driver | {} |", r.runs.iter().map(|x| esc(&x.label)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(o, "|---|{}", "---|".repeat(r.runs.len()));
    let drivers: std::collections::BTreeSet<&String> = r.runs.iter().flat_map(|x| x.backends.keys()).collect();
    let mut drivers: Vec<&String> = drivers.into_iter().collect();
    drivers.sort_by_key(|d| (super::driver_rank(d), d.to_string()));
    for d in drivers {
        let vals: Vec<String> = r
            .runs
            .iter()
            .map(|x| match x.backends.get(d) {
                Some(b) if b.available => esc(&format!(
                    "yes — {}{}{}{}",
                    b.implementation.clone().unwrap_or_default(),
                    b.version.as_ref().map(|v| format!(" {v}")).unwrap_or_default(),
                    if b.loop_backed { " (loop-backed)" } else { "" },
                    if x.drivers_in_run.contains(d) { "" } else { " — not part of this run" }
                )),
                Some(b) => esc(&format!("no — {}", b.reason.clone().unwrap_or_default())),
                None => "not probed".into(),
            })
            .collect();
        let _ = writeln!(o, "| {d} | {} |", vals.join(" | "));
    }

    // The table.
    let _ = writeln!(o, "\n## The trade-off table, measured\n");
    if multi {
        let legend: Vec<String> = r.runs.iter().enumerate().map(|(i, x)| format!("R{} = `{}`", i + 1, x.label)).collect();
        let _ = writeln!(o, "Runs: {}. Verdicts are never compared across runs.\n", legend.join(", "));
    }
    let _ = writeln!(o, "| Driver | Traits | Advantage | Disadvantage | Suited for |\n|---|---|---|---|---|");
    for row in &r.table {
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|c| {
                let ids = if c.claims.is_empty() { String::new() } else { format!(" <sub>{}</sub>", c.claims.join(", ")) };
                format!("{}{}<br>{}", esc(&c.text), ids, cell_verdicts(&c.verdicts, multi))
            })
            .collect();
        let _ = writeln!(o, "| **{}** | {} |", row.driver, cells.join(" | "));
    }

    // Claims.
    let _ = writeln!(o, "\n## Claims\n");
    let _ = writeln!(o, "| Claim | {} |", r.runs.iter().map(|x| esc(&x.label)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(o, "|---|{}", "---|".repeat(r.runs.len()));
    for c in &r.claims {
        let vs: Vec<String> = c.verdicts.iter().map(|v| verdict_md_as(&v.verdict, true)).collect();
        let _ = writeln!(o, "| [{}](#{}) | {} |", c.id, c.id, vs.join(" | "));
    }
    for c in &r.claims {
        let _ = writeln!(o, "\n### {}\n", c.id);
        let _ = writeln!(o, "> {}\n", c.statement);
        let _ = writeln!(
            o,
            "Source: {} · workloads: {} · drivers: {} (aggregate: {})\n",
            c.source,
            c.workloads.join(", "),
            c.drivers.join(", "),
            c.aggregate
        );
        for (i, v) in c.verdicts.iter().enumerate() {
            let who = if multi { format!("{}: ", v.run) } else { String::new() };
            let _ = writeln!(o, "**Verdict** {who}{}\n", verdict_md(&v.verdict));
            if v.drivers.len() > 1 {
                for d in &v.drivers {
                    let _ = writeln!(o, "- {}: {}", d.driver, verdict_md(&d.verdict));
                }
                o.push('\n');
            }
            if let Some(Some(id)) = c.charts.get(i) {
                let _ = writeln!(o, "![{} chart](charts/{id}.png)\n", c.id);
            }
            numbers_md(&mut o, v);
        }
        let _ = writeln!(o, "\n**Rule:**\n");
        for rule in &c.rules {
            let _ = writeln!(o, "- {rule}");
        }
    }

    // Workloads.
    let _ = writeln!(o, "\n## Workloads\n");
    if r.workloads.is_empty() {
        let _ = writeln!(o, "No workload produced samples.");
    }
    for w in &r.workloads {
        let _ = writeln!(o, "### {}{}\n", w.workload, if multi { format!(" — {}", w.run) } else { String::new() });
        for id in &w.charts {
            let _ = writeln!(o, "![{id}](charts/{id}.png)\n");
        }
    }

    if let Some(cmp) = &r.comparison {
        let _ = writeln!(o, "\n## Comparison: {} against baseline {}\n", cmp.run, cmp.baseline);
        let _ = writeln!(o, "{} regression(s) beyond noise.\n", cmp.regressions);
        let _ = writeln!(o, "| cell | metric | baseline | this run | ratio | 95% interval | change |\n|---|---|---:|---:|---:|---|---|");
        for row in &cmp.rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} – {} | {} |",
                esc(&row.cell),
                row.metric,
                row.format(row.baseline_median),
                row.format(row.median),
                fmt_ratio(row.ratio),
                fmt_ratio(row.ratio_lo),
                fmt_ratio(row.ratio_hi),
                if row.change.is_regression() { format!("**{}**", row.change.as_str()) } else { row.change.as_str().into() }
            );
        }
        for u in &cmp.unmatched {
            let _ = writeln!(o, "\n- unmatched: {}", esc(u));
        }
        for m in &cmp.without_spec {
            let _ = writeln!(o, "\n- {}: no workload declares this metric, so no direction is known; never counted as a regression", esc(m));
        }
    }
    let _ = writeln!(o, "\n## Method\n\n{}", r.method);
    o
}
