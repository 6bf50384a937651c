//! `atlas demo`: the whole preview lifecycle on this machine against the example app
//! (`examples/kitchen`, configured by the repository's `atlas.toml`): build -> start PostgreSQL
//! -> `preview up` (branch, migrations, deploy, smoke, load gate, comment) -> show the comment
//! -> `preview down` -> prove nothing is left (no branch database, no process, no listening
//! port) -> stop PostgreSQL. Each step prints how long it took.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::cli::{DemoArgs, PreviewArgs};
use crate::preview;

fn say(line: &str) {
    eprintln!("{}", crate::secret::redact(line));
}

fn port_closed(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_err()
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let total = Instant::now();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut settings = super::ctx::settings_for_cli(None)?;
    if settings.local.command.is_none() {
        bail!(
            "atlas.toml in {} has no [local] command: run `atlas demo` from the root of the atlas repository",
            std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    // Keep a temporary state dir alive for the whole run (and beyond with --keep).
    let tmp;
    let state_dir: PathBuf = match &args.state_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("atlas-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    settings.local.state_dir = state_dir.clone();
    say(&format!("atlas demo: state in {}", state_dir.display()));

    if let Some(build) = &settings.local.build {
        say(&format!("→ build: {build}"));
        say(
            "  (the first run compiles the example app and its dependencies: about 1-2 minutes \
             on 2 cores; later runs take seconds)",
        );
        let t = Instant::now();
        let status = super::ctx::build(build, "build command").await?;
        if !status.success() {
            bail!(
                "the build command `{build}` failed ({status}); fix it and run `atlas demo` again"
            );
        }
        timings.push(("build example app".into(), t.elapsed()));
        say(&format!("  ✓ built ({} ms)", t.elapsed().as_millis()));
    }

    say("→ local PostgreSQL");
    let t = Instant::now();
    let mut log = say;
    let setup = super::providers::local_providers(&settings, &state_dir, false, &mut log).await?;
    timings.push(("start PostgreSQL + migrate parent".into(), t.elapsed()));
    say(&format!(
        "  ✓ PostgreSQL on 127.0.0.1:{} ({} ms)",
        setup.pg.port(),
        t.elapsed().as_millis()
    ));

    let pr = 1;
    let pargs = PreviewArgs {
        pr: Some(pr),
        local: true,
        sha: None,
        branch: None,
    };
    let req = preview_request(&pargs, pr);
    let mut opts = super::preview::local_options(&settings, &setup.state_dir)?;
    opts.preview_secrets
        .entry("KITCHEN_API_KEY".into())
        .or_insert_with(|| crate::secret::Secret::new(format!("demo-key-{}", std::process::id())));

    say(&format!("→ preview up (PR #{pr})"));
    let t = Instant::now();
    let outcome = match preview::up(&setup.providers, &settings, &req, &opts, &mut log).await {
        Ok(o) => o,
        Err(e) => {
            let _ = setup.pg.stop().await;
            return Err(
                e.context("the demo's preview up failed (everything it made was torn down)")
            );
        }
    };
    timings.push(("preview up".into(), t.elapsed()));
    say(&format!("  ✓ preview up ({} ms)", t.elapsed().as_millis()));
    println!("{}", outcome.comment_body);
    say(&format!("(comment written to {})", outcome.comment.url));

    if args.keep {
        say(&format!(
            "--keep: the preview runs at {}; destroy it with `atlas preview down --local --pr {pr}` and state_dir = {:?}",
            outcome.app.url,
            state_dir.display()
        ));
        return Ok(());
    }

    say(&format!("→ preview down (PR #{pr})"));
    let t = Instant::now();
    let down = preview::down(&setup.providers, &settings, &req, &opts, &mut log).await?;
    timings.push(("preview down".into(), t.elapsed()));
    say(&format!(
        "  ✓ preview down ({} ms)",
        t.elapsed().as_millis()
    ));
    println!("{}", down.comment_body);

    say("→ proving nothing is left");
    let t = Instant::now();
    let branch = crate::naming::local_database(pr);
    let dbs = setup.pg.databases().await?;
    if dbs.contains(&branch) {
        bail!("database {branch} still exists after down");
    }
    say(&format!("  ✓ no database {branch}"));
    for pid in &outcome.app.instances {
        let pid: i32 = pid.parse().unwrap_or(0);
        // SAFETY: signal 0 only checks for existence.
        if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid) {
            bail!("process {pid} still runs after down");
        }
        say(&format!("  ✓ no process {pid}"));
    }
    let port: u16 = outcome
        .app
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if !port_closed(port) {
        bail!("port {port} still answers after down");
    }
    say(&format!("  ✓ nothing listens on port {port}"));
    timings.push(("verify teardown".into(), t.elapsed()));

    let t = Instant::now();
    let pg_port = setup.pg.port();
    setup.pg.stop().await?;
    if !port_closed(pg_port) {
        bail!("PostgreSQL still listens on port {pg_port}");
    }
    timings.push(("stop PostgreSQL".into(), t.elapsed()));
    say(&format!(
        "  ✓ PostgreSQL stopped ({} ms)",
        t.elapsed().as_millis()
    ));

    say("\ntimings:");
    for (step, d) in &timings {
        say(&format!("  {step:<36} {:>7} ms", d.as_millis()));
    }
    say(&format!(
        "  {:<36} {:>7} ms",
        "total",
        total.elapsed().as_millis()
    ));
    Ok(())
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

fn preview_request(args: &PreviewArgs, pr: u64) -> preview::PreviewRequest {
    super::preview::local_request(args, pr)
}
