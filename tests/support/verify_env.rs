#![allow(dead_code)]
//! Helpers for tests/verify.rs: a tiny real HTTP app (python3, already on the machine) whose
//! behaviour follows its `APP_VERSION` — `errors` answers 500 to one request in five, `slow`
//! adds 30 ms, `breaks-<instance>` refuses to start on that instance — and a hermetic runner
//! for the `atlas` binary.

use std::path::{Path, PathBuf};
use std::process::Output;

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

/// Runs `atlas <args>` in `dir` with a clean environment (PATH, HOME and `extra`).
pub fn atlas(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"));
    cmd.args(args).current_dir(dir).env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A temporary directory the `postgres` account can reach (the local cluster runs as it when
/// the tests run as root).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("atlas-verify-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
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

pub fn have_postgres() -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v psql >/dev/null && (command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1)")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
