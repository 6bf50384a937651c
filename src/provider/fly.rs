//! Fly.io Machines API: preview apps (DESIGN.md sections 3 and 5).
//!
//! One app per PR (`<prefix>-pr-<n>` from `naming`), in the configured org. The Machines API
//! has no app metadata, so ownership lives on the machines: every machine Atlas creates carries
//! `atlas=preview`, `atlas_pr`, `atlas_repo` and `atlas_sha`. An existing app of that name is
//! adopted only if it is in the configured org and each of its machines carries Atlas's marks
//! for this PR and repository; an app with no machines is adopted, because the name embeds the
//! repository hash and a create that failed half-way leaves exactly that. Secrets go through
//! `POST /apps/{app}/secrets` (one call for all values; new machines wait for that secrets
//! version). An update replaces the image of the existing machine in place; extra machines
//! left by an earlier failure are destroyed so they never pile up. Readiness is `/wait` with
//! `state=started` (at most 60 s per call) in a bounded loop, then the preview URL's health
//! path.
//!
//! One-off tasks ([`Platform::run_task`], the preview's migrations) follow Fly's own
//! `release_command` pattern: before the app's machine is updated, a machine is created from
//! the same image with the app's secrets, `init.cmd` set to the command (`["sh", "-c", cmd]`, or
//! the command itself when it is a JSON exec array, for images without a shell: like
//! `docker run IMAGE CMD`, an image ENTRYPOINT receives it as arguments), `restart.policy = no`,
//! `auto_destroy`, no services, and `atlas_role = migrations` next to the ownership marks.
//! Atlas waits for `stopped` (`/wait`, at most 60 s per call, bounded by the task timeout),
//! reads the exit code from the machine's newest `exit` event
//! (`request.exit_event.exit_code`; Fly omits a zero code), and destroys the machine if it is
//! still there. The Machines API serves no logs, so the output tail says where they are.
//! Deploys never adopt a task machine as the app's machine; a leftover one is destroyed.
//!
//! A fronted deploy ([`FlyPlatform::deploy_fronted`], the access gate) spans two apps. The
//! preview app `<prefix>-pr-<n>` holds only the front (`atlas_role = gate`) and its public service
//! (80/443, autostop/autostart). The app's machines live in the private app `<prefix>-pr-<n>-app`
//! in the same org, whose only address is a Flycast private IPv6 (`POST
//! /apps/{app}/ip_assignments` with `type = private_v6`; any other address found on it is
//! released), and each app machine has a service (port 80, `http` handler, autostop/autostart,
//! no `force_https`). The front reaches it through Fly's proxy at `<private>.flycast:80` with
//! `fly-force-instance-id: <machine id>`, so the proxy suspends or stops an idle app machine and
//! wakes it on the front's request, as it does for the front itself.
//!
//! Why two apps: Fly's proxy routes an app's services on every address the app has — with the
//! public IPs `<app>.fly.dev` needs, a service on the app machine would be reachable from the
//! internet past the gate (Fly's Flycast docs warn of exactly this). The earlier design (the app
//! machine without services, reached at `<id>.vm.<app>.internal`) kept it private but it never
//! slept: without a service the proxy neither stops nor wakes a machine, and 6PN names resolve
//! only for started machines.
//!
//! Per-commit URLs: each app machine carries its commit in `atlas_commit`. A push of another
//! commit creates a new machine instead of updating the running one; once the new one serves
//! through the front, the previous one is marked `atlas_role = kept` and stopped, at most
//! `[preview] keep_commits` stay (the oldest beyond, and a kept copy of the commit just deployed,
//! are destroyed), and the front is configured with one route per kept machine
//! (`ATLAS_GATE_COMMITS = <sha>=instance:<id>,...`), which the proxy wakes on demand. A push of
//! the same commit updates its machine in place. A new version that does not come up is
//! destroyed (or, in place, rolled back) and the front goes back to the config that served.
//! A kept machine sleeps stopped; with the outgoing commit's own data
//! ([`DeployRequest::outgoing`], `[preview] commit_data = "snapshot"`) its config is switched,
//! without starting it, to read the app's secrets through its commit's names (`processes[0]`
//! with `ignore_app_secrets` and one `secrets` entry per name: `DATABASE_URL` from the app secret
//! `ATLAS_C_<SHA7>_DATABASE_URL`), so it wakes on the branch frozen for it. A commit's secrets go
//! when its machine is pruned.
//!
//! Secrets: the app's go to the private app, the front's to the preview app (one call each), and
//! any other secret found on the preview app is unset: the gate's app holds only what the gate
//! needs. Behind a gate, one-off tasks run in the private app ([`FlyPlatform::run_private_task`]),
//! where the app's secrets are. `destroy` removes both apps (kept machines with them), and the
//! sweep finds a private app left without its preview app.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{AutoStop, FlyAccess, FlySettings, Settings};
use crate::http::{Call, Client, RetryPolicy, Timeouts, enc, status_of};
use crate::naming;
use crate::provider::{
    AppDeployment, Deleted, DeployRequest, KeptCommit, OWNER_KEY, OWNER_VALUE, Owned, PIN_KEY,
    PR_KEY, Platform, REPO_KEY, SHA_KEY, TaskOutput, TaskRequest,
};

/// The machine metadata key naming what a machine is for; absent on the app's own machine.
pub const ROLE_KEY: &str = "atlas_role";
/// The role of a one-off migrations machine.
pub const ROLE_MIGRATIONS: &str = "migrations";
/// The role of the machine in front of the app (the access gate).
pub const ROLE_FRONT: &str = "gate";
/// The role of a previous commit's app machine, kept stopped for its commit URL.
pub const ROLE_KEPT: &str = "kept";
/// The app machine metadata key holding the commit it runs.
pub const COMMIT_KEY: &str = "atlas_commit";
/// The private app of a gated preview: `<app>-app` (see the module docs).
pub fn private_app(app: &str) -> String {
    format!("{app}{PRIVATE_SUFFIX}")
}
const PRIVATE_SUFFIX: &str = "-app";
/// Fly's proxy on the private network: `<private app>.flycast`, port 80.
pub fn flycast_address(private: &str) -> String {
    format!("{private}.flycast:80")
}
/// The machine metadata key holding the preview's expiry (RFC 3339), renewed on every push and
/// by `atlas preview extend`; the sweep reads it back.
pub const EXPIRES_KEY: &str = "atlas_expires";
use crate::secret::{self, Secret};

/// A Fly machine as the Machines API returns it (the fields Atlas reads); the preview platform
/// and the verify fleet both read this one shape.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ApiMachine {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) instance_id: Option<String>,
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) region: Option<String>,
    #[serde(default)]
    pub(crate) updated_at: Option<String>,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
    #[serde(default)]
    pub(crate) config: Value,
}

impl ApiMachine {
    pub(crate) fn meta(&self, key: &str) -> Option<&str> {
        self.config["metadata"][key].as_str()
    }

    /// A one-off task machine (never the app's own).
    fn is_task(&self) -> bool {
        self.meta(ROLE_KEY)
            .is_some_and(|r| r != ROLE_FRONT && r != ROLE_KEPT)
    }

    /// A previous commit's app machine, kept for its commit URL.
    fn is_kept(&self) -> bool {
        self.meta(ROLE_KEY) == Some(ROLE_KEPT)
    }

    /// The machine in front of the app.
    fn is_front(&self) -> bool {
        self.meta(ROLE_KEY) == Some(ROLE_FRONT)
    }

    /// The app's own machine.
    fn is_app(&self) -> bool {
        self.meta(ROLE_KEY).is_none()
    }
}

/// A machine in front of the app that takes its public service (the access gate): what it runs
/// and what it needs, opaque to the platform.
#[derive(Debug, Clone)]
pub struct Front {
    pub image: String,
    /// `init.cmd`: the arguments after the image's entrypoint.
    pub cmd: Vec<String>,
    /// Plain environment; `upstream_env` is added with the app machine's private address.
    pub env: BTreeMap<String, String>,
    /// Its secrets: set as app secrets with the app's, in the same call; never in `env`.
    pub secrets: BTreeMap<String, Secret>,
    /// The port it listens on (the public service's internal port).
    pub port: u16,
    /// Extra machine metadata (kept across updates; read back with
    /// [`FlyPlatform::front_metadata`]).
    pub metadata: BTreeMap<String, String>,
    /// The variable that receives the app's Flycast address (`<private>.flycast:80`).
    pub upstream_env: String,
    /// The variable that receives the current app machine's id (`fly-force-instance-id`).
    pub instance_env: String,
    /// The variable that receives the current commit.
    pub sha_env: String,
    /// The variable that receives the kept commits: `<sha>=instance:<machine id>,...`.
    pub commits_env: String,
    /// Headers the readiness probe sends (the front lets Atlas's own probe through).
    pub probe_headers: Vec<(String, Secret)>,
}

/// The app machine's address on the app's private network: its own 6PN name, so that only this
/// machine answers (`<app>.internal` lists every machine of the app, the front included).
pub fn private_address(app: &str, machine_id: &str, port: u16) -> String {
    format!("{machine_id}.vm.{app}.internal:{port}")
}

/// The `init.cmd` of a task: a JSON array of strings is an exec array, anything else a shell
/// command line.
fn task_cmd(command: &str) -> anyhow::Result<Vec<String>> {
    let t = command.trim_start();
    if t.starts_with('[') {
        let v: Vec<String> = serde_json::from_str(t).context(
            "[database] migrations starts with `[` but is not a JSON array of strings (an exec array such as [\"/app/migrate\", \"up\"]); fix the array or write a shell command",
        )?;
        if v.is_empty() {
            anyhow::bail!("[database] migrations is an empty exec array; give the program to run");
        }
        Ok(v)
    } else {
        Ok(vec!["sh".into(), "-c".into(), command.to_string()])
    }
}

/// The exit code of the newest `exit` event, if the machine has one. Fly serialises the code
/// with `omitempty`, so an exit event without one is a zero exit.
fn exit_code(events: &Value) -> Option<i64> {
    let newest = events
        .as_array()?
        .iter()
        .filter(|e| e["type"].as_str() == Some("exit"))
        .max_by_key(|e| e["timestamp"].as_i64().unwrap_or(0))?;
    let req = &newest["request"];
    let code = req["exit_event"]["exit_code"]
        .as_i64()
        .or_else(|| req["MonitorEvent"]["exit_event"]["exit_code"].as_i64())
        .unwrap_or(0);
    Some(code)
}

/// Fly's platform provider.
#[derive(Debug)]
pub struct FlyPlatform {
    client: Client,
    /// For the preview URL probe: no Authorization header ever goes to the app.
    probe: reqwest::Client,
    org: String,
    repository: String,
    prefix: String,
    settings: FlySettings,
    /// Spacing of app deletes, whichever app: Fly allows about 100 a minute.
    app_delete_spacing: Duration,
    /// `[preview] keep_commits`: previous commits' machines kept behind a front.
    keep_commits: usize,
}

/// Where a preview answers its health check: the URL, the path, the headers the front needs.
#[derive(Clone, Copy)]
struct Probe<'a> {
    url: &'a str,
    health_path: &'a str,
    headers: &'a [(String, Secret)],
}

/// 100 app deletes a minute at most (a sweep of hundreds of orphans stays under the limit).
pub const APP_DELETE_SPACING: Duration = Duration::from_millis(600);

/// The Machines API client from the `fly_*` inputs (shared by previews and the verify fleet);
/// `purpose` completes the missing-token error ("for a fly preview").
pub fn api_client(
    access: &FlyAccess,
    policy: RetryPolicy,
    purpose: &str,
) -> anyhow::Result<Client> {
    let token = access
        .api_token
        .as_ref()
        .with_context(|| format!("input `fly_api_token` is required {purpose}"))?;
    // Fly's own tokens may already carry their scheme (`FlyV1 fm2_...`).
    let auth = if token.expose().starts_with("FlyV1 ") {
        token.clone()
    } else {
        Client::bearer(token)
    };
    // Fly's documented rate limit for mutations: 1 request/s per action and machine.
    Ok(Client::new(
        "fly",
        &access.api_url,
        Some(auth),
        policy,
        Timeouts::default(),
    )?
    .with_pacing(Duration::from_secs(1)))
}

impl FlyPlatform {
    /// Builds the provider from the `fly_*` inputs; `repository` (`owner/name`) names the apps
    /// (through `naming::prefix`) and goes into the machines' metadata.
    pub fn new(
        access: &FlyAccess,
        settings: &Settings,
        repository: &str,
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let org = access
            .org
            .clone()
            .context("input `fly_org` is required for a fly preview")?;
        let client = api_client(access, policy, "for a fly preview")?;
        let probe = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the http client for the preview probe")?;
        Ok(FlyPlatform {
            client,
            probe,
            org,
            repository: repository.to_string(),
            prefix: naming::prefix(settings.app.name.as_deref(), repository),
            settings: settings.fly.clone(),
            app_delete_spacing: APP_DELETE_SPACING,
            keep_commits: settings.preview.keep_commits,
        })
    }

    /// Replaces [`APP_DELETE_SPACING`] (tests sweep hundreds of apps faster).
    pub fn with_app_delete_spacing(mut self, every: Duration) -> Self {
        self.app_delete_spacing = every;
        self
    }

    /// Shorter timeouts and polling (tests against a local fake).
    pub fn with_timeouts(mut self, timeouts: Timeouts, poll: Duration) -> anyhow::Result<Self> {
        self.client = self.client.with_timeouts(timeouts, poll)?;
        Ok(self)
    }

    /// The app name prefix of this repository.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The preview URL of an app.
    pub fn preview_url(&self, app: &str) -> String {
        self.settings
            .preview_url
            .as_deref()
            .unwrap_or("https://{app}.fly.dev")
            .replace("{app}", app)
            .trim_end_matches('/')
            .to_string()
    }

    /// The app, or `None` when it does not exist.
    async fn get_app(&self, app: &str, transient_404: bool) -> anyhow::Result<Option<Value>> {
        match self
            .client
            .send(Call::get("get app", format!("/apps/{}", enc(app))).transient_404(transient_404))
            .await
        {
            Ok(r) => Ok(Some(r.json("get app")?)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn machines(&self, app: &str, transient_404: bool) -> anyhow::Result<Vec<ApiMachine>> {
        let r = self
            .client
            .send(
                Call::get("list machines", format!("/apps/{}/machines", enc(app)))
                    .transient_404(transient_404),
            )
            .await?;
        r.json("list machines")
    }

    /// Why an app is not Atlas's, if it is not.
    fn foreign(
        &self,
        app_json: &Value,
        machines: &[ApiMachine],
        pr: Option<u64>,
    ) -> Option<String> {
        if let Some(slug) = app_json["organization"]["slug"].as_str()
            && slug != self.org
        {
            return Some(format!("it belongs to org `{slug}`, not `{}`", self.org));
        }
        for m in machines {
            let ok = m.meta(OWNER_KEY) == Some(OWNER_VALUE)
                && m.meta(REPO_KEY) == Some(self.repository.as_str())
                && pr.is_none_or(|pr| m.meta(PR_KEY) == Some(pr.to_string().as_str()));
            if !ok {
                return Some(format!(
                    "machine {} has no atlas metadata for {}",
                    m.id, self.repository
                ));
            }
        }
        None
    }

    fn is_atlas_machine(&self, m: &ApiMachine, pr: u64) -> bool {
        m.meta(OWNER_KEY) == Some(OWNER_VALUE)
            && m.meta(REPO_KEY) == Some(self.repository.as_str())
            && m.meta(PR_KEY) == Some(pr.to_string().as_str())
    }

    /// For teardown: an app is atlas's when its org is ours and atlas made one of its machines
    /// (or it has none); machines made by hand beside them do not make it foreign. Returns the
    /// machines to judge ownership by.
    fn atlas_machines(&self, ms: &[ApiMachine], pr: u64) -> Vec<ApiMachine> {
        let ours: Vec<ApiMachine> = ms
            .iter()
            .filter(|m| self.is_atlas_machine(m, pr))
            .cloned()
            .collect();
        if ours.is_empty() { ms.to_vec() } else { ours }
    }

    /// Atlas's ownership marks for a machine.
    fn metadata(&self, pr: Option<u64>, sha: &str) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::new();
        metadata.insert(OWNER_KEY.to_string(), OWNER_VALUE.to_string());
        metadata.insert(REPO_KEY.to_string(), self.repository.clone());
        metadata.insert(SHA_KEY.to_string(), sha.to_string());
        if let Some(pr) = pr {
            metadata.insert(PR_KEY.to_string(), pr.to_string());
        }
        metadata
    }

    /// Refuses a name that is not an Atlas preview name of this repository.
    fn check_name(&self, app: &str) -> anyhow::Result<()> {
        if naming::pr_from_app(&self.prefix, app).is_none() {
            anyhow::bail!(
                "fly: app name `{app}` is not an atlas preview name of {} (`{}-pr-N`)",
                self.repository,
                self.prefix
            );
        }
        Ok(())
    }

    /// The image a deploy or task runs, once `app` is known to be ours: both need a registry
    /// reference and a preview name.
    fn checked_image<'r>(&self, app: &str, image: Option<&'r str>) -> anyhow::Result<&'r str> {
        let image =
            image.context("input `image` is required for a fly preview (a registry reference)")?;
        self.check_name(app)?;
        Ok(image)
    }

    /// A create Fly refused for lack of room (the org's app or machine quota, a region out of
    /// capacity, a billing limit) is named as such, with what frees room: orphaned previews
    /// are the usual reason. 429 is a rate limit, retried elsewhere, not a quota.
    fn quota_hint(&self, e: anyhow::Error, what: &str) -> anyhow::Error {
        let quota = e
            .chain()
            .filter_map(|c| c.downcast_ref::<crate::error::ProviderError>())
            .any(|p| {
                let body = p.body.to_ascii_lowercase();
                matches!(p.status, 402 | 403 | 422)
                    && ["quota", "limit", "capacity", "insufficient"]
                        .iter()
                        .any(|k| body.contains(k))
                    && !body.contains("name has already been taken")
            });
        if !quota {
            return e;
        }
        e.context(format!(
            "fly: the {what} was refused for lack of quota or capacity in org `{}`: delete orphaned previews with `atlas sweep` (the sweep workflow), or raise the organization's limits",
            self.org
        ))
    }

    /// Get-or-create the app: adopt only our own; create with a re-read on any transient
    /// failure. Returns whether this call created it, and its machines.
    async fn ensure_app(
        &self,
        app: &str,
        pr: Option<u64>,
    ) -> anyhow::Result<(bool, Vec<ApiMachine>)> {
        match self.get_app(app, false).await? {
            Some(a) => {
                let ms = self.machines(app, false).await?;
                if let Some(why) = self.foreign(&a, &ms, pr) {
                    anyhow::bail!(
                        "fly: app `{app}` exists but is not atlas's ({why}); atlas will not adopt it: delete or rename it"
                    );
                }
                Ok((false, ms))
            }
            None => {
                let (_, created) = self
                    .client
                    .create(
                        Call::post("create app", "/apps")
                            .json(json!({"name": app, "org_slug": self.org})),
                        |_| Ok(()),
                        || async move {
                            // A conflict (422 name taken) adopts only an app that is ours.
                            let Some(a) = self.get_app(app, false).await? else {
                                return Ok(None);
                            };
                            let ms = self.machines(app, false).await?;
                            if let Some(why) = self.foreign(&a, &ms, pr) {
                                anyhow::bail!(
                                    "fly: app name `{app}` is taken by an app that is not atlas's ({why}); atlas left it alone and will not adopt it: pick another [app] name or delete it"
                                );
                            }
                            Ok(Some(()))
                        },
                    )
                    .await
                    .map_err(|e| self.quota_hint(e, "app create"))?;
                Ok((created, Vec::new()))
            }
        }
    }

    /// Sets the app's secrets in one call; returns the secrets version new machines must wait
    /// for. Fresh apps may 404 for a moment (eventual consistency).
    async fn set_secrets(
        &self,
        app: &str,
        secrets: &BTreeMap<String, Secret>,
    ) -> anyhow::Result<Option<u64>> {
        if secrets.is_empty() {
            return Ok(None);
        }
        let values: BTreeMap<&str, &str> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), Secret::expose(v)))
            .collect();
        let r = self
            .client
            .send(
                Call::post("set secrets", format!("/apps/{}/secrets", enc(app)))
                    .json(json!({ "values": values }))
                    .idempotent()
                    .transient_404(true),
            )
            .await?;
        let v: Value = r.json("set secrets").unwrap_or(Value::Null);
        Ok(v["version"].as_u64())
    }

    /// Destroys a machine; a machine already gone is fine.
    async fn destroy_machine(&self, call: &str, app: &str, id: &str) -> anyhow::Result<()> {
        let r = self
            .client
            .send(Call::delete(
                call,
                format!("/apps/{}/machines/{}?force=true", enc(app), enc(id)),
            ))
            .await;
        match r {
            Err(e) if status_of(&e) != Some(404) => Err(e),
            _ => Ok(()),
        }
    }

    /// A GET's JSON, or `None` on 404 (the machine is gone).
    async fn get_json(&self, call: &'static str, path: String) -> anyhow::Result<Option<Value>> {
        match self.client.send(Call::get(call, path)).await {
            Ok(r) => Ok(Some(r.json(call)?)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A GET's JSON on an app that may have just been created (a 404 is retried a while).
    async fn get_fresh(&self, call: &'static str, path: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .send(Call::get(call, path.to_string()).transient_404(true))
            .await?;
        r.json(call)
    }

    /// The machine's JSON, or `None` when it is gone.
    async fn get_machine(&self, app: &str, id: &str) -> anyhow::Result<Option<Value>> {
        let path = format!("/apps/{}/machines/{}", enc(app), enc(id));
        self.get_json("get machine", path).await
    }

    /// The exit code of a finished task machine: from the machine's events, else from the
    /// events endpoint.
    async fn task_exit_code(&self, app: &str, id: &str) -> anyhow::Result<Option<i64>> {
        if let Some(m) = self.get_machine(app, id).await?
            && let Some(code) = exit_code(&m["events"])
        {
            return Ok(Some(code));
        }
        let path = format!("/apps/{}/machines/{}/events?limit=50", enc(app), enc(id));
        let events = self.get_json("list machine events", path).await?;
        Ok(events.and_then(|v| exit_code(&v)))
    }

    /// The app's machine; `public` gives it the public service (no front in front of it).
    fn machine_config(&self, req: &DeployRequest, image: &str, public: bool) -> Value {
        let port = self.settings.internal_port.unwrap_or(req.port);
        let mut env: BTreeMap<String, String> = req.env.clone();
        env.insert("PORT".into(), port.to_string());
        let mut metadata = self.metadata(req.pr, &req.sha);
        if let Some(at) = req.expires_at {
            metadata.insert(EXPIRES_KEY.to_string(), rfc3339(at));
        }
        let mut config = json!({
            "image": image,
            "env": env,
            "metadata": metadata,
            "guest": {
                "cpus": self.settings.cpus,
                "memory_mb": self.settings.memory_mb,
                "cpu_kind": self.settings.cpu_kind,
            },
            "restart": {"policy": "on-failure"},
        });
        if public {
            config["services"] = self.public_service(port);
        }
        config
    }

    /// The one public service (443 with TLS, 80 redirecting), stopped when idle.
    fn public_service(&self, internal_port: u16) -> Value {
        json!([{
            "protocol": "tcp",
            "internal_port": internal_port,
            "autostop": self.settings.auto_stop.as_str(),
            "autostart": true,
            "min_machines_running": 0,
            "ports": [
                {"port": 443, "handlers": ["tls", "http"]},
                {"port": 80, "handlers": ["http"], "force_https": true},
            ],
        }])
    }

    /// A gated app machine: in the private app, its service reached only through Flycast.
    fn private_machine_config(&self, req: &DeployRequest, image: &str) -> Value {
        let port = self.settings.internal_port.unwrap_or(req.port);
        let mut config = self.machine_config(req, image, false);
        config["metadata"][COMMIT_KEY] = json!(req.sha);
        config["services"] = json!([{
            "protocol": "tcp",
            "internal_port": port,
            "autostop": self.settings.auto_stop.as_str(),
            "autostart": true,
            "min_machines_running": 0,
            "ports": [{"port": 80, "handlers": ["http"]}],
        }]);
        config
    }

    /// The front's machine: the public service, a small guest, the app's machines as upstream.
    fn front_config(&self, req: &DeployRequest, f: &Front, routes: &GateRoutes) -> Value {
        let mut env = f.env.clone();
        env.insert(f.upstream_env.clone(), routes.upstream.clone());
        env.insert(f.instance_env.clone(), routes.instance.clone());
        // The gate takes only hex commits; a non-hex one just has no commit URL.
        if naming::is_sha(&req.sha) {
            env.insert(f.sha_env.clone(), req.sha.clone());
        }
        let commits: Vec<String> = routes
            .kept
            .iter()
            .map(|(sha, id)| format!("{sha}=instance:{id}"))
            .collect();
        env.insert(f.commits_env.clone(), commits.join(","));
        let mut metadata = self.metadata(req.pr, &req.sha);
        if let Some(at) = req.expires_at {
            metadata.insert(EXPIRES_KEY.to_string(), rfc3339(at));
        }
        metadata.extend(f.metadata.clone());
        metadata.insert(ROLE_KEY.to_string(), ROLE_FRONT.to_string());
        json!({
            "image": f.image,
            "env": env,
            "metadata": metadata,
            "guest": {"cpus": 1, "memory_mb": 256, "cpu_kind": "shared"},
            "init": {"cmd": f.cmd},
            "restart": {"policy": "on-failure"},
            "services": self.public_service(f.port),
        })
    }

    /// A pin is the label's, not the commit's: a push carries it from the machines that served
    /// onto the config that replaces them.
    fn carry_pin(config: &mut Value, from: &[ApiMachine]) {
        if let Some(by) = from
            .iter()
            .filter_map(|m| m.meta(PIN_KEY))
            .find(|v| !v.is_empty())
        {
            config["metadata"][PIN_KEY] = json!(by);
        }
    }

    /// Writes metadata `key` on the app's own machines (not its one-off tasks) of an Atlas
    /// preview app. Metadata only: the machine is not restarted.
    async fn set_app_meta(
        &self,
        app: &str,
        key: &str,
        value: &str,
        what: &str,
    ) -> anyhow::Result<()> {
        let Some(pr) = naming::pr_from_app(&self.prefix, app) else {
            anyhow::bail!(
                "fly: app `{app}` is not an atlas preview name of {}",
                self.repository
            );
        };
        let ms = self.machines(app, false).await?;
        let ours: Vec<ApiMachine> = self
            .atlas_machines(&ms, pr)
            .into_iter()
            .filter(|m| !m.is_task())
            .collect();
        if ours.is_empty() {
            anyhow::bail!("fly: app `{app}` has no atlas machine to carry {key}");
        }
        for m in ours {
            self.client
                .send(
                    Call::post(
                        what,
                        format!(
                            "/apps/{}/machines/{}/metadata/{}",
                            enc(app),
                            enc(&m.id),
                            enc(key)
                        ),
                    )
                    .json(json!({"value": value}))
                    .idempotent(),
                )
                .await?;
        }
        Ok(())
    }

    /// The front machine's metadata value `key`, when the app has an Atlas front machine.
    pub async fn front_metadata(&self, app: &str, key: &str) -> anyhow::Result<Option<String>> {
        if self.get_app(app, false).await?.is_none() {
            return Ok(None);
        }
        let ms = self.machines(app, false).await?;
        Ok(ms
            .iter()
            .filter(|m| m.is_front() && m.meta(OWNER_KEY) == Some(OWNER_VALUE))
            .find_map(|m| m.meta(key).map(str::to_string)))
    }

    /// One machine of a kind: the oldest is updated in place and the others destroyed, or one is
    /// created (a lost answer is recovered by listing for `is_kind`).
    async fn put_machine(
        &self,
        what: &str,
        app: &str,
        mut existing: Vec<ApiMachine>,
        body: Value,
        is_kind: fn(&ApiMachine) -> bool,
    ) -> anyhow::Result<ApiMachine> {
        existing.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        if let Some(first) = existing.first() {
            for extra in existing.iter().skip(1) {
                self.destroy_machine(&format!("destroy extra {what}"), app, &extra.id)
                    .await?;
            }
            let call = format!("update {what}");
            let r = self
                .client
                .send(
                    Call::post(
                        call.clone(),
                        format!("/apps/{}/machines/{}", enc(app), enc(&first.id)),
                    )
                    .json(body)
                    .idempotent(),
                )
                .await?;
            return r.json::<ApiMachine>(&call);
        }
        let call = format!("create {what}");
        let (m, _) = self
            .client
            .create(
                Call::post(call.clone(), format!("/apps/{}/machines", enc(app)))
                    .json(body)
                    .transient_404(true),
                |r| r.json::<ApiMachine>(&call),
                || async move {
                    Ok(self
                        .machines(app, true)
                        .await?
                        .into_iter()
                        .find(|m| m.meta(OWNER_KEY) == Some(OWNER_VALUE) && is_kind(m)))
                },
            )
            .await
            .map_err(|e| self.quota_hint(e, &format!("{what} create")))?;
        Ok(m)
    }

    /// Deploys the app, behind `front` when given (two apps, see the module docs); without one,
    /// the app's machine holds the public service, and a front and private app left from an
    /// earlier gated deploy go once it serves.
    pub async fn deploy_fronted(
        &self,
        req: &DeployRequest,
        front: Option<&Front>,
    ) -> anyhow::Result<AppDeployment> {
        match front {
            Some(f) => self.deploy_gated(req, f).await,
            None => self.deploy_public(req).await,
        }
    }

    /// A preview without a front: one machine with the public service.
    async fn deploy_public(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment> {
        let deadline = Instant::now() + req.readiness_timeout;
        let app = req.app.as_str();
        let image = self.checked_image(app, req.image.as_deref())?;

        // 1. The app: adopt only our own (a task may have created it a moment ago).
        let (app_created, all) = self.ensure_app(app, req.pr).await?;
        let Split {
            fronts,
            apps: machines,
        } = self.split_machines(app, all).await?;
        // "Created" for the report: the first deploy of this preview, even when a task
        // created the app itself just before.
        let created = app_created || (machines.is_empty() && fronts.is_empty());

        // 2. Secrets, in one call.
        let min_secrets_version = self.set_secrets(app, &req.secrets).await?;
        let body = self.create_body(min_secrets_version);
        let previous = served(&machines);

        // 3. The app's machine: update in place, or create; extras from earlier failures go.
        let mut config = self.machine_config(req, image, true);
        Self::carry_pin(&mut config, &machines);
        Self::carry_pin(&mut config, &fronts);
        let machine = self
            .put_machine("machine", app, machines, body(config), ApiMachine::is_app)
            .await?;

        // 4. Started, then the preview answers its health path.
        let url = self.preview_url(app);
        let ready = async {
            if machine.state.as_deref() != Some("started") {
                self.wait_started(app, &machine, deadline).await?;
            }
            self.probe(&url, &req.health_path, &[], deadline).await
        }
        .await;
        if let Err(e) = ready {
            let Some(prev) = previous else {
                return Err(e);
            };
            return Err(self.rolled_back(app, &machine.id, prev, req, e).await);
        }
        // A gate left from an earlier gated deploy goes, and the private app with it.
        for f in &fronts {
            self.destroy_machine("destroy gate machine", app, &f.id)
                .await?;
        }
        let private = private_app(app);
        if let Some(pr) = naming::pr_from_app(&self.prefix, app) {
            self.destroy_app(&private, pr).await?;
        }
        let (sleep, wake_ms) = self
            .sleep_and_wake(app, &machine, &url, &req.health_path, &[], deadline)
            .await?;
        Ok(AppDeployment {
            app: app.to_string(),
            url,
            instances: vec![machine.id],
            logs: Some(format!("https://fly.io/apps/{app}/monitoring")),
            created,
            sleep,
            wake_ms,
            commits: Vec::new(),
        })
    }

    /// The body of a machine create or update: region and the secrets version to wait for.
    fn create_body(&self, min_secrets_version: Option<u64>) -> impl Fn(Value) -> Value + '_ {
        move |config: Value| {
            let mut b = json!({"config": config, "region": self.settings.region});
            if let Some(v) = min_secrets_version {
                b["min_secrets_version"] = json!(v);
            }
            b
        }
    }

    /// Puts machine `id` back on the config that served; `e` with what happened.
    async fn rolled_back(
        &self,
        app: &str,
        id: &str,
        prev: Value,
        req: &DeployRequest,
        e: anyhow::Error,
    ) -> anyhow::Error {
        let image = prev["image"].as_str().unwrap_or("?").to_string();
        let restore_deadline = Instant::now() + req.readiness_timeout;
        match self.restore(app, id, prev, restore_deadline).await {
            Ok(()) => e.context(format!(
                "fly: the new version did not come up; machine {id} was rolled back to the image that served ({image})"
            )),
            Err(r) => e.context(format!(
                "fly: the new version did not come up and rolling machine {id} back to {image} failed too: {}",
                secret::redact(&format!("{r:#}"))
            )),
        }
    }

    /// The preview sleeps when idle: put `sleeper` (what holds the public service) to sleep and
    /// time its first request.
    async fn sleep_and_wake(
        &self,
        app: &str,
        sleeper: &ApiMachine,
        url: &str,
        health_path: &str,
        headers: &[(String, Secret)],
        deadline: Instant,
    ) -> anyhow::Result<(Option<String>, Option<u64>)> {
        Ok(match self.settings.auto_stop {
            AutoStop::Off => (None, None),
            mode => {
                let wake = self
                    .measure_wake(
                        app,
                        sleeper,
                        mode,
                        Probe {
                            url,
                            health_path,
                            headers,
                        },
                        deadline,
                    )
                    .await?;
                (Some(mode.as_str().to_string()), wake)
            }
        })
    }

    /// The private app has its Flycast address and no other (a public one would expose the
    /// app's service past the gate).
    async fn ensure_flycast(&self, private: &str) -> anyhow::Result<()> {
        let path = format!("/apps/{}/ip_assignments", enc(private));
        let v = self.get_fresh("list ip assignments", &path).await?;
        let mut flycast = false;
        for ip in v["ips"].as_array().into_iter().flatten() {
            let Some(addr) = ip["ip"].as_str() else {
                continue;
            };
            // Flycast addresses are in the organization's private range (fdaa::/16).
            if addr.to_ascii_lowercase().starts_with("fdaa:") {
                flycast = true;
            } else {
                eprintln!(
                    "::warning::fly: app `{private}` had the public address {addr}; it was released so the app stays behind the gate"
                );
                self.client
                    .send(Call::delete(
                        "release public ip",
                        format!("{path}/{}", enc(addr)),
                    ))
                    .await?;
            }
        }
        if !flycast {
            self.client
                .send(
                    Call::post("allocate flycast ip", path)
                        .json(json!({"type": "private_v6", "org_slug": self.org}))
                        .transient_404(true),
                )
                .await?;
        }
        Ok(())
    }

    /// A gated preview: the front in the preview app, the app's machines (current and kept) in
    /// the private app (see the module docs).
    async fn deploy_gated(&self, req: &DeployRequest, f: &Front) -> anyhow::Result<AppDeployment> {
        let deadline = Instant::now() + req.readiness_timeout;
        let app = req.app.as_str();
        let image = self.checked_image(app, req.image.as_deref())?;
        let private = private_app(app);
        if private.len() > naming::MAX_LEN {
            anyhow::bail!(
                "fly: the private app name `{private}` is longer than {} characters",
                naming::MAX_LEN
            );
        }

        // 1. Both apps (adopt only our own) and the private app's Flycast address.
        let (app_created, public_ms) = self.ensure_app(app, req.pr).await?;
        let (_, private_ms) = self.ensure_app(&private, req.pr).await?;
        self.ensure_flycast(&private).await?;
        // The app machine of an earlier public deploy goes once the front serves.
        let Split {
            fronts,
            apps: public_apps,
        } = self.split_machines(app, public_ms).await?;
        let Split {
            fronts: _,
            apps: private_apps,
        } = self.split_machines(&private, private_ms).await?;
        let (mut kept, mut current): (Vec<ApiMachine>, Vec<ApiMachine>) =
            private_apps.into_iter().partition(ApiMachine::is_kept);
        current.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        let created =
            app_created || (current.is_empty() && fronts.is_empty() && public_apps.is_empty());
        let first_pair = current.is_empty() && fronts.is_empty();

        // 2. Secrets: the app's on the private app (with the outgoing commit's own, under its
        //    commit's names), the front's on the preview app and nothing else there.
        let mut private_secrets = req.secrets.clone();
        if let Some(o) = &req.outgoing {
            for (k, v) in &o.secrets {
                private_secrets.insert(commit_secret(&o.sha, k), v.clone());
            }
        }
        let v_private = self.set_secrets(&private, &private_secrets).await?;
        let v_public = self.set_secrets(app, &f.secrets).await?;
        let v_public = self
            .unset_secrets_except(app, |k| f.secrets.contains_key(k))
            .await?
            .or(v_public);
        let private_body = self.create_body(v_private);
        let public_body = self.create_body(v_public);

        // 3. The app machine: a new commit gets a new machine and the running one is kept; the
        //    same commit (or keep_commits = 0) updates in place.
        let running = current.first().cloned();
        let keep_running = self.keep_commits > 0
            && running.as_ref().is_some_and(|m| {
                m.meta(COMMIT_KEY)
                    .is_some_and(|c| c != req.sha && naming::is_sha(c))
            });
        let previous = served(&current);
        let config = self.private_machine_config(req, image);
        let machine = if keep_running {
            for extra in current.iter().skip(1) {
                self.destroy_machine("destroy extra machine", &private, &extra.id)
                    .await?;
            }
            let running_id = running.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            let sha = req.sha.as_str();
            let p = private.as_str();
            let (m, _) = self
                .client
                .create(
                    Call::post("create machine", format!("/apps/{}/machines", enc(p)))
                        .json(private_body(config))
                        .transient_404(true),
                    |r| r.json::<ApiMachine>("create machine"),
                    || {
                        let running_id = running_id.clone();
                        async move {
                            Ok(self.machines(p, true).await?.into_iter().find(|m| {
                                m.is_app() && m.id != running_id && m.meta(COMMIT_KEY) == Some(sha)
                            }))
                        }
                    },
                )
                .await
                .map_err(|e| self.quota_hint(e, "machine create"))?;
            m
        } else {
            self.put_machine(
                "machine",
                &private,
                current,
                private_body(config),
                ApiMachine::is_app,
            )
            .await?
        };

        // 4. What stays reachable: the running machine (when kept) and the kept ones, newest
        //    first, at most keep_commits; a kept copy of this commit goes.
        kept.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        let mut stay: Vec<ApiMachine> = Vec::new();
        let mut prune: Vec<ApiMachine> = Vec::new();
        for m in running.iter().filter(|_| keep_running).chain(kept.iter()) {
            let ok = m
                .meta(COMMIT_KEY)
                .is_some_and(|c| c != req.sha && naming::is_sha(c))
                && stay.len() < self.keep_commits
                && !stay
                    .iter()
                    .any(|s| s.meta(COMMIT_KEY) == m.meta(COMMIT_KEY));
            if ok {
                stay.push(m.clone());
            } else {
                prune.push(m.clone());
            }
        }
        let routes = GateRoutes {
            upstream: flycast_address(&private),
            instance: machine.id.clone(),
            kept: stay
                .iter()
                .map(|m| {
                    (
                        m.meta(COMMIT_KEY).unwrap_or_default().to_string(),
                        m.id.clone(),
                    )
                })
                .collect(),
        };

        // 5. The front, routing to them.
        let previous_front = served(&fronts);
        let mut front = self.front_config(req, f, &routes);
        Self::carry_pin(&mut front, &fronts);
        Self::carry_pin(&mut front, &public_apps);
        let front_machine = match self
            .put_machine(
                "gate machine",
                app,
                fronts,
                public_body(front),
                ApiMachine::is_front,
            )
            .await
        {
            Ok(m) => m,
            Err(e) => {
                if first_pair || keep_running {
                    // The new app machine must not stay without a front that routes to it.
                    let _ = self
                        .destroy_machine(
                            "destroy machine of a failed deploy",
                            &private,
                            &machine.id,
                        )
                        .await;
                }
                return Err(e);
            }
        };

        // 6. Started, then the preview answers its health path through the front.
        let url = self.preview_url(app);
        let headers = f.probe_headers.as_slice();
        let ready = async {
            if machine.state.as_deref() != Some("started") {
                self.wait_started(&private, &machine, deadline).await?;
            }
            if front_machine.state.as_deref() != Some("started") {
                self.wait_started(app, &front_machine, deadline).await?;
            }
            self.probe(&url, &req.health_path, headers, deadline).await
        }
        .await;
        if let Err(e) = ready {
            // The previous version (and its front) keeps serving; a first deploy has nothing
            // to go back to.
            let e = if keep_running {
                let _ = self
                    .destroy_machine("destroy new machine", &private, &machine.id)
                    .await;
                e.context(format!(
                    "fly: the new version did not come up; its machine {} was destroyed and the running one kept serving",
                    machine.id
                ))
            } else if let Some(prev) = previous {
                self.rolled_back(&private, &machine.id, prev, req, e).await
            } else {
                return Err(e);
            };
            let restore_deadline = Instant::now() + req.readiness_timeout;
            let restored = match previous_front {
                Some(c) => {
                    self.restore(app, &front_machine.id, c, restore_deadline)
                        .await
                }
                None => {
                    self.destroy_machine("destroy new gate machine", app, &front_machine.id)
                        .await
                }
            };
            return Err(match restored {
                Ok(()) => e,
                Err(r) => e.context(format!(
                    "fly: putting the gate machine back failed too: {}",
                    secret::redact(&format!("{r:#}"))
                )),
            });
        }

        // 7. The new version serves: the running machine becomes a kept one and sleeps, the
        //    pruned ones and any public app machine go.
        if keep_running
            && let Some(r) = &running
            && stay.iter().any(|s| s.id == r.id)
        {
            self.set_aside(&private, r, req, &private_secrets, v_private)
                .await?;
        }
        for m in &prune {
            self.destroy_machine("destroy pruned kept machine", &private, &m.id)
                .await?;
        }
        // The secrets of commits no longer kept go with their machines.
        let kept_names: Vec<String> = stay
            .iter()
            .filter_map(|m| m.meta(COMMIT_KEY))
            .map(|c| commit_secret(c, ""))
            .collect();
        self.unset_secrets_except(&private, |k| {
            !k.starts_with(COMMIT_SECRET_PREFIX) || kept_names.iter().any(|p| k.starts_with(p))
        })
        .await?;
        for m in &public_apps {
            self.destroy_machine("destroy public app machine", app, &m.id)
                .await?;
        }

        // 8. The preview sleeps when idle: the front holds the public service and is what a
        //    reviewer's first request wakes (the app machine wakes on the front's request).
        let (sleep, wake_ms) = self
            .sleep_and_wake(
                app,
                &front_machine,
                &url,
                &req.health_path,
                headers,
                deadline,
            )
            .await?;
        let commits = routes
            .kept
            .iter()
            .map(|(sha, _)| KeptCommit {
                sha: sha.clone(),
                url: format!("{url}/_atlas/c/{}/", naming::sha7(sha)),
            })
            .collect();
        Ok(AppDeployment {
            app: app.to_string(),
            url,
            instances: vec![machine.id, front_machine.id],
            logs: Some(format!("https://fly.io/apps/{private}/monitoring")),
            created,
            sleep,
            wake_ms,
            commits,
        })
    }
    /// Destroys one app of a preview (the preview app or its private app) after checking it is
    /// Atlas's; a missing app is `AlreadyGone`.
    async fn destroy_app(&self, app: &str, pr: u64) -> anyhow::Result<Deleted> {
        let Some(a) = self.get_app(app, false).await? else {
            return Ok(Deleted::AlreadyGone);
        };
        let ms = match self.machines(app, false).await {
            Ok(ms) => ms,
            Err(e) if status_of(&e) == Some(404) => return Ok(Deleted::AlreadyGone),
            Err(e) => return Err(e),
        };
        if let Some(why) = self.foreign(&a, &self.atlas_machines(&ms, pr), Some(pr)) {
            anyhow::bail!("fly: app `{app}` is not atlas's ({why}); it was left alone");
        }
        let hand_made: Vec<&str> = ms
            .iter()
            .filter(|m| !self.is_atlas_machine(m, pr))
            .map(|m| m.id.as_str())
            .collect();
        if !hand_made.is_empty() {
            // Reported, not a reason to orphan the app: the app (name, org, machines) is ours.
            eprintln!(
                "::warning::fly: app `{app}` had machine(s) not made by atlas ({}); they were destroyed with the app",
                hand_made.join(", ")
            );
        }
        match self
            .client
            .send(
                Call::delete("destroy app", format!("/apps/{}", enc(app)))
                    .paced_as("DELETE /apps/*", self.app_delete_spacing),
            )
            .await
        {
            Ok(_) => Ok(Deleted::Removed),
            Err(e) if status_of(&e) == Some(404) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// Loops on `/wait?state=started` (at most 60 s per call) until started or `deadline`.
    async fn wait_started(
        &self,
        app: &str,
        m: &ApiMachine,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        match self.wait_state(app, m, "started", deadline, 0).await? {
            Waited::Reached => Ok(()),
            Waited::TimedOut(last) => anyhow::bail!(
                "fly: machine {} of app {app} did not reach `started` within the readiness timeout (last: {last}); check `fly logs -a {app}` or raise [app] readiness_timeout",
                m.id
            ),
            // With `gone_after = 0` a 404 never ends the wait.
            Waited::Gone => anyhow::bail!("fly: machine {} of app {app} disappeared", m.id),
        }
    }

    /// Loops on `/wait?state=<state>` (at most 60 s per call) until the state, `deadline`, or
    /// (`gone_after > 0`) that many 404s in a row, which mean the machine is gone.
    async fn wait_state(
        &self,
        app: &str,
        m: &ApiMachine,
        state: &str,
        deadline: Instant,
        gone_after: u32,
    ) -> anyhow::Result<Waited> {
        let mut last = String::from("no answer yet");
        let mut not_found = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Waited::TimedOut(last));
            }
            let secs = left.as_secs().clamp(1, 60);
            let mut path = format!(
                "/apps/{}/machines/{}/wait?state={state}&timeout={secs}",
                enc(app),
                enc(&m.id)
            );
            if let Some(v) = &m.instance_id {
                path.push_str(&format!("&version={}", enc(v)));
            }
            // One attempt per loop turn (no inner retries): the loop itself is bounded by the
            // deadline, which inner retries of a 60 s call could overrun.
            let call = Call::get(format!("wait for machine {state}"), path)
                .timeout(Duration::from_secs(secs + 10))
                .once();
            match self.client.send(call).await {
                Ok(_) => return Ok(Waited::Reached),
                // 408: the wait itself timed out; 404 right after a create, 429/5xx and
                // transport errors are transient: loop until our own deadline.
                Err(e)
                    if status_of(&e)
                        .is_none_or(|s| s == 404 || crate::http::retryable_status(s)) =>
                {
                    if status_of(&e) == Some(404) {
                        not_found += 1;
                        if gone_after > 0 && not_found >= gone_after {
                            return Ok(Waited::Gone);
                        }
                    } else {
                        not_found = 0;
                    }
                    last = format!("{e:#}");
                    tokio::time::sleep(self.client.poll().min(left)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts a machine back on the config that served and waits for it to start.
    async fn restore(
        &self,
        app: &str,
        id: &str,
        config: Value,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let r = self
            .client
            .send(
                Call::post(
                    "restore machine",
                    format!("/apps/{}/machines/{}", enc(app), enc(id)),
                )
                .json(json!({"config": config, "region": self.settings.region}))
                .idempotent(),
            )
            .await?;
        let m = r.json::<ApiMachine>("restore machine")?;
        if m.state.as_deref() != Some("started") {
            self.wait_started(app, &m, deadline).await?;
        }
        Ok(())
    }

    /// Puts the machine to sleep the way Fly's proxy would when it is idle (`/suspend` or
    /// `/stop`), waits until it sleeps, then times the first request: Fly's proxy wakes the
    /// machine for it (`autostart`). `Ok(None)`: the machine could not be put to sleep, so
    /// nothing was measured (a warning says why). A machine that sleeps but does not wake again
    /// is an error: the preview would be dead after its first idle spell.
    #[allow(clippy::too_many_arguments)]
    async fn measure_wake(
        &self,
        app: &str,
        m: &ApiMachine,
        mode: AutoStop,
        probe: Probe<'_>,
        deadline: Instant,
    ) -> anyhow::Result<Option<u64>> {
        let (verb, state) = match mode {
            AutoStop::Stop => ("stop", "stopped"),
            _ => ("suspend", "suspended"),
        };
        let call = format!("{verb} machine");
        let path = format!("/apps/{}/machines/{}/{verb}", enc(app), enc(&m.id));
        if let Err(e) = self.client.send(Call::post(call, path)).await {
            eprintln!(
                "::warning::fly: could not {verb} machine {} of app {app} to measure its wake-up ({}); the preview still sleeps when idle",
                m.id,
                secret::redact(&format!("{e:#}"))
            );
            return Ok(None);
        }
        let waited = self.wait_state(app, m, state, deadline, 0).await?;
        if let Waited::TimedOut(last) = waited {
            eprintln!(
                "::warning::fly: machine {} of app {app} did not reach `{state}` in time (last: {last}); its wake-up was not measured",
                m.id
            );
            return Ok(None);
        }
        let t = Instant::now();
        self.probe(probe.url, probe.health_path, probe.headers, deadline)
            .await
            .with_context(|| {
                format!("fly: the preview did not wake from `{state}` on its first request")
            })?;
        Ok(Some(t.elapsed().as_millis() as u64))
    }

    /// Probes `url + health_path` until it answers 2xx or `deadline`.
    async fn probe(
        &self,
        url: &str,
        health_path: &str,
        headers: &[(String, Secret)],
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let target = format!("{url}{health_path}");
        loop {
            let mut get = self.probe.get(&target);
            for (k, v) in headers {
                get = get.header(k.as_str(), v.expose());
            }
            let last = match get.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("status {}", r.status().as_u16()),
                Err(e) => secret::redact(&e.to_string()),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "fly: the preview at {target} did not answer 2xx within the readiness timeout (last: {last}); check [app] health_path and the app's logs"
                );
            }
            tokio::time::sleep(self.client.poll()).await;
        }
    }
}

/// An app's machines by what they are: its fronts and its app machines (current and kept).
struct Split {
    fronts: Vec<ApiMachine>,
    apps: Vec<ApiMachine>,
}

/// The prefix of the private app's secrets that belong to one kept commit.
const COMMIT_SECRET_PREFIX: &str = "ATLAS_C_";

/// The name under which the private app holds secret `name` of kept commit `sha`
/// (`ATLAS_C_<SHA7>_<NAME>`); with an empty `name`, the prefix of all of that commit's.
fn commit_secret(sha: &str, name: &str) -> String {
    format!(
        "{COMMIT_SECRET_PREFIX}{}_{name}",
        naming::sha7(sha).to_ascii_uppercase()
    )
}

impl FlyPlatform {
    /// Sorts an app's machines; one-off task machines still there are leftovers of an earlier
    /// run whose destroy failed, never the app's machine: they are destroyed.
    async fn split_machines(&self, app: &str, ms: Vec<ApiMachine>) -> anyhow::Result<Split> {
        let mut split = Split {
            fronts: Vec::new(),
            apps: Vec::new(),
        };
        for m in ms {
            if m.is_task() {
                self.destroy_machine("destroy leftover task machine", app, &m.id)
                    .await?;
            } else if m.is_front() {
                split.fronts.push(m);
            } else {
                split.apps.push(m);
            }
        }
        Ok(split)
    }

    /// Unsets every secret of `app` that `keep` does not name (one call each); the secrets
    /// version after the last, when any went.
    async fn unset_secrets_except(
        &self,
        app: &str,
        keep: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Option<u64>> {
        let path = format!("/apps/{}/secrets", enc(app));
        let v = self.get_fresh("list secrets", &path).await?;
        let mut version = None;
        for name in v["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .filter(|n| !keep(n))
        {
            let r = self
                .client
                .send(Call::delete(
                    "unset secret",
                    format!("{path}/{}", enc(name)),
                ))
                .await;
            match r {
                Ok(r) => {
                    let v: Value = r.json("unset secret").unwrap_or(Value::Null);
                    version = v["version"].as_u64().or(version);
                }
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(version)
    }

    /// The running app machine `r` becomes a kept one and sleeps: stopped, then marked kept and,
    /// when this deploy brings its commit's own secrets, switched to them (its process reads
    /// the app's secrets through its commit's names: `DATABASE_URL` from
    /// `ATLAS_C_<SHA7>_DATABASE_URL`), without being started again (`skip_launch`); the proxy
    /// wakes it on its commit URL's first request.
    async fn set_aside(
        &self,
        private: &str,
        r: &ApiMachine,
        req: &DeployRequest,
        secrets: &BTreeMap<String, Secret>,
        min_secrets_version: Option<u64>,
    ) -> anyhow::Result<()> {
        let stop = format!("/apps/{}/machines/{}/stop", enc(private), enc(&r.id));
        if let Err(e) = self
            .client
            .send(Call::post("stop kept machine", stop))
            .await
        {
            // Not fatal: the proxy stops it when idle anyway.
            eprintln!(
                "::warning::fly: could not stop kept machine {} ({}); Fly's proxy stops it when idle",
                r.id,
                secret::redact(&format!("{e:#}"))
            );
        }
        let mut config = r.config.clone();
        config["metadata"][ROLE_KEY] = json!(ROLE_KEPT);
        let commit = r.meta(COMMIT_KEY).unwrap_or_default();
        if let Some(o) = req.outgoing.as_ref().filter(|o| o.sha == commit) {
            let own: Vec<Value> = secrets
                .keys()
                .filter(|k| !k.starts_with(COMMIT_SECRET_PREFIX))
                .map(|k| {
                    let name = if o.secrets.contains_key(k) {
                        commit_secret(commit, k)
                    } else {
                        k.clone()
                    };
                    json!({"env_var": k, "name": name})
                })
                .collect();
            config["processes"] = json!([{"secrets": own, "ignore_app_secrets": true}]);
        }
        let mut body =
            json!({"config": config, "region": self.settings.region, "skip_launch": true});
        if let Some(v) = min_secrets_version {
            body["min_secrets_version"] = json!(v);
        }
        self.client
            .send(
                Call::post(
                    "mark machine kept",
                    format!("/apps/{}/machines/{}", enc(private), enc(&r.id)),
                )
                .json(body)
                .idempotent(),
            )
            .await?;
        Ok(())
    }

    /// The commit the gated preview `app` runs now, when a deploy of another would keep it
    /// (`[preview] keep_commits` > 0).
    pub async fn running_commit(&self, app: &str) -> anyhow::Result<Option<String>> {
        let private = private_app(app);
        if self.keep_commits == 0 || self.get_app(&private, false).await?.is_none() {
            return Ok(None);
        }
        let mut ms: Vec<ApiMachine> = self
            .machines(&private, false)
            .await?
            .into_iter()
            .filter(ApiMachine::is_app)
            .collect();
        ms.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(ms
            .first()
            .and_then(|m| m.meta(COMMIT_KEY))
            .filter(|c| naming::is_sha(c))
            .map(str::to_string))
    }
}

/// What the front routes to: the Flycast address, the current machine, the kept ones.
struct GateRoutes {
    upstream: String,
    instance: String,
    /// (commit, machine id), newest first.
    kept: Vec<(String, String)>,
}

/// The config that served before this update (the oldest machine's): what a failed update goes
/// back to.
fn served(ms: &[ApiMachine]) -> Option<Value> {
    ms.iter()
        .min_by(|a, b| a.created_at.cmp(&b.created_at))
        .map(|m| m.config.clone())
        .filter(|c| c.get("image").is_some())
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How a `/wait` loop ended.
enum Waited {
    Reached,
    /// The deadline passed; the last transient answer.
    TimedOut(String),
    /// The machine answered 404 repeatedly (an `auto_destroy` machine that finished).
    Gone,
}

impl FlyPlatform {
    /// Runs a one-off task of the preview `req.app` as a machine of `app` (the preview app, or
    /// behind a gate its private app, which holds the app's secrets).
    async fn run_task_in(
        &self,
        req: &TaskRequest,
        app: &str,
    ) -> anyhow::Result<Option<TaskOutput>> {
        let start = Instant::now();
        let deadline = start + req.timeout;
        let image = self.checked_image(&req.app, req.image.as_deref())?;
        let cmd = task_cmd(&req.command)?;

        // 1. The app and its secrets, exactly as deploy sets them.
        self.ensure_app(app, req.pr).await?;
        let min_secrets_version = self.set_secrets(app, &req.secrets).await?;

        // 2. The one-off machine: same image, the command, no restart, no services, gone when
        //    done.
        let mut metadata = self.metadata(req.pr, &req.sha);
        metadata.insert(ROLE_KEY.to_string(), req.role.to_string());
        let config = json!({
            "image": image,
            "env": req.env,
            "metadata": metadata,
            "guest": {
                "cpus": self.settings.cpus,
                "memory_mb": self.settings.memory_mb,
                "cpu_kind": self.settings.cpu_kind,
            },
            "init": {"cmd": cmd},
            "restart": {"policy": "no"},
            "auto_destroy": true,
        });
        let mut body = json!({"config": config, "region": self.settings.region});
        if let Some(v) = min_secrets_version {
            body["min_secrets_version"] = json!(v);
        }
        let sha = req.sha.as_str();
        let (machine, _) = self
            .client
            .create(
                Call::post(
                    "create migrations machine",
                    format!("/apps/{}/machines", enc(app)),
                )
                .json(body)
                .transient_404(true),
                |r| r.json::<ApiMachine>("create migrations machine"),
                || async move {
                    Ok(self.machines(app, true).await?.into_iter().find(|m| {
                        m.meta(ROLE_KEY) == Some(req.role) && m.meta(SHA_KEY) == Some(sha)
                    }))
                },
            )
            .await?;
        let id = machine.id.clone();
        let logs = format!("logs: fly logs -a {app} -i {id} (the machines api serves no logs)");

        // 3. Until it stopped (or was destroyed after stopping), bounded by the timeout.
        let waited = match self.wait_state(app, &machine, "stopped", deadline, 3).await {
            Ok(w) => w,
            Err(e) => {
                // Best effort: the error that matters is the wait's.
                let _ = self
                    .destroy_machine("destroy migrations machine", app, &id)
                    .await;
                return Err(e.context(format!(
                    "fly: waiting for migrations machine {id} of app {app} failed"
                )));
            }
        };
        if let Waited::TimedOut(last) = &waited {
            let _ = self
                .destroy_machine("destroy migrations machine", app, &id)
                .await;
            anyhow::bail!(
                "fly: migrations machine {id} of app {app} did not finish within {}s (last: {last}); it was destroyed; {logs}",
                req.timeout.as_secs()
            );
        }

        // 4. The exit code, then the machine goes if auto_destroy has not taken it yet.
        let code = self.task_exit_code(app, &id).await?;
        let destroy_note = match self
            .destroy_machine("destroy migrations machine", app, &id)
            .await
        {
            Ok(()) => String::new(),
            Err(e) => format!(
                "\n(the machine could not be destroyed: {}; the next deploy removes it)",
                secret::redact(&format!("{e:#}"))
            ),
        };
        let Some(code) = code else {
            anyhow::bail!(
                "fly: migrations machine {id} of app {app} finished but fly reported no exit event, so atlas cannot tell whether the migrations succeeded; {logs}"
            );
        };
        Ok(Some(TaskOutput {
            ok: code == 0,
            exit_code: Some(code),
            duration_ms: start.elapsed().as_millis() as u64,
            output_tail: format!(
                "migrations ran on fly machine {id} in app {app}: exit code {code}\n{logs}{destroy_note}"
            ),
        }))
    }

    /// Runs a one-off task of the gated preview `req.app` in its private app, beside the app's
    /// machines and with their secrets, never in the gate's app.
    pub async fn run_private_task(&self, req: &TaskRequest) -> anyhow::Result<Option<TaskOutput>> {
        self.check_name(&req.app)?;
        self.run_task_in(req, &private_app(&req.app)).await
    }
}

#[async_trait]
impl Platform for FlyPlatform {
    fn kind(&self) -> &'static str {
        "fly"
    }

    async fn deploy(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment> {
        self.deploy_fronted(req, None).await
    }

    async fn run_task(&self, req: &TaskRequest) -> anyhow::Result<Option<TaskOutput>> {
        self.run_task_in(req, &req.app).await
    }

    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
        let Some(pr) = naming::pr_from_app(&self.prefix, app) else {
            anyhow::bail!(
                "fly: app `{app}` is not an atlas preview name of {}; atlas destroys only its own apps",
                self.repository
            );
        };
        // The front's app first (from then on nothing answers), then the app's machines.
        let public = self.destroy_app(app, pr).await?;
        let private = self.destroy_app(&private_app(app), pr).await?;
        Ok(match (public, private) {
            (Deleted::AlreadyGone, Deleted::AlreadyGone) => Deleted::AlreadyGone,
            _ => Deleted::Removed,
        })
    }
    async fn set_expiry(&self, app: &str, at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        self.set_app_meta(app, EXPIRES_KEY, &rfc3339(at), "set machine expiry")
            .await
    }

    async fn set_pin(&self, app: &str, by: Option<&str>) -> anyhow::Result<()> {
        // Unpinned: the empty value (read back as no pin).
        self.set_app_meta(app, PIN_KEY, by.unwrap_or(""), "set machine pin")
            .await
    }

    async fn app_machines(
        &self,
        app: &str,
    ) -> anyhow::Result<Option<Vec<crate::provider::MachineInfo>>> {
        let time = |t: Option<&str>| {
            t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let mut ms = self.machines(app, false).await?;
        // Behind a gate the app's machines (the running and the kept commits) live in the
        // private app: they cost and sleep as much as the front.
        let private = private_app(app);
        if self.get_app(&private, false).await?.is_some() {
            ms.extend(self.machines(&private, false).await?);
        }
        Ok(Some(
            ms.iter()
                .filter(|m| !m.is_task() && m.state.as_deref() != Some("destroyed"))
                .map(|m| {
                    let guest = &m.config["guest"];
                    crate::provider::MachineInfo {
                        id: m.id.clone(),
                        state: m.state.clone().unwrap_or_else(|| "unknown".into()),
                        role: m.meta(ROLE_KEY).map(str::to_string),
                        size: crate::cost::MachineSize {
                            cpu_kind: guest["cpu_kind"].as_str().unwrap_or("shared").to_string(),
                            cpus: guest["cpus"].as_u64().unwrap_or(1) as u32,
                            memory_mb: guest["memory_mb"].as_u64().unwrap_or(256) as u32,
                        },
                        created_at: time(m.created_at.as_deref()),
                        updated_at: time(m.updated_at.as_deref()),
                        metadata: m.config["metadata"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect(),
                    }
                })
                .collect(),
        ))
    }

    async fn stop_machines(&self, app: &str) -> anyhow::Result<Option<Vec<String>>> {
        let Some(pr) = naming::pr_from_app(&self.prefix, app) else {
            anyhow::bail!(
                "fly: app `{app}` is not an atlas preview name of {}; atlas stops only its own apps",
                self.repository
            );
        };
        let mut ms: Vec<(String, ApiMachine)> = self
            .machines(app, false)
            .await?
            .into_iter()
            .map(|m| (app.to_string(), m))
            .collect();
        // Behind a gate the app's machines live in the private app (see the module doc).
        let private = private_app(app);
        if self.get_app(&private, false).await?.is_some() {
            ms.extend(
                self.machines(&private, false)
                    .await?
                    .into_iter()
                    .map(|m| (private.clone(), m)),
            );
        }
        let mut stopped = Vec::new();
        // Only Atlas's own machines of that PR, and never a task mid-run: the app's machines and
        // its gate. Fly's proxy starts them again on the next request (`autostart`).
        for (owner, m) in ms
            .iter()
            .filter(|(_, m)| self.is_atlas_machine(m, pr) && !m.is_task())
            .filter(|(_, m)| m.state.as_deref() == Some("started"))
        {
            let path = format!("/apps/{}/machines/{}/stop", enc(owner), enc(&m.id));
            match self.client.send(Call::post("stop machine", path)).await {
                Ok(_) => stopped.push(m.id.clone()),
                // It stopped by itself meanwhile (the proxy's autostop): nothing to do.
                Err(e) if status_of(&e) == Some(412) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(stopped))
    }

    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
        let r = self
            .client
            .send(Call::get(
                "list apps",
                format!("/apps?org_slug={}", enc(&self.org)),
            ))
            .await?;
        let v: Value = r.json("list apps")?;
        let mut out = Vec::new();
        let names: Vec<&str> = v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str())
            .collect();
        for a in v["apps"].as_array().into_iter().flatten() {
            let Some(mut name) = a["name"].as_str() else {
                continue;
            };
            // A private app is its preview's; alone (its preview app gone) it is an orphan the
            // sweep destroys through its preview's name.
            if let Some(public) = name.strip_suffix(PRIVATE_SUFFIX)
                && naming::pr_from_app(&self.prefix, public).is_some()
            {
                if names.contains(&public) {
                    continue;
                }
                name = public;
            }
            let Some(pr) = naming::pr_from_app(&self.prefix, name) else {
                continue;
            };
            let a_name = a["name"].as_str().unwrap_or(name);
            let ms = match self.machines(a_name, false).await {
                Ok(ms) => ms,
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => return Err(e),
            };
            if self
                .foreign(a, &self.atlas_machines(&ms, pr), Some(pr))
                .is_some()
            {
                continue;
            }
            // Aged by last activity (the newest machine update), as the Neon branch's expiry
            // is renewed on every push: an open PR's app updated today is not old.
            let created_at = ms
                .iter()
                .filter_map(|m| m.updated_at.as_deref().or(m.created_at.as_deref()))
                .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .max();
            let expires_at = ms
                .iter()
                .filter(|m| !m.is_task())
                .filter_map(|m| m.meta(EXPIRES_KEY))
                .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .max();
            let pinned_by = ms
                .iter()
                .filter(|m| !m.is_task())
                .filter_map(|m| m.meta(PIN_KEY))
                .find(|v| !v.is_empty())
                .map(str::to_string);
            out.push(Owned {
                name: name.to_string(),
                id: a["id"].as_str().unwrap_or(name).to_string(),
                pr,
                created_at,
                expires_at,
                pinned_by,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_command_is_a_shell_line_or_a_json_exec_array() {
        assert_eq!(
            task_cmd("./migrate up && echo ok").unwrap(),
            vec!["sh", "-c", "./migrate up && echo ok"]
        );
        assert_eq!(
            task_cmd(r#" ["/app/migrate", "up"]"#).unwrap(),
            vec!["/app/migrate", "up"]
        );
        let e = task_cmd("[not json").unwrap_err();
        assert!(format!("{e:#}").contains("[database] migrations"), "{e:#}");
        assert!(task_cmd("[]").is_err());
    }

    #[test]
    fn the_exit_code_is_the_newest_exit_events_and_zero_when_omitted() {
        let events = json!([
            {"type": "exit", "timestamp": 3, "request": {"exit_event": {"guest_exit_code": 0}}},
            {"type": "start", "timestamp": 2},
            {"type": "exit", "timestamp": 1, "request": {"exit_event": {"exit_code": 7}}},
        ]);
        assert_eq!(exit_code(&events), Some(0));
        let events = json!([
            {"type": "exit", "timestamp": 5, "request": {"MonitorEvent": {"exit_event": {"exit_code": 2}}}},
        ]);
        assert_eq!(exit_code(&events), Some(2));
        assert_eq!(exit_code(&json!([{"type": "start"}])), None);
        assert_eq!(exit_code(&Value::Null), None);
    }

    #[test]
    fn fly_and_neon_sections_parse_strictly() {
        let text = "[fly]\nregion = \"ams\"\nmemory_mb = 512\nauto_stop = \"suspend\"\npreview_url = \"http://127.0.0.1:9/{app}\"\n\n[neon]\npooled = true\n";
        let s = Settings::parse(text, "atlas.toml").unwrap();
        assert_eq!(s.fly.region, "ams");
        assert_eq!(s.fly.memory_mb, 512);
        assert_eq!(s.fly.cpus, 1);
        assert!(s.neon.pooled);
        let e = Settings::parse("[fly]\nregoin = \"ams\"\n", "atlas.toml").unwrap_err();
        assert!(e.to_string().contains("regoin"), "{e}");
    }
}
