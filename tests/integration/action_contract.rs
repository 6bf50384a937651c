//! The action's packaging contract, proved without a Docker engine:
//! - the binary behaves in an environment shaped exactly like the runner's (`INPUT_*`,
//!   `GITHUB_*`, the event file, `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY`), never leaking a
//!   secret: these run the binary cargo builds for the tests, so they need nothing else;
//! - the release binary for `x86_64-unknown-linux-musl` is static (it is what the image holds):
//!   the one check that needs the musl target and musl-tools. It is `#[ignore]`d with its
//!   prerequisite as the reason, and `.ci/run` (which installs both) runs it by name with
//!   `--ignored`, so it is never skipped silently and never fails a machine without the target;
//! - `action.yml` parses, declares exactly `atlas::config::INPUT_NAMES`, every output the code
//!   sets, and defaults that mean the same as "unset";
//! - README.md's input/output tables match `action.yml` (no missing and no extra rows);
//! - the Dockerfile keeps its promises (no USER/WORKDIR in the image, exec-form smoke step) and
//!   the example `workflows/atlas.toml` / `baseline.json` parse.

use crate::common::runner_env;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use runner_env::{RunnerEnv, action_inputs, fixture};

const MUSL: &str = "x86_64-unknown-linux-musl";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(manifest().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn action() -> serde_norway::Value {
    serde_norway::from_str(&read("action.yml")).expect("action.yml is valid YAML")
}

/// The binary the runner-shaped tests run: the one cargo builds for the tests. What they prove
/// depends on the code, not on how it was linked; the static link is checked on its own.
fn atlas_binary() -> &'static Path {
    Path::new(crate::common::bin::ATLAS)
}

/// The musl release binary: `ATLAS_MUSL_BIN` (what `.ci/run` builds), or else built here in the
/// same target dir, failing loudly (naming what to install) when the target is missing.
fn musl_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ATLAS_MUSL_BIN") {
            return PathBuf::from(p);
        }
        // In CI the binary under test is the one `.ci/run` built and ships; building another
        // here would prove something about a different build.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but ATLAS_MUSL_BIN is not set: .ci/run builds the {MUSL} release binary and \
             exports ATLAS_MUSL_BIN before running this test"
        );
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest().join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--bin",
                "atlas",
                "--target",
                MUSL,
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("CARGO_BUILD_TARGET")
            .current_dir(manifest())
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the {MUSL} release binary failed (needs `rustup target add {MUSL}` and \
             `apt-get install musl-tools`; .ci/run installs both):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir.join(MUSL).join("release/atlas")
    })
}

/// True when the ELF file has a PT_INTERP program header (it needs a dynamic loader).
fn has_interpreter(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

#[test]
#[ignore = "needs the x86_64-unknown-linux-musl target and musl-tools (or ATLAS_MUSL_BIN): \
            .ci/run installs them and runs this with --ignored"]
fn musl_release_binary_is_static_and_reports_its_version() {
    let bin = musl_binary();
    let bytes = std::fs::read(bin).unwrap();
    assert!(
        !has_interpreter(&bytes),
        "{} needs a dynamic loader; the distroless/static image has none",
        bin.display()
    );
    // The distroless image has no libc: the dynamic loader's opinion must agree.
    if let Ok(out) = Command::new("file").arg(bin).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("static"), "file says: {text}");
    }
    eprintln!(
        "musl release binary: {} bytes ({:.1} MiB)",
        bytes.len(),
        bytes.len() as f64 / 1048576.0
    );
    let env = RunnerEnv::new("push", &read_fixture("push.branch.created.json"), &[]);
    let out = env.run(bin, &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("atlas {}", env!("CARGO_PKG_VERSION"))
    );
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

#[test]
fn plan_in_the_runner_environment() {
    let bin = atlas_binary();
    let head = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    let pushed = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    // (event, fixture, inputs, command, pr, sha)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        Option<u64>,
        Option<&'a str>,
    );
    let cases: [Case; 6] = [
        (
            "pull_request",
            "pull_request.opened.json",
            &[],
            "preview-up",
            Some(2),
            Some(head),
        ),
        (
            "pull_request",
            "pull_request.closed.unmerged.json",
            &[],
            "preview-down",
            Some(2),
            Some(head),
        ),
        (
            "push",
            "push.branch.created.json",
            &[],
            "verify",
            None,
            Some(pushed),
        ),
        (
            "push",
            "push.tag.created.json",
            &[],
            "skip",
            None,
            Some(pushed),
        ),
        (
            "push",
            "push.tag.created.json",
            &[("tag_pattern", "simple-*")],
            "release",
            None,
            Some(pushed),
        ),
        (
            "issue_comment",
            "issue_comment.created.json",
            &[],
            "skip",
            None,
            None,
        ),
    ];
    for (event, file, inputs, command, pr, sha) in cases {
        let env = RunnerEnv::new(event, &read_fixture(file), inputs);
        let out = env.run(bin, &["plan"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `plan` prints one JSON object and does nothing else: the last line is the plan,
        // anything before it may only be workflow commands (the masks of the secrets).
        let mut lines: Vec<&str> = stdout.lines().collect();
        let last = lines.pop().unwrap_or_default();
        assert!(
            lines.iter().all(|l| l.starts_with("::add-mask::")),
            "{stdout}"
        );
        let plan: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(plan["command"], command, "{file}: {plan}");
        assert_eq!(plan["pr"].as_u64(), pr, "{file}: {plan}");
        if let Some(sha) = sha {
            assert_eq!(plan["sha"], sha, "{file}: {plan} (never the merge commit)");
        }
        assert!(plan["reason"].as_str().is_some_and(|r| !r.is_empty()));
        let keys: BTreeSet<&str> = plan
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["command", "pr", "sha", "ref", "reason"])
        );
        assert_eq!(env.output_file(), "", "plan writes no outputs");
        assert_eq!(env.summary_file(), "", "plan writes no summary");
    }
}

const SECRETS: [(&str, &str); 4] = [
    ("github_token", "ghs_contractTestToken1234567890abcdef"),
    ("neon_api_key", "neon-contract-key-9f8e7d6c5b4a"),
    ("fly_api_token", "FlyV1 fm2_contract_token_zyxwvu"),
    (
        "preview_secrets",
        "STRIPE_KEY=sk_test_contract_51abc\nSESSION_SECRET=s3ss10n-c0ntract",
    ),
];
const SECRET_VALUES: [&str; 5] = [
    "ghs_contractTestToken1234567890abcdef",
    "neon-contract-key-9f8e7d6c5b4a",
    "FlyV1 fm2_contract_token_zyxwvu",
    "sk_test_contract_51abc",
    "s3ss10n-c0ntract",
];

fn with_secrets<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = SECRETS.to_vec();
    v.extend_from_slice(&[
        ("neon_project_id", "young-meadow-123456"),
        ("fly_org", "kitchen"),
        ("image", "registry.fly.io/kitchen-previews:pr-2"),
    ]);
    v.extend_from_slice(extra);
    v
}

/// Every secret was masked, and no secret value appears anywhere a user can see.
fn assert_masked_and_never_leaked(env: &RunnerEnv, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (output, summary) = (env.output_file(), env.summary_file());
    for v in SECRET_VALUES {
        let mask = format!("::add-mask::{v}\n");
        assert!(stdout.contains(&mask), "no {mask:?} in stdout:\n{stdout}");
        let stdout_rest = stdout.replace(&mask, "");
        for (what, text) in [
            ("stdout", stdout_rest.as_str()),
            ("stderr", &*stderr),
            ("GITHUB_OUTPUT", &output),
            ("GITHUB_STEP_SUMMARY", &summary),
        ] {
            assert!(
                !text.contains(v),
                "secret {v:?} leaked into {what}:\n{text}"
            );
        }
    }
    // The runner only masks what it was told before the value is printed: masks come first.
    let lines: Vec<&str> = stdout.lines().collect();
    let first_other = lines.iter().position(|l| !l.starts_with("::add-mask::"));
    let last_mask = lines.iter().rposition(|l| l.starts_with("::add-mask::"));
    if let (Some(first), Some(last)) = (first_other, last_mask) {
        assert!(last < first, "a mask came after other output:\n{stdout}");
    }
}

fn outputs_of(env: &RunnerEnv) -> BTreeMap<String, String> {
    atlas::gha::parse_output_file(&env.output_file())
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn run_on_a_fork_pr_skips_without_cloud_calls_and_leaks_nothing() {
    let bin = atlas_binary();
    let mut payload: serde_json::Value =
        serde_json::from_str(&read_fixture("pull_request.opened.json")).unwrap();
    payload["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World".into();
    // A hostile title must stay inert: it can neither start a workflow command nor an output.
    payload["pull_request"]["title"] = "x\n::add-mask::y\nverdict=passed\n::error::forged".into();
    // Unreachable API URLs: a cloud call would fail the run, so success proves there was none.
    let env = RunnerEnv::new(
        "pull_request",
        &payload.to_string(),
        &with_secrets(&[
            ("neon_api_url", "http://127.0.0.1:9/neon"),
            ("fly_api_url", "http://127.0.0.1:9/fly"),
        ]),
    );
    let out = env.run(bin, &["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    let outputs = outputs_of(&env);
    assert_eq!(outputs.get("verdict").map(String::as_str), Some("skipped"));
    assert_eq!(
        outputs.get("commit_sha").map(String::as_str),
        Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821")
    );
    let summary = env.summary_file();
    assert!(summary.contains("fork"), "summary says why:\n{summary}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("::notice"),
        "one notice saying why:\n{stdout}"
    );
    assert!(!stdout.contains("::error::forged") && !stdout.contains("\n::add-mask::y"));
    assert_masked_and_never_leaked(&env, &out);
}

#[test]
fn run_on_an_irrelevant_event_skips_with_a_summary() {
    let bin = atlas_binary();
    let env = RunnerEnv::new(
        "issue_comment",
        &read_fixture("issue_comment.created.json"),
        &with_secrets(&[]),
    );
    let out = env.run(bin, &["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        outputs_of(&env).get("verdict").map(String::as_str),
        Some("skipped")
    );
    // The reason is user-facing markdown (escaped by the `md` filter); it names the event.
    let summary = env.summary_file();
    assert!(summary.contains("does not trigger atlas"), "{summary}");
    assert!(summary.contains("issue\\_comment"), "{summary}");
    assert_masked_and_never_leaked(&env, &out);
}

#[test]
fn bad_input_exits_2_naming_the_input_without_leaking() {
    let bin = atlas_binary();
    let env = RunnerEnv::new(
        "pull_request",
        &read_fixture("pull_request.opened.json"),
        &with_secrets(&[("fork_policy", "yolo")]),
    );
    let out = env.run(bin, &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("fork_policy"), "{stderr}");
    assert!(
        stdout.contains("::error title=atlas::"),
        "an annotation: {stdout}"
    );
    assert_eq!(env.output_file(), "");
    for v in SECRET_VALUES {
        assert!(!stderr.contains(v) && !stdout.contains(&format!("::error{v}")));
    }
}

// ---------------------------------------------------------------------------------------------
// action.yml

const OUTPUTS: [&str; 12] = [
    "preview_url",
    "commit_sha",
    "database_branch",
    "p95_ms",
    "avg_ms",
    "error_rate",
    "requests",
    "regression",
    "verdict",
    "comment_url",
    "failed_stage",
    "dashboard_path",
];

fn keys(v: &serde_norway::Value) -> Vec<String> {
    v.as_mapping()
        .expect("a mapping")
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn action_yml_declares_exactly_the_inputs_the_code_reads() {
    let doc = action();
    let declared = keys(&doc["inputs"]);
    let code: Vec<String> = atlas::config::INPUT_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (d, c): (BTreeSet<_>, BTreeSet<_>) = (declared.iter().collect(), code.iter().collect());
    assert_eq!(d.len(), declared.len(), "duplicate input in action.yml");
    assert_eq!(
        d.difference(&c).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "declared in action.yml but not in INPUT_NAMES"
    );
    assert_eq!(
        c.difference(&d).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "in INPUT_NAMES but not declared in action.yml"
    );
    for (name, spec) in doc["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        // Hyphenated names are lost in Docker actions (github/docs#32671).
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{name} must be snake_case"
        );
        let desc = spec["description"].as_str().unwrap_or_default();
        assert!(desc.len() > 20, "{name} needs a real description");
        // The command decides what it needs; the schema requires nothing.
        assert_eq!(spec["required"].as_bool(), Some(false), "{name}: required");
        let default = spec.get("default").and_then(|d| d.as_str());
        if name == "github_token" {
            assert_eq!(default, Some("${{ github.token }}"));
        } else if let Some(d) = default {
            assert!(
                !d.contains("${{"),
                "{name}: only github_token defaults to an expression"
            );
        }
    }
}

#[test]
fn action_yml_defaults_mean_the_same_as_unset() {
    // The runner passes a default as the value; Atlas must read it as it reads "" (no drift
    // between the documented default and the code's default).
    let mut with_defaults: Vec<(String, String)> = Vec::new();
    for (name, default) in action_inputs() {
        if let Some(d) = default
            && name != "github_token"
        {
            with_defaults.push((format!("INPUT_{}", name.to_ascii_uppercase()), d));
        }
    }
    assert!(with_defaults.len() >= 8, "{with_defaults:?}");
    let a = atlas::config::Config::from_vars(with_defaults).unwrap();
    let b = atlas::config::Config::from_vars(Vec::<(String, String)>::new()).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn action_yml_runs_the_container_with_documented_outputs() {
    let doc = action();
    assert_eq!(keys(&doc["outputs"]), OUTPUTS.map(String::from).to_vec());
    for (name, spec) in doc["outputs"].as_mapping().unwrap() {
        assert!(
            spec["description"].as_str().is_some_and(|d| d.len() > 10),
            "output {name:?} needs a description"
        );
    }
    assert_eq!(doc["runs"]["using"].as_str(), Some("docker"));
    let image = doc["runs"]["image"].as_str().unwrap();
    // Main builds from source; a release pins a digest (release.yml rewrites this line).
    assert!(
        image == "Dockerfile" || (image.starts_with("docker://") && image.contains("@sha256:")),
        "{image}"
    );
    let args: Vec<&str> = doc["runs"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run"]);
    assert!(
        doc["runs"].get("env").is_none(),
        "inputs reach the binary as INPUT_* only"
    );
    assert!(doc["branding"]["icon"].as_str().is_some());
    assert!(doc["branding"]["color"].as_str().is_some());
}

/// Every `set_output("name", ...)` literal in src/ names a declared output.
#[test]
fn every_output_the_code_sets_is_declared() {
    let mut found = BTreeSet::new();
    let mut stack = vec![manifest().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                // Unit tests in gha.rs write made-up outputs on purpose.
                let text = text.split("#[cfg(test)]").next().unwrap_or_default();
                for piece in text.split("set_output(\"").skip(1) {
                    if let Some(name) = piece.split('"').next() {
                        found.insert((name.to_string(), p.display().to_string()));
                    }
                }
            }
        }
    }
    assert!(found.iter().any(|(n, _)| n == "verdict"), "{found:?}");
    for (name, file) in found {
        assert!(
            OUTPUTS.contains(&name.as_str()),
            "{file} sets undeclared output {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// README drift

/// The names in the input and output tables: the tables whose header's first cell is `Input` or
/// `Output`; a row's name is its first cell, which must be one code span (`| `name` | ...`).
/// Other tables (fork policy, troubleshooting) are free to use code spans.
fn table_names(markdown: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_table = false;
    for line in markdown.lines().map(str::trim) {
        let Some(row) = line.strip_prefix('|') else {
            in_table = false;
            continue;
        };
        let first = row.split('|').next().unwrap_or_default().trim();
        if first == "Input" || first == "Output" {
            in_table = true;
        } else if in_table && !first.starts_with("---") {
            let name = first
                .strip_prefix('`')
                .and_then(|f| f.strip_suffix('`'))
                .filter(|n| !n.contains('`'))
                .unwrap_or_else(|| panic!("row {line:?}: the first cell must be `name`"));
            names.push(name.to_string());
        }
    }
    names
}

fn check_tables(file: &str, text: &str) {
    let doc = action();
    let mut expected: Vec<String> = keys(&doc["inputs"]);
    expected.extend(keys(&doc["outputs"]));
    let rows = table_names(text);
    assert!(
        !rows.is_empty(),
        "{file} has no `| Input |` / `| Output |` tables"
    );
    let (want, got): (BTreeSet<_>, BTreeSet<_>) =
        (expected.iter().collect(), rows.iter().collect());
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{file} drifted from action.yml: missing rows {missing:?}, extra rows {extra:?} \
         (paste the tables from docs/README-sections.md)"
    );
    assert_eq!(rows.len(), got.len(), "{file}: a name has two rows");
}

#[test]
fn readme_tables_match_action_yml() {
    // docs/README-sections.md holds the tables the README pastes: it must always match.
    check_tables("docs/README-sections.md", &read("docs/README-sections.md"));
    check_tables("README.md", &read("README.md"));
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and examples

#[test]
fn dockerfile_image_stage_keeps_its_promises() {
    let text = read("Dockerfile");
    let stages: Vec<&str> = text.split("\nFROM ").collect();
    let last = stages.last().unwrap();
    let instructions: Vec<&str> = last
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let has = |prefix: &str| instructions.iter().any(|l| l.starts_with(prefix));
    assert!(!has("USER"), "the runner needs root");
    assert!(!has("WORKDIR"), "the runner sets the workdir");
    assert!(has("ENTRYPOINT [\"/usr/local/bin/atlas\"]"));
    // Exec form: the image has no shell.
    assert!(has("RUN [\"/usr/local/bin/atlas\", \"--version\"]"));
    assert!(text.contains("cargo build --release --locked --target"));
    // The musl target built here is the one the test above proves static.
    assert!(text.contains(MUSL) && text.contains("musl-tools"));
    // Everything the build reads is in the context .dockerignore lets through.
    let ignore = read(".dockerignore");
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "src/**",
        "templates/**",
        "examples/kitchen/Cargo.toml",
        "examples/kitchen/main.rs",
    ] {
        assert!(
            ignore.lines().any(|l| l == format!("!{path}")),
            "{path} not in context"
        );
    }
}

#[test]
fn example_atlas_toml_and_baseline_parse() {
    let text = read("workflows/atlas.toml");
    let s = atlas::config::Settings::parse(&text, "workflows/atlas.toml").unwrap();
    assert!(s.app.name.is_some());
    assert!(!s.smoke.is_empty());
    assert!(!s.preview.secrets.is_empty());
    let baseline: serde_json::Value =
        serde_json::from_str(&read("workflows/baseline.json")).unwrap();
    for ptr in [
        "/metrics/http_req_duration/p95",
        "/metrics/http_req_duration/avg",
        "/metrics/http_reqs/total",
        "/metrics/errors/rate",
    ] {
        assert!(
            baseline.pointer(ptr).is_some_and(|v| v.is_number()),
            "{ptr}"
        );
    }
}

#[test]
fn workflows_follow_the_rules() {
    let mut files = Vec::new();
    for dir in [".github/workflows", "workflows"] {
        for e in std::fs::read_dir(manifest().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        let name = p.display();
        let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let triggers = match &doc["on"] {
            serde_norway::Value::String(s) => vec![s.clone()],
            serde_norway::Value::Sequence(v) => v
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            m => keys(m),
        };
        assert!(!triggers.is_empty(), "{name}: no triggers");
        assert!(
            !triggers.iter().any(|t| t == "pull_request_target"),
            "{name}: pull_request_target runs fork code with secrets"
        );
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!code.contains("secrets: inherit"), "{name}");
        assert!(
            doc.get("permissions").is_some(),
            "{name}: top-level permissions"
        );
        for line in text.lines() {
            let l = line.trim_start().trim_start_matches("- ");
            if let Some(uses) = l.strip_prefix("uses: ") {
                if uses.starts_with("./") {
                    continue;
                }
                let (_, rest) = uses
                    .split_once('@')
                    .unwrap_or_else(|| panic!("{name}: {l}"));
                let (sha, comment) = rest.split_once(" # ").unwrap_or((rest, ""));
                assert!(
                    sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                    "{name}: not pinned by SHA: {l}"
                );
                assert!(comment.starts_with('v'), "{name}: no version comment: {l}");
            }
            if l.starts_with("run:") || l.starts_with("run: |") {
                assert!(!l.contains("${{"), "{name}: expression in run: {l}");
            }
        }
        // Multi-line run blocks: no `${{` inside them either.
        let mut in_run = None::<usize>;
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            if let Some(i) = in_run {
                if !line.trim().is_empty() && indent <= i {
                    in_run = None;
                } else {
                    assert!(
                        !line.contains("${{"),
                        "{name}: expression in a run block: {line}"
                    );
                    continue;
                }
            }
            let t = line.trim_start().trim_start_matches("- ");
            if t.starts_with("run: |") || t.starts_with("run: >") {
                in_run = Some(indent);
            }
        }
        if code.contains("actions/checkout@") {
            assert_eq!(
                code.matches("actions/checkout@").count(),
                code.matches("persist-credentials: false").count(),
                "{name}: every checkout sets persist-credentials: false"
            );
        }
    }
}

/// A newer tag while a release is analysing its canary: the production job has one concurrency
/// group per config (not per ref) and is never cancelled in progress, so the release in flight
/// finishes or rolls back whole, and the newer tag's run waits, then runs its own chain (canary
/// analysis included) from the start against what production then runs. QA follows the same
/// rule so a deploy is never cut half-way.
#[test]
fn a_newer_tag_waits_for_the_release_in_flight_and_then_analyses_anew() {
    let doc: serde_norway::Value =
        serde_norway::from_str(&read(".github/workflows/verify.yml")).unwrap();
    for job in ["production", "qa"] {
        let c = &doc["jobs"][job]["concurrency"];
        let group = c["group"]
            .as_str()
            .unwrap_or_else(|| panic!("{job}: no concurrency group"));
        for per_run in ["github.ref", "github.sha", "github.run_id"] {
            assert!(
                !group.contains(per_run),
                "{job}: group {group} is per run ({per_run}); two releases would overlap"
            );
        }
        assert_eq!(
            c["cancel-in-progress"].as_bool(),
            Some(false),
            "{job}: a newer tag must not cancel a rollout mid-step"
        );
    }
    // The chain always starts from the QA deploy: nothing carries a previous run's analysis.
    let chain = atlas::verify::chain::build_chain(
        &atlas::config::Settings::default(),
        atlas::verify::chain::Mode::Release,
    );
    assert_eq!(chain.first(), Some(&atlas::verify::chain::Stage::QaDeploy));
    assert!(chain.contains(&atlas::verify::chain::Stage::Canary));
}

/// zizmor's auditor persona (every audit, every confidence) over action.yml and every workflow
/// runs in CI through `.ci/run` -> `.ci/lint-workflows.sh`, with zero findings allowed; this
/// keeps the step from quietly losing its persona or its files.
#[test]
fn ci_audits_the_action_and_every_workflow_with_zizmor_as_auditor() {
    let run = read(".ci/run");
    assert!(run.contains("bash .ci/lint-workflows.sh"), "{run}");
    let lint = read(".ci/lint-workflows.sh");
    let call = lint
        .lines()
        .skip_while(|l| !l.starts_with("\"$venv/bin/zizmor\""))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(call.contains("--persona=auditor"), "{call}");
    assert!(call.contains("--offline"), "{call}");
    assert!(
        call.contains("\"${workflows[@]}\" action.yml || status=1"),
        "{call}"
    );
    for dir in [".github/workflows", "workflows"] {
        assert!(lint.contains(dir), "{dir} is not linted");
    }
    assert!(
        lint.contains("if [ \"$status\" -ne 0 ]; then"),
        "a finding must fail the script"
    );
}

/// L6: `closed` then another event for the same PR. The teardown job runs in its own
/// concurrency group that is never cancelled, so no later event (an edit, a label, a push
/// racing the close) can replace a pending teardown; the up jobs share the PR's lane, where a
/// newer event cancels only an older build. (A run still building re-reads the PR and tears
/// down when it was closed: preview::up's second reconcile.)
#[test]
fn a_pending_teardown_cannot_be_replaced_by_a_later_event() {
    let doc: serde_norway::Value =
        serde_norway::from_str(&read(".github/workflows/preview.yml")).unwrap();
    let jobs = &doc["jobs"];
    let down = &jobs["down"];
    assert!(
        down["if"]
            .as_str()
            .unwrap()
            .contains("github.event.action == 'closed'"),
        "the down job does not run on closed"
    );
    let down_group = down["concurrency"]["group"].as_str().unwrap();
    assert_eq!(
        down["concurrency"]["cancel-in-progress"].as_bool(),
        Some(false)
    );
    let mut lanes = 0;
    for (name, job) in jobs.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if name == "down" {
            continue;
        }
        if let Some(g) = job["concurrency"]["group"].as_str() {
            lanes += 1;
            assert_ne!(g, down_group, "{name} shares the teardown's group");
            assert!(
                !job["if"].as_str().unwrap_or("").contains("== 'closed'"),
                "{name} runs on closed in the cancellable lane"
            );
        }
    }
    assert!(lanes >= 1, "no up lane found");
}

/// Every step of the reusable workflows that runs the action passes only inputs action.yml
/// declares, every secret it passes is one the workflow declares, and the jobs that mint links
/// (up: a gated preview and its run's bypass token; pin: the rewritten comment's fresh link)
/// get the gate secret.
#[test]
fn the_reusable_workflows_pass_declared_inputs_and_the_gate_secret_where_links_are_minted() {
    let declared_inputs = keys(&action()["inputs"]);
    let mut checked = Vec::new();
    for file in [
        ".github/workflows/preview.yml",
        ".github/workflows/sweep.yml",
        ".github/workflows/verify.yml",
    ] {
        let doc: serde_norway::Value = serde_norway::from_str(&read(file)).unwrap();
        let declared_secrets = keys(&doc["on"]["workflow_call"]["secrets"]);
        for (job, body) in doc["jobs"].as_mapping().unwrap() {
            let job = job.as_str().unwrap();
            let steps = body["steps"].as_sequence().cloned().unwrap_or_default();
            let action_steps: Vec<_> = steps
                .iter()
                .filter(|s| {
                    s["uses"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("atlas-preview/atlas@"))
                })
                .collect();
            for step in &action_steps {
                checked.push(format!("{file} {job}"));
                let with = step["with"].as_mapping().unwrap();
                for (k, v) in with {
                    let k = k.as_str().unwrap();
                    assert!(
                        declared_inputs.iter().any(|d| d == k),
                        "{file} {job}: `{k}` is no input of action.yml"
                    );
                    let v = v.as_str().unwrap_or("");
                    if let Some(s) = v
                        .strip_prefix("${{ secrets.")
                        .and_then(|r| r.strip_suffix(" }}"))
                    {
                        assert!(
                            declared_secrets.iter().any(|d| d == s),
                            "{file} {job}: secret `{s}` is not declared by the workflow"
                        );
                    }
                }
                if file.ends_with("preview.yml") && (job == "up" || job == "pin") {
                    assert_eq!(
                        with.get("gate_secret").and_then(|v| v.as_str()),
                        Some("${{ secrets.gate_secret }}"),
                        "{file} {job}: a gated preview needs the gate secret"
                    );
                }
            }
        }
    }
    for job in ["preview.yml up", "preview.yml pin", "preview.yml down"] {
        assert!(
            checked.iter().any(|c| c.ends_with(job)),
            "{job} not found in {checked:?}"
        );
    }
    assert!(checked.len() >= 5, "{checked:?}");
}
