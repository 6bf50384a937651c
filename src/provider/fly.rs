//! Fly.io Machines API: preview apps. (Issue 5.)

use serde::{Deserialize, Serialize};

/// `[fly]` in atlas.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlySettings {}
