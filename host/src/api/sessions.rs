//! Chat sessions of the signed-in user and their messages. Another user's session answers
//! 404, exactly like one that does not exist. Each session has a workspace directory under
//! the data directory; where it is is the host's choice, never the client's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use crate::auth::CurrentUser;
use crate::store::sessions::{MessageRow, SessionChanges, SessionRow, SessionWrite};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(messages))
}

/// A session as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub title: String,
    /// `null` if the session has no agent (its agent was deleted, or none was chosen).
    pub agent_id: Option<String>,
    /// The session's workspace directory on the host (read-only; chosen by the host).
    pub workspace: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A message of a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: String,
    /// 1, 2, 3… within the session.
    pub seq: i64,
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Provider-neutral content (text, tool calls, tool results).
    pub content: Value,
    pub created_at_ms: i64,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Message {
            id: row.id,
            seq: row.seq,
            role: row.role,
            content: row.content,
            created_at_ms: row.created_at_ms,
        }
    }
}

/// Body of session creation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// At most 200 characters, without control characters (default empty).
    #[serde(default)]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", max_length = 200)]
    pub title: String,
    /// One of your agents; default: the `default_agent_id` setting, if it is still yours.
    pub agent_id: Option<String>,
}

/// Body of a session update: only the fields given change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionUpdate {
    /// At most 200 characters, without control characters.
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", max_length = 200)]
    pub title: Option<String>,
    /// One of your agents, or `null` to detach the session from its agent.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub agent_id: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`, by `default`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn validate_title(title: &str) -> Result<(), ApiError> {
    if title.chars().count() > 200 || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "title must be at most 200 characters, without control characters",
        ));
    }
    Ok(())
}

/// An agent named in a body that is not the caller's is a bad field (400), not a missing
/// resource: the URL was fine. The message is the same whether the agent exists or not.
fn unknown_agent() -> ApiError {
    ApiError::bad_request("agent_id: no such agent")
}

fn session(state: &AppState, row: SessionRow) -> Result<Session, ApiError> {
    let workspace = state
        .runtime
        .session_workspace_path(&row.id)
        .map_err(ApiError::internal)?;
    Ok(Session {
        workspace: workspace.display().to_string(),
        id: row.id,
        title: row.title,
        agent_id: row.agent_id,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    })
}

/// The signed-in user's sessions, most recently updated first.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(PageQuery),
    responses((status = 200, body = Page<Session>), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Session>>, ApiError> {
    let (rows, total) = state
        .db()
        .list_sessions(user.id(), page.limit(), page.offset())
        .await?;
    let items = rows
        .into_iter()
        .map(|row| session(&state, row))
        .collect::<Result<_, _>>()?;
    Ok(axum::Json(page.page(items, total)))
}

/// Starts a session (with an empty workspace).
#[utoipa::path(post, path = "/api/sessions", tag = "sessions", request_body = NewSession,
    responses((status = 201, body = Session), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<NewSession>,
) -> Result<(StatusCode, axum::Json<Session>), ApiError> {
    validate_title(&body.title)?;
    let db = state.db();
    let outcome = match &body.agent_id {
        Some(agent) => {
            db.create_session(user.id(), Some(agent), &body.title)
                .await?
        }
        None => {
            let settings = db.user_settings(user.id()).await?;
            let default = settings.get("default_agent_id").and_then(Value::as_str);
            match db.create_session(user.id(), default, &body.title).await? {
                // A default that went stale (agent deleted) is no reason to refuse.
                SessionWrite::UnknownAgent => {
                    db.create_session(user.id(), None, &body.title).await?
                }
                done => done,
            }
        }
    };
    match outcome {
        SessionWrite::Done(row) => {
            state
                .runtime
                .session_workspace(&row.id)
                .map_err(ApiError::internal)?;
            Ok((StatusCode::CREATED, axum::Json(session(&state, row)?)))
        }
        SessionWrite::UnknownAgent => Err(unknown_agent()),
        SessionWrite::NotFound => Err(ApiError::not_found("session")),
    }
}

/// One of the signed-in user's sessions.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Session>, ApiError> {
    let row = state
        .db()
        .get_session(user.id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("session"))?;
    Ok(axum::Json(session(&state, row)?))
}

/// Renames a session or gives it another agent.
#[utoipa::path(patch, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)), request_body = SessionUpdate,
    responses((status = 200, body = Session), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SessionUpdate>,
) -> Result<axum::Json<Session>, ApiError> {
    if let Some(title) = &body.title {
        validate_title(title)?;
    }
    let outcome = state
        .db()
        .update_session(
            user.id(),
            &id,
            SessionChanges {
                title: body.title.as_deref(),
                agent_id: body.agent_id.as_ref().map(Option::as_deref),
            },
        )
        .await?;
    match outcome {
        SessionWrite::Done(row) => Ok(axum::Json(session(&state, row)?)),
        SessionWrite::UnknownAgent => Err(unknown_agent()),
        SessionWrite::NotFound => Err(ApiError::not_found("session")),
    }
}

/// Deletes a session, its messages and its workspace directory. A run in progress is
/// aborted first; what it spent stays on the usage ledger.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.agent.stop_session(user.id(), &id).await?;
    if !state.db().delete_session(user.id(), &id).await? {
        return Err(ApiError::not_found("session"));
    }
    remove_workspace(&state, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a deleted session's workspace directory. The session is gone either way; a
/// leftover directory is an operator's cleanup, not a reason to tell the user a delete failed.
pub(super) async fn remove_workspace(state: &AppState, id: &str) {
    match state.runtime.session_workspace_path(id) {
        Ok(dir) => {
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(session = %id, dir = %dir.display(), "removing workspace: {e}");
            }
        }
        Err(e) => tracing::warn!(session = %id, "locating workspace: {e:#}"),
    }
}

/// A session's messages in order.
#[utoipa::path(get, path = "/api/sessions/{id}/messages", tag = "sessions", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = Page<Message>), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn messages(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Message>>, ApiError> {
    let db = state.db();
    if db.get_session(user.id(), &id).await?.is_none() {
        return Err(ApiError::not_found("session"));
    }
    let (rows, total) = db.list_messages(&id, page.limit(), page.offset()).await?;
    Ok(axum::Json(page.page(
        rows.into_iter().map(Message::from).collect(),
        total,
    )))
}
