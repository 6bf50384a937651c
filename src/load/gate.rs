//! The baseline gate: compares a summary with a baseline and returns the comparison as data
//! (per metric: baseline, current, change, floor, verdict) for the CLI and the templates.
//!
//! The rule from the seed (more than 20% worse on p95, avg or error rate blocks) made
//! trustworthy: a latency regression must also exceed an absolute floor and, with enough runs
//! per side, be confirmed by a Mann-Whitney rank test; an error-rate regression must exceed a
//! floor in percentage points and be significant for the sample sizes (two-proportion z-test).
//! Too few requests, a generator that fell short of its target rate, or settings that differ
//! from the baseline's make the comparison inconclusive: reported, never a silent pass.

use serde::{Deserialize, Serialize};

use super::stats::{mann_whitney_greater_p, two_proportion_p};
use super::summary::{Shape, Source, Summary};
use crate::config::GateSettings;

/// A verdict, serialised lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    /// `p95`, `avg`, `error_rate`, `requests`, `rate`.
    pub name: String,
    /// Human label (`P95 Latency`, ...).
    pub label: String,
    /// `ms`, `ratio` (0..1) or `count`, `req/s`.
    pub unit: String,
    pub baseline: f64,
    pub current: f64,
    /// Relative change in percent (positive = higher); `None` when the baseline is 0.
    pub change_pct: Option<f64>,
    /// The absolute floor a regression must exceed, in the metric's unit (0 when none).
    pub floor: f64,
    /// The p-value of the statistical test used, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    /// Why, in a few words.
    pub note: String,
    pub current_display: String,
    pub baseline_display: String,
    pub change_display: String,
    /// The model's upper bound, when the comparison is against a history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    /// The endpoint (`GET /menu`) a per-endpoint row is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The comparison of a summary with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub verdict: Verdict,
    pub metrics: Vec<MetricComparison>,
    /// Reasons for an inconclusive verdict and other remarks, one sentence each.
    pub notes: Vec<String>,
    pub threshold_pct: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_source: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_source: Option<Source>,
    /// The threshold model, when the comparison is against a history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How many history runs the comparison used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_runs: Option<usize>,
}

impl Comparison {
    /// The failing rows, as one line (for the error message).
    pub fn failures(&self) -> String {
        self.metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Fail)
            .map(|m| match m.bound {
                // against a history the note is the sentence: "p95 412 ms above the ...".
                Some(_) => m.note.clone(),
                None => format!(
                    "{} {} -> {} ({})",
                    m.label, m.baseline_display, m.current_display, m.change_display
                ),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A plain-text table for terminals and logs.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{:<16} {:>12} {:>12} {:>10}  verdict\n",
            "metric", "current", "baseline", "change"
        );
        for m in &self.metrics {
            out.push_str(&format!(
                "{:<16} {:>12} {:>12} {:>10}  {}{}\n",
                m.label,
                m.current_display,
                m.baseline_display,
                m.change_display,
                m.verdict,
                if m.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", m.note)
                }
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }

        out.push_str(&format!("gate: {}\n", self.verdict));
        out
    }
}

pub(crate) fn change_pct(baseline: f64, current: f64) -> Option<f64> {
    (baseline > 0.0).then(|| (current - baseline) / baseline * 100.0)
}

pub(crate) fn change_display(change: Option<f64>, baseline: f64, current: f64) -> String {
    match change {
        Some(c) => format!("{c:+.1}%"),
        None if current == baseline => "0.0%".into(),
        None => "new".into(),
    }
}

pub(crate) fn ms(v: f64) -> String {
    format!("{v:.2}ms")
}

pub(crate) fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// Whether two shapes describe the same test (rates within 1%).
pub(crate) fn same_shape(a: &Shape, b: &Shape) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 0.01 * x.abs().max(y.abs()),
        (None, None) => true,
        _ => false,
    };
    a.model == b.model
        && close(a.rate, b.rate)
        && a.vus == b.vus
        && (a.duration_s - b.duration_s).abs() < 0.5
        && a.connections == b.connections
        && a.requests == b.requests
}

/// Compares `current` with `baseline` under the gate's rules. Pure: no I/O.
pub fn compare(baseline: &Summary, current: &Summary, gate: &GateSettings) -> Comparison {
    let mut notes = Vec::new();
    let mut inconclusive = false;
    let thr = gate.threshold_pct;

    // Conditions under which no verdict can be trusted.
    for (side, s) in [("baseline", baseline), ("current", current)] {
        let n = s.metrics.http_reqs.total;
        if n < gate.min_requests {
            inconclusive = true;
            notes.push(format!(
                "the {side} has {n} requests, fewer than the {} needed (raise the duration or rate)",
                gate.min_requests
            ));
        }
        if let Some(run) = &s.run
            && let Some(target) = run.target_rate.filter(|t| *t > 0.0)
            && run.achieved_rate < gate.min_rate_ratio * target
        {
            inconclusive = true;
            notes.push(format!(
                        "the {side} achieved {:.1} req/s of the {:.1} targeted ({:.1}%, under {:.0}%): the generator or the network could not hold the rate",
                        run.achieved_rate,
                        target,
                        run.achieved_rate / target * 100.0,
                        gate.min_rate_ratio * 100.0
                    ));
        }
    }
    match (&baseline.settings, &current.settings) {
        (Some(b), Some(c)) if !same_shape(b, c) => {
            inconclusive = true;
            notes.push(format!(
                "the load settings differ from the baseline's ({} vs {}): update the baseline or use its settings",
                shape_text(c),
                shape_text(b)
            ));
        }
        (Some(_), Some(_)) => {}
        _ => notes.push(
            "the baseline or the summary does not record its load settings, so they were not compared"
                .into(),
        ),
    }

    let (bp, cp) = (baseline.points(), current.points());
    let rank = bp.len() >= gate.rank_test_runs && cp.len() >= gate.rank_test_runs;
    if rank {
        notes.push(format!(
            "{} baseline runs and {} current runs: latency regressions must be confirmed by a Mann-Whitney test (alpha {})",
            bp.len(),
            cp.len(),
            gate.alpha
        ));
    }

    let mut metrics = Vec::new();
    for (name, label, b, c, per_run) in [
        (
            "p95",
            "P95 Latency",
            baseline.metrics.http_req_duration.p95,
            current.metrics.http_req_duration.p95,
            (
                bp.iter().map(|p| p.p95).collect::<Vec<_>>(),
                cp.iter().map(|p| p.p95).collect::<Vec<_>>(),
            ),
        ),
        (
            "avg",
            "Avg Latency",
            baseline.metrics.http_req_duration.avg,
            current.metrics.http_req_duration.avg,
            (
                bp.iter().map(|p| p.avg).collect(),
                cp.iter().map(|p| p.avg).collect(),
            ),
        ),
    ] {
        let change = change_pct(b, c);
        let relative_worse = match change {
            Some(ch) => ch > thr,
            None => c > b,
        };
        let (verdict, p_value, note) = if !relative_worse {
            (Verdict::Pass, None, String::new())
        } else if c - b <= gate.latency_floor_ms {
            (
                Verdict::Pass,
                None,
                format!("under the {} ms floor", gate.latency_floor_ms),
            )
        } else if rank {
            let p = mann_whitney_greater_p(&per_run.1, &per_run.0);
            if p < gate.alpha {
                (Verdict::Fail, Some(p), format!("rank test p={p:.3}"))
            } else {
                (
                    Verdict::Inconclusive,
                    Some(p),
                    format!("not confirmed by the rank test (p={p:.3})"),
                )
            }
        } else {
            (Verdict::Fail, None, format!("over {thr}% and the floor"))
        };
        metrics.push(MetricComparison {
            name: name.into(),
            label: label.into(),
            unit: "ms".into(),
            baseline: b,
            current: c,
            change_pct: change,
            floor: gate.latency_floor_ms,
            p_value,
            verdict,
            note,
            current_display: ms(c),
            baseline_display: ms(b),
            change_display: change_display(change, b, c),
            bound: None,
            endpoint: None,
        });
    }

    // Error rate: relative, absolute floor, and significance for the sample sizes.
    {
        let (b, c) = (baseline.metrics.errors.rate, current.metrics.errors.rate);
        let change = change_pct(b, c);
        let relative_worse = match change {
            Some(ch) => ch > thr,
            None => c > b,
        };
        let floor = gate.error_floor_pp / 100.0;
        let p = two_proportion_p(
            baseline.error_count(),
            baseline.metrics.http_reqs.total,
            current.error_count(),
            current.metrics.http_reqs.total,
        );
        let (verdict, p_value, note) = if !relative_worse {
            (Verdict::Pass, None, String::new())
        } else if c - b <= floor {
            (
                Verdict::Pass,
                None,
                format!("under the {} pp floor", gate.error_floor_pp),
            )
        } else if p >= gate.alpha {
            (
                Verdict::Pass,
                Some(p),
                format!("not significant for these sample sizes (p={p:.3})"),
            )
        } else {
            (Verdict::Fail, Some(p), format!("z-test p={p:.4}"))
        };
        metrics.push(MetricComparison {
            name: "error_rate".into(),
            label: "Error Rate".into(),
            unit: "ratio".into(),
            baseline: b,
            current: c,
            change_pct: change,
            floor,
            p_value,
            verdict,
            note,
            current_display: pct(c),
            baseline_display: pct(b),
            change_display: match change {
                Some(ch) => format!("{ch:+.1}%"),
                None => format!("{:+.2} pp", (c - b) * 100.0),
            },
            bound: None,
            endpoint: None,
        });
    }

    // The request count is not gated, but too few requests make the whole comparison
    // inconclusive, so it is shown with that verdict.
    {
        let (b, c) = (
            baseline.metrics.http_reqs.total as f64,
            current.metrics.http_reqs.total as f64,
        );
        let enough = baseline.metrics.http_reqs.total >= gate.min_requests
            && current.metrics.http_reqs.total >= gate.min_requests;
        metrics.push(requests_row(b, c, enough, gate.min_requests));
    }

    let verdict = overall_verdict(
        &metrics,
        inconclusive,
        &mut notes,
        "a metric crossed its threshold, but the measurement is not trustworthy enough to fail the gate",
    );
    Comparison {
        verdict,
        metrics,
        notes,
        threshold_pct: thr,
        baseline_source: baseline.source.clone(),
        current_source: current.source.clone(),
        model: None,
        history_runs: None,
    }
}

pub(crate) fn shape_text(s: &Shape) -> String {
    let load = match (s.rate, s.vus) {
        (Some(r), _) => format!("{r} req/s"),
        (None, Some(v)) => format!("{v} vus"),
        _ => "?".into(),
    };
    format!(
        "{} {load}, {}s, {} connections, [{}]",
        s.model,
        s.duration_s,
        s.connections,
        s.requests.join(", ")
    )
}

/// The request-count row: not gated, but fewer than `min_requests` on either side makes the
/// whole comparison inconclusive, so the row carries that verdict. `b` is the baseline side (a
/// fixed baseline's count, or the history's median).
pub(crate) fn requests_row(b: f64, c: f64, enough: bool, min_requests: u64) -> MetricComparison {
    let change = change_pct(b, c);
    MetricComparison {
        name: "requests".into(),
        label: "Total Requests".into(),
        unit: "count".into(),
        baseline: b,
        current: c,
        change_pct: change,
        floor: min_requests as f64,
        p_value: None,
        verdict: if enough {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        },
        note: if enough {
            String::new()
        } else {
            format!("fewer than {min_requests}")
        },
        current_display: format!("{}", c as u64),
        baseline_display: format!("{}", b as u64),
        change_display: change_display(change, b, c),
        bound: None,
        endpoint: None,
    }
}

/// The comparison's verdict from its rows: a failing row fails it, an unsure one makes it
/// inconclusive, and `inconclusive` (too few requests, a missed rate, too little history)
/// overrides both; a row that crossed its bound then only leaves `crossed` as a note.
pub(crate) fn overall_verdict(
    metrics: &[MetricComparison],
    inconclusive: bool,
    notes: &mut Vec<String>,
    crossed: &str,
) -> Verdict {
    let any_fail = metrics.iter().any(|m| m.verdict == Verdict::Fail);
    let any_unsure = metrics.iter().any(|m| m.verdict == Verdict::Inconclusive);
    if inconclusive {
        if any_fail {
            notes.push(crossed.into());
        }
        Verdict::Inconclusive
    } else if any_fail {
        Verdict::Fail
    } else if any_unsure {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}
