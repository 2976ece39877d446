//! Conversions between a contract version's generated types and the host's own, for the
//! records every served version shares in shape (tool specs and errors, chat requests,
//! stream events, models). Each version's bindings are distinct Rust types, so the one text
//! of these conversions is instantiated per version; what a version has of its own (a new
//! error variant) is converted in its module.

macro_rules! shared_conversions {
    ($types:path, provider_error: { $($provider_error_arms:tt)* }) => {
        use $types as wit_types;

        impl From<wit_types::ToolSpec> for $crate::plugins::ToolSpec {
            fn from(spec: wit_types::ToolSpec) -> Self {
                $crate::plugins::ToolSpec {
                    name: spec.name,
                    description: spec.description,
                    input_schema: spec.input_schema,
                }
            }
        }

        impl From<wit_types::ToolError> for $crate::plugins::ToolFailure {
            fn from(error: wit_types::ToolError) -> Self {
                use $crate::plugins::ToolFailure as F;
                match error {
                    wit_types::ToolError::InvalidInput(m) => F::InvalidInput(m),
                    wit_types::ToolError::Denied(m) => F::Denied(m),
                    wit_types::ToolError::Failed(m) => F::Failed(m),
                }
            }
        }

        impl From<&$crate::llm::Message> for wit_types::Message {
            fn from(m: &$crate::llm::Message) -> Self {
                use $crate::llm::{Part, Role};
                wit_types::Message {
                    role: match m.role {
                        Role::System => wit_types::Role::System,
                        Role::User => wit_types::Role::User,
                        Role::Assistant => wit_types::Role::Assistant,
                        Role::Tool => wit_types::Role::Tool,
                    },
                    content: m
                        .content
                        .iter()
                        .map(|p| match p {
                            Part::Text { text } => wit_types::ContentPart::Text(text.clone()),
                            Part::ToolCall {
                                id,
                                name,
                                arguments,
                            } => wit_types::ContentPart::ToolCall(wit_types::ToolCall {
                                id: id.clone(),
                                name: name.clone(),
                                arguments: arguments.clone(),
                            }),
                            Part::ToolResult {
                                call_id,
                                content,
                                is_error,
                            } => wit_types::ContentPart::ToolResult(wit_types::ToolResult {
                                call_id: call_id.clone(),
                                content: content.clone(),
                                is_error: *is_error,
                            }),
                        })
                        .collect(),
                }
            }
        }

        impl From<&$crate::llm::ChatRequest> for wit_types::ChatRequest {
            fn from(r: &$crate::llm::ChatRequest) -> Self {
                wit_types::ChatRequest {
                    model: r.model.clone(),
                    messages: r.messages.iter().map(Into::into).collect(),
                    tools: r
                        .tools
                        .iter()
                        .map(|t| wit_types::ToolSpec {
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

        impl From<wit_types::StreamEvent> for $crate::llm::StreamEvent {
            fn from(e: wit_types::StreamEvent) -> Self {
                use $crate::llm::{FinishReason, StreamEvent, Usage};
                match e {
                    wit_types::StreamEvent::TextDelta(t) => StreamEvent::TextDelta(t),
                    wit_types::StreamEvent::RefusalDelta(t) => StreamEvent::RefusalDelta(t),
                    wit_types::StreamEvent::ToolCallStart(s) => StreamEvent::ToolCallStart {
                        index: s.index,
                        id: s.id,
                        name: s.name,
                    },
                    wit_types::StreamEvent::ToolCallDelta(d) => StreamEvent::ToolCallDelta {
                        index: d.index,
                        arguments: d.arguments,
                    },
                    wit_types::StreamEvent::Usage(u) => StreamEvent::Usage(Usage {
                        input_tokens: u.input_tokens,
                        output_tokens: u.output_tokens,
                        cache_read_tokens: u.cache_read_tokens,
                        cache_write_tokens: u.cache_write_tokens,
                    }),
                    wit_types::StreamEvent::Finish(r) => StreamEvent::Finish(match r {
                        wit_types::FinishReason::Stop => FinishReason::Stop,
                        wit_types::FinishReason::Length => FinishReason::Length,
                        wit_types::FinishReason::ToolCalls => FinishReason::ToolCalls,
                        wit_types::FinishReason::ContentFilter => FinishReason::ContentFilter,
                        wit_types::FinishReason::Refusal => FinishReason::Refusal,
                        wit_types::FinishReason::Other => FinishReason::Other,
                    }),
                }
            }
        }

        impl From<wit_types::ModelInfo> for $crate::llm::ModelInfo {
            fn from(m: wit_types::ModelInfo) -> Self {
                $crate::llm::ModelInfo {
                    id: m.id,
                    context_window: m.context_window,
                    max_output_tokens: m.max_output_tokens,
                }
            }
        }

        impl From<wit_types::HttpRequest> for $crate::net::OutboundRequest {
            fn from(r: wit_types::HttpRequest) -> Self {
                $crate::net::OutboundRequest {
                    method: r.method,
                    url: r.url,
                    headers: r.headers,
                    body: r.body,
                }
            }
        }

        impl From<wit_types::ProviderError> for $crate::llm::ProviderFailure {
            fn from(e: wit_types::ProviderError) -> Self {
                use $crate::llm::FailureKind as K;
                let (kind, message, retry_after) = match e {
                    wit_types::ProviderError::RateLimited(after) => (
                        K::RateLimited,
                        match after {
                            Some(s) => format!(
                                "the provider is rate-limiting requests (retry after {s} s)"
                            ),
                            None => "the provider is rate-limiting requests".to_owned(),
                        },
                        after,
                    ),
                    wit_types::ProviderError::Overloaded => {
                        (K::Overloaded, "the provider is overloaded".to_owned(), None)
                    }
                    wit_types::ProviderError::Auth(m) => (
                        K::Auth,
                        format!("the provider refused the credentials: {m}"),
                        None,
                    ),
                    wit_types::ProviderError::ContextLength(m) => (
                        K::ContextLength,
                        format!("the conversation is too long for the model: {m}"),
                        None,
                    ),
                    wit_types::ProviderError::InvalidRequest(m) => (
                        K::InvalidRequest,
                        format!("the provider refused the request: {m}"),
                        None,
                    ),
                    wit_types::ProviderError::Other(m) => {
                        (K::Other, format!("provider error: {m}"), None)
                    }
                    $($provider_error_arms)*
                };
                $crate::llm::ProviderFailure {
                    kind,
                    message,
                    status: None,
                    retry_after,
                }
            }
        }
    };
}

pub(crate) use shared_conversions;
