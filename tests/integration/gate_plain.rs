//! The gate's plain path (requests forwarded without hyper) against scripted upstreams on
//! loopback: what it keeps per connection, the framings it relays, the keep-alive race, the
//! hand-over of a connection to hyper mid-way, and the requests it must never take itself.

use crate::gate::{RUN, key, options, start, upstream};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atlas::gate::{self, Kind, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a scripted upstream does with each request head it reads.
type Script = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// An upstream that reads request heads (and `Content-Length` bodies) and writes whatever the
/// script says; with `one_per_connection` it closes every connection after its first answer
/// without saying so (the keep-alive race). Returns its address, the heads it read and how
/// many connections it accepted.
async fn scripted(
    script: Script,
    one_per_connection: bool,
) -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<String>>>,
    Arc<AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let conns = Arc::new(AtomicUsize::new(0));
    let (h, c) = (heads.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (h, script) = (h.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until_head(&mut s, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    let chunked = head
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    // The body's end: by its length, or after its chunks.
                    let body_end = loop {
                        if chunked {
                            if let Some(e) = chunked_end(&buf[end..]) {
                                break end + e;
                            }
                        } else if buf.len() >= end + len {
                            break end + len;
                        }
                        let mut b = [0u8; 65536];
                        let n = s.read(&mut b).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&b[..n]);
                    };
                    buf.drain(..body_end);
                    h.lock().unwrap().push(head.clone());
                    if s.write_all(&script(&head)).await.is_err() || one_per_connection {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads, conns)
}

/// Where a chunked body (without trailers) at the start of `b` ends, once it is all there.
fn chunked_end(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(&b[at..])
        else {
            return None;
        };
        at += used + size as usize + 2;
        if size == 0 {
            return (b.len() >= at).then_some(at);
        }
        if b.len() < at {
            return None;
        }
    }
}

/// Reads into `buf` until it holds a whole head; the head's length, or `None` at EOF.
async fn read_until_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes `req` on `c` and reads until `until` is in what came back (or 5 s pass).
async fn send_and_read(c: &mut TcpStream, req: &[u8], until: &str) -> String {
    c.write_all(req).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains(until) {
            let mut b = [0u8; 65536];
            match c.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap()
}

#[tokio::test]
async fn one_connection_carries_plain_requests_then_hyper_after_a_gate_path() {
    let (up, log) = upstream().await;
    let base = start(options(Mode::SignedLink, up)).await;
    let bypass = key().mint(Kind::Bypass, gate::token::now() + 600, RUN);
    let mut c = connect(&base).await;
    // Pipelined: a GET, a POST with a body, the gate's health endpoint (hyper's), a GET again
    // (now on hyper's side of the connection), all in one write.
    let req = format!(
        "GET /one HTTP/1.1\r\nHost: shop.example\r\nx-atlas-bypass: {bypass}\r\nCookie: a=1; atlas_gate=zz; b=2\r\n\r\n\
         POST /two HTTP/1.1\r\nHost: shop.example\r\nx-atlas-bypass: {bypass}\r\nContent-Length: 11\r\n\r\nhello world\
         GET /_atlas/healthz HTTP/1.1\r\nHost: shop.example\r\n\r\n\
         GET /three HTTP/1.1\r\nHost: shop.example\r\nx-atlas-bypass: {bypass}\r\nConnection: close\r\n\r\n"
    );
    let resp = send_and_read(&mut c, req.as_bytes(), "preview app /three").await;
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 4, "{resp}");
    assert!(resp.contains("preview app /one"), "{resp}");
    assert!(resp.contains("got 11 bytes"), "{resp}");
    assert!(resp.contains("\r\n\r\nok\n"), "{resp}");
    let seen = log.lock().unwrap().clone();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["/one", "/two", "/three"]);
    for s in &seen {
        assert_eq!(s.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(s.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            s.header("x-forwarded-host").as_deref(),
            Some("shop.example")
        );
        assert_eq!(s.header("host").as_deref(), Some("shop.example"));
        assert!(s.header("x-atlas-bypass").is_none(), "{s:?}");
    }
    assert_eq!(seen[0].header("cookie").as_deref(), Some("a=1; b=2"));
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body_len, 11);
}

#[tokio::test]
async fn requests_whose_framing_is_ambiguous_never_reach_the_app() {
    let (up, heads, _) = scripted(Arc::new(|_| ok("app")), false).await;
    let base = start(options(Mode::Public, up)).await;
    for req in [
        // Two lengths.
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello",
        // A length that is not a number.
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        // A coding that is not chunked, with a length: where does the body end?
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
    ] {
        let mut c = connect(&base).await;
        let resp = send_and_read(&mut c, req.as_bytes(), "\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{req:?}: {resp}");
    }
    assert!(
        heads.lock().unwrap().is_empty(),
        "{:?}",
        heads.lock().unwrap()
    );
    // Length and chunked together: the chunked framing wins (the length is dropped) and the
    // connection closes after the answer, so the app gets one request with the chunked body and
    // the bytes after it, a request hidden in the length, never reach it.
    let mut c = connect(&base).await;
    c.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("the gate should close the connection after the answer")
        .unwrap();
    let resp = String::from_utf8_lossy(&got);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("POST /a HTTP/1.1\r\n"), "{heads:?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("content-length: 40"),
        "{heads:?}"
    );
}

#[tokio::test]
async fn an_app_that_closes_idle_connections_is_reconnected_without_an_error() {
    let (up, heads, conns) = scripted(Arc::new(|_| ok("fresh")), true).await;
    let base = start(options(Mode::Public, up)).await;
    let mut c = connect(&base).await;
    for i in 0..3 {
        let req = format!("GET /n{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        // Give the app time to close its side, as an idle timeout would.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = send_and_read(&mut c, req.as_bytes(), "fresh").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
    }
    assert_eq!(heads.lock().unwrap().len(), 3);
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn answers_are_relayed_as_the_app_framed_them() {
    let script: Script = Arc::new(|head: &str| {
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\n".to_vec(),
            "/interim" => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal".to_vec(),
            "/named" => b"HTTP/1.1 200 OK\r\nConnection: x-internal, keep-alive\r\nx-internal: secret\r\nKeep-Alive: timeout=5\r\ncontent-length: 5\r\n\r\nnamed".to_vec(),
            "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec(),
            "/noreason" => b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nhi".to_vec(),
            _ => ok("plain"),
        }
    });
    let (up, heads, conns) = scripted(script, false).await;
    let base = start(options(Mode::Public, up)).await;
    let mut c = connect(&base).await;
    let resp = send_and_read(
        &mut c,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
        "x-sum: 1\r\n\r\n",
    )
    .await;
    assert!(
        resp.ends_with("5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\n"),
        "{resp}"
    );
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{resp}");
    assert!(!lower.contains("content-length"), "{resp}");
    let resp = send_and_read(&mut c, b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\n", "final").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(!resp.contains("103"), "{resp}");
    let resp = send_and_read(&mut c, b"GET /named HTTP/1.1\r\nHost: x\r\n\r\n", "named").await;
    let lower = resp.to_ascii_lowercase();
    assert!(
        !lower.contains("x-internal")
            && !lower.contains("keep-alive")
            && !lower.contains("connection:"),
        "{resp}"
    );
    let resp = send_and_read(
        &mut c,
        b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 204 No Content\r\n"), "{resp}");
    // A HEAD answer's length is the GET's; no body follows it.
    let resp = send_and_read(
        &mut c,
        b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.contains("content-length: 1000\r\n"), "{resp}");
    let resp = send_and_read(&mut c, b"GET /noreason HTTP/1.1\r\nHost: x\r\n\r\n", "hi").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    // Every answer came over the one upstream connection, the client's one still open.
    let resp = send_and_read(&mut c, b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n", "plain").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(heads.lock().unwrap().len(), 7);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_that_ends_with_the_close_ends_the_client_connection() {
    let script: Script =
        Arc::new(|_| b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec());
    let (up, _, _) = scripted(script, true).await;
    let base = start(options(Mode::Public, up)).await;
    let mut c = connect(&base).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("the gate should close the client connection")
        .unwrap();
    let resp = String::from_utf8_lossy(&got);
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close\r\n"),
        "{resp}"
    );
    assert!(resp.ends_with("\r\n\r\nuntil the end"), "{resp}");
}

#[tokio::test]
async fn a_silent_or_broken_app_gets_the_gates_pages() {
    // Answers nothing at all.
    let silent: Script = Arc::new(|_| Vec::new());
    let (up, _, _) = scripted(silent, false).await;
    let mut o = options(Mode::Public, up);
    o.limits.upstream_timeout = Duration::from_millis(300);
    let base = start(o).await;
    let mut c = connect(&base).await;
    let resp = send_and_read(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "</html>").await;
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
    assert!(resp.contains("timed out"), "{resp}");
    // Answers garbage.
    let garbage: Script = Arc::new(|_| b"SMTP ready\r\n\r\n".to_vec());
    let (up, _, _) = scripted(garbage, false).await;
    let base = start(options(Mode::Public, up)).await;
    let mut c = connect(&base).await;
    let resp = send_and_read(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "</html>").await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(resp.contains("did not answer"), "{resp}");
}

/// The same requests through the plain path and through hyper's (a gate with a kept commit
/// sends every request to hyper, whose unprefixed requests go to the stable version): the app
/// sees the same method, target, headers and body either way, with an edge trusted or not.
#[tokio::test]
async fn the_app_sees_the_same_request_from_either_path() {
    let requests: Vec<Vec<u8>> = vec![
        b"GET /a?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n".to_vec(),
        b"GET /b HTTP/1.1\r\nHost: shop.example\r\nCookie: a=1; atlas_gate=x; __Host-atlas_c=2; b=2\r\nCookie: atlas_only=1\r\n\r\n".to_vec(),
        b"GET /c HTTP/1.1\r\nHost: shop.example\r\nX-Atlas-Bypass: t\r\nx-atlas-other: y\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nForwarded: for=10.0.0.1\r\n\r\n".to_vec(),
        b"GET /d HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nTrailer: x\r\n\r\n".to_vec(),
        b"POST /e HTTP/1.1\r\nHost: shop.example\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"GET /f HTTP/1.1\r\nX-No-Host: 1\r\n\r\n".to_vec(),
        b"DELETE /g HTTP/1.1\r\nHost: shop.example\r\nX-Many: 1\r\nX-Many: 2\r\n\r\n".to_vec(),
    ];
    for trust in [false, true] {
        let (plain_up, plain_log) = upstream().await;
        let (hyper_up, hyper_log) = upstream().await;
        let mut plain = options(Mode::Public, plain_up);
        plain.trust_forwarded = trust;
        let mut via_hyper = options(Mode::Public, hyper_up);
        via_hyper.trust_forwarded = trust;
        via_hyper.commits = vec![gate::CommitRoute {
            sha: "a".repeat(40),
            upstream: gate::Upstream {
                authority: hyper_up.to_string(),
                headers: Vec::new(),
            },
        }];
        let plain_base = start(plain).await;
        let hyper_base = start(via_hyper).await;
        for req in &requests {
            for base in [&plain_base, &hyper_base] {
                let mut c = connect(base).await;
                let resp = send_and_read(&mut c, req, "</script>").await;
                assert!(resp.starts_with("HTTP/1.1 200"), "{base}: {resp}");
            }
        }
        let plain_seen = plain_log.lock().unwrap().clone();
        let hyper_seen = hyper_log.lock().unwrap().clone();
        assert_eq!(plain_seen.len(), requests.len());
        assert_eq!(hyper_seen.len(), requests.len());
        for (p, h) in plain_seen.iter().zip(&hyper_seen) {
            let mut ph = p.headers.clone();
            let mut hh = h.headers.clone();
            // Where the app sees the host it was reached at, each gate has its own port.
            for m in [&mut ph, &mut hh] {
                if let Some(v) = m.get_mut("host")
                    && v.iter().all(|x| x.starts_with("127.0.0.1:"))
                {
                    *v = vec!["<upstream>".into()];
                }
            }
            assert_eq!(
                (&p.method, &p.uri, &ph, p.body_len),
                (&h.method, &h.uri, &hh, h.body_len),
                "trust_forwarded {trust}: the plain path (left) and hyper's (right) differ"
            );
        }
    }
}
