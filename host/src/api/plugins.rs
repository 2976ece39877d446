//! Plugins, their instances and the instances' secrets. Reading the list and details is open
//! to every signed-in user, who sees of each instance only what `/api/tools` shows them (its
//! id and tools, while it is enabled and loaded); installing, changing anything, and an
//! instance's configuration, approvals and load errors are for admins.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use crate::auth::{AdminUser, CurrentUser};
use crate::plugins::grants::{Approval, ApprovalNeeded};
use crate::plugins::{InstallOptions, Manifest};
use crate::store::plugins::{InstanceRow, PluginRow};

/// Largest package upload: the package reader's own cap on a whole archive.
const MAX_PACKAGE: usize = 64 * 1024 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins, install_plugin))
        .routes(routes!(get_plugin, remove_plugin))
        .routes(routes!(enable_plugin))
        .routes(routes!(disable_plugin))
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(get_instance, update_instance, delete_instance))
        .routes(routes!(enable_instance))
        .routes(routes!(disable_instance))
        .routes(routes!(put_secret, delete_secret))
        .layer(DefaultBodyLimit::max(MAX_PACKAGE))
}

/// An installed plugin in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginSummary {
    /// `namespace/name`.
    pub name: String,
    pub version: String,
    /// `tool`, `provider`, `channel` or `skill`.
    pub kind: String,
    pub description: String,
    /// sha256 of the installed package.
    pub digest: String,
    pub installed_at_ms: i64,
    /// Ids of its instances.
    pub instances: Vec<String>,
}

/// A plugin with its manifest, requested capabilities and instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginDetail {
    #[serde(flatten)]
    pub summary: PluginSummary,
    /// The manifest (`kelp.toml`) as JSON.
    pub manifest: Value,
    /// What the manifest asks for, one line each.
    pub requested: Vec<String>,
    pub instance_details: Vec<InstanceDetail>,
}

/// One instance of a plugin: everything to an admin; to other users only what `/api/tools`
/// shows them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum InstanceDetail {
    Admin(Instance),
    Member(InstanceTools),
}

/// An enabled, loaded instance as a user who is not an admin sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceTools {
    pub id: String,
    pub plugin: String,
    /// Tools it offers (`instance/tool` is how they are called).
    pub tools: Vec<String>,
}

/// A plugin instance: the plugin plus its configuration, secrets and grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct Instance {
    pub id: String,
    pub plugin: String,
    pub enabled: bool,
    /// `loaded`, `disabled` or `failed` (see `error`).
    pub status: String,
    pub error: Option<String>,
    pub config: Value,
    /// What the operator approved (`http:HOST`, `http-private:HOST`, `kv`, `workspace:MODE`).
    pub approved: Vec<String>,
    /// What is in effect: approved ∩ requested.
    pub granted: Vec<String>,
    /// Secrets the manifest declares and whether each has a value (values are never returned).
    pub secrets: Vec<SecretStatus>,
    /// Tools it offers (`instance/tool` is how they are called).
    pub tools: Vec<String>,
}

/// Whether a declared secret is set.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretStatus {
    pub name: String,
    pub set: bool,
}

/// What a user who is not an admin may see of an instance: its tools, if it is enabled and
/// loaded — exactly what `/api/tools` lists — and otherwise nothing.
fn member_view(state: &AppState, row: &InstanceRow) -> Option<InstanceTools> {
    let (_, enabled, _, tools) = state.runtime.instance_summary(&row.id)?;
    enabled.then(|| InstanceTools {
        id: row.id.clone(),
        plugin: row.plugin.clone(),
        tools: tools
            .into_iter()
            .map(|t| format!("{}/{}", row.id, t.name))
            .collect(),
    })
}

/// The instances `user` may see: every one for an admin, enabled and loaded ones otherwise.
fn visible_instances(
    state: &AppState,
    user: &CurrentUser,
    rows: Vec<InstanceRow>,
) -> Vec<InstanceRow> {
    if user.is_admin() {
        return rows;
    }
    rows.into_iter()
        .filter(|row| member_view(state, row).is_some())
        .collect()
}

fn summary(row: &PluginRow, manifest: &Manifest, instances: &[InstanceRow]) -> PluginSummary {
    PluginSummary {
        name: row.name.clone(),
        version: row.version.clone(),
        kind: row.kind.clone(),
        description: manifest.description.clone(),
        digest: row.digest.clone(),
        installed_at_ms: row.installed_at_ms,
        instances: instances
            .iter()
            .filter(|i| i.plugin == row.name)
            .map(|i| i.id.clone())
            .collect(),
    }
}

fn approval_items(approval: &Approval) -> Vec<String> {
    let mut items: Vec<String> = approval
        .http
        .iter()
        .map(|h| {
            format!(
                "{}:{}",
                if h.private { "http-private" } else { "http" },
                h.host
            )
        })
        .collect();
    if approval.kv {
        items.push("kv".into());
    }
    if approval.workspace != crate::plugins::WorkspaceAccess::None {
        items.push(format!("workspace:{}", approval.workspace));
    }
    items
}

async fn instance_view(
    state: &AppState,
    row: &InstanceRow,
    manifest: &Manifest,
) -> Result<Instance, ApiError> {
    let approval: Approval =
        serde_json::from_str(&row.approval_json).map_err(ApiError::internal)?;
    let set: Vec<String> = state
        .db()
        .sealed_secrets(&row.id)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let summary = state.runtime.instance_summary(&row.id);
    let error = state.runtime.load_error(&row.id);
    let (granted, tools) = summary.map(|(_, _, g, t)| (g, t)).unwrap_or_default();
    Ok(Instance {
        id: row.id.clone(),
        plugin: row.plugin.clone(),
        enabled: row.enabled,
        status: if error.is_some() {
            "failed"
        } else if row.enabled {
            "loaded"
        } else {
            "disabled"
        }
        .into(),
        error,
        config: serde_json::from_str(&row.config_json).map_err(ApiError::internal)?,
        approved: approval_items(&approval),
        granted,
        secrets: manifest
            .secret_names()
            .into_iter()
            .map(|name| SecretStatus {
                set: set.iter().any(|s| s == name),
                name: name.to_owned(),
            })
            .collect(),
        tools: tools
            .into_iter()
            .map(|t| format!("{}/{}", row.id, t.name))
            .collect(),
    })
}

async fn load_plugin(state: &AppState, name: &str) -> Result<(PluginRow, Manifest), ApiError> {
    let row = state
        .db()
        .get_plugin(name)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin"))?;
    let manifest = Manifest::parse(&row.manifest_toml).map_err(ApiError::internal)?;
    Ok((row, manifest))
}

/// Installed plugins.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins", params(PageQuery),
    responses((status = 200, body = Page<PluginSummary>), (status = 401, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn list_plugins(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<PluginSummary>>, ApiError> {
    state.runtime.catch_up().await?;
    let rows = state.db().list_plugins().await?;
    let instances = visible_instances(&state, &user, state.db().list_instances().await?);
    let total = rows.len() as i64;
    let mut items = Vec::new();
    for row in page.window(&rows) {
        let manifest = Manifest::parse(&row.manifest_toml).map_err(ApiError::internal)?;
        items.push(summary(row, &manifest, &instances));
    }
    Ok(axum::Json(page.page(items, total)))
}

/// A plugin: manifest, requested capabilities and its instances — for an admin each with its
/// status, configuration and approvals; for other users the enabled instances' tools only.
#[utoipa::path(get, path = "/api/plugins/{namespace}/{name}", tag = "plugins",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PluginDetail), (status = 404, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_plugin(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<axum::Json<PluginDetail>, ApiError> {
    state.runtime.catch_up().await?;
    let (row, manifest) = load_plugin(&state, &format!("{namespace}/{name}")).await?;
    let instances: Vec<InstanceRow> = state
        .db()
        .list_instances()
        .await?
        .into_iter()
        .filter(|i| i.plugin == row.name)
        .collect();
    let instances = visible_instances(&state, &user, instances);
    let mut details = Vec::new();
    for i in &instances {
        details.push(if user.is_admin() {
            InstanceDetail::Admin(instance_view(&state, i, &manifest).await?)
        } else {
            match member_view(&state, i) {
                Some(view) => InstanceDetail::Member(view),
                None => continue,
            }
        });
    }
    let review = state.runtime.review_manifest(&manifest);
    Ok(axum::Json(PluginDetail {
        summary: summary(&row, &manifest, &instances),
        manifest: serde_json::to_value(&manifest).map_err(ApiError::internal)?,
        requested: review,
        instance_details: details,
    }))
}

/// Options of an install.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstallQuery {
    /// `requested` approves everything the manifest asks for (never private addresses) — on
    /// an upgrade, what the new version asks beyond the installed one, for every instance;
    /// `none` (default) approves nothing beyond `grants`, and refuses an upgrade that asks for
    /// more (409 `approval_required`).
    pub approve: Option<String>,
    /// Comma-separated grants: `http:HOST`, `http-private:HOST`, `kv`, `workspace:read|write`.
    pub grants: Option<String>,
    /// Id of the first instance (default: the plugin's short name).
    pub instance: Option<String>,
    /// Configuration of the first instance, as JSON text (validated against the plugin's
    /// `[config]` schema).
    pub config: Option<String>,
}

/// Result of an install.
#[derive(Debug, Serialize, ToSchema)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub instance: String,
    pub granted: Vec<String>,
    pub tools: Vec<String>,
}

/// Installs (or upgrades) a plugin from an uploaded `.kelp` package (the request body,
/// `application/octet-stream`). The package is checked, compiled and test-instantiated
/// before anything is stored. An upgrade whose new version asks for capabilities the
/// installed one did not, or sends a secret elsewhere, needs `approve=requested`; without it
/// nothing changes and the answer is 409 `approval_required`, listing what is new.
#[utoipa::path(post, path = "/api/plugins", tag = "plugins", params(InstallQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a .kelp package"),
    responses((status = 201, body = Installed), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 409, description = "an upgrade asks for capabilities not approved (`approval_required`)", body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn install_plugin(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<InstallQuery>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Installed>), ApiError> {
    let (review, _) = state
        .runtime
        .review(&body)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let config: Value = match &query.config {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("config: {e}")))?
        }
        None => serde_json::json!({}),
    };
    let approve_changes = query.approve.as_deref() == Some("requested");
    let mut approval = match query.approve.as_deref() {
        None | Some("none") => Approval::default(),
        Some("requested") => Approval::everything_requested(&review.manifest.capabilities, &config),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "approve must be `requested` or `none`, not `{other}`"
            )));
        }
    };
    for item in query
        .grants
        .iter()
        .flat_map(|g| g.split(','))
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        approval
            .add_item(item)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let installed = state
        .runtime
        .install(
            &body,
            InstallOptions {
                instance_id: query.instance,
                config,
                approval,
                approve_changes,
            },
        )
        .await
        .map_err(|e| match e.downcast_ref::<ApprovalNeeded>() {
            Some(needed) => ApiError::new(
                StatusCode::CONFLICT,
                "approval_required",
                needed.to_string(),
            ),
            None => ApiError::bad_request(format!("{e:#}")),
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Installed {
            tools: installed
                .tools
                .iter()
                .map(|t| format!("{}/{}", installed.instance_id, t.name))
                .collect(),
            name: installed.name,
            version: installed.version,
            instance: installed.instance_id,
            granted: installed.grants,
        }),
    ))
}

/// Removes a plugin with its instances, their secrets and data.
#[utoipa::path(delete, path = "/api/plugins/{namespace}/{name}", tag = "plugins",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn remove_plugin(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.runtime.remove(&format!("{namespace}/{name}")).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("plugin"))
    }
}

async fn set_plugin_enabled(
    state: &AppState,
    name: &str,
    enabled: bool,
) -> Result<StatusCode, ApiError> {
    load_plugin(state, name).await?;
    for instance in state
        .db()
        .list_instances()
        .await?
        .into_iter()
        .filter(|i| i.plugin == name)
    {
        // A failed load shows in the instance's status, not as a failed request.
        let _ = state.runtime.set_enabled(&instance.id, enabled).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Enables every instance of a plugin.
#[utoipa::path(post, path = "/api/plugins/{namespace}/{name}/enable", tag = "plugins",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn enable_plugin(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    set_plugin_enabled(&state, &format!("{namespace}/{name}"), true).await
}

/// Disables every instance of a plugin (its tools disappear; nothing is deleted).
#[utoipa::path(post, path = "/api/plugins/{namespace}/{name}/disable", tag = "plugins",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn disable_plugin(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    set_plugin_enabled(&state, &format!("{namespace}/{name}"), false).await
}

/// Every plugin instance.
#[utoipa::path(get, path = "/api/plugin-instances", tag = "plugins", params(PageQuery),
    responses((status = 200, body = Page<Instance>), (status = 403, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn list_instances(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Instance>>, ApiError> {
    state.runtime.catch_up().await?;
    let rows = state.db().list_instances().await?;
    let total = rows.len() as i64;
    let mut items = Vec::new();
    for row in page.window(&rows) {
        let (_, manifest) = load_plugin(&state, &row.plugin).await?;
        items.push(instance_view(&state, row, &manifest).await?);
    }
    Ok(axum::Json(page.page(items, total)))
}

/// Body of instance creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// 1–64 characters of a-z, 0-9, `-`, `_`.
    pub id: String,
    /// The installed plugin, `namespace/name`.
    pub plugin: String,
    /// Validated against the plugin's `[config]` schema.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Approved grants (`http:HOST`, `http-private:HOST`, `kv`, `workspace:read|write`).
    #[serde(default)]
    pub grants: Vec<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn approval_from(grants: &[String]) -> Result<Approval, ApiError> {
    let mut approval = Approval::default();
    for item in grants {
        approval
            .add_item(item)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(approval)
}

async fn instance_response(state: &AppState, id: &str) -> Result<axum::Json<Instance>, ApiError> {
    state.runtime.catch_up().await?;
    let row = state
        .db()
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin instance"))?;
    let (_, manifest) = load_plugin(state, &row.plugin).await?;
    Ok(axum::Json(instance_view(state, &row, &manifest).await?))
}

/// Creates another instance of an installed plugin (another endpoint, another bot, …).
#[utoipa::path(post, path = "/api/plugin-instances", tag = "plugins", request_body = NewInstance,
    responses((status = 201, body = Instance), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_instance(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<NewInstance>,
) -> Result<(StatusCode, axum::Json<Instance>), ApiError> {
    load_plugin(&state, &body.plugin).await?;
    if state.db().get_instance(&body.id).await?.is_some() {
        return Err(ApiError::conflict(format!("instance `{}` exists", body.id)));
    }
    let approval = approval_from(&body.grants)?;
    state
        .runtime
        .create_instance(&body.plugin, &body.id, body.config, approval)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    Ok((
        StatusCode::CREATED,
        instance_response(&state, &body.id).await?,
    ))
}

/// A plugin instance.
#[utoipa::path(get, path = "/api/plugin-instances/{id}", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_instance(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Instance>, ApiError> {
    instance_response(&state, &id).await
}

/// Fields of an instance that can change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdate {
    pub config: Option<Value>,
    pub grants: Option<Vec<String>>,
}

/// Changes an instance's configuration and/or grants; it is reloaded with them.
#[utoipa::path(patch, path = "/api/plugin-instances/{id}", tag = "plugins", params(("id" = String, Path)),
    request_body = InstanceUpdate,
    responses((status = 200, body = Instance), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_instance(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<InstanceUpdate>,
) -> Result<axum::Json<Instance>, ApiError> {
    let row = state
        .db()
        .get_instance(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin instance"))?;
    let config = match body.config {
        Some(c) => c,
        None => serde_json::from_str(&row.config_json).map_err(ApiError::internal)?,
    };
    let approval = match body.grants {
        Some(g) => approval_from(&g)?,
        None => serde_json::from_str(&row.approval_json).map_err(ApiError::internal)?,
    };
    state
        .runtime
        .update_instance(&id, config, approval)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    instance_response(&state, &id).await
}

/// Deletes an instance with its secrets and kv data.
#[utoipa::path(delete, path = "/api/plugin-instances/{id}", tag = "plugins", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_instance(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.runtime.delete_instance(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("plugin instance"))
    }
}

async fn set_instance_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> Result<axum::Json<Instance>, ApiError> {
    if state.db().get_instance(id).await?.is_none() {
        return Err(ApiError::not_found("plugin instance"));
    }
    // A failed load is reported in the instance's status, not as a failed request.
    let _ = state.runtime.set_enabled(id, enabled).await;
    instance_response(state, id).await
}

/// Enables an instance.
#[utoipa::path(post, path = "/api/plugin-instances/{id}/enable", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn enable_instance(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Instance>, ApiError> {
    set_instance_enabled(&state, &id, true).await
}

/// Disables an instance.
#[utoipa::path(post, path = "/api/plugin-instances/{id}/disable", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn disable_instance(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Instance>, ApiError> {
    set_instance_enabled(&state, &id, false).await
}

/// A secret's value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    pub value: String,
}

/// Sets a secret the manifest declares. Stored encrypted; never returned.
#[utoipa::path(put, path = "/api/plugin-instances/{id}/secrets/{name}", tag = "plugins",
    params(("id" = String, Path), ("name" = String, Path)), request_body = SecretValue,
    responses((status = 204), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn put_secret(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((id, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<SecretValue>,
) -> Result<StatusCode, ApiError> {
    if state.db().get_instance(&id).await?.is_none() {
        return Err(ApiError::not_found("plugin instance"));
    }
    state
        .runtime
        .set_secret(&id, &name, &body.value)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a secret.
#[utoipa::path(delete, path = "/api/plugin-instances/{id}/secrets/{name}", tag = "plugins",
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_secret(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.db().get_instance(&id).await?.is_none() {
        return Err(ApiError::not_found("plugin instance"));
    }
    if state.runtime.delete_secret(&id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("secret"))
    }
}
