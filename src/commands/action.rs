//! `atlas run` for previews and the sweep on GitHub Actions: builds the cloud providers (Neon,
//! Fly, GitHub) from the inputs, reconciles with the live PR, runs `preview::up`/`down` or the
//! sweep, and writes every output and the job summary on every path (success, skip, failure).
//!
//! Order matters for the invariants: inputs are validated before any client is built, and no
//! Neon or Fly call is made before GitHub has confirmed the PR is open at the planned commit.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

use super::ctx::Ctx;
use crate::event::{CommandKind, Event, Plan};
use crate::outputs::RunReport;
use crate::preview::{self, PreviewRequest, UpOptions};
use crate::report::Renderer;
use crate::secret::Secret;
use crate::sweep::{self, Decision, SweepOptions};

/// After SIGINT/SIGTERM: tears down what this run created for a first preview (bounded well
/// inside the runner's 10 s from SIGINT to kill) and returns the one-line state as the error.
pub async fn after_cancel(ctx: &Ctx, signal: &str) -> anyhow::Error {
    let created = crate::preview::take_created_this_run();
    if created.branch.is_none() && created.app.is_none() {
        return anyhow::anyhow!(
            "cancelled by {signal}: stopped; this run had created nothing that needs tearing down"
        );
    }
    let teardown = async {
        let providers = super::providers::cloud(ctx)?;
        let mut done = Vec::new();
        let mut left = Vec::new();
        if let Some(app) = &created.app {
            match providers.platform.destroy(app).await {
                Ok(_) => done.push(format!("app {app}")),
                Err(e) => left.push(format!(
                    "app {app} ({})",
                    crate::secret::redact(&format!("{e:#}"))
                )),
            }
        }
        if let Some(b) = &created.branch {
            match providers.database.delete_branch(b).await {
                Ok(_) => done.push(format!("database branch {b}")),
                Err(e) => left.push(format!(
                    "database branch {b} ({})",
                    crate::secret::redact(&format!("{e:#}"))
                )),
            }
        }
        anyhow::Ok((done, left))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(6), teardown).await {
        Ok(Ok((done, left))) if left.is_empty() => anyhow::anyhow!(
            "cancelled by {signal}: stopped; tore down what this run had created: {}",
            done.join(", ")
        ),
        Ok(Ok((done, left))) => anyhow::anyhow!(
            "cancelled by {signal}: stopped; tore down {}; left for `atlas sweep`: {}",
            if done.is_empty() {
                "nothing".to_string()
            } else {
                done.join(", ")
            },
            left.join(", ")
        ),
        Ok(Err(e)) => anyhow::anyhow!(
            "cancelled by {signal}: stopped; could not tear down ({}), left for `atlas sweep`: {:?}",
            crate::secret::redact(&format!("{e:#}")),
            created
        ),
        Err(_) => anyhow::anyhow!(
            "cancelled by {signal}: stopped; the teardown did not finish in 6 s, left for `atlas sweep`: {created:?}"
        ),
    }
}

/// Only secrets declared in `[preview] secrets` reach a preview; a declared secret without a
/// value means the secret clause cannot be honoured.
pub fn declared_secrets(
    declared: &[String],
    given: &BTreeMap<String, Secret>,
) -> anyhow::Result<(BTreeMap<String, Secret>, Vec<String>)> {
    let mut out = BTreeMap::new();
    for name in declared {
        match given.get(name) {
            Some(v) => {
                out.insert(name.clone(), v.clone());
            }
            None => bail!(
                "atlas.toml declares the preview secret {name} but the `preview_secrets` input has no value for it (add a line {name}=${{{{ secrets.{name} }}}})"
            ),
        }
    }
    let undeclared = given
        .keys()
        .filter(|k| !declared.contains(k))
        .cloned()
        .collect();
    Ok((out, undeclared))
}

fn up_options(ctx: &Ctx, prefix: String) -> anyhow::Result<UpOptions> {
    let (secrets, _) =
        declared_secrets(&ctx.settings.preview.secrets, &ctx.config.preview_secrets)?;
    Ok(UpOptions {
        preview_secrets: secrets,
        image: ctx.config.image.clone(),
        artifact: ctx.config.image.clone().unwrap_or_default(),
        ttl: ctx.config.ttl,
        template_dir: ctx
            .config
            .template_dir
            .clone()
            .or_else(|| ctx.settings.templates.dir.clone()),
        // On Actions the audit trail is GitHub's: the deployment history of the environment,
        // the sticky comment and the job summary outlive the runner; a file would not.
        audit_log: None,
        prefix,
        history_base: None,
        dashboard_url: None,
        private_repository: false,
        now: None,
        pin_labeled: None,
    })
}

fn renderer(ctx: &Ctx) -> anyhow::Result<Renderer> {
    let dir = ctx
        .config
        .template_dir
        .clone()
        .or_else(|| ctx.settings.templates.dir.clone());
    Renderer::new(dir.as_deref())
}

/// Writes outputs and summary for a run that ended in `result`, then returns `result`.
fn finish(ctx: &mut Ctx, mut report: RunReport, result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = &result {
        let gate = e
            .chain()
            .any(|c| c.downcast_ref::<crate::error::GateFailed>().is_some());
        report.verdict = if gate { "fail".into() } else { "error".into() };
        report.error = Some(crate::secret::redact(&format!("{e:#}")));
    }
    let written = renderer(ctx).and_then(|r| crate::outputs::write(&mut ctx.gha, &r, &report));
    match (result, written) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(w)) => Err(w),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// The head branch and title of the PR in the event (user text, rendered through `md`).
fn pr_text(event: &Event, pr: u64) -> (String, Option<String>) {
    match event {
        Event::PullRequest { pr: p, .. } if p.number == pr => {
            (p.head_ref.clone(), Some(p.title.clone()))
        }
        _ => (format!("pr-{pr}"), None),
    }
}

/// `atlas run` for one PR's preview (up, down) or its pin label (pin, unpin): one report that
/// carries the PR, written however the run ends.
async fn pr_run(ctx: &mut Ctx, event: &Event, plan: &Plan) -> anyhow::Result<()> {
    let mut report = RunReport::new(plan.command.as_str(), &plan.sha);
    report.pr = plan.pr;
    let pin = matches!(plan.command, CommandKind::Pin | CommandKind::Unpin);
    let result = match plan.pr {
        None if pin => Err(anyhow::anyhow!(
            "no pull request number: a pin needs the pull request whose preview to pin"
        )),
        None => Err(anyhow::anyhow!(
            "no pull request number: set the `pr` input for a manual preview run"
        )),
        Some(pr) if pin => {
            let by = (plan.command == CommandKind::Pin).then(|| match event {
                Event::PullRequest { sender, .. } => login(sender.as_deref()),
                _ => login(None),
            });
            let private = matches!(event, Event::PullRequest { pr: p, .. } if p.repository_private);
            pin_inner(ctx, pr, by.as_deref(), Some(private), &mut report).await
        }
        Some(pr) => preview_inner(ctx, event, plan, pr, &mut report).await,
    };
    finish(ctx, report, result)
}

/// Preview-up and preview-down.
async fn preview_inner(
    ctx: &mut Ctx,
    event: &Event,
    plan: &Plan,
    pr: u64,
    report: &mut RunReport,
) -> anyhow::Result<()> {
    let providers = super::providers::cloud(ctx)?;
    let repo = super::providers::repository(ctx)?;
    let prefix = crate::naming::prefix(ctx.settings.app.name.as_deref(), &repo);
    let mut opts = up_options(ctx, prefix)?;
    opts.history_base = match event {
        Event::PullRequest { pr: p, .. } if p.number == pr => Some(p.base_ref.clone()),
        _ => None,
    };
    opts.private_repository =
        matches!(event, Event::PullRequest { pr: p, .. } if p.repository_private);
    // The labels of this PR's own event: a pin label added before the preview existed pins it
    // now, one removed meanwhile unpins it.
    opts.pin_labeled = match event {
        Event::PullRequest { pr: p, .. } if p.number == pr => {
            Some(p.labels.contains(&ctx.config.policy.pin_label))
        }
        _ => None,
    };
    opts.dashboard_url = super::verify::pages_url(&ctx.github, &ctx.settings.baseline, &repo);
    let (branch, title) = pr_text(event, pr);

    // A manual run previews the PR's live head; an event run previews the event's head commit.
    let mut sha = plan.sha.clone();
    if !matches!(event, Event::PullRequest { .. })
        && let Some(state) = providers.forge.pr_state(pr).await?
    {
        sha = state.head_sha;
    }
    report.commit_sha = sha.clone();
    let req = PreviewRequest {
        pr,
        sha: sha.clone(),
        branch,
        repository: repo,
        title,
    };

    let mut lines: Vec<String> = Vec::new();
    // Everything registered so far was masked by `Ctx::load`.
    let mut known = crate::secret::registered();
    let down = plan.command == CommandKind::PreviewDown;
    let decision = if down {
        Decision::TearDown {
            merged: false,
            reason: plan.reason.clone(),
        }
    } else {
        sweep::reconcile(providers.forge.as_ref(), pr, &sha).await?
    };
    match decision {
        Decision::Stale { reason, .. } | Decision::Missing { reason } => {
            ctx.gha.notice("atlas: nothing to do", &reason);
            report.verdict = "skipped".into();
            report.reason = Some(reason);
            Ok(())
        }
        Decision::TearDown { reason, .. } => {
            ctx.gha.group_start(&format!("preview down: PR #{pr}"));
            let out = preview::down(&providers, &ctx.settings, &req, &opts, &mut |l: &str| {
                lines.push(l.to_string())
            })
            .await;
            flush(ctx, &mut lines, &mut known);
            ctx.gha.group_end();
            let out = out?;
            report.verdict = "destroyed".into();
            report.reason = Some(reason);
            report.comment_url = Some(out.comment.url.clone());
            Ok(())
        }
        Decision::Proceed => {
            ctx.gha.group_start(&format!(
                "preview up: PR #{pr} at {}",
                &sha[..sha.len().min(12)]
            ));
            let out = preview::up(&providers, &ctx.settings, &req, &opts, &mut |l: &str| {
                lines.push(l.to_string())
            })
            .await;
            flush(ctx, &mut lines, &mut known);
            ctx.gha.group_end();
            // The preview cap refused it: said in the comment; not a failure of the change.
            if let Err(e) = &out
                && let Some(q) = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<crate::error::QuotaRefused>())
            {
                ctx.gha.notice("atlas: preview refused", &q.reason);
                report.verdict = "refused".into();
                report.reason = Some(q.reason.clone());
                return Ok(());
            }
            let out = out?;
            *report = std::mem::take(report).with_contract(&out.contract);
            report.comment_url = Some(out.comment.url.clone());
            if report.verdict.is_empty() {
                report.verdict = "pass".into();
            }
            // Reconcile again: a PR closed while its preview was being built is torn down now.
            if let Decision::TearDown { reason, .. } =
                sweep::reconcile(providers.forge.as_ref(), pr, &sha).await?
            {
                ctx.gha
                    .notice("atlas: pull request closed during the build", &reason);
                let out = preview::down(&providers, &ctx.settings, &req, &opts, &mut |l: &str| {
                    lines.push(l.to_string())
                })
                .await;
                flush(ctx, &mut lines, &mut known);
                out?;
                report.verdict = "destroyed".into();
                report.reason = Some(reason);
            }
            Ok(())
        }
    }
}

/// Prints the step lines of `up`/`down`, first telling the runner to mask every secret the
/// providers derived meanwhile (the database branch's password): they registered it for
/// redaction but cannot reach `gha`, and the lines are printed only now, so no line precedes
/// its mask. `known` holds the values already masked.
fn flush(ctx: &mut Ctx, lines: &mut Vec<String>, known: &mut Vec<String>) {
    for v in crate::secret::registered() {
        if !known.contains(&v) {
            ctx.gha.mask(&v);
            known.push(v);
        }
    }
    for l in lines.drain(..) {
        ctx.gha.info(&l);
    }
}

/// A GitHub login as Atlas records it: its own characters only (`[bot]` included).
fn login(sender: Option<&str>) -> String {
    let l: String = sender
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '[' | ']' | '_'))
        .take(60)
        .collect();
    if l.is_empty() { "unknown".into() } else { l }
}

/// The pin label (`labeled` / `unlabeled`): pinned `by` its sender, or unpinned; recorded on
/// the resources and in the comment, nothing rebuilt.
async fn pin_inner(
    ctx: &mut Ctx,
    pr: u64,
    by: Option<&str>,
    private: Option<bool>,
    report: &mut RunReport,
) -> anyhow::Result<()> {
    let providers = super::providers::cloud_for_sweep(ctx)?;
    let ttl = ctx.config.ttl.unwrap_or(ctx.settings.preview.ttl);
    let (out, comment) = pin_preview(&providers, &renderer(ctx)?, pr, by, ttl, private).await?;
    let command = if by.is_some() { "pin" } else { "unpin" };
    if out.changed.is_empty() {
        // The preview the next push builds reads the label from its event (`up` pins it then).
        let reason = format!(
            "pull request #{pr} has no preview yet: nothing to {command} now; the preview its next push builds is {}",
            if by.is_some() {
                "pinned (the label is on the pull request)"
            } else {
                "not pinned"
            }
        );
        ctx.gha.notice("atlas: nothing to pin", &reason);
        report.verdict = "skipped".into();
        report.reason = Some(reason);
        return Ok(());
    }
    for c in &out.changed {
        ctx.gha.info(&format!("{command}: {c}"));
    }
    report.comment_url = comment.map(|c| c.url);
    report.verdict = if by.is_some() { "pinned" } else { "unpinned" }.into();
    report.reason = Some(match &by {
        Some(b) => format!(
            "{}: kept past its expiry and never evicted by the preview cap",
            crate::contract::pin_phrase(b)
        ),
        None => format!(
            "unpinned: the preview expires {} unless renewed",
            out.expires.as_deref().unwrap_or("as before")
        ),
    });
    Ok(())
}

/// `atlas run` for the sweep (the `schedule` event): the sweep, then the estate (active hours,
/// the table of live previews). `json`: the same printed as JSON on stdout.
pub async fn sweep_run(ctx: &mut Ctx, json: bool) -> anyhow::Result<()> {
    let providers = super::providers::cloud_for_sweep(ctx)?;
    let opts = SweepOptions::from_config(&ctx.config, &ctx.settings);
    let now = chrono::Utc::now();
    let report = sweep::sweep(&providers, now, &opts).await;
    let estate = crate::estate::after_sweep(&providers, &ctx.settings, opts.dry_run, now).await;
    let renderer = renderer(ctx)?;
    finish_sweep(&mut ctx.gha, &report, &estate, &renderer, json)
}

/// Reports the sweep and then the estate; the sweep's verdict (exit 2 when something survived)
/// is the command's.
fn finish_sweep<W: std::io::Write>(
    gha: &mut crate::gha::Gha<W>,
    report: &sweep::SweepReport,
    estate: &crate::estate::Estate,
    renderer: &Renderer,
    json: bool,
) -> anyhow::Result<()> {
    let verdict = sweep::report_to(gha, report);
    crate::estate::report_to(gha, estate, renderer)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"sweep": report, "estate": estate}))?
        );
    }
    verdict
}

/// `atlas preview extend --pr N [--ttl 72h] [--local]`: the same providers the sweep uses.
pub async fn cli_extend(
    args: &crate::cli::ExtendArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (providers, ttl, template_dir) = lifecycle_cli(args.local, args.ttl, config).await?;
    let at = from_now(ttl)
        .with_context(|| format!("--ttl {} is too long", humantime::format_duration(ttl)))?;
    let out = crate::lifecycle::extend(
        providers.database.as_ref(),
        providers.platform.as_ref(),
        args.pr,
        at,
    )
    .await?;
    let r = Renderer::new(template_dir.as_deref())?;
    let comment = crate::lifecycle::lifecycle_comment(
        providers.forge.as_ref(),
        providers.platform.as_ref(),
        &r,
        crate::lifecycle::Changed::Extend(&out),
        None,
    )
    .await
    .context("the expiry moved, but the preview's comment could not be rewritten")?;
    eprintln!(
        "preview of PR #{} now expires {} ({}){}",
        out.pr,
        crate::report::human_time(&out.expires, chrono::Utc::now()),
        out.moved.join(", "),
        if comment.is_some() {
            "; its comment says so"
        } else {
            "; it has no live preview comment to update"
        }
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// The providers `extend` and `pin` work on (local with `--local`, else the cloud family the
/// sweep uses), the TTL in force (`ttl`, else the `ttl` input, else `[preview] ttl`) and the
/// template directory.
async fn lifecycle_cli(
    local: bool,
    ttl: Option<std::time::Duration>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(
    crate::provider::Providers,
    std::time::Duration,
    Option<std::path::PathBuf>,
)> {
    if local {
        let (settings, config, setup) = super::providers::local_for_cli(config).await?;
        let ttl = ttl.or(config.ttl).unwrap_or(settings.preview.ttl);
        let dir = config.template_dir.or(settings.templates.dir.clone());
        return Ok((setup.providers, ttl, dir));
    }
    let ctx = Ctx::load(config)?;
    let ttl = ttl.or(ctx.config.ttl).unwrap_or(ctx.settings.preview.ttl);
    let dir = ctx
        .config
        .template_dir
        .clone()
        .or_else(|| ctx.settings.templates.dir.clone());
    Ok((super::providers::cloud_for_sweep(&ctx)?, ttl, dir))
}

/// Now plus `ttl`; `None` when that is past the calendar's end.
fn from_now(ttl: std::time::Duration) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
}

/// Pins (`by`) or unpins the preview of `pr`, its expiry renewed to `ttl` from now, and
/// updates its comment when there was a preview to pin: what the pin label and
/// `atlas preview pin` both do.
async fn pin_preview(
    providers: &crate::provider::Providers,
    renderer: &Renderer,
    pr: u64,
    by: Option<&str>,
    ttl: std::time::Duration,
    // Whether the repository is private (the event says so; `None` for a CLI run, which reads
    // it from the old comment): the rewritten comment carries a signed link only then.
    private: Option<bool>,
) -> anyhow::Result<(
    crate::lifecycle::PinOutcome,
    Option<crate::provider::CommentRef>,
)> {
    let renew = from_now(ttl).context("the ttl is too long")?;
    let out = crate::lifecycle::pin(
        providers.database.as_ref(),
        providers.platform.as_ref(),
        pr,
        by,
        renew,
    )
    .await?;
    if out.changed.is_empty() {
        return Ok((out, None));
    }
    let comment = crate::lifecycle::lifecycle_comment(
        providers.forge.as_ref(),
        providers.platform.as_ref(),
        renderer,
        crate::lifecycle::Changed::Pin(&out),
        private,
    )
    .await?;
    Ok((out, comment))
}

/// `atlas preview pin --pr N [--by LOGIN] [--unpin] [--local]`: what the pin label does.
pub async fn cli_pin(
    args: &crate::cli::PinArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (providers, ttl, template_dir) = lifecycle_cli(args.local, None, config).await?;
    let by = (!args.unpin).then(|| login(Some(&args.by)));
    let r = Renderer::new(template_dir.as_deref())?;
    let (out, _) = pin_preview(&providers, &r, args.pr, by.as_deref(), ttl, None).await?;
    if out.changed.is_empty() {
        bail!("PR #{} has no preview to pin", args.pr);
    }
    eprintln!(
        "preview of PR #{} {} ({})",
        out.pr,
        match &out.pinned_by {
            Some(b) => crate::contract::pin_phrase(b),
            None => format!(
                "unpinned; expires {}",
                out.expires.as_deref().unwrap_or("?")
            ),
        },
        out.changed.join(", ")
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// `atlas sweep [--dry-run] [--local]`.
pub async fn cli_sweep(
    args: &crate::cli::SweepArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if args.local {
        let (settings, config, setup) = super::providers::local_for_cli(config).await?;
        let mut opts = SweepOptions::from_config(&config, &settings);
        opts.dry_run |= args.dry_run;
        let now = chrono::Utc::now();
        let report = sweep::sweep(&setup.providers, now, &opts).await;
        let estate =
            crate::estate::after_sweep(&setup.providers, &settings, opts.dry_run, now).await;
        // The cluster runs only while a preview exists, whoever removed the last one.
        super::preview::stop_if_idle(&setup).await;
        let actions = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
        let files = crate::gha::Files::from_vars(std::env::vars());
        let out: Box<dyn std::io::Write + Send> = if args.json {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        let mut gha = crate::gha::Gha::new(out, files, actions);
        let renderer = Renderer::new(settings.templates.dir.as_deref())?;
        return finish_sweep(&mut gha, &report, &estate, &renderer, args.json);
    }
    let mut ctx = Ctx::load(config)?;
    ctx.config.dry_run |= args.dry_run;
    if args.json {
        // stdout carries the JSON alone; the log goes to stderr.
        let actions = ctx.gha.is_actions();
        let files = crate::gha::Files::from_vars(std::env::vars());
        ctx.gha = crate::gha::Gha::new(Box::new(std::io::stderr()), files, actions);
    }
    sweep_run(&mut ctx, args.json).await
}

/// Dispatches the preview and sweep commands of `atlas run`.
pub async fn dispatch(ctx: &mut Ctx, event: &Event, plan: &Plan) -> anyhow::Result<()> {
    match plan.command {
        CommandKind::PreviewUp
        | CommandKind::PreviewDown
        | CommandKind::Pin
        | CommandKind::Unpin => pr_run(ctx, event, plan).await,
        CommandKind::Sweep => sweep_run(ctx, false).await,
        other => bail!("internal: {} is not a preview command", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_secrets_pass_and_missing_ones_fail() {
        let mut given = BTreeMap::new();
        given.insert("A_KEY".to_string(), Secret::new("value-a-123"));
        given.insert("PROD_DB".to_string(), Secret::new("value-prod-456"));
        let (out, undeclared) = declared_secrets(&["A_KEY".into()], &given).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), vec!["A_KEY"]);
        assert_eq!(undeclared, vec!["PROD_DB".to_string()]);
        let e = declared_secrets(&["B_KEY".into()], &given)
            .unwrap_err()
            .to_string();
        assert!(e.contains("B_KEY") && e.contains("preview_secrets"), "{e}");
        assert!(!e.contains("value-a-123"));
    }
}
