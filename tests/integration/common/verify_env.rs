#![allow(dead_code)]
//! Helpers for tests/verify.rs: a tiny real HTTP app (python3, already on the machine) whose
//! behaviour follows its `APP_VERSION` — `errors` answers 500 to one request in five, `slow`
//! adds 30 ms, `breaks-<instance>` refuses to start on that instance — the release worlds on
//! the fake Fly, and the shared runner and project directory under the names verify.rs uses.

use std::path::{Path, PathBuf};

pub const APP: &str = r#"
import itertools, os, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

version = os.environ.get("APP_VERSION", "")
instance = os.environ.get("ATLAS_INSTANCE", "")
if "breaks-" + instance in version:
    sys.exit("refusing to start %s on %s" % (version, instance))
counter = itertools.count()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # one write per response: headers and body in separate segments meet Nagle + delayed ACK
    # and every request would take 40 ms
    wbufsize = 65536
    disable_nagle_algorithm = True

    def do_GET(self):
        n = next(counter)
        status, body = 200, "ok"
        if self.path == "/version":
            body = version
        elif self.path != "/healthz":
            if "slow" in version:
                time.sleep(0.03)
            if "errors" in version and n % 5 == 0:
                status, body = 500, "boom"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Writes the app into `dir` and returns the command that runs it.
pub fn write_app(dir: &Path) -> String {
    let p = dir.join("app.py");
    std::fs::write(&p, APP).unwrap();
    format!("exec python3 {}", p.display())
}

pub use super::bin::{run_local as atlas, text};

/// A project directory for a verify test.
pub fn tempdir() -> tempfile::TempDir {
    super::project::dir("atlas-verify-")
}

pub fn report_json(dir: &Path) -> serde_json::Value {
    let p: PathBuf = dir.join("state/verify/report.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

pub fn port_open(url: &str) -> bool {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    std::net::TcpStream::connect_timeout(
        &addr.parse().unwrap(),
        std::time::Duration::from_millis(300),
    )
    .is_ok()
}

/// Fails the test, naming the Debian package, when PostgreSQL's server binaries are missing: a
/// test that needs PostgreSQL never passes without it.
pub fn require_postgres() {
    if let Err(e) = atlas::provider::local::pg::find_bindir(None) {
        panic!("this test needs PostgreSQL: {e:#}");
    }
}

/// Fly's proxy for the fake Fly: routes a request to the machine named by
/// `fly-force-instance-id` (or the first started machine of `app`) and answers as the image it
/// runs would — `errors` 500s one request in five, `slow` adds 30 ms; a machine that is not
/// `started`, or whose (id, image) is in `broken` (id `*`: any machine), answers 503.
pub struct FlyProxy {
    pub url: String,
    pub broken: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

pub async fn fly_proxy(
    state: std::sync::Arc<std::sync::Mutex<crate::common::fake_fly::FlyState>>,
    app: &str,
) -> FlyProxy {
    use axum::http::{HeaderMap, StatusCode, Uri};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let broken: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let app = app.to_string();
    let b = broken.clone();
    let handler = move |headers: HeaderMap, uri: Uri| {
        let state = state.clone();
        let app = app.clone();
        let broken = b.clone();
        let counter = counter.clone();
        async move {
            let pin = headers
                .get("fly-force-instance-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let found = {
                let s = state.lock().unwrap();
                s.apps.get(&app).and_then(|a| {
                    a.machines
                        .iter()
                        .find(|m| match &pin {
                            Some(id) => &m.id == id,
                            None => m.state == "started",
                        })
                        .map(|m| {
                            (
                                m.id.clone(),
                                m.state.clone(),
                                m.config["image"].as_str().unwrap_or("").to_string(),
                            )
                        })
                })
            };
            let Some((id, st, image)) = found else {
                return (StatusCode::NOT_FOUND, "no such machine".to_string());
            };
            let is_broken = broken
                .lock()
                .unwrap()
                .iter()
                .any(|(i, im)| (i == &id || i == "*") && im == &image);
            if st != "started" || is_broken {
                return (StatusCode::SERVICE_UNAVAILABLE, format!("{id} unavailable"));
            }
            if uri.path() == "/healthz" {
                return (StatusCode::OK, "ok".into());
            }
            if uri.path() == "/version" {
                return (StatusCode::OK, image);
            }
            if image.contains("slow") {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            }
            let n = counter.fetch_add(1, Ordering::Relaxed);
            if image.contains("errors") && n.is_multiple_of(5) {
                return (StatusCode::INTERNAL_SERVER_ERROR, "boom".into());
            }
            (StatusCode::OK, "ok".into())
        }
    };
    let router = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    FlyProxy {
        url: format!("http://{addr}"),
        broken,
    }
}

/// Adds an app with `n` started machines running `image` to the fake Fly; returns their ids.
pub fn seed_fly_app(
    fly: &crate::common::fake_fly::FakeFly,
    name: &str,
    n: usize,
    image: &str,
) -> Vec<String> {
    use crate::common::fake_fly::{FakeApp, FakeMachine};
    let mut s = fly.state.lock().unwrap();
    let mut ids = Vec::new();
    let mut machines = Vec::new();
    for i in 0..n {
        let id = format!("{name}-m{i}");
        ids.push(id.clone());
        machines.push(FakeMachine {
            id: id.clone(),
            instance_id: format!("{id}-i0"),
            state: "started".into(),
            config: serde_json::json!({
                "image": image,
                "env": {"PORT": "8080"},
                "metadata": {"fly_process_group": "app"},
                "guest": {"cpus": 1, "memory_mb": 256, "cpu_kind": "shared"},
            }),
            region: "iad".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        });
    }
    s.apps.insert(
        name.into(),
        FakeApp {
            id: format!("{name}-id"),
            name: name.into(),
            org: "atlas-org".into(),
            machines,
            secrets: Default::default(),
            secrets_version: 0,
        },
    );
    ids
}

/// (machine id, image) of every machine of `app`.
pub fn fly_images(fly: &crate::common::fake_fly::FakeFly, app: &str) -> Vec<(String, String)> {
    fly.app(app)
        .map(|a| {
            a.machines
                .iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.config["image"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
