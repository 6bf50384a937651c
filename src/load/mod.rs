//! The load generator and the baseline gate (DESIGN.md section 7): `atlas load`,
//! `atlas baseline compare|update`, and the library calls the preview and verify flows use.
//!
//! - [`run`] loads a target and returns a [`Summary`] (open model by default, latency from the
//!   scheduled send time; see [`generator`]).
//! - [`compare`] holds the gate's rules and returns a [`Comparison`] as data (see [`gate`]).
//! - [`read_summary`] reads Atlas, seed, k6 `--summary-export` and k6 `handleSummary` JSON.
//! - [`paired`] measures a baseline URL and a candidate URL alternately in the same job.

pub mod alerts;
pub mod dashboard;
pub mod gate;
pub mod generator;
pub mod history;
pub mod models;
pub mod proxy;
pub mod stats;
pub mod store;
pub mod summary;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

pub use crate::config::{GateSettings, LoadSettings, Model, RequestSpec, ThresholdModel};
pub use gate::{Comparison, MetricComparison, Verdict, compare};
pub use generator::{Progress, run, run_with};
pub use history::{EndpointGate, History, HistoryFile, compare_history, read_history};
pub use summary::{Summary, parse_summary, read_summary};

/// `atlas load` flags. They override `[load]` in atlas.toml.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoadArgs {
    /// The URL to load; request paths are relative to it.
    #[arg(long)]
    pub target: Option<String>,
    /// Requests per second (open model, the default).
    #[arg(long, conflicts_with = "vus")]
    pub rate: Option<f64>,
    /// Virtual users (closed model: each sends as soon as its previous response arrived).
    #[arg(long)]
    pub vus: Option<usize>,
    /// Measured duration, e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up excluded from the results, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Keep-alive connections: the cap on requests in flight.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Per-request timeout, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Repeat the test N times and report the median across runs.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Live paired mode: also load this URL, alternating with the target, and compare.
    #[arg(long)]
    pub baseline_target: Option<String>,
    /// Compare the result with this baseline file and gate on it.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Regression threshold in percent for the gate (default: [baseline] threshold_pct, 20).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Write the summary JSON here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// GET these paths (repeatable) instead of the configured scenario.
    #[arg(long = "path")]
    pub paths: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 500ms, 30s or 5m ({e})"))
}

/// `atlas baseline ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BaselineCommand {
    /// Compare a summary with a baseline (Atlas, k6 --summary-export or k6 handleSummary JSON).
    /// Exit 1 when the gate fails; inconclusive exits 0 and says why.
    Compare {
        /// BASELINE CURRENT; with --history, CURRENT (several files: their median is the
        /// candidate, as with `atlas load --runs N`).
        #[arg(required = true, value_name = "FILES")]
        files: Vec<PathBuf>,
        /// Compare with a history instead of one baseline: a directory of summaries or a
        /// history file.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Threshold model over the history: percentage, t_test or iqr (default: [baseline]
        /// model, t_test).
        #[arg(long)]
        model: Option<ThresholdModel>,
        /// The last N comparable history runs to use (default: [baseline] history_runs, 20).
        #[arg(long)]
        history_runs: Option<usize>,
        /// A PR's merge base: compare with the history's runs up to this commit.
        #[arg(long, requires = "history")]
        merge_base: Option<String>,
        /// Regression threshold in percent (default: [baseline] threshold_pct, 20).
        #[arg(long)]
        threshold: Option<f64>,
        /// Write the comparison JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the comparison as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Record a summary in a history (a directory of summaries or a history file), keyed by
    /// its commit; a history file keeps at most [baseline] history_max entries.
    Record {
        /// The history (default: [baseline] history).
        #[arg(long)]
        history: Option<PathBuf>,
        #[arg(long)]
        from: PathBuf,
        /// The commit it was measured at (default: the summary's, else $GITHUB_SHA).
        #[arg(long)]
        commit: Option<String>,
    },
    /// Write the trend dashboard of a history: one self-contained HTML file (inline SVG, no
    /// external requests).
    Dashboard {
        /// The history (default: [baseline] history).
        #[arg(long)]
        history: Option<PathBuf>,
        /// The run under review, drawn as its own point.
        #[arg(long)]
        current: Option<PathBuf>,
        /// A release commit to mark (repeatable).
        #[arg(long = "release")]
        releases: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "Atlas load history")]
        title: String,
    },
    /// Write a baseline from a summary, recording its settings and where and when it was
    /// measured.
    Update {
        #[arg(long)]
        from: PathBuf,
        /// Default: [baseline] path, baseline.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Applies `atlas load` flags over `[load]`.
pub fn settings_with_flags(base: &LoadSettings, args: &LoadArgs) -> LoadSettings {
    let mut s = base.clone();
    if let Some(r) = args.rate {
        s.model = Model::Open;
        s.rate = r;
    }
    if let Some(v) = args.vus {
        s.model = Model::Closed;
        s.vus = v;
    }
    if let Some(d) = args.duration {
        s.duration = d;
    }
    if let Some(w) = args.warmup {
        s.warmup = w;
    }
    if let Some(c) = args.connections {
        s.connections = c;
    }
    if let Some(t) = args.timeout {
        s.timeout = t;
    }
    if let Some(n) = args.runs {
        s.runs = n;
    }
    if !args.paths.is_empty() {
        s.requests = args
            .paths
            .iter()
            .map(|p| RequestSpec {
                path: p.clone(),
                ..RequestSpec::default()
            })
            .collect();
    }
    s
}

/// Runs the test `settings.runs` times (at least once) and returns the median summary.
pub async fn run_repeated(settings: &LoadSettings, base_url: &str) -> anyhow::Result<Summary> {
    let n = settings.runs.max(1);
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        if n > 1 {
            eprintln!("load: run {}/{n} against {base_url}", i + 1);
        }
        all.push(run(settings, base_url).await?);
    }
    Summary::median_of(&all).context("no load run completed")
}

/// The result of a live paired run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Paired {
    pub baseline: Summary,
    pub current: Summary,
    pub comparison: Comparison,
}

/// Live paired mode: loads `baseline_url` and `candidate_url` alternately, `settings.runs`
/// times each (baseline first, then candidate, and so on), so runner noise hits both sides
/// alike; then compares the medians. With `gate.rank_test_runs` or more runs per side, a
/// latency regression must also pass a Mann-Whitney test.
pub async fn paired(
    settings: &LoadSettings,
    candidate_url: &str,
    baseline_url: &str,
    gate: &GateSettings,
) -> anyhow::Result<Paired> {
    let n = settings.runs.max(1);
    let (mut base, mut cand) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        eprintln!("load: paired run {}/{n}: baseline {baseline_url}", i + 1);
        base.push(run(settings, baseline_url).await?);
        eprintln!("load: paired run {}/{n}: candidate {candidate_url}", i + 1);
        cand.push(run(settings, candidate_url).await?);
    }
    let baseline = Summary::median_of(&base).context("no baseline run completed")?;
    let current = Summary::median_of(&cand).context("no candidate run completed")?;
    let comparison = compare(&baseline, &current, gate);
    Ok(Paired {
        baseline,
        current,
        comparison,
    })
}

/// A short human summary for stderr.
pub fn summary_text(s: &Summary) -> String {
    let d = &s.metrics.http_req_duration;
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}ms")).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "requests {}  errors {:.2}%  avg {:.2}ms  min {}  med {}  p90 {}  p95 {:.2}ms  p99 {}  max {}\n",
        s.metrics.http_reqs.total,
        s.metrics.errors.rate * 100.0,
        d.avg,
        opt(d.min),
        opt(d.med),
        opt(d.p90),
        d.p95,
        opt(d.p99),
        opt(d.max)
    );
    if let Some(r) = &s.run {
        out.push_str(&format!(
            "model {}  achieved {:.1} req/s{}  late {}  dropped {}  in flight at end {}\n",
            r.model,
            r.achieved_rate,
            r.target_rate
                .map(|t| format!(" of {t:.1}"))
                .unwrap_or_default(),
            r.late,
            r.dropped,
            r.in_flight_at_end
        ));
        for (k, v) in &r.error_kinds {
            out.push_str(&format!("  error {k}: {v}\n"));
        }
    }
    if s.endpoints.len() > 1 {
        for e in &s.endpoints {
            out.push_str(&format!(
                "  {}: {} requests, {} errors, avg {:.2}ms, p95 {:.2}ms\n",
                e.name, e.count, e.errors, e.duration.avg, e.duration.p95
            ));
        }
    }
    if let Some(g) = &s.generator {
        out.push_str(&format!(
            "generator cpu {:.2}s ({:.1} us/request), peak rss {:.1} MB\n",
            g.cpu_user_s + g.cpu_system_s,
            g.cpu_per_request_us,
            g.max_rss_mb
        ));
    }
    out
}

/// A baseline from a summary: the same data, with where and when it was measured filled in
/// (from the summary, else now; the runner and commit from the given environment).
pub fn baseline_from(mut s: Summary, vars: &[(String, String)]) -> Summary {
    let var = |k: &str| {
        vars.iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if s.timestamp.is_empty() {
        s.timestamp = now.clone();
    }
    let mut src = s.source.take().unwrap_or_default();
    if src.format.is_empty() {
        src.format = "atlas".into();
    }
    src.measured_at = Some(src.measured_at.unwrap_or_else(|| s.timestamp.clone()));
    if src.host.is_none() {
        src.host = var("RUNNER_NAME").or_else(|| var("HOSTNAME"));
    }
    if src.commit.is_none() {
        src.commit = var("GITHUB_SHA");
    }
    s.source = Some(src);
    s
}
