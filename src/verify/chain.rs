//! The chain itself: [`build_chain`] turns settings and a command into a list of stages (pure),
//! [`run`] executes them over the [`Fleet`], [`ReleaseDatabase`] and [`LoadGate`] traits, writes
//! every stage into one [`ChainReport`], and rolls production back when a stage fails after
//! production was touched.

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use serde::Serialize;

use super::canary::{self, CanaryAnalysis, CanaryVerdict};
use super::fleet::{Fleet, Instance};
use super::migrate::ReleaseDatabase;
use super::probe::{self, SideStats};
use crate::config::Settings;
use crate::evidence::checks::{self, CheckResult, CommandRun};
use crate::provider::{DeployState, DeploymentRecord, DeploymentStatus, Forge, NewDeployment};

/// Which chain: push to the default branch, or a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Verify,
    Release,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Verify => "verify",
            Mode::Release => "release",
        }
    }
}

/// One stage of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    QaDeploy,
    Integration,
    LoadGate,
    RehearseMigrations,
    ApplyMigrations,
    Canary,
    Rollout,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::QaDeploy => "qa deploy",
            Stage::Integration => "integration tests",
            Stage::LoadGate => "load test + baseline gate",
            Stage::RehearseMigrations => "migrations rehearsal",
            Stage::ApplyMigrations => "migrations on production",
            Stage::Canary => "canary",
            Stage::Rollout => "production rollout",
        }
    }

    /// Whether running this stage changes production (from then on, a failure rolls back).
    pub fn touches_production(self) -> bool {
        matches!(
            self,
            Stage::ApplyMigrations | Stage::Canary | Stage::Rollout
        )
    }
}

/// The chain as data: which stages run, in order, for these settings and this command.
pub fn build_chain(settings: &Settings, mode: Mode) -> Vec<Stage> {
    let v = &settings.verify;
    let mut out = vec![Stage::QaDeploy];
    if v.integration.is_some() || !v.checks.is_empty() {
        out.push(Stage::Integration);
    }
    if v.load && settings.load.enabled {
        out.push(Stage::LoadGate);
    }
    if mode == Mode::Release {
        if settings.database.migrations.is_some() {
            out.push(Stage::RehearseMigrations);
            out.push(Stage::ApplyMigrations);
        }
        if v.canary.enabled {
            out.push(Stage::Canary);
        }
        out.push(Stage::Rollout);
    }
    out
}

/// The chain in words, one stage a line (`dry_run`): what would run, what touches production.
pub fn describe_chain(settings: &Settings, mode: Mode) -> String {
    build_chain(settings, mode)
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{}. {}{}",
                i + 1,
                s.name(),
                if s.touches_production() {
                    " (touches production; a later failure rolls back)"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The load test + gate against QA: [`LoadModuleGate`] (the open-model generator of
/// `crate::load` judged by `crate::evidence::load_gate`); tests plug in fakes.
#[async_trait]
pub trait LoadGate: Send + Sync {
    async fn run(&self, base_url: &str) -> anyhow::Result<Outcome>;
}

/// A stage's result when it ran to the end: passed or not, a one-line summary, evidence lines.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: bool,
    pub summary: String,
    pub evidence: Vec<String>,
    /// Structured evidence for the report (the load stage: `{summary, comparison}`).
    pub data: Option<serde_json::Value>,
    /// The gate could not decide (too little data, settings differ): a release does not
    /// promote on it.
    pub inconclusive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    Passed,
    /// The gate said no (exit 1).
    Failed,
    /// Something broke (provider, command could not run): exit 2.
    Error,
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: Stage,
    pub name: String,
    pub status: StageStatus,
    pub duration_ms: u64,
    pub summary: String,
    pub evidence: Vec<String>,
}

/// Where each production machine ended up.
#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    pub id: String,
    pub before: String,
    pub after: Option<String>,
    /// `unchanged`, `updated`, `restored`, `restore-failed`.
    pub state: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationEvidence {
    pub command: String,
    pub rehearsal: Option<CommandRun>,
    pub schema_diff: Option<String>,
    pub production: Option<CommandRun>,
}

/// Everything the chain did, rendered by `templates/verify.md.j2`.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub command: String,
    pub version: String,
    pub sha: String,
    pub fleet: String,
    /// `passed`, `failed`, `rolled-back`, `rollback-failed`.
    pub verdict: String,
    pub failed_stage: Option<String>,
    pub error: Option<String>,
    pub stages: Vec<StageReport>,
    pub qa_url: Option<String>,
    pub integration: Option<CommandRun>,
    pub checks: Vec<CheckResult>,
    pub migrations: Option<MigrationEvidence>,
    /// `{summary, comparison}` of the QA load test (the load module's shapes).
    pub load: Option<serde_json::Value>,
    pub canary: Option<CanaryAnalysis>,
    pub rolled_back: bool,
    pub machines: Vec<MachineReport>,
    pub notes: Vec<String>,
    pub total_ms: u64,
}

impl ChainReport {
    /// Exit status: a gate failure is [`crate::error::GateFailed`] (exit 1) naming the stage and
    /// the evidence; an operational error or a failed rollback is a plain error (exit 2).
    pub fn result(&self) -> anyhow::Result<()> {
        let Some(stage) = self.failed_stage.clone() else {
            return Ok(());
        };
        let status = self
            .stages
            .iter()
            .find(|s| s.name == stage)
            .map(|s| s.status);
        let detail = self.error.clone().unwrap_or_default();
        if self.verdict == "rollback-failed" {
            let machines: Vec<String> = self
                .machines
                .iter()
                .map(|m| {
                    format!(
                        "{}: {} (was {}, now {})",
                        m.id,
                        m.state,
                        m.before,
                        m.after.as_deref().unwrap_or("unknown")
                    )
                })
                .collect();
            return Err(anyhow::anyhow!(
                "{stage} failed ({detail}) and the rollback failed; production machines: {}; restore them by hand to the versions shown",
                machines.join("; ")
            ));
        }
        if status == Some(StageStatus::Error) {
            return Err(anyhow::anyhow!("{stage}: {detail}"));
        }
        Err(crate::error::GateFailed {
            stage,
            detail: if self.rolled_back {
                format!("{detail}; production was rolled back")
            } else {
                detail
            },
        }
        .into())
    }
}

/// What the chain runs on.
pub struct Chain<'a> {
    pub settings: &'a Settings,
    pub fleet: &'a dyn Fleet,
    pub database: Option<&'a dyn ReleaseDatabase>,
    pub load: &'a dyn LoadGate,
    pub forge: Option<&'a dyn Forge>,
    /// Where the declared integration variables are read from (the process env in the CLI).
    pub env_source: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    /// A line per event, for the log.
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
}

/// What to verify or release.
#[derive(Debug, Clone)]
pub struct Release {
    pub mode: Mode,
    /// Image reference (Fly) or version label (local).
    pub version: String,
    pub sha: String,
}

/// Production as the chain found it and what it changed: the basis of a rollback.
#[derive(Default)]
struct ProdState {
    touched: bool,
    /// Recorded before anything changed: id -> version.
    previous: Vec<Instance>,
    /// Instances the rollout changed (or tried to: a failed update may be half-done).
    changed: Vec<String>,
    canary: Option<Instance>,
}

enum StageError {
    Gate(Outcome),
    Op(anyhow::Error),
}

/// A platform error while bringing up the new version: when the provider's API answered with an
/// error (or could not be reached), that is operational (exit 2); otherwise the new version did
/// not come up healthy, which is the change failing (exit 1).
async fn fleet_call<T>(
    call: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T, StageError> {
    call.await.map_err(fleet_error)
}

fn fleet_error(e: anyhow::Error) -> StageError {
    let provider = e
        .chain()
        .any(|c| c.downcast_ref::<crate::error::ProviderError>().is_some());
    if provider {
        StageError::Op(e)
    } else {
        StageError::Gate(Outcome {
            data: None,
            inconclusive: false,
            ok: false,
            summary: crate::secret::redact(&format!("{e:#}")),
            evidence: Vec::new(),
        })
    }
}

impl From<anyhow::Error> for StageError {
    fn from(e: anyhow::Error) -> Self {
        StageError::Op(e)
    }
}

struct Runner<'a> {
    c: &'a Chain<'a>,
    r: &'a Release,
    report: ChainReport,
    prod: ProdState,
    qa_record: Option<DeploymentRecord>,
    prod_record: Option<DeploymentRecord>,
    /// id -> (state, detail) for every instance the rollback touched.
    rollback_states: BTreeMap<String, (String, Option<String>)>,
}

/// Runs the chain to the end or to the first failure (then rolls back if production was
/// touched). Never returns early with an error: everything lands in the report; call
/// [`ChainReport::result`] for the exit status.
pub async fn run(c: &Chain<'_>, r: &Release) -> ChainReport {
    let start = Instant::now();
    let stages = build_chain(c.settings, r.mode);
    let mut run = Runner {
        c,
        r,
        report: ChainReport {
            command: r.mode.as_str().into(),
            version: r.version.clone(),
            sha: r.sha.clone(),
            fleet: c.fleet.kind().into(),
            verdict: "passed".into(),
            failed_stage: None,
            error: None,
            stages: Vec::new(),
            qa_url: None,
            integration: None,
            checks: Vec::new(),
            migrations: None,
            load: None,
            canary: None,
            rolled_back: false,
            machines: Vec::new(),
            notes: Vec::new(),
            total_ms: 0,
        },
        prod: ProdState::default(),
        qa_record: None,
        prod_record: None,
        rollback_states: BTreeMap::new(),
    };
    let mut failed = false;
    for stage in &stages {
        if failed {
            run.report.stages.push(StageReport {
                stage: *stage,
                name: stage.name().into(),
                status: StageStatus::NotRun,
                duration_ms: 0,
                summary: "not run: an earlier stage failed".into(),
                evidence: Vec::new(),
            });
            continue;
        }
        (c.progress)(&format!("atlas {}: {} ...", r.mode.as_str(), stage.name()));
        let t = Instant::now();
        let res = run.stage(*stage).await;
        let duration_ms = t.elapsed().as_millis() as u64;
        let (status, summary, evidence) = match res {
            Ok(o) if o.ok => (StageStatus::Passed, o.summary, o.evidence),
            Ok(o) | Err(StageError::Gate(o)) => (StageStatus::Failed, o.summary, o.evidence),
            Err(StageError::Op(e)) => (
                StageStatus::Error,
                crate::secret::redact(&format!("{e:#}")),
                Vec::new(),
            ),
        };
        (c.progress)(&format!(
            "atlas {}: {} {} in {} ms: {}",
            r.mode.as_str(),
            stage.name(),
            match status {
                StageStatus::Passed => "passed",
                StageStatus::Failed => "FAILED",
                _ => "ERROR",
            },
            duration_ms,
            summary
        ));
        if status != StageStatus::Passed {
            failed = true;
            run.report.failed_stage = Some(stage.name().into());
            run.report.error = Some(summary.clone());
            run.report.verdict = "failed".into();
        }
        run.report.stages.push(StageReport {
            stage: *stage,
            name: stage.name().into(),
            status,
            duration_ms,
            summary,
            evidence,
        });
        // QA's deployment status is settled once its stages are done.
        if *stage == Stage::LoadGate || (failed && !stage.touches_production()) {
            run.finish_qa(!failed).await;
        }
    }
    if !stages.contains(&Stage::LoadGate) {
        run.finish_qa(!failed).await;
    }
    if failed && run.prod.touched {
        run.rollback().await;
    }
    run.machine_report().await;
    if run.prod_record.is_some() {
        let ok = !failed;
        run.finish_production(ok).await;
    }
    run.report.total_ms = start.elapsed().as_millis() as u64;
    run.report
}

impl<'a> Runner<'a> {
    async fn stage(&mut self, s: Stage) -> Result<Outcome, StageError> {
        if s.touches_production() && self.prod_record.is_none() {
            self.prod_record = self.start_deployment("production").await;
        }
        match s {
            Stage::QaDeploy => self.qa_deploy().await,
            Stage::Integration => self.integration().await,
            Stage::LoadGate => self.load_gate().await,
            Stage::RehearseMigrations => self.rehearse().await,
            Stage::ApplyMigrations => self.apply_migrations().await,
            Stage::Canary => self.canary().await,
            Stage::Rollout => self.rollout().await,
        }
    }

    async fn start_deployment(&mut self, env: &str) -> Option<DeploymentRecord> {
        let forge = self.c.forge?;
        let desc = format!("atlas {} {}", self.r.mode.as_str(), self.r.version);
        match forge
            .create_deployment(NewDeployment {
                environment: env,
                sha: &self.r.sha,
                transient: false,
                description: &desc,
            })
            .await
        {
            Ok(rec) => {
                if let Err(e) = forge
                    .set_deployment_status(
                        &rec,
                        DeploymentStatus::new(DeployState::InProgress, &desc),
                    )
                    .await
                {
                    self.note(format!("deployment status for {env} not set: {e:#}"));
                }
                Some(rec)
            }
            Err(e) => {
                self.note(format!("deployment record for {env} not created: {e:#}"));
                None
            }
        }
    }

    async fn set_status(&mut self, rec: DeploymentRecord, ok: bool, url: Option<String>) {
        let Some(forge) = self.c.forge else { return };
        let (state, desc) = if ok {
            (
                DeployState::Success,
                format!("{} passed", self.r.mode.as_str()),
            )
        } else {
            (
                DeployState::Failure,
                format!(
                    "{} failed at {}",
                    self.r.mode.as_str(),
                    self.report.failed_stage.as_deref().unwrap_or("?")
                ),
            )
        };
        if let Err(e) = forge
            .set_deployment_status(
                &rec,
                DeploymentStatus::new(state, &desc).environment_url(url.as_deref()),
            )
            .await
        {
            self.note(format!(
                "deployment status for {} not set: {e:#}",
                rec.environment
            ));
        }
    }

    async fn finish_qa(&mut self, ok: bool) {
        if let Some(rec) = self.qa_record.take() {
            let url = self.report.qa_url.clone();
            self.set_status(rec, ok, url).await;
        }
    }

    async fn finish_production(&mut self, ok: bool) {
        if let Some(rec) = self.prod_record.take() {
            self.set_status(rec, ok, None).await;
        }
    }

    fn note(&mut self, s: String) {
        self.report.notes.push(crate::secret::redact(&s));
    }

    async fn qa_deploy(&mut self) -> Result<Outcome, StageError> {
        self.qa_record = self.start_deployment("qa").await;
        let url = fleet_call(self.c.fleet.deploy_qa(&self.r.version)).await?;
        self.report.qa_url = Some(url.clone());
        Ok(Outcome {
            data: None,
            inconclusive: false,
            ok: true,
            summary: format!("{} running at {url}", self.r.version),
            evidence: vec![format!("url: {url}")],
        })
    }

    fn qa_url(&self) -> Result<String, StageError> {
        self.report
            .qa_url
            .clone()
            .ok_or_else(|| StageError::Op(anyhow::anyhow!("no QA url: the QA deploy did not run")))
    }

    async fn integration(&mut self) -> Result<Outcome, StageError> {
        let v = &self.c.settings.verify;
        let base = self.qa_url()?;
        let mut ok = true;
        let mut evidence = Vec::new();
        let mut summary = Vec::new();
        if let Some(cmd) = &v.integration {
            let env = checks::integration_env(&base, &v.integration_env, self.c.env_source);
            let run = checks::run_command(cmd, &env, v.integration_timeout, v.output_tail).await;
            ok &= run.ok();
            summary.push(match (run.exit_code, run.timed_out) {
                (_, true) => "command timed out".to_string(),
                (Some(c), _) => format!("command exited {c}"),
                (None, _) => "command did not run".to_string(),
            });
            evidence.push(format!("exit code: {:?}", run.exit_code));
            evidence.push(format!("output tail:\n{}", run.output_tail));
            self.report.integration = Some(run);
        }
        if !v.checks.is_empty() {
            let client = probe::client(v.canary.timeout)?;
            let results = checks::run_checks(&client, &base, &v.checks, "[verify] checks").await?;
            let passed = results.iter().filter(|r| r.ok).count();
            ok &= passed == results.len();
            summary.push(format!("{passed}/{} http checks passed", results.len()));
            for r in results.iter().filter(|r| !r.ok) {
                evidence.push(format!(
                    "{} {}: got {:?}, {}",
                    r.method,
                    r.path,
                    r.status,
                    r.detail.as_deref().unwrap_or("")
                ));
            }
            self.report.checks = results;
        }
        Ok(Outcome {
            data: None,
            inconclusive: false,
            ok,
            summary: summary.join(", "),
            evidence,
        })
    }

    async fn load_gate(&mut self) -> Result<Outcome, StageError> {
        let base = self.qa_url()?;
        let mut out = self.c.load.run(&base).await?;
        self.report.load = out.data.take();
        // Verify reports an undecided gate; a release needs a yes before it touches production.
        if out.inconclusive && self.r.mode == Mode::Release {
            out.ok = false;
            out.summary = format!(
                "inconclusive, not promoted: {}; production not touched",
                out.summary
            );
        }
        Ok(out)
    }

    fn database(&self) -> Result<&'a dyn ReleaseDatabase, StageError> {
        self.c.database.ok_or_else(|| {
            StageError::Op(anyhow::anyhow!(
                "[database] migrations is set but no production database is configured; set the variable named by [verify] production_database_env"
            ))
        })
    }

    /// `[database] migrations`, empty when unset (the stage is then skipped by the plan).
    fn migrations_command(&self) -> String {
        self.c
            .settings
            .database
            .migrations
            .clone()
            .unwrap_or_default()
    }

    async fn migrate(&self, url: &crate::secret::Secret) -> CommandRun {
        let cmd = self.migrations_command();
        let mut env = vec![("DATABASE_URL".to_string(), url.expose().to_string())];
        for k in ["PATH", "HOME"] {
            if let Some(v) = (self.c.env_source)(k) {
                env.push((k.into(), v));
            }
        }
        checks::run_command(
            &cmd,
            &env,
            self.c.settings.verify.integration_timeout,
            self.c.settings.verify.output_tail,
        )
        .await
    }

    async fn rehearse(&mut self) -> Result<Outcome, StageError> {
        let db = self.database()?;
        let name = self.c.settings.verify.rehearsal_branch.clone();
        let url = db.create_rehearsal(&name).await?;
        let run = self.migrate(&url).await;
        let diff = if run.ok() {
            db.schema_diff(&name).await
        } else {
            Ok(String::new())
        };
        // Delete whatever happened; a failed delete is an error that names the survivor.
        let deleted = db.delete_rehearsal(&name).await;
        let cmd = self.migrations_command();
        let diff = diff?;
        let ok = run.ok();
        let summary = if ok {
            format!(
                "applied cleanly on a copy of production in {} ms; schema diff: {} lines",
                run.duration_ms,
                diff.lines().count()
            )
        } else {
            format!(
                "failed on a copy of production (exit {:?}); production not touched",
                run.exit_code
            )
        };
        let evidence = vec![format!("output tail:\n{}", run.output_tail)];
        self.report.migrations = Some(MigrationEvidence {
            command: cmd,
            rehearsal: Some(run),
            schema_diff: Some(diff),
            production: None,
        });
        deleted.map_err(|e| {
            e.context(format!(
                "the rehearsal branch {name} survived; delete it by hand"
            ))
        })?;
        Ok(Outcome {
            data: None,
            inconclusive: false,
            ok,
            summary,
            evidence,
        })
    }

    async fn apply_migrations(&mut self) -> Result<Outcome, StageError> {
        let db = self.database()?;
        self.prod.touched = true;
        self.record_previous().await?;
        let url = db.production_url().clone();
        let run = self.migrate(&url).await;
        let ok = run.ok();
        let out = Outcome {
            data: None,
            inconclusive: false,
            ok,
            summary: if ok {
                format!("applied to production in {} ms", run.duration_ms)
            } else {
                format!("failed on production (exit {:?})", run.exit_code)
            },
            evidence: vec![format!("output tail:\n{}", run.output_tail)],
        };
        if let Some(m) = self.report.migrations.as_mut() {
            m.production = Some(run);
        }
        self.note(
            "migrations applied to production are not reverted by a rollback: keep them backward compatible (expand, then contract)".into(),
        );
        Ok(out)
    }

    /// Records the production versions once, before the first change.
    async fn record_previous(&mut self) -> anyhow::Result<()> {
        if self.prod.previous.is_empty() {
            self.prod.previous = self.c.fleet.production().await?;
        }
        Ok(())
    }

    async fn canary(&mut self) -> Result<Outcome, StageError> {
        let cs = self.c.settings.verify.canary.clone();
        self.record_previous().await?;
        let Some(stable) = self
            .prod
            .previous
            .iter()
            .find(|i| i.state == "started")
            .cloned()
        else {
            return Err(StageError::Gate(Outcome {
                data: None,
                inconclusive: false,
                ok: false,
                summary: "no started production instance to compare the canary with; no promotion"
                    .into(),
                evidence: vec![format!("production: {:?}", self.prod.previous)],
            }));
        };
        self.prod.touched = true;
        let canary = fleet_call(self.c.fleet.start_canary(&self.r.version)).await?;
        self.prod.canary = Some(canary.clone());
        let client = probe::client(cs.timeout)?;
        let a = self.c.fleet.target(&stable);
        let b = self.c.fleet.target(&canary);
        let mut samples = Vec::new();
        for i in 0..cs.samples {
            if i > 0 && !cs.interval.is_zero() {
                tokio::time::sleep(cs.interval).await;
            }
            samples.push(
                probe::run_pair(
                    &client,
                    &a,
                    &b,
                    &cs.paths,
                    cs.requests_per_sample,
                    cs.concurrency,
                )
                .await,
            );
        }
        let analysis = canary::analyse(&samples, &cs);
        let ok = analysis.verdict == CanaryVerdict::Promote;
        let fmt = |s: &SideStats| {
            format!(
                "{} req, {:.2}% errors, p50 {:.1} ms, p95 {:.1} ms",
                s.requests,
                s.error_rate * 100.0,
                s.p50_ms,
                s.p95_ms
            )
        };
        let out = Outcome {
            data: None,
            inconclusive: analysis.verdict == CanaryVerdict::Inconclusive,
            ok,
            summary: format!("{:?}: {}", analysis.verdict, analysis.reasons.join("; "))
                .to_lowercase(),
            evidence: vec![
                format!(
                    "stable {} ({}): {}",
                    stable.id,
                    stable.version,
                    fmt(&analysis.stable)
                ),
                format!(
                    "canary {} ({}): {}",
                    canary.id,
                    canary.version,
                    fmt(&analysis.canary)
                ),
            ],
        };
        self.report.canary = Some(analysis);
        Ok(out)
    }

    async fn rollout(&mut self) -> Result<Outcome, StageError> {
        self.prod.touched = true;
        self.record_previous().await?;
        let min = self.c.settings.verify.machines;
        if self.prod.previous.len() < min {
            return Err(StageError::Op(anyhow::anyhow!(
                "production has {} instance(s), [verify] machines expects at least {min}; check the production app",
                self.prod.previous.len()
            )));
        }
        let mut evidence = Vec::new();
        let targets: Vec<Instance> = self.prod.previous.clone();
        for inst in &targets {
            if inst.version == self.r.version {
                evidence.push(format!("{}: already {}", inst.id, inst.version));
                continue;
            }
            // Marked before the call: a failed update may have half-happened.
            self.prod.changed.push(inst.id.clone());
            let t = Instant::now();
            self.c
                .fleet
                .update_instance(&inst.id, &self.r.version)
                .await
                .map_err(|e| fleet_error(e.context(format!("updating {}", inst.id))))?;
            evidence.push(format!(
                "{}: {} -> {} healthy in {} ms",
                inst.id,
                inst.version,
                self.r.version,
                t.elapsed().as_millis()
            ));
            (self.c.progress)(&format!("  {} now runs {}", inst.id, self.r.version));
        }
        if let Some(c) = self.prod.canary.take() {
            self.c.fleet.stop_canary(&c).await.map_err(|e| {
                e.context(format!(
                    "production is updated but the canary {} survived",
                    c.id
                ))
            })?;
        }
        Ok(Outcome {
            data: None,
            inconclusive: false,
            ok: true,
            summary: format!(
                "{} of {} instance(s) updated to {}",
                self.prod.changed.len(),
                targets.len(),
                self.r.version
            ),
            evidence,
        })
    }

    /// Restores every changed instance to its recorded version and removes the canary.
    async fn rollback(&mut self) {
        (self.c.progress)(&format!("atlas {}: rolling back", self.r.mode.as_str()));
        let t = Instant::now();
        let mut evidence = Vec::new();
        let mut failed = Vec::new();
        let before: BTreeMap<String, String> = self
            .prod
            .previous
            .iter()
            .map(|i| (i.id.clone(), i.version.clone()))
            .collect();
        let mut states: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
        for id in self.prod.changed.clone() {
            let Some(v) = before.get(&id) else { continue };
            match self.c.fleet.update_instance(&id, v).await {
                Ok(()) => {
                    evidence.push(format!("{id}: restored to {v}"));
                    states.insert(id.clone(), ("restored".into(), None));
                }
                Err(e) => {
                    let msg = crate::secret::redact(&format!("{e:#}"));
                    evidence.push(format!("{id}: restore to {v} FAILED: {msg}"));
                    states.insert(id.clone(), ("restore-failed".into(), Some(msg)));
                    failed.push(id.clone());
                }
            }
        }
        if let Some(c) = self.prod.canary.take() {
            match self.c.fleet.stop_canary(&c).await {
                Ok(()) => evidence.push(format!("canary {}: removed", c.id)),
                Err(e) => {
                    let msg = crate::secret::redact(&format!("{e:#}"));
                    evidence.push(format!("canary {}: removal FAILED: {msg}", c.id));
                    failed.push(c.id.clone());
                    states.insert(c.id.clone(), ("canary-not-removed".into(), Some(msg)));
                }
            }
        }
        self.report.rolled_back = failed.is_empty();
        self.report.verdict = if failed.is_empty() {
            "rolled-back".into()
        } else {
            "rollback-failed".into()
        };
        self.rollback_states = states;
        self.report.stages.push(StageReport {
            stage: Stage::Rollout,
            name: "rollback".into(),
            status: if failed.is_empty() {
                StageStatus::Passed
            } else {
                StageStatus::Error
            },
            duration_ms: t.elapsed().as_millis() as u64,
            summary: if failed.is_empty() && self.prod.changed.is_empty() {
                "no instance had changed; canary removed".to_string()
            } else if failed.is_empty() {
                format!(
                    "restored {} instance(s); production runs its previous version",
                    self.prod.changed.len()
                )
            } else {
                format!("rollback failed for {}", failed.join(", "))
            },
            evidence,
        });
    }

    /// The per-machine table: recorded version, current version, what happened.
    async fn machine_report(&mut self) {
        if self.prod.previous.is_empty() {
            return;
        }
        let now: BTreeMap<String, String> = match self.c.fleet.production().await {
            Ok(list) => list.into_iter().map(|i| (i.id, i.version)).collect(),
            Err(e) => {
                self.note(format!("cannot read production after the chain: {e:#}"));
                BTreeMap::new()
            }
        };
        let mut rows = Vec::new();
        for i in &self.prod.previous {
            let after = now.get(&i.id).cloned();
            let (state, detail) = match self.rollback_states.get(&i.id) {
                Some((s, d)) => (s.clone(), d.clone()),
                None if self.prod.changed.contains(&i.id) => ("updated".into(), None),
                None => ("unchanged".into(), None),
            };
            rows.push(MachineReport {
                id: i.id.clone(),
                before: i.version.clone(),
                after,
                state,
                detail,
            });
        }
        for (id, (s, d)) in &self.rollback_states {
            if !self.prod.previous.iter().any(|i| &i.id == id) {
                rows.push(MachineReport {
                    id: id.clone(),
                    before: "(canary)".into(),
                    after: now.get(id).cloned(),
                    state: s.clone(),
                    detail: d.clone(),
                });
            }
        }
        self.report.machines = rows;
    }
}

/// The [`LoadGate`] of the CLI and the action: the open-model generator of `crate::load` with
/// the `[load]` scenario against QA, compared with the history on the forge's data branch or
/// the `[baseline]` file by the load module's gate. Neither: measured, not gated. An
/// inconclusive comparison (too few requests or runs, rate not reached, different settings)
/// does not fail the chain; it is reported as such. On the default branch the run is then
/// appended to that history (with the dashboard beside it); a history that cannot be written
/// is a warning, never a failed verify.
pub struct LoadModuleGate<'a> {
    pub load: crate::load::LoadSettings,
    pub gate: crate::load::GateSettings,
    pub history: Option<VerifyHistory<'a>>,
}

/// Where verify keeps its load history, and what it measured.
pub struct VerifyHistory<'a> {
    pub forge: &'a dyn Forge,
    /// `[baseline] history_branch`.
    pub branch: String,
    /// The commit verified: the key of its entry.
    pub commit: String,
    /// Append this run (verify on the default branch); a release only reads.
    pub record: bool,
    /// Where the dashboard is served from (GitHub Pages of the branch), for links.
    pub dashboard_url: Option<String>,
    /// Open and close one issue per regressed endpoint and metric (`[baseline] alert_issues`).
    pub alert_issues: bool,
    /// The `alert_webhook` input: a Slack-compatible incoming webhook.
    pub webhook: Option<crate::secret::Secret>,
    /// `owner/name`, for the webhook's message.
    pub repository: String,
    /// The proxy variables the webhook's client honours (`[load]`'s `proxy_env`: the same
    /// `https_proxy`/`no_proxy` rules as the load generator).
    pub proxy_env: Vec<(String, String)>,
    /// Where the redrawn dashboard is also written, for the workflow to upload as an artifact.
    pub dashboard_file: Option<std::path::PathBuf>,
}

/// The hidden marker of Atlas's regression issues (with the title and the author, how one is
/// found again).
pub const ALERT_MARKER: &str = "<!-- atlas:load-alert -->";
/// A webhook that does not answer within this is given up on (a warning).
const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl LoadModuleGate<'_> {
    pub fn from_settings(s: &Settings) -> LoadModuleGate<'static> {
        LoadModuleGate {
            load: s.load.clone(),
            gate: s.baseline.clone(),
            history: None,
        }
    }
}

impl<'a> LoadModuleGate<'a> {
    /// Gates against, and records in, the history on `forge`'s data branch (when
    /// `[baseline] history_branch` is not empty).
    pub fn with_history(
        mut self,
        forge: Option<&'a dyn Forge>,
        commit: &str,
        record: bool,
        dashboard_url: Option<String>,
    ) -> Self {
        if let Some(forge) = forge
            && !self.gate.history_branch.is_empty()
        {
            self.history = Some(VerifyHistory {
                forge,
                branch: self.gate.history_branch.clone(),
                commit: commit.to_string(),
                record,
                dashboard_url,
                alert_issues: self.gate.alert_issues,
                webhook: None,
                repository: String::new(),
                proxy_env: self.load.proxy_env.clone(),
                dashboard_file: None,
            });
        }
        self
    }

    /// Writes the dashboard redrawn with the history to `path` too (the run's artifact).
    pub fn with_dashboard_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        if let Some(h) = self.history.as_mut() {
            h.dashboard_file = path;
        }
        self
    }

    /// Where a regression on the default branch is also announced.
    pub fn with_webhook(
        mut self,
        webhook: Option<crate::secret::Secret>,
        repository: &str,
    ) -> Self {
        if let Some(h) = self.history.as_mut() {
            h.webhook = webhook;
            h.repository = repository.to_string();
        }
        self
    }
}

#[async_trait]
impl LoadGate for LoadModuleGate<'_> {
    async fn run(&self, base_url: &str) -> anyhow::Result<Outcome> {
        use crate::load::Verdict;
        let summary = crate::load::run_repeated(&self.load, base_url).await?;
        let branch = self
            .history
            .as_ref()
            .map(|h| crate::evidence::load_gate::BranchHistory {
                forge: h.forge,
                branch: &h.branch,
                up_to: None,
            });
        let run = crate::evidence::load_gate::judge_with(
            summary,
            &self.gate,
            &self.load.requests,
            branch,
        )
        .await?;
        let measured = run.measured();
        let inconclusive = run.inconclusive().is_some();
        let verdict = run
            .not_gated()
            .or_else(|| run.inconclusive().map(|s| format!("{s}, not gated")))
            .or_else(|| run.failure())
            .unwrap_or_else(
                || match run.comparison.as_ref().and_then(|c| c.history_runs) {
                    Some(n) => format!(
                        "baseline gate passed against {n} runs of the history ({} model)",
                        self.gate.model
                    ),
                    None => "baseline gate passed".into(),
                },
            );
        let mut evidence = vec![measured.clone()];
        if let Some(h) = self.history.as_ref().filter(|h| h.record) {
            evidence.push(record_history(h, &run.summary, &self.gate).await);
            if let Some(c) = &run.comparison {
                evidence.extend(raise_alerts(h, c).await);
            }
        }
        Ok(Outcome {
            ok: run.verdict() != Some(Verdict::Fail),
            summary: format!("{measured}; {verdict}"),
            evidence,
            data: Some(serde_json::json!({ "summary": run.summary, "comparison": run.comparison })),
            inconclusive,
        })
    }
}

/// A default-branch comparison's alerts: each regressed endpoint and metric opens (or updates)
/// its issue, each recovered one closes it, and a regression is posted to the webhook. Every
/// failure is a warning line: alerts never fail the verify.
pub async fn raise_alerts(h: &VerifyHistory<'_>, c: &crate::load::Comparison) -> Vec<String> {
    use crate::load::alerts::{self, AlertAction};
    let mut lines = Vec::new();
    let dashboard = h.dashboard_url.as_deref();
    if h.alert_issues {
        for a in alerts::plan(c, &h.commit, dashboard) {
            let (title, body, open) = match &a {
                AlertAction::Open { title, body } => (title, body, true),
                AlertAction::Close { title, body } => (title, body, false),
            };
            let alert = crate::provider::IssueAlert {
                title,
                marker: ALERT_MARKER,
                body,
                open,
            };
            match h.forge.sync_issue(alert).await {
                Ok(Some(r)) if r.action != "none" => lines.push(format!(
                    "alert: {} issue \"{title}\"{}",
                    r.action,
                    r.url.map(|u| format!(" {u}")).unwrap_or_default()
                )),
                Ok(_) => {}
                Err(e) => lines.push(format!(
                    "warning: the alert issue \"{title}\" was not updated: {}",
                    crate::secret::redact(&format!("{e:#}"))
                )),
            }
        }
    }
    if let Some(url) = &h.webhook
        && let Some(msg) = alerts::webhook_message(c, &h.repository, &h.commit, dashboard)
    {
        lines.push(post_webhook(url, &msg, &h.proxy_env).await);
    }
    lines
}

/// POSTs the message, through the proxy `proxy_env` names for the webhook's host (a
/// self-hosted runner's egress proxy); the line never shows the URL (it is the credential).
async fn post_webhook(
    url: &crate::secret::Secret,
    msg: &serde_json::Value,
    proxy_env: &[(String, String)],
) -> String {
    let proxy = match crate::load::proxy::reqwest_proxy(
        url.expose().trim(),
        proxy_env,
        "the alert webhook",
    ) {
        Ok(p) => p,
        Err(e) => {
            return format!(
                "warning: alert webhook not sent: {}",
                crate::secret::redact(&format!("{e:#}"))
            );
        }
    };
    // The environment is read once, by `commands/`: reqwest's own reading of it is off.
    let mut b = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .no_proxy();
    if let Some(p) = proxy {
        b = b.proxy(p);
    }
    let client = match b.build() {
        Ok(c) => c,
        Err(e) => return format!("warning: alert webhook not sent: {e}"),
    };
    match client.post(url.expose().trim()).json(msg).send().await {
        Ok(r) if r.status().is_success() => "alert: webhook notified".into(),
        Ok(r) => format!(
            "warning: the alert webhook answered {}",
            r.status().as_u16()
        ),
        Err(e) => format!(
            "warning: the alert webhook failed: {}",
            crate::secret::redact(&format!("{}", e.without_url()))
        ),
    }
}

/// Appends the run to the branch's history, with the dashboard redrawn beside it; the line
/// says what happened (a failure is a warning: the verify itself stands).
async fn record_history(
    h: &VerifyHistory<'_>,
    summary: &crate::load::Summary,
    gate: &crate::load::GateSettings,
) -> String {
    // The page committed last (a retry after a concurrent update redraws it) is the one kept.
    let drawn = std::sync::Mutex::new(None::<String>);
    let render = |hist: &crate::load::History| {
        let html = crate::load::dashboard::render(hist, None, &[], "load history");
        *drawn.lock().unwrap_or_else(|p| p.into_inner()) = Some(html.clone());
        html
    };
    let short = h.commit.get(..7).unwrap_or(&h.commit);
    let appended = crate::load::store::append(
        h.forge,
        &h.branch,
        summary,
        &h.commit,
        gate.history_max,
        &render,
    )
    .await;
    match appended {
        Ok(a) => {
            let mut line = format!(
                "load history: recorded {short} on {} ({} runs kept)",
                h.branch, a.entries
            );
            if let Some(u) = &h.dashboard_url {
                line.push_str(&format!("; dashboard {u}"));
            }
            let html = drawn.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let (Some(path), Some(html)) = (&h.dashboard_file, html) {
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(path, html));
                if let Err(e) = written {
                    line.push_str(&format!(
                        "; warning: the dashboard was not written to {}: {e}",
                        path.display()
                    ));
                }
            }
            for n in a.notes {
                line.push_str(&format!("; {n}"));
            }
            line
        }
        Err(e) => format!(
            "warning: the load history was not recorded on {}: {}",
            h.branch,
            crate::secret::redact(&format!("{e:#}"))
        ),
    }
}
