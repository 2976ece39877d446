//! Kelp → Telegram: an action as Bot API calls, and what each answer means.

use kelp_sdk::channel::{
    Action, Button, ChannelError, Chat, Identity, Outbound, Outcome, Setup, TextFormat,
};
use kelp_sdk::http::{Request, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{ALLOWED_UPDATES, Answer, ApiError, BotApi};
use crate::html;

/// The most bytes Telegram keeps as a button's `callback_data`.
const MAX_BUTTON_DATA_BYTES: usize = 64;

/// The Bot API calls that carry out `action`: always exactly one.
pub fn prepare(api: &BotApi, action: &Action) -> Result<Vec<Request>, ChannelError> {
    let (method, params) = match action {
        Action::Send(outbound) => ("sendMessage", send(outbound)?),
        Action::Edit(edit) => {
            let mut params = chat_params(&edit.chat)?;
            params.insert("message_id".into(), message_id(&edit.message_id)?);
            // `message_thread_id` is not a parameter of editMessageText: the message is found
            // by its id alone.
            params.remove("message_thread_id");
            text_params(&mut params, &edit.text, edit.format);
            ("editMessageText", params)
        }
        Action::Typing(chat) => {
            let mut params = chat_params(chat)?;
            params.insert("action".into(), "typing".into());
            ("sendChatAction", params)
        }
        Action::AnswerPress(id) => (
            "answerCallbackQuery",
            object(json!({ "callback_query_id": id })),
        ),
        Action::Setup(Setup::Identify) => ("getMe", Map::new()),
        // Pending updates stay: polling picks them up where the webhook left them.
        Action::Setup(Setup::UsePolling) => (
            "deleteWebhook",
            object(json!({ "drop_pending_updates": false })),
        ),
        // The host adds `secret_token` (the instance's WEBHOOK_SECRET), which Telegram then
        // sends with every delivery in the header the host checks.
        Action::Setup(Setup::UseWebhook(url)) => (
            "setWebhook",
            object(json!({ "url": url, "allowed_updates": ALLOWED_UPDATES })),
        ),
        // Where the file is; its download is the outcome (`read_file_answer`).
        Action::FetchFile(file_id) => ("getFile", object(json!({ "file_id": file_id }))),
    };
    Ok(vec![api.call(method, &Value::Object(params))])
}

fn send(outbound: &Outbound) -> Result<Map<String, Value>, ChannelError> {
    let mut params = chat_params(&outbound.chat)?;
    text_params(&mut params, &outbound.text, outbound.format);
    if let Some(reply_to) = &outbound.reply_to {
        params.insert(
            "reply_parameters".into(),
            // If the message was deleted meanwhile, the reply still goes out, as a plain one.
            json!({ "message_id": message_id(reply_to)?, "allow_sending_without_reply": true }),
        );
    }
    if !outbound.buttons.is_empty() {
        let rows = outbound
            .buttons
            .iter()
            .map(|row| row.iter().map(button).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        params.insert("reply_markup".into(), json!({ "inline_keyboard": rows }));
    }
    Ok(params)
}

fn button(button: &Button) -> Result<Value, ChannelError> {
    if button.data.is_empty() || button.data.len() > MAX_BUTTON_DATA_BYTES {
        return Err(ChannelError::Invalid(format!(
            "button `{}`: Telegram takes 1 to {MAX_BUTTON_DATA_BYTES} bytes of data, not {}",
            button.label,
            button.data.len()
        )));
    }
    Ok(json!({ "text": button.label, "callback_data": button.data }))
}

/// `chat_id`, and `message_thread_id` for a forum topic.
fn chat_params(chat: &Chat) -> Result<Map<String, Value>, ChannelError> {
    let mut params = Map::new();
    // A numeric id, or a public channel's `@username`.
    let chat_id = match chat.id.parse::<i64>() {
        Ok(id) => Value::from(id),
        Err(_) if chat.id.starts_with('@') => Value::from(chat.id.clone()),
        Err(_) => {
            return Err(ChannelError::Invalid(format!(
                "`{}` is not a Telegram chat id",
                chat.id
            )));
        }
    };
    params.insert("chat_id".into(), chat_id);
    if let Some(thread) = &chat.thread {
        let thread: i64 = thread
            .parse()
            .map_err(|_| ChannelError::Invalid(format!("`{thread}` is not a Telegram topic id")))?;
        params.insert("message_thread_id".into(), thread.into());
    }
    Ok(params)
}

fn message_id(id: &str) -> Result<Value, ChannelError> {
    id.parse::<i64>()
        .map(Value::from)
        .map_err(|_| ChannelError::Invalid(format!("`{id}` is not a Telegram message id")))
}

/// `text`, as Telegram HTML when it is Markdown; plain text goes as it is, with no parse mode,
/// so nothing in it is taken for markup.
fn text_params(params: &mut Map<String, Value>, text: &str, format: TextFormat) {
    match format {
        TextFormat::Plain => {
            params.insert("text".into(), text.into());
        }
        TextFormat::Markdown => {
            params.insert("text".into(), html::from_markdown(text).into());
            params.insert("parse_mode".into(), "HTML".into());
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What the answer to getFile means: the file's download, or why there is none (Telegram
/// gives bots files of up to 20 MB).
pub fn read_file_answer(api: &BotApi, response: &Response) -> Outcome {
    match crate::api::read(response) {
        Answer::Ok(result) => match result.get("file_path").and_then(Value::as_str) {
            // A path from Telegram, used as a URL path: nothing in it may climb out of the
            // file prefix the token is bound to.
            Some(path) if !path.split('/').any(|part| part == ".." || part.is_empty()) => {
                Outcome::Download(api.file(path))
            }
            Some(path) => Outcome::Failed(format!("getFile answered an unusable path `{path}`")),
            None => Outcome::Failed(
                "getFile answered no file_path (the file is over 20 MB, which bots cannot fetch)"
                    .into(),
            ),
        },
        Answer::Failed(error) => {
            if let Some(seconds) = error.retry_after {
                return Outcome::RateLimited(seconds);
            }
            if error.is_missing_token() {
                return Outcome::Unauthorized(error.missing_token_text());
            }
            Outcome::from_status(error.status, None, &error.description)
        }
        Answer::Unreadable(why) => Outcome::Failed(why),
    }
}

/// What the answer to `action`'s call means.
pub fn read_response(action: &Action, response: &Response) -> Outcome {
    match crate::api::read(response) {
        Answer::Ok(result) => done(action, result),
        Answer::Failed(error) => failed(action, error),
        // A success status: whatever it did, it did. Calling again could send twice.
        Answer::Unreadable(why) => Outcome::Failed(why),
    }
}

fn done(action: &Action, result: Value) -> Outcome {
    match action {
        // Both answer with the message; an edit of an inline-mode message answers `true`.
        Action::Send(_) | Action::Edit(_) => {
            let sent = result.get("message_id").and_then(Value::as_i64);
            match (sent, action) {
                (Some(id), _) => Outcome::Done(Some(id.to_string())),
                (None, Action::Edit(edit)) => Outcome::Done(Some(edit.message_id.clone())),
                (None, _) => Outcome::Failed(format!(
                    "sendMessage answered without a message id: {result}"
                )),
            }
        }
        Action::Setup(Setup::Identify) => match Me::deserialize(&result) {
            Ok(me) => Outcome::Identified(Identity {
                id: me.id.to_string(),
                handle: me.username,
                name: Some(me.first_name).filter(|name| !name.is_empty()),
            }),
            Err(err) => Outcome::Failed(format!("getMe answered no user: {err}")),
        },
        _ => Outcome::Done(None),
    }
}

fn failed(action: &Action, error: ApiError) -> Outcome {
    if let Some(to) = error.migrate_to_chat_id {
        return Outcome::ChatMoved(to.to_string());
    }
    if let Some(seconds) = error.retry_after {
        return Outcome::RateLimited(seconds);
    }
    if error.is_missing_token() {
        return Outcome::Unauthorized(error.missing_token_text());
    }
    let text = || format!("HTTP {}: {}", error.status, error.description.trim());
    // An edit to the text the message already has: it has that text, which is what was asked.
    if error.says("message is not modified") {
        return Outcome::Done(match action {
            Action::Edit(edit) => Some(edit.message_id.clone()),
            _ => None,
        });
    }
    if error.says("can't parse entities") || error.says("can't parse message text") {
        return Outcome::BadFormat(text());
    }
    // A deleted group, or a chat the bot never was in: nowhere to send to.
    if error.says("chat not found") {
        return Outcome::ChatClosed(text());
    }
    // 403 (blocked by the user, kicked from the group, the user deleted): the chat is closed;
    // 401 unauthorized, 5xx transient, the rest failed.
    Outcome::from_status(error.status, None, &error.description)
}

/// The bot's `User`, from `getMe`.
#[derive(Deserialize)]
struct Me {
    id: i64,
    #[serde(default)]
    first_name: String,
    username: Option<String>,
}

#[cfg(test)]
mod tests;
