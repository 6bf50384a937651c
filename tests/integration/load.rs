//! The load generator against real servers on 127.0.0.1 (errors, caps, deadlines; its accuracy
//! measurements live in `tests/timing/`, a binary of their own), the gate's rules as a table, the
//! k6 formats, and `atlas load` / `atlas baseline` end to end.

// Each test has its own runtime on its own thread: the serialising std mutex held across awaits
// cannot deadlock a runtime.
#![allow(clippy::await_holding_lock)]

use crate::common::load_servers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use atlas::load::summary::{RunInfo, RunPoint};
use atlas::load::{
    GateSettings, LoadSettings, RequestSpec, Summary, Verdict, compare, parse_summary,
};
use load_servers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified_per_endpoint_and_weights_hold() {
    let _g = serial();
    let server = status_server();
    let mut settings = open(200.0, 1000, 0, 10);
    settings.requests = load_servers::weighted(&[("/ok", 3), ("/fail", 1)]);
    let s = run(&settings, &server.url).await;
    assert_eq!(s.endpoints.len(), 2);
    let (ok, fail) = (&s.endpoints[0], &s.endpoints[1]);
    assert_eq!(ok.name, "GET /ok");
    assert_eq!(ok.errors, 0);
    assert_eq!(fail.errors, fail.count);
    assert!(
        (ok.count as i64 - 3 * fail.count as i64).abs() <= 3,
        "{ok:?} {fail:?}"
    );
    assert!(
        (s.metrics.errors.rate - 0.25).abs() < 0.01,
        "{:?}",
        s.metrics.errors
    );
    let kinds = &s.run.as_ref().unwrap().error_kinds;
    assert_eq!(kinds.get("status 500"), Some(&fail.count), "{kinds:?}");
    assert_eq!(kinds.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_sends_method_headers_body_and_checks_the_expected_status() {
    let _g = serial();
    let server = echo_server();
    let spec = RequestSpec {
        method: "post".into(),
        path: "/items".into(),
        headers: [("x-check".to_string(), "yes".to_string())].into(),
        body: Some("ping".into()),
        expect: Some(201),
        ..RequestSpec::default()
    };
    let mut settings = open(100.0, 500, 0, 5);
    settings.requests = vec![spec.clone()];
    let s = run(&settings, &server.url).await;
    assert!(s.metrics.http_reqs.total >= 45);
    assert_eq!(s.metrics.errors.count, Some(0), "{:?}", s.run);

    settings.requests = vec![RequestSpec {
        expect: Some(200),
        ..spec
    }];
    let s = run(&settings, &server.url).await;
    let kinds = &s.run.as_ref().unwrap().error_kinds;
    assert_eq!(s.metrics.errors.rate, 1.0);
    assert!(kinds.contains_key("status 201 (expected 200)"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_idle_connections_costs_no_errors_for_idempotent_requests() {
    let _g = serial();
    // 10 connections at 20 req/s: each connection idles about 500 ms between requests, and the
    // server closes it after 50 ms, so nearly every request meets a connection the server has
    // already closed (the keep-alive race). GET is sent again on a new connection.
    let server = idle_closing_server(Duration::from_millis(50));
    let s = run(&open(20.0, 1500, 0, 10), &server.url).await;
    assert!(s.metrics.http_reqs.total >= 28, "{s:#?}");
    assert_eq!(s.metrics.errors.count, Some(0), "{:?}", s.run);
    assert!(
        server.requests.load(std::sync::atomic::Ordering::Relaxed) >= 28,
        "every request reached the server"
    );

    // POST is not idempotent: the race is an error, never a silent resend.
    let mut settings = open(20.0, 1500, 0, 10);
    settings.requests = vec![RequestSpec {
        method: "POST".into(),
        body: Some("x".into()),
        ..RequestSpec::default()
    }];
    let s = run(&settings, &server.url).await;
    let kinds = &s.run.as_ref().unwrap().error_kinds;
    assert!(
        kinds.get("connection closed").copied().unwrap_or(0) >= 10,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_connect_errors() {
    let _g = serial();
    let url = closed_port_url();
    let s = run(&open(50.0, 500, 0, 5), &url).await;
    assert!(s.metrics.http_reqs.total >= 20);
    assert_eq!(s.metrics.errors.rate, 1.0);
    let kinds = &s.run.as_ref().unwrap().error_kinds;
    assert!(kinds.keys().all(|k| k.starts_with("connect")), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_at_the_deadline_are_not_failures() {
    let _g = serial();
    let server = delay_server(Duration::from_secs(3));
    let mut settings = open(20.0, 1000, 0, 50);
    settings.grace = Duration::from_millis(300);
    let s = run(&settings, &server.url).await;
    let run = s.run.as_ref().unwrap();
    assert!((18..=21).contains(&run.in_flight_at_end), "{run:?}");
    assert_eq!(s.metrics.errors.count, Some(0));
    assert_eq!(s.metrics.http_reqs.total, 0);
    assert!(run.error_kinds.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_makes_requests_late_or_dropped_and_the_gate_inconclusive() {
    let _g = serial();
    // One connection, 50 ms per request: at most 20 req/s of the 100 asked for.
    let server = delay_server(Duration::from_millis(50));
    let mut settings = open(100.0, 1000, 0, 1);
    settings.grace = Duration::from_millis(200);
    let s = run(&settings, &server.url).await;
    let run = s.run.as_ref().unwrap();
    assert!(run.late >= 15, "{run:?}");
    assert!(run.dropped >= 60, "{run:?}");
    assert!(run.achieved_rate < 30.0, "{run:?}");
    // latency from the schedule includes the queueing the cap caused.
    assert!(s.metrics.http_req_duration.max.unwrap() > 500.0);

    let mut baseline = s.clone();
    baseline.metrics.http_reqs.total = 10_000;
    baseline.run.as_mut().unwrap().achieved_rate = 100.0;
    let mut current = s.clone();
    current.metrics.http_reqs.total = 10_000;
    let c = compare(&baseline, &current, &GateSettings::default());
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("could not hold the rate")),
        "{c:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The gate as a table.

fn summary(p95: f64, avg: f64, error_rate: f64, total: u64) -> Summary {
    let mut s = parse_summary(
        r#"{"timestamp":"2025-12-10T12:00:00.000Z","metrics":{"http_req_duration":{"p95":1,"avg":1},"http_reqs":{"total":1},"errors":{"rate":0}}}"#,
    )
    .unwrap();
    s.metrics.http_req_duration.p95 = p95;
    s.metrics.http_req_duration.avg = avg;
    s.metrics.http_reqs.total = total;
    s.metrics.errors.rate = error_rate;
    s.metrics.errors.count = Some((error_rate * total as f64).round() as u64);
    s.settings = Some(LoadSettings::default().shape());
    s.run = Some(RunInfo {
        model: "open".into(),
        target_rate: Some(50.0),
        achieved_rate: 50.0,
        ..RunInfo::default()
    });
    s
}

fn verdict_of(c: &atlas::load::Comparison, name: &str) -> Verdict {
    c.metrics.iter().find(|m| m.name == name).unwrap().verdict
}

#[test]
fn gate_rules_table() {
    let g = GateSettings::default();
    let base = summary(200.0, 100.0, 0.001, 10_000);
    type Case = (
        &'static str,
        Summary,
        GateSettings,
        Verdict,
        &'static str,
        Verdict,
    );
    let mut rate_short = summary(200.0, 100.0, 0.001, 10_000);
    rate_short.run.as_mut().unwrap().achieved_rate = 49.0;
    let mut other_settings = summary(200.0, 100.0, 0.001, 10_000);
    other_settings.settings.as_mut().unwrap().rate = Some(100.0);
    let cases: Vec<Case> = vec![
        (
            "identical",
            base.clone(),
            g.clone(),
            Verdict::Pass,
            "p95",
            Verdict::Pass,
        ),
        (
            "p95 +30% and +60 ms",
            summary(260.0, 100.0, 0.001, 10_000),
            g.clone(),
            Verdict::Fail,
            "p95",
            Verdict::Fail,
        ),
        (
            "avg +25% and +25 ms",
            summary(200.0, 125.0, 0.001, 10_000),
            g.clone(),
            Verdict::Fail,
            "avg",
            Verdict::Fail,
        ),
        (
            "p95 +15%",
            summary(230.0, 100.0, 0.001, 10_000),
            g.clone(),
            Verdict::Pass,
            "p95",
            Verdict::Pass,
        ),
        (
            "p95 +15% with threshold 10",
            summary(230.0, 100.0, 0.001, 10_000),
            GateSettings {
                threshold_pct: 10.0,
                ..g.clone()
            },
            Verdict::Fail,
            "p95",
            Verdict::Fail,
        ),
        (
            "faster",
            summary(100.0, 50.0, 0.0, 10_000),
            g.clone(),
            Verdict::Pass,
            "avg",
            Verdict::Pass,
        ),
        (
            "error rate 0.1% -> 2% on 10k",
            summary(200.0, 100.0, 0.02, 10_000),
            g.clone(),
            Verdict::Fail,
            "error_rate",
            Verdict::Fail,
        ),
        (
            "error rate 0.1% -> 0.5%: under the 0.5 pp floor",
            summary(200.0, 100.0, 0.005, 10_000),
            g.clone(),
            Verdict::Pass,
            "error_rate",
            Verdict::Pass,
        ),
        (
            "too few requests",
            summary(900.0, 500.0, 0.5, 50),
            g.clone(),
            Verdict::Inconclusive,
            "requests",
            Verdict::Inconclusive,
        ),
        (
            "achieved rate under 99% of target",
            rate_short,
            g.clone(),
            Verdict::Inconclusive,
            "p95",
            Verdict::Pass,
        ),
        (
            "different settings",
            other_settings,
            g.clone(),
            Verdict::Inconclusive,
            "p95",
            Verdict::Pass,
        ),
    ];
    for (name, current, gate, verdict, metric, metric_verdict) in cases {
        let c = compare(&base, &current, &gate);
        assert_eq!(c.verdict, verdict, "{name}: {}", c.to_text());
        assert_eq!(
            verdict_of(&c, metric),
            metric_verdict,
            "{name}: {}",
            c.to_text()
        );
    }
}

#[test]
fn latency_floor_absorbs_small_absolute_changes() {
    // 5 ms -> 9 ms is +80%, but only 4 ms: under the 10 ms floor.
    let c = compare(
        &summary(5.0, 3.0, 0.0, 10_000),
        &summary(9.0, 6.0, 0.0, 10_000),
        &GateSettings::default(),
    );
    assert_eq!(c.verdict, Verdict::Pass, "{}", c.to_text());
    let p95 = &c.metrics[0];
    assert_eq!(p95.note, "under the 10 ms floor");
    assert_eq!(p95.change_display, "+80.0%");
    assert_eq!(p95.current_display, "9.00ms");
    assert_eq!(p95.floor, 10.0);
    // a lower floor makes it fail.
    let g = GateSettings {
        latency_floor_ms: 1.0,
        ..GateSettings::default()
    };
    let c = compare(
        &summary(5.0, 3.0, 0.0, 10_000),
        &summary(9.0, 6.0, 0.0, 10_000),
        &g,
    );
    assert_eq!(c.verdict, Verdict::Fail);
}

#[test]
fn error_rate_must_be_significant_for_the_sample() {
    // 0 -> 1% on 200 requests each (2 errors): over the floor, but p ~ 0.08.
    let c = compare(
        &summary(200.0, 100.0, 0.0, 200),
        &summary(200.0, 100.0, 0.01, 200),
        &GateSettings::default(),
    );
    let e = c.metrics.iter().find(|m| m.name == "error_rate").unwrap();
    assert_eq!(e.verdict, Verdict::Pass, "{}", c.to_text());
    assert!(e.note.contains("not significant"), "{}", e.note);
    assert!(e.p_value.unwrap() > 0.05);
    assert_eq!(e.change_display, "+1.00 pp");
    // the same rates on 20 000 requests are significant.
    let c = compare(
        &summary(200.0, 100.0, 0.0, 20_000),
        &summary(200.0, 100.0, 0.01, 20_000),
        &GateSettings::default(),
    );
    assert_eq!(c.verdict, Verdict::Fail);
}

fn with_runs(mut s: Summary, p95s: &[f64]) -> Summary {
    s.runs = p95s
        .iter()
        .map(|p| RunPoint {
            p95: *p,
            avg: s.metrics.http_req_duration.avg,
            error_rate: 0.0,
            total: 2500,
            achieved_rate: Some(50.0),
        })
        .collect();
    s
}

#[test]
fn with_four_runs_a_rank_test_must_confirm_a_latency_regression() {
    let g = GateSettings::default();
    let base = with_runs(
        summary(200.0, 100.0, 0.0, 10_000),
        &[190.0, 200.0, 205.0, 210.0],
    );
    // separated: every current run is slower than every baseline run.
    let cur = with_runs(
        summary(260.0, 100.0, 0.0, 10_000),
        &[250.0, 260.0, 262.0, 270.0],
    );
    let c = compare(&base, &cur, &g);
    assert_eq!(c.verdict, Verdict::Fail, "{}", c.to_text());
    assert!((c.metrics[0].p_value.unwrap() - 1.0 / 70.0).abs() < 1e-9);
    // same median shift, but one noisy run each way: the test does not confirm it.
    let cur = with_runs(
        summary(260.0, 100.0, 0.0, 10_000),
        &[180.0, 255.0, 265.0, 400.0],
    );
    let c = compare(&base, &cur, &g);
    assert_eq!(
        c.metrics[0].verdict,
        Verdict::Inconclusive,
        "{}",
        c.to_text()
    );
    assert_eq!(c.verdict, Verdict::Inconclusive);
}

#[test]
fn median_of_runs_gates_on_the_median() {
    let runs: Vec<Summary> = [100.0, 300.0, 110.0]
        .iter()
        .map(|p| summary(*p, *p / 2.0, 0.0, 1000))
        .collect();
    let m = Summary::median_of(&runs).unwrap();
    assert_eq!(m.metrics.http_req_duration.p95, 110.0);
    assert_eq!(m.metrics.http_req_duration.avg, 55.0);
    assert_eq!(m.metrics.http_reqs.total, 3000);
    assert_eq!(m.runs.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Formats.

const SEED: &str = r#"{
  "timestamp": "2025-12-10T12:00:00.000Z",
  "metrics": {
    "http_req_duration": { "p95": 387.57, "avg": 275.01 },
    "http_reqs": { "total": 750 },
    "errors": { "rate": 0.0093 }
  }
}"#;

// k6 --summary-export (legacy format): trend values at the top of the metric, rate metrics
// use `value`, `http_req_failed` counts failed requests in `passes`, and a threshold's boolean
// is true when it FAILED.
const K6_EXPORT: &str = r#"{
  "root_group": { "name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e", "groups": {}, "checks": {} },
  "metrics": {
    "checks": { "passes": 743, "fails": 7, "value": 0.9906666666666667 },
    "http_req_duration": {
      "avg": 275.01, "min": 120.4, "med": 260.2, "max": 1203.9,
      "p(90)": 350.12, "p(95)": 387.57,
      "thresholds": { "p(95)<500": false }
    },
    "http_reqs": { "count": 750, "rate": 24.98 },
    "http_req_failed": {
      "passes": 7, "fails": 743, "value": 0.009333333333333334,
      "thresholds": { "rate<0.001": true }
    },
    "vus": { "value": 10, "min": 10, "max": 10 }
  }
}"#;

// k6 handleSummary(data): every metric has type/contains/values; thresholds are {ok}.
const K6_HANDLE: &str = r#"{
  "root_group": { "name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e", "groups": [], "checks": [] },
  "options": { "summaryTrendStats": ["avg","min","med","max","p(90)","p(95)"], "summaryTimeUnit": "", "noColor": false },
  "state": { "isStdOutTTY": false, "isStdErrTTY": false, "testRunDurationMs": 30021.7 },
  "metrics": {
    "http_req_duration": {
      "type": "trend", "contains": "time",
      "values": { "avg": 275.01, "min": 120.4, "med": 260.2, "max": 1203.9, "p(90)": 350.12, "p(95)": 387.57 },
      "thresholds": { "p(95)<500": { "ok": true } }
    },
    "http_reqs": { "type": "counter", "contains": "default", "values": { "count": 750, "rate": 24.98 } },
    "http_req_failed": { "type": "rate", "contains": "default", "values": { "rate": 0.009333333333333334, "passes": 7, "fails": 743 } }
  }
}"#;

#[test]
fn reads_the_seed_and_both_k6_formats() {
    let seed = parse_summary(SEED).unwrap();
    let export = parse_summary(K6_EXPORT).unwrap();
    let handle = parse_summary(K6_HANDLE).unwrap();
    for (s, format) in [
        (&seed, "seed"),
        (&export, "k6-summary-export"),
        (&handle, "k6-handle-summary"),
    ] {
        assert_eq!(s.source.as_ref().unwrap().format, format);
        assert_eq!(s.metrics.http_req_duration.p95, 387.57);
        assert_eq!(s.metrics.http_req_duration.avg, 275.01);
        assert_eq!(s.metrics.http_reqs.total, 750);
        assert_eq!(s.error_count(), 7, "{format}");
    }
    // failures are the `passes` of http_req_failed, not its `fails`.
    assert_eq!(export.metrics.errors.count, Some(7));
    assert!((export.metrics.errors.rate - 0.00933).abs() < 1e-4);
    assert_eq!(handle.metrics.errors.count, Some(7));
    assert_eq!(export.metrics.http_req_duration.p90, Some(350.12));
    assert_eq!(handle.run.as_ref().unwrap().duration_s, 30.0217);
    // the seed round-trips to exactly its own shape.
    let v: serde_json::Value = serde_json::from_str(SEED).unwrap();
    assert_eq!(seed.seed_json(), v);
    // a k6 baseline compares with an Atlas summary (no recorded settings: a note, no block).
    let c = compare(
        &export,
        &summary(390.0, 280.0, 0.009, 10_000),
        &GateSettings::default(),
    );
    assert_eq!(c.verdict, Verdict::Pass, "{}", c.to_text());
    assert!(c.notes.iter().any(|n| n.contains("not compared")));
}

#[test]
fn unknown_formats_are_rejected_with_the_reason() {
    let e = parse_summary(r#"{"metrics":{"foo":{}}}"#).unwrap_err();
    assert!(format!("{e:#}").contains("http_req_duration"), "{e:#}");
    let e = parse_summary("not json").unwrap_err();
    assert!(format!("{e:#}").contains("invalid json"));
}

#[test]
fn load_settings_parse_from_atlas_toml() {
    let s: atlas::config::Settings = toml::from_str(
        r#"
[load]
rate = 20
duration = "5s"
warmup = "500ms"
connections = 8
[[load.requests]]
method = "POST"
path = "/api/items"
body = "{}"
headers = { content-type = "application/json" }
weight = 2
expect = 201
[baseline]
threshold_pct = 15
latency_floor_ms = 5
"#,
    )
    .unwrap();
    assert_eq!(s.load.rate, 20.0);
    assert_eq!(s.load.duration, Duration::from_secs(5));
    assert_eq!(s.load.warmup, Duration::from_millis(500));
    assert_eq!(s.load.requests[0].expect, Some(201));
    assert_eq!(s.baseline.threshold_pct, 15.0);
    assert_eq!(s.baseline.min_requests, 100);
    let e = toml::from_str::<atlas::config::Settings>("[load]\nrat = 3\n").unwrap_err();
    assert!(e.to_string().contains("rat"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The binary.

fn atlas(dir: &Path, args: &[&str]) -> std::process::Output {
    atlas_with_env(dir, args, &[])
}

/// `atlas` in `dir` with a clean environment plus `vars`.
fn atlas_with_env(
    dir: &Path,
    args: &[&str],
    vars: &[(&str, &std::ffi::OsStr)],
) -> std::process::Output {
    crate::common::bin::atlas()
        .args(args)
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn https_targets_are_verified_against_the_system_roots() {
    let _g = serial();
    let server = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.pem");
    let args = [
        "load",
        "--target",
        &server.url,
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--connections",
        "4",
        "--out",
        "summary.json",
    ];
    // trusted through SSL_CERT_FILE, as on a runner with a corporate CA installed.
    let out = atlas_with_env(dir.path(), &args, &[("SSL_CERT_FILE", ca.as_os_str())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s =
        parse_summary(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(s.metrics.errors.count, Some(0), "{:?}", s.run);
    assert!(s.metrics.http_reqs.total >= 95, "{s:#?}");
    assert!(
        s.source
            .as_ref()
            .unwrap()
            .target
            .as_deref()
            .unwrap()
            .starts_with("https://localhost:"),
        "{:?}",
        s.source
    );

    // the same server with only the system roots: every request fails on the certificate,
    // and the error says so.
    let empty = dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let out = atlas_with_env(dir.path(), &args, &[("SSL_CERT_FILE", empty.as_os_str())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a load test reports errors, it does not fail: {stderr}"
    );
    let s =
        parse_summary(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(s.metrics.errors.rate, 1.0, "{:?}", s.run);
    let kinds = &s.run.as_ref().unwrap().error_kinds;
    assert!(
        !kinds.is_empty()
            && kinds
                .keys()
                .all(|k| k.starts_with("tls: invalid certificate")),
        "{kinds:?}"
    );
}

#[test]
fn a_proxy_from_the_environment_carries_https_and_http_with_masked_credentials() {
    let _g = serial();
    let server = tls_server();
    let proxy = test_proxy();
    let dir = tempfile::tempdir().unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.pem");
    let password = "pr0xy-pa55-31f9";
    let proxy_url = proxy
        .url
        .replace("http://", &format!("http://ci-runner:{password}@"));
    let port = server.url.rsplit(':').next().unwrap().to_string();
    // a public-looking name only the proxy can resolve: the load can only have gone through it.
    let target = format!("https://kitchen-pr-7.preview.test:{port}");
    let atlas_via_proxy = |target: &str| {
        atlas_with_env(
            dir.path(),
            &[
                "load",
                "--target",
                target,
                "--rate",
                "100",
                "--duration",
                "1s",
                "--warmup",
                "0s",
                "--connections",
                "4",
                "--out",
                "summary.json",
            ],
            &[
                ("SSL_CERT_FILE", ca.as_os_str()),
                ("HTTPS_PROXY", proxy_url.as_ref()),
                ("http_proxy", proxy_url.as_ref()),
                ("NO_PROXY", "internal.example".as_ref()),
            ],
        )
    };
    let out = atlas_via_proxy(&target);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let written = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    let s = parse_summary(&written).unwrap();
    assert_eq!(s.metrics.errors.count, Some(0), "{:?} {stderr}", s.run);
    assert!(s.metrics.http_reqs.total >= 95, "{s:#?}");
    assert!(
        stderr.contains("through the proxy http://127.0.0.1:"),
        "{stderr}"
    );
    let log = proxy.log.lock().unwrap().clone();
    assert!(
        !log.tunnels.is_empty() && log.tunnels.len() <= 4,
        "one tunnel per connection: {log:?}"
    );
    assert!(
        log.tunnels
            .iter()
            .all(|t| *t == format!("kitchen-pr-7.preview.test:{port}"))
    );
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ci-runner:{password}"))
    );
    assert!(log.authorizations.iter().all(|a| *a == basic), "{log:?}");
    assert_eq!(log.authorizations.len(), log.tunnels.len());

    // plain http: the absolute form, answered by the proxy.
    let out = atlas_via_proxy("http://kitchen.test/api");
    let stderr2 = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr2}");
    let written2 = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    let s = parse_summary(&written2).unwrap();
    assert_eq!(s.metrics.errors.count, Some(0), "{:?} {stderr2}", s.run);
    let log = proxy.log.lock().unwrap().clone();
    assert!(log.requests.len() >= 95, "{log:?}");
    assert!(
        log.requests
            .iter()
            .all(|r| r == "GET http://kitchen.test/api/ HTTP/1.1"),
        "{:?}",
        &log.requests[..3]
    );
    assert!(log.authorizations.iter().all(|a| *a == basic));

    for text in [&stderr, &stderr2, &written, &written2] {
        assert!(
            !text.contains(password),
            "the proxy password leaked: {text}"
        );
    }
}

#[test]
fn cli_load_update_and_compare_end_to_end_without_leaking_credentials() {
    let _g = serial();
    let server = status_server();
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cr3t-token-value-42";
    std::fs::write(
        dir.path().join("atlas.toml"),
        format!(
            "[load]\nrate = 200\nduration = \"1s\"\nwarmup = \"0s\"\nconnections = 4\n[[load.requests]]\npath = \"/ok\"\nheaders = {{ authorization = \"Bearer {token}\" }}\n"
        ),
    )
    .unwrap();
    let out = atlas(
        dir.path(),
        &["load", "--target", &server.url, "--out", "summary.json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let written = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    for text in [
        &written as &str,
        &stderr,
        &String::from_utf8_lossy(&out.stdout),
    ] {
        assert!(!text.contains(token), "the token leaked: {text}");
    }
    let s = parse_summary(&written).unwrap();
    assert!(s.metrics.http_reqs.total >= 190, "{stderr}");
    assert_eq!(s.settings.as_ref().unwrap().rate, Some(200.0));

    // flags override atlas.toml.
    let out = atlas(
        dir.path(),
        &[
            "load",
            "--target",
            &server.url,
            "--rate",
            "100",
            "--duration",
            "500ms",
            "--path",
            "/fail",
        ],
    );
    assert!(out.status.success());
    let s = parse_summary(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(s.metrics.errors.rate, 1.0);
    assert_eq!(s.settings.as_ref().unwrap().requests, vec!["GET /fail x1"]);

    let out = atlas(
        dir.path(),
        &["baseline", "update", "--from", "summary.json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b =
        parse_summary(&std::fs::read_to_string(dir.path().join("baseline.json")).unwrap()).unwrap();
    let src = b.source.unwrap();
    assert_eq!(src.target.as_deref(), Some(server.url.as_str()));
    assert!(src.measured_at.is_some());

    let out = atlas(
        dir.path(),
        &[
            "baseline",
            "compare",
            "baseline.json",
            "summary.json",
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["verdict"], "pass");
    assert_eq!(c["metrics"][0]["label"], "P95 Latency");

    // a regressed summary fails with exit 1 and names the metric.
    let mut worse = parse_summary(&written).unwrap();
    worse.metrics.http_req_duration.p95 += 100.0;
    std::fs::write(
        dir.path().join("worse.json"),
        serde_json::to_string(&worse).unwrap(),
    )
    .unwrap();
    let out = atlas(
        dir.path(),
        &["baseline", "compare", "baseline.json", "worse.json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("P95 Latency"), "{stderr}");

    // a k6 export against a k6 export with too few requests: inconclusive, exit 0, said so.
    std::fs::write(
        dir.path().join("k6.json"),
        K6_EXPORT.replace("\"count\": 750", "\"count\": 75"),
    )
    .unwrap();
    let out = atlas(dir.path(), &["baseline", "compare", "k6.json", "k6.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("gate: inconclusive"), "{stderr}");

    // an unreadable baseline is an operational error (exit 2).
    let out = atlas(
        dir.path(),
        &["baseline", "compare", "missing.json", "summary.json"],
    );
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// The gate over a history of runs.

/// The k6 export with its p95 and avg scaled by `f`.
fn k6_scaled(f: f64) -> String {
    K6_EXPORT
        .replace("\"avg\": 275.01", &format!("\"avg\": {}", 275.01 * f))
        .replace("\"p(95)\": 387.57", &format!("\"p(95)\": {}", 387.57 * f))
}

#[test]
fn baseline_compare_against_a_history_directory() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("history");
    std::fs::create_dir(&hist).unwrap();
    for i in 0..12 {
        let f = 1.0 + 0.04 * ((i as f64) * 1.7).sin();
        std::fs::write(hist.join(format!("run-{i:02}.json")), k6_scaled(f)).unwrap();
    }
    std::fs::write(hist.join("run-99.json"), "{\"metrics\": 3}").unwrap();
    std::fs::write(dir.path().join("same.json"), k6_scaled(1.0)).unwrap();
    std::fs::write(dir.path().join("slow.json"), k6_scaled(1.35)).unwrap();
    std::fs::write(dir.path().join("slow2.json"), k6_scaled(1.4)).unwrap();

    let out = atlas(
        dir.path(),
        &["baseline", "compare", "--history", "history", "same.json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("gate: pass"), "{stderr}");
    assert!(
        stderr.contains("compared with 12 runs of the history under the t_test model"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped history entry run-99.json: it does not parse"),
        "{stderr}"
    );

    // a regression: exit 1, the sentence names the model, the bound and the run count; the
    // candidate may be the median of several runs.
    for model in ["t_test", "iqr", "percentage"] {
        let out = atlas(
            dir.path(),
            &[
                "baseline",
                "compare",
                "--history",
                "history",
                "--model",
                model,
                "slow.json",
                "slow2.json",
                "--json",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{model}: {stderr}");
        assert!(stderr.contains("median of 2 runs"), "{stderr}");
        assert!(stderr.contains("of 12 runs"), "{stderr}");
        let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(c["verdict"], "fail");
        assert_eq!(c["model"], model);
        assert_eq!(c["history_runs"], 12);
        assert!(c["metrics"][0]["bound"].as_f64().unwrap() < 387.57 * 1.35);
    }
    let out = atlas(
        dir.path(),
        &["baseline", "compare", "--history", "history", "slow.json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p95 523 ms above the 99.5% upper bound"),
        "{stderr}"
    );

    // too little history: inconclusive (exit 0), said so, even for a clear regression.
    let out = atlas(
        dir.path(),
        &[
            "baseline",
            "compare",
            "--history",
            "history",
            "--history-runs",
            "3",
            "slow.json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("gate: inconclusive"), "{stderr}");
    assert!(stderr.contains("not enough history"), "{stderr}");

    // a missing history is an operational error naming it; a wrong model is a usage error.
    let out = atlas(
        dir.path(),
        &["baseline", "compare", "--history", "nowhere", "same.json"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
    let out = atlas(
        dir.path(),
        &[
            "baseline",
            "compare",
            "--history",
            "history",
            "--model",
            "zscore",
            "same.json",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("t_test"));
    // without --history, exactly two files
    let out = atlas(dir.path(), &["baseline", "compare", "same.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BASELINE CURRENT"));
}

#[test]
fn endpoint_thresholds_parse_from_atlas_toml() {
    let s: atlas::config::Settings = toml::from_str(
        "[baseline]\nmodel = \"iqr\"\nhistory_runs = 30\n\n[[load.requests]]\npath = \"/menu\"\np95_ms = 300\nthreshold_pct = 15\nmodel = \"percentage\"\n",
    )
    .unwrap();
    assert_eq!(s.baseline.model, atlas::load::ThresholdModel::Iqr);
    assert_eq!(s.baseline.history_runs, 30);
    let g = atlas::load::EndpointGate::from_specs(&s.load.requests);
    assert_eq!(g[0].name, "GET /menu");
    assert_eq!(g[0].p95_ms, Some(300.0));
    assert_eq!(g[0].threshold_pct, Some(15.0));
    assert_eq!(g[0].model, Some(atlas::load::ThresholdModel::Percentage));
    let e =
        toml::from_str::<atlas::config::Settings>("[baseline]\nmodel = \"zscore\"\n").unwrap_err();
    assert!(
        e.to_string().contains("zscore") || e.to_string().contains("t_test"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// The dashboard, in a real headless Chromium.

/// Runs Debian's chromium headless on `page` with every request sent to a proxy on loopback
/// that counts connections. Returns (dumped DOM, chromium's log, proxy connections).
fn chromium(dir: &Path, page: &Path, extra: &[&str]) -> (String, String, Vec<String>) {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for c in proxy.incoming() {
                let Ok(mut c) = c else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 512];
                let n = std::io::Read::read(&mut c, &mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                seen.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_string());
            }
        });
    }
    let profile = tempfile::tempdir_in(dir).unwrap();
    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server=http://127.0.0.1:{port}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium must be installed (.ci/run installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // give a request that was sent at the very end time to reach the proxy
    std::thread::sleep(Duration::from_millis(200));
    // the browser's own traffic (component updater, network time, account check) reaches the
    // proxy despite the flags; it is not the page's.
    let browser_own = |line: &str| {
        let host = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let host = host.split(['/', ':']).next().unwrap_or("");
        ["google.com", "googleapis.com", "gvt1.com"]
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
    };
    let page_requests = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !browser_own(l))
        .cloned()
        .collect();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        page_requests,
    )
}

#[test]
fn the_dashboard_renders_in_chromium_without_errors_or_requests() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("history");
    for i in 0..7 {
        let mut s = parse_summary(K6_EXPORT).unwrap();
        s.metrics.http_req_duration.p95 = 380.0 + 7.0 * i as f64;
        s.timestamp = format!("2026-11-0{}T00:00:00Z", i + 1);
        for (name, p95) in [("GET /menu", 300.0), ("POST /orders <b>", 500.0)] {
            s.endpoints.push(atlas::load::summary::EndpointSummary {
                name: name.into(),
                method: "GET".into(),
                path: "/".into(),
                count: 375,
                rate: 12.5,
                errors: 3,
                duration: atlas::load::summary::Trend {
                    p95: p95 + i as f64,
                    avg: p95 * 0.7,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let path = dir.path().join(format!("s{i}.json"));
        std::fs::write(&path, serde_json::to_string(&s).unwrap()).unwrap();
        let out = atlas(
            dir.path(),
            &[
                "baseline",
                "record",
                "--history",
                "history",
                "--from",
                path.to_str().unwrap(),
                "--commit",
                &format!("{i}{}", "c".repeat(39)),
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_dir(&hist).unwrap().count(), 7);
    let out = atlas(
        dir.path(),
        &[
            "baseline",
            "dashboard",
            "--history",
            "history",
            "--current",
            "s6.json",
            "--release",
            "3ccccccc",
            "--out",
            "dashboard.html",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = dir.path().join("dashboard.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("://"), "the page references a URL");

    let (dom, log, requests) = chromium(dir.path(), &page, &["--dump-dom"]);
    // 3 sections (all, 2 endpoints) x 3 metrics, each 7 runs + the current point
    assert!(dom.contains("data-charts=\"9\""), "{dom}");
    assert!(dom.contains("data-expected-points=\"72\""), "{dom}");
    assert!(
        dom.contains("data-points=\"72\""),
        "the script did not count 72 points: {dom}"
    );
    assert_eq!(dom.matches("class=\"release\"").count(), 9);
    assert!(dom.contains("POST /orders &lt;b&gt;"));
    assert!(!log.contains("CONSOLE"), "console output: {log}");
    assert!(
        requests.is_empty(),
        "the page made network requests: {requests:?}"
    );

    // the checks can fail: a page that throws and fetches is caught by both.
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<!doctype html><body><img src=\"http://example.invalid/x.png\"><script>throw new Error('boom-control')</script></body>",
    )
    .unwrap();
    let (_, log, requests) = chromium(dir.path(), &bad, &["--dump-dom"]);
    assert!(
        log.contains("CONSOLE") && log.contains("boom-control"),
        "{log}"
    );
    assert!(
        requests.iter().any(|r| r.contains("example.invalid")),
        "the proxy saw no request from the control page: {requests:?}"
    );

    // a screenshot that is not blank: much larger than a blank page's at the same size
    let shot = dir.path().join("shot.png");
    chromium(
        dir.path(),
        &page,
        &[&format!("--screenshot={}", shot.display())],
    );
    let blank_page = dir.path().join("blank.html");
    std::fs::write(&blank_page, "<!doctype html><body></body>").unwrap();
    let blank = dir.path().join("blank.png");
    chromium(
        dir.path(),
        &blank_page,
        &[&format!("--screenshot={}", blank.display())],
    );
    let (a, b) = (
        std::fs::metadata(&shot).unwrap().len(),
        std::fs::metadata(&blank).unwrap().len(),
    );
    assert!(a > 3 * b, "screenshot {a} bytes vs blank {b} bytes");
}
