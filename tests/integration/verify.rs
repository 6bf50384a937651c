//! The verify and release chains end to end on this machine: real processes (a small python
//! app whose behaviour follows its version), a real PostgreSQL cluster started by atlas, and the
//! `atlas` binary; plus the chain over a `LocalFleet` driven from the library, where the test
//! can look at every production process before teardown.

use crate::common::local_env;
use crate::common::verify_env;

use std::path::Path;

use atlas::config::Settings;
use atlas::provider::Platform;
use atlas::provider::local::process::LocalProcess;
use atlas::verify::local::LocalFleet;
use atlas::verify::{Chain, Fleet, LoadModuleGate, Mode, Release, chain};
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

[load]
rate = 100.0
duration = "2s"
warmup = "0s"

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
    let load = LoadModuleGate::from_settings(&settings);
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
    require_postgres();
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
    // parent once, QA copy, rehearsal copy, then production
    let runs: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        runs,
        vec![
            "atlas_main",
            "atlas_verify_qa",
            "atlas_rehearsal",
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
    // deployment records for qa and production, each ending in success
    let mut envs = Vec::new();
    for e in std::fs::read_dir(dir.path().join("state/forge/deployments")).unwrap() {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
        let last = d["statuses"].as_array().unwrap().last().unwrap()["state"].clone();
        envs.push((d["environment"].as_str().unwrap().to_string(), last));
    }
    envs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        envs,
        vec![
            ("production".to_string(), serde_json::json!("success")),
            ("qa".to_string(), serde_json::json!("success"))
        ]
    );
    // nothing left: a database or process that survived teardown fails the run (exit 2)
    assert!(!port_open(r["qa_url"].as_str().unwrap()));
    eprintln!("{err}");
}

#[test]
fn failing_rehearsal_never_touches_production() {
    require_postgres();
    let dir = tempdir();
    let log = dir.path().join("migrations.log");
    // fails only on the copy of production (production's data would break it)
    let m = format!(
        "echo \"${{DATABASE_URL##*/}}\" >> {}; case \"$DATABASE_URL\" in */atlas_rehearsal) echo 'duplicate key in orders' >&2; exit 1;; esac",
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
        vec!["atlas_main", "atlas_verify_qa", "atlas_rehearsal"]
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
}

// ---------------------------------------------------------------------------------------------
// Fly + Neon: the same chain over the fake Machines API (and Fly's proxy, pinned per machine
// with `fly-force-instance-id`) and the fake Neon API for the rehearsal branch.

mod cloud {
    use std::time::Duration;

    use atlas::config::Settings;
    use atlas::http::{RetryPolicy, Timeouts};
    use atlas::provider::BranchRequest;

    use atlas::secret::Secret;

    use atlas::verify::migrate::ProviderReleaseDb;
    use atlas::verify::{
        Chain, ChainReport, LoadModuleGate, Mode, Release, ReleaseDatabase, chain,
    };

    use crate::common::fake_fly::FakeFly;
    use crate::common::fake_neon::FakeNeon;
    use crate::common::verify_env::*;
    use crate::common::world;

    const FLY_TOKEN: &str = "fly-token-Verify-77q";
    const NEON_KEY: &str = "neon-key-Verify-55z";
    const PROD_PW: &str = "prod-db-pw-Zx81";
    const V1: &str = "registry.fly.io/kitchen:v1";

    struct World {
        fly: FakeFly,
        neon: FakeNeon,
        prod_proxy: FlyProxy,
        prod_ids: Vec<String>,
    }

    async fn release(
        version: &str,
        edit: impl FnOnce(&mut Settings),
        before: impl FnOnce(&World),
    ) -> (ChainReport, World) {
        let fly = FakeFly::start(FLY_TOKEN).await;
        let neon = FakeNeon::start(NEON_KEY).await;
        let prod_ids = seed_fly_app(&fly, "kitchen", 3, V1);
        seed_fly_app(&fly, "kitchen-qa", 1, V1);
        let prod_proxy = fly_proxy(fly.state.clone(), "kitchen").await;
        let qa_proxy = fly_proxy(fly.state.clone(), "kitchen-qa").await;
        let mut settings = Settings::parse(
            r#"
[app]
health_path = "/healthz"

[database]
migrations = "echo migrating"

[load]
rate = 100.0
duration = "1s"
warmup = "0s"

[verify]
machines = 3
qa_app = "kitchen-qa"
production_app = "kitchen"
health_timeout = "2s"
integration = "test -n \"$BASE_URL\""

[verify.canary]
paths = ["/", "/menu"]
samples = 3
requests_per_sample = 60
min_requests = 150
p95_floor_ms = 15.0
"#,
            "atlas.toml",
        )
        .unwrap();
        settings.verify.qa_url = Some(qa_proxy.url.clone());
        settings.verify.production_url = Some(prod_proxy.url.clone());
        edit(&mut settings);
        let wire = world::Wire {
            policy: RetryPolicy::fast(),
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(5),
            },
            poll: Duration::from_millis(5),
        };
        let fleet = world::fly_fleet(&fly, &settings, "kitchen", "atlas-org", &wire);
        let neon_db = world::neon_database(&neon, &settings, "octo-org/kitchen", &wire);
        let db = ProviderReleaseDb::new(
            Box::new(neon_db),
            BranchRequest {
                pr: 0,
                name: settings.verify.rehearsal_branch.clone(),
                parent: "main".into(),
                schema_only: false,
                migrations_tables: Vec::new(),
                expires_at: None,
                repository: "octo-org/kitchen".into(),
                database: "neondb".into(),
                role: "neondb_owner".into(),
                masking: None,
                anonymize_timeout: std::time::Duration::from_secs(60),
                suspend_after: None,
            },
            Secret::new(format!(
                "postgres://owner:{PROD_PW}@ep-prod.neon.tech/neondb"
            )),
        );
        let world = World {
            fly,
            neon,
            prod_proxy,
            prod_ids,
        };
        before(&world);
        let load = LoadModuleGate::from_settings(&settings);
        let env = |k: &str| std::env::var(k).ok();
        let c = Chain {
            settings: &settings,
            fleet: &fleet,
            database: Some(&db as &dyn ReleaseDatabase),
            load: &load,
            forge: None,
            env_source: &env,
            progress: &|l| eprintln!("{l}"),
        };
        let r = chain::run(
            &c,
            &Release {
                mode: Mode::Release,
                version: version.into(),
                sha: "0123456789abcdef0123".into(),
            },
        )
        .await;
        (r, world)
    }

    fn all_v1(w: &World) {
        let images = fly_images(&w.fly, "kitchen");
        assert_eq!(images.len(), 3, "a canary survived: {images:?}");
        assert!(images.iter().all(|(_, i)| i == V1), "{images:?}");
    }

    fn no_violations(w: &World) {
        assert!(
            w.fly.core.violations().is_empty(),
            "{:?}",
            w.fly.core.violations()
        );
        assert!(
            w.neon.core.violations().is_empty(),
            "{:?}",
            w.neon.core.violations()
        );
        assert!(
            w.neon.branch("atlas-rehearsal").is_none(),
            "rehearsal branch survived"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthy_release_promotes_on_fly() {
        let v2 = "registry.fly.io/kitchen:v2";
        let (r, w) = release(v2, |_| {}, |_| {}).await;
        assert_eq!(r.verdict, "passed", "{:#?}", r.stages);
        let images = fly_images(&w.fly, "kitchen");
        assert_eq!(images.len(), 3);
        assert!(images.iter().all(|(_, i)| i == v2), "{images:?}");
        assert_eq!(fly_images(&w.fly, "kitchen-qa")[0].1, v2);
        // one canary created and destroyed
        assert_eq!(w.fly.core.count("Machines_create"), 1);
        assert_eq!(w.fly.core.count("Machines_delete"), 1);
        // the rehearsal branch was really made on Neon, compared and deleted
        assert_eq!(w.neon.core.count("createProjectBranch"), 1);
        assert_eq!(w.neon.core.count("getProjectBranchSchemaComparison"), 1);
        assert_eq!(w.neon.core.count("deleteProjectBranch"), 1);
        // a 3-machine release: list, QA update + wait, canary create + wait, 3 updates + waits
        assert_eq!(w.fly.core.call_count(), 19, "{:?}", w.fly.core.calls());
        no_violations(&w);
        let md = atlas::verify::render(&atlas::report::Renderer::new(None).unwrap(), &r).unwrap();
        assert!(!md.contains(PROD_PW) && !md.contains(FLY_TOKEN));
        let _ = &w.prod_proxy;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn canary_with_more_errors_is_rolled_back_on_fly() {
        let (r, w) = release("registry.fly.io/kitchen:v2-errors", |_| {}, |_| {}).await;
        assert_eq!(r.failed_stage.as_deref(), Some("canary"), "{:#?}", r.stages);
        assert_eq!(r.verdict, "rolled-back");
        all_v1(&w);
        no_violations(&w);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slower_canary_is_rolled_back_on_fly() {
        let (r, w) = release("registry.fly.io/kitchen:v2-slow", |_| {}, |_| {}).await;
        assert_eq!(r.failed_stage.as_deref(), Some("canary"), "{:#?}", r.stages);
        assert!(r.error.as_deref().unwrap().contains("p95"));
        all_v1(&w);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_rehearsal_never_touches_production_on_fly() {
        // the migrations fail on anything but production's database: the rehearsal branch
        let m = format!(
            "case \"$DATABASE_URL\" in *{PROD_PW}*) ;; *) echo 'lock timeout' >&2; exit 1;; esac"
        );
        let (r, w) = release(
            "registry.fly.io/kitchen:v2",
            |s| s.database.migrations = Some(m),
            |_| {},
        )
        .await;
        assert_eq!(r.failed_stage.as_deref(), Some("migrations rehearsal"));
        all_v1(&w);
        assert_eq!(w.fly.core.count("Machines_create"), 0);
        assert!(r.migrations.as_ref().unwrap().production.is_none());
        no_violations(&w);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_mid_rollout_restores_every_changed_machine_on_fly() {
        let v2 = "registry.fly.io/kitchen:v2";
        let (r, w) = release(
            v2,
            |_| {},
            |w| {
                // the second machine never becomes healthy on v2
                w.prod_proxy
                    .broken
                    .lock()
                    .unwrap()
                    .push((w.prod_ids[1].clone(), v2.to_string()));
            },
        )
        .await;
        assert_eq!(
            r.failed_stage.as_deref(),
            Some("production rollout"),
            "{:#?}",
            r.stages
        );
        assert_eq!(r.verdict, "rolled-back");
        all_v1(&w);
        let states: Vec<&str> = r.machines.iter().map(|m| m.state.as_str()).collect();
        assert_eq!(states, vec!["restored", "restored", "unchanged"]);
        no_violations(&w);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn canary_that_never_becomes_healthy_is_removed_on_fly() {
        let v2 = "registry.fly.io/kitchen:v2-broken";
        let (r, w) = release(
            v2,
            |_| {},
            |w| {
                // QA is fine (another proxy); every production machine on v2 fails its health check
                w.prod_proxy
                    .broken
                    .lock()
                    .unwrap()
                    .push(("*".into(), v2.into()));
            },
        )
        .await;
        assert_eq!(r.failed_stage.as_deref(), Some("canary"), "{:#?}", r.stages);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("did not become healthy"),
            "{:?}",
            r.error
        );
        assert_eq!(atlas::error::exit_code(&r.result().unwrap_err()), 1);
        all_v1(&w);
        assert_eq!(w.fly.core.count("Machines_create"), 1);
        assert_eq!(w.fly.core.count("Machines_delete"), 1);
        no_violations(&w);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qa_integration_failure_stops_before_the_load_test_on_fly() {
        let (r, w) = release(
            "registry.fly.io/kitchen:v2",
            |s| s.verify.integration = Some("exit 4".into()),
            |_| {},
        )
        .await;
        assert_eq!(r.failed_stage.as_deref(), Some("integration tests"));
        let load = r
            .stages
            .iter()
            .find(|s| s.name == "load test + baseline gate")
            .unwrap();
        assert_eq!(load.status, atlas::verify::StageStatus::NotRun);
        all_v1(&w);
        assert_eq!(w.fly.core.count("Machines_create"), 0);
        assert!(w.neon.branch("atlas-rehearsal").is_none());
    }
}

/// `atlas run` on a tag push, as the action runs it: inputs in `INPUT_*`, the event from the
/// runner, the chain on the fake Fly + Neon; the report lands in the job summary and outputs,
/// and no secret appears anywhere.
mod action {
    use crate::common::fake_fly::FakeFly;
    use crate::common::fake_neon::{self, FakeNeon};
    use crate::common::verify_env::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn atlas_run_releases_a_tag_on_fly() {
        let fly = FakeFly::start("fly-token-Action-31").await;
        let neon = FakeNeon::start("neon-key-Action-42").await;
        seed_fly_app(&fly, "kitchen", 2, "registry.fly.io/kitchen:v1");
        seed_fly_app(&fly, "kitchen-qa", 1, "registry.fly.io/kitchen:v1");
        let prod = fly_proxy(fly.state.clone(), "kitchen").await;
        let qa = fly_proxy(fly.state.clone(), "kitchen-qa").await;
        let dir = tempdir();
        let d = dir.path();
        std::fs::write(
            d.join("atlas.toml"),
            format!(
                r#"
[app]
health_path = "/healthz"

[database]
migrations = "echo migrating $DATABASE_URL"

[load]
rate = 100.0
duration = "1s"
warmup = "0s"

[verify]
machines = 2
qa_app = "kitchen-qa"
production_app = "kitchen"
qa_url = "{}"
production_url = "{}"
health_timeout = "5s"

[[verify.checks]]
path = "/version"
body_contains = "kitchen:v2"

[verify.canary]
samples = 2
requests_per_sample = 60
min_requests = 100
p95_floor_ms = 15.0
"#,
                qa.url, prod.url
            ),
        )
        .unwrap();
        // The runner-shaped environment every action test uses; the project is `d`.
        let payload =
            std::fs::read_to_string(crate::common::runner_env::fixture("push.tag.created.json"))
                .unwrap();
        let d_s = d.display().to_string();
        let mut env = crate::common::runner_env::RunnerEnv::new(
            "push",
            &payload,
            &[
                ("command", "release"),
                ("working_directory", &d_s),
                ("image", "registry.fly.io/kitchen:v2"),
                ("fly_api_token", "fly-token-Action-31"),
                ("fly_org", "atlas-org"),
                ("fly_api_url", &fly.api_url),
                ("neon_api_key", "neon-key-Action-42"),
                ("neon_project_id", fake_neon::PROJECT),
                ("neon_api_url", &neon.api_url),
                // No GitHub in this world: the release talks to Fly and Neon only.
                ("github_token", ""),
            ],
        );
        env.vars
            .insert("GITHUB_REPOSITORY".into(), "octo-org/kitchen".into());
        env.vars.insert(
            "PRODUCTION_DATABASE_URL".into(),
            "postgres://o:prod-pw-Action-53@ep/neondb".into(),
        );
        let (o, env) = tokio::task::spawn_blocking(move || {
            let o = env
                .command(crate::common::bin::ATLAS)
                .arg("run")
                .output()
                .unwrap();
            (o, env)
        })
        .await
        .unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
        let summary = env.summary_file();
        let outputs = env.output_file();
        assert!(summary.contains("Atlas release"), "{summary}");
        assert!(summary.contains("✅ passed"), "{summary}");
        assert!(outputs.contains("verdict"), "{outputs}");
        let images = fly_images(&fly, "kitchen");
        assert!(
            images
                .iter()
                .all(|(_, i)| i == "registry.fly.io/kitchen:v2"),
            "{images:?}"
        );
        // `::add-mask::` is how the runner learns a secret: the one place it may appear.
        let out: String = out
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .collect::<Vec<_>>()
            .join("\n");
        for t in [&out, &err, &summary, &outputs] {
            for s in [
                "fly-token-Action-31",
                "neon-key-Action-42",
                "prod-pw-Action-53",
            ] {
                assert!(!t.contains(s), "{s} leaked in:\n{t}");
            }
        }
        assert!(
            fly.core.violations().is_empty(),
            "{:?}",
            fly.core.violations()
        );
        assert!(neon.core.violations().is_empty());
        assert!(neon.branch("atlas-rehearsal").is_none());
    }
}

#[test]
fn slower_qa_fails_the_load_gate_against_the_baseline() {
    let dir = tempdir();
    std::fs::write(dir.path().join("atlas.toml"), toml(dir.path(), "")).unwrap();
    // a seed-format baseline measured when the app answered in about a millisecond
    std::fs::write(
        dir.path().join("baseline.json"),
        r#"{"timestamp":"2026-01-01T00:00:00Z","metrics":{"http_req_duration":{"p95":2.0,"avg":1.0},"http_reqs":{"total":200},"errors":{"rate":0.0}}}"#,
    )
    .unwrap();
    let o = atlas(dir.path(), &["verify", "--local", "--sha", "v2-slow"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let r = report_json(dir.path());
    assert_eq!(
        r["failed_stage"], "load test + baseline gate",
        "{out}\n{err}"
    );
    assert_eq!(r["load"]["comparison"]["verdict"], "fail");
    assert!(out.contains("Load test against QA"), "{out}");
}

#[test]
fn sigterm_mid_release_tears_every_process_down() {
    let dir = tempdir();
    // a slow load test keeps the chain busy long enough to be interrupted
    let t = toml(dir.path(), "").replace("duration = \"2s\"", "duration = \"20s\"");
    std::fs::write(dir.path().join("atlas.toml"), t).unwrap();
    let mut cmd = crate::common::bin::atlas();
    cmd.args(["release", "--local", "--sha", "v2"])
        .current_dir(dir.path())
        .env("PATH", std::env::var("PATH").unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // wait until QA and both production processes run
    let apps = dir.path().join("state/apps");
    let mut procs: Vec<(u64, i32)> = Vec::new();
    for _ in 0..300 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        procs = std::fs::read_dir(&apps)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .map(|v| {
                        (
                            v["port"].as_u64().unwrap(),
                            v["pid"].as_i64().unwrap() as i32,
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if procs.len() == 3 {
            break;
        }
    }
    assert_eq!(
        procs.len(),
        3,
        "qa and two production processes never started"
    );
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted (SIGTERM)"), "{err}");
    // Check the processes themselves: a freed port can be taken at once by another test's app
    // running in parallel, so "port closed" would be a flaky proxy for "process gone".
    for (port, pid) in procs {
        // A killed process may linger as a zombie until its new parent reaps it: that is gone.
        let state_of = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
                .flatten()
        };
        let mut state = state_of();
        for _ in 0..30 {
            if matches!(state, None | Some('Z') | Some('X')) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            state = state_of();
        }
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "process {pid} (port {port}) still running (state {state:?}): {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default()
        );
    }
}

/// The example app (`examples/kitchen`, axum + PostgreSQL) released twice on this machine: the
/// second release boots production at the version the first one promoted, rehearses the
/// migrations on a copy of the live database, and promotes again.
#[test]
fn kitchen_example_releases_twice_locally() {
    require_postgres();
    let bin = local_env::kitchen();
    let dir = tempdir();
    let toml = format!(
        r#"
[app]
name = "kitchen"
health_path = "/healthz"
readiness_timeout = "30s"

[database]
migrations = "sh {root}/examples/kitchen/migrate.sh"

[local]
command = "exec {bin}"
state_dir = "state"

[load]
rate = 100.0
duration = "2s"
warmup = "0s"
requests = [{{ path = "/menu" }}]

[verify]
machines = 2
integration = "curl -fsS \"$BASE_URL/menu\" | grep -q margherita"

[[verify.checks]]
path = "/menu"
body_contains = "margherita"

[verify.canary]
paths = ["/menu", "/healthz"]
samples = 2
requests_per_sample = 100
min_requests = 150
"#,
        root = local_env::ROOT,
        bin = bin.display()
    );
    std::fs::write(dir.path().join("atlas.toml"), toml).unwrap();
    let o = atlas(dir.path(), &["release", "--local", "--sha", "v1"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let o = atlas(dir.path(), &["release", "--local", "--sha", "v2"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("instance(s) at v1"), "{err}");
    let r = report_json(dir.path());
    for m in r["machines"].as_array().unwrap() {
        assert_eq!(m["before"], "v1");
        assert_eq!(m["after"], "v2");
    }
    assert_eq!(r["canary"]["verdict"], "promote");
    eprintln!("{err}");
}
