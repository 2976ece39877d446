//! `GET /api/tools` and `POST /api/tools/{instance}/{tool}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::plugins::CallError;

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let items: Vec<Value> = state
        .runtime
        .tools()
        .into_iter()
        .map(|(instance, spec)| {
            json!({
                "instance": instance,
                "name": spec.name,
                "description": spec.description,
                "input_schema": serde_json::from_str::<Value>(&spec.input_schema).unwrap_or(Value::Null),
            })
        })
        .collect();
    let total = items.len();
    Json(json!({"items": items, "total": total, "next_offset": null}))
}

pub async fn call(
    State(state): State<AppState>,
    Path((instance, tool)): Path<(String, String)>,
    input: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(input) =
        input.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text()))?;
    let workspace = state.runtime.default_workspace().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("workspace: {e}"),
        )
    })?;
    match state
        .runtime
        .call_tool(
            &instance,
            &tool,
            &input.to_string(),
            "local",
            Some(&workspace),
        )
        .await
    {
        Ok(output) => Ok(Json(json!({"output": output}))),
        Err(e) => {
            let (status, code) = match &e {
                CallError::UnknownInstance(_) | CallError::UnknownTool { .. } => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                CallError::Disabled(_) => (StatusCode::CONFLICT, "disabled"),
                CallError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
                CallError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "tool_failed"),
            };
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}
