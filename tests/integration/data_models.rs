//! Data models (`[database] data_model`) through the real orchestration
//! (`preview::up` / `down`) on the Neon and Fly fakes: anonymized branches (success, a masking
//! run that fails, one that never ends, an unknown column), the seed of `seeded` / `fixtures`
//! (once on create, never on update; a failing seed), `none` (no branch, no `DATABASE_URL`) and
//! `reset = "on-push"` (Neon's restore, then masking again). Every request is checked against
//! the published specs.

use crate::common::world;

use std::time::Duration;

use atlas::config::{DataModel, MaskingRule, ResetPolicy, Settings};
use atlas::preview::{self, PreviewRequest, UpOptions};

const REPO: &str = "octo-org/kitchen";
const NEON_KEY: &str = "neon-api-key-Dm15aa1";
const FLY_TOKEN: &str = "fly-token-Dm15bb2";

/// This module's run over the shared orchestration world.
struct Run(world::Preview);

impl std::ops::Deref for Run {
    type Target = world::Preview;
    fn deref(&self) -> &world::Preview {
        &self.0
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut world::Preview {
        &mut self.0
    }
}

fn rule(table: &str, column: &str, function: Option<&str>, value: Option<&str>) -> MaskingRule {
    MaskingRule {
        schema: "public".into(),
        table: table.into(),
        column: column.into(),
        function: function.map(str::to_string),
        value: value.map(str::to_string),
    }
}

async fn run(configure: impl FnOnce(&mut Settings)) -> Run {
    let wire = world::Wire::fast(4, Duration::from_millis(20), Duration::from_secs(10));
    let c = world::Cloud::start((NEON_KEY, FLY_TOKEN), (REPO, "atlas-org"), &wire, |s, _| {
        s.app.readiness_timeout = Duration::from_secs(3);
        s.database.anonymize_timeout = Duration::from_secs(2);
        configure(s)
    })
    .await;
    let (settings, prefix) = (c.settings.clone(), c.prefix.clone());
    Run(c.preview(settings, |_| UpOptions {
        ttl: Some(Duration::from_secs(86400)),
        ..world::kitchen_options(&prefix)
    }))
}

fn req(pr: u64, sha: &str) -> PreviewRequest {
    PreviewRequest {
        pr,
        sha: sha.into(),
        branch: "feature/x".into(),
        repository: REPO.into(),
        title: None,
    }
}

impl Run {
    async fn up(&self, pr: u64, sha: &str) -> (anyhow::Result<preview::UpOutcome>, String) {
        self.up_logged(&req(pr, sha)).await
    }
    async fn down(&self, pr: u64) {
        self.down_quietly(&req(pr, "x")).await.unwrap();
    }
    /// The Neon operations called, in order, that concern anonymization.
    fn anon_calls(&self) -> Vec<String> {
        self.neon
            .core
            .calls()
            .into_iter()
            .filter(|c| {
                c.contains("Anonymi")
                    || c.contains("MaskingRules")
                    || c == "createProjectBranch"
                    || c == "restoreProjectBranch"
            })
            .collect()
    }
}

fn anonymized(s: &mut Settings) {
    s.database.data_model = DataModel::Anonymized;
    s.database.masking = vec![
        rule("users", "email", Some("anon.fake_email()"), None),
        rule("users", "phone", None, Some("+00 000 000")),
    ];
}

#[tokio::test]
async fn an_anonymized_branch_is_masked_before_the_app_gets_its_uri() {
    let r = run(anonymized).await;
    let (out, log) = r.up(51, "a1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    let b = r.neon.branch("preview/pr-51").unwrap();
    let anon = b.anon.clone().expect("made by the anonymized-branch API");
    assert!(b.masked, "the branch holds masked rows");
    assert_eq!(anon.state, "anonymized");
    assert_eq!(anon.runs, 1);
    // the rules went to Neon as the spec's MaskingRule: function or literal value.
    assert_eq!(anon.rules[0]["table_name"], "users");
    assert_eq!(anon.rules[0]["column_name"], "email");
    assert_eq!(anon.rules[0]["masking_function"], "anon.fake_email()");
    assert_eq!(anon.rules[0]["database_name"], "neondb");
    assert_eq!(anon.rules[1]["masking_value"], "+00 000 000");
    // never created as a plain branch first; the URI was asked for only once masked: the app
    // got DATABASE_URL after the status said `anonymized`.
    let calls = r.neon.core.calls();
    assert!(
        !calls.iter().any(|c| c == "createProjectBranch"),
        "{calls:?}"
    );
    let last_status = calls
        .iter()
        .rposition(|c| c == "getAnonymizedBranchStatus")
        .unwrap();
    let uri = calls.iter().position(|c| c == "getConnectionURI").unwrap();
    assert!(last_status < uri, "{calls:?}");
    let app = r.fly.app(&out.app.app).unwrap();
    assert!(app.secrets.contains_key("DATABASE_URL"));
    // the data clause: model, rules (targets and functions), never the literal value.
    let c = &out.contract.data;
    assert_eq!(c.model, "anonymized");
    assert_eq!(c.parent_rows.as_deref(), Some("masked"));
    assert_eq!(
        c.masking,
        [
            "users.email -> anon.fake_email()",
            "users.phone -> a fixed value"
        ]
    );
    assert!(c.masking_ms.is_some());
    assert!(
        out.comment_body.contains("parent's rows: masked"),
        "{}",
        out.comment_body
    );
    assert!(!out.comment_body.contains("+00 000 000"));
    assert!(!format!("{:?} {log}", out.contract).contains("+00 000 000"));

    // An update reuses the branch: its rules and status are checked again, nothing else.
    r.neon.core.reset_calls();
    let (out2, log2) = r.up(51, "a2").await;
    out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    assert_eq!(
        r.anon_calls(),
        ["getMaskingRules", "getAnonymizedBranchStatus"]
    );
    r.down(51).await;
    r.assert_clean();
}

#[tokio::test]
async fn changed_rules_are_sent_and_run_again_on_the_next_push() {
    let mut r = run(anonymized).await;
    let (out, log) = r.up(61, "k1").await;
    out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    r.settings
        .database
        .masking
        .push(rule("users", "name", Some("anon.fake_first_name()"), None));
    r.neon.core.reset_calls();
    let (out2, log2) = r.up(61, "k2").await;
    let out2 = out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    let calls = r.anon_calls();
    assert_eq!(
        &calls[..3],
        [
            "getMaskingRules",
            "updateMaskingRules",
            "startAnonymization"
        ],
        "{calls:?}"
    );
    let anon = r.neon.branch("preview/pr-61").unwrap().anon.unwrap();
    assert_eq!(anon.runs, 2);
    assert_eq!(anon.rules.len(), 3);
    assert_eq!(anon.state, "anonymized");
    assert_eq!(out2.contract.data.masking.len(), 3);
    r.down(61).await;
    r.assert_clean();
}

#[tokio::test]
async fn a_plain_branch_is_never_adopted_as_an_anonymized_one() {
    let mut r = run(|_| {}).await;
    let (out, log) = r.up(62, "l1").await;
    out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    anonymized(&mut r.settings);
    let (out2, log2) = r.up(62, "l2").await;
    let t = format!("{:#}\n{log2}", out2.expect_err("a plain copy is refused"));
    assert!(t.contains("not an anonymized branch"), "{t}");
    // the update failed: the branch and the app of the previous version are kept.
    assert!(r.neon.branch("preview/pr-62").is_some());
    r.down(62).await;
    r.assert_clean();
}

#[tokio::test]
async fn a_failed_masking_run_fails_closed_and_leaves_nothing() {
    let r = run(anonymized).await;
    r.neon
        .fail_next_anonymization("function anon.fake_email() does not exist");
    let (out, log) = r.up(52, "b1").await;
    let e = out.expect_err("a failed masking run fails the preview");
    let t = format!("{e:#}\n{log}");
    assert!(
        t.contains("anonymization of branch preview/pr-52 failed (error)"),
        "{t}"
    );
    assert!(
        t.contains("function anon.fake_email() does not exist"),
        "{t}"
    );
    assert!(
        t.contains("users.email -> anon.fake_email()"),
        "the rules are named: {t}"
    );
    // deleted, never handed out: no URI asked, no app deployed.
    assert_eq!(r.neon.core.count("getConnectionURI"), 0);
    assert_eq!(r.fly.core.count("Machines_create"), 0);
    r.assert_clean();
}

#[tokio::test]
async fn a_rule_naming_an_unknown_column_fails_with_neons_message() {
    let r = run(|s| {
        anonymized(s);
        s.database
            .masking
            .push(rule("users", "ssn", Some("anon.random_string(9)"), None));
    })
    .await;
    let (out, log) = r.up(53, "c1").await;
    let t = format!("{:#}\n{log}", out.expect_err("an unknown column fails"));
    assert!(
        t.contains("column \"ssn\" of relation \"public.users\" does not exist"),
        "{t}"
    );
    assert_eq!(r.neon.core.count("getConnectionURI"), 0);
    r.assert_clean();
}

#[tokio::test]
async fn a_masking_run_that_never_ends_is_bounded_and_torn_down() {
    let r = run(|s| {
        anonymized(s);
        s.database.anonymize_timeout = Duration::from_millis(300);
    })
    .await;
    r.neon.stall_anonymization();
    let t0 = std::time::Instant::now();
    let (out, log) = r.up(54, "d1").await;
    let t = format!("{:#}\n{log}", out.expect_err("a stalled masking run fails"));
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(
        t.contains("still `anonymizing`") && t.contains("anonymize_timeout"),
        "{t}"
    );
    assert_eq!(r.neon.core.count("getConnectionURI"), 0);
    r.assert_clean();
}

#[tokio::test]
async fn bad_masking_settings_fail_before_anything_is_created() {
    let r = run(|s| {
        s.database.data_model = DataModel::Anonymized;
        s.database.masking = vec![rule("users", "email", None, None)];
    })
    .await;
    let (out, _) = r.up(55, "e1").await;
    let t = format!("{:#}", out.unwrap_err());
    assert!(t.contains("rule 1 (users.email)"), "{t}");
    assert_eq!(r.neon.core.call_count(), 0);
    assert_eq!(r.fly.core.call_count(), 0);
}

#[tokio::test]
async fn the_seed_runs_once_on_a_new_branch_in_the_apps_image() {
    let r = run(|s| {
        s.database.data_model = DataModel::Seeded;
        s.database.migrations = Some("./migrate up".into());
        s.database.seed = Some("./seed --demo".into());
    })
    .await;
    let (out, log) = r.up(56, "f1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    let cmds: Vec<serde_json::Value> = r
        .fly
        .tasks()
        .iter()
        .map(|t| t.config["init"]["cmd"].clone())
        .collect();
    assert_eq!(
        cmds,
        [
            serde_json::json!(["sh", "-c", "./migrate up"]),
            serde_json::json!(["sh", "-c", "./seed --demo"])
        ],
        "migrations, then the seed"
    );
    let roles: Vec<Option<String>> = r
        .fly
        .tasks()
        .iter()
        .map(|t| t.meta("atlas_role").map(str::to_string))
        .collect();
    assert_eq!(roles, [Some("migrations".into()), Some("seed".into())]);
    let seed = out.contract.data.seed.clone().unwrap();
    assert!(seed.ran && seed.ok == Some(true), "{seed:?}");
    assert_eq!(seed.exit_code, Some(0));
    assert!(
        out.comment_body
            .contains("seed `./seed --demo`: ok (exit 0)"),
        "{}",
        out.comment_body
    );
    assert_eq!(out.contract.data.parent_rows.as_deref(), Some("copied"));
    // an update: the migrations run again, the seed does not.
    let (out2, log2) = r.up(56, "f2").await;
    let out2 = out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    assert_eq!(r.fly.tasks().len(), 3, "only the migrations ran again");
    assert!(log2.contains("seed: not run"), "{log2}");
    assert!(!out2.contract.data.seed.unwrap().ran);
    r.down(56).await;
    r.assert_clean();
}

#[tokio::test]
async fn a_failing_seed_fails_the_preview_with_its_exit_code_and_tears_down() {
    let r = run(|s| {
        s.database.data_model = DataModel::Fixtures;
        // Nothing to keep: the fake's branches need no PostgreSQL (neon_fixtures.rs has one).
        s.database.migrations_tables = Vec::new();
        s.database.seed = Some("./seed".into());
    })
    .await;
    r.fly.fail_task_with(4);
    let (out, log) = r.up(57, "g1").await;
    let e = out.expect_err("a failing seed fails");
    assert_eq!(atlas::error::exit_code(&e), 1, "{e:#}");
    let t = format!("{e:#}\n{log}");
    assert!(t.contains("seed command `./seed` failed (exit 4)"), "{t}");
    // fixtures: the branch was schema only.
    r.assert_clean();
}

#[tokio::test]
async fn fixtures_branch_schema_only() {
    let r = run(|s| {
        s.database.data_model = DataModel::Fixtures;
        // Nothing to keep: the fake's branches need no PostgreSQL (neon_fixtures.rs has one).
        s.database.migrations_tables = Vec::new();
        s.database.seed = Some("./seed".into());
    })
    .await;
    let (out, log) = r.up(58, "h1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert_eq!(
        r.neon.branch("preview/pr-58").unwrap().init_source,
        "schema-only"
    );
    assert!(out.contract.data.schema_only);
    assert_eq!(out.contract.data.parent_rows.as_deref(), Some("none"));
    r.down(58).await;
    r.assert_clean();
}

#[tokio::test]
async fn none_creates_no_branch_and_no_database_url() {
    let r = run(|s| s.database.data_model = DataModel::None).await;
    let (out, log) = r.up(59, "i1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert!(r.neon.preview_branches().is_empty());
    assert!(
        !r.neon.core.calls().iter().any(|c| c.starts_with("create")),
        "{:?}",
        r.neon.core.calls()
    );
    let app = r.fly.app(&out.app.app).unwrap();
    assert!(
        !app.secrets.contains_key("DATABASE_URL"),
        "{:?}",
        app.secrets.keys()
    );
    assert_eq!(out.contract.data.model, "none");
    assert_eq!(out.contract.data.branch, None);
    // an update too.
    let (out2, _) = r.up(59, "i2").await;
    out2.unwrap();
    assert!(r.neon.preview_branches().is_empty());
    r.down(59).await;
    r.assert_clean();
}

#[tokio::test]
async fn reset_on_push_makes_an_anonymized_branch_anew_never_restoring_in_place() {
    let r = run(|s| {
        anonymized(s);
        s.database.reset = ResetPolicy::OnPush;
    })
    .await;
    let (out, log) = r.up(60, "j1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert!(
        out.contract.lifecycle.reset.is_none(),
        "a new branch is not reset"
    );
    let old = r.neon.branch("preview/pr-60").unwrap();
    r.neon.core.reset_calls();
    let (out2, log2) = r.up(60, "j2").await;
    let out2 = out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    // a restore in place would show the parent's rows to the running app until masked: the
    // branch is deleted and made again by the anonymized-branch API instead.
    let b = r.neon.branch("preview/pr-60").unwrap();
    assert_ne!(b.id, old.id);
    assert!(b.masked && b.anon.is_some());
    assert_eq!(r.neon.core.count("restoreProjectBranch"), 0);
    let calls = r.neon.core.calls();
    let del = calls
        .iter()
        .position(|c| c == "deleteProjectBranch")
        .unwrap();
    let create = calls
        .iter()
        .position(|c| c == "createProjectBranchAnonymized")
        .unwrap();
    assert!(del < create, "{calls:?}");
    // the app got the new branch's URI.
    let app = r.fly.app(&out2.app.app).unwrap();
    assert!(app.secrets["DATABASE_URL"].contains(&b.password));
    assert!(out2.contract.lifecycle.reset.is_some());
    assert!(
        out2.comment_body.contains("reset from the parent"),
        "{}",
        out2.comment_body
    );
    r.down(60).await;
    r.assert_clean();
}

#[tokio::test]
async fn reset_on_push_restores_a_seeded_branch_and_seeds_it_again() {
    let r = run(|s| {
        s.database.data_model = DataModel::Seeded;
        s.database.seed = Some("./seed".into());
        s.database.reset = ResetPolicy::OnPush;
    })
    .await;
    let (out, log) = r.up(63, "m1").await;
    out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert_eq!(r.fly.tasks().len(), 1);
    let (out2, log2) = r.up(63, "m2").await;
    let out2 = out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    let b = r.neon.branch("preview/pr-63").unwrap();
    assert_eq!(b.restores, 1, "restored in place from the parent");
    assert_eq!(r.fly.tasks().len(), 2, "seeded again after the reset");
    assert!(out2.contract.data.seed.unwrap().ran);
    assert!(out2.contract.lifecycle.reset.is_some());

    // a restore Neon refuses fails the update with its message; the branch is kept (it serves
    // the previous version).
    r.neon.refuse_next_restore(409);
    let (out3, log3) = r.up(63, "m3").await;
    let t = format!("{:#}\n{log3}", out3.expect_err("a refused restore fails"));
    assert!(
        t.contains("restoring branch preview/pr-63 from main was refused"),
        "{t}"
    );
    assert!(r.neon.branch("preview/pr-63").is_some());
    assert_eq!(r.neon.branch("preview/pr-63").unwrap().restores, 1);
    r.down(63).await;
    r.assert_clean();
}

/// On Neon the migrations run on the anonymized branch, then a new masking run over the
/// branch (Neon masks a branch as a whole) before the app is deployed: rows a migration wrote
/// into a masked column are masked too. A masking run that fails then deletes the branch.
#[tokio::test]
async fn after_the_migrations_neon_masks_the_branch_again_before_the_deploy() {
    let r = run(|s| {
        anonymized(s);
        s.database.migrations = Some("./migrate up".into());
    })
    .await;
    let (out, log) = r.up(57, "m1").await;
    out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    let anon = r.neon.branch("preview/pr-57").unwrap().anon.unwrap();
    assert_eq!(
        anon.runs, 2,
        "created masked, masked again after the migrations"
    );
    assert_eq!(anon.state, "anonymized");
    assert!(
        log.contains("✓ masking after migrations: 2 rule(s)"),
        "{log}"
    );
    // Every push: the migrations, then a masking run awaited, then the app.
    r.neon.core.reset_calls();
    r.fly.core.reset_calls();
    let (out2, log2) = r.up(57, "m2").await;
    out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    let calls = r.anon_calls();
    let start = calls.iter().position(|c| c == "startAnonymization");
    let start = start.unwrap_or_else(|| panic!("{calls:?}"));
    assert_eq!(
        calls.last().map(String::as_str),
        Some("getAnonymizedBranchStatus"),
        "{calls:?}"
    );
    assert!(start > 0, "{calls:?}");
    let migrated = log2.find("✓ migrations").expect("migrations ran");
    let masked = log2
        .find("✓ masking after migrations")
        .expect("masked again");
    let deployed = log2.find("✓ deploy").expect("deployed");
    assert!(migrated < masked && masked < deployed, "{log2}");
    assert_eq!(
        r.neon.branch("preview/pr-57").unwrap().anon.unwrap().runs,
        3
    );
    // A masking run after the migrations that fails: the branch goes, never handed on.
    r.neon
        .fail_next_anonymization("function anon.fake_email() failed");
    let (out3, log3) = r.up(57, "m3").await;
    let e = out3
        .err()
        .unwrap_or_else(|| panic!("the push succeeded: {log3}"));
    let msg = format!("{e:#}");
    assert!(
        msg.contains("could not run again after the migrations") && msg.contains("was deleted"),
        "{msg}"
    );
    assert!(r.neon.branch("preview/pr-57").is_none(), "{msg}");
    r.down(57).await;
    r.assert_clean();
}
