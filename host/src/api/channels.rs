//! Chat channels of the signed-in user: a channel plugin's instance (its bot token and
//! config), the agent it talks to, and who may talk to it. Making one needs an admin, as it
//! makes a plugin instance and approves what the plugin asks; another user's channel answers
//! 404, exactly like one that does not exist.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use crate::auth::{AdminUser, CurrentUser};
use crate::channels::model::Mode;
use crate::channels::{Access, ChannelChange, NewChannel};
use crate::plugins::grants::Approval;
use crate::plugins::{PluginKind, with_config_defaults};
use crate::store::channels::{ChannelRow, ChatRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(chats))
        .routes(routes!(approve_pairing))
}

/// A channel as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Channel {
    pub id: String,
    /// The channel plugin's instance: its config and secrets are the bot's.
    pub instance_id: String,
    pub agent_id: String,
    /// `poll` or `webhook`.
    pub mode: String,
    /// `pairing`, `allowlist`, `open` or `disabled`.
    pub access: String,
    pub allowlist: Vec<String>,
    pub groups_need_address: bool,
    /// Whether it is meant to run (it runs on one host at a time).
    pub running: bool,
    /// Who the bot is on its platform, once it started: `{id, handle, name}`.
    pub bot: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub last_activity_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl From<ChannelRow> for Channel {
    fn from(row: ChannelRow) -> Self {
        Channel {
            id: row.id,
            instance_id: row.instance_id,
            agent_id: row.agent_id,
            mode: row.mode,
            access: row.access,
            allowlist: row.allowlist,
            groups_need_address: row.groups_need_address,
            running: row.running,
            bot: row.bot_json.and_then(|b| serde_json::from_str(&b).ok()),
            last_error: row.last_error,
            last_activity_ms: row.last_activity_ms,
            created_at_ms: row.created_at_ms,
        }
    }
}

/// A chat of a channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelChat {
    pub chat_id: String,
    /// `""` for none.
    pub thread_id: String,
    /// `pending` (waiting for its pairing code's approval), `paired`, `closed` (the bot was
    /// blocked or removed) or `moved` (it has a new id).
    pub state: String,
    /// `direct`, `group` or `broadcast`.
    pub kind: String,
    pub title: String,
    pub session_id: Option<String>,
    /// The code a pending chat was given.
    pub pair_code: Option<String>,
    pub pair_expires_ms: Option<i64>,
}

impl From<ChatRow> for ChannelChat {
    fn from(row: ChatRow) -> Self {
        ChannelChat {
            chat_id: row.chat_id,
            thread_id: row.thread_id,
            state: row.state,
            kind: row.kind,
            title: row.title,
            session_id: row.session_id,
            pair_code: row.pair_code,
            pair_expires_ms: row.pair_expires_ms,
        }
    }
}

/// Body of channel creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannelBody {
    /// An installed channel plugin, e.g. `kelp/telegram`.
    #[schema(min_length = 1, max_length = 129)]
    pub plugin: String,
    /// The id of the plugin instance made for the channel (default: the plugin's name and a
    /// short random suffix). Letters, digits, `-` and `_`, 1–64.
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub instance_id: Option<String>,
    /// One of your agents.
    #[schema(min_length = 1, max_length = 128)]
    pub agent_id: String,
    /// The instance's configuration (the plugin's `[config]` schema).
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Secrets by name (e.g. `BOT_TOKEN`), at most 16; sealed, never shown again.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Approvals beyond what the plugin asks for by default, e.g. `http-private:127.0.0.1:8081`
    /// for a Bot API server on this machine.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub grants: Vec<String>,
    /// How events arrive (default: the plugin's first choice).
    pub mode: Option<ModeBody>,
    /// Who may talk to the agent (default `pairing`).
    pub access: Option<AccessBody>,
    /// Sender ids `allowlist` lets in.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub allowlist: Vec<String>,
    /// In groups, answer only messages addressed to the bot (default true).
    pub groups_need_address: Option<bool>,
    /// Start at once (default true).
    pub start: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeBody {
    Poll,
    Webhook,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessBody {
    Pairing,
    Allowlist,
    Open,
    Disabled,
}

/// Body of a channel change: the fields given are changed, the others kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelUpdate {
    /// Another of your agents: every chat starts a new conversation with it at its next
    /// message.
    #[schema(min_length = 1, max_length = 128)]
    pub agent_id: Option<String>,
    /// How events arrive; a running channel sets its platform up again.
    pub mode: Option<ModeBody>,
    pub access: Option<AccessBody>,
    #[schema(max_items = 1000)]
    pub allowlist: Option<Vec<String>>,
    pub groups_need_address: Option<bool>,
}

impl From<ModeBody> for Mode {
    fn from(m: ModeBody) -> Self {
        match m {
            ModeBody::Poll => Mode::Poll,
            ModeBody::Webhook => Mode::Webhook,
        }
    }
}

impl From<AccessBody> for Access {
    fn from(a: AccessBody) -> Self {
        match a {
            AccessBody::Pairing => Access::Pairing,
            AccessBody::Allowlist => Access::Allowlist,
            AccessBody::Open => Access::Open,
            AccessBody::Disabled => Access::Disabled,
        }
    }
}

/// Body of a pairing approval.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairingBody {
    /// The code the chat was given.
    #[schema(min_length = 1, max_length = 32)]
    pub code: String,
}

async fn own_channel(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<ChannelRow, ApiError> {
    state
        .db()
        .get_channel(id)
        .await?
        .filter(|c| c.owner_id == user.id())
        .ok_or_else(|| ApiError::not_found("channel"))
}

/// Your channels.
#[utoipa::path(get, path = "/api/channels", tag = "channels", params(PageQuery),
    responses((status = 200, body = Page<Channel>), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Channel>>, ApiError> {
    let (items, total) = state
        .db()
        .list_channels(user.id(), page.limit(), page.offset())
        .await?;
    Ok(axum::Json(page.page(
        items.into_iter().map(Channel::from).collect(),
        total,
    )))
}

/// Makes a channel: a new instance of a channel plugin with its config and secrets, bound to
/// one of your agents; started unless `start` is false.
#[utoipa::path(post, path = "/api/channels", tag = "channels", request_body = NewChannelBody,
    responses((status = 201, body = Channel),
        (status = 400, body = ErrorEnvelope, description = "`invalid_request`: not a channel plugin, an agent not yours, a config or secret the plugin refuses, a mode it lacks"),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope, description = "`forbidden`: needs an admin"),
        (status = 409, body = ErrorEnvelope, description = "`conflict`: the instance id is taken")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<NewChannelBody>,
) -> Result<(StatusCode, axum::Json<Channel>), ApiError> {
    let owner = admin.id.clone();
    // A channel plugin built into this binary need not be installed first: first-party
    // channels are not installed at start (each instance is a bot, made here), so the
    // package comes with the channel's own instance.
    let (manifest, built_in) = match state.db().get_plugin(&body.plugin).await? {
        Some(plugin) => (
            crate::plugins::Manifest::parse(&plugin.manifest_toml)
                .map_err(|e| ApiError::internal(format!("stored manifest: {e}")))?,
            None,
        ),
        None => {
            let package = built_in_package(&body.plugin)?.ok_or_else(|| {
                ApiError::bad_request(format!("no plugin `{}` is installed", body.plugin))
            })?;
            let (review, _) = state
                .runtime
                .review(&package)
                .map_err(|e| ApiError::internal(format!("built-in {}: {e:#}", body.plugin)))?;
            (review.manifest, Some(package))
        }
    };
    if manifest.kind != PluginKind::Channel {
        return Err(ApiError::bad_request(format!(
            "`{}` is a {} plugin, not a channel",
            body.plugin, manifest.kind
        )));
    }
    if state
        .db()
        .get_agent(&owner, &body.agent_id)
        .await?
        .is_none()
    {
        return Err(ApiError::bad_request(format!(
            "agent_id: no agent `{}` of yours",
            body.agent_id
        )));
    }
    if body.secrets.len() > 16 {
        return Err(ApiError::bad_request("secrets: at most 16"));
    }
    for name in body.secrets.keys() {
        if !manifest.secret_names().contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "secrets: {} declares no secret `{name}` (it declares: {})",
                body.plugin,
                manifest.secret_names().join(", ")
            )));
        }
    }
    let instance_id = match body.instance_id {
        Some(id) => id,
        None => format!("{}-{}", manifest.name.name(), &crate::util::new_id()[..6]),
    };
    if state.db().get_instance(&instance_id).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "instance id `{instance_id}` is taken"
        )));
    }
    let config = serde_json::Value::Object(body.config.unwrap_or_default());
    let defaults = with_config_defaults(&manifest, config.clone());
    let mut approval = Approval::everything_requested(&manifest.capabilities, &defaults);
    for grant in &body.grants {
        approval
            .add_item(grant)
            .map_err(|e| ApiError::bad_request(format!("grants: {e:#}")))?;
    }
    let installed_here = built_in.is_some();
    match built_in {
        Some(package) => state
            .runtime
            .install(
                &package,
                crate::plugins::InstallOptions {
                    instance_id: Some(instance_id.clone()),
                    config,
                    approval,
                    approve_changes: false,
                },
            )
            .await
            .map(drop),
        None => {
            state
                .runtime
                .create_instance(&body.plugin, &instance_id, config, approval)
                .await
        }
    }
    .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    // From here a refusal removes the instance again: a refused request leaves nothing.
    let made = async {
        for (name, value) in &body.secrets {
            state
                .runtime
                .set_secret(&instance_id, name, value)
                .await
                .map_err(|e| ApiError::bad_request(format!("secrets: {e:#}")))?;
        }
        let row = state
            .channels
            .create(
                &owner,
                NewChannel {
                    instance_id: instance_id.clone(),
                    agent_id: body.agent_id.clone(),
                    mode: body.mode.map(Mode::from),
                    access: body.access.unwrap_or(AccessBody::Pairing).into(),
                    allowlist: body.allowlist.clone(),
                    groups_need_address: body.groups_need_address.unwrap_or(true),
                },
            )
            .await
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
        if body.start.unwrap_or(true) {
            state.channels.start(&row.id).await?;
        }
        Ok::<_, ApiError>(row.id)
    }
    .await;
    let id = match made {
        Ok(id) => id,
        Err(e) => {
            // The package too, if this request installed it: a refusal leaves nothing.
            let cleanup = if installed_here {
                state.runtime.remove(&body.plugin).await.map(drop)
            } else {
                state.runtime.delete_instance(&instance_id).await.map(drop)
            };
            if let Err(cleanup) = cleanup {
                tracing::warn!(instance = %instance_id, "removing a refused channel's instance: {cleanup:#}");
            }
            return Err(e);
        }
    };
    let row = state
        .db()
        .get_channel(&id)
        .await?
        .ok_or_else(|| ApiError::internal("the channel vanished"))?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// One of your channels.
#[utoipa::path(get, path = "/api/channels/{id}", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = Channel), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Channel>, ApiError> {
    Ok(axum::Json(own_channel(&state, &user, &id).await?.into()))
}

/// Changes one of your channels: its agent, mode, or who may talk to it. A running channel
/// takes the change from its next poll.
#[utoipa::path(put, path = "/api/channels/{id}", tag = "channels", params(("id" = String, Path)),
    request_body = ChannelUpdate,
    responses((status = 200, body = Channel),
        (status = 400, body = ErrorEnvelope, description = "`invalid_request`: an agent not yours, a mode the plugin lacks, or its plugin is not loaded"),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChannelUpdate>,
) -> Result<axum::Json<Channel>, ApiError> {
    own_channel(&state, &user, &id).await?;
    let change = ChannelChange {
        agent_id: body.agent_id,
        mode: body.mode.map(Mode::from),
        access: body.access.map(Access::from),
        allowlist: body.allowlist,
        groups_need_address: body.groups_need_address,
    };
    let row = state
        .channels
        .update(&id, change)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(axum::Json(row.into()))
}

/// Deletes a channel: it stops, and its plugin instance (token and config) goes with it.
/// Its chats' sessions stay yours.
#[utoipa::path(delete, path = "/api/channels/{id}", tag = "channels", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let channel = own_channel(&state, &user, &id).await?;
    state.channels.stop(&id).await?;
    // The channel's rows go with its instance (ON DELETE CASCADE).
    state.runtime.delete_instance(&channel.instance_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a channel (and again after every restart, until stopped).
#[utoipa::path(post, path = "/api/channels/{id}/start", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = Channel), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn start(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Channel>, ApiError> {
    own_channel(&state, &user, &id).await?;
    state.channels.start(&id).await?;
    Ok(axum::Json(own_channel(&state, &user, &id).await?.into()))
}

/// Stops a channel on every host.
#[utoipa::path(post, path = "/api/channels/{id}/stop", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = Channel), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Channel>, ApiError> {
    own_channel(&state, &user, &id).await?;
    state.channels.stop(&id).await?;
    Ok(axum::Json(own_channel(&state, &user, &id).await?.into()))
}

/// A channel's chats, newest first.
#[utoipa::path(get, path = "/api/channels/{id}/chats", tag = "channels", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = Page<ChannelChat>), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn chats(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<ChannelChat>>, ApiError> {
    own_channel(&state, &user, &id).await?;
    let (items, total) = state
        .db()
        .list_channel_chats(&id, page.limit(), page.offset())
        .await?;
    Ok(axum::Json(page.page(
        items.into_iter().map(ChannelChat::from).collect(),
        total,
    )))
}

/// Approves the pending chat that was given `code`, on one of your channels: its next
/// message reaches the agent.
#[utoipa::path(post, path = "/api/channels/pairings", tag = "channels", request_body = PairingBody,
    responses((status = 200, body = ChannelChat), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no pending chat of yours has this code, or it expired")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn approve_pairing(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<PairingBody>,
) -> Result<axum::Json<ChannelChat>, ApiError> {
    let chat = state
        .channels
        .approve(user.id(), &body.code)
        .await?
        .ok_or_else(|| ApiError::not_found("pairing code"))?;
    Ok(axum::Json(chat.into()))
}

/// The package of the first-party plugin named `name` built into this binary, if any.
fn built_in_package(name: &str) -> Result<Option<Vec<u8>>, ApiError> {
    for plugin in crate::embedded::FIRST_PARTY_PLUGINS {
        let manifest = crate::plugins::Manifest::parse(plugin.manifest)
            .map_err(|e| ApiError::internal(format!("built-in {}: {e}", plugin.dir)))?;
        if manifest.name.to_string() == name {
            return plugin
                .package()
                .map(Some)
                .map_err(|e| ApiError::internal(format!("packing built-in {name}: {e:#}")));
        }
    }
    Ok(None)
}
