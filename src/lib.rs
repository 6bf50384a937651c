//! Atlas: per-PR preview environments, a load-regression gate and deploy verification.
//!
//! Data flows one way: `config + event -> plan -> preview|verify -> providers -> evidence ->
//! report`. Providers never render; templates never call providers; `plan` never does I/O.

pub mod action;
pub mod cli;
pub mod config;
pub mod contract;
pub mod demo;
pub mod error;
pub mod event;
pub mod gate;
pub mod gha;
pub mod github_env;
pub mod http;
pub mod load;
pub mod naming;
pub mod outputs;
pub mod preview;
pub mod provider;
pub mod report;
pub mod secret;
pub mod sweep;
pub mod verify;

use std::io::Write;

use anyhow::Context as _;

use crate::cli::{Cli, Command};
use crate::config::{Config, ForcedCommand, Settings};
use crate::event::{CommandKind, Event, Plan};
use crate::github_env::GithubEnv;

/// Prints an error as one `{:#}` chain, redacted, as an `::error::` annotation on Actions.
pub fn report_error(err: &anyhow::Error) {
    let msg = secret::redact(&format!("{err:#}"));
    let actions = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    if actions {
        println!(
            "::error title={}::{}",
            gha::escape_property("atlas"),
            gha::escape_data(&msg)
        );
    }
    eprintln!("error: {msg}");
}

/// Everything a command needs, built once from the process environment.
pub struct Ctx {
    pub config: Config,
    pub settings: Settings,
    pub github: GithubEnv,
    pub gha: gha::Gha<Box<dyn Write + Send>>,
}

impl Ctx {
    /// Reads inputs and `atlas.toml`, masks every secret at once. No network.
    pub fn load(cli_config: Option<&std::path::Path>) -> anyhow::Result<Ctx> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let github = GithubEnv::from_vars(vars.iter().cloned());
        let mut gha = gha::Gha::new(
            Box::new(std::io::stdout()) as Box<dyn Write + Send>,
            gha::Files::from_vars(vars.iter().cloned()),
            github.actions,
        );
        // Mask secret inputs before validating anything, so even an input error cannot echo one.
        let raw = config::RawInputs::from_vars(vars.iter().cloned())?;
        for v in raw.secret_values() {
            gha.mask(&v);
        }
        let config = Config::from_raw(&raw)?;
        for s in config.secret_values() {
            gha.mask(s);
        }
        if let Some(dir) = &config.working_directory {
            std::env::set_current_dir(dir).with_context(|| {
                format!("input `working_directory`: cannot enter {}", dir.display())
            })?;
        }
        let (path, required) = match cli_config {
            Some(p) => (p.to_path_buf(), true),
            None => (
                config.config_path.clone(),
                config.config_path != std::path::Path::new("atlas.toml"),
            ),
        };
        let mut settings = Settings::load(&path, required)?;
        // Inputs win over atlas.toml.
        if let Some(b) = &config.baseline {
            settings.baseline.path = b.clone();
        }
        if let Some(t) = config.regression_threshold {
            settings.baseline.threshold_pct = t;
        }
        Ok(Ctx {
            config,
            settings,
            github,
            gha,
        })
    }
}

/// Reads the event named by flags or the runner's environment.
pub fn load_event(
    github: &GithubEnv,
    name: Option<&str>,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Event> {
    let name = name
        .map(str::to_string)
        .or_else(|| github.event_name.clone())
        .context("no event: set GITHUB_EVENT_NAME or pass --event-name")?;
    let path = path
        .map(|p| p.to_path_buf())
        .or_else(|| github.event_path.clone())
        .context("no event payload: set GITHUB_EVENT_PATH or pass --event-path")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the event payload {}", path.display()))?;
    Event::parse(&name, &text).with_context(|| format!("bad `{name}` event in {}", path.display()))
}

/// Plans the current event, applying a `command` input override.
pub fn plan_for(ctx: &Ctx, event: &Event) -> Plan {
    let mut p = event::plan(event, &ctx.config.policy, &ctx.github.context());
    let forced = match ctx.config.command {
        ForcedCommand::Auto | ForcedCommand::Plan => None,
        ForcedCommand::PreviewUp => Some(CommandKind::PreviewUp),
        ForcedCommand::PreviewDown => Some(CommandKind::PreviewDown),
        ForcedCommand::Verify => Some(CommandKind::Verify),
        ForcedCommand::Release => Some(CommandKind::Release),
        ForcedCommand::Sweep => Some(CommandKind::Sweep),
    };
    if let Some(c) = forced {
        // A forced command never overrides a fork skip: that is a trust decision.
        let fork_skip = p.command == CommandKind::Skip
            && matches!(event, Event::PullRequest { pr, .. } if pr.is_fork());
        if !fork_skip {
            p.command = c;
            p.reason = format!("input `command` is {}", c.as_str());
            if let Some(pr) = ctx.config.pr {
                p.pr = Some(pr);
            }
        }
    }
    p
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
            let mut ctx = Ctx::load(cli.config.as_deref())?;
            let event = load_event(&ctx.github, None, None)?;
            let plan = plan_for(&ctx, &event);
            dispatch(&mut ctx, &event, &plan).await
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
        Command::Demo(args) => preview::cli_demo(args).await,
        Command::Gate(cmd) => {
            // The gate's secrets arrive in its environment only, never as flags.
            let env = |n: &str| {
                std::env::var(n)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(secret::Secret::new)
            };
            let key = env("ATLAS_GATE_KEY");
            match cmd {
                gate::GateCommand::Serve(args) => {
                    let gh = env("ATLAS_GATE_GITHUB_CLIENT_SECRET");
                    let opts = args.options(
                        key.as_ref().map(|k| k.expose()),
                        gh.as_ref().map(|k| k.expose()),
                    )?;
                    gate::run(opts, args.listen).await
                }
                gate::GateCommand::Mint(args) => {
                    let root = env("ATLAS_GATE_SECRET").or_else(|| env("INPUT_GATE_SECRET"));
                    println!(
                        "{}",
                        args.mint(root.as_ref(), key.as_ref().map(|k| k.expose()))?
                    );
                    Ok(())
                }
            }
        }
    }
}

/// `atlas.toml` for CLI commands that need no inputs.
pub fn settings_for_cli(path: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    match path {
        Some(p) => Settings::load(p, true),
        None => Settings::load(std::path::Path::new("atlas.toml"), false),
    }
}

/// Executes a plan on GitHub Actions.
pub async fn dispatch(ctx: &mut Ctx, event: &Event, plan: &Plan) -> anyhow::Result<()> {
    ctx.gha.info(&format!(
        "atlas: {} ({})",
        plan.command.as_str(),
        plan.reason
    ));
    match plan.command {
        CommandKind::Skip => {
            ctx.gha.notice("atlas: skipped", &plan.reason);
            // Every output on the skip path too, so workflows can always read them.
            let mut out = outputs::RunReport::new("skip", &plan.sha);
            out.pr = plan.pr;
            out.verdict = "skipped".into();
            outputs::write_outputs(&mut ctx.gha, &out)?;
            let r = report::Renderer::new(ctx.config.template_dir.as_deref())?;
            let md = r.render("skip.md.j2", &serde_json::json!({ "reason": plan.reason }))?;
            ctx.gha.append_summary(&md)?;
            Ok(())
        }
        CommandKind::PreviewUp | CommandKind::PreviewDown | CommandKind::Sweep => {
            action::dispatch(ctx, event, plan).await
        }
        CommandKind::Verify | CommandKind::Release => verify::dispatch(ctx, event, plan).await,
    }
}
