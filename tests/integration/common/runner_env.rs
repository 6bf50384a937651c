#![allow(dead_code)]
//! A scrubbed environment shaped like the one the GitHub runner gives a Docker container action:
//! the `/github/...` directory layout (under a temp dir), every `INPUT_*` declared in
//! `action.yml` (defaults applied, unset ones as `""`, exactly as the runner does), the
//! `GITHUB_*` context, `GITHUB_OUTPUT` / `GITHUB_STEP_SUMMARY` / `GITHUB_ENV` / `GITHUB_PATH` /
//! `GITHUB_STATE` files, `RUNNER_*`, `CI` and `GITHUB_ACTIONS=true`. Nothing is inherited from
//! the test process: ambient `GITHUB_*` of a CI run can never leak in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The PATH of the distroless image (the runner does not pass PATH into a container action).
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct RunnerEnv {
    pub root: tempfile::TempDir,
    pub vars: BTreeMap<String, String>,
}

/// A webhook payload of `tests/data/events` (GitHub's example payloads, see its README).
pub fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/events")
        .join(name);
    assert!(p.is_file(), "fixture {} not found", p.display());
    p
}

/// `action.yml`'s inputs with their defaults (`None` when the input has no default).
pub fn action_inputs() -> BTreeMap<String, Option<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("action.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let inputs = doc["inputs"].as_mapping().expect("action.yml has inputs");
    inputs
        .iter()
        .map(|(k, v)| {
            let default = v.get("default").map(|d| match d {
                serde_norway::Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_string(),
            });
            (k.as_str().unwrap().to_string(), default)
        })
        .collect()
}

impl RunnerEnv {
    /// A runner-shaped environment for `event_name` with `payload` as the event file.
    /// `inputs` override action.yml defaults (as a workflow's `with:` does).
    pub fn new(event_name: &str, payload: &str, inputs: &[(&str, &str)]) -> RunnerEnv {
        let root = tempfile::tempdir().unwrap();
        let gh = root.path().join("github");
        for d in [
            "home",
            "workspace",
            "workflow",
            "file_commands",
            "runner_temp",
        ] {
            std::fs::create_dir_all(gh.join(d)).unwrap();
        }
        let event_path = gh.join("workflow/event.json");
        std::fs::write(&event_path, payload).unwrap();
        let fc = gh.join("file_commands");
        let files = [
            ("GITHUB_OUTPUT", "set_output_0b1c"),
            ("GITHUB_STEP_SUMMARY", "step_summary_0b1c"),
            ("GITHUB_ENV", "set_env_0b1c"),
            ("GITHUB_PATH", "add_path_0b1c"),
            ("GITHUB_STATE", "save_state_0b1c"),
        ];
        let mut vars = BTreeMap::new();
        for (var, file) in files {
            let p = fc.join(file);
            std::fs::write(&p, "").unwrap();
            vars.insert(var.to_string(), p.display().to_string());
        }

        let json: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        let repo = json["repository"]["full_name"]
            .as_str()
            .unwrap_or("Codertocat/Hello-World")
            .to_string();
        let (git_ref, sha) = match event_name {
            "pull_request" => (
                format!("refs/pull/{}/merge", json["number"].as_u64().unwrap_or(1)),
                // The runner's GITHUB_SHA for pull_request is the *merge* commit: Atlas must
                // use the head SHA from the payload instead, so make them differ.
                "feedfacefeedfacefeedfacefeedfacefeedface".to_string(),
            ),
            _ => (
                json["ref"]
                    .as_str()
                    .unwrap_or("refs/heads/main")
                    .to_string(),
                json["after"]
                    .as_str()
                    .unwrap_or("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
                    .to_string(),
            ),
        };
        let ctx = [
            ("CI", "true".to_string()),
            ("GITHUB_ACTIONS", "true".to_string()),
            ("HOME", gh.join("home").display().to_string()),
            ("PATH", IMAGE_PATH.to_string()),
            ("GITHUB_EVENT_NAME", event_name.to_string()),
            ("GITHUB_EVENT_PATH", event_path.display().to_string()),
            (
                "GITHUB_WORKSPACE",
                gh.join("workspace").display().to_string(),
            ),
            ("GITHUB_REF", git_ref.clone()),
            (
                "GITHUB_REF_NAME",
                git_ref.rsplit('/').next().unwrap_or("").to_string(),
            ),
            ("GITHUB_SHA", sha),
            ("GITHUB_REPOSITORY", repo.clone()),
            (
                "GITHUB_REPOSITORY_OWNER",
                repo.split('/').next().unwrap_or("").to_string(),
            ),
            ("GITHUB_API_URL", "https://api.github.com".to_string()),
            ("GITHUB_SERVER_URL", "https://github.com".to_string()),
            (
                "GITHUB_GRAPHQL_URL",
                "https://api.github.com/graphql".to_string(),
            ),
            ("GITHUB_RUN_ID", "4242".to_string()),
            ("GITHUB_RUN_NUMBER", "7".to_string()),
            ("GITHUB_RUN_ATTEMPT", "1".to_string()),
            ("GITHUB_JOB", "preview".to_string()),
            ("GITHUB_ACTION", "atlas".to_string()),
            ("GITHUB_ACTOR", "Codertocat".to_string()),
            ("GITHUB_WORKFLOW", "preview".to_string()),
            ("GITHUB_HEAD_REF", String::new()),
            ("GITHUB_BASE_REF", String::new()),
            (
                "GITHUB_ACTION_REPOSITORY",
                "atlas-preview/atlas".to_string(),
            ),
            ("GITHUB_ACTION_REF", "v0.1.0".to_string()),
            ("RUNNER_OS", "Linux".to_string()),
            ("RUNNER_ARCH", "X64".to_string()),
            ("RUNNER_NAME", "GitHub Actions 2".to_string()),
            ("RUNNER_ENVIRONMENT", "github-hosted".to_string()),
            ("RUNNER_TEMP", gh.join("runner_temp").display().to_string()),
        ];
        for (k, v) in ctx {
            vars.insert(k.to_string(), v);
        }

        // Every declared input is present; unset ones as "" (the runner's behaviour).
        let overrides: BTreeMap<&str, &str> = inputs.iter().copied().collect();
        for (name, default) in action_inputs() {
            let value = match overrides.get(name.as_str()) {
                Some(v) => v.to_string(),
                // The runner evaluates `${{ github.token }}`; stand in a fake token.
                None if default.as_deref() == Some("${{ github.token }}") => {
                    "ghs_runnerDefaultToken0000000000000000".to_string()
                }
                None => default.unwrap_or_default(),
            };
            vars.insert(format!("INPUT_{}", name.to_ascii_uppercase()), value);
        }
        for k in overrides.keys() {
            assert!(
                vars.contains_key(&format!("INPUT_{}", k.to_ascii_uppercase())),
                "test passes input {k} that action.yml does not declare"
            );
        }
        RunnerEnv { root, vars }
    }

    /// `program` in the workspace with exactly these variables, ready to run.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = super::bin::hermetic(program);
        c.envs(&self.vars).current_dir(self.workspace());
        c
    }

    /// Runs `bin args` in the workspace with exactly these variables.
    pub fn run(&self, bin: &Path, args: &[&str]) -> Output {
        self.command(bin).args(args).output().unwrap()
    }

    pub fn workspace(&self) -> PathBuf {
        self.root.path().join("github/workspace")
    }

    pub fn output_file(&self) -> String {
        std::fs::read_to_string(&self.vars["GITHUB_OUTPUT"]).unwrap()
    }

    pub fn summary_file(&self) -> String {
        std::fs::read_to_string(&self.vars["GITHUB_STEP_SUMMARY"]).unwrap()
    }
}
