//! The estate at a glance: every live preview (after the sweep's deletions) with its PR, title,
//! age, last activity, expiry, pin, whether it sleeps or runs and what it costs a day, plus a
//! total; and `[lifecycle] active_hours`: outside them the scheduled sweep stops the previews'
//! machines here (Fly's proxy starts them again on the first request, `autostart`).
//!
//! The sweep's own rules stay in [`crate::sweep`]; this module only reads the providers, stops
//! running machines when the hours say so, and renders `estate.md.j2` (the job summary) or the
//! same data as JSON (`atlas sweep --json`).
//!
//! Totals add up by construction: each row's cost is rounded to the cent first and the total is
//! the sum of the rounded rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{ActiveHours, CostSettings};
use crate::cost::{self, Estimate, Footprint};
use crate::provider::{Database, Forge, MachineInfo, Platform};

/// The metadata key a pin is recorded under (the login that pinned it).
pub const PINNED_KEY: &str = "atlas_pinned_by";

/// What to survey with.
#[derive(Debug, Clone)]
pub struct EstateOptions<'a> {
    pub now: DateTime<Utc>,
    pub active_hours: Option<&'a ActiveHours>,
    pub prices: &'a CostSettings,
    /// Stop running machines when `now` is outside the active hours (the scheduled sweep and
    /// `atlas sweep`); `false`: report only.
    pub enforce_hours: bool,
    /// List what would be stopped; stop nothing.
    pub dry_run: bool,
}

/// One live preview.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub pr: u64,
    /// The PR's title as its author wrote it (escaped where it is rendered); `None` when the PR
    /// is not open or GitHub could not be read.
    pub title: Option<String>,
    pub app: Option<String>,
    pub branch: Option<String>,
    /// RFC 3339.
    pub created: Option<String>,
    /// `3d 4h`.
    pub age: Option<String>,
    /// RFC 3339: the newest update of its machines (every push and every wake-up moves it).
    pub last_activity: Option<String>,
    pub expires: Option<String>,
    /// The login that pinned it.
    pub pinned_by: Option<String>,
    /// `running`, `sleeping`, `stopped: outside hours` (by this sweep), `running (would stop:
    /// outside hours)` (a dry run) or, where the
    /// platform reports no machines, `running (local, does not sleep)`.
    pub state: String,
    pub machines: usize,
    pub machines_running: usize,
    pub cost: Estimate,
    /// The row's cost per day in cents (rounded; the total is their sum).
    pub cents_per_day: u64,
    pub cost_per_day: String,
}

/// The estate after a sweep.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estate {
    /// RFC 3339.
    pub generated_at: String,
    pub dry_run: bool,
    pub active_hours: Option<String>,
    /// `None` when no active hours are set.
    pub inside_active_hours: Option<bool>,
    /// A plain sentence about the active hours (what was done, or why nothing was).
    pub hours_note: Option<String>,
    /// Hours a day a preview may run, used by every estimate.
    pub hours_per_day: f64,
    pub previews: Vec<Row>,
    pub total_cents_per_day: u64,
    pub total_per_day: String,
    /// `app/machine` ids stopped (or, in a dry run, that would be stopped) outside the hours.
    pub stopped: Vec<String>,
    /// What could not be read or done (redacted).
    pub errors: Vec<String>,
}

impl Estate {
    /// The job summary section (`estate.md.j2`).
    pub fn markdown(&self, renderer: &crate::report::Renderer) -> anyhow::Result<String> {
        renderer.render("estate.md.j2", self)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `3d 4h`, `5h 12m`, `40m`.
pub fn short_duration(d: chrono::TimeDelta) -> String {
    let m = d.num_minutes().max(0);
    let (days, hours, mins) = (m / 1440, (m % 1440) / 60, m % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else {
        format!("{mins}m")
    }
}

fn cents(v: f64) -> u64 {
    (v * 100.0).round().max(0.0) as u64
}

fn dollars_of_cents(c: u64) -> String {
    format!("${}.{:02}", c / 100, c % 100)
}

#[derive(Default)]
struct Gathered {
    app: Option<String>,
    branch: Option<String>,
    created: Vec<DateTime<Utc>>,
    activity: Vec<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    machines: Option<Vec<MachineInfo>>,
    storage: Option<u64>,
}

/// Reads every live preview, stops machines outside the active hours (when asked), and
/// prices each. Provider errors are reported in `errors`, never fatal: the summary shows what
/// could be read.
pub async fn survey(
    database: &dyn Database,
    platform: &dyn Platform,
    forge: &dyn Forge,
    opts: &EstateOptions<'_>,
) -> Estate {
    let redact = |s: String| crate::secret::redact(&s);
    let mut errors = Vec::new();
    let mut by_pr: BTreeMap<u64, Gathered> = BTreeMap::new();
    match platform.list_apps().await {
        Ok(apps) => {
            for a in apps {
                let g = by_pr.entry(a.pr).or_default();
                g.app = Some(a.name.clone());
                g.activity.extend(a.created_at);
                g.expires = g.expires.max(a.expires_at);
                match platform.app_machines(&a.name).await {
                    Ok(ms) => g.machines = ms,
                    Err(e) => errors.push(redact(format!(
                        "cannot read the machines of app {}: {e:#}",
                        a.name
                    ))),
                }
            }
        }
        Err(e) => errors.push(redact(format!(
            "cannot list the {} apps: {e:#}",
            platform.kind()
        ))),
    }
    match database.list_branches().await {
        Ok(branches) => {
            for b in branches {
                let g = by_pr.entry(b.pr).or_default();
                // A kept commit's branch is its preview's: named by the preview's, sized with it.
                if crate::naming::split_commit(&b.name).is_none() || g.branch.is_none() {
                    g.branch = Some(b.name.clone());
                }
                g.created.extend(b.created_at);
                g.expires = g.expires.max(b.expires_at);
                match database.storage_bytes(&b.name).await {
                    Ok(s) => {
                        g.storage = match (g.storage, s) {
                            (Some(a), Some(b)) => Some(a + b),
                            (a, b) => a.or(b),
                        }
                    }
                    Err(e) => errors.push(redact(format!(
                        "cannot read the size of branch {}: {e:#}",
                        b.name
                    ))),
                }
            }
        }
        Err(e) => errors.push(redact(format!(
            "cannot list the {} database branches: {e:#}",
            database.kind()
        ))),
    }
    let titles = match forge.open_pr_titles().await {
        Ok(t) => t,
        Err(e) => {
            errors.push(redact(format!("cannot read the PR titles: {e:#}")));
            BTreeMap::new()
        }
    };

    let inside = opts.active_hours.map(|h| h.contains(opts.now));
    let stop_now = opts.enforce_hours && inside == Some(false);
    let hours_per_day = cost::hours_per_day(opts.active_hours);
    let mut stopped = Vec::new();
    let mut local_apps = 0usize;
    let mut previews = Vec::new();
    for (pr, mut g) in by_pr {
        let mut state_word = None;
        if stop_now
            && let (Some(app), Some(ms)) = (&g.app, &g.machines)
            && ms.iter().any(MachineInfo::running)
        {
            if opts.dry_run {
                for m in ms.iter().filter(|m| m.running()) {
                    stopped.push(format!("{app}/{}", m.id));
                }
                state_word = Some("running (would stop: outside hours)");
            } else {
                match platform.stop_machines(app).await {
                    Ok(Some(ids)) => {
                        stopped.extend(ids.iter().map(|id| format!("{app}/{id}")));
                        if let Some(ms) = g.machines.as_mut() {
                            for m in ms.iter_mut().filter(|m| ids.contains(&m.id)) {
                                m.state = "stopped".into();
                            }
                        }
                        state_word = Some("stopped: outside hours");
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(redact(format!(
                        "cannot stop the machines of app {app} outside the active hours: {e:#}"
                    ))),
                }
            }
        }
        if g.app.is_some() && g.machines.is_none() {
            local_apps += 1;
        }
        let ms = g.machines.clone().unwrap_or_default();
        for m in &ms {
            g.created.extend(m.created_at);
            g.activity.extend(m.updated_at);
        }
        let running = ms.iter().filter(|m| m.running()).count();
        let state = match (&g.app, &g.machines) {
            (None, _) => "no app".to_string(),
            (Some(_), None) => "running (local, does not sleep)".to_string(),
            (Some(_), Some(_)) => match state_word {
                Some(w) => w.to_string(),
                None if running > 0 => "running".to_string(),
                None => "sleeping".to_string(),
            },
        };
        let created = g.created.iter().min().copied();
        let footprint = Footprint {
            machines: ms.iter().map(|m| m.size.clone()).collect(),
            database: g.branch.is_some(),
            storage_bytes: g.storage,
        };
        let estimate = cost::estimate(&footprint, hours_per_day, opts.prices);
        let c = cents(estimate.total);
        previews.push(Row {
            pr,
            title: titles.get(&pr).cloned(),
            app: g.app,
            branch: g.branch,
            created: created.map(rfc3339),
            age: created.map(|c| short_duration(opts.now - c)),
            last_activity: g.activity.iter().max().copied().map(rfc3339),
            expires: g.expires.map(rfc3339),
            // An unpinned machine keeps the key with an empty value.
            pinned_by: ms.iter().find_map(|m| {
                m.metadata
                    .get(PINNED_KEY)
                    .filter(|p| !p.is_empty())
                    .cloned()
            }),
            state,
            machines: ms.len(),
            machines_running: running,
            cost: estimate,
            cents_per_day: c,
            cost_per_day: dollars_of_cents(c),
        });
    }
    let hours_note = opts.active_hours.map(|h| {
        let verb = if opts.dry_run { "would stop" } else { "stopped" };
        let mut s = match (inside, stop_now) {
            (Some(true), _) => format!("inside the active hours ({h}): nothing was stopped"),
            (_, true) => format!(
                "outside the active hours ({h}): {verb} {} machine(s); each starts again on its first request",
                stopped.len()
            ),
            _ => format!("outside the active hours ({h}); this run stops nothing"),
        };
        if local_apps > 0 {
            s.push_str(&format!(
                "; the local platform does not stop previews outside the active hours ({local_apps} local preview(s) left running)"
            ));
        }
        s
    });
    let total: u64 = previews.iter().map(|r| r.cents_per_day).sum();
    Estate {
        generated_at: rfc3339(opts.now),
        dry_run: opts.dry_run,
        active_hours: opts.active_hours.map(|h| h.to_string()),
        inside_active_hours: inside,
        hours_note,
        hours_per_day,
        previews,
        total_cents_per_day: total,
        total_per_day: dollars_of_cents(total),
        stopped,
        errors,
    }
}

/// The lifecycle clause's cost sentence for one preview (`up`, after the deploy): its machines
/// as the platform reports them and its branch's size, priced by `[cost]` over the hours it may
/// run. `None` where the platform reports no machines (the local process costs nothing here).
/// Read errors only drop the sentence: a price is never a reason to fail a preview.
pub async fn preview_cost(
    platform: &dyn Platform,
    database: &dyn Database,
    settings: &crate::config::Settings,
    app: &str,
    branch: Option<&str>,
) -> Option<String> {
    let machines = platform.app_machines(app).await.ok().flatten()?;
    let storage_bytes = match branch {
        Some(b) => database.storage_bytes(b).await.ok().flatten(),
        None => None,
    };
    let hours = settings.lifecycle.active_hours.as_ref();
    let e = cost::estimate(
        &Footprint {
            machines: machines.into_iter().map(|m| m.size).collect(),
            database: branch.is_some(),
            storage_bytes,
        },
        cost::hours_per_day(hours),
        &settings.cost,
    );
    let mut s = format!("cost {}", cost::sentence(&e));
    if let Some(h) = hours {
        // Fly's proxy puts a woken machine back to sleep when idle, unless autostop is off:
        // then it runs until the next sweep, whose schedule is the worst case.
        let then = if settings.fly.auto_stop == crate::config::AutoStop::Off {
            ", and with auto_stop = \"off\" it then runs until the next sweep"
        } else {
            "; idle, it sleeps again"
        };
        s.push_str(&format!(
            "; outside {h} the scheduled sweep stops it (the first request wakes it{then})"
        ));
    }
    Some(s)
}

/// The survey the sweep runs after its deletions, with atlas.toml's `[lifecycle]` and
/// `[cost]`: outside the active hours it stops machines (unless `dry_run`).
pub async fn after_sweep(
    providers: &crate::provider::Providers,
    settings: &crate::config::Settings,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Estate {
    survey(
        providers.database.as_ref(),
        providers.platform.as_ref(),
        providers.forge.as_ref(),
        &EstateOptions {
            now,
            active_hours: settings.lifecycle.active_hours.as_ref(),
            prices: &settings.cost,
            enforce_hours: true,
            dry_run,
        },
    )
    .await
}

/// Logs what the survey stopped and what it could not read (warnings: a preview left running
/// costs money but breaks nothing), and appends the table to the job summary.
pub fn report_to<W: std::io::Write>(
    gha: &mut crate::gha::Gha<W>,
    estate: &Estate,
    renderer: &crate::report::Renderer,
) -> anyhow::Result<()> {
    let verb = if estate.dry_run {
        "would stop"
    } else {
        "stopped"
    };
    for m in &estate.stopped {
        gha.info(&format!(
            "sweep: {verb} machine {m} (outside the active hours; it starts again on its first request)"
        ));
    }
    for e in &estate.errors {
        gha.warning("atlas sweep", e);
    }
    gha.info(&format!(
        "sweep: {} live preview(s), about {}/day in all",
        estate.previews.len(),
        estate.total_per_day
    ));
    // A blank line first: the sweep's section may end in a table.
    gha.append_summary(&format!("\n{}", estate.markdown(renderer)?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Owned;
    use crate::provider::stub::Stub;

    fn owned(name: &str) -> Owned {
        Owned {
            name: name.into(),
            id: name.into(),
            pr: 3,
            created_at: Some("2026-01-12T08:00:00Z".parse().unwrap()),
            expires_at: None,
            pinned_by: None,
        }
    }

    /// A local-like world: one app and one branch of PR 3, no machines to report or stop, and
    /// a forge that cannot read the PR titles.
    fn local() -> (Stub, Stub, Stub) {
        let forge = Stub {
            kind: "local",
            open: vec![3],
            titles_offline: true,
            ..Default::default()
        };
        (
            Stub::new("local-postgres", vec![owned("atlas_pr_3")]),
            Stub::new("local-process", vec![owned("kitchen-pr-3")]),
            forge,
        )
    }

    #[tokio::test]
    async fn the_local_platform_says_plainly_that_it_does_not_sleep() {
        let hours = ActiveHours::parse("Mon-Fri 07:00-20:00 UTC").unwrap();
        let prices = CostSettings::default();
        let (database, platform, forge) = local();
        let est = survey(
            &database,
            &platform,
            &forge,
            &EstateOptions {
                now: "2026-01-17T12:00:00Z".parse().unwrap(), // a Saturday
                active_hours: Some(&hours),
                prices: &prices,
                enforce_hours: true,
                dry_run: false,
            },
        )
        .await;
        assert!(est.stopped.is_empty());
        let row = &est.previews[0];
        assert_eq!(row.state, "running (local, does not sleep)");
        assert_eq!(
            (row.app.as_deref(), row.branch.as_deref()),
            (Some("kitchen-pr-3"), Some("atlas_pr_3"))
        );
        assert_eq!(row.age.as_deref(), Some("5d 4h"));
        assert_eq!(row.title, None);
        let note = est.hours_note.unwrap();
        assert!(
            note.contains("the local platform does not stop previews outside the active hours"),
            "{note}"
        );
        assert!(
            est.errors[0].contains("cannot read the PR titles"),
            "{:?}",
            est.errors
        );
        // No machines: only the branch's compute is priced.
        assert_eq!(row.cost.machines, 0.0);
        assert_eq!(est.total_cents_per_day, row.cents_per_day);
    }

    #[test]
    fn durations_and_cents_read_plainly() {
        assert_eq!(short_duration(chrono::TimeDelta::minutes(40)), "40m");
        assert_eq!(
            short_duration(chrono::TimeDelta::minutes(5 * 60 + 12)),
            "5h 12m"
        );
        assert_eq!(
            short_duration(chrono::TimeDelta::minutes(3 * 1440 + 4 * 60 + 59)),
            "3d 4h"
        );
        assert_eq!(short_duration(chrono::TimeDelta::minutes(-5)), "0m");
        assert_eq!(cents(0.904), 90);
        assert_eq!(cents(0.905), 91);
        assert_eq!(dollars_of_cents(1234), "$12.34");
        assert_eq!(dollars_of_cents(7), "$0.07");
    }
}
