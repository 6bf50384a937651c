//! The gate in front of a local preview: a [`Platform`] that deploys the app with the platform it
//! wraps, then runs `atlas gate serve` on loopback in front of it (itself a local process, with
//! the same process-group, state-file and readiness handling as the app), and answers with the
//! gate's URL. The preview's nonce is drawn when the gate is first created and kept in
//! `<dir>/<app>.nonce` across updates; `destroy` stops the gate and deletes the nonce, so every
//! link to the preview dies with it.
//!
//! GitHub sign-in works locally too: GitHub accepts a loopback `redirect_uri` on any port for an
//! OAuth app whose callback URL is `http://127.0.0.1/...`, so the gate's callback is on the
//! loopback gate itself (`http://127.0.0.1:<port>/_atlas/github/callback`).
//!
//! Per-commit URLs: before each update the running app is kept aside by the platform it wraps
//! ([`Platform::keep_previous`]: a local process keeps running on its port), at most
//! `[preview] keep_commits` of them (the oldest beyond go; a kept copy of the commit being
//! deployed goes too), and the gate is started with one `--commit <sha>=127.0.0.1:<port>` per
//! kept version. `destroy` removes them all with the app.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;

use super::commits::{COMMIT_PREFIX, is_sha, sha7};
use super::token::{Kind, PreviewKey, new_nonce, now};
use super::{Mode, token};
use crate::provider::local::process::LocalProcess;
use crate::provider::{
    AppDeployment, Deleted, DeployRequest, Kept, KeptCommit, Owned, Platform, TaskOutput,
    TaskRequest,
};
use crate::secret::Secret;

/// What a run needs to pass its own gate: the header value, per app.
#[derive(Debug, Clone, Default)]
pub struct Bypass(Arc<Mutex<Vec<(String, Secret)>>>);

/// What a signed link to a preview deployed in this run needs besides the secret: its
/// nonce and URL, per app.
#[derive(Debug, Clone, Default)]
pub(super) struct Minted(Arc<Mutex<Vec<(String, String, String)>>>);

impl Minted {
    pub(super) fn set(&self, app: &str, nonce: &str, url: &str) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|(a, _, _)| a != app);
        v.push((app.to_string(), nonce.to_string(), url.to_string()));
    }

    /// The link to `app`, when its gate was deployed in this run.
    pub(super) fn link(&self, secret: &Secret, app: &str, ttl: Duration) -> Option<String> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .find(|(a, _, _)| a == app)
            .map(|(_, nonce, url)| super::mint_link(secret, app, nonce, url, ttl))
    }
}

impl Bypass {
    /// The bypass token of `app` minted in this run, if its gate was deployed in this run.
    pub fn token(&self, app: &str) -> Option<Secret> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter().find(|(a, _)| a == app).map(|(_, t)| t.clone())
    }

    pub(super) fn set(&self, app: &str, t: Secret) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|(a, _)| a != app);
        v.push((app.to_string(), t));
    }
}

pub struct LocalGate {
    inner: Box<dyn Platform>,
    dir: PathBuf,
    exe: PathBuf,
    mode: Mode,
    secret: Secret,
    run: String,
    /// How long this run's bypass token lives (the run's own deadline).
    run_ttl: Duration,
    bypass: Bypass,
    minted: Minted,
    /// How many previous commits stay reachable at their commit URLs.
    keep_commits: usize,
    /// `access = "github"`: the OAuth app and the GitHub it signs in with.
    github: Option<LocalGithub>,
}

/// GitHub sign-in in front of a local preview.
#[derive(Debug, Clone)]
pub struct LocalGithub {
    pub app: super::github::OauthApp,
    /// `owner/name`: its readers may open the preview.
    pub repo: String,
    /// `https://github.com` (GITHUB_SERVER_URL): the authorize and token endpoints.
    pub web_url: String,
    /// `https://api.github.com` (GITHUB_API_URL).
    pub api_url: String,
}

/// The nonce a local preview was created with, if it exists.
pub fn nonce(dir: &Path, app: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(format!("{app}.nonce")))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| token::is_field(s))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl LocalGate {
    /// Wraps `inner`; gate state lives in `dir`; `exe` is the atlas binary that runs the gate.
    pub fn new(
        inner: Box<dyn Platform>,
        dir: &Path,
        exe: &Path,
        mode: Mode,
        secret: Secret,
        run_ttl: Duration,
    ) -> LocalGate {
        LocalGate {
            inner,
            dir: dir.to_path_buf(),
            exe: exe.to_path_buf(),
            mode,
            secret,
            run: format!("local-{}", new_nonce()),
            run_ttl,
            bypass: Bypass::default(),
            minted: Minted::default(),
            keep_commits: crate::config::settings::DEFAULT_KEEP_COMMITS,
            github: None,
        }
    }

    /// Signs reviewers in with GitHub (`access = "github"`).
    pub fn with_github(mut self, github: LocalGithub) -> LocalGate {
        self.github = Some(github);
        self
    }

    /// How many previous commits stay reachable (`[preview] keep_commits`; 0: none).
    pub fn with_keep_commits(mut self, n: usize) -> LocalGate {
        self.keep_commits = n;
        self
    }

    /// The local preview's gate: state in `<state_dir>/gate`, `exe` (this atlas binary) runs
    /// it, and the repository secret is `env_secret` (`ATLAS_GATE_SECRET`), else one drawn once
    /// and kept in `<state_dir>/gate/secret` (mode 0600) so local links survive across runs.
    pub fn for_state_dir(
        inner: Box<dyn Platform>,
        state_dir: &Path,
        mode: Mode,
        env_secret: Option<Secret>,
        exe: &Path,
    ) -> anyhow::Result<LocalGate> {
        let dir = state_dir.join("gate");
        let secret = local_secret(&dir, env_secret)?;
        Ok(LocalGate::new(
            inner,
            &dir,
            exe,
            mode,
            secret,
            Duration::from_secs(3600),
        ))
    }

    /// The handle the smoke checks and load test read their bypass header from.
    pub fn bypass(&self) -> Bypass {
        self.bypass.clone()
    }

    fn processes(
        &self,
        upstream: &str,
        app: &str,
        pr: Option<u64>,
        sha: &str,
        kept: &[Kept],
    ) -> LocalProcess {
        let mut cmd = format!(
            "exec {} gate serve --listen 127.0.0.1:$PORT --upstream {} --mode {} --preview {} --run {}",
            sh_quote(&self.exe.display().to_string()),
            sh_quote(upstream),
            self.mode.as_str(),
            app,
            self.run
        );
        if let Some(n) = pr {
            cmd.push_str(&format!(" --pr {n}"));
        }
        if is_sha(sha) {
            cmd.push_str(&format!(" --sha {sha}"));
        }
        if let (Mode::Github, Some(g)) = (self.mode, &self.github) {
            // The callback is the loopback gate's own port ($PORT, expanded by the shell).
            cmd.push_str(&format!(
                " --github-client-id {} --github-repo {} --github-url {} --github-api-url {} --public-url \"http://127.0.0.1:$PORT\"",
                sh_quote(&g.app.client_id),
                sh_quote(&g.repo),
                sh_quote(&g.web_url),
                sh_quote(&g.api_url),
            ));
            for t in &g.app.teams {
                cmd.push_str(&format!(" --github-team {}", sh_quote(t)));
            }
        }
        for k in kept {
            // Both checked: hex, and the platform's own `127.0.0.1:<port>`.
            cmd.push_str(&format!(
                " --commit {}",
                sh_quote(&format!("{}={}", k.sha, k.upstream))
            ));
        }
        LocalProcess::new(&self.dir, &cmd, &self.dir)
    }
}

#[async_trait]
impl Platform for LocalGate {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn deploy(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment> {
        if !token::is_field(&req.app) {
            anyhow::bail!("gate: app name `{}` is not [A-Za-z0-9_-]", req.app);
        }
        // The version running now stays reachable at its commit URL.
        if self.keep_commits > 0 {
            self.inner.keep_previous(req).await?;
        }
        let app = self.inner.deploy(req).await?;
        let mut kept = Vec::new();
        for k in self.inner.kept(&req.app).await? {
            if k.sha == req.sha || !is_sha(&k.sha) || kept.len() >= self.keep_commits {
                self.inner.destroy(&k.name).await?;
            } else {
                kept.push(k);
            }
        }
        let upstream = app
            .url
            .strip_prefix("http://")
            .map(|u| u.trim_end_matches('/').to_string())
            .with_context(|| {
                format!(
                    "gate: the local app's URL `{}` is not http://host:port",
                    app.url
                )
            })?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let nonce = match nonce(&self.dir, &req.app) {
            Some(n) => n,
            None => {
                let n = new_nonce();
                let p = self.dir.join(format!("{}.nonce", req.app));
                std::fs::write(&p, &n).with_context(|| format!("cannot write {}", p.display()))?;
                n
            }
        };
        let key = PreviewKey::derived_hex(&self.secret, &req.app, &nonce);
        let mut secrets: std::collections::BTreeMap<String, Secret> =
            [("ATLAS_GATE_KEY".to_string(), key)].into_iter().collect();
        if self.mode == Mode::Github {
            let g = self.github.as_ref().context(
                "[preview] access = \"github\" needs the OAuth app: set INPUT_GATE_GITHUB_CLIENT_ID and INPUT_GATE_GITHUB_CLIENT_SECRET",
            )?;
            secrets.insert(
                "ATLAS_GATE_GITHUB_CLIENT_SECRET".to_string(),
                g.app.client_secret.clone(),
            );
        }
        let gate_req = DeployRequest {
            pr: req.pr,
            app: req.app.clone(),
            sha: req.sha.clone(),
            repository: req.repository.clone(),
            image: None,
            env: Default::default(),
            secrets,
            port: 0,
            health_path: "/_atlas/healthz".into(),
            readiness_timeout: Duration::from_secs(20),
            expires_at: req.expires_at,
            outgoing: None,
        };
        let gate = self
            .processes(&upstream, &req.app, req.pr, &req.sha, &kept)
            .deploy(&gate_req)
            .await
            .context("the access gate did not start")?;
        let t = PreviewKey::derive(&self.secret, &req.app, &nonce).mint(
            Kind::Bypass,
            now() + self.run_ttl.as_secs(),
            &self.run,
        );
        self.bypass.set(&req.app, Secret::new(t));
        if self.mode == Mode::SignedLink {
            self.minted.set(
                &req.app,
                &nonce,
                &format!("{}/", gate.url.trim_end_matches('/')),
            );
        }
        let commits = kept
            .iter()
            .map(|k| KeptCommit {
                sha: k.sha.clone(),
                url: format!("{}{COMMIT_PREFIX}{}/", gate.url, sha7(&k.sha)),
            })
            .collect();
        Ok(AppDeployment {
            url: gate.url,
            commits,
            ..app
        })
    }

    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
        // The gate first: from here on nothing answers at the preview's URL.
        let gate = self.processes("-", app, None, "", &[]).destroy(app).await?;
        let p = self.dir.join(format!("{app}.nonce"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
        let inner = self.inner.destroy(app).await?;
        Ok(match (gate, inner) {
            (Deleted::AlreadyGone, Deleted::AlreadyGone) => Deleted::AlreadyGone,
            _ => Deleted::Removed,
        })
    }

    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
        self.inner.list_apps().await
    }

    async fn set_expiry(&self, app: &str, at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        self.inner.set_expiry(app, at).await
    }

    async fn set_pin(&self, app: &str, by: Option<&str>) -> anyhow::Result<()> {
        self.inner.set_pin(app, by).await
    }

    async fn run_task(&self, req: &TaskRequest) -> anyhow::Result<Option<TaskOutput>> {
        self.inner.run_task(req).await
    }

    async fn running_commit(&self, app: &str) -> anyhow::Result<Option<String>> {
        if self.keep_commits == 0 {
            return Ok(None);
        }
        self.inner.current_commit(app).await
    }

    fn bypass_header(&self, app: &str) -> Option<(String, Secret)> {
        self.bypass
            .token(app)
            .map(|t| (super::BYPASS_HEADER.to_string(), t))
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
        let state_dir = self.dir.parent().unwrap_or(&self.dir);
        local_link(state_dir, app, ttl, Some(self.secret.clone())).map(Some)
    }
}

/// The local repository secret (see [`LocalGate::for_state_dir`]).
pub fn local_secret(dir: &Path, env_secret: Option<Secret>) -> anyhow::Result<Secret> {
    if let Some(s) = env_secret.filter(|s| !s.expose().trim().is_empty()) {
        return Ok(s);
    }
    let path = dir.join("secret");
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        return Ok(Secret::new(s.trim()));
    }
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let s = format!("{}{}", new_nonce(), new_nonce());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(s.as_bytes())?;
    Ok(Secret::new(s))
}

/// A link to the local preview `app`: its gate's URL, nonce and the local secret.
pub fn local_link(
    state_dir: &Path,
    app: &str,
    ttl: Duration,
    env_secret: Option<Secret>,
) -> anyhow::Result<String> {
    let dir = state_dir.join("gate");
    let nonce = nonce(&dir, app).with_context(|| {
        format!("no gated local preview `{app}` (run `atlas preview up --local` with [preview] access = \"signed-link\")")
    })?;
    let st = LocalProcess::new(&dir, "", &dir)
        .state(app)
        .filter(|s| s.alive())
        .with_context(|| format!("the gate of `{app}` is not running"))?;
    let secret = local_secret(&dir, env_secret)?;
    Ok(super::mint_link(
        &secret,
        app,
        &nonce,
        &format!("http://127.0.0.1:{}/", st.port),
        ttl,
    ))
}
