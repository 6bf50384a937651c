//! Atlas: per-PR preview environments, a load-regression gate and deploy verification.
//!
//! Data flows one way: `config + event -> plan -> preview|verify -> providers -> evidence ->
//! report`. Providers never render; templates never call providers; `plan` never does I/O.

pub mod cli;
pub mod commands;
pub mod config;
pub mod contract;
pub mod error;
pub mod event;
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
pub mod shell;
pub mod sweep;
pub mod text;
pub mod verify;

pub use commands::{Ctx, dispatch, load_event, plan_for, report_error, run, settings_for_cli};
