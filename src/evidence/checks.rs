//! Checks as evidence: one HTTP check runner for `[[smoke]]` (preview) and `[verify] checks`
//! (one behaviour for both), and the integration command against QA (with `BASE_URL` and only
//! the variables it declared). Exit code, output tail and each check's result are the evidence.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt as _;

use crate::config::SmokeCheck;

/// What the integration command did.
#[derive(Debug, Clone, Serialize)]
pub struct CommandRun {
    pub command: String,
    /// `None` when it was killed (timeout) or could not start.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Last lines of stdout+stderr, redacted.
    pub output_tail: String,
}

impl CommandRun {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Keeps the last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// The environment of the integration command: `PATH`, `HOME`, `BASE_URL` and the declared
/// variables taken from `env_source` (the declared names only; anything else, secret or not,
/// is left out).
pub fn integration_env(
    base_url: &str,
    declared: &[String],
    env_source: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env = vec![("BASE_URL".to_string(), base_url.to_string())];
    for k in ["PATH", "HOME"]
        .into_iter()
        .chain(declared.iter().map(String::as_str))
    {
        if let Some(v) = env_source(k) {
            env.push((k.to_string(), v));
        }
    }
    env
}

/// Runs `command` with `sh -c` in a clean environment holding exactly `env`.
pub async fn run_command(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
    tail_lines: usize,
) -> CommandRun {
    let start = Instant::now();
    let mut cmd =
        crate::shell::sh_exact(command, env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandRun {
                command: command.to_string(),
                exit_code: None,
                timed_out: false,
                duration_ms: start.elapsed().as_millis() as u64,
                output_tail: format!("cannot start `sh -c`: {e}"),
            };
        }
    };
    // Read both pipes while waiting, so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = async move {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b).await;
        }
        b
    };
    let read_err = async move {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b).await;
        }
        b
    };
    let waited = tokio::time::timeout(timeout, async {
        let (o, e, status) = tokio::join!(read_out, read_err, child.wait());
        (o, e, status)
    })
    .await;
    let (exit_code, timed_out, text) = match waited {
        Ok((o, e, status)) => {
            let mut text = String::from_utf8_lossy(&o).into_owned();
            text.push_str(&String::from_utf8_lossy(&e));
            (status.ok().and_then(|s| s.code()), false, text)
        }
        Err(_) => {
            let _ = child.kill().await;
            (
                None,
                true,
                format!("killed after {}", humantime::format_duration(timeout)),
            )
        }
    };
    CommandRun {
        command: command.to_string(),
        exit_code,
        timed_out,
        duration_ms: start.elapsed().as_millis() as u64,
        output_tail: crate::secret::redact(&tail(&text, tail_lines)),
    }
}

/// One HTTP check's result (the contract's smoke evidence and the verify report alike).
pub type CheckResult = crate::contract::SmokeResult;

/// Runs HTTP checks (`[[smoke]]` or `[verify] checks`, named by `section` in errors) against
/// `base_url` in order. A method that is not an HTTP method is an error naming the section; a
/// body is sent as JSON. Each check carries a fresh `traceparent`, recorded in its result.
pub async fn run_checks(
    client: &reqwest::Client,
    base_url: &str,
    checks: &[SmokeCheck],
    section: &str,
) -> anyhow::Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    let mut ids = crate::trace::Ids::new();
    for c in checks {
        let start = Instant::now();
        let method = reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                anyhow::anyhow!("{section} method {:?} is not an HTTP method", c.method)
            })?;
        let url = format!("{}{}", base_url.trim_end_matches('/'), c.path);
        let mut rb = client.request(method, url);
        for (k, v) in &c.headers {
            if k.eq_ignore_ascii_case(crate::trace::HEADER) {
                anyhow::bail!(
                    "{section} header {k:?} cannot be set: Atlas sends a fresh trace id with every check"
                );
            }
            rb = rb.header(k, v);
        }
        let (traceparent, trace_id) = ids.header();
        rb = rb.header(crate::trace::HEADER, traceparent);
        if let Some(b) = &c.body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let (status, ok, detail) = match rb.send().await {
            Ok(r) => {
                let st = r.status().as_u16();
                // The app runs the PR's code: read only what the check needs.
                let (body, _) = crate::http::read_prefix(r, crate::http::CHECK_BODY_LIMIT)
                    .await
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&body);
                if st != c.status {
                    (
                        Some(st),
                        false,
                        Some(format!("expected {}, got {st}", c.status)),
                    )
                } else if let Some(want) = &c.body_contains
                    && !body.contains(want.as_str())
                {
                    (
                        Some(st),
                        false,
                        Some(format!(
                            "body does not contain {want:?} (in its first {} KiB)",
                            crate::http::CHECK_BODY_LIMIT / 1024
                        )),
                    )
                } else if let Some(not) = &c.body_excludes
                    && body.contains(not.as_str())
                {
                    (
                        Some(st),
                        false,
                        Some(format!("body contains {not:?}, which it must not")),
                    )
                } else {
                    (Some(st), true, None)
                }
            }
            Err(e) => (None, false, Some(crate::secret::redact(&format!("{e}")))),
        };
        out.push(CheckResult {
            name: c
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", c.method, c.path)),
            method: c.method.to_ascii_uppercase(),
            path: c.path.clone(),
            expected: c.status,
            status,
            ok,
            duration_ms: start.elapsed().as_millis() as u64,
            detail,
            trace_id: Some(trace_id.to_string()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_sees_base_url_and_only_declared_env() {
        let src = |k: &str| match k {
            "PATH" => std::env::var("PATH").ok(),
            "API_TOKEN" => Some("declared-value".into()),
            "PRODUCTION_SECRET" => Some("never-passed-9876".into()),
            _ => None,
        };
        let env = integration_env("http://127.0.0.1:1", &["API_TOKEN".into()], &src);
        let r = run_command(
            "echo base=$BASE_URL tok=$API_TOKEN prod=$PRODUCTION_SECRET; exit 3",
            &env,
            Duration::from_secs(10),
            5,
        )
        .await;
        assert_eq!(r.exit_code, Some(3));
        assert!(
            r.output_tail.contains("base=http://127.0.0.1:1"),
            "{}",
            r.output_tail
        );
        assert!(r.output_tail.contains("tok=declared-value"));
        assert!(!r.output_tail.contains("never-passed-9876"));
    }

    #[tokio::test]
    async fn command_timeout_is_reported() {
        let src = |k: &str| {
            if k == "PATH" {
                std::env::var("PATH").ok()
            } else {
                None
            }
        };
        let env = integration_env("x", &[], &src);
        let r = run_command("sleep 5", &env, Duration::from_millis(200), 5).await;
        assert!(r.timed_out && !r.ok());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }

    /// One loopback HTTP server that answers every request with 200 and echoes the request
    /// head and body, so a check can assert on what was sent.
    async fn echo_server() -> String {
        use tokio::io::AsyncWriteExt as _;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head, then as much body as Content-Length says.
                    loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let body = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/")
    }

    fn check(method: &str, body: Option<&str>, contains: Option<&str>) -> SmokeCheck {
        let text = format!(
            "method = {method:?}\npath = \"/items\"\n{}{}",
            body.map(|b| format!("body = {b:?}\n")).unwrap_or_default(),
            contains
                .map(|c| format!("body_contains = {c:?}\n"))
                .unwrap_or_default()
        );
        toml::from_str(&text).unwrap()
    }

    /// `[[smoke]]` and `[verify] checks` share this runner: the method is upper-cased, a body
    /// goes out as JSON, a base URL's trailing slash does not double, and a failed check says
    /// what it expected and what it got.
    #[tokio::test]
    async fn one_runner_for_smoke_and_verify_checks() {
        let base = echo_server().await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let checks = [
            check(
                "post",
                Some("{\"a\":1}"),
                Some("content-type: application/json"),
            ),
            check("get", None, Some("get /items http/1.1")),
            check("get", None, Some("nowhere in the echo")),
        ];
        let r = run_checks(&client, &base, &checks, "[[smoke]]")
            .await
            .unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].ok, "{:?}", r[0]);
        assert_eq!(r[0].method, "POST");
        assert!(r[1].ok, "{:?}", r[1]);
        assert!(!r[2].ok);
        assert_eq!(
            r[2].detail.as_deref(),
            Some("body does not contain \"nowhere in the echo\" (in its first 1024 KiB)")
        );
    }

    #[tokio::test]
    async fn a_bad_method_is_an_error_naming_the_section() {
        let client = reqwest::Client::new();
        let e = run_checks(
            &client,
            "http://127.0.0.1:9",
            &[check("GE T", None, None)],
            "[verify] checks",
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "[verify] checks method \"GE T\" is not an HTTP method"
        );
    }
}
