//! What the chain needs from an app platform, as one small trait: the QA app, the production
//! instances (Fly machines, local processes), a canary beside them, in-place image updates and
//! a way to pin a request to one instance. Implementations: [`super::local::LocalFleet`]
//! (processes on this machine), [`super::fly::FlyFleet`] (Fly Machines API) and, in the unit
//! tests, an in-memory fake.

use async_trait::async_trait;
use serde::Serialize;

/// One running instance of the app (a Fly machine, a local process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    /// What it runs: an image reference (Fly) or a version label (local).
    pub version: String,
    /// `started`, `stopped`, ... as the platform says.
    pub state: String,
}

/// Where to send a request so that it reaches one given instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub base_url: String,
    /// Headers that pin the request (Fly: `fly-force-instance-id`).
    pub headers: Vec<(String, String)>,
}

#[async_trait]
pub trait Fleet: Send + Sync {
    /// `local-process`, `fly`, `fake`.
    fn kind(&self) -> &'static str;
    /// Rolls `version` onto the QA app, waits until it is healthy, returns its base URL.
    async fn deploy_qa(&self, version: &str) -> anyhow::Result<String>;
    /// The production instances, excluding any canary, in a stable order.
    async fn production(&self) -> anyhow::Result<Vec<Instance>>;
    /// Starts one instance of `version` beside production (own metadata), waits healthy.
    async fn start_canary(&self, version: &str) -> anyhow::Result<Instance>;
    /// Removes the canary; a canary that is already gone is success.
    async fn stop_canary(&self, canary: &Instance) -> anyhow::Result<()>;
    /// Replaces one production instance's version in place and waits until it is healthy.
    async fn update_instance(&self, id: &str, version: &str) -> anyhow::Result<()>;
    /// How to reach exactly this instance.
    fn target(&self, instance: &Instance) -> Target;
}
