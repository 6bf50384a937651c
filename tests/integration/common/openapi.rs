#![allow(dead_code)]
//! A request validator for fake servers: loads an OpenAPI 3 JSON description, matches a method
//! and a concrete path (minus an optional base-path prefix) against the spec's path templates,
//! checks the query parameter names, and validates a JSON request body against the operation's
//! `requestBody` schema with the `jsonschema` crate.
//!
//! OpenAPI 3.0 schemas are not plain JSON Schema: each operation's body schema is wrapped in a
//! root that carries the spec's `components` (so `$ref: #/components/...` resolves) and every
//! `nullable: true` is rewritten into a type union.
//!
//! Use: `let spec = Spec::neon(); spec.check("POST", "/api/v2/projects/p/branches", Some(&body))`
//! returns the operationId, or an error naming the operation and the violation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// Where the vendor specs live: in the repository (`tests/data/specs`, see its README).
pub fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/specs")
}

/// One matched operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    /// The spec's path template, e.g. `/projects/{project_id}/branches`.
    pub template: String,
    pub operation_id: String,
    /// Path parameters, by name.
    pub params: HashMap<String, String>,
}

impl Operation {
    fn label(&self) -> String {
        format!(
            "{} ({} {})",
            self.operation_id,
            self.method.to_uppercase(),
            self.template
        )
    }
}

/// A loaded spec; validators are compiled once per operation and cached.
pub struct Spec {
    pub name: String,
    doc: Value,
    base_path: String,
    /// Path templates split into segments, in spec order.
    templates: Vec<(String, Vec<String>)>,
    cache: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Spec {
    /// Loads `file` (JSON). `base_path` (e.g. `/api/v2`, `/v1`) is stripped from request paths.
    pub fn load(name: &str, file: &Path, base_path: &str) -> Result<Spec, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read spec {}: {e}", file.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("spec {} is not JSON: {e}", file.display()))?;
        Ok(Spec::from_value(name, doc, base_path))
    }

    pub fn from_value(name: &str, doc: Value, base_path: &str) -> Spec {
        let templates = doc["paths"]
            .as_object()
            .map(|p| {
                p.keys()
                    .map(|k| (k.clone(), segments(k)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Spec {
            name: name.to_string(),
            doc,
            base_path: base_path.trim_end_matches('/').to_string(),
            templates,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Neon API v2 (base path `/api/v2`).
    pub fn neon() -> Spec {
        Spec::load(
            "neon",
            &specs_dir().join("neon-v2.public-v2-for-users.gen.json"),
            "/api/v2",
        )
        .unwrap()
    }

    /// Fly Machines API (base path `/v1`).
    pub fn fly() -> Spec {
        Spec::load(
            "fly",
            &specs_dir().join("fly-machines.openapi3.json"),
            "/v1",
        )
        .unwrap()
    }

    /// GitHub REST (no base path): the operations the fake GitHub answers, cut from the full
    /// description by `tests/data/specs/make_github_subset.py`.
    pub fn github() -> Spec {
        Spec::load("github", &specs_dir().join("github-subset.json"), "").unwrap()
    }

    /// The spec document.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Matches `method` + concrete `path` (query string allowed, ignored here). Literal segments
    /// beat template segments, so `/apps/{a}/machines/wait`-style paths pick the specific one.
    pub fn find(&self, method: &str, path: &str) -> Result<Operation, String> {
        let method = method.to_ascii_lowercase();
        let path = path.split('?').next().unwrap_or("");
        let rel = match path.strip_prefix(&self.base_path) {
            Some(r) if self.base_path.is_empty() || r.is_empty() || r.starts_with('/') => r,
            _ => {
                return Err(format!(
                    "{}: path {path} is outside the base path {}",
                    self.name, self.base_path
                ));
            }
        };
        let got = segments(rel);
        let mut best: Option<(usize, &str, HashMap<String, String>)> = None;
        let mut path_matched = false;
        for (template, segs) in &self.templates {
            // A git ref (`heads/atlas-history`) is one `{ref}` parameter with slashes in it, as
            // GitHub's Git database paths take it; only as the template's last segment.
            let folded;
            let got = if segs.last().is_some_and(|t| t == "{ref}") && got.len() > segs.len() {
                let mut g = got[..segs.len() - 1].to_vec();
                g.push(got[segs.len() - 1..].join("/"));
                folded = g;
                &folded
            } else {
                &got
            };
            if segs.len() != got.len() {
                continue;
            }
            let mut literal = 0;
            let mut params = HashMap::new();
            let ok = segs.iter().zip(got).all(|(t, g)| {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.insert(name.to_string(), percent_decode(g));
                    !g.is_empty()
                } else if t == g {
                    literal += 1;
                    true
                } else {
                    false
                }
            });
            if !ok {
                continue;
            }
            path_matched = true;
            if self.doc["paths"][template.as_str()].get(&method).is_none() {
                continue;
            }
            if best.as_ref().is_none_or(|(l, _, _)| literal > *l) {
                best = Some((literal, template, params));
            }
        }
        match best {
            Some((_, template, params)) => {
                let op = &self.doc["paths"][template][&method];
                Ok(Operation {
                    method,
                    template: template.to_string(),
                    operation_id: op["operationId"]
                        .as_str()
                        .unwrap_or("(no operationId)")
                        .to_string(),
                    params,
                })
            }
            None if path_matched => Err(format!(
                "{}: method {} is not defined for {rel}",
                self.name,
                method.to_uppercase()
            )),
            None => Err(format!(
                "{}: no path in the spec matches {} {rel}",
                self.name,
                method.to_uppercase()
            )),
        }
    }

    /// Validates one request: path, query parameter names, body. Returns the operationId.
    pub fn check(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<String, String> {
        let op = self.find(method, path_and_query)?;
        let spec_op = &self.doc["paths"][op.template.as_str()][op.method.as_str()];
        // Query parameter names: operation-level plus path-level parameters.
        if let Some((_, query)) = path_and_query.split_once('?') {
            let allowed = self.query_names(&op);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let name = percent_decode(pair.split('=').next().unwrap_or(""));
                if !allowed.iter().any(|a| a == &name) {
                    return Err(format!(
                        "{}: {}: unknown query parameter {name:?} (allowed: {})",
                        self.name,
                        op.label(),
                        allowed.join(", ")
                    ));
                }
            }
        }
        let request_body = self.resolve(&spec_op["requestBody"]);
        match (request_body.is_null(), body) {
            (true, None) => Ok(op.operation_id),
            (true, Some(_)) => Err(format!(
                "{}: {}: the operation takes no request body",
                self.name,
                op.label()
            )),
            (false, None) => {
                if request_body["required"].as_bool().unwrap_or(false) {
                    Err(format!(
                        "{}: {}: the request body is required",
                        self.name,
                        op.label()
                    ))
                } else {
                    Ok(op.operation_id)
                }
            }
            (false, Some(body)) => {
                let key = format!("{} {}", op.method, op.template);
                let validator = self.validator(&key, &request_body).map_err(|e| {
                    format!("{}: {}: cannot compile schema: {e}", self.name, op.label())
                })?;
                let errors: Vec<String> = validator
                    .iter_errors(body)
                    .map(|e| format!("at {:?}: {e}", e.instance_path.as_str()))
                    .collect();
                if errors.is_empty() {
                    Ok(op.operation_id)
                } else {
                    Err(format!(
                        "{}: {}: request body violates the spec: {}",
                        self.name,
                        op.label(),
                        errors.join("; ")
                    ))
                }
            }
        }
    }

    fn query_names(&self, op: &Operation) -> Vec<String> {
        let path_item = &self.doc["paths"][op.template.as_str()];
        let mut names = Vec::new();
        for list in [
            &path_item["parameters"],
            &path_item[op.method.as_str()]["parameters"],
        ] {
            for p in list.as_array().into_iter().flatten() {
                let p = self.resolve(p);
                if p["in"] == "query"
                    && let Some(n) = p["name"].as_str()
                {
                    names.push(n.to_string());
                }
            }
        }
        names
    }

    /// Follows a local `$ref` (one level at a time, up to a bound).
    fn resolve(&self, v: &Value) -> Value {
        let mut cur = v.clone();
        for _ in 0..8 {
            let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
                return cur;
            };
            let Some(ptr) = r.strip_prefix('#') else {
                return cur;
            };
            cur = self.doc.pointer(ptr).cloned().unwrap_or(Value::Null);
        }
        cur
    }

    fn validator(
        &self,
        key: &str,
        request_body: &Value,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(v) = self.cache.lock().unwrap().get(key) {
            return Ok(v.clone());
        }
        let content = &request_body["content"];
        let schema = content
            .get("application/json")
            .or_else(|| content.as_object().and_then(|m| m.values().next()))
            .map(|c| c["schema"].clone())
            .unwrap_or(json!({}));
        let mut components = self.doc.get("components").cloned().unwrap_or(json!({}));
        rewrite_nullable(&mut components);
        let mut schema = schema;
        rewrite_nullable(&mut schema);
        // allOf keeps `$ref` siblings meaningful under draft 7; `components` is only a location.
        let root = json!({ "allOf": [schema], "components": components });
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| e.to_string())?;
        let v = Arc::new(v);
        self.cache
            .lock()
            .unwrap()
            .insert(key.to_string(), v.clone());
        Ok(v)
    }
}

fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// OpenAPI 3.0 `nullable: true` -> JSON Schema: a type union, or `anyOf [.., null]` without type.
pub fn rewrite_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                rewrite_nullable(child);
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = t.clone();
                        map.insert("type".into(), json!([t, "null"]));
                        // `enum` must admit null too.
                        if let Some(Value::Array(e)) = map.get_mut("enum")
                            && !e.contains(&Value::Null)
                        {
                            e.push(Value::Null);
                        }
                    }
                    Some(Value::Array(ts)) => {
                        if !ts.contains(&json!("null")) {
                            ts.push(json!("null"));
                        }
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        let mut wrapped = Map::new();
                        wrapped.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                        *map = wrapped;
                    }
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_nullable),
        _ => {}
    }
}

#[cfg(test)]
mod openapi_tests {
    use super::*;

    #[test]
    fn neon_branch_create_is_validated() {
        let s = Spec::neon();
        let ok = json!({"branch": {"name": "preview/pr-1", "parent_id": "br-1"},
                        "endpoints": [{"type": "read_write"}]});
        assert_eq!(
            s.check("POST", "/api/v2/projects/p-1/branches", Some(&ok))
                .unwrap(),
            "createProjectBranch"
        );
        let bad = json!({"endpoints": [{"type": "sideways"}]});
        let e = s
            .check("POST", "/api/v2/projects/p-1/branches", Some(&bad))
            .unwrap_err();
        assert!(
            e.contains("createProjectBranch") && e.contains("sideways"),
            "{e}"
        );
        let e = s
            .check("GET", "/api/v2/projects/p/branches?bogus=1", None)
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        assert!(s.check("GET", "/api/v2/nope/x", None).is_err());
        assert!(s.check("GET", "/v1/projects/p/branches", None).is_err());
    }

    #[test]
    fn fly_machine_create_is_validated() {
        let s = Spec::fly();
        let ok = json!({"region": "ams", "config": {"image": "registry.fly.io/x:1",
            "guest": {"cpus": 1, "memory_mb": 256, "cpu_kind": "shared"},
            "metadata": {"atlas": "preview"},
            "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": "stop",
                "ports": [{"port": 443, "handlers": ["tls", "http"]}]}]}});
        assert_eq!(
            s.check("POST", "/v1/apps/a/machines", Some(&ok)).unwrap(),
            "Machines_create"
        );
        let bad = json!({"config": {"guest": {"cpus": "one"}}});
        let e = s
            .check("POST", "/v1/apps/a/machines", Some(&bad))
            .unwrap_err();
        assert!(e.contains("Machines_create"), "{e}");
        // A literal segment wins over a template.
        let op = s.find("GET", "/v1/apps/a/machines/m1/wait").unwrap();
        assert_eq!(op.params["machine_id"], "m1");
        s.check(
            "GET",
            "/v1/apps/a/machines/m1/wait?state=started&timeout=60",
            None,
        )
        .unwrap();
    }

    #[test]
    fn github_comment_create_is_validated() {
        let s = Spec::github();
        s.check(
            "POST",
            "/repos/o/r/issues/1/comments",
            Some(&json!({"body": "hi"})),
        )
        .unwrap();
        let e = s
            .check(
                "POST",
                "/repos/o/r/issues/1/comments",
                Some(&json!({"body": 3})),
            )
            .unwrap_err();
        assert!(e.contains("issues/create-comment"), "{e}");
    }

    #[test]
    fn nullable_becomes_a_union() {
        let mut v = json!({"type": "string", "nullable": true, "enum": ["a"]});
        rewrite_nullable(&mut v);
        assert_eq!(v, json!({"type": ["string", "null"], "enum": ["a", null]}));
        let mut v = json!({"$ref": "#/x", "nullable": true});
        rewrite_nullable(&mut v);
        assert_eq!(v, json!({"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}));
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server for fakes: one request per connection (`Connection: close`), so
// faults are exact: a dropped connection is a closed socket, a slow answer is a sleep.

/// A request as a fake sees it, already matched against the spec.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path_and_query: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub op: Operation,
    pub authorization: Option<String>,
}

impl FakeRequest {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> &str {
        self.op.params.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct FakeResponse {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
}

impl FakeResponse {
    pub fn json(status: u16, body: Value) -> Self {
        FakeResponse {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    pub fn empty(status: u16) -> Self {
        FakeResponse {
            status,
            body: None,
            headers: Vec::new(),
        }
    }
}

/// A fault injected on the next `count` calls of an operation.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` if given) instead of handling the call.
    Status(u16, Option<String>),
    /// Handle the call (state changes), then wait this long before answering.
    Slow(std::time::Duration),
    /// Close the connection without handling the call.
    DropBefore,
    /// Handle the call (state changes), then close the connection without answering.
    DropAfter,
}

/// Validation, call counting and fault injection shared by the fakes.
pub struct Core {
    pub spec: Spec,
    pub token: String,
    faults: Mutex<Vec<(String, Fault, u32)>>,
    violations: Mutex<Vec<String>>,
    calls: Mutex<Vec<String>>,
}

impl Core {
    pub fn new(spec: Spec, token: &str) -> Arc<Core> {
        Arc::new(Core {
            spec,
            token: token.to_string(),
            faults: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        })
    }
    /// Arms `fault` for the next `count` calls of `operation_id`.
    pub fn fault(&self, operation_id: &str, fault: Fault, count: u32) {
        self.faults
            .lock()
            .unwrap()
            .push((operation_id.to_string(), fault, count));
    }
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
    /// Every call received (operationIds), in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    pub fn count(&self, operation_id: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == operation_id)
            .count()
    }
    pub fn reset_calls(&self) {
        self.calls.lock().unwrap().clear();
    }
    fn take_fault(&self, op: &str) -> Option<Fault> {
        let mut f = self.faults.lock().unwrap();
        let i = f.iter().position(|(o, _, n)| o == op && *n > 0)?;
        f[i].2 -= 1;
        let fault = f[i].1.clone();
        if f[i].2 == 0 {
            f.remove(i);
        }
        Some(fault)
    }
}

type Handler = Arc<dyn Fn(&FakeRequest) -> FakeResponse + Send + Sync>;

/// Serves `handler` behind `core` on 127.0.0.1:0; returns the base URL (`http://127.0.0.1:N`).
pub async fn serve(core: Arc<Core>, handler: Handler) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let core = core.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = connection(sock, core, handler).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A plain server for the preview URL probe: `GET <health>` -> 200 `ok`.
pub async fn serve_health() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = read_request(&mut sock).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (its head, and a body of `Content-Length`) off a test socket.
pub async fn read_request(sock: &mut tokio::net::TcpStream) -> std::io::Result<RawRequest> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(RawRequest {
        method,
        target,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        423 => "Locked",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn connection(
    mut sock: tokio::net::TcpStream,
    core: Arc<Core>,
    handler: Handler,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let raw = read_request(&mut sock).await?;
    let body: Option<Value> = if raw.body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&raw.body) {
            Ok(v) => Some(v),
            Err(e) => {
                core.violations.lock().unwrap().push(format!(
                    "{} {}: body is not JSON: {e}",
                    raw.method, raw.target
                ));
                None
            }
        }
    };
    let authorization = raw
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    let resp = match core.spec.find(&raw.method, &raw.target) {
        Err(e) => {
            core.violations.lock().unwrap().push(e.clone());
            FakeResponse::json(404, json!({"message": e, "code": "not_found"}))
        }
        Ok(op) => {
            if let Err(e) = core.spec.check(&raw.method, &raw.target, body.as_ref()) {
                core.violations.lock().unwrap().push(e);
            }
            core.calls.lock().unwrap().push(op.operation_id.clone());
            let query = raw
                .target
                .split_once('?')
                .map(|(_, q)| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default();
            let req = FakeRequest {
                method: raw.method.clone(),
                path_and_query: raw.target.clone(),
                query,
                body,
                op: op.clone(),
                authorization: authorization.clone(),
            };
            if authorization.as_deref() != Some(&format!("Bearer {}", core.token)) {
                FakeResponse::json(
                    401,
                    json!({"message": "unauthorized", "code": "unauthorized"}),
                )
            } else {
                match core.take_fault(&op.operation_id) {
                    Some(Fault::Status(s, retry_after)) => {
                        let mut r = FakeResponse::json(
                            s,
                            json!({"message": format!("injected {s}"), "code": "injected", "error": "injected"}),
                        );
                        if let Some(ra) = retry_after {
                            r.headers.push(("Retry-After".into(), ra));
                        }
                        r
                    }
                    Some(Fault::DropBefore) => return Ok(()),
                    Some(Fault::DropAfter) => {
                        let _ = handler(&req);
                        return Ok(());
                    }
                    Some(Fault::Slow(d)) => {
                        let r = handler(&req);
                        tokio::time::sleep(d).await;
                        r
                    }
                    None => handler(&req),
                }
            }
        }
    };
    let body = resp
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        body.len()
    );
    if resp.body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&body).await?;
    sock.shutdown().await
}
