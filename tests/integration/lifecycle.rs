//! Lifecycle and cost on the cloud fakes: idle previews sleep (Fly's proxy autostop, Neon's
//! `suspend_timeout_seconds`) and wake on the first request, whose time Atlas measures; the
//! expiry lives on the app and the branch alike, renewed by every push and by `extend`, and the
//! sweep reads that one clock back.

use std::time::Duration;

use atlas::config::{AutoStop, Settings};
use atlas::naming;
use atlas::provider::{Database, Platform};
use atlas::sweep::{SweepOptions, sweep_with};
use chrono::Utc;

use crate::cloud::{Env, env_with};

fn through_proxy(mode: AutoStop) -> impl FnOnce(&mut Settings, &crate::common::fake_fly::FakeFly) {
    move |s, fly| {
        s.fly.preview_url = Some(fly.proxy_preview_url());
        s.fly.auto_stop = mode;
        s.database.suspend_after = Some(Duration::from_secs(600));
    }
}

async fn get(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn an_idle_preview_suspends_and_its_first_request_wakes_it_measured() {
    let e: Env = env_with(through_proxy(AutoStop::Suspend)).await;
    let (b, d) = e.up(7, "aaa111").await.unwrap();
    let app = d.app.clone();
    let m = &e.fly.app(&app).unwrap().machines[0];
    assert_eq!(m.config["services"][0]["autostop"], "suspend");
    assert_eq!(m.config["services"][0]["autostart"], true);
    // Atlas put the machine to sleep once and timed the request that woke it: the fake proxy
    // resumes a suspended machine in 30 ms, so the measure cannot be below that.
    assert_eq!(d.sleep.as_deref(), Some("suspend"));
    let wake = d.wake_ms.expect("the wake-up was measured");
    assert!(wake >= 30, "{wake} ms is faster than the resume itself");
    assert_eq!(e.fly.wakes(), vec![(app.clone(), "suspended".to_string())]);
    assert_eq!(e.fly.service_state(&app).as_deref(), Some("started"));

    // Idle again: the proxy suspends it; the next request wakes it and is served.
    assert_eq!(e.fly.go_idle(&app), 1);
    assert_eq!(e.fly.service_state(&app).as_deref(), Some("suspended"));
    assert_eq!(get(&format!("{}/healthz", d.url)).await, 200);
    assert_eq!(e.fly.service_state(&app).as_deref(), Some("started"));
    assert_eq!(e.fly.wakes().len(), 2);

    // The branch's compute suspends after [database] suspend_after, by Neon's rule.
    let fb = e.neon.branch(&b.name).unwrap();
    assert_eq!(fb.suspend_timeout_seconds, 600);
    assert!(!e.neon.endpoint_suspended(&b.name, Duration::from_secs(599)));
    assert!(e.neon.endpoint_suspended(&b.name, Duration::from_secs(600)));
    e.assert_spec();
}

#[tokio::test]
async fn stop_boots_cold_and_off_never_sleeps() {
    let e = env_with(through_proxy(AutoStop::Stop)).await;
    let (_, d) = e.up(8, "aaa111").await.unwrap();
    assert_eq!(d.sleep.as_deref(), Some("stop"));
    assert!(d.wake_ms.unwrap() >= 120, "{:?}", d.wake_ms);
    assert_eq!(e.fly.wakes(), vec![(d.app.clone(), "stopped".to_string())]);
    assert_eq!(e.fly.go_idle(&d.app), 1);
    assert_eq!(e.fly.service_state(&d.app).as_deref(), Some("stopped"));

    let e = env_with(through_proxy(AutoStop::Off)).await;
    let (_, d) = e.up(9, "aaa111").await.unwrap();
    assert_eq!((d.sleep, d.wake_ms), (None, None));
    let m = &e.fly.app(&d.app).unwrap().machines[0];
    assert_eq!(m.config["services"][0]["autostop"], "off");
    assert_eq!(
        e.fly.go_idle(&d.app),
        0,
        "autostop off: the proxy never stops it"
    );
    assert_eq!(e.fly.service_state(&d.app).as_deref(), Some("started"));
    assert_eq!(
        e.fly.core.count("Machines_suspend") + e.fly.core.count("Machines_stop"),
        0
    );
    e.assert_spec();
}

#[test]
fn auto_stop_and_suspend_after_are_checked_with_the_key_and_line() {
    let s = Settings::parse("", "atlas.toml").unwrap();
    assert_eq!(
        s.fly.auto_stop,
        AutoStop::Suspend,
        "sleeping is the default"
    );
    let e = Settings::parse(
        "[fly]\nregion = \"ams\"\nauto_stop = \"pause\"\n",
        "atlas.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 3") && e.contains("auto_stop"), "{e}");
    let e = Settings::parse("[database]\nsuspend_after = \"10s\"\n", "atlas.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("suspend_after"), "{e}");
    let s = Settings::parse("[database]\nsuspend_after = \"15m\"\n", "atlas.toml").unwrap();
    assert_eq!(s.database.suspend_after, Some(Duration::from_secs(900)));
}

#[tokio::test]
async fn every_push_renews_the_expiry_on_the_app_and_the_branch_and_the_sweep_reads_it() {
    let e = env_with(|_, _| {}).await;
    e.up(7, "aaa111").await.unwrap();
    let app = naming::preview_app(&e.prefix, 7);
    let branch = naming::preview_branch(7);
    let exp = |o: &[atlas::provider::Owned]| o[0].expires_at.expect("an expiry");
    let app_exp = exp(&e.platform.list_apps().await.unwrap());
    let br_exp = exp(&e.db.list_branches().await.unwrap());
    // One clock: the app and the branch expire together (this test's requests compute "now + 3
    // days" a moment apart; `preview up` hands both the same instant).
    assert!(
        (app_exp - br_exp).num_seconds().abs() <= 1,
        "{app_exp} vs {br_exp}"
    );
    assert!(app_exp > Utc::now() + chrono::Duration::days(2));

    // `extend` moves both, without restarting the machine.
    let later = Utc::now() + chrono::Duration::hours(72);
    let later = later - chrono::Duration::nanoseconds(later.timestamp_subsec_nanos() as i64);
    let updates = e.fly.core.count("Machines_update");
    e.platform.set_expiry(&app, later).await.unwrap();
    e.db.set_expiry(&branch, later).await.unwrap();
    assert_eq!(e.fly.core.count("Machines_update"), updates);
    assert_eq!(exp(&e.platform.list_apps().await.unwrap()), later);
    assert_eq!(exp(&e.db.list_branches().await.unwrap()), later);

    // The PR is open: the sweep keeps it until that moment and destroys both right after.
    let opts = SweepOptions {
        ttl: Duration::from_secs(3600),
        grace_period: Duration::from_secs(60),
        max_deletions: 10,
        dry_run: false,
    };
    let before = later - chrono::Duration::minutes(1);
    let r = sweep_with(&e.db, &e.platform, Ok(vec![7]), before, &opts).await;
    assert!(r.deleted.is_empty() && r.kept.len() == 2, "{r:?}");
    let after = later + chrono::Duration::minutes(1);
    let r = sweep_with(&e.db, &e.platform, Ok(vec![7]), after, &opts).await;
    assert_eq!(r.deleted.len(), 2, "{r:?}");
    e.assert_clean();

    // Moving the expiry of something that is not Atlas's is refused.
    assert!(e.platform.set_expiry("someone-else", later).await.is_err());
    assert!(e.db.set_expiry("main", later).await.is_err());
}

#[tokio::test]
async fn extend_moves_the_app_and_the_branch_of_that_pr_only() {
    let e = env_with(|_, _| {}).await;
    e.up(7, "aaa111").await.unwrap();
    e.up(8, "aaa111").await.unwrap();
    let at = Utc::now() + chrono::Duration::hours(72);
    let out = atlas::lifecycle::extend(&e.db, &e.platform, 7, at)
        .await
        .unwrap();
    assert_eq!(
        out.moved,
        vec![
            format!("app {}", naming::preview_app(&e.prefix, 7)),
            "database-branch preview/pr-7".to_string()
        ]
    );
    let secs = |t: chrono::DateTime<Utc>| t.timestamp();
    for o in e.platform.list_apps().await.unwrap() {
        let moved = secs(o.expires_at.unwrap()) == secs(at);
        assert_eq!(moved, o.pr == 7, "{o:?}");
    }
    for o in e.db.list_branches().await.unwrap() {
        let moved = secs(o.expires_at.unwrap()) == secs(at);
        assert_eq!(moved, o.pr == 7, "{o:?}");
    }
    let err = atlas::lifecycle::extend(&e.db, &e.platform, 99, at)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("PR #99 has no preview"), "{err}");
    e.assert_spec();
}
