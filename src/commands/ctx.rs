//! What every command starts from: inputs, `atlas.toml` and the runner's files, read once from
//! the process environment; the event; errors printed as one redacted chain.

use std::io::Write;

use anyhow::Context as _;

use crate::config::{Config, Settings};
use crate::event::{Event, Plan};
use crate::github_env::GithubEnv;
use crate::http::RetryPolicy;
use crate::{config, event, gha, secret};

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
    /// The retry policy of every provider call, chosen once here.
    pub retry: RetryPolicy,
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
        settings.load.proxy_env = proxy_env();
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
            retry: retry_policy(),
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

/// Plans the current event; the `command` input is part of the policy.
pub fn plan_for(ctx: &Ctx, event: &Event) -> Plan {
    event::plan(event, &ctx.config.policy, &ctx.github.context())
}

/// `atlas.toml` for CLI commands that need no inputs.
pub fn settings_for_cli(path: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let mut settings = match path {
        Some(p) => Settings::load(p, true)?,
        None => Settings::load(std::path::Path::new("atlas.toml"), false)?,
    };
    settings.load.proxy_env = proxy_env();
    Ok(settings)
}

/// The proxy variables the load generator honours, read here so the generator takes them as data.
fn proxy_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            matches!(
                k.as_str(),
                "http_proxy" | "https_proxy" | "all_proxy" | "no_proxy"
            )
        })
        .collect()
}

/// Runs `[local] build` (`what` names it in the error) with atlas's own environment: a build
/// needs the toolchain's variables, and it is the user's own command on the user's machine.
pub async fn build(build: &str, what: &str) -> anyhow::Result<std::process::ExitStatus> {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(build)
        .status()
        .await
        .with_context(|| format!("cannot run the {what} `{build}`"))
}

/// The retry policy for provider calls. `ATLAS_RETRY_POLICY=fast` shortens backoff for tests
/// against local fakes; nothing else reads it.
pub fn retry_policy() -> RetryPolicy {
    match std::env::var("ATLAS_RETRY_POLICY").as_deref() {
        Ok("fast") => RetryPolicy::fast(),
        _ => RetryPolicy::default(),
    }
}
