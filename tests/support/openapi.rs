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

/// Where the vendor specs live (`../shared/specs` next to the crate), overridable for CI.
pub fn specs_dir() -> PathBuf {
    std::env::var_os("ATLAS_SPECS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs"))
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

    /// GitHub REST (no base path).
    pub fn github() -> Spec {
        Spec::load(
            "github",
            &specs_dir().join("github-api.github.com.json"),
            "",
        )
        .unwrap()
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
            if segs.len() != got.len() {
                continue;
            }
            let mut literal = 0;
            let mut params = HashMap::new();
            let ok = segs.iter().zip(&got).all(|(t, g)| {
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
