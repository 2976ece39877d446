//! Provider-neutral chat types: what the agent loop stores, what it sends to provider plugins
//! and what it gets back. The plugin contract's generated types never leave
//! `plugins::contract`; everything else speaks these.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::plugins::ToolSpec;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// One part of a message, as stored in `messages.content_json` (a JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        /// JSON text of the arguments, as the model wrote it.
        arguments: String,
    },
    ToolResult {
        call_id: String,
        content: String,
        is_error: bool,
    },
}

/// A message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Message {
        Message {
            role,
            content: vec![Part::Text { text: text.into() }],
        }
    }

    /// All text parts, concatenated.
    pub fn joined_text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A rough token count (4 bytes per token, the usual rule of thumb for English and code),
    /// for the context guard and cost estimates before the vendor says the real number.
    pub fn estimated_tokens(&self) -> u64 {
        let bytes: usize = self
            .content
            .iter()
            .map(|p| match p {
                Part::Text { text } => text.len(),
                Part::ToolCall {
                    name, arguments, ..
                } => name.len() + arguments.len() + 16,
                Part::ToolResult { content, .. } => content.len() + 16,
            })
            .sum();
        (bytes as u64).div_ceil(4) + 4
    }
}

/// What the agent asks a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// Token counts of one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Refusal,
    Other,
}

/// One thing decoded from a provider's response stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    TextDelta(String),
    RefusalDelta(String),
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    /// Later ones replace earlier ones within one response.
    Usage(Usage),
    Finish(FinishReason),
}

/// A model a provider offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ModelInfo {
    pub id: String,
    pub context_window: Option<u32>,
    pub max_output_tokens: Option<u32>,
}

/// Texts to turn into vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub inputs: Vec<String>,
    /// Vectors of this length, where the model can shorten them.
    pub dimensions: Option<u32>,
}

/// One vector per input of an [`EmbeddingsRequest`], in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub input_tokens: Option<u64>,
}

/// What kind of failure a provider call ended in; decides retries and the error code clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The vendor answered 429.
    RateLimited,
    /// The vendor is overloaded (503/529) or failed on its side (5xx).
    Overloaded,
    /// The key was refused.
    Auth,
    /// The conversation does not fit the model.
    ContextLength,
    /// The vendor refused the request as malformed (unknown model, bad parameter).
    InvalidRequest,
    /// Connection refused, reset or timed out; the stream broke off or went silent.
    Transport,
    /// The provider plugin failed, was stopped by a limit, or decoded garbage.
    Plugin,
    /// Any other vendor error.
    Other,
    /// The plugin does not offer the call (embeddings from a provider without them).
    Unsupported,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderFailure {
    pub kind: FailureKind,
    pub message: String,
    /// The HTTP status the vendor answered, when it answered.
    pub status: Option<u16>,
    /// Seconds the vendor asked to wait before retrying.
    pub retry_after: Option<u32>,
}

impl ProviderFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ProviderFailure {
        ProviderFailure {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// Worth another attempt: the same request may well succeed later.
    pub fn retryable(&self) -> bool {
        match self.kind {
            FailureKind::RateLimited | FailureKind::Overloaded | FailureKind::Transport => true,
            FailureKind::Other => self.status.is_some_and(|s| s >= 500),
            _ => false,
        }
    }

    /// The machine-readable code clients see in `error` events.
    pub fn code(&self) -> &'static str {
        match self.kind {
            FailureKind::RateLimited => "provider_rate_limited",
            FailureKind::Overloaded => "provider_overloaded",
            FailureKind::Auth => "provider_auth",
            FailureKind::ContextLength => "context_length",
            FailureKind::InvalidRequest => "provider_invalid_request",
            FailureKind::Transport => "provider_unreachable",
            FailureKind::Plugin => "provider_plugin_failed",
            FailureKind::Other => "provider_error",
            FailureKind::Unsupported => "provider_unsupported",
        }
    }
}
