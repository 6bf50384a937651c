//! The verification chain as data: stages, gates, canary, rollback. (Issue 7.)

use serde::{Deserialize, Serialize};

/// `[verify]` in atlas.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySettings {}

use crate::cli::ChainArgs;
use crate::error::NotYetBuilt;
use crate::event::{Event, Plan};

/// `atlas verify`. (Issue 7.)
pub async fn cli_verify(
    _args: &ChainArgs,
    _config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    Err(NotYetBuilt("verify").into())
}

/// `atlas release`. (Issue 7.)
pub async fn cli_release(
    _args: &ChainArgs,
    _config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    Err(NotYetBuilt("release").into())
}

/// `atlas run` for verify / release. (Issue 7.)
pub async fn dispatch(_ctx: &mut crate::Ctx, _event: &Event, plan: &Plan) -> anyhow::Result<()> {
    Err(NotYetBuilt(plan.command.as_str()).into())
}
