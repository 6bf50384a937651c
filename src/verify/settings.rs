//! `[verify]` in atlas.toml: what the verify and release chains deploy, test and compare.
//! Every field has a default so an empty section is valid; unknown keys are errors.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{SmokeCheck, duration};

/// `[verify]` in atlas.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySettings {
    /// The QA app (Fly app name). Default: `<prefix>-qa`.
    pub qa_app: Option<String>,
    /// The QA base URL. Default on Fly: `https://<qa_app>.fly.dev`; locally the QA process's URL.
    pub qa_url: Option<String>,
    /// The production app (Fly app name). Default: `<prefix>`.
    pub production_app: Option<String>,
    /// The production base URL the canary analysis and health probes use (each request pinned
    /// to one machine). Default on Fly: `https://<production_app>.fly.dev`.
    pub production_url: Option<String>,
    /// Number of production machines (locally: processes). Fly uses the machines it finds and
    /// fails when it finds fewer than this.
    pub machines: usize,
    /// Integration test command (run by `sh -c`) with `BASE_URL` set to QA. Only the variables
    /// named in `integration_env` (plus `PATH` and `HOME`) reach it.
    pub integration: Option<String>,
    /// Names of environment variables the integration command may receive.
    pub integration_env: Vec<String>,
    /// The integration command is killed after this long.
    #[serde(with = "duration")]
    pub integration_timeout: Duration,
    /// Lines of the integration command's output kept as evidence.
    pub output_tail: usize,
    /// HTTP checks against QA (same shape as `[[smoke]]`).
    pub checks: Vec<SmokeCheck>,
    /// Run the load test + baseline gate against QA (the scenario is `[load]`, the gate and
    /// the baseline file `[baseline]`).
    pub load: bool,
    /// Name of the environment variable holding the production database URL (release only;
    /// needed when `[database] migrations` is set).
    pub production_database_env: String,
    /// Name of the throwaway branch the migrations are rehearsed on.
    pub rehearsal_branch: String,
    /// How long each machine may take to become healthy after an update.
    #[serde(with = "duration")]
    pub health_timeout: Duration,
    pub canary: CanarySettings,
    /// Extra plain environment for the app (local processes and the canary).
    pub env: BTreeMap<String, String>,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            qa_app: None,
            qa_url: None,
            production_app: None,
            production_url: None,
            machines: 2,
            integration: None,
            integration_env: Vec::new(),
            integration_timeout: Duration::from_secs(600),
            output_tail: 40,
            checks: Vec::new(),
            load: true,
            production_database_env: "PRODUCTION_DATABASE_URL".into(),
            rehearsal_branch: "atlas-rehearsal".into(),
            health_timeout: Duration::from_secs(120),
            canary: CanarySettings::default(),
            env: BTreeMap::new(),
        }
    }
}

/// `[verify.canary]`: how the canary is compared with the stable version.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanarySettings {
    /// Run the canary stage at all (a release without it rolls out blind).
    pub enabled: bool,
    /// Paths requested, round-robin, with the same sequence sent to canary and stable.
    pub paths: Vec<String>,
    /// Number of samples (rounds); each is reported on its own.
    pub samples: usize,
    /// Requests per side per sample.
    pub requests_per_sample: usize,
    /// Requests in flight per side.
    pub concurrency: usize,
    /// Pause between samples (lets a slow leak or a warming cache show).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Per-request timeout; a timeout counts as an error.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Fewer requests than this per side (after the samples) means "inconclusive": no promotion.
    pub min_requests: usize,
    /// Canary error rate may exceed stable's by at most this many percentage points.
    pub max_error_rate_increase_pp: f64,
    /// Canary p95 may exceed stable's by at most this percent ...
    pub max_p95_increase_pct: f64,
    /// ... unless the absolute increase is below this floor (milliseconds), which is noise.
    pub p95_floor_ms: f64,
}

impl Default for CanarySettings {
    fn default() -> Self {
        CanarySettings {
            enabled: true,
            paths: vec!["/".into()],
            samples: 3,
            requests_per_sample: 100,
            concurrency: 4,
            interval: Duration::from_millis(0),
            timeout: Duration::from_secs(5),
            min_requests: 100,
            max_error_rate_increase_pp: 1.0,
            max_p95_increase_pct: 20.0,
            p95_floor_ms: 10.0,
        }
    }
}

impl VerifySettings {
    /// Checks that cannot be expressed in serde: bounds and cross-field rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        let c = &self.canary;
        let bad = |k: &str, why: &str| Err(anyhow::anyhow!("atlas.toml [verify] `{k}` {why}"));
        if self.machines == 0 {
            return bad("machines", "must be at least 1");
        }
        if c.enabled {
            if c.samples == 0 || c.requests_per_sample == 0 || c.concurrency == 0 {
                return bad(
                    "canary",
                    "needs samples, requests_per_sample and concurrency of at least 1",
                );
            }
            if c.paths.is_empty() || c.paths.iter().any(|p| !p.starts_with('/')) {
                return bad("canary.paths", "must list paths that start with `/`");
            }
            if !(c.max_error_rate_increase_pp >= 0.0 && c.max_p95_increase_pct >= 0.0) {
                return bad("canary", "limits must be zero or positive numbers");
            }
        }
        for n in &self.integration_env {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return bad("integration_env", "must list variable names like API_TOKEN");
            }
        }
        Ok(())
    }
}
