//! The statistics the verdict engine uses, computed from raw samples every time (stored
//! summaries are never read).
//!
//! - median: type-7 percentile at ½;
//! - 95% CI of the median: distribution-free, from order statistics. With `B ~ Bin(n, ½)` the
//!   interval `[x(l), x(n−l+1)]` covers the median with probability `1 − 2·P(B ≤ l−1)`; `l` is
//!   the largest rank keeping that ≥ 0.95. Below n = 6 there is none: `[min, max]` with its real
//!   (lower) coverage, which the report prints;
//! - least-squares slope with its 95% interval (Student t on the residuals);
//! - log-log slope: least squares of ln(y) on ln(x).

use serde::Serialize;

/// Median of `xs` with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MedianCi {
    pub n: usize,
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// Coverage the interval really has (≥ 0.95 from n = 6 on).
    pub coverage: f64,
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s
}

/// Type-7 percentile (`p` in [0, 1]) of sorted data: the same definition as the summaries
/// stored in results.
pub use crate::results::stats::percentile_sorted;

pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let s = sorted(xs);
    (!s.is_empty()).then(|| percentile_sorted(&s, p))
}

pub fn median(xs: &[f64]) -> Option<f64> {
    percentile(xs, 0.5)
}

/// Median and its order-statistic 95% CI; None without finite samples.
pub fn median_ci(xs: &[f64]) -> Option<MedianCi> {
    let s = sorted(xs);
    let n = s.len();
    if n == 0 {
        return None;
    }
    // The same order-statistic ranks as the stored summaries, recomputed from the samples.
    let (l, u, coverage) = crate::results::stats::median_ci_ranks(n);
    Some(MedianCi { n, median: percentile_sorted(&s, 0.5), lo: s[l - 1], hi: s[u - 1], coverage })
}

/// Fewest samples whose order-statistic interval of the median reaches 95% coverage (6:
/// `[x(1), x(6)]` covers with 1 − 2/64 = 96.9%; five samples reach only 93.75%).
pub fn min_n_95() -> usize {
    (1..).find(|&n| crate::results::stats::median_ci_ranks(n).2 >= 0.95).expect("coverage reaches 95%")
}

/// What an interval of the median from `n` samples with `coverage` is: "95% CI" only when it
/// is one; below that "range of 2 samples, 50% coverage".
pub fn interval_name(n: usize, coverage: f64) -> String {
    if coverage >= 0.95 {
        "95% CI".into()
    } else {
        format!("range of {n} sample{}, {:.0}% coverage", if n == 1 { "" } else { "s" }, coverage * 100.0)
    }
}

/// "95% CI 124 ms–230 ms, n=32" or "1.93–1.94, range of 2 samples, 50% coverage".
pub fn describe_interval(lo: &str, hi: &str, n: usize, coverage: f64) -> String {
    if coverage >= 0.95 {
        format!("95% CI {lo}–{hi}, n={n}")
    } else {
        format!("{lo}–{hi}, {}", interval_name(n, coverage))
    }
}

/// The name of an interval built from several medians' intervals (a ratio, a slope): named by
/// the least-covered of them.
pub fn joint_interval_name(cis: &[&MedianCi]) -> String {
    match cis.iter().min_by(|a, b| a.coverage.partial_cmp(&b.coverage).unwrap()) {
        Some(c) if c.coverage < 0.95 => interval_name(c.n, c.coverage),
        _ => "95% intervals".into(),
    }
}

/// Least-squares line `y = a + b·x`: slope `b`, and the 95% interval of the slope.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    pub intercept: f64,
    pub slope: f64,
    pub slope_lo: f64,
    pub slope_hi: f64,
    pub points: usize,
}

/// Two-sided 97.5% quantile of Student's t with `df` degrees of freedom (table, then normal).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => T[d - 1],
        d if d <= 60 => 2.000 + (2.042 - 2.000) * (60 - d) as f64 / 30.0,
        d if d <= 120 => 1.980 + (2.000 - 1.980) * (120 - d) as f64 / 60.0,
        _ => 1.960,
    }
}

/// Ordinary least squares over `(x, y)`; None with fewer than two distinct x.
pub fn ols(points: &[(f64, f64)]) -> Option<Fit> {
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let n = pts.len();
    if n < 2 {
        return None;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let (slope_lo, slope_hi) = if n > 2 {
        let sse: f64 = pts.iter().map(|p| (p.1 - intercept - slope * p.0).powi(2)).sum();
        let se = (sse / (n - 2) as f64 / sxx).sqrt();
        let t = t975(n - 2);
        (slope - t * se, slope + t * se)
    } else {
        // Two points determine the line exactly: no residuals, no interval.
        (f64::NEG_INFINITY, f64::INFINITY)
    };
    Some(Fit { intercept, slope, slope_lo, slope_hi, points: n })
}

/// Log-log least-squares slope of `(x, y)` (only positive pairs); None below two points.
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    let logs: Vec<(f64, f64)> =
        points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0).map(|(x, y)| (x.ln(), y.ln())).collect();
    ols(&logs).map(|f| f.slope)
}

/// Conservative interval of `b/a` from the two medians' CIs: `[lo_b/hi_a, hi_b/lo_a]`.
/// The lower end exceeds 1 exactly when the CIs do not overlap (b above a).
pub fn ratio_interval(a: &MedianCi, b: &MedianCi) -> (f64, f64, f64) {
    let r = b.median / a.median;
    let lo = if a.hi > 0.0 { b.lo / a.hi } else { f64::INFINITY };
    let hi = if a.lo > 0.0 { b.hi / a.lo } else { f64::INFINITY };
    (r, lo.min(r), hi.max(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ci_small_and_ten() {
        let m = median_ci(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((m.median, m.lo, m.hi), (2.0, 1.0, 3.0));
        assert!((m.coverage - 0.75).abs() < 1e-12);
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        let m = median_ci(&xs).unwrap();
        assert_eq!((m.median, m.lo, m.hi), (5.5, 2.0, 9.0));
        assert!(median_ci(&[]).is_none());
    }

    #[test]
    fn six_samples_make_a_95_percent_interval() {
        assert_eq!(min_n_95(), 6);
        let m = median_ci(&[1.0, 2.0]).unwrap();
        assert_eq!(interval_name(m.n, m.coverage), "range of 2 samples, 50% coverage");
        let m = median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(interval_name(m.n, m.coverage), "95% CI");
    }

    #[test]
    fn slopes() {
        let pts: Vec<(f64, f64)> = (1..=5).map(|i| (f64::from(i), 3.0 + 2.0 * f64::from(i))).collect();
        let f = ols(&pts).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 3.0).abs() < 1e-12);
        let pl: Vec<(f64, f64)> = [1.0, 10.0, 100.0].iter().map(|&x| (x, 5.0 * x)).collect();
        assert!((loglog_slope(&pl).unwrap() - 1.0).abs() < 1e-12);
    }
}
