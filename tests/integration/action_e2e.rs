//! End to end: the real `atlas` binary, in an environment shaped like the GitHub runner's
//! (`runner_env.rs`), runs `atlas run` for pull request events against stateful fakes of Neon,
//! Fly and GitHub that validate every request against the vendors' published API descriptions.
//! The preview URL points at a tiny app server on 127.0.0.1 that answers the health and smoke
//! paths, so readiness and smoke checks really run.
//!
//! Covered: a PR's life (opened -> synchronize -> repeat -> closed) with what each fake holds
//! after each step and the calls a converged re-run costs; faults (5xx bursts, 429 with
//! `Retry-After`, a machine that never starts); fork and stale-run skips that touch nothing;
//! a missing input that fails before any request; and, on every run, that no secret value
//! reaches stdout, stderr, `GITHUB_OUTPUT`, the step summary or a comment, and that every
//! request matched the vendor spec.

use crate::common::fake_github;
use crate::common::openapi;
use crate::common::runner_env;
use crate::common::world::Fakes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use openapi::Fault;
use runner_env::{RunnerEnv, fixture};
use serde_json::Value;

const REPO: &str = "octo-org/kitchen";
/// The fixtures' PR number.
const PR: u64 = 2;
/// The fixtures' head commit.
const HEAD1: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
/// The head after a push to the PR.
const HEAD2: &str = "5d1c0ffee5d1c0ffee5d1c0ffee5d1c0ffee5d1c";
/// `runner_env.rs` sets GITHUB_SHA to this merge commit for pull_request events.
const MERGE_SHA: &str = "feedfacefeedfacefeedfacefeedfacefeedface";
const NEON_KEY: &str = "neon-e2e-key-Qx81Zt55wq";
const FLY_TOKEN: &str = "fly-e2e-token-Lm29Vb77kd";
const GH_TOKEN: &str = "ghs_e2eTokenValue9876543210fedcba";
const STRIPE: &str = "sk_test_e2e_Pq44Rr99zz";
const ORG: &str = "atlas-org";
/// The repository's access-gate secret (`gate_secret`).
const GATE_SECRET: &str = "gate-e2e-secret-Rt62Yu88pl";
/// Every Neon branch password of the fake looks like `npg_Pw<n>Sekr1t`.
const PASSWORD_TAG: &str = "Sekr1t";
/// The GitHub environment previews deploy to.
const ENVIRONMENT: &str = "preview/pr-2";
const CLAUSES: [&str; 7] = [
    "1. Code identity",
    "2. Data boundary",
    "3. Identity boundary",
    "4. Secret boundary",
    "5. Migration boundary",
    "6. Evidence boundary",
    "7. Lifecycle boundary",
];

/// The three fakes (`world.rs`) and the app the preview URL points at.
struct World {
    fakes: Fakes,
    app_base: String,
    app_hits: Arc<Mutex<Vec<String>>>,
    /// Every run's texts, checked for secrets at the end.
    texts: Mutex<Vec<(String, String)>>,
    /// Run atlas under `/usr/bin/time -v` (peak RSS).
    time_v: std::sync::atomic::AtomicBool,
    /// Send SIGINT once a machine exists; how long the run took to exit after it.
    interrupt: std::sync::atomic::AtomicBool,
    /// Send SIGINT once Neon has received the branch create instead.
    interrupt_on_neon_create: std::sync::atomic::AtomicBool,
    signal_to_exit: Mutex<Option<Duration>>,
    /// Extra process environment for the runs (`ATLAS_DEADLINE`).
    extra_env: Mutex<Vec<(String, String)>>,
    /// `[preview] access` of the atlas.toml the runs use.
    access: Mutex<String>,
    /// More `[preview]` lines of that atlas.toml.
    preview_extra: Mutex<String>,
}

/// The app behind the preview URL: `/<app>/healthz` and `/<app>/api/ping` answer, nothing else.
async fn app_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let h = h.clone();
        async move {
            let p = uri.path().to_string();
            h.lock().unwrap().push(p.clone());
            if p.ends_with("/healthz") {
                (StatusCode::OK, "ok")
            } else if p.ends_with("/api/ping") {
                (StatusCode::OK, "pong")
            } else {
                (StatusCode::NOT_FOUND, "not found")
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), hits)
}

async fn world() -> World {
    let (app_base, app_hits) = app_server().await;
    World {
        // `GET /user` answers 403, as for the workflow's installation token.
        fakes: Fakes::start(NEON_KEY, FLY_TOKEN, REPO, None).await,
        app_base,
        app_hits,
        texts: Mutex::new(Vec::new()),
        time_v: Default::default(),
        interrupt: Default::default(),
        interrupt_on_neon_create: Default::default(),
        signal_to_exit: Mutex::new(None),
        extra_env: Mutex::new(Vec::new()),
        access: Mutex::new("public".into()),
        preview_extra: Mutex::new(String::new()),
    }
}

fn app_name() -> String {
    atlas::naming::preview_app(&atlas::naming::prefix(None, REPO), PR)
}

fn image(sha: &str) -> String {
    format!("registry.fly.io/kitchen:{}", &sha[..12])
}

/// A webhook fixture moved to the fake repository, with `head_sha` as the PR head and
/// `head_repo` as the repository the head branch lives in (a fork when it differs).
fn payload(file: &str, head_sha: &str, head_repo: &str) -> String {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let (owner, name) = REPO.split_once('/').unwrap();
    v["repository"]["full_name"] = Value::from(REPO);
    v["repository"]["name"] = Value::from(name);
    v["repository"]["owner"]["login"] = Value::from(owner);
    let pr = &mut v["pull_request"];
    pr["base"]["repo"]["full_name"] = Value::from(REPO);
    pr["head"]["repo"]["full_name"] = Value::from(head_repo);
    pr["head"]["sha"] = Value::from(head_sha);
    if v.get("after").is_some_and(|a| !a.is_null()) {
        v["after"] = Value::from(head_sha);
    }
    serde_json::to_string(&v).unwrap()
}

fn atlas_toml(app_base: &str, access: &str, preview_extra: &str) -> String {
    format!(
        r#"[app]
health_path = "/healthz"
readiness_timeout = "3s"

[database]
schema_only = true
# No bookkeeping tables to keep: nothing to copy, no PostgreSQL needed behind the fake Neon.
migrations_tables = []
# Migration tools print connection strings; atlas must redact them.
migrations = "echo migrated; echo \"connected to $DATABASE_URL\""

[preview]
secrets = ["STRIPE_KEY"]
access = "{access}"
{preview_extra}

[fly]
preview_url = "{app_base}/{{app}}"

[[smoke]]
name = "ping"
path = "/api/ping"
status = 200
body_contains = "pong"
"#
    )
}

/// One finished `atlas run`.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    output_file: String,
    outputs: BTreeMap<String, String>,
    summary: String,
}

impl Run {
    fn out(&self, name: &str) -> &str {
        self.outputs.get(name).map(String::as_str).unwrap_or("")
    }
    fn dump(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}\n--- outputs\n{}",
            self.code, self.stdout, self.stderr, self.output_file
        )
    }
}

/// Every input `atlas run` needs for a cloud preview; tests override single ones.
fn cloud_inputs<'a>(w: &'a World, image: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut inputs = w.fakes.inputs(ORG);
    inputs.extend([
        ("github_token", GH_TOKEN),
        ("image", image),
        ("preview_secrets", "STRIPE_KEY=sk_test_e2e_Pq44Rr99zz"),
    ]);
    inputs
}

impl std::ops::Deref for World {
    type Target = Fakes;
    fn deref(&self) -> &Fakes {
        &self.fakes
    }
}

impl World {
    /// Runs `atlas run` for the fixture `file`'s pull_request event with `head` as the PR head
    /// in this repository, its image and the default inputs.
    async fn pr_run(&self, file: &str, head: &str) -> Run {
        self.run(
            "pull_request",
            &payload(file, head, REPO),
            &image(head),
            &[],
            None,
        )
        .await
    }

    /// [`Self::pr_run`] with the PR open at `head` on GitHub (closed for a `closed` event);
    /// the run must succeed.
    async fn pr_ok(&self, file: &str, head: &str) -> Run {
        self.gh.add_pull(PR, !file.contains("closed"), head, false);
        let r = self.pr_run(file, head).await;
        assert_eq!(r.code, 0, "{}", r.dump());
        r
    }

    /// Runs `atlas run` for `event_name` with `payload`; `inputs` override [`cloud_inputs`].
    /// With `subdir`, atlas.toml lives in `workspace/<subdir>` and `working_directory` names it.
    async fn run(
        &self,
        event_name: &str,
        payload: &str,
        image: &str,
        inputs: &[(&str, &str)],
        subdir: Option<&str>,
    ) -> Run {
        self.atlas(&["run"], event_name, payload, image, inputs, subdir)
            .await
    }

    /// Runs `atlas <args>` as [`World::run`] runs `atlas run`: same runner environment, inputs
    /// and atlas.toml; its texts join the secret scan.
    async fn atlas(
        &self,
        args: &[&str],
        event_name: &str,
        payload: &str,
        image: &str,
        inputs: &[(&str, &str)],
        subdir: Option<&str>,
    ) -> Run {
        let mut all: BTreeMap<&str, &str> = cloud_inputs(self, image).into_iter().collect();
        all.extend(inputs.iter().copied());
        let pairs: Vec<(&str, &str)> = all.into_iter().collect();
        let mut env = RunnerEnv::new(event_name, payload, &pairs);
        let config_dir = match subdir {
            Some(s) => env.workspace().join(s),
            None => env.workspace(),
        };
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::write(
            config_dir.join("atlas.toml"),
            atlas_toml(
                &self.app_base,
                &self.access.lock().unwrap(),
                &self.preview_extra.lock().unwrap(),
            ),
        )
        .unwrap();
        if subdir.is_some() {
            env.vars.insert(
                "INPUT_WORKING_DIRECTORY".into(),
                config_dir.display().to_string(),
            );
        }
        env.vars.extend(self.runner_vars());
        for (k, v) in self.extra_env.lock().unwrap().iter() {
            env.vars.insert(k.clone(), v.clone());
        }

        // With `time_v`, GNU time reports the run's peak memory on stderr.
        let mut cmd = if self.time_v.load(std::sync::atomic::Ordering::Relaxed) {
            let mut c = env.command("/usr/bin/time");
            c.arg("-v").arg(crate::common::bin::ATLAS);
            c
        } else {
            env.command(crate::common::bin::ATLAS)
        };
        cmd.args(args);
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let wait = child.wait_with_output();
        tokio::pin!(wait);
        let interrupt = self.interrupt.load(std::sync::atomic::Ordering::Relaxed);
        let on_neon_create = self
            .interrupt_on_neon_create
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut signalled: Option<std::time::Instant> = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        let out = loop {
            tokio::select! {
                o = &mut wait => break o.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    assert!(tokio::time::Instant::now() < deadline, "atlas run did not finish within 45 s");
                    // SIGINT as the runner sends it on cancel, once a machine exists (the run
                    // is then waiting for it to start).
                    let now = (interrupt && !self.fly.live_machines().is_empty())
                        || (on_neon_create && self.neon.core.count("createProjectBranch") > 0);
                    if now && signalled.is_none() {
                        std::process::Command::new("kill")
                            .args(["-INT", &pid.to_string()])
                            .status()
                            .unwrap();
                        signalled = Some(std::time::Instant::now());
                    }
                }
            }
        };
        if let Some(t) = signalled {
            *self.signal_to_exit.lock().unwrap() = Some(t.elapsed());
        }
        let output_file = env.output_file();
        let outputs = atlas::gha::parse_output_file(&output_file)
            .unwrap_or_else(|e| panic!("GITHUB_OUTPUT does not parse: {e}\n{output_file}"))
            .into_iter()
            .collect();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            output_file,
            outputs,
            summary: env.summary_file(),
        };
        let mut texts = self.texts.lock().unwrap();
        let tag = format!(
            "{} {event_name} run {}",
            args.join(" "),
            texts.len() / 4 + 1
        );
        // `::add-mask::` lines are how secrets are registered with the runner: they must carry
        // the value. Every other line must not.
        let stdout: String = run
            .stdout
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .collect::<Vec<_>>()
            .join("\n");
        texts.push((format!("{tag} stdout"), stdout));
        texts.push((format!("{tag} stderr"), run.stderr.clone()));
        texts.push((format!("{tag} GITHUB_OUTPUT"), run.output_file.clone()));
        texts.push((format!("{tag} step summary"), run.summary.clone()));
        run
    }

    /// Atlas's comments on the PR (written with the workflow token: `github-actions[bot]`).
    fn comments(&self) -> Vec<fake_github::Comment> {
        self.gh
            .with(|s| s.comments_on(PR))
            .into_iter()
            .filter(|c| c.user == "github-actions[bot]")
            .collect()
    }

    /// (environment, sha, statuses oldest first) of every deployment.
    fn deployments(&self) -> Vec<(String, String, Vec<String>)> {
        self.gh.with(|s| {
            s.deployments
                .iter()
                .map(|d| (d.environment.clone(), d.sha.clone(), s.statuses_of(d.id)))
                .collect()
        })
    }

    /// Nothing of the preview is left on Neon or Fly.
    fn assert_nothing_left(&self) {
        assert_eq!(
            self.neon.preview_branches(),
            Vec::<String>::new(),
            "orphaned branches"
        );
        assert_eq!(self.fly.app_names(), Vec::<String>::new(), "orphaned apps");
    }

    /// No secret in any run's texts, comment or deployment record; every request matched the
    /// vendor spec; every GitHub request carried the token.
    fn assert_clean(&self) {
        let mut texts = self.texts.lock().unwrap().clone();
        for c in self.gh.with(|s| s.comments.clone()) {
            // The contract record is base64 JSON: decode it, or the scan cannot see inside.
            if let Some(record) = atlas::contract::Contract::from_comment(&c.body) {
                texts.push((
                    format!("comment {} contract record", c.id),
                    serde_json::to_string(&record).unwrap(),
                ));
            }
            texts.push((format!("comment {}", c.id), c.body));
        }
        let records = self.gh.with(|s| {
            let mut v: Vec<String> = s
                .deployments
                .iter()
                .map(|d| d.payload.to_string())
                .collect();
            v.extend(s.statuses.iter().map(|st| st.payload.to_string()));
            v
        });
        texts.extend(records.into_iter().map(|r| ("deployment record".into(), r)));
        for (what, text) in &texts {
            for secret in [
                NEON_KEY,
                FLY_TOKEN,
                GH_TOKEN,
                STRIPE,
                PASSWORD_TAG,
                GATE_SECRET,
            ] {
                assert!(
                    !text.contains(secret),
                    "secret {secret:?} leaked in {what}:\n{text}"
                );
            }
        }
        self.assert_spec_clean();
        let auth = self.gh.with(|s| s.auth.clone());
        assert!(
            auth.iter().all(|a| a == &format!("Bearer {GH_TOKEN}")),
            "github requests without the token: {auth:?}"
        );
    }
}

/// The deployment of a preview: environment `preview/pr-N`, statuses `in_progress` then
/// `success`.
fn assert_deployment_contract(d: &(String, String, Vec<String>)) {
    let (env, _, statuses) = d;
    assert_eq!(env, ENVIRONMENT, "{d:?}");
    assert_eq!(statuses, &vec!["in_progress", "success"], "{d:?}");
}

fn assert_contract_comment(body: &str, url: &str, sha: &str) {
    assert!(body.contains("<!-- atlas:preview pr=2 -->"), "{body}");
    assert!(body.contains(url), "no preview URL {url} in:\n{body}");
    assert!(body.contains(sha), "no head sha {sha} in:\n{body}");
    for clause in CLAUSES {
        assert!(
            body.contains(clause),
            "clause {clause:?} missing in:\n{body}"
        );
    }
}

/// Scenarios 1-4 (+8, 9): opened -> synchronize -> the same run again -> closed.
#[tokio::test]
async fn a_pull_request_life_opened_synchronize_repeat_closed() {
    let w = world().await;
    let app = app_name();
    let url = format!("{}/{app}", w.app_base);

    // 1. Opened. A reviewer quoting the marker must not be taken for Atlas's comment.
    let human = "<!-- atlas:preview pr=2 --> quoting the bot: looks good";
    let human_id = w.gh.add_comment(PR, "octocat", human);
    let r = w.pr_ok("pull_request.opened.json", HEAD1).await;
    let first_calls = w.calls();
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    let branch = w.neon.branch("preview/pr-2").unwrap();
    assert_eq!(
        branch.annotation.get("atlas_pr").map(String::as_str),
        Some("2")
    );
    assert_eq!(w.fly.app_names(), vec![app.clone()]);
    let fly_app = w.fly.app(&app).unwrap();
    assert_eq!(fly_app.org, ORG);
    assert_eq!(fly_app.machines.len(), 1);
    let machine = fly_app.machines[0].clone();
    assert_eq!(machine.config["image"], image(HEAD1).as_str());
    // The app knows what it is: its own traces and logs can be filtered per preview.
    let env = &machine.config["env"];
    assert_eq!(env["ATLAS_COMMIT_SHA"], HEAD1, "{env}");
    assert_eq!(env["OTEL_SERVICE_NAME"], REPO.rsplit('/').next().unwrap());
    assert_eq!(
        env["OTEL_RESOURCE_ATTRIBUTES"],
        format!("service.version={HEAD1},deployment.environment=preview,atlas.pr=2").as_str()
    );
    // Only the declared secret and the branch's own URI reach the app.
    assert_eq!(
        fly_app.secrets.keys().collect::<Vec<_>>(),
        vec!["DATABASE_URL", "STRIPE_KEY"]
    );
    assert_eq!(fly_app.secrets["STRIPE_KEY"], STRIPE);
    assert!(fly_app.secrets["DATABASE_URL"].contains(&branch.password));
    let hits = w.app_hits.lock().unwrap().clone();
    assert!(hits.contains(&format!("/{app}/healthz")), "{hits:?}");
    assert!(hits.contains(&format!("/{app}/api/ping")), "{hits:?}");

    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_contract_comment(&comments[0].body, &url, HEAD1);
    let deployments = w.deployments();
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(deployments[0].1, HEAD1);
    assert_deployment_contract(&deployments[0]);

    assert_eq!(r.out("preview_url"), url, "{}", r.dump());
    assert_eq!(r.out("commit_sha"), HEAD1, "the PR head, not GITHUB_SHA");
    assert_ne!(r.out("commit_sha"), MERGE_SHA);
    assert_eq!(r.out("database_branch"), "preview/pr-2");
    assert_eq!(r.out("verdict"), "pass");
    assert!(
        r.out("comment_url")
            .ends_with(&format!("/pull/2#issuecomment-{}", comments[0].id)),
        "{}",
        r.dump()
    );
    assert!(
        r.summary.contains("pass") || r.summary.contains("ready"),
        "{}",
        r.summary
    );
    // The runner is told to mask every secret, the database password included.
    let masks: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("::add-mask::"))
        .collect();
    for secret in [
        NEON_KEY,
        FLY_TOKEN,
        GH_TOKEN,
        STRIPE,
        branch.password.as_str(),
    ] {
        assert!(masks.contains(&secret), "no mask for {secret:?}: {masks:?}");
    }

    // 2. Synchronize: the PR moved to HEAD2 (atlas.toml in a subdirectory this time).
    w.gh.add_pull(PR, true, HEAD2, false);
    w.reset_calls();
    let sync = payload("pull_request.synchronize.json", HEAD2, REPO);
    let r = w
        .run("pull_request", &sync, &image(HEAD2), &[], Some("app"))
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    assert_eq!(w.neon.branch("preview/pr-2").unwrap().id, branch.id);
    assert_eq!(w.fly.app_names(), vec![app.clone()]);
    let fly_app = w.fly.app(&app).unwrap();
    assert_eq!(fly_app.machines.len(), 1, "machines piled up");
    assert_eq!(
        fly_app.machines[0].id, machine.id,
        "machine replaced, not updated"
    );
    assert_eq!(fly_app.machines[0].config["image"], image(HEAD2).as_str());
    assert_eq!(w.neon.core.count("createProjectBranch"), 0);
    assert_eq!(w.fly.core.count("Apps_create"), 0);
    // The one create is the one-off migrations machine (run in the app's image, then gone);
    // the app's machine was updated in place (above).
    assert_eq!(w.fly.core.count("Machines_create"), 1);
    assert_eq!(
        w.fly.tasks().len(),
        2,
        "migrations did not run as a fly machine"
    );
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_contract_comment(&comments[0].body, &url, HEAD2);
    assert_eq!(r.out("commit_sha"), HEAD2);
    assert_eq!(r.out("verdict"), "pass");
    let sync_calls = w.calls();

    // 3. The same run again converges: nothing new anywhere.
    let comment_id = comments[0].id;
    let deployments_before = w.deployments().len();
    w.reset_calls();
    let r = w.run("pull_request", &sync, &image(HEAD2), &[], None).await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let repeat_calls = w.calls();
    eprintln!(
        "calls (neon, fly, github): opened {first_calls:?}, synchronize {sync_calls:?}, repeat {repeat_calls:?}"
    );
    eprintln!("repeat neon calls: {:?}", w.neon.core.calls());
    eprintln!("repeat fly calls: {:?}", w.fly.core.calls());
    eprintln!("repeat github calls: {:#?}", w.gh.calls());
    assert_eq!(w.neon.preview_branches().len(), 1);
    assert_eq!(w.fly.app(&app).unwrap().machines.len(), 1);
    assert_eq!(w.comments().len(), 1);
    assert_eq!(w.comments()[0].id, comment_id);
    assert_eq!(
        w.deployments().len(),
        deployments_before,
        "deployment piled up"
    );
    assert_eq!(w.neon.core.count("createProjectBranch"), 0);
    assert_eq!(
        w.fly.core.count("Apps_create") + w.fly.core.count("Machines_create"),
        1,
        "only the one-off migrations machine is created on a repeat"
    );
    assert!(
        !w.gh
            .calls()
            .iter()
            .any(|c| c.starts_with("POST /repos/octo-org/kitchen/issues/")),
        "a comment was created on a repeat: {:?}",
        w.gh.calls()
    );
    assert_eq!(r.out("verdict"), "pass");

    // 4. Closed.
    let r = w.pr_ok("pull_request.closed.unmerged.json", HEAD2).await;
    w.assert_nothing_left();
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(
        comments[0].body.to_lowercase().contains("destroyed"),
        "{}",
        comments[0].body
    );
    // the contract the preview last ran under, from the comment it replaces: the last up's
    // evidence, not "not run"; its creation time is Neon's, not "in an earlier run".
    assert!(
        !comments[0].body.contains("in an earlier run"),
        "{}",
        comments[0].body
    );
    assert!(
        comments[0].body.contains("smoke: 1/1 passed")
            && comments[0].body.contains("applied cleanly")
            && !comments[0].body.contains("not run"),
        "{}",
        comments[0].body
    );
    for (env, sha, statuses) in w.deployments() {
        assert_eq!(
            statuses.last().map(String::as_str),
            Some("inactive"),
            "deployment {env} at {sha}: {statuses:?}"
        );
    }
    assert_eq!(r.out("verdict"), "destroyed", "{}", r.dump());
    assert!(r.out("comment_url").contains("#issuecomment-"));
    let theirs =
        w.gh.with(|s| s.comments.iter().find(|c| c.id == human_id).cloned());
    assert_eq!(theirs.map(|c| c.body), Some(human.to_string()));

    w.assert_clean();
}

/// Scenario 5a: 5xx bursts and 429 with `Retry-After` on each provider during up.
#[tokio::test]
async fn transient_faults_on_every_provider_do_not_fail_the_preview() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    let neon = &w.neon.core;
    neon.fault("listProjectBranches", Fault::Status(503, None), 2);
    neon.fault("createProjectBranch", Fault::Status(503, None), 2);
    neon.fault(
        "getProjectOperation",
        Fault::Status(429, Some("1".into())),
        1,
    );
    let fly = &w.fly.core;
    fly.fault("Apps_show", Fault::Status(503, None), 2);
    fly.fault("Apps_create", Fault::Status(429, Some("1".into())), 1);
    fly.fault("Machines_create", Fault::Status(503, None), 2);
    w.gh.fault(fake_github::Fault::new(Method::GET, "/pulls/2", 503).times(2));
    w.gh.fault(fake_github::Fault {
        retry_after: Some(1),
        ..fake_github::Fault::new(Method::POST, "/issues/2/comments", 429)
    });
    w.gh.fault(fake_github::Fault::secondary_rate_limit(
        Method::POST,
        "/deployments",
        1,
    ));

    let r = w.pr_run("pull_request.opened.json", HEAD1).await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "pass");
    assert_eq!(w.neon.preview_branches().len(), 1);
    let app = w.fly.app(&app_name()).unwrap();
    assert_eq!(app.machines.len(), 1, "a retried create piled up machines");
    assert_eq!(w.comments().len(), 1, "a retried create piled up comments");
    assert_eq!(
        w.deployments().len(),
        1,
        "a retried create piled up deployments"
    );
    // Every fault was met (and so retried past).
    assert!(neon.count("createProjectBranch") >= 3, "{:?}", neon.calls());
    assert!(fly.count("Apps_create") >= 2, "{:?}", fly.calls());
    assert!(fly.count("Machines_create") >= 3, "{:?}", fly.calls());
    assert!(w.gh.with(|s| s.faults.is_empty()), "github faults not met");

    w.pr_ok("pull_request.closed.unmerged.json", HEAD1).await;
    w.assert_nothing_left();
    w.assert_clean();
}

/// Scenario 5b: a machine that never starts fails the run (exit 2, the provider and call named,
/// outputs written with verdict `error`); the following closed run leaves nothing behind.
#[tokio::test]
async fn a_machine_that_never_starts_fails_and_leaves_nothing() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    w.fly.set_never_start(true);
    let r = w.pr_run("pull_request.opened.json", HEAD1).await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert_eq!(r.code, 2, "an operational failure exits 2: {}", r.dump());
    assert!(
        r.stderr.contains("fly: wait for machine started") && r.stderr.contains(&app_name()),
        "the error does not name the provider and the call:\n{}",
        r.stderr
    );
    assert!(w.fly.core.count("Machines_wait") >= 1);
    assert_eq!(r.out("verdict"), "error", "{}", r.dump());
    assert_eq!(r.out("commit_sha"), HEAD1);
    assert!(
        !r.summary.trim().is_empty(),
        "empty step summary on failure"
    );
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(
        comments[0].body.contains("Preview failed"),
        "{}",
        comments[0].body
    );
    let statuses = &w.deployments()[0].2;
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("failure"),
        "{statuses:?}"
    );

    w.fly.set_never_start(false);
    let r = w.pr_ok("pull_request.closed.unmerged.json", HEAD1).await;
    assert_eq!(r.out("verdict"), "destroyed");
    w.assert_nothing_left();
    w.assert_clean();
}

/// A signed-link preview on Fly: without `gate_secret` the run fails naming it before any
/// provider request; with it, two machines (the gate public, the app private), the identity
/// clause says the mode, who gets in and until when, the evidence says smoke and load went
/// through the gate, no gate secret or key is printed, and the closed run leaves nothing.
#[tokio::test]
async fn a_signed_link_preview_on_fly_runs_behind_its_gate_machine() {
    let w = world().await;
    *w.access.lock().unwrap() = "signed-link".into();
    w.gh.add_pull(PR, true, HEAD1, false);
    let opened = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 2, "{}", r.dump());
    assert!(r.stderr.contains("gate_secret"), "{}", r.dump());
    w.assert_no_cloud_calls();

    let r = w
        .run(
            "pull_request",
            &opened,
            &image(HEAD1),
            &[("gate_secret", GATE_SECRET)],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(
        r.stdout.contains(&format!("::add-mask::{GATE_SECRET}")),
        "the gate secret is not masked"
    );
    // Two apps: the gate machine public in the preview app, the app machine in the private app
    // behind Flycast.
    let a = w.fly.app(&app_name()).expect("the app");
    assert_eq!(a.machines.len(), 1, "{:#?}", a.machines);
    let gate = &a.machines[0];
    assert_eq!(gate.meta("atlas_role"), Some("gate"));
    let private = atlas::provider::fly::private_app(&app_name());
    let p = w.fly.app(&private).expect("the private app");
    assert_eq!(p.machines.len(), 1, "{:#?}", p.machines);
    let appm = &p.machines[0];
    assert!(gate.public());
    assert_eq!(appm.meta("atlas_commit"), Some(HEAD1));
    assert_eq!(
        gate.config["env"]["ATLAS_GATE_UPSTREAM"],
        format!("{private}.flycast:80")
    );
    assert_eq!(
        gate.config["env"]["ATLAS_GATE_UPSTREAM_INSTANCE"],
        appm.id.as_str()
    );
    assert!(
        w.fly.ips(&private).iter().all(|(_, t)| t == "private_v6")
            && !w.fly.ips(&private).is_empty(),
        "{:?}",
        w.fly.ips(&private)
    );
    let key = a.secrets["ATLAS_GATE_KEY"].clone();
    let comments = w.comments();
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    // The comment escapes markdown: `signed\-link`, `2026\-12\-09T...`.
    assert!(body.contains("access: signed\\-link"), "{body}");
    assert!(body.contains("who: holders of a signed link"), "{body}");
    assert!(body.contains(" · until 20"), "{body}");
    assert!(
        body.contains("(smoke and load through the access gate)"),
        "{body}"
    );
    // A public repository (the event says `private: false`): no link in the comment, which
    // anyone can read; it says how to mint one.
    assert!(
        body.contains(&format!("mint one with `atlas preview link --pr {PR}`")),
        "{body}"
    );
    assert!(!body.contains("atlas_token"), "{body}");

    // A later run mints a link from the repository secret alone (the nonce is on the gate
    // machine); it prints the link and nothing else, never the secret or the key.
    let nonce = gate.meta(atlas::gate::fly::NONCE_KEY).unwrap().to_string();
    let r = w
        .atlas(
            &["preview", "link", "--pr", &PR.to_string(), "--ttl", "2h"],
            "pull_request",
            &opened,
            &image(HEAD1),
            &[("gate_secret", GATE_SECRET)],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let printed: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect();
    assert_eq!(printed.len(), 1, "{}", r.dump());
    let prefix = format!("{}/{}/?atlas_token=", w.app_base, app_name());
    let token = printed[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not a link to the preview: {}", r.dump()));
    let claims = atlas::gate::PreviewKey::from_hex(&app_name(), &key)
        .unwrap()
        .verify(atlas::gate::Kind::Link, token, atlas::gate::token::now())
        .expect("the gate's key verifies the link");
    let ttl = claims.expires - atlas::gate::token::now();
    assert!((7000..=7200).contains(&ttl), "--ttl 2h: {ttl}");
    assert!(
        atlas::gate::PreviewKey::derive(
            &atlas::secret::Secret::new(GATE_SECRET),
            &app_name(),
            &nonce
        )
        .verify(atlas::gate::Kind::Link, token, atlas::gate::token::now())
        .is_ok()
    );
    // Without the secret there is nothing to mint with, and the error says which input.
    let r = w
        .atlas(
            &["preview", "link", "--pr", &PR.to_string()],
            "pull_request",
            &opened,
            &image(HEAD1),
            &[],
            None,
        )
        .await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(r.stderr.contains("gate_secret"), "{}", r.dump());

    // A private repository: the comment (read only by the repository's readers) carries a
    // link that opens the preview until it expires; no log, output or summary does.
    let mut private: Value = serde_json::from_str(&opened).unwrap();
    private["repository"]["private"] = Value::from(true);
    let r = w
        .run(
            "pull_request",
            &private.to_string(),
            &image(HEAD1),
            &[("gate_secret", GATE_SECRET)],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let comments = w.comments();
    assert_eq!(comments.len(), 1);
    let pbody = &comments[0].body;
    let link = pbody
        .split("[open the preview](")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("no signed link in {pbody}"));
    let token = link
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not a link to the preview: {link}"));
    let claims = atlas::gate::PreviewKey::from_hex(&app_name(), &key)
        .unwrap()
        .verify(atlas::gate::Kind::Link, token, atlas::gate::token::now())
        .expect("the comment's link opens the preview");
    assert!(
        claims.expires > atlas::gate::token::now() + 6 * 86400,
        "valid until the preview expires (the default 7 days)"
    );
    assert!(!pbody.contains("mint one with"), "{pbody}");
    for text in [&r.stdout, &r.stderr, &r.summary, &r.output_file] {
        assert!(!text.contains(token), "the link leaked: {}", r.dump());
    }
    for (what, text) in w.texts.lock().unwrap().iter() {
        assert!(!text.contains(&key), "the gate key leaked in {what}");
    }
    assert!(!body.contains(&key));

    w.gh.add_pull(PR, false, HEAD1, false);
    let r = w
        .run(
            "pull_request",
            &payload("pull_request.closed.unmerged.json", HEAD1, REPO),
            &image(HEAD1),
            &[("gate_secret", GATE_SECRET)],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "destroyed");
    w.assert_nothing_left();
    // A destroyed preview has no nonce left: no link can be minted for it.
    let r = w
        .atlas(
            &["preview", "link", "--pr", &PR.to_string()],
            "pull_request",
            &opened,
            &image(HEAD1),
            &[("gate_secret", GATE_SECRET)],
            None,
        )
        .await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(r.stderr.contains("no gated preview"), "{}", r.dump());
    assert!(!r.stdout.contains("atlas_token"), "{}", r.dump());
    w.assert_clean();
}

/// The host a connection URI points at (one per Neon branch endpoint in the fake).
fn db_host(uri: &str) -> String {
    url::Url::parse(uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// A gated preview on Fly across three pushes: the migrations run as a machine of the private
/// app (which holds the app's secrets) and the gate's app holds only the gate's secrets, even
/// when an older run left the app's there; before each push's migrations, the outgoing
/// commit's data is frozen as a child branch of the preview's (`preview/pr-2/c-<sha7>`, Atlas's
/// annotation, the preview's expiry), its kept machine boots on that branch (through its
/// commit's secret names, nothing in its plain config) and answers with its own commit, the
/// identity clause says which data each commit URL uses; a commit beyond `keep_commits` takes its
/// branch and secrets with it, and the closed PR leaves no app, machine or branch.
#[tokio::test]
async fn a_kept_commit_on_fly_runs_on_its_own_frozen_branch_and_migrations_stay_out_of_the_gate_app()
 {
    const HEAD3: &str = "c0ffee03c0ffee03c0ffee03c0ffee03c0ffee03";
    let w = world().await;
    *w.access.lock().unwrap() = "signed-link".into();
    let gate = [("gate_secret", GATE_SECRET)];
    let app = app_name();
    let private = atlas::provider::fly::private_app(&app);
    let push = |file: &'static str, head: &'static str| {
        let w = &w;
        async move {
            w.gh.add_pull(PR, true, head, false);
            let r = w
                .run(
                    "pull_request",
                    &payload(file, head, REPO),
                    &image(head),
                    &gate,
                    None,
                )
                .await;
            assert_eq!(r.code, 0, "{}", r.dump());
            r
        }
    };
    let migration_apps = || {
        let s = w.fly.state.lock().unwrap();
        s.destroyed
            .iter()
            .filter(|(_, m)| m.meta("atlas_role") == Some("migrations"))
            .map(|((a, _), _)| a.clone())
            .collect::<Vec<String>>()
    };

    push("pull_request.opened.json", HEAD1).await;
    assert_eq!(migration_apps(), vec![private.clone()]);
    let keys = |a: &str| -> Vec<String> { w.fly.app(a).unwrap().secrets.into_keys().collect() };
    assert_eq!(keys(&app), vec!["ATLAS_GATE_KEY".to_string()]);
    assert!(
        keys(&private).contains(&"DATABASE_URL".to_string())
            && keys(&private).contains(&"STRIPE_KEY".to_string()),
        "{:?}",
        keys(&private)
    );
    let preview_branch = w.neon.branch("preview/pr-2").expect("the preview's branch");
    // What an older Atlas left on the gate's app (it ran the migrations there).
    w.fly.with_app(&app, |a| {
        a.secrets
            .insert("DATABASE_URL".into(), "postgres://u:old@ep-old/db".into());
        a.secrets.insert("STRIPE_KEY".into(), STRIPE.into());
    });

    let r = push("pull_request.synchronize.json", HEAD2).await;
    assert_eq!(migration_apps(), vec![private.clone(), private.clone()]);
    assert_eq!(keys(&app), vec!["ATLAS_GATE_KEY".to_string()]);
    let frozen = w
        .neon
        .branch("preview/pr-2/c-ec26c3e")
        .unwrap_or_else(|| panic!("no frozen branch: {:?}", w.neon.preview_branches()));
    assert_eq!(
        frozen.parent_id.as_deref(),
        Some(preview_branch.id.as_str())
    );
    assert_eq!(frozen.init_source, "parent-data");
    assert_eq!(
        frozen.annotation.get("atlas").map(String::as_str),
        Some("preview")
    );
    assert_eq!(
        frozen.annotation.get("atlas_pr").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        frozen.annotation.get("atlas_repo").map(String::as_str),
        Some(REPO)
    );
    assert!(frozen.expires_at.is_some());
    assert_eq!(
        frozen.expires_at,
        w.neon.branch("preview/pr-2").unwrap().expires_at
    );
    assert!(
        r.stdout.contains("froze preview/pr-2/c-ec26c3e"),
        "{}",
        r.dump()
    );

    let p = w.fly.app(&private).unwrap();
    let kept = p
        .machines
        .iter()
        .find(|m| m.meta("atlas_role") == Some("kept"))
        .expect("a kept machine")
        .clone();
    let current = p
        .machines
        .iter()
        .find(|m| m.meta("atlas_role").is_none())
        .expect("the current machine")
        .clone();
    assert_eq!(kept.meta("atlas_commit"), Some(HEAD1));
    assert_eq!(kept.state, "stopped");
    assert!(
        kept.config["env"].get("DATABASE_URL").is_none(),
        "{}",
        kept.config
    );
    let frozen_host = format!("{}.neon.test", frozen.endpoint.clone().unwrap());
    let preview_host = format!("{}.neon.test", preview_branch.endpoint.clone().unwrap());
    assert_eq!(
        db_host(&kept.env_with_secrets(&p.secrets)["DATABASE_URL"]),
        frozen_host
    );
    assert_eq!(
        db_host(&current.env_with_secrets(&p.secrets)["DATABASE_URL"]),
        preview_host
    );
    assert_eq!(
        kept.env_with_secrets(&p.secrets)["STRIPE_KEY"],
        STRIPE,
        "the kept machine keeps the app's other secrets"
    );
    // Through Fly's proxy, as the gate reaches them: each machine answers with its own commit
    // and its own data; the kept one is woken for it.
    let flycast = w.fly.flycast(&private).await;
    let http = reqwest::Client::new();
    for (m, commit, host) in [
        (&kept, HEAD1, &frozen_host),
        (&current, HEAD2, &preview_host),
    ] {
        let v: Value = http
            .get(format!("http://{flycast}/healthz"))
            .header("fly-force-instance-id", &m.id)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (v["commit"].as_str(), v["database"].as_str()),
            (Some(commit), Some(host.as_str()))
        );
    }
    let record = atlas::contract::Contract::from_comment(&w.comments()[0].body).unwrap();
    assert_eq!(record.code.commits.len(), 1);
    assert_eq!(
        record.code.commits[0].data.as_deref(),
        Some("its own branch preview/pr-2/c-ec26c3e")
    );
    assert!(
        w.comments()[0]
            .body
            .contains("(data: its own branch preview/pr\\-2/c\\-ec26c3e)"),
        "{}",
        w.comments()[0].body
    );

    // keep_commits = 1: the third push keeps only the second commit; the first one's machine,
    // branch and secrets go.
    *w.preview_extra.lock().unwrap() = "keep_commits = 1".into();
    push("pull_request.synchronize.json", HEAD3).await;
    let names = w.neon.preview_branches();
    assert!(
        names.contains(&"preview/pr-2/c-5d1c0ff".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"preview/pr-2/c-ec26c3e".to_string()),
        "{names:?}"
    );
    let p = w.fly.app(&private).unwrap();
    assert_eq!(p.machines.len(), 2, "{:#?}", p.machines);
    assert!(
        p.secrets.keys().all(|k| !k.starts_with("ATLAS_C_EC26C3E_")),
        "{:?}",
        p.secrets.keys()
    );
    assert!(p.secrets.contains_key("ATLAS_C_5D1C0FF_DATABASE_URL"));

    w.gh.add_pull(PR, false, HEAD3, false);
    let r = w
        .run(
            "pull_request",
            &payload("pull_request.closed.unmerged.json", HEAD3, REPO),
            &image(HEAD3),
            &gate,
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    w.assert_nothing_left();
    assert!(w.fly.live_machines().is_empty());
    w.assert_clean();
}

/// A frozen branch Neon refuses (the project is at its branch limit) does not fail the push:
/// a warning says so and how to stop trying, the kept commit shares the preview's branch, and
/// the identity clause says that it does.
#[tokio::test]
async fn a_refused_frozen_branch_leaves_the_kept_commit_on_the_shared_branch() {
    let w = world().await;
    *w.access.lock().unwrap() = "signed-link".into();
    let gate = [("gate_secret", GATE_SECRET)];
    for (file, head) in [
        ("pull_request.opened.json", HEAD1),
        ("pull_request.synchronize.json", HEAD2),
    ] {
        if head == HEAD2 {
            w.neon
                .core
                .fault("createProjectBranch", Fault::Status(422, None), 1);
        }
        w.gh.add_pull(PR, true, head, false);
        let r = w
            .run(
                "pull_request",
                &payload(file, head, REPO),
                &image(head),
                &gate,
                None,
            )
            .await;
        assert_eq!(r.code, 0, "{}", r.dump());
        if head == HEAD2 {
            assert!(
                r.stdout
                    .contains("could not be frozen as preview/pr-2/c-ec26c3e")
                    && r.stdout.contains("commit_data = \"shared\""),
                "{}",
                r.dump()
            );
        }
    }
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    let record = atlas::contract::Contract::from_comment(&w.comments()[0].body).unwrap();
    assert_eq!(
        record.code.commits[0].data.as_deref(),
        Some("preview/pr-2, shared with the newest commit")
    );
    let private = atlas::provider::fly::private_app(&app_name());
    let p = w.fly.app(&private).unwrap();
    let kept = p
        .machines
        .iter()
        .find(|m| m.meta("atlas_role") == Some("kept"))
        .expect("a kept machine");
    assert!(kept.config.get("processes").is_none(), "{}", kept.config);
    w.gh.add_pull(PR, false, HEAD2, false);
    let r = w
        .run(
            "pull_request",
            &payload("pull_request.closed.unmerged.json", HEAD2, REPO),
            &image(HEAD2),
            &gate,
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    w.assert_nothing_left();
}

/// `access = "github"` with `[preview] allowed_teams`: the teams reach the gate machine's
/// environment and the identity clause; the gate started from what Fly holds lets a member of
/// the team in (checked against the fake GitHub's team membership call) and no stranger.
#[tokio::test]
async fn allowed_teams_reach_the_github_gate_on_fly() {
    let w = world().await;
    *w.access.lock().unwrap() = "github".into();
    *w.preview_extra.lock().unwrap() = "allowed_teams = [\"octo-org/reviewers\"]".into();
    w.gh.add_pull(PR, true, HEAD1, false);
    w.gh.with(|s| {
        s.oauth_apps
            .insert("Iv1.e2egate".into(), "gh-client-secret-Zx81".into());
        s.permissions.insert("stranger".into(), "none".into());
        s.teams
            .insert("octo-org/reviewers".into(), vec!["teammate".into()]);
    });
    let opened = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w
        .run(
            "pull_request",
            &opened,
            &image(HEAD1),
            &[
                ("gate_secret", GATE_SECRET),
                ("gate_github_client_id", "Iv1.e2egate"),
                ("gate_github_client_secret", "gh-client-secret-Zx81"),
            ],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let a = w.fly.app(&app_name()).expect("the app");
    let gate = a
        .machines
        .iter()
        .find(|m| m.meta("atlas_role") == Some("gate"))
        .expect("a gate machine")
        .clone();
    let env = gate.config["env"].as_object().unwrap().clone();
    assert_eq!(env["ATLAS_GATE_MODE"], "github");
    assert_eq!(env["ATLAS_GATE_GITHUB_TEAMS"], "octo-org/reviewers");
    assert_eq!(env["ATLAS_GATE_GITHUB_REPO"], REPO);
    let body = &w.comments()[0].body;
    assert!(body.contains("octo\\-org/reviewers"), "{body}");
    // (Before the sign-ins below: their GitHub calls carry the users' own tokens.)
    w.assert_clean();

    // The gate as Fly starts it (its env and the app's secrets), with GitHub at the fake.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let upstream = w.app_base.trim_start_matches("http://").to_string();
    let mut cmd = tokio::process::Command::from(crate::common::bin::atlas());
    for (k, v) in &env {
        cmd.env(k, v.as_str().unwrap());
    }
    cmd.envs(&a.secrets)
        .env("ATLAS_GATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATLAS_GATE_UPSTREAM", &upstream)
        .env("ATLAS_GATE_PUBLIC_URL", &base)
        .env_remove("ATLAS_GATE_HTTPS")
        .args(["gate", "serve", "--github-url", &w.gh.url])
        .args(["--github-api-url", &w.gh.url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the gate starts")
            .unwrap()
            .unwrap();
        assert!(line.contains("access github"), "{line}");
    }
    w.gh.with(|s| s.oauth_browser_user = Some("teammate".into()));
    let (status, page, _) = crate::gate::github_sign_in(&base, "/").await;
    // The upstream is the fake app: `/` is its 404, reached only past the gate.
    assert_eq!(status, 404, "{page}");
    w.gh.with(|s| s.oauth_browser_user = Some("stranger".into()));
    let (status, page, _) = crate::gate::github_sign_in(&base, "/").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("octo-org/reviewers"), "{page}");
    assert!(
        w.gh.calls()
            .iter()
            .any(|c| c.starts_with("GET /orgs/octo-org/teams/reviewers/memberships/teammate")),
        "{:?}",
        w.gh.calls()
    );
    drop(child);
    assert_eq!(w.gh.violations(), Vec::<String>::new());
}

/// Scenario 6: a fork PR under the default policy is skipped without a single provider request.
#[tokio::test]
async fn a_fork_pull_request_is_skipped_without_touching_any_provider() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    let r = w
        .run(
            "pull_request",
            &payload("pull_request.opened.json", HEAD1, "evil-fork/kitchen"),
            &image(HEAD1),
            &[],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "skipped", "{}", r.dump());
    w.assert_no_cloud_calls();
    assert_eq!(w.gh.calls().len(), 0, "github: {:?}", w.gh.calls());
    assert!(r.summary.contains("fork"), "{}", r.summary);
    w.assert_clean();
}

/// A fork labelled for a preview (and a fork under `allow`) whose run has no secrets, as GitHub
/// runs `pull_request` from forks: a skip with the reason in the summary and the comment, exit
/// 0, not one Neon or Fly request.
#[tokio::test]
async fn a_labelled_fork_without_secrets_skips_with_the_reason() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    let mut v: Value = serde_json::from_str(&payload(
        "pull_request.opened.json",
        HEAD1,
        "evil-fork/kitchen",
    ))
    .unwrap();
    v["action"] = Value::from("labeled");
    v["label"] = serde_json::json!({"name": "atlas:preview"});
    let labelled = v.to_string();
    for (policy, event) in [("label", &labelled), ("allow", &labelled)] {
        let r = w
            .run(
                "pull_request",
                event,
                &image(HEAD1),
                &[
                    ("fork_policy", policy),
                    ("neon_api_key", ""),
                    ("fly_api_token", ""),
                ],
                None,
            )
            .await;
        assert_eq!(r.code, 0, "{policy}: {}", r.dump());
        assert_eq!(r.out("verdict"), "skipped", "{}", r.dump());
        assert!(r.summary.contains("no secrets"), "{}", r.summary);
        assert!(r.summary.contains("neon\\_api\\_key"), "{}", r.summary);
        w.assert_no_cloud_calls();
        let comments = w.comments();
        assert_eq!(comments.len(), 1, "{comments:?}");
        assert!(
            comments[0].body.contains("no secrets"),
            "{}",
            comments[0].body
        );
    }
    // The same fork with secrets (a maintainer's re-run) is not skipped for this reason.
    let r = w
        .run(
            "pull_request",
            &labelled,
            &image(HEAD1),
            &[("fork_policy", "label")],
            None,
        )
        .await;
    assert!(!r.summary.contains("no secrets"), "{}", r.summary);
    w.assert_clean();
}

/// Debug logging on (a re-run "with debug logging" sets RUNNER_DEBUG and ACTIONS_STEP_DEBUG;
/// users add RUST_LOG and RUST_BACKTRACE): a preview that succeeds and an update that fails
/// print no secret in any form, in stdout, stderr, outputs, summary, comment or deployment.
#[tokio::test]
async fn debug_logging_prints_no_secret_on_success_or_failure() {
    let w = world().await;
    let app = app_name();
    for (k, v) in [
        ("RUNNER_DEBUG", "1"),
        ("ACTIONS_STEP_DEBUG", "true"),
        ("ACTIONS_RUNNER_DEBUG", "true"),
        ("RUST_LOG", "trace"),
        ("RUST_BACKTRACE", "full"),
    ] {
        w.extra_env.lock().unwrap().push((k.into(), v.into()));
    }
    w.pr_ok("pull_request.opened.json", HEAD1).await;
    w.gh.add_pull(PR, true, HEAD2, false);
    w.fly.hold_leases(&app, Duration::MAX);
    let r = w.pr_run("pull_request.synchronize.json", HEAD2).await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(
        !r.stderr.is_empty(),
        "the failure is reported: {}",
        r.dump()
    );
    w.assert_clean();
}

/// L7: a PR closed (preview torn down) and reopened gets its preview back: a new branch and
/// app, and the one sticky comment says ready again.
#[tokio::test]
async fn a_pull_request_reopened_after_teardown_gets_its_preview_back() {
    let w = world().await;
    let app = app_name();
    w.gh.add_pull(PR, true, HEAD1, false);
    let opened = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    w.gh.add_pull(PR, false, HEAD1, false);
    let closed = payload("pull_request.closed.unmerged.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &closed, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    w.assert_nothing_left();
    w.gh.add_pull(PR, true, HEAD1, false);
    let reopened = payload("pull_request.reopened.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &reopened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "pass", "{}", r.dump());
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    assert_eq!(w.fly.app_names(), vec![app.clone()]);
    assert_eq!(w.fly.app(&app).unwrap().machines.len(), 1);
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_contract_comment(&comments[0].body, &format!("{}/{app}", w.app_base), HEAD1);
    w.assert_clean();
}

/// Issue 17: the comment's lifecycle clause prices the preview per day, and the scheduled
/// sweep's job summary lists every live preview with its cost and a total.
#[tokio::test]
async fn the_comment_prices_the_preview_and_the_scheduled_sweep_lists_the_estate() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    w.gh.set_pull_title(PR, "Add the <b>menu</b> @team");
    let opened = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let body = w.comments()[0].body.clone();
    // One shared-cpu-1x 256 MB machine and a 0.25 CU branch, all day, at the list prices.
    assert!(
        body.contains(r"cost about \$0\.90/day at most \(24 h a day running"),
        "{body}"
    );
    let schedule = serde_json::json!({"schedule": "17 * * * *", "repository": {"full_name": REPO}});
    let r = w
        .run("schedule", &schedule.to_string(), &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(r.summary.contains("### Live previews (1)"), "{}", r.summary);
    assert!(
        r.summary
            .contains("| #2 | Add the &lt;b&gt;menu&lt;/b&gt; &#64;team |"),
        "{}",
        r.summary
    );
    assert!(r.summary.contains("| sleeping | $0.90 |"), "{}", r.summary);
    assert!(r.summary.contains("| **Total** |") && r.summary.contains("**$0.90**"));
    assert!(
        r.stdout
            .contains("sweep: 1 live preview(s), about $0.90/day in all"),
        "{}",
        r.dump()
    );

    // `atlas sweep --json`: the same rows as JSON on stdout, the log on stderr.
    let r = w
        .atlas(
            &["sweep", "--json"],
            "schedule",
            &schedule.to_string(),
            &image(HEAD1),
            &[],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    // On Actions the runner's mask commands come first; the JSON is the rest.
    let start = r.stdout.find("\n{").map(|i| i + 1).unwrap_or(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout[start..])
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.dump()));
    assert_eq!(v["estate"]["total_per_day"], "$0.90", "{v:#}");
    assert_eq!(v["estate"]["previews"][0]["pr"], 2);
    assert_eq!(
        v["estate"]["previews"][0]["title"],
        "Add the <b>menu</b> @team"
    );
    assert_eq!(v["sweep"]["kept"].as_array().map(Vec::len), Some(2));
    assert!(
        r.stderr.contains("sweep: 1 live preview(s)"),
        "{}",
        r.dump()
    );
    w.assert_clean();
}

/// L11: the Neon branch expired (its TTL passed, Neon deleted it) while the PR stayed open:
/// the next push creates a new branch and points the app at it.
#[tokio::test]
async fn an_expired_neon_branch_is_recreated_on_the_next_push() {
    let w = world().await;
    let app = app_name();
    w.pr_ok("pull_request.opened.json", HEAD1).await;
    let old = w.neon.branch("preview/pr-2").unwrap();
    // Neon removes an expired branch itself.
    w.neon
        .state
        .lock()
        .unwrap()
        .branches
        .retain(|b| b.name != "preview/pr-2");
    w.pr_ok("pull_request.synchronize.json", HEAD2).await;
    let new = w
        .neon
        .branch("preview/pr-2")
        .expect("the branch was not recreated");
    assert_ne!(new.id, old.id);
    let a = w.fly.app(&app).unwrap();
    assert_eq!(a.machines.len(), 1);
    assert_eq!(a.machines[0].config["image"], image(HEAD2).as_str());
    assert!(
        a.secrets["DATABASE_URL"].contains(&new.password),
        "the app still points at the expired branch"
    );
    w.assert_clean();
}

/// L8: five pushes within seconds. Their runs start once the PR head is already the fifth
/// commit: the four older ones see they are stale and touch nothing; the end state is one
/// branch, one app with one machine at the newest commit, one comment.
#[tokio::test]
async fn five_quick_pushes_end_in_one_preview_at_the_newest_commit() {
    let w = world().await;
    let app = app_name();
    let heads: Vec<String> = (1..=5).map(|i| format!("{i}").repeat(40)).collect();
    w.gh.add_pull(PR, true, &heads[4], false);
    let payloads: Vec<String> = heads
        .iter()
        .map(|h| payload("pull_request.synchronize.json", h, REPO))
        .collect();
    let images: Vec<String> = heads.iter().map(|h| image(h)).collect();
    let run = |i: usize| w.run("pull_request", &payloads[i], &images[i], &[], None);
    // All five at once, as the runner starts them.
    let (r1, r2, r3, r4, r5) = tokio::join!(run(0), run(1), run(2), run(3), run(4));
    let runs = [r1, r2, r3, r4, r5];
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.code, 0, "push {}: {}", i + 1, r.dump());
        let want = if i == 4 { "pass" } else { "skipped" };
        assert_eq!(r.out("verdict"), want, "push {}: {}", i + 1, r.dump());
    }
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    assert_eq!(w.fly.app_names(), vec![app.clone()]);
    let a = w.fly.app(&app).unwrap();
    assert_eq!(a.machines.len(), 1);
    assert_eq!(a.machines[0].config["image"], images[4].as_str());
    assert_eq!(w.comments().len(), 1);
    w.assert_clean();
}

/// L3: two runs for the same PR and commit at the same time (a re-run beside the original):
/// one branch, one app, one comment at the end; both succeed.
#[tokio::test]
async fn two_concurrent_runs_for_one_pull_request_end_in_one_of_everything() {
    let w = world().await;
    let app = app_name();
    w.gh.add_pull(PR, true, HEAD1, false);
    let p = payload("pull_request.opened.json", HEAD1, REPO);
    let img = image(HEAD1);
    let (a, b) = tokio::join!(
        w.run("pull_request", &p, &img, &[], None),
        w.run("pull_request", &p, &img, &[], None)
    );
    assert_eq!(a.code, 0, "{}", a.dump());
    assert_eq!(b.code, 0, "{}", b.dump());
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    assert_eq!(w.fly.app_names(), vec![app.clone()]);
    assert_eq!(w.comments().len(), 1, "{:#?}", w.comments());
    // A later run converges whatever the race left: one machine.
    let r = w.run("pull_request", &p, &img, &[], None).await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(w.fly.app(&app).unwrap().machines.len(), 1);
    w.assert_clean();
}

/// Scenario 7: the live PR head moved past the event's: nothing is touched.
#[tokio::test]
async fn a_stale_run_touches_nothing() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD2, false);
    let r = w.pr_run("pull_request.opened.json", HEAD1).await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "skipped", "{}", r.dump());
    assert!(
        r.stdout.contains("no longer the head") && r.summary.contains("no longer the head"),
        "the stale reason is not reported: {}\n--- summary\n{}",
        r.dump(),
        r.summary
    );
    w.assert_no_cloud_calls();
    assert!(w.comments().is_empty());
    assert!(w.deployments().is_empty());
    let writes: Vec<String> =
        w.gh.calls()
            .into_iter()
            .filter(|c| !c.starts_with("GET "))
            .collect();
    assert!(writes.is_empty(), "github writes: {writes:?}");
    w.assert_clean();
}

/// A missing credential fails before any request, naming the input; outputs are still written.
#[tokio::test]
async fn a_missing_neon_api_key_fails_before_any_request() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    let r = w
        .run(
            "pull_request",
            &payload("pull_request.opened.json", HEAD1, REPO),
            &image(HEAD1),
            &[("neon_api_key", "")],
            None,
        )
        .await;
    assert_eq!(r.code, 2, "{}", r.dump());
    assert!(r.stderr.contains("neon_api_key"), "{}", r.stderr);
    w.assert_no_cloud_calls();
    assert_eq!(w.gh.calls().len(), 0, "github: {:?}", w.gh.calls());
    assert_eq!(r.out("verdict"), "error", "{}", r.dump());
    w.assert_clean();
}

/// A push whose update fails (Fly keeps answering the machine update with 409 "lease held")
/// leaves the version that served running: the app, its machine on the old image and the
/// database branch stay; the comment says which commit is still live; the run exits non-zero.
/// Only a first creation that fails is torn down (see the never-starts test above).
#[tokio::test]
async fn a_failed_update_leaves_the_previous_version_serving() {
    let w = world().await;
    let app = app_name();
    w.pr_ok("pull_request.opened.json", HEAD1).await;

    w.gh.add_pull(PR, true, HEAD2, false);
    w.fly.hold_leases(&app, Duration::MAX);
    let r = w.pr_run("pull_request.synchronize.json", HEAD2).await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(
        r.stderr.contains(&format!("commit {HEAD1} is still live")),
        "the error does not say what still serves:\n{}",
        r.stderr
    );
    assert!(
        w.fly.core.count("Machines_update") >= 2,
        "409 was not retried"
    );
    assert_eq!(w.fly.core.count("Apps_delete"), 0, "the app was destroyed");
    assert_eq!(w.neon.core.count("deleteProjectBranch"), 0);
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    let fly_app = w.fly.app(&app).expect("the serving app was destroyed");
    assert_eq!(fly_app.machines.len(), 1);
    assert_eq!(fly_app.machines[0].config["image"], image(HEAD1).as_str());
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(
        comments[0].body.contains("Preview failed")
            && comments[0]
                .body
                .contains(&format!("commit {HEAD1} is still live")),
        "{}",
        comments[0].body
    );

    // Closing still removes everything: the live record was kept.
    w.pr_ok("pull_request.closed.unmerged.json", HEAD2).await;
    w.assert_nothing_left();
    w.assert_clean();
}

/// A preview app (the PR's code) that answers its health path and then, on the smoke path,
/// an endless body: bytes as fast as the socket takes them, never an end.
async fn endless_app() -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(req) = openapi::read_request(&mut sock).await else {
                    return;
                };
                if req.target.contains("/healthz") {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
                if sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}")
}

/// The preview app answers the smoke check with an endless body: atlas reads only the first
/// MiB (the check fails naming it), the first creation is torn down, and the run's peak memory
/// stays small. Prints the peak RSS that `/usr/bin/time -v` measured.
#[tokio::test]
async fn an_endless_body_from_the_preview_app_is_read_only_as_far_as_the_check_needs() {
    let mut w = world().await;
    w.app_base = endless_app().await;
    w.time_v.store(true, std::sync::atomic::Ordering::Relaxed);
    w.gh.add_pull(PR, true, HEAD1, false);
    let r = w.pr_run("pull_request.opened.json", HEAD1).await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(
        r.stderr
            .contains("body does not contain \"pong\" (in its first 1024 KiB)"),
        "{}",
        r.dump()
    );
    let rss_kb: u64 = r
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("no peak RSS from /usr/bin/time -v");
    eprintln!("peak RSS of a run against an endless body: {rss_kb} KiB");
    assert!(rss_kb < 50 * 1024, "peak RSS {rss_kb} KiB is over 50 MB");
    w.assert_nothing_left();
    w.assert_clean();
}

/// L2: SIGINT while the run waits for the Fly machine of a first preview: no new work, what
/// this run created (app, database branch) is torn down, one line of state, non-zero exit well
/// inside the runner's 7.5 s before SIGTERM.
#[tokio::test]
async fn sigint_during_the_machine_wait_tears_down_what_this_run_created() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    w.fly.set_never_start(true);
    w.interrupt
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = w.pr_run("pull_request.opened.json", HEAD1).await;
    let took = w
        .signal_to_exit
        .lock()
        .unwrap()
        .expect("no SIGINT was sent");
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(
        r.stderr.contains("cancelled by SIGINT")
            && r.stderr.contains("tore down what this run had created")
            && r.stderr.contains(&app_name())
            && r.stderr.contains("preview/pr-2"),
        "{}",
        r.dump()
    );
    assert!(
        took < Duration::from_millis(7500),
        "exit {took:?} after SIGINT"
    );
    w.assert_nothing_left();
    w.assert_clean();
}

/// L1: SIGINT while Neon is still answering the branch create (it lands, the answer is slow):
/// the run stops at once, starts nothing new (not one Fly request), says it created nothing it
/// knows of, exits non-zero; the next run finds the branch by its annotations and adopts it
/// instead of creating a second one.
#[tokio::test]
async fn sigint_during_the_neon_create_starts_nothing_new_and_the_next_run_reconciles() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    w.neon.core.fault(
        "createProjectBranch",
        Fault::Slow(Duration::from_secs(5)),
        1,
    );
    w.interrupt_on_neon_create
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let p = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w.run("pull_request", &p, &image(HEAD1), &[], None).await;
    assert!(
        w.signal_to_exit.lock().unwrap().is_some(),
        "no SIGINT was sent"
    );
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(r.stderr.contains("cancelled by SIGINT"), "{}", r.dump());
    assert_eq!(w.fly.core.call_count(), 0, "fly: {:?}", w.fly.core.calls());
    assert_eq!(w.neon.core.count("createProjectBranch"), 1);
    w.interrupt_on_neon_create
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let r = w.run("pull_request", &p, &image(HEAD1), &[], None).await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        w.neon.core.count("createProjectBranch"),
        1,
        "the landed branch was not adopted"
    );
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    assert_eq!(w.fly.app_names(), vec![app_name()]);
    w.assert_clean();
}

/// F9: down tries both deletes: with the app's DELETE failing for good, the database branch is
/// still deleted, the run exits non-zero and names the survivor (its marks kept for the sweep).
#[tokio::test]
async fn down_deletes_the_branch_even_when_the_app_destroy_fails_and_lists_the_survivor() {
    let w = world().await;
    w.pr_ok("pull_request.opened.json", HEAD1).await;
    w.gh.add_pull(PR, false, HEAD1, false);
    w.fly
        .core
        .fault("Apps_delete", Fault::Status(500, None), 1000);
    let closed = payload("pull_request.closed.unmerged.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &closed, &image(HEAD1), &[], None)
        .await;
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(
        r.stderr.contains("still there") && r.stderr.contains(&format!("app {}", app_name())),
        "{}",
        r.dump()
    );
    assert_eq!(
        w.neon.preview_branches(),
        Vec::<String>::new(),
        "the branch was kept"
    );
    assert_eq!(w.fly.app_names(), vec![app_name()]);
    w.assert_clean();
}

/// One deadline per run: a wait the server names (429 + Retry-After: 10 on the comment) that
/// would end past the run's deadline (`ATLAS_DEADLINE=5s`, shorter than the call's own budget) fails at once, saying until when,
/// instead of sleeping through it; the first creation is torn down.
#[tokio::test]
async fn a_wait_past_the_run_deadline_fails_at_once_naming_the_time() {
    let w = world().await;
    w.gh.add_pull(PR, true, HEAD1, false);
    w.extra_env
        .lock()
        .unwrap()
        .push(("ATLAS_DEADLINE".into(), "5s".into()));
    w.gh.fault(
        fake_github::Fault {
            retry_after: Some(10),
            ..fake_github::Fault::new(Method::POST, "/issues/2/comments", 429)
        }
        .times(10),
    );
    let t = std::time::Instant::now();
    let r = w.pr_run("pull_request.opened.json", HEAD1).await;
    let took = t.elapsed();
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(
        r.stderr.contains("rate-limited until ")
            && r.stderr.contains("asked to wait 10s")
            && r.stderr.contains("this run's deadline"),
        "{}",
        r.dump()
    );
    // The call's own budget (20 s) would allow the 10 s wait; the run's 5 s deadline does not.
    assert!(
        took < Duration::from_secs(9),
        "waited instead of failing: {took:?}"
    );
    // The ready comment and the failed comment: each tried once, neither retried early.
    assert_eq!(
        w.gh.with(|s| s.calls_matching("POST /repos/octo-org/kitchen/issues/2/comments")),
        2
    );
    w.assert_nothing_left();
    w.assert_clean();
}

/// Issue 17: the pin label's `labeled` / `unlabeled` events (GitHub's own payload shape) pin and
/// unpin the preview on the resources and in the comment, with no rebuild: no image, no
/// deploy, no new deployment.
#[tokio::test]
async fn the_pin_label_pins_and_unpins_without_a_rebuild() {
    let w = world().await;
    let app = app_name();
    w.gh.add_pull(PR, true, HEAD1, false);
    let opened = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let updates = w.fly.core.count("Machines_update") + w.fly.core.count("Machines_create");
    let deployments = w.deployments().len();

    let label = |action: &str| {
        let mut v: Value =
            serde_json::from_str(&payload("pull_request.labeled.json", HEAD1, REPO)).unwrap();
        v["action"] = Value::from(action);
        v["label"]["name"] = Value::from("atlas:pin");
        v["number"] = Value::from(PR);
        v["pull_request"]["number"] = Value::from(PR);
        v.to_string()
    };
    // No image input: a pin needs none.
    let r = w
        .run(
            "pull_request",
            &label("labeled"),
            "",
            &[("image", "")],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "pinned", "{}", r.dump());
    let m = &w.fly.app(&app).unwrap().machines[0];
    // The fixture's sender.
    assert_eq!(m.meta("atlas_pinned_by"), Some("Codertocat"));
    assert_eq!(w.neon.branch("preview/pr-2").unwrap().expires_at, None);
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(
        comments[0].body.contains("pinned by @Codertocat"),
        "{}",
        comments[0].body
    );
    assert_contract_comment(&comments[0].body, &format!("{}/{app}", w.app_base), HEAD1);
    assert_eq!(
        w.fly.core.count("Machines_update") + w.fly.core.count("Machines_create"),
        updates,
        "a pin restarts nothing"
    );
    assert_eq!(w.deployments().len(), deployments, "a pin deploys nothing");

    let r = w
        .run(
            "pull_request",
            &label("unlabeled"),
            "",
            &[("image", "")],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "unpinned", "{}", r.dump());
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some(""));
    assert!(w.neon.branch("preview/pr-2").unwrap().expires_at.is_some());
    let body = &w.comments()[0].body;
    assert!(!body.contains("pinned by"), "{body}");
    w.assert_clean();
}

/// A pull_request fixture for this PR with `action`, `labels` as the PR's labels and, for
/// `labeled`/`unlabeled`, the pin label as the one added or removed.
fn pr_event(file: &str, head: &str, action: &str, labels: &[&str], private: bool) -> String {
    let mut v: Value = serde_json::from_str(&payload(file, head, REPO)).unwrap();
    v["action"] = Value::from(action);
    v["number"] = Value::from(PR);
    v["pull_request"]["number"] = Value::from(PR);
    v["pull_request"]["labels"] = labels
        .iter()
        .map(|l| serde_json::json!({"name": l}))
        .collect();
    v["repository"]["private"] = Value::from(private);
    if v.get("label").is_some() {
        v["label"]["name"] = Value::from("atlas:pin");
    }
    v.to_string()
}

/// Issue 17: the pin label was put on the PR before its preview existed (the `labeled` run
/// found nothing to pin): the preview that the `opened` run builds, whose event lists the label,
/// is pinned on the app, on the branch (no expiry) and in the comment. The event names no one
/// who added the label, so the comment says "label present at deploy". A later push whose event
/// no longer lists the label (removed while the label's own run was lost) unpins it: no stale pin.
#[tokio::test]
async fn a_pin_label_already_on_the_pr_pins_the_preview_up_builds_and_its_absence_unpins() {
    let w = world().await;
    let app = app_name();
    w.gh.add_pull(PR, true, HEAD1, false);
    let labeled = pr_event(
        "pull_request.labeled.json",
        HEAD1,
        "labeled",
        &["atlas:pin"],
        false,
    );
    let r = w
        .run("pull_request", &labeled, "", &[("image", "")], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "skipped", "{}", r.dump());
    assert!(
        r.stdout
            .contains("nothing to pin now; the preview its next push builds is pinned"),
        "{}",
        r.dump()
    );

    let opened = pr_event(
        "pull_request.opened.json",
        HEAD1,
        "opened",
        &["bug", "atlas:pin"],
        false,
    );
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "pass", "{}", r.dump());
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some("label present at deploy"));
    assert_eq!(w.neon.branch("preview/pr-2").unwrap().expires_at, None);
    let body = &w.comments()[0].body;
    assert!(
        body.contains("pinned (label present at deploy) (kept past its expiry"),
        "{body}"
    );
    assert!(!body.contains("pinned by"), "{body}");

    // A push with the label still on keeps the pin (and the branch without expiry).
    w.gh.add_pull(PR, true, HEAD2, false);
    let sync = |labels: &[&str]| {
        pr_event(
            "pull_request.synchronize.json",
            HEAD2,
            "synchronize",
            labels,
            false,
        )
    };
    let r = w
        .run(
            "pull_request",
            &sync(&["atlas:pin"]),
            &image(HEAD2),
            &[],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some("label present at deploy"));
    assert_eq!(w.neon.branch("preview/pr-2").unwrap().expires_at, None);

    // The label is gone by the next push: unpinned, both expiries back.
    let r = w
        .run("pull_request", &sync(&["bug"]), &image(HEAD2), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by").unwrap_or(""), "");
    assert!(w.neon.branch("preview/pr-2").unwrap().expires_at.is_some());
    let body = &w.comments()[0].body;
    assert!(!body.contains("pinned"), "{body}");
    assert!(body.contains("every push renews it"), "{body}");
    w.assert_clean();
}

/// The signed link in a comment: the claims it carries, verified with the gate's key.
fn comment_link(body: &str, key: &str) -> atlas::gate::token::Claims {
    let link = body
        .split("[open the preview](")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("no signed link in {body}"));
    let token = link
        .split_once("?atlas_token=")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("not a signed link: {link}"));
    atlas::gate::PreviewKey::from_hex(&app_name(), key)
        .unwrap()
        .verify(atlas::gate::Kind::Link, token, atlas::gate::token::now())
        .expect("the comment's link opens the preview")
}

/// Issue 17: on a private repository a signed-link preview's comment carries a link. Pinning,
/// `atlas preview extend` and unpinning rewrite that comment with everything it had (the URL,
/// the smoke evidence, the build's timings, a signed link that opens the preview) and a new
/// lifecycle clause; after extend the clause shows the new expiry as a person reads it and the
/// link lasts until then.
#[tokio::test]
async fn pin_extend_and_unpin_rewrite_the_comment_keeping_its_signed_link_and_evidence() {
    let w = world().await;
    *w.access.lock().unwrap() = "signed-link".into();
    w.gh.add_pull(PR, true, HEAD1, false);
    let gate = [("gate_secret", GATE_SECRET)];
    let no_image = [("image", ""), ("gate_secret", GATE_SECRET)];
    let opened = pr_event("pull_request.opened.json", HEAD1, "opened", &[], true);
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &gate, None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let key = w.fly.app(&app_name()).unwrap().secrets["ATLAS_GATE_KEY"].clone();
    let first = w.comments()[0].body.clone();
    comment_link(&first, &key);
    // What must survive each rewrite, line for line.
    let kept: Vec<String> = first
        .lines()
        .filter(|l| {
            l.starts_with("**Environment URL:**")
                || l.starts_with("| **1. Code identity**")
                || l.starts_with("| **2. Data boundary**")
                || l.starts_with("| `GET /api/ping`")
                || l.starts_with("| **6. Evidence boundary**")
                || l.starts_with("<details><summary>Timings")
        })
        .map(str::to_string)
        .collect();
    assert_eq!(kept.len(), 6, "{first}");
    let assert_whole = |body: &str| {
        for l in &kept {
            assert!(body.lines().any(|b| b == l), "lost {l:?}:\n{body}");
        }
        assert!(!body.contains("mint one with"), "{body}");
        comment_link(body, &key)
    };

    let labeled = pr_event(
        "pull_request.labeled.json",
        HEAD1,
        "labeled",
        &["atlas:pin"],
        true,
    );
    let r = w.run("pull_request", &labeled, "", &no_image, None).await;
    assert_eq!(r.out("verdict"), "pinned", "{}", r.dump());
    let body = w.comments()[0].body.clone();
    assert!(body.contains("pinned by @Codertocat"), "{body}");
    assert_whole(&body);

    let r = w
        .atlas(
            &[
                "preview",
                "extend",
                "--pr",
                &PR.to_string(),
                "--ttl",
                "100h",
            ],
            "pull_request",
            &opened,
            "",
            &no_image,
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    let out: Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    let expires: chrono::DateTime<chrono::Utc> = out["expires"].as_str().unwrap().parse().unwrap();
    let body = w.comments()[0].body.clone();
    let shown = format!("expires {}", expires.format("%Y-%m-%d %H:%M UTC"));
    assert!(
        body.contains(&format!("{shown} (in 4 days)")),
        "{shown}: {body}"
    );
    assert!(body.contains("pinned by @Codertocat"), "{body}");
    let claims = assert_whole(&body);
    let until = claims.expires as i64 - expires.timestamp();
    assert!(
        until.abs() <= 5,
        "the link lasts until the new expiry: {until} s off"
    );
    assert!(r.stderr.contains("(in 4 days)"), "{}", r.dump());

    let unlabeled = pr_event("pull_request.labeled.json", HEAD1, "unlabeled", &[], true);
    let r = w.run("pull_request", &unlabeled, "", &no_image, None).await;
    assert_eq!(r.out("verdict"), "unpinned", "{}", r.dump());
    let body = w.comments()[0].body.clone();
    assert!(!body.contains("pinned by"), "{body}");
    assert_whole(&body);
    assert_eq!(w.comments().len(), 1);
    w.assert_clean();
}

/// Issue 17: `[preview] max_previews = 1` with `quota_policy = "refuse"`: a second PR's preview
/// is refused before anything is created, with the reason in its comment and the summary; the
/// run exits 0 with `verdict=refused`.
#[tokio::test]
async fn a_new_preview_at_the_cap_is_refused_with_the_reason_and_exit_0() {
    let w = world().await;
    *w.preview_extra.lock().unwrap() = "max_previews = 1\nquota_policy = \"refuse\"".into();
    w.gh.add_pull(PR, true, HEAD1, false);
    let opened = payload("pull_request.opened.json", HEAD1, REPO);
    let r = w
        .run("pull_request", &opened, &image(HEAD1), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "pass", "{}", r.dump());

    const OTHER: u64 = 3;
    w.gh.add_pull(OTHER, true, HEAD2, false);
    let mut v: Value =
        serde_json::from_str(&payload("pull_request.opened.json", HEAD2, REPO)).unwrap();
    v["number"] = Value::from(OTHER);
    v["pull_request"]["number"] = Value::from(OTHER);
    let r = w
        .run("pull_request", &v.to_string(), &image(HEAD2), &[], None)
        .await;
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.out("verdict"), "refused", "{}", r.dump());
    assert!(
        r.summary.contains(r"quota\_policy is refuse"),
        "{}",
        r.summary
    );
    // Nothing of PR 3 exists; PR 2's preview is untouched.
    assert_eq!(w.neon.preview_branches(), vec!["preview/pr-2".to_string()]);
    assert_eq!(w.fly.app_names(), vec![app_name()]);
    let c = w.gh.with(|s| s.comments_on(OTHER));
    assert_eq!(c.len(), 1, "{c:#?}");
    assert!(
        c[0].body
            .contains("No preview (repository at its preview cap)"),
        "{}",
        c[0].body
    );
    w.assert_clean();
}
