//! The `[database] seed` command of `seeded` and `fixtures` previews: run once on a new (or
//! reset) branch after the migrations, with `DATABASE_URL` set to the branch. On a platform that
//! runs tasks (Fly) it is a one-off machine in the app's image, like the migrations; elsewhere
//! `sh -c` here, in a cleared environment. Its exit code, duration and output tail go into the
//! data clause.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::contract::SeedResult;
use crate::provider::{Platform, TaskRequest};
use crate::secret::{self, Secret};

/// Lines of output kept for the data clause.
const TAIL_LINES: usize = 40;

/// Runs the seed. `task` is the migrations' task request (app, image, secrets, env) with the
/// command replaced; `url` is the branch's URI for a run here.
pub async fn run_seed(
    platform: &dyn Platform,
    mut task: TaskRequest,
    url: &Secret,
    timeout: Duration,
) -> anyhow::Result<SeedResult> {
    let command = task.command.clone();
    task.timeout = timeout;
    if let Some(out) = platform.run_task(&task).await? {
        return Ok(SeedResult {
            command,
            ran: true,
            ok: Some(out.ok),
            exit_code: out.exit_code,
            duration_ms: Some(out.duration_ms),
            output_tail: Some(secret::redact(&out.output_tail)),
        });
    }
    let start = Instant::now();
    let mut cmd = crate::shell::sh(&command);
    cmd.env("DATABASE_URL", url.expose())
        .env("ATLAS_PREVIEW", "1");
    for (k, v) in &task.env {
        cmd.env(k, v);
    }
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("cannot run the seed command `{command}`"))?,
        Err(_) => {
            return Ok(SeedResult {
                command,
                ran: true,
                ok: Some(false),
                exit_code: None,
                duration_ms: Some(start.elapsed().as_millis() as u64),
                output_tail: Some(format!("the seed did not finish within {timeout:?}")),
            });
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = secret::redact(&lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"));
    Ok(SeedResult {
        command,
        ran: true,
        ok: Some(out.status.success()),
        exit_code: out.status.code().map(i64::from),
        duration_ms: Some(start.elapsed().as_millis() as u64),
        output_tail: Some(tail),
    })
}
