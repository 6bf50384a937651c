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

/// What [`pin`] changed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PinOutcome {
    pub pr: u64,
    /// `None`: unpinned.
    pub pinned_by: Option<String>,
    /// `app <name>` / `database-branch <name>`, each changed. Empty: the PR has no preview
    /// (yet): nothing is recorded, and adding the label again once it exists pins it.
    pub changed: Vec<String>,
    /// RFC 3339: the renewed expiry after an unpin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// Pins (`by = Some(login)`) or unpins (`None`) the preview of `pr`, on its resources: the app
/// records who pinned it (kept across pushes; the sweep and the cap read it back), the branch
/// loses its expiry (Neon deletes an expired branch by itself). Unpinning renews both expiries
/// to `renew_at` (the label event is activity). Nothing restarts or rebuilds.
pub async fn pin(
    database: &dyn Database,
    platform: &dyn Platform,
    pr: u64,
    by: Option<&str>,
    renew_at: DateTime<Utc>,
) -> anyhow::Result<PinOutcome> {
    let mut changed = Vec::new();
    let mut failed = Vec::new();
    for app in platform
        .list_apps()
        .await?
        .into_iter()
        .filter(|o| o.pr == pr)
    {
        let mut r = platform.set_pin(&app.name, by).await;
        if r.is_ok() && by.is_none() {
            r = platform.set_expiry(&app.name, renew_at).await;
        }
        match r {
            Ok(()) => changed.push(format!("app {}", app.name)),
            Err(e) => failed.push(format!("app {}: {e:#}", app.name)),
        }
    }
    for b in database
        .list_branches()
        .await?
        .into_iter()
        .filter(|o| o.pr == pr)
    {
        let r = match by {
            Some(_) => database.clear_expiry(&b.name).await,
            None => database.set_expiry(&b.name, renew_at).await,
        };
        match r {
            Ok(()) => changed.push(format!("database-branch {}", b.name)),
            Err(e) => failed.push(format!("database-branch {}: {e:#}", b.name)),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} the preview of PR #{pr} failed for {} (changed: {})",
            if by.is_some() { "pinning" } else { "unpinning" },
            crate::secret::redact(&failed.join("; ")),
            if changed.is_empty() {
                "nothing".into()
            } else {
                changed.join(", ")
            }
        );
    }
    Ok(PinOutcome {
        pr,
        pinned_by: by.map(str::to_string),
        expires: (by.is_none() && !changed.is_empty())
            .then(|| renew_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        changed,
    })
}

/// Rewrites the live preview's sticky comment for a pin change (the lifecycle clause says
/// "pinned by @login", or the renewed expiry), from the contract recorded in it: no rebuild.
/// `Ok(None)`: no live preview comment to update.
pub async fn pin_comment(
    forge: &dyn crate::provider::Forge,
    renderer: &crate::report::Renderer,
    out: &PinOutcome,
) -> anyhow::Result<Option<crate::provider::CommentRef>> {
    let marker = crate::preview::marker(out.pr);
    let Some(mut contract) = forge
        .comment_body(out.pr, &marker)
        .await?
        .as_deref()
        .and_then(crate::contract::Contract::from_comment)
        .filter(|c| c.lifecycle.destroyed.is_none() && !c.code.url.is_empty())
    else {
        return Ok(None);
    };
    contract.lifecycle.pinned_by = out.pinned_by.clone();
    if let Some(e) = &out.expires {
        contract.lifecycle.expires = Some(e.clone());
    }
    let ctx = crate::report::PreviewComment {
        marker: marker.clone(),
        pr: out.pr,
        status: "ready",
        contract: &contract,
        error: None,
        generated_at: Utc::now().to_rfc3339(),
        signed_link: None,
        mint_hint: None,
    };
    let body =
        crate::preview::with_record(renderer.render_comment("preview.md.j2", &ctx)?, &contract);
    Ok(Some(forge.upsert_comment(out.pr, &marker, &body).await?))
}
