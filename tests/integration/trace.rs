//! Trace context: every request Atlas sends to a preview (load test, smoke and verify checks,
//! canary probes) carries a W3C `traceparent` with a fresh trace id, and the evidence names the
//! slowest and the failed requests by those ids. A real 127.0.0.1 server records what arrived.
// The serial guard is held across awaits on purpose: load tests run one at a time.
#![allow(clippy::await_holding_lock)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atlas::load::RequestSpec;
use atlas::trace::TraceId;

use crate::common::load_servers::{self, Req, serial};

/// (path, traceparent value if any) of every request, in arrival order.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A server that records each request's `traceparent`; `/fail` answers 500, and on `/item` the
/// requests numbered in `slow` (1-based, per path) wait `pause` before answering.
fn recording_server(slow: &'static [usize], pause: Duration) -> (load_servers::Server, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let server = load_servers::serve(Arc::new(move |req: &Req| {
        let tp = req
            .headers
            .iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v.clone());
        let n = {
            let mut l = log.lock().unwrap();
            l.push((req.path.clone(), tp));
            l.iter().filter(|(p, _)| *p == req.path).count()
        };
        if req.path == "/item" && slow.contains(&n) {
            std::thread::sleep(pause);
        }
        if req.path == "/fail" {
            (500, "boom".into())
        } else {
            (200, "ok".into())
        }
    }));
    (server, seen)
}

fn check(path: &str) -> atlas::config::SmokeCheck {
    toml::from_str(&format!("path = {path:?}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_type_carries_a_fresh_sampled_traceparent() {
    let _g = serial();
    let (server, seen) = recording_server(&[], Duration::ZERO);

    let mut settings = load_servers::open(200.0, 500, 100, 4);
    settings.requests = vec![
        RequestSpec {
            path: "/load".into(),
            weight: 3,
            ..RequestSpec::default()
        },
        RequestSpec {
            method: "post".into(),
            path: "/load-post".into(),
            body: Some("{}".into()),
            ..RequestSpec::default()
        },
    ];
    load_servers::run(&settings, &server.url).await;

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let smoke = atlas::evidence::checks::run_checks(
        &client,
        &server.url,
        &[check("/smoke"), check("/smoke")],
        "[[smoke]]",
    )
    .await
    .unwrap();
    let verify = atlas::evidence::checks::run_checks(
        &client,
        &server.url,
        &[check("/verify")],
        "[verify] checks",
    )
    .await
    .unwrap();
    let target = atlas::verify::Target {
        base_url: server.url.clone(),
        headers: vec![],
    };
    atlas::verify::probe::run_side(&client, &target, &["/canary".into()], 30, 3).await;

    let seen = seen.lock().unwrap().clone();
    let mut ids = HashSet::new();
    let mut per_path: HashMap<&str, usize> = HashMap::new();
    for (path, tp) in &seen {
        let tp = tp
            .as_deref()
            .unwrap_or_else(|| panic!("{path}: no traceparent"));
        assert!(tp.len() == 55 && tp.ends_with("-01"), "{path}: {tp}");
        let id = TraceId::parse_header(tp).unwrap_or_else(|| panic!("{path}: {tp}"));
        assert!(ids.insert(id), "{path}: trace id {id} sent twice");
        *per_path.entry(path.as_str()).or_default() += 1;
    }
    for path in ["/load", "/load-post", "/smoke", "/verify", "/canary"] {
        assert!(per_path.get(path).is_some_and(|n| *n > 0), "{per_path:?}");
    }
    assert_eq!(per_path["/canary"], 30);
    assert!(per_path["/load"] > 50, "{per_path:?}");
    // a check's result names the id it was sent with.
    for r in smoke.iter().chain(&verify) {
        let id = r.trace_id.as_deref().expect("a check records its trace id");
        assert!(
            seen.iter()
                .any(|(p, tp)| *p == r.path && tp.as_deref().is_some_and(|t| &t[3..35] == id)),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_names_the_slowest_and_the_failed_requests_by_trace_id() {
    let _g = serial();
    // three of ~150 `/item` requests pause 300 ms: they are the endpoint's three slowest.
    let (server, seen) = recording_server(&[20, 70, 120], Duration::from_millis(300));
    let mut settings = load_servers::open(200.0, 1000, 0, 10);
    settings.requests = load_servers::weighted(&[("/item", 3), ("/fail", 1)]);
    let s = load_servers::run(&settings, &server.url).await;
    let seen = seen.lock().unwrap().clone();
    let id_of = |path: &str, n: usize| -> String {
        let tp = seen
            .iter()
            .filter(|(p, _)| p == path)
            .nth(n - 1)
            .and_then(|(_, tp)| tp.clone())
            .expect("the request was recorded");
        tp[3..35].to_string()
    };

    let item = &s.endpoints[0];
    assert_eq!(
        item.slowest.len(),
        atlas::load::generator::SLOWEST,
        "{item:?}"
    );
    let top: HashSet<&str> = item.slowest[..3]
        .iter()
        .map(|t| t.trace_id.as_str())
        .collect();
    let paused: HashSet<String> = [20, 70, 120].iter().map(|n| id_of("/item", *n)).collect();
    assert_eq!(
        top,
        paused.iter().map(String::as_str).collect::<HashSet<_>>(),
        "{:?}",
        item.slowest
    );
    assert!(
        item.slowest
            .windows(2)
            .all(|w| w[0].latency_ms >= w[1].latency_ms),
        "slowest first: {:?}",
        item.slowest
    );

    // failed requests: bounded, each one a `/fail` request the server saw, with its reason.
    let fail = &s.endpoints[1];
    let run = s.run.as_ref().unwrap();
    assert!(fail.errors > atlas::load::generator::MAX_FAILED as u64);
    assert_eq!(run.failed.len(), atlas::load::generator::MAX_FAILED);
    let fail_ids: HashSet<String> = seen
        .iter()
        .filter(|(p, _)| p == "/fail")
        .filter_map(|(_, tp)| tp.as_ref().map(|t| t[3..35].to_string()))
        .collect();
    let mut distinct = HashSet::new();
    for f in &run.failed {
        assert!(fail_ids.contains(&f.trace_id), "{f:?}");
        assert!(distinct.insert(f.trace_id.clone()));
        assert_eq!(f.endpoint.as_deref(), Some("GET /fail"));
        assert_eq!(f.error.as_deref(), Some("status 500"));
    }
}

#[tokio::test]
async fn a_traceparent_in_the_configuration_is_refused_naming_the_key() {
    let mut settings = load_servers::open(10.0, 100, 0, 1);
    settings.requests = vec![RequestSpec {
        headers: [("TraceParent".to_string(), "00-x".to_string())].into(),
        ..RequestSpec::default()
    }];
    let e = atlas::load::run_with(&settings, "http://127.0.0.1:9", load_servers::quiet())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"TraceParent\""), "{e:#}");

    let mut c = check("/x");
    c.headers.insert("traceparent".into(), "00-x".into());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let e = atlas::evidence::checks::run_checks(&client, "http://127.0.0.1:9", &[c], "[[smoke]]")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("[[smoke]] header \"traceparent\" cannot be set"),
        "{e:#}"
    );
}
