//! The access gate against a real upstream on loopback: sign-in page, signed links, cookies,
//! the run-scoped bypass, hostile requests, streaming, upgrades, GitHub sign-in against the fake
//! GitHub, and one real headless Chromium through a signed link.

use crate::common::{fake_github, local_env};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atlas::gate::{self, Gate, GateOptions, Kind, Limits, Mode, PreviewKey, Upstream};
use atlas::secret::Secret;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREVIEW: &str = "shop-abc123-pr-7";
const NONCE: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const RUN: &str = "run-41-1";

fn secret() -> Secret {
    Secret::new("gate-secret-for-tests-7f3a")
}

pub(crate) fn key() -> PreviewKey {
    PreviewKey::derive(&secret(), PREVIEW, NONCE)
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: BTreeMap<String, Vec<String>>,
    pub(crate) body_len: usize,
}

impl Seen {
    pub(crate) fn header(&self, n: &str) -> Option<String> {
        self.headers.get(n).map(|v| v.join(", "))
    }
}

pub(crate) type Log = Arc<Mutex<Vec<Seen>>>;

/// The app behind the gate: records every request; `/` is an HTML page, `/stream` streams.
pub(crate) async fn upstream() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let l = l.clone();
            async move {
                let mut hs: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (n, v) in &headers {
                    hs.entry(n.as_str().to_string())
                        .or_default()
                        .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                }
                l.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    headers: hs,
                    body_len: body.len(),
                });
                if uri.path() == "/stream" {
                    return axum::response::Response::builder()
                        .header("content-type", "text/plain")
                        .body(axum::body::Body::new(two_chunks()))
                        .unwrap();
                }
                axum::response::Response::builder()
                    .header("content-type", "text/html")
                    .header("set-cookie", "app_session=abc; Path=/")
                    .body(axum::body::Body::from(format!(
                        "<!doctype html><title>app</title><h1 id=\"app\">preview app {}</h1><p>got {} bytes</p><p id=\"where\"></p><script>document.getElementById('where').textContent='at:'+location.pathname+location.search+' cookies:'+document.cookie</script>",
                        uri.path(),
                        body.len()
                    )))
                    .unwrap()
            }
        },
    );
    let app = app.layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, log)
}

/// A first chunk at once, the second only after 1.5 s: a buffering proxy would hold both.
struct TwoChunks {
    step: u8,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

fn two_chunks() -> TwoChunks {
    TwoChunks {
        step: 0,
        sleep: Box::pin(tokio::time::sleep(Duration::from_millis(1500))),
    }
}

impl hyper::body::Body for TwoChunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        match self.step {
            0 => {
                self.step = 1;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
                    b"first;",
                )))))
            }
            1 => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.step = 2;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
                        b"second",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
            _ => Poll::Ready(None),
        }
    }
}

pub(crate) fn options(mode: Mode, upstream: SocketAddr) -> GateOptions {
    GateOptions {
        mode,
        upstream: Upstream {
            authority: upstream.to_string(),
            headers: Vec::new(),
        },
        key: Some(
            PreviewKey::from_hex(
                PREVIEW,
                PreviewKey::derived_hex(&secret(), PREVIEW, NONCE).expose(),
            )
            .unwrap(),
        ),
        run: Some(RUN.into()),
        trust_forwarded: false,
        https: false,
        pr: Some(7),
        github: None,
        session_ttl: Duration::from_secs(3600),
        limits: Limits::default(),
        sha: None,
        commits: Vec::new(),
    }
}

/// Starts a gate in this process; returns its base URL.
pub(crate) async fn start(opts: GateOptions) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Arc::new(Gate::new(opts).unwrap());
    tokio::spawn(gate.serve(listener));
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn link(path: &str, expires_in: i64) -> String {
    let exp = (gate::token::now() as i64 + expires_in) as u64;
    let t = key().mint(Kind::Link, exp, "link");
    format!("{path}?atlas_token={t}")
}

/// Sends raw bytes and reads the whole answer (the gate closes or the 2 s deadline passes).
async fn raw(base: &str, bytes: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn without_a_cookie_a_protected_preview_answers_the_sign_in_page() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let r = client().get(format!("{base}/orders")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    assert!(body.contains("open it with a signed link"), "{body}");
    assert!(body.contains("atlas preview link --pr 7"), "{body}");
    assert!(log.lock().unwrap().is_empty(), "the app was reached");
    // A forged cookie is no better than none (and is cleared).
    let r = client()
        .get(format!("{base}/orders"))
        .header(
            "cookie",
            "atlas_gate=sess.shop-abc123-pr-7.99999999999.link.AAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_valid_link_sets_the_cookie_and_redirects_to_the_clean_url() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let url = format!("{base}{}&tab=2", link("/orders", 3600));
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/orders?tab=2");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("atlas_gate=sess."), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP cannot keep a Secure cookie"
    );
    assert!(!cookie.contains("Domain"), "host-only: {cookie}");
    assert!(
        log.lock().unwrap().is_empty(),
        "the link itself never reaches the app"
    );

    let pair = cookie.split(';').next().unwrap().to_string();
    let r = client()
        .get(format!("{base}/orders?tab=2"))
        .header("cookie", format!("theme=dark; {pair}"))
        .header("x-atlas-debug", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("preview app /orders"));
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/orders?tab=2");
    assert_eq!(seen[0].header("cookie").as_deref(), Some("theme=dark"));
    assert!(seen[0].header("x-atlas-debug").is_none());
    assert_eq!(seen[0].header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen[0].header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );

    // Over HTTPS the cookie is Secure.
    let mut o = options(Mode::SignedLink, up);
    o.https = true;
    let base = start(o).await;
    let r = client()
        .get(format!("{base}{}", link("/", 60)))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn tampered_expired_and_other_preview_links_get_403_with_a_way_out() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let good = link("/", 3600);
    let t = good.split("atlas_token=").nth(1).unwrap();
    let exp: u64 = t.split('.').nth(2).unwrap().parse().unwrap();
    let tampered = format!(
        "/?atlas_token={}",
        t.replace(&format!(".{exp}."), &format!(".{}.", exp + 86400))
    );
    let expired = link("/", -10);
    let other = {
        let k = PreviewKey::derive(&secret(), "shop-abc123-pr-8", NONCE);
        format!("/?atlas_token={}", k.mint(Kind::Link, exp, "link"))
    };
    // The same preview destroyed and created again has a new nonce: old links are dead.
    let recreated = {
        let k = PreviewKey::derive(&secret(), PREVIEW, "ffffffffffffffffffffffffffffffff");
        format!("/?atlas_token={}", k.mint(Kind::Link, exp, "link"))
    };
    for (path, says) in [
        (tampered, "is not valid"),
        (expired, "has expired"),
        (other, "for another preview"),
        (recreated, "is not valid"),
        ("/?atlas_token=garbage".to_string(), "is not valid"),
    ] {
        let r = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.headers().get("set-cookie").is_none(), "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
        assert!(body.contains("atlas preview link --pr 7"), "{path}: {body}");
        assert!(!body.contains(t), "the page echoes no token");
    }
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_bypass_token_works_only_in_its_run() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let exp = gate::token::now() + 600;
    let mine = key().mint(Kind::Bypass, exp, RUN);
    let r = client()
        .get(format!("{base}/healthz"))
        .header("x-atlas-bypass", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    {
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].header("x-atlas-bypass").is_none(),
            "the token reached the app"
        );
    }
    let earlier_run = key().mint(Kind::Bypass, exp, "run-40-1");
    let expired = key().mint(Kind::Bypass, gate::token::now() - 1, RUN);
    let a_link = key().mint(Kind::Link, exp, "link");
    for (t, says) in [
        (earlier_run.as_str(), "another run"),
        (expired.as_str(), "has expired"),
        (a_link.as_str(), "is not valid"),
    ] {
        let r = client()
            .get(format!("{base}/healthz"))
            .header("x-atlas-bypass", t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{t}");
        assert!(r.text().await.unwrap().contains(says), "{t}");
    }
    // A gate started outside any run accepts no bypass at all.
    let mut o = options(Mode::SignedLink, up);
    o.run = None;
    let base2 = start(o).await;
    let r = client()
        .get(format!("{base2}/healthz"))
        .header("x-atlas-bypass", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn hostile_requests_reach_nothing_but_the_upstream() {
    let (up, log) = upstream().await;
    let (decoy, decoy_log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let bypass = key().mint(Kind::Bypass, gate::token::now() + 600, RUN);

    // Absolute-form target and a Host naming another server: the request goes to the upstream.
    let resp = raw(
        &base,
        format!(
            "GET http://{decoy}/admin HTTP/1.1\r\nHost: {decoy}\r\nx-atlas-bypass: {bypass}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Dot segments are the upstream's business; the gate neither resolves nor follows them.
    let resp = raw(
        &base,
        format!("GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nx-atlas-bypass: {bypass}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Without access, no path spelling gets past the gate.
    for p in [
        "/..%2f..%2fadmin",
        "/_atlas/../admin",
        "//admin",
        "/%2e%2e/admin",
    ] {
        let resp = raw(
            &base,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 401") || resp.starts_with("HTTP/1.1 404"),
            "{p}: {resp}"
        );
    }
    {
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].uri, "/admin");
        assert_eq!(
            seen[0].header("host").as_deref(),
            Some(decoy.to_string().as_str())
        );
        assert_eq!(seen[1].uri, "/../../etc/passwd");
    }
    assert!(
        decoy_log.lock().unwrap().is_empty(),
        "the decoy was reached"
    );

    // CR/LF smuggled through the link's query cannot split the redirect's headers.
    let l = link("/", 3600);
    let resp = raw(
        &base,
        format!(
            "GET {l}&x=%0d%0aSet-Cookie:%20evil=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 303"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("set-cookie: evil"),
        "{resp}"
    );
    assert!(
        resp.contains("Location: /?x=%0d%0aSet-Cookie:%20evil=1\r\n")
            || resp.contains("location: /?x=%0d%0aSet-Cookie:%20evil=1\r\n"),
        "{resp}"
    );
    // A bare CR inside a header value is malformed, not forwarded.
    let resp = raw(
        &base,
        format!("GET / HTTP/1.1\r\nHost: x\r\nx-atlas-bypass: {bypass}\r\nX-A: a\rInjected: b\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // An oversized head is refused before anything is forwarded.
    let huge = "a".repeat(64 * 1024);
    let resp = raw(
        &base,
        format!("GET / HTTP/1.1\r\nHost: x\r\nx-atlas-bypass: {bypass}\r\nX-Big: {huge}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(
        &base,
        format!("GET / HTTP/1.1\r\nHost: x\r\nx-atlas-bypass: {bypass}\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    // Spoofed forwarding headers are replaced, not passed on.
    let r = client()
        .get(format!("{base}/who"))
        .header("x-atlas-bypass", &bypass)
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert!(seen.header("forwarded").is_none());
    assert_eq!(log.lock().unwrap().len(), 3);
    assert!(decoy_log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn behind_a_trusted_edge_the_forwarding_headers_are_extended() {
    let (up, log) = upstream().await;
    let mut o = options(Mode::Public, up);
    o.trust_forwarded = true;
    let base = start(o).await;
    let r = client()
        .get(format!("{base}/"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::Public, up)).await;
    // 8 MiB up, chunked (no length known in advance).
    let mut req = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..128 {
        req.extend_from_slice(b"10000\r\n");
        req.extend_from_slice(&[b'x'; 64 * 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(&base, &req).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("got 8388608 bytes"), "{resp}");
    assert_eq!(log.lock().unwrap()[0].body_len, 8 * 1024 * 1024);
    assert_eq!(log.lock().unwrap()[0].method, "POST");
    // Down: the first chunk arrives while the upstream is still writing the rest.
    let started = std::time::Instant::now();
    let mut r = client().get(format!("{base}/stream")).send().await.unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first;");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "the gate buffered the response"
    );
    let second = r.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"second");
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    // An upstream that switches protocols and then echoes bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let seen_head = Arc::new(Mutex::new(String::new()));
    let sh = seen_head.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await.unwrap() == 0 {
                return;
            }
            head.push(b[0]);
        }
        *sh.lock().unwrap() = String::from_utf8_lossy(&head).to_ascii_lowercase();
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let base = start(options(Mode::Public, up)).await;
    let mut c = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: atlas_gate=x\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            c.read(&mut b).await.unwrap(),
            1,
            "closed mid-head: {head:?}"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    c.write_all(b"\x81\x04ping").await.unwrap();
    let mut echo = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"\x81\x04ping");
    let up_head = seen_head.lock().unwrap().clone();
    assert!(up_head.contains("upgrade: websocket"), "{up_head}");
    assert!(
        up_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{up_head}"
    );
    assert!(!up_head.contains("atlas_gate"), "{up_head}");
}

#[tokio::test]
async fn gate_paths_are_never_forwarded_and_health_answers() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let r = client()
        .get(format!("{base}/_atlas/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bypass = key().mint(Kind::Bypass, gate::token::now() + 600, RUN);
    let r = client()
        .get(format!("{base}/_atlas/anything"))
        .header("x-atlas-bypass", &bypass)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502_page() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let base = start(options(Mode::Public, port)).await;
    let r = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("did not answer"));
}

/// `atlas gate` as a process; returns (child, base URL). The key comes through the environment.
fn spawn_gate_binary(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut cmd = crate::common::bin::atlas();
    cmd.args(["gate", "serve"])
        .args(args)
        .envs(crate::common::bin::host_env())
        .envs(env.iter().copied());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Real headless Chromium, since cookie and redirect handling is where browsers differ.
fn chromium_dump(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium must be installed (.ci/run installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn chromium_opens_the_app_through_a_signed_link() {
    let (up, log) = upstream().await;
    let key_hex = PreviewKey::derived_hex(&secret(), PREVIEW, NONCE);
    let (child, base) = spawn_gate_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up.to_string(),
            "--mode",
            "signed-link",
            "--preview",
            PREVIEW,
            "--pr",
            "7",
        ],
        &[("ATLAS_GATE_KEY", key_hex.expose())],
    );
    let mut child = Kill(child);
    // Without the link Chromium gets the sign-in page.
    let b = base.clone();
    let dom = tokio::task::spawn_blocking(move || chromium_dump(&format!("{b}/orders")))
        .await
        .unwrap();
    assert!(dom.contains("open it with a signed link"), "{dom}");
    assert!(log.lock().unwrap().is_empty());
    // With it: the app page, at the clean URL, and the session cookie invisible to scripts.
    let url = format!("{base}{}&tab=2", link("/orders", 3600));
    let dom = tokio::task::spawn_blocking(move || chromium_dump(&url))
        .await
        .unwrap();
    assert!(dom.contains("preview app /orders"), "{dom}");
    assert!(
        dom.contains("at:/orders?tab=2 cookies:app_session=abc"),
        "{dom}"
    );
    assert!(!dom.contains("atlas_token"), "{dom}");
    assert!(
        !dom.contains("atlas_gate"),
        "an HttpOnly cookie is not readable: {dom}"
    );
    {
        let seen = log.lock().unwrap();
        let page = seen
            .iter()
            .find(|s| s.uri == "/orders?tab=2")
            .expect("the app page was requested");
        assert!(
            page.header("cookie").is_none_or(|c| !c.contains("atlas_")),
            "{page:?}"
        );
    }
    // The key never appears in the gate's output.
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains(key_hex.expose()), "{err}");
}

/// Follows one GitHub sign-in as a browser would; returns the final response of `path`.
pub(crate) async fn github_sign_in(
    base: &str,
    path: &str,
) -> (reqwest::StatusCode, String, Option<String>) {
    let c = client();
    let r = c.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let page = r.text().await.unwrap();
    let href = page
        .split("href=\"")
        .nth(1)
        .and_then(|h| h.split('"').next())
        .expect("a sign-in link")
        .replace("&amp;", "&");
    assert!(href.starts_with("/_atlas/github/login?next="), "{href}");
    let r = c.get(format!("{base}{href}")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let oauth_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(oauth_cookie.contains("HttpOnly"), "{oauth_cookie}");
    let oauth_pair = oauth_cookie.split(';').next().unwrap().to_string();
    let r = c.get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        callback.starts_with(&format!("{base}/_atlas/github/callback?code=")),
        "{callback}"
    );
    let r = c
        .get(&callback)
        .header("cookie", &oauth_pair)
        .send()
        .await
        .unwrap();
    if r.status() != 303 {
        return (r.status(), r.text().await.unwrap(), None);
    }
    assert_eq!(r.headers()["location"], path);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("atlas_gate="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    let pair = session.split(';').next().unwrap().to_string();
    let r = c
        .get(format!("{base}{path}"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap(), Some(pair))
}

#[tokio::test]
async fn github_sign_in_lets_in_readers_and_team_members_only() {
    let gh = fake_github::FakeGithub::start("acme/shop", None).await;
    gh.with(|s| {
        s.oauth_apps
            .insert("Iv1.gateclient".into(), "gate-client-secret-9c1".into());
        s.permissions.insert("reader".into(), "read".into());
        s.permissions.insert("stranger".into(), "none".into());
        s.teams
            .insert("acme/reviewers".into(), vec!["teammate".into()]);
    });
    let (up, log) = upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut o = options(Mode::Github, up);
    o.github = Some(atlas::gate::github::GithubAccess {
        client_id: "Iv1.gateclient".into(),
        client_secret: Secret::new("gate-client-secret-9c1"),
        repo: "acme/shop".into(),
        teams: vec!["acme/reviewers".into()],
        web_url: gh.url.clone(),
        api_url: gh.url.clone(),
        public_url: base.clone(),
    });
    let gate = Arc::new(Gate::new(o).unwrap());
    tokio::spawn(gate.serve(listener));

    gh.with(|s| s.oauth_browser_user = Some("reader".into()));
    let (status, body, cookie) = github_sign_in(&base, "/private?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("preview app /private"));
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert!(seen.header("cookie").is_none(), "{seen:?}");

    gh.with(|s| s.oauth_browser_user = Some("teammate".into()));
    let (status, body, _) = github_sign_in(&base, "/").await;
    assert_eq!(status, 200, "{body}");

    gh.with(|s| s.oauth_browser_user = Some("stranger".into()));
    let (status, body, _) = github_sign_in(&base, "/").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("signed in to GitHub as <code>stranger</code>"),
        "{body}"
    );
    assert_eq!(log.lock().unwrap().len(), 2);

    // A session cookie is bound to this preview: the same login minted elsewhere does not pass.
    let other = PreviewKey::derive(&secret(), "shop-abc123-pr-8", NONCE).mint(
        Kind::Session,
        gate::token::now() + 600,
        "reader",
    );
    let r = client()
        .get(format!("{base}/"))
        .header("cookie", format!("atlas_gate={other}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(cookie.is_some());

    // A callback replayed into a browser that did not start the sign-in is refused.
    gh.with(|s| s.oauth_browser_user = Some("reader".into()));
    let r = client()
        .get(format!("{base}/_atlas/github/login?next=%2F"))
        .send()
        .await
        .unwrap();
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let r = client().get(&authorize).send().await.unwrap();
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let r = client().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("started in another browser")
    );

    assert!(gh.violations().is_empty(), "{:?}", gh.violations());
    let calls = gh.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("GET /repos/acme/shop/collaborators/reader/permission")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("GET /orgs/acme/teams/reviewers/memberships/teammate")),
        "{calls:?}"
    );
    // The client secret travels only to the token endpoint, never to a page.
    assert!(!body.contains("gate-client-secret-9c1"));
}

/// A platform whose "app" is already running at a fixed address (the test's upstream).
struct Running(SocketAddr, Arc<Mutex<u32>>);

#[async_trait::async_trait]
impl atlas::provider::Platform for Running {
    fn kind(&self) -> &'static str {
        "test"
    }
    async fn deploy(
        &self,
        req: &atlas::provider::DeployRequest,
    ) -> anyhow::Result<atlas::provider::AppDeployment> {
        Ok(atlas::provider::AppDeployment {
            app: req.app.clone(),
            url: format!("http://{}", self.0),
            instances: vec!["1".into()],
            logs: None,
            created: true,
            sleep: None,
            wake_ms: None,
            commits: Vec::new(),
        })
    }
    async fn destroy(&self, _app: &str) -> anyhow::Result<atlas::provider::Deleted> {
        *self.1.lock().unwrap() += 1;
        Ok(atlas::provider::Deleted::Removed)
    }
    async fn list_apps(&self) -> anyhow::Result<Vec<atlas::provider::Owned>> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn a_local_preview_is_gated_until_down_and_down_kills_its_links() {
    use atlas::provider::Platform as _;
    let (up, log) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let destroyed = Arc::new(Mutex::new(0));
    let platform = atlas::gate::local::LocalGate::new(
        Box::new(Running(up, destroyed.clone())),
        dir.path(),
        std::path::Path::new(crate::common::bin::ATLAS),
        Mode::SignedLink,
        secret(),
        Duration::from_secs(600),
    );
    let req = atlas::provider::DeployRequest {
        pr: Some(7),
        app: PREVIEW.into(),
        sha: "a".repeat(40),
        repository: "local/atlas-preview".into(),
        image: None,
        env: Default::default(),
        secrets: Default::default(),
        port: 0,
        health_path: "/healthz".into(),
        readiness_timeout: Duration::from_secs(10),
        expires_at: None,
        outgoing: None,
    };
    let dep = platform.deploy(&req).await.unwrap();
    assert_ne!(
        dep.url,
        format!("http://{up}"),
        "the preview URL is the gate's"
    );
    let r = client().get(format!("{}/", dep.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let bypass = platform
        .bypass()
        .token(PREVIEW)
        .expect("this run's bypass token");
    let r = client()
        .get(format!("{}/menu", dep.url))
        .header("x-atlas-bypass", bypass.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let nonce = atlas::gate::local::nonce(dir.path(), PREVIEW).expect("a nonce");
    let link = atlas::gate::mint_link(
        &secret(),
        PREVIEW,
        &nonce,
        &dep.url,
        Duration::from_secs(60),
    );
    let r = client().get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    // An update keeps the nonce (links stay valid) and replaces the gate process.
    let dep2 = platform.deploy(&req).await.unwrap();
    assert_eq!(
        atlas::gate::local::nonce(dir.path(), PREVIEW).as_deref(),
        Some(nonce.as_str())
    );
    assert_eq!(
        client()
            .get(link.replace(&dep.url, &dep2.url))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    // Down: nothing answers, and a preview created again does not honour the old link.
    platform.destroy(PREVIEW).await.unwrap();
    assert_eq!(*destroyed.lock().unwrap(), 1);
    assert!(
        client().get(format!("{}/", dep2.url)).send().await.is_err(),
        "the gate still answers"
    );
    let dep3 = platform.deploy(&req).await.unwrap();
    let r = client()
        .get(link.replace(&dep.url, &dep3.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    platform.destroy(PREVIEW).await.unwrap();
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "only the bypassed request reached the app"
    );
}

/// `access = "github"` in front of a local preview: the gate process signs in against the fake
/// GitHub with its callback on the loopback gate, which an OAuth app registered with the
/// callback `http://127.0.0.1/_atlas/github/callback` accepts on any port (GitHub's loopback
/// rule, which the fake checks).
#[tokio::test]
async fn a_local_preview_signs_in_with_github_on_its_loopback_callback() {
    use atlas::provider::Platform as _;
    let gh = fake_github::FakeGithub::start("acme/shop", None).await;
    gh.with(|s| {
        s.oauth_apps
            .insert("Iv1.localgate".into(), "local-client-secret-4b2".into());
        s.oauth_callbacks.insert(
            "Iv1.localgate".into(),
            "http://127.0.0.1/_atlas/github/callback".into(),
        );
        s.permissions.insert("reader".into(), "read".into());
        s.permissions.insert("stranger".into(), "none".into());
    });
    let (up, log) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let destroyed = Arc::new(Mutex::new(0));
    let platform = atlas::gate::local::LocalGate::new(
        Box::new(Running(up, destroyed.clone())),
        dir.path(),
        std::path::Path::new(env!("CARGO_BIN_EXE_atlas")),
        Mode::Github,
        secret(),
        Duration::from_secs(600),
    )
    .with_github(atlas::gate::local::LocalGithub {
        app: atlas::gate::github::OauthApp {
            client_id: "Iv1.localgate".into(),
            client_secret: Secret::new("local-client-secret-4b2"),
            teams: Vec::new(),
        },
        repo: "acme/shop".into(),
        web_url: gh.url.clone(),
        api_url: gh.url.clone(),
    });
    let req = atlas::provider::DeployRequest {
        pr: Some(7),
        app: PREVIEW.into(),
        sha: "a".repeat(40),
        repository: "local/atlas-preview".into(),
        image: None,
        env: Default::default(),
        secrets: Default::default(),
        port: 0,
        health_path: "/healthz".into(),
        readiness_timeout: Duration::from_secs(10),
        expires_at: None,
        outgoing: None,
    };
    let dep = platform.deploy(&req).await.unwrap();
    assert!(dep.url.starts_with("http://127.0.0.1:"), "{}", dep.url);

    gh.with(|s| s.oauth_browser_user = Some("reader".into()));
    let (status, body, cookie) = github_sign_in(&dep.url, "/private?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("preview app /private"), "{body}");
    assert!(cookie.is_some());
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert!(seen.header("cookie").is_none(), "{seen:?}");

    gh.with(|s| s.oauth_browser_user = Some("stranger".into()));
    let (status, body, _) = github_sign_in(&dep.url, "/").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("signed in to GitHub as <code>stranger</code>"),
        "{body}"
    );
    assert_eq!(log.lock().unwrap().len(), 1, "only the reader got through");

    // The redirect_uri was the loopback gate's own callback; the permission asked was the
    // configured repository's, not the local run's placeholder.
    assert!(gh.violations().is_empty(), "{:?}", gh.violations());
    let calls = gh.calls();
    let port = dep.url.rsplit(':').next().unwrap().to_string();
    let callback = format!("http://127.0.0.1:{port}/_atlas/github/callback");
    let enc: String = url::form_urlencoded::byte_serialize(callback.as_bytes()).collect();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("GET /login/oauth/authorize") && c.contains(&enc)),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("GET /repos/acme/shop/collaborators/reader/permission")),
        "{calls:?}"
    );
    // The client secret is in no gate state file or command line.
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if e.path().is_file() {
            let t = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(!t.contains("local-client-secret-4b2"), "{:?}", e.path());
        }
    }
    platform.destroy(PREVIEW).await.unwrap();
    assert!(client().get(format!("{}/", dep.url)).send().await.is_err());
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_link_local_preview_end_to_end() {
    let toml = local_env::kitchen_toml(
        "\n[load]\nrate = 20\nduration = \"1s\"\nwarmup = \"0s\"\nconnections = 2\n\n[[load.requests]]\npath = \"/menu\"\n",
    )
    .replace("[preview]\n", "[preview]\naccess = \"signed-link\"\n");
    let mut env = local_env::Env::new(&toml);
    let out = env.up(7);
    assert!(out.status.success(), "{}", out_text(&out));
    let comment = env.comment(7);
    assert!(
        comment.contains("access: signed\\-link · who: holders of a signed link"),
        "{comment}"
    );
    assert!(comment.contains(" · until 20"), "{comment}");
    assert!(
        comment.contains("(smoke and load through the access gate)"),
        "{comment}"
    );
    assert!(
        comment.contains("measured, no baseline"),
        "the load ran: {comment}"
    );
    let url = comment
        .lines()
        .find_map(|l| l.strip_prefix("**Environment URL:**"))
        .expect("a URL")
        .trim()
        .to_string();
    let r = client().get(format!("{url}/menu")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the preview URL is the gate's");

    let out = env.atlas(&["preview", "link", "--pr", "7", "--local", "--ttl", "1h"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(link.contains("atlas_token="), "{link}");
    let r = client().get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let pair = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = client()
        .get(format!("{url}/menu"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("margherita"));

    let out = env.down(7);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        client().get(format!("{url}/menu")).send().await.is_err(),
        "something still answers"
    );
    assert!(client().get(&link).send().await.is_err());
    let out = env.atlas(&["preview", "link", "--pr", "7", "--local"]);
    assert!(
        !out.status.success(),
        "a link to a destroyed preview was minted"
    );
    env.assert_nothing_left();
    env.assert_no_secrets();
    // Neither the gate's secret nor a token is in any output or in the comment.
    let gate_secret = std::fs::read_to_string(env.state().join("gate/secret")).unwrap();
    for t in &env.outputs {
        assert!(!t.contains(gate_secret.trim()));
        assert!(!t.contains("bypass."), "a bypass token was printed");
    }
    assert!(!env.comment(7).contains("atlas_token"));
    let gates: Vec<_> = std::fs::read_dir(env.state().join("gate/apps"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    assert!(gates.is_empty(), "gate state left");
}

/// An app version that says which commit it is and what path it got; records every request.
async fn version(sha: &'static str) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let l = l.clone();
        async move {
            let mut hs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (n, v) in &headers {
                hs.entry(n.as_str().to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            l.lock().unwrap().push(Seen {
                method: "GET".into(),
                uri: uri.to_string(),
                headers: hs,
                body_len: 0,
            });
            format!("commit {sha} path {uri}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, log)
}

const SHA_NEW: &str = "cccccccccccccccccccccccccccccccccccccccc";
const SHA_MID: &str = "bbbbbbb1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA_OLD: &str = "aaaaaaa2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn commit_urls_reach_their_version_behind_the_same_access_rules() {
    let (new, new_log) = version(SHA_NEW).await;
    let (mid, mid_log) = version(SHA_MID).await;
    let (old, old_log) = version(SHA_OLD).await;
    let mut opts = options(Mode::SignedLink, new);
    opts.sha = Some(SHA_NEW.into());
    opts.commits = vec![
        gate::CommitRoute {
            sha: SHA_MID.into(),
            upstream: Upstream {
                authority: mid.to_string(),
                headers: Vec::new(),
            },
        },
        gate::CommitRoute {
            sha: SHA_OLD.into(),
            upstream: Upstream {
                authority: old.to_string(),
                headers: vec![(
                    "fly-force-instance-id".parse().unwrap(),
                    "e2865013b21d89".parse().unwrap(),
                )],
            },
        },
    ];
    let base = start(opts).await;
    let c = client();

    // Access first: no cookie, no link -> the sign-in page, for commit URLs too.
    let r = c
        .get(format!("{base}/_atlas/c/bbbbbbb/menu"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/_atlas/c/fffffff/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the list of kept commits is not shown to strangers"
    );
    // A signed link on a commit URL: cookie, then the clean commit URL.
    let r = c
        .get(format!("{base}{}", link("/_atlas/c/bbbbbbb1/menu", 600)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/_atlas/c/bbbbbbb1/menu");
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let get = |path: &str, extra: &[(&str, &str)]| {
        let mut rq = c.get(format!("{base}{path}")).header("cookie", &session);
        for (k, v) in extra {
            rq = rq.header(*k, *v);
        }
        rq.send()
    };

    // Each commit URL reaches its version with the prefix stripped, and pins the browser.
    let r = get("/_atlas/c/bbbbbbb/menu?x=1", &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    let pin = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        pin.starts_with("atlas_commit=bbbbbbb;")
            && pin.contains("HttpOnly")
            && pin.contains("SameSite=Lax"),
        "{pin}"
    );
    assert_eq!(
        r.text().await.unwrap(),
        format!("commit {SHA_MID} path /menu?x=1")
    );
    let r = get("/_atlas/c/aaaaaaa2a/", &[]).await.unwrap();
    assert_eq!(r.text().await.unwrap(), format!("commit {SHA_OLD} path /"));
    let seen = old_log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.header("fly-force-instance-id").as_deref(),
        Some("e2865013b21d89")
    );
    assert!(
        seen.header("cookie").is_none(),
        "atlas cookies reached the app: {seen:?}"
    );
    let r = get("/_atlas/c/ccccccc/", &[]).await.unwrap();
    assert_eq!(r.text().await.unwrap(), format!("commit {SHA_NEW} path /"));
    let r = get("/_atlas/c/bbbbbbb", &[]).await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/_atlas/c/bbbbbbb/");

    // The stable URL is the newest commit.
    let r = get("/menu", &[]).await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("commit {SHA_NEW} path /menu")
    );

    // Absolute links of a commit's page: by Referer, then by the commit cookie.
    let pinned = format!("{session}; atlas_commit=bbbbbbb");
    let host = base.trim_start_matches("http://").to_string();
    let r = c
        .get(format!("{base}/static/app.js"))
        .header("cookie", &session)
        .header("referer", format!("http://{host}/_atlas/c/aaaaaaa/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("commit {SHA_OLD} path /static/app.js")
    );
    let r = c
        .get(format!("{base}/static/app.js"))
        .header("cookie", &pinned)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("commit {SHA_MID} path /static/app.js")
    );
    // A page at a stable URL (another tab) stays stable although the browser is pinned.
    let r = c
        .get(format!("{base}/static/app.js"))
        .header("cookie", &pinned)
        .header("referer", format!("http://{host}/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("commit {SHA_NEW} path /static/app.js")
    );
    // A same-origin navigation by the cookie is redirected to its commit URL ...
    let r = c
        .get(format!("{base}/orders?id=3"))
        .header("cookie", &pinned)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "/_atlas/c/bbbbbbb/orders?id=3");
    // ... one the reviewer started (typed, or the stable link in the PR) is the stable version
    // and unpins the browser.
    for site in ["none", "cross-site"] {
        let r = c
            .get(format!("{base}/orders"))
            .header("cookie", &pinned)
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .starts_with("atlas_commit=;"),
            "{:?}",
            r.headers()
        );
        assert_eq!(
            r.text().await.unwrap(),
            format!("commit {SHA_NEW} path /orders")
        );
    }
    // A pinned commit that is no longer kept: the stable version, unpinned.
    let r = c
        .get(format!("{base}/x"))
        .header("cookie", format!("{session}; atlas_commit=ddddddd"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("set-cookie"));
    assert_eq!(r.text().await.unwrap(), format!("commit {SHA_NEW} path /x"));

    // Hostile or unknown commit names: the gate's 404 listing the kept commits, never an app.
    let before: usize = [&new_log, &mid_log, &old_log]
        .iter()
        .map(|l| l.lock().unwrap().len())
        .sum();
    let long = "b".repeat(41);
    for path in [
        "/_atlas/c/fffffff/".to_string(),
        "/_atlas/c/../menu".into(),
        "/_atlas/c/%2e%2e/menu".into(),
        "/_atlas/c/bbbbbbb%2f..%2f/menu".into(),
        "/_atlas/c/BBBBBBB/".into(),
        "/_atlas/c/bbbbbb/".into(),
        "/_atlas/c/bbbbbbbz/".into(),
        format!("/_atlas/c/{long}/"),
        "/_atlas/c//menu".into(),
        "/_atlas/c/".into(),
    ] {
        // Raw, so that no client normalises the path first.
        let body = raw(
            &base,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {session}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(body.starts_with("HTTP/1.1 404"), "{path}: {body}");
        for s7 in ["ccccccc", "bbbbbbb", "aaaaaaa"] {
            assert!(body.contains(&format!("/_atlas/c/{s7}/")), "{path}: {body}");
        }
        assert!(body.contains("(current)"), "{body}");
    }
    let r = raw(
        &base,
        format!("GET /_atlas/c/bbbbbbb/../../x HTTP/1.1\r\nHost: {host}\r\nCookie: {session}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    // A path the app must judge itself (as without a gate): it stays with that version.
    assert!(
        r.contains(&format!("commit {SHA_MID} path /../../x")),
        "{r}"
    );
    let after: usize = [&new_log, &mid_log, &old_log]
        .iter()
        .map(|l| l.lock().unwrap().len())
        .sum();
    assert_eq!(after, before + 1, "a hostile commit URL reached an app");

    // The bypass token opens commit URLs too.
    let bypass = key().mint(Kind::Bypass, gate::token::now() + 600, RUN);
    let r = client()
        .get(format!("{base}/_atlas/c/aaaaaaa/healthz"))
        .header("x-atlas-bypass", bypass)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("commit {SHA_OLD} path /healthz")
    );
}

fn up_at(env: &mut local_env::Env, sha: &str) -> std::process::Output {
    env.atlas(&[
        "preview",
        "up",
        "--local",
        "--pr",
        "7",
        "--sha",
        sha,
        "--branch",
        "feature/menu",
    ])
}

/// What `/healthz` of the version behind `url` says its commit is.
async fn commit_at(c: &reqwest::Client, url: &str, cookie: &str) -> (u16, String) {
    let r = c.get(url).header("cookie", cookie).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let commit = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["commit"].as_str().map(str::to_string))
        .unwrap_or(body);
    (status, commit)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_preview_keeps_its_previous_commits_at_commit_urls_until_down() {
    let toml = local_env::kitchen_toml("").replace(
        "[preview]\n",
        "[preview]\naccess = \"signed-link\"\nkeep_commits = 1\n",
    );
    let mut env = local_env::Env::new(&toml);
    let shas: Vec<String> = ["1a", "2b", "3c"]
        .iter()
        .map(|p| format!("{p}{}", "0".repeat(38)))
        .collect();
    for sha in &shas {
        let out = up_at(&mut env, sha);
        assert!(out.status.success(), "{}", out_text(&out));
    }
    let comment = env.comment(7);
    let url = comment
        .lines()
        .find_map(|l| l.strip_prefix("**Environment URL:**"))
        .expect("a URL")
        .trim()
        .to_string();
    // The identity clause: the stable URL and one URL per kept commit (the newest before this
    // one; the oldest went).
    assert!(
        comment.contains(&format!("stable URL {url} (newest commit)")),
        "{comment}"
    );
    for s7 in ["3c00000", "2b00000"] {
        assert!(
            comment.contains(&format!("`{s7}` {url}/_atlas/c/{s7}/")),
            "{s7}: {comment}"
        );
    }
    let identity = comment
        .lines()
        .find(|l| l.contains("**1. Code identity**"))
        .expect("the identity clause");
    assert!(!identity.contains("1a00000"), "{identity}");

    let out = env.atlas(&["preview", "link", "--pr", "7", "--local", "--ttl", "1h"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let c = client();
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // Each URL reaches the version that reports that commit.
    assert_eq!(
        commit_at(&c, &format!("{url}/healthz"), &session).await,
        (200, shas[2].clone())
    );
    for i in [2, 1] {
        let u = format!("{url}/_atlas/c/{}/healthz", &shas[i][..7]);
        assert_eq!(
            commit_at(&c, &u, &session).await,
            (200, shas[i].clone()),
            "{u}"
        );
    }
    let (status, body) = commit_at(
        &c,
        &format!("{url}/_atlas/c/{}/healthz", &shas[0][..7]),
        &session,
    )
    .await;
    assert_eq!(status, 404, "a pruned commit: {body}");
    assert!(
        body.contains("/_atlas/c/2b00000/") && body.contains("/_atlas/c/3c00000/"),
        "{body}"
    );
    // Access rules hold for commit URLs.
    let (status, _) = commit_at(&c, &format!("{url}/_atlas/c/2b00000/healthz"), "x=1").await;
    assert_eq!(status, 401);
    // One kept process (beside the current one) runs; down stops them all.
    let kept: Vec<String> = std::fs::read_dir(env.state().join("apps"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");

    let out = env.down(7);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(c.get(format!("{url}/healthz")).send().await.is_err());
    env.assert_nothing_left();
}

/// A local gated preview whose second push renames a table the first commit reads: before that
/// push's migrations, the first commit's data is frozen for it (`CREATE DATABASE .. TEMPLATE`,
/// real PostgreSQL), its kept process is started again on that copy, so its commit URL still
/// answers with its own commit and its own schema while the stable URL has the new one; the
/// identity clause says which data each commit URL uses, and down drops the copy with the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_kept_commit_keeps_its_own_schema_after_a_schema_changing_push() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    for f in ["0001_menu.sql", "0002_orders.sql", "0003_users.sql"] {
        std::fs::copy(
            format!("{}/examples/kitchen/migrations/{f}", local_env::ROOT),
            migrations.join(f),
        )
        .unwrap();
    }
    let toml = local_env::kitchen_toml("")
        .replace(
            "[preview]\n",
            "[preview]\naccess = \"signed-link\"\nkeep_commits = 2\n",
        )
        .replace(
            "migrations = \"sh ",
            &format!("migrations = \"MIGRATIONS_DIR={} sh ", migrations.display()),
        );
    let mut env = local_env::Env::new(&toml);
    let shas: Vec<String> = ["1a", "2b"]
        .iter()
        .map(|p| format!("{p}{}", "0".repeat(38)))
        .collect();
    let out = up_at(&mut env, &shas[0]);
    assert!(out.status.success(), "{}", out_text(&out));
    // The second commit's migration: the first commit's code reads `users`.
    std::fs::write(
        migrations.join("0004_customers.sql"),
        "ALTER TABLE users RENAME TO customers;\n",
    )
    .unwrap();
    let out = up_at(&mut env, &shas[1]);
    assert!(out.status.success(), "{}", out_text(&out));
    let text = out_text(&out);
    let froze = text.find("froze atlas_pr_7_c_1a00000").expect(&text);
    let migrated = text.find("→ migrations").expect(&text);
    assert!(
        froze < migrated,
        "the copy was made after the migrations: {text}"
    );

    let comment = env.comment(7);
    let url = comment
        .lines()
        .find_map(|l| l.strip_prefix("**Environment URL:**"))
        .expect("a URL")
        .trim()
        .to_string();
    assert!(
        comment.contains("/_atlas/c/1a00000/ (data: its own branch atlas\\_pr\\_7\\_c\\_1a00000)"),
        "{comment}"
    );
    let out = env.atlas(&["preview", "link", "--pr", "7", "--local", "--ttl", "1h"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let c = client();
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let get = |path: String| {
        c.get(format!("{url}{path}"))
            .header("cookie", session.clone())
            .send()
    };
    assert_eq!(
        commit_at(&c, &format!("{url}/_atlas/c/1a00000/healthz"), &session).await,
        (200, shas[0].clone())
    );
    assert_eq!(
        commit_at(&c, &format!("{url}/healthz"), &session).await,
        (200, shas[1].clone())
    );
    // Its own schema: `users` is still there for the first commit, renamed for the second.
    let r = get("/_atlas/c/1a00000/users".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["users"].as_array().is_some_and(|u| !u.is_empty()), "{v}");
    assert_eq!(get("/users".into()).await.unwrap().status(), 503);
    let dbs = env.databases();
    assert!(dbs.contains(&"atlas_pr_7_c_1a00000".to_string()), "{dbs:?}");

    let out = env.down(7);
    assert!(out.status.success(), "{}", out_text(&out));
    env.assert_nothing_left();
    env.assert_no_secrets();
}

/// An app version whose page loads `/app.js` by an absolute path and, with `?go`, navigates to
/// `/next` by an absolute link, as apps do; everything it serves names its commit.
async fn browser_version(sha: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(move |uri: Uri| async move {
        let (ctype, body) = match uri.path() {
            "/app.js" => (
                "text/javascript",
                format!("document.getElementById('js').textContent='js:{sha}';"),
            ),
            path => (
                "text/html",
                format!(
                    "<!doctype html><title>v</title><p id=\"page\">page:{sha} {path}</p><p id=\"js\"></p><p id=\"at\"></p>\
<script src=\"/app.js\"></script><script>document.getElementById('at').textContent='at:'+location.pathname;\
if(location.search==='?go'){{location.href='/next';}}</script>"
                ),
            ),
        };
        axum::response::Response::builder()
            .header("content-type", ctype)
            .body(axum::body::Body::from(body))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn chromium_stays_on_the_commit_it_opened_through_absolute_links() {
    let new = browser_version(SHA_NEW).await;
    let mid = browser_version(SHA_MID).await;
    let (child, base) = spawn_gate_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &new.to_string(),
            "--sha",
            SHA_NEW,
            "--commit",
            &format!("{SHA_MID}={mid}"),
        ],
        &[],
    );
    let _child = Kill(child);
    let dump = |url: String| async move {
        tokio::task::spawn_blocking(move || chromium_dump(&url))
            .await
            .unwrap()
    };
    // The commit URL: its page and its absolutely linked script are that commit's.
    let dom = dump(format!("{base}/_atlas/c/bbbbbbb/page")).await;
    assert!(dom.contains(&format!("page:{SHA_MID} /page")), "{dom}");
    assert!(dom.contains(&format!("js:{SHA_MID}")), "{dom}");
    // An absolute link followed from it lands on the same commit, at its commit URL.
    let dom = dump(format!("{base}/_atlas/c/bbbbbbb/page?go")).await;
    assert!(dom.contains(&format!("page:{SHA_MID} /next")), "{dom}");
    assert!(dom.contains("at:/_atlas/c/bbbbbbb/next"), "{dom}");
    assert!(dom.contains(&format!("js:{SHA_MID}")), "{dom}");
    // The stable URL is the newest commit.
    let dom = dump(format!("{base}/page")).await;
    assert!(dom.contains(&format!("page:{SHA_NEW} /page")), "{dom}");
    assert!(dom.contains(&format!("js:{SHA_NEW}")), "{dom}");
}
