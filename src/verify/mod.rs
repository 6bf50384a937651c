//! The verification chain as data: stages, gates, canary, rollback (DESIGN.md sections 1 and
//! 3). `atlas verify` (push to the default branch) deploys QA, runs the integration tests
//! and the load gate; `atlas release` (a tag) continues with migrations rehearsed on a throwaway
//! copy of production, a canary analysed side by side with the stable version, a one-at-a-time
//! production rollout, and a rollback of everything it changed when a stage fails.
//!
//! - [`settings`]: `[verify]` in atlas.toml;
//! - [`chain`]: [`build_chain`] (pure) and [`chain::run`] over the traits below, one report;
//! - [`fleet`]: the platform operations the chain needs ([`Fleet`]); [`local`] runs it as
//!   processes on this machine, [`fly`] on the Fly Machines API;
//! - [`migrate`]: the rehearsal ([`ReleaseDatabase`]); [`canary`] and [`probe`]: the analysis;
//! - [`checks`]: the integration command and HTTP checks;
//! - [`cli`]: `atlas verify|release [--local]` and the action's dispatch.

pub mod canary;
pub mod chain;
pub mod fleet;
pub mod fly;
pub mod local;
pub mod migrate;
pub mod probe;

#[cfg(test)]
mod tests;

pub use crate::config::{CanarySettings, VerifySettings};
pub use chain::{
    Chain, ChainReport, LoadGate, LoadModuleGate, Mode, Outcome, Release, Stage, StageStatus,
    build_chain,
};
pub use fleet::{Fleet, Instance, Target};
pub use migrate::ReleaseDatabase;

/// Renders the report with `templates/verify.md.j2`.
pub fn render(renderer: &crate::report::Renderer, report: &ChainReport) -> anyhow::Result<String> {
    renderer.render_comment("verify.md.j2", report)
}
