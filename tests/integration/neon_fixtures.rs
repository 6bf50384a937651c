//! `data_model = "fixtures"` on Neon against real PostgreSQL: the fake Neon's branches are
//! databases of a local cluster (`FakeNeon::back_with_postgres`: a schema-only branch is
//! `pg_dump --schema-only` of its parent), and Atlas copies the migration tool's bookkeeping
//! rows into the new branch over the PostgreSQL protocol before anything else sees it. The
//! kitchen's own migrations (`examples/kitchen/migrate.sh`, which re-applies every file whose
//! version `schema_migrations` lacks, and fails on a table that exists) then run on the branch
//! through `preview::up` with the branch's `DATABASE_URL`, and the seed after them.

use crate::common::fake_fly::FakeFly;
use crate::common::fake_neon::FakeNeon;
use crate::common::local_env;
use crate::common::openapi;
use crate::common::world;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use atlas::config::{DataModel, LocalSettings, Settings};
use atlas::naming;
use atlas::preview::{self, PreviewRequest, UpOptions};
use atlas::provider::fly::FlyPlatform;
use atlas::provider::local::forge::LocalForge;
use atlas::provider::local::pg::LocalPg;
use atlas::provider::{AppDeployment, Deleted, DeployRequest, Owned, Platform, Providers};

const REPO: &str = "octo-org/kitchen";
const NEON_KEY: &str = "neon-api-key-Nf15cc3";
const FLY_TOKEN: &str = "fly-token-Nf15dd4";
const SEED: &str = "psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c \"INSERT INTO menu_items (name, price_cents) VALUES ('fixture soup', 450)\"";

/// Fly for the app, but no one-off machines: the migrations and the seed run here with
/// `sh -c` against the branch (as they do where the platform runs no tasks), so that they
/// really touch the branch's database.
struct TasksHere(FlyPlatform);

#[async_trait]
impl Platform for TasksHere {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    async fn deploy(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment> {
        self.0.deploy(req).await
    }
    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
        self.0.destroy(app).await
    }
    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
        self.0.list_apps().await
    }
}

struct World {
    neon: FakeNeon,
    fly: FakeFly,
    pg: LocalPg,
    providers: Providers,
    settings: Settings,
    opts: UpOptions,
    _dir: tempfile::TempDir,
}

/// psql against `url`: unaligned, tuples only.
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
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A cluster of its own whose database `main_db` is made by `make_main` (given its URL), the
/// fake Neon's `main` on it, and the providers over them.
async fn world(
    main_db: &str,
    make_main: impl FnOnce(&str),
    configure: impl FnOnce(&mut Settings),
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalSettings {
        state_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let pg = LocalPg::start(&local, dir.path(), &mut |_| {})
        .await
        .unwrap();
    let admin = pg.url("postgres").expose().to_string();
    psql(&admin, &format!("CREATE DATABASE {main_db}"));
    make_main(pg.url(main_db).expose());
    let neon = FakeNeon::start(NEON_KEY).await;
    neon.back_with_postgres(&admin, main_db);
    let fly = FakeFly::start(FLY_TOKEN).await;
    let mut settings = Settings::default();
    settings.fly.preview_url = Some(openapi::serve_health().await);
    settings.neon.operation_timeout = Duration::from_secs(5);
    settings.app.readiness_timeout = Duration::from_secs(3);
    settings.database.data_model = DataModel::Fixtures;
    settings.database.seed = Some(SEED.into());
    configure(&mut settings);
    let mut wire = world::Wire::fast(4, Duration::from_millis(20), Duration::from_secs(20));
    // The fake answers a create once its pg_dump | psql is done: on a busy machine that takes
    // longer than the fast wire's 700 ms, and a timed-out create would adopt the branch.
    wire.timeouts.request = Duration::from_secs(30);
    let db = world::neon_database(&neon, &settings, REPO, &wire);
    let platform = world::fly_platform(&fly, &settings, REPO, "atlas-org", &wire);
    let prefix = naming::prefix(settings.app.name.as_deref(), REPO);
    let opts = UpOptions {
        preview_secrets: BTreeMap::new(),
        image: Some("registry.fly.io/kitchen:abc".into()),
        artifact: "registry.fly.io/kitchen:abc".into(),
        ttl: Some(Duration::from_secs(86400)),
        template_dir: None,
        audit_log: None,
        prefix,
        history_base: None,
        dashboard_url: None,
        private_repository: false,
        now: None,
        pin_labeled: None,
    };
    let providers = Providers {
        database: Box::new(db),
        platform: Box::new(TasksHere(platform)),
        forge: Box::new(LocalForge::new(dir.path(), false)),
    };
    World {
        neon,
        fly,
        pg,
        providers,
        settings,
        opts,
        _dir: dir,
    }
}

/// The kitchen's migrations applied to the database at `url` (its parent before any preview).
fn kitchen_migrated(url: &str) {
    let out = std::process::Command::new("sh")
        .arg(format!("{}/examples/kitchen/migrate.sh", local_env::ROOT))
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn req(pr: u64, sha: &str) -> PreviewRequest {
    PreviewRequest {
        pr,
        sha: sha.into(),
        branch: "feature/fixtures".into(),
        repository: REPO.into(),
        title: None,
    }
}

impl World {
    async fn up(&self, pr: u64, sha: &str) -> (anyhow::Result<preview::UpOutcome>, String) {
        let mut lines = Vec::new();
        let r = preview::up(
            &self.providers,
            &self.settings,
            &req(pr, sha),
            &self.opts,
            &mut |l| lines.push(l.to_string()),
        )
        .await;
        (r, lines.join("\n"))
    }

    async fn down(&self, pr: u64) {
        preview::down(
            &self.providers,
            &self.settings,
            &req(pr, "x"),
            &self.opts,
            &mut |_| {},
        )
        .await
        .unwrap();
    }

    /// The URL of the database behind the fake's branch `name`.
    fn branch_url(&self, name: &str) -> String {
        let db = self
            .neon
            .database_of(name)
            .expect("a branch backed by postgres");
        self.pg.url(&db).expose().to_string()
    }

    fn databases(&self) -> Vec<String> {
        psql(
            self.pg.url("postgres").expose(),
            "SELECT datname FROM pg_database WHERE datname LIKE 'neon\\_%' ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    async fn finish(self) {
        assert!(
            self.neon.preview_branches().is_empty(),
            "{:?}",
            self.neon.preview_branches()
        );
        assert_eq!(self.databases(), Vec::<String>::new());
        assert!(
            self.fly.app_names().is_empty(),
            "{:?}",
            self.fly.app_names()
        );
        assert_eq!(self.neon.core.violations(), Vec::<String>::new());
        assert_eq!(self.fly.core.violations(), Vec::<String>::new());
        self.pg.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixtures_branch_keeps_the_migration_records_so_only_new_migrations_run() {
    // The PR adds one migration to the kitchen's three.
    let migrations = tempfile::tempdir().unwrap();
    let kitchen = format!("{}/examples/kitchen/migrations", local_env::ROOT);
    for f in std::fs::read_dir(&kitchen).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, migrations.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        migrations.path().join("0004_tips.sql"),
        "CREATE TABLE tips (id serial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders (id));\n",
    )
    .unwrap();
    let w = world(
        "kitchen_main",
        |url| {
            kitchen_migrated(url);
            // A second tool's bookkeeping, with an id from a sequence.
            psql(
                url,
                "CREATE TABLE knex_migrations (id serial PRIMARY KEY, name text NOT NULL, batch int NOT NULL); \
                 INSERT INTO knex_migrations (name, batch) VALUES ('a.js', 1), ('b.js', 1)",
            );
        },
        |s| {
            s.database.migrations = Some(format!(
                "MIGRATIONS_DIR={} sh {}/examples/kitchen/migrate.sh",
                migrations.path().display(),
                local_env::ROOT
            ));
        },
    )
    .await;
    let (out, log) = w.up(61, "f1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert_eq!(
        w.neon.branch("preview/pr-61").unwrap().init_source,
        "schema-only"
    );
    // The migrations saw the parent's three as applied and ran only the PR's.
    let tail = out.contract.migrations.output_tail.clone().unwrap();
    assert_eq!(out.contract.migrations.ok, Some(true), "{tail}");
    for v in ["0001_menu.sql", "0002_orders.sql", "0003_users.sql"] {
        assert!(tail.contains(&format!("skip  {v}")), "{tail}");
    }
    assert!(tail.contains("apply 0004_tips.sql"), "{tail}");
    let url = w.branch_url("preview/pr-61");
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations"
        ),
        "0001_menu.sql,0002_orders.sql,0003_users.sql,0004_tips.sql"
    );
    // The bookkeeping's sequence goes on from the parent's: the next id is 3, not 1.
    assert_eq!(
        psql(
            &url,
            "INSERT INTO knex_migrations (name, batch) VALUES ('c.js', 2) RETURNING id"
        ),
        "3"
    );
    // No customer of the parent; the seed's row is the only menu item.
    assert_eq!(psql(&url, "SELECT count(*) FROM users"), "0");
    assert_eq!(
        psql(&url, "SELECT string_agg(name, ',') FROM menu_items"),
        "fixture soup"
    );
    assert!(out.contract.data.seed.as_ref().unwrap().ok == Some(true));
    // 3 + 2 records, said in the data clause and the step log.
    assert_eq!(out.contract.data.migration_records, Some(5));
    assert!(
        out.comment_body
            .contains("schema only; 5 migration records kept from `main`"),
        "{}",
        out.comment_body
    );
    assert!(log.contains("5 migration record(s) kept"), "{log}");
    // The URI handed to the app is the branch's, asked for after the copy.
    let calls = w.neon.core.calls();
    assert!(
        calls.iter().filter(|c| *c == "getConnectionURI").count() >= 3,
        "the parent's, the branch's for the copy, the app's: {calls:?}"
    );
    // A push: the branch is reused, nothing is copied again, the count stays in the clause.
    let (out2, log2) = w.up(61, "f2").await;
    let out2 = out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    assert!(log2.contains("reused preview/pr-61"), "{log2}");
    assert_eq!(out2.contract.data.migration_records, Some(5));
    assert_eq!(psql(&url, "SELECT count(*) FROM knex_migrations"), "3");
    w.down(61).await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bookkeeping_table_of_another_shape_fails_and_the_branch_is_gone() {
    let w = world("kitchen_main", kitchen_migrated, |s| {
        s.database.migrations = Some(format!(
            "sh {}/examples/kitchen/migrate.sh",
            local_env::ROOT
        ));
    })
    .await;
    w.neon
        .alter_new_branches("ALTER TABLE schema_migrations ADD COLUMN checksum text");
    let (out, log) = w.up(62, "g1").await;
    let e = out.expect_err("a mismatched bookkeeping table fails the preview");
    let t = format!("{e:#}");
    assert!(t.contains("neon: keeping the migration records"), "{t}");
    assert!(t.contains("table `public.schema_migrations`"), "{t}");
    assert!(t.contains("columns differ"), "{t}");
    assert!(t.contains("checksum text"), "{t}");
    assert!(t.contains("was deleted"), "{t}");
    // Nothing ran on it and nothing of it is left: no branch, no database, no app.
    assert!(!log.contains("→ migrations"), "{log}");
    assert!(!log.contains("→ seed"), "{log}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_without_bookkeeping_tables_copies_nothing_and_fails_nothing() {
    let w = world(
        "plain_main",
        |url| {
            psql(
                url,
                "CREATE TABLE menu_items (id serial PRIMARY KEY, name text NOT NULL, price_cents int NOT NULL); \
                 INSERT INTO menu_items (name, price_cents) VALUES ('parent stew', 900)",
            );
        },
        |_| {},
    )
    .await;
    let (out, log) = w.up(63, "h1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert_eq!(out.contract.data.migration_records, Some(0));
    let url = w.branch_url("preview/pr-63");
    assert_eq!(
        psql(&url, "SELECT string_agg(name, ',') FROM menu_items"),
        "fixture soup",
        "schema only: the parent's row is not there, the seed's is"
    );
    w.down(63).await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_fixtures_branch_is_made_anew_schema_only_with_its_records_never_with_rows() {
    // `reset = "on-push"` on a fixtures branch: Neon's restore would bring the parent's rows
    // (a customer here), so the branch is recreated schema only, its records kept again, and
    // the seed runs on it again.
    let w = world(
        "kitchen_main",
        |url| {
            kitchen_migrated(url);
            psql(
                url,
                "INSERT INTO users (email, name) VALUES ('ada@customer.example', 'Ada Customer')",
            );
        },
        |s| {
            s.database.reset = atlas::config::ResetPolicy::OnPush;
            s.database.migrations = Some(format!(
                "sh {}/examples/kitchen/migrate.sh",
                local_env::ROOT
            ));
        },
    )
    .await;
    let (out, log) = w.up(64, "r1").await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert_eq!(out.contract.data.migration_records, Some(3));
    // A reviewer's row on the preview, which the reset must take away.
    let url = w.branch_url("preview/pr-64");
    psql(
        &url,
        "INSERT INTO users (email, name) VALUES ('rev@example.com', 'Reviewer')",
    );
    let (out2, log2) = w.up(64, "r2").await;
    let out2 = out2.unwrap_or_else(|e| panic!("{e:#}\n{log2}"));
    assert!(out2.contract.lifecycle.reset.is_some(), "{log2}");
    assert_eq!(
        w.neon.branch("preview/pr-64").unwrap().init_source,
        "schema-only"
    );
    let url = w.branch_url("preview/pr-64");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM users"),
        "0",
        "neither the parent's customer nor the reviewer's row survives a reset"
    );
    assert_eq!(
        psql(&url, "SELECT string_agg(name, ',') FROM menu_items"),
        "fixture soup",
        "the seed ran on the new branch, once"
    );
    let tail = out2
        .contract
        .migrations
        .output_tail
        .clone()
        .unwrap_or_default();
    assert_eq!(out2.contract.migrations.ok, Some(true), "{tail}");
    assert!(!tail.contains("apply 0001_menu.sql"), "{tail}");
    assert_eq!(out2.contract.data.migration_records, Some(3));
    w.down(64).await;
    w.finish().await;
}
