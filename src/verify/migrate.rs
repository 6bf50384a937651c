//! Migrations on a release, rehearsed first: a throwaway branch of the production database is
//! created, the migrations run there (timed, output kept), the schema diff against production
//! is recorded, the branch is deleted; only then do the migrations run against production.
//!
//! The database side is a small trait, [`ReleaseDatabase`], with two implementations: one over
//! any [`crate::provider::Database`] (Neon, the local PostgreSQL provider) and [`PsqlDatabase`],
//! which needs only a PostgreSQL URL and the `psql`/`pg_dump` clients.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;

use crate::secret::Secret;

#[async_trait]
pub trait ReleaseDatabase: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Creates a throwaway copy of production called `name` (replacing a leftover one) and
    /// returns its connection URL.
    async fn create_rehearsal(&self, name: &str) -> anyhow::Result<Secret>;
    /// Unified schema diff of the rehearsal branch against production; empty when identical.
    async fn schema_diff(&self, name: &str) -> anyhow::Result<String>;
    /// Deletes the rehearsal branch; a missing one is success.
    async fn delete_rehearsal(&self, name: &str) -> anyhow::Result<()>;
    /// The production database URL the migrations are finally applied to.
    fn production_url(&self) -> &Secret;
}

/// A [`ReleaseDatabase`] over a provider's branches: the rehearsal is a branch of `parent`
/// (production), the diff is the provider's own.
pub struct ProviderReleaseDb {
    pub database: Box<dyn crate::provider::Database>,
    pub request: crate::provider::BranchRequest,
    pub production_url: Secret,
    branch: tokio::sync::Mutex<Option<crate::provider::Branch>>,
}

impl ProviderReleaseDb {
    /// `request` is a template: its name is replaced by the rehearsal name.
    pub fn new(
        database: Box<dyn crate::provider::Database>,
        request: crate::provider::BranchRequest,
        production_url: Secret,
    ) -> Self {
        ProviderReleaseDb {
            database,
            request,
            production_url,
            branch: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl ReleaseDatabase for ProviderReleaseDb {
    fn kind(&self) -> &'static str {
        self.database.kind()
    }
    async fn create_rehearsal(&self, name: &str) -> anyhow::Result<Secret> {
        let mut req = self.request.clone();
        req.name = name.to_string();
        let mut b = self.database.ensure_branch(&req).await?;
        if !b.created {
            // A leftover from a crashed run holds old data: start again from a fresh copy.
            self.database.delete_branch(&b.name).await?;
            b = self.database.ensure_branch(&req).await?;
        }
        let url = b.connection_uri.clone();
        *self.branch.lock().await = Some(b);
        Ok(url)
    }
    async fn schema_diff(&self, _name: &str) -> anyhow::Result<String> {
        let guard = self.branch.lock().await;
        let b = guard
            .as_ref()
            .context("schema diff asked before the rehearsal branch was created")?;
        Ok(self.database.schema_diff(b).await?.diff)
    }
    async fn delete_rehearsal(&self, _name: &str) -> anyhow::Result<()> {
        // The provider may name the branch its own way (locally `atlas_pr_<n>`).
        if let Some(b) = self.branch.lock().await.take() {
            self.database.delete_branch(&b.name).await?;
        }
        Ok(())
    }
    fn production_url(&self) -> &Secret {
        &self.production_url
    }
}

/// Rehearsal by `CREATE DATABASE <name> TEMPLATE <production>` on the production server, with
/// `psql` and `pg_dump`. Meant for local releases (a database this machine can reach).
pub struct PsqlDatabase {
    production: Secret,
    /// The same server's maintenance database (`postgres`).
    admin: Secret,
    production_db: String,
    base: url::Url,
}

impl PsqlDatabase {
    pub fn new(production_url: Secret) -> anyhow::Result<Self> {
        let mut u = url::Url::parse(production_url.expose())
            .map_err(|e| anyhow::anyhow!("the production database URL is not a URL ({e})"))?;
        let db = u.path().trim_start_matches('/').to_string();
        if db.is_empty() {
            anyhow::bail!("the production database URL names no database; add `/<dbname>`");
        }
        let base = u.clone();
        u.set_path("/postgres");
        Ok(PsqlDatabase {
            production: production_url,
            admin: Secret::new(u.to_string()),
            production_db: db,
            base,
        })
    }

    fn url_for(&self, db: &str) -> Secret {
        let mut u = self.base.clone();
        u.set_path(&format!("/{db}"));
        Secret::new(u.to_string())
    }
}

/// Database names we create are restricted to `[a-z0-9_]`, so quoting is plain.
fn db_ident(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("\"{s}\"")
}

async fn psql(url: &Secret, sql: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("psql")
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-qAt")
        .arg("-d")
        .arg(url.expose())
        .arg("-c")
        .arg(sql)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run `psql` (install the postgresql-client package)")?;
    if !out.status.success() {
        anyhow::bail!(
            "psql failed: {}",
            crate::secret::redact(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn schema(url: &Secret) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("pg_dump")
        .arg("--schema-only")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("-d")
        .arg(url.expose())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run `pg_dump` (install the postgresql-client package)")?;
    if !out.status.success() {
        anyhow::bail!(
            "pg_dump failed: {}",
            crate::secret::redact(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    // Drop comments and the restrict/unrestrict tokens newer pg_dump versions add: they differ
    // between two dumps of the same schema.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict")
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Unified diff of two schema dumps; empty when they are the same.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(old_name, new_name)
        .to_string()
}

#[async_trait]
impl ReleaseDatabase for PsqlDatabase {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    async fn create_rehearsal(&self, name: &str) -> anyhow::Result<Secret> {
        self.delete_rehearsal(name).await?;
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            db_ident(name),
            db_ident(&self.production_db)
        );
        // The template must have no other sessions; the app's connections come and go, so try
        // a few times before giving up (PostgreSQL: "source database is being accessed").
        let mut last = None;
        for _ in 0..10 {
            match psql(&self.admin, &sql).await {
                Ok(_) => return Ok(self.url_for(db_ident(name).trim_matches('"'))),
                Err(e) if format!("{e:#}").contains("being accessed") => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => {
                    return Err(e.context(format!("cannot create the rehearsal database {name}")));
                }
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("template busy"))
            .context(format!(
                "cannot create the rehearsal database {name}: production has open sessions; stop idle connections or use a provider branch"
            )))
    }
    async fn schema_diff(&self, name: &str) -> anyhow::Result<String> {
        let before = schema(&self.production).await?;
        let after = schema(&self.url_for(db_ident(name).trim_matches('"'))).await?;
        Ok(unified_diff(&before, &after, "production", name))
    }
    async fn delete_rehearsal(&self, name: &str) -> anyhow::Result<()> {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db_ident(name)),
        )
        .await
        .with_context(|| format!("cannot drop the rehearsal database {name}"))?;
        Ok(())
    }
    fn production_url(&self) -> &Secret {
        &self.production
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(db_ident("atlas-rehearsal"), "\"atlas_rehearsal\"");
        let d =
            PsqlDatabase::new(Secret::new("postgres://u:pw-123456@127.0.0.1:5432/app")).unwrap();
        assert_eq!(d.production_db, "app");
        assert!(d.admin.expose().ends_with("/postgres"));
        assert!(d.url_for("x").expose().ends_with(":5432/x"));
        assert!(PsqlDatabase::new(Secret::new("postgres://h:1")).is_err());
        assert_eq!(unified_diff("a\n", "a\n", "p", "r"), "");
        assert!(unified_diff("a\n", "a\nb\n", "p", "r").contains("+b"));
    }
}
