#![allow(dead_code)]
//! A stateful fake of the GitHub REST API for the calls Atlas makes: issue comments (list with
//! pagination and a `Link` header, create, update, delete), deployments (create, list) and their
//! statuses (create, list), pulls (get, list) and `GET /user`; and the Git database of one
//! repository: blobs, trees (flat, with `base_tree`), commits and refs, where a ref update that
//! is not a fast forward is refused with 422 as GitHub does (unless forced), and a ref create
//! over an existing one too.
//!
//! Every request is checked against `tests/data/specs/github-subset.json` (GitHub's own description of these operations) through
//! `openapi.rs`; violations are recorded (tests assert there are none). Faults can be queued:
//! a status (403 secondary rate limit with `Retry-After`, 5xx) for the next matching request,
//! optionally after the request took effect ("landed"), as when a create succeeds but the
//! response is lost.
//!
//! Include next to `openapi.rs`:
//! `crate::common::openapi` and `crate::common::fake_github`

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::openapi::Spec;

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub pr: u64,
    pub user: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    pub environment: String,
    pub payload: Value,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub deployment: u64,
    pub payload: Value,
}

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub open: bool,
    pub head_sha: String,
    pub merged: bool,
}

/// A queued fault: the next `times` requests whose method matches and whose path contains
/// `path_contains` get `status` (with `Retry-After: retry_after` when set).
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Method,
    pub path_contains: String,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: String,
    pub times: usize,
    /// Apply the request first, then answer with the fault (a lost response).
    pub landed: bool,
    /// Extra response headers (`x-ratelimit-*`).
    pub headers: Vec<(String, String)>,
}

impl Fault {
    pub fn new(method: Method, path_contains: &str, status: u16) -> Fault {
        Fault {
            method,
            path_contains: path_contains.to_string(),
            status,
            retry_after: None,
            body: format!("{{\"message\":\"fake fault {status}\"}}"),
            times: 1,
            landed: false,
            headers: Vec::new(),
        }
    }

    /// GitHub's primary rate limit: 403 with `x-ratelimit-remaining: 0` and a reset
    /// `reset_in` seconds from now.
    pub fn primary_rate_limit(method: Method, path_contains: &str, reset_in: i64) -> Fault {
        let reset = chrono::Utc::now().timestamp() + reset_in;
        Fault {
            body: "{\"message\":\"API rate limit exceeded for installation ID 1.\",\"documentation_url\":\"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api\"}".into(),
            headers: vec![
                ("x-ratelimit-limit".into(), "5000".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-used".into(), "5000".into()),
                ("x-ratelimit-reset".into(), reset.to_string()),
            ],
            ..Fault::new(method, path_contains, 403)
        }
    }

    /// GitHub's secondary rate limit: 403 with `Retry-After`.
    pub fn secondary_rate_limit(method: Method, path_contains: &str, retry_after: u64) -> Fault {
        Fault {
            retry_after: Some(retry_after),
            body: "{\"message\":\"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.\",\"documentation_url\":\"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits\"}".into(),
            ..Fault::new(method, path_contains, 403)
        }
    }

    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    pub fn landed(mut self) -> Fault {
        self.landed = true;
        self
    }
}

/// A git object of the fake's database. Blob ids are git's own (`sha1("blob <len>\0<bytes>")`);
/// trees and commits are hashed over their JSON, which is enough for ids to follow content.
#[derive(Debug, Clone)]
pub enum GitObject {
    Blob(Vec<u8>),
    /// path -> (mode, type, sha), flat.
    Tree(BTreeMap<String, (String, String, String)>),
    Commit {
        tree: String,
        parents: Vec<String>,
        message: String,
    },
}

fn sha1_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
pub struct State {
    pub addr: String,
    pub repo: String,
    /// The login `GET /user` returns; `None` answers 403 like an installation token.
    pub user: Option<String>,
    /// Who new comments are attributed to (the token's identity).
    pub author: String,
    pub comments: Vec<Comment>,
    pub deployments: Vec<Deployment>,
    pub statuses: Vec<Status>,
    pub pulls: BTreeMap<u64, Pull>,
    /// Titles of the pulls (`Pull #N` when unset).
    pub pull_titles: BTreeMap<u64, String>,
    pub next_id: u64,
    pub faults: VecDeque<Fault>,
    /// `METHOD path?query` of every request.
    pub calls: Vec<String>,
    pub violations: Vec<String>,
    /// When set, a comment create first inserts a twin by the same author (another run raced).
    pub race_on_create: bool,
    /// `Authorization` headers seen (tests check the token is sent).
    pub auth: Vec<String>,
    /// The OAuth web flow: registered apps (client id -> secret).
    pub oauth_apps: BTreeMap<String, String>,
    /// Registered callback URLs (client id -> URL): when an app has one, `redirect_uri` must
    /// match it as GitHub's docs say (same host and port, a path under it; a loopback callback
    /// takes any port).
    pub oauth_callbacks: BTreeMap<String, String>,
    /// The user signed in to github.com in "the browser" that opens the authorize page.
    pub oauth_browser_user: Option<String>,
    /// Issued, unused codes -> (client id, redirect_uri, login).
    pub oauth_codes: BTreeMap<String, (String, String, String)>,
    /// The `Authorization` of the request being answered.
    pub current_auth: Option<String>,
    /// User access tokens -> login.
    pub oauth_tokens: BTreeMap<String, String>,
    /// Repository permission per login (`admin`, `write`, `read`, `none`); absent means none.
    pub permissions: BTreeMap<String, String>,
    /// Active team memberships: `org/slug` -> logins.
    pub teams: BTreeMap<String, Vec<String>>,
    /// The Git database: sha -> object.
    pub objects: BTreeMap<String, GitObject>,
    /// `heads/<branch>` -> commit sha.
    pub refs: BTreeMap<String, String>,
    /// Another writer: each ref update (PATCH) first lets it commit one (path, text) to that
    /// ref, so the update the request asks for is no longer a fast forward.
    pub concurrent_writes: VecDeque<(String, String)>,
    /// `base...head` -> the merge base the compare API reports.
    pub merge_bases: BTreeMap<String, String>,
    /// Issues, by number (numbered from 1000, apart from the pulls).
    pub issues: BTreeMap<u64, Issue>,
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub user: String,
    pub open: bool,
    pub state_reason: Option<String>,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn comment_json(&self, c: &Comment) -> Value {
        json!({
            "id": c.id,
            "node_id": format!("IC_{}", c.id),
            "url": format!("http://{}/repos/{}/issues/comments/{}", self.addr, self.repo, c.id),
            "html_url": format!("https://github.com/{}/pull/{}#issuecomment-{}", self.repo, c.pr, c.id),
            "issue_url": format!("http://{}/repos/{}/issues/{}", self.addr, self.repo, c.pr),
            "body": c.body,
            "user": { "login": c.user, "id": 1, "type": if c.user.ends_with("[bot]") { "Bot" } else { "User" } },
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "author_association": "OWNER",
        })
    }

    fn deployment_json(&self, d: &Deployment) -> Value {
        json!({
            "id": d.id,
            "url": format!("http://{}/repos/{}/deployments/{}", self.addr, self.repo, d.id),
            "sha": d.sha,
            "ref": d.sha,
            "task": "deploy",
            "environment": d.environment,
            "transient_environment": d.payload["transient_environment"],
            "production_environment": d.payload["production_environment"],
            "description": d.payload["description"],
            "created_at": "2026-01-01T00:00:00Z",
        })
    }

    /// The statuses of a deployment, oldest first.
    pub fn statuses_of(&self, deployment: u64) -> Vec<String> {
        self.statuses
            .iter()
            .filter(|s| s.deployment == deployment)
            .map(|s| s.payload["state"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn put(&mut self, obj: GitObject) -> String {
        let sha = match &obj {
            GitObject::Blob(b) => {
                let mut raw = format!("blob {}\0", b.len()).into_bytes();
                raw.extend_from_slice(b);
                sha1_hex(&raw)
            }
            GitObject::Tree(t) => sha1_hex(format!("tree {t:?}").as_bytes()),
            GitObject::Commit {
                tree,
                parents,
                message,
            } => {
                // Two commits of the same content still differ, as real ones do by their date.
                let n = self.id();
                sha1_hex(format!("commit {tree} {parents:?} {message} {n}").as_bytes())
            }
        };
        self.objects.insert(sha.clone(), obj);
        sha
    }

    /// Commits `files` on top of `parent` (its tree as the base) and returns the commit.
    pub fn commit_files(
        &mut self,
        parent: Option<&str>,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        let mut tree = match parent.and_then(|p| self.objects.get(p)) {
            Some(GitObject::Commit { tree, .. }) => match self.objects.get(tree) {
                Some(GitObject::Tree(t)) => t.clone(),
                _ => BTreeMap::new(),
            },
            _ => BTreeMap::new(),
        };
        for (path, text) in files {
            let blob = self.put(GitObject::Blob(text.as_bytes().to_vec()));
            tree.insert(path.to_string(), ("100644".into(), "blob".into(), blob));
        }
        let tree = self.put(GitObject::Tree(tree));
        self.put(GitObject::Commit {
            tree,
            parents: parent.into_iter().map(str::to_string).collect(),
            message: message.to_string(),
        })
    }

    /// The text of `path` at the head of `branch`.
    pub fn branch_file(&self, branch: &str, path: &str) -> Option<String> {
        let head = self.refs.get(&format!("heads/{branch}"))?;
        let Some(GitObject::Commit { tree, .. }) = self.objects.get(head) else {
            return None;
        };
        let Some(GitObject::Tree(t)) = self.objects.get(tree) else {
            return None;
        };
        let (_, _, blob) = t.get(path)?;
        match self.objects.get(blob) {
            Some(GitObject::Blob(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The commits of `branch`, head first, following first parents.
    pub fn branch_log(&self, branch: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut at = self.refs.get(&format!("heads/{branch}")).cloned();
        while let Some(sha) = at.take() {
            if let Some(GitObject::Commit {
                parents, message, ..
            }) = self.objects.get(&sha)
            {
                out.push((sha.clone(), message.clone()));
                at = parents.first().cloned();
            }
        }
        out
    }

    /// Someone force-pushes `branch` to a new root commit holding `files`.
    pub fn force_branch(&mut self, branch: &str, files: &[(&str, &str)]) {
        let c = self.commit_files(None, files, "force-pushed");
        self.refs.insert(format!("heads/{branch}"), c);
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        let mut todo = vec![of.to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(c) = todo.pop() {
            if c == ancestor {
                return true;
            }
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(GitObject::Commit { parents, .. }) = self.objects.get(&c) {
                todo.extend(parents.iter().cloned());
            }
        }
        false
    }

    fn ref_json(&self, name: &str, sha: &str) -> Value {
        json!({
            "ref": format!("refs/{name}"),
            "node_id": format!("REF_{name}"),
            "url": format!("http://{}/repos/{}/git/refs/{name}", self.addr, self.repo),
            "object": {"type": "commit", "sha": sha, "url": format!("http://{}/repos/{}/git/commits/{sha}", self.addr, self.repo)},
        })
    }

    fn issue_json(&self, i: &Issue) -> Value {
        json!({
            "id": i.number * 10,
            "node_id": format!("I_{}", i.number),
            "number": i.number,
            "url": format!("http://{}/repos/{}/issues/{}", self.addr, self.repo, i.number),
            "html_url": format!("https://github.com/{}/issues/{}", self.repo, i.number),
            "title": i.title,
            "body": i.body,
            "state": if i.open { "open" } else { "closed" },
            "state_reason": i.state_reason,
            "user": { "login": i.user, "id": 1, "type": if i.user.ends_with("[bot]") { "Bot" } else { "User" } },
            "labels": [],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        })
    }

    /// Someone opens an issue (not through the API: no call recorded).
    pub fn add_issue(&mut self, user: &str, title: &str, body: &str) -> u64 {
        let number = 1000 + self.issues.len() as u64;
        self.issues.insert(
            number,
            Issue {
                number,
                title: title.into(),
                body: body.into(),
                user: user.into(),
                open: true,
                state_reason: None,
            },
        );
        number
    }

    pub fn comments_on(&self, pr: u64) -> Vec<Comment> {
        self.comments
            .iter()
            .filter(|c| c.pr == pr)
            .cloned()
            .collect()
    }

    pub fn calls_matching(&self, prefix: &str) -> usize {
        self.calls.iter().filter(|c| c.starts_with(prefix)).count()
    }
}

pub struct FakeGithub {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spec() -> &'static Spec {
    static SPEC: std::sync::OnceLock<Spec> = std::sync::OnceLock::new();
    SPEC.get_or_init(Spec::github)
}

impl FakeGithub {
    /// Starts the fake for `repo` (`owner/name`) with `GET /user` answering `user`.
    pub async fn start(repo: &str, user: Option<&str>) -> FakeGithub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            addr: addr.to_string(),
            repo: repo.to_string(),
            user: user.map(str::to_string),
            author: user.unwrap_or("github-actions[bot]").to_string(),
            ..Default::default()
        }));
        let s = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(&s, method, uri, headers, body) }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGithub {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn add_pull(&self, number: u64, open: bool, head_sha: &str, merged: bool) {
        self.with(|s| {
            s.pulls.insert(
                number,
                Pull {
                    number,
                    open,
                    head_sha: head_sha.to_string(),
                    merged,
                },
            )
        });
    }

    /// Sets the title of pull `number`.
    pub fn set_pull_title(&self, number: u64, title: &str) {
        self.with(|s| s.pull_titles.insert(number, title.to_string()));
    }

    /// Adds a comment written by someone (not through the API: no call recorded).
    pub fn add_comment(&self, pr: u64, user: &str, body: &str) -> u64 {
        self.with(|s| {
            let id = s.id();
            s.comments.push(Comment {
                id,
                pr,
                user: user.to_string(),
                body: body.to_string(),
            });
            id
        })
    }

    pub fn fault(&self, f: Fault) {
        self.with(|s| s.faults.push_back(f));
    }

    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    pub fn reset_calls(&self) {
        self.with(|s| s.calls.clear());
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }
}

fn unprocessable(message: &str) -> Response {
    json_resp(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": message, "documentation_url": "https://docs.github.com/rest/git"}),
    )
}

impl State {
    fn tree_json(&self, sha: &str) -> Value {
        let Some(GitObject::Tree(t)) = self.objects.get(sha) else {
            return Value::Null;
        };
        let entries: Vec<Value> = t
            .iter()
            .map(|(path, (mode, kind, sha))| {
                json!({"path": path, "mode": mode, "type": kind, "sha": sha, "url": format!("http://{}/repos/{}/git/blobs/{sha}", self.addr, self.repo)})
            })
            .collect();
        json!({"sha": sha, "url": format!("http://{}/repos/{}/git/trees/{sha}", self.addr, self.repo), "tree": entries, "truncated": false})
    }

    fn commit_json(&self, sha: &str) -> Value {
        let Some(GitObject::Commit {
            tree,
            parents,
            message,
        }) = self.objects.get(sha)
        else {
            return Value::Null;
        };
        let who = json!({"name": "github-actions[bot]", "email": "41898282+github-actions[bot]@users.noreply.github.com", "date": "2026-01-01T00:00:00Z"});
        json!({
            "sha": sha,
            "node_id": format!("C_{sha}"),
            "url": format!("http://{}/repos/{}/git/commits/{sha}", self.addr, self.repo),
            "html_url": format!("https://github.com/{}/commit/{sha}", self.repo),
            "author": who,
            "committer": who,
            "message": message,
            "tree": {"sha": tree, "url": format!("http://{}/repos/{}/git/trees/{tree}", self.addr, self.repo)},
            "parents": parents.iter().map(|p| json!({"sha": p, "url": format!("http://{}/repos/{}/git/commits/{p}", self.addr, self.repo), "html_url": format!("https://github.com/{}/commit/{p}", self.repo)})).collect::<Vec<_>>(),
            "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
        })
    }
}

fn json_resp(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn not_found() -> Response {
    json_resp(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// One page of `items` with a GitHub-style `Link` header.
fn page(state: &State, uri: &Uri, items: Vec<Value>) -> Response {
    let q = query(uri);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1) * per_page;
    let slice: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
    let last = items.len().div_ceil(per_page).max(1);
    let mut resp = json_resp(StatusCode::OK, Value::Array(slice));
    let link_for = |p: usize| {
        let mut q2 = q.clone();
        q2.insert("page".into(), p.to_string());
        let qs: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q2.iter())
            .finish();
        format!("<http://{}{}?{}>", state.addr, uri.path(), qs)
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_for(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_for(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_for(page - 1)));
        links.push(format!("{}; rel=\"first\"", link_for(1)));
    }
    if !links.is_empty() {
        resp.headers_mut()
            .insert("link", links.join(", ").parse().unwrap());
    }
    resp
}

fn handle(
    state: &Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    s.calls.push(format!("{method} {pq}"));
    s.current_auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(a) = s.current_auth.clone() {
        s.auth.push(a);
    }
    // The OAuth web flow lives on github.com, not in the REST description: modelled on its docs.
    if uri.path().starts_with("/login/oauth/") {
        return oauth(&mut s, &method, &uri, &body);
    }
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                s.violations
                    .push(format!("{method} {pq}: body is not JSON: {e}"));
                return json_resp(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "Problems parsing JSON"}),
                );
            }
        }
    };
    if let Err(e) = spec().check(method.as_str(), &pq, json_body.as_ref()) {
        s.violations.push(format!("{method} {pq}: {e}"));
        return json_resp(StatusCode::UNPROCESSABLE_ENTITY, json!({"message": e}));
    }
    // Faults.
    let fault_idx = s
        .faults
        .iter()
        .position(|f| f.method == method && uri.path().contains(&f.path_contains));
    let mut landed_fault = None;
    if let Some(i) = fault_idx {
        let f = s.faults[i].clone();
        if f.times <= 1 {
            s.faults.remove(i);
        } else {
            s.faults[i].times -= 1;
        }
        if f.landed {
            landed_fault = Some(f);
        } else {
            return fault_response(&f);
        }
    }
    let resp = route(&mut s, &method, &uri, json_body.unwrap_or(Value::Null));
    match landed_fault {
        Some(f) => fault_response(&f),
        None => resp,
    }
}

fn fault_response(f: &Fault) -> Response {
    let mut r = (
        StatusCode::from_u16(f.status).unwrap(),
        [("content-type", "application/json")],
        f.body.clone(),
    )
        .into_response();
    if let Some(after) = f.retry_after {
        r.headers_mut()
            .insert("retry-after", after.to_string().parse().unwrap());
    }
    for (k, v) in &f.headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

fn route(s: &mut State, method: &Method, uri: &Uri, body: Value) -> Response {
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let bearer = s
        .current_auth
        .as_deref()
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("token "))
        })
        .map(str::to_string);
    let oauth_user = bearer.and_then(|t| s.oauth_tokens.get(&t).cloned());
    if segs == ["user"] && method == Method::GET && oauth_user.is_some() {
        return json_resp(
            StatusCode::OK,
            json!({"login": oauth_user, "id": 2, "type": "User"}),
        );
    }
    if let ["orgs", org, "teams", slug, "memberships", login] = segs.as_slice()
        && method == Method::GET
    {
        if oauth_user.is_none() {
            return json_resp(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Requires authentication"}),
            );
        }
        let member = s
            .teams
            .get(&format!("{org}/{slug}"))
            .is_some_and(|m| m.iter().any(|u| u == login));
        return if member {
            json_resp(
                StatusCode::OK,
                json!({"url": format!("http://{}/orgs/{org}/teams/{slug}/memberships/{login}", s.addr), "role": "member", "state": "active"}),
            )
        } else {
            not_found()
        };
    }
    if segs == ["user"] && method == Method::GET {
        return match &s.user {
            Some(u) => json_resp(StatusCode::OK, json!({"login": u, "id": 1, "type": "User"})),
            None => json_resp(
                StatusCode::FORBIDDEN,
                json!({"message": "Resource not accessible by integration"}),
            ),
        };
    }
    if segs.len() < 3 || segs[0] != "repos" || format!("{}/{}", segs[1], segs[2]) != s.repo {
        return not_found();
    }
    let rest = &segs[3..];
    if let ["collaborators", login, "permission"] = rest
        && method == Method::GET
    {
        // With a user's token: a private repository is invisible (404) to someone without access.
        let Some(caller) = oauth_user else {
            return json_resp(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Requires authentication"}),
            );
        };
        let perm_of = |u: &str| {
            s.permissions
                .get(u)
                .cloned()
                .unwrap_or_else(|| "none".into())
        };
        if perm_of(&caller) == "none" {
            return not_found();
        }
        let p = perm_of(login);
        return json_resp(
            StatusCode::OK,
            json!({"permission": p, "role_name": p, "user": {"login": login, "id": 3, "type": "User"}}),
        );
    }
    match (method.clone(), rest) {
        (Method::GET, ["issues", n, "comments"]) => {
            let Ok(pr) = n.parse::<u64>() else {
                return not_found();
            };
            let items: Vec<Value> = s
                .comments
                .iter()
                .filter(|c| c.pr == pr)
                .map(|c| s.comment_json(c))
                .collect();
            page(s, uri, items)
        }
        (Method::POST, ["issues", n, "comments"]) => {
            let Ok(pr) = n.parse::<u64>() else {
                return not_found();
            };
            let text = body["body"].as_str().unwrap_or_default().to_string();
            if text.chars().count() > 65_536 {
                return json_resp(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"field": "body", "code": "custom", "message": "body is too long (maximum is 65536 characters)"}]}),
                );
            }
            if s.race_on_create {
                s.race_on_create = false;
                let id = s.id();
                let author = s.author.clone();
                s.comments.push(Comment {
                    id,
                    pr,
                    user: author,
                    body: text.clone(),
                });
            }
            let id = s.id();
            let c = Comment {
                id,
                pr,
                user: s.author.clone(),
                body: text,
            };
            s.comments.push(c.clone());
            json_resp(StatusCode::CREATED, s.comment_json(&c))
        }
        (Method::PATCH, ["issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or_default().to_string();
            let Some(c) = s.comments.iter_mut().find(|c| c.id == id) else {
                return not_found();
            };
            c.body = text;
            let c = c.clone();
            json_resp(StatusCode::OK, s.comment_json(&c))
        }
        (Method::DELETE, ["issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let before = s.comments.len();
            s.comments.retain(|c| c.id != id);
            if s.comments.len() == before {
                return not_found();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, ["deployments"]) => {
            let q = query(uri);
            let mut items: Vec<&Deployment> = s
                .deployments
                .iter()
                .filter(|d| q.get("sha").is_none_or(|v| *v == d.sha))
                .filter(|d| q.get("environment").is_none_or(|v| *v == d.environment))
                .collect();
            // GitHub lists newest first.
            items.sort_by_key(|d| std::cmp::Reverse(d.id));
            let items: Vec<Value> = items.into_iter().map(|d| s.deployment_json(d)).collect();
            page(s, uri, items)
        }
        (Method::POST, ["deployments"]) => {
            let id = s.id();
            let d = Deployment {
                id,
                sha: body["ref"].as_str().unwrap_or_default().to_string(),
                environment: body["environment"]
                    .as_str()
                    .unwrap_or("production")
                    .to_string(),
                payload: body,
            };
            s.deployments.push(d.clone());
            json_resp(StatusCode::CREATED, s.deployment_json(&d))
        }
        (Method::POST, ["deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !s.deployments.iter().any(|d| d.id == id) {
                return not_found();
            }
            let sid = s.id();
            s.statuses.push(Status {
                id: sid,
                deployment: id,
                payload: body.clone(),
            });
            json_resp(
                StatusCode::CREATED,
                json!({"id": sid, "state": body["state"], "environment_url": body["environment_url"], "log_url": body["log_url"]}),
            )
        }
        (Method::GET, ["deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let items: Vec<Value> = s
                .statuses
                .iter()
                .filter(|st| st.deployment == id)
                .rev()
                .map(|st| json!({"id": st.id, "state": st.payload["state"]}))
                .collect();
            page(s, uri, items)
        }
        (Method::GET, ["issues"]) => {
            let q = query(uri);
            let state = q.get("state").map(String::as_str).unwrap_or("open");
            let items: Vec<Value> = s
                .issues
                .values()
                .filter(|i| state == "all" || (state == "open") == i.open)
                .map(|i| s.issue_json(i))
                .collect();
            page(s, uri, items)
        }
        (Method::POST, ["issues"]) => {
            let Some(title) = body["title"].as_str().filter(|t| !t.is_empty()) else {
                return unprocessable("Validation Failed: title is missing");
            };
            let author = s.author.clone();
            let n = s.add_issue(&author, title, body["body"].as_str().unwrap_or_default());
            let i = s.issues[&n].clone();
            json_resp(StatusCode::CREATED, s.issue_json(&i))
        }
        (Method::PATCH, ["issues", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let Some(i) = s.issues.get_mut(&n) else {
                return not_found();
            };
            if let Some(b) = body["body"].as_str() {
                i.body = b.to_string();
            }
            if let Some(t) = body["title"].as_str() {
                i.title = t.to_string();
            }
            match body["state"].as_str() {
                Some("closed") => {
                    i.open = false;
                    i.state_reason = body["state_reason"].as_str().map(str::to_string);
                }
                Some("open") => i.open = true,
                _ => {}
            }
            let i = i.clone();
            json_resp(StatusCode::OK, s.issue_json(&i))
        }
        (Method::GET, ["compare", basehead]) => match s.merge_bases.get(*basehead) {
            Some(mb) => {
                let mb = mb.clone();
                json_resp(
                    StatusCode::OK,
                    json!({"status": "ahead", "ahead_by": 1, "behind_by": 0, "total_commits": 1, "merge_base_commit": {"sha": mb}, "base_commit": {"sha": mb}, "commits": [], "files": []}),
                )
            }
            None => not_found(),
        },
        (Method::GET, ["git", "ref", name @ ..]) => {
            let name = name.join("/");
            match s.refs.get(&name) {
                Some(sha) => json_resp(StatusCode::OK, s.ref_json(&name, &sha.clone())),
                None => not_found(),
            }
        }
        (Method::POST, ["git", "refs"]) => {
            let name = body["ref"].as_str().unwrap_or_default();
            let sha = body["sha"].as_str().unwrap_or_default().to_string();
            let Some(name) = name.strip_prefix("refs/").filter(|n| n.contains('/')) else {
                return unprocessable(
                    "Reference name must start with 'refs/' and have at least two slashes.",
                );
            };
            if s.refs.contains_key(name) {
                return unprocessable("Reference already exists");
            }
            if !matches!(s.objects.get(&sha), Some(GitObject::Commit { .. })) {
                return unprocessable("Object does not exist");
            }
            s.refs.insert(name.to_string(), sha.clone());
            json_resp(StatusCode::CREATED, s.ref_json(name, &sha))
        }
        (Method::PATCH, ["git", "refs", name @ ..]) => {
            let name = name.join("/");
            let sha = body["sha"].as_str().unwrap_or_default().to_string();
            let force = body["force"].as_bool().unwrap_or(false);
            let Some(old) = s.refs.get(&name).cloned() else {
                return unprocessable("Reference does not exist");
            };
            let old = match s.concurrent_writes.pop_front() {
                Some((path, text)) => {
                    let c = s.commit_files(Some(&old), &[(&path, &text)], "another writer");
                    s.refs.insert(name.clone(), c.clone());
                    c
                }
                None => old,
            };
            if !matches!(s.objects.get(&sha), Some(GitObject::Commit { .. })) {
                return unprocessable("Object does not exist");
            }
            if !force && !s.is_ancestor(&old, &sha) {
                return unprocessable("Update is not a fast forward");
            }
            s.refs.insert(name.clone(), sha.clone());
            json_resp(StatusCode::OK, s.ref_json(&name, &sha))
        }
        (Method::POST, ["git", "blobs"]) => {
            let content = body["content"].as_str().unwrap_or_default();
            let bytes = match body["encoding"].as_str().unwrap_or("utf-8") {
                "base64" => {
                    use base64::Engine as _;
                    match base64::engine::general_purpose::STANDARD.decode(content) {
                        Ok(b) => b,
                        Err(_) => return unprocessable("content is not valid Base64"),
                    }
                }
                _ => content.as_bytes().to_vec(),
            };
            let sha = s.put(GitObject::Blob(bytes));
            json_resp(
                StatusCode::CREATED,
                json!({"sha": sha, "url": format!("http://{}/repos/{}/git/blobs/{sha}", s.addr, s.repo)}),
            )
        }
        (Method::GET, ["git", "blobs", sha]) => match s.objects.get(*sha) {
            Some(GitObject::Blob(b)) => {
                use base64::Engine as _;
                // GitHub wraps the base64 in 60-column lines.
                let enc = base64::engine::general_purpose::STANDARD.encode(b);
                let wrapped: Vec<String> = enc
                    .as_bytes()
                    .chunks(60)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                json_resp(
                    StatusCode::OK,
                    json!({"sha": sha, "node_id": format!("B_{sha}"), "size": b.len(), "url": format!("http://{}/repos/{}/git/blobs/{sha}", s.addr, s.repo), "content": wrapped.join("\n") + "\n", "encoding": "base64"}),
                )
            }
            _ => not_found(),
        },
        (Method::POST, ["git", "trees"]) => {
            let mut tree = match body["base_tree"].as_str() {
                Some(base) => match s.objects.get(base) {
                    Some(GitObject::Tree(t)) => t.clone(),
                    _ => return unprocessable("Invalid tree info: base_tree does not exist"),
                },
                None => BTreeMap::new(),
            };
            for e in body["tree"].as_array().cloned().unwrap_or_default() {
                let path = e["path"].as_str().unwrap_or_default().to_string();
                if path.is_empty() || path.contains('/') {
                    // The fake keeps trees flat; Atlas writes top-level files only.
                    return unprocessable("the fake GitHub keeps flat trees");
                }
                match (e["sha"].as_str(), e["content"].as_str()) {
                    (Some(_), Some(_)) => return unprocessable("Use either tree.sha or content"),
                    (Some(sha), None) => {
                        if !s.objects.contains_key(sha) {
                            return unprocessable(&format!(
                                "Invalid tree info: {sha} does not exist"
                            ));
                        }
                        tree.insert(
                            path,
                            (
                                e["mode"].as_str().unwrap_or("100644").into(),
                                e["type"].as_str().unwrap_or("blob").into(),
                                sha.to_string(),
                            ),
                        );
                    }
                    (None, Some(text)) => {
                        let sha = s.put(GitObject::Blob(text.as_bytes().to_vec()));
                        tree.insert(path, ("100644".into(), "blob".into(), sha));
                    }
                    (None, None) if e["sha"].is_null() && e.get("sha").is_some() => {
                        tree.remove(&path);
                    }
                    (None, None) => return unprocessable("tree entry needs sha or content"),
                }
            }
            let sha = s.put(GitObject::Tree(tree));
            json_resp(StatusCode::CREATED, s.tree_json(&sha))
        }
        (Method::GET, ["git", "trees", sha]) => match s.objects.get(*sha) {
            Some(GitObject::Tree(_)) => json_resp(StatusCode::OK, s.tree_json(sha)),
            _ => not_found(),
        },
        (Method::POST, ["git", "commits"]) => {
            let tree = body["tree"].as_str().unwrap_or_default().to_string();
            if !matches!(s.objects.get(&tree), Some(GitObject::Tree(_))) {
                return unprocessable("Tree SHA does not exist");
            }
            let parents: Vec<String> = body["parents"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if parents
                .iter()
                .any(|p| !matches!(s.objects.get(p), Some(GitObject::Commit { .. })))
            {
                return unprocessable("Parent SHA does not exist or is not a commit object");
            }
            let sha = s.put(GitObject::Commit {
                tree,
                parents,
                message: body["message"].as_str().unwrap_or_default().to_string(),
            });
            json_resp(StatusCode::CREATED, s.commit_json(&sha))
        }
        (Method::GET, ["git", "commits", sha]) => match s.objects.get(*sha) {
            Some(GitObject::Commit { .. }) => json_resp(StatusCode::OK, s.commit_json(sha)),
            _ => not_found(),
        },
        (Method::GET, ["pulls", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            match s.pulls.get(&n) {
                Some(p) => json_resp(
                    StatusCode::OK,
                    json!({
                        "number": p.number,
                        "state": if p.open { "open" } else { "closed" },
                        "merged": p.merged,
                        "merged_at": if p.merged { json!("2026-01-01T00:00:00Z") } else { Value::Null },
                        "head": {"sha": p.head_sha, "ref": "feature"},
                    }),
                ),
                None => not_found(),
            }
        }
        (Method::GET, ["pulls"]) => {
            let q = query(uri);
            let want_open = q.get("state").map(String::as_str) != Some("closed");
            let items: Vec<Value> = s
                .pulls
                .values()
                .filter(|p| p.open == want_open || q.get("state").map(String::as_str) == Some("all"))
                .map(|p| json!({"number": p.number, "state": if p.open {"open"} else {"closed"}, "head": {"sha": p.head_sha},
                                "title": s.pull_titles.get(&p.number).cloned().unwrap_or_else(|| format!("Pull #{}", p.number))}))
                .collect();
            page(s, uri, items)
        }
        _ => not_found(),
    }
}

/// GitHub's `redirect_uri` rule for an app's callback URL: the same scheme, host and port, and a
/// path under the callback's; for a loopback callback (`http://127.0.0.1/...`) any port.
fn redirect_matches(callback: &str, redirect: &str) -> bool {
    let (Ok(cb), Ok(r)) = (url::Url::parse(callback), url::Url::parse(redirect)) else {
        return false;
    };
    let loopback = matches!(cb.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    let cb_path = cb.path().trim_end_matches('/');
    cb.scheme() == r.scheme()
        && cb.host_str() == r.host_str()
        && (loopback || cb.port_or_known_default() == r.port_or_known_default())
        && (r.path() == cb.path()
            || r.path().trim_end_matches('/') == cb_path
            || r.path().starts_with(&format!("{cb_path}/")))
}

/// `GET /login/oauth/authorize` (the browser, already signed in, approves at once and is sent
/// back with a code) and `POST /login/oauth/access_token` (code -> token; GitHub answers errors
/// with 200 and an `error` field).
fn oauth(s: &mut State, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    match (method.clone(), uri.path()) {
        (Method::GET, "/login/oauth/authorize") => {
            let q = query(uri);
            let client = q.get("client_id").cloned().unwrap_or_default();
            if !s.oauth_apps.contains_key(&client) {
                s.violations
                    .push(format!("authorize: unknown client_id {client:?}"));
                return (StatusCode::NOT_FOUND, "unknown OAuth app").into_response();
            }
            let (Some(redirect), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
                s.violations
                    .push("authorize: no redirect_uri or state".into());
                return (StatusCode::BAD_REQUEST, "redirect_uri and state required")
                    .into_response();
            };
            if let Some(cb) = s.oauth_callbacks.get(&client)
                && !redirect_matches(cb, redirect)
            {
                s.violations.push(format!(
                    "authorize: redirect_uri {redirect:?} does not match the callback URL {cb:?}"
                ));
                return (
                    StatusCode::BAD_REQUEST,
                    "The redirect_uri is not associated with this application.",
                )
                    .into_response();
            }
            let Some(login) = s.oauth_browser_user.clone() else {
                return (StatusCode::OK, "<form>Sign in to GitHub</form>").into_response();
            };
            let id = s.id();
            let code = format!("code{id}");
            s.oauth_codes
                .insert(code.clone(), (client, redirect.clone(), login));
            let sep = if redirect.contains('?') { '&' } else { '?' };
            let state_enc: String =
                url::form_urlencoded::byte_serialize(state.as_bytes()).collect();
            let loc = format!("{redirect}{sep}code={code}&state={state_enc}");
            (StatusCode::FOUND, [("location", loc)]).into_response()
        }
        (Method::POST, "/login/oauth/access_token") => {
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let get = |k: &str| form.get(k).cloned().unwrap_or_default();
            let client = get("client_id");
            if s.oauth_apps.get(&client) != Some(&get("client_secret")) {
                return json_resp(
                    StatusCode::OK,
                    json!({"error": "incorrect_client_credentials"}),
                );
            }
            // A code is single-use and bound to its client and redirect_uri.
            match s.oauth_codes.remove(&get("code")) {
                Some((c, r, login)) if c == client && r == get("redirect_uri") => {
                    let id = s.id();
                    let token = format!("gho_faketoken{id:08}");
                    s.oauth_tokens.insert(token.clone(), login);
                    json_resp(
                        StatusCode::OK,
                        json!({"access_token": token, "token_type": "bearer", "scope": ""}),
                    )
                }
                Some(_) => json_resp(StatusCode::OK, json!({"error": "redirect_uri_mismatch"})),
                None => json_resp(StatusCode::OK, json!({"error": "bad_verification_code"})),
            }
        }
        _ => not_found(),
    }
}
