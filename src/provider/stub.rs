//! One stand-in for all three provider traits, for the unit tests of the flows above them (the
//! sweep, the estate, the verification chain): a test sets what the flow reads and reads back
//! what it did. What no such flow does (create a branch, deploy) panics, so a flow that starts
//! doing it fails its tests instead of passing against a stand-in that pretends.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    AppDeployment, Branch, BranchRequest, CommentRef, Database, Deleted, DeployRequest,
    DeploymentRecord, DeploymentStatus, Forge, NewDeployment, Owned, Platform, PrState, SchemaDiff,
};

#[derive(Default)]
pub struct Stub {
    /// What `kind()` answers (the flows name it in their errors).
    pub kind: &'static str,
    /// What `list_branches` and `list_apps` return.
    pub owned: Mutex<Vec<Owned>>,
    /// Every name `delete_branch` or `destroy` was called with.
    pub deleted: Mutex<Vec<String>>,
    /// `list_*` fails.
    pub fail_list: bool,
    /// Deleting this name fails.
    pub fail_delete: Option<String>,
    /// The forge's live PR (`pr_state`) and its open PRs.
    pub pr: Option<PrState>,
    pub open: Vec<u64>,
    /// `open_pr_titles` fails (the forge is offline); otherwise it has none.
    pub titles_offline: bool,
    /// (environment, state) of every deployment status set, in order.
    pub statuses: Mutex<Vec<(String, String)>>,
}

impl Stub {
    /// A stub that answers `kind` and lists `owned`.
    pub fn new(kind: &'static str, owned: Vec<Owned>) -> Stub {
        Stub {
            kind,
            owned: Mutex::new(owned),
            ..Default::default()
        }
    }

    pub fn deleted(&self) -> Vec<String> {
        self.deleted.lock().unwrap().clone()
    }

    fn list(&self) -> anyhow::Result<Vec<Owned>> {
        if self.fail_list {
            anyhow::bail!("list failed");
        }
        Ok(self.owned.lock().unwrap().clone())
    }

    fn delete(&self, name: &str) -> anyhow::Result<Deleted> {
        if self.fail_delete.as_deref() == Some(name) {
            anyhow::bail!("delete of {name} failed");
        }
        self.deleted.lock().unwrap().push(name.to_string());
        Ok(Deleted::Removed)
    }
}

#[async_trait]
impl Database for Stub {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn ensure_branch(&self, _: &BranchRequest) -> anyhow::Result<Branch> {
        unreachable!("the stub creates no branch")
    }
    async fn delete_branch(&self, name: &str) -> anyhow::Result<Deleted> {
        self.delete(name)
    }
    async fn schema_diff(&self, _: &Branch) -> anyhow::Result<SchemaDiff> {
        unreachable!("the stub has no schema")
    }
    async fn list_branches(&self) -> anyhow::Result<Vec<Owned>> {
        self.list()
    }
}

#[async_trait]
impl Platform for Stub {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn deploy(&self, _: &DeployRequest) -> anyhow::Result<AppDeployment> {
        unreachable!("the stub deploys nothing")
    }
    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
        self.delete(app)
    }
    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
        self.list()
    }
}

#[async_trait]
impl Forge for Stub {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn pr_state(&self, _: u64) -> anyhow::Result<Option<PrState>> {
        Ok(self.pr.clone())
    }
    async fn open_prs(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self.open.clone())
    }
    async fn open_pr_titles(&self) -> anyhow::Result<BTreeMap<u64, String>> {
        if self.titles_offline {
            anyhow::bail!("offline");
        }
        Ok(BTreeMap::new())
    }
    async fn put_comment(&self, _: u64, _: &str, _: &str) -> anyhow::Result<CommentRef> {
        anyhow::bail!("the stub forge keeps no comments")
    }
    async fn create_deployment(&self, new: NewDeployment<'_>) -> anyhow::Result<DeploymentRecord> {
        Ok(DeploymentRecord {
            id: new.environment.into(),
            environment: new.environment.into(),
            url: None,
        })
    }
    async fn set_deployment_status(
        &self,
        record: &DeploymentRecord,
        status: DeploymentStatus<'_>,
    ) -> anyhow::Result<()> {
        self.statuses
            .lock()
            .unwrap()
            .push((record.environment.clone(), status.state.as_str().into()));
        Ok(())
    }
    async fn deployment_records(&self, _: &str) -> anyhow::Result<Vec<DeploymentRecord>> {
        Ok(Vec::new())
    }
}
