//! The HTTP server of `kelp serve`: one router per resource (one file each), state passed
//! with `State<AppState>`, auth by extractors (`CurrentUser`, `AdminUser`), errors in the
//! envelope of DESIGN.md, and an OpenAPI 3.1 document generated from the handlers.

mod agents;
pub mod auth;
mod channels;
pub mod common;
mod costs;
pub mod hooks;
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
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

pub use common::{ApiError, ApiJson, Page, PageQuery};

use crate::agent::{AgentHost, AgentSettings};
use crate::auth::streams::StreamRegistry;
use crate::channels::{ChannelManager, ChannelSettings};
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
    /// This host's share of the chat channels.
    pub channels: Arc<ChannelManager>,
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
        let agent = Arc::new(AgentHost::new(runtime.clone(), settings, host_id.clone()));
        AppState {
            channels: ChannelManager::new(
                runtime.clone(),
                agent.clone(),
                ChannelSettings::default(),
                host_id,
            ),
            agent,
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

    /// The same state with channels run under `settings`.
    pub fn with_channels(mut self, settings: ChannelSettings, host_id: String) -> AppState {
        self.channels =
            ChannelManager::new(self.runtime.clone(), self.agent.clone(), settings, host_id);
        self
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
        .merge(hooks::routes())
        .merge(channels::routes())
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
            add_error(
                operation,
                "421",
                "the request's `Host` is not a name of this server (`unknown_host`; see http.public_hosts)",
            );
            // What the shared extractors refuse, wherever they are used.
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let has = |place: ParameterIn| {
                parameters
                    .iter()
                    .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
            };
            let (query, path) = (has(ParameterIn::Query), has(ParameterIn::Path));
            let json_body = operation.request_body.as_ref().is_some_and(
                |body| matches!(body, RefOr::T(b) if b.content.contains_key("application/json")),
            );
            if query || path || json_body {
                let mut what = Vec::new();
                if json_body {
                    what.push("the body is not JSON (`invalid_json`)");
                }
                if query {
                    what.push("a query parameter is malformed or out of range (`invalid_query`)");
                }
                if path {
                    what.push("a path segment is not valid UTF-8 (`invalid_request`)");
                }
                add_error(operation, "400", &what.join("; "));
            }
            if json_body {
                add_error(
                    operation,
                    "413",
                    "the body is larger than the route takes (`payload_too_large`)",
                );
                add_error(
                    operation,
                    "415",
                    "the body is not sent as `application/json` (`unsupported_media_type`)",
                );
                add_error(
                    operation,
                    "422",
                    "the body is JSON but not of the documented shape: a missing or unknown field, a wrong type (`invalid_fields`)",
                );
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add_error(
                    operation,
                    "401",
                    "not signed in, or the credential is no longer valid (`unauthorized`)",
                );
            }
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

/// The served document: what the annotations say, plus the constraints they cannot express,
/// so that the document states every rule the handlers enforce.
pub fn document(openapi: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(openapi).expect("the document serializes");
    let schemas = &mut doc["components"]["schemas"];
    // An agent names each tool and skill once.
    for body in ["NewAgentBody", "AgentUpdate"] {
        for list in ["tools", "skills"] {
            if let Some(property) = schemas[body]["properties"][list].as_object_mut() {
                property.insert("uniqueItems".into(), Value::Bool(true));
            }
        }
    }
    // Alert thresholds are fractions of a limit (`BudgetSettings::validate`).
    if let Some(thresholds) =
        schemas["BudgetSettings"]["properties"]["alert_thresholds"].as_object_mut()
    {
        thresholds.insert(
            "items".into(),
            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
        );
    }
    // Budget limits are decimal strings; a number is still read (budgets stored before money
    // became strings are numbers), so the document says both.
    for limit in ["daily_limit_usd", "monthly_limit_usd"] {
        if let Some(property) = schemas["BudgetSettings"]["properties"][limit].as_object_mut() {
            let description = property.get("description").cloned();
            *property = serde_json::Map::new();
            property.insert(
                "anyOf".into(),
                json!([
                    {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,6})?$"},
                    {"type": "number", "minimum": 0, "exclusiveMaximum": 9e12, "deprecated": true},
                    {"type": "null"}
                ]),
            );
            if let Some(description) = description {
                property.insert("description".into(), description);
            }
        }
    }
    // A provider change gives a key, an address (`null`: the vendor's default) or both, and
    // the address is an absolute http(s) URL with a host (`providers::with_base_url`).
    if let Some(auth) = schemas["ProviderAuth"].as_object_mut() {
        auth.insert(
            "anyOf".into(),
            json!([
                {"required": ["api_key"], "properties": {"api_key": {"type": "string"}}},
                {"required": ["base_url"]}
            ]),
        );
    }
    for schema in ["ProviderAuth", "ProviderTest"] {
        if let Some(url) = schemas[schema]["properties"]["base_url"].as_object_mut() {
            url.insert(
                "pattern".into(),
                json!(r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s@]+"),
            );
        }
    }
    // `/v1/chat/completions` answers the last user message that has text (`openai::chat`).
    if let Some(messages) =
        schemas["ChatCompletionRequest"]["properties"]["messages"].as_object_mut()
    {
        messages.insert(
            "contains".into(),
            json!({
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "user"},
                    "content": {"anyOf": [
                        {"type": "string", "minLength": 1},
                        {"type": "array", "contains": {
                            "type": "object",
                            "required": ["text"],
                            "properties": {"text": {"type": "string", "minLength": 1}}
                        }}
                    ]}
                }
            }),
        );
    }
    // Settings change by merge patch: the settings schema, where `null` resets a key.
    let mut patch = crate::store::settings::schema().clone();
    patch["properties"]["budget"] = json!({"$ref": "#/components/schemas/BudgetSettings"});
    if let Some(object) = patch.as_object_mut() {
        object.remove("$schema");
        object.insert(
            "description".into(),
            json!("A JSON merge patch of the settings: the keys given are set; `null` resets one to its default."),
        );
    }
    if let Some(properties) = patch["properties"].as_object_mut() {
        for property in properties.values_mut() {
            let mut property_schema = property.take();
            let description = property_schema
                .as_object_mut()
                .and_then(|o| o.remove("description"));
            *property = json!({"anyOf": [property_schema, {"type": "null"}]});
            if let Some(description) = description {
                property["description"] = description;
            }
        }
    }
    schemas["SettingsPatch"] = patch;
    if let Some(content) =
        doc["paths"]["/api/settings"]["patch"]["requestBody"]["content"]["application/json"]
            .as_object_mut()
    {
        content.insert(
            "schema".into(),
            json!({"$ref": "#/components/schemas/SettingsPatch"}),
        );
    }
    doc
}

/// Documents an error answer of `operation`, unless its handler already does.
fn add_error(operation: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            utoipa::openapi::ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                            "ErrorEnvelope",
                        )))
                        .build(),
                )
                .build()
                .into()
        });
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
    let openapi = Arc::new(document(&openapi));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(move || async move { Json(Value::clone(&openapi)) }),
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
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal("error body unreadable").into_response();
    };
    if !is_json {
        // axum's own rejections (a path segment that is not UTF-8, a GET to the WebSocket
        // route without the upgrade headers, a method the route does not take) answer in
        // plain text; every error of this API is the envelope, so they are wrapped in one.
        let body = json!({"error": {
            "code": plain_error_code(parts.status),
            "message": String::from_utf8_lossy(&bytes).trim(),
            "request_id": id,
        }});
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(body.to_string()));
    }
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

/// The envelope code for an error that came without one.
fn plain_error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_fields",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// How often the allocator is asked to hand freed memory back: each burst of work (a run, a
/// batch of channel messages) frees memory glibc would otherwise keep in its per-thread
/// arenas for good. A trim of Kelp's small heaps takes well under a millisecond.
const TRIM_INTERVAL: Duration = Duration::from_secs(30);

async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(crate::util::release_free_memory).await;
    }
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
    // The compiler runs in child processes: its code and memory are never this server's.
    match std::env::current_exe() {
        Ok(exe) => runtime.compile_in_child_processes(exe),
        Err(e) => tracing::warn!("compiling plugins in this process: {e}"),
    }
    match &bundled {
        Some(dir) => install_bundled(&runtime, &read_bundled_dir(dir)?).await?,
        None => install_first_party(&runtime).await?,
    }
    for (id, e) in runtime.load_all().await? {
        tracing::warn!(instance = %id, "not serving plugin instance: {e:#}");
    }
    let host_id = crate::config::host_id(&data_dir)?;
    let state = AppState::with_agent(runtime, config.agent.clone(), host_id.clone())
        .with_http(&config.http)?
        .with_channels(config.channels.clone(), host_id);
    state.agent.recover().await?;
    // Channels that were running start again; each polls only on the host holding its lease.
    let channels = state.channels.resume().await?;
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
    if channels > 0 {
        tracing::info!(channels, "resuming chat channels");
    }
    // Start-up is over: what it allocated and the code only it ran need not stay resident.
    crate::util::release_free_memory();
    let code_kib = crate::util::release_start_up_code();
    tracing::debug!(code_kib, "released start-up code pages");
    let _trimmer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(trim_periodically()));
    let manager = state.channels.clone();
    let served = serve_on(listener, state, shutdown).await;
    // Their leases go with them, so another host takes the channels over at once.
    manager.shutdown().await;
    served?;
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
        if review.manifest.kind == crate::plugins::PluginKind::Channel {
            // A channel's instance is a bot: its token, its agent and who may talk to it are
            // the operator's to give when adding the channel, so nothing is made at start.
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
