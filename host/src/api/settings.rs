//! The signed-in user's settings: their JSON Schema, the current values (defaults where the
//! user chose nothing), and JSON merge-patch updates.

use axum::extract::State;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ErrorEnvelope};
use crate::auth::CurrentUser;
use crate::store::settings;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schema))
        .routes(routes!(get_settings, patch_settings))
}

/// JSON Schema of the settings object.
#[utoipa::path(get, path = "/api/settings/schema", tag = "settings",
    responses((status = 200, description = "a JSON Schema (draft 2020-12)", body = Object), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn schema(_user: CurrentUser) -> axum::Json<Value> {
    axum::Json(settings::schema().clone())
}

/// A default agent that was deleted since reads as `null`, as new sessions treat it.
async fn current(state: &AppState, user_id: &str) -> Result<Map<String, Value>, ApiError> {
    let mut values = state.db().user_settings(user_id).await?;
    if let Some(agent) = values.get("default_agent_id").and_then(Value::as_str)
        && !state.db().owns_agent(user_id, agent).await?
    {
        values.insert("default_agent_id".into(), Value::Null);
    }
    Ok(values)
}

/// The settings: every key of the schema, at its default unless set.
#[utoipa::path(get, path = "/api/settings", tag = "settings",
    responses((status = 200, body = Object), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_settings(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<axum::Json<Map<String, Value>>, ApiError> {
    Ok(axum::Json(current(&state, user.id()).await?))
}

/// Changes settings by JSON merge patch (RFC 7396): given keys are set, `null` resets a key
/// to its default. Values are checked against the schema; unknown keys are refused.
#[utoipa::path(patch, path = "/api/settings", tag = "settings",
    request_body(content = Object, example = json!({"theme": "dark", "timezone": "Europe/Berlin"})),
    responses((status = 200, body = Object), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn patch_settings(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(patch): ApiJson<Value>,
) -> Result<axum::Json<Map<String, Value>>, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("settings must be of type object"));
    }
    if let Some(agent) = patch.get("default_agent_id").and_then(Value::as_str)
        && !state.db().owns_agent(user.id(), agent).await?
    {
        return Err(ApiError::bad_request(
            "settings.default_agent_id: no such agent",
        ));
    }
    state
        .db()
        .patch_settings(user.id(), &patch)
        .await?
        .map_err(ApiError::bad_request)?;
    Ok(axum::Json(current(&state, user.id()).await?))
}
