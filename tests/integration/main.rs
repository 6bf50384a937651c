//! Atlas's integration tests: one test binary (one link step), a module per area, the fakes and
//! test servers under `common/`, the data they read under `tests/data/`.

mod common;

mod action_contract;
mod action_e2e;
mod cli_plan;
mod cloud;
mod data_models;
mod estate;
mod fly_gate;
mod gate;
mod gate_plain;
mod github;
mod history;
mod lifecycle;
mod load;
mod local_data;
mod local_lifecycle;
mod neon_fixtures;
mod plan;
mod quota;
mod templates;
mod trace;
mod verify;
