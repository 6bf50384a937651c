//! Outputs, job summary and gate annotations, written the same way on every path (success,
//! skip, gate failure, operational error): the workflow can always read `verdict` and friends.
//!
//! The input is a [`RunReport`]: filled from the preview outcome (the contract) and from the load
//! module's summary and comparison JSON, which arrive as `serde_json::Value` so this module does
//! not depend on the load module's types. Every value goes through `gha` (redacted; heredoc
//! records that user text cannot end early), and the summary through `summary.md.j2`.

use std::io::Write;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::contract::Contract;
use crate::gha::Gha;
use crate::report::Renderer;

/// Every output Atlas sets, in the order it sets them. Keep in sync with `action.yml`.
pub const OUTPUT_NAMES: &[&str] = &[
    "preview_url",
    "commit_sha",
    "database_branch",
    "p95_ms",
    "avg_ms",
    "error_rate",
    "requests",
    "regression",
    "verdict",
    "comment_url",
];

/// One metric that failed the gate.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GateFinding {
    pub metric: String,
    pub label: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    pub change_pct: Option<f64>,
    pub floor: Option<f64>,
    pub baseline_display: String,
    pub current_display: String,
    pub change_display: String,
}

/// What one run reports. Unknown values stay `None` and become empty outputs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// `preview-up`, `preview-down`, `verify`, `release`, `sweep`, `skip`.
    pub command: String,
    pub pr: Option<u64>,
    /// `pass`, `fail`, `inconclusive`, `skipped`, `destroyed`, `error`, ...
    pub verdict: String,
    /// Why (a skip reason, a stale-run note). User-facing, lowercase.
    pub reason: Option<String>,
    /// The error chain of an operational failure (redacted on output).
    pub error: Option<String>,
    pub preview_url: Option<String>,
    pub commit_sha: String,
    pub database_branch: Option<String>,
    pub p95_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    pub error_rate: Option<f64>,
    pub requests: Option<u64>,
    pub regression: Option<bool>,
    pub comment_url: Option<String>,
    /// The serialized [`Contract`] (drives the summary tables).
    pub contract: Option<Value>,
    pub gate_failures: Vec<GateFinding>,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Formats a number for an output: integers without a fraction, others with up to 4 decimals.
fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl RunReport {
    pub fn new(command: &str, commit_sha: &str) -> RunReport {
        RunReport {
            command: command.to_string(),
            commit_sha: commit_sha.to_string(),
            ..Default::default()
        }
    }

    /// Takes the preview URL, database branch and load evidence from the contract.
    pub fn with_contract(mut self, c: &Contract) -> RunReport {
        if !c.code.url.is_empty() {
            self.preview_url = Some(c.code.url.clone());
        }
        if !c.code.sha.is_empty() {
            self.commit_sha = c.code.sha.clone();
        }
        if c.data.branch.is_some() {
            self.database_branch = c.data.branch.clone();
        }
        let (load, cmp) = (c.evidence.load.clone(), c.evidence.comparison.clone());
        self = self.with_load(load.as_ref(), cmp.as_ref());
        self.contract = serde_json::to_value(c).ok();
        self
    }

    /// Reads the load summary (`metrics.http_req_duration.p95/avg`, `metrics.http_reqs.total`,
    /// `metrics.errors.rate`) and the comparison (`verdict`, `metrics[]`). Missing fields stay
    /// unknown; a comparison sets `regression` and, when the verdict is not set yet, `verdict`.
    pub fn with_load(mut self, summary: Option<&Value>, comparison: Option<&Value>) -> RunReport {
        if let Some(s) = summary {
            let m = &s["metrics"];
            self.p95_ms = num(&m["http_req_duration"]["p95"]).or(self.p95_ms);
            self.avg_ms = num(&m["http_req_duration"]["avg"]).or(self.avg_ms);
            self.requests = m["http_reqs"]["total"]
                .as_u64()
                .or_else(|| num(&m["http_reqs"]["total"]).map(|x| x as u64))
                .or(self.requests);
            self.error_rate = num(&m["errors"]["rate"]).or(self.error_rate);
        }
        if let Some(c) = comparison {
            let verdict = c["verdict"].as_str().unwrap_or("");
            if !verdict.is_empty() {
                self.regression = Some(verdict == "fail");
                if self.verdict.is_empty() {
                    self.verdict = verdict.to_string();
                }
            }
            self.gate_failures = c["metrics"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .filter(|m| m["verdict"].as_str() == Some("fail"))
                        .map(|m| GateFinding {
                            metric: text(&m["name"]),
                            label: {
                                let l = text(&m["label"]);
                                if l.is_empty() { text(&m["name"]) } else { l }
                            },
                            baseline: num(&m["baseline"]),
                            current: num(&m["current"]),
                            change_pct: num(&m["change_pct"]),
                            floor: num(&m["floor"]),
                            baseline_display: text(&m["baseline_display"]),
                            current_display: text(&m["current_display"]),
                            change_display: text(&m["change_display"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
        self
    }

    /// `(name, value)` for every output; unknown values are empty strings.
    pub fn outputs(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let optn = |v: Option<f64>| v.map(fmt_num).unwrap_or_default();
        vec![
            ("preview_url", opt(&self.preview_url)),
            ("commit_sha", self.commit_sha.clone()),
            ("database_branch", opt(&self.database_branch)),
            ("p95_ms", optn(self.p95_ms)),
            ("avg_ms", optn(self.avg_ms)),
            ("error_rate", optn(self.error_rate)),
            (
                "requests",
                self.requests.map(|r| r.to_string()).unwrap_or_default(),
            ),
            (
                "regression",
                self.regression.map(|r| r.to_string()).unwrap_or_default(),
            ),
            ("verdict", self.verdict.clone()),
            ("comment_url", opt(&self.comment_url)),
        ]
    }

    /// One annotation line per failed metric: the metric and the numbers.
    pub fn gate_messages(&self) -> Vec<(String, String)> {
        self.gate_failures
            .iter()
            .map(|g| {
                let show = |d: &str, v: Option<f64>| {
                    if d.is_empty() {
                        v.map(fmt_num).unwrap_or_else(|| "?".into())
                    } else {
                        d.to_string()
                    }
                };
                let change = if g.change_display.is_empty() {
                    g.change_pct
                        .map(|c| format!("{c:+.1}%"))
                        .unwrap_or_else(|| "?".into())
                } else {
                    g.change_display.clone()
                };
                (
                    format!("atlas gate: {}", g.label),
                    format!(
                        "{} regressed: {} vs baseline {} ({change})",
                        g.label,
                        show(&g.current_display, g.current),
                        show(&g.baseline_display, g.baseline),
                    ),
                )
            })
            .collect()
    }
}

/// Writes every output and the `::error::` annotations of a failed gate (no summary: for a
/// caller that writes its own, like the skip path with `skip.md.j2`).
pub fn write_outputs<W: Write>(gha: &mut Gha<W>, report: &RunReport) -> anyhow::Result<()> {
    for (name, value) in report.outputs() {
        gha.set_output(name, &value)
            .with_context(|| format!("cannot write output `{name}` to GITHUB_OUTPUT"))?;
    }
    for (title, msg) in report.gate_messages() {
        gha.error(&title, &msg);
    }
    Ok(())
}

/// Writes every output, the `::error::` annotations of a failed gate and the job summary.
/// Call it on every path, including skip and failure. All outputs are written even when the
/// summary cannot be rendered; the first error is returned after that.
pub fn write<W: Write>(
    gha: &mut Gha<W>,
    renderer: &Renderer,
    report: &RunReport,
) -> anyhow::Result<()> {
    write_outputs(gha, report)?;
    let md = renderer.render(
        "summary.md.j2",
        &crate::report::SummaryContext {
            command: &report.command,
            pr: report.pr,
            verdict: &report.verdict,
            reason: report.reason.as_deref(),
            contract: report.contract.as_ref(),
            error: report.error.as_deref(),
        },
    )?;
    gha.append_summary(&md)
        .context("cannot append to GITHUB_STEP_SUMMARY")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comparison() -> Value {
        json!({
            "verdict": "fail",
            "metrics": [
                {"name": "p95", "label": "P95 Latency", "baseline": 387.57, "current": 512.0,
                 "change_pct": 32.1, "floor": 5.0, "verdict": "fail",
                 "current_display": "512.00ms", "baseline_display": "387.57ms", "change_display": "+32.1%"},
                {"name": "avg", "label": "Avg Latency", "baseline": 275.01, "current": 280.0,
                 "change_pct": 1.8, "floor": 5.0, "verdict": "pass",
                 "current_display": "280.00ms", "baseline_display": "275.01ms", "change_display": "+1.8%"}
            ]
        })
    }

    #[test]
    fn fills_from_summary_and_comparison() {
        let summary = json!({"metrics": {"http_req_duration": {"p95": 512.0, "avg": 280.0},
            "http_reqs": {"total": 750}, "errors": {"rate": 0.0093}}});
        let r = RunReport::new("preview-up", "abc").with_load(Some(&summary), Some(&comparison()));
        let o: std::collections::BTreeMap<_, _> = r.outputs().into_iter().collect();
        assert_eq!(o["p95_ms"], "512");
        assert_eq!(o["error_rate"], "0.0093");
        assert_eq!(o["requests"], "750");
        assert_eq!(o["regression"], "true");
        assert_eq!(o["verdict"], "fail");
        assert_eq!(o["preview_url"], "");
        assert_eq!(r.outputs().len(), OUTPUT_NAMES.len());
        let msgs = r.gate_messages();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, "atlas gate: P95 Latency");
        assert_eq!(
            msgs[0].1,
            "P95 Latency regressed: 512.00ms vs baseline 387.57ms (+32.1%)"
        );
    }

    #[test]
    fn missing_fields_stay_unknown() {
        let r = RunReport::new("skip", "abc").with_load(Some(&json!({"x": 1})), Some(&json!([])));
        let o: std::collections::BTreeMap<_, _> = r.outputs().into_iter().collect();
        assert_eq!(o["p95_ms"], "");
        assert_eq!(o["regression"], "");
        assert!(r.gate_failures.is_empty());
    }
}
