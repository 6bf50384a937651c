#![allow(dead_code)]
//! A throwaway project directory for running `atlas preview ... --local` against a real
//! PostgreSQL (atlas's own cluster, in the directory's state dir) and the example app.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The example app's executable (the `kitchen` workspace package), built once per test binary.
/// Its path comes from cargo's own build messages, so it is right wherever the build puts it
/// (`CARGO_TARGET_DIR` included).
pub fn kitchen() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "kitchen",
                    "--message-format=json-render-diagnostics",
                ])
                .current_dir(ROOT)
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "cargo build -p kitchen failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "kitchen")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo reported no kitchen executable")
        })
        .clone()
}

/// The kitchen's atlas.toml with absolute paths; `extra` is appended (or replaces via `patch`).
pub fn kitchen_toml(smoke_extra: &str) -> String {
    format!(
        r#"[app]
name = "kitchen"
health_path = "/healthz"
readiness_timeout = "30s"

[database]
parent = "main"
migrations = "sh {root}/examples/kitchen/migrate.sh"

[preview]
secrets = ["KITCHEN_API_KEY"]

[[smoke]]
path = "/healthz"
body_contains = "ok"

[[smoke]]
path = "/menu"
body_contains = "margherita"
{smoke_extra}
[local]
command = "exec {bin}"
state_dir = "state"
"#,
        root = ROOT,
        bin = kitchen().display()
    )
}

pub struct Env {
    pub dir: tempfile::TempDir,
    /// A unique preview secret value: it must never appear in any output, and any process that
    /// still carries it in its environment after a test is a leftover.
    pub secret: String,
    pub outputs: Vec<String>,
}

impl Env {
    pub fn new(toml: &str) -> Env {
        let dir = super::project::with_config("atlas-local-test-", toml);
        let secret = format!(
            "kitchen-secret-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        Env {
            dir,
            secret,
            outputs: Vec::new(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = super::bin::atlas();
        c.args(args)
            .current_dir(self.dir.path())
            .envs(super::bin::host_env())
            .env(
                "INPUT_PREVIEW_SECRETS",
                format!("KITCHEN_API_KEY={}", self.secret),
            );
        c
    }

    /// Runs atlas to completion, keeping its output for the secret checks.
    pub fn atlas(&mut self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        self.keep(&out);
        out
    }

    pub fn keep(&mut self, out: &Output) {
        self.outputs
            .push(String::from_utf8_lossy(&out.stdout).into_owned());
        self.outputs
            .push(String::from_utf8_lossy(&out.stderr).into_owned());
    }

    pub fn up(&mut self, pr: u64) -> Output {
        self.atlas(&[
            "preview",
            "up",
            "--local",
            "--pr",
            &pr.to_string(),
            "--sha",
            "0123456789abcdef0123456789abcdef01234567",
            "--branch",
            "feature/menu",
        ])
    }

    pub fn down(&mut self, pr: u64) -> Output {
        self.atlas(&[
            "preview",
            "down",
            "--local",
            "--pr",
            &pr.to_string(),
            "--sha",
            "0123456789abcdef0123456789abcdef01234567",
        ])
    }

    pub fn comment(&self, pr: u64) -> String {
        std::fs::read_to_string(
            self.state()
                .join("forge/comments")
                .join(format!("pr-{pr}.md")),
        )
        .unwrap_or_default()
    }

    /// The app's name for a PR (as atlas names it locally).
    pub fn app(&self, pr: u64) -> String {
        let prefix = atlas::naming::prefix(Some("kitchen"), "local/atlas-preview");
        atlas::naming::preview_app(&prefix, pr)
    }

    /// The generated password of atlas's own cluster.
    pub fn db_password(&self) -> Option<String> {
        let t = std::fs::read_to_string(self.state().join("pg/cluster.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        v["password"].as_str().map(str::to_string)
    }

    /// Invariants after any run that should have left nothing behind: no process carries this
    /// test's secret, no PostgreSQL runs from this state dir, no branch database is recorded or
    /// exists, no app state file remains.
    pub fn assert_nothing_left(&self) {
        let state = self.state();
        let state_s = state.display().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                continue;
            }
            assert!(
                !String::from_utf8_lossy(&environ).contains(&self.secret),
                "process {name} ({}) still runs with the preview's environment",
                String::from_utf8_lossy(&cmdline)
            );
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&state_s),
                "process {name} ({}) still runs from the state dir",
                String::from_utf8_lossy(&cmdline)
            );
        }
        let apps: Vec<_> = std::fs::read_dir(state.join("apps"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(apps.is_empty(), "app state left: {apps:?}");
        let recorded = std::fs::read_to_string(state.join("pg/branches.json")).unwrap_or_default();
        assert!(
            !recorded.contains("atlas_pr_"),
            "branch databases still recorded: {recorded}"
        );
        if state.join("pg/data/PG_VERSION").is_file() {
            assert!(
                self.databases().iter().all(|d| !d.starts_with("atlas_pr_")),
                "a branch database is left"
            );
        }
    }

    /// Starts the (stopped) cluster, lists its databases, stops it again.
    pub fn databases(&self) -> Vec<String> {
        // A thread of its own: callers may be inside a runtime already.
        let state = self.state();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let settings = atlas::config::LocalSettings {
                    state_dir: state.clone(),
                    ..Default::default()
                };
                let pg = atlas::provider::local::pg::LocalPg::start(&settings, &state, &mut |_| {})
                    .await
                    .unwrap();
                let dbs = pg.databases().await.unwrap();
                pg.stop().await.unwrap();
                dbs
            })
        })
        .join()
        .unwrap()
    }

    /// No secret value in any output, comment, summary, audit log or app log.
    pub fn assert_no_secrets(&self) {
        let mut texts: Vec<(String, String)> = self
            .outputs
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("output #{i}"), t.clone()))
            .collect();
        for sub in ["forge", "apps"] {
            walk(&self.state().join(sub), &mut texts);
        }
        if let Ok(t) = std::fs::read_to_string(self.state().join("audit.jsonl")) {
            texts.push(("audit.jsonl".into(), t));
        }
        let mut secrets = vec![self.secret.clone()];
        secrets.extend(self.db_password());
        for (where_, text) in texts {
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "a secret value appears in {where_}"
                );
            }
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push((p.display().to_string(), t));
        }
    }
}
