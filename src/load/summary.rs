//! The load summary: the seed's JSON shape (`timestamp`, `metrics.http_req_duration.p95/avg`,
//! `metrics.http_reqs.total`, `metrics.errors.rate`) with Atlas's extra fields alongside, and
//! readers for the two k6 formats (`--summary-export` and `handleSummary`'s data object), so a
//! baseline may come from any of them.
//!
//! All durations in a summary are milliseconds.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::stats::median;

/// A latency distribution in milliseconds. `p95` and `avg` are always present (the seed's
/// fields); the rest are present when the source had them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub avg: f64,
    pub p95: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

/// `metrics.http_reqs`: requests measured (after warm-up) and their rate per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// `metrics.errors`: the failed fraction (0..1) and, when known, the failed count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Latency. Under the open model, from the *scheduled* send time (coordinated-omission
    /// free); under the closed model, from the actual send.
    pub http_req_duration: Trend,
    pub http_reqs: Requests,
    pub errors: Errors,
    /// Service time: from the actual send to the last byte of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_time: Option<Trend>,
    /// How late requests left compared with their schedule: the generator's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_delay: Option<Trend>,
}

/// Per-endpoint statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummary {
    pub name: String,
    pub method: String,
    pub path: String,
    pub count: u64,
    pub rate: f64,
    pub errors: u64,
    pub duration: Trend,
    /// The slowest requests of the run, slowest first (a few), by trace id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slowest: Vec<TracedRequest>,
}

/// One request the evidence names by the trace id it was sent with (its `traceparent`), so a
/// reviewer can open the app's own trace of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TracedRequest {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    pub latency_ms: f64,
    /// The endpoint's name (failed requests, which are listed for the whole run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Why it failed (`status 500`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How the run went, beyond the latencies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `open` (constant arrival rate) or `closed` (virtual users).
    pub model: String,
    /// Requests per second asked for (open model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// Requests completed per second of the measured window.
    pub achieved_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    /// Requests sent later than `late_after` behind schedule (the in-flight cap was full).
    pub late: u64,
    /// Requests scheduled within the test that were never sent.
    pub dropped: u64,
    /// Requests still in flight when the grace period after the deadline ran out: reported
    /// apart from failures.
    pub in_flight_at_end: u64,
    /// Requests during warm-up (excluded from every statistic).
    pub warmup_requests: u64,
    /// Errors by kind (`status 500`, `timeout`, `connect`, ...), at most a few dozen kinds.
    #[serde(default)]
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// Failed requests by trace id: the first few of the run (`errors.count` has them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<TracedRequest>,
}

/// What the generator itself cost (getrusage of the process over the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorInfo {
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub cpu_per_request_us: f64,
    pub max_rss_mb: f64,
}

/// The settings a summary was measured with; a comparison between different shapes is
/// inconclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vus: Option<usize>,
    pub duration_s: f64,
    pub connections: usize,
    /// `METHOD path xWEIGHT` per request.
    pub requests: Vec<String>,
}

/// Where and when a summary was measured, and in which format it was read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `atlas`, `seed`, `k6-summary-export` or `k6-handle-summary`.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<String>,
    /// The runner or host (e.g. `RUNNER_NAME`), and the commit when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// One run's headline numbers, kept when a summary is the median of several runs (the rank
/// test works on these).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPoint {
    pub p95: f64,
    pub avg: f64,
    pub error_rate: f64,
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved_rate: Option<f64>,
}

/// A load-test summary (or a baseline: the same shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub timestamp: String,
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Shape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Per-run points when this summary is the median of several runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunPoint>,
}

impl Summary {
    /// Only the seed's fields, exactly in its shape.
    pub fn seed_json(&self) -> Value {
        serde_json::json!({
            "timestamp": self.timestamp,
            "metrics": {
                "http_req_duration": {
                    "p95": round2(self.metrics.http_req_duration.p95),
                    "avg": round2(self.metrics.http_req_duration.avg),
                },
                "http_reqs": { "total": self.metrics.http_reqs.total },
                "errors": { "rate": (self.metrics.errors.rate * 1e6).round() / 1e6 },
            }
        })
    }

    /// The failed count: recorded, or derived from the rate.
    pub fn error_count(&self) -> u64 {
        self.metrics.errors.count.unwrap_or_else(|| {
            (self.metrics.errors.rate * self.metrics.http_reqs.total as f64).round() as u64
        })
    }

    /// This summary's headline numbers.
    pub fn point(&self) -> RunPoint {
        RunPoint {
            p95: self.metrics.http_req_duration.p95,
            avg: self.metrics.http_req_duration.avg,
            error_rate: self.metrics.errors.rate,
            total: self.metrics.http_reqs.total,
            achieved_rate: self.run.as_ref().map(|r| r.achieved_rate),
        }
    }

    /// The per-run points: the recorded ones, or this summary as a single run.
    pub fn points(&self) -> Vec<RunPoint> {
        if self.runs.is_empty() {
            vec![self.point()]
        } else {
            self.runs.clone()
        }
    }

    /// Combines several runs: headline metrics are the median across runs (so one noisy run
    /// cannot move the gate), counts are summed, and each run's point is kept. The other
    /// details (endpoints, distribution) come from the median run by p95.
    pub fn median_of(runs: &[Summary]) -> Option<Summary> {
        let first = runs.first()?;
        if runs.len() == 1 {
            return Some(first.clone());
        }
        let points: Vec<RunPoint> = runs.iter().map(Summary::point).collect();
        let pick = |f: fn(&RunPoint) -> f64| {
            median(&points.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        let p95 = pick(|p| p.p95);
        // the run whose p95 is nearest the median carries the details.
        let mut out = runs
            .iter()
            .min_by(|a, b| {
                let da = (a.metrics.http_req_duration.p95 - p95).abs();
                let db = (b.metrics.http_req_duration.p95 - p95).abs();
                da.total_cmp(&db)
            })
            .unwrap_or(first)
            .clone();
        out.metrics.http_req_duration.p95 = p95;
        out.metrics.http_req_duration.avg = pick(|p| p.avg);
        out.metrics.errors.rate = pick(|p| p.error_rate);
        out.metrics.http_reqs.total = points.iter().map(|p| p.total).sum();
        out.metrics.errors.count = Some(runs.iter().map(Summary::error_count).sum());
        if let Some(run) = out.run.as_mut() {
            run.achieved_rate = pick(|p| p.achieved_rate.unwrap_or(0.0));
        }
        out.runs = points;
        Some(out)
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Reads a summary or baseline in any supported format: Atlas's (or the seed's subset of it),
/// k6's `--summary-export`, or k6's `handleSummary` data.
pub fn read_summary(path: &Path) -> anyhow::Result<Summary> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the load summary {}", path.display()))?;
    parse_summary(&text).with_context(|| {
        format!(
            "{} is not an atlas, k6 --summary-export or k6 handleSummary json",
            path.display()
        )
    })
}

/// [`read_summary`] on text.
pub fn parse_summary(text: &str) -> anyhow::Result<Summary> {
    let v: Value = serde_json::from_str(text).context("invalid json")?;
    let metrics = v
        .get("metrics")
        .and_then(Value::as_object)
        .context("no `metrics` object")?;
    let duration = metrics
        .get("http_req_duration")
        .context("no `metrics.http_req_duration`")?;
    if duration.get("values").is_some() {
        return from_k6(&v, K6::HandleSummary);
    }
    if duration.get("p(95)").is_some() {
        return from_k6(&v, K6::SummaryExport);
    }
    let mut s: Summary = serde_json::from_value(v).context("unexpected summary fields")?;
    if s.source.is_none() {
        // no provenance: the seed's hand-written or external format.
        s.source = Some(Source {
            format: "seed".into(),
            ..Source::default()
        });
    }
    Ok(s)
}

#[derive(Clone, Copy, PartialEq)]
enum K6 {
    SummaryExport,
    HandleSummary,
}

fn from_k6(v: &Value, kind: K6) -> anyhow::Result<Summary> {
    // summary-export puts a metric's numbers at the top of the metric object;
    // handleSummary nests them in `values`.
    let values = |name: &str| -> Option<&Value> {
        let m = v.get("metrics")?.get(name)?;
        match kind {
            K6::SummaryExport => Some(m),
            K6::HandleSummary => m.get("values"),
        }
    };
    let num = |m: Option<&Value>, key: &str| m.and_then(|m| m.get(key)).and_then(Value::as_f64);
    let d = values("http_req_duration");
    let trend = Trend {
        avg: num(d, "avg").context("no `avg` in http_req_duration")?,
        p95: num(d, "p(95)").context("no `p(95)` in http_req_duration")?,
        min: num(d, "min"),
        med: num(d, "med"),
        max: num(d, "max"),
        p90: num(d, "p(90)"),
        p99: num(d, "p(99)"),
    };
    let reqs = values("http_reqs");
    let total = num(reqs, "count").context("no `count` in http_reqs")? as u64;
    // `http_req_failed` is a rate metric whose "passes" are failed requests (it counts
    // `true` = failed). summary-export calls the rate `value`, handleSummary `rate`.
    let (rate, count) = match values("http_req_failed").or_else(|| values("errors")) {
        Some(f) => {
            let rate = match kind {
                K6::SummaryExport => num(Some(f), "value"),
                K6::HandleSummary => num(Some(f), "rate"),
            };
            let passes = num(Some(f), "passes").map(|p| p as u64);
            let fails = num(Some(f), "fails").map(|p| p as u64);
            let rate = rate
                .or_else(|| match (passes, fails) {
                    (Some(p), Some(f)) if p + f > 0 => Some(p as f64 / (p + f) as f64),
                    _ => None,
                })
                .unwrap_or(0.0);
            (rate, passes)
        }
        None => (0.0, None),
    };
    let test_ms = v
        .get("state")
        .and_then(|s| s.get("testRunDurationMs"))
        .and_then(Value::as_f64);
    let format = match kind {
        K6::SummaryExport => "k6-summary-export",
        K6::HandleSummary => "k6-handle-summary",
    };
    Ok(Summary {
        timestamp: String::new(),
        metrics: Metrics {
            http_req_duration: trend,
            http_reqs: Requests {
                total,
                rate: num(reqs, "rate"),
            },
            errors: Errors { rate, count },
            service_time: None,
            scheduling_delay: None,
        },
        run: test_ms.map(|ms| RunInfo {
            model: "k6".into(),
            achieved_rate: num(reqs, "rate").unwrap_or(0.0),
            duration_s: ms / 1000.0,
            ..RunInfo::default()
        }),
        source: Some(Source {
            format: format.into(),
            ..Source::default()
        }),
        ..Summary::default()
    })
}
