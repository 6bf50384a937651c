//! The GitHub event (name + payload) as a small typed [`Event`], and [`plan`]: the whole policy
//! of which command an event triggers, as one pure function (DESIGN.md section 1).
//!
//! Parsing reads only the fields the policy needs and names the field when one is missing or of
//! the wrong type. Older example payloads miss fields that later became required in GitHub's
//! schemas, so nothing else is demanded.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub use crate::config::{ForcedCommand, ForkPolicy, Policy};

/// A pull request, as far as Atlas cares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullRequest {
    pub number: u64,
    /// The head commit: what the preview runs (never the merge commit).
    pub head_sha: String,
    pub head_ref: String,
    /// `None` when the head repository was deleted (always treated as a fork).
    pub head_repo: Option<String>,
    pub base_repo: String,
    pub base_ref: String,
    pub merged: bool,
    pub state: String,
    pub title: String,
    pub author: String,
    pub labels: Vec<String>,
    pub draft: bool,
    /// `repository.private`: only then may the PR comment carry a signed link (whoever can
    /// read the comment can read the repository). Missing reads as public.
    pub repository_private: bool,
}

impl PullRequest {
    pub fn is_fork(&self) -> bool {
        self.head_repo.as_deref() != Some(self.base_repo.as_str())
    }
}

/// The events Atlas distinguishes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    PullRequest {
        action: String,
        pr: Box<PullRequest>,
        /// The label added or removed, for `labeled`/`unlabeled`.
        label: Option<String>,
        /// Who triggered the event (`sender.login`): who pinned, for the pin label.
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
        repository: String,
    },
    Push {
        git_ref: String,
        after: String,
        deleted: bool,
        default_branch: Option<String>,
        repository: String,
    },
    Schedule {
        cron: Option<String>,
        repository: String,
    },
    WorkflowDispatch {
        git_ref: String,
        inputs: BTreeMap<String, String>,
        repository: String,
    },
    /// Any other event: planned as `skip`.
    Other { name: String },
}

/// A payload error naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("event payload is not valid JSON: {0}")]
    Json(String),
    #[error("event payload field `{field}` {problem}")]
    Field { field: String, problem: String },
}

fn field<'a>(v: &'a Value, path: &str) -> Result<&'a Value, EventError> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part).ok_or_else(|| EventError::Field {
            field: path.to_string(),
            problem: "is missing".into(),
        })?;
    }
    Ok(cur)
}

fn string(v: &Value, path: &str) -> Result<String, EventError> {
    match field(v, path)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(EventError::Field {
            field: path.to_string(),
            problem: format!("should be a string, found {}", type_name(other)),
        }),
    }
}

fn opt_string(v: &Value, path: &str) -> Result<Option<String>, EventError> {
    match field(v, path) {
        Err(_) | Ok(Value::Null) => Ok(None),
        Ok(Value::String(s)) => Ok(Some(s.clone())),
        Ok(other) => Err(EventError::Field {
            field: path.to_string(),
            problem: format!("should be a string, found {}", type_name(other)),
        }),
    }
}

fn opt_bool(v: &Value, path: &str) -> Result<bool, EventError> {
    match field(v, path) {
        Err(_) | Ok(Value::Null) => Ok(false),
        Ok(Value::Bool(b)) => Ok(*b),
        Ok(other) => Err(EventError::Field {
            field: path.to_string(),
            problem: format!("should be a boolean, found {}", type_name(other)),
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn sha(v: &Value, path: &str) -> Result<String, EventError> {
    let s = string(v, path)?;
    if !is_sha(&s) {
        return Err(EventError::Field {
            field: path.to_string(),
            problem: "is not a commit SHA".into(),
        });
    }
    Ok(s.to_ascii_lowercase())
}

fn pull_request(v: &Value) -> Result<PullRequest, EventError> {
    let number = match field(v, "pull_request.number").or_else(|_| field(v, "number"))? {
        Value::Number(n) => n.as_u64().filter(|n| *n > 0),
        _ => None,
    }
    .ok_or_else(|| EventError::Field {
        field: "pull_request.number".into(),
        problem: "should be a positive integer".into(),
    })?;
    let labels = match field(v, "pull_request.labels") {
        Ok(Value::Array(a)) => a
            .iter()
            .filter_map(|l| l.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(PullRequest {
        number,
        head_sha: sha(v, "pull_request.head.sha")?,
        head_ref: string(v, "pull_request.head.ref")?,
        head_repo: opt_string(v, "pull_request.head.repo.full_name")?,
        base_repo: string(v, "pull_request.base.repo.full_name")?,
        base_ref: string(v, "pull_request.base.ref")?,
        merged: opt_bool(v, "pull_request.merged")?,
        state: opt_string(v, "pull_request.state")?.unwrap_or_else(|| "open".into()),
        title: opt_string(v, "pull_request.title")?.unwrap_or_default(),
        author: opt_string(v, "pull_request.user.login")?.unwrap_or_default(),
        labels,
        draft: opt_bool(v, "pull_request.draft")?,
        repository_private: opt_bool(v, "repository.private")?,
    })
}

impl Event {
    /// Builds the event from `GITHUB_EVENT_NAME` and the payload text.
    pub fn parse(name: &str, payload: &str) -> Result<Event, EventError> {
        let v: Value =
            serde_json::from_str(payload).map_err(|e| EventError::Json(e.to_string()))?;
        if !v.is_object() {
            return Err(EventError::Json("the payload is not a JSON object".into()));
        }
        let repository = || opt_string(&v, "repository.full_name").map(Option::unwrap_or_default);
        Ok(match name {
            "pull_request" => Event::PullRequest {
                action: string(&v, "action")?,
                pr: Box::new(pull_request(&v)?),
                label: opt_string(&v, "label.name")?,
                sender: opt_string(&v, "sender.login")?,
                repository: repository()?,
            },
            "push" => Event::Push {
                git_ref: string(&v, "ref")?,
                after: string(&v, "after")?,
                deleted: opt_bool(&v, "deleted")?,
                default_branch: opt_string(&v, "repository.default_branch")?,
                repository: repository()?,
            },
            "schedule" => Event::Schedule {
                cron: opt_string(&v, "schedule")?,
                repository: repository()?,
            },
            "workflow_dispatch" => {
                let mut inputs = BTreeMap::new();
                if let Ok(Value::Object(m)) = field(&v, "inputs") {
                    for (k, val) in m {
                        let s = match val {
                            Value::String(s) => s.clone(),
                            Value::Null => continue,
                            other => other.to_string(),
                        };
                        inputs.insert(k.clone(), s);
                    }
                }
                Event::WorkflowDispatch {
                    git_ref: string(&v, "ref")?,
                    inputs,
                    repository: repository()?,
                }
            }
            other => Event::Other {
                name: other.to_string(),
            },
        })
    }
}

/// The command a plan selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandKind {
    PreviewUp,
    PreviewDown,
    Verify,
    Release,
    Sweep,
    /// The pin label was added (`pin`) or removed (`unpin`): recorded on the preview's
    /// resources and in its comment; nothing is rebuilt.
    Pin,
    Unpin,
    Skip,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::PreviewUp => "preview-up",
            CommandKind::PreviewDown => "preview-down",
            CommandKind::Verify => "verify",
            CommandKind::Release => "release",
            CommandKind::Sweep => "sweep",
            CommandKind::Pin => "pin",
            CommandKind::Unpin => "unpin",
            CommandKind::Skip => "skip",
        }
    }
}

/// The decision for an event: what `atlas plan` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub command: CommandKind,
    pub pr: Option<u64>,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub reason: String,
    /// `command: plan`: print the decision, run nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// What `plan` knows besides the payload: the runner's `GITHUB_SHA` and `GITHUB_REF`, used where
/// the payload has none (schedule, workflow_dispatch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub sha: String,
    pub git_ref: String,
}

/// Matches a tag name against a pattern where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

const DEPENDABOT: &str = "dependabot[bot]";

/// The whole policy, the `command` input included. Pure: no I/O, no clock, no environment.
///
/// A forced command replaces the event's decision, except a fork's (or an untrusted
/// author's) skip: that is a trust decision no input overrides. `command: plan` keeps the
/// decision and marks it a dry run, which the dispatcher prints and does not execute.
pub fn plan(event: &Event, policy: &Policy, ctx: &Context) -> Plan {
    let mut p = plan_event(event, policy, ctx);
    let forced = match policy.command {
        ForcedCommand::Auto => None,
        ForcedCommand::Plan => {
            p.dry_run = true;
            None
        }
        ForcedCommand::PreviewUp => Some(CommandKind::PreviewUp),
        ForcedCommand::PreviewDown => Some(CommandKind::PreviewDown),
        ForcedCommand::Verify => Some(CommandKind::Verify),
        ForcedCommand::Release => Some(CommandKind::Release),
        ForcedCommand::Sweep => Some(CommandKind::Sweep),
    };
    if let Some(c) = forced {
        let fork_skip = p.command == CommandKind::Skip
            && matches!(event, Event::PullRequest { pr, .. } if pr.is_fork());
        if !fork_skip {
            p.command = c;
            p.reason = format!("input `command` is {}", c.as_str());
            if let Some(pr) = policy.pr {
                p.pr = Some(pr);
            }
        }
    }
    p
}

/// GitHub passes no secrets to a `pull_request` run from a fork. A preview the fork policy
/// allowed (a label, `allow`) then cannot be built: that is a skip with the reason, exit 0, not
/// an error about a missing input. `missing` names the first absent secret input.
pub fn skip_fork_without_secrets(plan: Plan, event: &Event, missing: Option<&str>) -> Plan {
    let (Event::PullRequest { pr, .. }, Some(input)) = (event, missing) else {
        return plan;
    };
    if !pr.is_fork()
        || !matches!(
            plan.command,
            CommandKind::PreviewUp
                | CommandKind::PreviewDown
                | CommandKind::Pin
                | CommandKind::Unpin
        )
    {
        return plan;
    }
    let from = match &pr.head_repo {
        Some(r) => format!("from the fork {r}"),
        None => "from a deleted fork".to_string(),
    };
    Plan {
        command: CommandKind::Skip,
        reason: format!(
            "pull request {from}: the fork policy allows a preview, but this run has no secrets (`{input}` is empty: GitHub does not pass secrets to pull_request runs from forks), so no preview is deployed and no Neon or Fly call is made"
        ),
        ..plan
    }
}

/// The event's own decision, before the `command` input.
fn plan_event(event: &Event, policy: &Policy, ctx: &Context) -> Plan {
    let skip = |sha: &str, git_ref: &str, pr: Option<u64>, reason: String| Plan {
        command: CommandKind::Skip,
        pr,
        sha: sha.to_string(),
        git_ref: git_ref.to_string(),
        reason,
        dry_run: false,
    };
    match event {
        Event::PullRequest {
            action, pr, label, ..
        } => {
            let git_ref = format!("refs/pull/{}/merge", pr.number);
            let mk = |command, reason: String| Plan {
                command,
                pr: Some(pr.number),
                sha: pr.head_sha.clone(),
                git_ref: git_ref.clone(),
                reason,
                dry_run: false,
            };
            let untrusted_author = pr.author == DEPENDABOT && !policy.trust_dependabot;
            let fork = pr.is_fork();
            let gated = fork || untrusted_author;
            let who = if fork {
                match &pr.head_repo {
                    Some(r) => format!("from the fork {r}"),
                    None => "from a deleted fork".to_string(),
                }
            } else {
                "opened by dependabot (set trust_dependabot: true to trust it)".to_string()
            };
            // The pin label changes how long a preview lives, not its code: no rebuild, for a
            // fork's PR too (a maintainer applies labels). A fork's run has no secrets to reach
            // the providers: `skip_fork_without_secrets` turns that into a skip.
            let pin_label = label.as_deref() == Some(policy.pin_label.as_str());
            match action.as_str() {
                "labeled" if pin_label => {
                    return mk(
                        CommandKind::Pin,
                        format!(
                            "label {:?} was added to pull request #{}: the preview is pinned (no rebuild)",
                            policy.pin_label, pr.number
                        ),
                    );
                }
                "unlabeled" if pin_label => {
                    return mk(
                        CommandKind::Unpin,
                        format!(
                            "label {:?} was removed from pull request #{}: the preview is unpinned and its expiry renewed (no rebuild)",
                            policy.pin_label, pr.number
                        ),
                    );
                }
                _ => {}
            }
            match action.as_str() {
                "closed" => {
                    if gated && fork && policy.fork_policy == ForkPolicy::Skip {
                        return mk(
                            CommandKind::Skip,
                            format!(
                                "pull request {who} was closed; fork_policy is skip, so no preview was ever created"
                            ),
                        );
                    }
                    let how = if pr.merged {
                        "merged"
                    } else {
                        "closed without merging"
                    };
                    mk(
                        CommandKind::PreviewDown,
                        format!("pull request #{} was {how}", pr.number),
                    )
                }
                "opened" | "synchronize" | "reopened" | "labeled" | "ready_for_review" => {
                    let relevant_label = action == "labeled"
                        && label.as_deref() == Some(policy.trusted_label.as_str());
                    if gated {
                        let trusted = match policy.fork_policy {
                            ForkPolicy::Allow if !untrusted_author => true,
                            ForkPolicy::Skip if !fork => false,
                            ForkPolicy::Skip => {
                                return mk(
                                    CommandKind::Skip,
                                    format!(
                                        "pull request {who}: fork_policy is skip, so no preview is deployed and no Neon or Fly call is made"
                                    ),
                                );
                            }
                            // The label approves the commit that was head when it was applied:
                            // only the `labeled` event itself deploys; a later push needs a new label.
                            _ => relevant_label,
                        };
                        if !trusted {
                            // Under fork_policy skip no label helps: do not suggest one.
                            let reason = if policy.fork_policy == ForkPolicy::Skip {
                                format!("pull request {who}: no preview is deployed")
                            } else if action == "labeled" && !relevant_label {
                                format!(
                                    "label {:?} is not the trusted label",
                                    label.as_deref().unwrap_or("")
                                )
                            } else {
                                format!(
                                    "pull request {who} is not trusted: a maintainer must apply the label {:?} to deploy this commit",
                                    policy.trusted_label
                                )
                            };
                            return mk(CommandKind::Skip, reason);
                        }
                        return mk(
                            CommandKind::PreviewUp,
                            format!(
                                "label {:?} approved commit {} for a preview",
                                policy.trusted_label,
                                &pr.head_sha[..12]
                            ),
                        );
                    }
                    if action == "labeled" || action == "ready_for_review" {
                        // Labels do not change the code; an open PR already has its preview.
                        return mk(
                            CommandKind::Skip,
                            format!("pull request event `{action}` does not change the code"),
                        );
                    }
                    mk(
                        CommandKind::PreviewUp,
                        format!("pull request #{} was {action}", pr.number),
                    )
                }
                // Removing the trusted label withdraws the approval of code nobody else vetted:
                // the preview it allowed goes (a maintainer's way to pull an unsafe preview).
                "unlabeled"
                    if gated
                        && policy.fork_policy == ForkPolicy::Label
                        && label.as_deref() == Some(policy.trusted_label.as_str()) =>
                {
                    mk(
                        CommandKind::PreviewDown,
                        format!(
                            "the label {:?} was removed from pull request {who}: the approval is withdrawn and the preview torn down",
                            policy.trusted_label
                        ),
                    )
                }
                other => mk(
                    CommandKind::Skip,
                    format!("pull request action `{other}` needs no preview change"),
                ),
            }
        }
        Event::Push {
            git_ref,
            after,
            deleted,
            default_branch,
            ..
        } => {
            if *deleted {
                return skip(after, git_ref, None, format!("{git_ref} was deleted"));
            }
            if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
                if glob_match(&policy.tag_pattern, tag) {
                    return Plan {
                        command: CommandKind::Release,
                        pr: None,
                        sha: after.clone(),
                        git_ref: git_ref.clone(),
                        reason: format!("tag {tag} matches {}", policy.tag_pattern),
                        dry_run: false,
                    };
                }
                return skip(
                    after,
                    git_ref,
                    None,
                    format!(
                        "tag {tag} does not match the release pattern {}",
                        policy.tag_pattern
                    ),
                );
            }
            if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
                let default = default_branch.as_deref().unwrap_or("main");
                if branch == default {
                    return Plan {
                        command: CommandKind::Verify,
                        pr: None,
                        sha: after.clone(),
                        git_ref: git_ref.clone(),
                        reason: format!("push to the default branch {default}"),
                        dry_run: false,
                    };
                }
                return skip(
                    after,
                    git_ref,
                    None,
                    format!("push to {branch}, not the default branch {default}"),
                );
            }
            skip(
                after,
                git_ref,
                None,
                format!("push to {git_ref} is neither a branch nor a tag"),
            )
        }
        Event::Schedule { .. } => Plan {
            command: CommandKind::Sweep,
            pr: None,
            sha: ctx.sha.clone(),
            git_ref: ctx.git_ref.clone(),
            reason: "scheduled sweep of leftover previews".into(),
            dry_run: false,
        },
        Event::WorkflowDispatch {
            git_ref, inputs, ..
        } => {
            let pr = inputs
                .get("pr")
                .and_then(|p| p.trim().trim_start_matches('#').parse::<u64>().ok())
                .filter(|n| *n > 0);
            let cmd = inputs.get("command").map(|s| s.trim()).unwrap_or("");
            let command = match cmd {
                "preview-up" | "preview-down" if pr.is_none() => {
                    return skip(
                        &ctx.sha,
                        git_ref,
                        None,
                        format!("workflow_dispatch command {cmd} needs a `pr` input"),
                    );
                }
                "preview-up" => CommandKind::PreviewUp,
                "preview-down" => CommandKind::PreviewDown,
                "verify" => CommandKind::Verify,
                "release" => CommandKind::Release,
                "sweep" | "" => CommandKind::Sweep,
                other => {
                    return skip(
                        &ctx.sha,
                        git_ref,
                        pr,
                        format!(
                            "workflow_dispatch command {:?} is not one of preview-up, preview-down, verify, release, sweep",
                            crate::text::truncate(other, 40)
                        ),
                    );
                }
            };
            Plan {
                command,
                pr,
                sha: ctx.sha.clone(),
                git_ref: git_ref.clone(),
                reason: format!("started by hand (workflow_dispatch: {})", command.as_str()),
                dry_run: false,
            }
        }
        Event::Other { name } => skip(
            &ctx.sha,
            &ctx.git_ref,
            None,
            format!(
                "event `{}` does not trigger atlas",
                crate::text::truncate(name, 60)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("v*", "v1.2.3"));
        assert!(!glob_match("v*", "release-1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("v*-rc*", "v1-rc2"));
        assert!(!glob_match("v*-rc*", "v1"));
    }

    #[test]
    fn bad_payloads_name_the_field() {
        let e = Event::parse("pull_request", "{\"action\": \"opened\"}").unwrap_err();
        assert!(e.to_string().contains("number"), "{e}");
        let e = Event::parse("push", "{\"ref\": 5, \"after\": \"x\"}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "event payload field `ref` should be a string, found a number"
        );
        assert!(matches!(
            Event::parse("push", "{\"ref\":"),
            Err(EventError::Json(_))
        ));
        assert!(matches!(
            Event::parse("push", "[]"),
            Err(EventError::Json(_))
        ));
    }

    fn pr_event(action: &str, head_repo: Option<&str>, author: &str) -> Event {
        let body = serde_json::json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7,
                "title": "t",
                "state": if action == "closed" { "closed" } else { "open" },
                "merged": false,
                "draft": false,
                "user": {"login": author},
                "labels": [],
                "head": {"sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "ref": "feature", "repo": head_repo.map(|r| serde_json::json!({"full_name": r}))},
                "base": {"ref": "main", "repo": {"full_name": "o/r"}}
            },
            "repository": {"full_name": "o/r", "default_branch": "main"}
        });
        Event::parse("pull_request", &body.to_string()).unwrap()
    }

    /// The `command` input inside `plan`: (event, input, command, dry run, reason starts with).
    #[test]
    fn forced_command_and_fork_rules() {
        use CommandKind::*;
        use ForcedCommand as F;
        let ctx = Context::default();
        let same = || pr_event("opened", Some("o/r"), "someone");
        let fork = || pr_event("opened", Some("evil/r"), "someone");
        let closed = || pr_event("closed", Some("o/r"), "someone");
        let bot = || pr_event("opened", Some("o/r"), DEPENDABOT);
        let cases: Vec<(Event, ForcedCommand, CommandKind, bool, &str)> = vec![
            (same(), F::Auto, PreviewUp, false, ""),
            (same(), F::Plan, PreviewUp, true, ""),
            (closed(), F::Plan, PreviewDown, true, ""),
            (fork(), F::Plan, Skip, true, ""),
            (
                same(),
                F::PreviewDown,
                PreviewDown,
                false,
                "input `command` is preview-down",
            ),
            (
                closed(),
                F::Verify,
                Verify,
                false,
                "input `command` is verify",
            ),
            (same(), F::Sweep, Sweep, false, "input `command` is sweep"),
            // A forced command never overrides a fork's skip: that is a trust decision.
            (fork(), F::PreviewUp, Skip, false, ""),
            (fork(), F::Release, Skip, false, ""),
            // An untrusted author's skip is no fork's: a forced command takes over.
            (
                bot(),
                F::PreviewUp,
                PreviewUp,
                false,
                "input `command` is preview-up",
            ),
        ];
        for (i, (event, command, want, dry, reason)) in cases.into_iter().enumerate() {
            let policy = Policy {
                command,
                pr: Some(42),
                ..Policy::default()
            };
            let p = plan(&event, &policy, &ctx);
            assert_eq!(p.command, want, "case {i}: {p:?}");
            assert_eq!(p.dry_run, dry, "case {i}: {p:?}");
            assert!(p.reason.starts_with(reason), "case {i}: {p:?}");
            let forced = !reason.is_empty();
            assert_eq!(p.pr, Some(if forced { 42 } else { 7 }), "case {i}: {p:?}");
        }
    }

    /// The pin label pins or unpins (no rebuild), from a fork too; other labels keep their
    /// meaning. The sender is read from the payload.
    #[test]
    fn the_pin_label_pins_and_unpins_without_a_rebuild() {
        let ctx = Context::default();
        let labeled = |action: &str, label: &str, head: &str| {
            let mut v: serde_json::Value = serde_json::from_str(include_str!(
                "../tests/data/events/pull_request.labeled.json"
            ))
            .unwrap();
            v["action"] = serde_json::json!(action);
            v["label"]["name"] = serde_json::json!(label);
            v["pull_request"]["head"]["repo"]["full_name"] = serde_json::json!(head);
            Event::parse("pull_request", &v.to_string()).unwrap()
        };
        let base = "Codertocat/Hello-World";
        let policy = Policy::default();
        let e = labeled("labeled", "atlas:pin", base);
        let Event::PullRequest { sender, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(sender.as_deref(), Some("Codertocat"));
        let p = plan(&e, &policy, &ctx);
        assert_eq!(p.command, CommandKind::Pin, "{p:?}");
        assert!(p.reason.contains("no rebuild"), "{p:?}");
        let p = plan(&labeled("unlabeled", "atlas:pin", base), &policy, &ctx);
        assert_eq!(p.command, CommandKind::Unpin, "{p:?}");
        let p = plan(&labeled("labeled", "bug", base), &policy, &ctx);
        assert_eq!(p.command, CommandKind::Skip, "{p:?}");
        let fork = labeled("labeled", "atlas:pin", "evil/Hello-World");
        assert_eq!(plan(&fork, &policy, &ctx).command, CommandKind::Pin);
        let p = skip_fork_without_secrets(plan(&fork, &policy, &ctx), &fork, Some("fly_api_token"));
        assert_eq!(p.command, CommandKind::Skip, "{p:?}");
        let custom = Policy {
            pin_label: "keep".into(),
            ..Policy::default()
        };
        assert_eq!(
            plan(&labeled("labeled", "keep", base), &custom, &ctx).command,
            CommandKind::Pin
        );
    }

    #[test]
    fn a_dry_run_is_marked_in_the_json_and_only_then() {
        let ctx = Context::default();
        let e = pr_event("opened", Some("o/r"), "someone");
        let auto = serde_json::to_value(plan(&e, &Policy::default(), &ctx)).unwrap();
        assert!(auto.get("dry_run").is_none(), "{auto}");
        let policy = Policy {
            command: ForcedCommand::Plan,
            ..Policy::default()
        };
        let dry = serde_json::to_value(plan(&e, &policy, &ctx)).unwrap();
        assert_eq!(dry["dry_run"], true, "{dry}");
        assert_eq!(dry["command"], "preview-up", "{dry}");
    }
}
