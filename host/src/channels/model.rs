//! What the host and a channel plugin say to each other, in the host's own types: events that
//! come in, actions that go out, and what the platform's answers mean. The contract's
//! generated types stay in `plugins::contract`; these are what the rest of the host speaks,
//! and what the channel tables store.

use serde::{Deserialize, Serialize};

/// How a channel's events reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Poll,
    Webhook,
}

/// A chat, and a thread (topic) in it where the platform has them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chat {
    pub id: String,
    pub thread: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Direct,
    Group,
    Broadcast,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: String,
    pub name: Option<String>,
    pub handle: Option<String>,
    pub is_bot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    Image,
    Document,
    Audio,
    Voice,
    Video,
    Sticker,
    Other,
}

/// A file on a message; `locator` is what the platform needs to fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub locator: String,
    pub name: Option<String>,
    pub mime_type: Option<String>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub name: String,
    pub args: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub chat: Chat,
    pub chat_kind: ChatKind,
    pub sender: Sender,
    pub id: String,
    pub text: String,
    /// For the bot: always in a direct chat; in a group when it mentions or replies to the
    /// bot, or is a command.
    pub addressed: bool,
    pub command: Option<Command>,
    pub reply_to: Option<String>,
    pub attachments: Vec<Attachment>,
    pub timestamp_ms: u64,
}

/// A button press.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Press {
    pub id: String,
    pub chat: Chat,
    pub sender: Sender,
    pub message_id: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EventKind {
    Message(Message),
    Edited(Message),
    Press(Press),
    /// The chat has a new id.
    ChatMoved {
        chat: Chat,
        to: String,
    },
    /// The bot was removed from the chat or blocked.
    ChatClosed(Chat),
    /// Nothing for the host; the text says why.
    Ignored {
        reason: String,
    },
}

/// One delivery; `id` is the same when the platform delivers it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
}

/// What a poll brought.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub next_cursor: Option<String>,
    /// The kv writes the plugin made reading the poll: stored in the batch's transaction.
    pub kv: Option<crate::store::plugins::KvWrites>,
}

/// What a webhook delivery held, and the answer for the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookBatch {
    pub events: Vec<Event>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The kv writes the plugin made reading the delivery: stored with its events.
    pub kv: Option<crate::store::plugins::KvWrites>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    Plain,
    Markdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub chat: Chat,
    pub text: String,
    pub format: TextFormat,
    pub reply_to: Option<String>,
    pub buttons: Vec<Vec<Button>>,
    /// Unique per part of a reply, stable across retries.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub chat: Chat,
    pub message_id: String,
    pub text: String,
    pub format: TextFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step", content = "url")]
pub enum Setup {
    Identify,
    UsePolling,
    UseWebhook(String),
}

/// Something the host asks the platform to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Send(Outbound),
    Edit(Edit),
    Typing(Chat),
    AnswerPress {
        id: String,
    },
    Setup(Setup),
    /// Fetch the file of an attachment (its locator).
    FetchFile {
        locator: String,
    },
}

/// Who the bot is on its platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: String,
    pub handle: Option<String>,
    pub name: Option<String>,
}

/// What the platform's answer to one request of an action means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// Done; for a send, the created message's id.
    Done(Option<String>),
    Identified(Identity),
    /// Wait this many seconds before calling again.
    RateLimited(u32),
    /// Send again as plain text.
    BadFormat(String),
    ChatClosed(String),
    /// The chat's new id.
    ChatMoved(String),
    Unauthorized(String),
    Transient(String),
    Failed(String),
    /// The answer to `FetchFile`: the request that downloads the file.
    Download(Request),
}

/// A request a plugin asks the host to send for it (a file's download).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl From<Request> for crate::net::OutboundRequest {
    fn from(r: Request) -> Self {
        crate::net::OutboundRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// Why a poll or a webhook delivery could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "error", content = "detail")]
pub enum ChannelError {
    #[error("the platform is rate-limiting the bot (retry after {0} s)")]
    RateLimited(u32),
    #[error("the platform refused the credentials: {0}")]
    Unauthorized(String),
    #[error("another poller holds the bot's updates: {0}")]
    PollConflict(String),
    #[error("the platform delivers to a webhook, so polling is refused: {0}")]
    WebhookActive(String),
    #[error("unreadable: {0}")]
    Invalid(String),
    #[error("temporary failure: {0}")]
    Transient(String),
    #[error("{0}")]
    Other(String),
    /// The host stopped the plugin, or could not reach the platform.
    #[error("{0}")]
    Host(String),
}
