#![allow(dead_code)]
//! A stateful fake of the Fly Machines API (apps, secrets, machines, wait, events): apps are
//! kept per org, machines carry their config and metadata, a destroyed app is gone. Machines
//! start on their first `/wait` unless told never to (then `/wait` answers 408, as Fly does when
//! the wait times out). A one-off task machine (`restart.policy = "no"` and an `init.cmd`)
//! starts at once, stops after a short delay with an `exit` event (code 0, or the code armed by
//! `fail_task_with`; like Fly's Go client, a zero code is omitted from the event), and with
//! `auto_destroy` is destroyed: gone from the list, still readable by id with its events, as
//! Fly keeps destroyed machines for a while. `/wait?state=stopped` blocks until the task
//! exits. Every request is validated against the published spec via `openapi::Core`.
//!
//! Services: a machine with `services` that list `ports` is public (Fly's proxy routes the app's
//! public addresses to it, and starts and stops it as the service says); one without is reached
//! only over the app's private network, by its 6PN name `<id>.vm.<app>.internal` (or
//! `<app>.internal`, every machine of the app): [`FakeFly::resolve_private`] answers those
//! names as Fly's internal DNS does. [`FakeFly::fail_create_of_role`] makes the create of a
//! machine with that `atlas_role` fail.
//!
//! IP assignments (`/apps/{app}/ip_assignments`) are kept per app: `private_v6` gets a Flycast
//! address in `fdaa::/16`, `v6` and `shared_v4` public ones. [`FakeFly::flycast`] is Fly's proxy
//! on an app's Flycast address: it answers only for an app that has one, routes by
//! `fly-force-instance-id` to that machine (else the first with services), wakes it when it is
//! stopped or suspended and its service has `autostart`, and answers as the app would, with the
//! commit the machine runs (`ATLAS_COMMIT_SHA` of its env), its id and the host its
//! `DATABASE_URL` points at, from the environment Fly would boot it with
//! ([`FakeMachine::env_with_secrets`]: its env, the app's secrets or, with `processes[0]`
//! `ignore_app_secrets`, only the ones its `secrets` list maps). Secrets are listed and unset
//! one by one as Fly does; a machine update with `skip_launch` stays stopped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::openapi::{Core, FakeRequest, FakeResponse, Spec, serve};

#[derive(Debug, Clone)]
pub struct FakeMachine {
    pub id: String,
    pub instance_id: String,
    pub state: String,
    pub config: Value,
    pub region: String,
    pub created_at: String,
}

impl FakeMachine {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.config["metadata"][key].as_str()
    }
    /// Has a public service: Fly's proxy routes the app's public ports to it.
    pub fn public(&self) -> bool {
        self.config["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|svc| svc["ports"].as_array().is_some_and(|p| !p.is_empty()))
        })
    }
    /// The public service's internal port, if any.
    pub fn service_port(&self) -> Option<u64> {
        self.config["services"][0]["internal_port"].as_u64()
    }
    /// The app's own machine behind Fly's proxy (it has services).
    fn is_service(&self) -> bool {
        !self.is_task()
            && self.config["services"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
    }
    fn service(&self, key: &str) -> Value {
        self.config["services"][0][key].clone()
    }
    /// The environment the machine boots with, as Fly builds it: its `env`, then the app's
    /// secrets, or, when `processes[0]` says `ignore_app_secrets`, only those its `secrets`
    /// list names (`env_var` from the app secret `name`, or of the same name).
    pub fn env_with_secrets(&self, secrets: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.config["env"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let process = &self.config["processes"][0];
        if process["ignore_app_secrets"] != true {
            env.extend(secrets.clone());
        }
        for s in process["secrets"].as_array().into_iter().flatten() {
            let Some(var) = s["env_var"].as_str() else {
                continue;
            };
            let name = s["name"].as_str().unwrap_or(var);
            if let Some(v) = secrets.get(name) {
                env.insert(var.to_string(), v.clone());
            }
        }
        env
    }
    fn is_task(&self) -> bool {
        self.config["restart"]["policy"].as_str() == Some("no")
            && self.config["init"]["cmd"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct FakeApp {
    pub id: String,
    pub name: String,
    pub org: String,
    pub machines: Vec<FakeMachine>,
    pub secrets: BTreeMap<String, String>,
    pub secrets_version: u64,
}

#[derive(Default)]
pub struct FlyState {
    pub apps: BTreeMap<String, FakeApp>,
    seq: u64,
    pub never_start: bool,
    /// Machines on this image never start (a release that crashes on boot); others do.
    pub never_start_image: Option<String>,
    /// Destroyed machines, by (app, id): readable, not listed.
    pub destroyed: BTreeMap<(String, String), FakeMachine>,
    /// Every task machine ever created, as created.
    pub tasks: Vec<FakeMachine>,
    /// The exit code of the next task machines (0 when unset).
    pub task_exit: Option<i64>,
    /// How long a task machine runs before it exits.
    pub task_delay: Duration,
    /// Events per machine id, newest first (as Fly lists them).
    pub events: BTreeMap<String, Vec<Value>>,
    /// Running task machines: when each exits, and with what code.
    pending: BTreeMap<String, (Instant, i64)>,
    /// Leases held by someone else (another deploy, a `fly` session), by machine id, until
    /// then: updates and deletes of the machine answer 409 as Fly does.
    pub leases: BTreeMap<String, Instant>,
    /// When each machine was last updated (Fly's `updated_at`), by id.
    pub updated: BTreeMap<String, String>,
    /// Someone in another org takes this app name between Atlas's lookup and its create.
    pub race_foreign: Option<String>,
    /// At most this many apps per org: a create beyond it is refused, as an org at its limit is.
    pub app_quota: Option<usize>,
    /// Another run of Atlas (same org) creates this app name between the lookup and the create.
    pub race_own: Option<String>,
    /// When each mutation (operation, machine id) arrived, to check Fly's 1 req/s pacing.
    pub mutations: Vec<(String, String, Instant)>,
    /// Creates of machines with this `atlas_role` answer this status.
    pub fail_role: Option<(String, u16)>,
    /// How long the proxy takes to resume a suspended machine / boot a stopped one.
    pub resume_delay: Duration,
    pub boot_delay: Duration,
    /// Wake-ups the proxy performed: (app, from state).
    pub wakes: Vec<(String, String)>,
    /// Requests the proxy served, per app.
    pub served: BTreeMap<String, u64>,
    /// IP assignments per app: (address, type).
    pub ips: BTreeMap<String, Vec<(String, String)>>,
    /// Requests Flycast served: (app, machine id).
    pub flycast_served: Vec<(String, String)>,
}

pub struct FakeFly {
    pub core: Arc<Core>,
    pub state: Arc<Mutex<FlyState>>,
    /// `http://127.0.0.1:N/v1`
    pub api_url: String,
    /// Fly's proxy in front of the apps: `http://127.0.0.1:M/{app}/...`.
    pub proxy_url: String,
}

fn err(status: u16, msg: &str) -> FakeResponse {
    FakeResponse::json(status, json!({"error": msg}))
}

fn machine_json(m: &FakeMachine) -> Value {
    json!({"id": m.id, "name": format!("m-{}", m.id), "state": m.state, "region": m.region,
           "instance_id": m.instance_id, "config": m.config, "created_at": m.created_at,
           "updated_at": m.created_at, "private_ip": "fdaa::3"})
}

fn event(id: String, kind: &str, status: &str, request: Value) -> Value {
    json!({"id": id, "type": kind, "status": status, "source": "flyd",
           "timestamp": chrono::Utc::now().timestamp_millis(), "request": request})
}

fn app_json(a: &FakeApp) -> Value {
    json!({"id": a.id, "name": a.name, "status": "deployed", "machine_count": a.machines.len(),
           "organization": {"slug": a.org, "name": a.org}})
}

impl FlyState {
    /// A new app with no machines and no secrets.
    fn insert_empty_app(&mut self, name: &str, org: &str) {
        let id = self.next();
        let app = FakeApp {
            id,
            name: name.into(),
            org: org.into(),
            machines: Vec::new(),
            secrets: BTreeMap::new(),
            secrets_version: 0,
        };
        self.apps.insert(name.into(), app);
    }

    fn machine_mut(&mut self, app: &str, id: &str) -> Option<&mut FakeMachine> {
        let a = self.apps.get_mut(app)?;
        a.machines.iter_mut().find(|m| m.id == id)
    }

    fn next(&mut self) -> String {
        self.seq += 1;
        format!("{:014x}", self.seq * 0x9e37)
    }

    /// Task machines whose time has come exit (and, with `auto_destroy`, are destroyed).
    fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, i64)> = self
            .pending
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(id, (_, code))| (id.clone(), *code))
            .collect();
        for (id, code) in due {
            self.pending.remove(&id);
            let e1 = self.next();
            let e2 = self.next();
            let Some(app) = self
                .apps
                .values()
                .find(|a| a.machines.iter().any(|m| m.id == id))
                .map(|a| a.name.clone())
            else {
                continue; // destroyed by hand before it exited
            };
            // Fly's Go types serialise exit_code with omitempty: a zero code is absent.
            let mut exit = json!({"guest_exit_code": code, "oom_killed": false,
                                  "requested_stop": false,
                                  "exited_at": chrono::Utc::now().to_rfc3339()});
            if code != 0 {
                exit["exit_code"] = json!(code);
            }
            let evs = self.events.entry(id.clone()).or_default();
            evs.insert(0, event(e1, "exit", "stopped", json!({"exit_event": exit})));
            let a = self.apps.get_mut(&app).unwrap();
            let i = a.machines.iter().position(|m| m.id == id).unwrap();
            a.machines[i].state = "stopped".into();
            if a.machines[i].config["auto_destroy"].as_bool() == Some(true) {
                let mut m = a.machines.remove(i);
                evs.insert(0, event(e2, "destroy", "destroyed", json!({})));
                m.state = "destroyed".into();
                self.destroyed.insert((app, id), m);
            }
        }
    }

    fn machine_json(&self, m: &FakeMachine) -> Value {
        let mut v = machine_json(m);
        v["events"] = json!(self.events.get(&m.id).cloned().unwrap_or_default());
        v
    }

    /// A machine of `app`, live or destroyed.
    fn find(&self, app: &str, id: &str) -> Option<&FakeMachine> {
        self.apps
            .get(app)
            .and_then(|a| a.machines.iter().find(|m| m.id == id))
            .or_else(|| self.destroyed.get(&(app.to_string(), id.to_string())))
    }

    fn handle(&mut self, r: &FakeRequest) -> FakeResponse {
        let app = r.param("app_name").to_string();
        let op = r.op.operation_id.as_str();
        if r.op.params.contains_key("app_name") && !self.apps.contains_key(&app) {
            return err(404, "app not found");
        }
        self.tick();
        match op {
            "Apps_create" => {
                let body = r.body.clone().unwrap_or(Value::Null);
                let name = body["name"].as_str().unwrap_or("").to_string();
                if self.race_foreign.as_deref() == Some(name.as_str()) {
                    self.race_foreign = None;
                    self.insert_empty_app(&name, "squatter-org");
                }
                if self.race_own.as_deref() == Some(name.as_str()) {
                    self.race_own = None;
                    self.insert_empty_app(&name, body["org_slug"].as_str().unwrap_or("personal"));
                }
                if self.apps.contains_key(&name) {
                    return err(422, "app name has already been taken");
                }
                let org = body["org_slug"].as_str().unwrap_or("personal");
                if let Some(q) = self.app_quota
                    && self.apps.values().filter(|a| a.org == org).count() >= q
                {
                    return err(
                        422,
                        &format!("organization {org} has reached its quota of {q} apps"),
                    );
                }
                self.insert_empty_app(&name, org);
                FakeResponse::empty(201)
            }
            "Apps_show" => FakeResponse::json(200, app_json(&self.apps[&app])),
            "Apps_list" => {
                let org = r.q("org_slug").unwrap_or("");
                let apps: Vec<Value> = self
                    .apps
                    .values()
                    .filter(|a| org.is_empty() || a.org == org)
                    .map(app_json)
                    .collect();
                FakeResponse::json(200, json!({"total_apps": apps.len(), "apps": apps}))
            }
            "App_IPAssignments_list" => {
                let ips: Vec<Value> = self
                    .ips
                    .get(&app)
                    .into_iter()
                    .flatten()
                    .map(|(ip, t)| {
                        json!({"ip": ip, "region": "global", "created_at": "2026-12-01T00:00:00Z",
                               "shared": t == "shared_v4"})
                    })
                    .collect();
                FakeResponse::json(200, json!({ "ips": ips }))
            }
            "App_IPAssignments_create" => {
                let t = r
                    .body
                    .as_ref()
                    .and_then(|b| b["type"].as_str())
                    .unwrap_or("")
                    .to_string();
                let n = self.seq + 1;
                self.seq = n;
                let ip = match t.as_str() {
                    "private_v6" => format!("fdaa:0:1::{n:x}"),
                    "v6" => format!("2a09:8280:1::{n:x}"),
                    "shared_v4" => "66.241.124.7".to_string(),
                    "v4" => format!("137.66.1.{}", n % 250),
                    _ => return err(400, &format!("unknown ip type `{t}`")),
                };
                self.ips
                    .entry(app.clone())
                    .or_default()
                    .push((ip.clone(), t.clone()));
                FakeResponse::json(
                    200,
                    json!({"ip": ip, "region": "global", "created_at": "2026-12-02T00:00:00Z",
                           "shared": t == "shared_v4"}),
                )
            }
            "App_IPAssignments_delete" => {
                let ip = r.param("ip").to_string();
                let list = self.ips.entry(app.clone()).or_default();
                let before = list.len();
                list.retain(|(a, _)| *a != ip);
                if list.len() == before {
                    return err(404, "ip not found");
                }
                FakeResponse::empty(204)
            }
            "Apps_delete" => {
                // Fly limits app deletes per minute across the org: arrivals are logged to
                // check the client's spacing.
                self.mutations
                    .push(("Apps_delete".into(), app.clone(), Instant::now()));
                self.ips.remove(&app);
                self.apps.remove(&app);
                self.destroyed.retain(|(a, _), _| *a != app);
                FakeResponse::empty(202)
            }
            "Secrets_update" => {
                let a = self.apps.get_mut(&app).unwrap();
                if let Some(v) = r.body.as_ref().and_then(|b| b["values"].as_object()) {
                    for (k, v) in v {
                        a.secrets
                            .insert(k.clone(), v.as_str().unwrap_or("").to_string());
                    }
                }
                a.secrets_version += 1;
                let names: Vec<Value> = a.secrets.keys().map(|k| json!({"name": k})).collect();
                FakeResponse::json(200, json!({"version": a.secrets_version, "secrets": names}))
            }
            "Secrets_list" => {
                let a = &self.apps[&app];
                let names: Vec<Value> = a
                    .secrets
                    .keys()
                    .map(|k| json!({"name": k, "digest": format!("d-{}", k.len())}))
                    .collect();
                FakeResponse::json(200, json!({ "secrets": names }))
            }
            "Secret_delete" => {
                let a = self.apps.get_mut(&app).unwrap();
                if a.secrets.remove(r.param("secret_name")).is_none() {
                    return err(404, "secret not found");
                }
                a.secrets_version += 1;
                FakeResponse::json(200, json!({"version": a.secrets_version}))
            }
            "Machines_list" => {
                let a = &self.apps[&app];
                let list: Vec<Value> = a
                    .machines
                    .iter()
                    .map(|m| {
                        let mut v = machine_json(m);
                        if let Some(u) = self.updated.get(&m.id) {
                            v["updated_at"] = json!(u);
                        }
                        v
                    })
                    .collect();
                FakeResponse::json(200, json!(list))
            }
            "Machines_create" => {
                let role = r
                    .body
                    .as_ref()
                    .and_then(|b| b["config"]["metadata"]["atlas_role"].as_str());
                if let Some((failing, status)) = &self.fail_role
                    && role == Some(failing.as_str())
                {
                    return err(*status, "failed to launch VM: insufficient capacity");
                }
                let id = self.next();
                let inst = self.next();
                let body = r.body.clone().unwrap_or(Value::Null);
                let mut m = FakeMachine {
                    id,
                    instance_id: inst,
                    state: "created".into(),
                    config: body["config"].clone(),
                    region: body["region"].as_str().unwrap_or("iad").to_string(),
                    created_at: chrono::Utc::now().to_rfc3339(),
                };
                let e1 = self.next();
                let mut evs = vec![event(e1, "launch", "created", json!({}))];
                if m.is_task() {
                    // A task runs its command at once; it exits after `task_delay`.
                    let e2 = self.next();
                    evs.insert(0, event(e2, "start", "started", json!({})));
                    m.state = "started".into();
                    self.pending.insert(
                        m.id.clone(),
                        (
                            Instant::now() + self.task_delay,
                            self.task_exit.unwrap_or(0),
                        ),
                    );
                    self.tasks.push(m.clone());
                }
                self.events.insert(m.id.clone(), evs);
                let v = self.machine_json(&m);
                self.apps.get_mut(&app).unwrap().machines.push(m);
                FakeResponse::json(200, v)
            }
            "Machines_update" => {
                let id = r.param("machine_id").to_string();
                self.mutations
                    .push(("Machines_update".into(), id.clone(), Instant::now()));
                if let Some(until) = self.leases.get(&id)
                    && Instant::now() < *until
                {
                    return err(
                        409,
                        &format!(
                            "failed to update VM {id}: lease currently held by 0a1b2c3d@deploy, expires at {}",
                            chrono::Utc::now().to_rfc3339()
                        ),
                    );
                }
                let inst = self.next();
                let Some(m) = self.machine_mut(&app, r.param("machine_id")) else {
                    return err(404, "machine not found");
                };
                if let Some(c) = r.body.as_ref().map(|b| b["config"].clone()) {
                    m.config = c;
                }
                m.instance_id = inst;
                // `skip_launch`: the new config is not started (a stopped machine stays so).
                let skip = r.body.as_ref().is_some_and(|b| b["skip_launch"] == true);
                m.state = if skip { "stopped" } else { "replacing" }.into();
                let mid = m.id.clone();
                let v = machine_json(m);
                self.updated.insert(mid, chrono::Utc::now().to_rfc3339());
                FakeResponse::json(200, v)
            }
            "Machines_delete" => {
                self.pending.remove(r.param("machine_id"));
                let a = self.apps.get_mut(&app).unwrap();
                let before = a.machines.len();
                a.machines.retain(|m| m.id != r.param("machine_id"));
                if a.machines.len() == before {
                    return err(404, "machine not found");
                }
                FakeResponse::json(200, json!({"ok": true}))
            }
            "Machines_show" => match self.find(&app, r.param("machine_id")) {
                Some(m) => FakeResponse::json(200, self.machine_json(m)),
                None => err(404, "machine not found"),
            },
            "Machines_list_events" => match self.find(&app, r.param("machine_id")) {
                Some(m) => FakeResponse::json(
                    200,
                    json!(self.events.get(&m.id).cloned().unwrap_or_default()),
                ),
                None => err(404, "machine not found"),
            },
            "Machines_wait" if r.q("state") == Some("stopped") => {
                let id = r.param("machine_id").to_string();
                let timeout: u64 = r.q("timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
                if timeout > 60 {
                    return err(400, "timeout must be at most 60 seconds");
                }
                let Some(m) = self.find(&app, &id) else {
                    return err(404, "machine not found");
                };
                // Block until the task exits, as Fly does (the delay is short by design).
                if m.state == "started"
                    && let Some((t, _)) = self.pending.get(&id).copied()
                {
                    let left = t.saturating_duration_since(Instant::now());
                    if left > Duration::from_secs(timeout) {
                        return err(408, "deadline_exceeded: machine did not reach stopped");
                    }
                    std::thread::sleep(left);
                    self.tick();
                }
                match self.find(&app, &id).map(|m| m.state.as_str()) {
                    Some("stopped" | "destroyed") => FakeResponse::json(
                        200,
                        json!({"ok": true, "state": "stopped", "version": id}),
                    ),
                    Some(_) => err(408, "deadline_exceeded: machine did not reach stopped"),
                    None => err(404, "machine not found"),
                }
            }
            "Machines_suspend" | "Machines_stop" => {
                let id = r.param("machine_id").to_string();
                self.mutations.push((op.into(), id.clone(), Instant::now()));
                let a = self.apps.get_mut(&app).unwrap();
                let Some(m) = a.machines.iter_mut().find(|m| m.id == id) else {
                    return err(404, "machine not found");
                };
                if m.state != "started" {
                    return err(412, &format!("machine {id} is {}, not started", m.state));
                }
                m.state = if op == "Machines_suspend" {
                    "suspended"
                } else {
                    "stopped"
                }
                .into();
                FakeResponse::json(200, json!({"ok": true}))
            }
            "Machines_upsert_metadata" => {
                let id = r.param("machine_id").to_string();
                let key = r.param("key").to_string();
                let a = self.apps.get_mut(&app).unwrap();
                let Some(m) = a.machines.iter_mut().find(|m| m.id == id) else {
                    return err(404, "machine not found");
                };
                let value = r
                    .body
                    .as_ref()
                    .and_then(|b| b["value"].as_str())
                    .unwrap_or("")
                    .to_string();
                m.config["metadata"][key] = json!(value);
                FakeResponse::empty(204)
            }
            "Machines_wait" if r.q("state") == Some("suspended") => {
                match self
                    .find(&app, r.param("machine_id"))
                    .map(|m| m.state.as_str())
                {
                    Some("suspended") => {
                        FakeResponse::json(200, json!({"ok": true, "state": "suspended"}))
                    }
                    Some(_) => err(408, "deadline_exceeded: machine did not reach suspended"),
                    None => err(404, "machine not found"),
                }
            }
            "Machines_wait" => {
                let never = self.never_start;
                let never_image = self.never_start_image.clone();
                let Some(m) = self.machine_mut(&app, r.param("machine_id")) else {
                    return err(404, "machine not found");
                };
                let timeout: u64 = r.q("timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
                if timeout > 60 {
                    return err(400, "timeout must be at most 60 seconds");
                }
                let bad_image =
                    never_image.is_some() && m.config["image"].as_str() == never_image.as_deref();
                if never || bad_image {
                    return err(408, "deadline_exceeded: machine did not reach started");
                }
                m.state = "started".into();
                FakeResponse::json(
                    200,
                    json!({"ok": true, "state": "started", "version": m.instance_id}),
                )
            }
            other => err(400, &format!("fake fly does not implement {other}")),
        }
    }
}

/// What Fly's proxy does with a request for `app`: serve it from a started machine, wake a
/// sleeping one first when its service has `autostart` (the time that takes), or refuse.
enum Route {
    Serve,
    Wake(String, Duration),
    Refuse(String),
}

impl FlyState {
    fn route(&mut self, app: &str) -> Route {
        self.tick();
        let Some(a) = self.apps.get(app) else {
            return Route::Refuse(format!("no app {app}"));
        };
        let Some(m) = a.machines.iter().find(|m| m.is_service()) else {
            return Route::Refuse(format!("app {app} has no machine with services"));
        };
        match m.state.as_str() {
            "started" => Route::Serve,
            s @ ("suspended" | "stopped") if m.service("autostart") == json!(true) => {
                let d = if s == "suspended" {
                    self.resume_delay
                } else {
                    self.boot_delay
                };
                Route::Wake(m.id.clone(), d)
            }
            s => Route::Refuse(format!("machine {} is {s}", m.id)),
        }
    }

    /// Fly's proxy finds the app idle: each service machine whose `autostop` allows it (and
    /// above `min_machines_running`, 0 for previews) stops or suspends. Returns how many slept.
    fn idle(&mut self, app: &str) -> usize {
        let Some(a) = self.apps.get_mut(app) else {
            return 0;
        };
        let mut n = 0;
        for m in a.machines.iter_mut().filter(|m| m.is_service()) {
            if m.state != "started" || m.service("min_machines_running").as_u64().unwrap_or(0) > 0 {
                continue;
            }
            // The API answers booleans for the old format: true is "stop".
            let to = match m.service("autostop") {
                v if v == json!("suspend") => "suspended",
                v if v == json!("stop") || v == json!(true) => "stopped",
                _ => continue,
            };
            m.state = to.into();
            n += 1;
        }
        n
    }
}

/// Fly's proxy: `GET /{app}/...` reaches the app's machine, waking it when it sleeps.
async fn proxy(
    state: Arc<Mutex<FlyState>>,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let app = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let route = state.lock().unwrap().route(&app);
    match route {
        Route::Serve => {}
        Route::Wake(id, d) => {
            tokio::time::sleep(d).await;
            let mut s = state.lock().unwrap();
            let mut from = None;
            if let Some(m) = s
                .apps
                .get_mut(&app)
                .and_then(|a| a.machines.iter_mut().find(|m| m.id == id))
            {
                from = Some(std::mem::replace(&mut m.state, "started".into()));
            }
            if let Some(from) = from {
                s.wakes.push((app.clone(), from));
            }
        }
        Route::Refuse(why) => return (StatusCode::SERVICE_UNAVAILABLE, why),
    }
    *state.lock().unwrap().served.entry(app).or_default() += 1;
    (StatusCode::OK, "ok".into())
}

/// Fly's proxy on `app`'s Flycast address (see the module docs).
async fn flycast(
    state: Arc<Mutex<FlyState>>,
    app: String,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let force = headers
        .get("fly-force-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let wake = {
        let mut s = state.lock().unwrap();
        s.tick();
        let has_flycast = s
            .ips
            .get(&app)
            .is_some_and(|l| l.iter().any(|(_, t)| t == "private_v6"));
        if !has_flycast {
            return (
                StatusCode::BAD_GATEWAY,
                format!("app {app} has no flycast address"),
            );
        }
        let Some(a) = s.apps.get(&app) else {
            return (StatusCode::BAD_GATEWAY, format!("no app {app}"));
        };
        let m = match &force {
            Some(id) => a.machines.iter().find(|m| &m.id == id && m.is_service()),
            None => a.machines.iter().find(|m| m.is_service()),
        };
        let Some(m) = m else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no machine with services {force:?} in {app}"),
            );
        };
        let id = m.id.clone();
        match m.state.as_str() {
            "started" => (id, None),
            st @ ("stopped" | "suspended") if m.service("autostart") == json!(true) => {
                let d = if st == "suspended" {
                    s.resume_delay
                } else {
                    s.boot_delay
                };
                (id, Some((st.to_string(), d)))
            }
            st => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("machine {id} is {st}"),
                );
            }
        }
    };
    let (id, wake) = wake;
    if let Some((from, d)) = wake {
        tokio::time::sleep(d).await;
        let mut s = state.lock().unwrap();
        if let Some(m) = s
            .apps
            .get_mut(&app)
            .and_then(|a| a.machines.iter_mut().find(|m| m.id == id))
        {
            m.state = "started".into();
        }
        s.wakes.push((app.clone(), from));
    }
    let mut s = state.lock().unwrap();
    let env = s
        .apps
        .get(&app)
        .and_then(|a| a.machines.iter().find(|m| m.id == id).map(|m| (a, m)))
        .map(|(a, m)| m.env_with_secrets(&a.secrets))
        .unwrap_or_default();
    let commit = env.get("ATLAS_COMMIT_SHA").cloned().unwrap_or_default();
    // Where its DATABASE_URL points (the host: one per Neon branch), never the URL itself.
    let database = env
        .get("DATABASE_URL")
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    s.flycast_served.push((app, id.clone()));
    (
        StatusCode::OK,
        json!({"status": "ok", "commit": commit, "machine": id, "path": uri.to_string(),
               "database": database})
        .to_string(),
    )
}

impl FakeFly {
    /// Fly's proxy on `app`'s Flycast address, as `127.0.0.1:N` (what `<app>.flycast:80` is on
    /// Fly's private network).
    pub async fn flycast(&self, app: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = self.state.clone();
        let app = app.to_string();
        let router = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                flycast(s.clone(), app.clone(), uri, headers)
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr.to_string()
    }

    /// The IP assignments of `app`: (address, type).
    pub fn ips(&self, app: &str) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap()
            .ips
            .get(app)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds an IP assignment by hand (someone ran `fly ips allocate-v6`).
    pub fn add_ip(&self, app: &str, ip: &str, kind: &str) {
        self.state
            .lock()
            .unwrap()
            .ips
            .entry(app.to_string())
            .or_default()
            .push((ip.to_string(), kind.to_string()));
    }

    /// The state of machine `id` of `app`.
    pub fn machine_state(&self, app: &str, id: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.apps
            .get(app)?
            .machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.state.clone())
    }

    pub async fn start(token: &str) -> FakeFly {
        let core = Core::new(Spec::fly(), token);
        let state = Arc::new(Mutex::new(FlyState {
            task_delay: Duration::from_millis(40),
            resume_delay: Duration::from_millis(30),
            boot_delay: Duration::from_millis(120),
            ..FlyState::default()
        }));
        let s = state.clone();
        let base = serve(
            core.clone(),
            Arc::new(move |r: &FakeRequest| s.lock().unwrap().handle(r)),
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let s = state.clone();
        let router =
            axum::Router::new().fallback(move |uri: axum::http::Uri| proxy(s.clone(), uri));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeFly {
            core,
            state,
            api_url: format!("{base}/v1"),
            proxy_url: format!("http://{proxy_addr}"),
        }
    }

    /// The preview URL template that goes through the fake proxy (`[fly] preview_url`).
    pub fn proxy_preview_url(&self) -> String {
        format!("{}/{{app}}", self.proxy_url)
    }

    /// Fly's proxy finds `app` idle (see [`FlyState::idle`]); returns how many machines slept.
    pub fn go_idle(&self, app: &str) -> usize {
        self.state.lock().unwrap().idle(app)
    }

    /// The state of `app`'s service machine.
    pub fn service_state(&self, app: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.apps
            .get(app)?
            .machines
            .iter()
            .find(|m| m.is_service())
            .map(|m| m.state.clone())
    }

    /// Wake-ups the proxy performed: (app, the state it woke from).
    pub fn wakes(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().wakes.clone()
    }

    pub fn app_names(&self) -> Vec<String> {
        self.state.lock().unwrap().apps.keys().cloned().collect()
    }

    /// Changes app `name` in place (what someone else, or an older Atlas, left on it).
    pub fn with_app(&self, name: &str, f: impl FnOnce(&mut FakeApp)) {
        f(self.state.lock().unwrap().apps.get_mut(name).unwrap());
    }

    pub fn app(&self, name: &str) -> Option<FakeApp> {
        self.state.lock().unwrap().apps.get(name).cloned()
    }

    /// An app of that name that is someone else's (a machine without Atlas metadata).
    pub fn add_foreign(&self, name: &str, org: &str) {
        let mut s = self.state.lock().unwrap();
        let id = s.next();
        let mid = s.next();
        s.apps.insert(
            name.into(),
            FakeApp {
                id,
                name: name.into(),
                org: org.into(),
                machines: vec![FakeMachine {
                    id: mid.clone(),
                    instance_id: mid,
                    state: "started".into(),
                    config: json!({"image": "nginx", "metadata": {"owner": "someone"}}),
                    region: "ams".into(),
                    created_at: chrono::Utc::now().to_rfc3339(),
                }],
                secrets: BTreeMap::new(),
                secrets_version: 0,
            },
        );
    }

    /// Task machines created from now on exit with `code` (0: succeed again).
    pub fn fail_task_with(&self, code: i64) {
        self.state.lock().unwrap().task_exit = Some(code);
    }

    /// Every task machine created so far (as created).
    pub fn tasks(&self) -> Vec<FakeMachine> {
        self.state.lock().unwrap().tasks.clone()
    }

    /// Live machines of every app (task machines included while they exist).
    pub fn live_machines(&self) -> Vec<FakeMachine> {
        let mut s = self.state.lock().unwrap();
        s.tick();
        s.apps.values().flat_map(|a| a.machines.clone()).collect()
    }

    /// Someone else holds the lease of every machine of `app` for `d` (`Duration::MAX`: for
    /// good).
    pub fn hold_leases(&self, app: &str, d: Duration) {
        let mut s = self.state.lock().unwrap();
        let until = Instant::now()
            .checked_add(d)
            .unwrap_or(Instant::now() + Duration::from_secs(86_400));
        let ids: Vec<String> = s
            .apps
            .get(app)
            .map(|a| a.machines.iter().map(|m| m.id.clone()).collect())
            .unwrap_or_default();
        for id in ids {
            s.leases.insert(id, until);
        }
    }

    /// A machine made by hand (`fly machine run`, no atlas metadata) in `app`.
    pub fn add_hand_made_machine(&self, app: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let id = s.next();
        let m = FakeMachine {
            id: id.clone(),
            instance_id: id.clone(),
            state: "started".into(),
            config: json!({"image": "debug-shell"}),
            region: "ams".into(),
            created_at: chrono::Utc::now().to_rfc3339(),
        };
        s.apps.get_mut(app).unwrap().machines.push(m);
        id
    }

    /// Backdates every machine's creation (and last update) of `app` by `d`.
    pub fn backdate(&self, app: &str, d: chrono::Duration) {
        let mut s = self.state.lock().unwrap();
        let at = (chrono::Utc::now() - d).to_rfc3339();
        let ids: Vec<String> = s.apps[app].machines.iter().map(|m| m.id.clone()).collect();
        for m in s.apps.get_mut(app).unwrap().machines.iter_mut() {
            m.created_at = at.clone();
        }
        for id in ids {
            s.updated.remove(&id);
        }
    }

    /// Someone in another org takes `name` just before Atlas's create.
    pub fn race_foreign_create(&self, name: &str) {
        self.state.lock().unwrap().race_foreign = Some(name.to_string());
    }

    /// Another Atlas run in the same org creates `name` just before this one's create.
    pub fn race_own_create(&self, name: &str) {
        self.state.lock().unwrap().race_own = Some(name.to_string());
    }

    /// Arrival times of every app delete, oldest first.
    pub fn app_delete_times(&self) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .mutations
            .iter()
            .filter(|(op, _, _)| op == "Apps_delete")
            .map(|(_, _, t)| *t)
            .collect()
    }

    /// Arrival times of the updates of one machine.
    pub fn update_times(&self, machine: &str) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .mutations
            .iter()
            .filter(|(op, id, _)| op == "Machines_update" && id == machine)
            .map(|(_, _, t)| *t)
            .collect()
    }

    /// The org may hold at most `n` apps.
    pub fn set_app_quota(&self, n: usize) {
        self.state.lock().unwrap().app_quota = Some(n);
    }

    /// Machines on `image` never reach `started`; machines on any other image do.
    pub fn set_never_start_image(&self, image: &str) {
        self.state.lock().unwrap().never_start_image = Some(image.to_string());
    }

    /// Creates of machines with `atlas_role = role` fail with `status` from now on.
    pub fn fail_create_of_role(&self, role: &str, status: u16) {
        self.state.lock().unwrap().fail_role = Some((role.to_string(), status));
    }

    /// What Fly's internal DNS answers for `host` (`<id>.vm.<app>.internal` or
    /// `<app>.internal`): the live machines it names.
    pub fn resolve_private(&self, host: &str) -> Vec<FakeMachine> {
        let s = self.state.lock().unwrap();
        let Some(name) = host.strip_suffix(".internal") else {
            return Vec::new();
        };
        match name.split_once(".vm.") {
            Some((id, app)) => s
                .apps
                .get(app)
                .into_iter()
                .flat_map(|a| a.machines.iter().filter(|m| m.id == id).cloned())
                .collect(),
            None => s
                .apps
                .get(name)
                .map(|a| a.machines.clone())
                .unwrap_or_default(),
        }
    }

    pub fn set_never_start(&self, yes: bool) {
        self.state.lock().unwrap().never_start = yes;
    }
}
