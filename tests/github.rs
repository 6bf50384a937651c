//! The GitHub surface against a stateful fake GitHub that checks every request against GitHub's
//! OpenAPI description: sticky comment, deployments, faults, reconcile, the sweep's PR reading,
//! outputs and hostile input through the real templates.

#[path = "support/openapi.rs"]
mod openapi;

#[path = "support/fake_github.rs"]
mod fake_github;

use atlas::http::RetryPolicy;
use atlas::provider::github::{ACTIONS_BOT, GithubForge};
use atlas::provider::{DeployState, Forge};
use atlas::secret::Secret;
use axum::http::Method;
use fake_github::{FakeGithub, Fault};

const REPO: &str = "octo-org/kitchen";
const MARKER: &str = "<!-- atlas:preview -->";
const TOKEN: &str = "ghs_fakeTokenValue0123456789abcdef";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

async fn setup(user: Option<&str>) -> (FakeGithub, GithubForge) {
    let gh = FakeGithub::start(REPO, user).await;
    let forge = GithubForge::new(&gh.url, REPO, &Secret::new(TOKEN))
        .unwrap()
        .with_policy(RetryPolicy::fast());
    (gh, forge)
}

fn assert_clean(gh: &FakeGithub) {
    let v = gh.violations();
    assert!(v.is_empty(), "requests that break GitHub's spec: {v:#?}");
}

#[tokio::test]
async fn one_sticky_comment_after_many_runs() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let first = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nrun 0"))
        .await
        .unwrap();
    assert_eq!(first.action, "created");
    for i in 1..6 {
        let r = forge
            .upsert_comment(7, MARKER, &format!("{MARKER}\nrun {i}"))
            .await
            .unwrap();
        assert_eq!(r.action, "updated");
        assert_eq!(r.id, first.id);
    }
    let comments = gh.with(|s| s.comments_on(7));
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, format!("{MARKER}\nrun 5"));
    assert!(first.url.contains("#issuecomment-"), "{}", first.url);
    // The token is sent as a bearer token.
    assert!(gh.with(|s| s.auth.iter().all(|a| a == &format!("Bearer {TOKEN}"))));
    assert_clean(&gh);
}

#[tokio::test]
async fn unchanged_content_is_not_rewritten() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let body = format!("{MARKER}\nsame");
    forge.upsert_comment(7, MARKER, &body).await.unwrap();
    gh.reset_calls();
    let r = forge.upsert_comment(7, MARKER, &body).await.unwrap();
    assert_eq!(r.action, "unchanged");
    let calls = gh.calls();
    assert!(calls.iter().all(|c| c.starts_with("GET ")), "{calls:?}");
    assert_clean(&gh);
}

#[tokio::test]
async fn a_marker_in_someone_elses_comment_is_ignored() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let theirs = gh.add_comment(7, "mallory", &format!("{MARKER} gotcha, edit me"));
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nours"))
        .await
        .unwrap();
    assert_eq!(r.action, "created");
    assert_ne!(r.id, theirs.to_string());
    let comments = gh.with(|s| s.comments_on(7));
    assert_eq!(comments.len(), 2);
    let m = comments.iter().find(|c| c.id == theirs).unwrap();
    assert_eq!(m.body, format!("{MARKER} gotcha, edit me"));
    // Our own comment without the marker is not the sticky comment either.
    gh.add_comment(7, "atlas-bot", "an unrelated note");
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nours 2"))
        .await
        .unwrap();
    assert_eq!(r.action, "updated");
    assert_clean(&gh);
}

#[tokio::test]
async fn pagination_finds_our_comment_on_a_later_page() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    for i in 0..150 {
        gh.add_comment(7, "reviewer", &format!("comment {i}"));
    }
    let ours = gh.add_comment(7, "atlas-bot", &format!("{MARKER}\nold"));
    for i in 0..120 {
        gh.add_comment(7, "reviewer", &format!("later {i}"));
    }
    gh.reset_calls();
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nnew"))
        .await
        .unwrap();
    assert_eq!(
        (r.action.as_str(), r.id.clone()),
        ("updated", ours.to_string())
    );
    let lists = gh.with(|s| s.calls_matching("GET /repos/octo-org/kitchen/issues/7/comments"));
    assert_eq!(lists, 3, "271 comments at 100 per page: {:?}", gh.calls());
    assert_eq!(gh.with(|s| s.comments_on(7).len()), 271);
    assert_clean(&gh);
}

#[tokio::test]
async fn racing_runs_keep_the_oldest_comment() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.with(|s| s.race_on_create = true);
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nmine"))
        .await
        .unwrap();
    let comments = gh.with(|s| s.comments_on(7));
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(r.id, comments[0].id.to_string());
    // The racer's comment (created first, smaller id) won.
    assert_eq!(gh.with(|s| s.calls_matching("DELETE ")), 1);
    assert_eq!(comments[0].body, format!("{MARKER}\nmine"));
    // Leftover duplicates from an earlier race are cleaned up on the next run.
    gh.add_comment(7, "atlas-bot", &format!("{MARKER}\ndup"));
    let r2 = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nnext"))
        .await
        .unwrap();
    assert_eq!(r2.id, r.id);
    assert_eq!(gh.with(|s| s.comments_on(7).len()), 1);
    assert_clean(&gh);
}

#[tokio::test]
async fn installation_tokens_fall_back_to_the_actions_bot() {
    let (gh, forge) = setup(None).await;
    assert_eq!(forge.identity().await.unwrap(), ACTIONS_BOT);
    gh.add_comment(7, "someone", &format!("{MARKER} spoof"));
    let r = forge
        .upsert_comment(7, MARKER, "body without marker")
        .await
        .unwrap();
    assert_eq!(r.action, "created");
    let c = gh.with(|s| s.comments_on(7));
    let ours = c.iter().find(|c| c.user == ACTIONS_BOT).unwrap();
    assert!(
        ours.body.starts_with(MARKER),
        "the marker is added: {}",
        ours.body
    );
    // GET /user is asked once per client.
    forge.upsert_comment(7, MARKER, "again").await.unwrap();
    assert_eq!(gh.with(|s| s.calls_matching("GET /user")), 1);
    assert_clean(&gh);
}

#[tokio::test]
async fn deployment_lifecycle() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let env = "preview/pr-7";
    let d = forge
        .create_deployment(env, &sha('a'), true, "preview of PR #7")
        .await
        .unwrap();
    forge
        .set_deployment_status(
            &d,
            DeployState::InProgress,
            None,
            Some("https://logs/1"),
            "building",
        )
        .await
        .unwrap();
    forge
        .set_deployment_status(
            &d,
            DeployState::Success,
            Some("https://kitchen-pr-7.fly.dev"),
            Some("https://logs/1"),
            "ready",
        )
        .await
        .unwrap();
    let (payload, states, status_payload) = gh.with(|s| {
        let dep = s.deployments[0].clone();
        (
            dep.payload.clone(),
            s.statuses_of(dep.id),
            s.statuses.last().unwrap().payload.clone(),
        )
    });
    assert_eq!(payload["auto_merge"], false);
    assert_eq!(payload["required_contexts"], serde_json::json!([]));
    assert_eq!(payload["transient_environment"], true);
    assert_eq!(payload["production_environment"], false);
    assert_eq!(payload["ref"], sha('a'));
    assert_eq!(payload["environment"], env);
    assert_eq!(states, vec!["in_progress", "success"]);
    assert_eq!(
        status_payload["environment_url"],
        "https://kitchen-pr-7.fly.dev"
    );
    assert_eq!(status_payload["log_url"], "https://logs/1");

    // A re-run for the same commit reuses the deployment; a new commit gets its own.
    let again = forge
        .create_deployment(env, &sha('a'), true, "x")
        .await
        .unwrap();
    assert_eq!(again.id, d.id);
    let next = forge
        .create_deployment(env, &sha('b'), true, "x")
        .await
        .unwrap();
    assert_ne!(next.id, d.id);
    // Another environment is untouched by `down`.
    let qa = forge
        .create_deployment("qa", &sha('c'), false, "qa")
        .await
        .unwrap();

    forge.deactivate_environment(env).await.unwrap();
    gh.with(|s| {
        for dep in s.deployments.iter().filter(|d| d.environment == env) {
            assert_eq!(
                s.statuses_of(dep.id).last().map(String::as_str),
                Some("inactive")
            );
        }
        let qa_id: u64 = qa.id.parse().unwrap();
        assert!(s.statuses_of(qa_id).is_empty());
        let qa_dep = s.deployments.iter().find(|d| d.id == qa_id).unwrap();
        assert_eq!(qa_dep.payload["transient_environment"], false);
    });
    let prod = forge
        .create_deployment("production", &sha('d'), false, "release")
        .await
        .unwrap();
    gh.with(|s| {
        let p = s
            .deployments
            .iter()
            .find(|d| d.id.to_string() == prod.id)
            .unwrap();
        assert_eq!(p.payload["production_environment"], true);
    });
    assert_clean(&gh);
}

#[tokio::test]
async fn secondary_rate_limit_and_5xx_are_retried() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.fault(Fault::secondary_rate_limit(
        Method::GET,
        "/issues/7/comments",
        1,
    ));
    gh.fault(Fault::new(Method::PATCH, "/issues/comments/", 502).times(2));
    forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\na"))
        .await
        .unwrap();
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nb"))
        .await
        .unwrap();
    assert_eq!(r.action, "updated");
    assert_eq!(gh.with(|s| s.calls_matching("PATCH ")), 3);
    assert_eq!(
        gh.with(|s| s.comments_on(7)[0].body.clone()),
        format!("{MARKER}\nb")
    );
    assert_clean(&gh);
}

#[tokio::test]
async fn a_lost_create_response_does_not_duplicate() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    // The comment is stored, then the response is a 502: atlas must look before re-sending.
    gh.fault(Fault::new(Method::POST, "/issues/7/comments", 502).landed());
    forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nx"))
        .await
        .unwrap();
    assert_eq!(gh.with(|s| s.comments_on(7).len()), 1);
    assert_eq!(gh.with(|s| s.calls_matching("POST ")), 1);
    // Same for a deployment.
    gh.fault(Fault::new(Method::POST, "/deployments", 503).landed());
    let d = forge
        .create_deployment("preview/pr-7", &sha('a'), true, "x")
        .await
        .unwrap();
    assert_eq!(gh.with(|s| s.deployments.len()), 1);
    assert_eq!(d.id, gh.with(|s| s.deployments[0].id.to_string()));
    // A create that failed without landing is sent again after the look-up.
    gh.fault(Fault::new(Method::POST, "/deployments", 500));
    forge
        .create_deployment("preview/pr-8", &sha('b'), true, "x")
        .await
        .unwrap();
    assert_eq!(gh.with(|s| s.deployments.len()), 2);
    assert_clean(&gh);
}

#[tokio::test]
async fn permanent_errors_name_github_the_call_and_the_status_without_the_token() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.fault(
        Fault {
            body: format!("{{\"message\":\"boom, token {TOKEN} leaked\"}}"),
            ..Fault::new(Method::GET, "/pulls/9", 500)
        }
        .times(100),
    );
    let e = forge.pr_state(9).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("github: get the pull request returned 500"),
        "{msg}"
    );
    assert!(msg.contains("gave up after 5 attempt(s)"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
    let pe = e
        .chain()
        .find_map(|c| c.downcast_ref::<atlas::error::ProviderError>())
        .unwrap();
    assert_eq!((pe.provider, pe.status), ("github", 500));
    // A plain 403 (permission) is final: no retry.
    gh.with(|s| s.faults.clear());
    gh.fault(Fault {
        body: "{\"message\":\"Resource not accessible by integration\"}".into(),
        ..Fault::new(Method::POST, "/deployments", 403)
    });
    gh.reset_calls();
    let e = forge
        .create_deployment("qa", &sha('a'), false, "x")
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("403"), "{e:#}");
    assert_eq!(gh.with(|s| s.calls_matching("POST ")), 1);
    assert_clean(&gh);
}

#[tokio::test]
async fn pr_state_open_prs_and_reconcile() {
    use atlas::sweep::{Decision, reconcile};
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.add_pull(7, true, &sha('a'), false);
    gh.add_pull(8, false, &sha('b'), true);
    for n in 100..350 {
        gh.add_pull(n, true, &sha('c'), false);
    }
    let s = forge.pr_state(8).await.unwrap().unwrap();
    assert!(!s.open && s.merged);
    assert!(forge.pr_state(4040).await.unwrap().is_none(), "404 is None");
    let open = forge.open_prs().await.unwrap();
    assert_eq!(open.len(), 251);
    assert!(open.contains(&7) && !open.contains(&8));
    assert_eq!(
        reconcile(&forge, 7, &sha('a')).await.unwrap(),
        Decision::Proceed
    );
    assert!(matches!(
        reconcile(&forge, 7, &sha('f')).await.unwrap(),
        Decision::Stale { .. }
    ));
    assert!(matches!(
        reconcile(&forge, 8, &sha('b')).await.unwrap(),
        Decision::TearDown { merged: true, .. }
    ));
    assert!(matches!(
        reconcile(&forge, 4040, &sha('b')).await.unwrap(),
        Decision::Missing { .. }
    ));
    // GitHub down: open_prs errors (the sweep then deletes nothing).
    gh.fault(Fault::new(Method::GET, "/pulls", 502).times(100));
    assert!(forge.open_prs().await.is_err());
    assert_clean(&gh);
}

#[tokio::test]
async fn pagination_links_to_another_host_are_refused() {
    // A token must never follow a Link header to another origin.
    let (gh, _forge) = setup(Some("atlas-bot")).await;
    let other = FakeGithub::start(REPO, Some("atlas-bot")).await;
    for i in 0..150 {
        gh.add_comment(7, "x", &format!("{i}"));
    }
    // Point this fake's links at the other server.
    gh.with(|s| s.addr = other.url.trim_start_matches("http://").to_string());
    let forge = GithubForge::new(&gh.url, REPO, &Secret::new(TOKEN))
        .unwrap()
        .with_policy(RetryPolicy::fast());
    let e = forge.upsert_comment(7, MARKER, "x").await.unwrap_err();
    assert!(
        format!("{e:#}").contains("refusing to send the token"),
        "{e:#}"
    );
    assert!(other.calls().is_empty());
}

/// A repeat `preview up` for the same commit, as preview dispatch drives the forge: reconcile
/// before, deployment + in_progress, reconcile after, comment, success.
async fn up_once(forge: &GithubForge, body: &str) {
    use atlas::sweep::{Decision, reconcile};
    assert_eq!(
        reconcile(forge, 7, &sha('a')).await.unwrap(),
        Decision::Proceed
    );
    let d = forge
        .create_deployment("preview/pr-7", &sha('a'), true, "preview")
        .await
        .unwrap();
    forge
        .set_deployment_status(
            &d,
            DeployState::InProgress,
            None,
            Some("https://logs"),
            "building",
        )
        .await
        .unwrap();
    assert_eq!(
        reconcile(forge, 7, &sha('a')).await.unwrap(),
        Decision::Proceed
    );
    forge.upsert_comment(7, MARKER, body).await.unwrap();
    forge
        .set_deployment_status(
            &d,
            DeployState::Success,
            Some("https://app"),
            Some("https://logs"),
            "ready",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn api_calls_of_a_repeat_up() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.add_pull(7, true, &sha('a'), false);
    up_once(&forge, &format!("{MARKER}\nv1")).await;
    let first = gh.calls();
    // A repeat run is a new process: a new client that asks GET /user again.
    let forge = GithubForge::new(&gh.url, REPO, &Secret::new(TOKEN))
        .unwrap()
        .with_policy(RetryPolicy::fast());
    gh.reset_calls();
    up_once(&forge, &format!("{MARKER}\nv1")).await;
    let unchanged = gh.calls();
    gh.reset_calls();
    up_once(&forge, &format!("{MARKER}\nv2")).await;
    let changed = gh.calls();
    println!("first up: {} calls: {first:#?}", first.len());
    println!(
        "repeat up, same content: {} calls: {unchanged:#?}",
        unchanged.len()
    );
    println!(
        "repeat up, new content (identity cached): {} calls: {changed:#?}",
        changed.len()
    );
    // pulls x2, user, comments list, deployments list, 2 statuses (no create, no comment write).
    assert_eq!(unchanged.len(), 7, "{unchanged:#?}");
    assert!(!unchanged.iter().any(
        |c| c.starts_with("POST /repos/octo-org/kitchen/deployments ")
            || c.starts_with("PATCH")
            || c.starts_with("POST /repos/octo-org/kitchen/issues")
    ));
    assert_eq!(changed.len(), 7, "{changed:#?}");
    assert_eq!(gh.with(|s| s.deployments.len()), 1);
    assert_eq!(gh.with(|s| s.comments_on(7).len()), 1);
    assert_clean(&gh);
}
