//! One retry policy for every provider (DESIGN.md section 6): exponential backoff with full
//! jitter, `Retry-After` honoured, bounded attempts and an overall deadline.
//!
//! The core is [`with_retry`]: the caller classifies each attempt's outcome ([`Attempt`]) and
//! this module decides whether and when to try again. Provider clients build on [`Client`]:
//! connect and request timeouts always set; idempotent calls (GET, PUT, DELETE, and calls the
//! caller marks idempotent) retried on 408/423/429/5xx and transport errors; `Retry-After`
//! (seconds or HTTP date) and GitHub's `x-ratelimit-reset` honoured. A create (POST) is never
//! re-sent blindly: [`Client::create`] re-reads state through the caller's lookup after any
//! retryable failure and only sends again when the lookup says the resource does not exist.
//! Errors are [`ProviderError`]s whose body is redacted and truncated; the token never appears
//! in an error or in `Debug` output.

use std::future::Future;
use std::time::{Duration, Instant};

/// Bounds on retrying.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Fast policy for tests against local fakes.
    pub fn fast() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
            deadline: Duration::from_secs(20),
        }
    }

    /// Full-jitter backoff for attempt `n` (1-based): uniform in `[0, min(max, base * 2^(n-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=ms)
        })
    }
}

/// The outcome of one attempt, as classified by the caller.
pub enum Attempt<T> {
    /// Finished (successfully or with an error that must not be retried).
    Done(anyhow::Result<T>),
    /// Transient: try again, after `after` if the server said so (`Retry-After`, rate-limit
    /// reset), else after the policy's backoff. `error` is returned if no attempt is left.
    Retry {
        after: Option<Duration>,
        error: anyhow::Error,
    },
}

/// The one deadline of this run (`atlas run`): no retry is started that would end after it.
static RUN_DEADLINE: std::sync::OnceLock<(Instant, chrono::DateTime<chrono::Utc>)> =
    std::sync::OnceLock::new();

/// Fixes the run's deadline `budget` from now (first call wins: one deadline per run).
pub fn set_run_deadline(budget: Duration) {
    let now = chrono::Utc::now();
    let wall = now + chrono::Duration::from_std(budget).unwrap_or(chrono::Duration::days(1));
    let _ = RUN_DEADLINE.set((Instant::now() + budget, wall));
}

/// The run's deadline, if one was set: as an `Instant` and as wall-clock time for messages.
pub fn run_deadline() -> Option<(Instant, chrono::DateTime<chrono::Utc>)> {
    RUN_DEADLINE.get().copied()
}

/// The default run budget, below GitHub's job timeout; `ATLAS_DEADLINE` (`90s`, `25m`)
/// overrides it.
pub const DEFAULT_RUN_BUDGET: Duration = Duration::from_secs(30 * 60);

/// The run budget from the value of `ATLAS_DEADLINE` (read by `commands/`), else
/// [`DEFAULT_RUN_BUDGET`].
pub fn run_budget(value: Option<&str>) -> anyhow::Result<Duration> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => humantime::parse_duration(v).map_err(|e| {
            anyhow::anyhow!("ATLAS_DEADLINE {v:?} is not a duration such as `25m`: {e}")
        }),
        _ => Ok(DEFAULT_RUN_BUDGET),
    }
}

/// Runs `f` until it is done, the attempts are used up or the deadline passes. A wait the
/// server named (`Retry-After`, a rate-limit reset) is never shortened: when it would end past
/// the policy's or the run's deadline, this fails at once, saying until when the server asked
/// to wait.
pub async fn with_retry<T, F, Fut>(policy: &RetryPolicy, mut f: F) -> anyhow::Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let start = Instant::now();
    let mut limit = start + policy.deadline;
    let mut limit_name = format!("the call's retry budget of {}s", policy.deadline.as_secs());
    if let Some((at, wall)) = run_deadline()
        && at < limit
    {
        limit = at;
        limit_name = format!(
            "this run's deadline ({})",
            wall.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    let mut attempt = 1;
    loop {
        match f(attempt).await {
            Attempt::Done(r) => return r,
            Attempt::Retry { after, error } => {
                let wait = after.unwrap_or_else(|| policy.backoff(attempt));
                if let Some(a) = after
                    && Instant::now() + a > limit
                {
                    let until = chrono::Utc::now()
                        + chrono::Duration::from_std(a).unwrap_or(chrono::Duration::days(1));
                    return Err(error.context(format!(
                        "rate-limited until {} (the server asked to wait {}s), past {limit_name}: giving up now instead of waiting",
                        until.format("%Y-%m-%dT%H:%M:%SZ"),
                        a.as_secs()
                    )));
                }
                if attempt >= policy.max_attempts || Instant::now() + wait > limit {
                    return Err(error.context(format!(
                        "gave up after {attempt} attempt(s) in {:.1}s",
                        start.elapsed().as_secs_f64()
                    )));
                }
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Provider HTTP client

use crate::error::ProviderError;
use crate::secret::{self, Secret};

/// Connect and whole-request timeouts. Both are always set.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
        }
    }
}

/// Whether a call may be sent again after a failure whose effect is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Sending it twice has the effect of sending it once (GET, PUT, DELETE, setting a value).
    Idempotent,
    /// A create: sent once per attempt of [`Client::create`], which re-reads state in between.
    Create,
}

/// One API call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Names the call in errors: `create branch`, `GET /apps/x`.
    pub name: String,
    pub method: reqwest::Method,
    /// Path (and query) relative to the client's base URL.
    pub path: String,
    pub body: Option<serde_json::Value>,
    pub safety: Safety,
    /// Treat 404 as transient (eventual consistency right after a create).
    pub transient_404: bool,
    /// Overrides the request timeout (long polls such as Fly's `/wait`).
    pub timeout: Option<Duration>,
    /// Spaces this call from every other call of the same class by at least the interval, when
    /// the server limits a whole class (Fly: app deletes per minute, whichever app).
    pub pace_class: Option<(String, Duration)>,
}

impl Call {
    pub fn new(method: reqwest::Method, name: impl Into<String>, path: impl Into<String>) -> Self {
        let safety = if method == reqwest::Method::POST || method == reqwest::Method::PATCH {
            Safety::Create
        } else {
            Safety::Idempotent
        };
        Call {
            name: name.into(),
            method,
            path: path.into(),
            body: None,
            safety,
            transient_404: false,
            timeout: None,
            pace_class: None,
        }
    }

    /// Paces this call within `class`, at least `every` apart (see [`Call::pace_class`]).
    pub fn paced_as(mut self, class: &str, every: Duration) -> Self {
        self.pace_class = Some((class.to_string(), every));
        self
    }
    pub fn get(name: impl Into<String>, path: impl Into<String>) -> Self {
        Call::new(reqwest::Method::GET, name, path)
    }
    pub fn delete(name: impl Into<String>, path: impl Into<String>) -> Self {
        Call::new(reqwest::Method::DELETE, name, path)
    }
    pub fn post(name: impl Into<String>, path: impl Into<String>) -> Self {
        Call::new(reqwest::Method::POST, name, path)
    }
    pub fn patch(name: impl Into<String>, path: impl Into<String>) -> Self {
        Call::new(reqwest::Method::PATCH, name, path)
    }
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }
    /// Marks a POST/PATCH whose repetition is harmless (setting secrets, setting a field).
    pub fn idempotent(mut self) -> Self {
        self.safety = Safety::Idempotent;
        self
    }
    /// Sends the call exactly once, whatever its method (the caller loops itself).
    pub fn once(mut self) -> Self {
        self.safety = Safety::Create;
        self
    }
    pub fn transient_404(mut self, yes: bool) -> Self {
        self.transient_404 = yes;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json<T: serde::de::DeserializeOwned>(&self, call: &str) -> anyhow::Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "{call}: unexpected response shape ({e}): {}",
                redact_body(&self.body)
            )
        })
    }
}

/// Status of the provider error in an error chain, if any (404 on delete means gone).
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|e| e.downcast_ref::<ProviderError>())
        .map(|p| p.status)
}

/// The status codes worth another attempt of an idempotent call.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 423 | 429) || (500..=599).contains(&status)
}

/// Redacts registered secrets and truncates a response body for an error message.
pub fn redact_body(body: &str) -> String {
    let r = secret::redact(body);
    let r = r.trim();
    if r.chars().count() > 500 {
        let mut t: String = r.chars().take(500).collect();
        t.push('…');
        t
    } else {
        r.to_string()
    }
}

/// How long the server asked us to wait: `Retry-After` (seconds or HTTP date), else a GitHub
/// style `x-ratelimit-reset` (epoch seconds) when the remaining budget is 0.
pub fn server_delay(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let now = chrono::Utc::now();
    if let Some(v) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            return Some(
                (at.with_timezone(&chrono::Utc) - now)
                    .to_std()
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    let remaining = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if remaining == Some("0")
        && let Some(reset) = headers
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    {
        let wait = reset - now.timestamp();
        return Some(Duration::from_secs(wait.clamp(0, 3600) as u64 + 1));
    }
    None
}

/// An HTTP client for one provider's API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    provider: &'static str,
    base: String,
    /// The full `Authorization` header value (a registered secret).
    auth: Option<Secret>,
    pub policy: RetryPolicy,
    /// Sent with every request (GitHub's `Accept` and `X-GitHub-Api-Version`, for instance).
    headers: reqwest::header::HeaderMap,
    /// Counts requests sent (every attempt), for the call figures in reports.
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Minimum spacing of mutations of one target (Fly: 1 request/s per action and machine).
    pace: Option<Duration>,
    last_mutation: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
    /// 423 is returned to the caller, which knows what to wait for (Neon: the project's
    /// running operations), instead of being retried blindly.
    locked_to_caller: bool,
    /// How often a flow polls this API for an operation or a machine state.
    poll: Duration,
}

/// Cap on a provider response body: an API answer is a few KiB; more is an error, not memory.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// What a check of the preview app (smoke, verify, canary probe) reads of a body at most: the
/// app runs the PR's code, and an endless body must not take the runner's memory.
pub const CHECK_BODY_LIMIT: usize = 1024 * 1024;

/// Reads the first `limit` bytes of a body (or all of a shorter one) and stops there: the rest
/// is never read, the connection is dropped with the response. Returns the bytes and whether
/// the body was longer.
pub async fn read_prefix(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
        if buf.len() == limit {
            return Ok((buf, resp.chunk().await.ok().flatten().is_some()));
        }
    }
    Ok((buf, false))
}

/// Reads at most `cap` bytes of a body; `Ok(None)` when it is longer (the rest is not read).
pub async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > cap {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("provider", &self.provider)
            .field("base", &self.base)
            .field("auth", &self.auth.as_ref().map(|_| "***"))
            .finish()
    }
}

enum Failure {
    Retry(Option<Duration>, anyhow::Error),
    Fatal(anyhow::Error),
}

impl Client {
    /// `base` is the API root (`https://console.neon.tech/api/v2`); `auth` the full
    /// `Authorization` header value.
    pub fn new(
        provider: &'static str,
        base: &url::Url,
        auth: Option<Secret>,
        policy: RetryPolicy,
        timeouts: Timeouts,
    ) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("atlas/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the {provider} http client: {e}"))?;
        Ok(Client {
            http,
            provider,
            base: base.as_str().trim_end_matches('/').to_string(),
            auth,
            policy,
            headers: reqwest::header::HeaderMap::new(),
            sent: Default::default(),
            pace: None,
            last_mutation: Default::default(),
            locked_to_caller: false,
            poll: Duration::from_secs(2),
        })
    }

    /// Spaces mutations (non-GET) of the same method and path at least `every` apart.
    pub fn with_pacing(mut self, every: Duration) -> Client {
        self.pace = Some(every);
        self
    }

    /// Polls operations and states every `every`.
    pub fn with_poll(mut self, every: Duration) -> Client {
        self.poll = every;
        self
    }

    /// The polling interval of flows on this API.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// Returns 423 Locked to the caller instead of retrying it.
    pub fn with_locked_to_caller(mut self) -> Client {
        self.locked_to_caller = true;
        self
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: &'static str, value: &str) -> anyhow::Result<Client> {
        let v = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| anyhow::anyhow!("{}: bad value for header {name}: {e}", self.provider))?;
        self.headers.insert(name, v);
        Ok(self)
    }

    /// Bearer auth from a token (registered as a secret, header form included).
    pub fn bearer(token: &Secret) -> Secret {
        Secret::new(format!("Bearer {}", token.expose()))
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The same client with other timeouts and polling (tests use short ones against local
    /// fakes).
    pub fn with_timeouts(&self, timeouts: Timeouts, poll: Duration) -> anyhow::Result<Client> {
        let base = url::Url::parse(&self.base)
            .map_err(|e| anyhow::anyhow!("{}: bad base url: {e}", self.provider))?;
        let mut c = Client::new(
            self.provider,
            &base,
            self.auth.clone(),
            self.policy.clone(),
            timeouts,
        )?;
        c.sent = self.sent.clone();
        c.headers = self.headers.clone();
        c.pace = self.pace;
        c.last_mutation = self.last_mutation.clone();
        c.locked_to_caller = self.locked_to_caller;
        c.poll = poll;
        Ok(c)
    }

    /// Requests sent so far (every attempt counts).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn error(&self, call: &Call, status: u16, body: &str) -> anyhow::Error {
        ProviderError {
            provider: self.provider,
            call: call.name.clone(),
            status,
            body: redact_body(body),
        }
        .into()
    }

    /// One attempt, classified.
    async fn attempt(&self, call: &Call) -> Result<Response, Failure> {
        let url = format!("{}{}", self.base, call.path);
        let mut rb = self
            .http
            .request(call.method.clone(), &url)
            .headers(self.headers.clone());
        if let Some(auth) = &self.auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, auth.expose());
        }
        if let Some(body) = &call.body {
            rb = rb.json(body);
        }
        if let Some(t) = call.timeout {
            rb = rb.timeout(t);
        }
        let pace = match &call.pace_class {
            Some((class, every)) => Some((class.clone(), *every)),
            None => self
                .pace
                .filter(|_| call.method != reqwest::Method::GET)
                .map(|every| {
                    let key = format!(
                        "{} {}",
                        call.method,
                        call.path.split('?').next().unwrap_or_default()
                    );
                    (key, every)
                }),
        };
        if let Some((key, every)) = pace.clone() {
            let wait = {
                let mut last = self.last_mutation.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let at = last.get(&key).map_or(now, |t| (*t + every).max(now));
                last.insert(key, at);
                at - now
            };
            tokio::time::sleep(wait).await;
        }
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = rb.send().await;
        if let Some((key, _)) = pace {
            // Spacing counts from the answer too: the server sees arrivals, not our sends.
            let mut last = self.last_mutation.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let t = last.entry(key).or_insert(now);
            *t = (*t).max(now);
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "connection failed"
                };
                let err = anyhow::anyhow!(
                    "{}: {} {kind}: {}",
                    self.provider,
                    call.name,
                    secret::redact(&e.to_string())
                );
                return Err(Failure::Retry(None, err));
            }
        };
        let mut resp = resp;
        let status = resp.status().as_u16();
        let delay = server_delay(resp.headers());
        let body = match read_capped(&mut resp, MAX_BODY).await {
            Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(None) => {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "{}: {}: the response body (status {status}) is larger than {} MiB; refusing to read it",
                    self.provider,
                    call.name,
                    MAX_BODY / (1024 * 1024)
                )));
            }
            Err(e) => {
                let err = anyhow::anyhow!(
                    "{}: {}: reading the response failed: {}",
                    self.provider,
                    call.name,
                    secret::redact(&e.to_string())
                );
                return Err(Failure::Retry(None, err));
            }
        };
        if (200..300).contains(&status) {
            return Ok(Response { status, body });
        }
        let err = self.error(call, status, &body);
        // GitHub signals an exhausted rate limit with 403 + x-ratelimit-remaining: 0.
        let rate_limited = status == 403 && delay.is_some();
        // Fly: another deploy or a `fly` session holds the machine's lease for a few seconds.
        let lease_held = status == 409 && body.to_ascii_lowercase().contains("lease");
        if status == 423 && self.locked_to_caller {
            return Err(Failure::Fatal(err));
        }
        if retryable_status(status)
            || rate_limited
            || lease_held
            || (status == 404 && call.transient_404)
        {
            // 423 (Neon: an operation is still running) lasts seconds; a jittered backoff near
            // zero would only burn attempts, so wait a steady interval instead.
            let delay = match (status, delay) {
                (423, None) => Some(self.policy.max_delay.min(Duration::from_secs(2))),
                (_, d) => d,
            };
            Err(Failure::Retry(delay, err))
        } else {
            Err(Failure::Fatal(err))
        }
    }

    /// Sends a call. Idempotent calls are retried under the policy; a [`Safety::Create`] call
    /// is sent exactly once (use [`Client::create`] for a create that may be retried).
    pub async fn send(&self, call: Call) -> anyhow::Result<Response> {
        if call.safety == Safety::Create {
            return match self.attempt(&call).await {
                Ok(r) => Ok(r),
                Err(Failure::Retry(_, e)) | Err(Failure::Fatal(e)) => Err(e),
            };
        }
        with_retry(&self.policy, |_| {
            let call = &call;
            async move {
                match self.attempt(call).await {
                    Ok(r) => Attempt::Done(Ok(r)),
                    Err(Failure::Retry(after, error)) => Attempt::Retry { after, error },
                    Err(Failure::Fatal(e)) => Attempt::Done(Err(e)),
                }
            }
        })
        .await
    }

    /// Sends a call and reads its JSON body; errors name the call.
    pub async fn send_json<T: serde::de::DeserializeOwned>(&self, call: Call) -> anyhow::Result<T> {
        let name = call.name.clone();
        self.send(call).await?.json(&name)
    }

    /// A create that survives transient failures without duplicating the resource: from the
    /// second attempt on (and after a 409/422 conflict) `lookup` is asked first whether the
    /// resource exists now, and what it finds is returned; only otherwise is the create sent
    /// again. Returns the value and whether this call created it.
    pub async fn create<T, P, L, LF>(
        &self,
        call: Call,
        parse: P,
        lookup: L,
    ) -> anyhow::Result<(T, bool)>
    where
        P: Fn(&Response) -> anyhow::Result<T>,
        L: Fn() -> LF,
        LF: Future<Output = anyhow::Result<Option<T>>>,
    {
        with_retry(&self.policy, |n| {
            let call = &call;
            let parse = &parse;
            let lookup = &lookup;
            async move {
                if n > 1 {
                    match lookup().await {
                        Ok(Some(found)) => return Attempt::Done(Ok((found, false))),
                        Ok(None) => {}
                        Err(e) => return Attempt::Done(Err(e)),
                    }
                }
                match self.attempt(call).await {
                    Ok(r) => Attempt::Done(parse(&r).map(|t| (t, true))),
                    Err(Failure::Retry(after, error)) => Attempt::Retry { after, error },
                    Err(Failure::Fatal(e)) => {
                        // A conflict may be an earlier attempt of ours that landed: re-read.
                        if matches!(status_of(&e), Some(409 | 422)) {
                            match lookup().await {
                                Ok(Some(found)) => return Attempt::Done(Ok((found, false))),
                                Ok(None) => {}
                                Err(e2) => return Attempt::Done(Err(e2)),
                            }
                        }
                        Attempt::Done(Err(e))
                    }
                }
            }
        })
        .await
    }
}

/// `s` percent-encoded for one path segment or query value of a vendor URL.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A rustls client configuration (ring) trusting the system's roots: what Atlas's own TLS
/// connections outside reqwest use (the load generator, the PostgreSQL protocol). A broken
/// system certificate does not stop the others from loading.
pub fn tls_client_config() -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("cannot set up tls")?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_then_succeeds_and_gives_up_when_bounded() {
        let p = RetryPolicy::fast();
        let r: anyhow::Result<u32> = with_retry(&p, |n| async move {
            if n < 3 {
                Attempt::Retry {
                    after: None,
                    error: anyhow::anyhow!("transient {n}"),
                }
            } else {
                Attempt::Done(Ok(n))
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let r: anyhow::Result<u32> = with_retry(&p, |n| async move {
            Attempt::Retry {
                after: Some(Duration::from_millis(1)),
                error: anyhow::anyhow!("always {n}"),
            }
        })
        .await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("gave up after 5 attempt(s)") && e.contains("always 5"),
            "{e}"
        );
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for n in 1..40 {
            assert!(p.backoff(n) <= p.max_delay);
        }
    }

    #[test]
    fn server_delay_reads_retry_after_and_rate_limit_reset() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(server_delay(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        let at = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert("retry-after", HeaderValue::from_str(&at).unwrap());
        let d = server_delay(&h).unwrap();
        assert!(
            d > Duration::from_secs(20) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (chrono::Utc::now().timestamp() + 10).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let d = server_delay(&h).unwrap();
        assert!(
            d >= Duration::from_secs(9) && d <= Duration::from_secs(12),
            "{d:?}"
        );
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("5"));
        assert_eq!(server_delay(&h), None);
    }

    #[test]
    fn client_debug_hides_the_token() {
        let token = Secret::new("tok-very-secret-123456");
        let c = Client::new(
            "neon",
            &url::Url::parse("http://127.0.0.1:9/api").unwrap(),
            Some(Client::bearer(&token)),
            RetryPolicy::fast(),
            Timeouts::default(),
        )
        .unwrap();
        let d = format!("{c:?}");
        assert!(
            !d.contains("tok-very-secret-123456") && d.contains("***"),
            "{d}"
        );
        assert!(redact_body("x tok-very-secret-123456 y").contains("***"));
        assert!(retryable_status(503) && retryable_status(423) && !retryable_status(404));
    }
}
