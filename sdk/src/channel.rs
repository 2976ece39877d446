//! Chat-channel adapters (Telegram, a generic webhook, ...).
//!
//! A channel is sans-IO: it turns Kelp's [`Action`]s into the platform's HTTP requests and the
//! platform's HTTP into [`Event`]s. The host owns every wait, the cursor, deduplication,
//! retries, sessions, the outbox and who may talk: it stores each [`Batch`] of events together
//! with the next cursor before the platform learns the batch was received, so nothing is lost
//! or delivered twice after a crash. The plugin never sees a secret: the host inserts the bot
//! token where the manifest binds it, and checks (then strips) a webhook's secret header.
//!
//! Helpers for what most platforms need: [`split_text`] and [`utf16_len`] for length limits
//! counted in UTF-16 code units, and [`Outcome::from_status`] / [`ChannelError::from_status`]
//! for the common meanings of a platform's HTTP status.

use std::fmt;

use crate::http::{Request, Response};

mod text;

pub use text::{split_text, utf16_len};

/// How events reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The host asks for events ([`Channel::poll_request`]), waiting as long as it chooses.
    Poll,
    /// The platform POSTs events to the host's `/hooks/channels/{id}`
    /// ([`Channel::handle_webhook`]).
    Webhook,
}

/// What the platform can do beyond sending text. `Features::default()` is none of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// Sent messages can be edited (replies stream by edits).
    pub edit: bool,
    /// A typing indicator can be shown.
    pub typing: bool,
    /// Messages can carry buttons whose presses come back as events.
    pub buttons: bool,
    /// Chats have threads (topics) a reply can go to.
    pub threads: bool,
    /// Inbound messages can carry files.
    pub attachments: bool,
    /// Text can be sent with Markdown formatting (else only plain text is sent).
    pub markdown: bool,
}

/// What the host needs to know to drive the plugin; read once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The modes the platform supports, preferred first.
    pub modes: Vec<Mode>,
    /// What the platform can do beyond sending text.
    pub features: Features,
    /// The longest text one message may carry, in UTF-16 code units (Telegram: 4096). The
    /// host splits longer replies.
    pub max_text_units: u32,
    /// Edits of one message no more often than this (milliseconds).
    pub min_edit_interval_ms: u32,
    /// How long a typing indicator lasts; the host repeats it sooner while the agent works.
    pub typing_interval_ms: u32,
    /// The longest wait a poll may ask for, in seconds.
    pub max_poll_wait_s: u32,
}

/// Where a message is: a chat, and a thread (topic) in it on platforms that have them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chat {
    /// The platform's id of the chat.
    pub id: String,
    /// The thread (topic) within the chat.
    pub thread: Option<String>,
}

impl Chat {
    /// The chat `id`, outside any thread.
    pub fn new(id: impl Into<String>) -> Self {
        Chat {
            id: id.into(),
            thread: None,
        }
    }
}

/// Who is in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    /// One person and the bot.
    Direct,
    /// Several people: the agent answers only when addressed, unless configured otherwise.
    Group,
    /// A broadcast channel the bot posts in.
    Broadcast,
}

/// Who sent a message or pressed a button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The platform's id of the user.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// The platform's handle (Telegram's username), without a leading `@`.
    pub handle: Option<String>,
    /// Whether the sender is a bot.
    pub is_bot: bool,
}

/// What kind of file an [`Attachment`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachmentKind {
    /// A picture.
    Image,
    /// Any file sent as a document.
    Document,
    /// A music or sound file.
    Audio,
    /// A recorded voice message.
    Voice,
    /// A video.
    Video,
    /// A sticker.
    Sticker,
    /// Anything else.
    Other,
}

/// A file on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// What kind of file it is.
    pub kind: AttachmentKind,
    /// What the platform needs to fetch it (Telegram's file id), not a URL with a secret in it.
    pub locator: String,
    /// The file's name.
    pub name: Option<String>,
    /// The file's MIME type.
    pub mime_type: Option<String>,
    /// The file's size in bytes.
    pub size: Option<u64>,
}

/// `/name args` addressed to the bot (Telegram's `/new@kelp_bot hello` is `new`, `hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command without `/` and without the bot's handle.
    pub name: String,
    /// The rest of the text.
    pub args: String,
}

/// A message someone sent in a chat the bot is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Where it was sent.
    pub chat: Chat,
    /// What kind of chat that is.
    pub chat_kind: ChatKind,
    /// Who sent it.
    pub sender: Sender,
    /// The platform's id of this message in its chat.
    pub id: String,
    /// The text, or the caption of an attachment; empty if none.
    pub text: String,
    /// Whether the message is for the bot: in a direct chat always; in a group when it
    /// mentions the bot, replies to it, or is a command.
    pub addressed: bool,
    /// The command the message is, if it is one.
    pub command: Option<Command>,
    /// The id of the message this one replies to.
    pub reply_to: Option<String>,
    /// Its files.
    pub attachments: Vec<Attachment>,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A button press (Telegram's callback query). The host answers it with
/// [`Action::AnswerPress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Press {
    /// The platform's id of the press.
    pub id: String,
    /// Where the button was.
    pub chat: Chat,
    /// Who pressed it.
    pub sender: Sender,
    /// The message that carried the button.
    pub message_id: Option<String>,
    /// The button's data.
    pub data: String,
}

/// A chat that now has another id (Telegram's `migrate_to_chat_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The chat as it was.
    pub chat: Chat,
    /// Its new id.
    pub to: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A new message.
    Message(Message),
    /// A message was edited; it carries the new text.
    Edited(Message),
    /// A button was pressed.
    Press(Press),
    /// A chat has a new id.
    ChatMoved(Moved),
    /// The bot was removed from the chat or blocked by its user.
    ChatClosed(Chat),
    /// Nothing for the host (an update kind the plugin does not handle, or one it could not
    /// read: the text says which). Still an event, so the cursor moves past it.
    Ignored(String),
}

/// One delivery from the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The platform's id of this delivery, the same when the platform delivers it again
    /// (Telegram's `update_id`): the host drops an event whose id it has stored.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
}

/// What one poll returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The events, in order.
    pub events: Vec<Event>,
    /// The cursor to poll from next time; stored by the host with the events in one
    /// transaction, and only then sent (which confirms the batch to the platform). `None`
    /// keeps the current cursor.
    pub next_cursor: Option<String>,
}

/// What a webhook delivery held, and what to answer the platform once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookBatch {
    /// The events, in order.
    pub events: Vec<Event>,
    /// The answer to the platform, sent after the events are stored.
    pub response: Response,
}

/// How the text of an [`Outbound`] or an [`Edit`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextFormat {
    /// Plain text, sent as it is.
    Plain,
    /// CommonMark as the model writes it; the plugin converts it to what the platform takes,
    /// escaping what must be.
    Markdown,
}

/// A button under a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    /// What the button says.
    pub label: String,
    /// What comes back in [`Press::data`] when it is pressed.
    pub data: String,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Where to send it.
    pub chat: Chat,
    /// The text, no longer than [`Info::max_text_units`] (the host has split it).
    pub text: String,
    /// How the text is written.
    pub format: TextFormat,
    /// The message to reply to.
    pub reply_to: Option<String>,
    /// Rows of buttons (empty: none).
    pub buttons: Vec<Vec<Button>>,
    /// Unique per part of a reply and stable across retries: platforms that take an
    /// idempotency key get it.
    pub idempotency_key: String,
}

/// New text for a message the bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Where the message is.
    pub chat: Chat,
    /// The platform's id of the message.
    pub message_id: String,
    /// Its new text.
    pub text: String,
    /// How the text is written.
    pub format: TextFormat,
}

/// Setting up the bot on the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// Learn who the bot is (Telegram's `getMe`): the outcome is [`Outcome::Identified`].
    Identify,
    /// Make the platform hold events for polling (Telegram's `deleteWebhook`).
    UsePolling,
    /// Make the platform deliver events to this URL (Telegram's `setWebhook`; the host inserts
    /// the secret where the manifest binds it).
    UseWebhook(String),
}

/// What the host asks the plugin to do on the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send(Outbound),
    /// Edit a message the bot sent.
    Edit(Edit),
    /// Show the typing indicator in a chat.
    Typing(Chat),
    /// Acknowledge a press (its id).
    AnswerPress(String),
    /// Set up the bot.
    Setup(Setup),
    /// Fetch the file of an attachment (its [`Attachment::locator`]): the outcome is
    /// [`Outcome::Download`].
    FetchFile(String),
}

/// Who the bot is on the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The platform's id of the bot.
    pub id: String,
    /// The bot's handle, without a leading `@`; how users address it in groups.
    pub handle: Option<String>,
    /// The bot's display name.
    pub name: Option<String>,
}

/// What a response to one of an action's requests means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for a send, the platform's id of the created message.
    Done(Option<String>),
    /// The answer to [`Setup::Identify`].
    Identified(Identity),
    /// Wait this many seconds before calling the platform again for this chat (and, where the
    /// platform says so, at all).
    RateLimited(u32),
    /// The platform could not read the formatting: the host sends the text again as plain.
    BadFormat(String),
    /// The chat is gone for the bot (blocked, kicked, deleted): the host marks it closed.
    ChatClosed(String),
    /// The chat has a new id (this one): the host moves its session there and sends again.
    ChatMoved(String),
    /// The credentials were refused: the channel stops until they are fixed.
    Unauthorized(String),
    /// Worth retrying later (5xx, a timeout the platform reported).
    Transient(String),
    /// Retrying will not help; the text says why.
    Failed(String),
    /// The answer to [`Action::FetchFile`]: the request that downloads the file. The host
    /// sends it (inserting secrets where the manifest binds them) and the body of a 2xx answer
    /// is the file.
    Download(crate::http::Request),
}

/// Why a channel call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// 429: retry after this many seconds.
    RateLimited(u32),
    /// The credentials were refused.
    Unauthorized(String),
    /// Another poller holds the update stream (Telegram: "terminated by other getUpdates
    /// request").
    PollConflict(String),
    /// Polling is refused because a webhook is set (Telegram: "can't use getUpdates method
    /// while webhook is active").
    WebhookActive(String),
    /// The request or response made no sense; the text says what.
    Invalid(String),
    /// Worth retrying later.
    Transient(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::RateLimited(secs) => write!(f, "rate limited, retry after {secs} s"),
            ChannelError::Unauthorized(m) => write!(f, "unauthorized: {m}"),
            ChannelError::PollConflict(m) => write!(f, "another poller is active: {m}"),
            ChannelError::WebhookActive(m) => write!(f, "a webhook is set: {m}"),
            ChannelError::Invalid(m) => write!(f, "invalid: {m}"),
            ChannelError::Transient(m) => write!(f, "temporary failure: {m}"),
            ChannelError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ChannelError {}

/// How long to wait after a 429 that did not say, in seconds. Platforms that limit without
/// saying for how long mostly count per second or per minute; ten seconds outlasts the first
/// and spreads retries over the second without leaving a user waiting long.
pub const DEFAULT_RETRY_AFTER_SECONDS: u32 = 10;

/// `HTTP 403: Forbidden: bot was blocked by the user`, or `HTTP 403` without a description.
fn status_text(status: u16, description: &str) -> String {
    let description = description.trim();
    if description.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {description}")
    }
}

impl Outcome {
    /// What a platform's HTTP status commonly means for an action: 2xx is
    /// [`Done(None)`](Outcome::Done), 429 is [`RateLimited`](Outcome::RateLimited) for
    /// `retry_after_seconds` (or [`DEFAULT_RETRY_AFTER_SECONDS`]), 401 is
    /// [`Unauthorized`](Outcome::Unauthorized), 403 is [`ChatClosed`](Outcome::ChatClosed) (the
    /// bot was blocked or removed), 408 and 5xx are [`Transient`](Outcome::Transient), other
    /// statuses [`Failed`](Outcome::Failed). `description` is the platform's explanation, for
    /// the text.
    ///
    /// Check first what only the platform's own answer tells: a created message's id, a
    /// formatting error ([`BadFormat`](Outcome::BadFormat)), a chat that moved.
    pub fn from_status(status: u16, retry_after_seconds: Option<u32>, description: &str) -> Self {
        let text = || status_text(status, description);
        match status {
            200..=299 => Outcome::Done(None),
            429 => Outcome::RateLimited(retry_after_seconds.unwrap_or(DEFAULT_RETRY_AFTER_SECONDS)),
            401 => Outcome::Unauthorized(text()),
            403 => Outcome::ChatClosed(text()),
            408 | 500..=599 => Outcome::Transient(text()),
            _ => Outcome::Failed(text()),
        }
    }
}

impl ChannelError {
    /// What a platform's error status commonly means for a poll: 429 is
    /// [`RateLimited`](ChannelError::RateLimited) for `retry_after_seconds` (or
    /// [`DEFAULT_RETRY_AFTER_SECONDS`]), 401 and 403 are
    /// [`Unauthorized`](ChannelError::Unauthorized), 408 and 5xx are
    /// [`Transient`](ChannelError::Transient), other 4xx are
    /// [`Invalid`](ChannelError::Invalid) and anything else [`Other`](ChannelError::Other).
    ///
    /// A 409 says someone else holds the update stream, and only the platform's description
    /// says who: the caller reads it and passes [`ChannelError::PollConflict`] or
    /// [`ChannelError::WebhookActive`] as `conflict`, which receives the text.
    pub fn from_status(
        status: u16,
        retry_after_seconds: Option<u32>,
        description: &str,
        conflict: impl FnOnce(String) -> ChannelError,
    ) -> Self {
        let text = || status_text(status, description);
        match status {
            429 => ChannelError::RateLimited(
                retry_after_seconds.unwrap_or(DEFAULT_RETRY_AFTER_SECONDS),
            ),
            401 | 403 => ChannelError::Unauthorized(text()),
            409 => conflict(text()),
            408 | 500..=599 => ChannelError::Transient(text()),
            400..=499 => ChannelError::Invalid(text()),
            _ => ChannelError::Other(text()),
        }
    }
}

/// A chat-channel adapter. Implement it on a unit struct and register it with
/// [`export_channel!`](crate::export_channel).
///
/// A platform is reached by polling ([`poll_request`](Channel::poll_request) +
/// [`parse_poll`](Channel::parse_poll)), by webhooks ([`handle_webhook`](Channel::handle_webhook))
/// or both, as [`Info::modes`] says; the defaults of a mode the plugin does not offer refuse
/// with [`ChannelError::Invalid`].
pub trait Channel {
    /// What the host needs to know to drive the plugin; read once at load.
    fn describe() -> Info;

    /// The request that asks for events after `cursor` (`None`: the first poll), waiting up to
    /// `wait_seconds` (at most [`Info::max_poll_wait_s`]) for one. The host sends it, however
    /// long it takes, and hands the response to [`parse_poll`](Channel::parse_poll).
    fn poll_request(cursor: Option<String>, wait_seconds: u32) -> Result<Request, ChannelError> {
        let _ = (cursor, wait_seconds);
        Err(ChannelError::Invalid("this channel does not poll".into()))
    }

    /// Reads the response to a poll, whatever its status. An update it cannot read becomes an
    /// [`EventKind::Ignored`] event, never an error: one bad update must not stall the channel.
    fn parse_poll(response: Response) -> Result<Batch, ChannelError> {
        let _ = response;
        Err(ChannelError::Invalid("this channel does not poll".into()))
    }

    /// Reads a webhook delivery, which the host has already authenticated.
    fn handle_webhook(request: Request) -> Result<WebhookBatch, ChannelError> {
        let _ = request;
        Err(ChannelError::Invalid(
            "this channel does not take webhooks".into(),
        ))
    }

    /// The requests that carry out `action`, in order. The host sends them one by one and
    /// asks [`read_response`](Channel::read_response) what each answer means.
    fn prepare(action: Action) -> Result<Vec<Request>, ChannelError>;

    /// What `response`, the answer to request `index` of [`prepare`](Channel::prepare)`(action)`,
    /// means.
    fn read_response(action: Action, index: u32, response: Response) -> Outcome;
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
            let _ = <$ty as $crate::channel::Channel>::describe;
            let _ = <$ty as $crate::channel::Channel>::poll_request;
            let _ = <$ty as $crate::channel::Channel>::parse_poll;
            let _ = <$ty as $crate::channel::Channel>::handle_webhook;
            let _ = <$ty as $crate::channel::Channel>::prepare;
            let _ = <$ty as $crate::channel::Channel>::read_response;
        };
    };
}

#[cfg(feature = "channel")]
mod export;

#[cfg(feature = "channel")]
pub use export::ChannelExport;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_statuses() {
        let cases = [
            (200, None, "", Outcome::Done(None)),
            (204, None, "", Outcome::Done(None)),
            (429, Some(7), "Too Many Requests", Outcome::RateLimited(7)),
            (
                429,
                None,
                "",
                Outcome::RateLimited(DEFAULT_RETRY_AFTER_SECONDS),
            ),
            (
                401,
                None,
                "Unauthorized",
                Outcome::Unauthorized("HTTP 401: Unauthorized".into()),
            ),
            (
                403,
                None,
                "Forbidden: bot was blocked by the user",
                Outcome::ChatClosed("HTTP 403: Forbidden: bot was blocked by the user".into()),
            ),
            (
                502,
                None,
                " Bad Gateway\n",
                Outcome::Transient("HTTP 502: Bad Gateway".into()),
            ),
            (408, None, "", Outcome::Transient("HTTP 408".into())),
            (
                400,
                None,
                "Bad Request: chat not found",
                Outcome::Failed("HTTP 400: Bad Request: chat not found".into()),
            ),
            (
                404,
                None,
                "Not Found",
                Outcome::Failed("HTTP 404: Not Found".into()),
            ),
            (302, None, "", Outcome::Failed("HTTP 302".into())),
        ];
        for (status, retry, description, expected) in cases {
            assert_eq!(
                Outcome::from_status(status, retry, description),
                expected,
                "{status}"
            );
        }
    }

    #[test]
    fn poll_errors_of_statuses() {
        let poll = |status, retry, description| {
            ChannelError::from_status(status, retry, description, ChannelError::PollConflict)
        };
        assert_eq!(poll(429, Some(3), ""), ChannelError::RateLimited(3));
        assert_eq!(
            poll(429, None, ""),
            ChannelError::RateLimited(DEFAULT_RETRY_AFTER_SECONDS)
        );
        assert_eq!(
            poll(401, None, "Unauthorized"),
            ChannelError::Unauthorized("HTTP 401: Unauthorized".into())
        );
        assert_eq!(
            poll(403, None, ""),
            ChannelError::Unauthorized("HTTP 403".into())
        );
        assert_eq!(
            poll(500, None, "Internal Server Error"),
            ChannelError::Transient("HTTP 500: Internal Server Error".into())
        );
        assert_eq!(
            poll(400, None, "Bad Request: wrong offset"),
            ChannelError::Invalid("HTTP 400: Bad Request: wrong offset".into())
        );
        assert_eq!(poll(101, None, ""), ChannelError::Other("HTTP 101".into()));

        // The caller tells the two kinds of 409 apart; the helper only passes the text on.
        let conflict = "Conflict: terminated by other getUpdates request; make sure that only \
                        one bot instance is running";
        assert_eq!(
            poll(409, None, conflict),
            ChannelError::PollConflict(format!("HTTP 409: {conflict}"))
        );
        let webhook = "Conflict: can't use getUpdates method while webhook is active; use \
                       deleteWebhook to delete the webhook first";
        assert_eq!(
            ChannelError::from_status(409, None, webhook, ChannelError::WebhookActive),
            ChannelError::WebhookActive(format!("HTTP 409: {webhook}"))
        );
    }
}
