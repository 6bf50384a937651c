#![allow(dead_code)]
//! Minimal HTTP/1.1 servers on 127.0.0.1:0 for the load tests: one OS thread per connection
//! and `std::thread::sleep` for delays, so injected delays are precise to well under a
//! millisecond (a tokio timer rounds up to the next millisecond).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the handler saw.
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The handler's answer: status and body.
pub type Handler = Arc<dyn Fn(&Req) -> (u16, String) + Send + Sync>;

pub struct Server {
    pub url: String,
    pub requests: Arc<AtomicU64>,
    /// When each request was received (its head and body read) and answered (the response
    /// written), in the order answered: the server's own view of what it did, which the accuracy
    /// tests compare the generator with (a sleep overshoots by a millisecond or more on a busy
    /// 2-core machine, so the nominal delay is not the truth).
    pub timings: Timings,
}

/// Per-request (received, answered) instants, shared by a server's connections.
pub type Timings = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// The `q`-quantile (0..=1, nearest rank) of `v`, in milliseconds; `v` need not be sorted.
pub fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    assert!(!v.is_empty(), "no samples");
    let mut v = v.to_vec();
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1000.0
}

/// Starts a server; it lives until the test process exits.
pub fn serve(handler: Handler) -> Server {
    serve_with_idle_timeout(handler, None)
}

/// [`serve`], closing a keep-alive connection that stays idle for `idle`, as Node (5 s), nginx
/// (75 s) and most proxies do.
pub fn serve_with_idle_timeout(handler: Handler, idle: Option<Duration>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let timings = Timings::default();
    let (count, log) = (requests.clone(), timings.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = handler.clone();
            let (count, log) = (count.clone(), log.clone());
            let _ = stream.set_read_timeout(idle);
            std::thread::spawn(move || connection(stream, handler, count, log));
        }
    });
    Server {
        url,
        requests,
        timings,
    }
}

fn connection(stream: TcpStream, handler: Handler, count: Arc<AtomicU64>, log: Timings) {
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::Relaxed);
        let received = Instant::now();
        let (status, text) = handler(&Req {
            method,
            path,
            headers,
            body,
        });
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
        log.lock().unwrap().push((received, Instant::now()));
    }
}

/// Every response after a fixed delay.
pub fn delay_server(delay: Duration) -> Server {
    serve(Arc::new(move |_req: &Req| {
        std::thread::sleep(delay);
        (200, "ok".into())
    }))
}

/// A server that freezes for `freeze` out of every `period`, starting `offset` into each period
/// (the clock starts at the first request): a request arriving during a freeze is answered when
/// the freeze ends.
///
/// Unlike `serve`, this is one thread with an event loop: with a thread per connection, the end
/// of a freeze made 50 threads runnable at once on a 2-core machine, and the generator under
/// test waited tens of milliseconds for a time slice, which showed up in the very tail the test
/// measures. Here one thread writes the held responses; tokio's timer ends a freeze up to 1 ms
/// late, well inside the test's tolerance.
pub fn freeze_server(period: Duration, freeze: Duration, offset: Duration) -> Server {
    let requests = Arc::new(AtomicU64::new(0));
    let timings = Timings::default();
    let (count, log) = (requests.clone(), timings.clone());
    let epoch: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let addr = event_loop(move |stream| {
        let clocks = (epoch.clone(), count.clone(), log.clone());
        frozen_connection(stream, clocks, period, freeze, offset)
    });
    Server {
        url: format!("http://{addr}"),
        requests,
        timings,
    }
}

/// Runs `on_connection` for every connection to a new 127.0.0.1 port, on one thread with a
/// current-thread runtime; returns the address.
fn event_loop<F, Fut>(on_connection: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(on_connection(stream));
            }
        });
    });
    addr
}

/// The next request head on `stream` (bodiless requests), reading into `buf`; what follows the
/// head stays in `buf`. `None` at EOF or on an error.
async fn next_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            return Some(head);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Bodiless requests only (the freeze test sends GET /).
async fn frozen_connection(
    mut stream: tokio::net::TcpStream,
    (epoch, count, log): (Arc<OnceLock<Instant>>, Arc<AtomicU64>, Timings),
    period: Duration,
    freeze: Duration,
    offset: Duration,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut buf = Vec::with_capacity(4096);
    while next_head(&mut stream, &mut buf).await.is_some() {
        count.fetch_add(1, Ordering::Relaxed);
        let received = Instant::now();
        let e = *epoch.get_or_init(|| received);
        let since = e.elapsed().as_nanos() as u64;
        let phase = since % period.as_nanos() as u64;
        let (from, to) = (
            offset.as_nanos() as u64,
            (offset + freeze).as_nanos() as u64,
        );
        if phase >= from && phase < to {
            tokio::time::sleep(Duration::from_nanos(to - phase)).await;
        }
        let resp = b"HTTP/1.1 200 X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
        if stream.write_all(resp).await.is_err() {
            return;
        }
        log.lock().unwrap().push((received, Instant::now()));
    }
}

/// 200 to everything, closing connections idle for `idle`; counts the connections accepted.
pub fn idle_closing_server(idle: Duration) -> Server {
    serve_with_idle_timeout(Arc::new(|_req: &Req| (200, "ok".into())), Some(idle))
}

/// Status by path: `/fail` answers 500, `/missing` 404, anything else 200.
pub fn status_server() -> Server {
    serve(Arc::new(|req: &Req| match req.path.as_str() {
        "/fail" => (500, "boom".into()),
        "/missing" => (404, "no".into()),
        _ => (200, "ok".into()),
    }))
}

/// Echoes whether the request carried the header `x-check: yes` and a body `ping`.
pub fn echo_server() -> Server {
    serve(Arc::new(|req: &Req| {
        let header = req
            .headers
            .iter()
            .any(|(k, v)| k == "x-check" && v == "yes");
        let body = req.body == b"ping";
        if req.method == "POST" && header && body {
            (201, "created".into())
        } else {
            (400, "bad".into())
        }
    }))
}

/// A port with nothing listening.
pub fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// An HTTPS server on 127.0.0.1 with the test-only certificate in `tests/data/tls` (valid
/// for `localhost` and `127.0.0.1`, signed by `ca.pem`). It answers every request with a
/// chunked `200`, so the TLS path also exercises chunked bodies. The url uses `localhost`.
pub fn tls_server() -> Server {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    let addr = event_loop(move |stream| {
        let acceptor = acceptor.clone();
        let count = count.clone();
        async move {
            // a client that rejects the certificate ends the handshake here.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            chunked_connection(tls, count).await;
        }
    });
    Server {
        url: format!("https://localhost:{}", addr.port()),
        requests,
        timings: Timings::default(),
    }
}

/// Bodiless requests, each answered `200` with a chunked body.
async fn chunked_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    count: Arc<AtomicU64>,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut buf = Vec::with_capacity(4096);
    while next_head(&mut stream, &mut buf).await.is_some() {
        count.fetch_add(1, Ordering::Relaxed);
        let resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        if stream.write_all(resp).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// What the test proxy saw.
#[derive(Default, Debug, Clone)]
pub struct ProxyLog {
    /// `CONNECT` authorities, one per tunnel.
    pub tunnels: Vec<String>,
    /// Request lines of plain HTTP requests (absolute form).
    pub requests: Vec<String>,
    /// `Proxy-Authorization` values, from tunnels and plain requests.
    pub authorizations: Vec<String>,
}

pub struct TestProxy {
    pub url: String,
    pub log: Arc<std::sync::Mutex<ProxyLog>>,
}

/// An HTTP proxy on 127.0.0.1: `CONNECT any-name:port` opens a tunnel to 127.0.0.1:port (the
/// proxy does the name resolution, as a real one would for a public preview host), and a plain
/// request in absolute form is answered by the proxy itself with `200 proxied`.
pub fn test_proxy() -> TestProxy {
    let log = Arc::new(std::sync::Mutex::new(ProxyLog::default()));
    let l = log.clone();
    let addr = event_loop(move |stream| proxy_connection(stream, l.clone()));
    TestProxy {
        url: format!("http://{addr}"),
        log,
    }
}

async fn proxy_connection(mut stream: tokio::net::TcpStream, log: Arc<std::sync::Mutex<ProxyLog>>) {
    use tokio::io::AsyncWriteExt as _;
    let mut buf = Vec::new();
    while let Some(head) = next_head(&mut stream, &mut buf).await {
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or_default().to_string();
        let auth = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, v)| v.trim().to_string());
        if let Some(a) = auth {
            log.lock().unwrap().authorizations.push(a);
        }
        let Some(authority) = line
            .strip_prefix("CONNECT ")
            .and_then(|r| r.strip_suffix(" HTTP/1.1"))
        else {
            log.lock().unwrap().requests.push(line);
            let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nproxied";
            if stream.write_all(resp).await.is_err() {
                return;
            }
            continue;
        };
        log.lock().unwrap().tunnels.push(authority.to_string());
        let port: u16 = authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            let _ = stream.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        if stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if !buf.is_empty() && upstream.write_all(&buf).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        return;
    }
}

// The generator's settings and runs the load tests share (the integration binary's `load`
// module and the `timing` binary both include this file).

/// Timing-sensitive tests run one at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open-model settings: `rate` a second for `duration_ms` after `warmup_ms`.
pub fn open(
    rate: f64,
    duration_ms: u64,
    warmup_ms: u64,
    connections: usize,
) -> atlas::load::LoadSettings {
    atlas::load::LoadSettings {
        model: atlas::load::Model::Open,
        rate,
        duration: Duration::from_millis(duration_ms),
        warmup: Duration::from_millis(warmup_ms),
        connections,
        grace: Duration::from_secs(3),
        ..atlas::load::LoadSettings::default()
    }
}

pub fn quiet() -> impl Fn(&atlas::load::Progress) + Send + Sync + 'static {
    |_p: &atlas::load::Progress| {}
}

pub async fn run(settings: &atlas::load::LoadSettings, url: &str) -> atlas::load::Summary {
    atlas::load::run_with(settings, url, quiet())
        .await
        .expect("the load run completes")
}

/// GET requests to `paths`, each with its weight.
pub fn weighted(paths: &[(&str, u32)]) -> Vec<atlas::load::RequestSpec> {
    paths
        .iter()
        .map(|(path, weight)| atlas::load::RequestSpec {
            path: (*path).into(),
            weight: *weight,
            ..Default::default()
        })
        .collect()
}
