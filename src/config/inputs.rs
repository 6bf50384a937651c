//! Inputs in two stages (the ripgrep habit): raw strings from `INPUT_*` through envy,
//! then a validated [`Config`] whose errors name the input and the problem; plus `atlas.toml`
//! ([`Settings`]), parsed strictly (unknown keys are errors that give the key and the line).
//!
//! Tests feed iterators of variables; nothing here reads the process environment directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::Secret;
use crate::text::truncate;

/// What to do with a fork PR (one whose head repository is not the base repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForkPolicy {
    /// Never deploy forks (default): zero Neon/Fly calls.
    Skip,
    /// Deploy a fork only for the commit a maintainer labelled with `trusted_label`.
    Label,
    /// Deploy forks like any PR (only for repositories that trust every contributor).
    Allow,
}

/// The policy knobs `plan` reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub fork_policy: ForkPolicy,
    pub trusted_label: String,
    /// The label that pins a preview: exempt from TTL expiry and quota eviction.
    pub pin_label: String,
    pub trust_dependabot: bool,
    /// Tags that trigger a release (`v*` by default; `*` is the only wildcard).
    pub tag_pattern: String,
    /// The `command` input: `auto`, a forced command, or `plan` (decide, print, run nothing).
    pub command: ForcedCommand,
    /// The `pr` input: the pull request a forced command acts on.
    pub pr: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            fork_policy: ForkPolicy::Skip,
            trusted_label: "atlas:preview".into(),
            pin_label: "atlas:pin".into(),
            trust_dependabot: false,
            tag_pattern: "v*".into(),
            command: ForcedCommand::Auto,
            pr: None,
        }
    }
}

/// An input error: which input, what is wrong. Exit code 2, before any network call.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("input `{input}` is required{why}")]
    Missing { input: &'static str, why: String },
    #[error("input `{input}` is invalid: {problem}")]
    Invalid {
        input: &'static str,
        problem: String,
    },
}

fn invalid(input: &'static str, problem: impl Into<String>) -> InputError {
    InputError::Invalid {
        input,
        problem: problem.into(),
    }
}

/// Every action input, as the runner passes it (`INPUT_<NAME>`). GitHub passes `""` for an
/// unset input; [`RawInputs::get`] treats that as absent. Keep in sync with `action.yml`
/// (a test checks).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawInputs {
    pub command: Option<String>,
    pub config: Option<String>,
    pub working_directory: Option<String>,
    pub github_token: Option<String>,
    pub github_app_login: Option<String>,
    pub alert_webhook: Option<String>,
    pub neon_api_key: Option<String>,
    pub neon_project_id: Option<String>,
    pub neon_api_url: Option<String>,
    pub fly_api_token: Option<String>,
    pub fly_org: Option<String>,
    pub fly_api_url: Option<String>,
    pub image: Option<String>,
    pub preview_secrets: Option<String>,
    pub fork_policy: Option<String>,
    pub trusted_label: Option<String>,
    pub pin_label: Option<String>,
    pub trust_dependabot: Option<String>,
    pub ttl: Option<String>,
    pub regression_threshold: Option<String>,
    pub baseline: Option<String>,
    pub template_dir: Option<String>,
    pub dry_run: Option<String>,
    pub pr: Option<String>,
    pub tag_pattern: Option<String>,
    pub max_deletions: Option<String>,
    pub grace_period: Option<String>,
    pub gate_secret: Option<String>,
    pub gate_image: Option<String>,
    pub gate_github_client_id: Option<String>,
    pub gate_github_client_secret: Option<String>,
}

/// The names of every input, for the drift test against `action.yml`.
pub const INPUT_NAMES: &[&str] = &[
    "command",
    "config",
    "working_directory",
    "github_token",
    "github_app_login",
    "alert_webhook",
    "neon_api_key",
    "neon_project_id",
    "neon_api_url",
    "fly_api_token",
    "fly_org",
    "fly_api_url",
    "image",
    "preview_secrets",
    "fork_policy",
    "trusted_label",
    "pin_label",
    "trust_dependabot",
    "ttl",
    "regression_threshold",
    "baseline",
    "template_dir",
    "dry_run",
    "pr",
    "tag_pattern",
    "max_deletions",
    "grace_period",
    "gate_secret",
    "gate_image",
    "gate_github_client_id",
    "gate_github_client_secret",
];

pub const DEFAULT_NEON_API_URL: &str = "https://console.neon.tech/api/v2";
pub const DEFAULT_FLY_API_URL: &str = "https://api.machines.dev";

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl RawInputs {
    /// The raw values of every secret input (tokens, keys, and each `preview_secrets` value),
    /// to be masked before validation can fail.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.github_token,
            &self.neon_api_key,
            &self.fly_api_token,
            &self.gate_secret,
            &self.gate_github_client_secret,
            &self.alert_webhook,
        ]
        .into_iter()
        .filter_map(|v| nonempty(v).map(str::to_string))
        .collect();
        if let Some(text) = nonempty(&self.preview_secrets) {
            for line in text.lines() {
                if let Some((_, v)) = line.split_once('=')
                    && !v.trim().is_empty()
                {
                    out.push(v.trim().to_string());
                }
            }
        }
        out
    }

    /// Reads `INPUT_*` from the given variables (envy lowercases the names).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Self, InputError> {
        // NUL bytes cannot come from the runner, but a hostile caller could pass them.
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("INPUT_"))
            .collect();
        for (k, v) in &vars {
            if v.contains('\0') {
                let name = k.trim_start_matches("INPUT_").to_ascii_lowercase();
                let input = INPUT_NAMES
                    .iter()
                    .find(|n| **n == name)
                    .copied()
                    .unwrap_or("(unknown)");
                return Err(invalid(input, "contains a NUL byte"));
            }
        }
        envy::prefixed("INPUT_")
            .from_iter::<_, RawInputs>(vars)
            .map_err(|e| invalid("(inputs)", e.to_string()))
    }
}

/// What a command needs from the cloud providers. Absent credentials are fine until a command
/// needs them; then [`Config::require_cloud`] names the missing input.
#[derive(Debug, Clone)]
pub struct NeonAccess {
    pub api_key: Option<Secret>,
    pub project_id: Option<String>,
    pub api_url: Url,
}

/// The access gate's inputs (used when `[preview] access` is not `public`).
#[derive(Debug, Clone, Default)]
pub struct GateAccess {
    /// The repository's gate secret: links and bypass tokens are derived from it.
    pub secret: Option<Secret>,
    /// The Atlas image the gate machine runs (default: this version's published image).
    pub image: Option<String>,
    pub github_client_id: Option<String>,
    pub github_client_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct FlyAccess {
    pub api_token: Option<Secret>,
    pub org: Option<String>,
    pub api_url: Url,
}

/// A command forced by the `command` input (or the CLI), overriding the event's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForcedCommand {
    Auto,
    PreviewUp,
    PreviewDown,
    Verify,
    Release,
    Sweep,
    Plan,
}

/// The validated inputs.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: ForcedCommand,
    pub config_path: PathBuf,
    pub working_directory: Option<PathBuf>,
    pub github_token: Option<Secret>,
    /// A custom GitHub App's bot login (`<slug>[bot]`): whose marker comments are ours.
    pub github_app_login: Option<String>,
    /// A Slack-compatible incoming webhook for load regressions on the default branch. Its URL
    /// is the credential (Slack's carry the token in the path): a secret, masked.
    pub alert_webhook: Option<Secret>,
    pub neon: NeonAccess,
    pub fly: FlyAccess,
    pub gate: GateAccess,
    pub image: Option<String>,
    /// Values of preview secrets given by the workflow (`NAME=value` lines). Only names declared
    /// in `atlas.toml` `[preview] secrets` reach a preview.
    pub preview_secrets: BTreeMap<String, Secret>,
    pub policy: Policy,
    pub ttl: Option<Duration>,
    /// Percent worse that blocks (default 20).
    pub regression_threshold: Option<f64>,
    pub baseline: Option<PathBuf>,
    pub template_dir: Option<PathBuf>,
    pub dry_run: bool,
    pub pr: Option<u64>,
    pub max_deletions: usize,
    pub grace_period: Duration,
}

pub fn parse_bool(input: &'static str, v: &str) -> Result<bool, InputError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        other => Err(invalid(
            input,
            format!("expected true or false, got {:?}", truncate(other, 40)),
        )),
    }
}

/// Parses `500ms`, `30s`, `5m`, `72h`, `3d`.
pub fn parse_duration(input: &'static str, v: &str) -> Result<Duration, InputError> {
    humantime::parse_duration(v.trim()).map_err(|e| {
        invalid(
            input,
            format!(
                "{:?} is not a duration like 30s, 5m or 72h ({e})",
                truncate(v, 40)
            ),
        )
    })
}

fn parse_url(input: &'static str, v: &str) -> Result<Url, InputError> {
    let u = Url::parse(v.trim())
        .map_err(|e| invalid(input, format!("{:?} is not a URL ({e})", truncate(v, 80))))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(invalid(input, "the URL must be http or https"));
    }
    Ok(u)
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses the `preview_secrets` input: one `NAME=value` per line; blank lines and `#` comments
/// are skipped. Values are registered as secrets immediately.
pub fn parse_preview_secrets(text: &str) -> Result<BTreeMap<String, Secret>, InputError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(invalid(
                "preview_secrets",
                format!("line {} is not NAME=value", i + 1),
            ));
        };
        let name = name.trim();
        // Register the value before anything can print it, even if the name is bad.
        let value = Secret::new(value.trim());
        if !valid_env_name(name) {
            return Err(invalid(
                "preview_secrets",
                format!(
                    "line {}: {:?} is not an environment variable name (A-Z, 0-9, _)",
                    i + 1,
                    truncate(name, 40)
                ),
            ));
        }
        if out.insert(name.to_string(), value).is_some() {
            return Err(invalid(
                "preview_secrets",
                format!("line {}: {name} is given twice", i + 1),
            ));
        }
    }
    Ok(out)
}

impl Config {
    /// Validates the raw inputs. Does no I/O.
    pub fn from_raw(raw: &RawInputs) -> Result<Config, InputError> {
        let secret = |v: &Option<String>| nonempty(v).map(Secret::new);
        let github_token = secret(&raw.github_token);
        let neon_key = secret(&raw.neon_api_key);
        let fly_token = secret(&raw.fly_api_token);
        let alert_webhook = secret(&raw.alert_webhook);
        if let Some(w) = &alert_webhook {
            let ok = Url::parse(w.expose().trim())
                .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
            if !ok {
                // never quote the value: it is the credential
                return Err(invalid(
                    "alert_webhook",
                    "not an http(s) URL (e.g. https://hooks.slack.com/services/...)",
                ));
            }
        }

        let command = match nonempty(&raw.command) {
            None => ForcedCommand::Auto,
            Some(c) => match c {
                "auto" => ForcedCommand::Auto,
                "preview-up" | "preview_up" => ForcedCommand::PreviewUp,
                "preview-down" | "preview_down" => ForcedCommand::PreviewDown,
                "verify" => ForcedCommand::Verify,
                "release" => ForcedCommand::Release,
                "sweep" => ForcedCommand::Sweep,
                "plan" => ForcedCommand::Plan,
                other => {
                    return Err(invalid(
                        "command",
                        format!(
                            "{:?} is not one of auto, preview-up, preview-down, verify, release, sweep, plan",
                            truncate(other, 40)
                        ),
                    ));
                }
            },
        };

        let fork_policy = match nonempty(&raw.fork_policy) {
            None | Some("skip") => ForkPolicy::Skip,
            Some("label") => ForkPolicy::Label,
            Some("allow") => ForkPolicy::Allow,
            Some(other) => {
                return Err(invalid(
                    "fork_policy",
                    format!("{:?} is not one of skip, label, allow", truncate(other, 40)),
                ));
            }
        };
        let trusted_label = nonempty(&raw.trusted_label)
            .unwrap_or("atlas:preview")
            .to_string();
        let pin_label = nonempty(&raw.pin_label).unwrap_or("atlas:pin").to_string();
        if pin_label == trusted_label {
            return Err(invalid(
                "pin_label",
                format!(
                    "{pin_label:?} is also the trusted_label: one label cannot both approve a fork's commit and pin a preview"
                ),
            ));
        }
        let trust_dependabot = nonempty(&raw.trust_dependabot)
            .map(|v| parse_bool("trust_dependabot", v))
            .transpose()?
            .unwrap_or(false);
        let tag_pattern = nonempty(&raw.tag_pattern).unwrap_or("v*").to_string();

        let ttl = nonempty(&raw.ttl)
            .map(|v| parse_duration("ttl", v))
            .transpose()?;
        if let Some(t) = ttl
            && t < Duration::from_secs(60)
        {
            return Err(invalid("ttl", "must be at least 1m"));
        }
        let regression_threshold = nonempty(&raw.regression_threshold)
            .map(|v| {
                let t: f64 = v.trim_end_matches('%').trim().parse().map_err(|_| {
                    invalid(
                        "regression_threshold",
                        format!("{:?} is not a number (percent, e.g. 20)", truncate(v, 40)),
                    )
                })?;
                if !(t.is_finite() && t > 0.0 && t <= 1000.0) {
                    return Err(invalid(
                        "regression_threshold",
                        "must be a percentage above 0 and at most 1000",
                    ));
                }
                Ok(t)
            })
            .transpose()?;
        let dry_run = nonempty(&raw.dry_run)
            .map(|v| parse_bool("dry_run", v))
            .transpose()?
            .unwrap_or(false);
        let pr = nonempty(&raw.pr)
            .map(|v| {
                v.trim_start_matches('#')
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        invalid(
                            "pr",
                            format!("{:?} is not a pull request number", truncate(v, 40)),
                        )
                    })
            })
            .transpose()?;
        let max_deletions = nonempty(&raw.max_deletions)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    invalid(
                        "max_deletions",
                        format!("{:?} is not a whole number", truncate(v, 40)),
                    )
                })
            })
            .transpose()?
            .unwrap_or(20);
        let grace_period = nonempty(&raw.grace_period)
            .map(|v| parse_duration("grace_period", v))
            .transpose()?
            .unwrap_or(Duration::from_secs(3600));

        let preview_secrets = match nonempty(&raw.preview_secrets) {
            Some(text) => parse_preview_secrets(text)?,
            None => BTreeMap::new(),
        };

        let neon_api_url = parse_url(
            "neon_api_url",
            nonempty(&raw.neon_api_url).unwrap_or(DEFAULT_NEON_API_URL),
        )?;
        let fly_api_url = parse_url(
            "fly_api_url",
            nonempty(&raw.fly_api_url).unwrap_or(DEFAULT_FLY_API_URL),
        )?;
        let image = nonempty(&raw.image).map(str::to_string);
        if let Some(img) = &image
            && (img.chars().any(|c| c.is_whitespace() || c.is_control()) || img.len() > 512)
        {
            return Err(invalid(
                "image",
                "must be one registry reference like registry.fly.io/app:tag",
            ));
        }

        Ok(Config {
            command,
            config_path: PathBuf::from(nonempty(&raw.config).unwrap_or("atlas.toml")),
            working_directory: nonempty(&raw.working_directory).map(PathBuf::from),
            github_token,
            github_app_login: nonempty(&raw.github_app_login).map(|l| l.trim().to_string()),
            alert_webhook,
            neon: NeonAccess {
                api_key: neon_key,
                project_id: nonempty(&raw.neon_project_id).map(str::to_string),
                api_url: neon_api_url,
            },
            fly: FlyAccess {
                api_token: fly_token,
                org: nonempty(&raw.fly_org).map(str::to_string),
                api_url: fly_api_url,
            },
            gate: GateAccess {
                secret: secret(&raw.gate_secret),
                image: nonempty(&raw.gate_image).map(str::to_string),
                github_client_id: nonempty(&raw.gate_github_client_id).map(str::to_string),
                github_client_secret: secret(&raw.gate_github_client_secret),
            },
            image,
            preview_secrets,
            policy: Policy {
                fork_policy,
                trusted_label,
                pin_label,
                trust_dependabot,
                tag_pattern,
                command,
                pr,
            },
            ttl,
            regression_threshold,
            baseline: nonempty(&raw.baseline).map(PathBuf::from),
            template_dir: nonempty(&raw.template_dir).map(PathBuf::from),
            dry_run,
            pr,
            max_deletions,
            grace_period,
        })
    }

    /// Reads and validates inputs from variables.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Config, InputError> {
        Config::from_raw(&RawInputs::from_vars(vars)?)
    }

    /// Every secret value this config holds, to be masked at once.
    pub fn secret_values(&self) -> Vec<&str> {
        let mut v: Vec<&str> = [
            &self.github_token,
            &self.neon.api_key,
            &self.fly.api_token,
            &self.gate.secret,
            &self.gate.github_client_secret,
            &self.alert_webhook,
        ]
        .into_iter()
        .flatten()
        .map(Secret::expose)
        .collect();
        v.extend(self.preview_secrets.values().map(Secret::expose));
        v
    }

    /// The first cloud secret input with no value (a fork's run gets none).
    pub fn missing_cloud_secret(&self) -> Option<&'static str> {
        if self.neon.api_key.is_none() {
            Some("neon_api_key")
        } else if self.fly.api_token.is_none() {
            Some("fly_api_token")
        } else {
            None
        }
    }

    /// Checks the inputs the cloud providers need; the error names the first missing one.
    pub fn require_cloud(&self) -> Result<(), InputError> {
        let why = || " for a cloud preview (Neon + Fly)".to_string();
        if self.neon.api_key.is_none() {
            return Err(InputError::Missing {
                input: "neon_api_key",
                why: why(),
            });
        }
        if self.neon.project_id.is_none() {
            return Err(InputError::Missing {
                input: "neon_project_id",
                why: why(),
            });
        }
        if self.fly.api_token.is_none() {
            return Err(InputError::Missing {
                input: "fly_api_token",
                why: why(),
            });
        }
        if self.fly.org.is_none() {
            return Err(InputError::Missing {
                input: "fly_org",
                why: why(),
            });
        }
        if self.image.is_none() {
            return Err(InputError::Missing {
                input: "image",
                why: " (the container image to deploy, built by an earlier step)".into(),
            });
        }
        Ok(())
    }

    pub fn require_github_token(&self) -> Result<&Secret, InputError> {
        self.github_token.as_ref().ok_or(InputError::Missing {
            input: "github_token",
            why: " (usually `${{ github.token }}`)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_inputs_are_absent_and_defaults_apply() {
        let c = Config::from_vars(vars(&[
            ("INPUT_NEON_API_KEY", ""),
            ("INPUT_FORK_POLICY", ""),
            ("INPUT_TTL", ""),
        ]))
        .unwrap();
        assert!(c.neon.api_key.is_none());
        assert_eq!(c.policy.fork_policy, ForkPolicy::Skip);
        assert_eq!(c.neon.api_url.as_str(), "https://console.neon.tech/api/v2");
        assert_eq!(c.config_path, PathBuf::from("atlas.toml"));
        assert_eq!(c.command, ForcedCommand::Auto);
    }

    #[test]
    fn bad_values_name_the_input() {
        let cases = [
            ("INPUT_FORK_POLICY", "yolo", "fork_policy"),
            ("INPUT_TTL", "forever", "ttl"),
            ("INPUT_TTL", "5s", "ttl"),
            ("INPUT_DRY_RUN", "maybe", "dry_run"),
            ("INPUT_REGRESSION_THRESHOLD", "-3", "regression_threshold"),
            ("INPUT_REGRESSION_THRESHOLD", "abc", "regression_threshold"),
            ("INPUT_NEON_API_URL", "ftp://x", "neon_api_url"),
            ("INPUT_FLY_API_URL", "not a url", "fly_api_url"),
            ("INPUT_PR", "0", "pr"),
            ("INPUT_COMMAND", "deploy-prod", "command"),
            ("INPUT_IMAGE", "a b", "image"),
            ("INPUT_PREVIEW_SECRETS", "lower=1", "preview_secrets"),
            ("INPUT_PREVIEW_SECRETS", "NOEQUALS", "preview_secrets"),
            ("INPUT_TRUST_DEPENDABOT", "nah", "trust_dependabot"),
            ("INPUT_TTL", "1h\0", "ttl"),
        ];
        for (k, v, input) in cases {
            let err = Config::from_vars(vars(&[(k, v)])).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("input `{input}` is invalid")),
                "{k}={v:?}: {msg}"
            );
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_errors() {
        let c = Config::from_vars(vars(&[
            ("INPUT_NEON_API_KEY", "neon-key-abcdef123456"),
            (
                "INPUT_PREVIEW_SECRETS",
                "STRIPE_KEY=sk_test_zzz999\n# c\n\nB_2=val-42-xx",
            ),
        ]))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("neon-key-abcdef123456"));
        assert!(!dbg.contains("sk_test_zzz999"));
        assert_eq!(c.preview_secrets.len(), 2);
        assert_eq!(c.secret_values().len(), 3);
        let err = Config::from_vars(vars(&[(
            "INPUT_PREVIEW_SECRETS",
            "bad name=leaky-secret-1234",
        )]))
        .unwrap_err();
        assert!(!err.to_string().contains("leaky-secret-1234"));
    }

    #[test]
    fn require_cloud_names_the_missing_input() {
        let c = Config::from_vars(vars(&[("INPUT_NEON_API_KEY", "k-123456")])).unwrap();
        let e = c.require_cloud().unwrap_err();
        assert!(e.to_string().contains("`neon_project_id`"), "{e}");
        let c = Config::from_vars(vars(&[])).unwrap();
        assert!(
            c.require_github_token()
                .unwrap_err()
                .to_string()
                .contains("github_token")
        );
    }

    #[test]
    fn settings_reject_unknown_keys_with_line() {
        let text = "[app]\nport = 3000\n\n[database]\nparnet = \"main\"\n";
        let e = Settings::parse(text, "atlas.toml").unwrap_err().to_string();
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("parnet"), "{e}");
        let e = Settings::parse("[nope]\n", "atlas.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn settings_parse_full_example() {
        let text = r#"
[app]
name = "kitchen"
port = 3000
health_path = "/health"
readiness_timeout = "90s"

[database]
parent = "main"
migrations = "psql \"$DATABASE_URL\" -f migrations/001.sql"
schema_only = true
external_systems = ["stripe (test mode)"]

[preview]
access = "public"
secrets = ["STRIPE_KEY"]
ttl = "3d"

[[smoke]]
path = "/health"

[[smoke]]
name = "menu"
method = "GET"
path = "/menu"
status = 200
body_contains = "items"
"#;
        let s = Settings::parse(text, "atlas.toml").unwrap();
        assert_eq!(s.app.port, 3000);
        assert_eq!(s.app.readiness_timeout, Duration::from_secs(90));
        assert_eq!(s.smoke.len(), 2);
        assert_eq!(s.smoke[0].method, "GET");
        assert_eq!(s.preview.ttl, Duration::from_secs(3 * 86400));
    }
}
