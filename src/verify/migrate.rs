//! Migrations on a release, rehearsed first: a throwaway branch of the production database is
//! created, the migrations run there (timed, output kept), the schema diff against production
//! is recorded, the branch is deleted; only then do the migrations run against production.
//!
//! The database side is a small trait, [`ReleaseDatabase`], with two implementations: one over
//! any [`crate::provider::Database`] (Neon, the local PostgreSQL provider) and [`PsqlDatabase`],
//! which needs only a PostgreSQL URL and the `psql`/`pg_dump` clients.

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

/// Copies of production by `pg_dump | psql` into a fresh database on the production server,
/// with the PostgreSQL clients. A dump works while production has sessions open (a `CREATE
/// DATABASE ... TEMPLATE` copy does not: the template must be idle), so the local release can
/// copy the database its running production processes use. Connection details go to the
/// clients as `PG*` variables, never in argv.
pub struct PsqlDatabase {
    production: Secret,
    production_db: String,
    /// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE` of the server.
    server_env: Vec<(String, String)>,
    base: url::Url,
}

impl PsqlDatabase {
    pub fn new(production_url: Secret) -> anyhow::Result<Self> {
        let u = url::Url::parse(production_url.expose())
            .map_err(|e| anyhow::anyhow!("the production database URL is not a URL ({e})"))?;
        let db = u.path().trim_start_matches('/').to_string();
        if db.is_empty() {
            anyhow::bail!("the production database URL names no database; add `/<dbname>`");
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let mut env = vec![
            (
                "PGHOST".to_string(),
                u.host_str().unwrap_or("127.0.0.1").to_string(),
            ),
            ("PGPORT".to_string(), u.port().unwrap_or(5432).to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), "10".to_string()),
        ];
        if !u.username().is_empty() {
            env.push(("PGUSER".into(), decode(u.username())));
        }
        if let Some(p) = u.password() {
            let p = decode(p);
            crate::secret::register(&p);
            env.push(("PGPASSWORD".into(), p));
        }
        for (k, v) in u.query_pairs() {
            if k == "sslmode" {
                env.push(("PGSSLMODE".into(), v.into_owned()));
            }
        }
        Ok(PsqlDatabase {
            production: production_url,
            production_db: db,
            server_env: env,
            base: u,
        })
    }

    /// The URL of another database on the same server.
    pub fn url_for(&self, db: &str) -> Secret {
        let mut u = self.base.clone();
        u.set_path(&format!("/{}", db_name(db)));
        Secret::new(u.to_string())
    }

    /// `sh -c script` with the server's `PG*` variables, `PATH`, `HOME` and `extra`.
    async fn sh(&self, script: &str, extra: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut cmd = crate::shell::sh(script);
        cmd.envs(
            self.server_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .envs(extra.iter().copied());
        let out = cmd
            .output()
            .await
            .context("cannot run the PostgreSQL clients (install the postgresql-client package)")?;
        if !out.status.success() {
            anyhow::bail!(
                "{}",
                crate::secret::redact(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        self.sh(
            r#"psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "$SQL""#,
            &[("SQL", sql)],
        )
        .await
        .map(|_| ())
    }

    /// Replaces database `name` with a copy (schema and data) of production.
    pub async fn copy_production(&self, name: &str) -> anyhow::Result<Secret> {
        let db = db_name(name);
        self.drop_database(&db).await?;
        self.admin(&format!("CREATE DATABASE \"{db}\""))
            .await
            .with_context(|| format!("cannot create the database {db}"))?;
        // Through a file rather than a pipe: `sh` may have no `pipefail`, and a failed dump must
        // not look like an empty, successful copy.
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let file = dir.path().join("production.sql");
        let file = file.to_str().context("temporary path is not UTF-8")?;
        self.sh(
            r#"pg_dump --no-owner --no-privileges -d "$SRC" -f "$FILE" && psql -X -q -v ON_ERROR_STOP=1 -d "$DST" -f "$FILE" >/dev/null"#,
            &[("SRC", &self.production_db), ("DST", &db), ("FILE", file)],
        )
        .await
        .with_context(|| format!("cannot copy production into {db}"))?;
        Ok(self.url_for(&db))
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let db = db_name(name);
        self.admin(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("cannot drop the database {db}"))
    }

    async fn schema(&self, db: &str) -> anyhow::Result<String> {
        let text = self
            .sh(
                r#"pg_dump --schema-only --no-owner --no-privileges -d "$DB""#,
                &[("DB", db)],
            )
            .await
            .with_context(|| format!("pg_dump of {db} failed"))?;
        Ok(crate::provider::local::pg::schema_lines(&text))
    }
}

/// Database names we create are restricted to `[a-z0-9_]`: no quoting issue, no injection.
fn db_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
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
        self.copy_production(name).await
    }
    async fn schema_diff(&self, name: &str) -> anyhow::Result<String> {
        let before = self.schema(&self.production_db).await?;
        let after = self.schema(&db_name(name)).await?;
        Ok(unified_diff(&before, &after, "production", name))
    }
    async fn delete_rehearsal(&self, name: &str) -> anyhow::Result<()> {
        self.drop_database(name).await
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
        assert_eq!(db_name("atlas-rehearsal"), "atlas_rehearsal");
        assert_eq!(db_name("x\"; drop"), "x___drop");
        let d = PsqlDatabase::new(Secret::new(
            "postgres://u:p%40ss-123456@127.0.0.1:5432/app?sslmode=disable",
        ))
        .unwrap();
        assert_eq!(d.production_db, "app");
        assert!(
            d.server_env
                .contains(&("PGPASSWORD".into(), "p@ss-123456".into()))
        );
        assert!(
            d.server_env
                .contains(&("PGSSLMODE".into(), "disable".into()))
        );
        assert!(d.url_for("x-y").expose().contains(":5432/x_y?sslmode"));
        assert!(PsqlDatabase::new(Secret::new("postgres://h:1")).is_err());
        assert_eq!(unified_diff("a\n", "a\n", "p", "r"), "");
        assert!(unified_diff("a\n", "a\nb\n", "p", "r").contains("+b"));
    }
}
