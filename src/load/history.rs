//! A history of load summaries and the gate over it: a candidate is compared with the last N
//! comparable runs under a threshold model (see [`super::models`]), per metric and per
//! endpoint.
//!
//! A history is read from a directory of summaries (any format [`parse_summary`] reads) or a
//! history file (`{"version": 1, "entries": [{"commit": ..., "summary": {...}}]}`, what the
//! store writes, or a JSON array of summaries). Entries that do not parse, or were measured with
//! other settings (rate, duration, endpoints) or too few requests, are skipped with a note; the
//! verdict says how many runs it used, and too few is inconclusive.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gate::{
    Comparison, MetricComparison, Verdict, change_display, change_pct, ms, pct, same_shape,
    shape_text,
};
use super::models::{ModelParams, ThresholdModel, upper_bound};
use super::stats::median;
use super::summary::{Summary, parse_summary};
use crate::config::{GateSettings, RequestSpec};

/// One run of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Where it came from: the file name, or `N (commit abc1234)`: the position in a history file.
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

impl History {
    /// The entries up to and including the last one measured at `commit` (a PR's merge base
    /// with the default branch): the runs a PR is compared with. When the commit is not in the
    /// history (a force-pushed or pruned history), every entry is kept and a note says so.
    pub fn up_to(mut self, commit: &str) -> History {
        let matches = |c: &Option<String>| {
            c.as_deref().is_some_and(|c| {
                c == commit
                    || (commit.len() >= 7 && c.starts_with(commit))
                    || (c.len() >= 7 && commit.starts_with(c))
            })
        };
        match self.entries.iter().rposition(|e| matches(&e.commit)) {
            Some(i) => {
                let later = self.entries.len() - i - 1;
                self.entries.truncate(i + 1);
                if later > 0 {
                    self.notes.push(format!(
                        "{later} runs after the merge base {} left out",
                        short(commit)
                    ));
                }
            }
            None => self.notes.push(format!(
                "the merge base {} is not in the history: compared with its latest runs",
                short(commit)
            )),
        }
        self
    }
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
            Some(c) => format!("{} (commit {})", i + 1, short(c)),
            None => format!("{}", i + 1),
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
            Some(why) => notes.push(format!("skipped history entry {}: {why}", e.label)),
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

    // the three overall series differ only in what they read and how they are scaled.
    let overall = |name: &'static str,
                   label: &str,
                   log: bool,
                   unit: &'static str,
                   read: fn(&Summary) -> f64,
                   floor: f64| {
        gate_series(
            Series {
                name,
                label: label.into(),
                log,
                unit,
                history: used.iter().map(|s| read(s)).collect(),
                current: read(current),
                floor,
                params,
                endpoint: None,
                ceiling: None,
            },
            gate.min_history,
            m,
        )
    };
    let mut metrics = vec![
        overall(
            "p95",
            "P95 Latency",
            true,
            "ms",
            |s| s.metrics.http_req_duration.p95,
            gate.latency_floor_ms,
        ),
        overall(
            "avg",
            "Avg Latency",
            true,
            "ms",
            |s| s.metrics.http_req_duration.avg,
            gate.latency_floor_ms,
        ),
        overall(
            "error_rate",
            "Error Rate",
            false,
            "ratio",
            |s| s.metrics.errors.rate,
            gate.error_floor_pp / 100.0,
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
        metrics.push(super::gate::requests_row(b, c, enough, gate.min_requests));
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

    let verdict = super::gate::overall_verdict(
        &metrics,
        inconclusive,
        &mut notes,
        "a metric crossed its bound, but the comparison is not trustworthy enough to fail the gate",
    );
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

/// Records `summary` (measured at `commit`) in the history at `path`: a history file gets the
/// entry appended (the oldest folded away beyond `max_entries`), a directory a new file named
/// after the entry's position and commit. A missing path ending in `.json` becomes a file,
/// otherwise a directory.
pub fn record(
    path: &Path,
    summary: &Summary,
    commit: &str,
    max_entries: usize,
) -> anyhow::Result<PathBuf> {
    let value = serde_json::to_value(summary).context("cannot serialise the summary")?;
    let as_file =
        path.is_file() || (!path.exists() && path.extension().is_some_and(|x| x == "json"));
    if as_file {
        let mut file: HistoryFile = if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the history {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a history file", path.display()))?
        } else {
            HistoryFile::default()
        };
        file.append(
            StoredEntry {
                commit: commit.to_string(),
                recorded_at: Some(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                summary: value,
            },
            max_entries,
        );
        let text = serde_json::to_string_pretty(&file).context("cannot serialise the history")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the history {}", path.display()))?;
        Ok(path.to_path_buf())
    } else {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the history directory {}", path.display()))?;
        let n = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the history directory {}", path.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        // only [0-9a-zA-Z] of the commit reaches the file name: it is user input.
        let safe: String = commit
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let out = path.join(format!("{n:06}-{safe}.json"));
        let mut s = summary.clone();
        let src = s.source.get_or_insert_with(Default::default);
        if src.format.is_empty() {
            src.format = "atlas".into();
        }
        src.commit = Some(commit.to_string());
        let text = serde_json::to_string_pretty(&s).context("cannot serialise the summary")?;
        std::fs::write(&out, text + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
        Ok(out)
    }
}

/// The gate for a fresh summary: against the configured history when there is one, else the
/// fixed baseline file, else none (measured, not gated).
pub fn gate_summary(
    summary: &Summary,
    gate: &GateSettings,
    requests: &[RequestSpec],
) -> anyhow::Result<Option<Comparison>> {
    if let Some(h) = &gate.history
        && h.exists()
    {
        let history = read_history(h)?;
        return Ok(Some(compare_history(
            &history,
            summary,
            gate,
            &EndpointGate::from_specs(requests),
        )));
    }
    if gate.path.is_file() {
        let baseline = super::summary::read_summary(&gate.path)?;
        return Ok(Some(super::gate::compare(&baseline, summary, gate)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::summary::{EndpointSummary, Shape, Trend};

    fn shape() -> Shape {
        Shape {
            model: "open".into(),
            rate: Some(50.0),
            vus: None,
            duration_s: 60.0,
            connections: 50,
            requests: vec!["GET /menu x1".into(), "GET /orders x1".into()],
        }
    }

    /// A run with p95 `p95`, avg p95/1.4, errors `err`, and two endpoints.
    fn run(p95: f64, err: f64, menu_p95: f64) -> Summary {
        let mut s = Summary::default();
        s.metrics.http_req_duration = Trend {
            p95,
            avg: p95 / 1.4,
            ..Trend::default()
        };
        s.metrics.http_reqs.total = 3000;
        s.metrics.errors.rate = err;
        s.settings = Some(shape());
        for (name, p) in [("GET /menu", menu_p95), ("GET /orders", p95)] {
            s.endpoints.push(EndpointSummary {
                name: name.into(),
                method: "GET".into(),
                path: name[4..].into(),
                count: 1500,
                rate: 25.0,
                errors: (err * 1500.0).round() as u64,
                duration: Trend {
                    p95: p,
                    avg: p / 1.4,
                    ..Trend::default()
                },
                ..Default::default()
            });
        }
        s
    }

    /// 20 runs with a deterministic ~5% spread around 380 ms.
    fn history(n: usize) -> History {
        let entries = (0..n)
            .map(|i| {
                let f = 1.0 + 0.05 * ((i as f64 * 2.399).sin());
                HistoryEntry {
                    label: format!("run-{i:02}.json"),
                    commit: None,
                    summary: run(380.0 * f, 0.0093, 200.0 * f),
                }
            })
            .collect();
        History {
            entries,
            notes: vec![],
        }
    }

    fn row<'a>(c: &'a Comparison, label: &str) -> &'a MetricComparison {
        c.metrics.iter().find(|m| m.label == label).unwrap()
    }

    #[test]
    fn same_numbers_pass_and_say_how_many_runs() {
        let c = compare_history(
            &history(20),
            &run(380.0, 0.0093, 200.0),
            &GateSettings::default(),
            &[],
        );
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.to_text());
        assert_eq!(c.history_runs, Some(20));
        assert_eq!(c.model.as_deref(), Some("t_test"));
        assert!(c.notes.iter().any(|n| n.contains("compared with 20 runs")));
        let p95 = row(&c, "P95 Latency");
        assert!(
            p95.note.contains("within the 99.5% upper bound"),
            "{}",
            p95.note
        );
        assert!(p95.bound.unwrap() > 380.0);
    }

    #[test]
    fn a_regression_fails_naming_the_model_and_bound() {
        for (model, words) in [
            (ThresholdModel::TTest, "above the 99.5% upper bound"),
            (ThresholdModel::Iqr, "above the Q3 + 1.5 IQR"),
            (ThresholdModel::Percentage, "above the median + 20%"),
        ] {
            let gate = GateSettings {
                model,
                ..GateSettings::default()
            };
            let c = compare_history(&history(20), &run(520.0, 0.0093, 270.0), &gate, &[]);
            assert_eq!(c.verdict, Verdict::Fail, "{model}: {}", c.to_text());
            let f = c.failures();
            assert!(
                f.contains("p95 520 ms ") && f.contains(words) && f.contains("of 20 runs"),
                "{f}"
            );
            assert_eq!(c.model.as_deref(), Some(model.as_str()));
        }
    }

    #[test]
    fn too_little_history_is_inconclusive_not_a_pass_or_an_alarm() {
        for n in [0, 1, 4] {
            let c = compare_history(
                &history(n),
                &run(900.0, 0.2, 500.0),
                &GateSettings::default(),
                &[],
            );
            assert_eq!(c.verdict, Verdict::Inconclusive, "{n}: {}", c.to_text());
            assert!(
                c.notes.iter().any(|x| x.contains("not enough history")),
                "{:?}",
                c.notes
            );
            assert_eq!(c.history_runs, Some(n));
        }
    }

    #[test]
    fn bad_entries_are_skipped_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        for (i, e) in history(8).entries.iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("run-{i:02}.json")),
                serde_json::to_string(&e.summary).unwrap(),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("run-50.json"), "{not json").unwrap();
        let mut other = run(100.0, 0.0, 50.0);
        other.settings.as_mut().unwrap().rate = Some(200.0);
        std::fs::write(
            dir.path().join("run-51.json"),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        let mut few = run(100.0, 0.0, 50.0);
        few.metrics.http_reqs.total = 10;
        std::fs::write(
            dir.path().join("run-52.json"),
            serde_json::to_string(&few).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let h = read_history(dir.path()).unwrap();
        assert_eq!(h.entries.len(), 10);
        let c = compare_history(
            &h,
            &run(380.0, 0.0093, 200.0),
            &GateSettings::default(),
            &[],
        );
        assert_eq!(c.history_runs, Some(8));
        let notes = c.notes.join("\n");
        assert!(
            notes.contains("skipped history entry run-50.json: it does not parse"),
            "{notes}"
        );
        assert!(
            notes.contains("skipped history entry run-51.json: different load settings"),
            "{notes}"
        );
        assert!(
            notes.contains("skipped history entry run-52.json: it has 10 requests"),
            "{notes}"
        );
        assert!(notes.contains("compared with 8 runs"), "{notes}");
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.to_text());
    }

    #[test]
    fn the_last_n_runs_are_used() {
        let mut h = history(30);
        // the 10 oldest were much faster: outside the window they cannot make today look slow.
        for e in h.entries.iter_mut().take(10) {
            e.summary = run(200.0, 0.0093, 100.0);
        }
        let c = compare_history(
            &h,
            &run(385.0, 0.0093, 201.0),
            &GateSettings::default(),
            &[],
        );
        assert_eq!(c.history_runs, Some(20));
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.to_text());
    }

    #[test]
    fn each_endpoint_is_gated_against_its_own_history() {
        // /menu doubles while the global p95 (driven by /orders) stays put.
        let c = compare_history(
            &history(20),
            &run(380.0, 0.0093, 400.0),
            &GateSettings::default(),
            &[],
        );
        assert_eq!(c.verdict, Verdict::Fail, "{}", c.to_text());
        assert_eq!(row(&c, "P95 Latency").verdict, Verdict::Pass);
        assert_eq!(row(&c, "GET /orders p95").verdict, Verdict::Pass);
        let menu = row(&c, "GET /menu p95");
        assert_eq!(menu.verdict, Verdict::Fail);
        assert_eq!(menu.endpoint.as_deref(), Some("GET /menu"));
        assert!(
            c.failures()
                .contains("GET /menu p95 400 ms above the 99.5% upper bound"),
            "{}",
            c.failures()
        );

        // a configured ceiling and a per-endpoint model
        let gates = vec![
            EndpointGate {
                name: "GET /menu".into(),
                p95_ms: Some(150.0),
                threshold_pct: None,
                model: None,
            },
            EndpointGate {
                name: "GET /orders".into(),
                p95_ms: None,
                threshold_pct: Some(50.0),
                model: Some(ThresholdModel::Percentage),
            },
        ];
        let c = compare_history(
            &history(20),
            &run(500.0, 0.0093, 200.0),
            &GateSettings::default(),
            &gates,
        );
        let menu = row(&c, "GET /menu p95");
        assert_eq!(menu.verdict, Verdict::Fail, "{}", c.to_text());
        assert!(
            menu.note.contains("above the configured 150 ms"),
            "{}",
            menu.note
        );
        let orders = row(&c, "GET /orders p95");
        // +32% is within its own 50% margin, though the global t_test row fails
        assert_eq!(orders.verdict, Verdict::Pass, "{}", orders.note);
        assert!(orders.note.contains("median + 50%"), "{}", orders.note);
        assert_eq!(row(&c, "P95 Latency").verdict, Verdict::Fail);
    }

    #[test]
    fn error_rate_regressions_need_the_floor() {
        let c = compare_history(
            &history(20),
            &run(380.0, 0.012, 200.0),
            &GateSettings::default(),
            &[],
        );
        assert_eq!(
            row(&c, "Error Rate").verdict,
            Verdict::Pass,
            "{}",
            c.to_text()
        );
        let c = compare_history(
            &history(20),
            &run(380.0, 0.05, 200.0),
            &GateSettings::default(),
            &[],
        );
        assert_eq!(
            row(&c, "Error Rate").verdict,
            Verdict::Fail,
            "{}",
            c.to_text()
        );
    }

    #[test]
    fn history_file_appends_folds_and_stops_at_the_merge_base() {
        let mut f = HistoryFile::default();
        for i in 0..7 {
            f.append(
                StoredEntry {
                    commit: format!("{i}{}", "a".repeat(39)),
                    recorded_at: None,
                    summary: serde_json::to_value(run(380.0 + i as f64, 0.0, 200.0)).unwrap(),
                },
                5,
            );
        }
        assert_eq!(f.entries.len(), 5);
        assert!(f.entries[0].commit.starts_with('2'));
        assert_eq!(f.up_to(&format!("4{}", "a".repeat(39))).len(), 3);
        assert_eq!(f.up_to("4aaaaaa").len(), 3);
        assert_eq!(f.up_to("unknown").len(), 5);
        // the same commit replaces its entry
        f.append(
            StoredEntry {
                commit: f.entries[4].commit.clone(),
                recorded_at: None,
                summary: serde_json::json!({}),
            },
            5,
        );
        assert_eq!(f.entries.len(), 5);
        // round trip through the file format, with one broken entry skipped
        let text = serde_json::to_string(&f).unwrap();
        let h = parse_history(&text).unwrap();
        assert_eq!(h.entries.len(), 4);
        assert_eq!(h.notes.len(), 1);
        assert!(
            h.notes[0].contains("commit 6aaaaaa") && h.notes[0].contains("does not parse"),
            "{:?}",
            h.notes
        );
        assert!(parse_history("{\"x\": 1}").is_err());
    }

    #[test]
    fn a_pr_is_compared_with_the_runs_up_to_its_merge_base() {
        let mut h = history(8);
        for (i, e) in h.entries.iter_mut().enumerate() {
            e.commit = Some(format!("{i}{}", "b".repeat(39)));
        }
        let cut = h.clone().up_to("5bbbbbbb");
        assert_eq!(cut.entries.len(), 6);
        assert!(
            cut.notes[0].contains("2 runs after the merge base 5bbbbbb left out"),
            "{:?}",
            cut.notes
        );
        let all = h.up_to("ffffffff");
        assert_eq!(all.entries.len(), 8);
        assert!(
            all.notes[0].contains("not in the history"),
            "{:?}",
            all.notes
        );
    }

    #[test]
    fn record_then_gate_from_a_directory_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        for (path, is_file) in [
            (dir.path().join("runs"), false),
            (dir.path().join("history.json"), true),
        ] {
            for (i, e) in history(6).entries.iter().enumerate() {
                record(&path, &e.summary, &format!("c{i}; rm -rf /"), 5).unwrap();
            }
            assert_eq!(path.is_file(), is_file);
            let h = read_history(&path).unwrap();
            // the file folds the oldest away; the directory keeps every run
            assert_eq!(
                h.entries.len(),
                if is_file { 5 } else { 6 },
                "{:?}",
                h.notes
            );
            assert_eq!(
                h.entries.last().unwrap().commit.as_deref(),
                Some("c5; rm -rf /")
            );
            if !is_file {
                let names: Vec<String> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                assert!(
                    names.contains(&"000005-c5rmrf.json".to_string()),
                    "{names:?}"
                );
            }
            let gate = GateSettings {
                history: Some(path.clone()),
                ..GateSettings::default()
            };
            let c = gate_summary(&run(380.0, 0.0093, 200.0), &gate, &[])
                .unwrap()
                .unwrap();
            assert_eq!(c.history_runs, Some(if is_file { 5 } else { 6 }));
            assert_eq!(c.verdict, Verdict::Pass, "{}", c.to_text());
        }
        // no history and no baseline file: not gated
        let gate = GateSettings {
            history: Some(dir.path().join("absent")),
            path: dir.path().join("absent.json"),
            ..GateSettings::default()
        };
        assert!(
            gate_summary(&run(1.0, 0.0, 1.0), &gate, &[])
                .unwrap()
                .is_none()
        );
    }
}
