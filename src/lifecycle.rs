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
    let moved = each_resource(
        database,
        platform,
        pr,
        "extending",
        async |app| platform.set_expiry(app, at).await,
        async |branch| database.set_expiry(branch, at).await,
    )
    .await?;
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

/// Applies `on_app` to each app and `on_branch` to each database branch that the providers
/// list as Atlas's own for PR `pr`, all of them even when one fails. Returns what changed
/// (`app <name>` / `database-branch <name>`); any failure is an error naming every failed
/// resource and what did change (a rerun retries both).
async fn each_resource(
    database: &dyn Database,
    platform: &dyn Platform,
    pr: u64,
    doing: &str,
    on_app: impl AsyncFn(&str) -> anyhow::Result<()>,
    on_branch: impl AsyncFn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    let mut failed = Vec::new();
    let apps = platform.list_apps().await?;
    let branches = database.list_branches().await?;
    let resources = apps
        .iter()
        .filter(|o| o.pr == pr)
        .map(|o| ("app", o))
        .chain(
            branches
                .iter()
                .filter(|o| o.pr == pr)
                .map(|o| ("database-branch", o)),
        );
    for (kind, o) in resources {
        let r = if kind == "app" {
            on_app(&o.name).await
        } else {
            on_branch(&o.name).await
        };
        match r {
            Ok(()) => changed.push(format!("{kind} {}", o.name)),
            Err(e) => failed.push(format!("{kind} {}: {e:#}", o.name)),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{doing} the preview of PR #{pr} failed for {} (changed: {})",
            crate::secret::redact(&failed.join("; ")),
            if changed.is_empty() {
                "nothing".into()
            } else {
                changed.join(", ")
            }
        );
    }
    Ok(changed)
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
    let changed = each_resource(
        database,
        platform,
        pr,
        if by.is_some() { "pinning" } else { "unpinning" },
        async |app| {
            platform.set_pin(app, by).await?;
            match by {
                Some(_) => Ok(()),
                None => platform.set_expiry(app, renew_at).await,
            }
        },
        async |branch| match by {
            Some(_) => database.clear_expiry(branch).await,
            None => database.set_expiry(branch, renew_at).await,
        },
    )
    .await?;
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
