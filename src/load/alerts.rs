//! Alerts from a default-branch comparison: one issue per endpoint and metric that regressed
//! (`performance regression: GET /menu p95`), closed when the metric recovers, and a
//! Slack-compatible webhook message. Pure: the caller owns the GitHub and HTTP calls.

use serde_json::{Value, json};

use super::gate::{Comparison, Verdict};

/// What to do about one endpoint+metric's issue.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertAction {
    /// Open the issue, or update (comment on) the open one with this title.
    Open { title: String, body: String },
    /// Close the open issue with this title, if there is one.
    Close { title: String, body: String },
}

/// The issue title for a row: `performance regression: GET /menu p95`, or
/// `performance regression: all requests p95` for the overall rows.
pub fn issue_title(endpoint: Option<&str>, metric: &str) -> String {
    format!(
        "performance regression: {} {metric}",
        endpoint.unwrap_or("all requests")
    )
}

/// One action per gated row of `c`: failing rows open or update their issue with the
/// evidence, passing rows close theirs. Inconclusive rows change nothing (no false alarm, and
/// no false recovery). `commit` and `dashboard` (a URL) are quoted in the body.
pub fn plan(c: &Comparison, commit: &str, dashboard: Option<&str>) -> Vec<AlertAction> {
    let mut out = Vec::new();
    for m in c.metrics.iter().filter(|m| m.name != "requests") {
        let title = issue_title(m.endpoint.as_deref(), &m.name);
        let link = dashboard
            .map(|d| format!("\n\nTrend: {d}"))
            .unwrap_or_default();
        let model = c
            .model
            .as_deref()
            .map(|m| format!(" under the {m} model"))
            .unwrap_or_default();
        match m.verdict {
            Verdict::Fail => out.push(AlertAction::Open {
                body: format!(
                    "Commit `{commit}`: {}.\n\n| | value |\n| --- | --- |\n| current | {} |\n| history median | {} |\n| change | {} |\n\nCompared with {} runs{model}.{link}",
                    m.note,
                    m.current_display,
                    m.baseline_display,
                    m.change_display,
                    c.history_runs.unwrap_or(1)
                ),
                title,
            }),
            Verdict::Pass => out.push(AlertAction::Close {
                body: format!(
                    "Recovered at commit `{commit}`: {}.{link}",
                    if m.note.is_empty() {
                        format!("{} {}", m.label, m.current_display)
                    } else {
                        m.note.clone()
                    }
                ),
                title,
            }),
            Verdict::Inconclusive => {}
        }
    }
    out
}

/// A Slack-compatible incoming-webhook message (`text` plus one section block) for the failing
/// rows of `c`, or `None` when nothing failed.
pub fn webhook_message(
    c: &Comparison,
    repo: &str,
    commit: &str,
    dashboard: Option<&str>,
) -> Option<Value> {
    let failing: Vec<String> = c
        .metrics
        .iter()
        .filter(|m| m.verdict == Verdict::Fail)
        .map(|m| format!("• {}", m.note))
        .collect();
    if failing.is_empty() {
        return None;
    }
    let short = commit.get(..7).unwrap_or(commit);
    let mut text = format!(
        "Performance regression on {repo} at {short}:\n{}",
        failing.join("\n")
    );
    if let Some(d) = dashboard {
        text.push_str(&format!("\n<{d}|trend dashboard>"));
    }
    Some(json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::gate::MetricComparison;

    fn row(name: &str, endpoint: Option<&str>, verdict: Verdict, note: &str) -> MetricComparison {
        MetricComparison {
            name: name.into(),
            label: name.into(),
            unit: "ms".into(),
            baseline: 380.0,
            current: 500.0,
            change_pct: Some(31.6),
            floor: 10.0,
            p_value: None,
            verdict,
            note: note.into(),
            current_display: "500.00ms".into(),
            baseline_display: "380.00ms".into(),
            change_display: "+31.6%".into(),
            bound: Some(452.0),
            endpoint: endpoint.map(str::to_string),
        }
    }

    #[test]
    fn failing_rows_open_passing_rows_close_inconclusive_rows_wait() {
        let c = Comparison {
            verdict: Verdict::Fail,
            metrics: vec![
                row(
                    "p95",
                    Some("GET /menu"),
                    Verdict::Fail,
                    "GET /menu p95 500 ms above the 99.5% upper bound 452 ms of 20 runs",
                ),
                row("error_rate", Some("GET /menu"), Verdict::Pass, ""),
                row("avg", None, Verdict::Inconclusive, ""),
                row("requests", None, Verdict::Pass, ""),
            ],
            notes: vec![],
            threshold_pct: 20.0,
            baseline_source: None,
            current_source: None,
            model: Some("t_test".into()),
            history_runs: Some(20),
        };
        let p = plan(&c, "abc1234", Some("https://o.github.io/r/dashboard.html"));
        assert_eq!(p.len(), 2, "{p:?}");
        match &p[0] {
            AlertAction::Open { title, body } => {
                assert_eq!(title, "performance regression: GET /menu p95");
                assert!(
                    body.contains("above the 99.5% upper bound 452 ms of 20 runs"),
                    "{body}"
                );
                assert!(body.contains("under the t_test model"));
                assert!(body.contains("Trend: https://o.github.io/r/dashboard.html"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&p[1], AlertAction::Close { title, .. } if title == "performance regression: GET /menu error_rate")
        );
        let msg = webhook_message(&c, "o/r", "abc1234def", Some("https://x/d.html")).unwrap();
        let text = msg["text"].as_str().unwrap();
        assert!(
            text.starts_with("Performance regression on o/r at abc1234:"),
            "{text}"
        );
        assert!(text.contains("<https://x/d.html|trend dashboard>"));
        assert_eq!(msg["blocks"][0]["text"]["type"], "mrkdwn");
        let mut ok = c.clone();
        ok.metrics.retain(|m| m.verdict != Verdict::Fail);
        assert!(webhook_message(&ok, "o/r", "abc", None).is_none());
    }
}
