//! The `POST /api/chat` request.

use std::collections::HashMap;

use kelp_sdk::http::Request;
use kelp_sdk::provider::{ChatRequest, ContentPart, Message, Role};
use serde_json::{Map, Value, json};

/// Builds the streaming request for `request` against `base_url` (e.g.
/// `http://127.0.0.1:11434`).
pub(crate) fn chat(base_url: &str, request: &ChatRequest) -> Request {
    // Ollama answers a tool result by the tool's name, not by a call id.
    let tool_names: HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|part| match part {
            ContentPart::ToolCall(call) => Some((call.id.as_str(), call.name.as_str())),
            _ => None,
        })
        .collect();

    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "messages".into(),
        Value::Array(
            request
                .messages
                .iter()
                .flat_map(|m| messages(m, &tool_names))
                .collect(),
        ),
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
    let mut options = Map::new();
    if let Some(max_tokens) = request.max_tokens {
        options.insert("num_predict".into(), json!(max_tokens));
    }
    if let Some(temperature) = request.temperature.and_then(decimal) {
        options.insert("temperature".into(), temperature);
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    Request::post(format!("{}/api/chat", base_url.trim_end_matches('/')))
        .header("accept", "application/x-ndjson")
        .json(&Value::Object(body))
}

/// `0.7f32` widened to f64 is 0.699999988079071; its shortest decimal form is what the caller
/// meant and what the server should see.
fn decimal(value: f32) -> Option<Value> {
    let value: f64 = value.to_string().parse().ok()?;
    serde_json::Number::from_f64(value).map(Value::Number)
}

/// One Kelp message becomes one Ollama message, except that every tool result is a message of
/// its own (role `tool`).
fn messages(message: &Message, tool_names: &HashMap<&str, &str>) -> Vec<Value> {
    let text = message.text();
    let calls: Vec<Value> = message
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::ToolCall(call) => Some(json!({
                "function": { "name": call.name, "arguments": arguments(&call.arguments) },
            })),
            _ => None,
        })
        .collect();
    let results: Vec<Value> = message
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::ToolResult(result) => {
                let mut out = json!({ "role": "tool", "content": result.content });
                if let Some(name) = tool_names.get(result.call_id.as_str()) {
                    out["tool_name"] = json!(name);
                }
                Some(out)
            }
            _ => None,
        })
        .collect();

    let mut out = Vec::new();
    match message.role {
        Role::System => out.push(json!({ "role": "system", "content": text })),
        // A user message that only carries tool results has no text of its own.
        Role::User if text.is_empty() && !results.is_empty() => {}
        Role::User => out.push(json!({ "role": "user", "content": text })),
        Role::Assistant if calls.is_empty() => {
            out.push(json!({ "role": "assistant", "content": text }));
        }
        Role::Assistant => {
            out.push(json!({ "role": "assistant", "content": text, "tool_calls": calls }));
        }
        // A tool message carries results; there is no text of its own to send.
        Role::Tool => {}
    }
    out.extend(results);
    out
}

/// Ollama takes a call's arguments as a JSON object, not as text. Arguments that are not one (a
/// model cut off mid-call) are sent as `{}` so that the conversation stays valid; the tool
/// result already told the model what went wrong.
fn arguments(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(arguments @ Value::Object(_)) => arguments,
        _ => json!({}),
    }
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

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "llama3.2".into(),
            messages,
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
        }
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn url_method_headers_and_plain_body() {
        for base in ["http://127.0.0.1:11434", "http://127.0.0.1:11434/"] {
            let built = chat(
                base,
                &request(vec![
                    message(Role::System, vec![text("Be brief.")]),
                    message(Role::User, vec![text("Hello")]),
                    message(Role::Assistant, vec![text("Hi!")]),
                ]),
            );
            assert_eq!(built.method, "POST");
            assert_eq!(built.url, "http://127.0.0.1:11434/api/chat");
            assert_eq!(
                built.headers,
                [
                    ("accept".to_owned(), "application/x-ndjson".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]
            );
            assert_eq!(
                body(&built),
                json!({
                    "model": "llama3.2",
                    "messages": [
                        { "role": "system", "content": "Be brief." },
                        { "role": "user", "content": "Hello" },
                        { "role": "assistant", "content": "Hi!" },
                    ],
                    "stream": true,
                })
            );
        }
    }

    #[test]
    fn tool_round_trip_tools_and_options() {
        let mut req = request(vec![
            message(Role::User, vec![text("Weather in Toronto?")]),
            message(
                Role::Assistant,
                vec![
                    ContentPart::ToolCall(ToolCall {
                        id: "call_0".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Toronto"}"#.into(),
                    }),
                    ContentPart::ToolCall(ToolCall {
                        id: "call_1".into(),
                        name: "get_time".into(),
                        arguments: "not json".into(),
                    }),
                ],
            ),
            message(
                Role::Tool,
                vec![
                    ContentPart::ToolResult(ToolResult {
                        call_id: "call_0".into(),
                        content: "11 °C, cloudy".into(),
                        is_error: false,
                    }),
                    ContentPart::ToolResult(ToolResult {
                        call_id: "call_1".into(),
                        content: "invalid input: not json".into(),
                        is_error: true,
                    }),
                    ContentPart::ToolResult(ToolResult {
                        call_id: "unknown".into(),
                        content: "?".into(),
                        is_error: false,
                    }),
                ],
            ),
        ]);
        req.tools = vec![ToolSpec::new(
            "get_weather",
            "Current weather",
            json!({ "type": "object", "properties": { "city": { "type": "string" } } }),
        )];
        req.max_tokens = Some(256);
        req.temperature = Some(0.8);
        assert_eq!(
            body(&chat("http://localhost:11434", &req)),
            json!({
                "model": "llama3.2",
                "messages": [
                    { "role": "user", "content": "Weather in Toronto?" },
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            { "function": { "name": "get_weather", "arguments": { "city": "Toronto" } } },
                            { "function": { "name": "get_time", "arguments": {} } },
                        ],
                    },
                    { "role": "tool", "content": "11 °C, cloudy", "tool_name": "get_weather" },
                    { "role": "tool", "content": "invalid input: not json", "tool_name": "get_time" },
                    { "role": "tool", "content": "?" },
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
                "options": { "num_predict": 256, "temperature": 0.8 },
            })
        );
    }

    #[test]
    fn options_only_hold_what_is_set() {
        let mut req = request(Vec::new());
        req.temperature = Some(0.0);
        assert_eq!(
            body(&chat("http://localhost:11434", &req))["options"],
            json!({ "temperature": 0.0 })
        );
        req.temperature = None;
        req.max_tokens = Some(10);
        assert_eq!(
            body(&chat("http://localhost:11434", &req))["options"],
            json!({ "num_predict": 10 })
        );
    }
}
