//! The migrations runner: the user's command with `DATABASE_URL`, in a cleared environment.

use std::time::Instant;

use anyhow::Context as _;

use crate::secret::{self, Secret};

/// The output of a migrations run.
#[derive(Debug, Clone)]
pub struct MigrationRun {
    pub ok: bool,
    pub duration_ms: u64,
    /// Last 40 lines of combined output, redacted.
    pub tail: String,
}

/// Runs the migrations command with `DATABASE_URL` set, in a cleared environment (PATH, HOME)
/// so no token of atlas's own reaches it.
pub async fn run_migrations(command: &str, url: &Secret) -> anyhow::Result<MigrationRun> {
    let start = Instant::now();
    let mut cmd = crate::shell::sh(command);
    cmd.env("DATABASE_URL", url.expose())
        .env("ATLAS_PREVIEW", "1");
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run the migrations command `{command}`"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = secret::redact(&lines[lines.len().saturating_sub(40)..].join("\n"));
    Ok(MigrationRun {
        ok: out.status.success(),
        duration_ms: start.elapsed().as_millis() as u64,
        tail: if out.status.success() {
            tail
        } else {
            format!("{tail}\n(exit: {})", out.status)
        },
    })
}
