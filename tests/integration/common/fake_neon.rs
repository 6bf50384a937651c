#![allow(dead_code)]
//! A stateful fake of Neon API v2 (the branch, operation and connection calls Atlas makes):
//! branches are kept, listed (with annotations, paginated) and deleted; operations run for one
//! poll and then finish (or fail, on demand); mutations of a branch with a running operation
//! answer 423. Every request is validated against the published spec through `openapi::Core`.
//! Lives beside `common::openapi`, whose spec checks it uses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::common::openapi::{Core, FakeRequest, FakeResponse, Spec, serve};

pub const PROJECT: &str = "proj-atlas-test";
pub const MAIN_ID: &str = "br-main-000001";

#[derive(Debug, Clone)]
pub struct FakeBranch {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub init_source: String,
    pub expires_at: Option<String>,
    pub annotation: BTreeMap<String, String>,
    pub endpoint: Option<String>,
    /// The endpoint's `suspend_timeout_seconds` as created (`0`: Neon's default, 300 s; `-1`:
    /// never).
    pub suspend_timeout_seconds: i64,
    pub password: String,
    pub created_at: String,
    /// `Some` for a branch made by the anonymized-branch API.
    pub anon: Option<FakeAnon>,
    /// Whether the branch's rows are the parent's masked ones (false: a plain copy).
    pub masked: bool,
    /// How many times it was restored from its parent.
    pub restores: u32,
    /// `logical_size` in bytes (a schema-only branch: a few MB).
    pub logical_size: u64,
}

/// The anonymization of a branch, as `anonymized_status` reports it.
#[derive(Debug, Clone)]
pub struct FakeAnon {
    pub rules: Vec<Value>,
    /// created, initialized, initialization_error, anonymizing, anonymized, error
    pub state: String,
    pub message: String,
    /// When a running masking ends (by the clock, as on Neon).
    done_at: Option<std::time::Instant>,
    /// The masking run ends in `error` with this message.
    fail: Option<String>,
    pub runs: u32,
}

impl FakeAnon {
    fn tick(&mut self) -> bool {
        if self.state == "anonymizing"
            && self.done_at.is_some_and(|t| std::time::Instant::now() >= t)
        {
            match self.fail.take() {
                Some(m) => {
                    self.state = "error".into();
                    self.message = m;
                }
                None => {
                    self.state = "anonymized".into();
                    self.message = format!("masked {} columns", self.rules.len());
                    return true;
                }
            }
        }
        false
    }
}

#[derive(Debug, Clone)]
struct FakeOp {
    id: String,
    branch_id: String,
    action: String,
    /// Operations run for a while (by the clock, as on Neon), then finish or fail.
    done_at: std::time::Instant,
    fail: bool,
    /// A failed operation is not terminal on Neon: it is retried, and finishes at this time
    /// (`None`: it keeps failing).
    recover_at: Option<std::time::Instant>,
    status: String,
}

impl FakeOp {
    fn tick(&mut self) {
        let now = std::time::Instant::now();
        if self.status == "running" && now >= self.done_at {
            self.status = if self.fail { "failed" } else { "finished" }.into();
        }
        if self.status == "failed" && self.recover_at.is_some_and(|t| now >= t) {
            self.status = "finished".into();
        }
    }
    /// Neon's terminal statuses; `failed` is not one of them.
    /// Whether it still holds the project's lock: running, or failed and being retried.
    fn pending(&self) -> bool {
        self.status == "running" || (self.status == "failed" && self.recover_at.is_some())
    }
}

#[derive(Default)]
pub struct NeonState {
    pub branches: Vec<FakeBranch>,
    ops: Vec<FakeOp>,
    seq: u64,
    /// The next operation created fails (and keeps failing).
    pub fail_next_op: bool,
    /// The next operation created fails, then Neon's retry finishes it after this long.
    pub flaky_next_op: Option<std::time::Duration>,
    /// Someone else creates a branch of this name between Atlas's lookup and its create.
    pub race_foreign: Option<String>,
    pub page_size: usize,
    /// The next masking run fails with this message.
    pub anon_fail_next: Option<String>,
    /// Masking runs never finish (they stay `anonymizing`).
    pub anon_stall: bool,
    /// The next restore is refused with this status.
    pub refuse_restore: Option<u16>,
    /// The parent's tables and their columns (masking rules are checked against them).
    pub columns: BTreeMap<String, Vec<String>>,
    /// `Some`: branches are databases of a real PostgreSQL cluster (see
    /// [`FakeNeon::back_with_postgres`]); `None`: the URIs name hosts that do not exist.
    pub pg: Option<PgBacking>,
}

/// Branches as databases of a real PostgreSQL cluster on loopback: `main` is a database the
/// test made, a `parent-data` branch is `CREATE DATABASE .. TEMPLATE` its parent, a
/// `schema-only` one `pg_dump --schema-only` of its parent into a new database (what Neon's
/// `init_source = schema-only` gives: every table, no rows); a delete drops it. Connection URIs
/// point at the branch's database with `sslmode=disable`.
pub struct PgBacking {
    /// `postgresql://user:password@127.0.0.1:port` (no database).
    server: String,
    main_db: String,
    /// Run in every new branch's database once it is made (a change to its schema).
    after_create: Option<String>,
}

impl PgBacking {
    fn db_of(&self, id: &str) -> String {
        if id == MAIN_ID {
            self.main_db.clone()
        } else {
            format!("neon_{}", id.replace('-', "_"))
        }
    }

    fn url(&self, db: &str) -> String {
        format!("{}/{db}?sslmode=disable", self.server)
    }

    /// psql, stopping at the first error; the error is its stderr.
    fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg("-d")
            .arg(self.url(db))
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn make(&self, id: &str, parent_id: &str, schema_only: bool) -> Result<(), String> {
        let (db, parent) = (self.db_of(id), self.db_of(parent_id));
        if schema_only {
            self.psql("postgres", &format!("CREATE DATABASE {db}"))?;
            let out = std::process::Command::new("sh")
                .args([
                    "-c",
                    "pg_dump --schema-only --no-owner -d \"$SRC\" | psql -X -q -v ON_ERROR_STOP=1 -d \"$DST\"",
                ])
                .env("SRC", self.url(&parent))
                .env("DST", self.url(&db))
                .env("PGOPTIONS", "-c client_min_messages=warning")
                .output()
                .map_err(|e| format!("cannot run pg_dump: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        } else {
            self.psql(
                "postgres",
                &format!("CREATE DATABASE {db} TEMPLATE {parent}"),
            )?;
        }
        if let Some(sql) = &self.after_create {
            self.psql(&db, sql)?;
        }
        Ok(())
    }

    fn drop_db(&self, id: &str) -> Result<(), String> {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_of(id)),
        )
        .map(|_| ())
    }
}

pub struct FakeNeon {
    pub core: Arc<Core>,
    pub state: Arc<Mutex<NeonState>>,
    /// `http://127.0.0.1:N/api/v2`
    pub api_url: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn branch_json(b: &FakeBranch) -> Value {
    let mut v = json!({
        "id": b.id, "project_id": PROJECT, "name": b.name,
        "current_state": "ready", "state_changed_at": b.created_at,
        "creation_source": "console", "created_at": b.created_at, "updated_at": b.created_at,
        "default": b.parent_id.is_none(), "protected": false, "cpu_used_sec": 0,
        "active_time_seconds": 0, "compute_time_seconds": 0, "written_data_bytes": 0,
        "data_transfer_bytes": 0, "init_source": b.init_source, "logical_size": b.logical_size,
    });
    if let Some(p) = &b.parent_id {
        v["parent_id"] = json!(p);
    }
    if let Some(e) = &b.expires_at {
        v["expires_at"] = json!(e);
    }
    v
}

fn op_json(o: &FakeOp) -> Value {
    let mut v = json!({
        "id": o.id, "project_id": PROJECT, "branch_id": o.branch_id, "action": o.action,
        "status": o.status, "failures_count": if o.status == "failed" { 1 } else { 0 },
        "created_at": now(), "updated_at": now(), "total_duration_ms": 10,
    });
    if o.status == "failed" {
        v["error"] = json!("injected: compute failed to start");
    }
    v
}

fn anon_json(branch_id: &str, created_at: &str, a: &FakeAnon) -> Value {
    let mut v = json!({
        "project_id": PROJECT, "branch_id": branch_id, "state": a.state,
        "status_message": a.message, "created_at": created_at, "updated_at": now(),
    });
    if a.state == "error" {
        v["failed_at"] = json!(now());
    }
    if a.runs > 0 {
        v["last_run"] = json!({"started_at": created_at, "masked_columns": a.rules.len()});
    }
    v
}

/// Starts a masking run: it ends after a while in `anonymized`, or in `error` when injected or
/// when a rule names a table or column the parent does not have (as the extension would).
fn start_masking(
    a: &mut FakeAnon,
    fail: Option<String>,
    stall: bool,
    columns: &BTreeMap<String, Vec<String>>,
) {
    a.runs += 1;
    a.state = "anonymizing".into();
    a.message = format!("anonymizing {} columns", a.rules.len());
    a.done_at = (!stall).then(|| std::time::Instant::now() + std::time::Duration::from_millis(40));
    a.fail = fail.or_else(|| {
        a.rules.iter().find_map(|r| {
            let table = format!(
                "{}.{}",
                r["schema_name"].as_str().unwrap_or(""),
                r["table_name"].as_str().unwrap_or("")
            );
            let column = r["column_name"].as_str().unwrap_or("");
            match columns.get(&table) {
                None => Some(format!("relation \"{table}\" does not exist")),
                Some(cols) if !cols.iter().any(|c| c == column) => Some(format!(
                    "column \"{column}\" of relation \"{table}\" does not exist"
                )),
                _ => None,
            }
        })
    });
}

fn err(status: u16, msg: &str) -> FakeResponse {
    FakeResponse::json(status, json!({"code": "", "message": msg}))
}

impl NeonState {
    fn next(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{:06}", self.seq)
    }
    fn new_op(&mut self, branch_id: &str, action: &str) -> Value {
        let flaky = self.flaky_next_op.take();
        let fail = std::mem::take(&mut self.fail_next_op) || flaky.is_some();
        self.seq += 1;
        let done_at = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let op = FakeOp {
            id: format!("00000000-0000-4000-8000-{:012}", self.seq),
            branch_id: branch_id.to_string(),
            action: action.to_string(),
            done_at,
            fail,
            recover_at: flaky.map(|d| done_at + d),
            status: "running".into(),
        };
        let v = op_json(&op);
        self.ops.push(op);
        v
    }
    /// Neon locks a project while any of its operations is not terminal (a failed one is
    /// being retried): mutations answer 423.
    fn locked(&mut self, _branch_id: &str) -> bool {
        self.ops.iter_mut().for_each(FakeOp::tick);
        self.ops.iter().any(FakeOp::pending)
    }
    fn branch(&self, id: &str) -> Option<&FakeBranch> {
        self.branches.iter().find(|b| b.id == id)
    }

    fn handle(&mut self, r: &FakeRequest) -> FakeResponse {
        if r.param("project_id") != PROJECT && r.op.params.contains_key("project_id") {
            return err(404, "project not found");
        }
        match r.op.operation_id.as_str() {
            "listProjectBranches" => {
                let search = r.q("search").unwrap_or("");
                let limit: usize = r
                    .q("limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(10000)
                    .min(self.page_size.max(1));
                let start: usize = r.q("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let all: Vec<&FakeBranch> = self
                    .branches
                    .iter()
                    .filter(|b| b.name.contains(search) || b.id.contains(search))
                    .collect();
                let page: Vec<&FakeBranch> = all.iter().skip(start).take(limit).copied().collect();
                let mut annotations = serde_json::Map::new();
                for b in &page {
                    if !b.annotation.is_empty() {
                        annotations.insert(
                            b.id.clone(),
                            json!({"object": {"type": "console/branch", "id": b.id},
                                   "value": b.annotation}),
                        );
                    }
                }
                let mut v = json!({
                    "branches": page.iter().map(|b| branch_json(b)).collect::<Vec<_>>(),
                    "annotations": annotations,
                });
                if start + limit < all.len() {
                    v["pagination"] = json!({"next": (start + limit).to_string()});
                }
                FakeResponse::json(200, v)
            }
            "listProjectOperations" => {
                self.ops.iter_mut().for_each(FakeOp::tick);
                let ops: Vec<Value> = self.ops.iter().rev().map(op_json).collect();
                FakeResponse::json(
                    200,
                    json!({"operations": ops, "pagination": {"cursor": ""}}),
                )
            }
            "createProjectBranch" => {
                let body = r.body.clone().unwrap_or(Value::Null);
                self.create_branch(&body, None)
            }
            "createProjectBranchAnonymized" => {
                let body = r.body.clone().unwrap_or(Value::Null);
                let mut inner = body["branch_create"].clone();
                if inner.is_null() {
                    inner = json!({});
                }
                inner["annotation_value"] = body["annotation_value"].clone();
                let rules = body["masking_rules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let start = body["start_anonymization"].as_bool().unwrap_or(false);
                self.create_branch(&inner, Some((rules, start)))
            }
            "getAnonymizedBranchStatus" => {
                let id = r.param("branch_id").to_string();
                let Some(b) = self.branches.iter_mut().find(|b| b.id == id) else {
                    return err(404, "branch not found");
                };
                let Some(a) = &mut b.anon else {
                    return err(400, "branch is not an anonymized branch");
                };
                if a.tick() {
                    b.masked = true;
                }
                let a = b.anon.as_ref().unwrap();
                FakeResponse::json(200, anon_json(&id, &b.created_at, a))
            }
            "startAnonymization" => {
                let id = r.param("branch_id").to_string();
                let fail = self.anon_fail_next.take();
                let stall = self.anon_stall;
                let Some(b) = self.branches.iter_mut().find(|b| b.id == id) else {
                    return err(404, "branch not found");
                };
                let created = b.created_at.clone();
                let Some(a) = &mut b.anon else {
                    return err(400, "branch is not an anonymized branch");
                };
                a.tick();
                if !["initialized", "error", "anonymized"].contains(&a.state.as_str()) {
                    return err(
                        409,
                        &format!("anonymization cannot start from state {}", a.state),
                    );
                }
                start_masking(a, fail, stall, &self.columns);
                FakeResponse::json(200, anon_json(&id, &created, a))
            }
            "getMaskingRules" | "updateMaskingRules" => {
                let id = r.param("branch_id").to_string();
                let body = r.body.clone();
                let Some(b) = self.branches.iter_mut().find(|b| b.id == id) else {
                    return err(404, "branch not found");
                };
                let Some(a) = &mut b.anon else {
                    return err(400, "branch is not an anonymized branch");
                };
                if let Some(body) = body {
                    a.rules = body["masking_rules"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                }
                FakeResponse::json(200, json!({"masking_rules": a.rules}))
            }
            "restoreProjectBranch" => {
                let id = r.param("branch_id").to_string();
                if let Some(status) = self.refuse_restore.take() {
                    return err(
                        status,
                        "restore refused: the branch has children (injected)",
                    );
                }
                let source = r
                    .body
                    .as_ref()
                    .and_then(|b| b["source_branch_id"].as_str())
                    .unwrap_or("")
                    .to_string();
                if self.branch(&source).is_none() {
                    return err(404, "source branch not found");
                }
                if self.locked(&id) {
                    return err(423, "branch has running operations");
                }
                let Some(b) = self.branches.iter_mut().find(|b| b.id == id) else {
                    return err(404, "branch not found");
                };
                // The parent's head again: its rows are plain, not masked, until the next run.
                b.restores += 1;
                b.masked = false;
                if let Some(a) = &mut b.anon {
                    a.state = "initialized".into();
                    a.message = "restored; masking not run".into();
                }
                let bj = branch_json(b);
                let op = self.new_op(&id, "restore_branch");
                FakeResponse::json(200, json!({"branch": bj, "operations": [op]}))
            }
            _ => self.route_rest(r),
        }
    }

    fn create_branch(&mut self, body: &Value, anon: Option<(Vec<Value>, bool)>) -> FakeResponse {
        if self.locked("") {
            return err(
                423,
                "project already has running conflicting operations, scheduling of new ones is prohibited",
            );
        }
        let name = body["branch"]["name"].as_str().unwrap_or("").to_string();
        if self.race_foreign.as_deref() == Some(name.as_str()) {
            self.race_foreign = None;
            let id = self.next("br-foreign");
            self.branches.push(FakeBranch {
                id,
                name: name.clone(),
                parent_id: Some(MAIN_ID.into()),
                init_source: "parent-data".into(),
                expires_at: None,
                annotation: BTreeMap::new(),
                endpoint: None,
                suspend_timeout_seconds: 0,
                password: "npg_ForeignPw2".into(),
                created_at: now(),
                anon: None,
                masked: false,
                restores: 0,
                logical_size: 8_388_608,
            });
        }
        if self.branches.iter().any(|b| b.name == name) {
            return err(409, "branch with that name already exists");
        }
        let parent = body["branch"]["parent_id"].as_str().unwrap_or(MAIN_ID);
        if self.branch(parent).is_none() {
            return err(404, "parent branch not found");
        }
        let id = self.next("br-preview");
        let ep = self.next("ep-preview");
        let init_source = body["branch"]["init_source"]
            .as_str()
            .unwrap_or("parent-data")
            .to_string();
        if let Some(pg) = &self.pg
            && let Err(e) = pg.make(&id, parent, init_source == "schema-only")
        {
            return err(
                500,
                &format!("fake neon: cannot make the branch database: {e}"),
            );
        }
        let annotation = body["annotation_value"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let with_ep = body["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "read_write"));
        let b = FakeBranch {
            id: id.clone(),
            name,
            parent_id: Some(parent.to_string()),
            init_source,
            expires_at: body["branch"]["expires_at"].as_str().map(str::to_string),
            annotation,
            endpoint: with_ep.then(|| ep.clone()),
            suspend_timeout_seconds: body["endpoints"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["type"] == "read_write"))
                .and_then(|e| e["suspend_timeout_seconds"].as_i64())
                .unwrap_or(0),
            password: format!("npg_Pw{}Sekr1t", self.seq * 7919),
            created_at: now(),
            anon: None,
            masked: false,
            restores: 0,
            logical_size: 8_388_608,
        };
        let mut b = b;
        if let Some((rules, start)) = anon {
            let mut a = FakeAnon {
                rules,
                state: "initialized".into(),
                message: "created".into(),
                done_at: None,
                fail: None,
                runs: 0,
            };
            if start {
                let fail = self.anon_fail_next.take();
                start_masking(&mut a, fail, self.anon_stall, &self.columns);
            }
            b.anon = Some(a);
        }
        let bj = branch_json(&b);
        self.branches.push(b);
        let mut ops = vec![self.new_op(&id, "create_branch")];
        if with_ep {
            ops.push(self.new_op(&id, "start_compute"));
        }
        FakeResponse::json(
            201,
            json!({"branch": bj, "endpoints": [], "operations": ops,
                   "roles": [], "databases": [], "connection_uris": []}),
        )
    }

    fn route_rest(&mut self, r: &FakeRequest) -> FakeResponse {
        match r.op.operation_id.as_str() {
            "getProjectOperation" => {
                let id = r.param("operation_id");
                let Some(o) = self.ops.iter_mut().find(|o| o.id == id) else {
                    return err(404, "operation not found");
                };
                o.tick();
                FakeResponse::json(200, json!({"operation": op_json(o)}))
            }
            "updateProjectBranch" => {
                let id = r.param("branch_id").to_string();
                if self.branch(&id).is_none() {
                    return err(404, "branch not found");
                }
                if self.locked(&id) {
                    return err(423, "branch has running operations");
                }
                let exp = r.body.as_ref().map(|b| b["branch"]["expires_at"].clone());
                let b = self.branches.iter_mut().find(|b| b.id == id).unwrap();
                if let Some(e) = exp {
                    b.expires_at = e.as_str().map(str::to_string);
                }
                let bj = branch_json(b);
                FakeResponse::json(200, json!({"branch": bj, "operations": []}))
            }
            "deleteProjectBranch" => {
                let id = r.param("branch_id").to_string();
                if self.branch(&id).is_none() {
                    return err(404, "branch not found");
                }
                if self.locked(&id) {
                    return err(423, "branch has running operations");
                }
                // Neon: "You cannot delete ... a branch that has a child branch" (the status
                // is not in the description; 422 is what its API answers for such refusals).
                if self
                    .branches
                    .iter()
                    .any(|b| b.parent_id.as_deref() == Some(id.as_str()))
                {
                    return err(422, "branch has children; delete the child branches first");
                }
                if let Some(pg) = &self.pg
                    && let Err(e) = pg.drop_db(&id)
                {
                    return err(
                        500,
                        &format!("fake neon: cannot drop the branch database: {e}"),
                    );
                }
                let i = self.branches.iter().position(|b| b.id == id).unwrap();
                let b = self.branches.remove(i);
                let op = self.new_op(&id, "delete_timeline");
                FakeResponse::json(200, json!({"branch": branch_json(&b), "operations": [op]}))
            }
            "getConnectionURI" => {
                let id = r.q("branch_id").unwrap_or(MAIN_ID);
                let Some(b) = self.branch(id) else {
                    return err(404, "branch not found");
                };
                let Some(ep) = &b.endpoint else {
                    return err(404, "branch has no endpoint");
                };
                if let Some(pg) = &self.pg {
                    return FakeResponse::json(200, json!({"uri": pg.url(&pg.db_of(id))}));
                }
                let db = r.q("database_name").unwrap_or("neondb");
                let role = r.q("role_name").unwrap_or("neondb_owner");
                FakeResponse::json(
                    200,
                    json!({"uri": format!("postgresql://{role}:{}@{ep}.neon.test/{db}?sslmode=require", b.password)}),
                )
            }
            "getProjectBranchSchemaComparison" => {
                let id = r.param("branch_id");
                if self.branch(id).is_none() {
                    return err(404, "branch not found");
                }
                FakeResponse::json(
                    200,
                    json!({"diff": "--- a\n+++ b\n+CREATE TABLE orders (id bigint);\n"}),
                )
            }
            other => err(400, &format!("fake neon does not implement {other}")),
        }
    }
}

impl FakeNeon {
    /// Whether the branch's compute has suspended after `idle` without queries, by Neon's rule
    /// for `suspend_timeout_seconds` (0: the 300 s default; -1: never).
    pub fn endpoint_suspended(&self, name: &str, idle: std::time::Duration) -> bool {
        let Some(b) = self.branch(name) else {
            return false;
        };
        match b.suspend_timeout_seconds {
            -1 => false,
            0 => idle.as_secs() >= 300,
            t => idle.as_secs() >= t as u64,
        }
    }

    /// Starts the fake with a `main` branch (and its endpoint) in project [`PROJECT`].
    pub async fn start(token: &str) -> FakeNeon {
        let core = Core::new(Spec::neon(), token);
        let mut columns = BTreeMap::new();
        columns.insert(
            "public.users".to_string(),
            ["id", "email", "name", "phone"].map(String::from).to_vec(),
        );
        let state = Arc::new(Mutex::new(NeonState {
            page_size: 2,
            columns,
            ..Default::default()
        }));
        state.lock().unwrap().branches.push(FakeBranch {
            id: MAIN_ID.into(),
            name: "main".into(),
            parent_id: None,
            init_source: "parent-data".into(),
            expires_at: None,
            annotation: BTreeMap::new(),
            endpoint: Some("ep-main-000001".into()),
            suspend_timeout_seconds: 0,
            password: "npg_ParentPw99".into(),
            created_at: now(),
            anon: None,
            masked: false,
            restores: 0,
            logical_size: 8_388_608,
        });
        let s = state.clone();
        let base = serve(
            core.clone(),
            Arc::new(move |r: &FakeRequest| s.lock().unwrap().handle(r)),
        )
        .await;
        FakeNeon {
            core,
            state,
            api_url: format!("{base}/api/v2"),
        }
    }

    /// From now on branches are databases of the PostgreSQL server at `url` (any database
    /// URL of it, with its user and password), `main` being its database `main_db` (see
    /// [`PgBacking`]).
    pub fn back_with_postgres(&self, url: &str, main_db: &str) {
        let mut u = url::Url::parse(url).expect("a postgres url");
        u.set_path("");
        u.set_query(None);
        self.state.lock().unwrap().pg = Some(PgBacking {
            server: u.as_str().trim_end_matches('/').to_string(),
            main_db: main_db.to_string(),
            after_create: None,
        });
    }

    /// `sql` runs in every new branch's database once it is made (PostgreSQL backing only).
    pub fn alter_new_branches(&self, sql: &str) {
        let mut s = self.state.lock().unwrap();
        s.pg.as_mut()
            .expect("back_with_postgres first")
            .after_create = Some(sql.to_string());
    }

    /// The database behind a branch (PostgreSQL backing only).
    pub fn database_of(&self, name: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        let b = s.branches.iter().find(|b| b.name == name)?;
        Some(s.pg.as_ref()?.db_of(&b.id))
    }

    /// Branch names on the fake's books, excluding `main`.
    pub fn preview_branches(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .branches
            .iter()
            .filter(|b| b.id != MAIN_ID)
            .map(|b| b.name.clone())
            .collect()
    }

    /// Sets a branch's `logical_size` (the data it holds).
    pub fn set_logical_size(&self, name: &str, bytes: u64) {
        let mut s = self.state.lock().unwrap();
        for b in s.branches.iter_mut().filter(|b| b.name == name) {
            b.logical_size = bytes;
        }
    }

    pub fn branch(&self, name: &str) -> Option<FakeBranch> {
        self.state
            .lock()
            .unwrap()
            .branches
            .iter()
            .find(|b| b.name == name)
            .cloned()
    }

    /// Adds a branch nobody annotated (someone else's).
    pub fn add_foreign(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let id = s.next("br-foreign");
        s.branches.push(FakeBranch {
            id,
            name: name.into(),
            parent_id: Some(MAIN_ID.into()),
            init_source: "parent-data".into(),
            expires_at: None,
            annotation: BTreeMap::new(),
            endpoint: None,
            suspend_timeout_seconds: 0,
            password: "npg_ForeignPw1".into(),
            created_at: now(),
            anon: None,
            masked: false,
            restores: 0,
            logical_size: 8_388_608,
        });
    }

    /// Someone branched `name` off the branch `parent` by hand (a child Neon will not let go).
    pub fn add_child(&self, parent: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        let parent_id = s
            .branches
            .iter()
            .find(|b| b.name == parent)
            .map(|b| b.id.clone())
            .expect("no such parent branch");
        let id = s.next("br-child");
        s.branches.push(FakeBranch {
            id,
            name: name.into(),
            parent_id: Some(parent_id),
            init_source: "parent-data".into(),
            expires_at: None,
            annotation: BTreeMap::new(),
            endpoint: None,
            password: "npg_ChildPw1".into(),
            created_at: now(),
            anon: None,
            masked: false,
            restores: 0,
            logical_size: 8_388_608,
            suspend_timeout_seconds: 0,
        });
    }

    /// The next masking run ends in `error` with `message`.
    pub fn fail_next_anonymization(&self, message: &str) {
        self.state.lock().unwrap().anon_fail_next = Some(message.to_string());
    }

    /// Masking runs stay `anonymizing` for ever.
    pub fn stall_anonymization(&self) {
        self.state.lock().unwrap().anon_stall = true;
    }

    /// The next restore is refused with `status`.
    pub fn refuse_next_restore(&self, status: u16) {
        self.state.lock().unwrap().refuse_restore = Some(status);
    }

    pub fn fail_next_operation(&self) {
        self.state.lock().unwrap().fail_next_op = true;
    }

    /// The next operation fails, then finishes `after` later (Neon retries failed operations).
    pub fn fail_then_finish_next_operation(&self, after: std::time::Duration) {
        self.state.lock().unwrap().flaky_next_op = Some(after);
    }

    /// Someone else creates `name` (without Atlas's annotation) just before Atlas's create.
    pub fn race_foreign_create(&self, name: &str) {
        self.state.lock().unwrap().race_foreign = Some(name.to_string());
    }

    /// Something else (a console action, another run) keeps the project busy for `d`: an
    /// operation on the main branch runs that long, and mutations answer 423 meanwhile.
    pub fn busy_for(&self, d: std::time::Duration) {
        let mut s = self.state.lock().unwrap();
        s.seq += 1;
        let op = FakeOp {
            id: format!("00000000-0000-4000-8000-{:012}", s.seq),
            branch_id: MAIN_ID.to_string(),
            action: "start_compute".into(),
            done_at: std::time::Instant::now() + d,
            fail: false,
            recover_at: None,
            status: "running".into(),
        };
        s.ops.push(op);
    }
}
