//! `kelp-registry serve`: the registry server (feature `server`).
//!
//! Two faces:
//! - **read** — what hosts fetch, cacheable and servable as static files: the well-known
//!   document, per-package indexes (one JSON line per release), namespace key logs, blobs by
//!   digest, the signed advisory list and timestamp (`read.rs`);
//! - **API** under `/api/v1` — accounts and tokens, namespaces and their key logs, publish,
//!   yank, search, package detail, ratings, and the admins' verified flag and advisories
//!   (`accounts.rs`, `publish.rs`, `search.rs`).
//!
//! Errors are `{"error": {"code", "message"}}` with the status that fits; a 5xx never says
//! more than "internal error" (the log has the rest).

mod accounts;
mod db;
mod keys;
mod limits;
mod publish;
mod read;
mod search;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::{Parser, Subcommand};
use semver::Version;
use serde_json::json;

use crate::package::PackageLimits;
pub use db::{Backend, Db};
pub use keys::RegistryKeys;

/// `kelp:plugin` contract versions the registry accepts components for. A host skips
/// releases of versions it does not serve; the registry refuses versions nobody serves.
pub const KNOWN_CONTRACTS: &[Version] = &[Version::new(0, 1, 0), Version::new(0, 2, 0)];

#[derive(Parser)]
#[command(name = "kelp-registry", about = "The Kelp plugin registry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. On its first start it creates the registry's keys in the data
    /// directory and prints the root key id hosts pin.
    Serve(ServeArgs),
    /// The registry's keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Make an account a registry admin (verified flags, advisories, reserved namespaces).
    Admin {
        /// The account's username.
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Replace the online key with a new one certified by the root key (rotation, or a
    /// certificate about to expire). The root key file is read, never copied.
    Certify {
        /// The root key file (written as `root.key` at the registry's first start).
        #[arg(long)]
        root_key: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// Data directory: keys, blobs and (by default) the SQLite database.
    #[arg(long, env = "KELP_REGISTRY_DATA", default_value = "kelp-registry-data")]
    data_dir: PathBuf,
    /// Database URL: `postgres://…` for several processes sharing one database; default
    /// SQLite in the data directory.
    #[arg(long, env = "KELP_REGISTRY_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "KELP_REGISTRY_BIND", default_value = "127.0.0.1:7878")]
    bind: SocketAddr,
    /// The largest package accepted, in bytes (compressed).
    #[arg(long, env = "KELP_REGISTRY_MAX_PACKAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_package_bytes: u64,
    /// Releases one account may publish in an hour.
    #[arg(long, env = "KELP_REGISTRY_PUBLISHES_PER_HOUR", default_value_t = 120)]
    publishes_per_hour: u32,
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keys {
            command: KeysCommand::Certify { root_key, store },
        } => {
            let root = keys::read_signing_key(&root_key)?;
            std::fs::create_dir_all(&store.data_dir)?;
            let online = keys::certify(&store.data_dir, &root)?;
            println!(
                "new online key {online}; restart the registry to use it (hosts need no change)"
            );
            Ok(())
        }
        Command::Admin { username, store } => {
            let db = open(&store).await?;
            let changed = sqlx::query("UPDATE accounts SET is_admin = 1 WHERE username = $1")
                .bind(&username)
                .execute(&db.pool)
                .await?
                .rows_affected();
            anyhow::ensure!(changed == 1, "no account named `{username}`");
            println!("{username} is a registry admin");
            Ok(())
        }
    }
}

async fn open(store: &StoreArgs) -> Result<Db> {
    std::fs::create_dir_all(&store.data_dir)
        .with_context(|| format!("creating {}", store.data_dir.display()))?;
    let url = match &store.database_url {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            store.data_dir.join("registry.db").display()
        ),
    };
    Db::connect(&url).await
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: Db,
    pub keys: RegistryKeys,
    pub blobs: PathBuf,
    pub limits: PackageLimits,
    pub rate: limits::RateLimits,
    /// Password hashes running (see `accounts::hashing`).
    pub hashing: tokio::sync::Semaphore,
    /// Publishes reading packages (inflating, parsing a component) at once.
    pub unpacking: tokio::sync::Semaphore,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let db = open(&args.store).await?;
    let (keys, created) = keys::RegistryKeys::load_or_create(&args.store.data_dir)?;
    if created {
        tracing::warn!(
            root_key = %args.store.data_dir.join("root.key").display(),
            "created the registry's keys; move root.key somewhere offline: it is only needed \
             to certify a new online key (kelp-registry keys certify)"
        );
    }
    keys::refresh(&db, &keys, false).await?;
    let blobs = args.store.data_dir.join("blobs");
    std::fs::create_dir_all(&blobs)?;
    let limits = PackageLimits {
        compressed_bytes: args.max_package_bytes,
        ..PackageLimits::default()
    };
    let root_id = keys.root_id();
    let state = AppState(Arc::new(Inner {
        db,
        keys,
        blobs,
        limits,
        rate: limits::RateLimits {
            publishes: limits::Limiter::new(
                args.publishes_per_hour,
                std::time::Duration::from_secs(60 * 60),
            ),
            ..limits::RateLimits::default()
        },
        hashing: tokio::sync::Semaphore::new(accounts::HASHING_AT_ONCE),
        unpacking: tokio::sync::Semaphore::new(2),
    }));
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("listening on {}", args.bind))?;
    let address = listener.local_addr()?;
    let refresher = tokio::spawn(refresh_periodically(state.clone()));
    // Hosts pin this id: `kelp registry add http://ADDRESS --root-key ID`.
    tracing::info!(%address, root_key_id = %root_id, "kelp-registry is serving");
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    });
    // Connections still open some seconds after the signal (a slow download, an idle
    // keep-alive) do not keep the process alive.
    let result = tokio::select! {
        result = std::future::IntoFuture::into_future(serving) => result,
        _ = async {
            if stopping_rx.await.is_err() {
                // No signal will come: serve until the server ends by itself.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        } => {
            tracing::warn!("connections still open {SHUTDOWN_DEADLINE:?} after the signal; stopping");
            Ok(())
        }
    };
    refresher.abort();
    result.context("serving")
}

/// How long open connections may finish after a stop signal.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Ctrl-C or SIGTERM (what service managers and containers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Re-signs the timestamp before it expires and forgets old download records.
async fn refresh_periodically(state: AppState) {
    let mut interval = tokio::time::interval(keys::REFRESH_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(e) = keys::refresh(&state.db, &state.keys, false).await {
            tracing::error!("re-signing the timestamp: {e:#}");
        }
        if let Err(e) = search::forget_old_downloads(&state.db).await {
            tracing::error!("pruning download records: {e:#}");
        }
    }
}

/// Every route.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(read::routes())
        .merge(accounts::routes())
        .merge(publish::routes(&state))
        .merge(search::routes())
        .with_state(state)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn too_many(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        tracing::error!("database: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        tracing::error!("{error:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> ApiError {
        ApiError::from(anyhow::Error::from(error))
    }
}

/// A JSON body whose rejection is an [`ApiError`] (axum's own is plain text).
pub struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters whose rejection is an [`ApiError`].
pub struct Params<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Path parameters whose rejection (say, a letter where a number goes) is an [`ApiError`].
pub struct Path<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}
