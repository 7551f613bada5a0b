//! What a metric is: its name (unit in the name, as run.json stores it), its [`Unit`] and which
//! direction is better. [`MetricSpec`] is the one source for formatting a value, labelling a
//! chart axis, and deciding whether a change between two runs is an improvement or a
//! regression: nothing anywhere guesses these from a metric's name.

use serde::Serialize;

/// The unit of a metric. [`Unit::as_str`] is the exact string run.json stores in each metric's
/// `unit` field (and the suffix of the metric's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum Unit {
    /// A duration in nanoseconds (`ns`).
    Nanoseconds,
    /// A size or an amount of space in bytes (`bytes`).
    Bytes,
    /// Throughput in bytes per second (`bytes_per_s`).
    BytesPerSecond,
    /// IO operations per second (`ios_per_s`).
    IosPerSecond,
    /// A plain count (`count`).
    Count,
    /// A dimensionless ratio of two figures (`ratio`).
    Ratio,
}

impl Unit {
    pub const ALL: [Unit; 6] =
        [Unit::Nanoseconds, Unit::Bytes, Unit::BytesPerSecond, Unit::IosPerSecond, Unit::Count, Unit::Ratio];

    /// The string run.json stores (`ns`, `bytes`, `bytes_per_s`, `ios_per_s`, `count`, `ratio`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Unit::Nanoseconds => "ns",
            Unit::Bytes => "bytes",
            Unit::BytesPerSecond => "bytes_per_s",
            Unit::IosPerSecond => "ios_per_s",
            Unit::Count => "count",
            Unit::Ratio => "ratio",
        }
    }

    /// The unit of a stored `unit` string.
    pub fn parse(s: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// A value for people: "812 µs", "64 MiB", "1.5 GiB/s", "1.2k IO/s", "16", "0.979".
    pub fn format(&self, v: f64) -> String {
        match self {
            Unit::Nanoseconds => fmt_ns(v),
            Unit::Bytes => fmt_bytes(v),
            Unit::BytesPerSecond => format!("{}/s", fmt_bytes(v)),
            Unit::IosPerSecond => format!("{} IO/s", sig3(v)),
            Unit::Count if (v - v.round()).abs() < 1e-9 => format!("{v:.0}"),
            Unit::Count | Unit::Ratio => sig3(v),
        }
    }

    /// What a chart's axis says about its scale.
    pub fn axis_label(&self) -> &'static str {
        match self {
            Unit::Nanoseconds => "time",
            Unit::Bytes => "bytes (binary prefixes)",
            Unit::BytesPerSecond => "bytes per second (binary prefixes)",
            Unit::IosPerSecond => "IO operations per second",
            Unit::Count => "count",
            Unit::Ratio => "ratio",
        }
    }

    /// Log axes of byte quantities step by powers of two (KiB, MiB …), others by powers of ten.
    pub fn log_base(&self) -> f64 {
        match self {
            Unit::Bytes | Unit::BytesPerSecond => 2.0,
            _ => 10.0,
        }
    }

    /// Durations read "faster"/"slower" when compared; every other unit "better"/"worse".
    pub fn is_time(&self) -> bool {
        *self == Unit::Nanoseconds
    }
}

impl From<Unit> for &'static str {
    fn from(u: Unit) -> &'static str {
        u.as_str()
    }
}

impl From<Unit> for String {
    fn from(u: Unit) -> String {
        u.as_str().to_string()
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which direction of a metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput, rates, things reached.
    Higher,
    /// Latency, space and memory consumed, growth that should not happen.
    Lower,
    /// A fact about the run rather than a quality (a count of what was done, a size that was
    /// written by design): a change is reported but never a regression.
    Neither,
}

impl Better {
    pub fn as_str(&self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "neither",
        }
    }
}

/// One measured quantity of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    /// Name with the unit as suffix (`first_write_latency_ns`, `usage_delta_bytes`).
    pub name: &'static str,
    pub unit: Unit,
    pub better: Better,
    pub description: &'static str,
}

impl MetricSpec {
    pub fn format(&self, v: f64) -> String {
        self.unit.format(v)
    }

    /// "first_write_latency_ns (time)": the y axis of a chart of this metric.
    pub fn axis_label(&self) -> String {
        format!("{} ({})", self.name, self.unit.axis_label())
    }
}

/// `v` of `metric` of `workload` for people, by the metric's unit. A metric no workload declares
/// (a run of an older cowbench) is shown as a plain number: its unit is not guessed from its name.
pub fn format_metric(workload: &str, metric: &str, v: f64) -> String {
    match crate::metric_spec(workload, metric) {
        Some(s) => s.format(v),
        None => sig3(v),
    }
}

/// 1536 → "1.5 KiB"; exact powers print without decimals ("4 KiB", "64 MiB").
pub fn fmt_bytes(b: f64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if (v - v.round()).abs() < 1e-9 || v.abs() >= 100.0 {
        format!("{:.0} {}", v, U[i])
    } else if v.abs() >= 10.0 {
        format!("{:.1} {}", v, U[i])
    } else {
        format!("{:.2} {}", v, U[i])
    }
}

/// Nanoseconds as "812 µs", "1.42 s".
pub fn fmt_ns(ns: f64) -> String {
    let (v, u) = if ns.abs() >= 1e9 {
        (ns / 1e9, "s")
    } else if ns.abs() >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns.abs() >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{} {u}", sig3(v))
}

/// Three significant digits, no exponent for ordinary magnitudes.
pub fn sig3(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// "×812", "×0.93".
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        return "×∞".into();
    }
    format!("×{}", sig3(r))
}

/// A ratio as a percentage: 0.93 → "93%", 0.000485 → "0.0485%".
pub fn fmt_pct(r: f64) -> String {
    if !r.is_finite() {
        return "∞%".into();
    }
    format!("{}%", sig3(r * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_unit() {
        assert_eq!(fmt_bytes(4096.0), "4 KiB");
        assert_eq!(fmt_bytes(64.0 * 1024.0 * 1024.0), "64 MiB");
        assert_eq!(Unit::Nanoseconds.format(1.42e9), "1.42 s");
        assert_eq!(Unit::Nanoseconds.format(812e3), "812 µs");
        assert_eq!(Unit::BytesPerSecond.format(1.5 * 1024.0 * 1024.0 * 1024.0), "1.50 GiB/s");
        assert_eq!(Unit::Ratio.format(0.979), "0.979");
        assert_eq!(Unit::Count.format(16.0), "16");
        assert_eq!(fmt_ratio(812.4), "×812");
        assert_eq!(fmt_pct(0.93), "93.0%");
    }

    #[test]
    fn unit_strings_round_trip() {
        for u in Unit::ALL {
            assert_eq!(Unit::parse(u.as_str()), Some(u));
            assert_eq!(serde_json::to_value(u).unwrap(), serde_json::json!(u.as_str()));
        }
        assert_eq!(Unit::parse("furlongs"), None);
    }
}
