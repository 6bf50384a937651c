//! Command-line surface (DESIGN.md section 8). Flags override `atlas.toml`, which overrides
//! defaults. The same binary is the action's entry point (`atlas run`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "atlas",
    version,
    about = "Per-PR preview environments, a load-regression gate and deploy verification",
    long_about = "Atlas gives every pull request its own runnable, disposable world (database branch, app, URL, evidence) and proves what changed before production has to care.\n\nOn GitHub Actions it runs as `atlas run`; on your machine the same flows run against a local PostgreSQL and a local process."
)]
pub struct Cli {
    /// Path of atlas.toml (default: the `config` input, then ./atlas.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The action's entry point: read the event, plan, execute.
    Run,
    /// Print the decision for the current event as JSON; do nothing else.
    Plan(PlanArgs),
    /// Create/update or destroy a PR preview.
    #[command(subcommand)]
    Preview(PreviewCommand),
    /// Push to main: deploy QA -> integration tests -> load gate.
    Verify(ChainArgs),
    /// Tag: the verify chain, then rehearsed migrations -> canary -> production.
    Release(ChainArgs),
    /// Destroy previews whose PR is closed or whose TTL passed.
    Sweep(SweepArgs),
    /// Run a load test against a URL.
    Load(crate::load::LoadArgs),
    /// Compare a load summary with a baseline, or write a baseline.
    #[command(subcommand)]
    Baseline(crate::load::BaselineCommand),
    /// The whole preview lifecycle locally, against examples/.
    Demo(DemoArgs),
    /// The access gate: a reverse proxy in front of a preview app.
    #[command(subcommand)]
    Gate(crate::gate::GateCommand),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Event name (default: $GITHUB_EVENT_NAME).
    #[arg(long)]
    pub event_name: Option<String>,
    /// Event payload file (default: $GITHUB_EVENT_PATH).
    #[arg(long)]
    pub event_path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PreviewCommand {
    /// Create or update the preview of a PR.
    Up(PreviewArgs),
    /// Destroy the preview of a PR.
    Down(PreviewArgs),
    /// Mint a signed link to a PR's preview (access = "signed-link"): the Fly preview (with the
    /// fly_api_token, fly_org and gate_secret inputs as INPUT_* and GITHUB_REPOSITORY), or the
    /// local one with --local. Prints the link only.
    Link(LinkArgs),
    /// Push a PR's preview expiry out (its app and database branch alike).
    Extend(ExtendArgs),
    /// Pin a PR's preview (kept past its TTL, never evicted by `max_previews`), or unpin it;
    /// what the pin label does on GitHub.
    Pin(PinArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PinArgs {
    /// Pull request number.
    #[arg(long)]
    pub pr: u64,
    /// Who pins it (shown as "pinned by @login").
    #[arg(long, default_value = "local")]
    pub by: String,
    /// Unpin instead (the expiry is renewed from now by `[preview] ttl`, or the `ttl` input).
    #[arg(long)]
    pub unpin: bool,
    /// The local preview.
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ExtendArgs {
    /// Pull request number.
    #[arg(long)]
    pub pr: u64,
    /// The preview expires this long from now (default: `[preview] ttl`, or the `ttl` input).
    #[arg(long, value_parser = |s: &str| humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}")))]
    pub ttl: Option<std::time::Duration>,
    /// The local preview.
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Args, Clone)]
pub struct LinkArgs {
    /// Pull request number.
    #[arg(long)]
    pub pr: u64,
    /// How long the link stays valid.
    #[arg(long, default_value = "24h", value_parser = |s: &str| humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}")))]
    pub ttl: std::time::Duration,
    /// The local preview (the gate's secret comes from ATLAS_GATE_SECRET or the state directory).
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PreviewArgs {
    /// Pull request number.
    #[arg(long)]
    pub pr: Option<u64>,
    /// Use the local providers (PostgreSQL on this machine, a local process, files).
    #[arg(long)]
    pub local: bool,
    /// Commit SHA to record (default: `git rev-parse HEAD`).
    #[arg(long)]
    pub sha: Option<String>,
    /// Branch name to record (default: the current git branch).
    #[arg(long)]
    pub branch: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ChainArgs {
    /// Use the local providers.
    #[arg(long)]
    pub local: bool,
    /// Commit SHA to record.
    #[arg(long)]
    pub sha: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct SweepArgs {
    /// List what would be destroyed; destroy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sweep the local providers.
    #[arg(long)]
    pub local: bool,
    /// Print the sweep and the table of live previews as JSON on stdout (the log goes to
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Keep the preview running at the end instead of tearing it down.
    #[arg(long)]
    pub keep: bool,
    /// Directory for the demo's state (default: a temporary directory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}
