//! The lifecycle backstops: [`reconcile`] (every run compares its plan with the live
//! PR) and [`sweep`] (the `schedule` event and `atlas sweep`: destroy previews whose PR is
//! closed or whose TTL passed).
//!
//! ## How preview dispatch uses `reconcile`
//! `preview up` calls it twice with the plan's head sha:
//! 1. **before building** — `Proceed`: build; `TearDown`: run `down` instead (the PR closed
//!    before the run started); `Stale`: stop with a notice, touching nothing (a newer run owns
//!    the preview); `Missing`: stop with a notice (the PR cannot be read; the sweep cleans up).
//! 2. **after building, before writing the comment and the deployment status** — `TearDown`:
//!    the PR closed while the preview was being built: run `down` in the same run; `Stale`: a
//!    newer commit was pushed meanwhile: do NOT write the comment or the success status (the
//!    newer run writes them; resources are per PR and are updated in place by it), mark this
//!    run's own deployment `inactive` and report `verdict=stale`.
//!
//! ## The sweep's safety rules
//! Only resources returned by `Database::list_branches` / `Platform::list_apps` (already filtered
//! to Atlas's ownership marks) are considered, and each must also carry its PR number in its
//! name. If the open PRs cannot be read, nothing is deleted. Deletions are capped per run; the
//! rest is reported for the next run. `dry_run` lists only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::provider::{Database, Deleted, Forge, Owned, Platform, Providers};

/// What a run should do after reading the live PR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// The PR is open and its head is the planned commit.
    Proceed,
    /// The PR is closed: tear the preview down in this run.
    TearDown { merged: bool, reason: String },
    /// The PR's head moved on: this run must not overwrite the newer comment or deployment.
    Stale { head_sha: String, reason: String },
    /// The PR does not exist (404): change nothing; the sweep removes leftovers.
    Missing { reason: String },
}

/// Reads the live PR and decides (see the module docs for where to call it). Errors reading
/// GitHub propagate: a run that cannot reconcile must not build or destroy.
pub async fn reconcile(forge: &dyn Forge, pr: u64, planned_sha: &str) -> anyhow::Result<Decision> {
    let Some(state) = forge.pr_state(pr).await? else {
        return Ok(Decision::Missing {
            reason: format!("pull request #{pr} was not found; nothing was changed"),
        });
    };
    if !state.open {
        let how = if state.merged { "merged" } else { "closed" };
        return Ok(Decision::TearDown {
            merged: state.merged,
            reason: format!(
                "pull request #{pr} was {how} while this run was in progress; tearing the preview down"
            ),
        });
    }
    if !state.head_sha.eq_ignore_ascii_case(planned_sha) {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        return Ok(Decision::Stale {
            head_sha: state.head_sha.clone(),
            reason: format!(
                "commit {} is no longer the head of pull request #{pr} (now {}); a newer run owns the preview, so this run leaves the comment and deployment alone",
                short(planned_sha),
                short(&state.head_sha)
            ),
        });
    }
    Ok(Decision::Proceed)
}

/// Knobs of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// A preview older than this (by `expires_at`, else `created_at + ttl`) is destroyed even if
    /// its PR is open.
    pub ttl: Duration,
    /// A resource of a closed PR younger than this is left alone (a run may still be building
    /// it, or the PR list was read just before the PR opened).
    pub grace_period: Duration,
    /// At most this many deletions per run.
    pub max_deletions: usize,
    pub dry_run: bool,
}

impl SweepOptions {
    /// From the inputs (`ttl`, `grace_period`, `max_deletions`, `dry_run`), with atlas.toml's
    /// `[preview] ttl` when the `ttl` input is not set.
    pub fn from_config(config: &crate::config::Config, settings: &crate::config::Settings) -> Self {
        SweepOptions {
            ttl: config.ttl.unwrap_or(settings.preview.ttl),
            grace_period: config.grace_period,
            max_deletions: config.max_deletions,
            dry_run: config.dry_run,
        }
    }
}

/// One resource the sweep looked at.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SweepItem {
    /// `app` or `database-branch`.
    pub kind: &'static str,
    pub name: String,
    pub pr: u64,
    pub reason: String,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub dry_run: bool,
    /// `None` when GitHub could not be read (then nothing was deleted).
    pub open_prs: Option<Vec<u64>>,
    /// Why nothing was deleted, or why a provider could not be listed.
    pub errors: Vec<String>,
    /// Destroyed (or, in a dry run, would be destroyed).
    pub deleted: Vec<SweepItem>,
    /// Due, but over the per-run cap: left for the next run.
    pub deferred: Vec<SweepItem>,
    /// Kept, with the reason.
    pub kept: Vec<SweepItem>,
    /// Deletions that failed: the resource survived.
    pub failed: Vec<(SweepItem, String)>,
}

impl SweepReport {
    /// True when the sweep did everything it should (no errors, no failed deletion).
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.failed.is_empty()
    }

    /// A markdown report for the job summary (resource names are Atlas's own, shown in code
    /// spans; reasons and errors are escaped).
    pub fn markdown(&self) -> String {
        use crate::report::escape_markdown as md;
        let mut out = format!(
            "## Atlas sweep{}\n\n",
            if self.dry_run {
                " (dry run: nothing was deleted)"
            } else {
                ""
            }
        );
        for e in &self.errors {
            out.push_str(&format!("> [!CAUTION]\n> {}\n\n", md(e)));
        }
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mut table = |title: &str, items: &mut dyn Iterator<Item = (&SweepItem, String)>| {
            let rows: Vec<String> = items
                .map(|(i, why)| {
                    format!(
                        "| {} | `{}` | #{} | {} |",
                        i.kind,
                        i.name.replace('`', "'"),
                        i.pr,
                        md(&why)
                    )
                })
                .collect();
            if !rows.is_empty() {
                out.push_str(&format!(
                    "### {title}\n\n| Kind | Name | PR | Why |\n| --- | --- | --- | --- |\n{}\n\n",
                    rows.join("\n")
                ));
            }
        };
        table(
            verb,
            &mut self.deleted.iter().map(|i| (i, i.reason.clone())),
        );
        table(
            "failed (still there)",
            &mut self.failed.iter().map(|(i, e)| (i, e.clone())),
        );
        table(
            "left for the next run (cap reached)",
            &mut self.deferred.iter().map(|i| (i, i.reason.clone())),
        );
        table("kept", &mut self.kept.iter().map(|i| (i, i.reason.clone())));
        if self.deleted.is_empty()
            && self.failed.is_empty()
            && self.deferred.is_empty()
            && self.errors.is_empty()
        {
            out.push_str("Nothing to sweep.\n");
        }
        out
    }
}

/// True when `name` ends with the PR number the way `naming` writes it (`<prefix>-pr-12`,
/// `preview/pr-12`, `atlas_pr_12`), before a kept commit's suffix (`preview/pr-12/c-<sha7>`).
fn name_carries_pr(name: &str, pr: u64) -> bool {
    let name = crate::naming::split_commit(name).map_or(name, |(base, _)| base);
    name.ends_with(&format!("pr-{pr}")) || name.ends_with(&format!("pr_{pr}"))
}

fn age(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> Option<Duration> {
    t.map(|t| (now - t).to_std().unwrap_or(Duration::ZERO))
}

/// Why `o` is due for deletion, or why it is kept. `pinned_by`: who pinned its preview (on any
/// of its resources): a pinned preview outlives its TTL, never its PR.
fn judge(
    o: &Owned,
    open: &[u64],
    now: DateTime<Utc>,
    opts: &SweepOptions,
    pinned_by: Option<&str>,
) -> Result<String, String> {
    if o.pr == 0 || !name_carries_pr(&o.name, o.pr) {
        return Err(format!(
            "no PR number in its name matching PR {}: not Atlas's, never touched",
            o.pr
        ));
    }
    if let Some(by) = pinned_by
        && open.contains(&o.pr)
    {
        return Err(format!(
            "PR #{} is open and its preview is {} (kept past its TTL)",
            o.pr,
            crate::contract::pin_phrase(by)
        ));
    }
    let expired = match (o.expires_at, o.created_at) {
        (Some(exp), _) => now >= exp,
        (None, Some(created)) => age(now, Some(created)).is_some_and(|a| a >= opts.ttl),
        (None, None) => false,
    };
    if expired {
        return Ok(format!("its TTL passed (PR #{})", o.pr));
    }
    if open.contains(&o.pr) {
        return Err(format!("PR #{} is open", o.pr));
    }
    match age(now, o.created_at) {
        Some(a) if a < opts.grace_period => Err(format!(
            "PR #{} is not open, but the resource is younger than the grace period ({})",
            o.pr,
            humantime::format_duration(opts.grace_period)
        )),
        _ => Ok(format!("PR #{} is closed", o.pr)),
    }
}

/// Prints a sweep's outcome (a log line per resource, the report in the job summary) and turns
/// a partial sweep into an error (exit 2) that lists what survived. This is what `atlas sweep`
/// and the `schedule` dispatch call after [`sweep`].
pub fn report_to<W: std::io::Write>(
    gha: &mut crate::gha::Gha<W>,
    report: &SweepReport,
) -> anyhow::Result<()> {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for i in &report.deleted {
        gha.info(&format!(
            "sweep: {verb} {} {} ({})",
            i.kind, i.name, i.reason
        ));
    }
    for i in &report.deferred {
        gha.info(&format!(
            "sweep: left for the next run: {} {} ({})",
            i.kind, i.name, i.reason
        ));
    }
    for i in &report.kept {
        gha.info(&format!("sweep: kept {} {} ({})", i.kind, i.name, i.reason));
    }
    gha.append_summary(&report.markdown())?;
    if report.ok() {
        return Ok(());
    }
    let mut problems = report.errors.clone();
    problems.extend(
        report
            .failed
            .iter()
            .map(|(i, e)| format!("{} {} survived: {e}", i.kind, i.name)),
    );
    anyhow::bail!(
        "sweep incomplete: {} (the next scheduled sweep retries)",
        problems.join("; ")
    )
}

/// Sweeps with the forge of `providers`.
pub async fn sweep(providers: &Providers, now: DateTime<Utc>, opts: &SweepOptions) -> SweepReport {
    let open = providers.forge.open_prs().await;
    sweep_with(
        providers.database.as_ref(),
        providers.platform.as_ref(),
        open,
        now,
        opts,
    )
    .await
}

/// The sweep over already-read open PRs (`Err`: GitHub could not be read -> delete nothing).
/// Apps go before database branches of the same PR (the app holds the branch's connection).
pub async fn sweep_with(
    database: &dyn Database,
    platform: &dyn Platform,
    open_prs: anyhow::Result<Vec<u64>>,
    now: DateTime<Utc>,
    opts: &SweepOptions,
) -> SweepReport {
    let mut report = SweepReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let open = match open_prs {
        Ok(o) => o,
        Err(e) => {
            report.errors.push(crate::secret::redact(&format!(
                "cannot read the open pull requests, so nothing was deleted: {e:#}"
            )));
            return report;
        }
    };
    report.open_prs = Some(open.clone());
    let mut candidates: Vec<(SweepItem, u8)> = Vec::new();
    let lists = [
        (
            0u8,
            "app",
            "apps",
            platform.list_apps().await,
            platform.kind(),
        ),
        (
            1u8,
            "database-branch",
            "database branches",
            database.list_branches().await,
            database.kind(),
        ),
    ];
    // A pin recorded on any resource of a PR pins all of them (a pinned Neon branch carries no
    // expiry rather than a pin of its own).
    let pins: Vec<(u64, String)> = lists
        .iter()
        .filter_map(|l| l.3.as_ref().ok())
        .flatten()
        .filter_map(|o| Some((o.pr, o.pinned_by.clone().filter(|p| !p.is_empty())?)))
        .collect();
    let pinned_by = |pr: u64| {
        pins.iter()
            .find(|(p, _)| *p == pr)
            .map(|(_, by)| by.as_str())
    };
    for (order, kind, plural, listed, provider) in lists {
        let owned = match listed {
            Ok(o) => o,
            Err(e) => {
                report.errors.push(crate::secret::redact(&format!(
                    "cannot list the {provider} {plural}, so none of them was swept: {e:#}"
                )));
                continue;
            }
        };
        for o in &owned {
            let mut it = SweepItem {
                kind,
                name: o.name.clone(),
                pr: o.pr,
                reason: String::new(),
            };
            match judge(o, &open, now, opts, pinned_by(o.pr)) {
                Ok(why) => {
                    it.reason = why;
                    candidates.push((it, order));
                }
                Err(why) => {
                    it.reason = why;
                    report.kept.push(it);
                }
            }
        }
    }
    candidates.sort_by_key(|(it, order)| (it.pr, *order));
    for (it, kind) in candidates {
        if report.deleted.len() + report.failed.len() >= opts.max_deletions {
            report.deferred.push(it);
            continue;
        }
        if opts.dry_run {
            report.deleted.push(it);
            continue;
        }
        let r = if kind == 0 {
            platform.destroy(&it.name).await
        } else {
            database.delete_branch(&it.name).await
        };
        match r {
            Ok(Deleted::Removed | Deleted::AlreadyGone) => report.deleted.push(it),
            Err(e) => {
                let msg = crate::secret::redact(&format!("{e:#}"));
                report.failed.push((it, msg));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::PrState;
    use crate::provider::stub::Stub;

    fn now() -> DateTime<Utc> {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn owned(name: &str, pr: u64, created_hours_ago: i64, expires_in_hours: Option<i64>) -> Owned {
        Owned {
            name: name.into(),
            id: format!("id-{name}"),
            pr,
            created_at: Some(now() - chrono::Duration::hours(created_hours_ago)),
            expires_at: expires_in_hours.map(|h| now() + chrono::Duration::hours(h)),
            pinned_by: None,
        }
    }

    fn opts() -> SweepOptions {
        SweepOptions {
            ttl: Duration::from_secs(7 * 24 * 3600),
            grace_period: Duration::from_secs(3600),
            max_deletions: 10,
            dry_run: false,
        }
    }

    fn world() -> (Stub, Stub) {
        let db = Stub::new(
            "fake-db",
            vec![
                owned("preview/pr-1", 1, 48, Some(100)), // open -> kept
                owned("preview/pr-2", 2, 48, Some(100)), // closed -> deleted
                owned("preview/pr-3", 3, 0, Some(100)),  // closed but within grace -> kept
                owned("preview/pr-4", 4, 300, Some(-1)), // open but expired -> deleted
                owned("preview/pr-77", 5, 48, None),     // name does not carry its PR -> kept
            ],
        );
        let apps = Stub::new(
            "fake-platform",
            vec![
                owned("kitchen-abc123-pr-1", 1, 48, None),
                owned("kitchen-abc123-pr-2", 2, 48, None),
                owned("kitchen-abc123-pr-6", 6, 24 * 30, None), // closed and past TTL
            ],
        );
        (db, apps)
    }

    #[tokio::test]
    async fn deletes_closed_and_expired_keeps_the_rest() {
        let (db, apps) = world();
        let r = sweep_with(&db, &apps, Ok(vec![1, 4]), now(), &opts()).await;
        assert!(r.ok(), "{r:?}");
        let mut gone: Vec<String> = db.deleted.lock().unwrap().clone();
        gone.extend(apps.deleted.lock().unwrap().clone());
        gone.sort();
        assert_eq!(
            gone,
            vec![
                "kitchen-abc123-pr-2",
                "kitchen-abc123-pr-6",
                "preview/pr-2",
                "preview/pr-4"
            ]
        );
        let kept: Vec<&str> = r.kept.iter().map(|k| k.name.as_str()).collect();
        assert!(
            kept.contains(&"preview/pr-1")
                && kept.contains(&"preview/pr-3")
                && kept.contains(&"preview/pr-77"),
            "{kept:?}"
        );
        // Apps of a PR go before its branch.
        let order: Vec<&str> = r.deleted.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(order[0], "kitchen-abc123-pr-2");
        assert_eq!(order[1], "preview/pr-2");
    }

    #[tokio::test]
    async fn unreadable_github_deletes_nothing() {
        let (db, apps) = world();
        let r = sweep_with(
            &db,
            &apps,
            Err(anyhow::anyhow!("github: 502")),
            now(),
            &opts(),
        )
        .await;
        assert!(!r.ok());
        assert!(
            r.errors[0].contains("nothing was deleted"),
            "{:?}",
            r.errors
        );
        assert!(db.deleted.lock().unwrap().is_empty());
        assert!(apps.deleted.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn cap_defers_and_dry_run_only_lists() {
        let (db, apps) = world();
        let capped = SweepOptions {
            max_deletions: 3,
            ..opts()
        };
        let r = sweep_with(&db, &apps, Ok(vec![1, 4]), now(), &capped).await;
        assert_eq!(r.deleted.len(), 3);
        assert_eq!(r.deferred.len(), 1);
        let (db, apps) = world();
        let dry = SweepOptions {
            dry_run: true,
            ..opts()
        };
        let r = sweep_with(&db, &apps, Ok(vec![1, 4]), now(), &dry).await;
        assert_eq!(r.deleted.len(), 4);
        assert!(db.deleted.lock().unwrap().is_empty() && apps.deleted.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failed_delete_and_failed_list_are_reported() {
        let (mut db, apps) = world();
        db.fail_delete = Some("preview/pr-2".into());
        let r = sweep_with(&db, &apps, Ok(vec![1, 4]), now(), &opts()).await;
        assert_eq!(r.failed.len(), 1);
        assert!(!r.ok());
        let (mut db, apps) = world();
        db.fail_list = true;
        let r = sweep_with(&db, &apps, Ok(vec![1, 4]), now(), &opts()).await;
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("fake-db database branches")),
            "{:?}",
            r.errors
        );
        assert_eq!(apps.deleted.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn reconcile_decides_from_the_live_pr() {
        let sha = "a".repeat(40);
        let state = |open, head: &str, merged| Stub {
            pr: Some(PrState {
                number: 7,
                open,
                head_sha: head.into(),
                merged,
            }),
            ..Default::default()
        };
        assert_eq!(
            reconcile(&state(true, &sha, false), 7, &sha).await.unwrap(),
            Decision::Proceed
        );
        assert!(matches!(
            reconcile(&state(false, &sha, true), 7, &sha).await.unwrap(),
            Decision::TearDown { merged: true, .. }
        ));
        let d = reconcile(&state(true, &"b".repeat(40), false), 7, &sha)
            .await
            .unwrap();
        assert!(
            matches!(&d, Decision::Stale { head_sha, .. } if head_sha == &"b".repeat(40)),
            "{d:?}"
        );
        assert!(matches!(
            reconcile(&Stub::default(), 7, &sha).await.unwrap(),
            Decision::Missing { .. }
        ));
    }

    #[tokio::test]
    async fn report_lists_and_fails_on_survivors() {
        let (mut db, apps) = world();
        db.fail_delete = Some("preview/pr-2".into());
        let r = sweep_with(&db, &apps, Ok(vec![1, 4]), now(), &opts()).await;
        let md = r.markdown();
        assert!(md.contains("### failed (still there)"), "{md}");
        assert!(
            md.contains("| database-branch | `preview/pr-2` | #2 |"),
            "{md}"
        );
        let mut g = crate::gha::Gha::new(Vec::new(), crate::gha::Files::default(), true);
        let e = report_to(&mut g, &r).unwrap_err().to_string();
        assert!(e.contains("preview/pr-2 survived"), "{e}");
        let log = String::from_utf8(g.into_inner()).unwrap();
        assert!(
            log.contains("sweep: deleted app kitchen-abc123-pr-2"),
            "{log}"
        );
        let (db, apps) = world();
        let r = sweep_with(&db, &apps, Ok(vec![1, 2, 3, 4, 5, 6]), now(), &opts()).await;
        let mut g = crate::gha::Gha::new(Vec::new(), crate::gha::Files::default(), true);
        report_to(&mut g, &r).unwrap();
    }

    /// A pin on the app pins the whole preview (its branch carries no expiry then): kept past
    /// its TTL while the PR is open, destroyed once it closes.
    #[tokio::test]
    async fn a_pinned_preview_outlives_its_ttl_but_not_its_pr() {
        let mut app = owned("kitchen-abc123-pr-4", 4, 300, Some(-5));
        app.pinned_by = Some("octocat".into());
        let mut closed_app = owned("kitchen-abc123-pr-2", 2, 300, Some(-5));
        closed_app.pinned_by = Some("octocat".into());
        let apps = Stub::new("fake-platform", vec![app, closed_app]);
        let db = Stub::new(
            "fake-db",
            vec![
                owned("preview/pr-4", 4, 300, None),
                owned("preview/pr-2", 2, 300, None),
            ],
        );
        let r = sweep_with(&db, &apps, Ok(vec![4]), now(), &opts()).await;
        assert!(r.ok(), "{r:?}");
        let gone: Vec<&str> = r.deleted.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(gone, vec!["kitchen-abc123-pr-2", "preview/pr-2"]);
        assert_eq!(r.kept.len(), 2);
        assert!(
            r.kept
                .iter()
                .all(|k| k.reason.contains("pinned by @octocat")),
            "{:?}",
            r.kept
        );
        // An empty pin value (an unpinned app) is no pin: the TTL applies again.
        let mut unpinned = owned("kitchen-abc123-pr-4", 4, 300, Some(-5));
        unpinned.pinned_by = Some(String::new());
        let apps = Stub::new("fake-platform", vec![unpinned]);
        let r = sweep_with(&Stub::default(), &apps, Ok(vec![4]), now(), &opts()).await;
        assert_eq!(r.deleted.len(), 1, "{r:?}");
    }

    #[test]
    fn names_must_carry_the_pr() {
        assert!(name_carries_pr("kitchen-abc123-pr-12", 12));
        assert!(name_carries_pr("atlas_pr_12", 12));
        assert!(!name_carries_pr("preview/pr-123", 12));
        assert!(!name_carries_pr("production", 12));
        // A kept commit's branch is its preview's.
        assert!(name_carries_pr("preview/pr-12/c-abc1234", 12));
        assert!(name_carries_pr("atlas_pr_12_c_abc1234", 12));
        assert!(!name_carries_pr("preview/pr-123/c-abc1234", 12));
        assert!(!name_carries_pr("preview/pr-12/c-xyz", 12));
    }
}
