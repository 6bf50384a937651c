//! `atlas preview up|down|link --local`: the local preview flows on this machine.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, anyhow, bail};

use super::providers::{LocalSetup, gate_secret, local_providers};
use crate::cli::{PreviewArgs, PreviewCommand};
use crate::config::Settings;
use crate::preview::{PreviewRequest, UpOptions, down, up};
use crate::provider::local::forge::LocalForge;
use crate::secret;

/// `atlas preview link --pr N [--ttl 24h] [--local]`: prints a signed link to the PR's preview
/// (the local one with `--local`, else the Fly one) and nothing else; the key never appears.
async fn link(args: &crate::cli::LinkArgs, config: Option<&Path>) -> anyhow::Result<()> {
    if args.local {
        let settings = super::ctx::settings_for_cli(config)?;
        let state_dir = settings.local.state_dir.clone();
        let opts = local_options(&settings, &state_dir)?;
        let app = crate::naming::preview_app(&opts.prefix, args.pr);
        println!(
            "{}",
            crate::gate::local::local_link(&state_dir, &app, args.ttl, gate_secret())?
        );
        return Ok(());
    }
    let ctx = super::ctx::Ctx::load(config)?;
    let link = cloud_link(&ctx, args.pr, args.ttl).await?;
    println!("{link}");
    Ok(())
}

/// A link to the Fly preview of `pr`: the app is named as the action names it (the `[app]
/// name` prefix, else the repository's), and the gate's key is derived from the `gate_secret`
/// input (or `ATLAS_GATE_SECRET`) and the nonce on the preview's gate machine.
async fn cloud_link(
    ctx: &super::ctx::Ctx,
    pr: u64,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let mode = crate::gate::Mode::from_access(&ctx.settings.preview.access)
        .unwrap_or(crate::gate::Mode::Public);
    if mode != crate::gate::Mode::SignedLink {
        bail!(
            "[preview] access is \"{}\": links open only a preview with access = \"signed-link\"",
            mode.as_str()
        );
    }
    let secret = ctx.config.gate.secret.clone().or_else(gate_secret).context(
        "input `gate_secret` (INPUT_GATE_SECRET, or ATLAS_GATE_SECRET) is required to mint a link: the repository secret the preview's gate key is derived from",
    )?;
    let repository = match (&ctx.github.repository, &ctx.settings.app.name) {
        (Some(r), _) => r.clone(),
        (None, Some(_)) => String::new(),
        (None, None) => bail!(
            "GITHUB_REPOSITORY is not set and atlas.toml has no [app] name: one of them names the preview's app"
        ),
    };
    let fly = crate::provider::fly::FlyPlatform::new(
        &ctx.config.fly,
        &ctx.settings,
        &repository,
        ctx.retry.clone(),
    )?;
    let prefix = crate::naming::prefix(ctx.settings.app.name.as_deref(), &repository);
    let app = crate::naming::preview_app(&prefix, pr);
    crate::gate::fly::cloud_link(&fly, &secret, &app, ttl)
        .await
        .with_context(|| format!("minting a link to the preview of PR #{pr}"))
}

pub(super) fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn local_request(args: &PreviewArgs, pr: u64) -> PreviewRequest {
    PreviewRequest {
        pr,
        sha: args
            .sha
            .clone()
            .or_else(|| git(&["rev-parse", "HEAD"]))
            .unwrap_or_else(|| "0000000000000000000000000000000000000000".into()),
        branch: args
            .branch
            .clone()
            .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]))
            .unwrap_or_else(|| "local".into()),
        // Without one, a placeholder: `who can open it` then names no real repository.
        repository: super::providers::local_repository(&std::env::vars().collect::<Vec<_>>())
            .unwrap_or_else(|| "local/atlas-preview".into()),
        title: None,
    }
}

pub fn local_options(settings: &Settings, state_dir: &Path) -> anyhow::Result<UpOptions> {
    // The same inputs as the action (`INPUT_PREVIEW_SECRETS`, `INPUT_TTL`, ...) apply locally.
    let config = crate::config::Config::from_vars(std::env::vars())?;
    Ok(UpOptions {
        preview_secrets: config.preview_secrets,
        image: None,
        artifact: settings.local.command.clone().unwrap_or_default(),
        ttl: config.ttl,
        template_dir: config
            .template_dir
            .or_else(|| settings.templates.dir.clone()),
        audit_log: Some(state_dir.join("audit.jsonl")),
        prefix: crate::naming::prefix(settings.app.name.as_deref(), "local/atlas-preview"),
        history_base: None,
        dashboard_url: None,
        private_repository: false,
        now: None,
        pin_labeled: None,
    })
}

fn print_step(line: &str) {
    eprintln!("{}", secret::redact(line));
}

/// Runs `fut`; on Ctrl-C (or SIGTERM) drops it and returns an "interrupted" error.
async fn interruptible<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install a SIGTERM handler")?;
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (Ctrl-C)")),
        _ = term.recv() => Err(anyhow!("interrupted (SIGTERM)")),
    }
}

/// `atlas preview up|down --local`.
pub async fn cli(cmd: &PreviewCommand, config: Option<&Path>) -> anyhow::Result<()> {
    if let PreviewCommand::Link(a) = cmd {
        return link(a, config).await;
    }
    let settings = super::ctx::settings_for_cli(config)?;
    let (args, is_up) = match cmd {
        PreviewCommand::Up(a) => (a, true),
        PreviewCommand::Down(a) => (a, false),
        PreviewCommand::Link(_) => bail!("internal: link is dispatched above"),
        // Dispatched by `commands::run` (cloud and local alike).
        PreviewCommand::Extend(_) | PreviewCommand::Pin(_) => {
            bail!("internal: extend and pin are dispatched by commands::run")
        }
    };
    if !args.local {
        bail!(
            "cloud previews run as the GitHub Action (`atlas run`); pass --local to run this preview on this machine"
        );
    }
    let pr = args
        .pr
        .context("--pr is required: the pull request number whose preview to manage")?;
    let state_dir = settings.local.state_dir.clone();
    let mut log = print_step;
    let setup = interruptible(local_providers(&settings, &state_dir, true, &mut log)).await?;
    let opts = local_options(&settings, &setup.state_dir)?;
    let req = local_request(args, pr);
    let forge = LocalForge::new(&setup.state_dir, false);
    if is_up {
        forge.set_pr(pr, true, &req.sha)?;
        let result = interruptible(up(&setup.providers, &settings, &req, &opts, &mut log)).await;
        match result {
            Ok(out) => {
                forge.append_summary(&out.summary)?;
                eprintln!(
                    "preview of PR #{pr} is ready at {} (comment: {})",
                    out.app.url, out.comment.url
                );
                Ok(())
            }
            Err(ref e)
                if let Some(q) = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<crate::error::QuotaRefused>()) =>
            {
                eprintln!("no preview for PR #{pr}: {}", q.reason);
                stop_if_idle(&setup).await;
                Ok(())
            }
            Err(e) => {
                // An interrupted `up` was dropped mid-step: tear down what it may have made.
                if format!("{e}").starts_with("interrupted") {
                    print_step("→ interrupted: tearing down the preview");
                    let mut quiet = |_: &str| {};
                    let _ = down(&setup.providers, &settings, &req, &opts, &mut quiet).await;
                }
                // The cluster runs only while a preview exists.
                stop_if_idle(&setup).await;
                Err(e)
            }
        }
    } else {
        let out = down(&setup.providers, &settings, &req, &opts, &mut log).await?;
        forge.set_pr(pr, false, &req.sha)?;
        forge.append_summary(&out.summary)?;
        stop_if_idle(&setup).await;
        Ok(())
    }
}

/// Stops atlas's own cluster when no preview branch is left on it.
pub(super) async fn stop_if_idle(setup: &LocalSetup) {
    use crate::provider::Database as _;
    if setup.pg.owns_cluster()
        && setup
            .pg
            .list_branches()
            .await
            .map(|b| b.is_empty())
            .unwrap_or(false)
    {
        match setup.pg.stop().await {
            Ok(()) => print_step("  ✓ local PostgreSQL stopped (no previews left)"),
            Err(e) => print_step(&format!("  ! cannot stop local PostgreSQL: {e:#}")),
        }
    }
}
