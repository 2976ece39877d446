//! The `POST /v1/messages` request.

use kelp_sdk::http::Request;
use kelp_sdk::provider::{ChatRequest, ContentPart, Role};
use serde_json::{Map, Value, json};

/// The API version this plugin speaks; Anthropic changes the wire format only under a new one.
const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; this bounds a reply when the agent sets no limit, and is
/// within every current model's output limit.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Builds the streaming request for `request` against `base_url` (e.g.
/// `https://api.anthropic.com`). No `x-api-key` header: the host adds it where the manifest
/// binds it.
pub(crate) fn messages(base_url: &str, request: &ChatRequest) -> Request {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    // Anthropic takes the instructions as one top-level field, not as messages.
    let system: Vec<String> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.text())
        .filter(|text| !text.is_empty())
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(turns(request)));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(temperature) = request.temperature.and_then(decimal) {
        body.insert("temperature".into(), temperature);
    }
    body.insert("stream".into(), json!(true));
    Request::post(format!("{}/v1/messages", base_url.trim_end_matches('/')))
        .header("anthropic-version", API_VERSION)
        .header("accept", "text/event-stream")
        .json(&Value::Object(body))
}

/// `0.7f32` widened to f64 is 0.699999988079071; its shortest decimal form is what the caller
/// meant and what the vendor should see.
fn decimal(value: f32) -> Option<Value> {
    let value: f64 = value.to_string().parse().ok()?;
    serde_json::Number::from_f64(value).map(Value::Number)
}

/// The conversation as alternating `user` and `assistant` turns of content blocks.
///
/// Anthropic refuses two consecutive turns of one role, and tool results travel in a `user`
/// turn, so a tool message followed by the user's next words is one turn. It also refuses
/// empty text blocks and turns without blocks.
fn turns(request: &ChatRequest) -> Vec<Value> {
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let role = match message.role {
            Role::System => continue,
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Value> = message
            .content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text(text) if text.is_empty() => None,
                ContentPart::Text(text) => Some(json!({ "type": "text", "text": text })),
                ContentPart::ToolCall(call) => Some(json!({
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": tool_input(&call.arguments),
                })),
                ContentPart::ToolResult(result) => Some(json!({
                    "type": "tool_result",
                    "tool_use_id": result.call_id,
                    "content": result.content,
                    "is_error": result.is_error,
                })),
            })
            .collect();
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut content)| {
            // In a user turn, tool results must come before any text.
            content.sort_by_key(|block| block["type"] != "tool_result");
            json!({ "role": role, "content": content })
        })
        .collect()
}

/// A call's arguments as the JSON object `tool_use.input` must be. Arguments that are not one
/// (a model cut off mid-call) are sent as `{}`: the conversation stays valid, and the tool
/// result already told the model what went wrong.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use kelp_sdk::provider::{Message, ToolCall, ToolResult, ToolSpec};

    use super::*;

    fn message(role: Role, content: Vec<ContentPart>) -> Message {
        Message { role, content }
    }

    fn text(t: &str) -> ContentPart {
        ContentPart::Text(t.into())
    }

    fn call(id: &str, arguments: &str) -> ContentPart {
        ContentPart::ToolCall(ToolCall {
            id: id.into(),
            name: "get_weather".into(),
            arguments: arguments.into(),
        })
    }

    fn result(id: &str, content: &str, is_error: bool) -> ContentPart {
        ContentPart::ToolResult(ToolResult {
            call_id: id.into(),
            content: content.into(),
            is_error,
        })
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "claude-sonnet-4-5".into(),
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
    fn url_method_and_headers() {
        for base in ["https://api.anthropic.com", "https://api.anthropic.com/"] {
            let built = messages(base, &request(Vec::new()));
            assert_eq!(built.method, "POST");
            assert_eq!(built.url, "https://api.anthropic.com/v1/messages");
            assert_eq!(
                built.headers,
                [
                    ("anthropic-version".to_owned(), "2023-06-01".to_owned()),
                    ("accept".to_owned(), "text/event-stream".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]
            );
        }
    }

    #[test]
    fn plain_conversation_with_default_max_tokens() {
        let built = messages(
            "https://api.anthropic.com",
            &request(vec![
                message(Role::System, vec![text("Be brief.")]),
                message(Role::User, vec![text("Hello")]),
                message(Role::Assistant, vec![text("Hi!")]),
                message(Role::System, vec![text("Answer in French.")]),
                message(Role::User, vec![text("How are you?")]),
            ]),
        );
        assert_eq!(
            body(&built),
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 4096,
                "system": "Be brief.\n\nAnswer in French.",
                "messages": [
                    { "role": "user", "content": [{ "type": "text", "text": "Hello" }] },
                    { "role": "assistant", "content": [{ "type": "text", "text": "Hi!" }] },
                    { "role": "user", "content": [{ "type": "text", "text": "How are you?" }] },
                ],
                "stream": true,
            })
        );
    }

    #[test]
    fn tool_round_trip_tools_and_limits() {
        let mut req = request(vec![
            message(Role::User, vec![text("Weather in Paris and Rome?")]),
            message(
                Role::Assistant,
                vec![
                    text("Let me check."),
                    call("toolu_1", r#"{"city":"Paris"}"#),
                    call("toolu_2", r#"{"city":"Ro"#),
                ],
            ),
            message(
                Role::Tool,
                vec![
                    result("toolu_1", "18 °C", false),
                    result("toolu_2", "invalid input: EOF", true),
                ],
            ),
            message(Role::User, vec![text("And tomorrow?")]),
        ]);
        req.tools = vec![ToolSpec::new(
            "get_weather",
            "Current weather",
            json!({ "type": "object", "properties": { "city": { "type": "string" } } }),
        )];
        req.max_tokens = Some(1000);
        req.temperature = Some(0.2);
        assert_eq!(
            body(&messages("https://api.anthropic.com", &req)),
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1000,
                "messages": [
                    { "role": "user", "content": [{ "type": "text", "text": "Weather in Paris and Rome?" }] },
                    {
                        "role": "assistant",
                        "content": [
                            { "type": "text", "text": "Let me check." },
                            { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Paris" } },
                            { "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {} },
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            { "type": "tool_result", "tool_use_id": "toolu_1", "content": "18 °C", "is_error": false },
                            { "type": "tool_result", "tool_use_id": "toolu_2", "content": "invalid input: EOF", "is_error": true },
                            { "type": "text", "text": "And tomorrow?" },
                        ],
                    },
                ],
                "tools": [{
                    "name": "get_weather",
                    "description": "Current weather",
                    "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
                }],
                "temperature": 0.2,
                "stream": true,
            })
        );
    }

    #[test]
    fn same_role_turns_merge_and_results_come_first() {
        let built = messages(
            "https://api.anthropic.com",
            &request(vec![
                message(Role::User, vec![text("one")]),
                message(Role::User, vec![text(""), text("two")]),
                message(Role::Assistant, vec![call("toolu_1", "")]),
                message(Role::Assistant, vec![text("")]),
                message(Role::User, vec![text("also this")]),
                message(Role::Tool, vec![result("toolu_1", "done", false)]),
            ]),
        );
        assert_eq!(
            body(&built)["messages"],
            json!([
                {
                    "role": "user",
                    "content": [
                        { "type": "text", "text": "one" },
                        { "type": "text", "text": "two" },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {} },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        { "type": "tool_result", "tool_use_id": "toolu_1", "content": "done", "is_error": false },
                        { "type": "text", "text": "also this" },
                    ],
                },
            ])
        );
    }

    #[test]
    fn empty_turns_are_left_out() {
        let built = messages(
            "https://api.anthropic.com",
            &request(vec![
                message(Role::System, vec![text("")]),
                message(Role::User, vec![text("hi")]),
                message(Role::Assistant, vec![text("")]),
                message(Role::User, vec![text("there")]),
                message(Role::Assistant, vec![]),
            ]),
        );
        let body = body(&built);
        assert_eq!(body.get("system"), None);
        assert_eq!(
            body["messages"],
            json!([{
                "role": "user",
                "content": [{ "type": "text", "text": "hi" }, { "type": "text", "text": "there" }],
            }])
        );
    }

    #[test]
    fn tool_input_must_be_an_object() {
        assert_eq!(tool_input(r#"{"a":[1,2]}"#), json!({ "a": [1, 2] }));
        for bad in ["", "null", "[1]", "\"x\"", "{\"a\":"] {
            assert_eq!(tool_input(bad), json!({}), "{bad:?}");
        }
    }
}
