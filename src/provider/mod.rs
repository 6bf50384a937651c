//! Provider traits: what the preview and verify flows need from a database host, an app platform
//! and a forge. Domain types in and out, never raw HTTP. Two families implement them: cloud
//! (Neon, Fly, GitHub) and local (PostgreSQL on this machine, a local process, files).
//!
//! Ownership rule (DESIGN.md section 5): everything a provider creates carries the PR number in
//! its name and Atlas's marker in its metadata; `list_*` returns only such resources, and nothing
//! else is ever deleted.

pub mod bookkeeping;
pub mod fly;
pub mod github;
pub mod local;
pub mod neon;
#[cfg(test)]
pub mod stub;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The metadata key/value that marks a resource as Atlas's (Neon annotation, Fly metadata).
pub const OWNER_KEY: &str = "atlas";
pub const OWNER_VALUE: &str = "preview";
/// The metadata key holding the PR number.
pub const PR_KEY: &str = "atlas_pr";
/// The metadata key holding the repository (`owner/name`).
pub const REPO_KEY: &str = "atlas_repo";
pub const SHA_KEY: &str = "atlas_sha";
/// The metadata key holding who pinned the preview (the pin label's sender); absent or empty:
/// not pinned. Kept across pushes.
pub const PIN_KEY: &str = "atlas_pinned_by";

/// Result of a delete: both are success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deleted {
    Removed,
    AlreadyGone,
}

/// What to branch.
#[derive(Debug, Clone)]
pub struct BranchRequest {
    pub pr: u64,
    /// From `naming` (`preview/pr-N` on Neon, `atlas_pr_N` locally).
    pub name: String,
    pub parent: String,
    pub schema_only: bool,
    /// With `schema_only`: tables whose rows are kept anyway (the migration tool's bookkeeping,
    /// `[database] migrations_tables`), so the parent's migrations are not run again.
    pub migrations_tables: Vec<String>,
    /// Refreshed on every `up`.
    pub expires_at: Option<DateTime<Utc>>,
    pub repository: String,
    pub database: String,
    pub role: String,
    /// `data_model = "anonymized"`: these rules are applied before the branch's connection URI
    /// is returned; a branch that cannot be masked is deleted, never handed out.
    pub masking: Option<Vec<crate::data::Mask>>,
    /// Bound on the masking run.
    pub anonymize_timeout: std::time::Duration,
    /// The compute suspends after this long idle (`None`: the provider's default).
    pub suspend_after: Option<std::time::Duration>,
}

impl BranchRequest {
    /// The request for the branch `name` ([`crate::naming::commit_branch`]) that freezes the
    /// preview's `branch` for a kept commit: all its rows as they are (masked ones stay masked),
    /// the preview's owner, PR and expiry.
    pub fn for_commit(&self, branch: &Branch, name: &str) -> BranchRequest {
        BranchRequest {
            name: name.to_string(),
            parent: branch.name.clone(),
            schema_only: false,
            migrations_tables: Vec::new(),
            masking: None,
            ..self.clone()
        }
    }
}

/// A database branch that exists.
#[derive(Debug, Clone)]
pub struct Branch {
    pub name: String,
    pub id: String,
    pub parent: String,
    /// The branch's own connection URI (never the parent's). Registered as a secret.
    pub connection_uri: Secret,
    /// True when this call created it (false: it existed and was reused).
    pub created: bool,
    /// When it was created (the lifecycle clause of a repeat run shows it), if known.
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// A schema-only branch this call created: how many rows of the migration tool's
    /// bookkeeping tables (`migrations_tables`) it holds from the parent (`None`: not counted,
    /// or not such a branch).
    pub migration_records: Option<u64>,
}

/// A resource found by a `list_*` call, already filtered to Atlas's own.
#[derive(Debug, Clone, Serialize)]
pub struct Owned {
    pub name: String,
    pub id: String,
    pub pr: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Who pinned the preview, where the resource records it (the app does; a branch clears
    /// its own expiry instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_by: Option<String>,
}

/// The schema of a branch compared with its parent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchemaDiff {
    /// Unified diff; empty when identical.
    pub diff: String,
}

#[async_trait]
pub trait Database: Send + Sync {
    /// `neon` or `local-postgres`: shown in the data boundary clause.
    fn kind(&self) -> &'static str;
    /// Get-or-create the PR's branch (looked up by name first; a create is never re-sent blindly).
    async fn ensure_branch(&self, req: &BranchRequest) -> anyhow::Result<Branch>;
    /// Deletes a branch by name; a missing branch is `AlreadyGone`.
    async fn delete_branch(&self, name: &str) -> anyhow::Result<Deleted>;
    /// Schema diff of a branch against its parent.
    async fn schema_diff(&self, branch: &Branch) -> anyhow::Result<SchemaDiff>;
    /// Atlas-owned branches (paginated through), for the sweep.
    async fn list_branches(&self) -> anyhow::Result<Vec<Owned>>;
    /// Restores an existing branch from its parent's head (`[database] reset = "on-push"`),
    /// masking it again when `req.masking` is set, and returns the branch (its URI may be a new
    /// one). The parent's rows are never reachable unmasked through the returned branch or the
    /// old one meanwhile.
    async fn reset_branch(&self, branch: &Branch, _req: &BranchRequest) -> anyhow::Result<Branch> {
        anyhow::bail!(
            "{}: resetting branch {} is not supported",
            self.kind(),
            branch.name
        )
    }
    /// Moves the branch's expiry (`atlas preview extend`); the sweep reads it back.
    async fn set_expiry(&self, name: &str, _at: DateTime<Utc>) -> anyhow::Result<()> {
        anyhow::bail!("{}: branch {name} has no expiry to move", self.kind())
    }
    /// Removes the branch's expiry (a pinned preview): a provider that deletes expired
    /// branches on its own (Neon) must not take a pinned one.
    async fn clear_expiry(&self, name: &str) -> anyhow::Result<()> {
        anyhow::bail!("{}: branch {name} has no expiry to clear", self.kind())
    }
    /// `anonymized`: a mark of the branch just before the migrations run, handed back to
    /// [`Database::mask_again`] so that only what they wrote is masked again. `None`: the
    /// provider masks every row again.
    async fn mask_mark(&self, _branch: &Branch) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// `anonymized`: applies `req.masking` again to a branch the migrations just ran on, so
    /// that rows they wrote into a masked column are masked too (see `data`); `since` is the
    /// [`Database::mask_mark`] taken before them. The flow calls it only when there are rules
    /// (a branch without them has nothing to mask); a provider that cannot mask again fails
    /// closed.
    async fn mask_again(
        &self,
        branch: &Branch,
        _req: &BranchRequest,
        _since: Option<&str>,
    ) -> anyhow::Result<()> {
        anyhow::bail!(
            "{}: cannot apply the masking rules again to {} after the migrations",
            self.kind(),
            branch.name
        )
    }
    /// The branch's logical size in bytes, for the cost estimate; `None` when the provider
    /// does not report one.
    async fn storage_bytes(&self, _name: &str) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
    /// Freezes the branch `req.parent` as it is now under `req.name` for the commit that ran on
    /// it ([`BranchRequest::for_commit`]): a copy-on-write child (Neon) or a template copy
    /// (local), with `req`'s ownership and expiry; an existing one is reused. `None`: the
    /// provider cannot. Deleting the parent deletes these first.
    async fn snapshot_branch(&self, _req: &BranchRequest) -> anyhow::Result<Option<Branch>> {
        Ok(None)
    }
}

/// One machine of a preview app as the platform reports it now (the estate, active hours).
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub id: String,
    /// The platform's word: `started`, `stopped`, `suspended`, ...
    pub state: String,
    /// `None`: the app's own machine; `gate`: the access gate in front of it.
    pub role: Option<String>,
    pub size: crate::cost::MachineSize,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Its metadata (ownership marks, `atlas_expires`, `atlas_pinned_by`).
    pub metadata: BTreeMap<String, String>,
}

impl MachineInfo {
    /// Running and paying for CPU and RAM.
    pub fn running(&self) -> bool {
        self.state == "started" || self.state == "starting"
    }
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub pr: Option<u64>,
    /// From `naming`.
    pub app: String,
    pub sha: String,
    pub repository: String,
    /// Image reference (cloud); ignored by the local platform, which runs `[local] command`.
    pub image: Option<String>,
    /// Plain environment (`ATLAS_COMMIT_SHA`, `ATLAS_PREVIEW`, ...).
    pub env: BTreeMap<String, String>,
    /// Secret environment (`DATABASE_URL`, declared preview secrets).
    pub secrets: BTreeMap<String, Secret>,
    pub port: u16,
    pub health_path: String,
    pub readiness_timeout: std::time::Duration,
    /// When the preview expires unless renewed (written on the app; the sweep reads it back).
    pub expires_at: Option<DateTime<Utc>>,
    /// The commit running now, when it is set aside for its commit URL with data of its own
    /// (`[preview] commit_data = "snapshot"`).
    pub outgoing: Option<Outgoing>,
}

/// The commit a deploy sets aside and the secrets it runs on from then on, in place of the
/// request's (its own `DATABASE_URL`: the branch frozen for it before this push's migrations).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub sha: String,
    pub secrets: BTreeMap<String, Secret>,
}

/// An app that runs and answered its readiness probe.
#[derive(Debug, Clone, Serialize)]
pub struct AppDeployment {
    pub app: String,
    pub url: String,
    /// Machine ids (Fly) or the process id (local).
    pub instances: Vec<String>,
    /// Where the logs are: a URL or a file path.
    pub logs: Option<String>,
    pub created: bool,
    /// How the app sleeps when idle (`None`: it does not sleep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep: Option<String>,
    /// Measured: how long the first request after a sleep took (the wake-up), in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_ms: Option<u64>,
    /// The previous commits kept beside this one, newest first, each at its commit URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<KeptCommit>,
}

/// A previous commit's app, kept (per-commit URLs): its commit and the URL that opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCommit {
    pub sha: String,
    pub url: String,
}

/// A previous commit's app instance kept aside by the platform under its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// What [`Platform::destroy`] takes to remove it.
    pub name: String,
    pub sha: String,
    /// `host:port` where it answers.
    pub upstream: String,
}

/// A one-off command to run inside the app's own image before the app is updated (Fly's
/// `release_command` pattern): the preview's migrations, where the machine running Atlas has no
/// shell or database client (the distroless action container).
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// The app the task belongs to: the same name the deploy uses.
    pub app: String,
    pub pr: Option<u64>,
    pub sha: String,
    pub repository: String,
    /// Image reference (cloud).
    pub image: Option<String>,
    /// `sh -c` command line, or a JSON exec array (`["bin", "arg"]`) for images without a shell.
    pub command: String,
    /// Secret environment (`DATABASE_URL`, declared preview secrets).
    pub secrets: BTreeMap<String, Secret>,
    /// Plain environment.
    pub env: BTreeMap<String, String>,
    /// Bound on the whole run, from create to exit.
    pub timeout: std::time::Duration,
    /// What the task is (`migrations`, `seed`): its machine is labelled with it, so that one
    /// task's machine is never taken for another's.
    pub role: &'static str,
}

/// How a one-off task ended.
#[derive(Debug, Clone, Serialize)]
pub struct TaskOutput {
    /// Exit code 0.
    pub ok: bool,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    /// The last lines of output, redacted; where the platform keeps logs elsewhere, where to
    /// read them.
    pub output_tail: String,
}

#[async_trait]
pub trait Platform: Send + Sync {
    /// `fly` or `local-process`.
    fn kind(&self) -> &'static str;
    /// Ensures the app, sets secrets, deploys (in place on update), waits until it runs and
    /// its readiness path answers.
    async fn deploy(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment>;
    /// Destroys the app; a missing app is `AlreadyGone`.
    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted>;
    /// Atlas-owned apps, for the sweep.
    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>>;
    /// Runs a one-off task in the app's image (ensuring the app and its secrets first).
    /// `Ok(None)` means the platform has no such thing: the caller runs the command locally.
    /// A task that ran and exited non-zero is `Ok(Some(TaskOutput { ok: false, .. }))`.
    async fn run_task(&self, _req: &TaskRequest) -> anyhow::Result<Option<TaskOutput>> {
        Ok(None)
    }
    /// The header (name, value) this run's own smoke and load traffic must carry to pass the
    /// access gate in front of `app`; `None` when nothing gates it.
    fn bypass_header(&self, _app: &str) -> Option<(String, Secret)> {
        None
    }
    /// A signed link to `app` valid for `ttl`, when a signed-link gate deployed in this run
    /// is in front of it; `None` otherwise.
    fn signed_link(&self, _app: &str, _ttl: std::time::Duration) -> Option<String> {
        None
    }
    /// Moves the app's expiry (`atlas preview extend`); the sweep reads it back from
    /// [`Platform::list_apps`].
    async fn set_expiry(&self, app: &str, _at: DateTime<Utc>) -> anyhow::Result<()> {
        anyhow::bail!("{}: app {app} has no expiry to move", self.kind())
    }
    /// The app's machines (one-off task machines left out); `None` when the platform has no
    /// machines to report (the local process).
    async fn app_machines(&self, _app: &str) -> anyhow::Result<Option<Vec<MachineInfo>>> {
        Ok(None)
    }
    /// Stops the app's running machines (outside `[lifecycle] active_hours`); they start again
    /// on the next request. Returns the ids it stopped; `None` when the platform cannot stop a
    /// preview and wake it on demand (the local process).
    async fn stop_machines(&self, _app: &str) -> anyhow::Result<Option<Vec<String>>> {
        Ok(None)
    }
    /// Records (`Some(login)`) or removes (`None`) the pin on the app, read back as
    /// [`Owned::pinned_by`] and kept across deploys. Metadata only: nothing restarts.
    async fn set_pin(&self, app: &str, _by: Option<&str>) -> anyhow::Result<()> {
        anyhow::bail!("{}: app {app} cannot record a pin", self.kind())
    }
    /// Before the deploy `req`: sets the version of `req.app` running now aside, still
    /// running, when it runs another commit (per-commit URLs), on `req.outgoing`'s secrets when
    /// they are for its commit. `None`: nothing was kept (no such app, the same commit, or a
    /// platform that keeps nothing this way).
    async fn keep_previous(&self, _req: &DeployRequest) -> anyhow::Result<Option<Kept>> {
        Ok(None)
    }
    /// The commit `app` runs now, when a deploy of another one would keep it at its commit URL
    /// (`None`: nothing would be kept, or the platform keeps nothing).
    async fn running_commit(&self, _app: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// The commit `app` runs now, whether or not anything would keep it (what a wrapper that
    /// keeps commits, such as the local gate, asks its platform).
    async fn current_commit(&self, _app: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// The kept previous versions of `app`, newest first.
    async fn kept(&self, _app: &str) -> anyhow::Result<Vec<Kept>> {
        Ok(Vec::new())
    }
    /// A signed link to `app` valid for `ttl`, minted by any run (not only the one that
    /// deployed its gate) from what the gate in front of it keeps: a pin or an extend rewrites
    /// the comment with a fresh one. `None` when no signed-link gate is in front of it.
    async fn mint_link(
        &self,
        app: &str,
        ttl: std::time::Duration,
    ) -> anyhow::Result<Option<String>> {
        Ok(self.signed_link(app, ttl))
    }
}

/// Live state of a PR, read on every run (reconcile).
#[derive(Debug, Clone, Serialize)]
pub struct PrState {
    pub number: u64,
    pub open: bool,
    pub head_sha: String,
    pub merged: bool,
}

/// Where a comment lives.
#[derive(Debug, Clone, Serialize)]
pub struct CommentRef {
    pub id: String,
    pub url: String,
    /// `created`, `updated` or `unchanged`.
    pub action: String,
}

/// GitHub deployment states Atlas uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    InProgress,
    Success,
    Failure,
    Error,
    Inactive,
}

impl DeployState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployState::InProgress => "in_progress",
            DeployState::Success => "success",
            DeployState::Failure => "failure",
            DeployState::Error => "error",
            DeployState::Inactive => "inactive",
        }
    }
}

/// A deployment record to create: `sha` in `environment`.
#[derive(Debug, Clone, Copy)]
pub struct NewDeployment<'a> {
    pub environment: &'a str,
    pub sha: &'a str,
    /// Previews are transient: GitHub marks them inactive once a newer one succeeds.
    pub transient: bool,
    pub description: &'a str,
}

/// One status of a deployment record: what happened, where the app and its log are.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentStatus<'a> {
    pub state: DeployState,
    pub environment_url: Option<&'a str>,
    pub log_url: Option<&'a str>,
    pub description: &'a str,
}

impl<'a> DeploymentStatus<'a> {
    /// A status without URLs.
    pub fn new(state: DeployState, description: &'a str) -> Self {
        Self {
            state,
            environment_url: None,
            log_url: None,
            description,
        }
    }

    pub fn environment_url(mut self, url: Option<&'a str>) -> Self {
        self.environment_url = url;
        self
    }

    pub fn log_url(mut self, url: Option<&'a str>) -> Self {
        self.log_url = url;
        self
    }
}

/// A deployment record (GitHub deployment, or a local file).
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub environment: String,
    pub url: Option<String>,
}

/// Computes the files of a data branch's next commit from the current text of its main file
/// (`None`: no branch or no such file yet). Called again after a concurrent update.
pub type BranchUpdate<'a> =
    dyn Fn(Option<&str>) -> anyhow::Result<Vec<(String, String)>> + Send + Sync + 'a;

/// A data branch written: the commit (or file) it now points at and how many attempts it took
/// (more than one: another writer updated it meanwhile).
#[derive(Debug, Clone, Serialize)]
pub struct BranchWrite {
    pub commit: String,
    pub attempts: u32,
}

#[async_trait]
pub trait Forge: Send + Sync {
    /// `github` or `local`.
    fn kind(&self) -> &'static str;
    /// Live PR state; `None` when the PR does not exist.
    async fn pr_state(&self, pr: u64) -> anyhow::Result<Option<PrState>>;
    /// Numbers of the open PRs (for the sweep). Errors must propagate: the sweep deletes
    /// nothing when it cannot read GitHub.
    async fn open_prs(&self) -> anyhow::Result<Vec<u64>>;
    /// The titles of the open PRs (the estate's table); empty when the forge keeps none.
    async fn open_pr_titles(&self) -> anyhow::Result<BTreeMap<u64, String>> {
        Ok(BTreeMap::new())
    }
    /// Creates or updates the one sticky comment (found by `marker` and by author). Every forge
    /// keeps the same rules for its body: it carries the marker (or the next run would not find
    /// it) and stays within the comment limit (callers render with `render_comment`; this is the
    /// backstop).
    async fn upsert_comment(
        &self,
        pr: u64,
        marker: &str,
        body: &str,
    ) -> anyhow::Result<CommentRef> {
        let mut body = if body.contains(marker) {
            body.to_string()
        } else {
            format!("{marker}\n{body}")
        };
        if body.chars().count() > crate::text::COMMENT_LIMIT {
            body = crate::text::truncate_comment(&body);
        }
        self.put_comment(pr, marker, &body).await
    }
    /// Writes the sticky comment as [`Forge::upsert_comment`] made its body.
    async fn put_comment(&self, pr: u64, marker: &str, body: &str) -> anyhow::Result<CommentRef>;
    /// The sticky comment's body, when there is one (`down` reads the contract recorded in it).
    async fn comment_body(&self, _pr: u64, _marker: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// Creates a deployment record for `sha` in `environment`.
    async fn create_deployment(&self, new: NewDeployment<'_>) -> anyhow::Result<DeploymentRecord>;
    async fn set_deployment_status(
        &self,
        record: &DeploymentRecord,
        status: DeploymentStatus<'_>,
    ) -> anyhow::Result<()>;
    /// Every deployment record of `environment`.
    async fn deployment_records(&self, environment: &str) -> anyhow::Result<Vec<DeploymentRecord>>;
    /// Opens, updates or closes the one issue of an alert; `None` when the forge has no issues.
    async fn sync_issue(&self, _alert: IssueAlert<'_>) -> anyhow::Result<Option<IssueRef>> {
        Ok(None)
    }
    /// The merge base of `head` with `base` (a branch or a commit); `None` when the forge cannot
    /// tell (the caller then compares with the latest runs).
    async fn merge_base(&self, _base: &str, _head: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// The text of `path` on the data branch `branch` (the load history); `None` when the
    /// branch or the file does not exist.
    async fn read_branch_file(&self, _branch: &str, _path: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// Writes the files `update` computes from the current text of `path` as one commit on top
    /// of `branch`'s head (created when missing), never forced: when another writer moved the
    /// head meanwhile, it reads again and recomputes, a few times.
    async fn update_branch(
        &self,
        branch: &str,
        _path: &str,
        _message: &str,
        _update: &BranchUpdate<'_>,
    ) -> anyhow::Result<BranchWrite> {
        anyhow::bail!("{}: the forge keeps no data branch {branch}", self.kind())
    }
    /// Marks every deployment of `environment` inactive (after `down`).
    async fn deactivate_environment(&self, environment: &str) -> anyhow::Result<()> {
        for record in self.deployment_records(environment).await? {
            self.set_deployment_status(
                &record,
                DeploymentStatus::new(DeployState::Inactive, "preview destroyed"),
            )
            .await?;
        }
        Ok(())
    }
}

/// An alert issue to open (or update) or to close: found again by its title, the marker in its
/// body and its author (ours).
#[derive(Debug, Clone, Copy)]
pub struct IssueAlert<'a> {
    pub title: &'a str,
    pub marker: &'a str,
    pub body: &'a str,
    /// `true`: open it, or update the open one; `false`: close the open one, if any.
    pub open: bool,
}

/// What an alert did: `opened`, `updated`, `closed` or `none` (nothing open to close).
#[derive(Debug, Clone, Serialize)]
pub struct IssueRef {
    pub number: Option<u64>,
    pub url: Option<String>,
    pub action: String,
}

/// The set of providers a flow runs on.
pub struct Providers {
    pub database: Box<dyn Database>,
    pub platform: Box<dyn Platform>,
    pub forge: Box<dyn Forge>,
}
