//! Active hours, the cost estimate and the estate table on the cloud fakes: the sweep's survey
//! stops the previews' machines outside `[lifecycle] active_hours` (they wake on the first
//! request through Fly's proxy), leaves them alone inside, and its table of live previews adds
//! up; `atlas sweep --json` is the same data.

use atlas::config::{ActiveHours, AutoStop, CostSettings, Settings};
use atlas::estate::{Estate, EstateOptions, survey};
use atlas::naming;
use atlas::provider::github::GithubForge;
use chrono::{DateTime, Utc};

use crate::cloud::{Env, env_with};
use crate::common::fake_github::FakeGithub;

const REPO: &str = "octo-org/kitchen";
const TOKEN: &str = "ghs_fakeTokenValueEstate0123456789";

fn through_proxy(s: &mut Settings, fly: &crate::common::fake_fly::FakeFly) {
    s.fly.preview_url = Some(fly.proxy_preview_url());
    s.fly.auto_stop = AutoStop::Suspend;
}

async fn forge() -> (FakeGithub, GithubForge) {
    crate::common::world::github_forge(REPO, TOKEN, Some("atlas-bot")).await
}

async fn look(
    e: &Env,
    forge: &GithubForge,
    hours: Option<&ActiveHours>,
    prices: &CostSettings,
    now: DateTime<Utc>,
) -> Estate {
    survey(
        &e.db,
        &e.platform,
        forge,
        &EstateOptions {
            now,
            active_hours: hours,
            prices,
            enforce_hours: true,
            dry_run: false,
        },
    )
    .await
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The machines of `app` that run now.
fn running(e: &Env, app: &str) -> usize {
    e.fly
        .app(app)
        .map(|a| a.machines.iter().filter(|m| m.state == "started").count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_week_of_active_hours_stops_outside_and_leaves_inside_alone() {
    let e = env_with(through_proxy).await;
    let (gh, forge) = forge().await;
    let (_, d7) = e.up(7, "aaa111").await.unwrap();
    let (_, d8) = e.up(8, "bbb222").await.unwrap();
    gh.add_pull(7, true, &"a".repeat(40), false);
    gh.add_pull(8, true, &"b".repeat(40), false);
    gh.set_pull_title(7, "Checkout: pay in one click");
    let apps = [d7.app.clone(), d8.app.clone()];
    let hours = ActiveHours::parse("Mon-Fri 07:00-20:00 Europe/Berlin").unwrap();
    let prices = CostSettings::default();

    // Hourly sweeps from Monday 2026-12-07 00:00 UTC to the next Monday: Berlin is on CET
    // (UTC+1), so the window is 06:00-19:00 UTC on weekdays. During the window someone uses
    // preview 7 every hour; at 23:00 UTC on weekdays a late visitor wakes preview 8 too.
    let start = at("2026-12-07T00:00:00Z");
    let mut stops_outside = 0usize;
    let mut sweeps_inside = 0usize;
    let mut totals = Vec::new();
    for h in 0..(7 * 24) {
        let now = start + chrono::Duration::hours(h);
        let inside = hours.contains(now);
        let before = e.fly.core.count("Machines_stop");
        let awake: usize = apps.iter().map(|a| running(&e, a)).sum();
        let est = look(&e, &forge, Some(&hours), &prices, now).await;
        let stopped_now = e.fly.core.count("Machines_stop") - before;
        assert_eq!(est.inside_active_hours, Some(inside), "{now}");
        if inside {
            sweeps_inside += 1;
            assert_eq!(
                stopped_now, 0,
                "nothing is stopped inside the hours ({now})"
            );
            assert!(est.stopped.is_empty(), "{now}: {:?}", est.stopped);
            // Traffic: the request wakes preview 7 through the proxy when it sleeps.
            let r = reqwest::get(format!("{}/healthz", d7.url)).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
        } else {
            // Outside: every machine that was running is stopped, and nothing else.
            assert_eq!(stopped_now, awake, "{now}: {:?}", est.stopped);
            assert_eq!(est.stopped.len(), awake, "{now}");
            stops_outside += stopped_now;
            for a in &apps {
                assert_eq!(running(&e, a), 0, "{a} still runs at {now}");
            }
            assert!(est.previews.iter().all(|r| r.state != "running"), "{now}");
            if now.format("%H").to_string() == "23"
                && !matches!(now.format("%a").to_string().as_str(), "Sat" | "Sun")
            {
                let r = reqwest::get(format!("{}/healthz", d8.url)).await.unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    200,
                    "a stopped preview wakes on demand"
                );
            }
        }
        // The numbers add up on every sweep.
        assert_eq!(est.previews.len(), 2);
        let sum: u64 = est.previews.iter().map(|r| r.cents_per_day).sum();
        assert_eq!(est.total_cents_per_day, sum);
        totals.push(est.total_cents_per_day);
    }
    assert_eq!(sweeps_inside, 5 * 13);
    // Stops: each weekday's first sweep after 19:00 UTC stops preview 7 (used all day), and the
    // sweep after each 23:00 visit stops preview 8 again (at 00:00, Tue..Sat): 5 + 5. Monday
    // 00:00 found both running since their deploy: 2 more.
    assert_eq!(stops_outside, 2 + 5 + 5);
    // The estimate does not move with the hour: the same two previews all week.
    assert!(totals.windows(2).all(|w| w[0] == w[1]), "{totals:?}");
    assert!(e.fly.wakes().len() >= 5 + 5, "{:?}", e.fly.wakes().len());
    e.assert_spec();
}

/// With `[fly] auto_stop = "off"` Fly's proxy never stops a machine again once a request woke
/// it, so a preview woken at night runs until the next scheduled sweep, which stops it again:
/// the sweep's schedule is the worst case. A pinned preview is stopped outside the hours too
/// (the pin is about how long it lives, not whether it sleeps) and wakes on its first request.
#[tokio::test]
async fn with_autostop_off_the_next_sweep_stops_a_preview_woken_at_night_pinned_or_not() {
    let e = env_with(|s, fly| {
        s.fly.preview_url = Some(fly.proxy_preview_url());
        s.fly.auto_stop = AutoStop::Off;
    })
    .await;
    let (gh, forge) = forge().await;
    let (_, d7) = e.up(7, "aaa111").await.unwrap();
    let (_, d8) = e.up(8, "bbb222").await.unwrap();
    gh.add_pull(7, true, &"a".repeat(40), false);
    gh.add_pull(8, true, &"b".repeat(40), false);
    atlas::provider::Platform::set_pin(&e.platform, &d8.app, Some("octocat"))
        .await
        .unwrap();
    let hours = ActiveHours::parse("Mon-Fri 07:00-20:00 Europe/Berlin").unwrap();
    let prices = CostSettings::default();

    // Tuesday 22:00 UTC (23:00 in Berlin): outside. Both are stopped, the pinned one too.
    let night = at("2026-12-08T22:00:00Z");
    let est = look(&e, &forge, Some(&hours), &prices, night).await;
    assert_eq!(est.stopped.len(), 2, "{:?}", est.stopped);
    assert_eq!((running(&e, &d7.app), running(&e, &d8.app)), (0, 0));
    let pinned = est.previews.iter().find(|r| r.pr == 8).unwrap();
    assert_eq!(pinned.pinned_by.as_deref(), Some("octocat"));
    assert_eq!(pinned.state, "stopped: outside hours");

    // A late visitor wakes each; idle, the proxy leaves them running (autostop is off).
    for d in [&d7, &d8] {
        let r = reqwest::get(format!("{}/healthz", d.url)).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "a stopped preview wakes on demand"
        );
        assert_eq!(
            e.fly.go_idle(&d.app),
            0,
            "autostop off: the proxy never stops it"
        );
        assert_eq!(running(&e, &d.app), 1);
    }
    // The next sweep, an hour later, stops both again.
    let est = look(
        &e,
        &forge,
        Some(&hours),
        &prices,
        night + chrono::Duration::hours(1),
    )
    .await;
    assert_eq!(est.stopped.len(), 2, "{:?}", est.stopped);
    assert_eq!((running(&e, &d7.app), running(&e, &d8.app)), (0, 0));

    // Unpinned, its machines keep the key with an empty value: the table says "no".
    atlas::provider::Platform::set_pin(&e.platform, &d8.app, None)
        .await
        .unwrap();
    let est = look(&e, &forge, Some(&hours), &prices, night).await;
    let row = est.previews.iter().find(|r| r.pr == 8).unwrap();
    assert_eq!(row.pinned_by, None);
    assert!(serde_json::to_value(row).unwrap()["pinned_by"].is_null());

    // The comment's clause says what a request outside the hours costs.
    let mut settings = e.settings.clone();
    settings.lifecycle.active_hours = Some(hours.clone());
    let sentence =
        atlas::estate::preview_cost(&e.platform, &e.db, &settings, &d7.app, Some("preview/pr-7"))
            .await
            .unwrap();
    assert!(
        sentence.ends_with("the scheduled sweep stops it (the first request wakes it, and with auto_stop = \"off\" it then runs until the next sweep)"),
        "{sentence}"
    );
    e.assert_spec();
}

#[tokio::test]
async fn the_table_has_every_live_preview_and_its_cost_per_day() {
    let e = env_with(through_proxy).await;
    let (gh, forge) = forge().await;
    e.up(7, "aaa111").await.unwrap();
    e.up(8, "bbb222").await.unwrap();
    gh.add_pull(7, true, &"a".repeat(40), false);
    gh.add_pull(8, true, &"b".repeat(40), false);
    let hostile = "Fix <script>alert(1)</script> @everyone [x](http://evil) | pipe";
    gh.set_pull_title(8, hostile);
    e.neon.set_logical_size("preview/pr-8", 3_000_000_000);
    // W1's pin is recorded on the app's machines as `atlas_pinned_by`.
    let app8 = naming::preview_app(&e.prefix, 8);
    {
        let mut s = e.fly.state.lock().unwrap();
        let m = &mut s.apps.get_mut(&app8).unwrap().machines[0];
        m.config["metadata"]["atlas_pinned_by"] = "octocat".into();
    }
    // Preview 7 sleeps (the proxy found it idle); 8 runs.
    let app7 = naming::preview_app(&e.prefix, 7);
    assert_eq!(e.fly.go_idle(&app7), 1);

    let prices = CostSettings::default();
    let now = Utc::now() + chrono::Duration::hours(5);
    let est = look(&e, &forge, None, &prices, now).await;
    assert!(est.errors.is_empty(), "{:?}", est.errors);
    assert!(
        est.stopped.is_empty(),
        "no active hours: nothing is stopped"
    );
    assert_eq!(est.hours_note, None);
    let r7 = &est.previews[0];
    let r8 = &est.previews[1];
    assert_eq!((r7.pr, r8.pr), (7, 8));
    assert_eq!(r7.title.as_deref(), Some("Pull #7"));
    assert_eq!(r8.title.as_deref(), Some(hostile));
    assert_eq!(
        (r7.state.as_str(), r8.state.as_str()),
        ("sleeping", "running")
    );
    assert_eq!(r7.pinned_by, None);
    assert_eq!(r8.pinned_by.as_deref(), Some("octocat"));
    assert_eq!(r7.app.as_deref(), Some(app7.as_str()));
    assert_eq!(r7.branch.as_deref(), Some("preview/pr-7"));
    assert!(
        r7.age.as_deref().is_some_and(|a| a.starts_with("5h")),
        "{:?}",
        r7.age
    );
    assert!(r7.expires.is_some() && r7.last_activity.is_some());
    // Each row: one shared-cpu-1x 256 MB machine all day + 0.25 CU all day + its storage.
    let machine = 0.00266 * 24.0;
    let compute = 0.25 * 0.14 * 24.0;
    let storage = |bytes: f64| bytes / 1e9 * 0.35 * 24.0 / 730.0;
    for (r, bytes) in [(r7, 8_388_608.0), (r8, 3e9)] {
        assert!((r.cost.machines - machine).abs() < 1e-9, "{:?}", r.cost);
        assert!((r.cost.compute - compute).abs() < 1e-9);
        assert!((r.cost.storage - storage(bytes)).abs() < 1e-9);
        assert_eq!(r.cents_per_day, (r.cost.total * 100.0).round() as u64);
    }
    assert_eq!(r7.cents_per_day, 90);
    assert_eq!(r8.cents_per_day, 94);
    assert_eq!(est.total_cents_per_day, 184);
    assert_eq!(est.total_per_day, "$1.84");

    // The job summary: escaped title, pinned, states, the total; the JSON form is the same data.
    let md = est
        .markdown(&atlas::report::Renderer::new_at(None, now).unwrap())
        .unwrap();
    assert!(
        !md.contains("<script>") && !md.contains("@everyone") && !md.contains("](http"),
        "{md}"
    );
    assert!(
        md.contains("| #8 |") && md.contains("| running | $0.94 |"),
        "{md}"
    );
    assert!(md.contains("| sleeping | $0.90 |"), "{md}");
    assert!(
        md.contains("| **Total** |") && md.contains("**$1.84**"),
        "{md}"
    );
    assert!(md.contains("octocat") && md.contains("| no |"), "{md}");
    let json: serde_json::Value = serde_json::to_value(&est).unwrap();
    assert_eq!(json["total_cents_per_day"], 184);
    assert_eq!(json["previews"][1]["title"], hostile);
    assert_eq!(json["previews"][1]["pinned_by"], "octocat");
    assert_eq!(json["previews"][0]["state"], "sleeping");

    // A preview whose PR closed but is not swept yet still shows (no title), and a price table
    // from atlas.toml changes the figures.
    gh.add_pull(8, false, &"b".repeat(40), false);
    let cheap = Settings::parse("[cost]\nneon_cu_hour = 0.0\n", "atlas.toml").unwrap();
    let est = look(&e, &forge, None, &cheap.cost, now).await;
    assert_eq!(est.previews[1].title, None);
    assert_eq!(est.previews[0].cents_per_day, 6);
    e.assert_spec();
    assert!(gh.violations().is_empty(), "{:?}", gh.violations());
}

#[tokio::test]
async fn a_dry_run_outside_the_hours_lists_and_stops_nothing() {
    let e = env_with(through_proxy).await;
    let (gh, forge) = forge().await;
    let (_, d) = e.up(7, "aaa111").await.unwrap();
    gh.add_pull(7, true, &"a".repeat(40), false);
    let hours = ActiveHours::parse("Mon-Fri 09:00-17:00 America/New_York").unwrap();
    let saturday = at("2026-12-12T15:00:00Z");
    let est = survey(
        &e.db,
        &e.platform,
        &forge,
        &EstateOptions {
            now: saturday,
            active_hours: Some(&hours),
            prices: &CostSettings::default(),
            enforce_hours: true,
            dry_run: true,
        },
    )
    .await;
    assert_eq!(est.stopped.len(), 1, "{:?}", est.stopped);
    assert!(est.stopped[0].starts_with(&d.app));
    assert_eq!(e.fly.core.count("Machines_stop"), 0);
    assert_eq!(running(&e, &d.app), 1);
    assert_eq!(est.previews[0].state, "running (would stop: outside hours)");
    assert_eq!(est.previews[0].machines_running, 1);
    let note = est.hours_note.unwrap();
    assert!(
        note.contains("outside the active hours") && note.contains("would stop 1"),
        "{note}"
    );
    // 40 h a week: the estimate counts 40/7 h a day of running.
    assert!((est.hours_per_day - 40.0 / 7.0).abs() < 1e-9);

    // The comment's lifecycle clause: the same price over the same hours, and what happens
    // outside them.
    let mut settings = e.settings.clone();
    settings.lifecycle.active_hours = Some(hours.clone());
    let sentence =
        atlas::estate::preview_cost(&e.platform, &e.db, &settings, &d.app, Some("preview/pr-7"))
            .await
            .unwrap();
    assert!(
        sentence.starts_with(
            "cost about $0.22/day at most (5.7 h a day running: machines $0.02, Neon compute $0.20"
        ),
        "{sentence}"
    );
    assert!(
        sentence.ends_with("; outside Mon-Fri 09:00-17:00 America/New_York the scheduled sweep stops it (the first request wakes it; idle, it sleeps again)"),
        "{sentence}"
    );
    assert_eq!(
        atlas::estate::preview_cost(&e.platform, &e.db, &settings, "no-such-app", None).await,
        None,
        "a read error drops the sentence, never the preview"
    );
}

#[test]
fn bad_active_hours_and_prices_name_the_key_and_the_line() {
    let e = |t: &str| Settings::parse(t, "atlas.toml").unwrap_err().to_string();
    let m = e(
        "[app]\nport = 8080\n\n[lifecycle]\nactive_hours = \"Mon-Fri 07:00-20:00 Mars/Olympus\"\n",
    );
    assert!(
        m.contains("line 5")
            && m.contains("[lifecycle] active_hours")
            && m.contains("unknown time zone \"Mars/Olympus\""),
        "{m}"
    );
    let m = e("[lifecycle]\nactive_hours = \"weekdays nine to five\"\n");
    assert!(
        m.contains("line 2") && m.contains("[lifecycle] active_hours"),
        "{m}"
    );
    let m = e("[lifecycle]\nactive_hours = 9\n");
    assert!(m.contains("line 2") && m.contains("active_hours"), "{m}");
    let m = e("[lifecycle]\nactive_hour = \"daily 07:00-20:00 UTC\"\n");
    assert!(m.contains("active_hour"), "{m}");
    let m = e("[app]\nport = 8080\n[cost]\nneon_cu_hour = -1.0\n");
    assert!(
        m.contains("line 3") && m.contains("[cost] neon_cu_hour"),
        "{m}"
    );
    let m = e("[cost]\nfly_shared_cpu_hour = \"cheap\"\n");
    assert!(
        m.contains("line 2") && m.contains("fly_shared_cpu_hour"),
        "{m}"
    );
    let ok = Settings::parse(
        "[lifecycle]\nactive_hours = \"Mon-Fri 07:00-20:00 Europe/Berlin\"\n[cost]\nneon_cu_hour = 0.26\n",
        "atlas.toml",
    )
    .unwrap();
    assert_eq!(ok.lifecycle.active_hours.unwrap().zone(), "Europe/Berlin");
    assert_eq!(ok.cost.neon_cu_hour, 0.26);
    assert_eq!(
        ok.cost.fly_shared_cpu_hour,
        CostSettings::default().fly_shared_cpu_hour
    );
}
