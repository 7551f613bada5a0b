//! Human formatting of values whose unit is in the metric or parameter name.

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

/// The unit of a metric or parameter from its name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ns,
    Bytes,
    BytesPerS,
    Other,
}

pub fn unit_of(name: &str) -> Unit {
    if name.ends_with("_bytes_per_s") {
        Unit::BytesPerS
    } else if name.ends_with("_ns") {
        Unit::Ns
    } else if name.ends_with("_bytes") || name == "bytes" {
        Unit::Bytes
    } else {
        Unit::Other
    }
}

pub fn fmt_value(metric: &str, v: f64) -> String {
    match unit_of(metric) {
        Unit::Ns => fmt_ns(v),
        Unit::Bytes => fmt_bytes(v),
        Unit::BytesPerS => format!("{}/s", fmt_bytes(v)),
        Unit::Other => sig3(v),
    }
}

/// "file_bytes=4 KiB" style for parameters; plain "containers=16" otherwise.
pub fn fmt_param(name: &str, v: f64) -> String {
    let val = match unit_of(name) {
        Unit::Other => {
            if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                sig3(v)
            }
        }
        _ => fmt_value(name, v),
    };
    match unit_of(name) {
        Unit::Bytes | Unit::BytesPerS => val,
        _ => format!("{name}={val}"),
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
    fn formats() {
        assert_eq!(fmt_bytes(4096.0), "4 KiB");
        assert_eq!(fmt_bytes(64.0 * 1024.0 * 1024.0), "64 MiB");
        assert_eq!(fmt_ns(1.42e9), "1.42 s");
        assert_eq!(fmt_ns(812e3), "812 µs");
        assert_eq!(fmt_ratio(812.4), "×812");
        assert_eq!(fmt_param("file_bytes", 4096.0), "4 KiB");
        assert_eq!(fmt_param("containers", 16.0), "containers=16");
    }
}
