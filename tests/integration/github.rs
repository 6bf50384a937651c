//! The GitHub surface against a stateful fake GitHub that checks every request against GitHub's
//! OpenAPI description: sticky comment, deployments, faults, reconcile, the sweep's PR reading,
//! outputs and hostile input through the real templates.

use crate::common::fake_github;
use crate::common::world;

use atlas::http::RetryPolicy;
use atlas::provider::github::{ACTIONS_BOT, Author, GithubForge};
use atlas::provider::{DeployState, DeploymentStatus, Forge, NewDeployment};
use atlas::secret::Secret;
use axum::http::Method;
use fake_github::{FakeGithub, Fault};

const REPO: &str = "octo-org/kitchen";
/// The per-PR marker preview dispatch uses (`preview::marker(7)`).
const MARKER: &str = "<!-- atlas:preview pr=7 -->";
const TOKEN: &str = "ghs_fakeTokenValue0123456789abcdef";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

async fn setup(user: Option<&str>) -> (FakeGithub, GithubForge) {
    world::github_forge(REPO, TOKEN, user).await
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
    world::assert_github_clean(&gh);
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
    world::assert_github_clean(&gh);
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
    world::assert_github_clean(&gh);
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
    world::assert_github_clean(&gh);
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
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn installation_tokens_own_the_marker_comments_an_app_wrote() {
    let (gh, forge) = setup(None).await;
    assert_eq!(forge.identity().await.unwrap(), Author::App);
    // a person quoting the marker (or trying to take the comment over) is not us.
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
    assert!(
        c.iter().any(|c| c.body == format!("{MARKER} spoof")),
        "untouched"
    );
    // GET /user is asked once per client.
    let again = forge.upsert_comment(7, MARKER, "again").await.unwrap();
    assert_eq!(again.id, r.id);
    assert_eq!(gh.with(|s| s.calls_matching("GET /user")), 1);
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_custom_github_app_finds_its_own_comment_only_when_configured() {
    // An installation token of the team's own app: comments are written as `<slug>[bot]`,
    // which the token cannot look up, so the login is configured (`github_app_login`).
    let gh = FakeGithub::start(REPO, None).await;
    gh.with(|s| s.author = "acme-previews[bot]".into());
    gh.add_comment(7, "someone", &format!("{MARKER} quoted in a review"));
    for run in 0..3 {
        // every run is a new process with a new client.
        let forge = world::forge_for(&gh, REPO, TOKEN).with_identity("acme-previews[bot]");
        let r = forge
            .upsert_comment(7, MARKER, &format!("{MARKER}\nrun {run}"))
            .await
            .unwrap();
        assert_eq!(r.action, if run == 0 { "created" } else { "updated" });
    }
    let c = gh.with(|s| s.comments_on(7));
    let ours: Vec<_> = c
        .iter()
        .filter(|c| c.user == "acme-previews[bot]")
        .collect();
    assert_eq!(ours.len(), 1, "one sticky comment, not one per run: {c:#?}");
    assert!(ours[0].body.ends_with("run 2"));
    assert_eq!(c.len(), 2, "the person's comment is left alone");
    world::assert_github_clean(&gh);
}

/// Another workflow's bot echoing the marker is not us: the workflow token (an installation
/// token that cannot read `GET /user`) owns only github-actions[bot]'s marker comments.
#[tokio::test]
async fn another_bots_marker_comment_is_neither_edited_nor_deleted() {
    let (gh, forge) = setup(None).await;
    let echo = format!("{MARKER}\nechoed by another workflow");
    gh.add_comment(7, "renovate[bot]", &echo);
    gh.add_comment(7, "acme-previews[bot]", &echo);
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nours"))
        .await
        .unwrap();
    assert_eq!(r.action, "created");
    let again = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nours 2"))
        .await
        .unwrap();
    assert_eq!(
        (again.action.as_str(), again.id.as_str()),
        ("updated", r.id.as_str())
    );
    let c = gh.with(|s| s.comments_on(7));
    assert_eq!(c.len(), 3, "{c:#?}");
    for other in ["renovate[bot]", "acme-previews[bot]"] {
        let o = c.iter().find(|c| c.user == other).unwrap();
        assert_eq!(o.body, echo, "{other}'s comment was touched");
    }
    assert_eq!(gh.with(|s| s.calls_matching("DELETE ")), 0);
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn deployment_lifecycle() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let env = "preview/pr-7";
    let d = forge
        .create_deployment(NewDeployment {
            environment: env,
            sha: &sha('a'),
            transient: true,
            description: "preview of PR #7",
        })
        .await
        .unwrap();
    forge
        .set_deployment_status(
            &d,
            DeploymentStatus::new(DeployState::InProgress, "building")
                .environment_url(None)
                .log_url(Some("https://logs/1")),
        )
        .await
        .unwrap();
    forge
        .set_deployment_status(
            &d,
            DeploymentStatus::new(DeployState::Success, "ready")
                .environment_url(Some("https://kitchen-pr-7.fly.dev"))
                .log_url(Some("https://logs/1")),
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
        .create_deployment(NewDeployment {
            environment: env,
            sha: &sha('a'),
            transient: true,
            description: "x",
        })
        .await
        .unwrap();
    assert_eq!(again.id, d.id);
    let next = forge
        .create_deployment(NewDeployment {
            environment: env,
            sha: &sha('b'),
            transient: true,
            description: "x",
        })
        .await
        .unwrap();
    assert_ne!(next.id, d.id);
    // Another environment is untouched by `down`.
    let qa = forge
        .create_deployment(NewDeployment {
            environment: "qa",
            sha: &sha('c'),
            transient: false,
            description: "qa",
        })
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
        .create_deployment(NewDeployment {
            environment: "production",
            sha: &sha('d'),
            transient: false,
            description: "release",
        })
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
    world::assert_github_clean(&gh);
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
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn a_lost_create_response_does_not_duplicate() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    // The comment is stored, then the response is a 502: atlas must look before re-sending.
    gh.fault(Fault::new(Method::POST, "/issues/7/comments", 502).landed());
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nx"))
        .await
        .unwrap();
    assert_eq!(r.action, "created");
    assert_eq!(gh.with(|s| s.comments_on(7).len()), 1);
    assert_eq!(gh.with(|s| s.calls_matching("POST ")), 1);
    // Same for a deployment.
    gh.fault(Fault::new(Method::POST, "/deployments", 503).landed());
    let d = forge
        .create_deployment(NewDeployment {
            environment: "preview/pr-7",
            sha: &sha('a'),
            transient: true,
            description: "x",
        })
        .await
        .unwrap();
    assert_eq!(gh.with(|s| s.deployments.len()), 1);
    assert_eq!(d.id, gh.with(|s| s.deployments[0].id.to_string()));
    // A create that failed without landing is sent again after the look-up.
    gh.fault(Fault::new(Method::POST, "/deployments", 500));
    forge
        .create_deployment(NewDeployment {
            environment: "preview/pr-8",
            sha: &sha('b'),
            transient: true,
            description: "x",
        })
        .await
        .unwrap();
    assert_eq!(gh.with(|s| s.deployments.len()), 2);
    world::assert_github_clean(&gh);
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
        .create_deployment(NewDeployment {
            environment: "qa",
            sha: &sha('a'),
            transient: false,
            description: "x",
        })
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("403"), "{e:#}");
    assert!(
        format!("{e:#}").contains("`github_token`")
            && format!("{e:#}").contains("pull-requests: write"),
        "the error names neither the input nor the permission: {e:#}"
    );
    assert_eq!(gh.with(|s| s.calls_matching("POST ")), 1);
    // 401: bad credentials, no retry, the input named, the token not shown.
    gh.reset_calls();
    gh.fault(Fault {
        body: "{\"message\":\"Bad credentials\"}".into(),
        ..Fault::new(Method::GET, "/pulls/9", 401)
    });
    let e = forge.pr_state(9).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("401") && msg.contains("`github_token`"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN), "{msg}");
    assert_eq!(
        gh.with(|s| s.calls_matching("GET /repos")),
        1,
        "401 was retried"
    );
    world::assert_github_clean(&gh);
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
    world::assert_github_clean(&gh);
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
    let forge = world::forge_for(&gh, REPO, TOKEN);
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
        .create_deployment(NewDeployment {
            environment: "preview/pr-7",
            sha: &sha('a'),
            transient: true,
            description: "preview",
        })
        .await
        .unwrap();
    forge
        .set_deployment_status(
            &d,
            DeploymentStatus::new(DeployState::InProgress, "building")
                .environment_url(None)
                .log_url(Some("https://logs")),
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
            DeploymentStatus::new(DeployState::Success, "ready")
                .environment_url(Some("https://app"))
                .log_url(Some("https://logs")),
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
    let forge = world::forge_for(&gh, REPO, TOKEN);
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
    world::assert_github_clean(&gh);
}

// ---------------------------------------------------------------------------------------------
// Templates: the latency chart (golden) and hostile input through the real templates, the fake
// GitHub and the gha outputs.

mod rendering {
    use super::*;
    use atlas::contract::{Contract, SmokeResult};
    use atlas::gha::{Files, Gha, parse_output_file};
    use atlas::outputs::{OUTPUT_NAMES, RunReport};
    use atlas::report::{COMMENT_LIMIT, Renderer};
    use serde_json::{Value, json};

    /// The chart macro rendered through the real environment: an override directory replaces
    /// `skip.md.j2` with a template that calls it.
    fn chart(load: Value, comparison: Value, baseline: Value) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("skip.md.j2"),
            "{% import \"chart.md.j2\" as c %}{{ c.latency_chart(load, comparison, baseline) }}",
        )
        .unwrap();
        let r = Renderer::new(Some(dir.path())).unwrap();
        r.render(
            "skip.md.j2",
            &json!({"load": load, "comparison": comparison, "baseline": baseline}),
        )
        .unwrap()
    }

    fn summary(p50: f64, p90: f64, p95: f64, p99: f64) -> Value {
        json!({"metrics": {"http_req_duration": {"avg": 275.01, "p50": p50, "p90": p90, "p95": p95, "p99": p99},
            "http_reqs": {"total": 750}, "errors": {"rate": 0.0093}}})
    }

    #[test]
    fn latency_chart_golden() {
        let cmp = json!({"verdict": "fail", "metrics": [
            {"name": "p50", "baseline": 201.0}, {"name": "p90", "baseline": 330.5},
            {"name": "p95", "label": "P95 Latency", "baseline": 387.57}, {"name": "p99", "baseline": 512.25}]});
        insta::assert_snapshot!(
            "chart_preview_vs_baseline",
            chart(summary(210.0, 350.25, 402.5, 640.0), cmp, Value::Null)
        );
        // Baseline from a baseline summary; k6 key names.
        let k6 = json!({"metrics": {"http_req_duration": {"med": 12.0, "p(90)": 20.0, "p(95)": 25.5, "avg": 14.0}}});
        insta::assert_snapshot!(
            "chart_k6_keys_baseline_summary",
            chart(k6, Value::Null, summary(11.0, 19.0, 24.0, 40.0))
        );
        // Only p95 has a baseline: the line is left out rather than drawn misleadingly.
        let partial = json!({"metrics": [{"name": "p95", "baseline": 387.57}]});
        insta::assert_snapshot!(
            "chart_preview_only",
            chart(summary(210.0, 350.0, 402.5, 640.0), partial, Value::Null)
        );
    }

    #[test]
    fn latency_chart_renders_nothing_without_data() {
        for (load, cmp) in [
            (Value::Null, Value::Null),
            (json!({}), json!({})),
            (json!({"metrics": {}}), json!({"metrics": "nope"})),
            (
                json!({"metrics": {"http_req_duration": {"avg": 3.0}}}),
                json!([]),
            ),
            (
                json!({"metrics": {"http_req_duration": {"p95": "402<script>"}}}),
                Value::Null,
            ),
            (json!("a string"), json!(7)),
        ] {
            assert_eq!(
                chart(load.clone(), cmp.clone(), Value::Null).trim(),
                "",
                "{load} {cmp}"
            );
        }
    }

    const SECRET: &str = "sk_live_hostileSecret_4242";

    fn hostile() -> Vec<String> {
        vec![
            "{{ 7*7 }} {% if true %}T{% endif %} {# c #} {{ marker }}".into(),
            "<script>alert(1)</script><img src=x onerror=alert(1)><details open>".into(),
            "@octocat @octo-org/admins please".into(),
            format!("{MARKER} spoofed marker -->"),
            "line\n::error::forged\n::set-output name=verdict::pass\n::add-mask::x\n  ::warning::y"
                .into(),
            "EOF\nghadelimiter_abc\nverdict<<EOF\npass\nEOF\n".into(),
            "\u{202E}evil\u{202C} \u{200B}zero\u{200D}width\u{2066}iso\u{2069}\u{FEFF}".into(),
            "```\n</details>\n```diff\n+ x".into(),
            format!("leaks {SECRET}?"),
            "x".repeat(70_000),
        ]
    }

    fn contract(text: &str) -> Contract {
        let mut c = Contract::default();
        c.code.sha = sha('a');
        c.code.branch = text.to_string();
        c.code.url = "https://kitchen-abc123-pr-7.fly.dev".into();
        c.data.model = "database-branch".into();
        c.data.provider = "neon".into();
        c.data.branch = Some("preview/pr-7".into());
        c.data.parent = Some("main".into());
        c.data.external_systems = vec![text.to_string()];
        c.identity.access = "public".into();
        c.migrations.command = Some("./migrate".into());
        c.migrations.ran = true;
        c.migrations.ok = Some(false);
        c.migrations.output_tail = Some(text.to_string());
        c.migrations.schema_diff = Some(text.to_string());
        c.migrations.limits = vec![text.to_string()];
        c.evidence.smoke = vec![SmokeResult {
            name: text.to_string(),
            method: "GET".into(),
            path: format!("/menu?q={text}"),
            expected: 200,
            status: Some(500),
            ok: false,
            duration_ms: 12,
            detail: Some(text.to_string()),
            trace_id: None,
        }];
        c.evidence.load = Some(summary(210.0, 350.0, 402.5, 640.0));
        c.evidence.comparison = Some(json!({"verdict": "fail", "metrics": [
            {"name": "p95", "label": text, "baseline": 387.57, "current": 402.5, "change_pct": 3.9,
             "floor": 5.0, "verdict": "fail", "current_display": "402.50ms",
             "baseline_display": "387.57ms", "change_display": "+3.9%"}]}));
        c.lifecycle.created = Some("2026-06-01T12:00:00Z".into());
        c.lifecycle.expires = Some("2026-06-08T12:00:00Z".into());
        c
    }

    /// Markdown outside fenced code blocks (inside a fence, text is shown literally).
    fn outside_fences(md: &str) -> String {
        let mut out = String::new();
        let mut fenced = false;
        for line in md.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if !fenced {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn assert_inert_markdown(full: &str, what: &str) {
        assert!(full.chars().count() <= COMMENT_LIMIT, "{what}: too long");
        assert!(!full.contains(SECRET), "{what}: secret");
        assert!(
            !full.contains("49"),
            "{what}: template syntax was evaluated"
        );
        let md = &outside_fences(full);
        assert!(
            !md.contains("<script") && !md.contains("<img") && !md.contains("<details open"),
            "{what}: html"
        );
        assert!(
            !md.contains("@octocat") && !md.contains("@octo-org"),
            "{what}: mention"
        );
        for c in ['\u{202E}', '\u{200B}', '\u{200D}', '\u{2066}', '\u{FEFF}'] {
            assert!(!md.contains(c), "{what}: invisible {c:?}");
        }
        assert_eq!(
            full.matches("```").count() % 2,
            0,
            "{what}: unbalanced fence"
        );
    }

    #[tokio::test]
    async fn hostile_input_is_inert_in_comment_summary_and_outputs() {
        let _ = Secret::new(SECRET);
        let renderer = Renderer::new(None).unwrap();
        let (gh, forge) = setup(Some("atlas-bot")).await;
        for (i, text) in hostile().iter().enumerate() {
            let c = contract(text);
            let ctx = json!({"marker": MARKER, "status": "failed", "pr": 7, "contract": c,
                "error": text, "generated_at": "2026-06-01 12:00 UTC"});
            let body = renderer.render_comment("preview.md.j2", &ctx).unwrap();
            let what = format!("comment {i}");
            assert_inert_markdown(&body, &what);
            // Inside a code fence the text is literal; outside, only our marker is an HTML comment.
            assert_eq!(
                outside_fences(&body).matches("<!--").count(),
                1,
                "{what}: only our marker"
            );
            assert!(body.starts_with(MARKER), "{what}");
            assert!(body.contains("```mermaid"), "{what}: chart");
            let r = forge.upsert_comment(7, MARKER, &body).await.unwrap();
            assert_eq!(gh.with(|s| s.comments_on(7).len()), 1, "{what}");
            assert_eq!(
                gh.with(|s| s.comments_on(7)[0].body.clone()),
                body,
                "{what}"
            );
            assert_eq!(
                forge.upsert_comment(7, MARKER, &body).await.unwrap().action,
                "unchanged",
                "{what}"
            );
            let _ = r;

            // Outputs and summary.
            let dir = tempfile::tempdir().unwrap();
            let (out, sum) = (dir.path().join("out"), dir.path().join("sum"));
            let mut gha = Gha::new(
                Vec::new(),
                Files {
                    output: Some(out.clone()),
                    summary: Some(sum.clone()),
                },
                true,
            );
            let mut report = RunReport::new("preview-up", &sha('a')).with_contract(&c);
            report.pr = Some(7);
            report.reason = Some(text.clone());
            report.error = Some(text.clone());
            report.comment_url = Some(text.clone());
            atlas::outputs::write(&mut gha, &renderer, &report).unwrap();
            let parsed = parse_output_file(&std::fs::read_to_string(&out).unwrap()).unwrap();
            let names: Vec<&str> = parsed.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, OUTPUT_NAMES, "{what}: outputs forged");
            let get = |k: &str| parsed.iter().find(|(n, _)| n == k).unwrap().1.clone();
            assert_eq!(get("verdict"), "fail");
            assert_eq!(get("regression"), "true");
            assert_eq!(get("p95_ms"), "402.5");
            assert_eq!(get("comment_url"), atlas::secret::redact(text));
            let summary_md = std::fs::read_to_string(&sum).unwrap();
            assert_inert_markdown(&summary_md, &format!("summary {i}"));
            assert!(!outside_fences(&summary_md).contains("<!--"), "summary {i}");
            let log = String::from_utf8(gha.into_inner()).unwrap();
            let commands: Vec<&str> = log
                .lines()
                .filter(|l| l.trim_start().starts_with("::"))
                .collect();
            assert_eq!(
                commands.len(),
                1,
                "{what}: one gate annotation, nothing forged: {commands:?}"
            );
            assert!(
                commands[0].starts_with("::error title=atlas gate%3A "),
                "{}",
                commands[0]
            );
            assert!(commands[0].contains("402.50ms vs baseline 387.57ms (+3.9%25)"));
            assert!(!log.contains(SECRET));
        }
        world::assert_github_clean(&gh);
    }

    #[tokio::test]
    async fn hostile_input_is_inert_in_the_destroyed_comment() {
        let renderer = Renderer::new(None).unwrap();
        let (gh, forge) = setup(Some("atlas-bot")).await;
        for (i, text) in hostile().iter().enumerate() {
            let ctx = json!({"marker": MARKER, "pr": 7, "destroyed_at": "2026-06-02 09:00 UTC",
                "removed": [{"kind": "app", "name": "kitchen-abc123-pr-7", "result": "removed"},
                            {"kind": "database branch", "name": "preview/pr-7", "result": "already-gone"}],
                "audit": text, "contract": contract(text), "generated_at": "2026-06-02 09:00 UTC"});
            let body = renderer.render_comment("destroyed.md.j2", &ctx).unwrap();
            assert_inert_markdown(&body, &format!("destroyed {i}"));
            assert_eq!(
                outside_fences(&body).matches("<!--").count(),
                1,
                "destroyed {i}"
            );
            assert!(body.contains("destroyed at 2026-06-02 09:00 UTC"));
            forge.upsert_comment(7, MARKER, &body).await.unwrap();
            assert_eq!(gh.with(|s| s.comments_on(7).len()), 1);
        }
        world::assert_github_clean(&gh);
    }

    #[tokio::test]
    async fn skip_and_failure_paths_write_every_output() {
        let renderer = Renderer::new(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut gha = Gha::new(
            Vec::new(),
            Files {
                output: Some(out.clone()),
                summary: None,
            },
            true,
        );
        let mut r = RunReport::new("skip", &sha('b'));
        r.verdict = "skipped".into();
        r.reason = Some("pull request from the fork mallory/x: fork_policy is skip".into());
        atlas::outputs::write(&mut gha, &renderer, &r).unwrap();
        let mut r = RunReport::new("preview-up", &sha('b'));
        r.verdict = "error".into();
        r.error = Some("neon: create branch returned 500".into());
        atlas::outputs::write(&mut gha, &renderer, &r).unwrap();
        let parsed = parse_output_file(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(parsed.len(), 2 * OUTPUT_NAMES.len());
        assert_eq!(parsed[8], ("verdict".to_string(), "skipped".to_string()));
        assert_eq!(parsed[18], ("verdict".to_string(), "error".to_string()));
    }
}

#[tokio::test]
async fn a_rate_limited_create_waits_looks_up_and_sends_once_more() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.fault(Fault::secondary_rate_limit(
        Method::POST,
        "/issues/7/comments",
        1,
    ));
    let r = forge
        .upsert_comment(7, MARKER, &format!("{MARKER}\nx"))
        .await
        .unwrap();
    assert_eq!(r.action, "created");
    assert_eq!(gh.with(|s| s.comments_on(7).len()), 1);
    assert_eq!(gh.with(|s| s.calls_matching("POST ")), 2);
    world::assert_github_clean(&gh);
}

#[tokio::test]
async fn an_oversized_body_is_cut_to_the_limit() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let body = format!("{MARKER}\n{}", "line of text\n".repeat(10_000));
    forge.upsert_comment(7, MARKER, &body).await.unwrap();
    let stored = gh.with(|s| s.comments_on(7)[0].body.clone());
    assert!(stored.chars().count() <= atlas::report::COMMENT_LIMIT);
    assert!(stored.starts_with(MARKER) && stored.contains("truncated"));
    // And the next run still finds it.
    assert_eq!(
        forge.upsert_comment(7, MARKER, &body).await.unwrap().action,
        "unchanged"
    );
    world::assert_github_clean(&gh);
}

mod sweeping {
    use super::*;
    use async_trait::async_trait;
    use atlas::provider::{
        AppDeployment, Branch, BranchRequest, Database, Deleted, DeployRequest, Owned, Platform,
        Providers, SchemaDiff,
    };
    use atlas::sweep::{SweepOptions, sweep};
    use chrono::{DateTime, Utc};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// In-memory Atlas-owned resources; records deletions.
    #[derive(Clone, Default)]
    struct Mem {
        owned: Vec<Owned>,
        deleted: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Database for Mem {
        fn kind(&self) -> &'static str {
            "mem-db"
        }
        async fn ensure_branch(&self, _: &BranchRequest) -> anyhow::Result<Branch> {
            anyhow::bail!("not in a sweep")
        }
        async fn delete_branch(&self, name: &str) -> anyhow::Result<Deleted> {
            self.deleted.lock().unwrap().push(name.into());
            Ok(Deleted::Removed)
        }
        async fn schema_diff(&self, _: &Branch) -> anyhow::Result<SchemaDiff> {
            anyhow::bail!("not in a sweep")
        }
        async fn list_branches(&self) -> anyhow::Result<Vec<Owned>> {
            Ok(self.owned.clone())
        }
    }

    #[async_trait]
    impl Platform for Mem {
        fn kind(&self) -> &'static str {
            "mem-app"
        }
        async fn deploy(&self, _: &DeployRequest) -> anyhow::Result<AppDeployment> {
            anyhow::bail!("not in a sweep")
        }
        async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
            self.deleted.lock().unwrap().push(app.into());
            Ok(Deleted::Removed)
        }
        async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
            Ok(self.owned.clone())
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn owned(name: &str, pr: u64) -> Owned {
        Owned {
            name: name.into(),
            id: name.into(),
            pr,
            created_at: Some(now() - chrono::Duration::days(2)),
            expires_at: Some(now() + chrono::Duration::days(2)),
            pinned_by: None,
        }
    }

    fn providers(gh: &FakeGithub, db: &Mem, apps: &Mem) -> Providers {
        let forge = crate::common::world::forge_for(gh, REPO, TOKEN);
        Providers {
            database: Box::new(db.clone()),
            platform: Box::new(apps.clone()),
            forge: Box::new(forge),
        }
    }

    fn opts() -> SweepOptions {
        SweepOptions {
            ttl: Duration::from_secs(7 * 86400),
            grace_period: Duration::from_secs(3600),
            max_deletions: 10,
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn sweep_reads_open_prs_from_github_and_deletes_nothing_when_it_cannot() {
        let gh = FakeGithub::start(REPO, Some("atlas-bot")).await;
        gh.add_pull(1, true, &sha('a'), false);
        gh.add_pull(2, false, &sha('b'), true);
        let db = Mem {
            owned: vec![owned("preview/pr-1", 1), owned("preview/pr-2", 2)],
            ..Default::default()
        };
        let apps = Mem {
            owned: vec![
                owned("kitchen-abc123-pr-1", 1),
                owned("kitchen-abc123-pr-2", 2),
            ],
            ..Default::default()
        };
        let p = providers(&gh, &db, &apps);

        // GitHub down: nothing is deleted, and the report says why.
        gh.fault(Fault::new(Method::GET, "/pulls", 503).times(100));
        let r = sweep(&p, now(), &opts()).await;
        assert!(!r.ok());
        assert!(
            r.errors[0].contains("nothing was deleted"),
            "{:?}",
            r.errors
        );
        assert!(db.deleted.lock().unwrap().is_empty() && apps.deleted.lock().unwrap().is_empty());
        assert!(r.markdown().contains("nothing was deleted"));

        gh.with(|s| s.faults.clear());
        let r = sweep(
            &p,
            now(),
            &SweepOptions {
                dry_run: true,
                ..opts()
            },
        )
        .await;
        assert_eq!(r.deleted.len(), 2);
        assert!(db.deleted.lock().unwrap().is_empty());
        assert!(r.markdown().contains("would delete"), "{}", r.markdown());

        let r = sweep(&p, now(), &opts()).await;
        assert!(r.ok(), "{r:?}");
        assert_eq!(*db.deleted.lock().unwrap(), vec!["preview/pr-2"]);
        assert_eq!(*apps.deleted.lock().unwrap(), vec!["kitchen-abc123-pr-2"]);
        world::assert_github_clean(&gh);
    }
}

/// A primary rate limit whose reset is 15 minutes out is never retried early: the call fails at
/// once (well under a second of wall time) saying until when GitHub asked to wait.
#[tokio::test]
async fn a_rate_limit_reset_beyond_the_deadline_fails_fast_naming_the_time() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.fault(Fault::primary_rate_limit(Method::GET, "/pulls/9", 15 * 60).times(100));
    let t = std::time::Instant::now();
    let e = forge.pr_state(9).await.unwrap_err();
    let took = t.elapsed();
    let msg = format!("{e:#}");
    eprintln!("rate limit 15 min out: failed after {took:?}");
    assert!(took < std::time::Duration::from_secs(1), "{took:?}: {msg}");
    assert!(msg.contains("rate-limited until "), "{msg}");
    let reset = chrono::Utc::now() + chrono::Duration::seconds(15 * 60);
    assert!(
        msg.contains(&reset.format("%Y-%m-%dT%H:%M").to_string())
            || msg.contains(
                &(reset + chrono::Duration::seconds(1))
                    .format("%Y-%m-%dT%H:%M")
                    .to_string()
            ),
        "the server's reset time is not named: {msg}"
    );
    assert_eq!(
        gh.with(|s| s.calls_matching("GET /repos")),
        1,
        "retried before the reset"
    );
    world::assert_github_clean(&gh);
}

/// GitHub's secondary limit without headers waits at least a minute: with a budget shorter
/// than that, the call fails at once rather than retrying early.
#[tokio::test]
async fn a_secondary_limit_without_headers_is_not_retried_within_a_minute() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.fault(
        Fault {
            retry_after: None,
            ..Fault::secondary_rate_limit(Method::GET, "/pulls/9", 0)
        }
        .times(100),
    );
    let t = std::time::Instant::now();
    let e = forge.pr_state(9).await.unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    assert!(format!("{e:#}").contains("asked to wait 60s"), "{e:#}");
    assert_eq!(gh.with(|s| s.calls_matching("GET /repos")), 1);
    world::assert_github_clean(&gh);
}

/// The error body is redacted before it is cut: a token straddling the cut leaves no prefix.
#[tokio::test]
async fn a_token_at_the_truncation_boundary_leaves_no_prefix() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    let pad = "x".repeat(1_980);
    gh.fault(Fault {
        body: format!("{{\"message\":\"{pad}{TOKEN}\"}}"),
        ..Fault::new(Method::GET, "/pulls/9", 422)
    });
    let e = forge.pr_state(9).await.unwrap_err();
    let msg = format!("{e:#} {e:?}");
    assert!(
        !msg.contains(&TOKEN[..8]),
        "a prefix of the token leaked: {msg}"
    );
    world::assert_github_clean(&gh);
}

/// A server that answers the request line with headers and then a byte every 100 ms, for ever:
/// no read ever waits long, so only a total timeout per call ends it.
async fn dribbling_server() -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                if crate::common::openapi::read_request(&mut sock)
                    .await
                    .is_err()
                {
                    return;
                }
                let start =
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[";
                if sock.write_all(start).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if sock.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A GET that hangs (headers, then a trickle that never ends) is cut by the total timeout of
/// the call, retried within the policy, and fails naming GitHub, the call and the timeout.
#[tokio::test]
async fn a_get_that_hangs_hits_the_per_call_timeout() {
    let url = dribbling_server().await;
    let forge = GithubForge::new(&url, REPO, &Secret::new(TOKEN))
        .unwrap()
        .with_policy(RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::fast()
        })
        .with_call_timeout(std::time::Duration::from_millis(500));
    assert_eq!(
        atlas::provider::github::CALL_TIMEOUT,
        std::time::Duration::from_secs(60)
    );
    // A guard for the test itself, far above 2 x 500 ms: without the call timeout the trickle
    // would hold the call until this fires.
    let e = tokio::time::timeout(std::time::Duration::from_secs(30), forge.pr_state(7))
        .await
        .expect("the GET was not cut by a per-call timeout")
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("get the pull request"), "{msg}");
    assert!(msg.contains("per-call timeout"), "{msg}");
    assert!(msg.contains("gave up after 2 attempt(s)"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
}

/// GitHub answering 200 with a body that is not JSON (a proxy's page, a cut body): a clear
/// error naming GitHub and the call, for a single read and for a paginated list.
#[tokio::test]
async fn malformed_json_from_github_is_a_clear_error_naming_the_call() {
    let (gh, forge) = setup(Some("atlas-bot")).await;
    gh.add_pull(7, true, &sha('a'), false);
    for body in [
        "{\"state\": \"open\", \"head\": {\"sha\"",
        "<html>502</html>",
    ] {
        gh.fault(Fault {
            body: body.into(),
            ..Fault::new(Method::GET, "/pulls/7", 200)
        });
        let e = forge.pr_state(7).await.unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("github: get the pull request returned a body that is not JSON"),
            "{msg}"
        );
    }
    gh.fault(Fault {
        body: "[{\"number\": 7,".into(),
        ..Fault::new(Method::GET, "/pulls", 200)
    });
    let e = forge.open_prs().await.unwrap_err();
    assert!(
        format!("{e:#}").contains("list open pull requests returned a body that is not JSON"),
        "{e:#}"
    );
    // valid JSON of the wrong shape names what is missing
    gh.fault(Fault {
        body: "{\"state\": \"open\"}".into(),
        ..Fault::new(Method::GET, "/pulls/7", 200)
    });
    let e = forge.pr_state(7).await.unwrap_err();
    assert!(format!("{e:#}").contains("no head sha"), "{e:#}");
    // and the next answer is read normally
    assert!(forge.pr_state(7).await.unwrap().unwrap().open);
    world::assert_github_clean(&gh);
}
