//! Canary analysis as a pure function: canary and stable measured side by side over a few
//! samples, compared on error rate and p95 with the configured limits. Too little data is
//! "inconclusive", which never promotes.

use serde::Serialize;

use super::probe::{SideRaw, SideStats};
use crate::config::CanarySettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryVerdict {
    Promote,
    Reject,
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleRow {
    pub sample: usize,
    pub stable: SideStats,
    pub canary: SideStats,
}

/// The evidence of the canary stage.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryAnalysis {
    pub verdict: CanaryVerdict,
    /// Why, one line per rule that decided (or "within limits").
    pub reasons: Vec<String>,
    pub stable: SideStats,
    pub canary: SideStats,
    pub error_rate_increase_pp: f64,
    pub p95_increase_pct: f64,
    pub p95_increase_ms: f64,
    pub samples: Vec<SampleRow>,
}

fn p95_regressed(stable: &SideStats, canary: &SideStats, s: &CanarySettings) -> bool {
    let abs = canary.p95_ms - stable.p95_ms;
    let pct = if stable.p95_ms > 0.0 {
        abs / stable.p95_ms * 100.0
    } else if abs > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    abs > s.p95_floor_ms && pct > s.max_p95_increase_pct
}

/// Decides from per-sample raw results `(stable, canary)`.
pub fn analyse(samples: &[(SideRaw, SideRaw)], s: &CanarySettings) -> CanaryAnalysis {
    let mut stable_all = SideRaw::default();
    let mut canary_all = SideRaw::default();
    let mut rows = Vec::new();
    for (i, (st, ca)) in samples.iter().enumerate() {
        stable_all.extend(st);
        canary_all.extend(ca);
        rows.push(SampleRow {
            sample: i + 1,
            stable: st.stats(),
            canary: ca.stats(),
        });
    }
    let stable = stable_all.stats();
    let canary = canary_all.stats();
    let err_pp = (canary.error_rate - stable.error_rate) * 100.0;
    let p95_ms = canary.p95_ms - stable.p95_ms;
    let p95_pct = if stable.p95_ms > 0.0 {
        p95_ms / stable.p95_ms * 100.0
    } else {
        0.0
    };
    let lost = stable_all.lost + canary_all.lost;
    let mut reasons = Vec::new();
    let verdict = if lost > 0 {
        reasons.push(format!(
            "{} stable and {} canary probe task(s) panicked or were lost: the measurement is incomplete",
            stable_all.lost, canary_all.lost
        ));
        CanaryVerdict::Inconclusive
    } else if stable.requests < s.min_requests || canary.requests < s.min_requests {
        reasons.push(format!(
            "too little data: {} stable and {} canary requests, {} needed per side",
            stable.requests, canary.requests, s.min_requests
        ));
        CanaryVerdict::Inconclusive
    } else {
        let mut reject = false;
        let canary_pct = canary.error_rate * 100.0;
        if canary_pct > s.max_error_rate_pct {
            reject = true;
            reasons.push(format!(
                "canary error rate {canary_pct:.2}% is above the absolute limit of {}%",
                s.max_error_rate_pct
            ));
        }
        if err_pp > s.max_error_rate_increase_pp {
            reject = true;
            reasons.push(format!(
                "error rate {:.2}% vs stable {:.2}%: +{err_pp:.2} pp, limit {} pp",
                canary.error_rate * 100.0,
                stable.error_rate * 100.0,
                s.max_error_rate_increase_pp
            ));
        }
        // A latency regression must hold pooled and in most samples, so one noisy sample
        // cannot fail a release and one lucky sample cannot pass it.
        let regressed_samples = rows
            .iter()
            .filter(|r| p95_regressed(&r.stable, &r.canary, s))
            .count();
        if p95_regressed(&stable, &canary, s) && regressed_samples * 2 > rows.len() {
            reject = true;
            reasons.push(format!(
                "p95 {:.1} ms vs stable {:.1} ms: +{p95_pct:.0}% (+{p95_ms:.1} ms), limit {}% above a {} ms floor, in {regressed_samples}/{} samples",
                canary.p95_ms,
                stable.p95_ms,
                s.max_p95_increase_pct,
                s.p95_floor_ms,
                rows.len()
            ));
        }
        if reject {
            CanaryVerdict::Reject
        } else {
            reasons.push(format!(
                "within limits: error rate {canary_pct:.2}% (limit {}%), +{err_pp:.2} pp (limit {}), p95 {p95_pct:+.0}% / {p95_ms:+.1} ms (limit {}% above {} ms)",
                s.max_error_rate_pct, s.max_error_rate_increase_pp, s.max_p95_increase_pct, s.p95_floor_ms
            ));
            CanaryVerdict::Promote
        }
    };
    CanaryAnalysis {
        verdict,
        reasons,
        stable,
        canary,
        error_rate_increase_pp: err_pp,
        p95_increase_pct: p95_pct,
        p95_increase_ms: p95_ms,
        samples: rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(base: f64, n: usize, errors: usize) -> SideRaw {
        SideRaw {
            latencies_ms: (0..n).map(|i| base + (i % 10) as f64).collect(),
            errors,
            lost: 0,
        }
    }

    fn settings() -> CanarySettings {
        CanarySettings {
            min_requests: 100,
            ..Default::default()
        }
    }

    #[test]
    fn equal_sides_promote() {
        let s = vec![(side(10.0, 50, 0), side(10.0, 50, 0)); 3];
        let a = analyse(&s, &settings());
        assert_eq!(a.verdict, CanaryVerdict::Promote, "{:?}", a.reasons);
    }

    #[test]
    fn higher_error_rate_rejects() {
        let s = vec![(side(10.0, 50, 0), side(10.0, 50, 5)); 3];
        let a = analyse(&s, &settings());
        assert_eq!(a.verdict, CanaryVerdict::Reject);
        assert!(a.reasons[0].contains("error rate"), "{:?}", a.reasons);
    }

    #[test]
    fn slower_p95_rejects_only_above_the_floor_and_in_most_samples() {
        let slow = vec![(side(10.0, 50, 0), side(60.0, 50, 0)); 3];
        assert_eq!(analyse(&slow, &settings()).verdict, CanaryVerdict::Reject);
        // +5 ms on a 10 ms p95 is +26% but under the 10 ms floor: noise.
        let tiny = vec![(side(10.0, 50, 0), side(15.0, 50, 0)); 3];
        assert_eq!(analyse(&tiny, &settings()).verdict, CanaryVerdict::Promote);
        // one bad sample out of three does not fail the release
        let mut one = vec![(side(10.0, 50, 0), side(10.0, 50, 0)); 2];
        one.push((side(10.0, 50, 0), side(500.0, 50, 0)));
        assert_eq!(analyse(&one, &settings()).verdict, CanaryVerdict::Promote);
    }

    #[test]
    fn an_error_rate_above_the_absolute_cap_rejects_whatever_stable_does() {
        // 30% beside 29%: +1 pp is within the relative limit, 30% is not a healthy release
        let relative_ok = CanarySettings {
            max_error_rate_increase_pp: 2.0,
            ..settings()
        };
        let s = vec![(side(10.0, 100, 29), side(10.0, 100, 30)); 3];
        let a = analyse(&s, &relative_ok);
        assert_eq!(a.verdict, CanaryVerdict::Reject, "{:?}", a.reasons);
        assert_eq!(a.reasons.len(), 1, "{:?}", a.reasons);
        assert!(
            a.reasons.iter().any(|r| r.contains("absolute limit of 5%")),
            "{:?}",
            a.reasons
        );
        // at the cap (5 of 100) it still promotes
        let at = vec![(side(10.0, 100, 5), side(10.0, 100, 5)); 3];
        assert_eq!(analyse(&at, &settings()).verdict, CanaryVerdict::Promote);
    }

    #[test]
    fn a_lost_probe_task_makes_the_analysis_inconclusive() {
        let mut lost = side(10.0, 50, 0);
        lost.lost = 1;
        let s = vec![(side(10.0, 50, 0), side(10.0, 50, 0)); 3]
            .into_iter()
            .chain([(side(10.0, 50, 0), lost)])
            .collect::<Vec<_>>();
        let a = analyse(&s, &settings());
        assert_eq!(a.verdict, CanaryVerdict::Inconclusive, "{:?}", a.reasons);
        assert!(
            a.reasons[0].contains("1 canary probe task"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn too_little_data_is_inconclusive() {
        let s = vec![(side(10.0, 20, 0), side(10.0, 20, 0))];
        let a = analyse(&s, &settings());
        assert_eq!(a.verdict, CanaryVerdict::Inconclusive);
        assert_eq!(
            analyse(&[], &settings()).verdict,
            CanaryVerdict::Inconclusive
        );
    }
}
