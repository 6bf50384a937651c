#![allow(dead_code)]
//! The one way the tests run the `atlas` binary (or a wrapper in front of it): with a cleared
//! environment, so that nothing of the test process (ambient `GITHUB_*` of a CI run, a
//! developer's tokens) reaches it unless the test passes it. Every area (the runner-shaped
//! action runs, the local previews, verify, the gate, plan) starts its command here and adds
//! exactly its own variables.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub const ATLAS: &str = env!("CARGO_BIN_EXE_atlas");

/// `program` with a cleared environment.
pub fn hermetic(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_clear();
    c
}

/// `atlas` with a cleared environment.
pub fn atlas() -> Command {
    hermetic(ATLAS)
}

/// `PATH` and `HOME` of the test process, where set: what a developer's shell gives
/// `atlas ... --local` (it finds PostgreSQL and the app's tools on that `PATH`).
pub fn host_env() -> Vec<(&'static str, String)> {
    ["PATH", "HOME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect()
}

/// `atlas <args>` in `dir` as a developer runs it (the host's `PATH` and `HOME`) plus
/// `extra`, to completion.
pub fn run_local(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    atlas()
        .args(args)
        .current_dir(dir)
        .envs(host_env())
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

/// (stdout, stderr) of a run, as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
