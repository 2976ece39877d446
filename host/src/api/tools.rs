//! Tools of the enabled plugin instances: list them and invoke one with JSON input.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ErrorEnvelope, Page};
use crate::auth::CurrentUser;
use crate::plugins::CallError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(call))
}

/// A tool as the API lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tool {
    /// The plugin instance that provides it.
    pub instance: String,
    pub name: String,
    pub description: String,
    /// JSON Schema of the input.
    pub input_schema: Value,
}

/// The output of a tool call (text the tool returned: JSON or prose).
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolOutput {
    pub output: String,
}

/// Every tool of every enabled plugin instance.
#[utoipa::path(get, path = "/api/tools", tag = "tools",
    responses((status = 200, body = Page<Tool>), (status = 401, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _user: CurrentUser,
) -> Result<axum::Json<Page<Tool>>, ApiError> {
    state.runtime.catch_up().await?;
    let items: Vec<Tool> = state
        .runtime
        .tools()
        .into_iter()
        .map(|(instance, spec)| Tool {
            instance,
            name: spec.name,
            description: spec.description,
            input_schema: serde_json::from_str(&spec.input_schema).unwrap_or(Value::Null),
        })
        .collect();
    let total = items.len() as i64;
    Ok(axum::Json(Page {
        items,
        total,
        next_offset: None,
    }))
}

/// Invokes a tool with JSON input, on behalf of the signed-in user (whose `kv` space the
/// plugin sees).
#[utoipa::path(post, path = "/api/tools/{instance}/{tool}", tag = "tools",
    params(("instance" = String, Path), ("tool" = String, Path)),
    request_body(content = Object, description = "the tool's input: an object its input schema (in `/api/tools`) accepts"),
    responses((status = 200, body = ToolOutput), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "instance disabled", body = ErrorEnvelope),
        (status = 422, description = "the tool failed or was stopped", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn call(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((instance, tool)): Path<(String, String)>,
    ApiJson(input): ApiJson<Value>,
) -> Result<axum::Json<ToolOutput>, ApiError> {
    let workspace = state
        .runtime
        .user_workspace(user.id())
        .map_err(ApiError::internal)?;
    match state
        .runtime
        .call_tool(
            &instance,
            &tool,
            &input.to_string(),
            user.id(),
            Some(&workspace),
        )
        .await
    {
        Ok(output) => Ok(axum::Json(ToolOutput { output })),
        Err(e) => {
            let (status, code) = match &e {
                CallError::UnknownInstance(_) | CallError::UnknownTool { .. } => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                CallError::Disabled(_) => (StatusCode::CONFLICT, "disabled"),
                CallError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
                CallError::Internal { .. } => return Err(ApiError::internal(e)),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "tool_failed"),
            };
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}
