//! Unit tests of the chain logic over an in-memory fleet. The fake serves HTTP (one axum server
//! for every instance, pinned by an `x-instance` header, like Fly's `fly-force-instance-id`) so
//! the canary analysis measures real requests; versions containing `errors` answer 500 to every
//! fourth request and versions containing `slow` add 40 ms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::chain::{self, Chain, LoadGate, Mode, Outcome, Release, Stage, StageStatus};
use super::fleet::{Fleet, Instance, Target};
use super::migrate::ReleaseDatabase;
use crate::config::Settings;
use crate::provider::stub::Stub;
use crate::secret::Secret;

#[derive(Default)]
struct FakeState {
    instances: BTreeMap<String, Instance>,
    canary: Option<String>,
    log: Vec<String>,
    /// update_instance(id, version) fails for these pairs.
    fail_update: Vec<(String, String)>,
    fail_stop_canary: bool,
    fail_qa: bool,
    /// update_instance answers with a provider API error (500) for this id.
    api_error_on: Option<String>,
    counter: u64,
    next_canary: u32,
}

#[derive(Clone)]
struct FakeFleet {
    state: Arc<Mutex<FakeState>>,
    base_url: String,
}

async fn handler(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<FakeState>>>,
    headers: axum::http::HeaderMap,
) -> (axum::http::StatusCode, String) {
    let id = headers
        .get("x-instance")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (version, n) = {
        let mut s = state.lock().unwrap();
        s.counter += 1;
        let v = s
            .instances
            .get(&id)
            .map(|i| i.version.clone())
            .unwrap_or_default();
        (v, s.counter)
    };
    if version.contains("slow") {
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    if version.contains("errors") && n % 4 == 0 {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, version);
    }
    (axum::http::StatusCode::OK, version)
}

impl FakeFleet {
    async fn new(machines: usize, version: &str) -> FakeFleet {
        let state = Arc::new(Mutex::new(FakeState::default()));
        {
            let mut s = state.lock().unwrap();
            for i in 1..=machines {
                let id = format!("m{i}");
                s.instances.insert(
                    id.clone(),
                    Instance {
                        id,
                        version: version.into(),
                        state: "started".into(),
                    },
                );
            }
        }
        let app = axum::Router::new()
            .fallback(handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeFleet {
            state,
            base_url: format!("http://{addr}"),
        }
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn versions(&self) -> Vec<(String, String)> {
        let s = self.state.lock().unwrap();
        s.instances
            .values()
            .filter(|i| i.id.starts_with('m'))
            .map(|i| (i.id.clone(), i.version.clone()))
            .collect()
    }

    fn has_canary(&self) -> bool {
        self.state.lock().unwrap().canary.is_some()
    }
}

#[async_trait]
impl Fleet for FakeFleet {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn deploy_qa(&self, version: &str) -> anyhow::Result<String> {
        let mut s = self.state.lock().unwrap();
        s.log.push(format!("deploy_qa {version}"));
        if s.fail_qa {
            anyhow::bail!("qa app did not start");
        }
        s.instances.insert(
            "qa".into(),
            Instance {
                id: "qa".into(),
                version: version.into(),
                state: "started".into(),
            },
        );
        Ok(self.base_url.clone())
    }
    async fn production(&self) -> anyhow::Result<Vec<Instance>> {
        let s = self.state.lock().unwrap();
        Ok(s.instances
            .values()
            .filter(|i| i.id.starts_with('m'))
            .cloned()
            .collect())
    }
    async fn start_canary(&self, version: &str) -> anyhow::Result<Instance> {
        let mut s = self.state.lock().unwrap();
        s.next_canary += 1;
        let id = format!("canary{}", s.next_canary);
        s.log.push(format!("start_canary {version}"));
        let i = Instance {
            id: id.clone(),
            version: version.into(),
            state: "started".into(),
        };
        s.instances.insert(id.clone(), i.clone());
        s.canary = Some(id);
        Ok(i)
    }
    async fn stop_canary(&self, canary: &Instance) -> anyhow::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.log.push(format!("stop_canary {}", canary.id));
        if s.fail_stop_canary {
            anyhow::bail!("machine {} did not stop", canary.id);
        }
        s.instances.remove(&canary.id);
        s.canary = None;
        Ok(())
    }
    async fn update_instance(&self, id: &str, version: &str) -> anyhow::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.log.push(format!("update {id} {version}"));
        if s.api_error_on.as_deref() == Some(id) && version != "v1" {
            return Err(crate::error::ProviderError {
                provider: "fly",
                call: "update machine".into(),
                status: 500,
                body: "internal error".into(),
            }
            .into());
        }
        if s.fail_update.iter().any(|(i, v)| i == id && v == version) {
            // the machine never became healthy on the new version
            if let Some(i) = s.instances.get_mut(id) {
                i.state = "failed".into();
            }
            anyhow::bail!("machine {id} did not become healthy on {version}");
        }
        let i = s
            .instances
            .get_mut(id)
            .ok_or_else(|| anyhow::anyhow!("no machine {id}"))?;
        i.version = version.into();
        i.state = "started".into();
        Ok(())
    }
    fn target(&self, instance: &Instance) -> Target {
        Target {
            base_url: self.base_url.clone(),
            headers: vec![("x-instance".into(), instance.id.clone())],
        }
    }
}

#[derive(Default)]
struct FakeDb {
    log: Mutex<Vec<String>>,
}

#[async_trait]
impl ReleaseDatabase for FakeDb {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn create_rehearsal(&self, name: &str) -> anyhow::Result<Secret> {
        self.log.lock().unwrap().push(format!("create {name}"));
        Ok(Secret::new("postgres://u:rehearsal-pw-1@h/rehearsal"))
    }
    async fn schema_diff(&self, name: &str) -> anyhow::Result<String> {
        self.log.lock().unwrap().push(format!("diff {name}"));
        Ok("+CREATE TABLE t (id int);\n".into())
    }
    async fn delete_rehearsal(&self, name: &str) -> anyhow::Result<()> {
        self.log.lock().unwrap().push(format!("delete {name}"));
        Ok(())
    }
    fn production_url(&self) -> &Secret {
        static S: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
        S.get_or_init(|| Secret::new("postgres://u:production-pw-1@h/production"))
    }
}

#[derive(Default)]
struct FakeLoad {
    runs: Mutex<u32>,
    fail: bool,
    inconclusive: bool,
}

#[async_trait]
impl LoadGate for FakeLoad {
    async fn run(&self, _base_url: &str) -> anyhow::Result<Outcome> {
        *self.runs.lock().unwrap() += 1;
        Ok(Outcome {
            data: None,
            inconclusive: self.inconclusive,
            ok: !self.fail,
            summary: if self.fail {
                "p95 40% worse".into()
            } else {
                "within 20%".into()
            },
            evidence: vec![],
        })
    }
}

fn settings(extra: &str) -> Settings {
    let text = format!(
        r#"
[database]
migrations = "true"

[verify]
machines = 3
integration = "test -n \"$BASE_URL\""

[verify.canary]
samples = 3
requests_per_sample = 40
min_requests = 100
concurrency = 4
p95_floor_ms = 15.0
{extra}
"#
    );
    Settings::parse(&text, "atlas.toml").unwrap()
}

fn env_source(k: &str) -> Option<String> {
    match k {
        "PATH" => std::env::var("PATH").ok(),
        _ => None,
    }
}

struct Run {
    report: chain::ChainReport,
    fleet: FakeFleet,
    db: FakeDb,
    load: FakeLoad,
    forge: Stub,
}

/// A release of `version` with the default settings, fleet and load.
async fn release(version: &str) -> Run {
    run_with(
        settings(""),
        Mode::Release,
        version,
        |_| {},
        FakeLoad::default(),
    )
    .await
}

async fn run_with(
    s: Settings,
    mode: Mode,
    version: &str,
    setup: impl FnOnce(&mut FakeState),
    load: FakeLoad,
) -> Run {
    let fleet = FakeFleet::new(3, "v1").await;
    setup(&mut fleet.state.lock().unwrap());
    let db = FakeDb::default();
    let forge = Stub::default();
    let report = {
        let c = Chain {
            settings: &s,
            fleet: &fleet,
            database: Some(&db),
            load: &load,
            forge: Some(&forge),
            env_source: &env_source,
            progress: &|_| {},
        };
        chain::run(
            &c,
            &Release {
                mode,
                version: version.into(),
                sha: "0123456789abcdef".into(),
            },
        )
        .await
    };
    Run {
        report,
        fleet,
        db,
        load,
        forge,
    }
}

/// The run stopped at `stage` (the stages are printed when it is another).
fn assert_failed_at(r: &Run, stage: &str) {
    assert_eq!(
        r.report.failed_stage.as_deref(),
        Some(stage),
        "{:#?}",
        r.report.stages
    );
}

/// The canary was judged worse and rolled back: none is left, no production machine was
/// updated, and the run fails (exit 1) saying `why`.
fn assert_canary_rolled_back(r: &Run, why: &str) {
    assert_failed_at(r, "canary");
    assert_eq!(r.report.verdict, "rolled-back");
    assert!(!r.fleet.has_canary());
    assert!(!r.fleet.log().iter().any(|l| l.starts_with("update")));
    let e = r.report.result().unwrap_err();
    assert_eq!(crate::error::exit_code(&e), 1);
    assert!(format!("{e:#}").contains(why), "{e:#}");
}

fn v1_everywhere() -> Vec<(String, String)> {
    ["m1", "m2", "m3"]
        .iter()
        .map(|m| (m.to_string(), "v1".to_string()))
        .collect()
}

#[test]
fn chain_is_data() {
    let s = settings("");
    assert_eq!(
        chain::build_chain(&s, Mode::Verify),
        vec![Stage::QaDeploy, Stage::Integration, Stage::LoadGate]
    );
    assert_eq!(
        chain::build_chain(&s, Mode::Release),
        vec![
            Stage::QaDeploy,
            Stage::Integration,
            Stage::LoadGate,
            Stage::RehearseMigrations,
            Stage::ApplyMigrations,
            Stage::Canary,
            Stage::Rollout
        ]
    );
    let bare = Settings::parse(
        "[verify]\nload = false\n[verify.canary]\nenabled = false\n",
        "a",
    )
    .unwrap();
    assert_eq!(
        chain::build_chain(&bare, Mode::Release),
        vec![Stage::QaDeploy, Stage::Rollout]
    );
    assert!(Settings::parse("[verify]\nnope = 1\n", "a").is_err());
}

#[test]
fn chain_description_marks_production_stages() {
    let d = chain::describe_chain(&settings(""), Mode::Release);
    assert_eq!(d.lines().count(), 7);
    assert!(d.starts_with("1. qa deploy\n"), "{d}");
    assert!(d.contains("6. canary (touches production"), "{d}");
    assert!(!chain::describe_chain(&settings(""), Mode::Verify).contains("production"));
}

#[tokio::test]
async fn healthy_release_promotes() {
    let r = release("v2").await;
    assert_eq!(r.report.verdict, "passed", "{:#?}", r.report.stages);
    assert!(r.report.result().is_ok());
    assert!(r.fleet.versions().iter().all(|(_, v)| v == "v2"));
    assert!(!r.fleet.has_canary());
    assert_eq!(r.report.machines.len(), 3);
    assert!(r.report.machines.iter().all(|m| m.state == "updated"));
    let st = r.forge.statuses.lock().unwrap().clone();
    assert!(st.contains(&("qa".into(), "success".into())), "{st:?}");
    assert!(
        st.contains(&("production".into(), "success".into())),
        "{st:?}"
    );
    assert_eq!(
        r.db.log.lock().unwrap().clone(),
        vec![
            "create atlas-rehearsal",
            "diff atlas-rehearsal",
            "delete atlas-rehearsal"
        ]
    );
    let canary = r.report.canary.clone().unwrap();
    assert_eq!(canary.samples.len(), 3);
    assert_eq!(canary.canary.requests, 120);
}

#[tokio::test]
async fn integration_failure_stops_before_the_load_test() {
    let s = settings("").tap(|s| s.verify.integration = Some("echo boom; exit 3".into()));
    let r = run_with(s, Mode::Release, "v2", |_| {}, FakeLoad::default()).await;
    assert_eq!(*r.load.runs.lock().unwrap(), 0);
    assert_eq!(r.report.failed_stage.as_deref(), Some("integration tests"));
    let load = r
        .report
        .stages
        .iter()
        .find(|s| s.stage == Stage::LoadGate)
        .unwrap();
    assert_eq!(load.status, StageStatus::NotRun);
    let e = r.report.result().unwrap_err();
    assert_eq!(crate::error::exit_code(&e), 1);
    assert!(format!("{e:#}").contains("command exited 3"), "{e:#}");
    assert!(
        r.report
            .integration
            .as_ref()
            .unwrap()
            .output_tail
            .contains("boom")
    );
    assert_eq!(r.fleet.log(), vec!["deploy_qa v2"]);
    assert_eq!(r.fleet.versions(), v1_everywhere());
    let st = r.forge.statuses.lock().unwrap().clone();
    assert!(st.contains(&("qa".into(), "failure".into())), "{st:?}");
    assert!(!st.iter().any(|(e, _)| e == "production"), "{st:?}");
}

#[tokio::test]
async fn failing_rehearsal_never_touches_production() {
    let s =
        settings("").tap(|s| s.database.migrations = Some("echo \"$DATABASE_URL\"; exit 1".into()));
    let r = run_with(s, Mode::Release, "v2", |_| {}, FakeLoad::default()).await;
    assert_eq!(
        r.report.failed_stage.as_deref(),
        Some("migrations rehearsal")
    );
    assert_eq!(r.fleet.log(), vec!["deploy_qa v2"]);
    assert_eq!(r.fleet.versions(), v1_everywhere());
    // the rehearsal branch is deleted even though the migrations failed
    assert_eq!(
        r.db.log.lock().unwrap().clone(),
        vec!["create atlas-rehearsal", "delete atlas-rehearsal"]
    );
    let m = r.report.migrations.as_ref().unwrap();
    assert!(m.production.is_none());
    // the rehearsal URL printed by the command is redacted in the evidence
    let tail = &m.rehearsal.as_ref().unwrap().output_tail;
    assert!(!tail.contains("rehearsal-pw-1"), "{tail}");
    assert!(!r.report.rolled_back);
    assert_eq!(crate::error::exit_code(&r.report.result().unwrap_err()), 1);
}

#[tokio::test]
async fn canary_with_more_errors_is_rolled_back() {
    let r = release("v2-errors").await;
    assert_canary_rolled_back(&r, "error rate");
    assert_eq!(r.fleet.versions(), v1_everywhere());
}

#[tokio::test]
async fn canary_above_the_absolute_error_cap_is_rolled_back_beside_an_erring_stable() {
    // Stable errs as much as the canary (both 500 on every fourth request): the relative rule,
    // opened wide here, sees no difference; the absolute cap of 5% still says no.
    let s = settings("").tap(|s| s.verify.canary.max_error_rate_increase_pp = 100.0);
    let r = run_with(
        s,
        Mode::Release,
        "v2-errors",
        |s| {
            for i in s.instances.values_mut() {
                i.version = "v1-errors".into();
            }
        },
        FakeLoad::default(),
    )
    .await;
    assert_canary_rolled_back(&r, "absolute limit of 5%");
}

#[tokio::test]
async fn an_inconclusive_qa_gate_stops_the_release_unpromoted() {
    let inconclusive = || FakeLoad {
        inconclusive: true,
        ..Default::default()
    };
    let r = run_with(settings(""), Mode::Release, "v2", |_| {}, inconclusive()).await;
    assert_failed_at(&r, "load test + baseline gate");
    assert_eq!(r.report.verdict, "failed");
    assert!(!r.report.rolled_back);
    // nothing after the gate ran: production untouched, no canary, no deployment record
    assert_eq!(r.fleet.versions(), v1_everywhere());
    assert!(!r.fleet.log().iter().any(|l| l.starts_with("start_canary")));
    assert!(r.db.log.lock().unwrap().is_empty());
    assert!(
        !r.forge
            .statuses
            .lock()
            .unwrap()
            .iter()
            .any(|(env, _)| env == "production")
    );
    let e = r.report.result().unwrap_err();
    assert_eq!(crate::error::exit_code(&e), 1);
    assert!(
        format!("{e:#}").contains("inconclusive, not promoted"),
        "{e:#}"
    );
    let renderer = crate::report::Renderer::new(None).unwrap();
    let md = super::render(&renderer, &r.report).unwrap();
    assert!(md.contains("inconclusive, not promoted"), "{md}");
    // verify promotes nothing, so it reports the undecided gate and passes
    let v = run_with(settings(""), Mode::Verify, "v2", |_| {}, inconclusive()).await;
    assert!(v.report.result().is_ok(), "{:#?}", v.report.stages);
}

#[tokio::test]
async fn slower_canary_is_rolled_back() {
    let r = release("v2-slow").await;
    assert_failed_at(&r, "canary");
    assert!(r.report.error.as_deref().unwrap().contains("p95"));
    assert_eq!(r.fleet.versions(), v1_everywhere());
    assert!(!r.fleet.has_canary());
}

#[tokio::test]
async fn too_little_canary_data_means_no_promotion() {
    let s = settings("").tap(|s| s.verify.canary.min_requests = 1_000);
    let r = run_with(s, Mode::Release, "v2", |_| {}, FakeLoad::default()).await;
    assert_eq!(r.report.failed_stage.as_deref(), Some("canary"));
    assert!(r.report.error.as_deref().unwrap().contains("inconclusive"));
    assert_eq!(r.fleet.versions(), v1_everywhere());
}

#[tokio::test]
async fn failure_mid_rollout_restores_every_changed_machine() {
    let r = run_with(
        settings(""),
        Mode::Release,
        "v2",
        |s| s.fail_update.push(("m2".into(), "v2".into())),
        FakeLoad::default(),
    )
    .await;
    assert_eq!(r.report.failed_stage.as_deref(), Some("production rollout"));
    assert_eq!(r.report.verdict, "rolled-back");
    assert_eq!(r.fleet.versions(), v1_everywhere());
    let log = r.fleet.log();
    // m3 was never touched; m1 and m2 were restored
    assert!(!log.iter().any(|l| l.starts_with("update m3")), "{log:?}");
    assert!(log.contains(&"update m1 v1".to_string()) && log.contains(&"update m2 v1".to_string()));
    assert!(!r.fleet.has_canary());
    let states: Vec<_> = r
        .report
        .machines
        .iter()
        .map(|m| (m.id.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![("m1", "restored"), ("m2", "restored"), ("m3", "unchanged")]
    );
    // a machine that does not come up on the new version: the change failed (exit 1)
    let e = r.report.result().unwrap_err();
    assert_eq!(crate::error::exit_code(&e), 1);
    assert!(
        format!("{e:#}").contains("m2 did not become healthy"),
        "{e:#}"
    );
    assert!(
        format!("{e:#}").contains("production was rolled back"),
        "{e:#}"
    );
    let st = r.forge.statuses.lock().unwrap().clone();
    assert!(
        st.contains(&("production".into(), "failure".into())),
        "{st:?}"
    );
}

#[tokio::test]
async fn provider_outage_mid_rollout_is_operational_and_rolled_back() {
    let r = run_with(
        settings(""),
        Mode::Release,
        "v2",
        |s| s.api_error_on = Some("m3".into()),
        FakeLoad::default(),
    )
    .await;
    assert_eq!(r.report.verdict, "rolled-back");
    assert_eq!(r.fleet.versions(), v1_everywhere());
    let e = r.report.result().unwrap_err();
    assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
}

#[tokio::test]
async fn qa_that_does_not_come_up_fails_before_anything_else() {
    let r = run_with(
        settings(""),
        Mode::Release,
        "v2",
        |s| s.fail_qa = true,
        FakeLoad::default(),
    )
    .await;
    assert_eq!(r.report.failed_stage.as_deref(), Some("qa deploy"));
    assert_eq!(*r.load.runs.lock().unwrap(), 0);
    assert_eq!(r.fleet.versions(), v1_everywhere());
    assert_eq!(crate::error::exit_code(&r.report.result().unwrap_err()), 1);
}

#[tokio::test]
async fn canary_that_cannot_be_removed_is_a_failed_rollback() {
    let r = run_with(
        settings(""),
        Mode::Release,
        "v2-errors",
        |s| s.fail_stop_canary = true,
        FakeLoad::default(),
    )
    .await;
    assert_eq!(r.report.verdict, "rollback-failed");
    assert!(r.fleet.has_canary());
    let e = format!("{:#}", r.report.result().unwrap_err());
    assert!(e.contains("canary1: canary-not-removed"), "{e}");
    assert_eq!(r.fleet.versions(), v1_everywhere());
}

#[test]
fn settings_are_validated_with_the_key_named() {
    let bad = [
        ("[verify]\nmachines = 0\n", "machines"),
        ("[verify.canary]\nsamples = 0\n", "canary"),
        ("[verify.canary]\npaths = [\"menu\"]\n", "canary.paths"),
        ("[verify.canary]\nmax_p95_increase_pct = -1.0\n", "canary"),
        (
            "[verify.canary]\nmax_error_rate_pct = 101.0\n",
            "canary.max_error_rate_pct",
        ),
        ("[verify]\nintegration_env = [\"A-B\"]\n", "integration_env"),
    ];
    for (text, key) in bad {
        let s = Settings::parse(text, "atlas.toml").unwrap();
        let e = s.verify.validate().unwrap_err().to_string();
        assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
    }
    assert!(Settings::default().verify.validate().is_ok());
    assert!(Settings::parse("[verify.canary]\nsampels = 3\n", "a").is_err());
    assert_eq!(Settings::default().verify.canary.max_error_rate_pct, 5.0);
    let set = Settings::parse("[verify.canary]\nmax_error_rate_pct = 2.5\n", "a").unwrap();
    assert_eq!(set.verify.canary.max_error_rate_pct, 2.5);
}

#[tokio::test]
async fn rollback_failure_reports_every_machine() {
    let r = run_with(
        settings(""),
        Mode::Release,
        "v2",
        |s| {
            s.fail_update.push(("m2".into(), "v2".into()));
            s.fail_update.push(("m1".into(), "v1".into()));
        },
        FakeLoad::default(),
    )
    .await;
    assert_eq!(r.report.verdict, "rollback-failed");
    let e = format!("{:#}", r.report.result().unwrap_err());
    assert!(e.contains("rollback failed"), "{e}");
    assert!(e.contains("m1: restore-failed (was v1, now v2)"), "{e}");
    assert!(e.contains("m2: restored"), "{e}");
    assert!(e.contains("m3: unchanged"), "{e}");
}

#[tokio::test]
async fn load_gate_failure_fails_verify_without_production() {
    let load = FakeLoad {
        fail: true,
        ..Default::default()
    };
    let r = run_with(settings(""), Mode::Verify, "v2", |_| {}, load).await;
    assert_eq!(
        r.report.failed_stage.as_deref(),
        Some("load test + baseline gate")
    );
    assert_eq!(r.report.stages.len(), 3);
    assert_eq!(r.fleet.versions(), v1_everywhere());
}

#[tokio::test]
async fn report_renders_without_secrets() {
    let s = settings("").tap(|s| s.database.migrations = Some("echo \"$DATABASE_URL\"".into()));
    let r = run_with(s, Mode::Release, "v2-errors", |_| {}, FakeLoad::default()).await;
    let renderer = crate::report::Renderer::new(None).unwrap();
    let md = super::render(&renderer, &r.report).unwrap();
    assert!(md.contains("canary"), "{md}");
    assert!(
        md.contains("rolled back") || md.contains("rolled-back"),
        "{md}"
    );
    assert!(
        !md.contains("production-pw-1") && !md.contains("rehearsal-pw-1"),
        "{md}"
    );
    for m in ["m1", "m2", "m3"] {
        assert!(md.contains(m), "{md}");
    }
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Settings {}
