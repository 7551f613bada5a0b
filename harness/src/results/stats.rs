//! Summary statistics over raw samples. Pure functions; the report recomputes them from raw
//! samples, so what is stored here is a convenience, never the source of truth.
//!
//! - Percentiles: linear interpolation between order statistics (Hyndman & Fan type 7, the
//!   default of R, NumPy and criterion): `p` at rank `(n-1)·p`.
//! - `sd`: sample standard deviation (n − 1 in the denominator); 0 for one sample.
//! - 95% CI of the **median**: distribution-free, from order statistics. With `B ~ Bin(n, ½)`,
//!   the interval `[x(l), x(n−l+1)]` (1-based) covers the true median with probability
//!   `1 − 2·P(B ≤ l−1)`; `l` is the largest rank that keeps this ≥ 0.95. Below n = 6 no such
//!   rank exists: the interval is then `[min, max]` and `ci_coverage` says what it really
//!   covers (e.g. 0.75 for n = 3), so a reader never mistakes it for a 95% interval.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub sd: f64,
    /// Lower bound of the median's confidence interval (order statistics, see module doc).
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// The coverage the interval actually has (≥ 0.95 from n = 6 on).
    pub ci_coverage: f64,
}

/// Method text stored in results beside every summary.
pub const CI_METHOD: &str = "median CI from order statistics (binomial, distribution-free); \
     [min,max] with its actual coverage when n < 6";

/// Type-7 percentile of sorted data, `p` in [0, 1].
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty());
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n − 1); 0 for fewer than two samples.
pub fn sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// `P(B ≤ k)` for `B ~ Bin(n, ½)`, computed in log space so large n does not overflow.
pub fn binom_half_cdf(n: usize, k: usize) -> f64 {
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut acc = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        acc += (ln_c + ln_half_n).exp();
    }
    acc.min(1.0)
}

/// 1-based ranks `(l, u)` of the median CI and its coverage, for `n` samples.
pub fn median_ci_ranks(n: usize) -> (usize, usize, f64) {
    assert!(n > 0);
    let mut best = None;
    for l in 1..=n / 2 {
        let tail = binom_half_cdf(n, l - 1);
        if 1.0 - 2.0 * tail >= 0.95 {
            best = Some((l, 1.0 - 2.0 * tail));
        } else {
            break;
        }
    }
    match best {
        Some((l, cov)) => (l, n - l + 1, cov),
        None => (1, n, if n == 1 { 0.0 } else { 1.0 - 2.0 * 0.5f64.powi(n as i32) }),
    }
}

/// Summary of `xs`; None when empty. NaNs are refused by the caller (never stored).
pub fn summarize(xs: &[f64]) -> Option<Summary> {
    if xs.is_empty() {
        return None;
    }
    let mut s = xs.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN in samples"));
    let n = s.len();
    let (l, u, cov) = median_ci_ranks(n);
    Some(Summary {
        n,
        min: s[0],
        median: percentile_sorted(&s, 0.5),
        p90: percentile_sorted(&s, 0.9),
        p99: percentile_sorted(&s, 0.99),
        max: s[n - 1],
        mean: mean(&s),
        sd: sd(&s),
        ci95_low: s[l - 1],
        ci95_high: s[u - 1],
        ci_coverage: cov,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + b.abs())
    }

    #[test]
    fn one_to_ten() {
        let xs: Vec<f64> = (1..=10).rev().map(|x| x as f64).collect();
        let s = summarize(&xs).unwrap();
        assert_eq!(s.n, 10);
        assert_eq!((s.min, s.max), (1.0, 10.0));
        assert!(close(s.median, 5.5));
        assert!(close(s.p90, 9.1)); // rank 8.1 → 9 + 0.1
        assert!(close(s.p99, 9.91));
        assert!(close(s.mean, 5.5));
        assert!(close(s.sd, (55.0f64 / 6.0).sqrt())); // var = 9.1667
        // n = 10: P(B ≤ 1) = 11/1024, P(B ≤ 2) = 56/1024 → l = 2, u = 9.
        assert_eq!((s.ci95_low, s.ci95_high), (2.0, 9.0));
        assert!(close(s.ci_coverage, 1.0 - 22.0 / 1024.0));
    }

    #[test]
    fn single_and_small() {
        let s = summarize(&[42.0]).unwrap();
        assert_eq!((s.median, s.p99, s.sd, s.ci95_low, s.ci95_high), (42.0, 42.0, 0.0, 42.0, 42.0));
        assert_eq!(s.ci_coverage, 0.0);
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.ci95_low, s.ci95_high), (2.0, 1.0, 3.0));
        assert!(close(s.ci_coverage, 0.75));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn binomial_and_ranks() {
        assert!(close(binom_half_cdf(10, 2), 56.0 / 1024.0));
        assert!(close(binom_half_cdf(4, 4), 1.0));
        // n = 6: P(B ≤ 0) = 1/64 → coverage 0.96875 with (1, 6).
        assert_eq!(median_ci_ranks(6).0, 1);
        assert!(close(median_ci_ranks(6).2, 1.0 - 2.0 / 64.0));
        // Large n stays finite and near the normal approximation n/2 − 0.98·√n.
        let (l, u, cov) = median_ci_ranks(1000);
        assert!((468..=470).contains(&l), "l = {l}");
        assert_eq!(u, 1000 - l + 1);
        assert!(cov >= 0.95);
    }
}
