//! Data models on the local provider with a real PostgreSQL (atlas's own cluster, one per test):
//! the data itself is checked with psql. Masked columns differ from the parent's, unmasked ones
//! are equal, a schema-only copy has no rows, a reset brings the parent's rows back, and through
//! the `atlas` binary the app only ever serves masked customers; a seed runs once.

use crate::common::local_env::{self, Env, kitchen_toml};

use std::time::{Duration, Instant};

use atlas::config::{LocalSettings, MaskingRule};
use atlas::provider::local::pg::LocalPg;
use atlas::provider::{Branch, BranchRequest, Database};

const RAW_DOMAIN: &str = "@kitchen-customers.test";

fn text(o: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// psql against `url`: unaligned, tuples only, `|` between columns.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

fn rule(column: &str, function: &str) -> MaskingRule {
    MaskingRule {
        schema: "public".into(),
        table: "users".into(),
        column: column.into(),
        function: Some(function.into()),
        value: None,
    }
}

fn masks(rules: &[MaskingRule]) -> Vec<atlas::data::Mask> {
    atlas::data::masking::parse_rules(rules).unwrap()
}

fn branch_req(
    pr: u64,
    masking: Option<Vec<atlas::data::Mask>>,
    schema_only: bool,
) -> BranchRequest {
    BranchRequest {
        pr,
        name: atlas::naming::local_database(pr),
        parent: "main".into(),
        schema_only,
        migrations_tables: atlas::config::MIGRATIONS_TABLES
            .iter()
            .map(|t| t.to_string())
            .collect(),
        expires_at: None,
        repository: "local/atlas-preview".into(),
        database: "postgres".into(),
        role: "postgres".into(),
        masking,
        anonymize_timeout: Duration::from_secs(30),
        suspend_after: None,
    }
}

/// The provider on a fresh cluster with the kitchen's migrated parent (users included).
async fn provider(dir: &std::path::Path) -> LocalPg {
    let settings = LocalSettings {
        state_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let pg = LocalPg::start(&settings, dir, &mut |_| {}).await.unwrap();
    let migrate = format!("sh {}/examples/kitchen/migrate.sh", local_env::ROOT);
    pg.ensure_parent("main", Some(&migrate), &mut |_| {})
        .await
        .unwrap();
    pg
}

fn users(url: &str) -> Vec<Vec<String>> {
    psql(
        url,
        "select id, email, name, coalesce(phone, 'NULL'), created_at from users order by id",
    )
    .lines()
    .map(|l| l.split('|').map(str::to_string).collect())
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn local_masking_changes_the_masked_columns_only_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pg = provider(dir.path()).await;
    let rules = masks(&[
        rule("email", "anon.fake_email()"),
        rule("name", "anon.partial(name, 1, '***', 0)"),
        rule("phone", "anon.random_phone('+00 ')"),
    ]);
    let t = Instant::now();
    let b: Branch = pg
        .ensure_branch(&branch_req(3, Some(rules.clone()), false))
        .await
        .unwrap();
    eprintln!(
        "local anonymized branch (create + mask): {} ms",
        t.elapsed().as_millis()
    );
    assert!(b.created);
    let url = b.connection_uri.expose().to_string();
    let parent = users(&with_db(&url, &LocalPg::parent_database("main")));
    let masked = users(&url);
    assert_eq!(parent.len(), 4);
    assert_eq!(masked.len(), parent.len());
    for (p, m) in parent.iter().zip(&masked) {
        assert_eq!(p[0], m[0], "id is not masked: equal");
        assert_eq!(p[4], m[4], "created_at is not masked: equal");
        assert_ne!(p[1], m[1], "email masked");
        assert!(
            m[1].ends_with("@example.com") && !m[1].contains(RAW_DOMAIN),
            "{m:?}"
        );
        assert_ne!(p[2], m[2], "name masked");
        assert_eq!(
            m[2],
            format!("{}***", &p[2][..1]),
            "partial keeps the first letter"
        );
        if p[3] == "NULL" {
            assert_eq!(m[3], "NULL", "a NULL stays NULL");
        } else {
            assert!(m[3].starts_with("+00 ") && m[3] != p[3], "{m:?}");
        }
    }
    // the parent is untouched.
    assert!(parent.iter().all(|p| p[1].ends_with(RAW_DOMAIN)));

    // reused: the mark says masked, nothing runs again.
    let again = pg
        .ensure_branch(&branch_req(3, Some(rules.clone()), false))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(users(&url), masked);

    // a rule added later (a new personal column) is applied to the reused branch.
    let mut more = rules.clone();
    more.extend(masks(&[MaskingRule {
        value: Some("hidden".into()),
        function: None,
        ..rule("created_at", "")
    }]));
    let e = pg.ensure_branch(&branch_req(3, Some(more), false)).await;
    // created_at is a timestamptz: a text literal that is no timestamp fails, and says so.
    let msg = format!("{:#}", e.unwrap_err());
    assert!(
        msg.contains("changed masking rules could not be applied"),
        "{msg}"
    );
    assert_eq!(users(&url), masked, "a failed re-mask changed nothing");
    let mut more = rules.clone();
    more.extend(masks(&[MaskingRule {
        value: Some("2000-01-01T00:00:00Z".into()),
        function: None,
        ..rule("created_at", "")
    }]));
    let again = pg
        .ensure_branch(&branch_req(3, Some(more.clone()), false))
        .await
        .unwrap();
    assert!(!again.created);
    let remasked = users(&url);
    assert!(
        remasked.iter().all(|m| m[4].starts_with("2000-01-01")),
        "{remasked:?}"
    );
    // and only once: the same rules again change nothing more.
    psql(
        &url,
        "update users set created_at = '2001-01-01' where id = 2",
    );
    pg.ensure_branch(&branch_req(3, Some(more), false))
        .await
        .unwrap();
    assert!(users(&url)[1][4].starts_with("2001-01-01"));

    // a reset brings the parent's rows back, masked again (fresh fakes).
    psql(&url, "delete from users where id = 1");
    pg.reset_branch(&again, &branch_req(3, Some(rules.clone()), false))
        .await
        .unwrap();
    let reset = users(&url);
    assert_eq!(reset.len(), 4, "the deleted row is back");
    let dbs = pg.databases().await.unwrap();
    assert!(!dbs.iter().any(|d| d.ends_with("_reset")), "{dbs:?}");
    assert!(
        reset.iter().all(|m| m[1].ends_with("@example.com")),
        "{reset:?}"
    );

    // a plain copy is never handed out as an anonymized one.
    let plain = pg.ensure_branch(&branch_req(4, None, false)).await.unwrap();
    let e = pg
        .ensure_branch(&branch_req(4, Some(rules.clone()), false))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("plain copy"), "{e:#}");
    pg.delete_branch(&plain.name).await.unwrap();

    // an unknown column: named, and the copy is dropped, never left half-masked.
    let bad = masks(&[
        rule("email", "anon.fake_email()"),
        rule("ssn", "anon.random_string(9)"),
    ]);
    let e = pg
        .ensure_branch(&branch_req(5, Some(bad), false))
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("public.users.ssn (no such column)") && msg.contains("dropped"),
        "{msg}"
    );
    assert!(
        !pg.databases()
            .await
            .unwrap()
            .contains(&"atlas_pr_5".to_string())
    );
    let bad = masks(&[MaskingRule {
        table: "customers".into(),
        ..rule("email", "anon.fake_email()")
    }]);
    let e = pg
        .ensure_branch(&branch_req(5, Some(bad), false))
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("public.customers.email (no such table)"),
        "{e:#}"
    );
    // an unknown function: named, with what the local provider knows.
    let bad = masks(&[rule("email", "anon.fake_iban()")]);
    let e = pg
        .ensure_branch(&branch_req(5, Some(bad), false))
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("anon.fake_iban has no local equivalent") && msg.contains("anon.fake_email()"),
        "{msg}"
    );
    assert!(
        !pg.databases()
            .await
            .unwrap()
            .contains(&"atlas_pr_5".to_string())
    );

    // schema only: the tables, none of the rows.
    let s = pg.ensure_branch(&branch_req(6, None, true)).await.unwrap();
    let surl = s.connection_uri.expose().to_string();
    assert_eq!(psql(&surl, "select count(*) from users"), "0");
    assert_eq!(psql(&surl, "select count(*) from menu_items"), "0");

    for pr in [3, 6] {
        pg.delete_branch(&atlas::naming::local_database(pr))
            .await
            .unwrap();
    }
    pg.stop().await.unwrap();
}

/// The kitchen's atlas.toml with a data model: `database` lines go under `[database]`, `tail`
/// at the end.
fn toml_with(database: &str, tail: &str) -> String {
    kitchen_toml(
        r#"
[[smoke]]
name = "customers"
path = "/users"
"#,
    )
    .replacen("[database]\n", &format!("[database]\n{database}\n"), 1)
        + tail
}

const MASKING: &str = r#"
[[database.masking]]
table = "users"
column = "email"
function = "anon.fake_email()"

[[database.masking]]
table = "users"
column = "name"
function = "anon.fake_first_name()"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_anonymized_local_preview_serves_only_masked_customers() {
    let mut env = Env::new(&toml_with("data_model = \"anonymized\"", MASKING));
    let t = Instant::now();
    let out = env.up(21);
    eprintln!(
        "local anonymized preview up (cold cluster): {} ms",
        t.elapsed().as_millis()
    );
    assert!(out.status.success(), "{}", text(&out));
    for l in text(&out)
        .lines()
        .filter(|l| l.contains("✓ database branch"))
    {
        eprintln!("step: {l}");
    }
    let comment = env.comment(21);
    assert!(comment.contains("anonymized"), "{comment}");
    assert!(
        comment.contains("`users.email -> anon.fake_email()`"),
        "{comment}"
    );
    assert!(comment.contains("parent's rows: masked"), "{comment}");
    let url = comment
        .lines()
        .find_map(|l| l.strip_prefix("**Environment URL:**"))
        .unwrap()
        .trim()
        .to_string();
    let body = reqwest::get(format!("{url}/users"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let users = v["users"].as_array().unwrap();
    assert_eq!(users.len(), 4, "{body}");
    assert!(
        !body.contains(RAW_DOMAIN),
        "a parent email reached the app: {body}"
    );
    for name in ["Ada Lovelace", "Grace Hopper", "Alan Turing"] {
        assert!(
            !body.contains(name),
            "a parent name reached the app: {body}"
        );
    }
    // the app log never printed one either.
    let logs: String = std::fs::read_dir(env.state().join("apps"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(logs.contains("listening"), "the app log was read: {logs}");
    assert!(!logs.contains(RAW_DOMAIN));
    // an update keeps the masked branch.
    let out = env.up(21);
    assert!(out.status.success(), "{}", text(&out));
    let body2 = reqwest::get(format!("{url}/users"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, body2, "reused, not masked anew");
    let out = env.down(21);
    assert!(out.status.success(), "{}", text(&out));
    env.assert_nothing_left();
    env.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_seed_runs_once_and_a_failing_one_tears_down() {
    let seed = r#"seed = "psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c \"INSERT INTO users (email, name) VALUES ('seed@seeded.test', 'Seed')\"; echo seeded""#;
    let mut env = Env::new(&toml_with(&format!("data_model = \"seeded\"\n{seed}"), ""));
    let t = Instant::now();
    let out = env.up(22);
    eprintln!(
        "local seeded preview up (cold cluster): {} ms",
        t.elapsed().as_millis()
    );
    assert!(out.status.success(), "{}", text(&out));
    for l in text(&out)
        .lines()
        .filter(|l| l.contains("✓ seed") || l.contains("✓ database branch"))
    {
        eprintln!("step: {l}");
    }
    let comment = env.comment(22);
    assert!(comment.contains(": ok (exit 0)"), "{comment}");
    assert!(
        comment.contains("Seed output") && comment.contains("seeded"),
        "{comment}"
    );
    let url = comment
        .lines()
        .find_map(|l| l.strip_prefix("**Environment URL:**"))
        .unwrap()
        .trim()
        .to_string();
    let count = |body: &str| body.matches("seed@seeded.test").count();
    let body = reqwest::get(format!("{url}/users"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count(&body), 1, "{body}");
    assert!(
        body.contains(RAW_DOMAIN),
        "seeded keeps the parent's rows: {body}"
    );
    let out = env.up(22);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("seed: not run"), "{}", text(&out));
    let body = reqwest::get(format!("{url}/users"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count(&body), 1, "the seed ran once: {body}");
    assert!(env.down(22).status.success());

    // a failing seed: named with its exit code; nothing of this run is left.
    let mut env = Env::new(&toml_with(
        "data_model = \"seeded\"\nseed = \"echo boom; exit 3\"",
        "",
    ));
    let out = env.up(23);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("seed command `echo boom; exit 3` failed (exit 3)") && t.contains("boom"),
        "{t}"
    );
    env.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_rule_with_no_equivalent_fails_before_any_branch_exists() {
    let mut env = Env::new(&toml_with(
        "data_model = \"anonymized\"",
        r#"
[[database.masking]]
table = "users"
column = "email"
function = "anon.fake_iban()"
"#,
    ));
    let out = env.up(24);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("anon.fake_iban has no local equivalent") && t.contains("users.email"),
        "{t}"
    );
    assert!(!t.contains("created atlas_pr_24"), "{t}");
    env.assert_nothing_left();
    env.assert_no_secrets();
}

/// `fixtures` / `schema_only`: every table is emptied except the migration tool's bookkeeping
/// (`[database] migrations_tables`), so the migrations the parent has are not run again on the
/// branch: the kitchen's `migrate.sh` on a schema-only copy only skips.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_only_copy_keeps_the_migration_bookkeeping_rows() {
    let dir = tempfile::tempdir().unwrap();
    let pg = provider(dir.path()).await;
    let b = pg.ensure_branch(&branch_req(6, None, true)).await.unwrap();
    let url = b.connection_uri.expose().to_string();
    let parent = with_db(&url, &LocalPg::parent_database("main"));
    let applied = psql(&parent, "select version from schema_migrations order by 1");
    assert_eq!(applied.lines().count(), 3, "{applied}");
    assert_eq!(
        psql(&url, "select version from schema_migrations order by 1"),
        applied
    );
    assert_eq!(psql(&url, "select count(*) from users"), "0");
    assert_eq!(psql(&url, "select count(*) from menu_items"), "0");
    let out = std::process::Command::new("sh")
        .arg(format!("{}/examples/kitchen/migrate.sh", local_env::ROOT))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("apply"), "migrations ran again: {said}");
    assert_eq!(said.matches("skip").count(), 3, "{said}");

    // A table of one's own, schema-qualified, is kept too; with nothing kept, nothing is.
    let mut req = branch_req(7, None, true);
    req.migrations_tables = vec!["public.menu_items".into()];
    let b = pg.ensure_branch(&req).await.unwrap();
    let url7 = b.connection_uri.expose().to_string();
    assert_ne!(psql(&parent, "select count(*) from menu_items"), "0");
    assert_eq!(
        psql(&url7, "select count(*) from menu_items"),
        psql(&parent, "select count(*) from menu_items")
    );
    assert_eq!(psql(&url7, "select count(*) from schema_migrations"), "0");
    assert_eq!(psql(&url7, "select count(*) from users"), "0");

    // A name that is no identifier never reaches SQL: the copy is dropped.
    let mut req = branch_req(8, None, true);
    req.migrations_tables = vec!["x'; drop table users; --".into()];
    let e = pg.ensure_branch(&req).await.unwrap_err();
    assert!(format!("{e:#}").contains("migrations_tables"), "{e:#}");
    assert!(!pg.databases().await.unwrap().contains(&"atlas_pr_8".into()));

    for pr in [6, 7] {
        pg.delete_branch(&atlas::naming::local_database(pr))
            .await
            .unwrap();
    }
    pg.stop().await.unwrap();
}

/// Leaves the state a reset killed mid-way leaves: its `<branch>_reset` copy, recorded.
fn leave_reset_copy(pg_url: &str, state: &std::path::Path, branch: &str) {
    let admin = with_db(pg_url, "postgres");
    psql(
        &admin,
        &format!(
            "CREATE DATABASE {branch}_reset TEMPLATE {}",
            LocalPg::parent_database("main")
        ),
    );
    let file = state.join("pg").join("branches.json");
    let mut names: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    names.push(format!("{branch}_reset"));
    std::fs::write(&file, serde_json::to_string(&names).unwrap()).unwrap();
}

/// A local reset killed before its swap (the copy made, the branch unchanged) or between the
/// drop and the rename (the branch gone) leaves a `<branch>_reset` database: the next `up`
/// drops it, and the sweep and `down` find and drop it even when the branch itself is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_reset_killed_midway_leaves_nothing_behind_for_long() {
    let dir = tempfile::tempdir().unwrap();
    let pg = provider(dir.path()).await;
    let b = pg.ensure_branch(&branch_req(9, None, false)).await.unwrap();
    let url = b.connection_uri.expose().to_string();
    let copies = |dbs: Vec<String>| -> Vec<String> {
        dbs.into_iter().filter(|d| d.ends_with("_reset")).collect()
    };

    // Killed before the swap: the next up reuses the branch and drops the copy.
    leave_reset_copy(&url, dir.path(), "atlas_pr_9");
    assert_eq!(
        copies(pg.databases().await.unwrap()),
        vec!["atlas_pr_9_reset"]
    );
    let listed = pg.list_branches().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.name.as_str(), o.pr))
            .collect::<Vec<_>>(),
        vec![("atlas_pr_9", 9)],
        "the copy is listed as its branch's"
    );
    let again = pg.ensure_branch(&branch_req(9, None, false)).await.unwrap();
    assert!(!again.created, "the branch was untouched and is reused");
    assert_eq!(copies(pg.databases().await.unwrap()), Vec::<String>::new());
    let recorded = std::fs::read_to_string(dir.path().join("pg/branches.json")).unwrap();
    assert!(!recorded.contains("_reset"), "{recorded}");

    // A reset after that is not in the way of a leftover copy either.
    leave_reset_copy(&url, dir.path(), "atlas_pr_9");
    pg.reset_branch(&again, &branch_req(9, None, false))
        .await
        .unwrap();
    assert_eq!(copies(pg.databases().await.unwrap()), Vec::<String>::new());

    // Killed between the drop and the rename: only the copy is left. The sweep sees PR 9's
    // branch, and deleting it removes the copy.
    leave_reset_copy(&url, dir.path(), "atlas_pr_9");
    psql(
        &with_db(&url, "postgres"),
        "DROP DATABASE atlas_pr_9 WITH (FORCE)",
    );
    let listed = pg.list_branches().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.name.as_str(), o.pr))
            .collect::<Vec<_>>(),
        vec![("atlas_pr_9", 9)]
    );
    assert_eq!(
        pg.delete_branch("atlas_pr_9").await.unwrap(),
        atlas::provider::Deleted::Removed
    );
    assert_eq!(copies(pg.databases().await.unwrap()), Vec::<String>::new());
    assert!(pg.list_branches().await.unwrap().is_empty());
    assert_eq!(
        pg.delete_branch("atlas_pr_9").await.unwrap(),
        atlas::provider::Deleted::AlreadyGone
    );
    pg.stop().await.unwrap();
}

/// Migrations run on the masked copy (they are the PR's code and never see the parent's rows
/// unmasked), and the rules run again after them: a migration that writes personal data into a
/// masked column (here a later migration adding a customer) is masked before the app serves it.
#[tokio::test(flavor = "multi_thread")]
async fn rows_a_migration_writes_into_a_masked_column_are_masked_too() {
    let migrations = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(format!("{}/examples/kitchen/migrations", local_env::ROOT)).unwrap()
    {
        let f = f.unwrap();
        std::fs::copy(f.path(), migrations.path().join(f.file_name())).unwrap();
    }
    let stock = format!(
        "migrations = \"sh {}/examples/kitchen/migrate.sh\"",
        local_env::ROOT
    );
    let toml = toml_with("data_model = \"anonymized\"", MASKING).replace(
        &stock,
        &format!(
            "migrations = \"MIGRATIONS_DIR={} sh {}/examples/kitchen/migrate.sh\"",
            migrations.path().display(),
            local_env::ROOT
        ),
    );
    assert!(toml.contains("MIGRATIONS_DIR="), "{toml}");
    let mut env = Env::new(&toml);
    let out = env.up(23);
    assert!(out.status.success(), "{}", text(&out));
    let url = env
        .comment(23)
        .lines()
        .find_map(|l| l.strip_prefix("**Environment URL:**"))
        .unwrap()
        .trim()
        .to_string();

    // The PR's next push brings a data migration that adds a customer.
    std::fs::write(
        migrations.path().join("0004_late_customer.sql"),
        "INSERT INTO users (email, name, phone) VALUES \
         ('late.customer@kitchen-customers.test', 'Late Customer', '+1 555 0100');",
    )
    .unwrap();
    let out = env.up(23);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("apply 0004_late_customer.sql"), "{said}");
    assert!(
        said.contains("✓ masking after migrations: 2 rule(s) applied"),
        "{said}"
    );
    let body = reqwest::get(format!("{url}/users"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["users"].as_array().unwrap().len(), 5, "{body}");
    assert!(
        !body.contains(RAW_DOMAIN) && !body.contains("Late Customer"),
        "a row the migration wrote reached the app unmasked: {body}"
    );
    let out = env.down(23);
    assert!(out.status.success(), "{}", text(&out));
    env.assert_nothing_left();
    env.assert_no_secrets();
}
