//! Preview up / down over the provider traits (the sweep, which removes what is left, is
//! `sweep`).
//!
//! # API for other flows
//! Build a [`Providers`] (the command floor assembles it: `commands/providers.rs`, local or
//! cloud: Neon + Fly + GitHub), then:
//! - [`up`]`(providers, settings, req, opts, log)` -> [`UpOutcome`]: ensure branch -> migrations
//!   (`[database] migrations` with `DATABASE_URL` = the branch: as a one-off task in the app's
//!   image when the platform runs tasks (`Platform::run_task`, Fly), else via `sh -c` here;
//!   output kept, redacted) -> schema diff -> deploy + readiness -> smoke checks -> load gate
//!   ([`run_load_gate`]) -> the seven-clause [`Contract`] -> sticky comment
//!   (`<!-- atlas:preview pr=N -->`) via `Forge::upsert_comment` -> deployment status.
//!   On any failure part-way the preview is torn down (app, then branch), a "failed" comment is
//!   posted, and the error is returned: [`GateFailed`] (exit 1) for failed migrations or smoke
//!   checks, any other error (exit 2) for operational faults.
//! - [`down`]`(providers, settings, req, opts, log)` -> [`DownOutcome`]: destroy app -> delete
//!   branch -> audit line -> "destroyed" comment -> deployments inactive.
//!
//! Both are idempotent: `up` twice updates in place, `down` twice is a successful no-op.
//! `log` receives one line per step (with its duration); callers print it or send it to the
//! Actions log. The summary markdown is returned, never written here: the local CLI writes it to
//! a file, the action to `$GITHUB_STEP_SUMMARY`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{ResetPolicy, Settings};
use crate::contract::{Contract, SmokeResult, Timing};
use crate::error::GateFailed;
use crate::provider::local::pg::LocalPg;
use crate::provider::{
    AppDeployment, BranchRequest, Deleted, DeployRequest, DeployState, DeploymentStatus,
    NewDeployment, Providers, TaskRequest,
};
use crate::report::{DestroyedComment, PreviewComment, SummaryContext};
use crate::secret::{self, Secret};

/// What is being previewed.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRequest {
    pub pr: u64,
    /// The PR head commit.
    pub sha: String,
    /// The head branch (user text: rendered through the `md` filter).
    pub branch: String,
    /// `owner/name`.
    pub repository: String,
    pub title: Option<String>,
}

/// Per-run options that do not live in `atlas.toml`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Values of the declared preview secrets (`[preview] secrets` names); others are dropped.
    pub preview_secrets: BTreeMap<String, Secret>,
    /// Image reference (cloud platforms).
    pub image: Option<String>,
    /// What runs, for the code identity clause (image, or the local command).
    pub artifact: String,
    /// Preview TTL (the `ttl` input, else `[preview] ttl`).
    pub ttl: Option<Duration>,
    pub template_dir: Option<PathBuf>,
    /// Where the audit log (JSON lines) is appended; `None`: no audit file.
    pub audit_log: Option<PathBuf>,
    /// App/resource name prefix from `naming::prefix`.
    pub prefix: String,
    /// The PR's base branch: the load gate compares with the history's runs up to the merge
    /// base of the head with it. `None`: with the latest runs.
    pub history_base: Option<String>,
    /// Where the history branch's dashboard is served (GitHub Pages), linked from the comment.
    pub dashboard_url: Option<String>,
    /// The repository is private (the event says so): a signed-link preview's comment carries
    /// a link. On a public repository anyone can read the comment, so it says how to mint one.
    pub private_repository: bool,
    /// The run's clock for the expiry it writes (`None`: the system clock); the week
    /// simulation moves it.
    pub now: Option<DateTime<Utc>>,
    /// Whether the pin label is on the PR, as the event shows it (`pull_request.labels`):
    /// `Some(true)` pins the preview this run builds when nothing pins it yet (the label was
    /// added before the preview existed, when there was nothing to pin), `Some(false)` unpins a
    /// preview whose pin outlived its label. `None` (a manual run): the recorded pin stands.
    pub pin_labeled: Option<bool>,
}

/// What `up` produced.
#[derive(Debug, Clone, Serialize)]
pub struct UpOutcome {
    pub contract: Contract,
    pub app: AppDeployment,
    pub comment: crate::provider::CommentRef,
    pub comment_body: String,
    pub summary: String,
}

/// What `down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DownOutcome {
    pub removed: Vec<Removed>,
    pub comment: crate::provider::CommentRef,
    pub comment_body: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub kind: String,
    pub name: String,
    pub result: String,
}

/// The transient GitHub environment of a PR's preview.
pub fn preview_environment(pr: u64) -> String {
    format!("preview/pr-{pr}")
}

/// The sticky comment marker of a PR.
pub fn marker(pr: u64) -> String {
    format!("<!-- atlas:preview pr={pr} -->")
}

/// Bound on a migrations run on the platform (one-off machine), from create to exit.
const MIGRATIONS_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub use crate::provider::local::migrate::{MigrationRun, run_migrations};

/// Load evidence for the contract.
#[derive(Debug, Clone, Default)]
pub struct LoadGate {
    pub load: Option<serde_json::Value>,
    pub comparison: Option<serde_json::Value>,
    pub note: Option<String>,
    /// `Some(detail)` when the gate failed.
    pub failed: Option<String>,
    /// The measured summary (for the trace ids it keeps).
    pub summary: Option<crate::load::Summary>,
}

/// The load test + baseline gate against a ready preview: `[load]` scenario (only when it
/// declares requests: a default `GET /` against an arbitrary app would measure 404s), then the
/// comparison with `[baseline] path` when that file exists. An inconclusive comparison is
/// reported, never turned into a pass or a failure.
pub async fn run_load_gate(
    settings: &Settings,
    url: &str,
    history: Option<crate::evidence::load_gate::BranchHistory<'_>>,
) -> anyhow::Result<LoadGate> {
    if !settings.load.enabled {
        return Ok(LoadGate {
            note: Some("load test: disabled ([load] enabled = false)".into()),
            ..LoadGate::default()
        });
    }
    if settings.load.requests.is_empty() {
        return Ok(LoadGate {
            note: Some("load test: not configured (add [[load.requests]] to atlas.toml)".into()),
            ..LoadGate::default()
        });
    }
    let summary = crate::load::run_repeated(&settings.load, url)
        .await
        .context("load test against the preview")?;
    let run = crate::evidence::load_gate::judge_with(
        summary,
        &settings.baseline,
        &settings.load.requests,
        history,
    )
    .await?;
    Ok(LoadGate {
        load: Some(serde_json::to_value(&run.summary)?),
        comparison: run
            .comparison
            .as_ref()
            .map(serde_json::to_value)
            .transpose()?,
        note: run.not_gated().or_else(|| run.inconclusive()),
        failed: run.failure(),
        summary: Some(run.summary),
    })
}

/// Runs the `[[smoke]]` checks against `base`.
pub async fn run_smoke(settings: &Settings, base: &str) -> anyhow::Result<Vec<SmokeResult>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    crate::evidence::checks::run_checks(&client, base, &settings.smoke, "[[smoke]]").await
}

/// What the current `up` of a first preview created so far: torn down if the run is cancelled
/// (SIGINT/SIGTERM) before it finished. Empty for an update, which is never torn down.
#[derive(Debug, Clone, Default)]
pub struct CreatedThisRun {
    pub branch: Option<String>,
    pub app: Option<String>,
}

static CREATED: std::sync::Mutex<CreatedThisRun> = std::sync::Mutex::new(CreatedThisRun {
    branch: None,
    app: None,
});

fn ledger(f: impl FnOnce(&mut CreatedThisRun)) {
    f(&mut CREATED.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Takes what a cancelled `up` of a first preview had created (see [`CreatedThisRun`]).
pub fn take_created_this_run() -> CreatedThisRun {
    std::mem::take(&mut CREATED.lock().unwrap_or_else(|p| p.into_inner()))
}

struct Steps<'a> {
    timings: Vec<Timing>,
    log: &'a mut dyn FnMut(&str),
    at: Instant,
    /// What this run touched, so that a failure tears down only what this run created.
    branch_created: Option<bool>,
    platform_touched: bool,
}

impl Steps<'_> {
    fn begin(&mut self, what: &str) {
        (self.log)(&format!("→ {what}"));
        self.at = Instant::now();
    }
    fn end(&mut self, step: &str, detail: &str) {
        let ms = self.at.elapsed().as_millis() as u64;
        (self.log)(&format!("  ✓ {step}: {detail} ({ms} ms)"));
        self.timings.push(Timing {
            step: step.into(),
            ms,
        });
    }
}

/// What the preview app is told about itself, so that its own traces and logs can be filtered
/// per preview and per commit: OpenTelemetry's service name and resource attributes (every OTel
/// SDK reads both from the environment), the commit and the preview flag.
pub fn identity_env(settings: &Settings, req: &PreviewRequest) -> BTreeMap<String, String> {
    let service = settings.app.name.clone().unwrap_or_else(|| {
        req.repository
            .rsplit('/')
            .next()
            .unwrap_or(&req.repository)
            .to_string()
    });
    // resource attribute values are W3C baggage values: `,` `=` and the like percent-encoded
    // (the sha is hex and the PR a number, but the encoding keeps that an invariant).
    let value = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut env = BTreeMap::new();
    env.insert("ATLAS_COMMIT_SHA".to_string(), req.sha.clone());
    env.insert("ATLAS_PREVIEW".to_string(), "1".to_string());
    env.insert("OTEL_SERVICE_NAME".to_string(), service);
    env.insert(
        "OTEL_RESOURCE_ATTRIBUTES".to_string(),
        format!(
            "service.version={},deployment.environment=preview,atlas.pr={}",
            value(&req.sha),
            req.pr
        ),
    );
    env
}

fn app_name(opts: &UpOptions, pr: u64) -> String {
    crate::naming::preview_app(&opts.prefix, pr)
}

fn base_contract(settings: &Settings, req: &PreviewRequest, opts: &UpOptions) -> Contract {
    let mut c = Contract::default();
    c.code.sha = req.sha.clone();
    c.code.branch = req.branch.clone();
    c.code.artifact = opts.artifact.clone();
    c.data.model = crate::data::model_name(settings.database.data_model).into();
    c.data.schema_only = settings.database.schema_only;
    if let Ok(plan) = crate::data::plan(&settings.database) {
        c.data.schema_only = plan.schema_only;
        c.data.parent_rows = Some(plan.parent_rows().into());
        c.data.masking = plan.masking.iter().flatten().map(|m| m.display()).collect();
        c.data.seed = plan.seed.map(|command| crate::contract::SeedResult {
            command,
            ..Default::default()
        });
    }
    c.data.external_systems = settings.database.external_systems.clone();
    c.identity.access = settings.preview.access.clone();
    c.identity.who = crate::gate::Mode::from_access(&settings.preview.access)
        .filter(|m| *m != crate::gate::Mode::Public)
        .map(|m| m.who(&req.repository, &settings.preview.allowed_teams));
    c.secrets.names = settings.preview.secrets.clone();
    c.secrets.production_secrets = false;
    c.migrations.command = settings.database.migrations.clone();
    c.lifecycle.audit = opts.audit_log.as_ref().map(|p| p.display().to_string());
    c
}

fn audit(opts: &UpOptions, entry: serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let Some(path) = &opts.audit_log else {
        return Ok(());
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write the audit log {}", path.display()))?;
    writeln!(f, "{}", secret::redact(&entry.to_string()))?;
    Ok(())
}

/// Creates or updates the preview of `req.pr`. See the module docs.
pub async fn up(
    providers: &Providers,
    settings: &Settings,
    req: &PreviewRequest,
    opts: &UpOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<UpOutcome> {
    let renderer = crate::report::Renderer::new(opts.template_dir.as_deref())?;
    // A bad data model (a rule, a missing seed) fails before anything is created.
    let plan = crate::data::plan(&settings.database)?;
    if providers.database.kind() == "local-postgres"
        && let Some(masks) = &plan.masking
    {
        crate::data::masking::local_sql(masks).context("data_model = \"anonymized\" locally")?;
    }
    if let Some(st) = providers.forge.pr_state(req.pr).await?
        && !st.open
    {
        bail!(
            "PR #{} is closed: no preview is built for a closed PR (reopen it first)",
            req.pr
        );
    }
    // The cap counts previews before anything is built, and again once this run's are there.
    let (is_new, listed_pin) = admit_before(providers, &renderer, settings, req, opts, log).await?;
    let mut contract = base_contract(settings, req, opts);
    let mut steps = Steps {
        timings: Vec::new(),
        log,
        at: Instant::now(),
        branch_created: None,
        platform_touched: false,
    };
    // The version serving now, if any: an update that fails must leave it serving.
    let live = match providers.forge.comment_body(req.pr, &marker(req.pr)).await {
        Ok(body) => body
            .as_deref()
            .and_then(Contract::from_comment)
            .filter(|c| c.lifecycle.destroyed.is_none() && !c.code.url.is_empty()),
        Err(_) => None,
    };
    // The pin, from the listing when the cap made one, else from the comment's record (the app
    // keeps its pin metadata across deploys either way; this decides the branch's expiry and
    // the clause).
    // A reused schema-only branch holds the migration records its creation counted.
    if plan.schema_only {
        contract.data.migration_records = live.as_ref().and_then(|l| l.data.migration_records);
    }
    contract.lifecycle.pinned_by = match listed_pin {
        Some(p) => p,
        None => live.as_ref().and_then(|l| l.lifecycle.pinned_by.clone()),
    };
    // The label as the event shows it decides when it disagrees with the record.
    let pin_change = label_pin(opts.pin_labeled, contract.lifecycle.pinned_by.as_deref());
    if let Some(p) = &pin_change {
        contract.lifecycle.pinned_by = p.clone();
    }
    let environment = preview_environment(req.pr);
    let record = providers
        .forge
        .create_deployment(NewDeployment {
            environment: &environment,
            sha: &req.sha,
            transient: true,
            description: "atlas preview",
        })
        .await?;
    providers
        .forge
        .set_deployment_status(
            &record,
            DeploymentStatus::new(DeployState::InProgress, "atlas is building the preview"),
        )
        .await?;
    contract.code.deployment = record.url.clone();
    let first = live.is_none();
    let job = Job(providers, settings, req, opts);
    let publish = Publish(providers, &renderer, req, opts, &record);
    let result = match up_inner(job, &mut contract, &mut steps, first).await {
        Ok(app) => {
            if let Some(p) = pin_change {
                let reused = steps.branch_created == Some(false);
                apply_label_pin(providers, &mut contract, &app.app, p, reused, steps.log).await;
            }
            match admit_after(providers, settings, req, opts, is_new, steps.log).await {
                Ok(()) => publish_ready(publish, &contract, app).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    // Finished either way: a cancel from here on has nothing of this run's to tear down.
    if result.is_ok() {
        take_created_this_run();
    }
    match result {
        Ok(outcome) => Ok(outcome),
        Err(err) => {
            let update = live.is_some() || steps.branch_created == Some(false);
            let mut leftovers = Vec::new();
            let mut msg = secret::redact(&format!("{err:#}"));
            if update {
                // An update that failed destroys nothing: the previous version keeps serving.
                let still = match &live {
                    Some(l) => format!("commit {} is still live at {}", l.code.sha, l.code.url),
                    None => "the previous version is still serving".to_string(),
                };
                (steps.log)(&format!("→ the update failed; nothing torn down: {still}"));
                msg.push_str(&format!(" — the update was not applied; {still}"));
                return fail_update(publish, &contract, live, msg, err).await;
            }
            let refused = err
                .chain()
                .find_map(|c| c.downcast_ref::<crate::error::QuotaRefused>())
                .map(|q| q.reason.clone());
            // A first creation that failed: tear down what this run created, and only that.
            (steps.log)(if refused.is_some() {
                "→ over the preview cap: this run undoes its own preview"
            } else {
                "→ tearing down after the failure"
            });
            let app = app_name(opts, req.pr);
            let branch = branch_name(providers, req.pr);
            if steps.platform_touched
                && let Err(e) = providers.platform.destroy(&app).await
            {
                leftovers.push(format!("app {app}: {e:#}"));
            }
            if steps.branch_created == Some(true)
                && let Err(e) = providers.database.delete_branch(&branch).await
            {
                leftovers.push(format!("database branch {branch}: {e:#}"));
            }
            take_created_this_run();
            if let Some(reason) = refused {
                if !leftovers.is_empty() {
                    return Err(
                        err.context(format!("teardown incomplete: {}", leftovers.join("; ")))
                    );
                }
                let _ = providers
                    .forge
                    .set_deployment_status(
                        &record,
                        DeploymentStatus::new(DeployState::Inactive, "refused: preview cap"),
                    )
                    .await;
                post_refused(providers, &renderer, settings, req, opts, &reason).await?;
                return Err(err);
            }
            contract.lifecycle.destroyed = Some(Utc::now().to_rfc3339());
            if !leftovers.is_empty() {
                msg.push_str(&format!(
                    " — teardown incomplete, run `atlas preview down` to finish: {}",
                    leftovers.join("; ")
                ));
            }
            let failure = Failure {
                contract: &contract,
                recorded: &contract,
                msg: &msg,
                deployment: "preview failed",
                result: "failed",
            };
            report_failure(publish, failure).await;
            if leftovers.is_empty() {
                Err(err.context("the preview was torn down"))
            } else {
                Err(err.context(format!("teardown incomplete: {}", leftovers.join("; "))))
            }
        }
    }
}

/// The pin the event's labels ask for where it differs from the recorded one `recorded`:
/// `Some(Some(_))` pins (with [`crate::contract::PINNED_AT_DEPLOY`]: the event does not say
/// who added the label), `Some(None)` unpins; `None`: nothing to change (no labels known, or
/// they agree with the record, whoever pinned it).
pub fn label_pin(labeled: Option<bool>, recorded: Option<&str>) -> Option<Option<String>> {
    match (labeled?, recorded.filter(|p| !p.is_empty())) {
        (true, None) => Some(Some(crate::contract::PINNED_AT_DEPLOY.to_string())),
        (false, Some(_)) => Some(None),
        _ => None,
    }
}

/// Records the pin [`label_pin`] decided on the deployed app and, for a branch this run reused,
/// on its expiry (a new branch was created with the right one; an unpinned branch got its
/// expiry back from `ensure_branch`). A pin recorded on the app meanwhile (the label's own
/// run, racing this one) names who pinned it and is kept. Never fails the preview: a pin that
/// could not be recorded is logged and the comment says what holds.
async fn apply_label_pin(
    providers: &Providers,
    contract: &mut Contract,
    app: &str,
    pin: Option<String>,
    reused_branch: bool,
    log: &mut dyn FnMut(&str),
) {
    let recorded = recorded_pin(providers, app).await;
    let result = match &pin {
        Some(by) => {
            let set = match &recorded {
                Some(who) => {
                    contract.lifecycle.pinned_by = Some(who.clone());
                    Ok(())
                }
                None => providers.platform.set_pin(app, Some(by)).await,
            };
            match (set, &contract.data.branch) {
                (Ok(()), Some(b)) if reused_branch => providers.database.clear_expiry(b).await,
                (r, _) => r,
            }
        }
        None => providers.platform.set_pin(app, None).await,
    };
    match result {
        Ok(()) => log(&format!(
            "→ {} (the pin label {} the pull request)",
            match &contract.lifecycle.pinned_by {
                Some(by) => crate::contract::pin_phrase(by),
                None => "unpinned".into(),
            },
            if pin.is_some() {
                "is on"
            } else {
                "is no longer on"
            }
        )),
        Err(e) => {
            contract.lifecycle.pinned_by = recorded;
            log(&format!(
                "→ the pin label could not be applied (the next push or a relabel retries): {}",
                secret::redact(&format!("{e:#}"))
            ));
        }
    }
}

/// The pin recorded on `app` now (its machines' metadata, else the platform's listing).
async fn recorded_pin(providers: &Providers, app: &str) -> Option<String> {
    let from_machines = match providers.platform.app_machines(app).await {
        // An unpinned machine keeps the key with an empty value.
        Ok(Some(ms)) => Some(ms.iter().find_map(|m| {
            m.metadata
                .get(crate::provider::PIN_KEY)
                .filter(|p| !p.is_empty())
                .cloned()
        })),
        _ => None,
    };
    let pin = match from_machines {
        Some(p) => p,
        None => {
            providers
                .platform
                .list_apps()
                .await
                .ok()?
                .into_iter()
                .find(|o| o.name == app)?
                .pinned_by
        }
    };
    pin.filter(|p| !p.is_empty())
}

/// The live previews (apps and branches grouped by PR), for the cap.
async fn live_previews(
    providers: &Providers,
    ttl: Duration,
) -> anyhow::Result<Vec<crate::quota::Live>> {
    let apps = providers.platform.list_apps().await?;
    let branches = providers.database.list_branches().await?;
    Ok(crate::quota::previews(&apps, &branches, ttl))
}

/// The cap's first check (see `crate::quota`): `Ok((is_new, Some(pinned_by)))` to build, after
/// evicting what the policy evicts; `Err(QuotaRefused)` after posting the refusal. No cap:
/// `(false, None)` without a call. A live set that cannot be read stops the run (it cannot honour the cap).
async fn admit_before(
    providers: &Providers,
    renderer: &crate::report::Renderer,
    settings: &Settings,
    req: &PreviewRequest,
    opts: &UpOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<(bool, Option<Option<String>>)> {
    let cap = settings.preview.max_previews;
    if cap.is_none() {
        return Ok((false, None));
    }
    let ttl = opts.ttl.unwrap_or(settings.preview.ttl);
    let live = live_previews(providers, ttl)
        .await
        .context("counting the live previews for [preview] max_previews")?;
    let is_new = !live.iter().any(|l| l.pr == req.pr);
    let pin = Some(
        live.iter()
            .find(|l| l.pr == req.pr)
            .and_then(|l| l.pinned_by.clone()),
    );
    match crate::quota::before(&live, req.pr, cap, settings.preview.quota_policy) {
        crate::quota::Admission::Admit => Ok((is_new, pin)),
        crate::quota::Admission::Evict { prs, reason } => {
            for pr in prs {
                evict(providers, settings, req, opts, pr, &reason, log).await?;
            }
            Ok((is_new, pin))
        }
        crate::quota::Admission::Refuse { reason } => {
            log(&format!("→ refused: {reason}"));
            post_refused(providers, renderer, settings, req, opts, &reason).await?;
            Err(crate::error::QuotaRefused { reason }.into())
        }
    }
}

/// The cap's second check, once this run's resources exist (a new preview only): evicts what
/// the rule evicts, or returns `QuotaRefused` for `up` to undo this run's preview.
async fn admit_after(
    providers: &Providers,
    settings: &Settings,
    req: &PreviewRequest,
    opts: &UpOptions,
    is_new: bool,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let cap = settings.preview.max_previews;
    if cap.is_none() || !is_new {
        return Ok(());
    }
    let ttl = opts.ttl.unwrap_or(settings.preview.ttl);
    let live = live_previews(providers, ttl)
        .await
        .context("counting the live previews again for [preview] max_previews")?;
    match crate::quota::after(&live, req.pr, cap, settings.preview.quota_policy) {
        crate::quota::Admission::Admit => Ok(()),
        crate::quota::Admission::Evict { prs, reason } => {
            for pr in prs {
                evict(providers, settings, req, opts, pr, &reason, log).await?;
            }
            Ok(())
        }
        crate::quota::Admission::Refuse { reason } => {
            Err(crate::error::QuotaRefused { reason }.into())
        }
    }
}

/// Tears down the preview of `victim` for the cap: `down`, then its comment says why and that a
/// push brings it back.
async fn evict(
    providers: &Providers,
    settings: &Settings,
    req: &PreviewRequest,
    opts: &UpOptions,
    victim: u64,
    reason: &str,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    log(&format!(
        "→ evicting the preview of PR #{victim} (preview cap, for PR #{})",
        req.pr
    ));
    let vreq = PreviewRequest {
        pr: victim,
        sha: String::new(),
        branch: format!("pr-{victim}"),
        repository: req.repository.clone(),
        title: None,
    };
    let out = down(providers, settings, &vreq, opts, log)
        .await
        .with_context(|| format!("evicting the preview of PR #{victim} for the preview cap"))?;
    let note = format!(
        "> [!NOTE]\n> Evicted: {}\n",
        crate::report::escape_markdown(reason)
    );
    // Right under the heading (the marker stays the first line).
    let body = match out.comment_body.match_indices('\n').nth(1) {
        Some((i, _)) => format!(
            "{}\n\n{note}{}",
            &out.comment_body[..i],
            &out.comment_body[i..]
        ),
        None => format!("{}\n\n{note}", out.comment_body),
    };
    providers
        .forge
        .upsert_comment(victim, &marker(victim), &body)
        .await?;
    audit(
        opts,
        serde_json::json!({"at": Utc::now().to_rfc3339(), "action": "evict", "pr": victim,
            "for_pr": req.pr, "reason": reason}),
    )?;
    Ok(())
}

/// The refused comment and audit line (no record: nothing of this PR is live).
async fn post_refused(
    providers: &Providers,
    renderer: &crate::report::Renderer,
    settings: &Settings,
    req: &PreviewRequest,
    opts: &UpOptions,
    reason: &str,
) -> anyhow::Result<()> {
    let mut contract = base_contract(settings, req, opts);
    contract.lifecycle.quota = Some(format!("refused: {reason}"));
    let ctx = PreviewComment {
        marker: marker(req.pr),
        pr: req.pr,
        status: "refused",
        contract: &contract,
        error: Some(reason.to_string()),
        generated_at: Utc::now().to_rfc3339(),
        signed_link: None,
        mint_hint: None,
    };
    let body = renderer.render_comment("preview.md.j2", &ctx)?;
    providers
        .forge
        .upsert_comment(req.pr, &marker(req.pr), &body)
        .await?;
    audit(
        opts,
        serde_json::json!({"at": Utc::now().to_rfc3339(), "action": "up", "pr": req.pr,
            "sha": req.sha, "result": "refused", "reason": reason}),
    )
}

/// A failed update: the failed comment names the commit still live and keeps the live
/// contract's record (so the next run and `down` see what serves), the new deployment is marked
/// failed, and the error is returned with nothing torn down.
async fn fail_update(
    publish: Publish<'_>,
    contract: &Contract,
    live: Option<Contract>,
    msg: String,
    err: anyhow::Error,
) -> anyhow::Result<UpOutcome> {
    let failure = Failure {
        contract,
        recorded: live.as_ref().unwrap_or(contract),
        msg: &msg,
        deployment: "update failed",
        result: "update-failed",
    };
    report_failure(publish, failure).await;
    let still = live.map_or_else(
        || "the previous version is still serving".to_string(),
        |l| format!("commit {} is still live", l.code.sha),
    );
    Err(err.context(format!(
        "the update was not applied; nothing was torn down: {still}"
    )))
}

/// What one `up` works on: the providers, the settings, the request and its options.
#[derive(Clone, Copy)]
struct Job<'a>(
    &'a Providers,
    &'a Settings,
    &'a PreviewRequest,
    &'a UpOptions,
);

/// Where one `up` reports, success or failure: through the providers, the PR comment (with
/// the renderer), for the request and its options, the deployment record's status, and the
/// audit line.
#[derive(Clone, Copy)]
struct Publish<'a>(
    &'a Providers,
    &'a crate::report::Renderer,
    &'a PreviewRequest,
    &'a UpOptions,
    &'a crate::provider::DeploymentRecord,
);

/// What a failed `up` reports.
struct Failure<'a> {
    /// Shown in the failed comment.
    contract: &'a Contract,
    /// Kept as the comment's record: the live contract after a failed update, so the next run
    /// and `down` see what serves.
    recorded: &'a Contract,
    msg: &'a str,
    /// The deployment status description.
    deployment: &'a str,
    /// The audit line's result.
    result: &'a str,
}

/// The failed comment, the deployment marked failed and the audit line. Each is best effort:
/// the error being reported matters more than any of them.
async fn report_failure(publish: Publish<'_>, f: Failure<'_>) {
    let Publish(providers, renderer, req, opts, record) = publish;
    let ctx = PreviewComment {
        marker: marker(req.pr),
        pr: req.pr,
        status: "failed",
        contract: f.contract,
        error: Some(f.msg.to_string()),
        generated_at: Utc::now().to_rfc3339(),
        signed_link: None,
        mint_hint: None,
    };
    if let Ok(body) = renderer.render_comment("preview.md.j2", &ctx) {
        let body = with_record(body, f.recorded);
        let _ = post_comment(providers, req.pr, &body).await;
    }
    let _ = providers
        .forge
        .set_deployment_status(
            record,
            DeploymentStatus::new(DeployState::Failure, f.deployment),
        )
        .await;
    let _ = audit(
        opts,
        serde_json::json!({"at": Utc::now().to_rfc3339(), "action": "up", "pr": req.pr,
            "sha": req.sha, "result": f.result, "error": f.msg}),
    );
}

/// Creates or updates the PR's one preview comment (found by its marker).
async fn post_comment(
    providers: &Providers,
    pr: u64,
    body: &str,
) -> anyhow::Result<crate::provider::CommentRef> {
    providers.forge.upsert_comment(pr, &marker(pr), body).await
}

/// The comment with the contract's record (see [`Contract::record`]) after its first line, the
/// marker. Left out when it would push the comment over GitHub's limit: `down` then shows a
/// fresh contract.
pub fn with_record(body: String, contract: &Contract) -> String {
    let record = contract.record();
    if body.chars().count() + record.len() + 1 > crate::report::COMMENT_LIMIT {
        return body;
    }
    match body.find('\n') {
        Some(i) => format!("{}\n{record}{}", &body[..i], &body[i..]),
        None => format!("{body}\n{record}"),
    }
}

/// What the comment of a signed-link preview says about links: on a private repository a
/// link valid until the preview expires (only the repository's readers see the comment), on a
/// public one the command that mints a link. Neither for other access modes. The link stays out
/// of the contract (its record, the job summary and the history are no place for it).
fn access_note(
    providers: &Providers,
    req: &PreviewRequest,
    opts: &UpOptions,
    contract: &Contract,
    app: &str,
) -> (Option<String>, Option<String>) {
    let Some(ttl) = link_ttl(contract) else {
        return (None, None);
    };
    let link = opts
        .private_repository
        .then(|| providers.platform.signed_link(app, ttl))
        .flatten();
    let local = providers.platform.kind().starts_with("local");
    access_lines(local, req.pr, opts.private_repository, link)
}

/// How long the comment's signed link is valid: until the preview expires (a day when that is
/// unknown or past). `None`: the preview is not a signed-link one, the comment says nothing
/// about links.
pub fn link_ttl(contract: &Contract) -> Option<Duration> {
    if crate::gate::Mode::from_access(&contract.identity.access)
        != Some(crate::gate::Mode::SignedLink)
    {
        return None;
    }
    Some(
        contract
            .lifecycle
            .expires
            .as_deref()
            .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
            .and_then(|e| (e.with_timezone(&Utc) - Utc::now()).to_std().ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(24 * 3600)),
    )
}

/// The comment's (signed link, mint hint) of a signed-link preview of `pr`: the link on a
/// private repository when one was minted, else the command that mints one (`--local` for
/// a `local` platform).
pub fn access_lines(
    local: bool,
    pr: u64,
    private_repository: bool,
    link: Option<String>,
) -> (Option<String>, Option<String>) {
    let hint = format!(
        "atlas preview link --pr {pr}{}",
        if local { " --local" } else { "" }
    );
    match link {
        Some(link) if private_repository => (Some(link), None),
        _ => (None, Some(hint)),
    }
}

/// Renders and posts the "ready" comment, marks the deployment, writes the audit line.
async fn publish_ready(
    publish: Publish<'_>,
    contract: &Contract,
    app: AppDeployment,
) -> anyhow::Result<UpOutcome> {
    let Publish(providers, renderer, req, opts, record) = publish;
    let (signed_link, mint_hint) = access_note(providers, req, opts, contract, &app.app);
    let ctx = PreviewComment {
        marker: marker(req.pr),
        pr: req.pr,
        status: "ready",
        contract,
        error: None,
        generated_at: Utc::now().to_rfc3339(),
        signed_link,
        mint_hint,
    };
    let body = with_record(renderer.render_comment("preview.md.j2", &ctx)?, contract);
    let comment = post_comment(providers, req.pr, &body).await?;
    providers
        .forge
        .set_deployment_status(
            record,
            DeploymentStatus::new(DeployState::Success, "preview ready")
                .environment_url(Some(&app.url))
                .log_url(app.logs.as_deref()),
        )
        .await?;
    let summary = render_summary(renderer, "preview up", req.pr, "ready", contract)?;
    audit(
        opts,
        serde_json::json!({"at": Utc::now().to_rfc3339(), "action": "up", "pr": req.pr,
            "sha": req.sha, "app": app.app, "url": app.url, "result": "ready"}),
    )?;
    Ok(UpOutcome {
        contract: contract.clone(),
        app,
        comment,
        comment_body: body,
        summary,
    })
}

/// The job summary of `preview up` / `preview down`.
fn render_summary(
    renderer: &crate::report::Renderer,
    command: &str,
    pr: u64,
    verdict: &str,
    contract: &Contract,
) -> anyhow::Result<String> {
    renderer.render(
        "summary.md.j2",
        &SummaryContext {
            command,
            pr: Some(pr),
            verdict,
            reason: None,
            contract: Some(contract),
            error: None,
        },
    )
}

fn branch_name(providers: &Providers, pr: u64) -> String {
    if providers.database.kind() == "local-postgres" {
        crate::naming::local_database(pr)
    } else {
        crate::naming::preview_branch(pr)
    }
}

async fn up_inner(
    job: Job<'_>,
    contract: &mut Contract,
    steps: &mut Steps<'_>,
    first: bool,
) -> anyhow::Result<AppDeployment> {
    let Job(providers, settings, req, opts) = job;
    let ttl = opts.ttl.unwrap_or(settings.preview.ttl);
    let expires = opts.now.unwrap_or_else(Utc::now)
        + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
    contract.lifecycle.expires = Some(expires.to_rfc3339());

    let plan = crate::data::plan(&settings.database)?;
    let env = identity_env(settings, req);
    let mut secrets = BTreeMap::new();
    for name in &settings.preview.secrets {
        let v = opts.preview_secrets.get(name).with_context(|| {
            format!(
                "[preview] secrets declares {name} but the `preview_secrets` input has no value for it (locally: INPUT_PREVIEW_SECRETS='{name}=...')"
            )
        })?;
        secrets.insert(name.clone(), v.clone());
    }
    if !plan.branch {
        // `none`: no branch and no DATABASE_URL; straight to the deploy.
        contract.data.provider = "none".into();
        let now = Utc::now().to_rfc3339();
        if first {
            contract.lifecycle.created = Some(now);
        } else {
            contract.lifecycle.created = Some("in an earlier run".into());
            contract.lifecycle.updated = Some(now);
        }
        let launch = Launch {
            env,
            secrets,
            outgoing: None,
        };
        return deploy_and_check(job, contract, steps, first, first, launch).await;
    }
    steps.begin("database branch");
    let branch_req = BranchRequest {
        pr: req.pr,
        name: branch_name(providers, req.pr),
        parent: settings.database.parent.clone(),
        schema_only: plan.schema_only,
        migrations_tables: settings.database.migrations_tables.clone(),
        // A pinned preview's branch carries no expiry (Neon would delete it by itself).
        expires_at: contract.lifecycle.pinned_by.is_none().then_some(expires),
        repository: req.repository.clone(),
        database: settings.database.database.clone(),
        role: settings.database.role.clone(),
        masking: plan.masking.clone(),
        anonymize_timeout: settings.database.anonymize_timeout,
        suspend_after: settings.database.suspend_after,
    };
    let branch = providers.database.ensure_branch(&branch_req).await?;
    steps.branch_created = Some(branch.created);
    if first && branch.created {
        ledger(|l| l.branch = Some(branch.name.clone()));
    }
    contract.data.provider = providers.database.kind().into();
    contract.data.branch = Some(branch.name.clone());
    contract.data.parent = Some(branch.parent.clone());
    let now = Utc::now().to_rfc3339();
    contract.data.parent_at = branch.created_at.map(|t| t.to_rfc3339());
    if branch.created {
        contract.data.migration_records = branch.migration_records;
    }
    if branch.created {
        contract.lifecycle.created = Some(now);
        if plan.masking.is_some() {
            contract.data.masking_ms = Some(steps.at.elapsed().as_millis() as u64);
        }
    } else {
        contract.lifecycle.created = Some(
            branch
                .created_at
                .map_or_else(|| "in an earlier run".into(), |t| t.to_rfc3339()),
        );
        contract.lifecycle.updated = Some(now);
    }
    let masked = match (&plan.masking, branch.created, branch.migration_records) {
        (Some(m), true, _) => format!(", {} masking rule(s) applied", m.len()),
        (Some(_), false, _) => ", masked when it was created".into(),
        (None, true, Some(n)) => format!(", schema only, {n} migration record(s) kept"),
        (None, _, _) => String::new(),
    };
    steps.end(
        "database branch",
        &format!(
            "{} {} from {}{masked}",
            if branch.created { "created" } else { "reused" },
            branch.name,
            branch.parent
        ),
    );

    // The commit running now keeps the data it ran on: frozen before the reset and migrations.
    let outgoing = crate::commit_data::freeze_outgoing(
        providers,
        settings,
        &app_name(opts, req.pr),
        &req.sha,
        &branch,
        &branch_req,
        steps.log,
    )
    .await?;

    // `reset = "on-push"`: a reused branch goes back to its parent's head before migrations.
    let mut reset = false;
    let mut branch = branch;
    if !branch.created && plan.reset == ResetPolicy::OnPush {
        steps.begin("database reset");
        branch = providers
            .database
            .reset_branch(&branch, &branch_req)
            .await
            .with_context(|| format!("resetting {} from {}", branch.name, branch.parent))?;
        // A branch made anew (schema only) carries the records it kept this time.
        if branch.migration_records.is_some() {
            contract.data.migration_records = branch.migration_records;
        }
        let at = Utc::now().to_rfc3339();
        contract.lifecycle.reset = Some(at.clone());
        contract.data.parent_at = Some(at);
        reset = true;
        steps.end(
            "database reset",
            &format!("{} restored from {}", branch.name, branch.parent),
        );
    }

    // The app's environment and secrets: the migrations task runs with the same ones.
    secrets.insert("DATABASE_URL".to_string(), branch.connection_uri.clone());
    // Migrations and the seed run as the same kind of one-off task in the app's image; only
    // the command and the role (the task machine's label) differ.
    let one_off = |role: &'static str, command: &str| TaskRequest {
        app: app_name(opts, req.pr),
        pr: Some(req.pr),
        sha: req.sha.clone(),
        repository: req.repository.clone(),
        image: opts.image.clone(),
        command: command.to_string(),
        secrets: secrets.clone(),
        env: env.clone(),
        timeout: MIGRATIONS_TIMEOUT,
        role,
    };
    if let Some(cmd) = &settings.database.migrations {
        // Where the rows stand before the migrations: what they write is masked again below.
        let mark = match &plan.masking {
            Some(_) => providers.database.mask_mark(&branch).await?,
            None => None,
        };
        steps.begin("migrations");
        steps.platform_touched = true;
        if first && branch.created {
            ledger(|l| l.app = Some(app_name(opts, req.pr)));
        }
        // In the app's own image on the platform when it can (the action container has no
        // shell); else here.
        let task = providers
            .platform
            .run_task(&one_off("migrations", cmd))
            .await?;
        let run = match task {
            Some(out) => MigrationRun {
                ok: out.ok,
                duration_ms: out.duration_ms,
                tail: secret::redact(&out.output_tail),
            },
            None => run_migrations(cmd, &branch.connection_uri).await?,
        };
        contract.migrations.ran = true;
        contract.migrations.ok = Some(run.ok);
        contract.migrations.duration_ms = Some(run.duration_ms);
        contract.migrations.output_tail = Some(run.tail.clone());
        if !run.ok {
            return Err(GateFailed {
                stage: "migrations".into(),
                detail: format!("the migrations command failed:\n{}", run.tail),
            }
            .into());
        }
        steps.end("migrations", "applied");
        steps.begin("schema diff");
        match providers.database.schema_diff(&branch).await {
            Ok(d) => {
                let n = d.diff.lines().count();
                contract.migrations.schema_diff = Some(d.diff);
                steps.end("schema diff", &format!("{n} lines"));
            }
            Err(e) => {
                contract
                    .migrations
                    .limits
                    .push(format!("schema diff unavailable: {e:#}"));
                steps.end("schema diff", "unavailable");
            }
        }
        // The copy was masked before the migrations saw it (they are the PR's code), but a
        // migration may write rows into a masked column (a backfill from an unmasked one, a
        // data migration): the rules run again over the migrated rows before any new app or
        // seed sees them. A branch that cannot be masked again is deleted, never handed on.
        if plan.masking.is_some() {
            steps.begin("masking after migrations");
            if let Err(e) = providers
                .database
                .mask_again(&branch, &branch_req, mark.as_deref())
                .await
            {
                let note = match providers.database.delete_branch(&branch.name).await {
                    Ok(_) => format!(
                        "the branch {} was deleted: rows the migrations wrote may be unmasked",
                        branch.name
                    ),
                    Err(d) => format!(
                        "deleting the branch {} failed too ({d:#}): run `atlas preview down --pr {}`",
                        branch.name, req.pr
                    ),
                };
                return Err(e
                    .context("the masking rules could not run again after the migrations")
                    .context(note));
            }
            steps.end(
                "masking after migrations",
                &format!(
                    "{} rule(s) applied to the rows the migrations wrote",
                    plan.masking.as_ref().map_or(0, Vec::len)
                ),
            );
        }
    }

    if let Some(cmd) = &plan.seed {
        if branch.created || reset {
            steps.begin("seed");
            steps.platform_touched = true;
            if first && branch.created {
                ledger(|l| l.app = Some(app_name(opts, req.pr)));
            }
            let task = one_off("seed", cmd);
            let run = crate::seed::run_seed(
                providers.platform.as_ref(),
                task,
                &branch.connection_uri,
                MIGRATIONS_TIMEOUT,
            )
            .await?;
            let ok = run.ok == Some(true);
            let tail = run.output_tail.clone().unwrap_or_default();
            let code = run.exit_code;
            contract.data.seed = Some(run);
            if !ok {
                return Err(GateFailed {
                    stage: "seed".into(),
                    detail: format!(
                        "the seed command `{cmd}` failed (exit {}):\n{tail}",
                        code.map_or("unknown".into(), |c| c.to_string())
                    ),
                }
                .into());
            }
            steps.end(
                "seed",
                if reset {
                    "ran on the reset branch"
                } else {
                    "ran on the new branch"
                },
            );
        } else {
            (steps.log)("  · seed: not run (the branch existed: a seed runs on a new branch only)");
        }
    }
    let launch = Launch {
        env,
        secrets,
        outgoing,
    };
    deploy_and_check(job, contract, steps, first, branch.created, launch).await
}

/// What the app is deployed with: its environment, its secrets and the outgoing commit's data.
struct Launch {
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, Secret>,
    outgoing: Option<crate::provider::Outgoing>,
}

/// Deploys the app and runs the smoke checks and the load gate against it.
async fn deploy_and_check(
    job: Job<'_>,
    contract: &mut Contract,
    steps: &mut Steps<'_>,
    first: bool,
    created: bool,
    launch: Launch,
) -> anyhow::Result<AppDeployment> {
    let Job(providers, settings, req, opts) = job;
    steps.begin("deploy");
    let window_from = Utc::now();
    steps.platform_touched = true;
    if first && created {
        ledger(|l| l.app = Some(app_name(opts, req.pr)));
    }
    let app = providers
        .platform
        .deploy(&DeployRequest {
            pr: Some(req.pr),
            app: app_name(opts, req.pr),
            sha: req.sha.clone(),
            repository: req.repository.clone(),
            image: opts.image.clone(),
            env: launch.env,
            secrets: launch.secrets,
            port: settings.app.port,
            health_path: settings.app.health_path.clone(),
            readiness_timeout: settings.app.readiness_timeout,
            expires_at: contract
                .lifecycle
                .expires
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            outgoing: launch.outgoing,
        })
        .await?;
    contract.code.url = app.url.clone();
    contract.code.commits = crate::commit_data::commit_urls(
        providers,
        &app,
        req.pr,
        contract.data.branch.as_deref(),
        steps.log,
    )
    .await;
    contract.evidence.logs = app.logs.clone();
    contract.lifecycle.wake_ms = app.wake_ms;
    contract.lifecycle.sleep = Some(crate::contract::sleep_sentence(
        providers.platform.kind(),
        app.sleep.as_deref(),
        app.wake_ms,
        contract
            .data
            .branch
            .as_ref()
            .map(|_| (providers.database.kind(), settings.database.suspend_after)),
    ));
    contract.lifecycle.cost = crate::estate::preview_cost(
        providers.platform.as_ref(),
        providers.database.as_ref(),
        settings,
        &app.app,
        contract.data.branch.as_deref(),
    )
    .await;
    // Behind an access gate, Atlas's own checks carry this run's bypass token.
    let gated;
    let settings = match providers.platform.bypass_header(&app.app) {
        Some(h) => {
            gated = crate::gate::with_bypass(settings, &h);
            contract.evidence.through_gate = true;
            contract.identity.until = contract.lifecycle.expires.clone();
            &gated
        }
        None => settings,
    };
    steps.end(
        "deploy",
        &format!(
            "{} {} at {}",
            if app.created { "started" } else { "replaced" },
            app.app,
            app.url
        ),
    );

    steps.begin("smoke checks");
    let smoke = run_smoke(settings, &app.url).await?;
    let failed: Vec<String> = smoke
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} ({})", s.name, s.detail.clone().unwrap_or_default()))
        .collect();
    let passed = smoke.len() - failed.len();
    let total = smoke.len();
    contract.evidence.traces =
        crate::evidence::traces::collect(&smoke, None, settings.evidence.trace_url.as_deref());
    contract.evidence.smoke = smoke;
    // a failed check's evidence includes the logs of its window (taken again after the load).
    logs_evidence(settings, &app, window_from, contract);
    if !failed.is_empty() {
        return Err(GateFailed {
            stage: "smoke checks".into(),
            detail: format!("{}/{total} failed: {}", failed.len(), failed.join("; ")),
        }
        .into());
    }
    steps.end("smoke checks", &format!("{passed}/{total} passed"));

    steps.begin("load gate");
    // The PR is compared with the default branch's runs up to where it branched off.
    let merge_base = match &opts.history_base {
        Some(base) if !settings.baseline.history_branch.is_empty() => {
            match providers.forge.merge_base(base, &req.sha).await {
                Ok(m) => m,
                Err(e) => {
                    (steps.log)(&format!(
                        "  the merge base with {base} is unknown ({}): compared with the latest runs",
                        secret::redact(&format!("{e:#}"))
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    let history = (!settings.baseline.history_branch.is_empty()).then(|| {
        crate::evidence::load_gate::BranchHistory {
            forge: providers.forge.as_ref(),
            branch: &settings.baseline.history_branch,
            up_to: merge_base.as_deref(),
        }
    });
    let from_history = history.is_some();
    let gate = run_load_gate(settings, &app.url, history).await?;
    if from_history && gate.comparison.is_some() {
        contract.evidence.dashboard = opts.dashboard_url.clone();
    }
    contract.evidence.load = gate.load;
    contract.evidence.comparison = gate.comparison;
    contract.evidence.load_note = gate.note.clone();
    contract.evidence.traces = crate::evidence::traces::collect(
        &contract.evidence.smoke,
        gate.summary.as_ref(),
        settings.evidence.trace_url.as_deref(),
    );
    logs_evidence(settings, &app, window_from, contract);
    if let Some(detail) = gate.failed {
        return Err(GateFailed {
            stage: "load gate".into(),
            detail,
        }
        .into());
    }
    steps.end("load gate", gate.note.as_deref().unwrap_or("measured"));

    contract.evidence.timings = steps.timings.clone();
    contract.check().map_err(|e| anyhow!(e))?;
    Ok(app)
}

/// The logs of the window the preview was deployed and measured in: the `[evidence] logs_url`
/// link when configured (else the platform's own, e.g. Fly's dashboard for the app), and a
/// local app's log tail (its `logs` is a file path, not a URL).
fn logs_evidence(
    settings: &Settings,
    app: &AppDeployment,
    from: chrono::DateTime<Utc>,
    contract: &mut Contract,
) {
    let local = app
        .logs
        .as_deref()
        .filter(|l| !l.starts_with("https://") && !l.starts_with("http://"));
    if let Some(path) = local {
        contract.evidence.logs_tail = crate::evidence::logs::tail_file(std::path::Path::new(path));
    }
    if let Some(t) = &settings.evidence.logs_url {
        contract.evidence.logs = Some(crate::evidence::logs::link(t, &app.app, from, Utc::now()));
    }
}

/// Destroys the preview of `req.pr`. See the module docs.
pub async fn down(
    providers: &Providers,
    settings: &Settings,
    req: &PreviewRequest,
    opts: &UpOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<DownOutcome> {
    let app = app_name(opts, req.pr);
    let branch = branch_name(providers, req.pr);
    let renderer = crate::report::Renderer::new(opts.template_dir.as_deref())?;
    let word = |d: Deleted| match d {
        Deleted::Removed => "destroyed",
        Deleted::AlreadyGone => "already gone",
    };
    // The contract the preview last ran under, read before anything is deleted: the destroyed
    // comment shows it (its evidence included) rather than a fresh one.
    let previous = match providers.forge.comment_body(req.pr, &marker(req.pr)).await {
        Ok(body) => body.as_deref().and_then(Contract::from_comment),
        Err(e) => {
            log(&format!(
                "  ! cannot read the preview comment, the destroyed comment shows a fresh contract: {e:#}"
            ));
            None
        }
    };
    // Both are tried whatever the other did: a failed app destroy must not keep the branch.
    let t = Instant::now();
    let a = providers.platform.destroy(&app).await;
    let a_ms = t.elapsed().as_millis();
    let t = Instant::now();
    let b = providers.database.delete_branch(&branch).await;
    let b_ms = t.elapsed().as_millis();
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            let mut survived = Vec::new();
            let mut gone = Vec::new();
            match a {
                Ok(d) => gone.push(format!("app {app}: {}", word(d))),
                Err(e) => survived.push(format!("app {app} ({e:#})")),
            }
            match b {
                Ok(d) => gone.push(format!("database branch {branch}: {}", word(d))),
                Err(e) => survived.push(format!("database branch {branch} ({e:#})")),
            }
            for g in &gone {
                log(&format!("  ✓ {g}"));
            }
            bail!(
                "teardown incomplete; still there (their ownership marks are kept for `atlas sweep`): {}",
                secret::redact(&survived.join("; "))
            );
        }
    };
    log(&format!("  ✓ app {app}: {} ({a_ms} ms)", word(a)));
    log(&format!(
        "  ✓ database branch {branch}: {} ({b_ms} ms)",
        word(b)
    ));
    let removed = vec![
        Removed {
            kind: "app".into(),
            name: app.clone(),
            result: word(a).into(),
        },
        Removed {
            kind: "database branch".into(),
            name: branch.clone(),
            result: word(b).into(),
        },
    ];
    let destroyed_at = Utc::now().to_rfc3339();
    audit(
        opts,
        serde_json::json!({"at": destroyed_at, "action": "down", "pr": req.pr, "sha": req.sha,
            "app": app, "app_result": word(a), "branch": branch, "branch_result": word(b)}),
    )?;
    let mut contract = previous.unwrap_or_else(|| {
        let mut c = base_contract(settings, req, opts);
        if settings.database.data_model == crate::config::DataModel::None {
            c.data.provider = "none".into();
            return c;
        }
        c.data.provider = providers.database.kind().into();
        c.data.branch = Some(branch.clone());
        c.data.parent = Some(if providers.database.kind() == "local-postgres" {
            LocalPg::parent_database(&settings.database.parent)
        } else {
            settings.database.parent.clone()
        });
        c
    });
    contract.lifecycle.destroyed = Some(destroyed_at.clone());
    let ctx = DestroyedComment {
        marker: marker(req.pr),
        pr: req.pr,
        destroyed_at: &destroyed_at,
        removed: &removed,
        audit: opts.audit_log.as_ref().map(|p| p.display().to_string()),
        contract: &contract,
        generated_at: Utc::now().to_rfc3339(),
    };
    let body = renderer.render_comment("destroyed.md.j2", &ctx)?;
    let comment = post_comment(providers, req.pr, &body).await?;
    providers
        .forge
        .deactivate_environment(&preview_environment(req.pr))
        .await?;
    let summary = render_summary(&renderer, "preview down", req.pr, "destroyed", &contract)?;
    Ok(DownOutcome {
        removed,
        comment,
        comment_body: body,
        summary,
    })
}
