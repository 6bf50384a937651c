//! Entry points: `atlas verify` / `atlas release` on the command line (`--local`: processes and
//! PostgreSQL on this machine) and `atlas run` on a push (dispatch, on Fly).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cli::ChainArgs;
use crate::event::{Event, Plan};
use crate::provider::BranchRequest;
use crate::verify::chain::{self, Chain, LoadModuleGate, Mode, Release};
use crate::verify::local::{self, LocalFleet, QaDatabase};
use crate::verify::migrate::{ProviderReleaseDb, PsqlDatabase, ReleaseDatabase};

/// Progress on stderr, redacted; a line the runner would read as a workflow command (`::x::`,
/// e.g. from an app's log in an error) is made inert the way `gha` does it.
fn say(text: &str) {
    for line in crate::secret::redact(text).lines() {
        if line.trim_start().starts_with("::") {
            eprintln!("| {line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// `atlas verify`.
pub async fn cli_verify(args: &ChainArgs, config: Option<&Path>) -> anyhow::Result<()> {
    run_cli(Mode::Verify, args, config).await
}

/// `atlas release`.
pub async fn cli_release(args: &ChainArgs, config: Option<&Path>) -> anyhow::Result<()> {
    run_cli(Mode::Release, args, config).await
}

async fn run_cli(mode: Mode, args: &ChainArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let settings = super::ctx::settings_for_cli(config)?;
    settings.verify.validate()?;
    if !args.local {
        anyhow::bail!(
            "`atlas {}` on Fly runs from the action (`atlas run` on a push); pass --local to run the chain on this machine",
            mode.as_str()
        );
    }
    run_local(mode, args, settings).await
}

fn git_head() -> Option<String> {
    super::preview::git(&["rev-parse", "--short=12", "HEAD"])
}

fn branch_request(settings: &crate::config::Settings, pr: u64, name: &str) -> BranchRequest {
    BranchRequest {
        pr,
        name: name.into(),
        parent: settings.database.parent.clone(),
        schema_only: false,
        migrations_tables: Vec::new(),
        expires_at: None,
        repository: "local/atlas-verify".into(),
        database: settings.database.database.clone(),
        role: settings.database.role.clone(),
        masking: None,
        anonymize_timeout: std::time::Duration::from_secs(60),
        suspend_after: None,
    }
}

/// The local chain: build, start PostgreSQL, boot production at the stable version, run the
/// chain, print and save the report, tear everything down. Prints where the time went.
async fn run_local(
    mode: Mode,
    args: &ChainArgs,
    settings: crate::config::Settings,
) -> anyhow::Result<()> {
    let total = Instant::now();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let version = args
        .sha
        .clone()
        .or_else(git_head)
        .unwrap_or_else(|| "local".into());
    if let Some(build) = &settings.local.build {
        say(&format!("atlas {}: build: {build}", mode.as_str()));
        let t = Instant::now();
        let status = super::ctx::build(build, "[local] build command").await?;
        if !status.success() {
            anyhow::bail!("the [local] build command `{build}` failed ({status})");
        }
        timings.push(("build", t.elapsed()));
    }
    let t = Instant::now();
    let needs_db = settings.database.migrations.is_some() || settings.local.database_url.is_some();
    let mut log = |l: &str| say(&format!("  {l}"));
    let state_dir = settings.local.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let state_dir = state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", state_dir.display()))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let command = settings.local.command.clone().context(
        "[local] command is not set in atlas.toml: it is the shell command that runs the app",
    )?;
    let platform = Box::new(crate::provider::local::process::LocalProcess::new(
        &state_dir, &command, &cwd,
    ));
    let (pg, production_db) = if needs_db {
        let setup =
            super::providers::local_providers(&settings, &state_dir, false, &mut log).await?;
        let url = local::production_url(&settings, &setup.state_dir)?;
        (Some(setup.pg), Some(url))
    } else {
        (None, None)
    };
    // Copies by dump (not TEMPLATE): production's processes keep sessions open on its database.
    let psql = match &production_db {
        Some(url) => Some(std::sync::Arc::new(PsqlDatabase::new(url.clone())?)),
        None => None,
    };
    let qa_db = psql.as_ref().map(|db| QaDatabase {
        database: db.clone(),
        name: "atlas_verify_qa".into(),
        migrations: settings.database.migrations.clone(),
    });
    let prefix = format!(
        "{}-verify",
        crate::naming::prefix(settings.app.name.as_deref(), "local/atlas-verify")
    );
    let fleet = LocalFleet::new(platform, &prefix, &settings, production_db, qa_db);
    timings.push(("postgres", t.elapsed()));

    let forge = crate::provider::local::forge::LocalForge::new(&state_dir, false);
    let chain_run = async {
        if mode == Mode::Release {
            let t = Instant::now();
            let stable = local::stable_version(&state_dir);
            say(&format!(
                "atlas release: booting {} local production instance(s) at {stable}",
                settings.verify.machines
            ));
            fleet
                .boot_production(&stable, settings.verify.machines)
                .await?;
            timings.push(("boot production", t.elapsed()));
        }
        // Locally the history branch is a directory under the state dir.
        let load = LoadModuleGate::from_settings(&settings).with_history(
            Some(&forge),
            &version,
            mode == Mode::Verify,
            None,
        );
        let env_source = |k: &str| std::env::var(k).ok();
        let progress = |l: &str| say(l);
        let c = Chain {
            settings: &settings,
            fleet: &fleet,
            database: psql.as_deref().map(|d| d as &dyn ReleaseDatabase),
            load: &load,
            // deployment records for `qa` and `production` as files in <state_dir>/forge
            forge: Some(&forge),
            env_source: &env_source,
            progress: &progress,
        };
        let t = Instant::now();
        let report = chain::run(
            &c,
            &Release {
                mode,
                version: version.clone(),
                sha: version.clone(),
            },
        )
        .await;
        timings.push(("chain", t.elapsed()));
        anyhow::Ok(report)
    };
    // Ctrl-C or SIGTERM stops the chain but not the teardown: the processes run in their own
    // process groups and would outlive atlas.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install a SIGTERM handler")?;
    let outcome = tokio::select! {
        r = chain_run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C); local processes and databases were torn down")),
        _ = term.recv() => Err(anyhow::anyhow!("interrupted (SIGTERM); local processes and databases were torn down")),
    };

    let t = Instant::now();
    let survivors = fleet.teardown().await;
    if let Some(pg) = &pg
        && let Err(e) = pg.stop().await
    {
        say(&format!(
            "atlas: cannot stop the local PostgreSQL cluster: {e:#}"
        ));
    }
    timings.push(("teardown", t.elapsed()));
    let report = outcome?;
    for (stage, ms) in report.stages.iter().map(|s| (&s.name, s.duration_ms)) {
        say(&format!("  {stage}: {ms} ms"));
    }
    let renderer = crate::report::Renderer::new(settings.templates.dir.as_deref())?;
    let md = crate::verify::render(&renderer, &report)?;
    let dir = state_dir.join("verify");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), &md)
        .with_context(|| format!("cannot write {}", dir.join("report.md").display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .with_context(|| format!("cannot write {}", dir.join("report.json").display()))?;
    forge.append_summary(&md)?;
    println!("{md}");
    let mut line = format!(
        "atlas {}: {} in {} ms (",
        mode.as_str(),
        report.verdict,
        total.elapsed().as_millis()
    );
    line.push_str(
        &timings
            .iter()
            .map(|(k, d)| format!("{k} {} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line.push(')');
    say(&line);
    if !survivors.is_empty() {
        anyhow::bail!(
            "the local chain finished but these survived teardown: {}",
            survivors.join("; ")
        );
    }
    if mode == Mode::Release && report.failed_stage.is_none() {
        local::record_stable(&state_dir, &version)?;
    }
    report.result()
}

/// `atlas run` for verify / release on GitHub Actions: the chain on Fly (QA and production apps
/// from `[verify]`, the new image from the `image` input), the rehearsal on a Neon branch of the
/// parent, the production database URL from the variable named by `[verify]
/// production_database_env`. The report goes to the job summary and the outputs `verdict`,
/// `failed_stage` and `report`.
pub async fn dispatch(
    ctx: &mut super::ctx::Ctx,
    _event: &Event,
    plan: &Plan,
) -> anyhow::Result<()> {
    use crate::event::CommandKind;
    let mode = if plan.command == CommandKind::Release {
        Mode::Release
    } else {
        Mode::Verify
    };
    // `Ctx::load` already applied the `baseline` / `regression_threshold` inputs.
    let settings = ctx.settings.clone();
    settings.verify.validate()?;
    let image = ctx
        .config
        .image
        .clone()
        .ok_or(crate::config::InputError::Missing {
            input: "image",
            why: " (the image to verify or release, built by an earlier step)".into(),
        })?;
    let repository = ctx
        .github
        .repository
        .clone()
        .context("GITHUB_REPOSITORY is not set: run atlas on GitHub Actions or use --local")?;
    let prefix = crate::naming::prefix(settings.app.name.as_deref(), &repository);
    let fleet =
        crate::verify::fly::FlyFleet::new(&ctx.config.fly, &settings, &prefix, ctx.retry.clone())?;
    let release_db = if mode == Mode::Release && settings.database.migrations.is_some() {
        let var = &settings.verify.production_database_env;
        let url = std::env::var(var).ok().filter(|v| !v.is_empty()).with_context(|| {
            format!(
                "[database] migrations is set but ${var} is empty: pass the production database URL in that variable (a secret), or change [verify] production_database_env"
            )
        })?;
        let url = crate::secret::Secret::new(url);
        ctx.gha.mask(url.expose());
        let neon = super::providers::neon(ctx, &ctx.config, &repository)?;
        let mut req = branch_request(&settings, 0, &settings.verify.rehearsal_branch);
        req.repository = repository.clone();
        Some(ProviderReleaseDb::new(Box::new(neon), req, url))
    } else {
        None
    };
    let env_source = |k: &str| std::env::var(k).ok();
    let progress = |l: &str| say(l);
    // Deployment statuses for `qa` / `production` go to GitHub when a token is given.
    let forge = match &ctx.config.github_token {
        Some(_) => Some(super::providers::forge(ctx)?),
        None => None,
    };
    // The dashboard redrawn with the history is also written into the workspace, where the
    // workflow's next step uploads it as an artifact (output `dashboard_path`, relative to the
    // workspace: the container's mount point is not the runner's path).
    let dashboard_file = ctx
        .github
        .workspace
        .as_ref()
        .filter(|_| mode == Mode::Verify)
        .map(|w| w.join(DASHBOARD_ARTIFACT));
    if let Some(f) = &dashboard_file {
        let _ = std::fs::remove_file(f);
    }
    // verify runs on a push to the default branch: its run joins the history; a release reads.
    let load = LoadModuleGate::from_settings(&settings)
        .with_history(
            forge.as_ref().map(|f| f as &dyn crate::provider::Forge),
            &plan.sha,
            mode == Mode::Verify,
            pages_url(&ctx.github, &settings.baseline, &repository),
        )
        .with_webhook(ctx.config.alert_webhook.clone(), &repository)
        .with_dashboard_file(dashboard_file.clone());
    let c = Chain {
        settings: &settings,
        fleet: &fleet,
        database: release_db.as_ref().map(|d| d as &dyn ReleaseDatabase),
        load: &load,
        forge: forge.as_ref().map(|f| f as &dyn crate::provider::Forge),
        env_source: &env_source,
        progress: &progress,
    };
    let report = chain::run(
        &c,
        &Release {
            mode,
            version: image,
            sha: plan.sha.clone(),
        },
    )
    .await;
    let renderer = crate::report::Renderer::new(
        crate::report::override_dir(
            ctx.config.template_dir.as_ref(),
            settings.templates.dir.as_ref(),
        )
        .as_deref(),
    )?;
    let md = crate::verify::render(&renderer, &report)?;
    ctx.gha.append_summary(&md)?;
    ctx.gha.set_output("verdict", &report.verdict)?;
    ctx.gha
        .set_output("failed_stage", report.failed_stage.as_deref().unwrap_or(""))?;
    ctx.gha.set_output("commit_sha", &plan.sha)?;
    let drawn = dashboard_file.as_ref().is_some_and(|f| f.is_file());
    ctx.gha.set_output(
        "dashboard_path",
        if drawn { DASHBOARD_ARTIFACT } else { "" },
    )?;
    report.result()
}

/// The dashboard file verify writes for the workflow's artifact, relative to the workspace.
pub const DASHBOARD_ARTIFACT: &str = "atlas-dashboard/index.html";

/// Where the history branch's dashboard is served, for links: `[baseline] pages_url` when set
/// (`""`: no link), else GitHub Pages of `repository` on the GitHub this run is on.
pub(crate) fn pages_url(
    github: &crate::github_env::GithubEnv,
    gate: &crate::config::settings::GateSettings,
    repository: &str,
) -> Option<String> {
    match gate.pages_url.as_deref().map(str::trim) {
        Some("") => None,
        Some(u) => Some(u.to_string()),
        None => github.pages_url(repository),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::github_env::GithubEnv;

    #[test]
    fn the_dashboard_link_is_the_setting_else_the_pages_of_this_github() {
        let ghes = GithubEnv::from_vars([(
            "GITHUB_SERVER_URL".to_string(),
            "https://github.acme.example".to_string(),
        )]);
        let parse = |t: &str| Settings::parse(t, "atlas.toml");
        let s = parse("").unwrap();
        assert_eq!(
            super::pages_url(&ghes, &s.baseline, "web/kitchen").as_deref(),
            Some("https://pages.github.acme.example/web/kitchen/")
        );
        // An instance without subdomain isolation serves Pages under /pages/: the setting says so.
        let s =
            parse("[baseline]\npages_url = \"https://github.acme.example/pages/web/kitchen/\"\n")
                .unwrap();
        assert_eq!(
            super::pages_url(&ghes, &s.baseline, "web/kitchen").as_deref(),
            Some("https://github.acme.example/pages/web/kitchen/")
        );
        let s = parse("[baseline]\npages_url = \"\"\n").unwrap();
        assert_eq!(super::pages_url(&ghes, &s.baseline, "web/kitchen"), None);
        let e = parse("[baseline]\npages_url = \"pages.acme.example/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[baseline] pages_url") && e.contains("line 2"),
            "{e}"
        );
    }
}
