//! The command floor: the only place that reads the process environment, builds providers
//! (cloud or local, once), picks the retry policy and prints. One match over commands; below
//! here flows are plain async functions that take data.

pub mod action;
pub mod ctx;
pub mod demo;
pub mod gate;
pub mod load;
pub mod preview;
pub mod providers;
pub mod verify;

use crate::cli::{Cli, Command};
use crate::event::{CommandKind, Event, Plan};
use crate::{outputs, report};

pub use ctx::{Ctx, load_event, plan_for, report_error, settings_for_cli};

fn fork_without_secrets(ctx: &Ctx, event: &Event) -> bool {
    matches!(event, Event::PullRequest { pr, .. } if pr.is_fork())
        && ctx.config.missing_cloud_secret().is_some()
}

/// Tells the PR why it has no preview, when the token may comment. A fork's token is usually
/// read-only: a refused comment is a notice, the skip still exits 0.
async fn skip_comment(ctx: &mut Ctx, pr: Option<u64>, body: &str) {
    let Some(pr) = pr else { return };
    if ctx.config.github_token.is_none() {
        return;
    }
    let posted = async {
        let forge = providers::forge(ctx)?;
        crate::provider::Forge::upsert_comment(&forge, pr, &crate::preview::marker(pr), body).await
    }
    .await;
    if let Err(e) = posted {
        ctx.gha.notice(
            "atlas: skip reason not commented",
            &crate::secret::redact(&format!("{e:#}")),
        );
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Plan(args) => {
            let ctx = Ctx::load(cli.config.as_deref())?;
            let event = load_event(
                &ctx.github,
                args.event_name.as_deref(),
                args.event_path.as_deref(),
            )?;
            let plan = plan_for(&ctx, &event);
            println!("{}", serde_json::to_string(&plan)?);
            Ok(())
        }
        Command::Run => {
            // One deadline for the whole run: no retry starts that would end past it.
            let budget = std::env::var("ATLAS_DEADLINE").ok();
            crate::http::set_run_deadline(crate::http::run_budget(budget.as_deref())?);
            let mut ctx = Ctx::load(cli.config.as_deref())?;
            let event = load_event(&ctx.github, None, None)?;
            // `atlas plan` shows the policy's decision; a run also knows it has no secrets.
            let plan = crate::event::skip_fork_without_secrets(
                plan_for(&ctx, &event),
                &event,
                ctx.config.missing_cloud_secret(),
            );
            let signal = {
                let work = dispatch(&mut ctx, &event, &plan);
                tokio::pin!(work);
                tokio::select! {
                    r = &mut work => return r,
                    s = cancel_signal() => s?,
                }
                // `work` is dropped here: no new call starts; the one in flight is abandoned.
            };
            Err(action::after_cancel(&ctx, signal).await)
        }
        Command::Preview(crate::cli::PreviewCommand::Extend(args)) => {
            action::cli_extend(args, cli.config.as_deref()).await
        }
        Command::Preview(crate::cli::PreviewCommand::Pin(args)) => {
            action::cli_pin(args, cli.config.as_deref()).await
        }
        Command::Preview(cmd) => preview::cli(cmd, cli.config.as_deref()).await,
        Command::Verify(args) => verify::cli_verify(args, cli.config.as_deref()).await,
        Command::Release(args) => verify::cli_release(args, cli.config.as_deref()).await,
        Command::Sweep(args) => action::cli_sweep(args, cli.config.as_deref()).await,
        Command::Load(args) => {
            let settings = settings_for_cli(cli.config.as_deref())?;
            load::cli_load(args, &settings).await
        }
        Command::Baseline(cmd) => {
            let settings = settings_for_cli(cli.config.as_deref())?;
            load::cli_baseline(cmd, &settings).await
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Gate(cmd) => gate::run(cmd).await,
    }
}

/// Resolves on the first SIGINT or SIGTERM (the runner sends SIGINT on cancel, SIGTERM 7.5 s
/// later, then kills) with the signal's name.
async fn cancel_signal() -> anyhow::Result<&'static str> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// Executes a plan on GitHub Actions.
pub async fn dispatch(ctx: &mut Ctx, event: &Event, plan: &Plan) -> anyhow::Result<()> {
    ctx.gha.info(&format!(
        "atlas: {} ({})",
        plan.command.as_str(),
        plan.reason
    ));
    if plan.dry_run {
        // `command: plan`: the decision is the whole result; no provider is built or called.
        ctx.gha.notice(
            "atlas: plan only",
            &format!(
                "would run {} ({}); input `command` is plan",
                plan.command.as_str(),
                plan.reason
            ),
        );
        println!("{}", serde_json::to_string(plan)?);
        return Ok(());
    }
    match plan.command {
        CommandKind::Skip => {
            ctx.gha.notice("atlas: skipped", &plan.reason);
            // Every output on the skip path too, so workflows can always read them.
            let mut out = outputs::RunReport::new("skip", &plan.sha);
            out.pr = plan.pr;
            out.verdict = "skipped".into();
            outputs::write_outputs(&mut ctx.gha, &out)?;
            let r = report::Renderer::new(ctx.config.template_dir.as_deref())?;
            let md = r.render(
                "skip.md.j2",
                &report::SkipContext {
                    reason: &plan.reason,
                },
            )?;
            ctx.gha.append_summary(&md)?;
            if fork_without_secrets(ctx, event) {
                skip_comment(ctx, plan.pr, &md).await;
            }
            Ok(())
        }
        CommandKind::PreviewUp
        | CommandKind::PreviewDown
        | CommandKind::Sweep
        | CommandKind::Pin
        | CommandKind::Unpin => action::dispatch(ctx, event, plan).await,
        CommandKind::Verify | CommandKind::Release => verify::dispatch(ctx, event, plan).await,
    }
}
