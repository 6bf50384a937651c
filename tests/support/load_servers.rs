#![allow(dead_code)]
//! Minimal HTTP/1.1 servers on 127.0.0.1:0 for the load tests: one OS thread per connection
//! and `std::thread::sleep` for delays, so injected delays are precise to well under a
//! millisecond (a tokio timer rounds up to the next millisecond).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
}

/// Starts a server; it lives until the test process exits.
pub fn serve(handler: Handler) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = handler.clone();
            let count = count.clone();
            std::thread::spawn(move || connection(stream, handler, count));
        }
    });
    Server { url, requests }
}

fn connection(stream: TcpStream, handler: Handler, count: Arc<AtomicU64>) {
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
pub fn freeze_server(period: Duration, freeze: Duration, offset: Duration) -> Server {
    let epoch: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    serve(Arc::new(move |_req: &Req| {
        let e = *epoch.get_or_init(Instant::now);
        let since = e.elapsed().as_nanos() as u64;
        let phase = since % period.as_nanos() as u64;
        let (from, to) = (
            offset.as_nanos() as u64,
            (offset + freeze).as_nanos() as u64,
        );
        if phase >= from && phase < to {
            std::thread::sleep(Duration::from_nanos(to - phase));
        }
        (200, "ok".into())
    }))
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
