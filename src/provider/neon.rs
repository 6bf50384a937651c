//! Neon API v2: database branches for previews (DESIGN.md sections 3 and 5).
//!
//! A PR's branch is found by name before anything is created; a create carries a read-write
//! endpoint, `expires_at` and the ownership annotation (`atlas=preview`, `atlas_pr`,
//! `atlas_repo`: Neon's branch annotations, settable at create time and returned by the list
//! and get calls). Every operation a call returns is polled until it finishes before the next
//! mutation; Neon answers 423 while one is still running, which the `http` layer retries. The
//! connection URI is asked for the branch itself (never its parent) and registered as a secret,
//! password included, before anything can print it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{NeonAccess, Settings};
use crate::http::{Call, Client, RetryPolicy, Timeouts, enc, status_of};
use crate::naming;
use crate::provider::{
    Branch, BranchRequest, Database, Deleted, OWNER_KEY, OWNER_VALUE, Owned, PR_KEY, REPO_KEY,
    SchemaDiff,
};
use crate::secret::{self, Secret};

/// A Neon branch as the API returns it (the fields Atlas reads).
#[derive(Debug, Clone, Deserialize)]
struct ApiBranch {
    id: String,
    name: String,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Bytes; the cost estimate's storage.
    #[serde(default)]
    logical_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct ApiOperation {
    id: String,
    action: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// Neon's database provider.
#[derive(Debug)]
pub struct NeonDatabase {
    client: Client,
    project: String,
    repository: String,
    pooled: bool,
    operation_timeout: Duration,
}

impl NeonDatabase {
    /// Builds the provider from the `neon_*` inputs. `repository` (`owner/name`) goes into the
    /// ownership annotation; `settings` gives `[neon]`.
    pub fn new(
        access: &NeonAccess,
        settings: &Settings,
        repository: &str,
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let key = access
            .api_key
            .as_ref()
            .context("input `neon_api_key` is required for a neon branch")?;
        let project = access
            .project_id
            .clone()
            .context("input `neon_project_id` is required for a neon branch")?;
        let client = Client::new(
            "neon",
            &access.api_url,
            Some(Client::bearer(key)),
            policy,
            Timeouts::default(),
        )?
        .with_locked_to_caller()
        .with_poll(Duration::from_secs(1));
        Ok(NeonDatabase {
            client,
            project,
            repository: repository.to_string(),
            pooled: settings.neon.pooled,
            operation_timeout: settings.neon.operation_timeout,
        })
    }

    /// Shorter timeouts and polling (tests against a local fake).
    pub fn with_timeouts(mut self, timeouts: Timeouts, poll: Duration) -> anyhow::Result<Self> {
        self.client = self.client.with_timeouts(timeouts, poll)?;
        Ok(self)
    }

    fn p(&self) -> String {
        format!("/projects/{}", enc(&self.project))
    }

    /// All branches whose name contains `search` (every page), with their annotations.
    async fn branches(
        &self,
        search: Option<&str>,
    ) -> anyhow::Result<Vec<(ApiBranch, BTreeMap<String, String>)>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut q = vec![("limit".to_string(), "100".to_string())];
            if let Some(s) = search {
                q.push(("search".into(), s.into()));
            }
            if let Some(c) = &cursor {
                q.push(("cursor".into(), c.clone()));
            }
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q)
                .finish();
            let v: Value = self
                .client
                .send_json(Call::get(
                    "list branches",
                    format!("{}/branches?{query}", self.p()),
                ))
                .await?;
            let branches: Vec<ApiBranch> = serde_json::from_value(v["branches"].clone())
                .context("neon: list branches returned an unexpected shape")?;
            let n = branches.len();
            for b in branches {
                let ann = annotation_of(&v["annotations"][b.id.as_str()]["value"]);
                out.push((b, ann));
            }
            match v["pagination"]["next"].as_str() {
                Some(next) if !next.is_empty() && n > 0 && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_string())
                }
                _ => return Ok(out),
            }
        }
        anyhow::bail!("neon: list branches did not end after 1000 pages")
    }

    async fn find(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<(ApiBranch, BTreeMap<String, String>)>> {
        Ok(self
            .branches(Some(name))
            .await?
            .into_iter()
            .find(|(b, _)| b.name == name))
    }

    fn is_ours(&self, ann: &BTreeMap<String, String>, pr: Option<u64>) -> bool {
        ann.get(OWNER_KEY).map(String::as_str) == Some(OWNER_VALUE)
            && ann.get(REPO_KEY) == Some(&self.repository)
            && pr.is_none_or(|pr| ann.get(PR_KEY) == Some(&pr.to_string()))
    }

    /// Polls every operation until it is terminal (finished, skipped, cancelled) within
    /// `operation_timeout`. A `failed` operation is not terminal on Neon (it is retried), so it
    /// is polled on; only when the budget runs out is its last error reported.
    async fn wait_operations(&self, ops: &Value, transient_404: bool) -> anyhow::Result<()> {
        let ops: Vec<ApiOperation> = serde_json::from_value(ops.clone()).unwrap_or_default();
        let start = std::time::Instant::now();
        for op in ops {
            let mut cur = op;
            loop {
                match cur.status.as_str() {
                    "finished" | "skipped" => break,
                    "cancelled" => {
                        anyhow::bail!(
                            "neon: operation {} ({}) was cancelled: {}",
                            cur.action,
                            cur.id,
                            secret::redact(cur.error.as_deref().unwrap_or("no detail given"))
                        );
                    }
                    _ => {}
                }
                if start.elapsed() > self.operation_timeout {
                    let detail = cur
                        .error
                        .as_deref()
                        .map(|e| format!(" (last error: {})", secret::redact(e)))
                        .unwrap_or_default();
                    anyhow::bail!(
                        "neon: operation {} ({}) still {} after {:?}{detail}; raise [neon] operation_timeout or check the neon console",
                        cur.action,
                        cur.id,
                        cur.status,
                        self.operation_timeout
                    );
                }
                tokio::time::sleep(self.client.poll()).await;
                let v: Value = self
                    .client
                    .send_json(
                        Call::get(
                            format!("get operation {}", cur.action),
                            format!("{}/operations/{}", self.p(), enc(&cur.id)),
                        )
                        .transient_404(transient_404),
                    )
                    .await?;
                cur = serde_json::from_value(v["operation"].clone())
                    .context("neon: get operation returned an unexpected shape")?;
            }
        }
        Ok(())
    }

    /// Waits until the project has no operation that is not terminal (Neon answers 423 to
    /// mutations meanwhile), within `operation_timeout` from `since`.
    async fn wait_project_idle(&self, call: &str, since: std::time::Instant) -> anyhow::Result<()> {
        loop {
            let v: Value = self
                .client
                .send_json(Call::get(
                    "list project operations",
                    format!("{}/operations?limit=100", self.p()),
                ))
                .await?;
            let ops: Vec<ApiOperation> =
                serde_json::from_value(v["operations"].clone()).unwrap_or_default();
            let pending: Vec<&ApiOperation> = ops
                .iter()
                .filter(|o| !matches!(o.status.as_str(), "finished" | "skipped" | "cancelled"))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if since.elapsed() > self.operation_timeout {
                let names: Vec<String> = pending
                    .iter()
                    .map(|o| format!("{} ({}) {}", o.action, o.id, o.status))
                    .collect();
                anyhow::bail!(
                    "neon: {call}: the project stayed locked (423) for {:?} by running operations: {}; retry later or raise [neon] operation_timeout",
                    self.operation_timeout,
                    names.join(", ")
                );
            }
            tokio::time::sleep(self.client.poll()).await;
        }
    }

    /// Runs a mutation; on 423 Locked waits for the project's running operations, then sends
    /// it again (all within `operation_timeout`).
    async fn unlocked<T, F, Fut>(&self, call: &str, f: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let since = std::time::Instant::now();
        loop {
            match f().await {
                Err(e) if status_of(&e) == Some(423) => {
                    self.wait_project_idle(call, since).await?;
                }
                r => return r,
            }
        }
    }

    async fn connection_uri(
        &self,
        branch_id: &str,
        req: &BranchRequest,
        after_create: bool,
    ) -> anyhow::Result<Secret> {
        self.uri_of(branch_id, req, after_create, self.pooled).await
    }

    /// The URI of `req.database` as `req.role` on a branch, through the pooler or not.
    async fn uri_of(
        &self,
        branch_id: &str,
        req: &BranchRequest,
        after_create: bool,
        pooled: bool,
    ) -> anyhow::Result<Secret> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("branch_id", branch_id)
            .append_pair("database_name", &req.database)
            .append_pair("role_name", &req.role)
            .append_pair("pooled", if pooled { "true" } else { "false" })
            .finish();
        let r = self
            .client
            .send(
                Call::get("get connection uri", format!("{}/connection_uri?{query}", self.p()))
                    .transient_404(after_create),
            )
            .await
            .with_context(|| {
                format!(
                    "neon: no connection uri for database `{}` and role `{}` on branch {}; check [database] database and role in atlas.toml",
                    req.database, req.role, req.name
                )
            })?;
        let v: Value = r.json("get connection uri")?;
        let uri = v["uri"]
            .as_str()
            .context("neon: get connection uri returned no uri")?;
        Ok(register_uri(uri))
    }
}

/// Registers a connection URI and its password (every form) as secrets.
pub fn register_uri(uri: &str) -> Secret {
    let s = Secret::new(uri);
    if let Ok(u) = url::Url::parse(uri)
        && let Some(pw) = u.password()
    {
        // The password as written in the URI (percent-encoded) and decoded.
        secret::register(pw);
        let decoded: String = url::form_urlencoded::parse(format!("p={pw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        secret::register(&decoded);
    }
    s
}

fn annotation_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl NeonDatabase {
    /// Sets the branch's `expires_at` (one PATCH; its operations are awaited).
    async fn patch_expiry(&self, id: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        let r = self
            .unlocked("update branch expires_at", || {
                self.client.send(
                    Call::patch(
                        "update branch expires_at",
                        format!("{}/branches/{}", self.p(), enc(id)),
                    )
                    // null removes the expiry (Neon's documented meaning).
                    .json(json!({"branch": {"expires_at": at.map(rfc3339)}}))
                    .idempotent(),
                )
            })
            .await?;
        let v: Value = r.json("update branch")?;
        self.wait_operations(&v["operations"], false).await
    }

    /// Moves (`Some`) or removes (`None`) the expiry of the branch `name`, only when it is
    /// Atlas's.
    async fn set_own_expiry(&self, name: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        let Some((b, ann)) = self.find(name).await? else {
            anyhow::bail!(
                "neon: branch `{name}` not found in project {}",
                self.project
            );
        };
        if !self.is_ours(&ann, None) {
            anyhow::bail!("neon: branch `{name}` is not atlas's; its expiry was left alone");
        }
        self.patch_expiry(&b.id, at).await
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[async_trait]
impl Database for NeonDatabase {
    fn kind(&self) -> &'static str {
        "neon"
    }

    async fn set_expiry(&self, name: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.set_own_expiry(name, Some(at)).await
    }

    async fn clear_expiry(&self, name: &str) -> anyhow::Result<()> {
        self.set_own_expiry(name, None).await
    }

    async fn ensure_branch(&self, req: &BranchRequest) -> anyhow::Result<Branch> {
        let existing = self.find(&req.name).await?;
        let (branch, created) = match existing {
            Some((b, ann)) => {
                if !self.is_ours(&ann, Some(req.pr)) {
                    anyhow::bail!(
                        "neon: branch `{}` exists but is not atlas's (no atlas annotation for PR #{} of {}); rename or delete it, atlas will not adopt it",
                        req.name,
                        req.pr,
                        self.repository
                    );
                }
                // Refresh the expiry on every up (one PATCH; its operations are awaited).
                if let Some(at) = req.expires_at {
                    self.patch_expiry(&b.id, Some(at)).await?;
                }
                (b, false)
            }
            None => {
                let parent = self
                    .find(&req.parent)
                    .await?
                    .with_context(|| {
                        format!(
                            "neon: parent branch `{}` not found in project {}; set [database] parent in atlas.toml",
                            req.parent, self.project
                        )
                    })?
                    .0;
                let mut branch = json!({
                    "name": req.name,
                    "parent_id": parent.id,
                    "init_source": if req.schema_only { "schema-only" } else { "parent-data" },
                });
                if let Some(at) = req.expires_at {
                    branch["expires_at"] = json!(rfc3339(at));
                }
                // The branch's compute scales to zero after `suspend_after` idle (Neon wakes it
                // on the next connection); unset, the project's default applies.
                let mut endpoint = json!({"type": "read_write"});
                if let Some(d) = req.suspend_after {
                    endpoint["suspend_timeout_seconds"] = json!(d.as_secs());
                }
                let annotation = json!({
                    OWNER_KEY: OWNER_VALUE,
                    PR_KEY: req.pr.to_string(),
                    REPO_KEY: self.repository,
                });
                // An anonymized branch is created by its own API, masking started at once; it
                // is never created as a plain copy first.
                let (call_name, path, body) = match &req.masking {
                    None => (
                        "create branch",
                        format!("{}/branches", self.p()),
                        json!({
                            "branch": branch,
                            "endpoints": [endpoint],
                            "annotation_value": annotation,
                        }),
                    ),
                    Some(rules) => (
                        "create anonymized branch",
                        format!("{}/branch_anonymized", self.p()),
                        json!({
                            "branch_create": {
                                "branch": branch,
                                "endpoints": [endpoint],
                            },
                            "annotation_value": annotation,
                            "masking_rules": rules
                                .iter()
                                .map(|m| m.neon_rule(&req.database))
                                .collect::<Vec<_>>(),
                            "start_anonymization": true,
                        }),
                    ),
                };
                let name = req.name.clone();
                let ((b, ops), created) = self
                    .unlocked(call_name, || self
                    .client
                    .create(
                        Call::post(call_name, path.clone()).json(body.clone()),
                        |r| {
                            let v: Value = r.json("create branch")?;
                            let b: ApiBranch = serde_json::from_value(v["branch"].clone())
                                .context("neon: create branch returned an unexpected shape")?;
                            Ok((b, v["operations"].clone()))
                        },
                        || {
                            let name = name.clone();
                            async move {
                                // A conflict adopts only a branch carrying our marks.
                                match self.find(&name).await? {
                                    Some((b, ann)) if self.is_ours(&ann, Some(req.pr)) => {
                                        Ok(Some((b, Value::Null)))
                                    }
                                    Some(_) => anyhow::bail!(
                                        "neon: branch `{name}` was created by someone else meanwhile (no atlas annotation for PR #{} of {}); atlas left it alone and will not adopt it: rename or delete it",
                                        req.pr,
                                        self.repository
                                    ),
                                    None => Ok(None),
                                }
                            }
                        },
                    ))
                    .await?;
                self.wait_operations(&ops, true).await?;
                (b, created)
            }
        };
        let masked = match &req.masking {
            None => Ok(()),
            Some(_) => {
                async {
                    if !created {
                        self.sync_rules(&branch.id, req).await?;
                    }
                    self.wait_anonymized(&branch.id, req).await
                }
                .await
            }
        };
        if let Err(e) = masked {
            // Fail closed: a branch this run created that is not masked is deleted; one from
            // an earlier run is left for `down` (its URI is not handed out either way).
            if created {
                let _ = self.delete_branch(&branch.name).await;
                return Err(e.context(format!(
                    "neon: the anonymized branch {} was deleted, its data never reached the app",
                    branch.name
                )));
            }
            return Err(e.context(format!(
                "neon: branch {} is not anonymized; atlas does not hand it to the app (run `atlas preview down` and up again)",
                branch.name
            )));
        }
        // A new schema-only branch gets the parent's migration records before its URI is
        // handed out; one that cannot is deleted, like a branch that cannot be masked.
        let migration_records = match created && req.schema_only {
            true => Some(self.keep_records_or_delete(&branch, req).await?),
            false => None,
        };
        let uri = self.connection_uri(&branch.id, req, created).await?;
        Ok(Branch {
            name: branch.name,
            id: branch.id,
            parent: req.parent.clone(),
            connection_uri: uri,
            created,
            created_at: branch.created_at,
            expires_at: req.expires_at.or(branch.expires_at),
            migration_records,
        })
    }

    async fn delete_branch(&self, name: &str) -> anyhow::Result<Deleted> {
        // Neon deletes no branch that has children: its kept commits' branches go first.
        self.delete_commit_branches(name).await?;
        let Some((b, ann)) = self.find(name).await? else {
            return Ok(Deleted::AlreadyGone);
        };
        if !self.is_ours(&ann, naming::pr_from_branch(name)) {
            anyhow::bail!(
                "neon: branch `{name}` is not atlas's (no atlas annotation for {}); atlas deletes only its own branches",
                self.repository
            );
        }
        let r = self
            .unlocked("delete branch", || {
                self.client.send(Call::delete(
                    "delete branch",
                    format!("{}/branches/{}", self.p(), enc(&b.id)),
                ))
            })
            .await;
        match r {
            Ok(r) => {
                let v: Value = r.json("delete branch").unwrap_or(Value::Null);
                self.wait_operations(&v["operations"], false).await?;
                Ok(Deleted::Removed)
            }
            Err(e) if status_of(&e) == Some(404) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn schema_diff(&self, branch: &Branch) -> anyhow::Result<SchemaDiff> {
        let parent = self.find(&branch.parent).await?.with_context(|| {
            format!(
                "neon: parent branch `{}` not found for the schema diff",
                branch.parent
            )
        })?;
        let v: Value = self
            .client
            .send_json(Call::get(
                "compare schema",
                format!(
                    "{}/branches/{}/compare_schema?base_branch_id={}&db_name={}",
                    self.p(),
                    enc(&branch.id),
                    enc(&parent.0.id),
                    enc(&self.database_of(branch))
                ),
            ))
            .await?;
        Ok(SchemaDiff {
            diff: v["diff"].as_str().unwrap_or_default().to_string(),
        })
    }

    async fn reset_branch(&self, branch: &Branch, req: &BranchRequest) -> anyhow::Result<Branch> {
        if req.masking.is_some() || req.schema_only {
            // A restore in place would put the parent's rows behind the endpoint the running
            // app uses: unmasked ones until the masking ends on an anonymized branch, and any at
            // all on a schema-only one (Neon restores data, not schema only). Such a branch is
            // made anew instead: masked, or schema only with its migration records, before its
            // URI exists; the old URI stops working.
            self.delete_branch(&branch.name).await?;
            let mut b = self.ensure_branch(req).await?;
            b.created = false;
            return Ok(b);
        }
        self.restore_from_parent(branch, req).await?;
        Ok(branch.clone())
    }

    async fn mask_again(
        &self,
        branch: &Branch,
        req: &BranchRequest,
        _since: Option<&str>,
    ) -> anyhow::Result<()> {
        // The branch keeps its rules: a new masking run over all its rows (Neon masks a
        // branch as a whole), awaited.
        self.unlocked("start anonymization", || {
            self.client.send(Call::post(
                "start anonymization",
                format!("{}/branches/{}/anonymize", self.p(), enc(&branch.id)),
            ))
        })
        .await?;
        self.wait_anonymized(&branch.id, req).await
    }

    async fn snapshot_branch(&self, req: &BranchRequest) -> anyhow::Result<Option<Branch>> {
        // A child of the preview's branch: Neon's branches are copy-on-write.
        self.ensure_branch(req).await.map(Some)
    }

    async fn storage_bytes(&self, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.find(name).await?.and_then(|(b, _)| b.logical_size))
    }

    async fn list_branches(&self) -> anyhow::Result<Vec<Owned>> {
        Ok(self
            .branches(Some("preview/pr-"))
            .await?
            .into_iter()
            .filter_map(|(b, ann)| {
                let pr = naming::pr_from_branch(&b.name)?;
                self.is_ours(&ann, Some(pr)).then_some(Owned {
                    name: b.name,
                    id: b.id,
                    pr,
                    created_at: b.created_at,
                    expires_at: b.expires_at,
                    pinned_by: None,
                })
            })
            .collect())
    }
}

impl NeonDatabase {
    /// Deletes the Atlas-owned kept commits' branches of the preview branch `name`.
    async fn delete_commit_branches(&self, name: &str) -> anyhow::Result<()> {
        // Only a preview's own branch has kept commits' branches.
        if naming::split_commit(name).is_some() || naming::pr_from_branch(name).is_none() {
            return Ok(());
        }
        let prefix = naming::commit_branch(name, "");
        for (b, _) in self.branches(Some(&prefix)).await? {
            if naming::split_commit(&b.name).is_some_and(|(base, _)| base == name) {
                self.delete_branch(&b.name).await?;
            }
        }
        Ok(())
    }

    /// Polls the branch's `anonymized_status` until its `state` is `anonymized`, within
    /// `req.anonymize_timeout`. `error` and `initialization_error` fail at once with Neon's
    /// message and the rules that were sent (targets and functions, never values).
    async fn wait_anonymized(&self, branch_id: &str, req: &BranchRequest) -> anyhow::Result<()> {
        let rules = req
            .masking
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|m| m.display())
            .collect::<Vec<_>>()
            .join(", ");
        let start = std::time::Instant::now();
        loop {
            let v: Value = self
                .client
                .send_json(
                    Call::get(
                        "get anonymized branch status",
                        format!("{}/branches/{}/anonymized_status", self.p(), enc(branch_id)),
                    )
                    .transient_404(true),
                )
                .await?;
            let state = v["state"].as_str().unwrap_or("").to_string();
            let message = secret::redact(v["status_message"].as_str().unwrap_or("no message"));
            match state.as_str() {
                "anonymized" => return Ok(()),
                "error" | "initialization_error" => anyhow::bail!(
                    "neon: anonymization of branch {} failed ({state}): {message}; rules: {rules}",
                    req.name
                ),
                _ => {}
            }
            if start.elapsed() > req.anonymize_timeout {
                anyhow::bail!(
                    "neon: branch {} still `{state}` ({message}) after {:?}; raise [database] anonymize_timeout",
                    req.name,
                    req.anonymize_timeout
                );
            }
            tokio::time::sleep(self.client.poll()).await;
        }
    }

    /// A reused anonymized branch whose rules differ from atlas.toml's gets the new ones and a
    /// new masking run (a rule added for a new column takes effect on the next push).
    async fn sync_rules(&self, branch_id: &str, req: &BranchRequest) -> anyhow::Result<()> {
        let want: Vec<Value> = req
            .masking
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|m| m.neon_rule(&req.database))
            .collect();
        let path = format!("{}/branches/{}/masking_rules", self.p(), enc(branch_id));
        let r = self
            .client
            .send(Call::get("get masking rules", path.clone()))
            .await
            .with_context(|| format!("neon: branch {} is not an anonymized branch", req.name))?;
        let v: Value = r.json("get masking rules")?;
        let have = v["masking_rules"].as_array().cloned().unwrap_or_default();
        if crate::data::masking::same_neon_rules(&have, &want) {
            return Ok(());
        }
        self.unlocked("update masking rules", || {
            self.client.send(
                Call::patch("update masking rules", path.clone())
                    .json(json!({"masking_rules": want}))
                    .idempotent(),
            )
        })
        .await?;
        self.unlocked("start anonymization", || {
            self.client.send(Call::post(
                "start anonymization",
                format!("{}/branches/{}/anonymize", self.p(), enc(branch_id)),
            ))
        })
        .await?;
        Ok(())
    }

    /// `reset = "on-push"`: the branch restored from its parent's head (Neon's restore API).
    async fn restore_from_parent(
        &self,
        branch: &Branch,
        req: &BranchRequest,
    ) -> anyhow::Result<()> {
        let parent = self
            .find(&req.parent)
            .await?
            .with_context(|| {
                format!(
                    "neon: parent branch `{}` not found for the reset",
                    req.parent
                )
            })?
            .0;
        let r = self
            .unlocked("restore branch", || {
                self.client.send(
                    Call::post(
                        "restore branch",
                        format!("{}/branches/{}/restore", self.p(), enc(&branch.id)),
                    )
                    .json(json!({"source_branch_id": parent.id})),
                )
            })
            .await
            .with_context(|| {
                format!(
                    "neon: restoring branch {} from {} was refused",
                    branch.name, req.parent
                )
            })?;
        let v: Value = r.json("restore branch")?;
        self.wait_operations(&v["operations"], false).await
    }

    /// The database name inside a branch's connection URI (the path), else `neondb`.
    fn database_of(&self, branch: &Branch) -> String {
        url::Url::parse(branch.connection_uri.expose())
            .ok()
            .map(|u| u.path().trim_start_matches('/').to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "neondb".into())
    }
}

impl NeonDatabase {
    /// Copies the parent's bookkeeping rows into the new schema-only branch `b` (see
    /// `provider::bookkeeping`) and returns how many; on failure the branch is deleted and the
    /// error says so.
    async fn keep_records_or_delete(
        &self,
        b: &ApiBranch,
        req: &BranchRequest,
    ) -> anyhow::Result<u64> {
        if req.migrations_tables.is_empty() {
            return Ok(0);
        }
        let kept = async {
            let parent = self.find(&req.parent).await?.with_context(|| {
                format!(
                    "neon: parent branch `{}` not found for the migration records",
                    req.parent
                )
            })?;
            // Both direct, not pooled: COPY needs the session to itself.
            let parent_uri = self.uri_of(&parent.0.id, req, false, false).await?;
            let branch_uri = self.uri_of(&b.id, req, true, false).await?;
            let job = crate::provider::bookkeeping::Job {
                provider: "neon",
                parent: &req.parent,
                branch: &b.name,
                parent_uri: &parent_uri,
                branch_uri: &branch_uri,
            };
            crate::provider::bookkeeping::copy(&job, &req.migrations_tables).await
        }
        .await;
        match kept {
            Ok(k) => Ok(k.rows()),
            Err(e) => {
                let note = match self.delete_branch(&b.name).await {
                    Ok(_) => format!(
                        "neon: the schema-only branch {} was deleted, it never reached the migrations or the app",
                        b.name
                    ),
                    Err(d) => format!(
                        "neon: deleting the schema-only branch {} failed too ({d:#}): run `atlas preview down --pr {}`",
                        b.name, req.pr
                    ),
                };
                Err(e.context(note))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_password_is_registered_in_every_form() {
        let s = register_uri("postgresql://neondb_owner:pw%2Fx-secret-77@ep-x.neon.tech/neondb");
        let text = "pw/x-secret-77 and pw%2Fx-secret-77";
        let r = secret::redact(text);
        assert!(!r.contains("secret-77"), "{r}");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
