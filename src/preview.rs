//! Preview up / down / sweep over the provider traits. (Issues 3 and 6.)

use crate::cli::{DemoArgs, PreviewCommand, SweepArgs};
use crate::error::NotYetBuilt;
use crate::event::{Event, Plan};

/// `atlas preview up|down`. (Issue 3.)
pub async fn cli(_cmd: &PreviewCommand, _config: Option<&std::path::Path>) -> anyhow::Result<()> {
    Err(NotYetBuilt("preview").into())
}

/// `atlas sweep`. (Issue 6.)
pub async fn cli_sweep(_args: &SweepArgs, _config: Option<&std::path::Path>) -> anyhow::Result<()> {
    Err(NotYetBuilt("sweep").into())
}

/// `atlas demo`. (Issue 3.)
pub async fn cli_demo(_args: &DemoArgs) -> anyhow::Result<()> {
    Err(NotYetBuilt("demo").into())
}

/// `atlas run` for preview-up / preview-down / sweep. (Issues 3, 5, 6.)
pub async fn dispatch(_ctx: &mut crate::Ctx, _event: &Event, plan: &Plan) -> anyhow::Result<()> {
    Err(NotYetBuilt(plan.command.as_str()).into())
}
