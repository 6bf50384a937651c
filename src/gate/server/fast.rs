//! The plain path: what almost every request through a gate is (an HTTP/1.1 request with no
//! body or a `Content-Length` one, that the access rules let through to the stable version),
//! forwarded without hyper. hyper's server and client codecs, the request and response types
//! they build, and the task hand-offs between them: doing without them saved 5-8 µs of the
//! 23-26 µs of CPU a proxied request cost the gate on loopback (`bench/gate.sh`; figures in
//! `bench/RESULTS.md`), and what is left is mostly the kernel's. This path parses the head in place with `httparse` (the parser hyper uses),
//! writes the cleaned head and the body bytes already read in one write, and relays the answer
//! the same way, on one task per client connection and one upstream connection per client
//! connection, as before.
//!
//! Anything else hands the connection to hyper ([`Gate::serve_hyper`]) with the bytes read so
//! far replayed first, so hyper answers it exactly as it did before this path existed, and
//! serves the rest of that connection: heads that do not parse, are too large or have too many
//! headers (hyper's 400 and 431), HTTP/1.0, `CONNECT`, absolute-form targets, `Expect`,
//! upgrades, `Transfer-Encoding` (chunked request bodies, and every `Content-Length` and
//! `Transfer-Encoding` mix: no request smuggling past the gate), more than one
//! `Content-Length`, `Connection` naming other headers, the gate's own `/_atlas/` paths, a
//! preview with kept commits (whose routing reads `Referer` and cookies), and every request
//! the access rules do not simply let through (links, sign-in, refusals).
//!
//! What the app sees is what the hyper path sends it: origin-form, no hop-by-hop headers, none
//! of Atlas's headers or cookies, the same `X-Forwarded-*`, the route's own headers.
//! Responses are relayed as the upstream framed them (a chunked body stays chunked, its framing
//! checked as it passes); hop-by-hop headers are dropped, and a body that ends with the
//! upstream's close ends the client connection too.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::{
    ATLAS_HEADER_PREFIX, BYPASS_HEADER, COOKIE, Conn, Decision, GATE_PREFIX, Gate,
    HYPER_MAX_HEADERS, LINK_PARAM, Mode,
};
use crate::gate::respond::{
    HTML, PAGE_HEADERS, app_cookies, cookie_in, may_hold_atlas_cookie, param_in, upstream_failed,
};
use crate::http1::{self, Buf, Framing, closed};

/// The read buffers' starting size: a typical head and a small body fit at once.
const BUF: usize = 16 * 1024;
/// An upstream's response head may not exceed this (hyper's client allows about 400 KiB).
const MAX_RESPONSE_HEAD: usize = 256 * 1024;
/// Headers parsed per response; more is a bad gateway.
const MAX_RESPONSE_HEADERS: usize = 128;
/// The hop-by-hop headers the plain path drops (RFC 9110 7.6.1, as `strip_hop_by_hop` drops
/// them), besides `Upgrade`, and a request's `Transfer-Encoding` (both send a request to hyper).
/// A response's `Transfer-Encoding` is kept: its body is relayed as framed.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
];

/// Serves one client connection: plain requests here, the rest of the connection by hyper
/// from the first request that is not plain.
pub(super) async fn serve(gate: Arc<Gate>, conn: Arc<Conn>, mut client: TcpStream) {
    let limits = &gate.opts.limits;
    let max_head = limits.max_head_bytes.max(8192);
    let mut cbuf = Buf::new(BUF);
    let mut origin: Option<Origin> = None;
    let mut out = Vec::with_capacity(1024);
    let mut head_deadline = Deadline::new(limits.head_timeout);
    let mut answer_deadline = Deadline::new(limits.upstream_timeout);
    loop {
        let next = head_deadline
            .within(gate.request_head(&conn, &mut client, &mut cbuf, max_head, &mut out))
            .await;
        let mut plan = match next {
            Some(Next::Plain(p)) => p,
            Some(Next::Unusual) => {
                drop(origin);
                let io = Prefixed {
                    prefix: cbuf.bytes().to_vec(),
                    pos: 0,
                    io: client,
                };
                return gate.clone().serve_hyper(conn, io).await;
            }
            // The client closed, failed, or took longer than the head timeout (as hyper's
            // `header_read_timeout`, this includes waiting for the next request).
            Some(Next::Closed) | None => return,
        };
        cbuf.consume(plan.head);
        let in_buf = (cbuf.len() as u64).min(plan.body) as usize;
        out.extend_from_slice(&cbuf.bytes()[..in_buf]);
        cbuf.consume(in_buf);
        plan.unread = plan.body - in_buf as u64;
        match gate
            .exchange(
                &mut origin,
                &mut out,
                &mut client,
                &mut cbuf,
                &plan,
                &mut answer_deadline,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                let _ = client.shutdown().await;
                return;
            }
            Err(Failed::Before { timed_out }) => {
                let _ = client.write_all(&error_page(timed_out)).await;
                let _ = client.shutdown().await;
                return;
            }
            // Part of the answer is out: all the client can learn is that it is cut short.
            Err(Failed::Midway) => return,
        }
    }
}

/// A request head read and judged.
enum Next {
    /// Plain: its cleaned head is in `out`.
    Plain(Plan),
    /// For hyper: nothing of it was consumed.
    Unusual,
    Closed,
}

/// What the plain path needs to know of a request after its head.
struct Plan {
    /// Bytes of the client's head.
    head: usize,
    /// Its `Content-Length`.
    body: u64,
    /// How much of the body is still to be read from the client once what was read with the
    /// head is in the upstream's head buffer.
    unread: u64,
    /// The client said `Connection: close`.
    close: bool,
    /// A HEAD request: the answer has no body, whatever its headers say.
    head_method: bool,
}

/// Why an exchange failed.
enum Failed {
    /// Before any byte of an answer reached the client: it gets the gate's 502 or 504 page.
    Before {
        timed_out: bool,
    },
    Midway,
}

/// One upstream connection and its read buffer.
struct Origin {
    io: TcpStream,
    buf: Buf,
    /// Answers read on it: a connection that served one may have been closed by the app
    /// meanwhile (the keep-alive race).
    served: u64,
}

/// A response head read from the upstream.
struct Answer {
    framing: Framing,
    /// The upstream closes after this answer.
    upstream_close: bool,
}

impl Gate {
    /// Reads a request head; a plain one gets its cleaned head written to `out`.
    async fn request_head(
        &self,
        conn: &Conn,
        client: &mut TcpStream,
        cbuf: &mut Buf,
        max_head: usize,
        out: &mut Vec<u8>,
    ) -> Next {
        // More headers than hyper's stack array holds: hyper, with its own limit, decides.
        let limit = self.opts.limits.max_headers.min(HYPER_MAX_HEADERS);
        loop {
            if !cbuf.is_empty() {
                // Uninitialised: 100 empty headers written per request cost more than the
                // parse of a small head.
                let mut headers = [const { MaybeUninit::uninit() }; HYPER_MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(cbuf.bytes(), &mut headers[..limit]) {
                    Ok(httparse::Status::Complete(n)) => {
                        return match self.plain(conn, &req, n, out) {
                            Some(p) => Next::Plain(p),
                            None => Next::Unusual,
                        };
                    }
                    // hyper answers 431 to an oversized head, 400 to a malformed one.
                    Ok(httparse::Status::Partial) if cbuf.len() >= max_head => {
                        return Next::Unusual;
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Next::Unusual,
                }
            }
            match cbuf.fill(client).await {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Whether a parsed request is plain, and if so its cleaned head in `out`.
    fn plain(
        &self,
        conn: &Conn,
        req: &httparse::Request<'_, '_>,
        head: usize,
        out: &mut Vec<u8>,
    ) -> Option<Plan> {
        let (method, target) = (req.method?, req.path?);
        if req.version != Some(1)
            || method == "CONNECT"
            || !target.starts_with('/')
            || target.starts_with(GATE_PREFIX)
            || self.routes.len() > 1
        {
            return None;
        }
        let mut body = None;
        let mut close = false;
        let mut bypass = None;
        let mut host = None;
        for h in req.headers.iter() {
            let n = h.name;
            if n.eq_ignore_ascii_case("content-length") {
                if body.is_some() {
                    return None;
                }
                body = Some(strict_length(h.value)?);
            } else if n.eq_ignore_ascii_case("transfer-encoding")
                || n.eq_ignore_ascii_case("upgrade")
                || n.eq_ignore_ascii_case("expect")
            {
                return None;
            } else if n.eq_ignore_ascii_case("connection") {
                for t in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !(t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive")) {
                        // `upgrade`, or headers to drop by name: hyper's path does both.
                        return None;
                    }
                }
            } else if n.eq_ignore_ascii_case(BYPASS_HEADER) {
                bypass = bypass.or(Some(h.value));
            } else if n.eq_ignore_ascii_case("host") {
                host = host.or(Some(h.value));
            }
        }
        let cookies = || {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
                .filter_map(|h| std::str::from_utf8(h.value).ok())
        };
        let (link, session) = match self.opts.mode {
            Mode::Public => (None, None),
            mode => (
                (mode == Mode::SignedLink)
                    .then(|| {
                        target
                            .split_once('?')
                            .and_then(|(_, q)| param_in(q, LINK_PARAM))
                    })
                    .flatten(),
                bypass
                    .is_none()
                    .then(|| cookie_in(cookies(), COOKIE))
                    .flatten(),
            ),
        };
        if !matches!(self.decide(conn, bypass, link, session), Decision::Forward) {
            return None;
        }
        self.clean_head(conn, req, method, target, host, out);
        Some(Plan {
            head,
            body: body.unwrap_or(0),
            unread: body.unwrap_or(0),
            close,
            head_method: method == "HEAD",
        })
    }

    /// The head the app sees: the same rules as `clean_request_headers` on hyper's path.
    fn clean_head(
        &self,
        conn: &Conn,
        req: &httparse::Request<'_, '_>,
        method: &str,
        target: &str,
        host: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        let trust = self.opts.trust_forwarded;
        let route = &self.routes[0];
        out.clear();
        for part in [method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\n"] {
            out.extend_from_slice(part);
        }
        let mut earlier_xff = None;
        let mut trusted_proto = false;
        for h in req.headers.iter() {
            let n = h.name;
            if HOP_BY_HOP.iter().any(|d| n.eq_ignore_ascii_case(d))
                || starts_with_ignore_case(n, ATLAS_HEADER_PREFIX)
                || route
                    .headers
                    .iter()
                    .any(|(r, _)| n.eq_ignore_ascii_case(r.as_str()))
            {
                continue;
            }
            if n.eq_ignore_ascii_case("x-forwarded-for") {
                if trust {
                    earlier_xff = earlier_xff.or(Some(h.value));
                }
                continue;
            }
            if n.eq_ignore_ascii_case("x-forwarded-proto") {
                if !trust {
                    continue;
                }
                trusted_proto = true;
            }
            if !trust
                && (n.eq_ignore_ascii_case("forwarded")
                    || n.eq_ignore_ascii_case("x-forwarded-host"))
            {
                continue;
            }
            if n.eq_ignore_ascii_case("cookie") && may_hold_atlas_cookie(h.value) {
                let Ok(v) = std::str::from_utf8(h.value) else {
                    continue;
                };
                let kept = app_cookies(std::iter::once(v));
                if !kept.is_empty() {
                    header(out, "cookie", kept.join("; ").as_bytes());
                }
                continue;
            }
            header(out, n, h.value);
        }
        let peer = conn.peer_value.as_bytes();
        match earlier_xff.filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b))) {
            Some(v) => {
                out.extend_from_slice(b"x-forwarded-for: ");
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
                out.extend_from_slice(peer);
                out.extend_from_slice(b"\r\n");
            }
            None => header(out, "x-forwarded-for", peer),
        }
        if !trusted_proto {
            let proto: &[u8] = if self.opts.https { b"https" } else { b"http" };
            header(out, "x-forwarded-proto", proto);
        }
        if !trust && let Some(h) = host {
            header(out, "x-forwarded-host", h);
        }
        if host.is_none() && !route.headers.iter().any(|(n, _)| n == http::header::HOST) {
            header(out, "host", route.authority.as_str().as_bytes());
        }
        for (n, v) in &route.headers {
            header(out, n.as_str(), v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Sends the head in `out` (and `plan.unread` more body bytes from the client) upstream and
    /// relays the answer. `Ok(true)`: the client connection may carry another request.
    async fn exchange(
        &self,
        origin: &mut Option<Origin>,
        out: &mut Vec<u8>,
        client: &mut TcpStream,
        cbuf: &mut Buf,
        plan: &Plan,
        deadline: &mut Deadline,
    ) -> Result<bool, Failed> {
        let authority = self.routes[0].authority.as_str();
        let fail = |e: &dyn std::fmt::Display| {
            eprintln!("atlas gate: upstream {authority}: {e}");
            Failed::Before { timed_out: false }
        };
        let mut retried = false;
        let (mut o, answer) = loop {
            let mut o = match origin.take() {
                Some(o) => o,
                None => self
                    .open_origin()
                    .await
                    .map_err(|e| fail(&format!("{e:#}")))?,
            };
            // Only a request sent whole from the buffer can be sent again.
            let again = o.served > 0 && plan.unread == 0 && !retried;
            if let Err(e) = o.io.write_all(out).await {
                if again {
                    retried = true;
                    continue;
                }
                return Err(fail(&e));
            }
            if plan.unread > 0 {
                match copy_length(client, cbuf, &mut o.io, plan.unread).await {
                    Ok(()) => {}
                    Err(Side::Client) => return Err(Failed::Midway),
                    Err(Side::Upstream) => return Err(fail(&"the request body was cut off")),
                }
            }
            match deadline.within(response_head(&mut o, plan, out)).await {
                Some(Ok(a)) => break (o, a),
                Some(Err(HeadError::Closed)) if again => retried = true,
                Some(Err(e)) => return Err(fail(&e.what())),
                None => return Err(Failed::Before { timed_out: true }),
            }
        };
        o.served += 1;
        let relayed = relay(&mut o, client, out, answer.framing).await;
        // Bytes past the answer's end: the upstream's framing is off, the connection unusable.
        let reusable = relayed.is_ok()
            && !answer.upstream_close
            && answer.framing != Framing::UntilClose
            && o.buf.is_empty();
        if reusable {
            *origin = Some(o);
        }
        relayed.map_err(|_| Failed::Midway)?;
        Ok(!plan.close && answer.framing != Framing::UntilClose)
    }

    async fn open_origin(&self) -> anyhow::Result<Origin> {
        let addr = self.routes[0].authority.as_str();
        let io = timeout(self.opts.limits.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("connect timed out"))??;
        let _ = io.set_nodelay(true);
        Ok(Origin {
            io,
            buf: Buf::new(BUF),
            served: 0,
        })
    }
}

enum HeadError {
    /// Closed (or reset) before a byte of the answer.
    Closed,
    Io(io::Error),
    Invalid(&'static str),
}

impl HeadError {
    fn what(&self) -> String {
        match self {
            HeadError::Closed => "the connection closed before an answer".into(),
            HeadError::Io(e) => e.to_string(),
            HeadError::Invalid(why) => format!("invalid response: {why}"),
        }
    }
}

/// Reads the final response head (interim 1xx answers are dropped, as hyper's client drops
/// them) and writes the client's version of it to `out`.
async fn response_head(
    o: &mut Origin,
    plan: &Plan,
    out: &mut Vec<u8>,
) -> Result<Answer, HeadError> {
    let mut first_byte = true;
    loop {
        if !o.buf.is_empty() {
            first_byte = false;
            let mut headers = [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                o.buf.bytes(),
                &mut headers,
            );
            match parsed {
                Ok(httparse::Status::Complete(n)) => {
                    let code = resp.code.ok_or(HeadError::Invalid("no status"))?;
                    if (100..200).contains(&code) && code != 101 {
                        o.buf.consume(n);
                        continue;
                    }
                    if code == 101 {
                        return Err(HeadError::Invalid("upstream switched protocols unasked"));
                    }
                    let answer = client_head(&resp, code, plan, out)?;
                    o.buf.consume(n);
                    return Ok(answer);
                }
                Ok(httparse::Status::Partial) if o.buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(HeadError::Invalid("head too large"));
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(HeadError::Invalid("malformed head")),
            }
        }
        match o.buf.fill(&mut o.io).await {
            Ok(0) if first_byte => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Invalid("closed inside the head")),
            Ok(_) => {}
            Err(e) if first_byte && closed(&e) => return Err(HeadError::Closed),
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// The client's head of an answer: hop-by-hop headers and those its `Connection` names
/// dropped, `Content-Length` dropped beside `Transfer-Encoding` (RFC 9112 6.3), and
/// `Connection: close` when the client connection ends with it.
fn client_head(
    resp: &httparse::Response<'_, '_>,
    code: u16,
    plan: &Plan,
    out: &mut Vec<u8>,
) -> Result<Answer, HeadError> {
    let http1::Head {
        framing,
        close: upstream_close,
        coded,
        connection_named: named,
    } = http1::response(resp.version, resp.headers)
        .map_err(|_| HeadError::Invalid("content-length"))?;
    let framing = if plan.head_method || code == 204 || code == 304 {
        Framing::None
    } else {
        framing
    };
    let close = plan.close || framing == Framing::UntilClose;
    out.clear();
    // httparse read exactly three digits.
    let digits = [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&digits);
    out.push(b' ');
    match resp.reason {
        Some(r) if !r.is_empty() => out.extend_from_slice(r.as_bytes()),
        _ => {
            let canonical = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason());
            out.extend_from_slice(canonical.unwrap_or("").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name;
        if HOP_BY_HOP.iter().any(|d| name.eq_ignore_ascii_case(d))
            || name.eq_ignore_ascii_case("upgrade")
            || named
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
            || (coded && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        header(out, name, h.value);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Answer {
        framing,
        upstream_close,
    })
}

/// Relays an answer's body: the first bytes go out in one write with the head in `out`.
async fn relay(
    o: &mut Origin,
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    framing: Framing,
) -> Result<(), Side> {
    let mut first = true;
    let mut left = match framing {
        Framing::Length(l) => l,
        _ => 0,
    };
    let mut chunks = Chunks::default();
    loop {
        let avail = o.buf.bytes();
        let (take, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let t = (avail.len() as u64).min(left);
                left -= t;
                (t as usize, left == 0)
            }
            Framing::Chunked => chunks.feed(avail).ok_or(Side::Upstream)?,
            Framing::UntilClose => (avail.len(), false),
        };
        if first {
            out.extend_from_slice(&avail[..take]);
            client.write_all(out).await.map_err(|_| Side::Client)?;
            first = false;
        } else if take > 0 {
            client
                .write_all(&avail[..take])
                .await
                .map_err(|_| Side::Client)?;
        }
        o.buf.consume(take);
        if done {
            return Ok(());
        }
        match o.buf.fill(&mut o.io).await {
            Ok(0) if framing == Framing::UntilClose => return Ok(()),
            Ok(0) | Err(_) => return Err(Side::Upstream),
            Ok(_) => {}
        }
    }
}

/// Which side of a relay failed.
enum Side {
    Client,
    Upstream,
}

/// Copies `n` request body bytes from the client (its buffer first: already empty here) to
/// the upstream.
async fn copy_length(
    client: &mut TcpStream,
    cbuf: &mut Buf,
    up: &mut TcpStream,
    mut n: u64,
) -> Result<(), Side> {
    while n > 0 {
        if cbuf.is_empty() {
            match cbuf.fill(client).await {
                Ok(0) | Err(_) => return Err(Side::Client),
                Ok(_) => {}
            }
        }
        let take = (cbuf.len() as u64).min(n) as usize;
        up.write_all(&cbuf.bytes()[..take])
            .await
            .map_err(|_| Side::Upstream)?;
        cbuf.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// A chunked body's framing, checked as it passes (RFC 9112 7.1): where the body ends.
#[derive(Default)]
struct Chunks {
    state: Chunk,
    size: u64,
    digits: u8,
    /// Bytes of the current extension or trailer section, bounded.
    extra: usize,
}

#[derive(Default, Clone, Copy)]
enum Chunk {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
}

/// Chunk extensions and trailers together may not exceed this (as hyper bounds them).
const MAX_CHUNK_EXTRA: usize = 16 * 1024;

impl Chunks {
    /// Consumes bytes of the body: how many belong to it and whether it ended there; `None`
    /// if the framing is broken.
    fn feed(&mut self, b: &[u8]) -> Option<(usize, bool)> {
        let mut i = 0;
        while i < b.len() {
            if let Chunk::Data = self.state {
                let t = ((b.len() - i) as u64).min(self.size);
                i += t as usize;
                self.size -= t;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let c = b[i];
            i += 1;
            self.state = match (self.state, c) {
                (Chunk::Size, c) if c.is_ascii_hexdigit() && self.digits < 15 => {
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((c as char).to_digit(16)?);
                    Chunk::Size
                }
                (Chunk::Size, b'\r') if self.digits > 0 => Chunk::SizeLf,
                (Chunk::Size, b';' | b' ' | b'\t') if self.digits > 0 => Chunk::Ext,
                (Chunk::Ext, b'\r') => Chunk::SizeLf,
                (Chunk::Ext, c) if c != b'\n' && self.extra < MAX_CHUNK_EXTRA => {
                    self.extra += 1;
                    Chunk::Ext
                }
                (Chunk::SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data
                    }
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size,
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::Trailer, c) if c != b'\n' && self.extra < MAX_CHUNK_EXTRA => {
                    self.extra += 1;
                    self.digits = 1;
                    Chunk::Trailer
                }
                (Chunk::TrailerLf, b'\n') if self.digits == 0 => return Some((i, true)),
                (Chunk::TrailerLf, b'\n') => {
                    self.digits = 0;
                    Chunk::Trailer
                }
                _ => return None,
            };
        }
        Some((i, false))
    }
}

/// A timeout a connection sets again and again: one timer for the connection's life, moved
/// later for each wait. tokio moves a registered timer later without touching its wheel, where
/// a `tokio::time::timeout` per request would register and remove a timer every time.
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    every: Duration,
}

impl Deadline {
    fn new(every: Duration) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep(every)),
            every,
        }
    }

    /// `f`'s output, or `None` if it took longer than the timeout.
    async fn within<F: std::future::Future>(&mut self, f: F) -> Option<F::Output> {
        self.sleep.as_mut().reset(Instant::now() + self.every);
        tokio::select! {
            biased;
            out = f => Some(out),
            () = &mut self.sleep => None,
        }
    }
}

/// A client connection handed to hyper: the bytes the plain path read first, then the socket.
struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A `Content-Length` value the plain path takes: digits only (hyper decides the rest).
fn strict_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The gate's 502 or 504 page as a whole response that closes the connection.
fn error_page(timed_out: bool) -> Vec<u8> {
    let (status, body) = upstream_failed(timed_out);
    let mut r = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {HTML}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (n, v) in PAGE_HEADERS {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    r.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_framing_is_found_across_any_split() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-t: 1\r\n\r\n";
        for split in 0..body.len() {
            let mut c = Chunks::default();
            let (a, done) = c.feed(&body[..split]).unwrap();
            assert_eq!(a, split);
            assert!(!done, "ended early at {split}");
            let (b, done) = c.feed(&body[split..]).unwrap();
            assert!(done, "split {split}");
            assert_eq!(a + b, body.len());
        }
        // Bytes after the end are not the body's.
        let mut c = Chunks::default();
        assert_eq!(c.feed(b"0\r\n\r\nHTTP/1.1"), Some((5, true)));
    }

    #[test]
    fn broken_chunked_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"5\nhello",
            b"ffffffffffffffff\r\n",
        ] {
            assert_eq!(
                Chunks::default().feed(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = vec![b'a'; MAX_CHUNK_EXTRA + 10];
        let mut c = Chunks::default();
        assert!(c.feed(b"1;").is_some());
        assert_eq!(c.feed(&endless), None);
    }

    #[test]
    fn only_plain_lengths_are_taken() {
        assert_eq!(strict_length(b"12"), Some(12));
        assert_eq!(strict_length(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1, 1",
            b" 1",
            b"0x10",
            b"9999999999999999999",
        ] {
            assert_eq!(strict_length(bad), None);
        }
    }
}
