//! The preview contract: seven clauses every preview declares and the PR comment shows
//! (DESIGN.md section 2). It is data, rendered by templates; a clause that cannot be honoured is
//! an error from [`Contract::check`], never a silently missing section.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
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
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DataBoundary {
    /// `database-branch`, `seeded`, `fixtures` or `none`.
    pub model: String,
    pub provider: String,
    pub branch: Option<String>,
    pub parent: Option<String>,
    pub schema_only: bool,
    pub external_systems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IdentityBoundary {
    /// Who can open it: `public`, `token`, ...
    pub access: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SecretBoundary {
    /// Names only, never values.
    pub names: Vec<String>,
    pub production_secrets: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct SmokeResult {
    pub name: String,
    pub method: String,
    pub path: String,
    pub expected: u16,
    pub status: Option<u16>,
    pub ok: bool,
    pub duration_ms: u64,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    pub step: String,
    pub ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EvidenceBoundary {
    pub smoke: Vec<SmokeResult>,
    /// Load summary and baseline comparison, as the load module serialises them.
    pub load: Option<serde_json::Value>,
    pub comparison: Option<serde_json::Value>,
    /// Why there is no load evidence (e.g. "load test: not configured").
    pub load_note: Option<String>,
    pub logs: Option<String>,
    pub timings: Vec<Timing>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LifecycleBoundary {
    pub created: Option<String>,
    pub updated: Option<String>,
    pub expires: Option<String>,
    pub destroyed: Option<String>,
    pub audit: Option<String>,
}

/// The seven clauses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Contract {
    pub code: CodeIdentity,
    pub data: DataBoundary,
    pub identity: IdentityBoundary,
    pub secrets: SecretBoundary,
    pub migrations: MigrationBoundary,
    pub evidence: EvidenceBoundary,
    pub lifecycle: LifecycleBoundary,
}

impl Contract {
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
