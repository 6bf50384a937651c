//! The migration tool's bookkeeping rows carried from a parent database into a schema-only
//! branch (`data_model = "fixtures"`, `schema_only = true`), over the PostgreSQL protocol.
//!
//! A schema-only branch has the parent's tables but none of their rows, the bookkeeping tables
//! (`[database] migrations_tables`: `_sqlx_migrations`, `schema_migrations`, ...) included; the
//! migrations would then run again against tables that exist, and fail. The action image has
//! no shell and no psql, so Atlas copies those rows itself: `COPY ... TO STDOUT` on the
//! parent (one read-only snapshot), `COPY ... FROM STDIN` into the branch, all tables in one
//! transaction, and the sequences those tables own set to the parent's values (a later
//! migration's row must not collide with a copied id). A table absent in the parent is skipped;
//! one whose columns differ between the parent and the branch is an error naming it (its rows
//! would not say what the branch's schema holds).
//!
//! TLS through rustls: `sslmode=require` (what Neon's URIs say, and the default here: a URI
//! without `sslmode` is never sent in clear) verifies the server's certificate and name (SNI),
//! like libpq's `verify-full`, which is accepted too; `sslmode=disable` is honoured.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_postgres::{Client, Config};

use crate::secret::{self, Secret};

/// Bound on connecting to either database (a suspended Neon compute wakes within seconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the whole copy: bookkeeping tables hold one row per migration.
const COPY_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What was carried over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// `schema.table` and its row count, for each bookkeeping table the parent has.
    pub tables: Vec<(String, u64)>,
}

impl Kept {
    /// Rows copied, all tables together.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// Where the copy runs: who reports it (`neon`), the parent's name and both URIs.
pub struct Job<'a> {
    pub provider: &'a str,
    pub parent: &'a str,
    pub branch: &'a str,
    pub parent_uri: &'a Secret,
    pub branch_uri: &'a Secret,
}

/// Copies the rows of each table of `tables` (`table` in any schema, or `schema.table`) that
/// the parent has into the branch. See the module docs.
pub async fn copy(c: &Job<'_>, tables: &[String]) -> anyhow::Result<Kept> {
    if let Some(bad) = tables.iter().find(|t| !crate::config::is_table_name(t)) {
        bail!("[database] migrations_tables: `{bad}` is not a table name");
    }
    if tables.is_empty() {
        return Ok(Kept::default());
    }
    tokio::time::timeout(COPY_TIMEOUT, copy_inner(c, tables))
        .await
        .map_err(|_| {
            anyhow!(
                "{}: keeping the migration records in branch {}: the copy from {} took longer than {COPY_TIMEOUT:?}",
                c.provider,
                c.branch,
                c.parent
            )
        })?
}

async fn copy_inner(c: &Job<'_>, tables: &[String]) -> anyhow::Result<Kept> {
    let step = |what: &str| {
        format!(
            "{}: keeping the migration records in branch {}: {what}",
            c.provider, c.branch
        )
    };
    let mut parent = connect(c.parent_uri)
        .await
        .with_context(|| step(&format!("connecting to the parent {}", c.parent)))?;
    let mut branch = connect(c.branch_uri)
        .await
        .with_context(|| step("connecting to the branch"))?;
    let ptx = parent
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
        .with_context(|| step(&format!("opening a snapshot of the parent {}", c.parent)))?;
    let found = present(&ptx, tables)
        .await
        .with_context(|| step("listing the parent's bookkeeping tables"))?;
    let btx = branch
        .transaction()
        .await
        .map_err(pg)
        .with_context(|| step("opening a transaction on the branch"))?;
    let mut kept = Kept::default();
    for (schema, table) in &found {
        let name = format!("{schema}.{table}");
        let at = |what: &str| step(&format!("table `{name}`: {what}"));
        let cols = columns(&ptx, schema, table)
            .await
            .with_context(|| at("reading its columns in the parent"))?;
        let have = columns(&btx, schema, table)
            .await
            .with_context(|| at("reading its columns in the branch"))?;
        if have.is_empty() {
            bail!(
                "{}: the branch has no table `{name}` although the parent {} has it ([database] migrations_tables); the branch was not made from the parent's schema",
                step(&format!("table `{name}`")),
                c.parent
            );
        }
        if cols != have {
            bail!(
                "{}: its columns differ between the parent {} ({}) and the branch ({}); a migration tool's bookkeeping table must have the same columns in both, or leave it out of [database] migrations_tables",
                step(&format!("table `{name}`")),
                c.parent,
                shape(&cols),
                shape(&have)
            );
        }
        let list = cols
            .iter()
            .map(|(n, _)| ident(n))
            .collect::<Vec<_>>()
            .join(", ");
        let target = format!("{}.{}", ident(schema), ident(table));
        let out = ptx
            .copy_out(&format!("COPY {target} ({list}) TO STDOUT"))
            .await
            .map_err(pg)
            .with_context(|| at("COPY TO STDOUT on the parent"))?;
        let sink = btx
            .copy_in::<_, bytes::Bytes>(&format!("COPY {target} ({list}) FROM STDIN"))
            .await
            .map_err(pg)
            .with_context(|| at("COPY FROM STDIN into the branch"))?;
        futures_util::pin_mut!(out);
        futures_util::pin_mut!(sink);
        while let Some(chunk) = out.next().await {
            let chunk = chunk
                .map_err(pg)
                .with_context(|| at("reading the parent's rows"))?;
            sink.send(chunk)
                .await
                .map_err(pg)
                .with_context(|| at("writing the rows into the branch"))?;
        }
        let n = sink
            .as_mut()
            .finish()
            .await
            .map_err(pg)
            .with_context(|| at("writing the rows into the branch"))?;
        sequences(&ptx, &btx, schema, table, &cols)
            .await
            .with_context(|| at("setting its sequences to the parent's"))?;
        kept.tables.push((name, n));
    }
    btx.commit()
        .await
        .map_err(pg)
        .with_context(|| step("committing"))?;
    // The parent's snapshot only read; ending it is a courtesy.
    let _ = ptx.rollback().await;
    Ok(kept)
}

/// Connects with rustls (see the module docs for `sslmode`); the connection's task is spawned
/// and ends when the client is dropped.
async fn connect(uri: &Secret) -> anyhow::Result<Client> {
    let config = config(uri.expose())?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::http::tls_client_config()?);
    let (client, connection) = config.connect(tls).await.map_err(pg)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The connection settings of a `postgres://` URI: `sslmode` defaults to `require`, and
/// `verify-full` / `verify-ca` mean `require` here (rustls always checks the certificate).
fn config(uri: &str) -> anyhow::Result<Config> {
    let mut u =
        url::Url::parse(uri).map_err(|e| anyhow!("the connection URI does not parse: {e}"))?;
    let mut pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    match pairs.iter_mut().find(|(k, _)| k == "sslmode") {
        Some((_, v)) if v == "verify-full" || v == "verify-ca" => *v = "require".into(),
        Some(_) => {}
        None => pairs.push(("sslmode".into(), "require".into())),
    }
    u.query_pairs_mut().clear().extend_pairs(pairs);
    let mut config: Config = u
        .as_str()
        .parse()
        // the parser's message names the option, never the URI (it holds the password).
        .map_err(|e: tokio_postgres::Error| {
            anyhow!("the connection URI is not one PostgreSQL accepts: {e}")
        })?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("atlas");
    Ok(config)
}

/// The `(schema, table)` of each name in `tables` that the parent has (ordinary or
/// partitioned tables; a bare name in every schema but the system ones).
async fn present(
    tx: &tokio_postgres::Transaction<'_>,
    tables: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let bare: Vec<&str> = tables
        .iter()
        .filter(|t| !t.contains('.'))
        .map(String::as_str)
        .collect();
    let qualified: Vec<&str> = tables
        .iter()
        .filter(|t| t.contains('.'))
        .map(String::as_str)
        .collect();
    let rows = tx
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_%' \
             AND (c.relname::text = ANY($1) OR (n.nspname || '.' || c.relname)::text = ANY($2)) \
             ORDER BY 1, 2",
            &[&bare, &qualified],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A table's columns in order, name and type, without generated ones (COPY cannot write
/// them); empty when there is no such table.
async fn columns(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    table: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let rows = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sets each sequence a copied column owns (serial, identity) in the branch to the parent's
/// value: a schema-only branch starts them over, and the next migration's bookkeeping row
/// would take an id a copied row has.
async fn sequences(
    parent: &tokio_postgres::Transaction<'_>,
    branch: &tokio_postgres::Transaction<'_>,
    schema: &str,
    table: &str,
    cols: &[(String, String)],
) -> anyhow::Result<()> {
    let qualified = format!("{}.{}", ident(schema), ident(table));
    for (col, _) in cols {
        let row = parent
            .query_one("SELECT pg_get_serial_sequence($1, $2)", &[&qualified, &col])
            .await
            .map_err(pg)?;
        let Some(seq): Option<String> = row.get(0) else {
            continue;
        };
        // `seq` comes quoted from the server (pg_get_serial_sequence quotes what needs it).
        let at = parent
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .await
            .map_err(pg)?;
        let (value, called): (i64, bool) = (at.get(0), at.get(1));
        branch
            .query_one(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&seq, &value, &called],
            )
            .await
            .map_err(pg)
            .with_context(|| format!("sequence {seq}"))?;
    }
    Ok(())
}

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn shape(cols: &[(String, String)]) -> String {
    cols.iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server's message of a PostgreSQL error (`db error` alone says nothing), redacted.
fn pg(e: tokio_postgres::Error) -> anyhow::Error {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    };
    anyhow!("{}", secret::redact(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_defaults_to_require_and_verify_full_is_accepted() {
        use tokio_postgres::config::SslMode;
        let c = config("postgresql://u:p@ep-x.neon.tech/neondb").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        let c = config(
            "postgresql://u:p@ep-x.neon.tech/neondb?sslmode=verify-full&channel_binding=require",
        )
        .unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        let c = config("postgres://u:p@127.0.0.1:5432/db?sslmode=disable").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.get_dbname(), Some("db"));
    }

    #[test]
    fn a_bad_uri_error_never_shows_the_password() {
        let e = config("postgresql://u:hunter2-Zq@h/db?bogus=1").unwrap_err();
        assert!(!format!("{e:#}").contains("hunter2"), "{e:#}");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            shape(&[
                ("version".into(), "bigint".into()),
                ("name".into(), "text".into())
            ]),
            "version bigint, name text"
        );
    }
}
