//! GitHub through octocrab's raw request methods: the one sticky PR comment, deployment records
//! and statuses, and the live PR state that every run reconciles with.
//!
//! The base URI comes from `GITHUB_API_URL` (GitHub Enterprise Server works the same way) and
//! every call goes through [`crate::http::with_retry`]: reads, updates and deletes are retried on
//! 5xx, 429 and GitHub's secondary rate limit (403 with `Retry-After` or an exhausted
//! `x-ratelimit-remaining`); a create is never re-sent blindly — before a second attempt the
//! resource is looked up (by marker and author for comments, by sha and environment for
//! deployments). Errors are [`ProviderError`]s naming provider `github`, the call, the status and
//! the redacted response body.
//!
//! Identity: the sticky comment is the one that carries the hidden marker AND was written by the
//! token's own identity (`GET /user`, for a personal or fine-grained token). An installation
//! token (the workflow's `GITHUB_TOKEN`, or a custom GitHub App's) gets 403 there ("Resource not
//! accessible by integration") and cannot learn its own `<app-slug>[bot]` login without the app's
//! JWT (`GET /app`). For those, ours is a marker comment written by `github-actions[bot]` (a
//! `type: Bot` user): another app echoing the marker, or a person quoting it, never takes the
//! comment over. A custom app's login is configured (`github_app_login` input,
//! [`GithubForge::with_identity`]).
//!
//! ## How preview dispatch drives it (`up`, in order)
//! 1. `GithubForge::from_env(&ctx.github, &ctx.config)` (inside the Tokio runtime);
//! 2. `crate::sweep::reconcile(forge, pr, plan.sha)` — see `sweep.rs` for each decision;
//! 3. `create_deployment("preview/pr-<n>", sha, true, ..)` (reused when it exists for that sha),
//!    then `set_deployment_status(InProgress, None, run_url, ..)`;
//! 4. build; `reconcile` again (stale: stop here, mark this deployment `Inactive`);
//! 5. `upsert_comment(pr, marker, render_comment("preview.md.j2", ..))`, where `marker` is the
//!    per-PR hidden marker (`<!-- atlas:preview pr=N -->`, `preview::marker` on the `local`
//!    branch) that the template also renders as its first line;
//! 6. `set_deployment_status(Success | Failure, Some(preview_url), run_url, ..)`;
//! 7. `crate::outputs::write(..)` on every path, with `comment_url` from step 5.
//!
//! `down`: `upsert_comment` with `destroyed.md.j2`, then `deactivate_environment("preview/pr-<n>")`.
//! Verify / release: steps 3 and 6 with `qa` / `production` and `transient = false`.
//! A repeat `up` of the same commit with unchanged content costs 7 calls (measured in
//! `tests/integration/github.rs`): 2 × pulls, `/user`, comments list, deployments list, 2 statuses.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use http::{HeaderMap, Method, StatusCode};
use octocrab::Octocrab;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{
    BranchUpdate, BranchWrite, CommentRef, DeploymentRecord, DeploymentStatus, Forge, IssueAlert,
    IssueRef, NewDeployment, PrState,
};
use crate::error::ProviderError;
use crate::http::{Attempt, RetryPolicy, with_retry};
use crate::secret::{self, Secret};

/// The login that writes comments made with the workflow's `GITHUB_TOKEN`.
pub const ACTIONS_BOT: &str = "github-actions[bot]";
/// GitHub's maximum page size; used for every list.
const PER_PAGE: u32 = 100;
/// A bound on pages followed, so a misbehaving server cannot loop us forever.
const MAX_PAGES: usize = 500;
/// A whole exchange (connect, headers, body) may take this long: the read timeout alone lets a
/// server that sends a byte now and then hold a call for ever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// GitHub caps a deployment status description at 140 characters.
const DESCRIPTION_MAX: usize = 140;
/// Writes of a data branch that lose the race to another writer before giving up.
const BRANCH_ATTEMPTS: u32 = 5;

/// One response: status, headers and body text.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self, call: &str) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("github: {call} returned a body that is not JSON"))
    }
}

/// The GitHub forge.
pub struct GithubForge {
    client: Octocrab,
    api_url: String,
    /// `owner/name`.
    repository: String,
    policy: RetryPolicy,
    identity: OnceCell<Author>,
    call_timeout: Duration,
}

/// Whose marker comments are ours (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// This login exactly.
    Login(String),
    /// An installation token: any app (`type: Bot`).
    App,
}

impl Author {
    fn wrote(&self, comment: &Value) -> bool {
        let login = comment["user"]["login"].as_str();
        match self {
            Author::Login(me) => login == Some(me.as_str()),
            // The workflow token writes as github-actions[bot]; any other bot (another
            // workflow's app echoing the marker) is not us. A custom app is pinned by login.
            Author::App => {
                comment["user"]["type"].as_str() == Some("Bot") && login == Some(ACTIONS_BOT)
            }
        }
    }
}

impl GithubForge {
    /// A client for `repository` (`owner/name`) at `api_url` (`GITHUB_API_URL`) with `token`.
    /// Connect and read timeouts are always set; octocrab's own retry layer is not compiled in.
    /// Must be called inside a Tokio runtime (octocrab's client spawns its buffer task).
    pub fn new(api_url: &str, repository: &str, token: &Secret) -> anyhow::Result<GithubForge> {
        secret::register(token.expose());
        let (owner, name) = repository.split_once('/').with_context(|| {
            format!("repository {repository:?} is not owner/name (set GITHUB_REPOSITORY)")
        })?;
        if owner.is_empty() || name.is_empty() || name.contains('/') {
            anyhow::bail!("repository {repository:?} is not owner/name (set GITHUB_REPOSITORY)");
        }
        let api_url = api_url.trim_end_matches('/').to_string();
        let client = Octocrab::builder()
            .base_uri(api_url.as_str())
            .with_context(|| {
                format!(
                    "GITHUB_API_URL {api_url:?} is not a valid URL (e.g. https://api.github.com)"
                )
            })?
            .personal_token(token.expose().to_string())
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .set_write_timeout(Some(Duration::from_secs(30)))
            .build()
            .context("cannot build the GitHub client")?;
        Ok(GithubForge {
            client,
            api_url,
            repository: repository.to_string(),
            policy: RetryPolicy::default(),
            identity: OnceCell::new(),
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// From the runner's environment: `GITHUB_API_URL`, `GITHUB_REPOSITORY` and the
    /// `github_token` input.
    pub fn from_env(
        github: &crate::github_env::GithubEnv,
        config: &crate::config::Config,
    ) -> anyhow::Result<GithubForge> {
        let token = config.require_github_token()?;
        let repository = github.repository.as_deref().context(
            "GITHUB_REPOSITORY is not set (atlas talks to GitHub only on Actions or with --repo)",
        )?;
        let forge = GithubForge::new(&github.api_url, repository, token)?;
        // A custom GitHub App's installation token cannot learn its own login: it is configured.
        Ok(match &config.github_app_login {
            Some(l) => forge.with_identity(l),
            None => forge,
        })
    }

    /// Replaces the retry policy (tests use [`RetryPolicy::fast`]).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the total time one exchange may take ([`CALL_TIMEOUT`]; tests use less).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Fixes the comment author instead of asking `GET /user` (a custom GitHub App's
    /// `<slug>[bot]` login).
    pub fn with_identity(self, login: &str) -> Self {
        let cell = OnceCell::new();
        let _ = cell.set(Author::Login(login.to_string()));
        GithubForge {
            identity: cell,
            ..self
        }
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("/repos/{}{rest}", self.repository)
    }

    /// One HTTP exchange through octocrab's raw API.
    async fn exchange(
        &self,
        method: &Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<Resp, octocrab::Error> {
        let resp = match *method {
            Method::GET => self.client._get(uri).await?,
            Method::POST => self.client._post(uri, body).await?,
            Method::PATCH => self.client._patch(uri, body).await?,
            Method::DELETE => self.client._delete(uri, body).await?,
            _ => self.client._put(uri, body).await?,
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = self.client.body_to_string(resp).await?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// One attempt, classified for [`with_retry`]. `ok` lists extra statuses that are answers,
    /// not errors (404 for `pr_state`, 404 for a delete).
    async fn attempt(
        &self,
        n: u32,
        call: &str,
        method: &Method,
        uri: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Attempt<Resp> {
        let transport = |why: String| Attempt::Retry {
            after: None,
            error: anyhow::Error::new(ProviderError {
                provider: "github",
                call: call.to_string(),
                status: 0,
                body: secret::redact(&why),
            }),
        };
        let r =
            match tokio::time::timeout(self.call_timeout, self.exchange(method, uri, body)).await {
                Ok(Ok(r)) => r,
                // Transport failure (connect, timeout): transient.
                Ok(Err(e)) => return transport(format!("{e}")),
                Err(_) => {
                    return transport(format!(
                        "no complete answer within {} ms (the per-call timeout)",
                        self.call_timeout.as_millis()
                    ));
                }
            };
        if (200..300).contains(&r.status) || ok.contains(&r.status) {
            return Attempt::Done(Ok(r));
        }
        // Redact first: a cut made before redaction could leave a token's prefix behind.
        let err = anyhow::Error::new(ProviderError {
            provider: "github",
            call: call.to_string(),
            status: r.status,
            body: crate::text::truncate(&secret::redact(&r.body), 2_000),
        });
        match classify(r.status, &r.headers, &r.body, n) {
            Some(after) => Attempt::Retry { after, error: err },
            None => Attempt::Done(Err(permission_hint(r.status, &r.body, err))),
        }
    }

    /// Sends an idempotent request (read, update, delete, status) with the retry policy.
    async fn call(
        &self,
        call: &str,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> anyhow::Result<Resp> {
        with_retry(&self.policy, |n| {
            self.attempt(n, call, &method, uri, body, ok)
        })
        .await
    }

    /// GETs a repository path (`/…` below `repos/{owner}/{name}`) and reads its JSON.
    async fn get_repo(&self, call: &str, path: &str) -> anyhow::Result<Value> {
        self.call(call, Method::GET, &self.repo_path(path), None, &[])
            .await?
            .json(call)
    }

    /// Like [`Self::get_repo`], with `None` for a 404 (a branch, PR or commit that is not there).
    async fn find_repo(&self, call: &str, path: &str) -> anyhow::Result<Option<Value>> {
        let r = self
            .call(call, Method::GET, &self.repo_path(path), None, &[404])
            .await?;
        if r.status == 404 {
            return Ok(None);
        }
        r.json(call).map(Some)
    }

    /// Sends a create once. `Err` is final; `Ok(Err(_))` is a transient failure after which
    /// the create may or may not have landed: the caller looks the resource up before sending
    /// again (after waiting what the server asked for).
    async fn create_once(
        &self,
        n: u32,
        call: &str,
        uri: &str,
        body: &Value,
    ) -> anyhow::Result<Result<Resp, anyhow::Error>> {
        match self
            .attempt(n, call, &Method::POST, uri, Some(body), &[])
            .await
        {
            Attempt::Done(r) => r.map(Ok),
            Attempt::Retry { after, error } => {
                let wait = after.unwrap_or_else(|| self.policy.backoff(n));
                // Never before the time the server named; past the deadline, fail now.
                let mut limit = std::time::Instant::now() + self.policy.deadline;
                if let Some((at, _)) = crate::http::run_deadline() {
                    limit = limit.min(at);
                }
                if std::time::Instant::now() + wait > limit {
                    let until = chrono::Utc::now()
                        + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1));
                    return Err(error.context(format!(
                        "rate-limited until {} (the server asked to wait {}s), past this run's deadline: giving up now instead of waiting",
                        until.format("%Y-%m-%dT%H:%M:%SZ"),
                        wait.as_secs()
                    )));
                }
                tokio::time::sleep(wait).await;
                Ok(Err(error))
            }
        }
    }

    /// Follows `Link: rel="next"` from `first` and returns every element of every page.
    async fn list_all(&self, call: &str, first: String) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(uri) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                anyhow::bail!("github: {call}: more than {MAX_PAGES} pages; giving up");
            }
            let r = self.call(call, Method::GET, &uri, None, &[]).await?;
            match r.json(call)? {
                Value::Array(items) => out.extend(items),
                _ => anyhow::bail!("github: {call} did not return a list"),
            }
            next = next_link(&r.headers)
                .map(|u| self.same_host(&u, call))
                .transpose()?;
        }
        Ok(out)
    }

    /// A pagination link must point at the API we were given: the token is sent with it.
    fn same_host(&self, link: &str, call: &str) -> anyhow::Result<String> {
        let base = url::Url::parse(&self.api_url)?;
        let u = url::Url::parse(link)
            .with_context(|| format!("github: {call}: bad pagination link {link:?}"))?;
        if u.origin() != base.origin() {
            anyhow::bail!(
                "github: {call}: pagination link points to {} instead of {}; refusing to send the token there",
                u.origin().ascii_serialization(),
                base.origin().ascii_serialization()
            );
        }
        Ok(u.to_string())
    }

    /// Whose comments are ours (see the module docs).
    pub async fn identity(&self) -> anyhow::Result<Author> {
        self.identity
            .get_or_try_init(|| async {
                match self
                    .call(
                        "get the token's user",
                        Method::GET,
                        "/user",
                        None,
                        &[401, 403, 404],
                    )
                    .await?
                {
                    r if r.status == 200 => r.json("get the token's user")?["login"]
                        .as_str()
                        .map(|l| Author::Login(l.to_string()))
                        .context("github: GET /user returned no login"),
                    // An installation token has no user.
                    _ => Ok(Author::App),
                }
            })
            .await
            .cloned()
    }

    /// Every comment on `pr` that carries `marker` and was written by us, oldest first.
    async fn our_comments(&self, pr: u64, marker: &str) -> anyhow::Result<Vec<Value>> {
        let me = self.identity().await?;
        let all = self
            .list_all(
                "list PR comments",
                self.repo_path(&format!("/issues/{pr}/comments?per_page={PER_PAGE}")),
            )
            .await?;
        let mut ours: Vec<Value> = all
            .into_iter()
            .filter(|c| me.wrote(c) && c["body"].as_str().is_some_and(|b| b.contains(marker)))
            .collect();
        // Comment ids grow with creation time; the oldest is the canonical one.
        ours.sort_by_key(|c| c["id"].as_u64().unwrap_or(u64::MAX));
        Ok(ours)
    }

    async fn update_comment(&self, id: u64, body: &str) -> anyhow::Result<Value> {
        self.call(
            "update the PR comment",
            Method::PATCH,
            &self.repo_path(&format!("/issues/comments/{id}")),
            Some(&json!({ "body": body })),
            &[],
        )
        .await?
        .json("update the PR comment")
    }

    async fn delete_comment(&self, id: u64) -> anyhow::Result<()> {
        self.call(
            "delete a duplicate PR comment",
            Method::DELETE,
            &self.repo_path(&format!("/issues/comments/{id}")),
            None,
            &[404],
        )
        .await
        .map(|_| ())
    }

    /// Deployments of `environment` (optionally for one `sha`), newest first as GitHub lists them.
    async fn deployments(
        &self,
        environment: &str,
        sha: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let env: String = url::form_urlencoded::byte_serialize(environment.as_bytes()).collect();
        let mut q = format!("/deployments?environment={env}&per_page={PER_PAGE}");
        if let Some(sha) = sha {
            q.push_str(&format!("&sha={sha}"));
        }
        self.list_all("list deployments", self.repo_path(&q)).await
    }
}

impl GithubForge {
    /// The commit `heads/<branch>` points at; `None` when the branch does not exist yet.
    async fn branch_head(&self, branch: &str) -> anyhow::Result<Option<String>> {
        let call = "read the data branch";
        let Some(v) = self
            .find_repo(call, &format!("/git/ref/heads/{branch}"))
            .await?
        else {
            return Ok(None);
        };
        // A ref that is a tag or a directory of refs is not our branch.
        match (v["object"]["type"].as_str(), v["object"]["sha"].as_str()) {
            (Some("commit"), Some(sha)) => Ok(Some(sha.to_string())),
            _ => anyhow::bail!(
                "github: heads/{branch} is not a branch pointing at a commit; name another `history_branch`"
            ),
        }
    }

    /// The tree of `commit` and the text of the top-level file `path` in it (`None`: no such
    /// file). Bytes that are not UTF-8 come back replaced: the caller's parser rejects them.
    async fn file_at(&self, commit: &str, path: &str) -> anyhow::Result<(String, Option<String>)> {
        let call = "read the data branch's commit";
        let c = self
            .get_repo(call, &format!("/git/commits/{commit}"))
            .await?;
        let tree = c["tree"]["sha"]
            .as_str()
            .context("github: the data branch's commit has no tree")?
            .to_string();
        let call = "read the data branch's tree";
        let t = self.get_repo(call, &format!("/git/trees/{tree}")).await?;
        let blob = t["tree"].as_array().and_then(|entries| {
            entries.iter().find_map(|e| {
                (e["path"].as_str() == Some(path) && e["type"].as_str() == Some("blob"))
                    .then(|| e["sha"].as_str().map(str::to_string))
                    .flatten()
            })
        });
        let Some(blob) = blob else {
            return Ok((tree, None));
        };
        let call = "read the data branch's file";
        let b = self.get_repo(call, &format!("/git/blobs/{blob}")).await?;
        let content = b["content"].as_str().unwrap_or_default();
        let bytes = match b["encoding"].as_str() {
            Some("base64") => {
                use base64::Engine as _;
                // GitHub wraps base64 content in lines.
                let packed: String = content.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(packed)
                    .with_context(|| format!("github: blob {blob} of {path} is not base64"))?
            }
            _ => content.as_bytes().to_vec(),
        };
        Ok((tree, Some(String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// Creates a git object (blob, tree, commit). Objects are addressed by their content, so
    /// one sent twice after a lost response is the same object (or an unreferenced twin): safe
    /// to retry like an update.
    async fn git_object(&self, kind: &str, body: &Value) -> anyhow::Result<String> {
        let call = format!("create a git {kind}");
        let v = self
            .call(
                &call,
                Method::POST,
                &self.repo_path(&format!("/git/{kind}s")),
                Some(body),
                &[],
            )
            .await?
            .json(&call)?;
        v["sha"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("github: {call} returned no sha"))
    }

    /// Points the branch at `commit`: a fast-forward update, or the branch's creation.
    /// `Ok(false)`: another writer got there first.
    async fn move_branch(
        &self,
        branch: &str,
        head: Option<&str>,
        commit: &str,
    ) -> anyhow::Result<bool> {
        let (call, r) = match head {
            Some(_) => {
                let call = "update the data branch";
                let body = json!({ "sha": commit, "force": false });
                let uri = self.repo_path(&format!("/git/refs/heads/{branch}"));
                (
                    call,
                    self.call(call, Method::PATCH, &uri, Some(&body), &[422])
                        .await?,
                )
            }
            None => {
                let call = "create the data branch";
                let body = json!({ "ref": format!("refs/heads/{branch}"), "sha": commit });
                let uri = self.repo_path("/git/refs");
                (
                    call,
                    self.call(call, Method::POST, &uri, Some(&body), &[422])
                        .await?,
                )
            }
        };
        if r.status != 422 {
            return Ok(true);
        }
        let lost = {
            let b = r.body.to_ascii_lowercase();
            b.contains("fast forward") || b.contains("already exists")
        };
        if lost {
            return Ok(false);
        }
        Err(anyhow::Error::new(ProviderError {
            provider: "github",
            call: call.to_string(),
            status: 422,
            body: crate::text::truncate(&secret::redact(&r.body), 2_000),
        }))
    }
}

impl GithubForge {
    /// The open issue of an alert: same title, our marker in the body, written by us (the
    /// oldest, if a race made two). Pull requests, which the issues list includes, are not.
    async fn open_alert(&self, alert: &IssueAlert<'_>) -> anyhow::Result<Option<Value>> {
        let me = self.identity().await?;
        let all = self
            .list_all(
                "list open issues",
                self.repo_path(&format!("/issues?state=open&per_page={PER_PAGE}")),
            )
            .await?;
        Ok(all
            .into_iter()
            .filter(|i| i.get("pull_request").is_none())
            .filter(|i| i["title"].as_str() == Some(alert.title))
            .filter(|i| i["body"].as_str().is_some_and(|b| b.contains(alert.marker)))
            .filter(|i| me.wrote(i))
            .min_by_key(|i| i["number"].as_u64().unwrap_or(u64::MAX)))
    }

    fn issue_ref(v: &Value, action: &str) -> IssueRef {
        IssueRef {
            number: v["number"].as_u64(),
            url: v["html_url"].as_str().map(str::to_string),
            action: action.to_string(),
        }
    }
}

/// A branch name Atlas may put in a URL path: git's own rules, narrowed to plain characters.
fn check_branch(branch: &str) -> anyhow::Result<()> {
    let ok = !branch.is_empty()
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !branch.contains("..")
        && !branch.starts_with(['/', '.', '-'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock");
    if !ok {
        anyhow::bail!(
            "history_branch {branch:?} is not a plain branch name (letters, digits, `-_./`)"
        );
    }
    Ok(())
}

/// Decides whether a failed response is transient and how long the server asked us to wait.
/// `Some(after)` retries; `None` is final.
fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    attempt: u32,
) -> Option<Option<Duration>> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let retry_after = header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let reset = || {
        let remaining = header("x-ratelimit-remaining")?;
        if remaining != "0" {
            return None;
        }
        let reset: i64 = header("x-ratelimit-reset")?.parse().ok()?;
        let wait = reset - chrono::Utc::now().timestamp();
        Some(Duration::from_secs(wait.clamp(1, 3600) as u64))
    };
    let code = StatusCode::from_u16(status).ok()?;
    // GitHub's guidance for a secondary rate limit without headers: wait at least a minute.
    let secondary = || body.to_ascii_lowercase().contains("rate limit");
    // At least a minute, doubling with each attempt that meets the limit again.
    let minute =
        Some(Duration::from_secs(60).saturating_mul(1 << attempt.saturating_sub(1).min(6)));
    if status == 429 {
        return Some(
            retry_after
                .or_else(reset)
                .or(if secondary() { minute } else { None }),
        );
    }
    if code.is_server_error() {
        return Some(retry_after.or_else(reset));
    }
    if status == 403 {
        // A 403 is a rate limit only when GitHub says so; otherwise it is a permission error.
        if retry_after.is_some() || reset().is_some() {
            return Some(retry_after.or_else(reset));
        }
        if secondary() {
            return Some(minute);
        }
    }
    None
}

/// A final 401/403 says which input and which permission to fix.
fn permission_hint(status: u16, body: &str, err: anyhow::Error) -> anyhow::Error {
    match status {
        401 => err.context(
            "github rejected the credentials (401): check the `github_token` input (an expired or revoked token?)",
        ),
        403 if body.contains("Resource not accessible by integration") => err.context(
            "the `github_token` lacks a permission: give the workflow `permissions: pull-requests: write` (comments) and `deployments: write` (deployment records)",
        ),
        403 => err.context(
            "github refused the call (403): check the `github_token` input's permissions (`pull-requests: write`, `deployments: write`)",
        ),
        _ => err,
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

fn id_of(v: &Value) -> anyhow::Result<u64> {
    v["id"]
        .as_u64()
        .context("github returned an object without an id")
}

fn comment_ref(v: &Value, action: &str) -> anyhow::Result<CommentRef> {
    Ok(CommentRef {
        id: id_of(v)?.to_string(),
        url: v["html_url"].as_str().unwrap_or_default().to_string(),
        action: action.to_string(),
    })
}

/// Comment bodies as GitHub stores them (it keeps `\r\n` from the web editor; we send `\n`).
fn same_body(a: &str, b: &str) -> bool {
    a.replace("\r\n", "\n").trim_end() == b.replace("\r\n", "\n").trim_end()
}

#[async_trait]
impl Forge for GithubForge {
    fn kind(&self) -> &'static str {
        "github"
    }

    async fn pr_state(&self, pr: u64) -> anyhow::Result<Option<PrState>> {
        let call = "get the pull request";
        let Some(v) = self.find_repo(call, &format!("/pulls/{pr}")).await? else {
            return Ok(None);
        };
        Ok(Some(PrState {
            number: pr,
            open: v["state"].as_str() == Some("open"),
            head_sha: v["head"]["sha"]
                .as_str()
                .context("github: the pull request has no head sha")?
                .to_ascii_lowercase(),
            merged: v["merged"].as_bool().unwrap_or(false) || !v["merged_at"].is_null(),
        }))
    }

    async fn open_prs(&self) -> anyhow::Result<Vec<u64>> {
        let all = self
            .list_all(
                "list open pull requests",
                self.repo_path(&format!("/pulls?state=open&per_page={PER_PAGE}")),
            )
            .await?;
        let mut prs: Vec<u64> = all.iter().filter_map(|p| p["number"].as_u64()).collect();
        prs.sort_unstable();
        prs.dedup();
        Ok(prs)
    }

    async fn open_pr_titles(&self) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
        let all = self
            .list_all(
                "list open pull requests",
                self.repo_path(&format!("/pulls?state=open&per_page={PER_PAGE}")),
            )
            .await?;
        Ok(all
            .iter()
            .filter_map(|p| Some((p["number"].as_u64()?, p["title"].as_str()?.to_string())))
            .collect())
    }

    async fn comment_body(&self, pr: u64, marker: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .our_comments(pr, marker)
            .await?
            .first()
            .and_then(|c| c["body"].as_str().map(str::to_string)))
    }

    async fn put_comment(&self, pr: u64, marker: &str, body: &str) -> anyhow::Result<CommentRef> {
        let ours = self.our_comments(pr, marker).await?;
        if let Some(first) = ours.first() {
            // Duplicates from an earlier race: keep the oldest.
            for dup in &ours[1..] {
                self.delete_comment(id_of(dup)?).await?;
            }
            if same_body(first["body"].as_str().unwrap_or_default(), body) {
                return comment_ref(first, "unchanged");
            }
            let updated = self.update_comment(id_of(first)?, body).await?;
            return comment_ref(&updated, "updated");
        }
        let call = "create the PR comment";
        let uri = self.repo_path(&format!("/issues/{pr}/comments"));
        let payload = json!({ "body": body });
        let mut created = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.create_once(attempts, call, &uri, &payload).await? {
                Ok(r) => {
                    created = Some(r.json(call)?);
                    break;
                }
                // The create may have landed before the failure: look before sending again.
                Err(e) => {
                    if !self.our_comments(pr, marker).await?.is_empty() {
                        break;
                    }
                    if attempts >= self.policy.max_attempts {
                        return Err(e.context(format!("gave up after {attempts} attempt(s)")));
                    }
                }
            }
        }
        // Two runs may have created one each: look again and keep the oldest of ours.
        let ours = self.our_comments(pr, marker).await?;
        let Some(oldest) = ours.first() else {
            return match created {
                Some(c) => comment_ref(&c, "created"),
                None => anyhow::bail!("github: the PR comment vanished right after it was created"),
            };
        };
        for dup in &ours[1..] {
            self.delete_comment(id_of(dup)?).await?;
        }
        let created_id = created.as_ref().map(id_of).transpose()?;
        if Some(id_of(oldest)?) == created_id {
            return comment_ref(oldest, "created");
        }
        // Another run's comment won (or ours landed although its response was lost); make sure
        // it shows this run's content.
        if same_body(oldest["body"].as_str().unwrap_or_default(), body) {
            let action = if created.is_none() {
                "created"
            } else {
                "unchanged"
            };
            return comment_ref(oldest, action);
        }
        let updated = self.update_comment(id_of(oldest)?, body).await?;
        comment_ref(&updated, "updated")
    }

    async fn create_deployment(&self, new: NewDeployment<'_>) -> anyhow::Result<DeploymentRecord> {
        let (environment, sha) = (new.environment, new.sha);
        let record = |v: &Value| -> anyhow::Result<DeploymentRecord> {
            Ok(DeploymentRecord {
                id: id_of(v)?.to_string(),
                environment: environment.to_string(),
                url: v["url"].as_str().map(str::to_string),
            })
        };
        // One deployment per (sha, environment): a re-run reuses it.
        let existing = self.deployments(environment, Some(sha)).await?;
        if let Some(d) = existing.first() {
            return record(d);
        }
        let call = "create a deployment";
        let payload = json!({
            "ref": sha,
            "environment": environment,
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": new.transient,
            "production_environment": environment == "production",
            "description": crate::text::truncate(new.description, DESCRIPTION_MAX - 1),
        });
        let uri = self.repo_path("/deployments");
        let mut attempts = 0;
        let r = loop {
            attempts += 1;
            match self.create_once(attempts, call, &uri, &payload).await? {
                Ok(r) => break r,
                // It may have been created before the failure: look it up before re-sending.
                Err(e) => {
                    if let Some(d) = self.deployments(environment, Some(sha)).await?.first() {
                        return record(d);
                    }
                    if attempts >= self.policy.max_attempts {
                        return Err(e.context(format!("gave up after {attempts} attempt(s)")));
                    }
                }
            }
        };
        if r.status == 202 {
            anyhow::bail!(
                "github: {call}: GitHub tried to merge the default branch (202): {}",
                secret::redact(&r.body)
            );
        }
        record(&r.json(call)?)
    }

    async fn set_deployment_status(
        &self,
        record: &DeploymentRecord,
        status: DeploymentStatus<'_>,
    ) -> anyhow::Result<()> {
        let mut payload = json!({
            "state": status.state.as_str(),
            "description": crate::text::truncate(status.description, DESCRIPTION_MAX - 1),
        });
        if let Some(u) = status.environment_url {
            payload["environment_url"] = json!(u);
        }
        if let Some(u) = status.log_url {
            payload["log_url"] = json!(u);
        }
        // Setting the same state twice is harmless, so a status is retried like an update.
        self.call(
            "set the deployment status",
            Method::POST,
            &self.repo_path(&format!("/deployments/{}/statuses", record.id)),
            Some(&payload),
            &[],
        )
        .await
        .map(|_| ())
    }

    async fn sync_issue(&self, alert: IssueAlert<'_>) -> anyhow::Result<Option<IssueRef>> {
        let body = if alert.body.contains(alert.marker) {
            alert.body.to_string()
        } else {
            format!("{}\n{}", alert.marker, alert.body)
        };
        let existing = self.open_alert(&alert).await?;
        let number = existing.as_ref().and_then(|i| i["number"].as_u64());
        match (alert.open, number) {
            (true, Some(n)) => {
                let call = "update the regression issue";
                let v = self
                    .call(
                        call,
                        Method::PATCH,
                        &self.repo_path(&format!("/issues/{n}")),
                        Some(&json!({ "body": body })),
                        &[],
                    )
                    .await?
                    .json(call)?;
                Ok(Some(Self::issue_ref(&v, "updated")))
            }
            (true, None) => {
                let call = "open the regression issue";
                let uri = self.repo_path("/issues");
                let payload = json!({ "title": alert.title, "body": body });
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match self.create_once(attempts, call, &uri, &payload).await? {
                        Ok(r) => return Ok(Some(Self::issue_ref(&r.json(call)?, "opened"))),
                        // It may have been created before the failure: look before re-sending.
                        Err(e) => {
                            if let Some(i) = self.open_alert(&alert).await? {
                                return Ok(Some(Self::issue_ref(&i, "opened")));
                            }
                            if attempts >= self.policy.max_attempts {
                                return Err(
                                    e.context(format!("gave up after {attempts} attempt(s)"))
                                );
                            }
                        }
                    }
                }
            }
            (false, Some(n)) => {
                // The recovery is said in a comment: the body keeps the regression's evidence.
                let recovered = json!({ "body": alert.body });
                let call = "comment on the regression issue";
                self.call(
                    call,
                    Method::POST,
                    &self.repo_path(&format!("/issues/{n}/comments")),
                    Some(&recovered),
                    &[],
                )
                .await?;
                let call = "close the regression issue";
                let v = self
                    .call(
                        call,
                        Method::PATCH,
                        &self.repo_path(&format!("/issues/{n}")),
                        Some(&json!({ "state": "closed", "state_reason": "completed" })),
                        &[],
                    )
                    .await?
                    .json(call)?;
                Ok(Some(Self::issue_ref(&v, "closed")))
            }
            (false, None) => Ok(Some(IssueRef {
                number: None,
                url: None,
                action: "none".into(),
            })),
        }
    }

    async fn merge_base(&self, base: &str, head: &str) -> anyhow::Result<Option<String>> {
        let call = "compare the PR with its base";
        let enc =
            |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
        let Some(v) = self
            .find_repo(
                call,
                &format!("/compare/{}...{}?per_page=1", enc(base), enc(head)),
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(v["merge_base_commit"]["sha"].as_str().map(str::to_string))
    }

    async fn read_branch_file(&self, branch: &str, path: &str) -> anyhow::Result<Option<String>> {
        check_branch(branch)?;
        match self.branch_head(branch).await? {
            Some(head) => Ok(self.file_at(&head, path).await?.1),
            None => Ok(None),
        }
    }

    async fn update_branch(
        &self,
        branch: &str,
        path: &str,
        message: &str,
        update: &BranchUpdate<'_>,
    ) -> anyhow::Result<BranchWrite> {
        check_branch(branch)?;
        for attempt in 1..=BRANCH_ATTEMPTS {
            let head = self.branch_head(branch).await?;
            let (base_tree, current) = match &head {
                Some(h) => {
                    let (tree, text) = self.file_at(h, path).await?;
                    (Some(tree), text)
                }
                None => (None, None),
            };
            let mut entries = Vec::new();
            for (name, text) in update(current.as_deref())? {
                let sha = self
                    .git_object("blob", &json!({ "content": text, "encoding": "utf-8" }))
                    .await?;
                entries.push(json!({ "path": name, "mode": "100644", "type": "blob", "sha": sha }));
            }
            // On top of the old tree: files other writers (or people) keep there stay.
            let mut tree = json!({ "tree": entries });
            if let Some(base) = &base_tree {
                tree["base_tree"] = json!(base);
            }
            let tree = self.git_object("tree", &tree).await?;
            let commit = self
                .git_object(
                    "commit",
                    &json!({ "message": message, "tree": tree, "parents": head.iter().collect::<Vec<_>>() }),
                )
                .await?;
            if self.move_branch(branch, head.as_deref(), &commit).await? {
                return Ok(BranchWrite {
                    commit,
                    attempts: attempt,
                });
            }
            // Another run wrote meanwhile: read its history and append to that.
            tokio::time::sleep(self.policy.backoff(attempt)).await;
        }
        anyhow::bail!(
            "github: the data branch {branch} kept moving under {BRANCH_ATTEMPTS} attempts to update it (other runs writing at the same time)"
        )
    }

    async fn deployment_records(&self, environment: &str) -> anyhow::Result<Vec<DeploymentRecord>> {
        self.deployments(environment, None)
            .await?
            .iter()
            .map(|d| {
                Ok(DeploymentRecord {
                    id: id_of(d)?.to_string(),
                    environment: environment.to_string(),
                    url: None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn classifies_transient_failures() {
        assert_eq!(classify(502, &HeaderMap::new(), "", 1), Some(None));
        assert_eq!(
            classify(403, &headers(&[("retry-after", "3")]), "", 1),
            Some(Some(Duration::from_secs(3)))
        );
        assert_eq!(
            classify(
                403,
                &HeaderMap::new(),
                "You have exceeded a secondary rate limit",
                1
            ),
            Some(Some(Duration::from_secs(60)))
        );
        // Then exponential: 120 s on the second meeting, 240 s on the third.
        assert_eq!(
            classify(403, &HeaderMap::new(), "secondary rate limit", 3),
            Some(Some(Duration::from_secs(240)))
        );
        assert_eq!(classify(429, &HeaderMap::new(), "", 1), Some(None));
        let reset = (chrono::Utc::now().timestamp() + 5).to_string();
        let r = classify(
            403,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ]),
            "",
            1,
        );
        assert!(
            matches!(r, Some(Some(d)) if d <= Duration::from_secs(6)),
            "{r:?}"
        );
        // A plain 403 is a permission problem: final.
        assert_eq!(
            classify(
                403,
                &HeaderMap::new(),
                "Resource not accessible by integration",
                1
            ),
            None
        );
        assert_eq!(classify(404, &HeaderMap::new(), "", 1), None);
        assert_eq!(classify(422, &HeaderMap::new(), "", 1), None);
    }

    #[test]
    fn finds_the_next_link() {
        let h = headers(&[(
            "link",
            "<https://api.github.com/x?page=3>; rel=\"next\", <https://api.github.com/x?page=9>; rel=\"last\"",
        )]);
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/x?page=3")
        );
        let h = headers(&[("link", "<https://api.github.com/x?page=1>; rel=\"prev\"")]);
        assert_eq!(next_link(&h), None);
    }

    #[tokio::test]
    async fn rejects_bad_repository_names() {
        let t = Secret::new("ghs_test_token_value");
        assert!(GithubForge::new("https://api.github.com", "nope", &t).is_err());
        assert!(GithubForge::new("https://api.github.com", "a/b/c", &t).is_err());
        assert!(GithubForge::new("https://api.github.com", "a/b", &t).is_ok());
    }
}
