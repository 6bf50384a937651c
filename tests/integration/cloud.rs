//! Cloud providers (Neon, Fly) through the `Database` / `Platform` traits against stateful
//! fakes that validate every request against the vendors' published API descriptions. Each
//! test runs a preview-up-like sequence (ensure_branch -> deploy) and down (destroy +
//! delete_branch), with faults injected, and checks: nothing orphaned after down, re-runs
//! converge, no secret in any output, zero spec violations.

use crate::common::fake_fly;
use crate::common::fake_neon;
use crate::common::openapi;
use crate::common::world;

use std::collections::BTreeMap;
use std::time::Duration;

use atlas::config::Settings;
use atlas::naming;
use atlas::provider::{
    AppDeployment, Branch, BranchRequest, Database, Deleted, DeployRequest, Platform,
};
use atlas::secret::Secret;
use fake_fly::FakeFly;
use fake_neon::FakeNeon;
use openapi::Fault;

const REPO: &str = "octo-org/kitchen";
const NEON_KEY: &str = "neon-api-key-Zq81xx9";
const FLY_TOKEN: &str = "fly-token-Kp72yy4";
const ORG: &str = "atlas-org";
const STRIPE: &str = "sk_test_stripe_Wm33";

/// The fakes and the providers over them.
pub(crate) type Env = world::Cloud;

async fn env() -> Env {
    env_with(|_, _| {}).await
}

/// The fakes and the providers over them; `tune` adjusts atlas.toml (the preview URL points at
/// a plain health server unless it is set to the fake Fly proxy).
pub(crate) async fn env_with(tune: impl FnOnce(&mut Settings, &FakeFly)) -> Env {
    let wire = world::Wire::fast(6, Duration::from_millis(50), Duration::from_secs(20));
    world::Cloud::start((NEON_KEY, FLY_TOKEN), (REPO, ORG), &wire, |s, fly| {
        s.database.schema_only = true;
        // No bookkeeping tables to keep: nothing to copy, so no PostgreSQL is needed behind the
        // fake (neon_fixtures.rs copies them on a real one).
        s.database.migrations_tables = Vec::new();
        tune(s, fly)
    })
    .await
}

impl Env {
    pub(crate) fn branch_req(&self, pr: u64) -> BranchRequest {
        BranchRequest {
            pr,
            name: naming::preview_branch(pr),
            parent: "main".into(),
            schema_only: true,
            migrations_tables: Vec::new(),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::days(3)),
            repository: REPO.into(),
            database: "neondb".into(),
            role: "neondb_owner".into(),
            masking: None,
            anonymize_timeout: std::time::Duration::from_secs(60),
            suspend_after: self.settings.database.suspend_after,
        }
    }

    pub(crate) fn deploy_req(&self, pr: u64, sha: &str, branch: &Branch) -> DeployRequest {
        let mut secrets = BTreeMap::new();
        secrets.insert("DATABASE_URL".to_string(), branch.connection_uri.clone());
        secrets.insert("STRIPE_KEY".to_string(), Secret::new(STRIPE));
        let mut env = BTreeMap::new();
        env.insert("ATLAS_COMMIT_SHA".to_string(), sha.to_string());
        DeployRequest {
            pr: Some(pr),
            app: naming::preview_app(&self.prefix, pr),
            sha: sha.into(),
            repository: REPO.into(),
            image: Some(format!("registry.fly.io/kitchen:{sha}")),
            env,
            secrets,
            port: 8080,
            health_path: "/healthz".into(),
            readiness_timeout: Duration::from_secs(3),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::days(3)),
            outgoing: None,
        }
    }

    pub(crate) async fn up(&self, pr: u64, sha: &str) -> anyhow::Result<(Branch, AppDeployment)> {
        let b = self.db.ensure_branch(&self.branch_req(pr)).await?;
        let d = self.platform.deploy(&self.deploy_req(pr, sha, &b)).await?;
        Ok((b, d))
    }

    pub(crate) async fn down(&self, pr: u64) -> anyhow::Result<(Deleted, Deleted)> {
        let a = self
            .platform
            .destroy(&naming::preview_app(&self.prefix, pr))
            .await?;
        let b = self.db.delete_branch(&naming::preview_branch(pr)).await?;
        Ok((a, b))
    }

    fn calls(&self) -> usize {
        self.neon.core.call_count() + self.fly.core.call_count()
    }

    fn reset(&self) {
        self.neon.core.reset_calls();
        self.fly.core.reset_calls();
    }

    /// No branch or app left on the fakes' books; every request matched the spec.
    pub(crate) fn assert_clean(&self) {
        assert!(
            self.neon.preview_branches().is_empty(),
            "orphaned branches: {:?}",
            self.neon.preview_branches()
        );
        assert!(
            self.fly.app_names().is_empty(),
            "orphaned apps: {:?}",
            self.fly.app_names()
        );
        self.assert_spec();
    }

    pub(crate) fn assert_spec(&self) {
        assert_eq!(self.neon.core.violations(), Vec::<String>::new());
        assert_eq!(self.fly.core.violations(), Vec::<String>::new());
    }

    /// Every secret value this test knows about, including the branch's DB password.
    fn secret_values(&self) -> Vec<String> {
        let mut v = vec![
            NEON_KEY.to_string(),
            FLY_TOKEN.to_string(),
            STRIPE.to_string(),
        ];
        for b in self.neon.state.lock().unwrap().branches.iter() {
            v.push(b.password.clone());
        }
        v
    }

    pub(crate) fn assert_no_secret(&self, text: &str) {
        for s in self.secret_values() {
            assert!(!text.contains(&s), "secret {s:?} leaked in: {text}");
        }
    }
}

fn err_text(e: &anyhow::Error) -> String {
    format!("{e:#} || {e:?}")
}

#[tokio::test]
async fn up_repeat_up_and_down_converge_with_call_counts() {
    let e = env().await;
    let (b, d) = e.up(7, "aaa111").await.unwrap();
    let first = e.calls();
    assert!(b.created && d.created);
    assert!(
        b.connection_uri.expose().contains("br-")
            || b.connection_uri.expose().contains("ep-preview")
    );
    let fb = e.neon.branch("preview/pr-7").unwrap();
    assert_eq!(fb.annotation["atlas"], "preview");
    assert_eq!(fb.annotation["atlas_pr"], "7");
    assert_eq!(fb.annotation["atlas_repo"], REPO);
    assert_eq!(fb.init_source, "schema-only");
    assert!(fb.expires_at.is_some());
    assert!(fb.endpoint.is_some());
    // The app got the branch's own URI, never the parent's.
    let app = e.fly.app(&d.app).unwrap();
    assert!(app.secrets["DATABASE_URL"].contains(&fb.password));
    assert!(!app.secrets["DATABASE_URL"].contains("ParentPw"));
    assert_eq!(app.org, ORG);
    assert_eq!(app.machines.len(), 1);
    let m = &app.machines[0];
    assert_eq!(m.config["metadata"]["atlas_sha"], "aaa111");
    // Idle previews sleep by default (suspended: a resume, not a cold boot) and wake on the
    // next request.
    assert_eq!(m.config["services"][0]["autostop"], "suspend");
    assert_eq!(m.config["services"][0]["autostart"], true);
    assert_eq!(m.config["services"][0]["min_machines_running"], 0);
    assert_eq!(m.config["guest"]["memory_mb"], 256);

    // A repeat up creates nothing and updates the one machine in place.
    e.reset();
    let (b2, d2) = e.up(7, "bbb222").await.unwrap();
    let repeat = e.calls();
    assert!(!b2.created && !d2.created);
    assert_eq!(e.neon.preview_branches(), vec!["preview/pr-7".to_string()]);
    let app = e.fly.app(&d2.app).unwrap();
    assert_eq!(app.machines.len(), 1, "machines piled up");
    assert_eq!(app.machines[0].id, m.id);
    assert_eq!(
        app.machines[0].config["image"],
        "registry.fly.io/kitchen:bbb222"
    );
    assert_eq!(e.neon.core.count("createProjectBranch"), 0);
    assert_eq!(
        e.fly.core.count("Apps_create") + e.fly.core.count("Machines_create"),
        0
    );

    // The sweep sees exactly this PR's resources.
    let branches = e.db.list_branches().await.unwrap();
    assert_eq!(branches.iter().map(|o| o.pr).collect::<Vec<_>>(), vec![7]);
    let apps = e.platform.list_apps().await.unwrap();
    assert_eq!(apps.iter().map(|o| o.pr).collect::<Vec<_>>(), vec![7]);
    assert!(!e.db.schema_diff(&b2).await.unwrap().diff.is_empty());

    e.reset();
    assert_eq!(
        e.down(7).await.unwrap(),
        (Deleted::Removed, Deleted::Removed)
    );
    let down = e.calls();
    e.assert_clean();
    assert_eq!(
        e.down(7).await.unwrap(),
        (Deleted::AlreadyGone, Deleted::AlreadyGone)
    );
    eprintln!("API calls: first up {first}, repeat up {repeat}, down {down}");
    eprintln!(
        "down calls: {:?} {:?}",
        e.neon.core.calls(),
        e.fly.core.calls()
    );
    let dbg = format!("{b:?} {d:?} {b2:?} {:?} {:?}", e.db, e.platform);
    e.assert_no_secret(&dbg);
}

#[tokio::test]
async fn transient_statuses_are_retried_and_honour_retry_after() {
    let e = env().await;
    e.neon.core.fault(
        "listProjectBranches",
        Fault::Status(429, Some("1".into())),
        1,
    );
    e.neon
        .core
        .fault("getProjectOperation", Fault::Status(503, None), 2);
    e.neon
        .core
        .fault("getConnectionURI", Fault::Status(502, None), 1);
    e.fly.core.fault("Apps_show", Fault::Status(500, None), 1);
    e.fly
        .core
        .fault("Secrets_update", Fault::Status(429, Some("0".into())), 1);
    e.fly
        .core
        .fault("Machines_wait", Fault::Status(503, None), 1);
    let start = std::time::Instant::now();
    e.up(8, "c1").await.unwrap();
    // Retry-After: 1 was honoured (the only sleep that long in this path).
    assert!(start.elapsed() >= Duration::from_millis(950));
    // A second up while the fake says the branch is locked (423) waits and converges.
    e.neon
        .core
        .fault("updateProjectBranch", Fault::Status(423, None), 2);
    e.fly
        .core
        .fault("Machines_update", Fault::Status(502, None), 1);
    e.up(8, "c2").await.unwrap();
    assert_eq!(e.neon.core.count("updateProjectBranch"), 3);
    e.neon
        .core
        .fault("deleteProjectBranch", Fault::Status(503, None), 1);
    e.fly.core.fault("Apps_delete", Fault::Status(500, None), 1);
    e.down(8).await.unwrap();
    e.assert_clean();
}

#[tokio::test]
async fn creates_are_never_resent_blindly() {
    let e = env().await;
    // The create lands but the answer is too slow / the connection drops: re-read, don't re-send.
    e.neon.core.fault(
        "createProjectBranch",
        Fault::Slow(Duration::from_millis(1500)),
        1,
    );
    e.fly.core.fault("Apps_create", Fault::DropAfter, 1);
    e.fly.core.fault("Machines_create", Fault::DropAfter, 1);
    let (b, d) = e.up(9, "d1").await.unwrap();
    assert_eq!(e.neon.core.count("createProjectBranch"), 1);
    assert_eq!(e.fly.core.count("Apps_create"), 1);
    assert_eq!(e.fly.core.count("Machines_create"), 1);
    assert_eq!(e.neon.preview_branches().len(), 1);
    assert_eq!(e.fly.app(&d.app).unwrap().machines.len(), 1);
    assert!(!b.connection_uri.is_empty());
    // A create that fails before it lands (dropped, 503) is re-sent after the lookup says no.
    e.down(9).await.unwrap();
    e.neon
        .core
        .fault("createProjectBranch", Fault::DropBefore, 1);
    e.fly.core.fault("Apps_create", Fault::Status(503, None), 1);
    e.up(9, "d2").await.unwrap();
    assert_eq!(e.neon.preview_branches().len(), 1);
    // Dropped connections on reads are retried too.
    e.neon
        .core
        .fault("listProjectBranches", Fault::DropBefore, 1);
    e.fly
        .core
        .fault("Apps_show", Fault::Slow(Duration::from_millis(1500)), 1);
    e.down(9).await.unwrap();
    e.assert_clean();
}

#[tokio::test]
async fn eventual_consistency_404_right_after_create_is_waited_out() {
    let e = env().await;
    e.neon
        .core
        .fault("getProjectOperation", Fault::Status(404, None), 1);
    e.neon
        .core
        .fault("getConnectionURI", Fault::Status(404, None), 1);
    e.fly
        .core
        .fault("Secrets_update", Fault::Status(404, None), 2);
    e.fly
        .core
        .fault("Machines_wait", Fault::Status(404, None), 1);
    e.up(10, "e1").await.unwrap();
    e.down(10).await.unwrap();
    e.assert_clean();
}

/// N6: an operation that keeps failing is polled until the budget ends, then named with its
/// last error; down still cleans up.
#[tokio::test]
async fn an_operation_that_keeps_failing_is_named_after_the_budget_and_down_cleans_up() {
    let e = env().await;
    e.neon.fail_next_operation();
    let t = std::time::Instant::now();
    let err = e.up(11, "f1").await.unwrap_err();
    let took = t.elapsed();
    let t = err_text(&err);
    assert!(
        t.contains("operation create_branch") && t.contains("still failed after"),
        "{t}"
    );
    assert!(t.contains("last error: injected"), "{t}");
    assert!(
        took >= Duration::from_secs(2),
        "gave up before the budget: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    e.assert_no_secret(&t);
    // The branch exists on the books until down runs.
    assert_eq!(e.neon.preview_branches().len(), 1);
    assert_eq!(
        e.down(11).await.unwrap(),
        (Deleted::AlreadyGone, Deleted::Removed)
    );
    e.assert_clean();
}

/// N5: `failed` is not terminal on Neon (it retries the operation): Atlas keeps polling and
/// proceeds once it finished.
#[tokio::test]
async fn a_failed_operation_that_neon_retries_is_polled_until_finished() {
    let e = env().await;
    e.neon
        .fail_then_finish_next_operation(Duration::from_millis(300));
    let (b, _) = e.up(12, "f2").await.unwrap();
    assert!(b.created);
    assert!(
        e.neon.core.count("getProjectOperation") >= 3,
        "{:?}",
        e.neon.core.calls()
    );
    e.down(12).await.unwrap();
    e.assert_clean();
}

/// N2/N10: 423 Locked waits for the project's running operations (listed), then the mutation
/// is sent again; on delete too.
#[tokio::test]
async fn locked_projects_are_waited_out_by_their_operations() {
    let e = env().await;
    e.neon.busy_for(Duration::from_millis(400));
    e.up(13, "l1").await.unwrap();
    assert_eq!(
        e.neon.core.count("createProjectBranch"),
        2,
        "{:?}",
        e.neon.core.calls()
    );
    assert!(e.neon.core.count("listProjectOperations") >= 1);
    e.neon.busy_for(Duration::from_millis(400));
    e.down(13).await.unwrap();
    assert_eq!(e.neon.core.count("deleteProjectBranch"), 2);
    e.assert_clean();
    // Locked beyond the budget: a clear error naming the operation that holds the lock.
    e.neon.busy_for(Duration::from_secs(30));
    let err = e.up(14, "l2").await.unwrap_err();
    let t = err_text(&err);
    assert!(
        t.contains("locked (423)") && t.contains("start_compute"),
        "{t}"
    );
    assert!(e.neon.preview_branches().is_empty());
}

/// N7/F3: a create that meets a conflict adopts only what carries Atlas's marks; a foreign
/// resource created meanwhile is named and left alone.
#[tokio::test]
async fn a_create_conflict_with_a_foreign_resource_fails_and_leaves_it_alone() {
    let e = env().await;
    e.neon.race_foreign_create(&naming::preview_branch(15));
    let err = e.up(15, "c1").await.unwrap_err();
    let t = err_text(&err);
    assert!(
        t.contains("preview/pr-15") && t.contains("will not adopt"),
        "{t}"
    );
    assert!(
        e.neon.branch("preview/pr-15").is_some(),
        "the foreign branch was touched"
    );
    assert_eq!(e.neon.core.count("deleteProjectBranch"), 0);

    let app = naming::preview_app(&e.prefix, 16);
    e.fly.race_foreign_create(&app);
    let b = e.db.ensure_branch(&e.branch_req(16)).await.unwrap();
    let err = e
        .platform
        .deploy(&e.deploy_req(16, "c2", &b))
        .await
        .unwrap_err();
    let t = err_text(&err);
    assert!(
        t.contains(&app) && t.contains("not atlas's") && t.contains("squatter-org"),
        "{t}"
    );
    assert_eq!(e.fly.app(&app).unwrap().org, "squatter-org");
    assert_eq!(e.fly.core.count("Apps_delete"), 0);
    e.assert_spec();
}

/// F7/F1: a machine lease held by someone else (409) is retried with backoff until it is
/// released, updates of one machine are paced 1 s apart; a lease held for good is a clear
/// error after the budget.
#[tokio::test]
async fn a_held_lease_is_waited_out_and_updates_are_paced() {
    let e = env().await;
    e.up(17, "p1").await.unwrap();
    let app = naming::preview_app(&e.prefix, 17);
    let machine = e.fly.app(&app).unwrap().machines[0].id.clone();
    e.fly.hold_leases(&app, Duration::from_millis(1500));
    e.up(17, "p2").await.unwrap();
    let times = e.fly.update_times(&machine);
    assert!(times.len() >= 2, "the 409 was not retried: {times:?}");
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(990),
            "updates of one machine closer than 1 s: {:?}",
            w[1] - w[0]
        );
    }
    assert_eq!(
        e.fly.app(&app).unwrap().machines[0].config["image"],
        "registry.fly.io/kitchen:p2"
    );
    e.fly.hold_leases(&app, Duration::MAX);
    let err = e.up(17, "p3").await.unwrap_err();
    let t = err_text(&err);
    assert!(
        t.contains("update machine") && t.contains("409") && t.contains("lease currently held"),
        "{t}"
    );
    assert!(t.contains("gave up after"), "{t}");
    e.fly.hold_leases(&app, Duration::ZERO);
    e.down(17).await.unwrap();
    e.assert_clean();
}

/// A machine made by hand in an Atlas app is reported, not a reason to orphan the app; the
/// sweep sees the app by its last activity (the newest machine update), not its oldest machine.
#[tokio::test]
async fn hand_made_machines_do_not_orphan_an_app_and_apps_age_by_last_activity() {
    let e = env().await;
    e.up(18, "h1").await.unwrap();
    let app = naming::preview_app(&e.prefix, 18);
    e.fly.backdate(&app, chrono::Duration::days(10));
    let listed = e.platform.list_apps().await.unwrap();
    let age = chrono::Utc::now() - listed[0].created_at.unwrap();
    assert!(age > chrono::Duration::days(9), "{listed:?}");
    // A push updates the machine: the app's last activity is now.
    e.up(18, "h2").await.unwrap();
    let listed = e.platform.list_apps().await.unwrap();
    let age = chrono::Utc::now() - listed[0].created_at.unwrap();
    assert!(
        age < chrono::Duration::minutes(5),
        "aged by its oldest machine: {listed:?}"
    );

    let hand = e.fly.add_hand_made_machine(&app);
    let listed = e.platform.list_apps().await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the sweep no longer sees the app: {listed:?}"
    );
    assert_eq!(
        e.down(18).await.unwrap(),
        (Deleted::Removed, Deleted::Removed),
        "hand-made machine {hand} orphaned the app"
    );
    e.assert_clean();
}

#[tokio::test]
async fn a_machine_that_never_starts_fails_bounded_and_down_cleans_up() {
    let e = env().await;
    e.fly.set_never_start(true);
    let start = std::time::Instant::now();
    let err = e.up(12, "g1").await.unwrap_err();
    let t = err_text(&err);
    assert!(t.contains("did not reach `started`"), "{t}");
    assert!(start.elapsed() < Duration::from_secs(30));
    e.assert_no_secret(&t);
    assert_eq!(e.fly.app_names().len(), 1);
    // Every /wait call asked for at most 60 s.
    e.assert_spec();
    e.down(12).await.unwrap();
    e.assert_clean();
    // The next up, with the platform healthy again, converges from scratch.
    e.fly.set_never_start(false);
    e.up(12, "g2").await.unwrap();
    e.down(12).await.unwrap();
    e.assert_clean();
}

#[tokio::test]
async fn persistent_failures_give_up_with_a_redacted_named_error() {
    let e = env().await;
    e.fly
        .core
        .fault("Secrets_update", Fault::Status(500, None), 100);
    let err = e.up(13, "h1").await.unwrap_err();
    let t = err_text(&err);
    assert!(t.contains("fly: set secrets returned 500"), "{t}");
    assert!(t.contains("gave up after"), "{t}");
    e.assert_no_secret(&t);
    // Down still removes what the failed up left behind.
    e.down(13).await.unwrap();
    e.assert_clean();
}

#[tokio::test]
async fn foreign_resources_are_refused_not_adopted_or_deleted() {
    let e = env().await;
    let app = naming::preview_app(&e.prefix, 14);
    e.fly.add_foreign(&app, ORG);
    e.neon.add_foreign("preview/pr-15");
    let err = e.up(14, "i1").await.unwrap_err();
    assert!(err_text(&err).contains("not atlas's"), "{}", err_text(&err));
    let err = e.platform.destroy(&app).await.unwrap_err();
    assert!(err_text(&err).contains("not atlas's"));
    assert!(e.fly.app(&app).is_some(), "a foreign app was deleted");
    let err = e.db.ensure_branch(&e.branch_req(15)).await.unwrap_err();
    assert!(err_text(&err).contains("not atlas's"));
    assert!(e.db.delete_branch("preview/pr-15").await.is_err());
    assert!(e.neon.branch("preview/pr-15").is_some());
    assert!(e.platform.list_apps().await.unwrap().is_empty());
    let ours: Vec<u64> =
        e.db.list_branches()
            .await
            .unwrap()
            .iter()
            .map(|o| o.pr)
            .collect();
    assert_eq!(
        ours,
        vec![14],
        "only the branch atlas created for PR 14 is listed"
    );
    e.assert_spec();
}

#[tokio::test]
async fn listing_paginates() {
    let e = env().await;
    for pr in 20..25 {
        e.db.ensure_branch(&e.branch_req(pr)).await.unwrap();
    }
    // The fake serves two branches a page.
    let mut prs: Vec<u64> =
        e.db.list_branches()
            .await
            .unwrap()
            .iter()
            .map(|o| o.pr)
            .collect();
    prs.sort();
    assert_eq!(prs, vec![20, 21, 22, 23, 24]);
    for pr in 20..25 {
        e.db.delete_branch(&naming::preview_branch(pr))
            .await
            .unwrap();
    }
    e.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// The real orchestration (`preview::up` / `preview::down`) with the cloud providers and a
// local forge.

mod with_preview {
    use super::*;
    use atlas::preview::{self, PreviewRequest, UpOptions};

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

    async fn run() -> Run {
        let e = env().await;
        let mut settings = Settings::default();
        settings.preview.secrets = vec!["STRIPE_KEY".into()];
        settings.app.readiness_timeout = Duration::from_secs(3);
        let mut preview_secrets = BTreeMap::new();
        preview_secrets.insert("STRIPE_KEY".to_string(), Secret::new(STRIPE));
        let prefix = e.prefix.clone();
        Run(e.preview(settings, |dir| UpOptions {
            preview_secrets,
            ttl: Some(Duration::from_secs(3 * 86400)),
            audit_log: Some(dir.join("audit.jsonl")),
            ..world::kitchen_options(&prefix)
        }))
    }

    fn req(pr: u64, sha: &str) -> PreviewRequest {
        PreviewRequest {
            pr,
            sha: sha.into(),
            branch: "feature/x".into(),
            repository: REPO.into(),
            title: Some("Add orders".into()),
        }
    }

    impl Run {
        /// `preview::up` of PR `pr` at `sha`, quietly.
        async fn up(&self, pr: u64, sha: &str) -> anyhow::Result<preview::UpOutcome> {
            self.up_logged(&req(pr, sha)).await.0
        }

        /// `preview::down` of PR `pr` at `sha`, quietly.
        async fn down(&self, pr: u64, sha: &str) -> anyhow::Result<preview::DownOutcome> {
            self.down_quietly(&req(pr, sha)).await
        }

        fn calls(&self) -> usize {
            self.neon.core.call_count() + self.fly.core.call_count()
        }
        fn reset(&self) {
            self.neon.core.reset_calls();
            self.fly.core.reset_calls();
        }
        fn secrets(&self) -> Vec<String> {
            let mut v = vec![
                NEON_KEY.to_string(),
                FLY_TOKEN.to_string(),
                STRIPE.to_string(),
            ];
            for b in self.neon.state.lock().unwrap().branches.iter() {
                v.push(b.password.clone());
            }
            v
        }
    }

    #[tokio::test]
    async fn preview_up_repeat_and_down_through_the_orchestration() {
        let r = run().await;
        let mut lines = Vec::new();
        let out = preview::up(
            &r.providers,
            &r.settings,
            &req(31, "s1"),
            &r.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        let first = r.calls();
        assert!(out.app.created);
        let app = r.fly.app(&out.app.app).unwrap();
        assert_eq!(app.secrets["STRIPE_KEY"], STRIPE);
        assert!(app.secrets.contains_key("DATABASE_URL"));
        r.reset();
        let out2 = preview::up(
            &r.providers,
            &r.settings,
            &req(31, "s2"),
            &r.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        let repeat = r.calls();
        assert!(!out2.app.created);
        assert_eq!(r.fly.app(&out2.app.app).unwrap().machines.len(), 1);
        assert_eq!(r.neon.preview_branches().len(), 1);
        r.reset();
        let down = preview::down(
            &r.providers,
            &r.settings,
            &req(31, "s2"),
            &r.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        let downs = r.calls();
        r.assert_clean();
        eprintln!("preview API calls: first up {first}, repeat up {repeat}, down {downs}");
        let everything = format!(
            "{} {} {} {} {} {:?}",
            out.comment_body,
            out.summary,
            out2.comment_body,
            down.comment_body,
            lines.join("\n"),
            out.contract
        );
        for s in r.secrets() {
            assert!(!everything.contains(&s), "secret {s:?} leaked");
        }
        let audit = std::fs::read_to_string(r.opts.audit_log.as_ref().unwrap()).unwrap_or_default();
        for s in r.secrets() {
            assert!(
                !audit.contains(&s),
                "secret {s:?} leaked into the audit log"
            );
        }
    }

    /// Machines of the fake still alive, split into (task machines, app machines).
    fn live(r: &Run) -> (usize, usize) {
        let ms = r.fly.live_machines();
        let tasks = ms.iter().filter(|m| m.meta("atlas_role").is_some()).count();
        (tasks, ms.len() - tasks)
    }

    #[tokio::test]
    async fn migrations_run_as_a_one_off_machine_in_the_apps_image() {
        let mut r = run().await;
        r.settings.database.migrations = Some("./migrate up".into());
        let mut lines = Vec::new();
        let out = preview::up(
            &r.providers,
            &r.settings,
            &req(33, "m1"),
            &r.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        let tasks = r.fly.tasks();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        let t = &tasks[0];
        let c = &t.config;
        assert_eq!(c["image"], "registry.fly.io/kitchen:abc");
        assert_eq!(
            c["init"]["cmd"],
            serde_json::json!(["sh", "-c", "./migrate up"])
        );
        assert_eq!(c["restart"]["policy"], "no");
        assert_eq!(c["auto_destroy"], true);
        assert!(c["services"].is_null(), "{c}");
        assert_eq!(t.meta("atlas_role"), Some("migrations"));
        assert_eq!(t.meta("atlas"), Some("preview"));
        assert_eq!(t.meta("atlas_pr"), Some("33"));
        assert_eq!(t.meta("atlas_repo"), Some(REPO));
        assert_eq!(t.meta("atlas_sha"), Some("m1"));
        // Same app as the deploy; the task is gone; one app machine remains; the app counts
        // as created by this up even though the task created it.
        let app = r.fly.app(&out.app.app).unwrap();
        assert_eq!(app.machines.len(), 1);
        assert!(app.machines[0].config["metadata"]["atlas_role"].is_null());
        assert_eq!(live(&r), (0, 1));
        assert!(out.app.created);
        // The task got the branch's DATABASE_URL as an app secret before it was created.
        let calls = r.fly.core.calls();
        let secrets_at = calls.iter().position(|c| c == "Secrets_update").unwrap();
        let create_at = calls.iter().position(|c| c == "Machines_create").unwrap();
        assert!(secrets_at < create_at, "{calls:?}");
        let uri = app.secrets["DATABASE_URL"].clone();
        assert!(uri.starts_with("postgres"), "the branch uri was not set");
        // The evidence is the task's.
        assert!(out.contract.migrations.ran);
        assert_eq!(out.contract.migrations.ok, Some(true));
        let tail = out.contract.migrations.output_tail.clone().unwrap();
        assert!(
            tail.contains("exit code 0") && tail.contains("fly logs -a"),
            "{tail}"
        );
        // A second up runs the migrations again in a new machine and still leaves one.
        let out2 = preview::up(
            &r.providers,
            &r.settings,
            &req(33, "m2"),
            &r.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(r.fly.tasks().len(), 2);
        assert_eq!(live(&r), (0, 1));
        assert!(!out2.app.created);
        let everything = format!(
            "{} {} {} {} {:?} {:?}",
            out.comment_body,
            out.summary,
            out2.comment_body,
            lines.join("\n"),
            out.contract,
            out2.contract
        );
        assert!(!everything.contains(&uri), "the branch uri leaked");
        for s in r.secrets() {
            assert!(!everything.contains(&s), "secret {s:?} leaked");
        }
        r.down(33, "m2").await.unwrap();
        r.assert_clean();
    }

    #[tokio::test]
    async fn failed_migrations_fail_the_gate_and_leave_nothing_behind() {
        let mut r = run().await;
        // An exec array: for images without a shell.
        r.settings.database.migrations = Some(r#"["/app/migrate", "up"]"#.into());
        r.fly.fail_task_with(3);
        let mut lines = Vec::new();
        let err = preview::up(
            &r.providers,
            &r.settings,
            &req(34, "n1"),
            &r.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap_err();
        assert_eq!(atlas::error::exit_code(&err), 1, "{err:#}");
        let t = format!("{err:#} {err:?} {}", lines.join("\n"));
        assert!(t.contains("migrations") && t.contains("exit code 3"), "{t}");
        let tasks = r.fly.tasks();
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            tasks[0].config["init"]["cmd"],
            serde_json::json!(["/app/migrate", "up"])
        );
        // The app machine was never deployed (migrations come first).
        assert_eq!(r.fly.core.count("Machines_create"), 1);
        for s in r.secrets() {
            assert!(!t.contains(&s), "secret {s:?} leaked: {t}");
        }
        r.down(34, "n1").await.unwrap();
        r.assert_clean();
        assert_eq!(live(&r), (0, 0));
    }

    #[tokio::test]
    async fn a_failed_up_leaves_nothing_behind() {
        let r = run().await;
        r.fly.set_never_start(true);
        let err = r.up(32, "t1").await.unwrap_err();
        let t = format!("{err:#} {err:?}");
        for s in r.secrets() {
            assert!(!t.contains(&s), "secret {s:?} leaked: {t}");
        }
        // `up` tears down on failure; a `down` afterwards is a no-op either way.
        r.down(32, "t1").await.unwrap();
        r.assert_clean();
    }
}

#[tokio::test]
async fn the_fakes_record_requests_that_break_the_spec() {
    let neon = FakeNeon::start(NEON_KEY).await;
    let fly = FakeFly::start(FLY_TOKEN).await;
    let http = reqwest::Client::new();
    http.post(format!(
        "{}/projects/{}/branches",
        neon.api_url,
        fake_neon::PROJECT
    ))
    .bearer_auth(NEON_KEY)
    .json(&serde_json::json!({"endpoints": [{"type": "sideways"}]}))
    .send()
    .await
    .unwrap();
    http.get(format!(
        "{}/apps/x/machines/m/wait?timeout=60&bogus=1",
        fly.api_url
    ))
    .bearer_auth(FLY_TOKEN)
    .send()
    .await
    .unwrap();
    let nv = neon.core.violations();
    assert!(
        nv.len() == 1 && nv[0].contains("createProjectBranch"),
        "{nv:?}"
    );
    let fv = fly.core.violations();
    assert!(fv.len() == 1 && fv[0].contains("bogus"), "{fv:?}");
}

/// Neon will not delete a branch that has a child branch (someone branched off the preview by
/// hand): a hard error that names the branch and Neon's reason, not swallowed and not retried;
/// the branch and the child stay; once the child is gone the delete goes through.
#[tokio::test]
async fn deleting_a_branch_with_children_is_a_hard_error_not_swallowed() {
    let e = env().await;
    e.up(11, "c1").await.unwrap();
    e.neon.add_child("preview/pr-11", "debug-copy-of-pr-11");
    e.reset();
    let err =
        e.db.delete_branch(&naming::preview_branch(11))
            .await
            .unwrap_err();
    let msg = err_text(&err);
    assert!(msg.contains("delete branch"), "{msg}");
    assert!(msg.contains("422") && msg.contains("has children"), "{msg}");
    assert_eq!(
        e.neon.core.count("deleteProjectBranch"),
        1,
        "a 422 was retried"
    );
    assert!(e.neon.branch("preview/pr-11").is_some());
    assert!(e.neon.branch("debug-copy-of-pr-11").is_some());
    e.assert_no_secret(&msg);
    // The app goes regardless; the branch goes once its child does.
    e.platform
        .destroy(&naming::preview_app(&e.prefix, 11))
        .await
        .unwrap();
    {
        let mut s = e.neon.state.lock().unwrap();
        s.branches.retain(|b| b.name != "debug-copy-of-pr-11");
    }
    assert_eq!(
        e.db.delete_branch(&naming::preview_branch(11))
            .await
            .unwrap(),
        Deleted::Removed
    );
    e.assert_clean();
}

/// Fly answers the app create with 422 "name taken" because another Atlas run (same org, no
/// foreign machines) created it a moment before: the lookup finds it ours and adopts it; no
/// second create, one app, the deploy goes on.
#[tokio::test]
async fn a_name_taken_by_our_own_app_is_adopted() {
    let e = env().await;
    let app = naming::preview_app(&e.prefix, 17);
    e.fly.race_own_create(&app);
    let b = e.db.ensure_branch(&e.branch_req(17)).await.unwrap();
    let d = e
        .platform
        .deploy(&e.deploy_req(17, "f4", &b))
        .await
        .unwrap();
    assert_eq!(d.app, app);
    assert_eq!(e.fly.core.count("Apps_create"), 1, "the create was re-sent");
    assert_eq!(e.fly.app_names(), vec![app.clone()]);
    let a = e.fly.app(&app).unwrap();
    assert_eq!(a.org, ORG);
    assert_eq!(a.machines.len(), 1);
    assert_eq!(a.machines[0].config["metadata"]["atlas_sha"], "f4");
    e.down(17).await.unwrap();
    e.assert_clean();
}

/// Fly's machine `/wait` answers 408 when its own timeout passes before the state is reached:
/// Atlas waits again within its budget instead of failing.
#[tokio::test]
async fn a_408_on_machine_wait_is_waited_again() {
    let e = env().await;
    e.fly
        .core
        .fault("Machines_wait", Fault::Status(408, None), 2);
    let (_, d) = e.up(18, "f5").await.unwrap();
    assert!(d.created);
    assert!(
        e.fly.core.count("Machines_wait") >= 3,
        "the 408s were not followed by another wait: {:?}",
        e.fly.core.calls()
    );
    e.down(18).await.unwrap();
    e.assert_clean();
}

/// An update whose new machine never starts (the new image crashes on boot): after the
/// readiness timeout the machine goes back to the image that served and starts on it, and the
/// error says so; a first deploy that never starts has nothing to go back to.
#[tokio::test]
async fn an_update_that_never_starts_goes_back_to_the_version_that_served() {
    let e = env().await;
    let (_, d) = e.up(19, "g1").await.unwrap();
    e.fly.set_never_start_image("registry.fly.io/kitchen:g2");
    let err = e.up(19, "g2").await.unwrap_err();
    let t = err_text(&err);
    assert!(t.contains("did not reach `started`"), "{t}");
    assert!(
        t.contains("rolled back to the image that served (registry.fly.io/kitchen:g1)"),
        "{t}"
    );
    let app = e.fly.app(&d.app).unwrap();
    assert_eq!(app.machines.len(), 1);
    let m = &app.machines[0];
    assert_eq!(m.config["image"], "registry.fly.io/kitchen:g1");
    assert_eq!(m.config["metadata"]["atlas_sha"], "g1");
    assert_eq!(m.state, "started");
    e.assert_no_secret(&t);
    // A first deploy on the bad image: no previous version, no restore call.
    e.fly.core.reset_calls();
    let b = e.db.ensure_branch(&e.branch_req(20)).await.unwrap();
    let err = e
        .platform
        .deploy(&e.deploy_req(20, "g2", &b))
        .await
        .unwrap_err();
    assert!(
        !err_text(&err).contains("rolled back"),
        "{}",
        err_text(&err)
    );
    assert_eq!(e.fly.core.count("Machines_update"), 0);
    e.down(19).await.unwrap();
    e.down(20).await.unwrap();
    e.assert_clean();
}

/// Fly refuses the app create because the org is at its quota: the error names the quota, the
/// org and what frees room (the sweep), and is not retried.
#[tokio::test]
async fn a_fly_quota_refusal_is_named_with_what_frees_room() {
    let e = env().await;
    e.up(21, "q1").await.unwrap();
    e.fly.set_app_quota(1);
    let err = e.up(22, "q2").await.unwrap_err();
    let t = err_text(&err);
    assert!(t.contains("quota of 1 apps"), "{t}");
    assert!(
        t.contains("refused for lack of quota or capacity in org `atlas-org`")
            && t.contains("atlas sweep"),
        "{t}"
    );
    assert_eq!(
        e.fly.core.count("Apps_create"),
        2,
        "a quota refusal was retried"
    );
    // a name conflict is not a quota problem
    e.fly.set_app_quota(100);
    let app = naming::preview_app(&e.prefix, 23);
    e.fly.race_foreign_create(&app);
    let b = e.db.ensure_branch(&e.branch_req(23)).await.unwrap();
    let err = e
        .platform
        .deploy(&e.deploy_req(23, "q3", &b))
        .await
        .unwrap_err();
    // (the Display chain: a debug print carries a backtrace that names functions)
    assert!(!format!("{err:#}").contains("quota"), "{err:#}");
    e.fly.state.lock().unwrap().apps.remove(&app);
    for pr in [21, 22, 23] {
        e.down(pr).await.unwrap();
    }
    e.assert_clean();
}

/// L12: a backlog of 500 orphaned preview apps (their PRs closed). Each sweep run deletes at
/// most its cap and defers the rest; app deletes are spaced as Fly's per-minute limit on app
/// deletes needs, whichever app (the interval is shortened here, the spacing is what is
/// checked); five runs converge to nothing left.
#[tokio::test]
async fn a_backlog_of_500_orphans_is_swept_capped_per_run_and_paced() {
    use atlas::sweep::{SweepOptions, sweep_with};
    let e = env().await;
    assert_eq!(
        atlas::provider::fly::APP_DELETE_SPACING,
        Duration::from_millis(600),
        "100 app deletes a minute"
    );
    let spacing = Duration::from_millis(10);
    let e = Env {
        platform: e.platform.with_app_delete_spacing(spacing),
        ..e
    };
    {
        let mut s = e.fly.state.lock().unwrap();
        for pr in 1000..1500u64 {
            let name = naming::preview_app(&e.prefix, pr);
            s.apps.insert(
                name.clone(),
                fake_fly::FakeApp {
                    id: format!("app-{pr}"),
                    name,
                    org: ORG.into(),
                    machines: Vec::new(),
                    secrets: BTreeMap::new(),
                    secrets_version: 0,
                },
            );
        }
    }
    let opts = SweepOptions {
        ttl: Duration::from_secs(7 * 24 * 3600),
        grace_period: Duration::ZERO,
        max_deletions: 100,
        dry_run: false,
    };
    let mut left = 500;
    for run in 1..=5 {
        let r = sweep_with(&e.db, &e.platform, Ok(vec![]), chrono::Utc::now(), &opts).await;
        assert!(r.errors.is_empty() && r.failed.is_empty(), "{r:?}");
        assert_eq!(r.deleted.len(), 100, "run {run}");
        left -= 100;
        assert_eq!(r.deferred.len(), left, "run {run}");
        assert_eq!(e.fly.app_names().len(), left, "run {run}");
    }
    let times = e.fly.app_delete_times();
    assert_eq!(times.len(), 500);
    for w in times.windows(2) {
        assert!(
            w[1].duration_since(w[0]) >= spacing,
            "two app deletes {:?} apart",
            w[1].duration_since(w[0])
        );
    }
    let r = sweep_with(&e.db, &e.platform, Ok(vec![]), chrono::Utc::now(), &opts).await;
    assert!(r.deleted.is_empty() && r.deferred.is_empty(), "{r:?}");
    e.assert_clean();
}

/// A kept commit's frozen branch is a copy-on-write child of its preview's branch, made once
/// (a retried push reuses it, never freezes again), with its own endpoint and the preview's
/// ownership marks, and listed as that PR's: the sweep of the closed PR deletes it with its
/// preview's branch (children first, as Neon requires), and nothing is left.
#[tokio::test]
async fn a_closed_prs_frozen_commit_branch_is_swept_with_its_preview_branch() {
    use atlas::provider::Database as _;
    use atlas::sweep::{SweepOptions, sweep_with};
    let e = env().await;
    let sha = "ab".repeat(20);
    let (b, _) = e.up(12, &sha).await.unwrap();
    let name = naming::commit_branch(&b.name, &sha);
    assert_eq!(name, "preview/pr-12/c-abababa");
    let frozen =
        e.db.snapshot_branch(&e.branch_req(12).for_commit(&b, &name))
            .await
            .unwrap()
            .expect("neon freezes a branch");
    assert!(frozen.created);
    assert_ne!(frozen.connection_uri.expose(), b.connection_uri.expose());
    let fb = e.neon.branch(&name).unwrap();
    assert_eq!(fb.parent_id, e.neon.branch(&b.name).map(|p| p.id));
    assert_eq!(fb.init_source, "parent-data", "all rows, not schema only");
    assert_eq!(
        fb.annotation.get("atlas_pr").map(String::as_str),
        Some("12")
    );
    let again =
        e.db.snapshot_branch(&e.branch_req(12).for_commit(&b, &name))
            .await
            .unwrap()
            .unwrap();
    assert!(!again.created);
    let listed = e.db.list_branches().await.unwrap();
    assert!(
        listed.iter().any(|o| o.name == name && o.pr == 12),
        "{listed:?}"
    );
    let opts = SweepOptions {
        ttl: Duration::from_secs(7 * 24 * 3600),
        grace_period: Duration::ZERO,
        max_deletions: 100,
        dry_run: false,
    };
    let r = sweep_with(&e.db, &e.platform, Ok(vec![]), chrono::Utc::now(), &opts).await;
    assert!(r.errors.is_empty() && r.failed.is_empty(), "{r:?}");
    assert!(r.deleted.iter().any(|it| it.name == name), "{r:?}");
    e.assert_clean();
}
