//! The access gate on Fly against the fake Machines API: a gated preview is two apps (the gate
//! machine public in the preview app, the app's machines in a private app reached through Fly's
//! proxy on its Flycast address, where they sleep and wake), created, updated and destroyed
//! together; previous commits' machines are kept (stopped) for their commit URLs; the gate's secrets are app secrets, never machine config; the gate process started
//! from exactly what the fake holds (its env plus the app's secrets, as Fly starts it) lets this
//! run's bypass token through and nothing else.

use crate::common::fake_fly::{FakeFly, FakeMachine};
use crate::common::openapi;
use crate::common::world::{Wire, fly_platform};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atlas::config::Settings;
use atlas::gate::fly::{FlyGate, NONCE_KEY};
use atlas::gate::{Kind, Mode, PreviewKey};
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
    platform_keeping(fly, preview_url, 3)
}

fn platform_keeping(fly: &FakeFly, preview_url: &str, keep: usize) -> FlyPlatform {
    let mut settings = Settings::default();
    settings.preview.keep_commits = keep;
    settings.fly.preview_url = Some(preview_url.to_string());
    let wire = Wire::fast(4, Duration::from_millis(50), Duration::from_secs(3));
    fly_platform(fly, &settings, REPO, ORG, &wire)
}

fn gated(fly: &FakeFly, preview_url: &str, run: &str) -> FlyGate {
    gated_keeping(fly, preview_url, run, 3)
}

fn gated_keeping(fly: &FakeFly, preview_url: &str, run: &str, keep: usize) -> FlyGate {
    FlyGate::new(
        platform_keeping(fly, preview_url, keep),
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
        env: [("ATLAS_COMMIT_SHA".to_string(), sha.to_string())]
            .into_iter()
            .collect(),
        secrets,
        port: 8080,
        health_path: "/healthz".into(),
        readiness_timeout: Duration::from_secs(3),
        expires_at: None,
        outgoing: None,
    }
}

fn private() -> String {
    atlas::provider::fly::private_app(&app())
}

/// The gate machine (the preview app's only machine) and the current app machine (in the
/// private app, beside the kept ones).
fn pair(fly: &FakeFly) -> (FakeMachine, FakeMachine) {
    let a = fly.app(&app()).expect("the app exists");
    assert_eq!(a.machines.len(), 1, "{:#?}", a.machines);
    let gate = a.machines[0].clone();
    assert_eq!(gate.meta("atlas_role"), Some("gate"));
    let p = fly.app(&private()).expect("the private app exists");
    let current: Vec<&FakeMachine> = p
        .machines
        .iter()
        .filter(|m| m.meta("atlas_role").is_none())
        .collect();
    assert_eq!(current.len(), 1, "{:#?}", p.machines);
    (gate, current[0].clone())
}

/// The app machine's service: Flycast only (port 80, http), sleeping when idle.
fn assert_private_service(fly: &FakeFly, m: &FakeMachine) {
    let svc = &m.config["services"][0];
    assert_eq!(svc["autostart"], true, "{}", m.config);
    assert_eq!(svc["autostop"], Settings::default().fly.auto_stop.as_str());
    assert_eq!(
        svc["ports"],
        serde_json::json!([{"port": 80, "handlers": ["http"]}])
    );
    let ips = fly.ips(&private());
    assert!(
        !ips.is_empty()
            && ips
                .iter()
                .all(|(ip, t)| t == "private_v6" && ip.starts_with("fdaa:")),
        "the private app must have only its Flycast address: {ips:?}"
    );
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
    let mut cmd = tokio::process::Command::from(crate::common::bin::atlas());
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

    // The gate holds the public service; the app machine's service is on Flycast only.
    assert!(gate.public(), "{}", gate.config);
    assert_private_service(&fly, &appm);
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

    // The upstream is Fly's proxy on the private app's Flycast address, forced to the app
    // machine.
    let upstream = env_of(&gate, "ATLAS_GATE_UPSTREAM");
    assert_eq!(upstream, format!("{}.flycast:80", private()));
    assert_eq!(env_of(&gate, "ATLAS_GATE_UPSTREAM_INSTANCE"), appm.id);

    // The gate's key is an app secret derived from the repository secret and the preview's
    // nonce (kept on the gate machine); no secret is in any machine's config.
    let nonce = gate.meta(NONCE_KEY).expect("the nonce").to_string();
    let secrets = fly.app(&app).unwrap().secrets;
    let key_hex = PreviewKey::derived_hex(&Secret::new(GATE_SECRET), &app, &nonce);
    assert_eq!(secrets["ATLAS_GATE_KEY"], key_hex.expose());
    let (_, bypass) = p.bypass_header(&app).expect("this run's bypass header");
    assert_eq!(fly.app(&private()).unwrap().secrets["STRIPE_KEY"], STRIPE);
    assert!(
        !fly.app(&private())
            .unwrap()
            .secrets
            .contains_key("ATLAS_GATE_KEY")
    );
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
    let flycast = fly.flycast(&private()).await;
    let (_child, gate_url) = run_gate_like_fly(&gate, &secrets, &flycast).await;
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
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["commit"].as_str(), v["machine"].as_str()),
        (Some("aaa111"), Some(appm.id.as_str()))
    );
    // The app machine sleeps when idle and the gate's next request wakes it.
    assert_eq!(fly.go_idle(&private()), 1);
    assert_ne!(
        fly.machine_state(&private(), &appm.id).as_deref(),
        Some("started")
    );
    let r = http
        .get(format!("{gate_url}/menu"))
        .header("x-atlas-bypass", bypass.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        fly.machine_state(&private(), &appm.id).as_deref(),
        Some("started")
    );
    assert!(
        fly.wakes().iter().any(|(a, _)| *a == private()),
        "{:?}",
        fly.wakes()
    );
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
    assert!(gate2.public());
    assert_private_service(&fly, &appm2);

    // Down: both apps go as a whole, the Flycast address with them.
    assert_eq!(p2.destroy(&app).await.unwrap(), Deleted::Removed);
    assert!(fly.app_names().is_empty(), "{:?}", fly.app_names());
    assert!(fly.ips(&private()).is_empty());
    assert_eq!(fly.core.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_gate_create_leaves_nothing_and_a_failed_update_keeps_the_serving_pair() {
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
    let _ = private();

    // A good pair, then an update the platform refuses (someone holds the leases): both
    // machines stay as they were.
    let p = gated(&fly, &edge_url, "gh-2-1");
    p.deploy(&deploy_req("aaa111")).await.expect("up");
    let (gate, appm) = pair(&fly);
    fly.hold_leases(&private(), Duration::MAX);
    let e = gated(&fly, &edge_url, "gh-3-1")
        .deploy(&deploy_req("bbb222"))
        .await
        .expect_err("the update fails");
    assert!(format!("{e:#}").contains("update"), "{e:#}");
    let (gate_after, appm_after) = pair(&fly);
    assert_eq!(gate_after.config, gate.config);
    assert_eq!(appm_after.config, appm.config);
    fly.state.lock().unwrap().leases.clear();

    // An update whose app never comes up: both machines go back to the configs that served.
    fly.set_never_start_image("registry.fly.io/kitchen:bad999");
    let e = gated(&fly, &edge_url, "gh-4-1")
        .deploy(&deploy_req("bad999"))
        .await
        .expect_err("the new version never starts");
    assert!(format!("{e:#}").contains("rolled back"), "{e:#}");
    let (gate_after, appm_after) = pair(&fly);
    assert_eq!(appm_after.config, appm.config);
    assert_eq!(gate_after.config, gate.config);
    assert_eq!(env_of(&gate_after, "ATLAS_GATE_RUN"), "gh-2-1");

    // Back to public access: the app takes the public service again; the gate and the private
    // app go.
    let plain = platform(&fly, &format!("{}/", openapi::serve_health().await));
    let d = plain.deploy(&deploy_req("ccc333")).await.expect("public");
    assert_eq!(d.instances.len(), 1);
    let a = fly.app(&app).unwrap();
    assert_eq!(a.machines.len(), 1, "{:#?}", a.machines);
    assert!(a.machines[0].public());
    assert!(a.machines[0].meta("atlas_role").is_none());
    assert!(fly.app(&private()).is_none(), "the private app stayed");
    assert_eq!(plain.destroy(&app).await.unwrap(), Deleted::Removed);
    assert!(fly.app_names().is_empty());
    assert_eq!(fly.core.violations(), Vec::<String>::new());
}

fn hex(c: char) -> String {
    c.to_string().repeat(40)
}

#[tokio::test]
async fn kept_commits_on_fly_sleep_wake_through_the_gate_and_go_with_the_preview() {
    let fly = FakeFly::start(FLY_TOKEN).await;
    let (edge_url, _) = edge().await;
    let app = app();
    let shas = [hex('a'), hex('b'), hex('c'), hex('d')];
    let mut ids = Vec::new();
    let mut last = None;
    for (i, sha) in shas.iter().enumerate() {
        let p = gated_keeping(&fly, &edge_url, &format!("gh-5{i}-1"), 2);
        let d = p.deploy(&deploy_req(sha)).await.expect("deploy");
        ids.push(d.instances[0].clone());
        last = Some((p, d));
    }
    let (p, d) = last.unwrap();
    // Each push made a new machine; the two before the newest are kept, the oldest went.
    let urls: Vec<(String, String)> = d
        .commits
        .iter()
        .map(|k| (k.sha.clone(), k.url.clone()))
        .collect();
    let url = edge_url.trim_end_matches('/').to_string();
    assert_eq!(
        urls,
        vec![
            (shas[2].clone(), format!("{url}/_atlas/c/ccccccc/")),
            (shas[1].clone(), format!("{url}/_atlas/c/bbbbbbb/")),
        ]
    );
    let private = private();
    let pm = fly.app(&private).unwrap().machines;
    assert_eq!(pm.len(), 3, "{pm:#?}");
    assert!(
        pm.iter().all(|m| m.id != ids[0]),
        "the oldest kept machine was not pruned"
    );
    for (i, role) in [(1, Some("kept")), (2, Some("kept")), (3, None)] {
        let m = pm.iter().find(|m| m.id == ids[i]).unwrap();
        assert_eq!(m.meta("atlas_role"), role, "{}", m.config);
        assert_eq!(m.meta("atlas_commit"), Some(shas[i].as_str()));
        if role.is_some() {
            assert_eq!(m.state, "stopped", "a kept machine must sleep");
            // No data of its own was handed over: it reads the app's secrets as they are.
            assert!(m.config.get("processes").is_none(), "{}", m.config);
        }
    }
    let (gate, appm) = pair(&fly);
    assert_eq!(appm.id, ids[3]);
    assert_eq!(env_of(&gate, "ATLAS_GATE_SHA"), shas[3]);
    assert_eq!(
        env_of(&gate, "ATLAS_GATE_COMMITS"),
        format!(
            "{}=instance:{},{}=instance:{}",
            shas[2], ids[2], shas[1], ids[1]
        )
    );

    // Through the gate (as Fly starts it) and Fly's proxy: each URL reaches its version,
    // waking a kept machine on demand.
    let secrets = fly.app(&app).unwrap().secrets;
    let flycast = fly.flycast(&private).await;
    let (_child, gate_url) = run_gate_like_fly(&gate, &secrets, &flycast).await;
    let (_, bypass) = p.bypass_header(&app).unwrap();
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{gate_url}{path}"))
            .header("x-atlas-bypass", bypass.expose())
            .send()
    };
    let v: serde_json::Value = get("/healthz".into()).await.unwrap().json().await.unwrap();
    assert_eq!(v["commit"], shas[3].as_str());
    let before = fly.wakes().len();
    for i in [2, 1] {
        let r = get(format!("/_atlas/c/{}/healthz", &shas[i][..7]))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (
                v["commit"].as_str(),
                v["machine"].as_str(),
                v["path"].as_str()
            ),
            (
                Some(shas[i].as_str()),
                Some(ids[i].as_str()),
                Some("/healthz")
            )
        );
        assert_eq!(
            fly.machine_state(&private, &ids[i]).as_deref(),
            Some("started")
        );
    }
    assert_eq!(fly.wakes().len(), before + 2, "{:?}", fly.wakes());
    let r = get(format!("/_atlas/c/{}/healthz", &shas[0][..7]))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a pruned commit");
    let served = fly.state.lock().unwrap().flycast_served.len();
    for bad in [
        "/_atlas/c/ccccccc%2f/x",
        "/_atlas/c/zzzzzzz/",
        &format!("/_atlas/c/{}c/", shas[2]),
    ] {
        assert_eq!(get(bad.to_string()).await.unwrap().status(), 404, "{bad}");
    }
    assert_eq!(
        fly.state.lock().unwrap().flycast_served.len(),
        served,
        "a hostile URL went upstream"
    );

    // The same commit again updates its machine in place and keeps the kept ones.
    let d2 = p.deploy(&deploy_req(&shas[3])).await.expect("same commit");
    assert_eq!(d2.instances[0], ids[3]);
    assert_eq!(d2.commits.len(), 2);
    // keep_commits = 0: the next push keeps nothing.
    let p0 = gated_keeping(&fly, &edge_url, "gh-60-1", 0);
    let d3 = p0.deploy(&deploy_req(&hex('e'))).await.expect("keep none");
    assert!(d3.commits.is_empty());
    assert_eq!(fly.app(&private).unwrap().machines.len(), 1);

    // Down: both apps, every kept machine, the Flycast address.
    assert_eq!(p0.destroy(&app).await.unwrap(), Deleted::Removed);
    assert!(fly.app_names().is_empty(), "{:?}", fly.app_names());
    assert!(fly.live_machines().is_empty());
    assert!(fly.ips(&private).is_empty());
    assert_eq!(fly.core.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_private_app_gets_only_its_flycast_address_and_an_orphan_is_swept() {
    let fly = FakeFly::start(FLY_TOKEN).await;
    let (edge_url, _) = edge().await;
    let app = app();
    let p = gated(&fly, &edge_url, "gh-70-1");
    p.deploy(&deploy_req("aaa111")).await.expect("up");
    // Someone gave the private app a public address: the next deploy releases it.
    fly.add_ip(&private(), "2a09:8280:1::99", "v6");
    p.deploy(&deploy_req("aaa111")).await.expect("again");
    let ips = fly.ips(&private());
    assert!(ips.iter().all(|(_, t)| t == "private_v6"), "{ips:?}");
    // The preview app gone by hand: the sweep still sees the preview, and destroys the rest.
    fly.state.lock().unwrap().apps.remove(&app);
    let owned = p.list_apps().await.unwrap();
    assert_eq!(
        owned.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        vec![app.as_str()]
    );
    assert_eq!(p.destroy(&app).await.unwrap(), Deleted::Removed);
    assert!(fly.app_names().is_empty(), "{:?}", fly.app_names());
}

/// The lead's merge of pin, active hours and the estate with the two-app layout: behind a gate
/// the app's machine lives in the private app, so the estate lists it, active hours stop it,
/// and a pin (kept on the gate machine, which `list_apps` reads) survives a push.
#[tokio::test]
async fn a_gated_preview_is_priced_stopped_and_stays_pinned_across_its_two_apps() {
    let fly = FakeFly::start(FLY_TOKEN).await;
    let (edge_url, _) = edge().await;
    let app = app();
    let p = gated(&fly, &edge_url, "gh-61-1");
    p.deploy(&deploy_req(&hex('a'))).await.expect("deploy");

    let ms = p
        .app_machines(&app)
        .await
        .expect("machines")
        .expect("fly reports machines");
    let mut roles: Vec<Option<String>> = ms.iter().map(|m| m.role.clone()).collect();
    roles.sort();
    assert_eq!(roles, vec![None, Some("gate".to_string())], "{ms:#?}");

    // A pin recorded on the preview outlives the next push (a new machine for a new commit).
    p.set_pin(&app, Some("hubot")).await.expect("pin");
    let p = gated(&fly, &edge_url, "gh-62-1");
    p.deploy(&deploy_req(&hex('b'))).await.expect("push");
    let listed = p.list_apps().await.expect("list");
    let ours: Vec<_> = listed.iter().filter(|o| o.name == app).collect();
    assert_eq!(ours.len(), 1, "{listed:#?}");
    assert_eq!(ours[0].pinned_by.as_deref(), Some("hubot"), "{listed:#?}");

    // Outside active hours every started machine of both apps stops (the kept one already
    // sleeps).
    let (gate, appm) = pair(&fly);
    let started: Vec<String> = [&gate, &appm]
        .iter()
        .filter(|m| m.state == "started")
        .map(|m| m.id.clone())
        .collect();
    assert!(!started.is_empty(), "{} {}", gate.state, appm.state);
    // The app's machine (in the private app) serves after the push; the gate slept after
    // the wake-up measurement.
    assert_eq!(appm.state, "started");
    let mut stopped = p
        .stop_machines(&app)
        .await
        .expect("stop")
        .expect("fly stops machines");
    stopped.sort();
    let mut want = started;
    want.sort();
    assert_eq!(
        stopped, want,
        "gate {} {}, app {} {}",
        gate.id, gate.state, appm.id, appm.state
    );
    let (gate, appm) = pair(&fly);
    assert_ne!(gate.state, "started", "{}", gate.state);
    assert_ne!(appm.state, "started", "{}", appm.state);
    assert_eq!(fly.core.violations(), Vec::<String>::new());
}

/// Which pushes freeze the outgoing commit's data: a gated preview running another commit
/// does (a Neon child branch made once, reused on a retry); the same commit again, `shared`,
/// `keep_commits = 0` and `reset = "on-push"` on Neon (Neon restores no branch that has
/// children) freeze nothing and make no branch.
#[tokio::test]
async fn the_outgoing_commit_is_frozen_only_when_it_would_be_kept_on_its_own_data() {
    use crate::common::{fake_neon::FakeNeon, world};
    use atlas::config::{CommitData, ResetPolicy};
    use atlas::provider::{Database as _, Providers};
    let fly = FakeFly::start(FLY_TOKEN).await;
    let neon = FakeNeon::start("neon-key-Fz12").await;
    let (edge_url, _) = edge().await;
    let state = tempfile::tempdir().unwrap();
    let wire = world::Wire::fast(4, Duration::from_millis(50), Duration::from_secs(3));
    let settings = Settings::default();
    let db = world::neon_database(&neon, &settings, REPO, &wire);
    let req = atlas::provider::BranchRequest {
        pr: 7,
        name: naming::preview_branch(7),
        parent: "main".into(),
        schema_only: false,
        migrations_tables: Vec::new(),
        expires_at: None,
        repository: REPO.into(),
        database: "neondb".into(),
        role: "neondb_owner".into(),
        masking: None,
        anonymize_timeout: Duration::from_secs(5),
        suspend_after: None,
    };
    let branch = db.ensure_branch(&req).await.unwrap();
    let p = gated(&fly, &edge_url, "gh-70-1");
    p.deploy(&deploy_req(&hex('a'))).await.expect("deploy");
    let providers = Providers {
        database: Box::new(db),
        platform: Box::new(p),
        forge: Box::new(atlas::provider::local::forge::LocalForge::new(
            state.path(),
            false,
        )),
    };
    let freeze = |s: &Settings, sha: String| {
        let (providers, branch, req) = (&providers, &branch, &req);
        let s = s.clone();
        async move {
            let mut log = |_: &str| {};
            atlas::commit_data::freeze_outgoing(providers, &s, &app(), &sha, branch, req, &mut log)
                .await
                .unwrap()
        }
    };
    let frozen = "preview/pr-7/c-aaaaaaa";
    let mut off = [settings.clone(), settings.clone(), settings.clone()];
    off[0].preview.commit_data = CommitData::Shared;
    off[1].preview.keep_commits = 0;
    off[2].database.reset = ResetPolicy::OnPush;
    for s in &off {
        assert!(freeze(s, hex('b')).await.is_none());
    }
    assert!(
        freeze(&settings, hex('a')).await.is_none(),
        "the same commit"
    );
    assert!(neon.branch(frozen).is_none());
    let out = freeze(&settings, hex('b')).await.expect("frozen");
    assert_eq!(out.sha, hex('a'));
    let fb = neon.branch(frozen).expect("the frozen branch");
    assert_eq!(fb.parent_id, neon.branch("preview/pr-7").map(|b| b.id));
    let uri = out.secrets["DATABASE_URL"].expose().to_string();
    assert!(
        uri.contains(&fb.endpoint.clone().unwrap()),
        "its own endpoint"
    );
    let creates = neon.core.count("createProjectBranch");
    freeze(&settings, hex('b'))
        .await
        .expect("a retry reuses it");
    assert_eq!(neon.core.count("createProjectBranch"), creates);
    // Down: the preview's branch takes its frozen child with it, and both apps go.
    providers.platform.destroy(&app()).await.unwrap();
    providers
        .database
        .delete_branch(&naming::preview_branch(7))
        .await
        .unwrap();
    assert!(
        neon.preview_branches().is_empty(),
        "{:?}",
        neon.preview_branches()
    );
    assert!(fly.app_names().is_empty());
}
