//! The load generator: keep-alive HTTP/1.1 connections, one task per connection, each request
//! serialised once before the test and sent as one write (see `wire`). Each connection keeps its
//! own copy of the serialised requests and overwrites their fixed-width `traceparent` value in
//! place before each send (`crate::trace`), so every request has a fresh trace id at no
//! allocation; the slowest few per endpoint and the first failed ones are kept by that id.
//!
//! Open model (default): request `i` is scheduled at `start + i / rate`; whichever connection is
//! free takes the next scheduled request, so the number of connections is the in-flight cap.
//! Latency is measured from the *scheduled* time (as wrk2 and k6's constant-arrival-rate do), so
//! a stalled server cannot hide its stall by slowing the generator (coordinated omission); the
//! service time (from the actual send) and the scheduling delay are kept too. Closed model: each
//! connection is a virtual user that sends as soon as its previous response arrived.
//!
//! Each connection keeps its own HDR histograms (auto-resizing, 3 significant digits, in
//! microseconds) and error map; they are merged once at the end, so memory stays flat whatever
//! the number of requests.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

use super::summary::{
    EndpointSummary, Errors, GeneratorInfo, Metrics, RunInfo, Shape, Source, Summary,
    TracedRequest, Trend,
};
use super::wire::{Conn, Failure};
use crate::config::{LoadSettings, Model, RequestSpec};
use crate::trace::TraceId;

/// How early a worker wakes before a request's scheduled time. tokio's timer wheel ticks every
/// millisecond and rounds deadlines up, and the driver's epoll timeout rounds up again, so a
/// sleep ends up to about 2 ms after its deadline.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// At most this many distinct error kinds are kept; the rest are counted as `other`.
const MAX_ERROR_KINDS: usize = 32;

/// The slowest requests kept per endpoint (by trace id).
pub const SLOWEST: usize = 5;

/// Failed requests kept by trace id, per connection and for the run.
pub const MAX_FAILED: usize = 20;

/// The `SLOWEST` slowest requests seen, in a fixed array: offering a request is one compare
/// unless it is among the slowest so far.
#[derive(Clone, Copy, Default)]
struct Slowest {
    /// Latency in µs (at least 1; 0 is an empty slot) and trace id, unordered.
    lat: [u64; SLOWEST],
    id: [TraceId; SLOWEST],
    /// The smallest latency held: a request must beat it to get in.
    floor: u64,
}

impl Slowest {
    fn offer(&mut self, lat: u64, id: TraceId) {
        if lat <= self.floor {
            return;
        }
        let mut min = 0;
        for i in 1..SLOWEST {
            if self.lat[i] < self.lat[min] {
                min = i;
            }
        }
        self.lat[min] = lat;
        self.id[min] = id;
        self.floor = self.lat.iter().copied().min().unwrap_or(0);
    }

    fn merge(&mut self, o: &Slowest) {
        for i in 0..SLOWEST {
            if o.lat[i] > 0 {
                self.offer(o.lat[i], o.id[i]);
            }
        }
    }

    /// Slowest first.
    fn sorted(&self) -> Vec<TracedRequest> {
        let mut v: Vec<(u64, TraceId)> = self
            .lat
            .iter()
            .copied()
            .zip(self.id)
            .filter(|(l, _)| *l > 0)
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        v.into_iter()
            .map(|(l, id)| TracedRequest {
                trace_id: id.to_string(),
                latency_ms: l as f64 / 1000.0,
                ..Default::default()
            })
            .collect()
    }
}

/// A failed request kept by trace id.
struct Failed {
    endpoint: usize,
    latency_us: u64,
    id: TraceId,
    kind: String,
}

impl LoadSettings {
    /// The scenario, with the default `GET /` when none is configured.
    pub fn scenario(&self) -> Vec<RequestSpec> {
        if self.requests.is_empty() {
            vec![RequestSpec::default()]
        } else {
            self.requests.clone()
        }
    }

    /// The shape recorded in summaries and compared by the gate.
    pub fn shape(&self) -> Shape {
        Shape {
            model: match self.model {
                Model::Open => "open".into(),
                Model::Closed => "closed".into(),
            },
            rate: (self.model == Model::Open).then_some(self.rate),
            vus: (self.model == Model::Closed).then_some(self.vus),
            duration_s: self.duration.as_secs_f64(),
            connections: self.in_flight_cap(),
            requests: self
                .scenario()
                .iter()
                .map(|r| format!("{} {} x{}", r.method.to_ascii_uppercase(), r.path, r.weight))
                .collect(),
        }
    }

    fn in_flight_cap(&self) -> usize {
        match self.model {
            Model::Open => self.connections,
            Model::Closed => self.vus,
        }
    }
}

/// A progress report, about once a second.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    pub total: Duration,
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over the last interval.
    pub current_rate: f64,
}

/// Where the target is and how to reach it.
struct Target {
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `scheme://host[:port]/base` without credentials or query, for the record.
    display: String,
    /// The proxy from the environment, if one applies (see `proxy`).
    proxy: Option<super::proxy::Proxy>,
}

/// A request, prepared once.
struct Endpoint {
    name: String,
    method: http::Method,
    /// The whole request as sent: request line, headers and body.
    wire: Vec<u8>,
    /// Where the `traceparent` value sits in `wire`: each connection overwrites those
    /// `trace::LEN` bytes in its own copy before each send.
    trace_at: usize,
    expect: Option<u16>,
}

impl Endpoint {
    fn ok(&self, status: u16) -> Result<(), String> {
        match self.expect {
            Some(e) if e == status => Ok(()),
            Some(e) => Err(format!("status {status} (expected {e})")),
            None if (200..400).contains(&status) => Ok(()),
            None => Err(format!("status {status}")),
        }
    }

    /// A request whose response never has a body.
    fn head(&self) -> bool {
        self.method == http::Method::HEAD
    }

    /// Whether the request may be sent again after the keep-alive race (RFC 9110 9.2.2).
    fn idempotent(&self) -> bool {
        matches!(
            self.method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
                | http::Method::TRACE
        )
    }
}

fn parse_target(
    base_url: &str,
    specs: &[RequestSpec],
    proxy_env: &[(String, String)],
) -> anyhow::Result<(Target, Vec<Endpoint>)> {
    let url = url::Url::parse(base_url).with_context(|| {
        format!("the load target {base_url:?} is not a url like http://host:port")
    })?;
    if let Some(p) = url.password() {
        crate::secret::register(p);
    }
    let host = url
        .host_str()
        .with_context(|| format!("the load target {base_url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .with_context(|| format!("the load target {base_url:?} has no port"))?;
    let tls = match url.scheme() {
        "http" => None,
        "https" => {
            let config = crate::http::tls_client_config()?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("{host:?} is not a valid tls server name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        }
        other => bail!("the load target {base_url:?} uses {other}: use http or https"),
    };
    let var = |k: &str| {
        proxy_env
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    let proxy = super::proxy::for_target(url.scheme(), &host, &var, "the load generator")?;
    if let Some(p) = &proxy {
        eprintln!(
            "load: {} through the proxy {}",
            url.host_str().unwrap_or_default(),
            p.display
        );
    }
    let default_port = url.port().is_none();
    let authority = if default_port {
        url.host_str().unwrap_or_default().to_string()
    } else {
        format!("{}:{port}", url.host_str().unwrap_or_default())
    };
    let base_path = url.path().trim_end_matches('/').to_string();
    let display = format!("{}://{authority}{base_path}", url.scheme());
    let host_value = http::HeaderValue::from_str(&authority)
        .with_context(|| format!("the load target {base_url:?} has an invalid host"))?;

    let mut endpoints = Vec::new();
    for s in specs {
        let path = if s.path.starts_with('/') {
            s.path.clone()
        } else {
            format!("/{}", s.path)
        };
        let full = format!("{base_path}{path}");
        let uri: http::Uri = full
            .parse()
            .with_context(|| format!("load request path {:?} is not a valid path", s.path))?;
        let method = http::Method::from_bytes(s.method.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("load request method {:?} is not an http method", s.method))?;
        // Names and values go through `http`'s validation: a scenario cannot smuggle a CR/LF
        // into the request.
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, host_value.clone());
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("atlas-load/", env!("CARGO_PKG_VERSION"))),
        );
        for (k, v) in &s.headers {
            if k.eq_ignore_ascii_case(crate::trace::HEADER) {
                bail!(
                    "load request header {k:?} cannot be set: Atlas sends a fresh trace id with every request"
                );
            }
            if is_sensitive_header(k) {
                // credentials in the scenario never reach a log or a summary.
                crate::secret::register(v);
            }
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .with_context(|| format!("load request header name {k:?} is invalid"))?;
            let value = http::HeaderValue::from_str(v)
                .with_context(|| format!("load request header {k:?} has an invalid value"))?;
            headers.insert(name, value);
        }
        let body = s.body.clone().unwrap_or_default().into_bytes();
        if !body.is_empty()
            || matches!(
                method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            )
        {
            headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
        }
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        // Through a proxy, plain HTTP names the whole URL (absolute form, RFC 9112 3.2.2) and
        // carries the proxy's credentials; HTTPS goes through a CONNECT tunnel unchanged.
        let target = match &proxy {
            Some(p) if tls.is_none() => {
                if let Some(a) = &p.authorization {
                    headers.insert(
                        http::header::PROXY_AUTHORIZATION,
                        http::HeaderValue::from_str(a)
                            .context("the proxy credentials are not a valid header")?,
                    );
                }
                format!("http://{authority}{path_and_query}")
            }
            _ => path_and_query.to_string(),
        };
        let mut wire = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        for (name, value) in &headers {
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(crate::trace::HEADER.as_bytes());
        wire.extend_from_slice(b": ");
        let trace_at = wire.len();
        wire.extend_from_slice(crate::trace::PLACEHOLDER);
        wire.extend_from_slice(b"\r\n\r\n");
        wire.extend_from_slice(&body);
        endpoints.push(Endpoint {
            name: s
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", method, s.path)),
            method,
            wire,
            trace_at,
            expect: s.expect,
        });
    }
    Ok((
        Target {
            host,
            port,
            tls,
            display,
            proxy,
        },
        endpoints,
    ))
}

/// Headers whose values are credentials.
fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "cookie"
        || n == "proxy-authorization"
        || ["token", "key", "secret", "auth", "password"]
            .iter()
            .any(|w| n.contains(w))
}

async fn connect(t: &Target) -> Result<Conn, String> {
    let (host, port) = match &t.proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (t.host.as_str(), t.port),
    };
    let mut tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    if let Some(p) = &t.proxy
        && t.tls.is_some()
    {
        super::proxy::tunnel(&mut tcp, p, &t.host, t.port).await?;
    }
    match &t.tls {
        None => Ok(Conn::new(Box::new(tcp))),
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| tls_kind(&e))?;
            Ok(Conn::new(Box::new(tls)))
        }
    }
}

/// The error kind of a failed TLS handshake: a certificate problem is worth telling apart
/// from a connection that went away.
fn tls_kind(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => format!("tls: invalid certificate ({c:?})"),
        Some(_) => "tls: handshake failed".into(),
        None => format!("tls: {}", e.kind()),
    }
}

/// One request on `c`, sent once more on a new connection after the keep-alive race.
/// `wire` is this connection's copy of the endpoint's request, its trace id already written.
async fn send(t: &Target, e: &Endpoint, wire: &[u8], c: &mut Conn) -> Result<u16, String> {
    match c.exchange(wire, e.head()).await {
        Ok(status) => Ok(status),
        Err(Failure::Stale) if e.idempotent() => {
            // the server closed the idle connection without reading the request (nor its
            // trace id, which goes again).
            *c = connect(t).await?;
            c.exchange(wire, e.head())
                .await
                .map_err(|f| f.kind().to_string())
        }
        Err(f) => Err(f.kind().to_string()),
    }
}

fn hist() -> Histogram<u64> {
    // auto-resizing from a tiny range: memory grows with the largest latency seen,
    // never with the request count.
    let mut h = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable_hist());
    h.auto(true);
    h
}

// `Histogram::new(3)` cannot fail (3 significant digits is in range); this keeps src/ free of
// unwrap while staying total.
fn unreachable_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 2).unwrap_or_else(|_| std::process::abort())
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// One connection's results.
struct WorkerStats {
    latency: Vec<Histogram<u64>>,
    service: Histogram<u64>,
    delay: Histogram<u64>,
    errors_per_endpoint: Vec<u64>,
    error_kinds: BTreeMap<String, u64>,
    late: u64,
    dropped: u64,
    in_flight_at_end: u64,
    warmup_requests: u64,
    slowest: Vec<Slowest>,
    /// At most `MAX_FAILED`, allocated once.
    failed: Vec<Failed>,
}

impl WorkerStats {
    fn new(endpoints: usize) -> Self {
        WorkerStats {
            latency: (0..endpoints).map(|_| hist()).collect(),
            service: hist(),
            delay: hist(),
            errors_per_endpoint: vec![0; endpoints],
            error_kinds: BTreeMap::new(),
            late: 0,
            dropped: 0,
            in_flight_at_end: 0,
            warmup_requests: 0,
            slowest: vec![Slowest::default(); endpoints],
            failed: Vec::with_capacity(MAX_FAILED),
        }
    }

    fn error(&mut self, kind: String) {
        self.add_errors(kind, 1);
    }

    fn add_errors(&mut self, kind: String, n: u64) {
        let kinds = self.error_kinds.len();
        match self.error_kinds.get_mut(&kind) {
            Some(c) => *c += n,
            None if kinds < MAX_ERROR_KINDS => {
                self.error_kinds.insert(kind, n);
            }
            None => *self.error_kinds.entry("other".into()).or_default() += n,
        }
    }

    fn merge(&mut self, o: WorkerStats) {
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            let _ = a.add(b);
        }
        let _ = self.service.add(&o.service);
        let _ = self.delay.add(&o.delay);
        for (a, b) in self
            .errors_per_endpoint
            .iter_mut()
            .zip(&o.errors_per_endpoint)
        {
            *a += b;
        }
        for (k, v) in o.error_kinds {
            self.add_errors(k, v);
        }
        self.late += o.late;
        self.dropped += o.dropped;
        self.in_flight_at_end += o.in_flight_at_end;
        self.warmup_requests += o.warmup_requests;
        for (a, b) in self.slowest.iter_mut().zip(&o.slowest) {
            a.merge(b);
        }
        let room = MAX_FAILED.saturating_sub(self.failed.len());
        self.failed.extend(o.failed.into_iter().take(room));
    }
}

/// State shared by the connections.
struct Shared {
    target: Target,
    endpoints: Vec<Endpoint>,
    /// Cumulative weights, to map a sequence number onto an endpoint.
    cumulative: Vec<u64>,
    model: Model,
    rate: f64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    hard_stop: Instant,
    timeout: Duration,
    late_after: Duration,
    next: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn endpoint_for(&self, seq: u64) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let slot = seq % total.max(1);
        self.cumulative.partition_point(|c| *c <= slot)
    }

    fn scheduled(&self, seq: u64) -> Instant {
        self.start + Duration::from_nanos((seq as f64 * 1e9 / self.rate) as u64)
    }
}

async fn worker(s: Arc<Shared>) -> WorkerStats {
    let mut st = WorkerStats::new(s.endpoints.len());
    let mut conn: Option<Conn> = None;
    // This connection's copies of the requests: the trace id is overwritten in place.
    let mut wires: Vec<Vec<u8>> = s.endpoints.iter().map(|e| e.wire.clone()).collect();
    let mut ids = crate::trace::Ids::new();
    // One timer per worker, moved later for each request: tokio extends a registered timer
    // without touching its wheel when the new deadline is later, so a request costs no timer
    // registration (a fresh `timeout_at` per request does).
    let timer = tokio::time::sleep_until(s.hard_stop.into());
    tokio::pin!(timer);
    loop {
        // Which request, and when it should leave.
        let (seq, scheduled) = match s.model {
            Model::Open => {
                let seq = s.next.fetch_add(1, Ordering::Relaxed);
                let at = s.scheduled(seq);
                if at >= s.end {
                    break;
                }
                if at > Instant::now() + TIMER_SLACK {
                    // waking early sends within TIMER_SLACK before the schedule instead of up
                    // to that much after it; the latency of an early request is then taken
                    // from its actual send (see `origin` below).
                    tokio::time::sleep_until((at - TIMER_SLACK).into()).await;
                }
                (seq, at)
            }
            Model::Closed => {
                let now = Instant::now();
                if now >= s.end {
                    break;
                }
                (s.next.fetch_add(1, Ordering::Relaxed), now)
            }
        };
        if Instant::now() >= s.hard_stop {
            st.dropped += 1;
            break;
        }
        let ep = s.endpoint_for(seq);
        let measured = scheduled >= s.measure_from;
        let at = s.endpoints[ep].trace_at;
        let trace = ids.write(&mut wires[ep][at..at + crate::trace::LEN]);

        // A live connection (reconnect after errors or a server-side close).
        let mut outcome: Result<u16, String> = Err(String::new());
        let mut sent = Instant::now();
        let mut cut_at_end = false;
        if conn.as_ref().is_none_or(|c| !c.reusable()) {
            conn = None;
            match tokio::time::timeout_at(
                s.hard_stop.min(sent + s.timeout).into(),
                connect(&s.target),
            )
            .await
            {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => outcome = Err(e),
                Err(_) if Instant::now() >= s.hard_stop => cut_at_end = true,
                Err(_) => outcome = Err("connect: timed out".into()),
            }
        }
        if let Some(c) = conn.as_mut() {
            sent = Instant::now();
            timer
                .as_mut()
                .reset(s.hard_stop.min(sent + s.timeout).into());
            tokio::select! {
                biased;
                r = send(&s.target, &s.endpoints[ep], &wires[ep], c) => outcome = r,
                _ = &mut timer => {
                    if Instant::now() >= s.hard_stop {
                        cut_at_end = true;
                    } else {
                        outcome = Err("timeout".into());
                    }
                }
            }
            if outcome.is_err() {
                // the connection's state is unknown after an error or a timeout.
                conn = None;
            }
        }
        let done = Instant::now();
        if cut_at_end {
            st.in_flight_at_end += 1;
            break;
        }
        s.done.fetch_add(1, Ordering::Relaxed);
        let outcome = outcome.and_then(|status| s.endpoints[ep].ok(status));
        if outcome.is_err() {
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
        if !measured {
            st.warmup_requests += 1;
            continue;
        }
        // A request that left early (timer slack) exists from its send; a late one from its
        // schedule: the origin is whichever came first.
        let origin = scheduled.min(sent);
        let delay = sent.saturating_duration_since(scheduled);
        if s.model == Model::Open && delay > s.late_after {
            st.late += 1;
        }
        // auto-resizing histograms grow to fit any value, so recording cannot fail.
        // (`saturating_record` would clamp to the current size instead of growing.)
        let latency = micros(done - origin);
        let _ = st.latency[ep].record(latency);
        st.slowest[ep].offer(latency, trace);
        let _ = st.service.record(micros(done - sent));
        if s.model == Model::Open {
            // a closed model sends when it is ready: it has no schedule to be late for.
            let _ = st.delay.record(delay.as_micros() as u64);
        }
        if let Err(kind) = outcome {
            st.errors_per_endpoint[ep] += 1;
            let kind = if kind.is_empty() {
                "error".into()
            } else {
                kind
            };
            if st.failed.len() < MAX_FAILED {
                st.failed.push(Failed {
                    endpoint: ep,
                    latency_us: latency,
                    id: trace,
                    kind: kind.clone(),
                });
            }
            st.error(kind);
            if s.model == Model::Closed {
                // don't spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

fn trend(h: &Histogram<u64>) -> Trend {
    let ms = |v: u64| v as f64 / 1000.0;
    if h.is_empty() {
        return Trend::default();
    }
    Trend {
        avg: h.mean() / 1000.0,
        p95: ms(h.value_at_quantile(0.95)),
        min: Some(ms(h.min())),
        med: Some(ms(h.value_at_quantile(0.5))),
        max: Some(ms(h.max())),
        p90: Some(ms(h.value_at_quantile(0.90))),
        p99: Some(ms(h.value_at_quantile(0.99))),
    }
}

#[derive(Clone, Copy)]
struct Usage {
    user: f64,
    system: f64,
    max_rss_kb: i64,
}

fn usage() -> Usage {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Usage {
            user: 0.0,
            system: 0.0,
            max_rss_kb: 0,
        };
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        user: secs(ru.ru_utime),
        system: secs(ru.ru_stime),
        max_rss_kb: ru.ru_maxrss,
    }
}

/// Progress on stderr: a refreshed line on a terminal, a line every 5 s otherwise (CI logs).
pub fn stderr_progress() -> impl Fn(&Progress) + Send + Sync + 'static {
    let tty = std::io::stderr().is_terminal();
    let last_line = std::sync::Mutex::new(Instant::now());
    move |p: &Progress| {
        let line = format!(
            "load: {:>4.0}s/{:.0}s  {} requests  {:.0} req/s  {} errors",
            p.elapsed.as_secs_f64(),
            p.total.as_secs_f64(),
            p.requests,
            p.current_rate,
            p.errors
        );
        if tty {
            eprint!("\r{line}   ");
        } else if let Ok(mut last) = last_line.lock()
            && last.elapsed() >= Duration::from_secs(5)
        {
            *last = Instant::now();
            eprintln!("{line}");
        }
    }
}

/// Runs one load test against `base_url` (the scenario's paths are relative to it) and returns
/// its summary. Progress goes to stderr; nothing is written to stdout.
pub async fn run(settings: &LoadSettings, base_url: &str) -> anyhow::Result<Summary> {
    let tty = std::io::stderr().is_terminal();
    let s = run_with(settings, base_url, stderr_progress()).await;
    if tty {
        eprintln!();
    }
    s
}

/// [`run`] with a progress callback, called about once a second.
pub async fn run_with(
    settings: &LoadSettings,
    base_url: &str,
    progress: impl Fn(&Progress) + Send + Sync + 'static,
) -> anyhow::Result<Summary> {
    let specs = settings.scenario();
    if settings.model == Model::Open && !(settings.rate > 0.0 && settings.rate.is_finite()) {
        bail!(
            "load rate {} is not a positive number of requests per second",
            settings.rate
        );
    }
    let conns = settings.in_flight_cap();
    if conns == 0 {
        bail!("load connections (or vus) must be at least 1");
    }
    if settings.duration.is_zero() {
        bail!("load duration must be longer than 0s");
    }
    if specs.iter().all(|r| r.weight == 0) {
        bail!("every load request has weight 0: give at least one a positive weight");
    }
    let (target, endpoints) = parse_target(base_url, &specs, &settings.proxy_env)?;
    let mut cumulative = Vec::with_capacity(specs.len());
    let mut acc = 0u64;
    for r in &specs {
        acc += r.weight as u64;
        cumulative.push(acc);
    }
    let before = usage();
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + settings.warmup;
    let end = measure_from + settings.duration;
    let shared = Arc::new(Shared {
        target,
        endpoints,
        cumulative,
        model: settings.model,
        rate: settings.rate,
        start,
        measure_from,
        end,
        hard_stop: end + settings.grace,
        timeout: settings.timeout,
        late_after: settings.late_after,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    let finished = Arc::new(AtomicBool::new(false));
    let reporter = {
        let shared = shared.clone();
        let finished = finished.clone();
        let total = settings.warmup + settings.duration;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = (Instant::now(), 0u64);
            while !finished.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                let done = shared.done.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, done);
                progress(&Progress {
                    elapsed: now.saturating_duration_since(shared.start).min(total),
                    total,
                    requests: done,
                    errors: shared.errors.load(Ordering::Relaxed),
                    current_rate: rate,
                });
            }
        })
    };

    let handles: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut stats = WorkerStats::new(shared.endpoints.len());
    for h in handles {
        let w = h.await.context("a load worker panicked")?;
        stats.merge(w);
    }
    finished.store(true, Ordering::Relaxed);
    reporter.abort();
    let after = usage();

    if settings.model == Model::Open {
        // requests scheduled before the deadline that no connection ever took.
        let scheduled =
            ((settings.warmup + settings.duration).as_secs_f64() * settings.rate).ceil() as u64;
        let taken = shared.next.load(Ordering::Relaxed).min(scheduled);
        stats.dropped += scheduled - taken;
    }

    let mut total_latency = hist();
    for h in &stats.latency {
        let _ = total_latency.add(h);
    }
    let count = total_latency.len();
    let errors: u64 = stats.errors_per_endpoint.iter().sum();
    let secs = settings.duration.as_secs_f64();
    let endpoints_out: Vec<EndpointSummary> = shared
        .endpoints
        .iter()
        .zip(specs.iter())
        .enumerate()
        .map(|(i, (e, spec))| EndpointSummary {
            name: e.name.clone(),
            method: e.method.to_string(),
            path: spec.path.clone(),
            count: stats.latency[i].len(),
            rate: stats.latency[i].len() as f64 / secs,
            errors: stats.errors_per_endpoint[i],
            duration: trend(&stats.latency[i]),
            slowest: stats.slowest[i].sorted(),
        })
        .collect();
    let failed = stats
        .failed
        .iter()
        .map(|f| TracedRequest {
            trace_id: f.id.to_string(),
            latency_ms: f.latency_us as f64 / 1000.0,
            endpoint: Some(shared.endpoints[f.endpoint].name.clone()),
            error: Some(f.kind.clone()),
        })
        .collect();
    let cpu_user = after.user - before.user;
    let cpu_sys = after.system - before.system;
    let all_requests = (count + stats.warmup_requests).max(1);
    let model = settings.shape().model;
    Ok(Summary {
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        metrics: Metrics {
            http_req_duration: trend(&total_latency),
            http_reqs: super::summary::Requests {
                total: count,
                rate: Some(count as f64 / secs),
            },
            errors: Errors {
                rate: if count == 0 {
                    0.0
                } else {
                    errors as f64 / count as f64
                },
                count: Some(errors),
            },
            service_time: Some(trend(&stats.service)),
            scheduling_delay: (settings.model == Model::Open).then(|| trend(&stats.delay)),
        },
        endpoints: endpoints_out,
        run: Some(RunInfo {
            model,
            target_rate: (settings.model == Model::Open).then_some(settings.rate),
            achieved_rate: count as f64 / secs,
            duration_s: secs,
            warmup_s: settings.warmup.as_secs_f64(),
            connections: conns,
            late: stats.late,
            dropped: stats.dropped,
            in_flight_at_end: stats.in_flight_at_end,
            warmup_requests: stats.warmup_requests,
            error_kinds: stats.error_kinds,
            failed,
        }),
        generator: Some(GeneratorInfo {
            cpu_user_s: cpu_user,
            cpu_system_s: cpu_sys,
            cpu_per_request_us: (cpu_user + cpu_sys) * 1e6 / all_requests as f64,
            max_rss_mb: after.max_rss_kb as f64 / 1024.0,
        }),
        settings: Some(settings.shape()),
        source: Some(Source {
            format: "atlas".into(),
            target: Some(shared.target.display.clone()),
            measured_at: None,
            host: None,
            commit: None,
        }),
        runs: Vec::new(),
    })
}
