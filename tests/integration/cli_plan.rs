//! `atlas plan` as the runner calls it: the policy table over GitHub's real example payloads
//! (tests/data/events) and payloads built for the cases they lack, plus bad input.
//! Every case runs the real binary with a scrubbed, runner-shaped environment.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/events")
}

fn payload(name: &str) -> Value {
    let text = std::fs::read_to_string(events_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn atlas(args: &[&str], env: &[(&str, &str)]) -> Output {
    crate::common::bin::atlas()
        .args(args)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Runs `atlas plan --event-name <event> --event-path <path>` with no other environment.
fn plan_file(event: &str, path: &std::path::Path) -> Output {
    atlas(
        &[
            "plan",
            "--event-name",
            event,
            "--event-path",
            path.to_str().unwrap(),
        ],
        &[],
    )
}

/// Runs `atlas plan` on a payload and returns the decision.
fn plan_with(event: &str, body: &Value, inputs: &[(&str, &str)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event.json");
    std::fs::write(&path, serde_json::to_vec(body).unwrap()).unwrap();
    let mut env: Vec<(&str, &str)> = vec![
        ("GITHUB_EVENT_NAME", event),
        ("GITHUB_EVENT_PATH", path.to_str().unwrap()),
        ("GITHUB_SHA", "ffffffffffffffffffffffffffffffffffffffff"),
        ("GITHUB_REF", "refs/heads/main"),
        ("GITHUB_REPOSITORY", "Codertocat/Hello-World"),
        ("GITHUB_ACTIONS", "true"),
    ];
    env.extend_from_slice(inputs);
    let out = atlas(&["plan"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plan failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "plan prints exactly one line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

fn plan(event: &str, body: &Value) -> Value {
    plan_with(event, body, &[])
}

const HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn fork(mut pr: Value) -> Value {
    pr["pull_request"]["head"]["repo"]["full_name"] = json!("evil/Hello-World");
    pr
}

#[test]
fn real_payloads_table() {
    // (file, event name, command, pr, sha, ref)
    let cases: &[(&str, &str, &str, Option<u64>, &str)] = &[
        (
            "pull_request.opened.json",
            "pull_request",
            "preview-up",
            Some(2),
            HEAD,
        ),
        (
            "pull_request.opened.with-installation-and-org.json",
            "pull_request",
            "preview-up",
            None,
            "",
        ),
        (
            "pull_request.synchronize.json",
            "pull_request",
            "preview-up",
            None,
            "",
        ),
        (
            "pull_request.reopened.json",
            "pull_request",
            "preview-up",
            None,
            "",
        ),
        (
            "pull_request.closed.unmerged.json",
            "pull_request",
            "preview-down",
            Some(2),
            HEAD,
        ),
        (
            "pull_request.closed.unmerged.with-org.json",
            "pull_request",
            "preview-down",
            None,
            "",
        ),
        (
            "pull_request.labeled.json",
            "pull_request",
            "skip",
            Some(2),
            HEAD,
        ),
        (
            "push.tag.created.json",
            "push",
            "skip",
            None,
            "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        ),
        ("push.tag.deleted.json", "push", "skip", None, ""),
        (
            "push.branch.created.json",
            "push",
            "verify",
            None,
            "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        ),
        (
            "workflow_dispatch.json",
            "workflow_dispatch",
            "sweep",
            None,
            "ffffffffffffffffffffffffffffffffffffffff",
        ),
        (
            "issue_comment.created.json",
            "issue_comment",
            "skip",
            None,
            "",
        ),
        ("release.published.json", "release", "skip", None, ""),
        (
            "workflow_run.completed.json",
            "workflow_run",
            "skip",
            None,
            "",
        ),
        ("deployment.created.json", "deployment", "skip", None, ""),
        ("create.tag.json", "create", "skip", None, ""),
    ];
    for (file, event, command, pr, sha) in cases {
        let body = payload(file);
        let p = plan(event, &body);
        assert_eq!(p["command"], json!(command), "{file}: {p}");
        assert!(
            p["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{file}: {p}"
        );
        if let Some(n) = pr {
            assert_eq!(p["pr"], json!(n), "{file}");
        }
        if !sha.is_empty() {
            assert_eq!(p["sha"], json!(sha), "{file}");
        }
        if event == &"pull_request" {
            // The head commit, never the merge commit.
            let head = body["pull_request"]["head"]["sha"].as_str().unwrap();
            assert_eq!(p["sha"], json!(head), "{file}");
            assert_ne!(
                Some(p["sha"].as_str().unwrap()),
                body["pull_request"]["merge_commit_sha"].as_str(),
                "{file}"
            );
        }
    }
}

#[test]
fn push_to_master_default_branch_verifies_and_tag_pattern_releases() {
    let body = payload("push.branch.created.json");
    let p = plan("push", &body);
    assert_eq!(p["command"], "verify");
    assert_eq!(p["ref"], "refs/heads/master");

    let mut tag = payload("push.tag.created.json");
    tag["ref"] = json!("refs/tags/v1.4.0");
    let p = plan("push", &tag);
    assert_eq!(p["command"], "release", "{p}");
    let p = plan_with(
        "push",
        &payload("push.tag.created.json"),
        &[("INPUT_TAG_PATTERN", "simple-*")],
    );
    assert_eq!(p["command"], "release", "{p}");
}

#[test]
fn constructed_cases() {
    // merged PR -> down
    let mut merged = payload("pull_request.closed.unmerged.json");
    merged["pull_request"]["merged"] = json!(true);
    let p = plan("pull_request", &merged);
    assert_eq!(p["command"], "preview-down");
    assert!(p["reason"].as_str().unwrap().contains("merged"));

    // fork PR -> skip by default, with the reason
    let p = plan("pull_request", &fork(payload("pull_request.opened.json")));
    assert_eq!(p["command"], "skip");
    assert!(p["reason"].as_str().unwrap().contains("fork"), "{p}");

    // head repo deleted (null) -> fork
    let mut gone = payload("pull_request.synchronize.json");
    gone["pull_request"]["head"]["repo"] = Value::Null;
    let p = plan("pull_request", &gone);
    assert_eq!(p["command"], "skip", "{p}");

    // fork + label policy: synchronize skips, labeled with the trusted label deploys
    let label_policy = [
        ("INPUT_FORK_POLICY", "label"),
        ("INPUT_TRUSTED_LABEL", "safe-to-preview"),
    ];
    let p = plan_with(
        "pull_request",
        &fork(payload("pull_request.synchronize.json")),
        &label_policy,
    );
    assert_eq!(p["command"], "skip");
    assert!(
        p["reason"].as_str().unwrap().contains("safe-to-preview"),
        "{p}"
    );
    let mut labeled = fork(payload("pull_request.labeled.json"));
    labeled["label"]["name"] = json!("safe-to-preview");
    let p = plan_with("pull_request", &labeled, &label_policy);
    assert_eq!(p["command"], "preview-up", "{p}");
    let p = plan_with(
        "pull_request",
        &fork(payload("pull_request.labeled.json")),
        &label_policy,
    );
    assert_eq!(p["command"], "skip", "wrong label must not deploy: {p}");

    // dependabot is untrusted unless configured
    let mut bot = payload("pull_request.opened.json");
    bot["pull_request"]["user"]["login"] = json!("dependabot[bot]");
    assert_eq!(plan("pull_request", &bot)["command"], "skip");
    assert_eq!(
        plan_with("pull_request", &bot, &[("INPUT_TRUST_DEPENDABOT", "true")])["command"],
        "preview-up"
    );

    // push to a non-default branch, deleted branch
    let mut feature = payload("push.branch.created.json");
    feature["ref"] = json!("refs/heads/feature/x");
    assert_eq!(plan("push", &feature)["command"], "skip");
    let mut deleted = payload("push.branch.created.json");
    deleted["deleted"] = json!(true);
    deleted["after"] = json!("0000000000000000000000000000000000000000");
    let p = plan("push", &deleted);
    assert_eq!(p["command"], "skip");
    assert!(p["reason"].as_str().unwrap().contains("deleted"));

    // schedule
    let p = plan(
        "schedule",
        &json!({"schedule": "17 3 * * *", "repository": {"full_name": "o/r"}}),
    );
    assert_eq!(p["command"], "sweep");

    // workflow_dispatch with inputs
    let mut wd = payload("workflow_dispatch.json");
    wd["inputs"] = json!({"command": "preview-up", "pr": "42"});
    let p = plan("workflow_dispatch", &wd);
    assert_eq!(
        (p["command"].clone(), p["pr"].clone()),
        (json!("preview-up"), json!(42))
    );
    wd["inputs"] = json!({"command": "preview-down"});
    assert_eq!(plan("workflow_dispatch", &wd)["command"], "skip");
    wd["inputs"] = json!({"command": "release"});
    assert_eq!(plan("workflow_dispatch", &wd)["command"], "release");
    wd["inputs"] = json!({"command": "rm -rf /"});
    assert_eq!(plan("workflow_dispatch", &wd)["command"], "skip");
}

#[test]
fn hostile_user_text_stays_data() {
    let mut pr = payload("pull_request.opened.json");
    let long = "A".repeat(70_000);
    pr["pull_request"]["title"] = json!(format!(
        "{{{{ 7*7 }}}} <script> @octocat ::error::x \u{202e}{long}"
    ));
    pr["pull_request"]["head"]["ref"] = json!("feat/$(rm -rf /)\n::set-output name=verdict::pass");
    let p = plan("pull_request", &pr);
    assert_eq!(p["command"], "preview-up");
    let s = p.to_string();
    assert!(
        !s.contains("rm -rf") && !s.contains("octocat"),
        "user text must not reach the plan: {s}"
    );
}

#[test]
fn bad_input_is_a_clear_error_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let truncated = write("t.json", br#"{"action": "opened", "pull_request": {"#);
    let wrong = write(
        "w.json",
        br#"{"action": "opened", "number": "two", "pull_request": {"number": "two"}}"#,
    );
    let nul = write("n.json", b"{\"action\": \"op\0ened\"}");
    let not_object = write("a.json", b"[1,2]");
    let cases: Vec<(String, PathBuf, &str)> = vec![
        ("pull_request".into(), truncated, "not valid JSON"),
        ("pull_request".into(), wrong, "number"),
        ("pull_request".into(), nul, "not valid JSON"),
        ("push".into(), not_object, "not a JSON object"),
        (
            "push".into(),
            dir.path().join("missing.json"),
            "cannot read the event payload",
        ),
    ];
    for (event, path, needle) in cases {
        let out = plan_file(&event, &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{event} {}: {err}",
            path.display()
        );
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        assert!(!err.contains("panicked"));
        assert!(out.stdout.is_empty());
    }
    // No event at all.
    let out = atlas(&["plan"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GITHUB_EVENT_NAME"));
}

#[test]
fn bad_inputs_fail_before_anything_and_never_print_secrets() {
    let body = payload("pull_request.opened.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.json");
    std::fs::write(&path, body.to_string()).unwrap();
    let out = atlas(
        &["plan"],
        &[
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_EVENT_PATH", path.to_str().unwrap()),
            ("GITHUB_ACTIONS", "true"),
            ("INPUT_FLY_API_TOKEN", "fo1_super-secret-token-value"),
            ("INPUT_TTL", "forever"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("input `ttl` is invalid"), "{all}");
    // The runner hides masked values; `::add-mask::` is the one place the value may appear.
    assert!(
        all.contains("::add-mask::fo1_super-secret-token-value\n"),
        "masked first: {all}"
    );
    let rest: String = all
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect();
    assert!(!rest.contains("fo1_super-secret-token-value"), "{all}");
}

#[test]
fn help_lists_every_subcommand() {
    let out = atlas(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "run", "plan", "preview", "verify", "release", "sweep", "load", "baseline", "demo",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{help}"
        );
    }
    let out = atlas(&["--version"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("atlas "));
}

/// `command: plan` on `atlas run` (the action's entry point) prints the decision and runs
/// nothing: with no provider token at all, a preview-up or preview-down would fail on the
/// missing inputs, so success here means no flow started.
#[test]
fn run_with_command_plan_prints_the_decision_and_runs_nothing() {
    for (file, want) in [
        ("pull_request.opened.json", "preview-up"),
        ("pull_request.closed.unmerged.json", "preview-down"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.json");
        std::fs::write(&path, serde_json::to_vec(&payload(file)).unwrap()).unwrap();
        let output = dir.path().join("output");
        let summary = dir.path().join("summary");
        std::fs::write(&output, "").unwrap();
        std::fs::write(&summary, "").unwrap();
        let out = atlas(
            &["run"],
            &[
                ("GITHUB_EVENT_NAME", "pull_request"),
                ("GITHUB_EVENT_PATH", path.to_str().unwrap()),
                ("GITHUB_SHA", "ffffffffffffffffffffffffffffffffffffffff"),
                ("GITHUB_REF", "refs/heads/main"),
                ("GITHUB_REPOSITORY", "Codertocat/Hello-World"),
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_OUTPUT", output.to_str().unwrap()),
                ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
                ("INPUT_COMMAND", "plan"),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decision: Value = stdout
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("{file}: no decision printed: {stdout}"));
        assert_eq!(decision["command"], want, "{file}: {decision}");
        assert_eq!(decision["dry_run"], true, "{file}: {decision}");
        assert!(stdout.contains("plan only"), "{file}: {stdout}");
        // Nothing ran, so nothing was reported as run.
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "", "{file}");
        assert_eq!(std::fs::read_to_string(&summary).unwrap(), "", "{file}");
    }
}

/// NUL and invalid UTF-8 in the event: an escaped NUL inside strings is data (the plan is made,
/// nothing panics, no raw NUL reaches the output); bytes that are not UTF-8 or a lone surrogate
/// are a one-line error naming the payload, exit 2.
#[test]
fn nul_and_invalid_utf8_in_event_strings_are_handled() {
    let mut nul = payload("pull_request.opened.json");
    nul["pull_request"]["title"] = json!("menu\u{0}title");
    nul["pull_request"]["head"]["ref"] = json!("feature\u{0}/x");
    nul["pull_request"]["user"]["login"] = json!("octo\u{0}cat");
    let p = plan("pull_request", &nul);
    assert_eq!(p["command"], "preview-up", "{p}");
    let p = plan("pull_request", &fork(nul.clone()));
    assert_eq!(p["command"], "skip", "{p}");
    let mut label = fork(payload("pull_request.labeled.json"));
    label["label"]["name"] = json!("atlas:preview\u{0}");
    let p = plan_with("pull_request", &label, &[("INPUT_FORK_POLICY", "label")]);
    assert_eq!(
        p["command"], "skip",
        "a label with a NUL is not the label: {p}"
    );
    assert!(!p.to_string().contains('\u{0}'), "{p}");

    let dir = tempfile::tempdir().unwrap();
    let text = serde_json::to_string(&payload("pull_request.opened.json")).unwrap();
    let bad_utf8 = dir.path().join("b.json");
    let mut bytes = text
        .replacen("\"title\":\"", "\"title\":\"\u{1}", 1)
        .into_bytes();
    let at = bytes.iter().position(|b| *b == 1).unwrap();
    bytes[at] = 0xFF;
    std::fs::write(&bad_utf8, &bytes).unwrap();
    let surrogate = dir.path().join("s.json");
    std::fs::write(
        &surrogate,
        text.replacen("\"title\":\"", "\"title\":\"\\ud800", 1),
    )
    .unwrap();
    for (path, needle) in [(&bad_utf8, "valid UTF-8"), (&surrogate, "not valid JSON")] {
        let out = plan_file("pull_request", path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        assert!(!err.contains("panicked"));
    }
}

/// PR number 0, past u64, negative or fractional: a validation error naming the field. A null
/// head repository (a deleted fork) is untrusted: skipped under every fork policy, with no label
/// able to approve it under `skip`.
#[test]
fn pr_number_zero_or_huge_is_rejected_and_a_null_head_repo_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let base = serde_json::to_string(&payload("pull_request.opened.json")).unwrap();
    let n = payload("pull_request.opened.json")["pull_request"]["number"].clone();
    for bad in ["0", "18446744073709551616", "-2", "2.5", "1e30"] {
        let text = base.replace(&format!("\"number\":{n}"), &format!("\"number\":{bad}"));
        assert_ne!(text, base, "the fixture's number was not replaced");
        let path = dir.path().join("n.json");
        std::fs::write(&path, text).unwrap();
        let out = plan_file("pull_request", &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "number {bad}: {err}");
        assert!(
            err.contains("pull_request.number") && err.contains("positive integer"),
            "number {bad}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
    let mut deleted = payload("pull_request.opened.json");
    deleted["pull_request"]["head"]["repo"] = Value::Null;
    for (policy, action) in [
        ("skip", "opened"),
        ("label", "opened"),
        ("allow", "opened"),
        ("skip", "labeled"),
    ] {
        let mut v = deleted.clone();
        v["action"] = json!(action);
        v["label"] = json!({"name": "atlas:preview"});
        let p = plan_with("pull_request", &v, &[("INPUT_FORK_POLICY", policy)]);
        if policy == "allow" {
            // `allow` trusts every fork by the maintainers' choice, a deleted one included
            assert_eq!(p["command"], "preview-up", "{p}");
            continue;
        }
        assert_eq!(p["command"], "skip", "{policy} {action}: {p}");
        assert!(
            p["reason"].as_str().unwrap().contains("deleted fork"),
            "{policy} {action}: {p}"
        );
    }
}
