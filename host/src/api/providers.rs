//! LLM provider credentials, in the shape the setup pages use: each provider-kind plugin
//! instance, what it needs before it can answer, one call to set its API key and base URL,
//! one to return it to the vendor's defaults, and its models.

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
use crate::net::is_private_url_host;
use crate::plugins::grants::{Approval, ApprovedHost};
use crate::plugins::{Manifest, PluginKind, Probe, SecretUpdate, SecretValues};
use crate::store::plugins::InstanceRow;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put_auth, delete_auth))
        .routes(routes!(models))
        .routes(routes!(test))
}

/// A provider instance and what stands between it and a working model call.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provider {
    /// The plugin instance id (what an agent's `provider.plugin` names).
    pub id: String,
    pub plugin: String,
    pub description: String,
    /// Ready as far as Kelp can tell: its address is approved, its server answered (or was
    /// not asked), and its key is set or not needed. When false, `fix` says what to do.
    pub configured: bool,
    pub key: KeyState,
    /// The instance may reach its base URL: the address is approved for it (as a private
    /// host when it is a loopback, private or link-local address).
    pub address_approved: bool,
    /// Whether its server answered a request for its model list just now (any HTTP answer
    /// counts; a refused key shows in `key`). `null`: not asked — in the answer to a change,
    /// when the address is not approved (Kelp does not connect to an address nobody
    /// approved), the instance is not loaded, or its plugin names no such request.
    pub reachable: Option<bool>,
    /// When `configured` is false: what is wrong and the one step that fixes it. Admins get
    /// the call to make; members, who cannot change providers, whom to ask.
    pub fix: Option<String>,
    /// Where its requests go: the effective base URL, the plugin's default filled in. Admins
    /// only: a member picks a provider by id, and the address of the operator's model
    /// server (a LAN host, a private proxy) is the operator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The plugin's default base URL (the vendor's own API), which `"base_url": null` or
    /// `DELETE …/auth` returns to. Admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_base_url: Option<String>,
}

/// Whether a provider's API key is in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// A key is stored (and the server, if asked, did not refuse it).
    Set,
    /// A key is stored and the server refused it (HTTP 401 or 403).
    Refused,
    /// No key is stored and one is needed: the server refused the request without one, or
    /// it is not on a local address.
    Missing,
    /// No key is stored and none is needed: the plugin takes none, the server answered
    /// without one, or it is on a local address (local servers seldom want one).
    NotNeeded,
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

/// The manifest's default `base_url`: the vendor's own API.
fn default_base_url(manifest: &Manifest) -> Option<String> {
    crate::plugins::with_config_defaults(manifest, serde_json::json!({}))
        .get("base_url")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// What `admin` (or a member, without addresses) sees of a provider instance. With `ask`,
/// its server is asked for its model list (a few seconds at most) to tell whether it
/// answers; without, `reachable` is `null`.
async fn provider_view(
    state: &AppState,
    instance: InstanceRow,
    manifest: &Manifest,
    admin: bool,
    ask: bool,
) -> Result<Provider, ApiError> {
    let key_stored = !state.db().sealed_secrets(&instance.id).await?.is_empty();
    let takes_key = !manifest.capabilities.secrets.is_empty();
    let id = instance.id.clone();
    let base_url = base_url_of(&instance, manifest)?;
    let address = state.runtime.provider_address(&id);
    let loaded = address.is_some() && instance.enabled;
    let approved = address.as_ref().is_some_and(|a| a.approved);
    let local = address.as_ref().is_some_and(|a| a.local);
    let probe = if ask && loaded && approved {
        state.runtime.probe_provider(&id).await
    } else {
        Probe::NotChecked
    };
    let refused = matches!(probe, Probe::Answered(401 | 403));
    let key = match (takes_key, key_stored) {
        (false, _) => KeyState::NotNeeded,
        (true, true) if refused => KeyState::Refused,
        (true, true) => KeyState::Set,
        (true, false) if refused => KeyState::Missing,
        (true, false) if matches!(probe, Probe::Answered(200..=299)) || local => {
            KeyState::NotNeeded
        }
        (true, false) => KeyState::Missing,
    };
    let (address_approved, reachable) = match &probe {
        Probe::Answered(_) => (true, Some(true)),
        Probe::Unreachable(_) => (true, Some(false)),
        // The grants covered the address by its text, but it resolved to a private one.
        Probe::Denied => (false, None),
        Probe::NotChecked => (approved, None),
    };
    let auth = format!("PUT /api/providers/{id}/auth");
    let fix = if !instance.enabled {
        Some(if admin {
            format!("it is disabled: POST /api/plugin-instances/{id}/enable")
        } else {
            "it is disabled: ask an admin to enable it".to_owned()
        })
    } else if !loaded {
        Some(if admin {
            format!("it did not load: see its load error at GET /api/plugin-instances/{id}")
        } else {
            "it did not load: ask an admin".to_owned()
        })
    } else if !address_approved {
        Some(match (&base_url, admin) {
            (Some(url), true) => format!(
                "its address is not approved: {auth} with {{\"base_url\": \"{url}\"}} approves it"
            ),
            (None, true) => format!("it has no address: {auth} with {{\"base_url\": \"…\"}}"),
            (_, false) => "its address is not approved: ask an admin to approve it".to_owned(),
        })
    } else if let Probe::Unreachable(why) = &probe {
        Some(if admin {
            format!(
                "nothing answers at {} ({why}): start the server, or point the provider \
                 elsewhere with {auth} ({{\"base_url\": null}} for the vendor's API)",
                base_url.as_deref().unwrap_or("its base URL")
            )
        } else {
            "its server does not answer: ask an admin".to_owned()
        })
    } else {
        match (key, admin) {
            (KeyState::Missing, true) => Some(format!(
                "it needs an API key: {auth} with {{\"api_key\": \"…\"}}"
            )),
            (KeyState::Refused, true) => Some(format!(
                "the server refused its API key: {auth} with another {{\"api_key\": \"…\"}}"
            )),
            (KeyState::Missing, false) => Some("it needs an API key: ask an admin".to_owned()),
            (KeyState::Refused, false) => {
                Some("the server refused its API key: ask an admin".to_owned())
            }
            (KeyState::Set | KeyState::NotNeeded, _) => None,
        }
    };
    Ok(Provider {
        configured: fix.is_none(),
        key,
        address_approved,
        reachable,
        fix,
        base_url: if admin { base_url } else { None },
        default_base_url: if admin {
            default_base_url(manifest)
        } else {
            None
        },
        id: instance.id,
        plugin: instance.plugin,
        description: manifest.description.clone(),
    })
}

/// Provider instances and what each needs before it can answer: whether its address is
/// approved, its server answers and its key is in order, with the one step that fixes it.
/// Admins also see each one's effective `base_url` and the vendor's `default_base_url`.
/// Each server is asked for its model list (at most 3 s, all at once) to tell whether it
/// answers.
#[utoipa::path(get, path = "/api/providers", tag = "providers", params(PageQuery),
    responses((status = 200, body = Page<Provider>),
        (status = 400, description = "`invalid_query`: a bad `limit` or `offset`", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Provider>>, ApiError> {
    state.runtime.catch_up().await?;
    let mut providers = Vec::new();
    for instance in state.db().list_instances().await? {
        let Some(plugin) = state.db().get_plugin(&instance.plugin).await? else {
            continue;
        };
        let manifest = Manifest::parse(&plugin.manifest_toml).map_err(ApiError::internal)?;
        if manifest.kind != PluginKind::Provider {
            continue;
        }
        providers.push((instance, manifest));
    }
    let total = providers.len() as i64;
    let shown = providers
        .into_iter()
        .skip(page.offset() as usize)
        .take(page.limit() as usize);
    let items = futures::future::try_join_all(shown.map(|(instance, manifest)| {
        let state = &state;
        let admin = user.is_admin();
        async move { provider_view(state, instance, &manifest, admin, true).await }
    }))
    .await?;
    Ok(axum::Json(page.page(items, total)))
}

/// Credentials of a provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderAuth {
    /// Stored encrypted as the plugin's declared secret; never returned.
    pub api_key: Option<String>,
    /// Where the vendor's API is (an OpenAI-compatible server, a local Ollama, …); `null`
    /// returns to the plugin's default, the vendor's own API (with a new `api_key`, the one
    /// call that switches from a local server to the vendor).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Option<String>>,
}

/// `Some(None)` for a field given as `null`, `None` (by `default`) for one left out.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A provider after a change of its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderAuthChange {
    #[serde(flatten)]
    pub provider: Provider,
    /// Stored keys this change removed: a `base_url` on another origin (scheme, host or port)
    /// given without a new `api_key` drops the stored one, which was set for the old address.
    pub removed_secrets: Vec<String>,
    /// What may surprise: e.g. a key set for a base URL that is not the vendor's.
    pub warnings: Vec<String>,
}

/// Sets a provider's API key and/or base URL, in one change every host sees whole. Setting
/// the base URL also approves its host for the instance — as a private host when it is a
/// loopback or private address, which is the one explicit step a local model server needs.
/// `"base_url": null` returns to the plugin's default, the vendor's API. A base URL on
/// another origin (scheme, host or port) without a new `api_key` removes the stored key: it
/// was given for the old address and is never sent to the new one.
#[utoipa::path(put, path = "/api/providers/{id}/auth", tag = "providers", params(("id" = String, Path)),
    request_body = ProviderAuth,
    responses((status = 200, body = ProviderAuthChange),
        (status = 400, description = "`invalid_request`: neither field given, a bad `base_url`, a key for a plugin that takes none, or a change the instance cannot load with", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 422, description = "`invalid_fields`: a field of the wrong type, or an unknown one", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn put_auth(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProviderAuth>,
) -> Result<axum::Json<ProviderAuthChange>, ApiError> {
    let (instance, manifest) = provider_instance(&state, &id).await?;
    if body.api_key.is_none() && body.base_url.is_none() {
        return Err(ApiError::bad_request(
            "give api_key, base_url (null for the vendor's default) or both",
        ));
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
    let change = match &body.base_url {
        Some(Some(base_url)) => moved_to(&instance, &manifest, base_url)?,
        Some(None) => reset_base_url(&instance, &manifest)?,
        None => AddressChange::unchanged(&instance)?,
    };
    // The same rule as `/api/providers/test`: a stored key goes only to the address it was
    // set for.
    let secrets = if change.moved {
        SecretUpdate::Replace(&key)
    } else {
        SecretUpdate::Set(&key)
    };
    let mut warnings = Vec::new();
    let target = change
        .config
        .get("base_url")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| default_base_url(&manifest));
    let default = default_base_url(&manifest);
    if body.api_key.is_some()
        && let (Some(target), Some(default)) = (&target, &default)
        && !same_origin(target, default)
    {
        warnings.push(format!(
            "the key goes to {target}, this provider's base URL, not to the vendor's {default}; \
             to switch to the vendor, send the key with \"base_url\": null"
        ));
    }
    apply(&state, &id, change, secrets, warnings).await
}

/// A provider's config and approval after a change of its address, and whether the address
/// moved to another origin.
struct AddressChange {
    config: serde_json::Value,
    approval: Approval,
    moved: bool,
}

impl AddressChange {
    fn unchanged(instance: &InstanceRow) -> Result<AddressChange, ApiError> {
        Ok(AddressChange {
            config: serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?,
            approval: serde_json::from_str(&instance.approval_json).map_err(ApiError::internal)?,
            moved: false,
        })
    }
}

/// The change to `base_url`, its host approved.
fn moved_to(
    instance: &InstanceRow,
    manifest: &Manifest,
    base_url: &str,
) -> Result<AddressChange, ApiError> {
    let (config, approval) = with_base_url(instance, base_url)?;
    let own = base_url_of(instance, manifest)?;
    Ok(AddressChange {
        config,
        approval,
        moved: !own.is_some_and(|own| same_origin(&own, base_url)),
    })
}

/// The change back to the plugin's default base URL (the vendor's API): the configured one
/// goes, with the approval its host got for it. The default's host is approved when it is a
/// public one, as installing does; a private default (Ollama's 127.0.0.1:11434) still takes
/// the explicit step. A plugin without a default keeps its base URL.
fn reset_base_url(instance: &InstanceRow, manifest: &Manifest) -> Result<AddressChange, ApiError> {
    let Some(default) = default_base_url(manifest) else {
        return AddressChange::unchanged(instance);
    };
    let mut change = AddressChange::unchanged(instance)?;
    let own = base_url_of(instance, manifest)?;
    if let Some(config) = change.config.as_object_mut() {
        config.remove("base_url");
    }
    let moved = !own.as_deref().is_some_and(|own| same_origin(own, &default));
    if moved && let Some(old) = own.as_deref().and_then(|u| url::Url::parse(u).ok()) {
        let old = authority(&old);
        change
            .approval
            .http
            .retain(|h| Some(&h.host) != old.as_ref());
    }
    if let Ok(url) = url::Url::parse(&default)
        && let (Some(host), Some(authority)) = (url.host(), authority(&url))
        && !is_private_url_host(&host)
        && !change.approval.http.iter().any(|h| h.host == authority)
    {
        change.approval.http.push(ApprovedHost {
            host: authority,
            private: false,
        });
    }
    change.moved = moved;
    Ok(change)
}

/// `host` or `host:port` as approvals name a URL's address (the port only when the URL
/// names one).
fn authority(url: &url::Url) -> Option<String> {
    let host = url.host()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// Stores a change of a provider's address and keys and answers with the provider.
async fn apply(
    state: &AppState,
    id: &str,
    change: AddressChange,
    secrets: SecretUpdate<'_>,
    warnings: Vec<String>,
) -> Result<axum::Json<ProviderAuthChange>, ApiError> {
    let removed_secrets = state
        .runtime
        .update_instance_with(id, change.config, change.approval, secrets)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let (instance, manifest) = provider_instance(state, id).await?;
    Ok(axum::Json(ProviderAuthChange {
        // Not asked whether its server answers: a change is answered without a wait on it
        // (`GET /api/providers` asks).
        provider: provider_view(state, instance, &manifest, true, false).await?,
        removed_secrets,
        warnings,
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
    let authority = authority(&url).unwrap_or_default();
    let mut config: serde_json::Value =
        serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?;
    config["base_url"] = serde_json::json!(base_url);
    let mut approval: Approval =
        serde_json::from_str(&instance.approval_json).map_err(ApiError::internal)?;
    approval.http.retain(|h| h.host != authority);
    approval.http.push(ApprovedHost {
        host: authority,
        private: is_private_url_host(&host),
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

/// A page of a provider's models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<ModelInfo>,
    pub total: i64,
    pub next_offset: Option<i64>,
    /// Where the list comes from: `server` — the provider's server listed what it serves
    /// (its base URL is not the vendor's default: a local or other OpenAI-compatible
    /// server); `plugin` — the plugin's list of the vendor's models. The instance's `models`
    /// config is added to either.
    pub source: String,
}

/// The models a provider offers. A provider pointed at a server other than the vendor's
/// default (a local vLLM, llama.cpp, LM Studio or Ollama, a proxy) lists what that server
/// says it serves (`GET` of its model list, through the instance's grants and key); one on
/// the vendor's default lists the plugin's models of that vendor. The instance's `models`
/// config is added to either.
#[utoipa::path(get, path = "/api/providers/{id}/models", tag = "providers",
    params(("id" = String, Path), PageQuery),
    responses((status = 200, body = ModelList),
        (status = 400, description = "`invalid_query`: a bad `limit` or `offset`", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`provider_unavailable`: the provider is disabled or did not load", body = ErrorEnvelope),
        (status = 502, description = "the provider's server could not list its models: `provider_unreachable`, `provider_auth` (key missing or refused), `provider_rate_limited`, `provider_overloaded`, `provider_invalid_request` (its address is not approved) or `provider_error`", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn models(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<ModelList>, ApiError> {
    let (instance, manifest) = provider_instance(&state, &id).await?;
    state.runtime.catch_up().await?;
    let unavailable = |e: crate::llm::ProviderFailure| {
        ApiError::new(StatusCode::CONFLICT, "provider_unavailable", e.message)
    };
    let own = base_url_of(&instance, &manifest)?;
    let vendors = own.is_some() && own == default_base_url(&manifest);
    let listed = if vendors {
        None
    } else {
        // Unavailable (disabled, not loaded) before asking anyone.
        state.runtime.provider_models(&id).map_err(unavailable)?;
        state.runtime.server_models(&id).await.map_err(|f| {
            // Members do not see where a provider points; the message may say.
            let message = if user.is_admin() {
                f.message.clone()
            } else {
                format!("provider `{id}`'s server could not list its models")
            };
            ApiError::new(StatusCode::BAD_GATEWAY, f.code(), message)
        })?
    };
    let (mut models, source) = match listed {
        Some(ids) => (
            ids.into_iter()
                .map(|id| ModelInfo {
                    id,
                    context_window: None,
                    max_output_tokens: None,
                })
                .collect::<Vec<_>>(),
            "server",
        ),
        None => (
            state.runtime.provider_models(&id).map_err(unavailable)?,
            "plugin",
        ),
    };
    let config: serde_json::Value =
        serde_json::from_str(&instance.config_json).map_err(ApiError::internal)?;
    for name in config
        .get("models")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
    {
        if !models.iter().any(|m| m.id == name) {
            models.push(ModelInfo {
                id: name.to_owned(),
                context_window: None,
                max_output_tokens: None,
            });
        }
    }
    let total = models.len() as i64;
    let items: Vec<ModelInfo> = page.window(&models).cloned().collect();
    let Page {
        items,
        total,
        next_offset,
    } = page.page(items, total);
    Ok(axum::Json(ModelList {
        items,
        total,
        next_offset,
        source: source.to_owned(),
    }))
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

/// Returns a provider to its vendor's defaults in one call: removes its stored API key(s)
/// and its configured base URL (with the approval given for that address), so the next key
/// set goes to the vendor's own API. Answers with the provider as it is now.
#[utoipa::path(delete, path = "/api/providers/{id}/auth", tag = "providers", params(("id" = String, Path)),
    responses((status = 200, body = ProviderAuthChange),
        (status = 400, description = "`invalid_request`: the instance cannot load with its defaults", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_auth(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<ProviderAuthChange>, ApiError> {
    let (instance, manifest) = provider_instance(&state, &id).await?;
    let change = reset_base_url(&instance, &manifest)?;
    apply(&state, &id, change, SecretUpdate::Replace(&[]), Vec::new()).await
}
