//! Entry points: `atlas verify`, `atlas release` (CLI) and `atlas run` on a push (dispatch).

use crate::cli::ChainArgs;
use crate::error::NotYetBuilt;
use crate::event::{Event, Plan};

/// `atlas verify`.
pub async fn cli_verify(
    _args: &ChainArgs,
    _config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    Err(NotYetBuilt("verify").into())
}

/// `atlas release`.
pub async fn cli_release(
    _args: &ChainArgs,
    _config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    Err(NotYetBuilt("release").into())
}

/// `atlas run` for verify / release.
pub async fn dispatch(_ctx: &mut crate::Ctx, _event: &Event, plan: &Plan) -> anyhow::Result<()> {
    Err(NotYetBuilt(plan.command.as_str()).into())
}
