//! The fork and trust policy of `plan`, as a table over the real webhook payloads in
//! `tests/data/events/` and payloads constructed from them (fork PR, deleted head
//! repository, dependabot, trusted label, synchronize after the label).

use std::path::PathBuf;

use atlas::event::{CommandKind, Context, Event, ForkPolicy, Policy, plan};
use serde_json::{Value, json};

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/events")
}

fn payload(file: &str) -> Value {
    let text = std::fs::read_to_string(events_dir().join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ctx() -> Context {
    Context {
        sha: "f".repeat(40),
        git_ref: "refs/heads/main".into(),
    }
}

fn policy(fork: ForkPolicy) -> Policy {
    Policy {
        fork_policy: fork,
        ..Policy::default()
    }
}

fn run(name: &str, v: &Value, p: &Policy) -> atlas::event::Plan {
    let e = Event::parse(name, &v.to_string()).unwrap();
    plan(&e, p, &ctx())
}

/// The opened payload turned into a fork PR.
fn fork(mut v: Value, action: &str) -> Value {
    v["action"] = json!(action);
    v["pull_request"]["head"]["repo"]["full_name"] = json!("mallory/Hello-World");
    v
}

fn labeled(mut v: Value, label: &str) -> Value {
    v["action"] = json!("labeled");
    v["label"] = json!({"name": label});
    v["pull_request"]["labels"] = json!([{"name": label}]);
    v
}

#[test]
fn real_payloads() {
    let sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    let cases = [
        (
            "pull_request",
            "pull_request.opened.json",
            CommandKind::PreviewUp,
        ),
        (
            "pull_request",
            "pull_request.opened.with-installation-and-org.json",
            CommandKind::PreviewUp,
        ),
        (
            "pull_request",
            "pull_request.reopened.json",
            CommandKind::PreviewUp,
        ),
        (
            "pull_request",
            "pull_request.synchronize.json",
            CommandKind::PreviewUp,
        ),
        (
            "pull_request",
            "pull_request.closed.unmerged.json",
            CommandKind::PreviewDown,
        ),
        (
            "pull_request",
            "pull_request.closed.unmerged.with-org.json",
            CommandKind::PreviewDown,
        ),
        // A label on a same-repository PR does not change the code.
        (
            "pull_request",
            "pull_request.labeled.json",
            CommandKind::Skip,
        ),
        ("push", "push.tag.created.json", CommandKind::Skip),
        ("push", "push.tag.deleted.json", CommandKind::Skip),
        // A push to `master`, the payload's default branch.
        ("push", "push.branch.created.json", CommandKind::Verify),
        (
            "workflow_dispatch",
            "workflow_dispatch.json",
            CommandKind::Sweep,
        ),
        (
            "issue_comment",
            "issue_comment.created.json",
            CommandKind::Skip,
        ),
        ("deployment", "deployment.created.json", CommandKind::Skip),
        (
            "workflow_run",
            "workflow_run.completed.json",
            CommandKind::Skip,
        ),
    ];
    for (name, file, want) in cases {
        let p = run(name, &payload(file), &Policy::default());
        assert_eq!(p.command, want, "{file}: {}", p.reason);
        if name == "pull_request" {
            assert_eq!(
                p.sha, sha,
                "{file}: the head commit, never the merge commit"
            );
            assert_eq!(p.pr, Some(2));
        }
    }
    // The closed payload says "closed without merging".
    let p = run(
        "pull_request",
        &payload("pull_request.closed.unmerged.json"),
        &Policy::default(),
    );
    assert!(p.reason.contains("without merging"), "{}", p.reason);
    let mut merged = payload("pull_request.closed.unmerged.json");
    merged["pull_request"]["merged"] = json!(true);
    assert!(
        run("pull_request", &merged, &Policy::default())
            .reason
            .contains("merged")
    );
    // A release tag with the default pattern.
    let mut tag = payload("push.tag.created.json");
    tag["ref"] = json!("refs/tags/v1.2.0");
    assert_eq!(
        run("push", &tag, &Policy::default()).command,
        CommandKind::Release
    );
}

#[test]
fn fork_policy_table() {
    use CommandKind::*;
    use ForkPolicy::{Allow, Label, Skip as SkipPolicy};
    let opened = payload("pull_request.opened.json");
    let sync = fork(opened.clone(), "synchronize");
    let mut deleted_head = fork(opened.clone(), "opened");
    deleted_head["pull_request"]["head"]["repo"] = Value::Null;
    let fork_labeled = labeled(fork(opened.clone(), "opened"), "atlas:preview");
    let fork_wrong_label = labeled(fork(opened.clone(), "opened"), "bug");
    // The label stays on the PR, but a later push is a new, unapproved commit.
    let mut sync_after_label = fork_labeled.clone();
    sync_after_label["action"] = json!("synchronize");
    sync_after_label["pull_request"]["head"]["sha"] = json!("1".repeat(40));
    sync_after_label.as_object_mut().unwrap().remove("label");
    let mut fork_unlabeled = fork_labeled.clone();
    fork_unlabeled["action"] = json!("unlabeled");
    let fork_unlabeled_other = {
        let mut v = labeled(fork(opened.clone(), "opened"), "bug");
        v["action"] = json!("unlabeled");
        v
    };
    let mut own_unlabeled = labeled(opened.clone(), "atlas:preview");
    own_unlabeled["action"] = json!("unlabeled");
    let fork_closed = fork(opened.clone(), "closed");
    let fork_opened = fork(opened.clone(), "opened");

    let cases: Vec<(&str, &Value, ForkPolicy, CommandKind, &str)> = vec![
        (
            "fork opened, skip",
            &fork_opened,
            SkipPolicy,
            Skip,
            "no Neon or Fly call",
        ),
        (
            "fork synchronize, skip",
            &sync,
            SkipPolicy,
            Skip,
            "fork_policy is skip",
        ),
        (
            "fork labeled, skip",
            &fork_labeled,
            SkipPolicy,
            Skip,
            "fork_policy is skip",
        ),
        (
            "fork closed, skip",
            &fork_closed,
            SkipPolicy,
            Skip,
            "no preview was ever created",
        ),
        (
            "deleted head repo, skip",
            &deleted_head,
            SkipPolicy,
            Skip,
            "deleted fork",
        ),
        (
            "deleted head repo, label",
            &deleted_head,
            Label,
            Skip,
            "must apply the label",
        ),
        (
            "fork opened, label",
            &fork_opened,
            Label,
            Skip,
            "must apply the label \"atlas:preview\"",
        ),
        (
            "fork trusted label, label",
            &fork_labeled,
            Label,
            PreviewUp,
            "approved commit ec26c3e57ca3",
        ),
        (
            "fork other label, label",
            &fork_wrong_label,
            Label,
            Skip,
            "not the trusted label",
        ),
        (
            "fork synchronize after label",
            &sync_after_label,
            Label,
            Skip,
            "must apply the label",
        ),
        (
            "fork closed, label",
            &fork_closed,
            Label,
            PreviewDown,
            "closed without merging",
        ),
        (
            "fork trusted label removed, label",
            &fork_unlabeled,
            Label,
            PreviewDown,
            "approval is withdrawn",
        ),
        (
            "fork other label removed, label",
            &fork_unlabeled_other,
            Label,
            Skip,
            "needs no preview change",
        ),
        (
            "fork trusted label removed, allow",
            &fork_unlabeled,
            Allow,
            Skip,
            "needs no preview change",
        ),
        (
            "fork trusted label removed, skip",
            &fork_unlabeled,
            SkipPolicy,
            Skip,
            "needs no preview change",
        ),
        (
            "own branch, trusted label removed",
            &own_unlabeled,
            Label,
            Skip,
            "needs no preview change",
        ),
        ("fork opened, allow", &fork_opened, Allow, PreviewUp, ""),
        (
            "deleted head repo, allow",
            &deleted_head,
            Allow,
            PreviewUp,
            "",
        ),
    ];
    for (what, v, fp, want, reason) in cases {
        let p = run("pull_request", v, &policy(fp));
        assert_eq!(p.command, want, "{what}: {}", p.reason);
        assert!(
            p.reason.contains(reason),
            "{what}: {:?} lacks {reason:?}",
            p.reason
        );
    }
    // The approved commit is the one in the labeled payload.
    let p = run("pull_request", &fork_labeled, &policy(Label));
    assert_eq!(p.sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
}

#[test]
fn dependabot_is_untrusted_unless_configured() {
    use CommandKind::*;
    let mut bot = payload("pull_request.opened.json");
    bot["pull_request"]["user"]["login"] = json!("dependabot[bot]");
    let bot_labeled = labeled(bot.clone(), "atlas:preview");
    let mut bot_sync = bot.clone();
    bot_sync["action"] = json!("synchronize");

    let skip = policy(ForkPolicy::Skip);
    let p = run("pull_request", &bot, &skip);
    assert_eq!(p.command, Skip);
    assert!(p.reason.contains("trust_dependabot"), "{}", p.reason);
    // Under fork_policy skip no label is suggested, and none helps.
    assert!(!p.reason.contains("apply the label"), "{}", p.reason);
    assert_eq!(run("pull_request", &bot_labeled, &skip).command, Skip);
    // fork_policy allow is about forks; dependabot still needs the label or the setting.
    assert_eq!(
        run("pull_request", &bot, &policy(ForkPolicy::Allow)).command,
        Skip
    );
    assert_eq!(
        run("pull_request", &bot_labeled, &policy(ForkPolicy::Label)).command,
        PreviewUp
    );
    assert_eq!(
        run("pull_request", &bot_sync, &policy(ForkPolicy::Label)).command,
        Skip
    );
    // Closing a dependabot PR still tears down.
    let mut closed = bot.clone();
    closed["action"] = json!("closed");
    assert_eq!(run("pull_request", &closed, &skip).command, PreviewDown);
    let trusted = Policy {
        trust_dependabot: true,
        ..Policy::default()
    };
    assert_eq!(run("pull_request", &bot, &trusted).command, PreviewUp);
    assert_eq!(run("pull_request", &bot_sync, &trusted).command, PreviewUp);
}

#[test]
fn a_custom_trusted_label_is_honoured() {
    let p = Policy {
        fork_policy: ForkPolicy::Label,
        trusted_label: "safe to preview".into(),
        ..Policy::default()
    };
    let opened = payload("pull_request.opened.json");
    let v = labeled(fork(opened.clone(), "opened"), "safe to preview");
    assert_eq!(run("pull_request", &v, &p).command, CommandKind::PreviewUp);
    let v = labeled(fork(opened, "opened"), "atlas:preview");
    assert_eq!(run("pull_request", &v, &p).command, CommandKind::Skip);
}

#[test]
fn schedule_sweeps() {
    let v = json!({"schedule": "0 3 * * *", "repository": {"full_name": "o/r"}});
    let p = run("schedule", &v, &Policy::default());
    assert_eq!(p.command, CommandKind::Sweep);
}

/// `atlas run` on a fork PR with the default policy: a notice that says why, every output, a
/// summary, exit 0 — and not one connection to the Neon or Fly endpoints.
#[test]
fn fork_skip_end_to_end_makes_no_provider_call() {
    use std::net::TcpListener;
    let neon = TcpListener::bind("127.0.0.1:0").unwrap();
    let fly = TcpListener::bind("127.0.0.1:0").unwrap();
    neon.set_nonblocking(true).unwrap();
    fly.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        fork(payload("pull_request.opened.json"), "opened").to_string(),
    )
    .unwrap();
    let (out, sum) = (dir.path().join("out"), dir.path().join("sum"));
    let res = crate::common::bin::atlas()
        .arg("run")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_EVENT_PATH", &event)
        .env("GITHUB_OUTPUT", &out)
        .env("GITHUB_STEP_SUMMARY", &sum)
        .env("GITHUB_REPOSITORY", "Codertocat/Hello-World")
        .env("INPUT_NEON_API_KEY", "neon-key-for-the-fork-test")
        .env("INPUT_NEON_PROJECT_ID", "p-1")
        .env(
            "INPUT_NEON_API_URL",
            format!("http://{}", neon.local_addr().unwrap()),
        )
        .env("INPUT_FLY_API_TOKEN", "fly-token-for-the-fork-test")
        .env("INPUT_FLY_ORG", "o")
        .env(
            "INPUT_FLY_API_URL",
            format!("http://{}", fly.local_addr().unwrap()),
        )
        .env("INPUT_GITHUB_TOKEN", "ghs_forkTestToken123")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        stdout.contains(
            "::notice title=atlas%3A skipped::pull request from the fork mallory/Hello-World"
        ),
        "{stdout}"
    );
    let parsed = atlas::gha::parse_output_file(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let names: Vec<&str> = parsed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, atlas::outputs::OUTPUT_NAMES);
    assert!(parsed.contains(&("verdict".into(), "skipped".into())));
    assert!(
        std::fs::read_to_string(&sum)
            .unwrap()
            .contains("policy is skip")
    );
    assert!(
        neon.accept().is_err() && fly.accept().is_err(),
        "a provider was contacted"
    );
    for s in [
        "neon-key-for-the-fork-test",
        "fly-token-for-the-fork-test",
        "ghs_forkTestToken123",
    ] {
        // Only in `::add-mask::` lines, which tell the runner to mask it.
        let leaked = stdout
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .any(|l| l.contains(s));
        assert!(!leaked, "{s} leaked: {stdout}");
        assert!(stdout.contains(&format!("::add-mask::{s}")));
    }
}
