//! The integration stage: the configured command against QA (with `BASE_URL` and only the
//! variables it declared) and the HTTP checks of `[[verify.checks]]`. Exit code, output tail and
//! each check's result are the evidence.

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

/// One HTTP check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub method: String,
    pub path: String,
    pub expected: u16,
    pub status: Option<u16>,
    pub duration_ms: u64,
    pub ok: bool,
    pub detail: Option<String>,
}

/// Runs the HTTP checks against `base_url` in order.
pub async fn run_checks(
    client: &reqwest::Client,
    base_url: &str,
    checks: &[SmokeCheck],
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for c in checks {
        let start = Instant::now();
        let url = format!("{}{}", base_url.trim_end_matches('/'), c.path);
        let method =
            reqwest::Method::from_bytes(c.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = client.request(method, &url);
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &c.body {
            req = req.body(b.clone());
        }
        let (status, ok, detail) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                if status != c.status {
                    (Some(status), false, Some(format!("expected {}", c.status)))
                } else if let Some(want) = &c.body_contains
                    && !body.contains(want.as_str())
                {
                    (Some(status), false, Some(format!("body lacks {want:?}")))
                } else {
                    (Some(status), true, None)
                }
            }
            Err(e) => (None, false, Some(format!("request failed: {e}"))),
        };
        out.push(CheckResult {
            name: c
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", c.method, c.path)),
            method: c.method.clone(),
            path: c.path.clone(),
            expected: c.status,
            status,
            duration_ms: start.elapsed().as_millis() as u64,
            ok,
            detail: detail.map(|d| crate::secret::redact(&d)),
        });
    }
    out
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
}
