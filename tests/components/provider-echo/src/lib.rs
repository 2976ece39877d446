//! `test/provider-echo`: the smallest OpenAI-compatible provider, so the host can load and
//! version-check a provider-kind component and stream a completion from a fake vendor.
//!
//! It also shows what the host handed its decoder: an `x-echo` response header comes out as a
//! first text delta `[x-echo: VALUE]`, so a test can see whether a header reached the guest.

use kelp_sdk::http::Request;
use kelp_sdk::provider::{
    ChatRequest, Decoder, FinishReason, ModelInfo, Provider, ProviderError, Role, StreamEvent,
    error_from_status,
};
use kelp_sdk::stream::SseParser;
use serde_json::{Value, json};

struct Echo;

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

impl Provider for Echo {
    type Decoder = ChatDecoder;

    fn models() -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: "echo-1".into(),
            context_window: Some(8192),
            max_output_tokens: Some(1024),
        }]
    }

    fn prepare(request: ChatRequest) -> Result<Request, ProviderError> {
        let base_url: String = kelp_sdk::config("base_url")
            .ok_or_else(|| ProviderError::InvalidRequest("config `base_url` is not set".into()))?;
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({ "role": role(m.role), "content": m.text() }))
            .collect();
        let mut body = json!({ "model": request.model, "messages": messages, "stream": true });
        if let Some(max) = request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        Ok(Request::post(format!(
            "{}/v1/chat/completions",
            base_url.trim_end_matches('/')
        ))
        .header("accept", "text/event-stream")
        .json(&body))
    }
}

struct ChatDecoder {
    status: u16,
    headers: Vec<(String, String)>,
    error_body: Vec<u8>,
    sse: SseParser,
    /// The `x-echo` header's delta, until the first events go out.
    echo: Option<String>,
}

impl ChatDecoder {
    fn decode(&self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        if data == "[DONE]" {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|err| ProviderError::Other(format!("bad stream chunk: {err}")))?;
        let mut events = Vec::new();
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            events.push(StreamEvent::TextDelta(text.to_owned()));
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
}

impl Decoder for ChatDecoder {
    fn new(status: u16, headers: Vec<(String, String)>) -> Self {
        let echo = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("x-echo"))
            .map(|(_, value)| format!("[x-echo: {value}]"));
        ChatDecoder {
            status,
            headers,
            error_body: Vec::new(),
            sse: SseParser::new(),
            echo,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<StreamEvent>, ProviderError> {
        // An error status carries a JSON error document, not a stream: keep it for `finish`.
        if !(200..300).contains(&self.status) {
            self.error_body.extend_from_slice(chunk);
            return Ok(Vec::new());
        }
        let mut events: Vec<StreamEvent> = self
            .echo
            .take()
            .map(StreamEvent::TextDelta)
            .into_iter()
            .collect();
        for event in self.sse.feed(chunk) {
            events.extend(self.decode(&event.data)?);
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
            events.extend(self.decode(&event.data)?);
        }
        Ok(events)
    }
}

kelp_sdk::export_provider!(Echo);
