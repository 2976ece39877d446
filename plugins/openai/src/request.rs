//! The `POST /chat/completions` request.

use kelp_sdk::http::Request;
use kelp_sdk::provider::{ChatRequest, ContentPart, Message, Role};
use serde_json::{Map, Value, json};

/// Builds the streaming request for `request` against `base_url` (e.g.
/// `https://api.openai.com/v1`). No `authorization` header: the host adds the key where the
/// manifest binds it, and a local server without a key gets none.
pub(crate) fn chat_completions(base_url: &str, request: &ChatRequest) -> Request {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "messages".into(),
        Value::Array(request.messages.iter().flat_map(messages).collect()),
    );
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    }
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    body.insert("stream".into(), json!(true));
    // Without it the stream carries no token counts at all.
    body.insert("stream_options".into(), json!({ "include_usage": true }));
    if let Some(max_tokens) = request.max_tokens {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    if let Some(temperature) = request.temperature.and_then(decimal) {
        body.insert("temperature".into(), temperature);
    }
    Request::post(format!(
        "{}/chat/completions",
        base_url.trim_end_matches('/')
    ))
    .header("accept", "text/event-stream")
    .json(&Value::Object(body))
}

/// `0.7f32` widened to f64 is 0.699999988079071; its shortest decimal form is what the caller
/// meant and what the vendor should see.
fn decimal(value: f32) -> Option<Value> {
    let value: f64 = value.to_string().parse().ok()?;
    serde_json::Number::from_f64(value).map(Value::Number)
}

/// One Kelp message becomes one OpenAI message, except that every tool result is a message of
/// its own (role `tool`), as the API wants one per call.
fn messages(message: &Message) -> Vec<Value> {
    let text = message.text();
    let calls: Vec<Value> = message
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::ToolCall(call) => Some(json!({
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments },
            })),
            _ => None,
        })
        .collect();
    let results = message.content.iter().filter_map(|part| match part {
        ContentPart::ToolResult(result) => Some(json!({
            "role": "tool",
            "tool_call_id": result.call_id,
            "content": result.content,
        })),
        _ => None,
    });

    let mut out = Vec::new();
    match message.role {
        Role::System => out.push(json!({ "role": "system", "content": text })),
        Role::User => {
            // A user message that only carries tool results has no text of its own.
            if !text.is_empty() || !has_results(message) {
                out.push(json!({ "role": "user", "content": text }));
            }
        }
        Role::Assistant if calls.is_empty() => {
            out.push(json!({ "role": "assistant", "content": text }));
        }
        Role::Assistant => {
            // The API documents `content` as null for a message that is only tool calls.
            let content = if text.is_empty() {
                Value::Null
            } else {
                json!(text)
            };
            out.push(json!({ "role": "assistant", "content": content, "tool_calls": calls }));
        }
        // A `tool` message must name the call it answers, so only results can be sent.
        Role::Tool => {}
    }
    out.extend(results);
    out
}

fn has_results(message: &Message) -> bool {
    message
        .content
        .iter()
        .any(|part| matches!(part, ContentPart::ToolResult(_)))
}

#[cfg(test)]
mod tests {
    use kelp_sdk::provider::{ToolCall, ToolResult, ToolSpec};

    use super::*;

    fn message(role: Role, content: Vec<ContentPart>) -> Message {
        Message { role, content }
    }

    fn text(t: &str) -> ContentPart {
        ContentPart::Text(t.into())
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    fn simple(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "gpt-4o".into(),
            messages,
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
        }
    }

    #[test]
    fn url_method_and_headers() {
        for base in ["https://api.openai.com/v1", "https://api.openai.com/v1/"] {
            let request = chat_completions(base, &simple(Vec::new()));
            assert_eq!(request.method, "POST");
            assert_eq!(request.url, "https://api.openai.com/v1/chat/completions");
            assert_eq!(
                request.headers,
                [
                    ("accept".to_owned(), "text/event-stream".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]
            );
        }
        let local = chat_completions("http://127.0.0.1:8000/v1", &simple(Vec::new()));
        assert_eq!(local.url, "http://127.0.0.1:8000/v1/chat/completions");
    }

    #[test]
    fn plain_conversation_without_optional_fields() {
        let request = chat_completions(
            "https://api.openai.com/v1",
            &simple(vec![
                message(Role::System, vec![text("Be brief.")]),
                message(Role::User, vec![text("Hello, "), text("world")]),
                message(Role::Assistant, vec![text("Hi!")]),
            ]),
        );
        assert_eq!(
            body(&request),
            json!({
                "model": "gpt-4o",
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": "Hello, world" },
                    { "role": "assistant", "content": "Hi!" },
                ],
                "stream": true,
                "stream_options": { "include_usage": true },
            })
        );
    }

    #[test]
    fn tool_calls_results_tools_and_limits() {
        let request = ChatRequest {
            model: "gpt-4.1".into(),
            messages: vec![
                message(Role::User, vec![text("Weather in Paris and Rome?")]),
                message(
                    Role::Assistant,
                    vec![
                        ContentPart::ToolCall(ToolCall {
                            id: "call_1".into(),
                            name: "get_weather".into(),
                            arguments: r#"{"city":"Paris"}"#.into(),
                        }),
                        ContentPart::ToolCall(ToolCall {
                            id: "call_2".into(),
                            name: "get_weather".into(),
                            arguments: r#"{"city":"Rome"}"#.into(),
                        }),
                    ],
                ),
                message(
                    Role::Tool,
                    vec![
                        ContentPart::ToolResult(ToolResult {
                            call_id: "call_1".into(),
                            content: "18 °C".into(),
                            is_error: false,
                        }),
                        ContentPart::ToolResult(ToolResult {
                            call_id: "call_2".into(),
                            content: "failed: timeout".into(),
                            is_error: true,
                        }),
                    ],
                ),
                message(
                    Role::Assistant,
                    vec![
                        text("Checking once more."),
                        ContentPart::ToolCall(ToolCall {
                            id: "call_3".into(),
                            name: "get_weather".into(),
                            arguments: r#"{"city":"Rome"}"#.into(),
                        }),
                    ],
                ),
            ],
            tools: vec![ToolSpec::new(
                "get_weather",
                "Current weather",
                json!({ "type": "object", "properties": { "city": { "type": "string" } } }),
            )],
            max_tokens: Some(512),
            temperature: Some(0.7),
        };
        assert_eq!(
            body(&chat_completions("https://api.openai.com/v1", &request)),
            json!({
                "model": "gpt-4.1",
                "messages": [
                    { "role": "user", "content": "Weather in Paris and Rome?" },
                    {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" },
                            },
                            {
                                "id": "call_2",
                                "type": "function",
                                "function": { "name": "get_weather", "arguments": "{\"city\":\"Rome\"}" },
                            },
                        ],
                    },
                    { "role": "tool", "tool_call_id": "call_1", "content": "18 °C" },
                    { "role": "tool", "tool_call_id": "call_2", "content": "failed: timeout" },
                    {
                        "role": "assistant",
                        "content": "Checking once more.",
                        "tool_calls": [{
                            "id": "call_3",
                            "type": "function",
                            "function": { "name": "get_weather", "arguments": "{\"city\":\"Rome\"}" },
                        }],
                    },
                ],
                "tools": [{
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather",
                        "parameters": { "type": "object", "properties": { "city": { "type": "string" } } },
                    },
                }],
                "stream": true,
                "stream_options": { "include_usage": true },
                "max_tokens": 512,
                "temperature": 0.7,
            })
        );
    }

    #[test]
    fn tool_results_in_a_user_message_become_tool_messages() {
        let request = simple(vec![message(
            Role::User,
            vec![ContentPart::ToolResult(ToolResult {
                call_id: "call_9".into(),
                content: "ok".into(),
                is_error: false,
            })],
        )]);
        assert_eq!(
            body(&chat_completions("https://x.example/v1", &request))["messages"],
            json!([{ "role": "tool", "tool_call_id": "call_9", "content": "ok" }])
        );
    }

    #[test]
    fn temperature_is_sent_as_written() {
        for (t, expected) in [(0.0f32, json!(0.0)), (1.0, json!(1.0)), (0.3, json!(0.3))] {
            let mut request = simple(Vec::new());
            request.temperature = Some(t);
            let body = body(&chat_completions("https://x.example/v1", &request));
            assert_eq!(body["temperature"], expected);
        }
    }
}
