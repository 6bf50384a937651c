//! Threshold models over a history of runs: each turns the last N runs' values of one metric
//! into an upper bound a candidate must stay under.
//!
//! - `percentage`: the history's median plus `threshold_pct` (the single-baseline rule, with
//!   the median of the history as the baseline).
//! - `t_test`: a one-sided prediction interval (Student's t with n-1 degrees of freedom) for the
//!   candidate, which may itself be the median of m runs: `mean + t(conf, n-1) * s *
//!   sqrt(1/n + c(m))`, where `c(m)` is the variance of a median of m draws in units of one
//!   draw's variance.
//! - `iqr`: Tukey's fence `Q3 + k * IQR` around the history's median, narrowed by `sqrt(c(m))`
//!   for a median of m runs.
//!
//! Latencies are modelled on the log scale: run-to-run noise on shared machines is
//! multiplicative (a slower runner makes every request slower), so log-latency is close to
//! normal while raw latency has a long upper tail that would make a normal model fire too often.

use super::stats::median;
use statrs::distribution::{ContinuousCDF, StudentsT};

pub use crate::config::ThresholdModel;

/// The parameters a model uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelParams {
    pub model: ThresholdModel,
    /// `percentage`: the relative margin over the median, in percent.
    pub threshold_pct: f64,
    /// `t_test`: the one-sided confidence of the upper bound (0.99).
    pub confidence: f64,
    /// `iqr`: the fence multiplier (1.5 is Tukey's).
    pub iqr_k: f64,
}

/// An upper bound and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The candidate fails above this value.
    pub upper: f64,
    /// The history's centre (median), the "baseline" shown beside the candidate.
    pub center: f64,
    /// e.g. `99% upper bound`, `Q3 + 1.5 IQR`, `median + 20%`.
    pub describe: String,
}

/// Variance of the median of `m` independent normal draws, in units of one draw's variance.
/// Exact for m <= 3 (m = 2: the mean of two), the asymptotic pi/2m beyond, which slightly
/// overstates it for small odd m: a conservative (wider) bound.
pub fn median_variance_factor(m: usize) -> f64 {
    match m {
        0 | 1 => 1.0,
        2 => 0.5,
        3 => 0.4487,
        m => std::f64::consts::PI / (2.0 * m as f64),
    }
}

/// The upper bound of `model` over `history` for a candidate that is the median of `m` runs.
/// `log`: model the values on the log scale (latencies; every value must be positive).
/// `None` when the history is too short for the model (fewer than 2 values, or for `iqr`
/// fewer than 4) or a log-scale value is not positive.
pub fn upper_bound(p: &ModelParams, history: &[f64], m: usize, log: bool) -> Option<Bound> {
    if history.len() < 2 || history.iter().any(|v| !v.is_finite()) {
        return None;
    }
    if log && history.iter().any(|v| *v <= 0.0) {
        return None;
    }
    let fwd = |v: f64| if log { v.ln() } else { v };
    let back = |v: f64| if log { v.exp() } else { v };
    let ys: Vec<f64> = history.iter().map(|v| fwd(*v)).collect();
    let center = median(history)?;
    let c = median_variance_factor(m);
    match p.model {
        ThresholdModel::Percentage => Some(Bound {
            upper: center * (1.0 + p.threshold_pct / 100.0),
            center,
            describe: format!("median + {}%", p.threshold_pct),
        }),
        ThresholdModel::TTest => {
            let n = ys.len() as f64;
            let mean = ys.iter().sum::<f64>() / n;
            let var = ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let t = student_t_quantile(p.confidence, n - 1.0)?;
            let upper = back(mean + t * var.sqrt() * (1.0 / n + c).sqrt());
            Some(Bound {
                upper,
                center,
                describe: format!("{} upper bound", percent_text(p.confidence)),
            })
        }
        ThresholdModel::Iqr => {
            if ys.len() < 4 {
                return None;
            }
            let mut sorted = ys.clone();
            sorted.sort_by(f64::total_cmp);
            let (q1, q2, q3) = (
                quantile_sorted(&sorted, 0.25),
                quantile_sorted(&sorted, 0.5),
                quantile_sorted(&sorted, 0.75),
            );
            let fence = q3 + p.iqr_k * (q3 - q1);
            Some(Bound {
                upper: back(q2 + (fence - q2) * c.sqrt()),
                center,
                describe: format!("Q3 + {} IQR", p.iqr_k),
            })
        }
    }
}

fn percent_text(conf: f64) -> String {
    // 0.995 * 100 is 99.49999999999999 in binary: print at most 4 decimals, trailing zeros cut.
    let t = format!("{:.4}", conf * 100.0);
    format!("{}%", t.trim_end_matches('0').trim_end_matches('.'))
}

/// Linear-interpolation quantile of sorted values (R's type 7).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

// Student's t comes from statrs (a well-kept statistics crate) rather than a hand-written
// incomplete beta function: the prediction interval is only as right as its quantiles.

/// The CDF of Student's t with `df` > 0 degrees of freedom (NaN for df <= 0).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) => dist.cdf(t),
        Err(_) => f64::NAN,
    }
}

/// The `p` quantile of Student's t with `df` > 0 degrees of freedom, by bisection on statrs's
/// CDF (monotone, so this cannot diverge): statrs's own `inverse_cdf` is coarse for large df
/// (2.3218 at df = 1e7 where the normal limit is 2.3263). `None` for p outside (0, 1) or
/// df <= 0.
pub fn student_t_quantile(p: f64, df: f64) -> Option<f64> {
    let valid = p > 0.0 && p < 1.0 && df > 0.0 && df.is_finite();
    if !valid {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    if p < 0.5 {
        return student_t_quantile(1.0 - p, df).map(|q| -q);
    }
    let mut hi = 1.0;
    while dist.cdf(hi) < p {
        hi *= 2.0;
        if hi > 1e12 {
            return Some(hi);
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if dist.cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi.max(1.0) {
            break;
        }
    }
    Some(0.5 * (lo + hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_published_tables() {
        // (p, df, value) from standard t tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
        for (p, df, want) in [
            (0.95, 1.0, 6.314),
            (0.975, 1.0, 12.706),
            (0.99, 1.0, 31.821),
            (0.95, 5.0, 2.015),
            (0.99, 4.0, 3.747),
            (0.975, 10.0, 2.228),
            (0.99, 19.0, 2.539),
            (0.995, 30.0, 2.750),
            (0.999, 100.0, 3.174),
            (0.90, 2.0, 1.886),
        ] {
            let got = student_t_quantile(p, df).unwrap();
            assert!(
                close(got, want, 0.0015),
                "t({p}, {df}) = {got}, want {want}"
            );
        }
        // converges to the normal quantile
        let z = student_t_quantile(0.99, 1e7).unwrap();
        assert!(close(z, 2.326_348, 1e-4), "{z}");
        // symmetry and the median
        assert!(close(
            student_t_quantile(0.01, 19.0).unwrap(),
            -2.539,
            0.0015
        ));
        assert!(close(student_t_quantile(0.5, 7.0).unwrap(), 0.0, 1e-9));
        assert_eq!(student_t_quantile(1.0, 5.0), None);
        assert_eq!(student_t_quantile(0.9, 0.0), None);
    }

    #[test]
    fn t_cdf_known_values() {
        // df = 1 is Cauchy: F(t) = 1/2 + atan(t)/pi
        for t in [-3.0f64, -0.5, 0.0, 0.7, 2.0, 10.0] {
            let want = 0.5 + f64::atan(t) / std::f64::consts::PI;
            assert!(close(student_t_cdf(t, 1.0), want, 1e-10), "t={t}");
        }
        // df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        for t in [-2.0f64, 0.3, 1.5, 4.0] {
            let want = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            assert!(close(student_t_cdf(t, 2.0), want, 1e-10), "t={t}");
        }
    }

    fn params(model: ThresholdModel) -> ModelParams {
        ModelParams {
            model,
            threshold_pct: 20.0,
            confidence: 0.99,
            iqr_k: 1.5,
        }
    }

    #[test]
    fn t_test_bound_is_the_prediction_interval() {
        // linear scale, hand-computed: mean 10, s = sqrt(2.5), n = 5, t(0.99, 4) = 3.7469
        let h = [8.0, 9.0, 10.0, 11.0, 12.0];
        let b = upper_bound(&params(ThresholdModel::TTest), &h, 1, false).unwrap();
        let want = 10.0 + 3.746_947 * 2.5f64.sqrt() * (1.0f64 + 1.0 / 5.0).sqrt();
        assert!(close(b.upper, want, 1e-4), "{} vs {want}", b.upper);
        assert_eq!(b.center, 10.0);
        assert_eq!(b.describe, "99% upper bound");
        assert_eq!(percent_text(0.995), "99.5%");
        assert_eq!(percent_text(0.9), "90%");
        // a median of 3 candidate runs has a narrower interval
        let b3 = upper_bound(&params(ThresholdModel::TTest), &h, 3, false).unwrap();
        assert!(b3.upper < b.upper);
        // log scale: the bound of scaled values scales
        let hs: Vec<f64> = h.iter().map(|v| v * 30.0).collect();
        let bl = upper_bound(&params(ThresholdModel::TTest), &hs, 1, true).unwrap();
        let bl2 = upper_bound(&params(ThresholdModel::TTest), &h, 1, true).unwrap();
        assert!(close(bl.upper, bl2.upper * 30.0, 1e-9));
    }

    #[test]
    fn iqr_and_percentage_bounds() {
        let h = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        // type 7 quartiles: 3 and 7, IQR 4: fence 13
        let b = upper_bound(&params(ThresholdModel::Iqr), &h, 1, false).unwrap();
        assert!(close(b.upper, 13.0, 1e-12), "{}", b.upper);
        assert_eq!(b.describe, "Q3 + 1.5 IQR");
        let p = upper_bound(&params(ThresholdModel::Percentage), &h, 1, false).unwrap();
        assert!(close(p.upper, 6.0, 1e-12));
        assert_eq!(p.describe, "median + 20%");
        // too short
        assert!(upper_bound(&params(ThresholdModel::Iqr), &h[..3], 1, false).is_none());
        assert!(upper_bound(&params(ThresholdModel::TTest), &h[..1], 1, false).is_none());
        assert!(upper_bound(&params(ThresholdModel::TTest), &[0.0, 1.0], 1, true).is_none());
    }

    #[test]
    fn model_names_parse() {
        for m in [
            ThresholdModel::Percentage,
            ThresholdModel::TTest,
            ThresholdModel::Iqr,
        ] {
            assert_eq!(m.as_str().parse::<ThresholdModel>().unwrap(), m);
        }
        assert!(
            "z".parse::<ThresholdModel>()
                .unwrap_err()
                .contains("t_test")
        );
    }
}
