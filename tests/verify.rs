//! The verify and release chains end to end on this machine: real processes (a small python
//! app whose behaviour follows its version), a real PostgreSQL cluster started by atlas, and the
//! `atlas` binary; plus the chain over a `LocalFleet` driven from the library, where the test
//! can look at every production process before teardown.

#[path = "support/verify_env.rs"]
mod verify_env;

use std::path::Path;

use atlas::config::Settings;
use atlas::provider::Platform;
use atlas::provider::local_process::LocalProcess;
use atlas::verify::local::LocalFleet;
use atlas::verify::{Chain, Fleet, Mode, ProbeLoad, Release, chain};
use verify_env::*;

fn toml(dir: &Path, extra: &str) -> String {
    let cmd = write_app(dir);
    format!(
        r#"
[app]
health_path = "/healthz"
readiness_timeout = "20s"

[local]
command = "{cmd}"
state_dir = "state"

[verify]
machines = 2
health_timeout = "20s"

[[verify.checks]]
path = "/healthz"

[verify.canary]
paths = ["/", "/menu"]
samples = 3
requests_per_sample = 60
min_requests = 150
concurrency = 4
p95_floor_ms = 15.0
{extra}
"#
    )
}

async fn version_of(fleet: &LocalFleet, i: &atlas::verify::Instance) -> String {
    let t = fleet.target(i);
    reqwest::get(format!("{}/version", t.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Runs a release of `version` over two local production processes at `v1` and returns the
/// report, the versions the processes answer with afterwards, and whether a canary survived.
async fn library_release(version: &str) -> (atlas::verify::ChainReport, Vec<(String, String)>) {
    let dir = tempdir();
    let text = toml(dir.path(), "").replace("[[verify.checks]]\npath = \"/healthz\"\n", "");
    let mut settings = Settings::parse(&text, "atlas.toml").unwrap();
    settings.verify.load = false;
    let cmd = settings.local.command.clone().unwrap();
    let platform = LocalProcess::new(&dir.path().join("state"), &cmd, dir.path());
    let fleet = LocalFleet::new(Box::new(platform), "t", &settings, None, None);
    fleet.boot_production("v1", 2).await.unwrap();
    let load = ProbeLoad::from_settings(&settings).unwrap();
    let env = |k: &str| std::env::var(k).ok();
    let c = Chain {
        settings: &settings,
        fleet: &fleet,
        database: None,
        load: &load,
        forge: None,
        env_source: &env,
        progress: &|l| eprintln!("{l}"),
    };
    let report = chain::run(
        &c,
        &Release {
            mode: Mode::Release,
            version: version.into(),
            sha: "abc".into(),
        },
    )
    .await;
    let mut live = Vec::new();
    for i in fleet.production().await.unwrap() {
        live.push((i.id.clone(), version_of(&fleet, &i).await));
    }
    // the canary process is gone: its app state was removed
    let check = LocalProcess::new(&dir.path().join("state"), &cmd, dir.path());
    assert!(check.state("t-canary").is_none(), "canary survived");
    let left = fleet.teardown().await;
    assert!(left.is_empty(), "{left:?}");
    assert!(check.list_apps().await.unwrap().is_empty());
    (report, live)
}

fn v1_everywhere() -> Vec<(String, String)> {
    vec![
        ("prod-1".into(), "v1".into()),
        ("prod-2".into(), "v1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_release_promotes_every_process() {
    let (r, live) = library_release("v2").await;
    assert_eq!(r.verdict, "passed", "{:#?}", r.stages);
    assert_eq!(
        live,
        vec![
            ("prod-1".to_string(), "v2".to_string()),
            ("prod-2".to_string(), "v2".to_string())
        ]
    );
    let canary = r.canary.unwrap();
    assert_eq!(canary.canary.requests, 180);
    assert_eq!(canary.stable.requests, 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_with_more_errors_is_rolled_back_and_production_unchanged() {
    let (r, live) = library_release("v2-errors").await;
    assert_eq!(r.failed_stage.as_deref(), Some("canary"), "{:#?}", r.stages);
    assert_eq!(r.verdict, "rolled-back");
    assert!(r.error.as_deref().unwrap().contains("error rate"));
    assert_eq!(live, v1_everywhere());
    let e = r.result().unwrap_err();
    assert_eq!(atlas::error::exit_code(&e), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slower_canary_is_rolled_back_and_production_unchanged() {
    let (r, live) = library_release("v2-slow").await;
    assert_eq!(r.failed_stage.as_deref(), Some("canary"), "{:#?}", r.stages);
    assert!(r.error.as_deref().unwrap().contains("p95"), "{:?}", r.error);
    assert_eq!(live, v1_everywhere());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_mid_rollout_restores_every_changed_process() {
    // prod-1 takes the new version, prod-2 refuses to start on it
    let (r, live) = library_release("v2-breaks-prod-2").await;
    assert_eq!(
        r.failed_stage.as_deref(),
        Some("production rollout"),
        "{:#?}",
        r.stages
    );
    assert_eq!(r.verdict, "rolled-back");
    assert_eq!(live, v1_everywhere());
    let states: Vec<(String, String)> = r
        .machines
        .iter()
        .map(|m| (m.id.clone(), m.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("prod-1".to_string(), "restored".to_string()),
            ("prod-2".to_string(), "restored".to_string())
        ]
    );
}

#[test]
fn qa_integration_failure_stops_before_the_load_test() {
    let dir = tempdir();
    let t = toml(dir.path(), "").replace(
        "[verify]\n",
        "[verify]\nintegration = \"echo suite ran against $BASE_URL; exit 4\"\n",
    );
    std::fs::write(dir.path().join("atlas.toml"), t).unwrap();
    let o = atlas(dir.path(), &["verify", "--local", "--sha", "v2"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("integration tests failed: command exited 4"),
        "{err}"
    );
    let r = report_json(dir.path());
    let stages = r["stages"].as_array().unwrap();
    let load = stages.iter().find(|s| s["stage"] == "load-gate").unwrap();
    assert_eq!(load["status"], "not-run");
    assert!(
        r["integration"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("suite ran against http://127.0.0.1:")
    );
    // nothing left running
    assert!(!port_open(r["qa_url"].as_str().unwrap()));
    assert!(out.contains("failed at integration tests"), "{out}");
}

#[test]
fn local_verify_without_database_passes() {
    let dir = tempdir();
    std::fs::write(dir.path().join("atlas.toml"), toml(dir.path(), "")).unwrap();
    let o = atlas(dir.path(), &["verify", "--local", "--sha", "v2"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let r = report_json(dir.path());
    assert_eq!(r["verdict"], "passed");
    assert_eq!(r["stages"].as_array().unwrap().len(), 3);
    assert!(!port_open(r["qa_url"].as_str().unwrap()));
}

fn pg_toml(dir: &Path, migrations: &str) -> String {
    toml(dir, "").replace(
        "[verify]\n",
        &format!("[database]\nmigrations = '''{migrations}'''\n\n[verify]\n"),
    )
}

#[test]
fn local_release_with_postgres_promotes_and_leaves_nothing() {
    if !have_postgres() {
        eprintln!("skipped: no PostgreSQL binaries");
        return;
    }
    let dir = tempdir();
    let log = dir.path().join("migrations.log");
    let m = format!(
        "echo \"${{DATABASE_URL##*/}}\" >> {}; psql -X -q -v ON_ERROR_STOP=1 \"$DATABASE_URL\" -c 'create table if not exists orders (id int primary key, note text)'",
        log.display()
    );
    std::fs::write(dir.path().join("atlas.toml"), pg_toml(dir.path(), &m)).unwrap();
    let o = atlas(dir.path(), &["release", "--local", "--sha", "v2"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let r = report_json(dir.path());
    assert_eq!(r["verdict"], "passed");
    assert!(r["migrations"]["schema_diff"].is_string());
    // parent once, QA branch, rehearsal branch, then production
    let runs: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        runs,
        vec![
            "atlas_main",
            "atlas_pr_0",
            "atlas_pr_4294967295",
            "atlas_main"
        ]
    );
    let stable = std::fs::read_to_string(dir.path().join("state/verify/stable.json")).unwrap();
    assert!(stable.contains("\"v2\""));
    // no secret in any output: the cluster's password
    let cluster: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/pg/cluster.json")).unwrap(),
    )
    .unwrap();
    let pw = cluster["password"].as_str().unwrap();
    let md = std::fs::read_to_string(dir.path().join("state/verify/report.md")).unwrap();
    for t in [&out, &err, &md] {
        assert!(!t.contains(pw));
    }
    // nothing left: no branch recorded, no process
    let branches =
        std::fs::read_to_string(dir.path().join("state/pg/branches.json")).unwrap_or_default();
    assert!(!branches.contains("atlas_pr_"), "{branches}");
    assert!(!port_open(r["qa_url"].as_str().unwrap()));
    eprintln!("{err}");
}

#[test]
fn failing_rehearsal_never_touches_production() {
    if !have_postgres() {
        eprintln!("skipped: no PostgreSQL binaries");
        return;
    }
    let dir = tempdir();
    let log = dir.path().join("migrations.log");
    // fails only on the copy of production (production's data would break it)
    let m = format!(
        "echo \"${{DATABASE_URL##*/}}\" >> {}; case \"$DATABASE_URL\" in *4294967295*) echo 'duplicate key in orders' >&2; exit 1;; esac",
        log.display()
    );
    std::fs::write(dir.path().join("atlas.toml"), pg_toml(dir.path(), &m)).unwrap();
    let o = atlas(dir.path(), &["release", "--local", "--sha", "v2"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let r = report_json(dir.path());
    assert_eq!(r["failed_stage"], "migrations rehearsal");
    let runs: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // production (atlas_main) migrated only when it was first created, never after the rehearsal
    assert_eq!(
        runs,
        vec!["atlas_main", "atlas_pr_0", "atlas_pr_4294967295"]
    );
    for s in r["stages"].as_array().unwrap() {
        if ["apply-migrations", "canary", "rollout"].contains(&s["stage"].as_str().unwrap()) {
            assert_eq!(s["status"], "not-run", "{s}");
        }
    }
    assert!(
        r["migrations"]["rehearsal"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("duplicate key")
    );
    assert_eq!(r["rolled_back"], false);
    assert!(!dir.path().join("state/verify/stable.json").exists());
    let branches =
        std::fs::read_to_string(dir.path().join("state/pg/branches.json")).unwrap_or_default();
    assert!(!branches.contains("atlas_pr_"), "{branches}");
}
