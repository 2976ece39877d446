//! Telegram → Kelp: the `getUpdates` request, and updates (polled or delivered to the webhook)
//! read into events.

use kelp_sdk::channel::{
    Attachment, AttachmentKind, Batch, ChannelError, Chat, ChatKind, Command, Event, EventKind,
    Message, Moved, Press, Sender, WebhookBatch,
};
use kelp_sdk::http::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ALLOWED_UPDATES, Answer, BotApi};
use crate::identity::Bot;

/// The `getUpdates` call for the updates after `cursor` (the last stored `update_id` + 1),
/// waiting up to `wait_seconds` for one.
pub fn poll_request(
    api: &BotApi,
    cursor: Option<&str>,
    wait_seconds: u32,
) -> Result<Request, ChannelError> {
    let mut params = json!({
        "timeout": wait_seconds,
        "allowed_updates": ALLOWED_UPDATES,
    });
    // Without an offset Telegram sends what it holds from the oldest unconfirmed update on.
    if let Some(cursor) = cursor {
        let offset: i64 = cursor
            .parse()
            .map_err(|_| ChannelError::Invalid(format!("cursor `{cursor}` is not an update id")))?;
        params["offset"] = offset.into();
    }
    Ok(api.call("getUpdates", &params))
}

/// Reads a `getUpdates` answer. The next cursor is past the last update, read or not: an update
/// this plugin cannot read is an `Ignored` event, and polling from it again would return it
/// forever.
pub fn parse_poll(response: &Response, bot: Option<&Bot>) -> Result<Batch, ChannelError> {
    let result = match crate::api::read(response) {
        Answer::Ok(result) => result,
        Answer::Failed(error) => return Err(error.poll_error()),
        Answer::Unreadable(why) => return Err(ChannelError::Invalid(why)),
    };
    let Value::Array(updates) = result else {
        return Err(ChannelError::Invalid(format!(
            "the getUpdates result is not a list of updates: {}",
            kind_of(&result)
        )));
    };
    let next_cursor = updates
        .iter()
        .filter_map(update_id)
        .max()
        .map(|last| (last + 1).to_string());
    Ok(Batch {
        events: updates.iter().map(|update| event(update, bot)).collect(),
        next_cursor,
    })
}

/// Reads one webhook delivery, which is one update. The answer is always 200 with an empty
/// body: Telegram delivers an update again and again until it gets a 2xx, so a body this plugin
/// cannot read becomes an `Ignored` event (stored, and so visible) rather than an error that
/// would have Telegram retry it forever and hold back every update behind it.
pub fn webhook(request: &Request, bot: Option<&Bot>) -> WebhookBatch {
    let body = request.body.as_deref().unwrap_or_default();
    let event = match serde_json::from_slice::<Value>(body) {
        Ok(update) => event(&update, bot),
        Err(err) => Event {
            id: unreadable_id(body),
            kind: EventKind::Ignored(format!("a webhook body that is not JSON: {err}")),
        },
    };
    WebhookBatch {
        events: vec![event],
        response: Response::new(200, Vec::new()),
    }
}

fn update_id(update: &Value) -> Option<i64> {
    update.get("update_id")?.as_i64()
}

/// One update as an event; one it cannot read is an `Ignored` event saying why.
fn event(update: &Value, bot: Option<&Bot>) -> Event {
    let Some(id) = update_id(update) else {
        return Event {
            id: unreadable_id(update.to_string().as_bytes()),
            kind: EventKind::Ignored(format!(
                "an update without an update_id: {}",
                kind_of(update)
            )),
        };
    };
    let kind = match update
        .as_object()
        .and_then(|fields| fields.iter().find(|(name, _)| name.as_str() != "update_id"))
    {
        None => EventKind::Ignored(format!("update {id} holds nothing")),
        Some((name, value)) => read_update(name, value, bot).unwrap_or_else(|err| {
            EventKind::Ignored(format!("update {id}: unreadable `{name}`: {err}"))
        }),
    };
    Event {
        id: id.to_string(),
        kind,
    }
}

/// An update's one field besides `update_id`, which names its kind.
fn read_update(
    name: &str,
    value: &Value,
    bot: Option<&Bot>,
) -> Result<EventKind, serde_json::Error> {
    Ok(match name {
        // Channel posts come only where the bot was told to receive them (a webhook set up
        // by hand), but they read the same.
        "message" | "channel_post" => new_message(TgMessage::deserialize(value)?, bot),
        "edited_message" | "edited_channel_post" => {
            EventKind::Edited(message(TgMessage::deserialize(value)?, bot))
        }
        "callback_query" => press(CallbackQuery::deserialize(value)?),
        "my_chat_member" => membership(ChatMemberUpdated::deserialize(value)?),
        other => EventKind::Ignored(format!("`{other}` updates are not handled")),
    })
}

fn new_message(m: TgMessage, bot: Option<&Bot>) -> EventKind {
    // A group that became a supergroup says so in a service message in the old chat.
    if let Some(to) = m.migrate_to_chat_id {
        return EventKind::ChatMoved(Moved {
            chat: Chat::new(m.chat.id.to_string()),
            to: to.to_string(),
        });
    }
    if m.migrate_from_chat_id.is_some() {
        return EventKind::Ignored(format!(
            "chat {} was migrated here from a group (the move came as its own event)",
            m.chat.id
        ));
    }
    EventKind::Message(message(m, bot))
}

fn message(m: TgMessage, bot: Option<&Bot>) -> Message {
    let chat_kind = match m.chat.kind.as_str() {
        "private" => ChatKind::Direct,
        "channel" => ChatKind::Broadcast,
        // "group", "supergroup", and any kind Telegram adds: a chat of several people, where
        // the bot answers only when addressed.
        _ => ChatKind::Group,
    };
    // In a forum every message of a topic also "replies" to the topic's first message; that is
    // where it is, not what it answers.
    let replied = m
        .reply_to_message
        .as_ref()
        .filter(|replied| !(m.is_topic_message && Some(replied.message_id) == m.message_thread_id));
    let (text, entities) = match (m.text, m.caption) {
        (Some(text), _) => (text, m.entities),
        (None, Some(caption)) => (caption, m.caption_entities),
        (None, None) => (String::new(), Vec::new()),
    };
    let (command, command_for_us) = match command(&text, &entities, bot) {
        Some((command, for_us)) => (for_us.then_some(command), for_us),
        None => (None, false),
    };
    let addressed = chat_kind == ChatKind::Direct
        || command_for_us
        || mentions(&text, &entities, bot)
        || replied
            .and_then(|replied| replied.from.as_ref())
            .zip(bot)
            .is_some_and(|(author, bot)| author.id.to_string() == bot.id);
    let sender = match m.from {
        Some(user) => sender(user),
        // Anonymous group admins and channels post as a chat.
        None => {
            let chat = m.sender_chat.unwrap_or_else(|| m.chat.clone());
            Sender {
                id: chat.id.to_string(),
                name: chat.title,
                handle: chat.username,
                is_bot: false,
            }
        }
    };
    let mut attachments = Vec::new();
    // Telegram sends each photo in several sizes; the largest is the photo.
    if let Some(photo) = m
        .photo
        .iter()
        .max_by_key(|p| u64::from(p.width) * u64::from(p.height))
    {
        attachments.push(Attachment {
            kind: AttachmentKind::Image,
            locator: photo.file_id.clone(),
            name: None,
            mime_type: None,
            size: photo.file_size,
        });
    }
    for (kind, file) in [
        (AttachmentKind::Document, m.document),
        (AttachmentKind::Audio, m.audio),
        (AttachmentKind::Voice, m.voice),
        (AttachmentKind::Video, m.video),
        (AttachmentKind::Video, m.video_note),
        (AttachmentKind::Sticker, m.sticker),
    ] {
        if let Some(file) = file {
            attachments.push(Attachment {
                kind,
                locator: file.file_id,
                name: file.file_name,
                mime_type: file.mime_type,
                size: file.file_size,
            });
        }
    }
    Message {
        chat: Chat {
            id: m.chat.id.to_string(),
            thread: topic(m.is_topic_message, m.message_thread_id),
        },
        chat_kind,
        sender,
        id: m.message_id.to_string(),
        text,
        addressed,
        command,
        reply_to: replied.map(|replied| replied.message_id.to_string()),
        attachments,
        timestamp_ms: m.date.saturating_mul(1000),
    }
}

/// The forum topic a message is in. A `message_thread_id` without `is_topic_message` names a
/// reply thread in an ordinary group, which is no place a reply can be sent to.
fn topic(is_topic_message: bool, thread: Option<i64>) -> Option<String> {
    thread.filter(|_| is_topic_message).map(|t| t.to_string())
}

fn sender(user: User) -> Sender {
    let name = match user.last_name {
        Some(last) if !user.first_name.is_empty() => format!("{} {last}", user.first_name),
        Some(last) => last,
        None => user.first_name,
    };
    Sender {
        id: user.id.to_string(),
        name: Some(name).filter(|name| !name.is_empty()),
        handle: user.username,
        is_bot: user.is_bot,
    }
}

/// The command a text starts with (Telegram marks it with a `bot_command` entity at offset 0),
/// and whether it is for this bot: `/new@kelp_bot hi` is for `kelp_bot` only, `/new hi` for
/// every bot in the chat. Without knowing its own name the bot takes no named command.
fn command(text: &str, entities: &[Entity], bot: Option<&Bot>) -> Option<(Command, bool)> {
    let entity = entities
        .iter()
        .find(|e| e.kind == "bot_command" && e.offset == 0)?;
    let token = utf16_slice(text, entity.offset, entity.length)?;
    let rest = utf16_slice(text, entity.length, usize::MAX)?;
    let token = token.strip_prefix('/')?;
    let (name, for_us) = match token.split_once('@') {
        Some((name, target)) => (name, bot.is_some_and(|bot| bot.is_named(target))),
        None => (token, true),
    };
    Some((
        Command {
            name: name.to_owned(),
            args: rest.trim().to_owned(),
        },
        for_us,
    ))
}

/// Whether the text mentions the bot: `@its_username`, or a mention of its user (Telegram's
/// `text_mention`, for users without a username: a bot always has one, but it costs nothing).
fn mentions(text: &str, entities: &[Entity], bot: Option<&Bot>) -> bool {
    let Some(bot) = bot else { return false };
    entities.iter().any(|entity| match entity.kind.as_str() {
        "mention" => utf16_slice(text, entity.offset, entity.length)
            .and_then(|mention| mention.strip_prefix('@').map(|h| bot.is_named(h)))
            .unwrap_or(false),
        "text_mention" => entity
            .user
            .as_ref()
            .is_some_and(|user| user.id.to_string() == bot.id),
        _ => false,
    })
}

/// `length` UTF-16 code units of `text` from unit `offset` (how Telegram counts entity
/// positions); `None` if that is not within the text or would split a character.
fn utf16_slice(text: &str, offset: usize, length: usize) -> Option<String> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let end = offset.saturating_add(length).min(units.len());
    String::from_utf16(units.get(offset..end)?).ok()
}

fn press(query: CallbackQuery) -> EventKind {
    let Some(data) = query.data else {
        return EventKind::Ignored(format!(
            "callback query {} has no data (a game's button)",
            query.id
        ));
    };
    let (chat, message_id) = match query.message {
        Some(m) => (
            Chat {
                id: m.chat.id.to_string(),
                thread: topic(m.is_topic_message, m.message_thread_id),
            },
            Some(m.message_id.to_string()),
        ),
        // A button under an inline-mode message: Telegram does not say which chat that is in.
        // The presser's own chat with the bot (a user's id is that chat's id) is the one
        // place it is known to be able to answer.
        None => (Chat::new(query.from.id.to_string()), None),
    };
    EventKind::Press(Press {
        id: query.id,
        chat,
        sender: sender(query.from),
        message_id,
        data,
    })
}

fn membership(update: ChatMemberUpdated) -> EventKind {
    let status = update.new_chat_member.status;
    match status.as_str() {
        "kicked" | "left" => EventKind::ChatClosed(Chat::new(update.chat.id.to_string())),
        _ => EventKind::Ignored(format!(
            "the bot is now `{status}` in chat {}",
            update.chat.id
        )),
    }
}

/// An event id for a delivery without an `update_id`, the same for the same bytes so that a
/// re-delivery is still dropped: FNV-1a, enough to tell deliveries apart, not a defence.
fn unreadable_id(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("unreadable-{hash:016x}")
}

/// What a JSON value is, for error messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---- The Bot API's objects, as far as they are read here. Fields Telegram may leave out are
// optional or defaulted; only what every such object has is required. ----

/// `Message`.
#[derive(Deserialize)]
struct TgMessage {
    message_id: i64,
    date: u64,
    chat: TgChat,
    from: Option<User>,
    sender_chat: Option<TgChat>,
    message_thread_id: Option<i64>,
    #[serde(default)]
    is_topic_message: bool,
    text: Option<String>,
    caption: Option<String>,
    #[serde(default)]
    entities: Vec<Entity>,
    #[serde(default)]
    caption_entities: Vec<Entity>,
    reply_to_message: Option<Box<RepliedTo>>,
    #[serde(default)]
    photo: Vec<PhotoSize>,
    document: Option<File>,
    audio: Option<File>,
    voice: Option<File>,
    video: Option<File>,
    video_note: Option<File>,
    sticker: Option<File>,
    migrate_to_chat_id: Option<i64>,
    migrate_from_chat_id: Option<i64>,
}

/// The part of a replied-to `Message` that matters.
#[derive(Deserialize)]
struct RepliedTo {
    message_id: i64,
    from: Option<User>,
}

/// `Chat`.
#[derive(Debug, Clone, Deserialize)]
struct TgChat {
    id: i64,
    #[serde(rename = "type", default)]
    kind: String,
    title: Option<String>,
    username: Option<String>,
}

/// `User`.
#[derive(Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    first_name: String,
    last_name: Option<String>,
    username: Option<String>,
}

/// `MessageEntity`; offsets and lengths count UTF-16 code units.
#[derive(Deserialize)]
struct Entity {
    #[serde(rename = "type")]
    kind: String,
    offset: usize,
    length: usize,
    user: Option<User>,
}

/// `PhotoSize`.
#[derive(Deserialize)]
struct PhotoSize {
    file_id: String,
    width: u32,
    height: u32,
    file_size: Option<u64>,
}

/// `Document`, `Audio`, `Voice`, `Video`, `VideoNote` and `Sticker` alike.
#[derive(Deserialize)]
struct File {
    file_id: String,
    file_name: Option<String>,
    mime_type: Option<String>,
    file_size: Option<u64>,
}

/// `CallbackQuery`.
#[derive(Deserialize)]
struct CallbackQuery {
    id: String,
    from: User,
    message: Option<ButtonMessage>,
    data: Option<String>,
}

/// The message a pressed button is under (`MaybeInaccessibleMessage`: an old one is only its
/// chat and id).
#[derive(Deserialize)]
struct ButtonMessage {
    message_id: i64,
    chat: TgChat,
    message_thread_id: Option<i64>,
    #[serde(default)]
    is_topic_message: bool,
}

/// `ChatMemberUpdated`, the bot's own membership (`my_chat_member`).
#[derive(Deserialize)]
struct ChatMemberUpdated {
    chat: TgChat,
    new_chat_member: ChatMember,
}

#[derive(Deserialize)]
struct ChatMember {
    status: String,
}

#[cfg(test)]
mod tests;
