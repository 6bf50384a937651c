//! A history of load summaries and the gate over it: a candidate is compared with the last N
//! comparable runs under a threshold model (see [`super::models`]), per metric and per
//! endpoint.
//!
//! A history is read from a directory of summaries (any format [`parse_summary`] reads) or a
//! history file (`{"version": 1, "entries": [{"commit": ..., "summary": {...}}]}`, what the
//! store writes, or a JSON array of summaries). Entries that do not parse, or were measured with
//! other settings (rate, duration, endpoints) or too few requests, are skipped with a note; the
//! verdict says how many runs it used, and too few is inconclusive.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gate::{
    Comparison, GateSettings, MetricComparison, Verdict, change_display, change_pct, ms, pct,
    same_shape, shape_text,
};
use super::generator::RequestSpec;
use super::models::{ModelParams, ThresholdModel, upper_bound};
use super::stats::median;
use super::summary::{Summary, parse_summary};

/// One run of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Where it came from: the file name, or `entry N (commit abc1234)`.
    pub label: String,
    pub commit: Option<String>,
    pub summary: Summary,
}

/// The readable entries of a history, oldest first, and notes about the ones skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
    pub notes: Vec<String>,
}

/// The history file format. Summaries are kept as JSON values so that one entry that does not
/// parse (an older or hand-edited one) is skipped instead of making the whole history unusable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryFile {
    pub version: u32,
    pub entries: Vec<StoredEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    pub summary: Value,
}

impl HistoryFile {
    /// Appends (or replaces, for the same commit) an entry, then folds the oldest entries away
    /// so at most `max_entries` remain.
    pub fn append(&mut self, entry: StoredEntry, max_entries: usize) {
        self.version = 1;
        self.entries.retain(|e| e.commit != entry.commit);
        self.entries.push(entry);
        let excess = self.entries.len().saturating_sub(max_entries.max(1));
        self.entries.drain(..excess);
    }

    /// The entries up to and including `commit` (a merge base), or all when it is not in the
    /// history.
    pub fn up_to(&self, commit: &str) -> &[StoredEntry] {
        match self.entries.iter().rposition(|e| {
            e.commit == commit || (commit.len() >= 7 && e.commit.starts_with(commit))
        }) {
            Some(i) => &self.entries[..=i],
            None => &self.entries,
        }
    }
}

/// Parses a history file's text (the store's format or an array of summaries).
pub fn parse_history(text: &str) -> anyhow::Result<History> {
    let v: Value = serde_json::from_str(text).context("invalid json")?;
    let items: Vec<(Option<String>, Value)> = match v {
        Value::Object(ref o) if o.contains_key("entries") => o
            .get("entries")
            .and_then(Value::as_array)
            .context("`entries` is not an array")?
            .iter()
            .map(|e| {
                (
                    e.get("commit").and_then(Value::as_str).map(str::to_string),
                    e.get("summary").cloned().unwrap_or(Value::Null),
                )
            })
            .collect(),
        Value::Array(a) => a.into_iter().map(|s| (None, s)).collect(),
        _ => anyhow::bail!("neither a history file (an object with `entries`) nor an array"),
    };
    let mut h = History::default();
    for (i, (commit, value)) in items.into_iter().enumerate() {
        let label = match &commit {
            Some(c) => format!("entry {} (commit {})", i + 1, short(c)),
            None => format!("entry {}", i + 1),
        };
        match parse_summary(&value.to_string()) {
            Ok(summary) => h.entries.push(HistoryEntry {
                commit: commit.or_else(|| summary.source.as_ref().and_then(|s| s.commit.clone())),
                label,
                summary,
            }),
            Err(e) => h.notes.push(format!(
                "skipped history {label}: it does not parse ({e:#})"
            )),
        }
    }
    Ok(h)
}

fn short(c: &str) -> &str {
    c.get(..7).unwrap_or(c)
}

/// Reads a history from a directory of summaries (`*.json`, ordered by their timestamp, then
/// name) or from a history file.
pub fn read_history(path: &Path) -> anyhow::Result<History> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the history directory {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut h = History::default();
        for f in files {
            let label = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parsed = std::fs::read_to_string(&f)
                .map_err(anyhow::Error::from)
                .and_then(|t| parse_summary(&t));
            match parsed {
                Ok(summary) => h.entries.push(HistoryEntry {
                    commit: summary.source.as_ref().and_then(|s| s.commit.clone()),
                    label,
                    summary,
                }),
                Err(e) => h.notes.push(format!(
                    "skipped history entry {label}: it does not parse ({e:#})"
                )),
            }
        }
        // stable: entries without a timestamp keep their name order.
        h.entries
            .sort_by(|a, b| when(&a.summary).cmp(when(&b.summary)));
        Ok(h)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the history {}", path.display()))?;
        parse_history(&text).with_context(|| {
            format!(
                "{} is not a history (a directory of summaries or a history file)",
                path.display()
            )
        })
    }
}

fn when(s: &Summary) -> &str {
    s.source
        .as_ref()
        .and_then(|s| s.measured_at.as_deref())
        .unwrap_or(&s.timestamp)
}

/// Per-endpoint gate settings from `[[load.requests]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointGate {
    pub name: String,
    pub p95_ms: Option<f64>,
    pub threshold_pct: Option<f64>,
    pub model: Option<ThresholdModel>,
}

impl EndpointGate {
    pub fn from_specs(specs: &[RequestSpec]) -> Vec<EndpointGate> {
        specs
            .iter()
            .map(|s| EndpointGate {
                name: s
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{} {}", s.method.to_uppercase(), s.path)),
                p95_ms: s.p95_ms,
                threshold_pct: s.threshold_pct,
                model: s.model,
            })
            .collect()
    }
}

/// Why a history entry cannot be compared with the candidate, if it cannot.
fn incomparable(entry: &Summary, current: &Summary, gate: &GateSettings) -> Option<String> {
    let n = entry.metrics.http_reqs.total;
    if n < gate.min_requests {
        return Some(format!(
            "it has {n} requests, fewer than the {} needed",
            gate.min_requests
        ));
    }
    if let Some(run) = &entry.run
        && let Some(target) = run.target_rate.filter(|t| *t > 0.0)
        && run.achieved_rate < gate.min_rate_ratio * target
    {
        return Some(format!(
            "it achieved {:.1} of {:.1} req/s targeted",
            run.achieved_rate, target
        ));
    }
    match (&entry.settings, &current.settings) {
        (Some(e), Some(c)) if !same_shape(e, c) => Some(format!(
            "different load settings ({} vs {})",
            shape_text(e),
            shape_text(c)
        )),
        (None, Some(_)) => Some("it does not record its load settings".into()),
        _ => None,
    }
}

struct Series<'a> {
    name: &'a str,
    label: String,
    /// modelled on the log scale (latencies)
    log: bool,
    /// ms or ratio
    unit: &'a str,
    history: Vec<f64>,
    current: f64,
    floor: f64,
    params: ModelParams,
    endpoint: Option<String>,
    /// an absolute ceiling that fails whatever the history says (`p95_ms`)
    ceiling: Option<f64>,
}

fn display(unit: &str, v: f64) -> String {
    if unit == "ratio" { pct(v) } else { ms(v) }
}

/// Short form for the verdict sentence: `412 ms`, `1.20%`.
fn sentence_value(unit: &str, v: f64) -> String {
    if unit == "ratio" {
        format!("{:.2}%", v * 100.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn gate_series(s: Series<'_>, min_history: usize, m: usize) -> MetricComparison {
    let n = s.history.len();
    let what = match &s.endpoint {
        Some(e) => format!("{e} {}", s.name),
        None => s.name.to_string(),
    };
    let bound = (n >= min_history.max(2))
        .then(|| upper_bound(&s.params, &s.history, m, s.log))
        .flatten();
    let center = median(&s.history).unwrap_or(0.0);
    let change = change_pct(center, s.current);
    let (verdict, note, upper) = match bound {
        None => (
            Verdict::Inconclusive,
            format!(
                "{what}: {n} comparable runs in the history, {} needed for the {} model",
                min_history.max(if s.params.model == ThresholdModel::Iqr {
                    4
                } else {
                    2
                }),
                s.params.model
            ),
            None,
        ),
        Some(b) => {
            // a practical floor: a change smaller than this is not worth blocking a PR over,
            // however tight the history.
            let upper = b.upper.max(b.center + s.floor);
            let cur = sentence_value(s.unit, s.current);
            let bnd = sentence_value(s.unit, upper);
            let floor_won = upper > b.upper;
            let describe = if floor_won {
                format!("{} (the floor over the median)", b.describe)
            } else {
                b.describe.clone()
            };
            if s.current > upper {
                (
                    Verdict::Fail,
                    format!("{what} {cur} above the {describe} {bnd} of {n} runs"),
                    Some(upper),
                )
            } else {
                (
                    Verdict::Pass,
                    format!("{what} {cur} within the {describe} {bnd} of {n} runs"),
                    Some(upper),
                )
            }
        }
    };
    let (verdict, note) = match s.ceiling {
        Some(c) if s.current > c => (
            Verdict::Fail,
            format!(
                "{what} {} above the configured {}",
                sentence_value(s.unit, s.current),
                sentence_value(s.unit, c)
            ),
        ),
        _ => (verdict, note),
    };
    MetricComparison {
        name: s.name.into(),
        label: s.label,
        unit: s.unit.into(),
        baseline: center,
        current: s.current,
        change_pct: change,
        floor: s.floor,
        p_value: None,
        verdict,
        note,
        current_display: display(s.unit, s.current),
        baseline_display: display(s.unit, center),
        change_display: change_display(change, center, s.current),
        // a failing row always carries a bound (or the ceiling), so failures() uses its sentence
        bound: upper.or(s.ceiling),
        endpoint: s.endpoint,
    }
}

/// Compares `current` (one run, or the median of several: its `runs`) with the last
/// `gate.history_runs` comparable runs of `history` under `gate.model`, per metric, and per
/// endpoint when the summary has several endpoints or `endpoints` configures one. Pure.
pub fn compare_history(
    history: &History,
    current: &Summary,
    gate: &GateSettings,
    endpoints: &[EndpointGate],
) -> Comparison {
    let mut notes = history.notes.clone();
    let mut inconclusive = false;

    let n = current.metrics.http_reqs.total;
    if n < gate.min_requests {
        inconclusive = true;
        notes.push(format!(
            "the current run has {n} requests, fewer than the {} needed (raise the duration or rate)",
            gate.min_requests
        ));
    }
    if let Some(run) = &current.run
        && let Some(target) = run.target_rate.filter(|t| *t > 0.0)
        && run.achieved_rate < gate.min_rate_ratio * target
    {
        inconclusive = true;
        notes.push(format!(
            "the current run achieved {:.1} req/s of the {:.1} targeted: the generator or the network could not hold the rate",
            run.achieved_rate, target
        ));
    }

    let mut usable: Vec<&HistoryEntry> = Vec::new();
    for e in &history.entries {
        match incomparable(&e.summary, current, gate) {
            Some(why) => notes.push(format!("skipped history {}: {why}", e.label)),
            None => usable.push(e),
        }
    }
    if current.settings.is_none() {
        notes.push(
            "the summary does not record its load settings, so the history's were not compared"
                .into(),
        );
    }
    let skip = usable.len().saturating_sub(gate.history_runs.max(1));
    let used: Vec<&Summary> = usable[skip..].iter().map(|e| &e.summary).collect();
    let m = current.points().len();
    let params = ModelParams {
        model: gate.model,
        threshold_pct: gate.threshold_pct,
        confidence: gate.confidence,
        iqr_k: gate.iqr_k,
    };
    notes.push(format!(
        "compared with {} runs of the history under the {} model{}",
        used.len(),
        gate.model,
        if m > 1 {
            format!(", the current side the median of {m} runs")
        } else {
            String::new()
        }
    ));
    if used.len() < gate.min_history {
        inconclusive = true;
        notes.push(format!(
            "{} comparable runs in the history, fewer than the {} needed: not enough history to judge",
            used.len(),
            gate.min_history
        ));
    }

    let d = &current.metrics.http_req_duration;
    let mut metrics = vec![
        gate_series(
            Series {
                name: "p95",
                label: "P95 Latency".into(),
                log: true,
                unit: "ms",
                history: used
                    .iter()
                    .map(|s| s.metrics.http_req_duration.p95)
                    .collect(),
                current: d.p95,
                floor: gate.latency_floor_ms,
                params,
                endpoint: None,
                ceiling: None,
            },
            gate.min_history,
            m,
        ),
        gate_series(
            Series {
                name: "avg",
                label: "Avg Latency".into(),
                log: true,
                unit: "ms",
                history: used
                    .iter()
                    .map(|s| s.metrics.http_req_duration.avg)
                    .collect(),
                current: d.avg,
                floor: gate.latency_floor_ms,
                params,
                endpoint: None,
                ceiling: None,
            },
            gate.min_history,
            m,
        ),
        gate_series(
            Series {
                name: "error_rate",
                label: "Error Rate".into(),
                log: false,
                unit: "ratio",
                history: used.iter().map(|s| s.metrics.errors.rate).collect(),
                current: current.metrics.errors.rate,
                floor: gate.error_floor_pp / 100.0,
                params,
                endpoint: None,
                ceiling: None,
            },
            gate.min_history,
            m,
        ),
    ];
    // request count: not gated by a model, but too few makes the comparison inconclusive.
    {
        let hist: Vec<f64> = used
            .iter()
            .map(|s| s.metrics.http_reqs.total as f64)
            .collect();
        let b = median(&hist).unwrap_or(0.0);
        let c = current.metrics.http_reqs.total as f64;
        let enough = current.metrics.http_reqs.total >= gate.min_requests;
        let change = change_pct(b, c);
        metrics.push(MetricComparison {
            name: "requests".into(),
            label: "Total Requests".into(),
            unit: "count".into(),
            baseline: b,
            current: c,
            change_pct: change,
            floor: gate.min_requests as f64,
            p_value: None,
            verdict: if enough {
                Verdict::Pass
            } else {
                Verdict::Inconclusive
            },
            note: if enough {
                String::new()
            } else {
                format!("fewer than {}", gate.min_requests)
            },
            current_display: format!("{}", c as u64),
            baseline_display: format!("{}", b as u64),
            change_display: change_display(change, b, c),
            bound: None,
            endpoint: None,
        });
    }

    // per endpoint: each gated against its own history.
    let configured = endpoints
        .iter()
        .any(|e| e.p95_ms.is_some() || e.threshold_pct.is_some() || e.model.is_some());
    if current.endpoints.len() > 1 || configured {
        for ep in &current.endpoints {
            let cfg = endpoints.iter().find(|g| g.name == ep.name);
            let ep_params = ModelParams {
                model: cfg.and_then(|g| g.model).unwrap_or(gate.model),
                threshold_pct: cfg
                    .and_then(|g| g.threshold_pct)
                    .unwrap_or(gate.threshold_pct),
                ..params
            };
            let hist: Vec<&super::summary::EndpointSummary> = used
                .iter()
                .filter_map(|s| s.endpoints.iter().find(|x| x.name == ep.name))
                .filter(|x| x.count > 0)
                .collect();
            let err = |x: &super::summary::EndpointSummary| {
                if x.count == 0 {
                    0.0
                } else {
                    x.errors as f64 / x.count as f64
                }
            };
            metrics.push(gate_series(
                Series {
                    name: "p95",
                    label: format!("{} p95", ep.name),
                    log: true,
                    unit: "ms",
                    history: hist.iter().map(|x| x.duration.p95).collect(),
                    current: ep.duration.p95,
                    floor: gate.latency_floor_ms,
                    params: ep_params,
                    endpoint: Some(ep.name.clone()),
                    ceiling: cfg.and_then(|g| g.p95_ms),
                },
                gate.min_history,
                m,
            ));
            metrics.push(gate_series(
                Series {
                    name: "error_rate",
                    label: format!("{} errors", ep.name),
                    log: false,
                    unit: "ratio",
                    history: hist.iter().map(|x| err(x)).collect(),
                    current: err(ep),
                    floor: gate.error_floor_pp / 100.0,
                    params: ep_params,
                    endpoint: Some(ep.name.clone()),
                    ceiling: None,
                },
                gate.min_history,
                m,
            ));
        }
    }

    let any_fail = metrics.iter().any(|m| m.verdict == Verdict::Fail);
    let any_unsure = metrics.iter().any(|m| m.verdict == Verdict::Inconclusive);
    let verdict = if inconclusive {
        if any_fail {
            notes.push(
                "a metric crossed its bound, but the comparison is not trustworthy enough to fail the gate"
                    .into(),
            );
        }
        Verdict::Inconclusive
    } else if any_fail {
        Verdict::Fail
    } else if any_unsure {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    Comparison {
        verdict,
        metrics,
        notes,
        threshold_pct: gate.threshold_pct,
        baseline_source: None,
        current_source: current.source.clone(),
        model: Some(gate.model.to_string()),
        history_runs: Some(used.len()),
    }
}
