//! Golden files for the embedded templates: the PR comment (ready, failed, over the size limit),
//! the "destroyed" comment and the job summary, rendered from fixed contexts. A change to a
//! template shows up as a snapshot diff in review.

use atlas::contract::*;
use atlas::report::{COMMENT_LIMIT, Renderer};
use serde_json::json;

fn contract() -> Contract {
    Contract {
        code: CodeIdentity {
            sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
            branch: "feature/menu-<b>@octocat</b>".into(),
            url: "https://kitchen-c7bf05-pr-2.fly.dev".into(),
            artifact: "registry.fly.io/kitchen@sha256:0123abcd".into(),
            deployment: Some("https://github.com/o/r/deployments/preview/pr-2".into()),
        },
        data: DataBoundary {
            model: "database-branch".into(),
            provider: "neon".into(),
            branch: Some("preview/pr-2".into()),
            parent: Some("main".into()),
            schema_only: false,
            external_systems: vec!["stripe (test mode)".into()],
        },
        identity: IdentityBoundary {
            access: "public".into(),
            ..Default::default()
        },
        secrets: SecretBoundary {
            names: vec!["DATABASE_URL".into(), "STRIPE_KEY".into()],
            production_secrets: false,
        },
        migrations: MigrationBoundary {
            command: Some("sh migrate.sh".into()),
            ran: true,
            ok: Some(true),
            duration_ms: Some(412),
            output_tail: Some("applied 002_orders.sql\n```\nnot a fence escape".into()),
            schema_diff: Some("+CREATE TABLE public.orders (\n+    id bigint NOT NULL\n+);".into()),
            limits: vec!["rollback not exercised".into()],
        },
        evidence: EvidenceBoundary {
            smoke: vec![
                SmokeResult {
                    name: "health".into(),
                    method: "GET".into(),
                    path: "/healthz".into(),
                    expected: 200,
                    status: Some(200),
                    ok: true,
                    duration_ms: 12,
                    detail: None,
                },
                SmokeResult {
                    name: "menu".into(),
                    method: "GET".into(),
                    path: "/menu".into(),
                    expected: 200,
                    status: Some(500),
                    ok: false,
                    duration_ms: 30,
                    detail: Some("expected 200, got 500".into()),
                },
            ],
            load: Some(json!({"timestamp": "2026-11-23T12:00:00.000Z", "metrics": {
                "http_req_duration": {"p95": 387.57, "avg": 275.01, "med": 250.0, "p90": 350.0, "p99": 420.0},
                "http_reqs": {"total": 750}, "errors": {"rate": 0.0093}}})),
            comparison: Some(
                json!({"verdict": "pass", "threshold_pct": 20.0, "notes": [], "metrics": [
                {"name": "p95", "label": "P95 Latency", "unit": "ms", "baseline": 380.0, "current": 387.57,
                 "change_pct": 1.99, "floor": 10.0, "verdict": "pass",
                 "current_display": "387.57ms", "baseline_display": "380.00ms", "change_display": "+2.0%"}]}),
            ),
            load_note: None,
            logs: Some("https://github.com/o/r/actions/runs/1".into()),
            timings: vec![Timing {
                step: "deploy".into(),
                ms: 5120,
            }],
            through_gate: false,
        },
        lifecycle: LifecycleBoundary {
            created: Some("2026-11-23T12:00:00Z".into()),
            updated: Some("2026-11-23T12:05:00Z".into()),
            expires: Some("2026-11-30T12:05:00Z".into()),
            destroyed: None,
            audit: None,
        },
    }
}

fn ctx(status: &str, error: Option<&str>) -> serde_json::Value {
    json!({
        "marker": "<!-- atlas:preview pr=2 -->",
        "pr": 2,
        "status": status,
        "contract": contract(),
        "error": error,
        "generated_at": "2026-11-23T12:05:00Z",
    })
}

#[test]
fn preview_comment_ready() {
    let r = Renderer::new(None).unwrap();
    let out = r
        .render_comment("preview.md.j2", &ctx("ready", None))
        .unwrap();
    assert!(out.starts_with("<!-- atlas:preview pr=2 -->"));
    assert_eq!(
        out.matches("<!--").count(),
        1,
        "user text cannot add a marker"
    );
    assert!(!out.contains("@octocat"));
    insta::assert_snapshot!(out);
}

#[test]
fn preview_comment_failed() {
    let r = Renderer::new(None).unwrap();
    let out = r
        .render_comment(
            "preview.md.j2",
            &ctx("failed", Some("smoke checks failed: 1 of 2")),
        )
        .unwrap();
    insta::assert_snapshot!(out);
}

#[test]
fn oversized_comment_degrades_within_the_limit() {
    let r = Renderer::new(None).unwrap();
    let mut c = ctx("ready", None);
    c["contract"]["migrations"]["schema_diff"] =
        json!("+ALTER TABLE x ADD COLUMN y int;\n".repeat(4000));
    let out = r.render_comment("preview.md.j2", &c).unwrap();
    assert!(out.chars().count() <= COMMENT_LIMIT);
    // Details are dropped first; the contract and the load table stay.
    assert!(!out.contains("ALTER TABLE"));
    assert!(out.contains("7. Lifecycle boundary") && out.contains("P95 Latency"));
    let mut c = ctx("ready", None);
    c["contract"]["data"]["external_systems"] = json!(vec!["x".repeat(250); 400]);
    let out = r.render_comment("preview.md.j2", &c).unwrap();
    assert!(out.chars().count() <= COMMENT_LIMIT);
    assert!(out.contains("truncated"), "a note says so");
}

#[test]
fn destroyed_comment() {
    let r = Renderer::new(None).unwrap();
    let out = r
        .render_comment(
            "destroyed.md.j2",
            &json!({
                "marker": "<!-- atlas:preview pr=2 -->",
                "pr": 2,
                "destroyed_at": "2026-11-24T09:00:00Z",
                "removed": [
                    {"kind": "app", "name": "kitchen-c7bf05-pr-2", "result": "destroyed"},
                    {"kind": "database branch", "name": "preview/pr-2", "result": "already gone"}
                ],
                "audit": null,
                "contract": null,
                "generated_at": "2026-11-24T09:00:00Z",
            }),
        )
        .unwrap();
    insta::assert_snapshot!(out);
}

#[test]
fn job_summary() {
    let r = Renderer::new(None).unwrap();
    let out = r
        .render(
            "summary.md.j2",
            &json!({
                "command": "preview-up",
                "pr": 2,
                "verdict": "pass",
                "reason": null,
                "contract": contract(),
                "error": null,
            }),
        )
        .unwrap();
    insta::assert_snapshot!(out);
}
