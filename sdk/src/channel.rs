//! Chat-channel adapters (Telegram, ...).
//!
//! A channel is sans-IO: it builds the HTTP requests (long polls, sends) and parses the
//! responses and webhooks, while the host does the network I/O and stores each batch of inbound
//! messages together with the next cursor, so that nothing is delivered twice after a crash.

use std::fmt;

use crate::http::{Request, Response};

/// A message someone sent to the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The platform's id of the chat.
    pub chat_id: String,
    /// The platform's id of the sender.
    pub sender_id: String,
    /// The sender's display name, when known.
    pub sender_name: Option<String>,
    /// The platform's id of the message.
    pub message_id: String,
    /// The text.
    pub text: String,
    /// The id of the message this one replies to.
    pub reply_to: Option<String>,
    /// The thread or topic within the chat.
    pub thread_id: Option<String>,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A message the agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The chat to send to.
    pub chat_id: String,
    /// The text (the adapter splits or formats it as the platform needs).
    pub text: String,
    /// The message to reply to.
    pub reply_to: Option<String>,
    /// The thread or topic within the chat.
    pub thread_id: Option<String>,
}

/// The result of one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollBatch {
    /// New messages, in order.
    pub messages: Vec<InboundMessage>,
    /// The cursor to poll from next time; stored by the host with the messages in one
    /// transaction. `None` keeps the current cursor.
    pub next_cursor: Option<String>,
}

/// The result of handling one webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// Messages carried by the webhook.
    pub messages: Vec<InboundMessage>,
    /// What the host answers the platform.
    pub response: Response,
}

/// Why a channel operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The platform asked to slow down; retry after this many seconds when it said so.
    RateLimited(Option<u32>),
    /// The platform refused the credentials.
    Auth(String),
    /// Another poller holds the platform's update stream (Telegram's 409).
    Conflict(String),
    /// Malformed input (a response or webhook the adapter cannot parse, or an unsupported
    /// operation).
    Invalid(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::RateLimited(Some(secs)) => {
                write!(f, "rate limited, retry after {secs} s")
            }
            ChannelError::RateLimited(None) => f.write_str("rate limited"),
            ChannelError::Auth(m) => write!(f, "authentication failed: {m}"),
            ChannelError::Conflict(m) => write!(f, "conflict: {m}"),
            ChannelError::Invalid(m) => write!(f, "invalid: {m}"),
            ChannelError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ChannelError {}

/// A chat-channel adapter. Implement it on a unit struct and register it with
/// [`export_channel!`](crate::export_channel). A platform needs either polling
/// (`poll_request` + `parse_poll`) or webhooks (`handle_webhook`); the defaults of the
/// other pair refuse with [`ChannelError::Invalid`].
pub trait Channel {
    /// The request that fetches updates after `cursor` (`None`: from the start). The host sends
    /// it, however long it takes, and hands the response to [`parse_poll`](Channel::parse_poll).
    fn poll_request(cursor: Option<String>) -> Result<Request, ChannelError> {
        let _ = cursor;
        Err(ChannelError::Invalid("this channel does not poll".into()))
    }

    /// Parses the response to a poll request.
    fn parse_poll(response: Response) -> Result<PollBatch, ChannelError> {
        let _ = response;
        Err(ChannelError::Invalid("this channel does not poll".into()))
    }

    /// Handles a webhook request, which the host has already authenticated.
    fn handle_webhook(request: Request) -> Result<WebhookReply, ChannelError> {
        let _ = request;
        Err(ChannelError::Invalid(
            "this channel does not take webhooks".into(),
        ))
    }

    /// The requests that deliver `message` (several when the text is too long for one).
    fn send_requests(message: OutboundMessage) -> Result<Vec<Request>, ChannelError>;
}

/// Registers a [`Channel`] implementation as the component's `channel` export.
///
/// Use it once, in the plugin crate (built with the `channel` feature). On targets other than
/// `wasm32` it expands to nothing, so a plugin's unit tests run natively.
#[macro_export]
macro_rules! export_channel {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __KelpChannelExport = $crate::__private::ChannelExport<$ty>;
            $crate::__private::bindings::channel_world::__kelp_export_channel!(
                __KelpChannelExport with_types_in $crate::__private::bindings::channel_world
            );
        };
        // Elsewhere (native unit tests) there is no component to export to; referring to the
        // implementation keeps it from being reported as dead code.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::channel::Channel>::poll_request;
            let _ = <$ty as $crate::channel::Channel>::parse_poll;
            let _ = <$ty as $crate::channel::Channel>::handle_webhook;
            let _ = <$ty as $crate::channel::Channel>::send_requests;
        };
    };
}

#[cfg(feature = "channel")]
pub use export::ChannelExport;

#[cfg(feature = "channel")]
mod export {
    use std::marker::PhantomData;

    use super::*;
    use crate::__private::bindings::channel_world::exports::kelp::plugin::channel as guest;
    use crate::__private::bindings::wit;

    #[doc(hidden)]
    pub struct ChannelExport<C>(PhantomData<C>);

    impl<C: Channel> guest::Guest for ChannelExport<C> {
        fn poll_request(cursor: Option<String>) -> Result<wit::HttpRequest, wit::ChannelError> {
            C::poll_request(cursor).map(Into::into).map_err(Into::into)
        }

        fn parse_poll(resp: wit::HttpResponse) -> Result<wit::PollBatch, wit::ChannelError> {
            C::parse_poll(resp.into())
                .map(|batch| wit::PollBatch {
                    messages: batch.messages.into_iter().map(Into::into).collect(),
                    next_cursor: batch.next_cursor,
                })
                .map_err(Into::into)
        }

        fn handle_webhook(req: wit::HttpRequest) -> Result<wit::WebhookReply, wit::ChannelError> {
            C::handle_webhook(req.into())
                .map(|reply| wit::WebhookReply {
                    messages: reply.messages.into_iter().map(Into::into).collect(),
                    response: reply.response.into(),
                })
                .map_err(Into::into)
        }

        fn send_requests(
            out: wit::OutboundMessage,
        ) -> Result<Vec<wit::HttpRequest>, wit::ChannelError> {
            let message = OutboundMessage {
                chat_id: out.chat_id,
                text: out.text,
                reply_to: out.reply_to,
                thread_id: out.thread_id,
            };
            C::send_requests(message)
                .map(|requests| requests.into_iter().map(Into::into).collect())
                .map_err(Into::into)
        }
    }

    impl From<InboundMessage> for wit::InboundMessage {
        fn from(m: InboundMessage) -> Self {
            wit::InboundMessage {
                chat_id: m.chat_id,
                sender_id: m.sender_id,
                sender_name: m.sender_name,
                message_id: m.message_id,
                text: m.text,
                reply_to: m.reply_to,
                thread_id: m.thread_id,
                timestamp_ms: m.timestamp_ms,
            }
        }
    }

    impl From<ChannelError> for wit::ChannelError {
        fn from(e: ChannelError) -> Self {
            match e {
                ChannelError::RateLimited(s) => wit::ChannelError::RateLimited(s),
                ChannelError::Auth(m) => wit::ChannelError::Auth(m),
                ChannelError::Conflict(m) => wit::ChannelError::Conflict(m),
                ChannelError::Invalid(m) => wit::ChannelError::Invalid(m),
                ChannelError::Other(m) => wit::ChannelError::Other(m),
            }
        }
    }
}
