//! The local preview lifecycle end to end: the `atlas` binary, a real PostgreSQL cluster that
//! atlas starts itself (one per test, in the test's state dir) and the example app.

use crate::common::local_env;

use std::time::{Duration, Instant};

use local_env::{Env, kitchen_toml};

const CLAUSES: [&str; 7] = [
    "1. Code identity",
    "2. Data boundary",
    "3. Identity boundary",
    "4. Secret boundary",
    "5. Migration boundary",
    "6. Evidence boundary",
    "7. Lifecycle boundary",
];

fn text(o: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn url_of(comment: &str) -> String {
    let line = comment
        .lines()
        .find(|l| l.starts_with("**Environment URL:**"))
        .expect("the comment names the environment URL");
    line.trim_start_matches("**Environment URL:**")
        .trim()
        .to_string()
}

fn pid_of(env: &Env, pr: u64) -> i32 {
    let t = std::fs::read_to_string(
        env.state()
            .join("apps")
            .join(format!("{}.json", env.app(pr))),
    )
    .unwrap();
    serde_json::from_str::<serde_json::Value>(&t).unwrap()["pid"]
        .as_i64()
        .unwrap() as i32
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_up_up_down_down() {
    let mut env = Env::new(&kitchen_toml(""));
    let out = env.up(7);
    assert!(out.status.success(), "{}", text(&out));
    let comment = env.comment(7);
    assert!(comment.contains("<!-- atlas:preview pr=7 -->"));
    assert!(comment.contains("Preview ready"), "{comment}");
    for c in CLAUSES {
        assert!(comment.contains(c), "clause {c} missing:\n{comment}");
    }
    assert!(comment.contains("load test: not configured"));
    assert!(comment.contains("atlas_pr_7"));
    // the local app got its identity, and its log tail is folded into the comment.
    assert!(
        comment.contains("<summary>App log (tail)</summary>"),
        "{comment}"
    );
    assert!(
        comment.contains("; service kitchen; service.version=")
            && comment.contains(",deployment.environment=preview,atlas.pr=7)"),
        "{comment}"
    );
    let url = url_of(&comment);
    let first_pid = pid_of(&env, 7);

    // The app really runs on the branch, with the declared secret and the commit.
    let http = reqwest::Client::new();
    let health: serde_json::Value = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["commit"], "0123456789abcdef0123456789abcdef01234567");
    let r = http
        .post(format!("{url}/orders"))
        .header("x-api-key", &env.secret)
        .body(r#"{"item_id": 2, "quantity": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let order: serde_json::Value = http
        .get(format!("{url}/orders/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["total_cents"], 2250);

    // Up again: updated in place, same URL, a new process, the data kept.
    let out = env.up(7);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reused atlas_pr_7"), "{}", text(&out));
    let comment2 = env.comment(7);
    assert_eq!(url_of(&comment2), url);
    // the lifecycle clause keeps the branch's creation time (recorded on the database).
    assert!(!comment2.contains("in an earlier run"), "{comment2}");
    assert!(
        comment2.contains("created 20") && comment2.contains("updated 20"),
        "{comment2}"
    );
    assert_ne!(pid_of(&env, 7), first_pid);
    assert_eq!(
        http.get(format!("{url}/orders/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let out = env.down(7);
    assert!(out.status.success(), "{}", text(&out));
    let gone = env.comment(7);
    assert!(gone.contains("Preview destroyed"), "{gone}");
    assert!(gone.contains("| app `"), "{gone}");
    // the contract the preview last ran under, read back from its comment: the migrations and
    // the commit of the last up, not a fresh contract whose evidence would read "not run".
    assert!(gone.contains("applied cleanly"), "{gone}");
    assert!(!gone.contains("not run"), "{gone}");
    assert!(gone.contains("commit `0123456789ab`"), "{gone}");
    assert!(gone.contains("load test: not configured"), "{gone}");
    assert!(
        !text(&out).contains("atlas:contract"),
        "the record stays out of the terminal: {}",
        text(&out)
    );
    assert!(http.get(format!("{url}/healthz")).send().await.is_err());

    let out = env.down(7);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already gone"), "{}", text(&out));

    let audit = std::fs::read_to_string(env.state().join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 4, "{audit}");
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[test]
fn failed_migrations_are_a_gate_failure_and_leave_nothing() {
    // Fails on the branch only (the parent migrates fine), as a PR's broken migration would.
    let toml = kitchen_toml("").replace(
        "migrations = \"sh ",
        "migrations = \"case $DATABASE_URL in *atlas_pr_*) echo 'ERROR:  column \\\"nope\\\" does not exist' >&2; exit 3;; esac; sh ",
    );
    let mut env = Env::new(&toml);
    let out = env.up(3);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("migrations failed"), "{}", text(&out));
    let comment = env.comment(3);
    assert!(comment.contains("Preview failed"), "{comment}");
    assert!(comment.contains("column"), "{comment}");
    for c in CLAUSES {
        assert!(comment.contains(c), "clause {c} missing:\n{comment}");
    }
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[test]
fn an_app_that_crashes_on_start_is_reported_with_its_log() {
    let toml = kitchen_toml("").replace(
        "command = \"exec ",
        "command = \"echo 'kitchen: fatal: cannot open the oven' >&2; exit 4; exec ",
    );
    let mut env = Env::new(&toml);
    let out = env.up(4);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("exited"), "{t}");
    assert!(t.contains("cannot open the oven"), "{t}");
    assert!(env.comment(4).contains("Preview failed"));
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[test]
fn an_app_that_never_becomes_ready_times_out_and_is_killed() {
    let toml = kitchen_toml("")
        .replace("readiness_timeout = \"30s\"", "readiness_timeout = \"1s\"")
        .replace(
            "command = \"exec ",
            "command = \"echo warming up; sleep 30 & sleep 30; exec ",
        );
    let mut env = Env::new(&toml);
    let out = env.up(5);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("not ready within 1s"), "{t}");
    assert!(t.contains("warming up"), "{t}");
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[test]
fn a_failed_smoke_check_fails_the_gate() {
    let toml =
        kitchen_toml("\n[[smoke]]\nname = \"specials\"\npath = \"/specials\"\nstatus = 200\n");
    let mut env = Env::new(&toml);
    let out = env.up(6);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("smoke checks failed"), "{}", text(&out));
    let comment = env.comment(6);
    assert!(comment.contains("Preview failed"), "{comment}");
    assert!(comment.contains("expected 200, got 404"), "{comment}");
    assert!(comment.contains("❌"), "{comment}");
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[test]
fn stale_state_with_a_dead_pid_and_a_taken_port_are_handled() {
    // This PR's migration adds a table the parent does not have: the schema diff shows it.
    let toml = kitchen_toml("").replace(
        "migrations = \"sh ",
        "migrations = \"case $DATABASE_URL in *atlas_pr_*) psql -X -q -d $DATABASE_URL -c 'CREATE TABLE IF NOT EXISTS specials (id int)';; esac; sh ",
    );
    let mut env = Env::new(&toml);
    // Someone else holds the port the stale record names.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let apps = env.state().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    let stale = serde_json::json!({
        "app": env.app(8), "pid": 9_999_999, "start_time": 1, "port": taken, "pr": 8,
        "sha": "dead", "command": "gone", "log": apps.join("old.log"),
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
    });
    std::fs::write(apps.join(format!("{}.json", env.app(8))), stale.to_string()).unwrap();

    let out = env.up(8);
    assert!(out.status.success(), "{}", text(&out));
    let comment = env.comment(8);
    assert!(
        comment.contains("Schema diff against atlas_main"),
        "{comment}"
    );
    assert!(
        comment.contains("+CREATE TABLE public.specials"),
        "{comment}"
    );
    let url = url_of(&comment);
    assert!(!url.ends_with(&format!(":{taken}")), "{url}");
    let out = env.down(8);
    assert!(out.status.success(), "{}", text(&out));

    // A stale record alone: down cleans it and succeeds.
    std::fs::write(apps.join(format!("{}.json", env.app(9))), stale.to_string()).unwrap();
    let out = env.down(9);
    assert!(out.status.success(), "{}", text(&out));
    drop(squatter);
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[test]
fn ctrl_c_in_the_middle_tears_everything_down() {
    let toml = kitchen_toml("").replace(
        "command = \"exec ",
        "command = \"sleep 60 & sleep 60; exec ",
    );
    let mut env = Env::new(&toml);
    let child = env
        .command(&["preview", "up", "--local", "--pr", "11", "--sha", "abc1234"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the app is spawned (its state is recorded), then interrupt.
    let state = env
        .state()
        .join("apps")
        .join(format!("{}.json", env.app(11)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.exists() {
        assert!(Instant::now() < deadline, "the app never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    env.keep(&out);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("interrupted"), "{}", text(&out));
    env.assert_nothing_left();
    env.assert_no_secrets();
}

/// `atlas demo` itself, with the repository's own atlas.toml (load test and baseline gate): the
/// preview goes up and down, the destroyed comment and the job summary render from the contract
/// restored from the comment's record, and nothing is left behind.
#[test]
fn the_demo_runs_up_and_down_with_its_load_gate() {
    // The repository's atlas.toml, relocated to a project directory of its own (paths made
    // absolute) so that the gate compares with a baseline written for this test: a machine
    // busy with other builds measures latencies the committed baseline would call a regression.
    let root = local_env::ROOT;
    let project = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(format!("{root}/atlas.toml"))
        .unwrap()
        .replace("sh examples/", &format!("sh {root}/examples/"))
        .replace(
            "-p kitchen",
            &format!("--manifest-path {root}/Cargo.toml -p kitchen"),
        )
        .replace("\"examples/kitchen/baseline.json\"", "\"baseline.json\"");
    assert!(
        toml.contains("[load]") && toml.contains("[baseline]"),
        "{toml}"
    );
    std::fs::write(project.path().join("atlas.toml"), toml).unwrap();
    let mut baseline: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/examples/kitchen/baseline.json")).unwrap(),
    )
    .unwrap();
    // a baseline 100x slower than the committed one: this run cannot be a regression of it.
    if let Some(d) = baseline["metrics"]["http_req_duration"].as_object_mut() {
        for v in d.values_mut() {
            *v = serde_json::json!(v.as_f64().unwrap_or(0.0) * 100.0);
        }
    }
    std::fs::write(project.path().join("baseline.json"), baseline.to_string()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = crate::common::bin::atlas()
        .args(["demo", "--state-dir"])
        .arg(state.path())
        .current_dir(project.path())
        .envs(crate::common::bin::host_env())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (up, down) = stdout
        .split_once("Preview destroyed")
        .unwrap_or_else(|| panic!("no destroyed comment: {all}"));
    // up: the gate compared with the baseline (a Baseline column), down: the same verdict.
    assert!(
        up.contains("| Metric | Value | Baseline | Change | Verdict |"),
        "{up}"
    );
    let verdict = ["load: pass", "load: fail", "load: inconclusive"]
        .into_iter()
        .find(|v| up.contains(v))
        .unwrap_or_else(|| panic!("no gate verdict: {up}"));
    assert!(
        down.contains(verdict),
        "the destroyed comment keeps {verdict}: {down}"
    );
    for c in CLAUSES {
        assert!(down.contains(c), "{c}: {down}");
    }
    // the demo is anonymized: its customers reach the app masked, the smoke check proves that
    // no parent email is visible through the API.
    assert!(
        up.contains("anonymized") && up.contains("parent's rows: masked"),
        "{up}"
    );
    assert!(
        up.lines()
            .any(|l| l.contains("`GET /users` | 200 | 200") && l.contains('✅')),
        "{up}"
    );
    assert!(!all.contains("@kitchen-customers.test"), "{all}");
    for line in [
        "✓ no database",
        "✓ no process",
        "✓ nothing listens on port",
        "✓ PostgreSQL stopped",
    ] {
        assert!(all.contains(line), "{line}: {all}");
    }
}

#[test]
fn extend_moves_the_local_app_and_database_alike_and_the_sweep_obeys_it() {
    let mut env = Env::new(&kitchen_toml(""));
    let out = env.up(7);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        env.comment(7).contains("local previews do not sleep"),
        "{}",
        env.comment(7)
    );
    // Three days out: the open PR's preview is kept.
    let out = env.atlas(&["preview", "extend", "--local", "--pr", "7", "--ttl", "72h"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved: Vec<&str> = v["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(
        moved,
        vec![
            format!("app {}", env.app(7)).as_str(),
            "database-branch atlas_pr_7"
        ]
    );
    // The comment's lifecycle clause shows the new expiry as a person reads it.
    // (72 h less the moments since: still "in 3 days", days are rounded.)
    let at: chrono::DateTime<chrono::Utc> = v["expires"].as_str().unwrap().parse().unwrap();
    let shown = format!("expires {} (in 3 days)", at.format("%Y-%m-%d %H:%M UTC"));
    assert!(
        env.comment(7).contains(&shown),
        "{shown}: {}",
        env.comment(7)
    );
    assert!(text(&out).contains("(in 3 days)"), "{}", text(&out));
    let out = env.atlas(&["sweep", "--local"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!env.databases().is_empty(), "kept: {}", text(&out));

    // One second out, then past it: both go in the same sweep, by the same clock.
    let out = env.atlas(&["preview", "extend", "--local", "--pr", "7", "--ttl", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(2100));
    let out = env.atlas(&["sweep", "--local"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("its TTL passed"), "{log}");
    env.assert_nothing_left();
    let out = env.atlas(&["preview", "extend", "--local", "--pr", "7"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("PR #7 has no preview"),
        "{}",
        text(&out)
    );
    env.assert_no_secrets();
}

/// Issue 17 locally: `atlas preview pin` records the pin on the local app, clears the local
/// database's expiry and rewrites the comment; the sweep keeps a pinned preview past its TTL,
/// and an unpinned one goes by it again.
#[test]
fn a_pinned_local_preview_outlives_its_ttl_until_unpinned() {
    let mut env = Env::new(&kitchen_toml(""));
    let out = env.up(7);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.atlas(&["preview", "extend", "--local", "--pr", "7", "--ttl", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.atlas(&["preview", "pin", "--local", "--pr", "7", "--by", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pinned_by"], "alice", "{v}");
    assert_eq!(v["changed"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        env.comment(7).contains("pinned by @alice"),
        "{}",
        env.comment(7)
    );
    std::thread::sleep(Duration::from_millis(2100));
    let out = env.atlas(&["sweep", "--local"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pinned by @alice"), "{}", text(&out));
    assert!(!env.databases().is_empty(), "kept: {}", text(&out));

    // Unpinned: the expiry is renewed (`[preview] ttl`), then moved into the past again.
    let out = env.atlas(&["preview", "pin", "--local", "--pr", "7", "--unpin"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!env.comment(7).contains("pinned by"), "{}", env.comment(7));
    let out = env.atlas(&["preview", "extend", "--local", "--pr", "7", "--ttl", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(2100));
    let out = env.atlas(&["sweep", "--local"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("its TTL passed"), "{}", text(&out));
    env.assert_nothing_left();
    env.assert_no_secrets();
}
