//! Workload parameters as data: what each one is ([`ParamSpec`]), how a value of it is written
//! on the command line and shown in reports ([`ParamKind`]), and `cowbench run --set
//! WORKLOAD.PARAM=VALUES` ([`ParamSet`], [`apply_sets`]).
//!
//! Values are comma lists; numbers may be ranges: `1..16` (inclusive, step 1), `1..1024:x2`
//! (geometric), `0..100:+25` (arithmetic). Sizes take binary suffixes (`4K`, `1.5G`, `256MiB`).
//! A set replaces the parameter in every cell of the profile with each given value, so the
//! profile's own combinations (which need not be a product) are kept; duplicates are dropped in
//! order. Every resulting cell is checked by the workload's typed parameter struct.

use serde::{Deserialize, Serialize};

use crate::{Params, Workload};

/// How a parameter's values are written and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A size in bytes; the command line takes binary suffixes (`4K`, `1M`, `1.5G`).
    Bytes,
    /// A non-negative integer.
    Count,
    Bool,
    /// `true`, `false`, or `none` (the parameter left out: the default of the run).
    OptionalBool,
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

impl ParamKind {
    /// "bytes", "count", "bool", "true|false|none", "start|middle".
    pub fn describe(&self) -> String {
        match self {
            ParamKind::Bytes => "bytes".into(),
            ParamKind::Count => "count".into(),
            ParamKind::Bool => "bool".into(),
            ParamKind::OptionalBool => "true|false|none".into(),
            ParamKind::Choice(c) => c.join("|"),
        }
    }

    /// A value for people: sizes with binary prefixes, the rest as written.
    pub fn format(&self, v: &serde_json::Value) -> String {
        match (self, v.as_f64()) {
            (ParamKind::Bytes, Some(b)) => crate::metric::fmt_bytes(b),
            _ => match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "none".into(),
                o => o.to_string(),
            },
        }
    }

    /// One value from the command line; `Ok(None)` is `none` of an optional parameter.
    fn parse_one(&self, s: &str) -> Result<Option<serde_json::Value>, String> {
        match self {
            ParamKind::Bytes => parse_bytes(s).map(|b| Some(b.into())),
            ParamKind::Count => parse_count(s).map(|n| Some(n.into())),
            ParamKind::Bool => parse_bool(s).map(|b| Some(b.into())),
            ParamKind::OptionalBool if s == "none" => Ok(None),
            ParamKind::OptionalBool => parse_bool(s).map(|b| Some(b.into())),
            ParamKind::Choice(c) => {
                if c.contains(&s) {
                    Ok(Some(s.into()))
                } else {
                    Err(format!("'{s}' is not one of {}", c.join(", ")))
                }
            }
        }
    }

    fn numeric(&self) -> bool {
        matches!(self, ParamKind::Bytes | ParamKind::Count)
    }
}

/// One parameter of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    /// The key in a cell's parameters (and in `--set WORKLOAD.NAME=…`).
    pub name: &'static str,
    pub kind: ParamKind,
    pub description: &'static str,
}

impl ParamSpec {
    /// "file_bytes=4 KiB" for a value of this parameter.
    pub fn show(&self, v: &serde_json::Value) -> String {
        format!("{}={}", self.name, self.kind.format(v))
    }
}

/// The spec of parameter `name` of `workload`, if both exist.
pub fn param_spec(workload: &str, name: &str) -> Option<&'static ParamSpec> {
    crate::by_id(workload)?.params().iter().find(|p| p.name == name)
}

/// A numeric value `v` of parameter `name` of `workload` as a report shows it: sizes alone
/// ("4 KiB"), other numbers with their name ("containers=16").
pub fn format_param(workload: &str, name: &str, v: f64) -> String {
    match param_spec(workload, name).map(|p| p.kind) {
        Some(ParamKind::Bytes) => crate::metric::fmt_bytes(v),
        _ if (v - v.round()).abs() < 1e-9 => format!("{name}={v:.0}"),
        _ => format!("{name}={}", crate::metric::sig3(v)),
    }
}

/// Size in bytes: a bare number is bytes; `K`, `M`, `G`, `T` are binary (×1024ⁿ), optionally
/// followed by `i`, `iB` or `B` (`4K`, `4KiB`, `4KB` are all 4096); decimals are allowed and
/// rounded to whole bytes (`1.5G`). Case-insensitive suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    // One size parser for the whole project: the same rules as backend options (`-o size=`).
    cowbench_drivers::sys::units::parse_size(s).map_err(|e| e.to_string())
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("'{s}' is not a whole number"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        o => Err(format!("'{o}' is not true or false")),
    }
}

/// Ranges longer than this are refused: a typo like `1..1000000` must not plan a million cells.
pub const MAX_VALUES: usize = 10_000;

/// `a..b`, `a..b:xF`, `a..b:+S` of a numeric kind, inclusive of `b` when the steps land on it.
fn expand_range(kind: ParamKind, item: &str) -> Result<Vec<u64>, String> {
    let (range, step) = match item.split_once(':') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    let (a, b) = range.split_once("..").ok_or_else(|| format!("'{item}' is not a range"))?;
    let num = |s: &str| -> Result<u64, String> {
        match kind {
            ParamKind::Bytes => parse_bytes(s),
            _ => parse_count(s),
        }
    };
    let (a, b) = (num(a)?, num(b)?);
    if a > b {
        return Err(format!("range '{item}' runs backwards"));
    }
    let mut out = Vec::new();
    let mut v = a;
    let next: Box<dyn Fn(u64) -> Option<u64>> = match step {
        None => Box::new(|v: u64| v.checked_add(1)),
        Some(s) if s.starts_with('x') || s.starts_with('*') => {
            let f = parse_count(&s[1..]).map_err(|e| format!("range '{item}': factor {e}"))?;
            if f < 2 || a == 0 {
                return Err(format!("range '{item}': a geometric range needs a start above 0 and a factor of at least 2"));
            }
            Box::new(move |v: u64| v.checked_mul(f))
        }
        Some(s) if s.starts_with('+') => {
            let d = num(&s[1..]).map_err(|e| format!("range '{item}': step {e}"))?;
            if d == 0 {
                return Err(format!("range '{item}': step 0"));
            }
            Box::new(move |v: u64| v.checked_add(d))
        }
        Some(s) => return Err(format!("range '{item}': step '{s}' is neither xFACTOR nor +STEP")),
    };
    loop {
        out.push(v);
        if out.len() > MAX_VALUES {
            return Err(format!("range '{item}' has more than {MAX_VALUES} values"));
        }
        match next(v) {
            Some(n) if n <= b => v = n,
            _ => break,
        }
    }
    Ok(out)
}

/// A comma list of values of `kind` (with ranges for numeric kinds), in the order given.
pub fn parse_values(kind: ParamKind, text: &str) -> Result<Vec<Option<serde_json::Value>>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("empty value in '{text}'"));
        }
        if kind.numeric() && item.contains("..") {
            out.extend(expand_range(kind, item)?.into_iter().map(|v| Some(v.into())));
        } else {
            out.push(kind.parse_one(item)?);
        }
        if out.len() > MAX_VALUES {
            return Err(format!("more than {MAX_VALUES} values"));
        }
    }
    Ok(out)
}

/// One `--set WORKLOAD.PARAM=VALUES`, resolved against the workload's specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSet {
    pub workload: String,
    pub param: String,
    /// `null` stands for `none` (an optional parameter left out).
    pub values: Vec<serde_json::Value>,
}

/// A `--set` that names no workload or parameter, or a value that does not fit: a usage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

/// "file_bytes (bytes), depth (count), write_at (start|middle)".
pub fn known_params(w: &dyn Workload) -> String {
    w.params().iter().map(|p| format!("{} ({})", p.name, p.kind.describe())).collect::<Vec<_>>().join(", ")
}

impl std::str::FromStr for ParamSet {
    type Err = ParamError;

    /// `copyup.file_bytes=4K,1M,256M`.
    fn from_str(arg: &str) -> Result<Self, ParamError> {
        // The caller (clap) shows `arg` beside the message.
        let err = ParamError;
        let (key, text) = arg.split_once('=').ok_or_else(|| err("expected WORKLOAD.PARAM=VALUES".into()))?;
        let (wid, pname) = key.split_once('.').ok_or_else(|| err("expected WORKLOAD.PARAM=VALUES".into()))?;
        let w = crate::by_id(wid).ok_or_else(|| {
            err(format!(
                "unknown workload '{wid}'; known workloads: {}",
                crate::all().iter().map(|w| w.id()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let spec = w.params().iter().find(|p| p.name == pname).ok_or_else(|| {
            err(format!("workload '{wid}' has no parameter '{pname}'; its parameters: {}", known_params(w)))
        })?;
        let values = parse_values(spec.kind, text).map_err(|e| {
            err(format!("bad value for {wid}.{pname} ({}): {e}; parameters of {wid}: {}", spec.kind.describe(), known_params(w)))
        })?;
        Ok(ParamSet {
            workload: wid.into(),
            param: pname.into(),
            values: values.into_iter().map(|v| v.unwrap_or(serde_json::Value::Null)).collect(),
        })
    }
}

/// The cells of `w` after every set of `sets` that names it, in turn; each resulting cell is
/// checked by the workload's typed parameters.
pub fn apply_sets(w: &dyn Workload, mut cells: Vec<Params>, sets: &[ParamSet]) -> Result<Vec<Params>, ParamError> {
    for s in sets.iter().filter(|s| s.workload == w.id()) {
        let mut out: Vec<Params> = Vec::new();
        for cell in &cells {
            for v in &s.values {
                let mut c = cell.clone();
                match v {
                    serde_json::Value::Null => c.remove(&s.param),
                    v => c.insert(s.param.clone(), v.clone()),
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        cells = out;
    }
    if !sets.iter().any(|s| s.workload == w.id()) {
        return Ok(cells);
    }
    let mut derived: Vec<Params> = Vec::new();
    for mut c in cells {
        w.derive_params(&mut c);
        if !derived.contains(&c) {
            derived.push(c);
        }
    }
    let cells = derived;
    for c in &cells {
        w.check_params(c).map_err(|e| {
            ParamError(format!(
                "workload '{}': cell {} is not valid: {e}; its parameters: {}",
                w.id(),
                crate::params_string(c),
                known_params(w)
            ))
        })?;
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Profile, GIB, KIB, MIB};

    #[test]
    fn sizes() {
        for (s, v) in [
            ("4096", 4096),
            ("4K", 4 * KIB),
            ("4k", 4 * KIB),
            ("4KiB", 4 * KIB),
            ("4KB", 4 * KIB),
            ("4Ki", 4 * KIB),
            ("1M", MIB),
            ("256MiB", 256 * MIB),
            ("1.5G", 3 * GIB / 2),
            ("2T", 2 * 1024 * GIB),
            ("7B", 7),
        ] {
            assert_eq!(parse_bytes(s), Ok(v), "{s}");
        }
        for bad in ["", "K", "4X", "-1", "1..2", "1.2.3G"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_and_ranges() {
        let n = |v: Vec<Option<serde_json::Value>>| v.into_iter().map(|x| x.unwrap().as_u64().unwrap()).collect::<Vec<_>>();
        assert_eq!(n(parse_values(ParamKind::Count, "1..4").unwrap()), vec![1, 2, 3, 4]);
        assert_eq!(n(parse_values(ParamKind::Count, "1..1024:x2").unwrap()).len(), 11);
        assert_eq!(n(parse_values(ParamKind::Count, "0..100:+25").unwrap()), vec![0, 25, 50, 75, 100]);
        assert_eq!(n(parse_values(ParamKind::Bytes, "4K,1M..4M:x2").unwrap()), vec![4 * KIB, MIB, 2 * MIB, 4 * MIB]);
        assert!(parse_values(ParamKind::Count, "1..10000000").is_err());
        assert!(parse_values(ParamKind::Count, "4..1").is_err());
        assert!(parse_values(ParamKind::Count, "0..8:x2").is_err());
        assert!(parse_values(ParamKind::Count, "1,,2").is_err());
        assert_eq!(parse_values(ParamKind::OptionalBool, "true,none").unwrap(), vec![Some(true.into()), None]);
        assert!(parse_values(ParamKind::Choice(&["a", "b"]), "c").is_err());
    }

    #[test]
    fn set_keeps_the_profile_combinations() {
        let w = crate::by_id("copyup").unwrap();
        let s: ParamSet = "copyup.file_bytes=4K,1M,256M".parse().unwrap();
        let cells = apply_sets(w, w.cells(Profile::Quick), &[s.clone()]).unwrap();
        // Quick cells differ in file_bytes and depth (1, 8, 32): the set keeps each depth, with
        // the three sizes each.
        assert_eq!(cells.len(), 3 * 3);
        assert_eq!(cells[2]["file_bytes"], serde_json::json!(256 * MIB));
        assert_eq!(cells[8]["depth"], serde_json::json!(32));
        // Full cells: every depth × write_at combination keeps, with the three sizes each.
        let full = apply_sets(w, w.cells(Profile::Full), &[s]).unwrap();
        assert_eq!(full.len(), 4 * 2 * 3);
        // Sets apply in turn.
        let d: ParamSet = "copyup.depth=1,8".parse().unwrap();
        let s2: ParamSet = "copyup.file_bytes=1M".parse().unwrap();
        assert_eq!(apply_sets(w, w.cells(Profile::Quick), &[s2, d]).unwrap().len(), 2);
    }

    #[test]
    fn derived_parameters_follow_a_set() {
        // A sequential pass reads every block once: a bigger file means more IOs.
        let w = crate::by_id("seqio").unwrap();
        let s: ParamSet = "seqio.file_bytes=256M".parse().unwrap();
        let cells = apply_sets(w, w.cells(Profile::Quick), &[s]).unwrap();
        assert!(cells.iter().all(|c| c["ios"] == serde_json::json!(256 * MIB / crate::fileio::SEQ_BLOCK)), "{cells:?}");
        // Random IO: at most one IO per block of the file.
        let w = crate::by_id("randio").unwrap();
        let s: ParamSet = "randio.file_bytes=4M".parse().unwrap();
        let cells = apply_sets(w, w.cells(Profile::Quick), &[s]).unwrap();
        assert!(cells.iter().all(|c| c["ios"] == serde_json::json!(4 * MIB / crate::fileio::RAND_BLOCK)), "{cells:?}");
    }

    #[test]
    fn optional_parameters_can_be_left_out() {
        let w = crate::by_id("churn").unwrap();
        let s: ParamSet = "churn.discard=none".parse().unwrap();
        let cells = apply_sets(w, w.cells(Profile::Quick), &[s]).unwrap();
        assert!(!cells.is_empty());
        assert!(cells.iter().all(|c| !c.contains_key("discard")), "{cells:?}");
    }

    #[test]
    fn bad_sets_name_the_workload_and_its_parameters() {
        let e = "copyup.file_byts=4K".parse::<ParamSet>().unwrap_err().0;
        assert!(e.contains("'copyup' has no parameter 'file_byts'") && e.contains("file_bytes (bytes)"), "{e}");
        let e = "copyup.file_bytes=4X".parse::<ParamSet>().unwrap_err().0;
        assert!(e.contains("copyup.file_bytes") && e.contains("unknown unit") && e.contains("write_at (start|middle)"), "{e}");
        let e = "copyp.file_bytes=4K".parse::<ParamSet>().unwrap_err().0;
        assert!(e.contains("unknown workload 'copyp'") && e.contains("copyup"), "{e}");
        assert!("copyup".parse::<ParamSet>().is_err());
        assert!("copyup.write_at=end".parse::<ParamSet>().is_err());
    }
}
