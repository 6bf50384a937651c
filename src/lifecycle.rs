//! A preview's lifetime beyond one run: `atlas preview extend` moves the expiry of every
//! resource of a PR at once (the app and the database branch carry the same clock, which
//! every push renews and [`crate::sweep`] reads back), the pin label pins or unpins them, and
//! either rewrites the PR's comment, changing only its lifecycle clause ([`rewrite_comment`]).

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

/// What changed a preview's lifecycle, for its comment.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    /// A pin or an unpin: the clause says "pinned by @login", or the renewed expiry.
    Pin(&'a PinOutcome),
    /// `extend`: the clause shows the new expiry (and a signed link lasts until then).
    Extend(&'a Extended),
}

/// Rewrites the live preview's sticky comment after `changed` (see [`rewrite_comment`]);
/// `private_repository` as in [`Rewrite`].
pub async fn lifecycle_comment(
    forge: &dyn crate::provider::Forge,
    platform: &dyn Platform,
    renderer: &crate::report::Renderer,
    changed: Changed<'_>,
    private_repository: Option<bool>,
) -> anyhow::Result<Option<crate::provider::CommentRef>> {
    let (pr, resources) = match changed {
        Changed::Pin(out) => (out.pr, &out.changed),
        Changed::Extend(out) => (out.pr, &out.moved),
    };
    let at = Rewrite {
        pr,
        app: app_of(resources),
        private_repository,
    };
    rewrite_comment(forge, platform, renderer, at, |c| match changed {
        Changed::Pin(out) => {
            c.lifecycle.pinned_by = out.pinned_by.clone();
            if let Some(e) = &out.expires {
                c.lifecycle.expires = Some(e.clone());
            }
        }
        Changed::Extend(out) => c.lifecycle.expires = Some(out.expires.clone()),
    })
    .await
}

/// The app among what [`each_resource`] changed.
fn app_of(changed: &[String]) -> Option<&str> {
    changed.iter().find_map(|c| c.strip_prefix("app "))
}

/// Which comment [`rewrite_comment`] rewrites.
#[derive(Debug, Clone, Copy)]
pub struct Rewrite<'a> {
    pub pr: u64,
    /// The preview's app (a fresh signed link is minted for it).
    pub app: Option<&'a str>,
    /// Whether the repository is private (the event says so); `None` (a CLI run): as the
    /// comment was, which carried a signed link only on a private repository.
    pub private_repository: Option<bool>,
}

/// Rewrites the live preview's sticky comment with `change` applied to the contract recorded in
/// it, and nothing else changed: the same URL, per-commit URLs and evidence (from the record),
/// the signed link of a private repository minted again to last until the preview's expiry (or
/// the mint hint), and the build's details the record does not keep (timings, output tails)
/// carried over verbatim from the comment, as they still describe the build that serves. No
/// rebuild. `Ok(None)`: no live preview comment to rewrite.
pub async fn rewrite_comment(
    forge: &dyn crate::provider::Forge,
    platform: &dyn Platform,
    renderer: &crate::report::Renderer,
    at: Rewrite<'_>,
    change: impl FnOnce(&mut crate::contract::Contract),
) -> anyhow::Result<Option<crate::provider::CommentRef>> {
    let marker = crate::preview::marker(at.pr);
    let Some(old) = forge.comment_body(at.pr, &marker).await? else {
        return Ok(None);
    };
    let Some(mut contract) = crate::contract::Contract::from_comment(&old)
        .filter(|c| c.lifecycle.destroyed.is_none() && !c.code.url.is_empty())
    else {
        return Ok(None);
    };
    change(&mut contract);
    let (signed_link, mint_hint) = match crate::preview::link_ttl(&contract) {
        None => (None, None),
        Some(ttl) => {
            let private = at
                .private_repository
                .unwrap_or_else(|| old.contains(&format!("{}=", crate::gate::LINK_PARAM)));
            // A link that cannot be minted leaves the command that mints one, as `up` does.
            let link = match at.app {
                Some(app) if private => platform.mint_link(app, ttl).await.ok().flatten(),
                _ => None,
            };
            let local = platform.kind().starts_with("local");
            crate::preview::access_lines(local, at.pr, private, link)
        }
    };
    let ctx = crate::report::PreviewComment {
        marker: marker.clone(),
        pr: at.pr,
        status: "ready",
        contract: &contract,
        error: None,
        generated_at: Utc::now().to_rfc3339(),
        signed_link,
        mint_hint,
    };
    let body = renderer.render_comment("preview.md.j2", &ctx)?;
    // Room left for the record, which `down` and the next rewrite read back.
    let room = crate::report::COMMENT_LIMIT.saturating_sub(contract.record().len() + 1);
    let body = crate::preview::with_record(carry_details(&old, body, room), &contract);
    Ok(Some(forge.upsert_comment(at.pr, &marker, &body).await?))
}

/// `new` with its `<details>` sections replaced by those of `old` (same build, more of it: the
/// record keeps no timings or output tails), placed before the footer rule when `new` has none.
/// `new` unchanged when `old` has none, when either lacks the footer rule (an override
/// template of another shape), or when the result would be longer than `limit` characters.
fn carry_details(old: &str, new: String, limit: usize) -> String {
    const OPEN: &str = "\n<details>";
    const CLOSE: &str = "</details>\n";
    const RULE: &str = "\n---\n";
    let span = |s: &str| -> Option<(usize, usize)> {
        let a = s.find(OPEN)?;
        let b = s.rfind(CLOSE)? + CLOSE.len();
        (a < b).then_some((a, b))
    };
    let Some((oa, ob)) = span(old) else {
        return new;
    };
    let Some(rule) = new.rfind(RULE) else {
        return new;
    };
    if old[ob..].find(RULE).is_none() {
        return new;
    }
    let (na, nb) = span(&new)
        .filter(|&(_, b)| b <= rule + 1)
        .unwrap_or((rule, rule));
    let out = format!("{}{}{}", &new[..na], &old[oa..ob], &new[nb..]);
    if out.chars().count() > limit {
        return new;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::carry_details;

    const LIMIT: usize = crate::report::COMMENT_LIMIT;

    #[test]
    fn details_are_carried_over_and_nothing_else() {
        let old = "m\n## Ready\nclause: expires Monday\n\n<details><summary>Timings</summary>\n\n| a | 1 ms |\n</details>\n\n---\n*footer old*\n";
        let new = "m\n## Ready\nclause: pinned\n\n---\n*footer new*\n".to_string();
        let out = carry_details(old, new, LIMIT);
        assert_eq!(
            out,
            "m\n## Ready\nclause: pinned\n\n<details><summary>Timings</summary>\n\n| a | 1 ms |\n</details>\n\n---\n*footer new*\n"
        );
        // The new render's own (shorter) details give way to the old ones.
        let new =
            "m\nclause: pinned\n\n<details><summary>Schema</summary>\n</details>\n\n---\n*f*\n";
        let out = carry_details(old, new.to_string(), LIMIT);
        assert!(out.contains("Timings") && !out.contains("Schema"), "{out}");
        assert!(
            out.contains("clause: pinned") && out.ends_with("*f*\n"),
            "{out}"
        );
        // Nothing to carry, or no footer rule to place it by: the new render as it is.
        assert_eq!(
            carry_details("m\nno details\n---\n", new.to_string(), LIMIT),
            new
        );
        assert_eq!(carry_details(old, "no rule".to_string(), LIMIT), "no rule");
        // No room for them under the limit: the new render alone.
        assert_eq!(carry_details(old, new.to_string(), new.len() + 10), new);
    }
}
