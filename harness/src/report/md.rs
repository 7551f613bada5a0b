//! report.md: the same content as the HTML, for pasting into issues and READMEs.

use std::fmt::Write;
use std::path::Path;

use super::table::{self, Span, Table, Tone};
use super::Report;
use crate::claims::Verdict;

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
    let lead = v.why.as_ref().filter(|w| w.leads());
    if let Some(w) = lead {
        let _ = write!(s, ": {}", w.text());
    }
    if !v.key.is_empty() {
        let _ = write!(s, " — {}", v.key);
    }
    if let Some(w) = v.why.as_ref().filter(|_| lead.is_none()) {
        let t = if compact && !v.key.is_empty() { w.short().to_string() } else { w.text() };
        let _ = write!(s, " ({t})");
    }
    let m = v.marks.labels();
    if !m.is_empty() {
        let _ = write!(s, " *[{}]*", m.join("; "));
    }
    esc(&s)
}

fn span(s: &Span) -> String {
    match s {
        Span::Text(t) | Span::Muted(t) => esc(t),
        Span::Strong(t) => format!("**{}**", esc(t)),
        Span::Mark(t) => format!("({})", esc(t)),
        Span::Badge(Tone::Bad, t) => format!("**{}**", esc(t)),
        Span::Badge(_, t) => format!("*{}*", esc(t)),
        Span::ClaimIds(ids) => format!("<sub>{}</sub>", esc(&ids.join(", "))),
        Span::Anchor { text, id } => format!("[{}](#{id})", esc(text)),
        Span::Verdict(v) => verdict_md_as(v, true),
        Span::RunVerdict { tag: Some(t), verdict, .. } => format!("{t}: {}", verdict_md_as(verdict, true)),
        Span::RunVerdict { tag: None, verdict, .. } => verdict_md_as(verdict, true),
    }
}

/// A table of the report model as a GitHub-flavoured Markdown table.
fn table(t: &Table) -> String {
    let mut o = format!("| {} |\n|", t.columns.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
    for n in &t.numeric {
        o.push_str(if *n { "---:|" } else { "---|" });
    }
    o.push('\n');
    for row in &t.rows {
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|c| {
                let mut out = String::new();
                for (i, sp) in c.spans.iter().enumerate() {
                    // Each run's verdict on its own line.
                    let sep = if matches!(sp, Span::RunVerdict { .. }) { "<br>" } else { " " };
                    if i > 0 {
                        out.push_str(sep);
                    }
                    out.push_str(&span(sp));
                }
                out
            })
            .collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    o
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
    o.push_str(&table(&table::facts(r)));
    let _ = writeln!(o, "\n### Backends\n");
    o.push_str(&table(&table::backends(r)));

    // The table.
    let _ = writeln!(o, "\n## The trade-off table, measured\n");
    if multi {
        let legend: Vec<String> = r.runs.iter().enumerate().map(|(i, x)| format!("R{} = `{}`", i + 1, x.label)).collect();
        let _ = writeln!(o, "Runs: {}. Each run is decided on its own; runs of the same machine and environment are also decided together on their pooled samples (\"pooled\").\n", legend.join(", "));
    }
    o.push_str(&table(&table::tradeoffs(r)));

    // Claims.
    let _ = writeln!(o, "\n## Claims\n");
    o.push_str(&table(&table::claims(r)));
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
            let numbers = table::numbers(v);
            if !numbers.rows.is_empty() {
                o.push('\n');
                o.push_str(&table(&numbers));
            }
        }
        for g in &c.combined {
            let _ = writeln!(
                o,
                "**Combined verdict** ({}: decided on the pooled samples of {}): {}\n",
                g.tag,
                g.runs.join(", "),
                verdict_md(&g.verdict.verdict)
            );
            if g.verdict.drivers.len() > 1 {
                for d in &g.verdict.drivers {
                    let _ = writeln!(o, "- {}: {}", d.driver, verdict_md(&d.verdict));
                }
                o.push('\n');
            }
            match &g.flipped {
                Some(f) => {
                    let _ = writeln!(o, "**Flipped between runs:** {}\n", esc(f));
                }
                None if g.measured_in.len() > 1 => {
                    let _ = writeln!(o, "Stable: each of {} alone gives the same verdict.\n", g.measured_in.join(", "));
                }
                None => {
                    let _ = writeln!(o, "Stability unknown: measured in {} run(s) only ({}).\n", g.measured_in.len(), g.measured_in.join(", "));
                }
            }
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
        o.push_str(&table(&table::comparison(cmp)));
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
