//! The load history on its data branch: written through GitHub's Git database API (blobs,
//! trees, commits, a fast-forward ref update) against the stateful fake GitHub, which checks
//! every request against GitHub's OpenAPI description and refuses an update that is not a fast
//! forward; and locally as a directory.

// The load runs hold the serial lock across their awaits on purpose: one at a time on two cores.
#![allow(clippy::await_holding_lock)]

use crate::common::fake_github::{FakeGithub, Fault, GitObject};
use crate::common::world;

use atlas::evidence::load_gate::BranchHistory;
use atlas::load::History;
use atlas::load::store::{self, DASHBOARD_FILE, HISTORY_FILE};
use atlas::load::summary::{Summary, Trend};
use atlas::provider::Forge;
use atlas::provider::github::GithubForge;
use atlas::provider::local::forge::LocalForge;
use atlas::secret::Secret;
use atlas::verify::chain::{LoadGate, LoadModuleGate};

const REPO: &str = "octo-org/kitchen";
const TOKEN: &str = "ghs_fakeTokenValue0123456789abcdef";
const BRANCH: &str = "atlas-history";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// A run of 3,000 requests at p95 `p95` ms.
fn run(p95: f64) -> Summary {
    let mut s = Summary {
        timestamp: "2026-01-01T00:00:00Z".into(),
        ..Summary::default()
    };
    s.metrics.http_req_duration = Trend {
        p95,
        avg: p95 / 1.4,
        ..Trend::default()
    };
    s.metrics.http_reqs.total = 3000;
    s
}

/// The page the tests write beside the history: how many entries it was drawn from.
fn page(h: &History) -> String {
    format!("<html>{} runs</html>", h.entries.len())
}

async fn setup() -> (FakeGithub, GithubForge) {
    world::github_forge(REPO, TOKEN, Some("atlas-bot")).await
}

/// Judges a run at 201 rps against `BRANCH`'s history up to `up_to`, with `gate`.
async fn judge_on_branch(
    forge: &GithubForge,
    gate: &atlas::load::GateSettings,
    up_to: Option<&str>,
) -> atlas::load::Comparison {
    let judged = atlas::evidence::load_gate::judge_with(
        run(201.0),
        gate,
        &[],
        Some(BranchHistory {
            forge,
            branch: BRANCH,
            up_to,
        }),
    )
    .await
    .unwrap();
    judged.comparison.unwrap()
}

fn commits_of(h: &History) -> Vec<String> {
    h.entries
        .iter()
        .map(|e| e.commit.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_history_branch_is_created_then_fast_forwarded_one_commit_per_run() {
    let (gh, forge) = setup().await;
    let before = store::read(&forge, BRANCH).await.unwrap();
    assert!(before.entries.is_empty());
    assert!(
        before.notes[0].contains("no load history"),
        "{:?}",
        before.notes
    );

    for (i, c) in ['a', 'b', 'c'].into_iter().enumerate() {
        let a = store::append(&forge, BRANCH, &run(200.0 + i as f64), &sha(c), 200, &page)
            .await
            .unwrap();
        assert_eq!(a.write.attempts, 1);
        assert_eq!(a.entries, i + 1);
        assert!(a.notes.is_empty(), "{:?}", a.notes);
    }
    // The same commit again replaces its entry instead of adding one.
    let again = store::append(&forge, BRANCH, &run(250.0), &sha('c'), 200, &page)
        .await
        .unwrap();
    assert_eq!(again.entries, 3);

    let log = gh.with(|s| s.branch_log(BRANCH));
    assert_eq!(log.len(), 4, "one commit per append: {log:?}");
    assert_eq!(log[0].0, again.write.commit);
    assert!(log[3].1.contains("aaaaaaa"), "{log:?}");
    // The root commit has no parent; every other one sits on the previous head.
    let root_parents = gh.with(|s| match s.objects.get(&log[3].0) {
        Some(GitObject::Commit { parents, .. }) => parents.len(),
        _ => usize::MAX,
    });
    assert_eq!(root_parents, 0);

    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('a'), sha('b'), sha('c')]);
    assert_eq!(h.entries[2].summary.metrics.http_req_duration.p95, 250.0);
    // The dashboard sits in the same commit as the history it was drawn from.
    assert_eq!(
        gh.with(|s| s.branch_file(BRANCH, DASHBOARD_FILE))
            .as_deref(),
        Some("<html>3 runs</html>")
    );
    // Through the Git database only: never a forced ref update.
    let calls = gh.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST /repos/octo-org/kitchen/git/refs"))
            .count(),
        1,
        "{calls:#?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("PATCH /repos/octo-org/kitchen/git/refs/heads/atlas-history"))
            .count(),
        3
    );
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn the_history_is_bounded_by_folding_the_oldest_away() {
    let (gh, forge) = setup().await;
    for c in ['1', '2', '3', '4', '5'] {
        store::append(&forge, BRANCH, &run(200.0), &sha(c), 3, &page)
            .await
            .unwrap();
    }
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('3'), sha('4'), sha('5')]);
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_concurrent_writer_is_read_again_and_kept() {
    let (gh, forge) = setup().await;
    store::append(&forge, BRANCH, &run(200.0), &sha('a'), 200, &page)
        .await
        .unwrap();
    // Another run appends commit d, with a file of its own, between our read and our update.
    let theirs = gh.with(|s| s.branch_file(BRANCH, HISTORY_FILE)).unwrap();
    let mut theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let mut other = theirs["entries"][0].clone();
    other["commit"] = serde_json::json!(sha('d'));
    theirs["entries"].as_array_mut().unwrap().push(other);
    gh.with(|s| {
        s.concurrent_writes
            .push_back((HISTORY_FILE.into(), theirs.to_string()))
    });

    let a = store::append(&forge, BRANCH, &run(210.0), &sha('b'), 200, &page)
        .await
        .unwrap();
    assert_eq!(
        a.write.attempts, 2,
        "the first update was not a fast forward"
    );
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('a'), sha('d'), sha('b')]);
    // The refused update was a plain one: the other writer's commit is in our history.
    let log = gh.with(|s| s.branch_log(BRANCH));
    assert_eq!(log[1].1, "another writer", "{log:?}");
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_branch_that_keeps_moving_is_an_error_that_says_so() {
    let (gh, forge) = setup().await;
    store::append(&forge, BRANCH, &run(200.0), &sha('a'), 200, &page)
        .await
        .unwrap();
    gh.with(|s| {
        for i in 0..10 {
            s.concurrent_writes
                .push_back(("other.txt".into(), format!("write {i}")));
        }
    });
    let e = store::append(&forge, BRANCH, &run(210.0), &sha('b'), 200, &page)
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("kept moving"), "{msg}");
    assert!(msg.contains(BRANCH), "{msg}");
    // Nothing of ours landed, and nothing of theirs was overwritten.
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('a')]);
    assert_eq!(
        gh.with(|s| s.branch_file(BRANCH, "other.txt")).as_deref(),
        Some("write 4")
    );
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_force_pushed_garbage_history_is_set_aside_with_a_note() {
    let (gh, forge) = setup().await;
    gh.with(|s| {
        s.force_branch(
            BRANCH,
            &[(HISTORY_FILE, "{ not json"), ("README.md", "mine")],
        )
    });
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert!(h.entries.is_empty());
    assert!(h.notes[0].contains("does not parse"), "{:?}", h.notes);

    let a = store::append(&forge, BRANCH, &run(200.0), &sha('a'), 200, &page)
        .await
        .unwrap();
    assert_eq!(a.entries, 1);
    assert!(a.notes[0].contains("started a new one"), "{:?}", a.notes);
    // Appended on top (not forced): the force-pushed commit and its other files stay.
    let log = gh.with(|s| s.branch_log(BRANCH));
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].1, "force-pushed");
    assert_eq!(
        gh.with(|s| s.branch_file(BRANCH, "README.md")).as_deref(),
        Some("mine")
    );
    assert_eq!(
        commits_of(&store::read(&forge, BRANCH).await.unwrap()),
        vec![sha('a')]
    );

    // A history whose entries partly do not parse keeps the ones that do.
    let text = gh.with(|s| s.branch_file(BRANCH, HISTORY_FILE)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["entries"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"commit": sha('e'), "summary": {"metrics": "nonsense"}}));
    gh.with(|s| s.force_branch(BRANCH, &[(HISTORY_FILE, &v.to_string())]));
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('a')]);
    assert!(
        h.notes.iter().any(|n| n.contains("skipped history 2")),
        "{:?}",
        h.notes
    );
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_branch_name_that_is_not_plain_is_refused_before_any_request() {
    let (gh, forge) = setup().await;
    for bad in ["../x", "a b", "", "x.lock", "-x"] {
        let e = store::append(&forge, bad, &run(200.0), &sha('a'), 200, &page)
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("history_branch"),
            "{bad:?}: {e:#}"
        );
    }
    assert!(gh.calls().is_empty(), "{:?}", gh.calls());
}

#[tokio::test]
async fn locally_the_history_branch_is_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let forge = LocalForge::new(dir.path(), false);
    assert!(
        store::read(&forge, BRANCH)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    for c in ['a', 'b'] {
        store::append(&forge, BRANCH, &run(200.0), &sha(c), 200, &page)
            .await
            .unwrap();
    }
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('a'), sha('b')]);
    let d = forge.branch_dir(BRANCH);
    assert!(d.join(HISTORY_FILE).is_file());
    assert_eq!(
        std::fs::read_to_string(d.join(DASHBOARD_FILE)).unwrap(),
        "<html>2 runs</html>"
    );
    // Garbage there is set aside too.
    std::fs::write(d.join(HISTORY_FILE), "garbage").unwrap();
    let a = store::append(&forge, BRANCH, &run(200.0), &sha('c'), 200, &page)
        .await
        .unwrap();
    assert_eq!(a.entries, 1);
    assert!(!a.notes.is_empty());
}

/// The verify chain's load gate against a real local server, keeping its history on the fake
/// GitHub's data branch.
fn verify_gate<'a>(forge: &'a GithubForge, commit: &str) -> LoadModuleGate<'a> {
    let mut g = LoadModuleGate {
        load: crate::common::load_servers::open(200.0, 400, 0, 4),
        gate: atlas::load::GateSettings {
            min_requests: 20,
            min_history: 3,
            // a busy shared machine moves a 2 ms server's latency and rate: the test is about
            // where the runs go, so only a gross regression could fail it
            latency_floor_ms: 5_000.0,
            min_rate_ratio: 0.0,
            // nothing at the fixed path: the history decides
            path: "/nonexistent/baseline.json".into(),
            ..atlas::load::GateSettings::default()
        },
        history: None,
    };
    g = g.with_history(
        Some(forge as &dyn Forge),
        commit,
        true,
        Some("https://o.github.io/r/".into()),
    );
    g
}

#[tokio::test]
async fn verify_appends_each_run_and_gates_against_the_history_once_it_has_enough() {
    let _serial = crate::common::load_servers::serial();
    let (gh, forge) = setup().await;
    let server = crate::common::load_servers::delay_server(std::time::Duration::from_millis(2));
    let mut outcomes = Vec::new();
    // The workflow uploads this file as the run's artifact.
    let workspace = tempfile::tempdir().unwrap();
    let file = workspace.path().join("atlas-dashboard/index.html");
    for c in ['a', 'b', 'c', 'd'] {
        let out = verify_gate(&forge, &sha(c))
            .with_dashboard_file(Some(file.clone()))
            .run(&server.url)
            .await
            .unwrap();
        assert!(out.ok, "{}", out.summary);
        assert!(
            out.evidence
                .iter()
                .any(|e| e.starts_with("load history: recorded")
                    && e.contains("dashboard https://o.github.io/r/")),
            "{:?}",
            out.evidence
        );
        outcomes.push(out.summary);
    }
    // No history yet: measured, not gated; one or two runs: too few, inconclusive, and says so.
    assert!(outcomes[0].contains("not gated"), "{}", outcomes[0]);
    assert!(
        outcomes[1].contains("inconclusive") && outcomes[1].contains("1"),
        "{}",
        outcomes[1]
    );
    assert!(outcomes[2].contains("inconclusive"), "{}", outcomes[2]);
    assert!(
        outcomes[3].contains("against 3 runs of the history"),
        "{}",
        outcomes[3]
    );
    let h = store::read(&forge, BRANCH).await.unwrap();
    assert_eq!(commits_of(&h), vec![sha('a'), sha('b'), sha('c'), sha('d')]);
    let page = gh.with(|s| s.branch_file(BRANCH, DASHBOARD_FILE)).unwrap();
    assert!(
        page.contains("<svg"),
        "the dashboard is drawn beside the history"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        page,
        "the artifact is the page committed with the history"
    );
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_history_that_cannot_be_written_is_a_warning_not_a_failed_verify() {
    let _serial = crate::common::load_servers::serial();
    let (gh, forge) = setup().await;
    gh.fault(Fault::new(axum::http::Method::POST, "/git/blobs", 403));
    let server = crate::common::load_servers::delay_server(std::time::Duration::from_millis(2));
    let workspace = tempfile::tempdir().unwrap();
    let file = workspace.path().join("atlas-dashboard/index.html");
    let out = verify_gate(&forge, &sha('a'))
        .with_dashboard_file(Some(file.clone()))
        .run(&server.url)
        .await
        .unwrap();
    assert!(out.ok, "{}", out.summary);
    let warning = out
        .evidence
        .iter()
        .find(|e| e.starts_with("warning: the load history was not recorded on atlas-history"))
        .unwrap_or_else(|| panic!("{:?}", out.evidence));
    assert!(!warning.contains(TOKEN));
    assert!(gh.with(|s| s.refs.is_empty()));
    assert!(!file.exists(), "no artifact of a history that was not kept");
}

#[tokio::test]
async fn a_pr_is_compared_with_the_runs_up_to_its_merge_base() {
    let (gh, forge) = setup().await;
    for c in ['1', '2', '3', '4', '5'] {
        store::append(&forge, BRANCH, &run(200.0), &sha(c), 200, &page)
            .await
            .unwrap();
    }
    gh.with(|s| {
        s.merge_bases
            .insert(format!("main...{}", sha('f')), sha('3'))
    });
    let base = forge.merge_base("main", &sha('f')).await.unwrap();
    assert_eq!(base.as_deref(), Some(sha('3').as_str()));
    assert_eq!(forge.merge_base("main", &sha('9')).await.unwrap(), None);

    let gate = atlas::load::GateSettings {
        min_history: 3,
        path: "/nonexistent/baseline.json".into(),
        ..atlas::load::GateSettings::default()
    };
    let c = judge_on_branch(&forge, &gate, base.as_deref()).await;
    assert_eq!(c.history_runs, Some(3), "{:?}", c.notes);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("2 runs after the merge base")),
        "{:?}",
        c.notes
    );

    // Fewer runs than min_history with a fixed baseline file: the fixed file decides.
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("baseline.json");
    std::fs::write(&fixed, serde_json::to_string(&run(200.0)).unwrap()).unwrap();
    let gate = atlas::load::GateSettings {
        min_history: 10,
        path: fixed,
        ..atlas::load::GateSettings::default()
    };
    let c = judge_on_branch(&forge, &gate, base.as_deref()).await;
    assert_eq!(c.history_runs, None);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("has 3 runs (fewer than 10): compared with the fixed baseline")),
        "{:?}",
        c.notes
    );
    world::assert_github_clean(&gh);
}

/// A 127.0.0.1 webhook receiver: records each POSTed JSON body, answers `status`.
struct Receiver {
    url: String,
    posts: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

async fn receiver() -> Receiver {
    use std::sync::atomic::Ordering;
    let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
    let (p, st) = (posts.clone(), status.clone());
    let app = axum::Router::new().route(
        "/services/T000/B000/secretpart",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (p, st) = (p.clone(), st.clone());
            async move {
                p.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                axum::http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url: format!("http://{addr}/services/T000/B000/secretpart"),
        posts,
        status,
    }
}

/// Five steady runs around p95 200 ms.
fn steady_history() -> History {
    History {
        entries: [198.0, 201.0, 200.0, 202.0, 199.0]
            .iter()
            .enumerate()
            .map(|(i, p)| atlas::load::history::HistoryEntry {
                label: format!("{}", i + 1),
                commit: Some(sha(char::from(b'1' + i as u8))),
                summary: run(*p),
            })
            .collect(),
        notes: Vec::new(),
    }
}

#[tokio::test]
async fn a_regression_opens_one_issue_per_metric_updates_it_and_closes_it_on_recovery() {
    use atlas::load::{Verdict, compare_history};
    use atlas::verify::chain::{ALERT_MARKER, VerifyHistory, raise_alerts};
    let (gh, forge) = setup().await;
    let hook = receiver().await;
    secret_register(&hook.url);
    let title = "performance regression: all requests p95";
    // Someone else's issue with the same title and our marker is never touched.
    let decoy = gh.with(|s| s.add_issue("mallory", title, &format!("{ALERT_MARKER} fake")));
    let gate = atlas::load::GateSettings::default();
    let history = steady_history();
    let bad = compare_history(&history, &run(400.0), &gate, &[]);
    assert_eq!(bad.verdict, Verdict::Fail, "{:?}", bad.notes);
    let vh = VerifyHistory {
        forge: &forge,
        branch: BRANCH.into(),
        commit: sha('b'),
        record: true,
        dashboard_url: Some("https://octo-org.github.io/kitchen/".into()),
        alert_issues: true,
        webhook: Some(Secret::new(&hook.url)),
        repository: REPO.into(),
        proxy_env: Vec::new(),
        dashboard_file: None,
    };

    let lines = raise_alerts(&vh, &bad).await;
    let ours = |gh: &FakeGithub| {
        gh.with(|s| {
            s.issues
                .values()
                .filter(|i| i.user == "atlas-bot")
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let opened = ours(&gh);
    let failing = bad
        .metrics
        .iter()
        .filter(|m| m.verdict == Verdict::Fail)
        .count();
    assert!(failing >= 1);
    assert_eq!(
        opened.len(),
        failing,
        "one issue per failing metric: {lines:?}"
    );
    let p95 = opened
        .iter()
        .find(|i| i.title == title)
        .expect("the p95 issue");
    assert!(p95.open);
    assert!(p95.body.contains(ALERT_MARKER));
    assert!(
        p95.body
            .contains("Trend: https://octo-org.github.io/kitchen/"),
        "{}",
        p95.body
    );
    assert!(p95.body.contains("Compared with 5 runs"), "{}", p95.body);
    assert!(
        lines.iter().any(|l| l.starts_with("alert: opened issue")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "alert: webhook notified"),
        "{lines:?}"
    );

    // Still regressed at the next commit: the same issues are updated, none is added.
    let vh2 = VerifyHistory {
        commit: sha('c'),
        ..vh
    };
    let lines = raise_alerts(&vh2, &bad).await;
    assert!(
        lines.iter().any(|l| l.starts_with("alert: updated issue")),
        "{lines:?}"
    );
    let again = ours(&gh);
    assert_eq!(again.len(), failing);
    assert!(
        again
            .iter()
            .find(|i| i.title == title)
            .unwrap()
            .body
            .contains("cccccc")
    );

    // Recovered: closed as completed, with a comment saying so.
    let good = compare_history(&history, &run(200.0), &gate, &[]);
    assert_eq!(good.verdict, Verdict::Pass, "{:?}", good.notes);
    let vh3 = VerifyHistory {
        commit: sha('d'),
        ..vh2
    };
    let lines = raise_alerts(&vh3, &good).await;
    assert!(
        lines.iter().any(|l| l.starts_with("alert: closed issue")),
        "{lines:?}"
    );
    let closed = ours(&gh);
    assert!(
        closed
            .iter()
            .all(|i| !i.open && i.state_reason.as_deref() == Some("completed"))
    );
    let p95_number = closed.iter().find(|i| i.title == title).unwrap().number;
    let note = gh.with(|s| s.comments_on(p95_number));
    assert!(note[0].body.contains("Recovered at commit"), "{note:?}");
    assert!(gh.with(|s| s.issues[&decoy].open && s.issues[&decoy].body.ends_with("fake")));

    // The webhook got the two regressions (not the recovery), Slack-shaped.
    let posts = hook.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let text = posts[0]["text"].as_str().unwrap();
    assert!(
        text.contains("Performance regression on octo-org/kitchen at bbbbbbb"),
        "{text}"
    );
    assert_eq!(posts[0]["blocks"][0]["type"], "section");
    world::assert_github_clean(&gh);
}

fn secret_register(v: &str) {
    atlas::secret::register(v);
}

/// A self-hosted runner whose egress goes through a proxy: the webhook is POSTed through the
/// proxy `http_proxy` names (with its credentials), and `no_proxy` sends it direct.
#[tokio::test]
async fn the_webhook_goes_through_the_proxy_the_environment_names() {
    use atlas::load::compare_history;
    use atlas::verify::chain::{VerifyHistory, raise_alerts};
    let (_gh, forge) = setup().await;
    let proxy = crate::common::load_servers::test_proxy();
    let password = "hook-pr0xy-7c1e";
    let proxy_url = proxy
        .url
        .replace("http://", &format!("http://ci-runner:{password}@"));
    // A name only the proxy answers for: the message can only have gone through it.
    let hook = "http://hooks.slack.test/services/T000/B000/secretpart";
    secret_register(hook);
    let bad = compare_history(
        &steady_history(),
        &run(400.0),
        &atlas::load::GateSettings::default(),
        &[],
    );
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let vh = VerifyHistory {
        forge: &forge,
        branch: BRANCH.into(),
        commit: sha('b'),
        record: true,
        dashboard_url: None,
        alert_issues: false,
        webhook: Some(Secret::new(hook)),
        repository: REPO.into(),
        proxy_env: env(&[
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
            ("http_proxy", &proxy_url),
            ("NO_PROXY", "internal.example"),
        ]),
        dashboard_file: None,
    };
    let lines = raise_alerts(&vh, &bad).await;
    assert_eq!(lines, ["alert: webhook notified"], "{lines:?}");
    let log = proxy.log.lock().unwrap().clone();
    assert_eq!(
        log.requests,
        ["POST http://hooks.slack.test/services/T000/B000/secretpart HTTP/1.1"],
        "{log:?}"
    );
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ci-runner:{password}"))
    );
    assert_eq!(log.authorizations, [basic], "{log:?}");

    // `no_proxy` names the webhook's domain: sent direct, where the name does not resolve.
    let direct = VerifyHistory {
        proxy_env: env(&[("http_proxy", &proxy_url), ("no_proxy", ".slack.test")]),
        ..vh
    };
    let lines = raise_alerts(&direct, &bad).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("warning: the alert webhook failed"),
        "{lines:?}"
    );
    assert_eq!(proxy.log.lock().unwrap().requests.len(), 1);
    // A proxy Atlas cannot use is a warning that names the variable, not the credentials.
    let socks = VerifyHistory {
        proxy_env: env(&[(
            "http_proxy",
            &format!("socks5://u:{password}@127.0.0.1:1080"),
        )]),
        ..direct
    };
    let lines = raise_alerts(&socks, &bad).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "warning: alert webhook not sent: the alert webhook cannot use http_proxy"
        ),
        "{lines:?}"
    );
    assert!(!lines[0].contains(password), "{lines:?}");
}

#[tokio::test]
async fn a_failing_webhook_or_issue_api_is_a_warning_without_the_url() {
    use atlas::load::compare_history;
    use atlas::verify::chain::{VerifyHistory, raise_alerts};
    let (gh, forge) = setup().await;
    let hook = receiver().await;
    secret_register(&hook.url);
    hook.status.store(500, std::sync::atomic::Ordering::SeqCst);
    gh.fault(Fault::new(axum::http::Method::GET, "/issues", 403).times(10));
    let bad = compare_history(
        &steady_history(),
        &run(400.0),
        &atlas::load::GateSettings::default(),
        &[],
    );
    let vh = VerifyHistory {
        forge: &forge,
        branch: BRANCH.into(),
        commit: sha('b'),
        record: true,
        dashboard_url: None,
        alert_issues: true,
        webhook: Some(Secret::new(&hook.url)),
        repository: REPO.into(),
        proxy_env: Vec::new(),
        dashboard_file: None,
    };
    let lines = raise_alerts(&vh, &bad).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: the alert issue")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "warning: the alert webhook answered 500"),
        "{lines:?}"
    );
    assert_eq!(hook.posts.lock().unwrap().len(), 1);
    // Nobody listening: a warning that does not show the URL (its path is the credential).
    let closed = VerifyHistory {
        webhook: Some(Secret::new(
            "http://127.0.0.1:9/services/T000/B000/secretpart",
        )),
        alert_issues: false,
        ..vh
    };
    secret_register("http://127.0.0.1:9/services/T000/B000/secretpart");
    let lines = raise_alerts(&closed, &bad).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("warning: the alert webhook failed"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("secretpart")), "{lines:?}");
}
