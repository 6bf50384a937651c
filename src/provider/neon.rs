//! Neon API v2: database branches. (Issue 5.)

use serde::{Deserialize, Serialize};

/// `[neon]` in atlas.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeonSettings {}
