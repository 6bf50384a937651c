#![allow(dead_code)]
//! A stateful fake of the Fly Machines API (apps, secrets, machines, wait): apps are kept per
//! org, machines carry their config and metadata, a destroyed app is gone. Machines start on
//! their first `/wait` unless told never to (then `/wait` answers 408, as Fly does when the
//! wait times out). Every request is validated against the published spec via `openapi::Core`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::openapi::{Core, FakeRequest, FakeResponse, Spec, serve};

#[derive(Debug, Clone)]
pub struct FakeMachine {
    pub id: String,
    pub instance_id: String,
    pub state: String,
    pub config: Value,
    pub region: String,
    pub created_at: String,
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
}

pub struct FakeFly {
    pub core: Arc<Core>,
    pub state: Arc<Mutex<FlyState>>,
    /// `http://127.0.0.1:N/v1`
    pub api_url: String,
}

fn err(status: u16, msg: &str) -> FakeResponse {
    FakeResponse::json(status, json!({"error": msg}))
}

fn machine_json(m: &FakeMachine) -> Value {
    json!({"id": m.id, "name": format!("m-{}", m.id), "state": m.state, "region": m.region,
           "instance_id": m.instance_id, "config": m.config, "created_at": m.created_at,
           "updated_at": m.created_at, "private_ip": "fdaa::3"})
}

fn app_json(a: &FakeApp) -> Value {
    json!({"id": a.id, "name": a.name, "status": "deployed", "machine_count": a.machines.len(),
           "organization": {"slug": a.org, "name": a.org}})
}

impl FlyState {
    fn next(&mut self) -> String {
        self.seq += 1;
        format!("{:014x}", self.seq * 0x9e37)
    }

    fn handle(&mut self, r: &FakeRequest) -> FakeResponse {
        let app = r.param("app_name").to_string();
        let op = r.op.operation_id.as_str();
        if r.op.params.contains_key("app_name") && !self.apps.contains_key(&app) {
            return err(404, "app not found");
        }
        match op {
            "Apps_create" => {
                let body = r.body.clone().unwrap_or(Value::Null);
                let name = body["name"].as_str().unwrap_or("").to_string();
                if self.apps.contains_key(&name) {
                    return err(422, "app name has already been taken");
                }
                let id = self.next();
                self.apps.insert(
                    name.clone(),
                    FakeApp {
                        id,
                        name,
                        org: body["org_slug"].as_str().unwrap_or("personal").to_string(),
                        machines: Vec::new(),
                        secrets: BTreeMap::new(),
                        secrets_version: 0,
                    },
                );
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
            "Apps_delete" => {
                self.apps.remove(&app);
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
            "Machines_list" => {
                let a = &self.apps[&app];
                FakeResponse::json(
                    200,
                    json!(a.machines.iter().map(machine_json).collect::<Vec<_>>()),
                )
            }
            "Machines_create" => {
                let id = self.next();
                let inst = self.next();
                let body = r.body.clone().unwrap_or(Value::Null);
                let m = FakeMachine {
                    id,
                    instance_id: inst,
                    state: "created".into(),
                    config: body["config"].clone(),
                    region: body["region"].as_str().unwrap_or("iad").to_string(),
                    created_at: chrono::Utc::now().to_rfc3339(),
                };
                let v = machine_json(&m);
                self.apps.get_mut(&app).unwrap().machines.push(m);
                FakeResponse::json(200, v)
            }
            "Machines_update" => {
                let inst = self.next();
                let a = self.apps.get_mut(&app).unwrap();
                let Some(m) = a
                    .machines
                    .iter_mut()
                    .find(|m| m.id == r.param("machine_id"))
                else {
                    return err(404, "machine not found");
                };
                if let Some(c) = r.body.as_ref().map(|b| b["config"].clone()) {
                    m.config = c;
                }
                m.instance_id = inst;
                m.state = "replacing".into();
                FakeResponse::json(200, machine_json(m))
            }
            "Machines_delete" => {
                let a = self.apps.get_mut(&app).unwrap();
                let before = a.machines.len();
                a.machines.retain(|m| m.id != r.param("machine_id"));
                if a.machines.len() == before {
                    return err(404, "machine not found");
                }
                FakeResponse::json(200, json!({"ok": true}))
            }
            "Machines_wait" => {
                let never = self.never_start;
                let a = self.apps.get_mut(&app).unwrap();
                let Some(m) = a
                    .machines
                    .iter_mut()
                    .find(|m| m.id == r.param("machine_id"))
                else {
                    return err(404, "machine not found");
                };
                let timeout: u64 = r.q("timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
                if timeout > 60 {
                    return err(400, "timeout must be at most 60 seconds");
                }
                if never {
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

impl FakeFly {
    pub async fn start(token: &str) -> FakeFly {
        let core = Core::new(Spec::fly(), token);
        let state = Arc::new(Mutex::new(FlyState::default()));
        let s = state.clone();
        let base = serve(
            core.clone(),
            Arc::new(move |r: &FakeRequest| s.lock().unwrap().handle(r)),
        )
        .await;
        FakeFly {
            core,
            state,
            api_url: format!("{base}/v1"),
        }
    }

    pub fn app_names(&self) -> Vec<String> {
        self.state.lock().unwrap().apps.keys().cloned().collect()
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

    pub fn set_never_start(&self, yes: bool) {
        self.state.lock().unwrap().never_start = yes;
    }
}
