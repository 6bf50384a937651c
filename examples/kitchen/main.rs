//! "kitchen": the example app atlas previews in `atlas demo` and in the tests.
//!
//! A small HTTP API backed by PostgreSQL (schema in `examples/kitchen/migrations/`, applied by
//! `examples/kitchen/migrate.sh`). It reads what a preview platform gives it: `PORT`,
//! `DATABASE_URL`, `ATLAS_COMMIT_SHA`, `APP_VERSION` (the release being rolled out; `/healthz`
//! reports it, so a canary can be told from the stable instances) and the optional preview
//! secret `KITCHEN_API_KEY` (when set, `POST /orders` needs it in `x-api-key`).
//!
//! Routes: `GET /healthz`, `GET /menu`, `GET /users` (the customers, personal data: what an
//! `anonymized` preview masks), `GET /orders/{id}`, `POST /orders`
//! (`{"item_id": 1, "quantity": 2}`). It uses axum and tokio-postgres (its own package,
//! `examples/kitchen/Cargo.toml`, so building it compiles nothing else) with a small round-robin
//! pool of connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

struct App {
    pool: Vec<Client>,
    next: AtomicUsize,
    commit: String,
    version: Option<String>,
    api_key: Option<String>,
}

impl App {
    fn db(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        &self.pool[i]
    }
}

type Shared = Arc<App>;

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn db_error(e: tokio_postgres::Error) -> Response {
    eprintln!("kitchen: database error: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
}

async fn healthz(State(app): State<Shared>) -> Response {
    match app.db().query_one("SELECT 1", &[]).await {
        Ok(_) => Json(json!({ "status": "ok", "commit": app.commit, "version": app.version }))
            .into_response(),
        Err(e) => db_error(e),
    }
}

async fn users(State(app): State<Shared>) -> Response {
    match app
        .db()
        .query("SELECT id, email, name, phone FROM users ORDER BY id", &[])
        .await
    {
        Ok(rows) => {
            let users: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.get::<_, i32>(0),
                        "email": r.get::<_, String>(1),
                        "name": r.get::<_, String>(2),
                        "phone": r.get::<_, Option<String>>(3),
                    })
                })
                .collect();
            Json(json!({ "users": users })).into_response()
        }
        Err(e) => db_error(e),
    }
}

async fn menu(State(app): State<Shared>) -> Response {
    match app
        .db()
        .query(
            "SELECT id, name, price_cents FROM menu_items ORDER BY id",
            &[],
        )
        .await
    {
        Ok(rows) => {
            let items: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.get::<_, i32>(0),
                        "name": r.get::<_, String>(1),
                        "price_cents": r.get::<_, i32>(2),
                    })
                })
                .collect();
            Json(json!({ "items": items })).into_response()
        }
        Err(e) => db_error(e),
    }
}

async fn get_order(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "order id must be a number");
    };
    match app
        .db()
        .query_opt(
            "SELECT o.id, o.item_id, m.name, o.quantity, o.quantity * m.price_cents, \
             o.created_at::text FROM orders o JOIN menu_items m ON m.id = o.item_id WHERE o.id = $1",
            &[&id],
        )
        .await
    {
        Ok(Some(r)) => Json(json!({
            "id": r.get::<_, i64>(0),
            "item_id": r.get::<_, i32>(1),
            "item": r.get::<_, String>(2),
            "quantity": r.get::<_, i32>(3),
            "total_cents": r.get::<_, i32>(4),
            "created_at": r.get::<_, String>(5),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such order"),
        Err(e) => db_error(e),
    }
}

async fn create_order(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(key) = &app.api_key {
        let given = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if given != Some(key.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "x-api-key is missing or wrong");
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON");
    };
    let (Some(item), Some(qty)) = (v["item_id"].as_i64(), v["quantity"].as_i64()) else {
        return error(StatusCode::BAD_REQUEST, "item_id and quantity are required");
    };
    let (Ok(item), Ok(qty)) = (i32::try_from(item), i32::try_from(qty)) else {
        return error(StatusCode::BAD_REQUEST, "item_id or quantity out of range");
    };
    if !(1..=50).contains(&qty) {
        return error(StatusCode::BAD_REQUEST, "quantity must be 1..50");
    }
    match app
        .db()
        .query_opt(
            "INSERT INTO orders (item_id, quantity) SELECT id, $2 FROM menu_items WHERE id = $1 \
             RETURNING id",
            &[&item, &qty],
        )
        .await
    {
        Ok(Some(r)) => (
            StatusCode::CREATED,
            Json(json!({ "id": r.get::<_, i64>(0), "item_id": item, "quantity": qty })),
        )
            .into_response(),
        Ok(None) => error(StatusCode::UNPROCESSABLE_ENTITY, "no such menu item"),
        Err(e) => db_error(e),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("kitchen: fatal: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "8080".into())
        .parse()
        .map_err(|_| "PORT must be a port number")?;
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let commit = std::env::var("ATLAS_COMMIT_SHA").unwrap_or_else(|_| "unknown".into());
    let api_key = std::env::var("KITCHEN_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let mut pool = Vec::new();
    for _ in 0..4 {
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .map_err(|e| format!("cannot connect to the database: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("kitchen: database connection closed: {e}");
            }
        });
        pool.push(client);
    }
    let app = Arc::new(App {
        pool,
        next: AtomicUsize::new(0),
        commit: commit.clone(),
        version: std::env::var("APP_VERSION").ok().filter(|v| !v.is_empty()),
        api_key,
    });
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/menu", get(menu))
        .route("/users", get(users))
        .route("/orders/{id}", get(get_order))
        .route("/orders", axum::routing::post(create_order))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // what an OpenTelemetry SDK would tag its traces and logs with.
    let otel = |k: &str| std::env::var(k).unwrap_or_else(|_| "unset".into());
    eprintln!(
        "kitchen: listening on 127.0.0.1:{port} (commit {commit}; service {}; {})",
        otel("OTEL_SERVICE_NAME"),
        otel("OTEL_RESOURCE_ATTRIBUTES")
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        eprintln!("kitchen: shutting down");
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
