//! The preview contract: seven clauses every preview declares and the PR comment shows
//! (DESIGN.md section 2). It is data, rendered by templates; a clause that cannot be honoured is
//! an error from [`Contract::check`], never a silently missing section.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeIdentity {
    /// The PR head commit (never the merge commit).
    pub sha: String,
    pub branch: String,
    /// Stable preview URL (always the latest push).
    pub url: String,
    /// Image reference or, locally, the command that runs the app.
    pub artifact: String,
    /// The deployment record (GitHub deployment URL, or local state file).
    pub deployment: Option<String>,
    /// The previous commits kept beside this one, newest first, each at its commit URL (the
    /// stable URL above always shows the newest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<CommitUrl>,
}

/// A kept commit and the URL that opens it (`<url>/_atlas/c/<sha7>/`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitUrl {
    pub sha: String,
    pub url: String,
    /// The data it runs on (its own frozen branch, or the preview's, shared); `None` without a
    /// database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DataBoundary {
    /// `database-branch`, `anonymized`, `seeded`, `fixtures` or `none`.
    pub model: String,
    pub provider: String,
    pub branch: Option<String>,
    pub parent: Option<String>,
    pub schema_only: bool,
    pub external_systems: Vec<String>,
    /// The parent's point in time the branch holds: its head when the branch was created or
    /// last reset (RFC 3339), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_at: Option<String>,
    /// A schema-only branch: how many rows of the migration tool's bookkeeping tables it
    /// holds from the parent (so the parent's migrations are not run again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_records: Option<u64>,
    /// Whether the parent's rows are present: `copied`, `masked` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_rows: Option<String>,
    /// The masking rules applied, `table.column -> function` (never a value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub masking: Vec<String>,
    /// How long this run's new branch took to copy and mask (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masking_ms: Option<u64>,
    /// The seed command (`seeded`, `fixtures`) and how its run went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedResult>,
}

/// The `[database] seed` command of a preview and its last run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedResult {
    pub command: String,
    /// False on a push that reused the branch (a seed runs on a new or reset branch only).
    pub ran: bool,
    pub ok: Option<bool>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<u64>,
    /// Tail of the seed's output (redacted).
    pub output_tail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentityBoundary {
    /// Who can open it: `public`, `signed-link`, `github`, ...
    pub access: String,
    /// In words, who gets in (set when an access gate enforces it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Until when that access holds (the preview's expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretBoundary {
    /// Names only, never values.
    pub names: Vec<String>,
    pub production_secrets: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MigrationBoundary {
    pub command: Option<String>,
    pub ran: bool,
    pub ok: Option<bool>,
    pub duration_ms: Option<u64>,
    /// Tail of the migration output (redacted).
    pub output_tail: Option<String>,
    /// Schema diff against the parent (unified diff), `None` when not measured.
    pub schema_diff: Option<String>,
    pub limits: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SmokeResult {
    pub name: String,
    pub method: String,
    pub path: String,
    pub expected: u16,
    pub status: Option<u16>,
    pub ok: bool,
    pub duration_ms: u64,
    pub detail: Option<String>,
    /// The trace id the check was sent with (its `traceparent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    pub step: String,
    pub ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EvidenceBoundary {
    pub smoke: Vec<SmokeResult>,
    /// Load summary and baseline comparison, as the load module serialises them.
    pub load: Option<serde_json::Value>,
    pub comparison: Option<serde_json::Value>,
    /// Why there is no load evidence (e.g. "load test: not configured").
    pub load_note: Option<String>,
    /// The trend dashboard published with the load history the PR was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    pub logs: Option<String>,
    /// A local app's log over the run: its last lines, redacted and bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_tail: Option<String>,
    pub timings: Vec<Timing>,
    /// The smoke checks and the load test went through the access gate (with this run's
    /// bypass token), so they measured what reviewers get.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub through_gate: bool,
    /// Requests a reviewer can cite by trace id: the slowest of each load endpoint, the failed
    /// load requests and the failed checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<TraceRef>,
}

/// One request of the evidence by the trace id it was sent with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceRef {
    /// `slowest` or `failed`.
    pub kind: String,
    /// The endpoint or check it belongs to (user text: rendered through `md`).
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    pub latency_ms: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The `[evidence] trace_url` link, filled and percent-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleBoundary {
    pub created: Option<String>,
    pub updated: Option<String>,
    pub expires: Option<String>,
    pub destroyed: Option<String>,
    pub audit: Option<String>,
    /// When the branch was last restored from its parent (`reset = "on-push"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<String>,
    /// What the preview does when idle, in words (the app, then the database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep: Option<String>,
    /// Measured: the first request after a sleep took this long (the wake-up), in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_ms: Option<u64>,
    /// The estimated cost per day, in words (`crate::estate::preview_cost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// Who pinned the preview (the pin label's sender): kept past its TTL, never evicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_by: Option<String>,
    /// Why the cap (`max_previews`) refused or evicted this preview.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

/// The pin recorded when the pin label was already on the PR as its preview was deployed:
/// the event names no one who added the label. A login never holds a space, so this cannot
/// be one.
pub const PINNED_AT_DEPLOY: &str = "label present at deploy";

/// How a pin reads in plain text: `pinned by @login`, or `pinned (label present at deploy)`.
/// Renderers escape it (the `pinned` filter of the templates says the same).
pub fn pin_phrase(by: &str) -> String {
    if by == PINNED_AT_DEPLOY {
        format!("pinned ({PINNED_AT_DEPLOY})")
    } else {
        format!("pinned by @{by}")
    }
}

/// The sentence of the lifecycle clause about sleeping: `app_sleep` is the platform's mode
/// (`None`: the app does not sleep), `platform` its kind, `db_suspend` the database compute's
/// idle timeout (`None` with a branch: the provider's default).
pub fn sleep_sentence(
    platform: &str,
    app_sleep: Option<&str>,
    wake_ms: Option<u64>,
    database: Option<(&str, Option<std::time::Duration>)>,
) -> String {
    let mut out = match (app_sleep, platform) {
        (Some(mode), _) => {
            let woke = match wake_ms {
                Some(ms) => format!("the first request after a sleep took {ms} ms (measured)"),
                None => "the wake-up was not measured".into(),
            };
            format!("the app sleeps when idle ({mode}) and wakes on the next request; {woke}")
        }
        (None, p) if p.starts_with("local") => {
            "local previews do not sleep: the process runs until the preview is destroyed".into()
        }
        (None, _) => "the app does not sleep (auto_stop = \"off\")".into(),
    };
    match database {
        Some(("neon", Some(d))) => out.push_str(&format!(
            "; the database compute suspends after {} idle",
            humantime::format_duration(d)
        )),
        Some(("neon", None)) => {
            out.push_str("; the database compute suspends after the project's idle timeout")
        }
        _ => {}
    }
    out
}

/// The seven clauses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Contract {
    pub code: CodeIdentity,
    pub data: DataBoundary,
    pub identity: IdentityBoundary,
    pub secrets: SecretBoundary,
    pub migrations: MigrationBoundary,
    pub evidence: EvidenceBoundary,
    pub lifecycle: LifecycleBoundary,
}

/// Opens the contract's record in a PR comment (see [`Contract::record`]).
const RECORD_OPEN: &str = "<!-- atlas:contract ";
const RECORD_CLOSE: &str = " -->";
/// A schema diff longer than this is cut in the record (its line count is kept).
const RECORD_DIFF_CHARS: usize = 4096;

/// Copies the keys of `from` named in `keys` (those present) into a new object.
fn pick(from: &serde_json::Value, keys: &[&str]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(m) = from.as_object() {
        for k in keys {
            if let Some(v) = m.get(*k) {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

/// What the load table and the latency chart read from a load summary, and nothing else (the
/// summary's histograms and per-step series would not fit in a comment).
fn record_load(load: &serde_json::Value) -> serde_json::Value {
    let metrics = &load["metrics"];
    let mut m = serde_json::Map::new();
    for (name, keys) in [
        (
            "http_req_duration",
            &[
                "avg", "med", "p50", "p90", "p95", "p99", "p(50)", "p(90)", "p(95)", "p(99)",
            ][..],
        ),
        ("http_reqs", &["total"][..]),
        ("errors", &["rate"][..]),
    ] {
        if metrics.get(name).is_some_and(|v| v.is_object()) {
            m.insert(name.into(), pick(&metrics[name], keys));
        }
    }
    serde_json::json!({ "measured": true, "metrics": m })
}

/// What the load table shows of a baseline comparison: the verdict and each metric's row.
fn record_comparison(cmp: &serde_json::Value) -> serde_json::Value {
    let mut out = pick(cmp, &["verdict"]);
    if let Some(rows) = cmp.get("metrics").and_then(|v| v.as_array()) {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                pick(
                    r,
                    &[
                        "name",
                        "label",
                        "unit",
                        "baseline",
                        "current",
                        "verdict",
                        "current_display",
                        "baseline_display",
                        "change_display",
                    ],
                )
            })
            .collect();
        out["metrics"] = serde_json::Value::Array(rows);
    }
    out
}

impl Contract {
    /// The contract as one hidden line for the PR comment, so that `down` can show the contract
    /// the preview last ran under (its evidence included) instead of a fresh one whose evidence
    /// clauses would read "not run". Base64 JSON: no user text (a branch called `-->`) can end
    /// the HTML comment early. Only what the contract and load tables show is kept, and secret values
    /// are redacted before encoding, because nothing can redact them after.
    pub fn record(&self) -> String {
        let mut c = self.clone();
        c.migrations.output_tail = None;
        c.evidence.logs_tail = None;
        if let Some(seed) = &mut c.data.seed {
            seed.output_tail = None;
        }
        if let Some(diff) = &c.migrations.schema_diff
            && diff.len() > RECORD_DIFF_CHARS
        {
            let mut cut = RECORD_DIFF_CHARS;
            while !diff.is_char_boundary(cut) {
                cut -= 1;
            }
            cut = diff[..cut].rfind('\n').map_or(0, |i| i + 1);
            let missing = diff[cut..].lines().count();
            c.migrations.schema_diff = Some(format!("{}{}", &diff[..cut], "\n".repeat(missing)));
        }
        c.evidence.timings.clear();
        c.evidence.load = c.evidence.load.as_ref().map(record_load);
        c.evidence.comparison = c.evidence.comparison.as_ref().map(record_comparison);
        let json = serde_json::to_string(&c).unwrap_or_default();
        let json = crate::secret::redact(&json);
        format!(
            "{RECORD_OPEN}{}{RECORD_CLOSE}",
            base64::engine::general_purpose::STANDARD.encode(json)
        )
    }

    /// The contract recorded in a comment body by [`Contract::record`], if it has a readable one.
    pub fn from_comment(body: &str) -> Option<Contract> {
        let start = body.find(RECORD_OPEN)? + RECORD_OPEN.len();
        let len = body[start..].find(RECORD_CLOSE)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body[start..start + len].trim())
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether `line` is a record (the local forge leaves it out of what it prints).
    pub fn is_record(line: &str) -> bool {
        line.starts_with(RECORD_OPEN)
    }

    /// Fails loudly on a clause that cannot be honoured.
    pub fn check(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if self.code.sha.is_empty() {
            missing.push("code identity: no commit SHA");
        }
        if self.code.url.is_empty() {
            missing.push("code identity: no preview URL");
        }
        if self.data.model.is_empty() {
            missing.push("data boundary: no data model");
        }
        if self.identity.access.is_empty() {
            missing.push("identity boundary: no access policy");
        }
        if self.secrets.production_secrets {
            missing.push("secret boundary: production secrets must never reach a preview");
        }
        if self.lifecycle.created.is_none() && self.lifecycle.destroyed.is_none() {
            missing.push("lifecycle boundary: no creation time");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the preview contract cannot be honoured: {}",
                missing.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Contract {
        let mut c = Contract::default();
        c.code.sha = "0123456789abcdef0123456789abcdef01234567".into();
        c.code.branch = "feat/--> <script>alert(1)</script> `x` | y".into();
        c.code.url = "https://kitchen-pr-7.fly.dev".into();
        c.data.model = "database-branch".into();
        c.identity.access = "public".into();
        c.secrets.names = vec!["API_KEY".into()];
        c.migrations.ran = true;
        c.migrations.ok = Some(true);
        c.migrations.output_tail = Some("lots of output".into());
        c.evidence.load = Some(serde_json::json!({"metrics": {"big": [1, 2, 3]}}));
        c.evidence.comparison = Some(serde_json::json!({"verdict": "pass", "metrics": []}));
        c.evidence.timings = vec![Timing {
            step: "deploy".into(),
            ms: 5,
        }];
        c.lifecycle.created = Some("2026-11-23T10:00:00Z".into());
        c
    }

    #[test]
    fn the_record_round_trips_what_the_contract_table_shows() {
        let c = sample();
        let body = format!("<!-- atlas:preview pr=7 -->\n{}\n## Preview", c.record());
        let back = Contract::from_comment(&body).expect("a readable record");
        assert_eq!(back.code.branch, c.code.branch);
        assert_eq!(back.code.sha, c.code.sha);
        assert_eq!(back.secrets.names, ["API_KEY"]);
        assert_eq!(back.migrations.ok, Some(true));
        assert_eq!(back.evidence.comparison.unwrap()["verdict"], "pass");
        assert!(back.evidence.load.is_some());
        // what the table never shows stays out of the comment.
        assert_eq!(back.migrations.output_tail, None);
        assert!(back.evidence.timings.is_empty());
    }

    #[test]
    fn user_text_cannot_end_the_hidden_comment() {
        let r = sample().record();
        assert!(r.starts_with("<!-- atlas:contract ") && r.ends_with(" -->"));
        let inner = &r["<!-- atlas:contract ".len()..r.len() - " -->".len()];
        assert!(
            inner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
            "{inner}"
        );
        assert!(!r.contains('\n'));
    }

    #[test]
    fn secret_values_are_redacted_before_encoding() {
        let value = "contract-test-secret-7f3a9c";
        crate::secret::register(value);
        let mut c = sample();
        c.data.external_systems = vec![format!("https://user:{value}@example.com")];
        let back = Contract::from_comment(&c.record()).unwrap();
        assert!(!format!("{back:?}").contains(value), "{back:?}");
    }

    #[test]
    fn a_long_schema_diff_is_cut_but_keeps_its_line_count() {
        let mut c = sample();
        let diff: String = (0..2000)
            .map(|i| format!("+ column_{i} integer\n"))
            .collect();
        c.migrations.schema_diff = Some(diff.clone());
        let r = c.record();
        assert!(r.len() < 12_000, "{}", r.len());
        let back = Contract::from_comment(&r).unwrap();
        assert_eq!(
            back.migrations.schema_diff.unwrap().lines().count(),
            diff.lines().count()
        );
    }

    #[test]
    fn unreadable_records_are_none() {
        for body in [
            "no record",
            "<!-- atlas:contract not base64! -->",
            "<!-- atlas:contract aGVsbG8= -->",
            "<!-- atlas:contract ",
        ] {
            assert!(Contract::from_comment(body).is_none(), "{body}");
        }
    }
}
