//! The report's tables as one model: every row is built here, once, from the [`Report`], and
//! report.md and report.html only render it (as hyperfine's markup exporters render one table
//! into every format). A cell is a list of [`Span`]s that say *what* is shown (a verdict, a
//! link to a claim, a muted note); how each format shows it is the renderer's business.

use super::{CellVerdict, Change, Comparison, Report};
use crate::claims::{ClaimVerdict, Verdict};

/// How a badge reads: its colour in HTML, its emphasis in Markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Mixed,
    Neutral,
}

/// Inline content of a table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    Text(String),
    Strong(String),
    /// A secondary note (reason, "not part of this run").
    Muted(String),
    /// A condition shown beside a value ("loop-backed").
    Mark(String),
    Badge(Tone, String),
    /// Claim ids, each linking to its section.
    ClaimIds(Vec<String>),
    /// A link to a section of the report.
    Anchor { text: String, id: String },
    /// A verdict in a compact table cell.
    Verdict(Verdict),
    /// A verdict of one run (`R1`, or `all runs` when every run agrees) on its own line.
    RunVerdict { tag: Option<String>, run: String, verdict: Verdict },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub spans: Vec<Span>,
    /// Right-aligned (numbers).
    pub numeric: bool,
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell { spans: vec![Span::Text(s.into())], numeric: false }
    }
    fn num(s: impl Into<String>) -> Cell {
        Cell { spans: vec![Span::Text(s.into())], numeric: true }
    }
    fn of(spans: Vec<Span>) -> Cell {
        Cell { spans, numeric: false }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// A `data-NAME="value"` attribute of the HTML row (tests and scripts find rows by it).
    pub data: Option<(&'static str, String)>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// HTML id of the table.
    pub id: Option<&'static str>,
    /// HTML class of the table.
    pub class: Option<&'static str>,
    pub columns: Vec<String>,
    /// Which columns are numeric (right-aligned, also in the Markdown divider).
    pub numeric: Vec<bool>,
    pub rows: Vec<Row>,
}

impl Table {
    fn new(columns: Vec<String>) -> Table {
        let numeric = vec![false; columns.len()];
        Table { id: None, class: None, columns, numeric, rows: Vec::new() }
    }
    fn push(&mut self, data: Option<(&'static str, String)>, cells: Vec<Cell>) {
        let row = Row { data, cells };
        // The same group can reach a table from several rules: shown once.
        if !self.rows.contains(&row) {
            self.rows.push(row);
        }
    }
}

fn run_columns(first: &str, r: &Report) -> Vec<String> {
    std::iter::once(first.to_string()).chain(r.runs.iter().map(|x| x.label.clone())).collect()
}

/// Host and reproducibility facts, a column per run.
pub fn facts(r: &Report) -> Table {
    let mut t = Table::new(run_columns("", r));
    t.class = Some("facts");
    let mut keys: Vec<&String> = Vec::new();
    for run in &r.runs {
        for (k, _) in &run.facts {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for k in keys {
        let mut cells = vec![Cell::text(k.clone())];
        cells.extend(r.runs.iter().map(|x| Cell::text(x.facts.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.clone()).unwrap_or_default())));
        t.push(None, cells);
    }
    t
}

/// Every backend probed, with its implementation or why it is unavailable, a column per run.
pub fn backends(r: &Report) -> Table {
    let mut t = Table::new(run_columns("driver", r));
    t.class = Some("facts");
    let drivers: std::collections::BTreeSet<&String> = r.runs.iter().flat_map(|x| x.backends.keys()).collect();
    let mut drivers: Vec<&String> = drivers.into_iter().collect();
    drivers.sort_by_key(|d| (super::driver_rank(d), d.to_string()));
    for d in drivers {
        let mut cells = vec![Cell::text(d.clone())];
        for x in &r.runs {
            cells.push(Cell::of(match x.backends.get(d) {
                Some(b) if b.available => {
                    let mut s = vec![
                        Span::Badge(Tone::Good, "available".into()),
                        Span::Text(format!(
                            "{}{}",
                            b.implementation.clone().unwrap_or_default(),
                            b.version.as_ref().map(|v| format!(" {v}")).unwrap_or_default()
                        )),
                    ];
                    if b.loop_backed {
                        s.push(Span::Mark("loop-backed".into()));
                    }
                    if !x.drivers_in_run.contains(d) {
                        s.push(Span::Muted("— not part of this run".into()));
                    }
                    s
                }
                Some(b) => vec![Span::Badge(Tone::Neutral, "unavailable".into()), Span::Muted(b.reason.clone().unwrap_or_default())],
                None => vec![Span::Muted("not probed".into())],
            }));
        }
        t.push(None, cells);
    }
    t
}

/// One line per run, tagged R1, R2 … (the legend is above the table); a verdict every run
/// shares (e.g. "not a measurable claim") is shown once.
fn run_verdicts(vs: &[CellVerdict], multi: bool) -> Vec<Span> {
    if multi && vs.windows(2).all(|w| w[0].verdict == w[1].verdict) {
        return vec![Span::RunVerdict { tag: Some("all runs".into()), run: String::new(), verdict: vs[0].verdict.clone() }];
    }
    vs.iter()
        .enumerate()
        .map(|(i, c)| Span::RunVerdict {
            tag: multi.then(|| format!("R{}", i + 1)),
            run: c.run.clone(),
            verdict: c.verdict.clone(),
        })
        .collect()
}

/// The trade-off table: each cell's text, its claims and their measured verdicts.
pub fn tradeoffs(r: &Report) -> Table {
    let multi = r.runs.len() > 1;
    let mut t = Table::new(["Driver", "Traits", "Advantage", "Disadvantage", "Suited for"].map(String::from).to_vec());
    t.id = Some("tradeoffs");
    t.class = Some("tradeoffs");
    for row in &r.table {
        let mut cells = vec![Cell::of(vec![Span::Strong(row.driver.clone())])];
        for c in &row.cells {
            let mut s = vec![Span::Text(c.text.clone())];
            if !c.claims.is_empty() {
                s.push(Span::ClaimIds(c.claims.clone()));
            }
            s.extend(run_verdicts(&c.verdicts, multi));
            s.extend(c.combined.iter().map(|cv| Span::RunVerdict { tag: Some(cv.run.clone()), run: cv.run.clone(), verdict: cv.verdict.clone() }));
            cells.push(Cell::of(s));
        }
        t.push(Some(("driver", row.driver.clone())), cells);
    }
    t
}

/// Every claim's verdict, a column per run, then a column per group of pooled runs (with
/// "flipped" when the runs' own verdicts differ).
pub fn claims(r: &Report) -> Table {
    let mut columns = run_columns("Claim", r);
    if let Some(c) = r.claims.first() {
        columns.extend(c.combined.iter().map(|g| g.tag.clone()));
    }
    let mut t = Table::new(columns);
    t.id = Some("claims-table");
    t.class = Some("claims");
    for c in &r.claims {
        let mut cells = vec![Cell::of(vec![Span::Anchor { text: c.id.clone(), id: c.id.clone() }])];
        cells.extend(c.verdicts.iter().map(|v| Cell::of(vec![Span::Verdict(v.verdict.clone())])));
        for g in &c.combined {
            let mut s = vec![Span::Verdict(g.verdict.verdict.clone())];
            if g.flipped.is_some() {
                s.push(Span::Badge(Tone::Mixed, "flipped between runs".into()));
            }
            cells.push(Cell::of(s));
        }
        t.push(Some(("claim", c.id.clone())), cells);
    }
    t
}

/// The groups of samples a claim's rules decided on, with median and its interval: a 95% CI
/// from 6 samples on, below that the range of the samples with its real coverage.
pub fn numbers(cv: &ClaimVerdict) -> Table {
    let mut t = Table::new(["rule / metric", "driver", "parameters", "n", "median", "interval"].map(String::from).to_vec());
    t.class = Some("numbers");
    t.numeric = vec![false, false, false, true, true, true];
    for d in &cv.drivers {
        for r in &d.rules {
            let f = |v: f64| cowbench_workloads::metric::format_metric(&r.workload, &r.metric, v);
            for p in &r.points {
                let mut ci = Cell::num(format!("{} – {}", f(p.ci_lo), f(p.ci_hi)));
                ci.spans.push(Span::Muted(format!("({})", crate::claims::stats::interval_name(p.n, p.ci_coverage))));
                t.push(
                    None,
                    vec![
                        Cell::text(r.label.clone().unwrap_or_else(|| r.metric.clone())),
                        Cell::text(p.driver.clone()),
                        Cell::text(p.label.clone()),
                        Cell::num(p.n.to_string()),
                        Cell::num(f(p.median)),
                        ci,
                    ],
                );
            }
        }
    }
    t
}

/// The run against its baseline, cell by cell and metric by metric.
pub fn comparison(cmp: &Comparison) -> Table {
    use cowbench_workloads::metric::fmt_ratio;
    let mut t =
        Table::new(["cell", "metric", "baseline", "this run", "ratio", "interval", "change"].map(String::from).to_vec());
    t.numeric = vec![false, false, true, true, true, true, false];
    for row in &cmp.rows {
        let tone = match row.change {
            Change::Faster | Change::Better => Tone::Good,
            Change::Slower | Change::Worse => Tone::Bad,
            Change::Changed => Tone::Mixed,
            Change::NoChange => Tone::Neutral,
        };
        t.push(
            None,
            vec![
                Cell::text(row.cell.clone()),
                Cell::text(row.metric.clone()),
                Cell::num(row.format(row.baseline_median)),
                Cell::num(row.format(row.median)),
                Cell::num(fmt_ratio(row.ratio)),
                {
                    // A 95% interval only when both medians' are; else named by the thinner side.
                    let n = row.n.min(row.baseline_n);
                    let cov = crate::results::stats::median_ci_ranks(n.max(1)).2;
                    let mut c = Cell::num(format!("{} – {}", fmt_ratio(row.ratio_lo), fmt_ratio(row.ratio_hi)));
                    c.spans.push(Span::Muted(format!("({})", crate::claims::stats::interval_name(n, cov))));
                    c
                },
                Cell::of(vec![Span::Badge(tone, row.change.as_str().into())]),
            ],
        );
    }
    t
}
