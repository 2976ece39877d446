//! LLM provider credentials, in the shape the setup pages use: each provider-kind plugin
//! instance, whether it is configured, and one call to set its API key and base URL.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use crate::auth::{AdminUser, CurrentUser};
use crate::llm::{ChatRequest, Message, ModelInfo, Role, StreamEvent};
use crate::plugins::grants::{Approval, ApprovedHost};
use crate::plugins::{Manifest, PluginKind, SecretUpdate, SecretValues};
use crate::store::plugins::InstanceRow;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put_auth, delete_auth))
        .routes(routes!(models))
        .routes(routes!(test))
}

/// A provider instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provider {
    /// The plugin instance id (what an agent's `provider.plugin` names).
    pub id: String,
    pub plugin: String,
    pub description: String,
    /// Every secret the plugin declares has a value.
    pub configured: bool,
    /// Where its requests go. Admins only: a member picks a provider by id, and the address
    /// of the operator's model server (a LAN host, a private proxy) is the operator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// An instance's `base_url`, its manifest's default filled in.
fn base_url_of(instance: &InstanceRow, manifest: &Manifest) -> Result<Option<String>, ApiError> {
    let config: serde_json::Value =
        serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?;
    let config = crate::plugins::with_config_defaults(manifest, config);
    Ok(config
        .get("base_url")
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

/// What `admin` (or a member, without the base URL) sees of a provider instance.
async fn provider_view(
    state: &AppState,
    instance: InstanceRow,
    manifest: &Manifest,
    admin: bool,
) -> Result<Provider, ApiError> {
    let set: Vec<String> = state
        .db()
        .sealed_secrets(&instance.id)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    Ok(Provider {
        configured: manifest
            .capabilities
            .secrets
            .iter()
            .all(|s| set.contains(&s.name)),
        base_url: if admin {
            base_url_of(&instance, manifest)?
        } else {
            None
        },
        id: instance.id,
        plugin: instance.plugin,
        description: manifest.description.clone(),
    })
}

/// Provider instances and whether each is configured; admins also see each one's
/// `base_url`.
#[utoipa::path(get, path = "/api/providers", tag = "providers", params(PageQuery),
    responses((status = 200, body = Page<Provider>), (status = 401, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Provider>>, ApiError> {
    let mut providers = Vec::new();
    for instance in state.db().list_instances().await? {
        let Some(plugin) = state.db().get_plugin(&instance.plugin).await? else {
            continue;
        };
        let manifest = Manifest::parse(&plugin.manifest_toml).map_err(ApiError::internal)?;
        if manifest.kind != PluginKind::Provider {
            continue;
        }
        providers.push(provider_view(&state, instance, &manifest, user.is_admin()).await?);
    }
    let total = providers.len() as i64;
    let items = providers
        .into_iter()
        .skip(page.offset() as usize)
        .take(page.limit() as usize)
        .collect();
    Ok(axum::Json(page.page(items, total)))
}

/// Credentials of a provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderAuth {
    /// Stored encrypted as the plugin's declared secret; never returned.
    pub api_key: Option<String>,
    /// Where the vendor's API is (an OpenAI-compatible server, a local Ollama, …).
    pub base_url: Option<String>,
}

/// True for addresses that need the explicit private approval: loopback, private and
/// link-local IP literals and `localhost`.
fn is_private_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        url::Host::Ipv6(ip) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// A provider after a change of its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderAuthChange {
    #[serde(flatten)]
    pub provider: Provider,
    /// Stored keys this change removed: a `base_url` on another origin (scheme, host or port)
    /// given without a new `api_key` drops the stored one, which was set for the old address.
    pub removed_secrets: Vec<String>,
}

/// Sets a provider's API key and/or base URL, in one change every host sees whole. Setting
/// the base URL also approves its host for the instance — as a private host when it is a
/// loopback or private address, which is the one explicit step a local model server needs.
/// A base URL on another origin (scheme, host or port) without a new `api_key` removes the
/// stored key: it was given for the old address and is never sent to the new one.
#[utoipa::path(put, path = "/api/providers/{id}/auth", tag = "providers", params(("id" = String, Path)),
    request_body = ProviderAuth,
    responses((status = 200, body = ProviderAuthChange), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn put_auth(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProviderAuth>,
) -> Result<axum::Json<ProviderAuthChange>, ApiError> {
    let (instance, manifest) = provider_instance(&state, &id).await?;
    if body.api_key.is_none() && body.base_url.is_none() {
        return Err(ApiError::bad_request("give api_key, base_url or both"));
    }
    let mut key = Vec::new();
    if let Some(value) = &body.api_key {
        let Some(secret) = manifest.capabilities.secrets.first() else {
            return Err(ApiError::bad_request(format!(
                "{} takes no API key",
                manifest.name
            )));
        };
        key.push((secret.name.clone(), value.clone()));
    }
    let (config, approval, moved) = match &body.base_url {
        Some(base_url) => {
            let (config, approval) = with_base_url(&instance, base_url)?;
            let own = base_url_of(&instance, &manifest)?;
            let moved = !own.is_some_and(|own| same_origin(&own, base_url));
            (config, approval, moved)
        }
        None => (
            serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?,
            serde_json::from_str(&instance.approval_json).map_err(ApiError::internal)?,
            false,
        ),
    };
    // The same rule as `/api/providers/test`: a stored key goes only to the address it was
    // set for.
    let secrets = if moved {
        SecretUpdate::Replace(&key)
    } else {
        SecretUpdate::Set(&key)
    };
    let removed_secrets = state
        .runtime
        .update_instance_with(&id, config, approval, secrets)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let (instance, manifest) = provider_instance(&state, &id).await?;
    Ok(axum::Json(ProviderAuthChange {
        provider: provider_view(&state, instance, &manifest, true).await?,
        removed_secrets,
    }))
}

async fn provider_instance(
    state: &AppState,
    id: &str,
) -> Result<(InstanceRow, Manifest), ApiError> {
    let instance = state
        .db()
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))?;
    let plugin = state
        .db()
        .get_plugin(&instance.plugin)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))?;
    let manifest = Manifest::parse(&plugin.manifest_toml).map_err(ApiError::internal)?;
    if manifest.kind != PluginKind::Provider {
        return Err(ApiError::not_found("provider"));
    }
    Ok((instance, manifest))
}

/// The instance's config and approval with `base_url` set and its host approved.
fn with_base_url(
    instance: &InstanceRow,
    base_url: &str,
) -> Result<(serde_json::Value, Approval), ApiError> {
    let url =
        url::Url::parse(base_url).map_err(|e| ApiError::bad_request(format!("base_url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(
            "base_url must be http:// or https://",
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| ApiError::bad_request("base_url has no host"))?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let mut config: serde_json::Value =
        serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?;
    config["base_url"] = serde_json::json!(base_url);
    let mut approval: Approval =
        serde_json::from_str(&instance.approval_json).map_err(ApiError::internal)?;
    approval.http.retain(|h| h.host != authority);
    approval.http.push(ApprovedHost {
        host: authority,
        private: is_private_host(&host),
    });
    Ok((config, approval))
}

/// Whether two URLs have the same scheme, host and port (default ports filled in).
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin() && a.origin().is_tuple(),
        _ => false,
    }
}

/// The models a provider offers: what its plugin lists plus the instance's `models` config.
#[utoipa::path(get, path = "/api/providers/{id}/models", tag = "providers", params(("id" = String, Path)),
    responses((status = 200, body = Vec<ModelInfo>), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`provider_unavailable`: the instance is disabled or not loaded", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn models(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<ModelInfo>>, ApiError> {
    provider_instance(&state, &id).await?;
    state.runtime.catch_up().await?;
    state
        .runtime
        .provider_models(&id)
        .map(axum::Json)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "provider_unavailable", e.message))
}

/// Credentials and a model to try.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderTest {
    /// The provider instance id.
    pub provider: String,
    pub model: String,
    /// Tried instead of the stored key; not saved.
    pub api_key: Option<String>,
    /// Tried instead of the stored base URL; not saved.
    pub base_url: Option<String>,
}

/// The result of a test.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderTestResult {
    pub ok: bool,
    /// What the model answered (a few tokens).
    pub text: String,
    /// `{code, message}` when `ok` is false.
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    pub latency_ms: u64,
}

/// Checks a key and model before saving them: sends a tiny request ("Reply with OK", at most
/// 16 output tokens) through the provider with the given credentials, stores nothing, and
/// says whether it worked and, if not, why (bad key, unknown model, unreachable host, …).
/// The stored key is used only against the instance's own base URL (same scheme, host and
/// port): a test of another `base_url` sends the `api_key` given, or none.
#[utoipa::path(post, path = "/api/providers/test", tag = "providers", request_body = ProviderTest,
    responses((status = 200, body = ProviderTestResult), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn test(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<ProviderTest>,
) -> Result<axum::Json<ProviderTestResult>, ApiError> {
    let (instance, manifest) = provider_instance(&state, &body.provider).await?;
    // The stored key belongs to the instance's own base URL: tried against any other address
    // it would hand the key to whoever runs that address.
    let stored_key_fits = match &body.base_url {
        None => true,
        Some(url) => base_url_of(&instance, &manifest)?.is_some_and(|own| same_origin(&own, url)),
    };
    let (config, approval) = match &body.base_url {
        Some(url) => with_base_url(&instance, url)?,
        None => (
            serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?,
            serde_json::from_str(&instance.approval_json).map_err(ApiError::internal)?,
        ),
    };
    let mut secrets = Vec::new();
    if let Some(key) = &body.api_key {
        let Some(secret) = manifest.capabilities.secrets.first() else {
            return Err(ApiError::bad_request(format!(
                "{} takes no API key",
                manifest.name
            )));
        };
        secrets.push((secret.name.clone(), key.clone()));
    }
    let request = ChatRequest {
        model: body.model.clone(),
        messages: vec![Message::text(Role::User, "Reply with OK.")],
        tools: Vec::new(),
        max_tokens: Some(16),
        temperature: None,
    };
    let started = std::time::Instant::now();
    let idle = std::time::Duration::from_secs(30);
    let mut text = String::new();
    let result = async {
        let secrets = if stored_key_fits {
            SecretValues::Stored(&secrets)
        } else {
            SecretValues::Only(&secrets)
        };
        let mut stream = state
            .runtime
            .try_provider(&body.provider, config, &approval, secrets, &request, idle)
            .await?;
        while let Some(events) = stream.next().await? {
            for e in events {
                if let StreamEvent::TextDelta(t) = e {
                    text.push_str(&t);
                }
            }
        }
        Ok::<(), crate::llm::ProviderFailure>(())
    }
    .await;
    let latency_ms = started.elapsed().as_millis() as u64;
    Ok(axum::Json(match result {
        Ok(()) => ProviderTestResult {
            ok: true,
            text,
            error: None,
            latency_ms,
        },
        Err(f) => ProviderTestResult {
            ok: false,
            text,
            error: Some(serde_json::json!({"code": f.code(), "message": f.message})),
            latency_ms,
        },
    }))
}

/// Removes a provider's stored API key(s).
#[utoipa::path(delete, path = "/api/providers/{id}/auth", tag = "providers", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_auth(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let instance = state
        .db()
        .get_instance(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))?;
    for (name, _) in state.db().sealed_secrets(&instance.id).await? {
        state.runtime.delete_secret(&id, &name).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
