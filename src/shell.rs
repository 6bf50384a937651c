//! Child processes in a cleared environment: a command the user wrote (migrations, tests, the
//! app) gets `PATH`, `HOME` and what its caller names, never a token of atlas's own.
//!
//! The one place below `commands/` that reads the process environment, and only `PATH` and
//! `HOME`, which a shell needs to find programs.

use std::process::Stdio;

/// The variables a child keeps from atlas's own environment.
const KEPT: [&str; 2] = ["PATH", "HOME"];

/// `sh -c script` with no environment but `PATH` and `HOME`; stdin closed, killed on drop.
pub fn sh(script: &str) -> tokio::process::Command {
    let mut cmd = sh_exact(script, std::iter::empty::<(&str, &str)>());
    for (k, v) in kept() {
        cmd.env(k, v);
    }
    cmd
}

/// `sh -c script` with exactly `env` (the caller chose every variable); stdin closed, killed
/// on drop.
pub fn sh_exact<K, V>(
    script: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> tokio::process::Command
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// `sh -c script` for a long-lived child its caller owns (a local app): no environment but
/// `PATH` and `HOME`, stdin closed.
pub fn sh_daemon(script: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script).env_clear().stdin(Stdio::null());
    for (k, v) in kept() {
        cmd.env(k, v);
    }
    cmd
}

fn kept() -> impl Iterator<Item = (&'static str, std::ffi::OsString)> {
    KEPT.into_iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k, v)))
}

/// Where `name` is found on the `PATH` the children get: whether a child could run it.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}
