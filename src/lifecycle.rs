//! A preview's lifetime beyond one run: `atlas preview extend` moves the expiry of every
//! resource of a PR at once (the app and the database branch carry the same clock, which
//! every push renews and [`crate::sweep`] reads back).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::provider::{Database, Platform};

/// What `extend` moved.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Extended {
    pub pr: u64,
    /// RFC 3339.
    pub expires: String,
    /// `app <name>` / `database-branch <name>`, each moved.
    pub moved: Vec<String>,
}

/// Moves the expiry of PR `pr`'s app and branch to `at`. Only resources the providers list as
/// Atlas's own for that PR are touched; a PR with none is an error, and so is a resource whose
/// expiry could not be moved (the other keeps its new one: both are retried by a rerun).
pub async fn extend(
    database: &dyn Database,
    platform: &dyn Platform,
    pr: u64,
    at: DateTime<Utc>,
) -> anyhow::Result<Extended> {
    let mut moved = Vec::new();
    let mut failed = Vec::new();
    for app in platform
        .list_apps()
        .await?
        .into_iter()
        .filter(|o| o.pr == pr)
    {
        match platform.set_expiry(&app.name, at).await {
            Ok(()) => moved.push(format!("app {}", app.name)),
            Err(e) => failed.push(format!("app {}: {e:#}", app.name)),
        }
    }
    for b in database
        .list_branches()
        .await?
        .into_iter()
        .filter(|o| o.pr == pr)
    {
        match database.set_expiry(&b.name, at).await {
            Ok(()) => moved.push(format!("database-branch {}", b.name)),
            Err(e) => failed.push(format!("database-branch {}: {e:#}", b.name)),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "extending the preview of PR #{pr} failed for {} (moved: {})",
            crate::secret::redact(&failed.join("; ")),
            if moved.is_empty() {
                "nothing".into()
            } else {
                moved.join(", ")
            }
        );
    }
    if moved.is_empty() {
        anyhow::bail!(
            "PR #{pr} has no preview to extend (no app or database branch of Atlas's carries that PR)"
        );
    }
    Ok(Extended {
        pr,
        expires: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        moved,
    })
}
