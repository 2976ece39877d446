//! Bindings for the frozen contract `kelp:plugin@0.1.0`, and the conversions between its
//! generated types and the host's own. The rest of the host never names a generated type;
//! a new contract version gets a sibling module, not edits here.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use kelp::plugin::{host as host_import, http as http_import, kv as kv_import, types};

use super::ToolSpec;

impl From<types::ToolSpec> for ToolSpec {
    fn from(spec: types::ToolSpec) -> Self {
        ToolSpec {
            name: spec.name,
            description: spec.description,
            input_schema: spec.input_schema,
        }
    }
}

impl From<types::ToolError> for super::ToolFailure {
    fn from(error: types::ToolError) -> Self {
        match error {
            types::ToolError::InvalidInput(m) => super::ToolFailure::InvalidInput(m),
            types::ToolError::Denied(m) => super::ToolFailure::Denied(m),
            types::ToolError::Failed(m) => super::ToolFailure::Failed(m),
        }
    }
}

/// The provider world. Its imports are the same interfaces the tool world generated, so one
/// linker (and one set of host-import implementations) serves both.
pub mod provider_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "provider-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "kelp:plugin/types": super::kelp::plugin::types,
            "kelp:plugin/host": super::kelp::plugin::host,
        },
    });
}

pub use provider_world::{ProviderPlugin, ProviderPluginPre};

use crate::llm;

impl From<&llm::Message> for types::Message {
    fn from(m: &llm::Message) -> Self {
        types::Message {
            role: match m.role {
                llm::Role::System => types::Role::System,
                llm::Role::User => types::Role::User,
                llm::Role::Assistant => types::Role::Assistant,
                llm::Role::Tool => types::Role::Tool,
            },
            content: m
                .content
                .iter()
                .map(|p| match p {
                    llm::Part::Text { text } => types::ContentPart::Text(text.clone()),
                    llm::Part::ToolCall {
                        id,
                        name,
                        arguments,
                    } => types::ContentPart::ToolCall(types::ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: arguments.clone(),
                    }),
                    llm::Part::ToolResult {
                        call_id,
                        content,
                        is_error,
                    } => types::ContentPart::ToolResult(types::ToolResult {
                        call_id: call_id.clone(),
                        content: content.clone(),
                        is_error: *is_error,
                    }),
                })
                .collect(),
        }
    }
}

impl From<&llm::ChatRequest> for types::ChatRequest {
    fn from(r: &llm::ChatRequest) -> Self {
        types::ChatRequest {
            model: r.model.clone(),
            messages: r.messages.iter().map(Into::into).collect(),
            tools: r
                .tools
                .iter()
                .map(|t| types::ToolSpec {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    input_schema: t.input_schema.clone(),
                })
                .collect(),
            max_tokens: r.max_tokens,
            temperature: r.temperature,
        }
    }
}

impl From<types::StreamEvent> for llm::StreamEvent {
    fn from(e: types::StreamEvent) -> Self {
        match e {
            types::StreamEvent::TextDelta(t) => llm::StreamEvent::TextDelta(t),
            types::StreamEvent::RefusalDelta(t) => llm::StreamEvent::RefusalDelta(t),
            types::StreamEvent::ToolCallStart(s) => llm::StreamEvent::ToolCallStart {
                index: s.index,
                id: s.id,
                name: s.name,
            },
            types::StreamEvent::ToolCallDelta(d) => llm::StreamEvent::ToolCallDelta {
                index: d.index,
                arguments: d.arguments,
            },
            types::StreamEvent::Usage(u) => llm::StreamEvent::Usage(llm::Usage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cache_read_tokens: u.cache_read_tokens,
                cache_write_tokens: u.cache_write_tokens,
            }),
            types::StreamEvent::Finish(r) => llm::StreamEvent::Finish(match r {
                types::FinishReason::Stop => llm::FinishReason::Stop,
                types::FinishReason::Length => llm::FinishReason::Length,
                types::FinishReason::ToolCalls => llm::FinishReason::ToolCalls,
                types::FinishReason::ContentFilter => llm::FinishReason::ContentFilter,
                types::FinishReason::Refusal => llm::FinishReason::Refusal,
                types::FinishReason::Other => llm::FinishReason::Other,
            }),
        }
    }
}

impl From<types::ModelInfo> for llm::ModelInfo {
    fn from(m: types::ModelInfo) -> Self {
        llm::ModelInfo {
            id: m.id,
            context_window: m.context_window,
            max_output_tokens: m.max_output_tokens,
        }
    }
}

impl From<types::ProviderError> for llm::ProviderFailure {
    fn from(e: types::ProviderError) -> Self {
        use llm::FailureKind as K;
        let (kind, message, retry_after) = match e {
            types::ProviderError::RateLimited(after) => (
                K::RateLimited,
                match after {
                    Some(s) => {
                        format!("the provider is rate-limiting requests (retry after {s} s)")
                    }
                    None => "the provider is rate-limiting requests".to_owned(),
                },
                after,
            ),
            types::ProviderError::Overloaded => {
                (K::Overloaded, "the provider is overloaded".to_owned(), None)
            }
            types::ProviderError::Auth(m) => (
                K::Auth,
                format!("the provider refused the credentials: {m}"),
                None,
            ),
            types::ProviderError::ContextLength(m) => (
                K::ContextLength,
                format!("the conversation is too long for the model: {m}"),
                None,
            ),
            types::ProviderError::InvalidRequest(m) => (
                K::InvalidRequest,
                format!("the provider refused the request: {m}"),
                None,
            ),
            types::ProviderError::Other(m) => (K::Other, format!("provider error: {m}"), None),
        };
        llm::ProviderFailure {
            kind,
            message,
            status: None,
            retry_after,
        }
    }
}
