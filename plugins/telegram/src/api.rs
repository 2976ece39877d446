//! The Bot API as this plugin speaks it: where a method is, the envelope every answer comes in,
//! and what an error in it means for a poll.

use kelp_sdk::channel::ChannelError;
use kelp_sdk::http::{Request, Response};
use serde::Deserialize;
use serde_json::Value;

/// The update kinds the bot asks for, in `getUpdates` and `setWebhook` alike. Everything else
/// (polls, reactions, inline queries, ...) stays on Telegram's side.
pub const ALLOWED_UPDATES: [&str; 4] = [
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
];

/// Longest platform text kept in an error message: an error page from a proxy in front of the
/// Bot API can be a whole HTML document.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// The Bot API server of an instance (`api_base`: Telegram's, or a local `telegram-bot-api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotApi {
    base: String,
}

impl BotApi {
    pub fn new(api_base: &str) -> Self {
        BotApi {
            base: api_base.trim_end_matches('/').to_owned(),
        }
    }

    /// `POST {api_base}/bot/{method}` with `params` as JSON.
    ///
    /// The manifest binds `BOT_TOKEN` to the URL prefix `{api_base}/bot{}/`: the plugin writes
    /// that prefix without the `{}`, and the host inserts the token there (giving Telegram's
    /// `/bot<token>/<method>`), so the token is never the plugin's to see or misplace.
    pub fn call(&self, method: &str, params: &Value) -> Request {
        Request::post(format!("{}/bot/{method}", self.base)).json(params)
    }

    /// `GET {api_base}/file/bot/{file_path}`: a file's download, `file_path` as getFile gave
    /// it. The manifest binds `BOT_TOKEN` to the prefix `{api_base}/file/bot{}/` too, so the
    /// host inserts the token after `bot` here as well.
    pub fn file(&self, file_path: &str) -> Request {
        Request::get(format!("{}/file/bot/{file_path}", self.base))
    }
}

/// What the Bot API answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"ok": true, "result": ...}`: the result.
    Ok(Value),
    /// `{"ok": false, ...}`, or an error status without a Bot API body.
    Failed(ApiError),
    /// A success status whose body is not a Bot API answer.
    Unreadable(String),
}

/// A failed Bot API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `error_code`, which the Bot API keeps equal to the HTTP status.
    pub status: u16,
    /// `description`, e.g. `Forbidden: bot was blocked by the user`.
    pub description: String,
    /// `parameters.retry_after`: flood control, in seconds.
    pub retry_after: Option<u32>,
    /// `parameters.migrate_to_chat_id`: the group became this supergroup.
    pub migrate_to_chat_id: Option<i64>,
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    error_code: Option<i64>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Parameters,
}

/// The Bot API's `ResponseParameters`.
#[derive(Deserialize, Default)]
struct Parameters {
    retry_after: Option<u32>,
    migrate_to_chat_id: Option<i64>,
}

/// Reads the answer to any Bot API call, whatever its status.
pub fn read(response: &Response) -> Answer {
    match response.json::<Envelope>() {
        Ok(envelope) if envelope.ok => Answer::Ok(envelope.result),
        Ok(envelope) => {
            let status = envelope
                .error_code
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| !(200..300).contains(code))
                .or((!response.is_success()).then_some(response.status))
                // `ok: false` under a success status with no code: never seen from Telegram.
                // A request it refused is the likeliest meaning.
                .unwrap_or(400);
            Answer::Failed(ApiError {
                status,
                description: envelope.description,
                retry_after: envelope.parameters.retry_after,
                migrate_to_chat_id: envelope.parameters.migrate_to_chat_id,
            })
        }
        Err(_) if !response.is_success() => Answer::Failed(ApiError {
            status: response.status,
            description: shorten(&response.text()),
            retry_after: response
                .header("retry-after")
                .and_then(|v| v.trim().parse().ok()),
            migrate_to_chat_id: None,
        }),
        Err(err) => Answer::Unreadable(format!(
            "HTTP {} with a body that is not a Bot API answer ({err}): {}",
            response.status,
            shorten(&response.text())
        )),
    }
}

impl ApiError {
    /// Whether the description contains `needle`, ignoring case: Telegram has changed the case
    /// of its descriptions before, never their words.
    pub fn says(&self, needle: &str) -> bool {
        self.description
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
    }

    /// The Bot API answers 404 to a URL without a valid token in it (and to an unknown method,
    /// which this plugin never calls): the token is missing or mangled.
    pub fn is_missing_token(&self) -> bool {
        self.status == 404
    }

    pub fn missing_token_text(&self) -> String {
        format!(
            "HTTP 404: {}: the Bot API answers this to a URL without a valid bot token; is the \
             instance's BOT_TOKEN set?",
            self.description.trim()
        )
    }

    /// What the error means for a `getUpdates` poll.
    pub fn poll_error(self) -> ChannelError {
        if self.is_missing_token() {
            return ChannelError::Unauthorized(self.missing_token_text());
        }
        let webhook_set = self.says("webhook is active");
        ChannelError::from_status(
            // Flood control is told by `retry_after`, under whatever status it came with.
            if self.retry_after.is_some() {
                429
            } else {
                self.status
            },
            self.retry_after,
            &self.description,
            |text| {
                if webhook_set {
                    ChannelError::WebhookActive(text)
                } else {
                    ChannelError::PollConflict(text)
                }
            },
        )
    }
}

/// `text` cut to [`MAX_DESCRIPTION_CHARS`], on one line.
fn shorten(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn methods_go_under_the_token_prefix_without_the_token() {
        let api = BotApi::new("https://api.telegram.org/");
        let request = api.call("getMe", &serde_json::json!({}));
        assert_eq!(request.method, "POST");
        assert_eq!(request.url, "https://api.telegram.org/bot/getMe");
        assert_eq!(request.body.as_deref(), Some(&b"{}"[..]));
        let local = BotApi::new("http://127.0.0.1:8081");
        assert_eq!(
            local.call("getUpdates", &Value::Null).url,
            "http://127.0.0.1:8081/bot/getUpdates"
        );
    }

    #[test]
    fn envelopes() {
        assert_eq!(
            read(&Response::new(200, fixtures::OK_TRUE)),
            Answer::Ok(Value::Bool(true))
        );
        assert_eq!(
            read(&Response::new(403, fixtures::ERROR_403_BOT_BLOCKED)),
            Answer::Failed(ApiError {
                status: 403,
                description: "Forbidden: bot was blocked by the user".into(),
                retry_after: None,
                migrate_to_chat_id: None,
            })
        );
        // The code in the body wins over a status a proxy may have rewritten.
        let Answer::Failed(unknown) = read(&Response::new(400, fixtures::ERROR_UNKNOWN)) else {
            panic!("not a failure");
        };
        assert_eq!(unknown.status, 111);
        let Answer::Failed(flood) = read(&Response::new(429, fixtures::ERROR_RETRY_AFTER)) else {
            panic!("not a failure");
        };
        assert_eq!(flood.retry_after, Some(123456));
    }

    #[test]
    fn answers_that_are_not_the_bot_api() {
        let proxy = Response::new(502, "<html>\n<body>Bad   Gateway</body></html>")
            .with_header("Retry-After", "5");
        assert_eq!(
            read(&proxy),
            Answer::Failed(ApiError {
                status: 502,
                description: "<html> <body>Bad Gateway</body></html>".into(),
                retry_after: Some(5),
                migrate_to_chat_id: None,
            })
        );
        let Answer::Unreadable(why) = read(&Response::new(200, "x".repeat(1000))) else {
            panic!("readable");
        };
        assert!(why.starts_with("HTTP 200 with a body that is not a Bot API answer"));
        assert!(why.len() < 500, "{why}");
    }
}
