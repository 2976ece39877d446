use kelp_sdk::http::Request;
use kelp_sdk::provider::{
    ChatRequest, ContentPart, Decoder, FinishReason, ModelInfo, Provider, ProviderError, Role,
    StreamEvent, ToolCallDelta, ToolCallStart, Usage, error_from_status,
};
use kelp_sdk::stream::SseParser;
use serde_json::{Value, json};

struct Plugin;

fn message_json(role: Role, part: &ContentPart) -> Value {
    match part {
        ContentPart::Text(text) => json!({
            "role": match role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            },
            "content": text,
        }),
        ContentPart::ToolCall(call) => json!({
            "role": "assistant",
            "tool_calls": [{
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments },
            }],
        }),
        ContentPart::ToolResult(result) => json!({
            "role": "tool",
            "tool_call_id": result.call_id,
            "content": result.content,
        }),
    }
}

impl Provider for Plugin {
    type Decoder = ChatDecoder;

    fn models() -> Vec<ModelInfo> {
        vec![ModelInfo::new("gpt-4o-mini")]
    }

    fn prepare(request: ChatRequest) -> Result<Request, ProviderError> {
        let base_url: String = kelp_sdk::config("base_url")
            .ok_or_else(|| ProviderError::InvalidRequest("config `base_url` is not set".into()))?;
        let messages: Vec<Value> = request
            .messages
            .iter()
            .flat_map(|m| m.content.iter().map(move |part| message_json(m.role, part)))
            .collect();
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                })
            })
            .collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        if let Some(max) = request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        let url = format!("{}/v1/chat/completions", base_url.trim_end_matches('/'));
        Ok(Request::post(url)
            .header("accept", "text/event-stream")
            .json(&body))
    }

    // `prepare_embeddings` and `parse_embeddings` keep their defaults, which answer
    // `ProviderError::Unsupported`: implement them if the vendor has an embeddings API.
}

struct ChatDecoder {
    status: u16,
    headers: Vec<(String, String)>,
    error_body: Vec<u8>,
    sse: SseParser,
}

fn decode(data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
    if data == "[DONE]" {
        return Ok(Vec::new());
    }
    let chunk: Value = serde_json::from_str(data)
        .map_err(|err| ProviderError::Other(format!("bad stream chunk: {err}")))?;
    let mut events = Vec::new();
    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
        events.push(StreamEvent::Usage(Usage {
            input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
            output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            ..Usage::default()
        }));
    }
    let choice = &chunk["choices"][0];
    let delta = &choice["delta"];
    if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
        events.push(StreamEvent::TextDelta(text.to_owned()));
    }
    for call in delta["tool_calls"].as_array().into_iter().flatten() {
        let index = call["index"].as_u64().unwrap_or(0) as u32;
        if let Some(id) = call["id"].as_str() {
            events.push(StreamEvent::ToolCallStart(ToolCallStart {
                index,
                id: id.to_owned(),
                name: call["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }));
        }
        if let Some(args) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            events.push(StreamEvent::ToolCallDelta(ToolCallDelta {
                index,
                arguments: args.to_owned(),
            }));
        }
    }
    if let Some(reason) = choice["finish_reason"].as_str() {
        events.push(StreamEvent::Finish(match reason {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }));
    }
    Ok(events)
}

impl Decoder for ChatDecoder {
    fn new(status: u16, headers: Vec<(String, String)>) -> Self {
        ChatDecoder {
            status,
            headers,
            error_body: Vec::new(),
            sse: SseParser::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<StreamEvent>, ProviderError> {
        // An error status carries an error document, not a stream: keep it for `finish`.
        if !(200..300).contains(&self.status) {
            self.error_body.extend_from_slice(chunk);
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        for event in self.sse.feed(chunk) {
            events.extend(decode(&event.data)?);
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        if !(200..300).contains(&self.status) {
            return Err(error_from_status(
                self.status,
                &self.headers,
                &self.error_body,
            ));
        }
        let mut events = Vec::new();
        for event in self.sse.finish() {
            events.extend(decode(&event.data)?);
        }
        Ok(events)
    }
}

kelp_sdk::export_provider!(Plugin);
