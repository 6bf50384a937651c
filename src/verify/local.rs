//! The chain on this machine: every "machine" is a local process run by the local platform
//! ([`crate::provider::local::process::LocalProcess`]), one app per instance (`<prefix>-prod-1`
//! .. `-prod-N`, `-qa`, `-canary`). The version an instance runs is passed to the app as
//! `APP_VERSION` (and `ATLAS_COMMIT_SHA`), its id as `ATLAS_INSTANCE`; an update replaces the
//! process and waits for its health path, as a machine update would.
//!
//! Locally a release is a rehearsal: production is booted at the version recorded by the last
//! passed local release (`<state_dir>/verify/stable.json`, `stable` the first time), the chain
//! runs, and [`LocalFleet::teardown`] stops every process and deletes every branch it made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;

use super::fleet::{Fleet, Instance, Target};
use crate::provider::{DeployRequest, Platform};
use crate::secret::Secret;

/// The QA app's own database: a fresh copy of production, migrated on every QA deploy.
pub struct QaDatabase {
    pub database: Arc<super::migrate::PsqlDatabase>,
    /// Database name on the production server (`atlas_verify_qa`).
    pub name: String,
    pub migrations: Option<String>,
}

struct Running {
    version: String,
    url: String,
}

pub struct LocalFleet {
    platform: Box<dyn Platform>,
    prefix: String,
    env: BTreeMap<String, String>,
    production_db: Option<Secret>,
    qa_db: Option<QaDatabase>,
    health_path: String,
    health_timeout: Duration,
    running: Mutex<BTreeMap<String, Running>>,
    /// Every instance a deploy was started for, recorded before the deploy is awaited: a deploy
    /// interrupted after its process started (Ctrl-C during readiness) is never in `running`,
    /// and teardown must stop it all the same.
    attempted: Mutex<std::collections::BTreeSet<String>>,
    qa_created: std::sync::atomic::AtomicBool,
}

impl LocalFleet {
    pub fn new(
        platform: Box<dyn Platform>,
        prefix: &str,
        settings: &crate::config::Settings,
        production_db: Option<Secret>,
        qa_db: Option<QaDatabase>,
    ) -> LocalFleet {
        LocalFleet {
            platform,
            prefix: prefix.to_string(),
            env: settings.verify.env.clone(),
            production_db,
            qa_db,
            health_path: settings.app.health_path.clone(),
            health_timeout: settings.verify.health_timeout,
            running: Mutex::new(BTreeMap::new()),
            attempted: Mutex::new(std::collections::BTreeSet::new()),
            qa_created: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn app(&self, id: &str) -> String {
        format!("{}-{id}", self.prefix)
    }

    async fn run(&self, id: &str, version: &str, db: Option<&Secret>) -> anyhow::Result<String> {
        let mut env = self.env.clone();
        env.insert("APP_VERSION".into(), version.into());
        env.insert("ATLAS_COMMIT_SHA".into(), version.into());
        env.insert("ATLAS_INSTANCE".into(), id.into());
        let mut secrets = BTreeMap::new();
        if let Some(db) = db {
            secrets.insert("DATABASE_URL".to_string(), db.clone());
        }
        self.attempted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
        let d = self
            .platform
            .deploy(&DeployRequest {
                pr: None,
                app: self.app(id),
                sha: version.into(),
                repository: "local/atlas-verify".into(),
                image: None,
                env,
                secrets,
                port: 0,
                health_path: self.health_path.clone(),
                readiness_timeout: self.health_timeout,
                expires_at: None,
                outgoing: None,
            })
            .await?;
        self.lock().insert(
            id.to_string(),
            Running {
                version: version.into(),
                url: d.url.clone(),
            },
        );
        Ok(d.url)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `n` production instances at `version` (the stable version).
    pub async fn boot_production(&self, version: &str, n: usize) -> anyhow::Result<()> {
        for i in 1..=n {
            let id = format!("prod-{i}");
            self.run(&id, version, self.production_db.as_ref())
                .await
                .with_context(|| format!("cannot boot local production instance {id}"))?;
        }
        Ok(())
    }

    /// Stops every process this fleet started and deletes the QA branch. Returns what survived.
    pub async fn teardown(&self) -> Vec<String> {
        let mut ids: std::collections::BTreeSet<String> = self.lock().keys().cloned().collect();
        ids.extend(
            self.attempted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        let mut survivors = Vec::new();
        for id in ids {
            if let Err(e) = self.platform.destroy(&self.app(&id)).await {
                survivors.push(format!("{id}: {e:#}"));
            } else {
                self.lock().remove(&id);
            }
        }
        if let Some(qa) = &self.qa_db
            && self
                .qa_created
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            && let Err(e) = qa.database.drop_database(&qa.name).await
        {
            survivors.push(format!("database {}: {e:#}", qa.name));
        }
        survivors
    }
}

#[async_trait]
impl Fleet for LocalFleet {
    fn kind(&self) -> &'static str {
        "local-process"
    }

    async fn deploy_qa(&self, version: &str) -> anyhow::Result<String> {
        let mut url = None;
        if let Some(qa) = &self.qa_db {
            // A fresh copy of production for every QA deploy, migrated like production will be.
            self.qa_created
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let u = qa.database.copy_production(&qa.name).await?;
            if let Some(cmd) = &qa.migrations {
                let run = crate::provider::local::migrate::run_migrations(cmd, &u).await?;
                if !run.ok {
                    anyhow::bail!("the migrations failed on the QA database: {}", run.tail);
                }
            }
            url = Some(u);
        }
        self.run("qa", version, url.as_ref().or(self.production_db.as_ref()))
            .await
    }

    async fn production(&self) -> anyhow::Result<Vec<Instance>> {
        Ok(self
            .lock()
            .iter()
            .filter(|(id, _)| id.starts_with("prod-"))
            .map(|(id, r)| Instance {
                id: id.clone(),
                version: r.version.clone(),
                state: "started".into(),
            })
            .collect())
    }

    async fn start_canary(&self, version: &str) -> anyhow::Result<Instance> {
        self.run("canary", version, self.production_db.as_ref())
            .await?;
        Ok(Instance {
            id: "canary".into(),
            version: version.into(),
            state: "started".into(),
        })
    }

    async fn stop_canary(&self, canary: &Instance) -> anyhow::Result<()> {
        self.platform.destroy(&self.app(&canary.id)).await?;
        self.lock().remove(&canary.id);
        Ok(())
    }

    async fn update_instance(&self, id: &str, version: &str) -> anyhow::Result<()> {
        match self.run(id, version, self.production_db.as_ref()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The old process is gone and the new one never became healthy.
                self.lock().insert(
                    id.to_string(),
                    Running {
                        version: format!("{version} (not running)"),
                        url: String::new(),
                    },
                );
                Err(e)
            }
        }
    }

    fn target(&self, instance: &Instance) -> Target {
        Target {
            base_url: self
                .lock()
                .get(&instance.id)
                .map(|r| r.url.clone())
                .unwrap_or_default(),
            headers: Vec::new(),
        }
    }
}

/// The URL of the local production database (the parent database of the local PostgreSQL
/// provider): from `[local] database_url`'s server, or from the cluster atlas runs itself.
pub fn production_url(
    settings: &crate::config::Settings,
    state_dir: &Path,
) -> anyhow::Result<Secret> {
    use crate::provider::local::pg::{Conn, LocalPg};
    let db = LocalPg::parent_database(&settings.database.parent);
    if let Some(url) = &settings.local.database_url {
        let (conn, _) = Conn::parse(url)?;
        return Ok(conn.url(&db));
    }
    // The local provider keeps its cluster's port and password in this file (0600).
    #[derive(serde::Deserialize)]
    struct Cluster {
        port: u16,
        password: String,
    }
    let path: PathBuf = state_dir.join("pg").join("cluster.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (the local cluster state)", path.display()))?;
    let c: Cluster = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the local cluster state", path.display()))?;
    let conn = Conn {
        host: "127.0.0.1".into(),
        port: c.port,
        user: "postgres".into(),
        password: Some(Secret::new(c.password)),
        query: None,
    };
    Ok(conn.url(&db))
}

/// The version the last passed local release promoted.
pub fn stable_version(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join("verify").join("stable.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("version")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "stable".into())
}

pub fn record_stable(state_dir: &Path, version: &str) -> anyhow::Result<()> {
    let dir = state_dir.join("verify");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join("stable.json"),
        serde_json::json!({ "version": version, "at": chrono::Utc::now().to_rfc3339() })
            .to_string(),
    )
    .with_context(|| format!("cannot write {}", dir.join("stable.json").display()))
}
