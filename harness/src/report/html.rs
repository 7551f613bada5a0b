//! report.html: one self-contained file (CSS inline, charts as base64 PNG) that opens offline.

use std::fmt::Write;

use anyhow::Context;

use super::table::{self, Span, Table, Tone};
use super::{base64, Report};
use crate::claims::{Verdict, VerdictKind};

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Inline `code` spans from backticks.
fn code(s: &str) -> String {
    let e = esc(s);
    let mut out = String::new();
    for (i, part) in e.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn class(k: VerdictKind) -> &'static str {
    match k {
        VerdictKind::Confirmed => "confirmed",
        VerdictKind::Refuted => "refuted",
        VerdictKind::Inconclusive => "inconclusive",
        VerdictKind::Invalid => "invalid",
        VerdictKind::NotMeasured => "notmeasured",
    }
}

fn badge(k: VerdictKind) -> String {
    format!("<span class=\"badge {}\">{} {}</span>", class(k), k.symbol(), k.as_str())
}

fn marks(v: &Verdict) -> String {
    v.marks.labels().iter().map(|m| format!("<span class=\"mark\">{}</span>", esc(m))).collect::<Vec<_>>().join("")
}

/// Badge, key number, why, marks.
fn verdict_html(v: &Verdict, compact: bool) -> String {
    let mut s = badge(v.kind);
    let lead = v.why.as_ref().filter(|w| w.leads());
    if let Some(w) = lead {
        let _ = write!(s, " <span class=\"why lead\">{}</span>", esc(&w.text()));
    }
    if !v.key.is_empty() {
        let _ = write!(s, " <span class=\"key\">{}</span>", esc(&v.key));
    }
    if let Some(w) = v.why.as_ref().filter(|_| lead.is_none()) {
        // Compact cells: the key number plus the kind of reason; the claim's section has it all.
        let t = if compact && !v.key.is_empty() { format!("({})", w.short()) } else { w.text() };
        let _ = write!(s, " <span class=\"why\" title=\"{}\">{}</span>", esc(&w.text()), esc(&t));
    }
    let m = marks(v);
    if !m.is_empty() {
        let _ = write!(s, "{}{m}", if compact { " " } else { "<br>" });
    }
    s
}

fn tone(t: Tone) -> &'static str {
    match t {
        Tone::Good => "confirmed",
        Tone::Bad => "refuted",
        Tone::Mixed => "inconclusive",
        Tone::Neutral => "notmeasured",
    }
}

fn span(s: &Span) -> String {
    match s {
        Span::Text(t) => esc(t),
        Span::Strong(t) => format!("<strong>{}</strong>", esc(t)),
        Span::Muted(t) => format!("<span class=\"why\">{}</span>", esc(t)),
        Span::Mark(t) => format!("<span class=\"mark\">{}</span>", esc(t)),
        Span::Badge(t, text) => format!("<span class=\"badge {}\">{}</span>", tone(*t), esc(text)),
        Span::ClaimIds(ids) => format!(
            "<span class=\"ids\">{}</span>",
            ids.iter().map(|id| format!("<a href=\"#{id}\">{id}</a>")).collect::<Vec<_>>().join(", ")
        ),
        Span::Anchor { text, id } => format!("<a href=\"#{id}\">{}</a>", esc(text)),
        Span::Verdict(v) => verdict_html(v, true),
        Span::RunVerdict { tag, run, verdict } => {
            let who = tag.as_ref().map(|t| format!("<span class=\"run\" title=\"{}\">{}</span> ", esc(run), esc(t))).unwrap_or_default();
            format!("<div class=\"cv\">{who}{}</div>", verdict_html(verdict, true))
        }
    }
}

/// A table of the report model as HTML (ids, classes and `data-` attributes kept for scripts).
fn table(t: &Table) -> String {
    let mut o = String::from("<table");
    if let Some(id) = t.id {
        let _ = write!(o, " id=\"{id}\"");
    }
    if let Some(c) = t.class {
        let _ = write!(o, " class=\"{c}\"");
    }
    o.push_str("><thead><tr>");
    for c in &t.columns {
        let _ = write!(o, "<th>{}</th>", esc(c));
    }
    o.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        match &row.data {
            Some((k, v)) => {
                let _ = write!(o, "<tr data-{k}=\"{}\">", esc(v));
            }
            None => o.push_str("<tr>"),
        }
        for c in &row.cells {
            let body: String = c.spans.iter().map(span).collect::<Vec<_>>().join(" ");
            let _ = write!(o, "<td{}>{body}</td>", if c.numeric { " class=\"num\"" } else { "" });
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    o
}

const CSS: &str = r#"
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa;
  --ok:#1a7f37; --ok-bg:#dafbe1; --bad:#cf222e; --bad-bg:#ffebe9; --mid:#9a6700; --mid-bg:#fff8c5;
  --nm:#59636e; --nm-bg:#eaeef2; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; background:var(--soft); color:var(--fg);
  font: 15px/1.5 "DejaVu Sans", -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; background: var(--bg);
  box-shadow: 0 0 0 1px var(--line); min-height: 100vh; }
h1 { font-size: 30px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 22px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 18px; margin: 0 0 6px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.warn { background: var(--mid-bg); border: 1px solid #d4a72c66; border-left: 4px solid #d4a72c;
  padding: 10px 14px; margin: 10px 0; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; margin: 10px 0 16px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 7px 10px; vertical-align: top; text-align: left; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.facts td:first-child { width: 170px; color: var(--muted); white-space: nowrap; }
table.tradeoffs td { width: 21%; } table.tradeoffs td:first-child { width: 10%; font-weight: 600; }
table.tradeoffs .text { margin-bottom: 6px; }
.ids { display:block; color: var(--muted); font-size: 12px; margin-bottom: 4px; }
.cv { margin-top: 4px; font-size: 13px; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12.5px; font-weight: 600;
  white-space: nowrap; border: 1px solid transparent; }
.badge.confirmed { color: var(--ok); background: var(--ok-bg); border-color: #4ac26b66; }
.badge.refuted { color: var(--bad); background: var(--bad-bg); border-color: #ff818266; }
.badge.inconclusive { color: var(--mid); background: var(--mid-bg); border-color: #d4a72c66; }
.badge.notmeasured { color: var(--nm); background: var(--nm-bg); border-color: #afb8c166; }
.badge.invalid { color: #8250df; background: #fbefff; border-color: #8250df66; }
.key { font-variant-numeric: tabular-nums; }
.why { color: var(--muted); }
.mark { display: inline-block; margin: 2px 4px 0 0; padding: 0 7px; border-radius: 4px; font-size: 11.5px;
  color: #6639ba; background: #fbefff; border: 1px solid #c297ff66; }
.run { font-weight: 600; color: var(--accent); }
.claim { border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; margin: 18px 0; }
.claim blockquote { margin: 6px 0 8px; padding: 2px 12px; border-left: 3px solid var(--line); color: #32383f; }
.meta { color: var(--muted); font-size: 13px; margin-bottom: 8px; }
.verdict { margin: 10px 0; }
.drivers { margin: 6px 0 10px 0; padding-left: 18px; font-size: 13.5px; }
figure { margin: 12px 0; }
figure img { width: 100%; max-width: 960px; height: auto; border: 1px solid var(--line); border-radius: 6px; display: block; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.rule { font-size: 13px; color: #32383f; background: var(--soft); border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.rule p { margin: 3px 0; }
details summary { cursor: pointer; color: var(--accent); font-size: 13.5px; margin: 6px 0; }
code { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12.5px; background: var(--soft);
  padding: 0 4px; border-radius: 4px; }
.legend span { margin-right: 10px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
"#;

/// Sets `data-images-total` / `data-images-loaded` on <body> once the page loaded: a
/// self-check that every embedded chart decodes (read back by headless browsers).
const SCRIPT: &str = r#"
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
"#;

pub fn render(r: &Report) -> anyhow::Result<String> {
    let multi = r.runs.len() > 1;
    let mut img = std::collections::BTreeMap::new();
    for c in &r.charts {
        let bytes = std::fs::read(&c.png).with_context(|| format!("reading chart {}", c.png.display()))?;
        img.insert(c.id.clone(), (c.title.clone(), format!("data:image/png;base64,{}", base64(&bytes))));
    }
    let figure = |id: &str| -> String {
        match img.get(id) {
            Some((title, uri)) => format!(
                "<figure><img src=\"{uri}\" alt=\"{}\" width=\"960\" height=\"540\"><figcaption>{} — error bars: the interval of each median (a 95% CI from 6 samples on; with fewer, the range of the samples) — <code>charts/{id}.svg</code>, <code>charts/{id}.png</code></figcaption></figure>",
                esc(title),
                esc(title)
            ),
            None => String::new(),
        }
    };
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>cowbench report — {}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body><main>",
        esc(&r.runs.iter().map(|x| x.label.clone()).collect::<Vec<_>>().join(", "))
    );
    let _ = write!(
        o,
        "<h1>cowbench report</h1><p class=\"sub\">Which container storage driver should I use, and why? Every claim of the storage-driver trade-off table, decided from raw samples. {} · runs: {}</p>",
        esc(&r.generated_by),
        r.runs.iter().map(|x| format!("<code>{}</code>", esc(&x.label))).collect::<Vec<_>>().join(", ")
    );
    for run in &r.runs {
        for w in &run.warnings {
            let _ = write!(
                o,
                "<div class=\"warn\"><strong>Warning{}:</strong> {}</div>",
                if multi { format!(" ({})", esc(&run.label)) } else { String::new() },
                esc(w)
            );
        }
    }

    // Host and reproducibility.
    let _ = write!(o, "<h2 id=\"host\">Host and reproducibility</h2>{}<h3>Backends</h3>{}", table(&table::facts(r)), table(&table::backends(r)));

    // The table.
    o.push_str("<h2 id=\"table\">The trade-off table, measured</h2><p class=\"sub\">The table of the storage-driver documents, each cell with its measured verdict and the number that decided it. Claim ids link to their sections.</p>");
    if multi {
        let legend: Vec<String> =
            r.runs.iter().enumerate().map(|(i, x)| format!("<span class=\"run\">R{}</span> {}", i + 1, esc(&x.label))).collect();
        let _ = write!(o, "<p class=\"sub\">Runs: {}. Each run is decided on its own; runs of the same machine and environment are also decided together on their pooled samples (\"pooled\").</p>", legend.join(" · "));
    }
    o.push_str(&table(&table::tradeoffs(r)));

    // Claims summary.
    let _ = write!(o, "<h2 id=\"claims\">Claims</h2>{}", table(&table::claims(r)));

    for c in &r.claims {
        let _ = write!(o, "<section class=\"claim\" id=\"{}\"><h3>{}</h3><blockquote>{}</blockquote>", c.id, c.id, esc(&c.statement));
        let _ = write!(
            o,
            "<div class=\"meta\">Source: {} · workloads: {} · drivers: {} (aggregate: {})</div>",
            esc(&c.source),
            esc(&c.workloads.join(", ")),
            esc(&c.drivers.join(", ")),
            esc(&c.aggregate)
        );
        for (i, v) in c.verdicts.iter().enumerate() {
            let who = if multi { format!("<span class=\"run\">{}</span> ", esc(&v.run)) } else { String::new() };
            let _ = write!(o, "<div class=\"verdict\">{who}{}</div>", verdict_html(&v.verdict, false));
            if v.drivers.len() > 1 {
                o.push_str("<ul class=\"drivers\">");
                for d in &v.drivers {
                    let _ = write!(o, "<li><strong>{}</strong>: {}</li>", esc(&d.driver), verdict_html(&d.verdict, true));
                }
                o.push_str("</ul>");
            }
            if let Some(Some(id)) = c.charts.get(i) {
                o.push_str(&figure(id));
            }
            let numbers = table::numbers(v);
            if !numbers.rows.is_empty() {
                let _ = write!(
                    o,
                    "<details{}><summary>Numbers ({} groups)</summary>{}</details>",
                    if numbers.rows.len() <= 16 { " open" } else { "" },
                    numbers.rows.len(),
                    table(&numbers)
                );
            }
        }
        for g in &c.combined {
            let _ = write!(
                o,
                "<div class=\"verdict combined\"><span class=\"run\">{}</span> <span class=\"why\">decided on the pooled samples of {}</span><br>{}</div>",
                esc(&g.tag),
                esc(&g.runs.join(", ")),
                verdict_html(&g.verdict.verdict, false)
            );
            if g.verdict.drivers.len() > 1 {
                o.push_str("<ul class=\"drivers\">");
                for d in &g.verdict.drivers {
                    let _ = write!(o, "<li><strong>{}</strong>: {}</li>", esc(&d.driver), verdict_html(&d.verdict, true));
                }
                o.push_str("</ul>");
            }
            match &g.flipped {
                Some(f) => {
                    let _ = write!(o, "<p class=\"flipped\"><span class=\"badge inconclusive\">flipped between runs</span> {}</p>", esc(f));
                }
                None if g.measured_in.len() > 1 => {
                    let _ = write!(o, "<p class=\"why\">Stable: each of {} alone gives the same verdict.</p>", esc(&g.measured_in.join(", ")));
                }
                None => {
                    let _ = write!(o, "<p class=\"why\">Stability unknown: measured in {} run(s) only ({}).</p>", g.measured_in.len(), esc(&g.measured_in.join(", ")));
                }
            }
        }
        o.push_str("<div class=\"rule\"><strong>Decision rule</strong>");
        for rule in &c.rules {
            let _ = write!(o, "<p>{}</p>", code(rule));
        }
        o.push_str("</div></section>");
    }

    // Workloads.
    o.push_str("<h2 id=\"workloads\">Workloads</h2>");
    if r.workloads.is_empty() {
        o.push_str("<p class=\"why\">No workload produced samples.</p>");
    }
    for w in &r.workloads {
        let _ = write!(o, "<h3>{}{}</h3><div class=\"grid\">", esc(&w.workload), if multi { format!(" — {}", esc(&w.run)) } else { String::new() });
        for id in &w.charts {
            o.push_str(&figure(id));
        }
        o.push_str("</div>");
    }

    if let Some(cmp) = &r.comparison {
        let _ = write!(
            o,
            "<h2 id=\"comparison\">Comparison: {} against baseline {}</h2><p>{} regression(s) beyond noise (the medians' intervals apart — 95% CIs from 6 samples on, the samples' range below — and ≥ {:.0}% worse).</p>",
            esc(&cmp.run),
            esc(&cmp.baseline),
            cmp.regressions,
            super::compare::MIN_CHANGE * 100.0
        );
        o.push_str(&table(&table::comparison(cmp)));
        for u in &cmp.unmatched {
            let _ = write!(o, "<p class=\"why\">unmatched: {}</p>", esc(u));
        }
        for m in &cmp.without_spec {
            let _ = write!(o, "<p class=\"why\">{}: no workload declares this metric, so no direction is known; never counted as a regression</p>", esc(m));
        }
    }
    let _ = writeln!(o, "<h2 id=\"method\">Method</h2><p>{}</p><footer>{}</footer></main></body></html>", esc(&r.method), esc(&r.generated_by));
    Ok(o)
}
