//! The whole vocabulary, low to high (the ripgrep habit): [`inputs`] turns `INPUT_*` strings
//! into a validated [`Config`] whose errors name the input; [`settings`] is `atlas.toml`, every
//! section in one place. Imports only `secret` and `text`; nothing here reads the process
//! environment (tests feed iterators of variables).

pub mod active_hours;
pub mod inputs;
pub mod settings;

pub use active_hours::ActiveHours;

pub use inputs::*;
pub use settings::*;
