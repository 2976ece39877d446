//! OpenAI-compatible endpoints, so any OpenAI client can talk to a Kelp agent: the model name
//! is the agent's name and the API key is a Kelp API token. Each request is a new session
//! holding the conversation the client sent; the agent runs its tools itself, and the client
//! gets the text of every step, streamed or not (the same text either way).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ErrorEnvelope};
use super::runs::{
    follow, new_session, sse_response, start_error, start_run, title_of, wait_outcome,
};
use crate::agent::STEP_SEPARATOR;
use crate::auth::CurrentUser;
use crate::llm::{Part, Role};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_completions))
        .routes(routes!(models))
}

/// A Chat Completions request (the fields Kelp uses; others are accepted and ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The agent's name.
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub stream_options: Option<Value>,
}

/// The text of an OpenAI message's `content`: a string, or an array of parts whose text
/// parts count.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Creates a model response for the given chat conversation, answered by the agent named in
/// `model`. Streams `chat.completion.chunk`s when `stream` is true.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest,
    responses((status = 200, description = "a chat.completion, or a text/event-stream of chat.completion.chunk"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 402, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 429, description = "`too_many_runs` (you have `max_runs_per_user` runs in progress), `too_many_streams` (streamed: you have `http.max_streams_per_user` open), or `provider_rate_limited`", body = ErrorEnvelope),
        (status = 502, description = "`run_failed`: not streamed, the run failed (the provider answered with an error, or the agent's provider is not installed)", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn chat_completions(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let (agents, _) = state.db().list_agents(user.id(), 1000, 0).await?;
    let agent = agents
        .iter()
        .find(|a| a.name == body.model)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("the model `{}` does not exist (models are your agents' names; see GET /v1/models)", body.model),
            )
        })?;
    // The last user message starts the run; everything before it is the history.
    let mut history: Vec<(Role, String)> = Vec::new();
    for m in &body.messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let role = match role {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // Tool turns of the client's own tools have no meaning to the agent.
            _ => continue,
        };
        let text = content_text(m.get("content").unwrap_or(&Value::Null));
        if !text.is_empty() {
            history.push((role, text));
        }
    }
    let Some(last) = history.iter().rposition(|(r, _)| *r == Role::User) else {
        return Err(ApiError::bad_request("messages: no user message"));
    };
    let (_, prompt) = history.remove(last);
    // A stream's slot is taken before anything is created, so a refusal leaves nothing behind.
    let guard = body.stream.then(|| state.streams.open(&user)).transpose()?;
    // Nor is a session (and its history, up to a megabyte of it) stored for a run that would
    // be refused for the user's runs in progress.
    state.agent.has_room(user.id()).await.map_err(start_error)?;
    let session = new_session(&state, &user, &agent.id, &title_of(&prompt)).await?;
    let history: Vec<(&str, Value)> = history
        .into_iter()
        .map(|(role, text)| (role.as_str(), json!([Part::Text { text }])))
        .collect();
    state.db().insert_history(&session.id, &history).await?;
    let model = agent.name.clone();
    let created = crate::store::now_ms() / 1000;
    let Some(guard) = guard else {
        let started = start_run(&state, &user, &session.id, prompt, true).await?;
        let outcome = wait_outcome(started).await?;
        if let Some(error) = &outcome.error {
            return Err(run_error(error));
        }
        let reason = if outcome.status == "completed" {
            "stop"
        } else {
            "length"
        };
        return Ok(axum::Json(json!({
            "id": format!("chatcmpl-{}", outcome.run_id),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                // Every step's text, as the stream sends it: the text before a tool call
                // ("Let me calculate that.") is part of the answer too.
                "message": {"role": "assistant", "content": outcome.reply, "refusal": null},
                "finish_reason": reason,
                "logprobs": null,
            }],
            "usage": usage_json(&outcome.usage),
        }))
        .into_response());
    };
    let include_usage = body
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let channel = state.agent.channel(&session.id).await?;
    let sub = channel.subscribe(None);
    let started = start_run(&state, &user, &session.id, prompt, true).await?;
    let id = format!("chatcmpl-{}", started.run_id);
    let chunk = move |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    // The step whose text was sent last: a later step's text starts after a blank line, the
    // same separator the non-streamed answer joins steps with.
    let mut text_step: Option<u64> = None;
    let events =
        follow(state.db().clone(), channel, sub, Some(started.run_id)).flat_map(move |e| {
            let mut out: Vec<Value> = Vec::new();
            match e.kind.as_str() {
                "text-delta" => {
                    let text = e.data.get("text").and_then(Value::as_str).unwrap_or("");
                    let step = e.data.get("step").and_then(Value::as_u64).unwrap_or(0);
                    if !text.is_empty() {
                        let content = match text_step.replace(step) {
                            Some(last) if last != step => {
                                format!("{STEP_SEPARATOR}{text}")
                            }
                            _ => text.to_owned(),
                        };
                        out.push(chunk(json!({"content": content}), Value::Null));
                    }
                }
                "finish" => {
                    let status = e.data.get("status").and_then(Value::as_str);
                    let reason = if status == Some("completed") {
                        "stop"
                    } else {
                        "length"
                    };
                    let mut last = chunk(json!({}), json!(reason));
                    out.push(last.clone());
                    if include_usage {
                        last["choices"] = json!([]);
                        let usage = e.data.get("usage").cloned().unwrap_or_default();
                        last["usage"] = usage_value(&usage);
                        out.push(last);
                    }
                }
                "error" => {
                    out.push(json!({"error": {
                        "message": e.data.get("message").cloned().unwrap_or_default(),
                        "type": "server_error",
                        "code": e.data.get("code").cloned().unwrap_or_default(),
                    }}));
                }
                _ => {}
            }
            futures::stream::iter(out)
        });
    let stream = futures::stream::once(async move { first })
        .chain(events)
        .map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string())))
        .chain(futures::stream::once(async {
            Ok(SseEvent::default().data("[DONE]"))
        }));
    let mut response = sse_response(guard.wrap(stream));
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert("x-kelp-session-id", v);
    }
    Ok(response)
}

fn usage_json(usage: &crate::llm::Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    })
}

/// `usage` as an event carries it (Kelp's names), in OpenAI's names.
fn usage_value(usage: &Value) -> Value {
    usage_json(&serde_json::from_value(usage.clone()).unwrap_or_default())
}

fn run_error(error: &Value) -> ApiError {
    let code = error.get("code").and_then(Value::as_str).unwrap_or("");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the run failed")
        .to_owned();
    match code {
        "budget_exceeded" => {
            ApiError::new(StatusCode::PAYMENT_REQUIRED, "budget_exceeded", message)
        }
        "provider_rate_limited" => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            message,
        ),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "run_failed", message),
    }
}

/// Your agents, as models.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "`{object: list, data: [{id, object: model, created, owned_by}]}`"),
        (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn models(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<axum::Json<Value>, ApiError> {
    let (agents, _) = state.db().list_agents(user.id(), 1000, 0).await?;
    let data: Vec<Value> = agents
        .iter()
        .map(|a| {
            json!({
                "id": a.name,
                "object": "model",
                "created": a.created_at_ms / 1000,
                "owned_by": "kelp",
            })
        })
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})))
}
