//! The gate in front of a Fly preview: a [`Platform`] that deploys the app with a front machine
//! ([`FlyPlatform::deploy_fronted`]) running `atlas gate serve` from the Atlas image. The gate is
//! configured by plain machine environment (`ATLAS_GATE_*`: mode, upstream, preview, run, PR);
//! its key and the OAuth client secret are app secrets, so they never appear in a machine's
//! config, in a log or in an output. The preview's nonce is drawn when the gate machine is first
//! created and kept in its metadata (`atlas_gate_nonce`): any later run reads it back to mint
//! links from the repository's gate secret, and destroying the app destroys the nonce, so every
//! link to the preview dies with it.
//!
//! The gate reaches the app through Fly's proxy on the private network (Flycast) and picks the
//! machine with `fly-force-instance-id`: the current one, or a kept commit's
//! (`/_atlas/c/<sha7>/`, see [`super::commits`]), which the proxy wakes. One-off tasks (the
//! migrations, the seed) run in the private app, beside the app's machines and with the app's
//! secrets, so the gate's app holds only the gate's.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::local::{Bypass, Minted};
use super::token::{Kind, PreviewKey, new_nonce, now};
use super::{BYPASS_HEADER, Mode, token};
use crate::provider::fly::{FlyPlatform, Front};
use crate::provider::{
    AppDeployment, Deleted, DeployRequest, Owned, Platform, TaskOutput, TaskRequest,
};
use crate::secret::Secret;

/// The front machine's metadata key holding the preview's nonce.
pub const NONCE_KEY: &str = "atlas_gate_nonce";
/// The port the gate listens on inside its machine.
pub const GATE_PORT: u16 = 8080;

/// GitHub sign-in settings of a Fly gate (the same OAuth app settings as a local gate's).
pub use super::github::OauthApp as FlyGithub;

pub struct FlyGate {
    fly: FlyPlatform,
    mode: Mode,
    secret: Secret,
    image: String,
    run: String,
    /// How long this run's bypass token lives (the run's own deadline).
    run_ttl: Duration,
    github: Option<FlyGithub>,
    bypass: Bypass,
    minted: Minted,
}

impl FlyGate {
    /// Wraps `fly`; `image` is the Atlas image the gate machine runs; `run` names this run (its
    /// bypass tokens are accepted by the gate it deploys, no other run's).
    pub fn new(
        fly: FlyPlatform,
        mode: Mode,
        secret: Secret,
        image: &str,
        run: &str,
        github: Option<FlyGithub>,
    ) -> anyhow::Result<FlyGate> {
        if mode == Mode::Public {
            anyhow::bail!("a public preview has no gate");
        }
        if secret.expose().trim().len() < 16 {
            anyhow::bail!(
                "input `gate_secret` is required for [preview] access = \"{}\" and must be at least 16 characters",
                mode.as_str()
            );
        }
        if mode == Mode::Github && github.is_none() {
            anyhow::bail!(
                "[preview] access = \"github\" needs the inputs `gate_github_client_id` and `gate_github_client_secret` (a GitHub OAuth app)"
            );
        }
        if !token::is_field(run) {
            anyhow::bail!("gate: run id `{run}` must be [A-Za-z0-9_-]");
        }
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            anyhow::bail!("input `gate_image` `{image}` is not an image reference");
        }
        Ok(FlyGate {
            fly,
            mode,
            secret,
            image: image.to_string(),
            run: run.to_string(),
            run_ttl: Duration::from_secs(6 * 3600),
            github,
            bypass: Bypass::default(),
            minted: Minted::default(),
        })
    }

    /// The plain environment of the gate machine (no secret in it).
    fn env(&self, req: &DeployRequest, url: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        put("ATLAS_GATE_LISTEN", format!("[::]:{GATE_PORT}"));
        put("ATLAS_GATE_MODE", self.mode.as_str().into());
        put("ATLAS_GATE_PREVIEW", req.app.clone());
        put("ATLAS_GATE_RUN", self.run.clone());
        // Fly's proxy sets X-Forwarded-For/-Proto; nothing else reaches the gate's public port.
        put("ATLAS_GATE_TRUST_FORWARDED", "true".into());
        if url.starts_with("https://") {
            put("ATLAS_GATE_HTTPS", "true".into());
        }
        if let Some(pr) = req.pr {
            put("ATLAS_GATE_PR", pr.to_string());
        }
        if let Some(g) = &self.github {
            put("ATLAS_GATE_GITHUB_CLIENT_ID", g.client_id.clone());
            put("ATLAS_GATE_GITHUB_REPO", req.repository.clone());
            if !g.teams.is_empty() {
                put("ATLAS_GATE_GITHUB_TEAMS", g.teams.join(","));
            }
            put("ATLAS_GATE_PUBLIC_URL", url.to_string());
        }
        env
    }
}

#[async_trait]
impl Platform for FlyGate {
    fn kind(&self) -> &'static str {
        self.fly.kind()
    }

    async fn deploy(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment> {
        if !token::is_field(&req.app) {
            anyhow::bail!("gate: app name `{}` is not [A-Za-z0-9_-]", req.app);
        }
        let nonce = match self.fly.front_metadata(&req.app, NONCE_KEY).await? {
            Some(n) if token::is_field(&n) => n,
            _ => new_nonce(),
        };
        let key = PreviewKey::derive(&self.secret, &req.app, &nonce);
        let bypass = Secret::new(key.mint(Kind::Bypass, now() + self.run_ttl.as_secs(), &self.run));
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "ATLAS_GATE_KEY".to_string(),
            PreviewKey::derived_hex(&self.secret, &req.app, &nonce),
        );
        if let Some(g) = &self.github {
            secrets.insert(
                "ATLAS_GATE_GITHUB_CLIENT_SECRET".to_string(),
                g.client_secret.clone(),
            );
        }
        let url = self.fly.preview_url(&req.app);
        let link_nonce = nonce.clone();
        let front = Front {
            image: self.image.clone(),
            cmd: vec!["gate".into(), "serve".into()],
            env: self.env(req, &url),
            secrets,
            port: GATE_PORT,
            metadata: [(NONCE_KEY.to_string(), nonce)].into_iter().collect(),
            upstream_env: "ATLAS_GATE_UPSTREAM".into(),
            instance_env: "ATLAS_GATE_UPSTREAM_INSTANCE".into(),
            sha_env: "ATLAS_GATE_SHA".into(),
            commits_env: "ATLAS_GATE_COMMITS".into(),
            probe_headers: vec![(BYPASS_HEADER.to_string(), bypass.clone())],
        };
        let d = self.fly.deploy_fronted(req, Some(&front)).await?;
        self.bypass.set(&req.app, bypass);
        if self.mode == Mode::SignedLink {
            self.minted.set(&req.app, &link_nonce, &format!("{url}/"));
        }
        Ok(d)
    }

    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
        // The app goes as a whole: its gate machine, and with it the nonce every link needs.
        self.fly.destroy(app).await
    }

    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
        self.fly.list_apps().await
    }

    async fn set_expiry(&self, app: &str, at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        self.fly.set_expiry(app, at).await
    }

    async fn set_pin(&self, app: &str, by: Option<&str>) -> anyhow::Result<()> {
        self.fly.set_pin(app, by).await
    }

    async fn app_machines(
        &self,
        app: &str,
    ) -> anyhow::Result<Option<Vec<crate::provider::MachineInfo>>> {
        self.fly.app_machines(app).await
    }

    async fn stop_machines(&self, app: &str) -> anyhow::Result<Option<Vec<String>>> {
        self.fly.stop_machines(app).await
    }

    async fn run_task(&self, req: &TaskRequest) -> anyhow::Result<Option<TaskOutput>> {
        // Beside the app's machines, with the app's secrets: the gate's app holds only its own.
        self.fly.run_private_task(req).await
    }

    async fn running_commit(&self, app: &str) -> anyhow::Result<Option<String>> {
        self.fly.running_commit(app).await
    }

    fn bypass_header(&self, app: &str) -> Option<(String, Secret)> {
        self.bypass
            .token(app)
            .map(|t| (BYPASS_HEADER.to_string(), t))
    }

    fn signed_link(&self, app: &str, ttl: Duration) -> Option<String> {
        self.minted.link(&self.secret, app, ttl)
    }

    async fn mint_link(&self, app: &str, ttl: Duration) -> anyhow::Result<Option<String>> {
        if self.mode != Mode::SignedLink {
            return Ok(None);
        }
        if let Some(l) = self.minted.link(&self.secret, app, ttl) {
            return Ok(Some(l));
        }
        cloud_link(&self.fly, &self.secret, app, ttl)
            .await
            .map(Some)
    }
}

/// A signed link to the Fly preview `app`, valid for `ttl`: minted from the repository's gate
/// secret and the nonce its gate machine holds (the key the gate verifies with), under the
/// preview's URL. Any later run can mint one; an app with no gate (public, destroyed, never
/// deployed) has no nonce, so there is nothing to mint for.
pub async fn cloud_link(
    fly: &FlyPlatform,
    secret: &Secret,
    app: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    if !token::is_field(app) {
        anyhow::bail!("gate: app name `{app}` is not [A-Za-z0-9_-]");
    }
    let nonce = fly
        .front_metadata(app, NONCE_KEY)
        .await?
        .filter(|n| token::is_field(n))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no gated preview `{app}` on Fly (it is not deployed, or [preview] access was \"public\" when it was)"
            )
        })?;
    Ok(super::mint_link(
        secret,
        app,
        &nonce,
        &format!("{}/", fly.preview_url(app)),
        ttl,
    ))
}
