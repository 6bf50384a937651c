//! The chain on Fly.io, over the Machines API with the provider HTTP client of `crate::http`
//! (one retry policy): QA is an existing app whose machines get the new image; production is an
//! existing app whose machines are listed, updated one at a time (`POST .../machines/{id}` with
//! the new image, then `/wait?state=started`, then the health path pinned to that machine with
//! `fly-force-instance-id`); the canary is one extra machine in the production app, cloned from
//! a stable machine's config with its own metadata (`atlas_role=canary`), destroyed afterwards.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use serde_json::json;

use super::fleet::{Fleet, Instance, Target};
use crate::http::{Call, Client, RetryPolicy, Timeouts, enc, status_of};
use crate::provider::OWNER_KEY;
use crate::provider::fly::ApiMachine;

/// Fly's header that routes a request to one machine.
pub const PIN_HEADER: &str = "fly-force-instance-id";
/// Metadata key/value of the canary machine.
pub const ROLE_KEY: &str = "atlas_role";
pub const CANARY_ROLE: &str = "canary";

impl ApiMachine {
    fn is_canary(&self) -> bool {
        self.meta(ROLE_KEY) == Some(CANARY_ROLE)
    }
    fn instance(&self) -> Instance {
        Instance {
            id: self.id.clone(),
            version: self.config["image"].as_str().unwrap_or("").to_string(),
            state: self.state.clone().unwrap_or_default(),
        }
    }
}

pub struct FlyFleet {
    client: Client,
    probe: reqwest::Client,
    pub qa_app: String,
    pub qa_url: String,
    pub production_app: String,
    pub production_url: String,
    health_path: String,
    health_timeout: Duration,
}

impl FlyFleet {
    /// From the `fly_*` inputs and `[verify]`; `prefix` names the default apps.
    pub fn new(
        access: &crate::config::FlyAccess,
        settings: &crate::config::Settings,
        prefix: &str,
        policy: RetryPolicy,
    ) -> anyhow::Result<FlyFleet> {
        let client =
            crate::provider::fly::api_client(access, policy, "to verify or release on fly")?;
        let v = &settings.verify;
        let qa_app = v.qa_app.clone().unwrap_or_else(|| format!("{prefix}-qa"));
        let production_app = v
            .production_app
            .clone()
            .unwrap_or_else(|| prefix.to_string());
        let url_of = |app: &str| {
            settings
                .fly
                .preview_url
                .as_deref()
                .unwrap_or("https://{app}.fly.dev")
                .replace("{app}", app)
        };
        Ok(FlyFleet {
            client,
            probe: super::probe::client(Duration::from_secs(10))?,
            qa_url: v.qa_url.clone().unwrap_or_else(|| url_of(&qa_app)),
            production_url: v
                .production_url
                .clone()
                .unwrap_or_else(|| url_of(&production_app)),
            qa_app,
            production_app,
            health_path: settings.app.health_path.clone(),
            health_timeout: v.health_timeout,
        })
    }

    /// Shorter timeouts and polling (tests against a local fake).
    pub fn with_timeouts(mut self, timeouts: Timeouts, poll: Duration) -> anyhow::Result<Self> {
        self.client = self.client.with_timeouts(timeouts, poll)?;
        Ok(self)
    }

    async fn machines(&self, app: &str) -> anyhow::Result<Vec<ApiMachine>> {
        self.client
            .send(Call::get(
                "list machines",
                format!("/apps/{}/machines", enc(app)),
            ))
            .await?
            .json("list machines")
    }

    async fn machine(&self, app: &str, id: &str) -> anyhow::Result<ApiMachine> {
        self.machines(app)
            .await?
            .into_iter()
            .find(|m| m.id == id)
            .with_context(|| format!("fly: app {app} has no machine {id}"))
    }

    /// Loops on `/wait?state=started` (at most 60 s per call) until started or the deadline.
    async fn wait_started(&self, app: &str, id: &str, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "fly: machine {id} of app {app} did not reach `started` within [verify] health_timeout; check `fly logs -a {app}`"
                );
            }
            let secs = left.as_secs().clamp(1, 60);
            let call = Call::get(
                "wait for machine started",
                format!(
                    "/apps/{}/machines/{}/wait?state=started&timeout={secs}",
                    enc(app),
                    enc(id)
                ),
            )
            .timeout(Duration::from_secs(secs + 10));
            match self.client.send(call).await {
                Ok(_) => return Ok(()),
                Err(e) if status_of(&e) == Some(408) => {
                    tokio::time::sleep(self.client.poll().min(left)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The health path through `base`, pinned to `id` when given, until 2xx or the deadline.
    async fn healthy(&self, base: &str, id: Option<&str>, deadline: Instant) -> anyhow::Result<()> {
        let url = format!("{}{}", base.trim_end_matches('/'), self.health_path);
        loop {
            let mut req = self.probe.get(&url);
            if let Some(id) = id {
                req = req.header(PIN_HEADER, id);
            }
            let last = match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("status {}", r.status().as_u16()),
                Err(e) => crate::secret::redact(&e.to_string()),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "fly: {url}{} did not answer 2xx within [verify] health_timeout (last: {last})",
                    id.map(|i| format!(" (machine {i})")).unwrap_or_default()
                );
            }
            tokio::time::sleep(self.client.poll()).await;
        }
    }

    /// Replaces a machine's image in place (same config otherwise) and waits until it runs.
    async fn set_image(&self, app: &str, id: &str, image: &str, base: &str) -> anyhow::Result<()> {
        let m = self.machine(app, id).await?;
        let mut config = m.config.clone();
        config["image"] = json!(image);
        // Setting the image to a value is idempotent: safe to retry.
        self.client
            .send(
                Call::post(
                    "update machine",
                    format!("/apps/{}/machines/{}", enc(app), enc(id)),
                )
                .json(json!({ "config": config }))
                .idempotent(),
            )
            .await?;
        let deadline = Instant::now() + self.health_timeout;
        self.wait_started(app, id, deadline).await?;
        self.healthy(base, Some(id), deadline).await
    }
}

#[async_trait]
impl Fleet for FlyFleet {
    fn kind(&self) -> &'static str {
        "fly"
    }

    async fn deploy_qa(&self, version: &str) -> anyhow::Result<String> {
        let machines = self.machines(&self.qa_app).await?;
        if machines.is_empty() {
            anyhow::bail!(
                "fly: the QA app {} has no machines; deploy it once (`fly deploy -a {}`) or set [verify] qa_app",
                self.qa_app,
                self.qa_app
            );
        }
        for m in &machines {
            self.set_image(&self.qa_app, &m.id, version, &self.qa_url)
                .await
                .with_context(|| format!("QA machine {}", m.id))?;
        }
        self.healthy(&self.qa_url, None, Instant::now() + self.health_timeout)
            .await?;
        Ok(self.qa_url.clone())
    }

    async fn production(&self) -> anyhow::Result<Vec<Instance>> {
        let mut out: Vec<Instance> = self
            .machines(&self.production_app)
            .await?
            .iter()
            .filter(|m| !m.is_canary())
            .map(ApiMachine::instance)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn start_canary(&self, version: &str) -> anyhow::Result<Instance> {
        let app = &self.production_app;
        let machines = self.machines(app).await?;
        // A canary left by a crashed run would skew the analysis: remove it first.
        for m in machines.iter().filter(|m| m.is_canary()) {
            self.stop_canary(&m.instance()).await?;
        }
        let stable = machines
            .iter()
            .find(|m| !m.is_canary())
            .with_context(|| format!("fly: production app {app} has no machine to clone"))?;
        let mut config = stable.config.clone();
        config["image"] = json!(version);
        config["metadata"][ROLE_KEY] = json!(CANARY_ROLE);
        config["metadata"][OWNER_KEY] = json!("verify");
        config["metadata"]["atlas_image"] = json!(version);
        let mut body = json!({ "config": config });
        if let Some(r) = &stable.region {
            body["region"] = json!(r);
        }
        let lookup = || async {
            Ok(self
                .machines(app)
                .await?
                .into_iter()
                .find(|m| m.is_canary() && m.config["image"].as_str() == Some(version)))
        };
        let (m, _) = self
            .client
            .create(
                Call::post(
                    "create canary machine",
                    format!("/apps/{}/machines", enc(app)),
                )
                .json(body),
                |r| r.json::<ApiMachine>("create canary machine"),
                lookup,
            )
            .await?;
        let deadline = Instant::now() + self.health_timeout;
        let ready = async {
            self.wait_started(app, &m.id, deadline).await?;
            self.healthy(&self.production_url, Some(&m.id), deadline)
                .await
        }
        .await;
        let inst = Instance {
            state: "started".into(),
            ..m.instance()
        };
        if let Err(e) = ready {
            // Never leave a canary that did not come up.
            let _ = self.stop_canary(&inst).await;
            return Err(e.context("the canary machine did not become healthy"));
        }
        Ok(inst)
    }

    async fn stop_canary(&self, canary: &Instance) -> anyhow::Result<()> {
        match self
            .client
            .send(Call::delete(
                "destroy canary machine",
                format!(
                    "/apps/{}/machines/{}?force=true",
                    enc(&self.production_app),
                    enc(&canary.id)
                ),
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn update_instance(&self, id: &str, version: &str) -> anyhow::Result<()> {
        self.set_image(&self.production_app, id, version, &self.production_url)
            .await
    }

    fn target(&self, instance: &Instance) -> Target {
        Target {
            base_url: self.production_url.clone(),
            headers: vec![(PIN_HEADER.to_string(), instance.id.clone())],
        }
    }
}
