//! `[preview] max_previews` and `quota_policy`: how many previews a repository may
//! have at once, and what a NEW preview does at the cap. A push to an existing preview is never
//! subject to the cap. Pure decisions over the live set ([`previews`] groups what the providers
//! list), so the policy is tested without a provider; `preview::up` applies them.
//!
//! ## Race safety: check, create, check again
//! Two `up`s of two new PRs can run at once (GitHub runs workflows of different PRs in
//! parallel), and there is no lock shared by GitHub, Neon and Fly. So each run:
//! 1. **before building** ([`before`]) counts the live previews other than its own: below the
//!    cap it builds; at the cap, `refuse` stops here (nothing created) and `evict-oldest` tears
//!    down the least recently active unpinned preview first;
//! 2. **after creating its resources** ([`after`]) lists the live set again and, if the set is
//!    above the cap, applies a rule every run computes alike from the same listing: with
//!    `refuse` the previews born last (then the higher PR) are over the cap, and a run that
//!    finds itself among them undoes itself (and says so); with `evict-oldest` the least
//!    recently active unpinned previews (then the lower PR) go, and a run that finds itself
//!    among them undoes itself, else it evicts them (two runs that evict the same preview both
//!    succeed: a delete is idempotent).
//!
//! Why two runs cannot both end above the cap: each run's second listing happens after its
//! own resources exist. Of two concurrent runs, the one whose second listing comes later sees
//! the other's resources (they were created before the earlier listing), so it sees the set
//! above the cap and acts; if both listings see both, both compute the same loser, and only
//! the loser undoes itself or only the same victims go. The window is bounded by one run's
//! own build; a third run arriving meanwhile follows the same rule.
//!
//! Known limit: "born" is the oldest timestamp a provider reports for the preview's resources
//! (the Neon branch's creation; without a database branch, the app's last update), so a
//! preview without a branch that is pushed at the very moment a new one is created can be
//! taken for the newer one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::QuotaPolicy;
use crate::provider::Owned;

/// One live preview: all resources of one PR.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    pub pr: u64,
    /// The oldest timestamp of its resources (see the module's known limit).
    pub born: Option<DateTime<Utc>>,
    /// The last activity: the newest `expires - ttl` (every push and `extend` renew the expiry),
    /// else the newest timestamp of its resources.
    pub last_active: Option<DateTime<Utc>>,
    /// Who pinned it (any of its resources recording a pin pins the preview).
    pub pinned_by: Option<String>,
}

/// Groups the listed apps and branches by PR (sorted by PR).
pub fn previews(apps: &[Owned], branches: &[Owned], ttl: Duration) -> Vec<Live> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
    let mut out: Vec<Live> = Vec::new();
    for o in apps.iter().chain(branches) {
        if o.pr == 0 {
            continue;
        }
        let active = o.expires_at.map(|e| e - ttl).or(o.created_at);
        let i = match out.iter().position(|l| l.pr == o.pr) {
            Some(i) => i,
            None => {
                out.push(Live {
                    pr: o.pr,
                    born: None,
                    last_active: None,
                    pinned_by: None,
                });
                out.len() - 1
            }
        };
        let l = &mut out[i];
        l.born = min_opt(l.born, o.created_at);
        l.last_active = l.last_active.max(active);
        if l.pinned_by.is_none() {
            l.pinned_by = o.pinned_by.clone().filter(|p| !p.is_empty());
        }
    }
    out.sort_by_key(|l| l.pr);
    out
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the cap lets a run do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Admission {
    /// Build (or keep what was built).
    Admit,
    /// Tear these PRs' previews down first (then build, or keep what was built).
    Evict { prs: Vec<u64>, reason: String },
    /// Do not build (or undo what this run built), for this reason.
    Refuse { reason: String },
}

/// The unpinned previews in eviction order: least recently active first, then the lower PR.
fn eviction_order(live: &[Live]) -> Vec<&Live> {
    let mut c: Vec<&Live> = live.iter().filter(|l| l.pinned_by.is_none()).collect();
    // `None` (no timestamp at all) sorts first: nothing says it was ever active.
    c.sort_by_key(|l| (l.last_active, l.pr));
    c
}

fn evict_reason(cap: u32, pr: u64) -> String {
    format!(
        "the repository reached max_previews = {cap} and quota_policy is evict-oldest: this was the least recently active unpinned preview, torn down to make room for PR #{pr}. A push to this pull request brings it back"
    )
}

fn refuse_reason(cap: u32, policy: QuotaPolicy, pinned_full: bool) -> String {
    if policy == QuotaPolicy::EvictOldest && pinned_full {
        format!(
            "the repository has max_previews = {cap} live previews and every other one is pinned, so none can be evicted: no preview was built. Unpin or close one, then push again"
        )
    } else {
        format!(
            "the repository has max_previews = {cap} live previews and quota_policy is refuse: no preview was built. Close a pull request with a preview (or raise max_previews), then push again"
        )
    }
}

/// Before building the preview of `pr`: a PR already in `live` is a push to an existing
/// preview and is always admitted.
pub fn before(live: &[Live], pr: u64, cap: Option<u32>, policy: QuotaPolicy) -> Admission {
    let Some(cap) = cap else {
        return Admission::Admit;
    };
    if live.iter().any(|l| l.pr == pr) {
        return Admission::Admit;
    }
    let others = live.len();
    if others < cap as usize {
        return Admission::Admit;
    }
    let excess = others + 1 - cap as usize;
    match policy {
        QuotaPolicy::Refuse => Admission::Refuse {
            reason: refuse_reason(cap, policy, false),
        },
        QuotaPolicy::EvictOldest => {
            let order = eviction_order(live);
            if order.len() < excess {
                return Admission::Refuse {
                    reason: refuse_reason(cap, policy, true),
                };
            }
            Admission::Evict {
                prs: order.iter().take(excess).map(|l| l.pr).collect(),
                reason: evict_reason(cap, pr),
            }
        }
    }
}

/// After this run created the preview of `pr` (which `live`, listed again, includes): the
/// deterministic rule of the module docs.
pub fn after(live: &[Live], pr: u64, cap: Option<u32>, policy: QuotaPolicy) -> Admission {
    let Some(cap) = cap else {
        return Admission::Admit;
    };
    let cap_n = cap as usize;
    if live.len() <= cap_n {
        return Admission::Admit;
    }
    let excess = live.len() - cap_n;
    match policy {
        QuotaPolicy::Refuse => {
            let mut order: Vec<&Live> = live.iter().collect();
            // Born first keeps its place; `None` (unknown) counts as old.
            order.sort_by_key(|l| (l.born, l.pr));
            if order[cap_n..].iter().any(|l| l.pr == pr) {
                Admission::Refuse {
                    reason: format!(
                        "{} (another preview was created at the same time and keeps its place)",
                        refuse_reason(cap, policy, false)
                    ),
                }
            } else {
                Admission::Admit
            }
        }
        QuotaPolicy::EvictOldest => {
            let victims: Vec<u64> = eviction_order(live)
                .iter()
                .take(excess)
                .map(|l| l.pr)
                .collect();
            if victims.contains(&pr) || victims.len() < excess {
                Admission::Refuse {
                    reason: refuse_reason(cap, policy, true),
                }
            } else {
                Admission::Evict {
                    prs: victims,
                    reason: evict_reason(cap, pr),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> Option<DateTime<Utc>> {
        Some("2026-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::hours(h))
    }

    fn live(pr: u64, born: i64, active: i64, pinned: bool) -> Live {
        Live {
            pr,
            born: t(born),
            last_active: t(active),
            pinned_by: pinned.then(|| "octocat".to_string()),
        }
    }

    const EVICT: QuotaPolicy = QuotaPolicy::EvictOldest;
    const REFUSE: QuotaPolicy = QuotaPolicy::Refuse;

    #[test]
    fn no_cap_or_an_existing_preview_is_always_admitted() {
        let l = vec![live(1, 0, 0, false), live(2, 0, 0, false)];
        assert_eq!(before(&l, 3, None, REFUSE), Admission::Admit);
        assert_eq!(before(&l, 2, Some(1), REFUSE), Admission::Admit);
        assert_eq!(before(&l, 3, Some(3), REFUSE), Admission::Admit);
        assert_eq!(after(&l, 2, Some(2), REFUSE), Admission::Admit);
    }

    #[test]
    fn at_the_cap_refuse_refuses_and_evict_takes_the_least_recently_active_unpinned() {
        // PR 1 is the least recently active but pinned; PR 3 is next.
        let l = vec![
            live(1, 0, 1, true),
            live(2, 1, 30, false),
            live(3, 2, 10, false),
        ];
        assert!(matches!(
            before(&l, 9, Some(3), REFUSE),
            Admission::Refuse { reason } if reason.contains("quota_policy is refuse")
        ));
        match before(&l, 9, Some(3), EVICT) {
            Admission::Evict { prs, reason } => {
                assert_eq!(prs, vec![3]);
                assert!(
                    reason.contains("A push to this pull request brings it back"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Above the cap (lowered since), as many go as needed to make room.
        assert!(
            matches!(before(&l, 9, Some(2), EVICT), Admission::Evict { prs, .. } if prs == vec![3, 2])
        );
        // Everything else pinned: nothing to evict, refused with that reason.
        let pinned = vec![live(1, 0, 1, true), live(2, 0, 1, true)];
        assert!(matches!(
            before(&pinned, 9, Some(2), EVICT),
            Admission::Refuse { reason } if reason.contains("every other one is pinned")
        ));
        // Equal activity: the lower PR goes first (every run computes the same victim).
        let tie = vec![live(5, 0, 4, false), live(4, 0, 4, false)];
        assert!(
            matches!(before(&tie, 9, Some(2), EVICT), Admission::Evict { prs, .. } if prs == vec![4])
        );
    }

    /// Two runs (PRs 10 and 11) at cap-1 see each other only in their second listing: exactly
    /// one keeps its preview under `refuse`, and under `evict-oldest` both evict the same one.
    #[test]
    fn two_concurrent_runs_at_cap_minus_one_end_at_the_cap() {
        let old = vec![live(1, 0, 5, false), live(2, 1, 6, false)];
        for policy in [REFUSE, EVICT] {
            // Both first listings: two previews, cap 3 -> both build.
            assert_eq!(before(&old, 10, Some(3), policy), Admission::Admit);
            assert_eq!(before(&old, 11, Some(3), policy), Admission::Admit);
            // Both second listings see both (born 50 and 51, the same activity).
            let mut both = old.clone();
            both.push(live(10, 50, 50, false));
            both.push(live(11, 51, 50, false));
            let a = after(&both, 10, Some(3), policy);
            let b = after(&both, 11, Some(3), policy);
            let kept = |d: &Admission| !matches!(d, Admission::Refuse { .. });
            match policy {
                QuotaPolicy::Refuse => {
                    // The one born last undoes itself.
                    assert_eq!((kept(&a), kept(&b)), (true, false), "{a:?} {b:?}");
                }
                QuotaPolicy::EvictOldest => {
                    // Both runs pick the same victim.
                    assert!(
                        matches!(&a, Admission::Evict { prs, .. } if prs == &vec![1]),
                        "{a:?}"
                    );
                    assert!(
                        matches!(&b, Admission::Evict { prs, .. } if prs == &vec![1]),
                        "{b:?}"
                    );
                }
            }
            // Run 10 listed before 11 existed: it keeps; 11 sees both and acts alone.
            let mut first = old.clone();
            first.push(live(10, 50, 50, false));
            assert_eq!(after(&first, 10, Some(3), policy), Admission::Admit);
        }
        // All others pinned, two new ones racing for the last slot: the less recently active
        // new one undoes itself, the other stays (the lower PR on a tie).
        let pinned = vec![live(1, 0, 0, true)];
        let mut both = pinned.clone();
        both.push(live(10, 50, 50, false));
        both.push(live(11, 51, 50, false));
        let a = after(&both, 10, Some(2), EVICT);
        let b = after(&both, 11, Some(2), EVICT);
        assert!(matches!(a, Admission::Refuse { .. }), "{a:?}");
        assert!(
            matches!(&b, Admission::Evict { prs, .. } if prs == &vec![10]),
            "{b:?}"
        );
    }

    #[test]
    fn previews_group_apps_and_branches_by_pr() {
        let ttl = Duration::from_secs(72 * 3600);
        let o = |name: &str, pr, created: i64, expires: Option<i64>, pin: Option<&str>| Owned {
            name: name.into(),
            id: name.into(),
            pr,
            created_at: t(created),
            expires_at: expires.and_then(t),
            pinned_by: pin.map(str::to_string),
        };
        let apps = vec![
            o("a-pr-1", 1, 40, Some(100), Some("octocat")),
            o("a-pr-2", 2, 5, Some(80), Some("")),
        ];
        let branches = vec![
            o("preview/pr-1", 1, 2, None, None),
            o("preview/pr-2", 2, 3, Some(80), None),
        ];
        let l = previews(&apps, &branches, ttl);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].born, t(2));
        assert_eq!(l[0].last_active, t(100 - 72));
        assert_eq!(l[0].pinned_by.as_deref(), Some("octocat"));
        assert_eq!(l[1].pinned_by, None, "an empty pin is no pin");
        assert_eq!(l[1].last_active, t(8));
    }

    #[test]
    fn the_keys_parse_and_bad_values_name_the_key_and_line() {
        use crate::config::Settings;
        let s = Settings::parse(
            "[preview]\nmax_previews = 5\nquota_policy = \"refuse\"\n",
            "atlas.toml",
        )
        .unwrap();
        assert_eq!(s.preview.max_previews, Some(5));
        assert_eq!(s.preview.quota_policy, QuotaPolicy::Refuse);
        let d = Settings::parse("", "atlas.toml").unwrap();
        assert_eq!(
            (d.preview.max_previews, d.preview.quota_policy),
            (None, EVICT)
        );
        for bad in ["0", "-3"] {
            let e = Settings::parse(
                &format!("[preview]\nttl = \"3d\"\nmax_previews = {bad}\n"),
                "atlas.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("line 3") && e.contains("max_previews"), "{e}");
            assert!(e.contains("positive integer"), "{e}");
        }
        let e = Settings::parse("[preview]\nquota_policy = \"lru\"\n", "atlas.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("quota_policy"), "{e}");
        let e = Settings::parse("[preview]\nmax_previews = \"many\"\n", "atlas.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("max_previews"), "{e}");
    }
}
