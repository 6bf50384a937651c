//! Pin and quotas through the real orchestration (`preview::up` / `down`, the sweep,
//! `lifecycle::pin`) on the Neon and Fly fakes with a file forge, and the week simulation: a
//! clock moved over seven days of opens, pushes, pins, closes and sweeps ends with exactly the
//! previews the policy says and no resource outliving its preview.

use std::collections::BTreeSet;
use std::time::Duration;

use atlas::config::QuotaPolicy;
use atlas::error::QuotaRefused;
use atlas::preview::{self, PreviewRequest, UpOptions};
use atlas::provider::Forge;
use atlas::provider::local::forge::LocalForge;
use atlas::sweep::SweepOptions;
use chrono::{DateTime, Utc};

use crate::cloud::env_with;
use crate::common::world;

const TTL: Duration = Duration::from_secs(72 * 3600);

/// The shared orchestration world, a second handle on its file forge (the tests open and
/// close PRs there) and the app-name prefix.
struct World {
    run: world::Preview,
    forge: LocalForge,
    prefix: String,
}

impl std::ops::Deref for World {
    type Target = world::Preview;
    fn deref(&self) -> &world::Preview {
        &self.run
    }
}

async fn world(cap: Option<u32>, policy: QuotaPolicy) -> World {
    let e = env_with(|s, _| {
        s.preview.max_previews = cap;
        s.preview.quota_policy = policy;
        s.app.readiness_timeout = Duration::from_secs(3);
    })
    .await;
    let (settings, prefix) = (e.settings.clone(), e.prefix.clone());
    let run = e.preview(settings, |dir| UpOptions {
        ttl: Some(TTL),
        audit_log: Some(dir.join("audit.jsonl")),
        ..world::kitchen_options(&prefix)
    });
    World {
        forge: LocalForge::new(run.forge_dir(), false),
        run,
        prefix,
    }
}

fn sha(pr: u64, n: u32) -> String {
    format!("{:040x}", (pr as u128) << 32 | n as u128)
}

fn req(pr: u64, n: u32) -> PreviewRequest {
    PreviewRequest {
        pr,
        sha: sha(pr, n),
        branch: format!("feature/{pr}"),
        repository: "octo-org/kitchen".into(),
        title: Some(format!("PR {pr}")),
    }
}

fn refused(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| c.downcast_ref::<QuotaRefused>())
        .map(|q| q.reason.clone())
}

impl World {
    /// A push (or the opening) of `pr` at `at`: the PR's head moves, then `preview up` runs.
    async fn push(&self, pr: u64, n: u32, at: DateTime<Utc>) -> anyhow::Result<preview::UpOutcome> {
        self.push_labeled(pr, n, at, None).await
    }

    /// [`World::push`] whose event shows whether the pin label is on the PR.
    async fn push_labeled(
        &self,
        pr: u64,
        n: u32,
        at: DateTime<Utc>,
        pin_labeled: Option<bool>,
    ) -> anyhow::Result<preview::UpOutcome> {
        self.forge.set_pr(pr, true, &sha(pr, n)).unwrap();
        let opts = UpOptions {
            now: Some(at),
            pin_labeled,
            ..self.opts.clone()
        };
        preview::up(
            &self.providers,
            &self.settings,
            &req(pr, n),
            &opts,
            &mut |_| {},
        )
        .await
    }

    /// The PR closes and its `closed` run tears the preview down.
    async fn close(&self, pr: u64) {
        self.forge.set_pr(pr, false, &sha(pr, 0)).unwrap();
        preview::down(
            &self.providers,
            &self.settings,
            &req(pr, 0),
            &self.opts,
            &mut |_| {},
        )
        .await
        .unwrap();
    }

    async fn pin(
        &self,
        pr: u64,
        by: Option<&str>,
        at: DateTime<Utc>,
    ) -> atlas::lifecycle::PinOutcome {
        let out = atlas::lifecycle::pin(
            self.providers.database.as_ref(),
            self.providers.platform.as_ref(),
            pr,
            by,
            at + chrono::Duration::from_std(TTL).unwrap(),
        )
        .await
        .unwrap();
        let r = atlas::report::Renderer::new(None).unwrap();
        atlas::lifecycle::lifecycle_comment(
            self.providers.forge.as_ref(),
            self.providers.platform.as_ref(),
            &r,
            atlas::lifecycle::Changed::Pin(&out),
            None,
        )
        .await
        .unwrap()
        .expect("a live preview comment to update");
        out
    }

    async fn sweep(&self, at: DateTime<Utc>) -> atlas::sweep::SweepReport {
        let opts = SweepOptions {
            ttl: TTL,
            grace_period: Duration::from_secs(3600),
            max_deletions: 20,
            dry_run: false,
        };
        let r = atlas::sweep::sweep(&self.providers, at, &opts).await;
        assert!(r.ok(), "{r:?}");
        r
    }

    async fn comment(&self, pr: u64) -> String {
        self.forge
            .comment_body(pr, &preview::marker(pr))
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// The PRs that have an app, and those that have a branch: equal when nothing is orphaned.
    fn live(&self) -> BTreeSet<u64> {
        let apps: BTreeSet<u64> = self
            .fly
            .app_names()
            .iter()
            .filter_map(|a| atlas::naming::pr_from_app(&self.prefix, a))
            .collect();
        let branches: BTreeSet<u64> = self
            .neon
            .preview_branches()
            .iter()
            .filter_map(|b| atlas::naming::pr_from_branch(b))
            .collect();
        assert_eq!(apps, branches, "an app or a branch outlived its preview");
        apps
    }

    fn assert_spec(&self) {
        assert_eq!(self.neon.core.violations(), Vec::<String>::new());
        assert_eq!(self.fly.core.violations(), Vec::<String>::new());
    }
}

fn set(prs: &[u64]) -> BTreeSet<u64> {
    prs.iter().copied().collect()
}

#[tokio::test]
async fn a_pin_is_recorded_on_the_resources_survives_pushes_and_the_ttl_and_unpins() {
    let w = world(None, QuotaPolicy::EvictOldest).await;
    let t0 = Utc::now();
    w.push(7, 1, t0).await.unwrap();
    let app = atlas::naming::preview_app(&w.prefix, 7);
    assert!(w.neon.branch("preview/pr-7").unwrap().expires_at.is_some());

    let calls = w.fly.core.count("Machines_update");
    let out = w.pin(7, Some("octocat"), t0).await;
    assert_eq!(out.changed.len(), 2, "{out:?}");
    // Metadata only: nothing restarted or rebuilt.
    assert_eq!(w.fly.core.count("Machines_update"), calls);
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some("octocat"));
    assert_eq!(w.neon.branch("preview/pr-7").unwrap().expires_at, None);
    let c = w.comment(7).await;
    assert!(c.contains("pinned by @octocat"), "{c}");
    assert!(c.contains("Preview ready"), "{c}");

    // A push keeps the pin (and leaves the branch without expiry).
    let later = t0 + chrono::Duration::hours(5);
    let up = w.push(7, 2, later).await.unwrap();
    assert_eq!(up.contract.lifecycle.pinned_by.as_deref(), Some("octocat"));
    assert!(up.comment_body.contains("pinned by @octocat"));
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some("octocat"));
    assert_eq!(w.neon.branch("preview/pr-7").unwrap().expires_at, None);

    // Ten days on, the PR open: the sweep keeps the pinned preview.
    let r = w.sweep(t0 + chrono::Duration::days(10)).await;
    assert!(r.deleted.is_empty(), "{r:?}");
    assert_eq!(w.live(), set(&[7]));

    // Unpinned on day 10: both expiries renewed from then; the sweep takes it after that.
    let day10 = t0 + chrono::Duration::days(10);
    let out = w.pin(7, None, day10).await;
    assert!(out.expires.is_some());
    assert_eq!(
        w.fly.app(&app).unwrap().machines[0].meta("atlas_pinned_by"),
        Some("")
    );
    assert!(w.neon.branch("preview/pr-7").unwrap().expires_at.is_some());
    assert!(!w.comment(7).await.contains("pinned by"));
    assert!(
        w.sweep(day10 + chrono::Duration::days(2))
            .await
            .deleted
            .is_empty()
    );
    let r = w.sweep(day10 + chrono::Duration::days(4)).await;
    assert_eq!(r.deleted.len(), 2, "{r:?}");
    assert_eq!(w.live(), set(&[]));
    w.assert_spec();
}

/// The pin label as the event of a push shows it: a preview nothing pins yet is pinned, and a
/// login the label's own run already recorded on the app (racing this push, its comment rewrite
/// lost) is kept; a first push with the label pins a new preview ("label present at deploy");
/// a push without it unpins. The app and the branch follow each time.
#[tokio::test]
async fn the_label_in_a_push_event_pins_or_unpins_what_up_builds() {
    let w = world(None, QuotaPolicy::EvictOldest).await;
    let t0 = Utc::now();
    let app = atlas::naming::preview_app(&w.prefix, 7);
    let expires = |b: &str| w.neon.branch(b).unwrap().expires_at;
    w.push(7, 1, t0).await.unwrap();
    w.providers
        .platform
        .set_pin(&app, Some("octocat"))
        .await
        .unwrap();
    assert!(expires("preview/pr-7").is_some());
    let up = w
        .push_labeled(7, 2, t0 + chrono::Duration::hours(1), Some(true))
        .await
        .unwrap();
    assert_eq!(up.contract.lifecycle.pinned_by.as_deref(), Some("octocat"));
    assert!(
        up.comment_body.contains("pinned by @octocat"),
        "{}",
        up.comment_body
    );
    assert_eq!(expires("preview/pr-7"), None);
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some("octocat"));

    // A new PR opened with the label on.
    let up = w.push_labeled(9, 1, t0, Some(true)).await.unwrap();
    assert_eq!(
        up.contract.lifecycle.pinned_by.as_deref(),
        Some(atlas::contract::PINNED_AT_DEPLOY)
    );
    assert!(
        up.comment_body.contains("pinned (label present at deploy)"),
        "{}",
        up.comment_body
    );
    assert_eq!(expires("preview/pr-9"), None);
    let app9 = atlas::naming::preview_app(&w.prefix, 9);
    let m = &w.fly.app(&app9).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by"), Some("label present at deploy"));

    // Ten days on, both open: the sweep keeps both.
    let r = w.sweep(t0 + chrono::Duration::days(10)).await;
    assert!(r.deleted.is_empty(), "{r:?}");

    // The label is gone by the next push of 7: unpinned, its expiry back.
    let up = w
        .push_labeled(7, 3, t0 + chrono::Duration::days(10), Some(false))
        .await
        .unwrap();
    assert_eq!(up.contract.lifecycle.pinned_by, None);
    assert!(!up.comment_body.contains("pinned"), "{}", up.comment_body);
    assert!(expires("preview/pr-7").is_some());
    let m = &w.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.meta("atlas_pinned_by").unwrap_or(""), "");
    // A push with no labels known (a manual run) leaves 9's pin as it is.
    let up = w.push(9, 2, t0 + chrono::Duration::days(10)).await.unwrap();
    assert_eq!(
        up.contract.lifecycle.pinned_by.as_deref(),
        Some(atlas::contract::PINNED_AT_DEPLOY)
    );
    let r = w.sweep(t0 + chrono::Duration::days(14)).await;
    assert_eq!(r.deleted.len(), 2, "7 expired, 9 is pinned: {r:?}");
    assert_eq!(w.live(), set(&[9]));
    w.assert_spec();
}

#[tokio::test]
async fn a_pinned_preview_still_goes_when_its_pr_closes() {
    let w = world(None, QuotaPolicy::EvictOldest).await;
    let t0 = Utc::now();
    w.push(3, 1, t0).await.unwrap();
    w.pin(3, Some("octocat"), t0).await;
    // The closed run was missed: the sweep takes it anyway.
    w.forge.set_pr(3, false, &sha(3, 1)).unwrap();
    let r = w.sweep(t0 + chrono::Duration::hours(2)).await;
    assert_eq!(r.deleted.len(), 2, "{r:?}");
    assert_eq!(w.live(), set(&[]));
    w.assert_spec();
}

#[tokio::test]
async fn evict_oldest_tears_down_the_least_recently_active_unpinned_preview() {
    let w = world(Some(2), QuotaPolicy::EvictOldest).await;
    let t0 = Utc::now();
    let h = |n: i64| t0 + chrono::Duration::hours(n);
    w.push(1, 1, h(0)).await.unwrap();
    w.push(2, 1, h(1)).await.unwrap();
    w.push(1, 2, h(2)).await.unwrap(); // a push: never subject to the cap
    // PR 3 is new at the cap: PR 2 (last active at h1) goes.
    w.push(3, 1, h(3)).await.unwrap();
    assert_eq!(w.live(), set(&[1, 3]));
    let c = w.comment(2).await;
    assert!(c.contains("Preview destroyed"), "{c}");
    // User-facing text is escaped markdown.
    assert!(
        c.contains("Evicted") && c.contains(r"max\_previews = 2"),
        "{c}"
    );
    assert!(
        c.contains("A push to this pull request brings it back"),
        "{c}"
    );
    // ...and it does (PR 1 is now the least recently active).
    w.push(2, 2, h(4)).await.unwrap();
    assert_eq!(w.live(), set(&[2, 3]));
    // A pinned preview is never the victim, however old.
    w.pin(3, Some("hubot"), h(4)).await;
    w.push(4, 1, h(5)).await.unwrap();
    assert_eq!(w.live(), set(&[3, 4]));
    // Everything else pinned: the new one is refused, nothing is torn down.
    w.pin(4, Some("hubot"), h(5)).await;
    let e = w.push(5, 1, h(6)).await.unwrap_err();
    let why = refused(&e).expect("a quota refusal");
    assert!(why.contains("every other one is pinned"), "{why}");
    assert_eq!(w.live(), set(&[3, 4]));
    let audit = std::fs::read_to_string(w.opts.audit_log.as_ref().unwrap()).unwrap();
    // 2 (for 3), 1 (for 2's return), 2 again (for 4).
    assert_eq!(audit.matches("\"action\":\"evict\"").count(), 3, "{audit}");
    w.assert_spec();
}

#[tokio::test]
async fn refuse_builds_nothing_at_the_cap_and_says_why() {
    let w = world(Some(1), QuotaPolicy::Refuse).await;
    let t0 = Utc::now();
    w.push(1, 1, t0).await.unwrap();
    let e = w.push(2, 1, t0).await.unwrap_err();
    let why = refused(&e).expect("a quota refusal");
    assert!(why.contains("quota_policy is refuse"), "{why}");
    // Nothing of PR 2 was created: one branch create in all (PR 1's).
    assert_eq!(w.neon.core.count("createProjectBranch"), 1);
    assert_eq!(w.live(), set(&[1]));
    let c = w.comment(2).await;
    assert!(
        c.contains("No preview (repository at its preview cap)"),
        "{c}"
    );
    assert!(c.contains(r"quota\_policy is refuse"), "{c}");
    // A push to the existing preview is never refused.
    w.push(1, 2, t0).await.unwrap();
    w.assert_spec();
}

/// Two `up`s of new PRs at once, at one below the cap: they end at the cap, never above, under
/// both policies; the refused one leaves nothing behind.
#[tokio::test]
async fn two_concurrent_new_previews_at_cap_minus_one_never_end_above_the_cap() {
    for policy in [QuotaPolicy::Refuse, QuotaPolicy::EvictOldest] {
        let w = world(Some(2), policy).await;
        let t0 = Utc::now();
        w.push(1, 1, t0).await.unwrap();
        let at = t0 + chrono::Duration::hours(1);
        let (a, b) = tokio::join!(w.push(10, 1, at), w.push(11, 1, at));
        let live = w.live();
        assert!(live.len() <= 2, "{policy:?}: {live:?}");
        match policy {
            QuotaPolicy::Refuse => {
                // Exactly one of the two new ones kept its place, the old one stays.
                let ok: Vec<bool> = [&a, &b].iter().map(|r| r.is_ok()).collect();
                assert_eq!(
                    ok.iter().filter(|o| **o).count(),
                    1,
                    "{policy:?}: {a:?} {b:?}"
                );
                for r in [&a, &b] {
                    if let Err(e) = r {
                        assert!(refused(e).is_some(), "{e:#}");
                    }
                }
                assert!(live.contains(&1) && live.len() == 2, "{live:?}");
            }
            QuotaPolicy::EvictOldest => {
                // The old one made room; both new ones run.
                assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
                assert_eq!(live, set(&[10, 11]));
            }
        }
        w.assert_spec();
    }
}

/// The issue's "done when": a week of activity on the fakes, the clock moved forward, with
/// `max_previews = 3`, `evict-oldest`, a 3-day TTL and a sweep every night at 03:00.
#[tokio::test]
async fn a_simulated_week_ends_with_exactly_the_previews_the_policy_says() {
    let w = world(Some(3), QuotaPolicy::EvictOldest).await;
    let t0 = Utc::now();
    let h = |n: f64| t0 + chrono::Duration::minutes((n * 60.0) as i64);
    let mut seen_max = 0;
    let mut check = |w: &World, want: &[u64]| {
        let live = w.live();
        seen_max = seen_max.max(live.len());
        assert_eq!(live, set(want));
    };
    // Monday.
    w.push(1, 1, h(9.0)).await.unwrap();
    w.push(2, 1, h(9.5)).await.unwrap();
    w.push(3, 1, h(14.0)).await.unwrap();
    check(&w, &[1, 2, 3]);
    // Tuesday.
    assert!(w.sweep(h(27.0)).await.deleted.is_empty());
    w.push(1, 2, h(34.0)).await.unwrap();
    w.pin(2, Some("octocat"), h(34.5)).await;
    w.push(4, 1, h(39.0)).await.unwrap(); // at the cap: 3 (last active Mon 14:00) goes
    check(&w, &[1, 2, 4]);
    assert!(w.comment(3).await.contains("Evicted"));
    // Wednesday.
    assert!(w.sweep(h(51.0)).await.deleted.is_empty());
    w.close(1).await;
    w.push(3, 2, h(60.0)).await.unwrap(); // a push brings 3 back (room: 2 live)
    check(&w, &[2, 3, 4]);
    // Thursday: PR 2's own expiry (Thu 09:30) passes, but it is pinned.
    assert!(w.sweep(h(75.0)).await.deleted.is_empty());
    assert!(w.sweep(h(99.0)).await.deleted.is_empty());
    check(&w, &[2, 3, 4]);
    // PR 4, idle since Tuesday 15:00, expired Friday 15:00: Saturday 03:00's sweep takes it.
    let r = w.sweep(h(123.0)).await;
    assert_eq!(
        r.deleted.iter().map(|d| d.pr).collect::<BTreeSet<_>>(),
        set(&[4]),
        "{r:?}"
    );
    check(&w, &[2, 3]);
    // Saturday: 2 unpinned (its expiry renewed from now), 5 and 6 opened; 6 at the cap
    // evicts 3 (last active Wednesday 12:00), not 2 (renewed Saturday 10:00).
    w.pin(2, None, h(130.0)).await;
    w.push(5, 1, h(131.0)).await.unwrap();
    w.push(6, 1, h(140.0)).await.unwrap();
    check(&w, &[2, 5, 6]);
    // Sunday: 6 pinned; 5 closes but its closed run never ran: the sweep takes it.
    assert!(w.sweep(h(147.0)).await.deleted.is_empty());
    w.pin(6, Some("hubot"), h(150.0)).await;
    w.forge.set_pr(5, false, &sha(5, 1)).unwrap();
    let r = w.sweep(h(167.0)).await;
    assert_eq!(
        r.deleted.iter().map(|d| d.pr).collect::<BTreeSet<_>>(),
        set(&[5]),
        "{r:?}"
    );
    // The week's end: exactly 2 (unpinned, active Saturday) and 6 (pinned by hubot).
    check(&w, &[2, 6]);
    assert_eq!(seen_max, 3, "never above max_previews");
    // The pinned one's branch carries no expiry (Neon would delete it); the other's does.
    assert_eq!(w.neon.branch("preview/pr-6").unwrap().expires_at, None);
    assert!(w.neon.branch("preview/pr-2").unwrap().expires_at.is_some());
    let c6 = w.comment(6).await;
    assert!(c6.contains("pinned by @hubot"), "{c6}");
    let c2 = w.comment(2).await;
    assert!(
        c2.contains("Preview ready") && !c2.contains("pinned by"),
        "{c2}"
    );
    for pr in [1, 3, 4, 5] {
        let c = w.comment(pr).await;
        let gone = c.contains("Preview destroyed");
        // 4 and 5 were swept (the sweep does not rewrite comments); 1 closed, 3 evicted.
        assert_eq!(gone, pr == 1 || pr == 3, "PR {pr}: {c}");
    }
    // Every resource left is one of a live preview, on both providers (checked by `live`).
    w.assert_spec();
}
