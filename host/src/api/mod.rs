//! The HTTP server of `kelp serve`: one router per resource (one file each), state passed
//! with `State<AppState>`, auth by extractors (`CurrentUser`, `AdminUser`), errors in the
//! envelope of DESIGN.md, and an OpenAPI 3.1 document generated from the handlers.

mod agents;
pub mod auth;
pub mod common;
mod costs;
pub mod http;
mod invites;
mod limits;
mod metrics;
mod openai;
mod plugins;
mod providers;
mod register;
mod runs;
mod sessions;
mod settings;
mod tools;
mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

pub use common::{ApiError, ApiJson, Page, PageQuery};

use crate::agent::{AgentHost, AgentSettings};
use crate::auth::streams::StreamRegistry;
use crate::config::Config;
use crate::plugins::grants::Approval;
use crate::plugins::{InstallOptions, PluginRuntime};
use crate::store::Db;

/// Largest JSON body accepted (plugin uploads have their own, larger limit).
const MAX_JSON_BODY: usize = 1024 * 1024;

/// State shared by handlers.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<PluginRuntime>,
    pub agent: Arc<AgentHost>,
    pub login_limiter: Arc<limits::LoginLimiter>,
    pub metrics: Arc<metrics::HttpMetrics>,
    pub http: Arc<http::HttpPolicy>,
    pub streams: Arc<StreamRegistry>,
}

impl AppState {
    /// State with default agent settings and a fresh host id (tests, embedding).
    pub fn new(runtime: Arc<PluginRuntime>) -> AppState {
        AppState::with_agent(runtime, AgentSettings::default(), crate::util::new_id())
    }

    pub fn with_agent(
        runtime: Arc<PluginRuntime>,
        settings: AgentSettings,
        host_id: String,
    ) -> AppState {
        let http = Arc::new(http::HttpPolicy::default());
        AppState {
            agent: Arc::new(AgentHost::new(runtime.clone(), settings, host_id)),
            streams: Arc::new(StreamRegistry::new(runtime.db().clone(), &http)),
            runtime,
            login_limiter: Arc::default(),
            metrics: Arc::default(),
            http,
        }
    }

    /// The same state under `[http]` settings other than the defaults.
    pub fn with_http(mut self, settings: &http::HttpSettings) -> Result<AppState> {
        self.http = Arc::new(http::HttpPolicy::new(settings)?);
        self.streams = Arc::new(StreamRegistry::new(self.db().clone(), &self.http));
        Ok(self)
    }

    pub fn db(&self) -> &Db {
        self.runtime.db()
    }
}

/// A fixed argon2 hash to verify against when a username does not exist, so a failed login
/// takes as long either way.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| crate::auth::hash_password("not a real password").expect("hashing works"));

#[derive(OpenApi)]
#[openapi(
    info(title = "Kelp", description = "Self-hosted AI agent host. Errors use the envelope `ErrorEnvelope`; lists are `{items, total, next_offset}` pages."),
    components(schemas(common::ErrorEnvelope)),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token or the token returned by login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// The API routes and the OpenAPI document describing them.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(tools::routes())
        .merge(agents::routes())
        .merge(sessions::routes())
        .merge(runs::routes())
        .merge(costs::routes())
        .merge(openai::routes())
        .merge(settings::routes())
        .merge(plugins::routes())
        .merge(providers::routes())
        .merge(invites::routes())
        .merge(register::routes())
        .merge(users::routes())
        .split_for_parts();
    describe_responses(&mut openapi);
    (router, openapi)
}

/// OpenAPI requires a description on every response (handlers declare only status and body,
/// so the standard reason phrase fills in where none was written) and unique operation ids.
/// Responses every route can give (421 from the `Host` check) are added here too.
fn describe_responses(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            // Handler names repeat across resources (`list`, `create`); OpenAPI requires unique
            // operation ids, so each is qualified by its tag: `providers_list`.
            if let (Some(id), Some(tag)) = (
                &operation.operation_id,
                operation.tags.as_ref().and_then(|t| t.first()),
            ) {
                operation.operation_id = Some(format!("{tag}_{id}"));
            }
            // Every route sits behind the `Host` check.
            operation.responses.responses.insert(
                "421".to_owned(),
                utoipa::openapi::ResponseBuilder::new()
                    .description(
                        "the request's `Host` is not a name of this server (`unknown_host`; see http.public_hosts)",
                    )
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                "ErrorEnvelope",
                            )))
                            .build(),
                    )
                    .build()
                    .into(),
            );
            for (status, response) in operation.responses.responses.iter_mut() {
                if let utoipa::openapi::RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("Response")
                        .to_owned();
                }
            }
        }
    }
}

/// The whole application, as served.
pub fn app(state: AppState) -> Router {
    router(state.clone()).layer(middleware::from_fn_with_state(state, http::client_info))
}

/// Serves [`app`] on `listener` until `shutdown` completes (also used by tests).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let openapi = Arc::new(openapi);
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(move || async move { Json(openapi.as_ref().clone()) }),
        )
        .route("/metrics", get(metrics::render))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http::check_host,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(&state.db().pool).await {
        Ok(_) => {
            Json(json!({"status": "ready", "tools": state.runtime.tools().len()})).into_response()
        }
        Err(e) => {
            // The reason goes to the log; this route is public.
            tracing::warn!(error = %e, "readiness: the database does not answer");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database does not answer",
            )
            .into_response()
        }
    }
}

/// Gives every response an `x-request-id` (the client's, if it sent a sane one) and puts the
/// same id into error envelopes, so a user can quote it and an operator can find the request.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(crate::util::new_id);
    let response = next.run(request).await;
    let mut response = if response.status().is_client_error() || response.status().is_server_error()
    {
        fill_request_id(response, &id).await
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn fill_request_id(response: Response, id: &str) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal("error body unreadable").into_response();
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) if value.get("error").is_some_and(|e| e.is_object()) => {
            value["error"]["request_id"] = json!(id);
            Body::from(serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec()))
        }
        _ => Body::from(bytes),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// Runs the server until SIGINT or SIGTERM. `bundled` is a directory of `.kelp` packages
/// to install at start instead of the first-party plugins built into this binary.
pub async fn serve(config: Config, data_dir: PathBuf, bundled: Option<PathBuf>) -> Result<()> {
    let shutdown = shutdown_signal()?;
    let db = match &config.database_url {
        Some(url) => Db::connect(url).await?,
        None => Db::open_sqlite_in(&data_dir).await?,
    };
    let runtime = PluginRuntime::new(config.plugins.clone(), &data_dir, db)?;
    match &bundled {
        Some(dir) => install_bundled(&runtime, &read_bundled_dir(dir)?).await?,
        None => install_first_party(&runtime).await?,
    }
    for (id, e) in runtime.load_all().await? {
        tracing::warn!(instance = %id, "not serving plugin instance: {e:#}");
    }
    let host_id = crate::config::host_id(&data_dir)?;
    let state =
        AppState::with_agent(runtime, config.agent.clone(), host_id).with_http(&config.http)?;
    state.agent.recover().await?;
    let needs_setup = state.db().count_users().await? == 0;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let address = listener.local_addr()?;
    tracing::info!(address = %address, tools = state.runtime.tools().len(), "kelp is serving");
    if needs_setup {
        tracing::info!(
            "no users yet: create the first admin with `kelp user add NAME --admin` (the \
             password is read from standard input) or POST /api/auth/setup, then `kelp login \
             http://{address}`"
        );
    }
    serve_on(listener, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the first-party plugins built into this binary, on a database where no plugin
/// was ever installed (its plugin generation is still the initial one). Only then: a plugin
/// the operator removed must stay removed across restarts, and one they upgraded must not
/// be compared with this binary's copy.
async fn install_first_party(runtime: &PluginRuntime) -> Result<()> {
    if runtime.db().plugin_generation().await? != 1 {
        return Ok(());
    }
    let mut packages = Vec::new();
    for plugin in crate::embedded::FIRST_PARTY_PLUGINS {
        let bytes = plugin
            .package()
            .with_context(|| format!("packing the built-in plugin {}", plugin.dir))?;
        packages.push((format!("built-in {}", plugin.dir), bytes));
    }
    install_bundled(runtime, &packages).await
}

/// The `.kelp` packages in `dir`, by file name, each labelled with its path.
fn read_bundled_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading bundled plugins in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kelp"))
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((path.display().to_string(), bytes))
        })
        .collect()
}

/// Installs each package whose plugin is not installed yet, approving what each requests
/// (never private addresses). Operators can change grants afterwards.
async fn install_bundled(runtime: &PluginRuntime, packages: &[(String, Vec<u8>)]) -> Result<()> {
    for (label, bytes) in packages {
        let (review, _) = match runtime.review(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(package = %label, "skipping bundled package: {e:#}");
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
        let defaults = crate::plugins::with_config_defaults(&review.manifest, json!({}));
        let approval = Approval::everything_requested(&review.manifest.capabilities, &defaults);
        let installed = runtime
            .install(
                bytes,
                InstallOptions {
                    instance_id: None,
                    config: json!({}),
                    approval,
                    // Only ever a first install: installed plugins are skipped above.
                    approve_changes: false,
                },
            )
            .await
            .with_context(|| format!("installing bundled {label}"))?;
        tracing::info!(plugin = %installed.name, instance = %installed.instance_id, "installed bundled plugin");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that arrives while the server is still starting
/// is not lost to the default action (terminating without a graceful shutdown).
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}
