//! `atlas.toml` ([`Settings`]): every section in one place, parsed strictly (unknown keys are
//! errors that give the key and the line). Each engine and provider takes only its own section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// atlas.toml

/// Serde helpers for durations written as `500ms`, `30s`, `5m`.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like 30s or 5m ({e})"))
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub mod option {
        use super::*;
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// `atlas.toml`. Every section has defaults; unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub app: AppSettings,
    pub database: DatabaseSettings,
    pub preview: PreviewSettings,
    pub smoke: Vec<SmokeCheck>,
    pub load: LoadSettings,
    pub baseline: GateSettings,
    pub local: LocalSettings,
    pub neon: NeonSettings,
    pub fly: FlySettings,
    pub verify: VerifySettings,
    pub templates: TemplateSettings,
    pub evidence: EvidenceSettings,
    pub lifecycle: LifecycleSettings,
    pub cost: CostSettings,
}

/// `[lifecycle]` in atlas.toml: when previews may run.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSettings {
    /// `"Mon-Fri 07:00-20:00 Europe/Berlin"`: outside these hours the scheduled sweep stops the
    /// previews' machines (they start again on the first request). Unset: always allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_hours: Option<super::active_hours::ActiveHours>,
}

/// `[cost]` in atlas.toml: the price table of the cost estimate, in US dollars. The defaults
/// are the providers' published list prices (see `crate::cost` for the sources); override
/// them with your contract's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSettings {
    /// Fly Machines: per shared vCPU per hour (with its first 256 MB of RAM).
    pub fly_shared_cpu_hour: f64,
    /// Fly Machines: per performance vCPU per hour (with its first 2 GB of RAM).
    pub fly_performance_cpu_hour: f64,
    /// Fly Machines: per GB of RAM beyond what the vCPUs include, per hour.
    pub fly_memory_gb_hour: f64,
    /// Neon: per compute-unit hour.
    pub neon_cu_hour: f64,
    /// Neon: per GB of storage per month.
    pub neon_storage_gb_month: f64,
    /// The size of a preview branch's compute, in compute units (Neon's smallest: 0.25).
    pub neon_compute_units: f64,
}

impl Default for CostSettings {
    fn default() -> Self {
        CostSettings {
            fly_shared_cpu_hour: 0.00266,
            fly_performance_cpu_hour: 0.0425,
            fly_memory_gb_hour: 0.00685,
            neon_cu_hour: 0.14,
            neon_storage_gb_month: 0.35,
            neon_compute_units: 0.25,
        }
    }
}

impl CostSettings {
    /// Every price is a finite number >= 0 (the key is named otherwise).
    fn check(&self) -> Result<(), String> {
        let all = [
            ("fly_shared_cpu_hour", self.fly_shared_cpu_hour),
            ("fly_performance_cpu_hour", self.fly_performance_cpu_hour),
            ("fly_memory_gb_hour", self.fly_memory_gb_hour),
            ("neon_cu_hour", self.neon_cu_hour),
            ("neon_storage_gb_month", self.neon_storage_gb_month),
            ("neon_compute_units", self.neon_compute_units),
        ];
        for (k, v) in all {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("[cost] {k} = {v} must be a number >= 0"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSettings {
    /// Name prefix for every resource (default: the repository name).
    pub name: Option<String>,
    /// The port the app listens on (`PORT` is set to it on Fly; locally a free port is used).
    pub port: u16,
    /// The readiness path probed before any test.
    pub health_path: String,
    #[serde(with = "duration")]
    pub readiness_timeout: Duration,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            name: None,
            port: 8080,
            health_path: "/healthz".into(),
            readiness_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataModel {
    #[default]
    DatabaseBranch,
    /// A copy of the parent with `[[database.masking]]` applied before the app sees it.
    Anonymized,
    Seeded,
    Fixtures,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub data_model: DataModel,
    /// The parent branch previews branch from.
    pub parent: String,
    /// The database and role whose connection URI the app receives.
    pub database: String,
    pub role: String,
    pub schema_only: bool,
    /// Shell command that applies migrations; runs with `DATABASE_URL` set to the branch.
    pub migrations: Option<String>,
    /// External systems the preview may reach (shown in the data boundary clause).
    pub external_systems: Vec<String>,
    /// Shell command that fills a new branch (`seeded`, `fixtures`); runs once, after the
    /// migrations, with `DATABASE_URL` set to the branch.
    pub seed: Option<String>,
    /// The masking rules of `data_model = "anonymized"` (see `data::masking`).
    pub masking: Vec<MaskingRule>,
    /// `never` (default) or `on-push`: restore the branch from its parent on every push.
    pub reset: ResetPolicy,
    /// Bound on the anonymization of a new branch (Neon's masking run, or the local SQL).
    #[serde(with = "duration")]
    pub anonymize_timeout: Duration,
    /// The branch's compute suspends after this long without queries (Neon's
    /// `suspend_timeout_seconds`, 1 minute to 1 week); unset: the project's default (5 minutes).
    #[serde(
        deserialize_with = "suspend_after",
        serialize_with = "duration::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub suspend_after: Option<Duration>,
    /// The migration tool's bookkeeping tables (`table` or `schema.table`): a schema-only copy
    /// (`fixtures`, `schema_only`) keeps their rows, so the migrations the parent already has
    /// are not run again on the branch. Default: the tables of the common tools.
    #[serde(deserialize_with = "table_names")]
    pub migrations_tables: Vec<String>,
}

/// The bookkeeping tables of common migration tools (what `migrations_tables` defaults to).
pub const MIGRATIONS_TABLES: &[&str] = &[
    "schema_migrations",
    "_sqlx_migrations",
    "__diesel_schema_migrations",
    "refinery_schema_history",
    "seaql_migrations",
    "flyway_schema_history",
    "alembic_version",
    "django_migrations",
    "goose_db_version",
    "knex_migrations",
    "knex_migrations_lock",
    "_prisma_migrations",
    "atlas_schema_revisions",
    "ar_internal_metadata",
];

/// `table` or `schema.table`, plain identifiers only (the names go into SQL).
pub fn is_table_name(s: &str) -> bool {
    let ident = |p: &str| {
        p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match s.split_once('.') {
        Some((schema, table)) => ident(schema) && ident(table),
        None => ident(s),
    }
}

fn table_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if let Some(bad) = v.iter().find(|t| !is_table_name(t)) {
        return Err(serde::de::Error::custom(format!(
            "[database] migrations_tables: {:?} is not a table name (`table` or `schema.table`, letters, digits and _)",
            crate::text::truncate(bad, 80)
        )));
    }
    Ok(v)
}

/// `[database] suspend_after`, within the range Neon accepts.
fn suspend_after<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = duration::deserialize(d)?;
    if v < Duration::from_secs(60) || v > Duration::from_secs(7 * 24 * 3600) {
        return Err(serde::de::Error::custom(format!(
            "suspend_after = {:?} is outside 1m..=7d, the range Neon accepts",
            humantime::format_duration(v).to_string()
        )));
    }
    Ok(Some(v))
}

/// `[database] reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResetPolicy {
    #[default]
    Never,
    OnPush,
}

/// One `[[database.masking]]` rule: a column and what replaces its values, either a PostgreSQL
/// Anonymizer function (`anon.fake_email()`) or a literal `value`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingRule {
    #[serde(default = "default_schema")]
    pub schema: String,
    pub table: String,
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

fn default_schema() -> String {
    "public".into()
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            data_model: DataModel::DatabaseBranch,
            parent: "main".into(),
            database: "neondb".into(),
            role: "neondb_owner".into(),
            schema_only: false,
            migrations: None,
            external_systems: Vec::new(),
            seed: None,
            masking: Vec::new(),
            reset: ResetPolicy::Never,
            anonymize_timeout: Duration::from_secs(10 * 60),
            suspend_after: None,
            migrations_tables: MIGRATIONS_TABLES.iter().map(|t| t.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewSettings {
    /// Who can open the preview: `public`, `token`, ...
    pub access: String,
    /// Names of the secrets a preview receives (values come from the `preview_secrets` input).
    pub secrets: Vec<String>,
    /// Default TTL when the `ttl` input is not set.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// How many previous commits stay reachable at their commit URLs (`/_atlas/c/<sha7>/`,
    /// through the access gate); 0 keeps none.
    pub keep_commits: usize,
    /// Which data a kept commit runs on: a frozen copy of the preview's branch (`snapshot`) or
    /// the preview's branch itself (`shared`).
    pub commit_data: CommitData,
    /// At most this many previews per repository at once (unset: no cap). See `crate::quota`.
    #[serde(
        deserialize_with = "max_previews",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_previews: Option<u32>,
    /// What a new preview does at the cap.
    pub quota_policy: QuotaPolicy,
    /// `access = "github"`: members of these teams (`org/team-slug`) get in besides the
    /// repository's readers.
    #[serde(deserialize_with = "team_names")]
    pub allowed_teams: Vec<String>,
}

/// `org/team-slug`, as GitHub spells them (the slug, not the display name).
pub fn is_team_name(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && !p.starts_with('-')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    matches!(s.split_once('/'), Some((org, team)) if part(org) && part(team))
}

fn team_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if let Some(bad) = v.iter().find(|t| !is_team_name(t)) {
        return Err(serde::de::Error::custom(format!(
            "[preview] allowed_teams: {:?} is not `org/team-slug` (e.g. \"acme/reviewers\")",
            crate::text::truncate(bad, 80)
        )));
    }
    Ok(v)
}

/// `[preview] keep_commits` when unset.
pub const DEFAULT_KEEP_COMMITS: usize = 3;

impl Default for PreviewSettings {
    fn default() -> Self {
        PreviewSettings {
            access: "public".into(),
            secrets: Vec::new(),
            ttl: Duration::from_secs(7 * 24 * 3600),
            allowed_teams: Vec::new(),
            max_previews: None,
            quota_policy: QuotaPolicy::EvictOldest,
            keep_commits: DEFAULT_KEEP_COMMITS,
            commit_data: CommitData::Snapshot,
        }
    }
}

/// `[preview] commit_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CommitData {
    /// Before a push's migrations, the data the outgoing commit ran against is frozen for it (a
    /// child branch on Neon, a template copy locally), so its commit URL keeps its schema.
    #[default]
    Snapshot,
    /// Kept commits run on the preview's branch (one branch per preview, for projects at their
    /// branch limit): a schema-changing push can break them.
    Shared,
}

/// `[preview] max_previews`: a positive integer (a cap of zero would refuse every preview,
/// which is what not installing Atlas does).
fn max_previews<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = i64::deserialize(d)?;
    if v <= 0 {
        return Err(serde::de::Error::custom(format!(
            "max_previews = {v}: it must be a positive integer (leave it out for no cap)"
        )));
    }
    u32::try_from(v)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("max_previews = {v} is too large")))
}

/// `[preview] quota_policy`: what a NEW preview does when `max_previews` are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaPolicy {
    /// Tear down the least recently active unpinned preview to make room.
    #[default]
    EvictOldest,
    /// Build nothing; say why in the PR comment and the summary.
    Refuse,
}

impl QuotaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPolicy::EvictOldest => "evict-oldest",
            QuotaPolicy::Refuse => "refuse",
        }
    }
}

/// One smoke check: `method path` must answer `status` (and contain `body_contains`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
    /// The body must not contain this (e.g. a parent's email in an anonymized preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_excludes: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// Use this PostgreSQL server instead of starting one.
    pub database_url: Option<String>,
    /// The command that runs the app (gets `PORT`, `DATABASE_URL`, `ATLAS_COMMIT_SHA`, ...).
    pub command: Option<String>,
    /// A build step run once before the app starts.
    pub build: Option<String>,
    /// Where atlas keeps its cluster, state, logs and rendered comments.
    pub state_dir: PathBuf,
    /// Directory with `initdb`/`pg_ctl` when they are not found automatically.
    pub pg_bindir: Option<PathBuf>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            database_url: None,
            command: None,
            build: None,
            state_dir: PathBuf::from(".atlas"),
            pg_bindir: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateSettings {
    /// A directory whose `*.md.j2` files override the embedded templates.
    pub dir: Option<PathBuf>,
}

/// `[evidence]`: links from the PR comment into the team's own tools.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceSettings {
    /// A trace viewer's URL with `{trace_id}`, e.g.
    /// `https://grafana.example.com/explore?traceId={trace_id}`: each trace id in the evidence
    /// links there. Without it the ids are listed.
    #[serde(deserialize_with = "trace_url")]
    pub trace_url: Option<String>,
    /// A log viewer's URL with any of `{app}`, `{from}` and `{to}` (RFC 3339): the preview's
    /// logs over the window Atlas measured it.
    #[serde(deserialize_with = "logs_url")]
    pub logs_url: Option<String>,
}

fn url_template<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
    allowed: &[&str],
    required: &str,
) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    crate::text::check_url_template(&s, allowed)
        .and_then(|()| {
            if required.is_empty() || s.contains(&format!("{{{required}}}")) {
                Ok(())
            } else {
                Err(format!("it has no {{{required}}}"))
            }
        })
        .map_err(|e| serde::de::Error::custom(format!("[evidence] {key} {s:?}: {e}")))?;
    Ok(Some(s))
}

fn trace_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    url_template(d, "trace_url", &["trace_id"], "trace_id")
}

fn logs_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    url_template(d, "logs_url", &["app", "from", "to"], "")
}

fn pages_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let t = s.trim();
    if t.is_empty() {
        return Ok(Some(String::new()));
    }
    match url::Url::parse(t) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(Some(t.to_string()))
        }
        _ => Err(serde::de::Error::custom(format!(
            "[baseline] pages_url {s:?}: expected an http(s):// URL (or \"\" for no link)"
        ))),
    }
}

/// An `atlas.toml` error that gives the key and the line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SettingsError {
    pub path: String,
    pub message: String,
}

impl Settings {
    /// Parses `atlas.toml` text; errors carry the line and the offending key.
    pub fn parse(text: &str, path: &str) -> Result<Settings, SettingsError> {
        let s = Settings::parse_toml(text, path)?;
        s.cost.check().map_err(|message| SettingsError {
            path: path.to_string(),
            message: match line_of(text, "[cost]") {
                Some(l) => format!("line {l}: {message}"),
                None => message,
            },
        })?;
        Ok(s)
    }

    fn parse_toml(text: &str, path: &str) -> Result<Settings, SettingsError> {
        toml::from_str::<Settings>(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().to_string();
            SettingsError {
                path: path.to_string(),
                message: match line {
                    Some(l) => match key_at(text, l) {
                        // A value's own error (an unknown variant, a bad duration) does not
                        // name its key; the key is on that line.
                        Some(key) if !msg.contains(&key) => format!("line {l}: {key}: {msg}"),
                        _ => format!("line {l}: {msg}"),
                    },
                    None => msg,
                },
            }
        })
    }

    /// Loads the file; a missing file is an error only when `required` (the input named it).
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Settings> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Settings::parse(&text, &path.display().to_string())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Settings::default())
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot read config {}: {e} (set the `config` input to the path of atlas.toml)",
                path.display()
            )),
        }
    }
}

/// The 1-based line where `section` starts, if it is there.
fn line_of(text: &str, section: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim() == section)
        .map(|i| i + 1)
}

/// `[section] key` of a `key = value` on line `line` (1-based), if that line is one.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['));
    Some(match section {
        Some(s) => format!("{s} {key}"),
        None => key.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Sections the engines and providers read; each takes only its own.

/// The arrival model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Constant arrival rate: `rate` requests per second whatever the server does.
    #[default]
    Open,
    /// `vus` virtual users, each sending as soon as its previous response arrived.
    Closed,
}

/// Which rule turns a load history into a bound (see `load::models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdModel {
    Percentage,
    #[default]
    TTest,
    Iqr,
}

impl ThresholdModel {
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdModel::Percentage => "percentage",
            ThresholdModel::TTest => "t_test",
            ThresholdModel::Iqr => "iqr",
        }
    }
}

impl std::fmt::Display for ThresholdModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ThresholdModel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "percentage" => Ok(ThresholdModel::Percentage),
            "t_test" => Ok(ThresholdModel::TTest),
            "iqr" => Ok(ThresholdModel::Iqr),
            other => Err(format!(
                "{other:?} is not a threshold model (percentage, t_test or iqr)"
            )),
        }
    }
}

/// One request of the scenario (`[[load.requests]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestSpec {
    /// Name in the per-endpoint table (default: `METHOD path`).
    pub name: Option<String>,
    pub method: String,
    /// Relative to the target URL (`/api/items?page=2`).
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Relative share of the traffic (default 1).
    pub weight: u32,
    /// The status that counts as success (default: any 2xx or 3xx).
    pub expect: Option<u16>,
    /// This endpoint's p95 must stay under this many milliseconds, whatever its history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// This endpoint's `percentage` margin over its history (default: `[baseline]`'s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_pct: Option<f64>,
    /// This endpoint's threshold model (default: `[baseline] model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ThresholdModel>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            name: None,
            method: "GET".into(),
            path: "/".into(),
            headers: BTreeMap::new(),
            body: None,
            weight: 1,
            expect: None,
            p95_ms: None,
            threshold_pct: None,
            model: None,
        }
    }
}

/// `[load]` in atlas.toml. Flags override it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSettings {
    /// Run the load test in the preview and verify flows (default true).
    pub enabled: bool,
    pub model: Model,
    /// Requests per second (open model).
    pub rate: f64,
    /// Virtual users (closed model).
    pub vus: usize,
    /// The measured period, after the warm-up.
    #[serde(with = "duration")]
    pub duration: Duration,
    /// Excluded from every statistic: cold computes and machines start here.
    #[serde(with = "duration")]
    pub warmup: Duration,
    /// Keep-alive connections: the cap on requests in flight (open model).
    pub connections: usize,
    /// Per-request timeout, from the actual send.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long requests in flight at the deadline may still finish.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// A request sent this much behind its schedule counts as late.
    #[serde(with = "duration")]
    pub late_after: Duration,
    /// Repeat the test and gate on the median across runs.
    pub runs: usize,
    /// The scenario (default: `GET /`).
    pub requests: Vec<RequestSpec>,
    /// The process's proxy variables (`http_proxy`, `https_proxy`, `all_proxy`, `no_proxy`, in
    /// either case), which the generator honours like curl; filled in by `commands/`, which
    /// alone reads the environment. Not an atlas.toml key.
    #[serde(skip)]
    pub proxy_env: Vec<(String, String)>,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            enabled: true,
            model: Model::Open,
            rate: 50.0,
            vus: 10,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(10),
            connections: 50,
            timeout: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            late_after: Duration::from_millis(10),
            runs: 1,
            requests: Vec::new(),
            proxy_env: Vec::new(),
        }
    }
}

/// `[baseline]` in atlas.toml: the gate's thresholds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSettings {
    /// The baseline file (default `baseline.json`).
    pub path: std::path::PathBuf,
    /// Relative regression that blocks, in percent (default 20).
    pub threshold_pct: f64,
    /// A latency regression must also be at least this many milliseconds (default 10).
    pub latency_floor_ms: f64,
    /// An error-rate regression must also be at least this many percentage points (default 0.5).
    pub error_floor_pp: f64,
    /// Significance level for the error-rate z-test and the rank test (default 0.05).
    pub alpha: f64,
    /// Fewer measured requests than this on either side is inconclusive (default 100).
    pub min_requests: u64,
    /// An achieved rate below this fraction of the target is inconclusive (default 0.99).
    pub min_rate_ratio: f64,
    /// Runs per side from which the rank test must confirm a latency regression (default 4).
    pub rank_test_runs: usize,
    /// The threshold model over a history (`percentage`, `t_test`, `iqr`; default `t_test`).
    pub model: ThresholdModel,
    /// The last N comparable runs of a history the models use (default 20).
    pub history_runs: usize,
    /// Fewer comparable runs than this in the history is inconclusive (default 5).
    pub min_history: usize,
    /// `t_test`: one-sided confidence of each metric's upper bound (default 0.995).
    pub confidence: f64,
    /// `iqr`: the fence multiplier k in `Q3 + k * IQR` (default 1.5).
    pub iqr_k: f64,
    /// A history to gate against instead of `path`: a directory of summaries or a history
    /// file (unset: the fixed baseline).
    pub history: Option<std::path::PathBuf>,
    /// The most entries a history file keeps; older ones are folded away (default 200).
    pub history_max: usize,
    /// The forge's data branch that keeps the history (default `atlas-history`; on GitHub a
    /// branch of the repository, locally a directory; `""` turns it off): verify on the default
    /// branch appends to it, a PR preview compares with its runs up to the merge base.
    pub history_branch: String,
    /// Open, update and close one issue per endpoint and metric that regresses on the default
    /// branch (default true; needs `issues: write`).
    pub alert_issues: bool,
    /// Where the history branch's dashboard is served (the comment, the issues and the
    /// webhook link to it). Unset: GitHub Pages of the repository on the GitHub the run is on
    /// (`https://<owner>.github.io/<repo>/`, on GitHub Enterprise Server
    /// `https://pages.<host>/<owner>/<repo>/`); `""`: no link.
    #[serde(deserialize_with = "pages_url")]
    pub pages_url: Option<String>,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            path: "baseline.json".into(),
            threshold_pct: 20.0,
            latency_floor_ms: 10.0,
            error_floor_pp: 0.5,
            alpha: 0.05,
            min_requests: 100,
            min_rate_ratio: 0.99,
            rank_test_runs: 4,
            model: ThresholdModel::default(),
            history_runs: 20,
            min_history: 5,
            // per metric: p95 and avg are both gated (and correlated), so 99.5% each keeps the
            // whole gate's false alarms near 1% (bench/RESULTS.md, the history gate).
            confidence: 0.995,
            iqr_k: 1.5,
            history: None,
            history_max: 200,
            history_branch: "atlas-history".into(),
            alert_issues: true,
            pages_url: None,
        }
    }
}

/// `[neon]` in atlas.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeonSettings {
    /// Ask for the pooled (PgBouncer) connection URI.
    pub pooled: bool,
    /// How long to wait for Neon operations (branch creation, endpoint start) to finish.
    #[serde(with = "duration")]
    pub operation_timeout: Duration,
}

impl Default for NeonSettings {
    fn default() -> Self {
        NeonSettings {
            pooled: false,
            operation_timeout: Duration::from_secs(300),
        }
    }
}

/// `[fly]` in atlas.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlySettings {
    pub region: String,
    pub cpus: u32,
    pub memory_mb: u32,
    /// `shared` or `performance`.
    pub cpu_kind: String,
    /// The port the app listens on inside the machine (default: `[app] port`).
    pub internal_port: Option<u16>,
    /// `suspend` (default), `stop` or `off`: what Fly's proxy does with an idle machine.
    pub auto_stop: AutoStop,
    /// The preview URL; `{app}` is replaced by the app name. Default `https://{app}.fly.dev`.
    pub preview_url: Option<String>,
}

impl Default for FlySettings {
    fn default() -> Self {
        FlySettings {
            region: "iad".into(),
            cpus: 1,
            memory_mb: 256,
            cpu_kind: "shared".into(),
            internal_port: None,
            auto_stop: AutoStop::Suspend,
            preview_url: None,
        }
    }
}

/// `[fly] auto_stop`: Fly's proxy stops or suspends an idle machine and starts it again on the
/// next request (`autostart` is always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoStop {
    /// The machine's memory is snapshotted: a wake-up is a resume (hundreds of ms on Fly).
    #[default]
    Suspend,
    /// The machine shuts down: a wake-up is a cold boot.
    Stop,
    /// Never sleeps.
    Off,
}

impl AutoStop {
    /// The value of Fly's `services[].autostop`.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoStop::Suspend => "suspend",
            AutoStop::Stop => "stop",
            AutoStop::Off => "off",
        }
    }
}

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
    /// The canary's own error rate may not exceed this percent, whatever stable does: a
    /// relative limit alone passes a canary at 30% errors beside a stable at 29%.
    pub max_error_rate_pct: f64,
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
            max_error_rate_pct: 5.0,
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
            if !(0.0..=100.0).contains(&c.max_error_rate_pct) {
                return bad(
                    "canary.max_error_rate_pct",
                    "must be a percent from 0 to 100",
                );
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
