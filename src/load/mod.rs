//! The load generator and the baseline gate (DESIGN.md section 7). (Issue 4.)

use serde::{Deserialize, Serialize};

/// `[load]` in atlas.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSettings {}

/// `[baseline]` in atlas.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSettings {}

/// `atlas load` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The URL to load.
    #[arg(long)]
    pub target: Option<String>,
}

/// `atlas baseline ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BaselineCommand {
    /// Compare a summary with a baseline.
    Compare {
        baseline: std::path::PathBuf,
        current: std::path::PathBuf,
    },
}

/// `atlas load`. (Issue 4.)
pub async fn cli_load(_args: &LoadArgs, _settings: &crate::config::Settings) -> anyhow::Result<()> {
    Err(crate::error::NotYetBuilt("load").into())
}

/// `atlas baseline`. (Issue 4.)
pub async fn cli_baseline(
    _cmd: &BaselineCommand,
    _settings: &crate::config::Settings,
) -> anyhow::Result<()> {
    Err(crate::error::NotYetBuilt("baseline").into())
}
