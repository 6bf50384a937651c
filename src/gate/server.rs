//! The reverse proxy. Each client connection is served first by the plain path ([`fast`]),
//! which forwards what almost every request is without hyper, and from its first request that is
//! anything else by hyper's HTTP/1.1 server ([`Gate::serve_hyper`]), with the bytes already read
//! replayed. On either path a client connection gets its own keep-alive connection to the
//! upstream (hyper's path: `hyper::client::conn::http1`), opened on its first forwarded request
//! and reopened when the app closed it. HTTP/1.1 has one request in flight per connection on
//! both sides, so no pool is needed: no pool lock, no pool key, no dispatch through a shared
//! client per request. What is the same for every request of a connection (the peer's
//! `X-Forwarded-For` value, a token that verified) is computed once per connection.
//!
//! Requests are decided (gate endpoint, redirect, refusal, or forward) from the request head
//! alone, by the same rules on both paths ([`Gate::decide`]); bodies stream through untouched
//! in both directions, and an `Upgrade` (WebSocket) is joined byte for byte once both sides
//! switched. The upstreams are fixed by configuration: the stable one and one per kept commit
//! ([`super::commits`] says how a request picks one); the request's `Host`, absolute-form
//! target or path can never point the gate anywhere else. A client connection whose requests
//! move to another version gets a fresh upstream connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::commits::{self, COMMIT_COOKIE, COMMIT_PREFIX};
use super::github::{GithubAccess, SignIn};
use super::pages::{esc, fresh_link_hint, page};
pub use super::respond::{Body, COOKIE, OAUTH_COOKIE};
use super::respond::{
    app_cookies, clear_cookie, cookie, html, may_hold_atlas_cookie, query_param, redirect, refused,
    session_cookie, set_cookie, upstream_failed,
};
use super::token::{Kind, PreviewKey, Refusal, now};
use super::{Mode, Upstream};

mod fast;

/// The bypass header Atlas's own traffic carries; every `x-atlas-*` header is stripped upstream.
pub const BYPASS_HEADER: &str = "x-atlas-bypass";
const ATLAS_HEADER_PREFIX: &str = "x-atlas-";
/// The link's query parameter.
pub const LINK_PARAM: &str = "atlas_token";
/// The gate's own path namespace; nothing under it is ever forwarded.
pub const GATE_PREFIX: &str = "/_atlas/";

/// hyper's default header count limit (`proto::h1::role::DEFAULT_MAX_HEADERS`).
const HYPER_MAX_HEADERS: usize = 100;

/// Limits and timeouts of one gate.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The request head (line + headers) must fit in this many bytes (at least 8 KiB).
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// A client must finish sending its request head within this.
    pub head_timeout: Duration,
    pub connect_timeout: Duration,
    /// The upstream must start answering within this.
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 32 * 1024,
            max_headers: HYPER_MAX_HEADERS,
            head_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything one gate needs, validated.
#[derive(Debug)]
pub struct GateOptions {
    pub mode: Mode,
    pub upstream: Upstream,
    /// The preview's derived key; required by every mode but `public`, and for bypass tokens.
    pub key: Option<PreviewKey>,
    /// The run whose bypass tokens are accepted.
    pub run: Option<String>,
    /// The gate sits behind an edge (Fly's proxy) whose `X-Forwarded-*` headers are honest.
    pub trust_forwarded: bool,
    /// Reviewers reach the gate over HTTPS (cookies get `Secure`).
    pub https: bool,
    /// The preview's PR, for the help text of the refusal pages.
    pub pr: Option<u64>,
    pub github: Option<GithubAccess>,
    /// How long a GitHub sign-in lasts.
    pub session_ttl: Duration,
    pub limits: Limits,
    /// The commit the stable upstream runs (full sha), if known: `/_atlas/c/<it>/` is the stable
    /// version.
    pub sha: Option<String>,
    /// The kept previous commits, newest first.
    pub commits: Vec<CommitRoute>,
}

/// A kept commit the gate routes `/_atlas/c/<sha7>/...` to.
#[derive(Debug, Clone)]
pub struct CommitRoute {
    /// The full commit sha (lowercase hex).
    pub sha: String,
    pub upstream: Upstream,
}

/// One version the gate forwards to: index 0 is the stable one.
struct Route {
    sha: String,
    authority: http::uri::Authority,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A running gate's shared state.
pub struct Gate {
    opts: GateOptions,
    /// The stable upstream first, then the kept commits, validated once.
    routes: Vec<Route>,
    http: reqwest::Client,
}

/// What one client connection keeps across its requests.
struct Conn {
    peer: SocketAddr,
    /// The peer's address as a header value (`X-Forwarded-For` when no edge is trusted).
    peer_value: HeaderValue,
    /// This connection's upstream connection, once opened, and the route it goes to.
    upstream: tokio::sync::Mutex<Option<(usize, SendRequest<Incoming>)>>,
    /// The bypass token this connection last presented that verified, and until when it holds:
    /// Atlas's load test sends the same token on every request, and one HMAC per connection is
    /// enough to know it (the key and the run never change while the gate runs).
    bypass_ok: Verified,
    /// The same for the session cookie a browser sends on every request of the connection.
    session_ok: Verified,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// Hop-by-hop headers besides `Connection` and `Upgrade` (RFC 9110 7.6.1, plus the
/// non-standard `proxy-connection` and `keep-alive`).
const HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What the access rules say of a request (see [`Gate::decide`]).
enum Decision<'a> {
    Forward,
    /// A valid bypass token of another run.
    OtherRun,
    BadBypass(Refusal),
    /// A bypass header where the gate accepts none (no key or no run).
    NoBypass,
    NoKey,
    /// A signed link to open: verify it, set the session, redirect.
    Link(&'a PreviewKey, &'a str),
    BadSession(Refusal),
    SignIn,
}

/// What the access check decided for a request that is not a gate endpoint.
enum Access {
    Forward,
    Answer(Response<Body>),
}

impl Gate {
    pub fn new(opts: GateOptions) -> anyhow::Result<Gate> {
        let parse = |u: &Upstream| -> anyhow::Result<http::uri::Authority> {
            u.authority.parse().map_err(|e| {
                anyhow::anyhow!("gate upstream `{}` is not host:port: {e}", u.authority)
            })
        };
        let mut routes = vec![Route {
            sha: opts.sha.clone().unwrap_or_default(),
            authority: parse(&opts.upstream)?,
            headers: opts.upstream.headers.clone(),
        }];
        if !routes[0].sha.is_empty() && !commits::is_sha(&routes[0].sha) {
            anyhow::bail!(
                "gate: commit `{}` is not a lowercase hex sha",
                routes[0].sha
            );
        }
        for c in &opts.commits {
            if !commits::is_sha(&c.sha) {
                anyhow::bail!("gate: kept commit `{}` is not a lowercase hex sha", c.sha);
            }
            routes.push(Route {
                sha: c.sha.clone(),
                authority: parse(&c.upstream)?,
                headers: c.upstream.headers.clone(),
            });
        }
        if opts.mode != Mode::Public && opts.key.is_none() {
            anyhow::bail!(
                "access `{}` needs the gate key (ATLAS_GATE_KEY)",
                opts.mode.as_str()
            );
        }
        if opts.mode == Mode::Github && opts.github.is_none() {
            anyhow::bail!("access `github` needs the GitHub OAuth client settings");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Gate { opts, routes, http })
    }

    pub fn options(&self) -> &GateOptions {
        &self.opts
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    eprintln!("atlas gate: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = Arc::new(Conn {
                peer,
                peer_value: header_value_of_ip(peer),
                upstream: tokio::sync::Mutex::new(None),
                bypass_ok: std::sync::Mutex::new(None),
                session_ok: std::sync::Mutex::new(None),
            });
            tokio::spawn(fast::serve(self.clone(), conn, stream));
        }
    }

    /// Serves the rest of a connection with hyper: every request the plain path ([`fast`])
    /// does not take, and all that follow it on the same connection.
    async fn serve_hyper<T>(self: Arc<Self>, conn: Arc<Conn>, io: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let limits = &self.opts.limits;
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.head_timeout)
            .max_buf_size(limits.max_head_bytes.max(8192))
            .keep_alive(true);
        // hyper's own limit is 100 headers, parsed into an array on the stack; an explicit
        // limit, even the same one, makes it fill a 100-slot vector for every request.
        if limits.max_headers != HYPER_MAX_HEADERS {
            b.max_headers(limits.max_headers);
        }
        let g = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let g = g.clone();
            let c = conn.clone();
            async move { Ok::<_, Infallible>(g.handle(&c, req).await) }
        });
        let _ = b
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    }

    async fn handle(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if path.starts_with(COMMIT_PREFIX) {
            return self.commit(conn, req).await;
        }
        if path.starts_with(GATE_PREFIX) {
            return self.endpoint(req).await;
        }
        match self.access(conn, &req) {
            // Only a preview with kept commits looks at Referer and cookies.
            Access::Forward if self.routes.len() > 1 => self.versioned(conn, req).await,
            Access::Forward => self.forward(conn, req, 0, None).await,
            Access::Answer(r) => r,
        }
    }

    fn shas(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.sha.as_str())
    }

    /// An unprefixed request of a preview with kept commits: the `Referer`, then the commit
    /// cookie, else the stable version (see [`super::commits`]).
    async fn versioned(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        let h = req.headers();
        let referer = commits::referer_commit(h);
        let cookie = super::respond::cookie(h, COMMIT_COOKIE);
        let (pick, clear) = match (referer, cookie) {
            // From a commit's page: that commit (an unknown one: the stable version).
            (Some(Some(n)), _) => (commits::lookup(self.shas(), n).unwrap_or(0), false),
            // From a page at a stable URL: the stable version.
            (Some(None), _) => (0, false),
            (None, Some(_)) if commits::fresh_navigation(h) => (0, true),
            (None, Some(c)) => match commits::lookup(self.shas(), c) {
                Some(i) => (i, false),
                // A commit no longer kept: the stable version, and the cookie goes.
                None => (0, true),
            },
            (None, None) => (0, false),
        };
        if pick != 0 && commits::is_navigation(h) {
            let to = format!(
                "{COMMIT_PREFIX}{}{}",
                commits::sha7(&self.routes[pick].sha),
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let mut r = redirect(&to);
            *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            return r;
        }
        let mut r = self.forward(conn, req, pick, None).await;
        if clear {
            set_cookie(&mut r, &clear_cookie(COMMIT_COOKIE));
        }
        r
    }

    /// `/_atlas/c/<sha>/...`: access first, then the kept commit (prefix stripped), or the
    /// gate's 404 page listing the kept commits.
    async fn commit(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        if let Access::Answer(r) = self.access(conn, &req) {
            return r;
        }
        let Some((name, rest)) = commits::split(req.uri().path()) else {
            return self.unknown_commit();
        };
        let Some(i) = commits::lookup(self.shas(), name) else {
            return self.unknown_commit();
        };
        let query = req.uri().query();
        if rest.is_empty() {
            let to = match query {
                Some(q) => format!("{COMMIT_PREFIX}{name}/?{q}"),
                None => format!("{COMMIT_PREFIX}{name}/"),
            };
            let mut r = redirect(&to);
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            return r;
        }
        let pq = match query {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let Ok(pq) = http::uri::PathAndQuery::try_from(pq) else {
            return self.unknown_commit();
        };
        let sha7 = commits::sha7(&self.routes[i].sha).to_string();
        let mut r = self.forward(conn, req, i, Some(pq)).await;
        set_cookie(&mut r, &commits::commit_cookie(&sha7, self.opts.https));
        r
    }

    /// The 404 of a commit URL that names no kept commit: the list of those that are.
    fn unknown_commit(&self) -> Response<Body> {
        let mut paras =
            vec!["This preview keeps no such commit. The versions it keeps:".to_string()];
        let mut list = String::from("<ul>");
        for (i, r) in self.routes.iter().enumerate() {
            if r.sha.is_empty() {
                continue;
            }
            let s7 = esc(commits::sha7(&r.sha));
            let what = if i == 0 { " (current)" } else { "" };
            list.push_str(&format!(
                "<li><a href=\"{COMMIT_PREFIX}{s7}/\"><code>{s7}</code></a>{what}</li>"
            ));
        }
        list.push_str("</ul>");
        paras.push(list);
        html(
            StatusCode::NOT_FOUND,
            page(
                "No such commit",
                &paras,
                Some(("/", "Open the current version")),
            ),
        )
    }

    /// `/_atlas/...`: the gate's own endpoints; anything else there is a 404 from the gate.
    async fn endpoint(&self, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/_atlas/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/_atlas/github/login") if self.opts.mode == Mode::Github => {
                match self.sign_in_view() {
                    Some(v) => super::github::login(&v, &req),
                    None => refused("Sign-in is not configured", "", self.opts.pr),
                }
            }
            (&Method::GET, "/_atlas/github/callback") if self.opts.mode == Mode::Github => {
                match self.sign_in_view() {
                    Some(v) => super::github::callback(&v, &req).await,
                    None => refused("Sign-in is not configured", "", self.opts.pr),
                }
            }
            (&Method::GET | &Method::POST, "/_atlas/signout") => {
                let mut r = html(
                    StatusCode::OK,
                    page(
                        "Signed out",
                        &["This browser no longer has access to the preview.".into()],
                        Some(("/", "Back to the preview")),
                    ),
                );
                set_cookie(&mut r, &clear_cookie(COOKIE));
                r
            }
            _ => html(
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    &["This path belongs to the access gate.".into()],
                    None,
                ),
            ),
        }
    }

    fn now(&self) -> u64 {
        now()
    }

    /// Decides whether a request may reach the upstream, and answers it when not.
    fn access(&self, conn: &Conn, req: &Request<Incoming>) -> Access {
        let bypass = req.headers().get(BYPASS_HEADER).map(|v| v.as_bytes());
        let link = match self.opts.mode {
            Mode::SignedLink => query_param(req.uri(), LINK_PARAM),
            _ => None,
        };
        let pr = self.opts.pr;
        Access::Answer(
            match self.decide(conn, bypass, link, cookie(req.headers(), COOKIE)) {
                Decision::Forward => return Access::Forward,
                Decision::OtherRun => refused(
                    "This bypass token belongs to another run",
                    "Atlas's bypass tokens only work during the run that minted them.",
                    pr,
                ),
                Decision::BadBypass(r) => refused_for(&r, "bypass token", pr),
                Decision::NoBypass => refused(
                    "Bypass refused",
                    "This gate accepts no bypass token outside an Atlas run.",
                    pr,
                ),
                Decision::NoKey => text(StatusCode::INTERNAL_SERVER_ERROR, "gate has no key\n"),
                Decision::Link(key, token) => self.open_link(key, req.uri(), token),
                Decision::BadSession(r) => {
                    let mut resp = self.sign_in(req.uri(), Some(&r));
                    set_cookie(&mut resp, &clear_cookie(COOKIE));
                    resp
                }
                Decision::SignIn => self.sign_in(req.uri(), None),
            },
        )
    }

    /// The access rules, from what a request presents: its bypass header, its link token (read
    /// only under `signed-link`) and its session cookie. Tokens that verified are remembered
    /// for the connection (see [`Conn`]). Both the plain path ([`fast`]) and hyper's ask this.
    fn decide<'a>(
        &'a self,
        conn: &Conn,
        bypass: Option<&[u8]>,
        link: Option<&'a str>,
        session: Option<&str>,
    ) -> Decision<'a> {
        let key = self.opts.key.as_ref();
        if let Some(v) = bypass {
            if self.opts.mode == Mode::Public {
                return Decision::Forward;
            }
            let now = self.now();
            if still_verified(&conn.bypass_ok, v, now) {
                return Decision::Forward;
            }
            return match (key, &self.opts.run, std::str::from_utf8(v)) {
                (Some(k), Some(run), Ok(t)) => match k.verify(Kind::Bypass, t, now) {
                    Ok(c) if &c.extra == run => {
                        remember(&conn.bypass_ok, v, c.expires);
                        Decision::Forward
                    }
                    Ok(_) => Decision::OtherRun,
                    Err(r) => Decision::BadBypass(r),
                },
                _ => Decision::NoBypass,
            };
        }
        if self.opts.mode == Mode::Public {
            return Decision::Forward;
        }
        let Some(key) = key else {
            return Decision::NoKey;
        };
        if let Some(token) = link {
            return Decision::Link(key, token);
        }
        if let Some(c) = session {
            let now = self.now();
            if still_verified(&conn.session_ok, c.as_bytes(), now) {
                return Decision::Forward;
            }
            return match key.verify(Kind::Session, c, now) {
                Ok(claims) => {
                    remember(&conn.session_ok, c.as_bytes(), claims.expires);
                    Decision::Forward
                }
                Err(r) => Decision::BadSession(r),
            };
        }
        Decision::SignIn
    }

    /// A link: verify, set the session cookie, and redirect to the URL without the token.
    fn open_link(&self, key: &PreviewKey, uri: &Uri, token: &str) -> Response<Body> {
        match key.verify(Kind::Link, token, self.now()) {
            Ok(claims) => {
                let session = key.mint(Kind::Session, claims.expires, "link");
                let max_age = claims.expires.saturating_sub(self.now());
                let mut r = redirect(&clean_location(uri));
                set_cookie(&mut r, &self.session_cookie(&session, max_age));
                r
            }
            Err(r) => refused_for(&r, "link", self.opts.pr),
        }
    }

    fn session_cookie(&self, value: &str, max_age: u64) -> String {
        session_cookie(value, max_age, self.opts.https)
    }

    /// What the GitHub sign-in needs of this gate.
    fn sign_in_view(&self) -> Option<SignIn<'_>> {
        Some(SignIn {
            github: self.opts.github.as_ref()?,
            key: self.opts.key.as_ref()?,
            https: self.opts.https,
            pr: self.opts.pr,
            session_ttl: self.opts.session_ttl,
            http: &self.http,
        })
    }

    /// The 401 page: how to get in under this gate's mode.
    fn sign_in(&self, uri: &Uri, why: Option<&Refusal>) -> Response<Body> {
        let mut paras = Vec::new();
        if let Some(Refusal::Expired { .. }) = why {
            paras.push("Your access to this preview expired.".to_string());
        }
        let (title, action) = match self.opts.mode {
            Mode::Github => {
                let repo = self
                    .opts
                    .github
                    .as_ref()
                    .map(|g| g.repo.clone())
                    .unwrap_or_default();
                paras.push(format!(
                    "This preview is private: sign in with a GitHub account that can read <code>{}</code>.",
                    esc(&repo)
                ));
                let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let href = format!(
                    "/_atlas/github/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                (
                    "Sign in to open this preview",
                    Some((href, "Sign in with GitHub")),
                )
            }
            _ => {
                paras.push("This preview is private: open it with a signed link.".to_string());
                paras.push(fresh_link_hint(self.opts.pr));
                ("Sign in to open this preview", None)
            }
        };
        let body = page(
            title,
            &paras,
            action.as_ref().map(|(h, l)| (h.as_str(), *l)),
        );
        let mut r = html(StatusCode::UNAUTHORIZED, body);
        // Not HTTP authentication: a page that says how to get in.
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("AtlasGate realm=\"preview\""),
        );
        r
    }

    /// Opens an upstream connection (`TCP_NODELAY`, bounded by the connect timeout) and spawns
    /// its driver; upgrades are allowed on it.
    async fn connect(
        &self,
        authority: &http::uri::Authority,
    ) -> anyhow::Result<SendRequest<Incoming>> {
        let addr = authority.as_str();
        let stream =
            tokio::time::timeout(self.opts.limits.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow::anyhow!("connect timed out"))??;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(send)
    }

    /// Sends `req` on the connection's upstream connection, opening one when there is none or
    /// the app closed it; a request the closed connection never sent is sent once more on a new
    /// one.
    async fn send(
        &self,
        conn: &Conn,
        route: usize,
        req: Request<Incoming>,
    ) -> anyhow::Result<Response<Incoming>> {
        let authority = &self.routes[route].authority;
        let mut slot = conn.upstream.lock().await;
        let mut req = req;
        for attempt in 0..2 {
            let sender = match slot.as_mut() {
                Some((r, s)) if *r == route && !s.is_closed() => s,
                _ => &mut slot.insert((route, self.connect(authority).await?)).1,
            };
            if sender.ready().await.is_err() {
                *slot = None;
                continue;
            }
            let fut = sender.try_send_request(req);
            // The answer is awaited without the lock: nothing else uses it meanwhile (HTTP/1.1
            // has one request per connection in flight), and an upgrade takes the connection.
            drop(slot);
            match fut.await {
                Ok(r) => return Ok(r),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt == 0 => {
                        req = unsent;
                        slot = conn.upstream.lock().await;
                        *slot = None;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
            if attempt == 1 {
                break;
            }
        }
        anyhow::bail!("the upstream connection closed")
    }

    /// Forwards a request to route `route` (`path`: instead of the request's path and query)
    /// and streams the answer back.
    async fn forward(
        &self,
        conn: &Conn,
        mut req: Request<Incoming>,
        route: usize,
        path: Option<http::uri::PathAndQuery>,
    ) -> Response<Body> {
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let Route {
            authority,
            headers: extra,
            ..
        } = &self.routes[route];
        let (mut parts, body) = req.into_parts();
        // Origin-form on the upstream connection: the target's path and query, nothing the
        // client said about hosts.
        let pq = path.unwrap_or_else(|| {
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
        });
        parts.uri = Uri::from(pq);
        parts.version = http::Version::HTTP_11;
        self.clean_request_headers(&mut parts.headers, conn, upgrade);
        // The app sees the client's Host (as before the gate); an HTTP/1.0 request without one
        // gets the upstream's authority.
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        for (n, v) in extra {
            parts.headers.insert(n.clone(), v.clone());
        }
        let fut = self.send(conn, route, Request::from_parts(parts, body));
        let mut resp = match tokio::time::timeout(self.opts.limits.upstream_timeout, fut).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                eprintln!("atlas gate: upstream {authority}: {e:#}");
                let (status, body) = upstream_failed(false);
                return html(status, body);
            }
            Err(_) => {
                let (status, body) = upstream_failed(true);
                return html(status, body);
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client_side) => {
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(u)) = (client_side.await, upstream_side.await) {
                            let mut c = TokioIo::new(c);
                            let mut u = TokioIo::new(u);
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                        }
                    });
                }
                None => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        "upstream switched protocols unasked\n",
                    );
                }
            }
        } else {
            strip_hop_by_hop(resp.headers_mut(), false);
        }
        resp.map(Either::Left)
    }

    /// What the app sees: no hop-by-hop headers, none of Atlas's headers or cookies, and
    /// `X-Forwarded-*` that a client cannot forge unless an edge in front is trusted.
    fn clean_request_headers(&self, h: &mut HeaderMap, conn: &Conn, upgrade: bool) {
        strip_hop_by_hop(h, upgrade);
        // Usually there is none (only Atlas's own traffic carries one): look before collecting.
        if h.keys()
            .any(|n| n.as_str().starts_with(ATLAS_HEADER_PREFIX))
        {
            let atlas: Vec<HeaderName> = h
                .keys()
                .filter(|n| n.as_str().starts_with(ATLAS_HEADER_PREFIX))
                .cloned()
                .collect();
            for n in atlas {
                h.remove(n);
            }
        }
        strip_atlas_cookies(h);
        let xff = match (self.opts.trust_forwarded, h.get(&X_FORWARDED_FOR)) {
            (true, Some(v)) => match v.to_str() {
                Ok(prev) => HeaderValue::from_str(&format!("{prev}, {}", conn.peer.ip()))
                    .unwrap_or_else(|_| conn.peer_value.clone()),
                Err(_) => conn.peer_value.clone(),
            },
            _ => conn.peer_value.clone(),
        };
        h.insert(X_FORWARDED_FOR, xff);
        let trusted_proto = self.opts.trust_forwarded && h.contains_key(&X_FORWARDED_PROTO);
        if !trusted_proto {
            h.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(if self.opts.https { "https" } else { "http" }),
            );
        }
        if !self.opts.trust_forwarded {
            h.remove(&FORWARDED);
            match h.get(header::HOST).cloned() {
                Some(host) => {
                    h.insert(X_FORWARDED_HOST, host);
                }
                None => {
                    h.remove(&X_FORWARDED_HOST);
                }
            }
        }
    }
}

/// A token this connection presented that verified, and until when it holds.
type Verified = std::sync::Mutex<Option<(Vec<u8>, u64)>>;

/// Whether `token` is the one `slot` remembers and has not expired at `now`.
fn still_verified(slot: &Verified, token: &[u8], now: u64) -> bool {
    let ok = slot.lock().unwrap_or_else(|p| p.into_inner());
    ok.as_ref()
        .is_some_and(|(t, until)| t.as_slice() == token && now < *until)
}

fn remember(slot: &Verified, token: &[u8], until: u64) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.to_vec(), until));
}

/// A peer's IP address as a header value (digits, dots, colons: always valid).
fn header_value_of_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Removes the hop-by-hop headers (RFC 9110 7.6.1) and any the `Connection` header names;
/// an upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && n == header::UPGRADE))
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

/// Drops every `atlas_*` cookie; a `Cookie` header left empty is removed. A `Cookie` header
/// that names no Atlas cookie is left as it is (no rebuilding per request).
fn strip_atlas_cookies(h: &mut HeaderMap) {
    if !h
        .get_all(header::COOKIE)
        .iter()
        .any(|v| may_hold_atlas_cookie(v.as_bytes()))
    {
        return;
    }
    let kept = app_cookies(
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
    .join("; ");
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept)
    {
        h.insert(header::COOKIE, v);
    }
}

/// The request's path and query without the link token, as a same-origin relative URL: leading
/// slashes and backslashes collapse to one `/`, so `//evil.example` cannot become an open
/// redirect. Only URI characters can be in it (hyper parsed it), so no CR/LF either.
fn clean_location(uri: &Uri) -> String {
    let path = format!("/{}", uri.path().trim_start_matches(['/', '\\']));
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(LINK_PARAM))
        .collect();
    if rest.is_empty() {
        path
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn refused_for(r: &Refusal, what: &str, pr: Option<u64>) -> Response<Body> {
    match r {
        Refusal::Invalid => refused(
            &format!("This {what} is not valid"),
            &format!(
                "The {what} was changed or was never issued for this preview, or the preview was destroyed and created again since."
            ),
            pr,
        ),
        Refusal::Expired { at } => {
            let when = chrono::DateTime::from_timestamp(*at as i64, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| at.to_string());
            refused(
                &format!("This {what} has expired"),
                &format!("The {what} expired at {when}."),
                pr,
            )
        }
        Refusal::OtherPreview { preview } => refused(
            &format!("This {what} is for another preview"),
            &format!("The {what} opens the preview `{preview}`, not this one."),
            pr,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::respond::safe_next;
    use super::*;

    #[test]
    fn the_clean_location_drops_the_token_and_stays_local() {
        let u: Uri = "/a/b?x=1&atlas_token=t.t&y=2".parse().unwrap();
        assert_eq!(clean_location(&u), "/a/b?x=1&y=2");
        let u: Uri = "//evil.example/?atlas_token=t".parse().unwrap();
        assert_eq!(clean_location(&u), "/evil.example/");
        let u: Uri = "/\\evil.example?atlas_token=t"
            .parse()
            .unwrap_or_else(|_| "/".parse().unwrap());
        assert!(!clean_location(&u).starts_with("/\\"));
        assert_eq!(safe_next("//evil"), "/");
        assert_eq!(safe_next("https://evil"), "/");
        assert_eq!(safe_next("/ok?x=1"), "/ok?x=1");
    }

    #[test]
    fn atlas_cookies_never_reach_the_app() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; atlas_gate=x; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("atlas_oauth=y"));
        strip_atlas_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("atlas_gate=x"));
        strip_atlas_cookies(&mut h);
        assert!(!h.contains_key(header::COOKIE));
    }
}
