//! Atlas: per-PR preview environments, a load-regression gate and deploy verification.
//!
//! Data flows one way: `config + event -> plan -> preview|verify -> providers -> evidence ->
//! report`. Providers never render; templates never call providers; `plan` never does I/O.
//!
//! # Floors
//!
//! Each floor imports only from floors below it (or its own, without a cycle):
//!
//! ```text
//! 8 commands/ cli        read the process environment, build providers (cloud or local,
//!                        once), pick the retry policy, print; one match over commands
//! 7 preview seed verify/ sweep lifecycle estate load gate/ commit_data (flows)
//!                        plain async functions that take data; gate/ is the access gate
//!                        (proxy, links, sign-in) and its local platform; commit_data the
//!                        data each kept commit runs on
//! 6 provider/ evidence/ load::{generator, wire, gate, stats, summary, proxy, history, store}
//!   quota                pure: the preview cap's decisions over what the providers list
//! 5 contract report outputs gha http http1 github_env
//! 4 event                pure: event + policy -> plan (forced-command and fork rules too)
//!   data/                pure: data models, masking rules and their SQL, the seed plan
//!   cost                 pure: a preview's estimated cost per day from the `[cost]` prices
//! 3 config/              inputs and every atlas.toml section; imports only secret and text
//! 1 secret naming text shell error trace    the ground floor
//! ```
//!
//! Rules: nothing below `commands/` names `std::env` (except `shell`, which passes `PATH` and
//! `HOME` to children and finds programs on that `PATH`; the load generator's proxy variables
//! come down as `LoadSettings::proxy_env`); `config/` imports only `secret` and `text`; a
//! provider never imports a flow, `evidence` or `report`; no module imports one that imports it
//! back. `.ci/floors.py` checks the floors, the cycles and these rules.

pub mod cli;
pub mod commands;
pub mod commit_data;
pub mod config;
pub mod contract;
pub mod cost;
pub mod data;
pub mod error;
pub mod estate;
pub mod event;
pub mod evidence;
pub mod gate;
pub mod gha;
pub mod github_env;
pub mod http;
pub mod http1;
pub mod lifecycle;
pub mod load;
pub mod naming;
pub mod outputs;
pub mod preview;
pub mod provider;
pub mod quota;
pub mod report;
pub mod secret;
pub mod seed;
pub mod shell;
pub mod sweep;
pub mod text;
pub mod trace;
pub mod verify;

pub use commands::{Ctx, dispatch, load_event, plan_for, report_error, run, settings_for_cli};
