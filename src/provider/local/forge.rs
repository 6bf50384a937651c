//! The forge of the local family: files instead of GitHub.
//!
//! Under `<state_dir>/forge/`: the sticky comment of PR N is `comments/pr-N.md` (rewritten in
//! place, so "upsert" has the same meaning as on GitHub), the job summary is `summary.md`,
//! deployment records are `deployments/<id>.json`, and `prs/pr-N.json` holds the local PR state
//! (open unless `preview down` ran). Comments are also printed to stdout when `print` is set.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::provider::{
    BranchUpdate, BranchWrite, CommentRef, DeploymentRecord, DeploymentStatus, Forge,
    NewDeployment, PrState,
};

pub struct LocalForge {
    dir: PathBuf,
    print: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalPr {
    open: bool,
    head_sha: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalDeployment {
    id: String,
    environment: String,
    sha: String,
    transient: bool,
    description: String,
    statuses: Vec<serde_json::Value>,
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

impl LocalForge {
    pub fn new(state_dir: &Path, print: bool) -> LocalForge {
        LocalForge {
            dir: state_dir.join("forge"),
            print,
        }
    }

    /// Where the comment of a PR is written.
    pub fn comment_path(&self, pr: u64) -> PathBuf {
        self.dir.join("comments").join(format!("pr-{pr}.md"))
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join("summary.md")
    }

    /// Appends to the job summary file.
    pub fn append_summary(&self, md: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.dir)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.summary_path())
            .with_context(|| format!("cannot write {}", self.summary_path().display()))?;
        writeln!(f, "{md}")?;
        Ok(())
    }

    /// Records the local PR as open (at `sha`) or closed.
    pub fn set_pr(&self, pr: u64, open: bool, sha: &str) -> anyhow::Result<()> {
        let st = LocalPr {
            open,
            head_sha: sha.to_string(),
        };
        write(
            &self.dir.join("prs").join(format!("pr-{pr}.json")),
            &serde_json::to_string_pretty(&st)?,
        )
    }

    /// Where a data branch's files live: `branches/<slug of the branch>/`.
    pub fn branch_dir(&self, branch: &str) -> PathBuf {
        self.dir.join("branches").join(crate::naming::slug(branch))
    }

    /// A file of a data branch; the path comes from Atlas but is still kept inside the branch.
    fn branch_file(&self, branch: &str, path: &str) -> anyhow::Result<PathBuf> {
        let rel = Path::new(path);
        if path.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            anyhow::bail!("branch file {path:?} is not a plain relative path");
        }
        Ok(self.branch_dir(branch).join(rel))
    }

    fn deployment_path(&self, id: &str) -> PathBuf {
        self.dir.join("deployments").join(format!("{id}.json"))
    }
}

#[async_trait]
impl Forge for LocalForge {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn pr_state(&self, pr: u64) -> anyhow::Result<Option<PrState>> {
        let path = self.dir.join("prs").join(format!("pr-{pr}.json"));
        // A PR nobody closed locally is open: locally the engineer is the forge.
        let st: LocalPr = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(LocalPr {
                open: true,
                head_sha: String::new(),
            });
        Ok(Some(PrState {
            number: pr,
            open: st.open,
            head_sha: st.head_sha,
            merged: false,
        }))
    }

    async fn open_prs(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("prs")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let Some(pr) = name
                    .strip_prefix("pr-")
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse().ok())
                else {
                    continue;
                };
                if let Ok(Some(st)) = self.pr_state(pr).await
                    && st.open
                {
                    out.push(pr);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn put_comment(&self, pr: u64, marker: &str, body: &str) -> anyhow::Result<CommentRef> {
        let path = self.comment_path(pr);
        let action = match std::fs::read_to_string(&path) {
            Ok(old) if old == body => "unchanged",
            Ok(old) if old.contains(marker) => "updated",
            _ => "created",
        };
        if action != "unchanged" {
            write(&path, body)?;
        }
        if self.print {
            // the contract record is for `down`, not for the terminal.
            for line in body
                .lines()
                .filter(|l| !crate::contract::Contract::is_record(l))
            {
                println!("{line}");
            }
        }
        Ok(CommentRef {
            id: format!("pr-{pr}"),
            url: path.display().to_string(),
            action: action.into(),
        })
    }

    async fn comment_body(&self, pr: u64, marker: &str) -> anyhow::Result<Option<String>> {
        Ok(std::fs::read_to_string(self.comment_path(pr))
            .ok()
            .filter(|b| b.contains(marker)))
    }

    async fn create_deployment(&self, new: NewDeployment<'_>) -> anyhow::Result<DeploymentRecord> {
        let id = format!(
            "{}-{}",
            crate::naming::slug(new.environment),
            Utc::now().format("%Y%m%dT%H%M%S%.3f")
        );
        let rec = LocalDeployment {
            id: id.clone(),
            environment: new.environment.to_string(),
            sha: new.sha.to_string(),
            transient: new.transient,
            description: new.description.to_string(),
            statuses: Vec::new(),
        };
        write(
            &self.deployment_path(&id),
            &serde_json::to_string_pretty(&rec)?,
        )?;
        Ok(DeploymentRecord {
            id: id.clone(),
            environment: new.environment.to_string(),
            url: Some(self.deployment_path(&id).display().to_string()),
        })
    }

    async fn set_deployment_status(
        &self,
        record: &DeploymentRecord,
        status: DeploymentStatus<'_>,
    ) -> anyhow::Result<()> {
        let path = self.deployment_path(&record.id);
        let mut rec: LocalDeployment = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a deployment record", path.display()))?;
        rec.statuses.push(serde_json::json!({
            "state": status.state.as_str(),
            "environment_url": status.environment_url,
            "log_url": status.log_url,
            "description": status.description,
            "at": Utc::now().to_rfc3339(),
        }));
        write(&path, &serde_json::to_string_pretty(&rec)?)
    }

    async fn read_branch_file(&self, branch: &str, path: &str) -> anyhow::Result<Option<String>> {
        let file = self.branch_file(branch, path)?;
        match std::fs::read_to_string(&file) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    async fn update_branch(
        &self,
        branch: &str,
        path: &str,
        _message: &str,
        update: &BranchUpdate<'_>,
    ) -> anyhow::Result<BranchWrite> {
        // One writer at a time on a laptop: no concurrent update to retry.
        let current = self.read_branch_file(branch, path).await?;
        for (name, text) in update(current.as_deref())? {
            let file = self.branch_file(branch, &name)?;
            // Written beside and renamed: a reader never sees half a history.
            let tmp = file.with_extension("tmp");
            write(&tmp, &text)?;
            std::fs::rename(&tmp, &file)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        Ok(BranchWrite {
            commit: self.branch_dir(branch).display().to_string(),
            attempts: 1,
        })
    }

    async fn deployment_records(&self, environment: &str) -> anyhow::Result<Vec<DeploymentRecord>> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("deployments")) else {
            return Ok(Vec::new());
        };
        Ok(rd
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<LocalDeployment>(&t).ok())
            .filter(|rec| rec.environment == environment)
            .map(|rec| DeploymentRecord {
                id: rec.id,
                environment: rec.environment,
                url: None,
            })
            .collect())
    }
}
