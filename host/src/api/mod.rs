//! The HTTP server of `kelp serve`.
//!
//! This is the server's first slice: health, readiness, and the tools of the loaded plugins.
//! Until users and auth land (see the "Host server core" issue), `/api/*` requires the admin
//! token that the server writes to `<data dir>/admin.token` (mode 0600) at first start.

mod tools;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::Config;
use crate::plugins::grants::Approval;
use crate::plugins::{InstallOptions, PluginRuntime};
use crate::store::Db;

/// State shared by handlers.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<PluginRuntime>,
    admin_token_sha256: Arc<String>,
}

/// An API error rendered as the error envelope of DESIGN.md.
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(
            json!({"error": {"code": self.code, "message": self.message, "request_id": null}}),
        );
        (self.status, body).into_response()
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config, data_dir: PathBuf, bundled: Option<PathBuf>) -> Result<()> {
    let db = match &config.database_url {
        Some(url) => Db::connect(url).await?,
        None => Db::open_sqlite_in(&data_dir).await?,
    };
    let runtime = PluginRuntime::new(config.plugins.clone(), &data_dir, db)?;
    if let Some(dir) = &bundled {
        install_bundled(&runtime, dir).await?;
    }
    for (id, e) in runtime.load_all().await? {
        tracing::warn!(instance = %id, "not serving plugin instance: {e:#}");
    }
    let token = admin_token(&data_dir)?;
    let state = AppState {
        runtime,
        admin_token_sha256: Arc::new(crate::util::sha256_hex(token.as_bytes())),
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    tracing::info!(
        address = %listener.local_addr()?,
        token_file = %data_dir.join("admin.token").display(),
        tools = state.runtime.tools().len(),
        "kelp is serving"
    );
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// The router (also used by tests).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/tools", get(tools::list))
        .route("/tools/{instance}/{tool}", axum::routing::post(tools::call))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .nest("/api", api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1")
        .execute(&state.runtime.db().pool)
        .await
    {
        Ok(_) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("database: {e}"),
        )
        .into_response(),
    }
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| crate::util::sha256_hex(t.trim().as_bytes()));
    // Comparing digests keeps the comparison independent of where a wrong token differs.
    if presented.as_deref() != Some(state.admin_token_sha256.as_str()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
        .into_response();
    }
    next.run(request).await
}

async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            use rand::RngCore;
            let mut bytes = [0u8; 12];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        });
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Installs every `.kelp` in `dir` whose plugin is not installed yet, approving what each
/// requests (never private addresses). Operators can change grants afterwards.
async fn install_bundled(runtime: &PluginRuntime, dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading bundled plugins in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kelp"))
        .collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path)?;
        let (review, _) = match runtime.review(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(package = %path.display(), "skipping bundled package: {e:#}");
                continue;
            }
        };
        if runtime
            .db()
            .get_plugin(&review.manifest.name.to_string())
            .await?
            .is_some()
        {
            continue;
        }
        let approval = Approval::everything_requested(&review.manifest.capabilities, &json!({}));
        let installed = runtime
            .install(
                &bytes,
                InstallOptions {
                    instance_id: None,
                    config: json!({}),
                    approval,
                },
            )
            .await
            .with_context(|| format!("installing bundled {}", path.display()))?;
        tracing::info!(plugin = %installed.name, instance = %installed.instance_id, "installed bundled plugin");
    }
    Ok(())
}

fn admin_token(data_dir: &Path) -> Result<String> {
    let key = crate::secrets::load_or_create_key(&data_dir.join("admin.token"))?;
    Ok(hex::encode(key))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
