//! LLM provider plugins.
//!
//! A provider is sans-IO: [`Provider::prepare`] turns a [`ChatRequest`] into an
//! [`http::Request`](crate::http::Request), the host sends it and streams the response body
//! into a [`Decoder`], which turns bytes into [`StreamEvent`]s. The host owns timeouts, retries
//! and the connection, so a minutes-long completion does not count against the plugin's time.
//!
//! Embeddings work the same way without a stream: [`Provider::prepare_embeddings`] builds the
//! request and [`Provider::parse_embeddings`] reads the whole response. A provider without an
//! embeddings API keeps the defaults, which answer [`ProviderError::Unsupported`].

use std::fmt;

use crate::http::{Request, Response};
pub use crate::tool::ToolSpec;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions from the agent's configuration.
    System,
    /// The person talking to the agent.
    User,
    /// The model.
    Assistant,
    /// Results of tool calls.
    Tool,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The vendor's id of the call, echoed in its [`ToolResult`].
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

/// The result of a tool call, sent back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The [`ToolCall::id`] this answers.
    pub call_id: String,
    /// The tool's output or error message.
    pub content: String,
    /// Whether the call failed.
    pub is_error: bool,
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    /// Text.
    Text(String),
    /// A call the model made (assistant messages).
    ToolCall(ToolCall),
    /// A result of a call (tool messages).
    ToolResult(ToolResult),
}

/// A message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its parts, in order.
    pub content: Vec<ContentPart>,
}

impl Message {
    /// All text parts, concatenated.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (including cached ones).
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from the vendor's cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the vendor's cache.
    pub cache_write_tokens: u64,
}

/// What the agent asks the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model id, as listed by [`Provider::models`] or configured by the operator.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// The tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Upper bound on output tokens.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
}

/// A model the provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The id to put in [`ChatRequest::model`].
    pub id: String,
    /// Context window in tokens, when known.
    pub context_window: Option<u32>,
    /// Maximum output tokens, when known.
    pub max_output_tokens: Option<u32>,
}

impl ModelInfo {
    /// A model with unknown limits.
    pub fn new(id: impl Into<String>) -> Self {
        ModelInfo {
            id: id.into(),
            context_window: None,
            max_output_tokens: None,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// It finished its answer.
    Stop,
    /// It hit the output token limit.
    Length,
    /// It wants tool calls run.
    ToolCalls,
    /// The vendor's content filter stopped it.
    ContentFilter,
    /// It refused.
    Refusal,
    /// Anything else.
    Other,
}

/// The start of a tool call in a response stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallStart {
    /// The vendor's index of this call within the response (parallel calls differ).
    pub index: u32,
    /// The call's id.
    pub id: String,
    /// The tool's name.
    pub name: String,
}

/// More of a tool call's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// The [`ToolCallStart::index`] of the call.
    pub index: u32,
    /// A fragment of the arguments' JSON text; fragments concatenate in order.
    pub arguments: String,
}

/// One thing decoded from a response stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// More answer text.
    TextDelta(String),
    /// More refusal text.
    RefusalDelta(String),
    /// A tool call begins.
    ToolCallStart(ToolCallStart),
    /// More of a tool call's arguments.
    ToolCallDelta(ToolCallDelta),
    /// Token counts (may come more than once; later ones replace earlier ones).
    Usage(Usage),
    /// The model stopped.
    Finish(FinishReason),
}

/// Texts to turn into vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// The embedding model's id.
    pub model: String,
    /// The texts, in order; the answer has one vector per text.
    pub inputs: Vec<String>,
    /// Ask for vectors of this length, where the model can shorten them.
    pub dimensions: Option<u32>,
}

/// The vectors for an [`EmbeddingsRequest`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in the inputs' order.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens counted, when the vendor said.
    pub input_tokens: Option<u64>,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// HTTP 429; retry after this many seconds when the vendor said so.
    RateLimited(Option<u32>),
    /// The vendor is overloaded (e.g. HTTP 529 or 503).
    Overloaded,
    /// The credentials were refused.
    Auth(String),
    /// The conversation does not fit the model's context window.
    ContextLength(String),
    /// The vendor refused the request as malformed.
    InvalidRequest(String),
    /// Anything else.
    Other(String),
    /// The plugin does not offer this call (e.g. embeddings); the text says what it lacks.
    Unsupported(String),
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::RateLimited(Some(secs)) => {
                write!(f, "rate limited, retry after {secs} s")
            }
            ProviderError::RateLimited(None) => f.write_str("rate limited"),
            ProviderError::Overloaded => f.write_str("provider overloaded"),
            ProviderError::Auth(m) => write!(f, "authentication failed: {m}"),
            ProviderError::ContextLength(m) => write!(f, "context too long: {m}"),
            ProviderError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            ProviderError::Other(m) => f.write_str(m),
            ProviderError::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// An LLM provider plugin. Implement it on a unit struct and register it with
/// [`export_provider!`](crate::export_provider).
pub trait Provider {
    /// Decodes one response stream.
    type Decoder: Decoder;

    /// The models this provider offers. The default lists none, which lets the operator name
    /// any model the endpoint accepts.
    fn models() -> Vec<ModelInfo> {
        Vec::new()
    }

    /// Builds the HTTP request for `request`. Read the endpoint and other settings with
    /// [`config`](crate::config); API keys are inserted by the host where the manifest binds
    /// them, never by the plugin.
    fn prepare(request: ChatRequest) -> Result<Request, ProviderError>;

    /// Builds the HTTP request that embeds `request.inputs`. The default answers
    /// [`ProviderError::Unsupported`], for vendors without an embeddings API.
    fn prepare_embeddings(request: EmbeddingsRequest) -> Result<Request, ProviderError> {
        let _ = request;
        Err(ProviderError::Unsupported(NO_EMBEDDINGS.into()))
    }

    /// Reads the whole response to the request that
    /// [`prepare_embeddings`](Provider::prepare_embeddings) built, whatever its status: an error
    /// status becomes the [`ProviderError`] it means. The default answers
    /// [`ProviderError::Unsupported`].
    fn parse_embeddings(response: Response) -> Result<Embeddings, ProviderError> {
        let _ = response;
        Err(ProviderError::Unsupported(NO_EMBEDDINGS.into()))
    }
}

const NO_EMBEDDINGS: &str = "this provider has no embeddings API";

/// Decodes one response stream into events. The host creates one per response, feeds it the
/// body in chunks of any size, then calls [`finish`](Decoder::finish).
pub trait Decoder: Sized + 'static {
    /// Starts decoding a response with `status` and `headers`. A non-2xx status usually means
    /// the body is an error document: remember it and report it from `feed`/`finish`.
    fn new(status: u16, headers: Vec<(String, String)>) -> Self;

    /// Decodes the next chunk of the body; a chunk may end anywhere, even inside a UTF-8
    /// character.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<StreamEvent>, ProviderError>;

    /// The body ended. The default returns no more events.
    fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        Ok(Vec::new())
    }
}

/// Maps an error status of a vendor's HTTP response to a [`ProviderError`], using the body as
/// the message and `retry-after` for 429.
pub fn error_from_status(status: u16, headers: &[(String, String)], body: &[u8]) -> ProviderError {
    let message = String::from_utf8_lossy(body).into_owned();
    match status {
        401 | 403 => ProviderError::Auth(message),
        429 => ProviderError::RateLimited(
            crate::http::header_value(headers, "retry-after").and_then(|v| v.trim().parse().ok()),
        ),
        503 | 529 => ProviderError::Overloaded,
        400 | 404 | 413 | 422 => ProviderError::InvalidRequest(message),
        _ => ProviderError::Other(format!("HTTP {status}: {message}")),
    }
}

/// Registers a [`Provider`] implementation as the component's `provider` export.
///
/// Use it once, in the plugin crate (built with the `provider` feature). On targets other than
/// `wasm32` it expands to nothing, so a plugin's unit tests run natively.
#[macro_export]
macro_rules! export_provider {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __KelpProviderExport = $crate::__private::ProviderExport<$ty>;
            $crate::__private::bindings::provider_world::__kelp_export_provider!(
                __KelpProviderExport with_types_in $crate::__private::bindings::provider_world
            );
        };
        // Elsewhere (native unit tests) there is no component to export to; referring to the
        // implementation keeps it from being reported as dead code.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::provider::Provider>::models;
            let _ = <$ty as $crate::provider::Provider>::prepare;
            let _ = <$ty as $crate::provider::Provider>::prepare_embeddings;
            let _ = <$ty as $crate::provider::Provider>::parse_embeddings;
            let _ =
                <<$ty as $crate::provider::Provider>::Decoder as $crate::provider::Decoder>::new;
            let _ =
                <<$ty as $crate::provider::Provider>::Decoder as $crate::provider::Decoder>::feed;
            let _ =
                <<$ty as $crate::provider::Provider>::Decoder as $crate::provider::Decoder>::finish;
        };
    };
}

#[cfg(feature = "provider")]
pub use export::{DecoderExport, ProviderExport};

#[cfg(feature = "provider")]
mod export {
    use std::cell::RefCell;
    use std::marker::PhantomData;

    use super::{Decoder, Provider, ProviderError, StreamEvent};
    use crate::__private::bindings::provider_world::exports::kelp::plugin::provider as guest;
    use crate::__private::bindings::wit;

    #[doc(hidden)]
    pub struct ProviderExport<P>(PhantomData<P>);

    #[doc(hidden)]
    // The WIT resource's methods take `&self`; the SDK's `Decoder` takes `&mut self` because
    // decoding is stateful, and a component instance is single-threaded.
    pub struct DecoderExport<D>(RefCell<D>);

    impl<P: Provider + 'static> guest::Guest for ProviderExport<P> {
        type Decoder = DecoderExport<P::Decoder>;

        fn models() -> Vec<wit::ModelInfo> {
            P::models().into_iter().map(Into::into).collect()
        }

        fn prepare(req: wit::ChatRequest) -> Result<wit::HttpRequest, wit::ProviderError> {
            P::prepare(req.into()).map(Into::into).map_err(Into::into)
        }

        fn prepare_embeddings(
            req: wit::EmbeddingsRequest,
        ) -> Result<wit::HttpRequest, wit::ProviderError> {
            P::prepare_embeddings(req.into())
                .map(Into::into)
                .map_err(Into::into)
        }

        fn parse_embeddings(
            resp: wit::HttpResponse,
        ) -> Result<wit::Embeddings, wit::ProviderError> {
            P::parse_embeddings(resp.into())
                .map(Into::into)
                .map_err(Into::into)
        }
    }

    fn events(
        result: Result<Vec<StreamEvent>, ProviderError>,
    ) -> Result<Vec<wit::StreamEvent>, wit::ProviderError> {
        result
            .map(|events| events.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    impl<D: Decoder> guest::GuestDecoder for DecoderExport<D> {
        fn new(status: u16, headers: Vec<(String, String)>) -> Self {
            DecoderExport(RefCell::new(D::new(status, headers)))
        }

        fn feed(&self, chunk: Vec<u8>) -> Result<Vec<wit::StreamEvent>, wit::ProviderError> {
            events(self.0.borrow_mut().feed(&chunk))
        }

        fn finish(&self) -> Result<Vec<wit::StreamEvent>, wit::ProviderError> {
            events(self.0.borrow_mut().finish())
        }
    }
}

#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
mod convert {
    use super::*;
    use crate::__private::bindings::wit;

    impl From<wit::Role> for Role {
        fn from(role: wit::Role) -> Self {
            match role {
                wit::Role::System => Role::System,
                wit::Role::User => Role::User,
                wit::Role::Assistant => Role::Assistant,
                wit::Role::Tool => Role::Tool,
            }
        }
    }

    impl From<wit::ContentPart> for ContentPart {
        fn from(part: wit::ContentPart) -> Self {
            match part {
                wit::ContentPart::Text(text) => ContentPart::Text(text),
                wit::ContentPart::ToolCall(c) => ContentPart::ToolCall(ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                }),
                wit::ContentPart::ToolResult(r) => ContentPart::ToolResult(ToolResult {
                    call_id: r.call_id,
                    content: r.content,
                    is_error: r.is_error,
                }),
            }
        }
    }

    impl From<wit::ChatRequest> for ChatRequest {
        fn from(req: wit::ChatRequest) -> Self {
            ChatRequest {
                model: req.model,
                messages: req
                    .messages
                    .into_iter()
                    .map(|m| Message {
                        role: m.role.into(),
                        content: m.content.into_iter().map(Into::into).collect(),
                    })
                    .collect(),
                tools: req.tools.into_iter().map(Into::into).collect(),
                max_tokens: req.max_tokens,
                temperature: req.temperature,
            }
        }
    }

    impl From<ModelInfo> for wit::ModelInfo {
        fn from(m: ModelInfo) -> Self {
            wit::ModelInfo {
                id: m.id,
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
            }
        }
    }

    impl From<FinishReason> for wit::FinishReason {
        fn from(r: FinishReason) -> Self {
            match r {
                FinishReason::Stop => wit::FinishReason::Stop,
                FinishReason::Length => wit::FinishReason::Length,
                FinishReason::ToolCalls => wit::FinishReason::ToolCalls,
                FinishReason::ContentFilter => wit::FinishReason::ContentFilter,
                FinishReason::Refusal => wit::FinishReason::Refusal,
                FinishReason::Other => wit::FinishReason::Other,
            }
        }
    }

    impl From<StreamEvent> for wit::StreamEvent {
        fn from(e: StreamEvent) -> Self {
            match e {
                StreamEvent::TextDelta(t) => wit::StreamEvent::TextDelta(t),
                StreamEvent::RefusalDelta(t) => wit::StreamEvent::RefusalDelta(t),
                StreamEvent::ToolCallStart(s) => {
                    wit::StreamEvent::ToolCallStart(wit::ToolCallStart {
                        index: s.index,
                        id: s.id,
                        name: s.name,
                    })
                }
                StreamEvent::ToolCallDelta(d) => {
                    wit::StreamEvent::ToolCallDelta(wit::ToolCallDelta {
                        index: d.index,
                        arguments: d.arguments,
                    })
                }
                StreamEvent::Usage(u) => wit::StreamEvent::Usage(wit::Usage {
                    input_tokens: u.input_tokens,
                    output_tokens: u.output_tokens,
                    cache_read_tokens: u.cache_read_tokens,
                    cache_write_tokens: u.cache_write_tokens,
                }),
                StreamEvent::Finish(r) => wit::StreamEvent::Finish(r.into()),
            }
        }
    }

    impl From<ProviderError> for wit::ProviderError {
        fn from(e: ProviderError) -> Self {
            match e {
                ProviderError::RateLimited(s) => wit::ProviderError::RateLimited(s),
                ProviderError::Overloaded => wit::ProviderError::Overloaded,
                ProviderError::Auth(m) => wit::ProviderError::Auth(m),
                ProviderError::ContextLength(m) => wit::ProviderError::ContextLength(m),
                ProviderError::InvalidRequest(m) => wit::ProviderError::InvalidRequest(m),
                ProviderError::Other(m) => wit::ProviderError::Other(m),
                ProviderError::Unsupported(m) => wit::ProviderError::Unsupported(m),
            }
        }
    }

    impl From<wit::EmbeddingsRequest> for EmbeddingsRequest {
        fn from(req: wit::EmbeddingsRequest) -> Self {
            EmbeddingsRequest {
                model: req.model,
                inputs: req.inputs,
                dimensions: req.dimensions,
            }
        }
    }

    impl From<Embeddings> for wit::Embeddings {
        fn from(e: Embeddings) -> Self {
            wit::Embeddings {
                vectors: e.vectors,
                input_tokens: e.input_tokens,
            }
        }
    }
}
