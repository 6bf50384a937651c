//! The data each kept commit runs on (`[preview] commit_data`).
//!
//! A commit URL freezes the reviewed artifact, so its data must not move under it: with
//! `snapshot` (the default when the preview has a database branch), before a push's reset and
//! migrations change the preview's branch, the data the outgoing commit (the one running now,
//! about to be kept at its commit URL) ran against is frozen for it under
//! [`naming::commit_branch`] (`preview/pr-N/c-<sha7>`: a copy-on-write child on Neon, with
//! Atlas's ownership annotation and the preview's expiry; `atlas_pr_N_c_<sha7>` locally, a
//! template copy), and the deploy hands the platform that branch's `DATABASE_URL` for the kept
//! version ([`Outgoing`]). An existing frozen branch of that commit is reused: a retried push
//! must not freeze data its own migrations already changed.
//!
//! After the deploy, the frozen branches of commits no longer kept (beyond `keep_commits`) go;
//! deleting the preview's branch (down, close, sweep) takes the rest with it. `shared` keeps one
//! branch per preview (for projects at their branch limit): a schema-changing push can break a
//! kept commit. A frozen branch that cannot be made leaves the commit on the shared branch, with a
//! warning: the push itself goes on. With `[database] reset = "on-push"` on Neon nothing is
//! frozen: Neon restores no branch that has children.

use std::collections::BTreeMap;

use crate::config::{CommitData, ResetPolicy, Settings};
use crate::contract::CommitUrl;
use crate::naming;
use crate::provider::{AppDeployment, Branch, BranchRequest, Outgoing, Providers};
use crate::secret;

/// Freezes the data of the commit `app` runs now for it, when it is another commit than `sha`
/// and would be kept; `None` when nothing is frozen.
pub async fn freeze_outgoing(
    providers: &Providers,
    settings: &Settings,
    app: &str,
    sha: &str,
    branch: &Branch,
    req: &BranchRequest,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Option<Outgoing>> {
    if settings.preview.commit_data != CommitData::Snapshot || settings.preview.keep_commits == 0 {
        return Ok(None);
    }
    let Some(running) = providers
        .platform
        .running_commit(app)
        .await?
        .filter(|c| c != sha && naming::is_sha(c))
    else {
        return Ok(None);
    };
    let name = naming::commit_branch(&branch.name, &running);
    // Neon restores (or, masked, re-creates) no branch that has children: a reset on every
    // push and frozen children exclude each other there.
    if settings.database.reset == ResetPolicy::OnPush && providers.database.kind() == "neon" {
        log(&format!(
            "  · commit data: commit {} shares {} ([database] reset = \"on-push\" on Neon freezes nothing)",
            naming::sha7(&running),
            branch.name
        ));
        return Ok(None);
    }
    match providers
        .database
        .snapshot_branch(&req.for_commit(branch, &name))
        .await
    {
        Ok(Some(frozen)) => {
            log(&format!(
                "  ✓ commit data: {} {} for commit {} (its commit URL keeps the data it ran on)",
                if frozen.created { "froze" } else { "reused" },
                frozen.name,
                naming::sha7(&running)
            ));
            Ok(Some(Outgoing {
                sha: running,
                secrets: BTreeMap::from([("DATABASE_URL".to_string(), frozen.connection_uri)]),
            }))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            log(&format!(
                "  ! the data of commit {} could not be frozen as {name} ({}); its commit URL shares {} with the newest commit (set [preview] commit_data = \"shared\" to stop trying)",
                naming::sha7(&running),
                secret::redact(&format!("{e:#}")),
                branch.name
            ));
            Ok(None)
        }
    }
}

/// The kept commits' URLs, each with the data it runs on; the frozen branches of commits that
/// are no longer kept are deleted (a failed delete is a warning: the preview's own delete takes
/// them later).
pub async fn commit_urls(
    providers: &Providers,
    app: &AppDeployment,
    pr: u64,
    branch: Option<&str>,
    log: &mut dyn FnMut(&str),
) -> Vec<CommitUrl> {
    let mut frozen: Vec<(String, String)> = Vec::new();
    if let Some(base) = branch {
        match providers.database.list_branches().await {
            Ok(list) => {
                for b in list.into_iter().filter(|b| b.pr == pr) {
                    if let Some((of, s7)) = naming::split_commit(&b.name)
                        && of == base
                    {
                        frozen.push((s7.to_string(), b.name.clone()));
                    }
                }
            }
            Err(e) => log(&format!(
                "  ! cannot list the kept commits' branches: {}",
                secret::redact(&format!("{e:#}"))
            )),
        }
    }
    let kept = |s7: &str| app.commits.iter().any(|k| naming::sha7(&k.sha) == s7);
    for (_, name) in frozen.iter().filter(|(s7, _)| !kept(s7)) {
        if let Err(e) = providers.database.delete_branch(name).await {
            log(&format!(
                "  ! the branch {name} of a commit no longer kept could not be deleted: {}",
                secret::redact(&format!("{e:#}"))
            ));
        }
    }
    app.commits
        .iter()
        .map(|k| CommitUrl {
            sha: k.sha.clone(),
            url: k.url.clone(),
            data: branch.map(|base| {
                match frozen.iter().find(|(s7, _)| s7 == naming::sha7(&k.sha)) {
                    Some((_, name)) => format!("its own branch {name}"),
                    None => format!("{base}, shared with the newest commit"),
                }
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_data_is_snapshot_by_default_and_a_bad_value_names_the_key() {
        assert_eq!(
            Settings::default().preview.commit_data,
            CommitData::Snapshot
        );
        let s = Settings::parse("[preview]\ncommit_data = \"shared\"\n", "atlas.toml").unwrap();
        assert_eq!(s.preview.commit_data, CommitData::Shared);
        let e = Settings::parse("[preview]\ncommit_data = \"copy\"\n", "atlas.toml").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("commit_data") && e.contains("snapshot"), "{e}");
    }
}
