//! The access gate on Fly against the fake Machines API: a gated preview is two machines (the
//! gate public, the app private and reached by its 6PN name), created, updated and destroyed
//! together; the gate's secrets are app secrets, never machine config; the gate process started
//! from exactly what the fake holds (its env plus the app's secrets, as Fly starts it) lets this
//! run's bypass token through and nothing else.

use crate::common::fake_fly::{FakeFly, FakeMachine};
use crate::common::openapi;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atlas::config::{FlyAccess, Settings};
use atlas::gate::fly::{FlyGate, NONCE_KEY};
use atlas::gate::{Kind, Mode, PreviewKey};
use atlas::http::{RetryPolicy, Timeouts};
use atlas::naming;
use atlas::provider::fly::FlyPlatform;
use atlas::provider::{Deleted, DeployRequest, Platform};
use atlas::secret::Secret;
use axum::http::{HeaderMap, StatusCode};

const REPO: &str = "octo-org/kitchen";
const FLY_TOKEN: &str = "fly-token-Gt55aa1";
const ORG: &str = "atlas-org";
const GATE_SECRET: &str = "repo-gate-secret-Hh83kk2Jq";
const STRIPE: &str = "sk_test_stripe_Gq19";
const IMAGE: &str = "ghcr.io/atlas-preview/atlas:v0-test";

/// What stands for the preview URL: answers 200 only with a bypass header, as the gate would,
/// and records the header values it saw.
async fn edge() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |h: HeaderMap| {
        let s = s.clone();
        async move {
            match h.get("x-atlas-bypass").and_then(|v| v.to_str().ok()) {
                Some(v) => {
                    s.lock().unwrap().push(v.to_string());
                    (StatusCode::OK, "ok")
                }
                None => (StatusCode::UNAUTHORIZED, "sign in"),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn platform(fly: &FakeFly, preview_url: &str) -> FlyPlatform {
    let mut settings = Settings::default();
    settings.fly.preview_url = Some(preview_url.to_string());
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        deadline: Duration::from_secs(3),
    };
    FlyPlatform::new(
        &FlyAccess {
            api_token: Some(Secret::new(FLY_TOKEN)),
            org: Some(ORG.into()),
            api_url: url::Url::parse(&fly.api_url).unwrap(),
        },
        &settings,
        REPO,
        policy,
    )
    .unwrap()
    .with_timeouts(
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_millis(700),
        },
        Duration::from_millis(5),
    )
    .unwrap()
}

fn gated(fly: &FakeFly, preview_url: &str, run: &str) -> FlyGate {
    FlyGate::new(
        platform(fly, preview_url),
        Mode::SignedLink,
        Secret::new(GATE_SECRET),
        IMAGE,
        run,
        None,
    )
    .unwrap()
}

fn app() -> String {
    naming::preview_app(&naming::prefix(None, REPO), 7)
}

fn deploy_req(sha: &str) -> DeployRequest {
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "DATABASE_URL".to_string(),
        Secret::new("postgres://u:pw-Db71@db/neondb"),
    );
    secrets.insert("STRIPE_KEY".to_string(), Secret::new(STRIPE));
    DeployRequest {
        pr: Some(7),
        app: app(),
        sha: sha.into(),
        repository: REPO.into(),
        image: Some(format!("registry.fly.io/kitchen:{sha}")),
        env: BTreeMap::new(),
        secrets,
        port: 8080,
        health_path: "/healthz".into(),
        readiness_timeout: Duration::from_secs(3),
        expires_at: None,
    }
}

/// The gate machine and the app machine of `app`.
fn pair(fly: &FakeFly) -> (FakeMachine, FakeMachine) {
    let a = fly.app(&app()).expect("the app exists");
    assert_eq!(a.machines.len(), 2, "{:#?}", a.machines);
    let gate = a
        .machines
        .iter()
        .find(|m| m.meta("atlas_role") == Some("gate"))
        .expect("a gate machine")
        .clone();
    let appm = a
        .machines
        .iter()
        .find(|m| m.meta("atlas_role").is_none())
        .expect("an app machine")
        .clone();
    (gate, appm)
}

fn env_of(m: &FakeMachine, k: &str) -> String {
    m.config["env"][k]
        .as_str()
        .unwrap_or_else(|| panic!("no {k} in {}", m.config["env"]))
        .to_string()
}

/// Runs `atlas gate serve` with exactly the gate machine's env and the app's secrets (how Fly
/// starts it), but listening on loopback and forwarding to `upstream`; returns its base URL.
async fn run_gate_like_fly(
    gate: &FakeMachine,
    secrets: &BTreeMap<String, String>,
    upstream: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_atlas"));
    cmd.env_clear();
    for (k, v) in gate.config["env"].as_object().unwrap() {
        cmd.env(k, v.as_str().unwrap());
    }
    cmd.envs(secrets)
        .env("ATLAS_GATE_LISTEN", "127.0.0.1:0")
        .env("ATLAS_GATE_UPSTREAM", upstream);
    let args: Vec<String> = gate.config["init"]["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut child = cmd
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the gate prints its address")
        .unwrap()
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

#[tokio::test]
async fn a_signed_link_preview_on_fly_is_a_public_gate_in_front_of_a_private_app_and_goes_as_one() {
    let fly = FakeFly::start(FLY_TOKEN).await;
    let (edge_url, probed) = edge().await;
    let app = app();
    let p = gated(&fly, &edge_url, "gh-41-1");

    let d = p.deploy(&deploy_req("aaa111")).await.expect("up");
    assert!(d.created);
    assert_eq!(d.instances.len(), 2, "{:?}", d.instances);
    let (gate, appm) = pair(&fly);

    // The gate holds the public service; the app machine has none.
    assert!(gate.public(), "{}", gate.config);
    assert!(!appm.public(), "{}", appm.config);
    assert!(appm.config.get("services").is_none(), "{}", appm.config);
    assert_eq!(gate.service_port(), Some(8080));
    let svc = &gate.config["services"][0];
    assert_eq!(svc["autostart"], true);
    assert_eq!(svc["autostop"], Settings::default().fly.auto_stop.as_str());
    let ports: Vec<u64> = svc["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![443, 80]);
    assert_eq!(gate.config["image"], IMAGE);
    assert_eq!(
        gate.config["init"]["cmd"],
        serde_json::json!(["gate", "serve"])
    );
    assert_eq!(env_of(&gate, "ATLAS_GATE_MODE"), "signed-link");
    assert_eq!(env_of(&gate, "ATLAS_GATE_PREVIEW"), app);
    assert_eq!(env_of(&gate, "ATLAS_GATE_RUN"), "gh-41-1");
    assert_eq!(env_of(&gate, "ATLAS_GATE_PR"), "7");

    // The upstream is the app machine's own 6PN name: it resolves to that machine only.
    let upstream = env_of(&gate, "ATLAS_GATE_UPSTREAM");
    let (host, port) = upstream.rsplit_once(':').unwrap();
    assert_eq!(port, "8080");
    let resolved: Vec<String> = fly
        .resolve_private(host)
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(resolved, vec![appm.id.clone()], "{upstream}");

    // The gate's key is an app secret derived from the repository secret and the preview's
    // nonce (kept on the gate machine); no secret is in any machine's config.
    let nonce = gate.meta(NONCE_KEY).expect("the nonce").to_string();
    let secrets = fly.app(&app).unwrap().secrets;
    let key_hex = PreviewKey::derived_hex(&Secret::new(GATE_SECRET), &app, &nonce);
    assert_eq!(secrets["ATLAS_GATE_KEY"], key_hex.expose());
    let (_, bypass) = p.bypass_header(&app).expect("this run's bypass header");
    for m in [&gate, &appm] {
        let text = m.config.to_string();
        for s in [GATE_SECRET, key_hex.expose(), bypass.expose(), STRIPE] {
            assert!(!text.contains(s), "secret {s:?} in machine config {text}");
        }
    }
    // The probe went through the front with this run's token.
    assert!(
        probed.lock().unwrap().iter().any(|t| t == bypass.expose()),
        "the readiness probe did not carry the bypass token"
    );

    // The gate, started from what Fly holds, admits this run's token and nothing else.
    let app_server = openapi::serve_health().await;
    let (_child, gate_url) =
        run_gate_like_fly(&gate, &secrets, app_server.trim_start_matches("http://")).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{gate_url}/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{gate_url}/"))
        .header("x-atlas-bypass", bypass.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let other_run = PreviewKey::derive(&Secret::new(GATE_SECRET), &app, &nonce).mint(
        Kind::Bypass,
        atlas::gate::token::now() + 600,
        "gh-40-1",
    );
    let r = http
        .get(format!("{gate_url}/"))
        .header("x-atlas-bypass", other_run)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let link = atlas::gate::mint_link(
        &Secret::new(GATE_SECRET),
        &app,
        &nonce,
        &format!("{gate_url}/"),
        Duration::from_secs(600),
    );
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&link)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        303,
        "a link minted from the repository secret opens it"
    );

    // An update (a later run): the same two machines, the same nonce, the new run and image.
    let p2 = gated(&fly, &edge_url, "gh-42-1");
    let d = p2.deploy(&deploy_req("bbb222")).await.expect("update");
    assert!(!d.created);
    let (gate2, appm2) = pair(&fly);
    assert_eq!((gate2.id.clone(), appm2.id.clone()), (gate.id, appm.id));
    assert_eq!(gate2.meta(NONCE_KEY), Some(nonce.as_str()));
    assert_eq!(env_of(&gate2, "ATLAS_GATE_RUN"), "gh-42-1");
    assert_eq!(appm2.config["image"], "registry.fly.io/kitchen:bbb222");
    assert!(gate2.public() && !appm2.public());

    // Down: the app goes as a whole; nothing answers at the private name.
    assert_eq!(p2.destroy(&app).await.unwrap(), Deleted::Removed);
    assert!(fly.app_names().is_empty(), "{:?}", fly.app_names());
    assert!(fly.resolve_private(host).is_empty());
    assert_eq!(fly.core.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_gate_create_leaves_nothing_and_a_failed_update_keeps_the_pair() {
    let fly = FakeFly::start(FLY_TOKEN).await;
    let (edge_url, _) = edge().await;
    let app = app();

    // A first preview whose gate machine cannot be created: no machine stays.
    fly.fail_create_of_role("gate", 422);
    let e = gated(&fly, &edge_url, "gh-1-1")
        .deploy(&deploy_req("aaa111"))
        .await
        .expect_err("the gate create fails");
    assert!(format!("{e:#}").contains("create gate machine"), "{e:#}");
    assert!(fly.live_machines().is_empty(), "{:#?}", fly.live_machines());
    fly.state.lock().unwrap().fail_role = None;

    // A good pair, then an update the platform refuses (someone holds the leases): both
    // machines stay as they were.
    let p = gated(&fly, &edge_url, "gh-2-1");
    p.deploy(&deploy_req("aaa111")).await.expect("up");
    let (gate, appm) = pair(&fly);
    fly.hold_leases(&app, Duration::MAX);
    let e = gated(&fly, &edge_url, "gh-3-1")
        .deploy(&deploy_req("bbb222"))
        .await
        .expect_err("the update fails");
    assert!(format!("{e:#}").contains("update"), "{e:#}");
    let (gate_after, appm_after) = pair(&fly);
    assert_eq!(gate_after.config, gate.config);
    assert_eq!(appm_after.config, appm.config);
    fly.state.lock().unwrap().leases.clear();

    // Back to public access: the app takes the public service again and the gate goes.
    let plain = platform(&fly, &format!("{}/", openapi::serve_health().await));
    let d = plain.deploy(&deploy_req("ccc333")).await.expect("public");
    assert_eq!(d.instances, vec![appm.id.clone()]);
    let a = fly.app(&app).unwrap();
    assert_eq!(a.machines.len(), 1, "{:#?}", a.machines);
    assert!(a.machines[0].public());
    assert_eq!(plain.destroy(&app).await.unwrap(), Deleted::Removed);
    assert!(fly.app_names().is_empty());
    assert_eq!(fly.core.violations(), Vec::<String>::new());
}
