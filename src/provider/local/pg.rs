//! PostgreSQL on this machine as the database provider: a branch is
//! `CREATE DATABASE atlas_pr_N TEMPLATE <parent>`.
//!
//! With no `[local] database_url`, atlas runs its own cluster from the system's binaries
//! (`initdb`, `pg_ctl`, found via `[local] pg_bindir`, `pg_config --bindir` or
//! `/usr/lib/postgresql/*/bin`) in `<state_dir>/pg/` on a free loopback port, with its unix
//! socket directory there too. PostgreSQL refuses to run as root; when atlas runs as root (CI,
//! containers) it runs `initdb`/`pg_ctl` as the `postgres` account that Debian's package creates
//! (`runuser -u postgres --`), chowns `<state_dir>/pg` to it and adds the search (`x`) bit to
//! the ancestors of that directory that lack it, so that account can reach its data directory.
//! The cluster uses password auth on TCP; the password is generated, kept in a 0600 state file
//! and registered as a secret. Everything else talks to PostgreSQL through `psql`/`pg_dump`
//! with the connection in `PG*` environment variables (never in argv).
//!
//! Ownership: only databases named by [`naming::local_database`] *and* recorded in
//! `<state_dir>/pg/branches.json` are ever dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::naming;
use crate::provider::{Branch, BranchRequest, Database, Deleted, Owned, SchemaDiff};
use crate::secret::{self, Secret};

/// The comment atlas puts on a branch database it creates: this prefix and the creation time.
const CREATED_PREFIX: &str = "atlas created ";
/// Follows the creation time in that comment when the masking rules ran on the copy.
const MASKED_SUFFIX: &str = "; masked";

/// Empties every table outside the system schemas (a schema-only copy, like Neon's
/// `init_source = schema-only`), except the migration tool's bookkeeping tables in `keep`
/// (`table` in any schema, or `schema.table`): their rows say which migrations the schema
/// already has, and without them the migrations would run again on the branch and fail on what
/// exists. The names were checked as plain identifiers when atlas.toml was read; they are
/// checked again here since they go into SQL.
fn truncate_all_sql(keep: &[String]) -> anyhow::Result<String> {
    // One TRUNCATE of every table at once: foreign keys between them need no CASCADE (which
    // would also empty a kept table that references an emptied one).
    Ok(format!(
        "DO $$ DECLARE t text; BEGIN \
         SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO t FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND NOT {}; \
         IF t IS NOT NULL THEN EXECUTE 'TRUNCATE ' || t || ' RESTART IDENTITY'; END IF; \
         END $$",
        kept_tables(keep)?
    ))
}

/// How many rows the tables of `keep` hold (the data clause's migration records).
fn kept_rows_sql(keep: &[String]) -> anyhow::Result<String> {
    Ok(format!(
        "SELECT coalesce(sum((xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', \
         schemaname, tablename), false, true, '')))[1]::text::bigint), 0) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND {}",
        kept_tables(keep)?
    ))
}

/// The `pg_tables` condition naming the tables of `keep` (`table` in any schema, or
/// `schema.table`).
fn kept_tables(keep: &[String]) -> anyhow::Result<String> {
    if let Some(bad) = keep.iter().find(|t| !crate::config::is_table_name(t)) {
        bail!("[database] migrations_tables: `{bad}` is not a table name");
    }
    let list = |qualified: bool| {
        let names: Vec<String> = keep
            .iter()
            .filter(|t| t.contains('.') == qualified)
            .map(|n| format!("'{n}'"))
            .collect();
        if names.is_empty() {
            "ARRAY[]::text[]".to_string()
        } else {
            format!("ARRAY[{}]", names.join(", "))
        }
    };
    Ok(format!(
        "(tablename::text = ANY({}) OR (schemaname || '.' || tablename)::text = ANY({}))",
        list(false),
        list(true)
    ))
}

/// The name a local reset prepares its fresh copy of `name` under before swapping it in.
fn reset_name(name: &str) -> String {
    format!("{name}_reset")
}

/// Atlas's creation mark on a branch database.
struct Mark {
    at: DateTime<Utc>,
    masked: bool,
    /// The fingerprint of the rules it was masked with.
    rules: String,
}

/// How to reach the server: host, port, user, password, maintenance database.
#[derive(Clone)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    /// Query parameters of a configured URL (e.g. `sslmode`), kept for branch URLs.
    pub query: Option<String>,
}

impl Conn {
    /// Parses a `postgres://` URL; returns the connection and the database named in it.
    pub fn parse(url: &str) -> anyhow::Result<(Conn, String)> {
        let u = url::Url::parse(url)
            .map_err(|e| anyhow!("[local] database_url is not a postgres:// URL: {e}"))?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            bail!("[local] database_url must start with postgres://");
        }
        let password = u.password().map(|p| {
            let p = url::form_urlencoded::parse(format!("p={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            Secret::new(p)
        });
        let db = u.path().trim_start_matches('/').to_string();
        Ok((
            Conn {
                host: u.host_str().unwrap_or("127.0.0.1").to_string(),
                port: u.port().unwrap_or(5432),
                user: if u.username().is_empty() {
                    "postgres".into()
                } else {
                    u.username().to_string()
                },
                password,
                query: u.query().map(str::to_string),
            },
            if db.is_empty() { "postgres".into() } else { db },
        ))
    }

    /// The URL of one database on this server. Registered as a secret when it has a password.
    pub fn url(&self, database: &str) -> Secret {
        let user: String = url::form_urlencoded::byte_serialize(self.user.as_bytes()).collect();
        let auth = match &self.password {
            Some(p) => {
                let p: String = url::form_urlencoded::byte_serialize(p.expose().as_bytes())
                    .collect::<String>()
                    .replace('+', "%20");
                format!("{user}:{p}@")
            }
            None => format!("{user}@"),
        };
        let q = self
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        Secret::new(format!(
            "postgres://{auth}{}:{}/{database}{q}",
            self.host, self.port
        ))
    }

    /// `PG*` variables for psql/pg_dump against `database`.
    fn apply(&self, cmd: &mut Command, database: &str) {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", database)
            .env("PGCONNECT_TIMEOUT", "10");
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p.expose()),
            None => cmd.env_remove("PGPASSWORD"),
        };
    }
}

/// `<state_dir>/pg/cluster.json`: enough to find and restart our own cluster from a fresh process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterState {
    port: u16,
    password: String,
    bindir: PathBuf,
}

/// The local PostgreSQL provider.
pub struct LocalPg {
    conn: Conn,
    /// Maintenance database for CREATE/DROP DATABASE.
    admin_db: String,
    /// `Some` when atlas runs the cluster itself.
    own: Option<OwnCluster>,
    state_dir: PathBuf,
    bindir: Option<PathBuf>,
}

struct OwnCluster {
    dir: PathBuf,
    bindir: PathBuf,
}

/// The Debian package that provides the server binaries.
pub const PG_PACKAGE: &str = "postgresql";

/// Finds the directory holding `initdb` and `pg_ctl`.
pub fn find_bindir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let missing = || {
        anyhow!(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found: install the Debian package \
             `{PG_PACKAGE}` (apt-get install {PG_PACKAGE}), or set [local] pg_bindir, or set \
             [local] database_url to use an existing server"
        )
    };
    if let Some(dir) = configured {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir.to_path_buf());
        }
        return Err(missing())
            .with_context(|| format!("[local] pg_bindir {} has no initdb/pg_ctl", dir.display()));
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
    }
    // Debian keeps server binaries per major version; take the newest.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(missing)
}

/// A client binary (`psql`, `pg_dump`): next to the server binaries, else on PATH.
fn client(bindir: Option<&Path>, name: &str) -> PathBuf {
    match bindir {
        Some(d) if d.join(name).is_file() => d.join(name),
        _ => PathBuf::from(name),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn random_password() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            if n < 10 {
                (b'0' + n) as char
            } else {
                (b'a' + n - 10) as char
            }
        })
        .collect()
}

/// Runs a server binary, as `postgres` when we are root. Output is returned (redacted) on error.
async fn run_server_tool(program: &Path, args: &[&str], what: &str) -> anyhow::Result<String> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            secret::redact(text.trim())
        );
    }
    Ok(text)
}

/// Makes `dir` (and its contents) usable by the `postgres` account when we are root.
fn hand_to_postgres(pg_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(pg_dir)
        .status()
        .context("cannot run chown")?;
    if !status.success() {
        bail!(
            "cannot chown {} to the `postgres` account (PostgreSQL refuses to run as root; \
             install the `{PG_PACKAGE}` package, which creates that account)",
            pg_dir.display()
        );
    }
    // The account must be able to traverse every ancestor of its directory.
    let mut p = pg_dir.parent();
    while let Some(dir) = p {
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
                    .with_context(|| {
                        format!(
                            "cannot make {} traversable for the `postgres` account",
                            dir.display()
                        )
                    })?;
            }
        }
        p = dir.parent();
    }
    Ok(())
}

impl LocalPg {
    /// Connects to the configured server, or starts (or reuses) atlas's own cluster.
    pub async fn start(
        settings: &crate::config::LocalSettings,
        state_dir: &Path,
        log: &mut dyn FnMut(&str),
    ) -> anyhow::Result<LocalPg> {
        if let Some(url) = &settings.database_url {
            secret::register(url);
            let (conn, db) = Conn::parse(url)?;
            let pg = LocalPg {
                conn,
                admin_db: db,
                own: None,
                state_dir: state_dir.to_path_buf(),
                bindir: settings.pg_bindir.clone(),
            };
            pg.psql(&pg.admin_db, "select 1")
                .await
                .context("cannot reach the server of [local] database_url")?;
            return Ok(pg);
        }
        let bindir = find_bindir(settings.pg_bindir.as_deref())?;
        for c in ["psql", "pg_dump"] {
            let p = client(Some(&bindir), c);
            if p.is_relative() && crate::shell::on_path(c).is_none() {
                bail!(
                    "the PostgreSQL client `{c}` was not found: install the Debian package `{PG_PACKAGE}`"
                );
            }
        }
        let pg_dir = state_dir.join("pg");
        let data = pg_dir.join("data");
        let sock = pg_dir.join("sock");
        let state_file = pg_dir.join("cluster.json");
        std::fs::create_dir_all(&sock)
            .with_context(|| format!("cannot create {}", sock.display()))?;
        let mut state: Option<ClusterState> = std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if state.is_none() || !data.join("PG_VERSION").is_file() {
            // A fresh cluster (or a half-made one from an interrupted run).
            let _ = std::fs::remove_dir_all(&data);
            let password = random_password();
            let pwfile = pg_dir.join("pwfile");
            write_private(&pwfile, &password)?;
            if is_root() {
                hand_to_postgres(&pg_dir)?;
            }
            log("initdb: creating the local PostgreSQL cluster");
            let res = run_server_tool(
                &bindir.join("initdb"),
                &[
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "--no-sync",
                    "--pwfile",
                    path_str(&pwfile)?,
                ],
                "initdb",
            )
            .await;
            let _ = std::fs::remove_file(&pwfile);
            res?;
            let st = ClusterState {
                port: super::free_port()?,
                password,
                bindir: bindir.clone(),
            };
            write_private(&state_file, &serde_json::to_string_pretty(&st)?)?;
            state = Some(st);
        }
        let mut st = state.ok_or_else(|| anyhow!("cluster state missing"))?;
        let password = Secret::new(st.password.clone());
        let own = OwnCluster {
            dir: pg_dir.clone(),
            bindir: bindir.clone(),
        };
        if is_root() {
            hand_to_postgres(&pg_dir)?;
        }
        if !own.running().await {
            // The recorded port may be taken by now: try it, then fresh ports.
            let mut last = None;
            for attempt in 0..3 {
                if attempt > 0 || std::net::TcpListener::bind(("127.0.0.1", st.port)).is_err() {
                    st.port = super::free_port()?;
                }
                log(&format!(
                    "pg_ctl: starting PostgreSQL on 127.0.0.1:{}",
                    st.port
                ));
                match own.start(st.port).await {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e.context("cannot start the local PostgreSQL cluster"));
            }
            write_private(&state_file, &serde_json::to_string_pretty(&st)?)?;
        }
        Ok(LocalPg {
            conn: Conn {
                host: "127.0.0.1".into(),
                port: st.port,
                user: "postgres".into(),
                password: Some(password),
                query: None,
            },
            admin_db: "postgres".into(),
            own: Some(own),
            state_dir: state_dir.to_path_buf(),
            bindir: Some(bindir),
        })
    }

    /// Stops atlas's own cluster (fast shutdown). A configured server is left alone.
    pub async fn stop(&self) -> anyhow::Result<()> {
        if let Some(own) = &self.own
            && own.running().await
        {
            run_server_tool(
                &own.bindir.join("pg_ctl"),
                &[
                    "stop",
                    "-D",
                    path_str(&own.dir.join("data"))?,
                    "-m",
                    "fast",
                    "-w",
                ],
                "pg_ctl stop",
            )
            .await?;
        }
        Ok(())
    }

    /// True when this provider runs its own cluster.
    pub fn owns_cluster(&self) -> bool {
        self.own.is_some()
    }

    /// The URL of `database` on the server (a secret: it holds the password).
    pub fn url(&self, database: &str) -> Secret {
        self.conn.url(database)
    }

    /// The TCP port of the server.
    pub fn port(&self) -> u16 {
        self.conn.port
    }

    /// The local name of a parent branch (`main` -> `atlas_main`).
    pub fn parent_database(parent: &str) -> String {
        let s: String = naming::slug(parent).replace('-', "_");
        format!("atlas_{}", if s.is_empty() { "main".into() } else { s })
    }

    /// Creates the parent database once and, the first time, runs the migrations command on it
    /// so branches start from the migrated schema. Returns true when it was created now.
    pub async fn ensure_parent(
        &self,
        parent: &str,
        migrations: Option<&str>,
        log: &mut dyn FnMut(&str),
    ) -> anyhow::Result<bool> {
        let name = Self::parent_database(parent);
        if self.exists(&name).await? {
            return Ok(false);
        }
        log(&format!("creating the parent database {name}"));
        self.psql(&self.admin_db, &format!("CREATE DATABASE {name}"))
            .await?;
        if let Some(cmd) = migrations {
            let url = self.conn.url(&name);
            let out = super::migrate::run_migrations(cmd, &url).await?;
            if !out.ok {
                // Leave no half-migrated parent behind: the next run starts over.
                let _ = self
                    .psql(
                        &self.admin_db,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    )
                    .await;
                return Err(crate::error::GateFailed {
                    stage: "migrations".into(),
                    detail: format!(
                        "the migrations command failed on the parent database {name}: {}",
                        out.tail
                    ),
                }
                .into());
            }
        }
        Ok(true)
    }

    /// Names of every database on the server.
    pub async fn databases(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .psql(&self.admin_db, "select datname from pg_database order by 1")
            .await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    async fn exists(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self.databases().await?.iter().any(|d| d == name))
    }

    /// `CREATE DATABASE name TEMPLATE parent`, ending the template's sessions when it is busy.
    async fn create_from(&self, name: &str, parent: &str) -> anyhow::Result<()> {
        let sql = format!("CREATE DATABASE {name} TEMPLATE {parent}");
        let mut attempt = 0;
        loop {
            match self.psql(&self.admin_db, &sql).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if attempt < 5
                        && format!("{e:#}").contains("is being accessed by other users") =>
                {
                    // The template must have no sessions: end them and try again.
                    attempt += 1;
                    let _ = self
                        .psql(
                            &self.admin_db,
                            &format!(
                                "select pg_terminate_backend(pid) from pg_stat_activity \
                                 where datname = '{parent}' and pid <> pg_backend_pid()"
                            ),
                        )
                        .await;
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create the branch database {name} from {parent}")
                    });
                }
            }
        }
    }

    /// The creation mark atlas writes on a branch database once it is ready (when atlas
    /// created it; `None` for a database made some other way or never finished).
    async fn mark(&self, name: &str) -> Option<Mark> {
        let sql = format!(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = '{name}'"
        );
        let comment = self.psql(&self.admin_db, &sql).await.ok()?;
        let rest = comment.trim().strip_prefix(CREATED_PREFIX)?;
        let (at, masked, rules) = match rest.split_once(MASKED_SUFFIX) {
            Some((at, fp)) => (at, true, fp.trim().to_string()),
            None => (rest, false, String::new()),
        };
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some(Mark { at, masked, rules })
    }

    async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql(
            &self.admin_db,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await
        .with_context(|| format!("cannot drop the branch database {name}"))?;
        self.set_expiry_of(name, None)?;
        self.record(|s| {
            s.remove(name);
        })
    }

    /// Drops what an interrupted reset of `name` left behind: the `<name>_reset` copy it
    /// prepares before swapping it in (recorded before it was made, so a run killed mid-reset
    /// still leaves the record). Returns true when there was such a database.
    async fn drop_reset_leftover(&self, name: &str) -> anyhow::Result<bool> {
        let tmp = reset_name(name);
        if !self.recorded().contains(&tmp) {
            return Ok(false);
        }
        let existed = self.exists(&tmp).await?;
        self.drop_database(&tmp).await?;
        Ok(existed)
    }

    /// What a new branch copy goes through before anyone gets its URI: emptied (schema only),
    /// masked (`anonymized`: every rule checked against the schema first, then one transaction).
    async fn prepare(&self, name: &str, req: &BranchRequest) -> anyhow::Result<()> {
        if req.schema_only {
            self.psql(name, &truncate_all_sql(&req.migrations_tables)?)
                .await
                .context("cannot empty the schema-only branch")?;
        }
        if req.masking.is_some() {
            self.mask(name, req).await?;
        }
        Ok(())
    }

    /// Applies `req.masking` to `name`: every rule's table and column checked first, then one
    /// transaction, bounded by `anonymize_timeout`.
    async fn mask(&self, name: &str, req: &BranchRequest) -> anyhow::Result<()> {
        if let Some(masks) = &req.masking {
            let sql = crate::data::masking::local_sql(masks)?;
            self.mask_with(name, req, &sql).await?;
        }
        Ok(())
    }

    /// Runs masking `sql` made from `req.masking` on `name`, each rule's table and column
    /// checked first, bounded by `anonymize_timeout`.
    async fn mask_with(&self, name: &str, req: &BranchRequest, sql: &str) -> anyhow::Result<()> {
        if let Some(masks) = &req.masking {
            let missing = self
                .psql(name, &crate::data::masking::missing_columns_sql(masks))
                .await?;
            if !missing.trim().is_empty() {
                bail!(
                    "[[database.masking]] names what the branch does not have: {}",
                    missing.lines().collect::<Vec<_>>().join(", ")
                );
            }
            tokio::time::timeout(req.anonymize_timeout, self.psql(name, sql))
                .await
                .map_err(|_| {
                    anyhow!(
                        "masking {name} took longer than {:?}; raise [database] anonymize_timeout",
                        req.anonymize_timeout
                    )
                })?
                .context("the masking rules failed")?;
        }
        Ok(())
    }

    /// Runs one SQL statement with psql; returns unaligned tuples-only output.
    async fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(client(self.bindir.as_deref(), "psql"));
        self.conn.apply(&mut cmd, database);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .context("cannot run psql: install the Debian package `postgresql-client`")?;
        if !out.status.success() {
            bail!(
                "psql: `{sql}` failed: {}",
                secret::redact(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn dump_schema(&self, database: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(client(self.bindir.as_deref(), "pg_dump"));
        self.conn.apply(&mut cmd, database);
        cmd.args(["--schema-only", "--no-owner", "--no-privileges"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = cmd.output().await.context("cannot run pg_dump")?;
        if !out.status.success() {
            bail!(
                "pg_dump of {database} failed: {}",
                secret::redact(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        Ok(schema_lines(&String::from_utf8_lossy(&out.stdout)))
    }

    fn branches_file(&self) -> PathBuf {
        self.state_dir.join("pg").join("branches.json")
    }

    /// Each branch's expiry (RFC 3339) by name: PostgreSQL has no expiry of its own, so it is
    /// kept next to the records, renewed by every `up` and `extend` as on Neon.
    fn expiries_file(&self) -> PathBuf {
        self.state_dir.join("pg").join("expires.json")
    }

    fn expiries(&self) -> BTreeMap<String, DateTime<Utc>> {
        std::fs::read_to_string(self.expiries_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn set_expiry_of(&self, name: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        let mut all = self.expiries();
        match at {
            Some(at) => all.insert(name.to_string(), at),
            None => all.remove(name),
        };
        let path = self.expiries_file();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&all)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn recorded(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.branches_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn record(&self, f: impl FnOnce(&mut BTreeSet<String>)) -> anyhow::Result<()> {
        let mut set = self.recorded();
        f(&mut set);
        let path = self.branches_file();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&set)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

impl OwnCluster {
    async fn running(&self) -> bool {
        let Some(data) = self.dir.join("data").to_str().map(str::to_string) else {
            return false;
        };
        run_server_tool(
            &self.bindir.join("pg_ctl"),
            &["status", "-D", &data],
            "pg_ctl status",
        )
        .await
        .is_ok()
    }

    async fn start(&self, port: u16) -> anyhow::Result<()> {
        let data = path_str(&self.dir.join("data"))?.to_string();
        let logf = path_str(&self.dir.join("postgres.log"))?.to_string();
        let sock = path_str(&self.dir.join("sock"))?.to_string();
        // A disposable cluster: durability settings off, which makes CREATE DATABASE fast.
        let opts = format!(
            "-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off"
        );
        run_server_tool(
            &self.bindir.join("pg_ctl"),
            &[
                "start", "-w", "-t", "60", "-D", &data, "-l", &logf, "-o", &opts,
            ],
            "pg_ctl start",
        )
        .await
        .map_err(|e| {
            let tail = std::fs::read_to_string(&logf)
                .map(|t| {
                    let lines: Vec<&str> = t.lines().collect();
                    lines[lines.len().saturating_sub(5)..].join("\n")
                })
                .unwrap_or_default();
            e.context(format!("server log {logf}:\n{}", secret::redact(&tail)))
        })?;
        Ok(())
    }
}

impl LocalPg {
    /// A kept commit's copy `req.name` of the preview's database `req.parent` (`CREATE
    /// DATABASE name TEMPLATE parent`, the sessions on the parent ended for it, as PostgreSQL
    /// requires of a template), recorded, with the preview's expiry; an existing one is reused.
    async fn copy_for_commit(&self, req: &BranchRequest) -> anyhow::Result<Branch> {
        let (name, parent) = (req.name.as_str(), req.parent.as_str());
        if naming::split_commit(name).map(|(base, _)| base) != Some(parent)
            || naming::pr_from_local_database(parent).is_none()
        {
            bail!("refusing to copy {parent} as {name}: not one of its commit copies");
        }
        let exists = self.exists(name).await?;
        if !exists {
            self.record(|s| {
                s.insert(name.to_string());
            })?;
            self.create_from(name, parent).await?;
        }
        if req.expires_at.is_some() {
            self.set_expiry_of(name, req.expires_at)?;
        }
        Ok(Branch {
            name: name.to_string(),
            id: name.to_string(),
            parent: parent.to_string(),
            connection_uri: self.conn.url(name),
            created: !exists,
            created_at: None,
            expires_at: req.expires_at,
            // A full copy of the preview's database: its bookkeeping rows come with it.
            migration_records: None,
        })
    }

    /// Drops the recorded commit copies of `name` (they go with it); whether there were any.
    async fn drop_commit_copies(&self, name: &str) -> anyhow::Result<bool> {
        let copies: Vec<String> = self
            .recorded()
            .into_iter()
            .filter(|d| naming::split_commit(d).is_some_and(|(base, _)| base == name))
            .collect();
        let databases = self.databases().await?;
        let mut any = false;
        for c in copies {
            any |= databases.contains(&c);
            self.drop_database(&c).await?;
        }
        Ok(any)
    }
}

#[async_trait]
impl Database for LocalPg {
    fn kind(&self) -> &'static str {
        "local-postgres"
    }

    async fn ensure_branch(&self, req: &BranchRequest) -> anyhow::Result<Branch> {
        let name = naming::local_database(req.pr);
        let parent = Self::parent_database(&req.parent);
        // A reset that was killed before its swap left its copy: the branch itself is either
        // unchanged or gone (then made anew below), so the copy only goes.
        self.drop_reset_leftover(&name).await?;
        let mut exists = self.exists(&name).await?;
        if exists && self.recorded().contains(&name) && self.mark(&name).await.is_none() {
            // Ours but never finished (no creation mark: the run that made it stopped before
            // its masking or its schema-only step ended): made again, never reused half-made.
            self.drop_database(&name).await?;
            exists = false;
        }
        let mark = if exists { self.mark(&name).await } else { None };
        if exists && req.masking.is_some() && !mark.as_ref().is_some_and(|m| m.masked) {
            bail!(
                "the branch database {name} is a plain copy of {parent} (created before data_model = \"anonymized\"); atlas does not hand it to the app: run `atlas preview down --pr {}` and up again",
                req.pr
            );
        }
        if !exists {
            // Record before creating: an interrupted run still leaves a record the next run
            // (or `down`) uses to clean up.
            self.record(|s| {
                s.insert(name.clone());
            })?;
            self.create_from(&name, &parent).await?;
        }
        let created_at = if let (true, Some(mark), Some(masks)) = (exists, &mark, &req.masking) {
            // Reused: rules changed since it was masked are applied now, before the app is
            // started on it again.
            let fp = crate::data::masking::fingerprint(masks);
            if mark.rules != fp {
                self.mask(&name, req).await.with_context(|| {
                    format!("the changed masking rules could not be applied to {name}; atlas does not hand it to the app")
                })?;
                let sql = format!(
                    "COMMENT ON DATABASE {name} IS '{CREATED_PREFIX}{}{MASKED_SUFFIX} {fp}'",
                    mark.at.to_rfc3339()
                );
                self.psql(&self.admin_db, &sql).await?;
            }
            Some(mark.at)
        } else if exists {
            mark.map(|m| m.at)
        } else {
            if let Err(e) = self.prepare(&name, req).await {
                // Fail closed: what could not be masked (or emptied) is dropped at once.
                let dropped = self.drop_database(&name).await;
                let note = match dropped {
                    Ok(()) => format!("the branch database {name} was dropped"),
                    Err(d) => format!("dropping the branch database {name} failed too: {d:#}"),
                };
                return Err(e.context(note));
            }
            // PostgreSQL keeps no creation time: the database's comment holds it, written
            // last, so that a database without it is known to be unfinished.
            let now = Utc::now();
            let masked = match &req.masking {
                Some(m) => format!("{MASKED_SUFFIX} {}", crate::data::masking::fingerprint(m)),
                None => String::new(),
            };
            let sql = format!(
                "COMMENT ON DATABASE {name} IS '{CREATED_PREFIX}{}{masked}'",
                now.to_rfc3339()
            );
            self.psql(&self.admin_db, &sql).await?;
            Some(now)
        };
        if req.expires_at.is_some() {
            self.set_expiry_of(&name, req.expires_at)?;
        }
        // Counted for the data clause only: a count that fails says nothing, it fails nothing.
        let migration_records = match !exists && req.schema_only {
            true => self
                .psql(&name, &kept_rows_sql(&req.migrations_tables)?)
                .await
                .ok()
                .and_then(|n| n.trim().parse().ok()),
            false => None,
        };
        Ok(Branch {
            name: name.clone(),
            id: name.clone(),
            parent,
            connection_uri: self.conn.url(&name),
            created: !exists,
            created_at,
            expires_at: req.expires_at,
            migration_records,
        })
    }

    async fn delete_branch(&self, name: &str) -> anyhow::Result<Deleted> {
        if naming::pr_from_local_database(name).is_none() {
            bail!("refusing to drop database {name}: it is not an atlas preview branch");
        }
        let children = self.drop_commit_copies(name).await?;
        let leftover = self.drop_reset_leftover(name).await? || children;
        if !self.exists(name).await? {
            self.record(|s| {
                s.remove(name);
            })?;
            return Ok(if leftover {
                Deleted::Removed
            } else {
                Deleted::AlreadyGone
            });
        }
        if !self.recorded().contains(name) {
            bail!(
                "refusing to drop database {name}: atlas has no record of creating it in {}",
                self.branches_file().display()
            );
        }
        self.drop_database(name).await?;
        Ok(Deleted::Removed)
    }

    async fn schema_diff(&self, branch: &Branch) -> anyhow::Result<SchemaDiff> {
        let parent = self.dump_schema(&branch.parent).await?;
        let child = self.dump_schema(&branch.name).await?;
        let diff = similar::TextDiff::from_lines(&parent, &child)
            .unified_diff()
            .context_radius(3)
            .header(&branch.parent, &branch.name)
            .to_string();
        Ok(SchemaDiff { diff })
    }

    async fn reset_branch(&self, branch: &Branch, req: &BranchRequest) -> anyhow::Result<Branch> {
        // Recreated from the template under the same name (the URI stays the same); the app
        // that ran on it is replaced by this run's deploy.
        if !self.recorded().contains(&branch.name) {
            bail!(
                "refusing to reset database {}: atlas has no record of creating it",
                branch.name
            );
        }
        // Made and prepared (emptied, masked) under a name of its own, then swapped in: the
        // app still running on the branch never sees the parent's rows unmasked.
        let name = branch.name.clone();
        let tmp = reset_name(&name);
        let parent = Self::parent_database(&req.parent);
        self.drop_reset_leftover(&name).await?;
        self.record(|s| {
            s.insert(tmp.clone());
        })?;
        let made = async {
            self.create_from(&tmp, &parent).await?;
            self.prepare(&tmp, req).await
        }
        .await;
        if let Err(e) = made {
            let _ = self.drop_database(&tmp).await;
            return Err(e.context(format!("the reset of {name} failed; {name} is unchanged")));
        }
        self.psql(
            &self.admin_db,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await?;
        self.psql(
            &self.admin_db,
            &format!("ALTER DATABASE {tmp} RENAME TO {name}"),
        )
        .await
        .with_context(|| format!("cannot rename {tmp} to {name} after the reset"))?;
        self.record(|s| {
            s.remove(&tmp);
        })?;
        let masked = match &req.masking {
            Some(m) => format!("{MASKED_SUFFIX} {}", crate::data::masking::fingerprint(m)),
            None => String::new(),
        };
        let at = branch.created_at.unwrap_or_else(Utc::now).to_rfc3339();
        self.psql(
            &self.admin_db,
            &format!("COMMENT ON DATABASE {name} IS '{CREATED_PREFIX}{at}{masked}'"),
        )
        .await?;
        Ok(branch.clone())
    }

    async fn mask_mark(&self, branch: &Branch) -> anyhow::Result<Option<String>> {
        let x = self
            .psql(&branch.name, "select txid_current() % 4294967296")
            .await
            .context("cannot read the branch's transaction id before the migrations")?;
        Ok(Some(x.trim().to_string()))
    }

    async fn mask_again(
        &self,
        branch: &Branch,
        req: &BranchRequest,
        since: Option<&str>,
    ) -> anyhow::Result<()> {
        let Some(masks) = &req.masking else {
            return Ok(());
        };
        let sql = match since {
            // Only the rows the migrations wrote: the others keep their masked values.
            Some(x) => crate::data::masking::local_sql_since(
                masks,
                x.parse()
                    .with_context(|| format!("not a transaction id: `{x}`"))?,
            )?,
            None => crate::data::masking::local_sql(masks)?,
        };
        self.mask_with(&branch.name, req, &sql).await
    }

    async fn set_expiry(&self, name: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        if !self.recorded().contains(name) {
            bail!("local: no preview database {name} is recorded");
        }
        self.set_expiry_of(name, Some(at))
    }

    async fn clear_expiry(&self, name: &str) -> anyhow::Result<()> {
        if !self.recorded().contains(name) {
            bail!("local: no preview database {name} is recorded");
        }
        self.set_expiry_of(name, None)
    }

    async fn snapshot_branch(&self, req: &BranchRequest) -> anyhow::Result<Option<Branch>> {
        self.copy_for_commit(req).await.map(Some)
    }

    async fn list_branches(&self) -> anyhow::Result<Vec<Owned>> {
        let recorded = self.recorded();
        let expiries = self.expiries();
        let databases = self.databases().await?;
        let mut names: BTreeSet<String> = BTreeSet::new();
        for d in databases.iter().filter(|d| recorded.contains(*d)) {
            // What an interrupted reset left counts as its branch's: the sweep (or `down`)
            // that deletes the branch drops it too, even when the branch itself is gone.
            let branch = d.strip_suffix("_reset").unwrap_or(d);
            names.insert(branch.to_string());
        }
        Ok(names
            .into_iter()
            .filter_map(|d| {
                let pr = naming::pr_from_local_database(&d)?;
                Some(Owned {
                    id: d.clone(),
                    expires_at: expiries.get(&d).copied(),
                    name: d,
                    pr,
                    created_at: None,
                    pinned_by: None,
                })
            })
            .collect())
    }
}

/// A `pg_dump --schema-only` reduced to its schema: comments, blank lines and the per-dump
/// `\restrict` keys differ between two dumps of the same schema.
pub fn schema_lines(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !l.starts_with("--")
                && !l.trim().is_empty()
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_round_trips_and_registers_the_password() {
        let (c, db) =
            Conn::parse("postgres://app:p%40ss-w0rd@db.local:6543/shop?sslmode=require").unwrap();
        assert_eq!(db, "shop");
        assert_eq!(c.port, 6543);
        let url = c.url("atlas_pr_3");
        assert_eq!(
            url.expose(),
            "postgres://app:p%40ss-w0rd@db.local:6543/atlas_pr_3?sslmode=require"
        );
        assert!(!secret::redact(url.expose()).contains("p%40ss-w0rd"));
    }

    #[test]
    fn parent_names_are_identifiers() {
        assert_eq!(LocalPg::parent_database("main"), "atlas_main");
        assert_eq!(LocalPg::parent_database("Release/2.x"), "atlas_release_2_x");
        assert_eq!(LocalPg::parent_database("--"), "atlas_main");
    }
}
