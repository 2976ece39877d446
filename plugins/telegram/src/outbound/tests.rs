use kelp_sdk::channel::{
    Action, Button, ChannelError, Chat, Edit, Identity, Outbound, Outcome, Setup, TextFormat,
};
use kelp_sdk::http::Response;
use serde_json::{Value, json};

use super::*;
use crate::fixtures;

fn api() -> BotApi {
    BotApi::new("https://api.telegram.org")
}

/// The one call `action` makes: its method and JSON parameters.
fn call(action: &Action) -> (String, Value) {
    let requests = prepare(&api(), action).unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert!(
        request
            .headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    let method = request
        .url
        .strip_prefix("https://api.telegram.org/bot/")
        .unwrap_or_else(|| panic!("{} is not under the token prefix", request.url));
    let params = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
    (method.to_owned(), params)
}

fn send(chat: Chat, text: &str, format: TextFormat) -> Outbound {
    Outbound {
        chat,
        text: text.into(),
        format,
        reply_to: None,
        buttons: Vec::new(),
        idempotency_key: "run-1/part-0".into(),
    }
}

fn edit() -> Action {
    Action::Edit(Edit {
        chat: Chat {
            id: "-100".into(),
            thread: Some("3".into()),
        },
        message_id: "41".into(),
        text: "**done**".into(),
        format: TextFormat::Markdown,
    })
}

#[test]
fn plain_text_goes_as_it_is() {
    let action = Action::Send(send(Chat::new("218485655"), "a < b & c", TextFormat::Plain));
    assert_eq!(
        call(&action),
        (
            "sendMessage".into(),
            json!({"chat_id": 218485655, "text": "a < b & c"})
        )
    );
}

#[test]
fn markdown_goes_as_telegram_html() {
    let action = Action::Send(send(Chat::new("5"), "**x** <y>", TextFormat::Markdown));
    assert_eq!(
        call(&action).1,
        json!({"chat_id": 5, "text": "<b>x</b> &lt;y&gt;", "parse_mode": "HTML"})
    );
}

#[test]
fn replies_topics_and_buttons() {
    let mut outbound = send(
        Chat {
            id: "-1001293752024".into(),
            thread: Some("134545".into()),
        },
        "Pick one",
        TextFormat::Plain,
    );
    outbound.reply_to = Some("134546".into());
    outbound.buttons = vec![
        vec![
            Button {
                label: "Yes".into(),
                data: "approve:1".into(),
            },
            Button {
                label: "No".into(),
                data: "deny:1".into(),
            },
        ],
        vec![Button {
            label: "Later".into(),
            data: "later".into(),
        }],
    ];
    assert_eq!(
        call(&Action::Send(outbound.clone())).1,
        json!({
            "chat_id": -1001293752024_i64,
            "message_thread_id": 134545,
            "text": "Pick one",
            "reply_parameters": {"message_id": 134546, "allow_sending_without_reply": true},
            "reply_markup": {"inline_keyboard": [
                [{"text": "Yes", "callback_data": "approve:1"}, {"text": "No", "callback_data": "deny:1"}],
                [{"text": "Later", "callback_data": "later"}]
            ]}
        })
    );

    outbound.buttons[1][0].data = "x".repeat(65);
    assert!(matches!(
        prepare(&api(), &Action::Send(outbound)),
        Err(ChannelError::Invalid(why)) if why.contains("64 bytes")
    ));
}

#[test]
fn chat_ids_are_numbers_or_channel_names() {
    let to_channel = Action::Send(send(Chat::new("@kelp_news"), "hi", TextFormat::Plain));
    assert_eq!(call(&to_channel).1["chat_id"], "@kelp_news");
    for bad in [
        Chat::new("chat-1"),
        Chat {
            id: "5".into(),
            thread: Some("general".into()),
        },
    ] {
        let action = Action::Send(send(bad, "hi", TextFormat::Plain));
        assert!(matches!(
            prepare(&api(), &action),
            Err(ChannelError::Invalid(_))
        ));
    }
}

#[test]
fn a_long_text_is_one_message_the_host_split_already() {
    let text = "word ".repeat(2000);
    let (_, params) = call(&Action::Send(send(
        Chat::new("5"),
        &text,
        TextFormat::Plain,
    )));
    assert_eq!(params["text"], text);
}

#[test]
fn edits_typing_presses_and_setup() {
    assert_eq!(
        call(&edit()),
        (
            "editMessageText".into(),
            json!({"chat_id": -100, "message_id": 41, "text": "<b>done</b>", "parse_mode": "HTML"})
        )
    );
    assert_eq!(
        call(&Action::Typing(Chat {
            id: "-100".into(),
            thread: Some("3".into())
        })),
        (
            "sendChatAction".into(),
            json!({"chat_id": -100, "message_thread_id": 3, "action": "typing"})
        )
    );
    assert_eq!(
        call(&Action::AnswerPress("4382bfdwdsb323b2d9".into())),
        (
            "answerCallbackQuery".into(),
            json!({"callback_query_id": "4382bfdwdsb323b2d9"})
        )
    );
    assert_eq!(
        call(&Action::Setup(Setup::Identify)),
        ("getMe".into(), json!({}))
    );
    assert_eq!(
        call(&Action::Setup(Setup::UsePolling)),
        (
            "deleteWebhook".into(),
            json!({"drop_pending_updates": false})
        )
    );
    // No secret_token: the host adds it where the manifest binds WEBHOOK_SECRET.
    assert_eq!(
        call(&Action::Setup(Setup::UseWebhook(
            "https://kelp.example/hooks/channels/7".into()
        ))),
        (
            "setWebhook".into(),
            json!({
                "url": "https://kelp.example/hooks/channels/7",
                "allowed_updates": ["message", "edited_message", "callback_query", "my_chat_member"],
            })
        )
    );
}

fn outcome(action: &Action, status: u16, body: &str) -> Outcome {
    read_response(action, &Response::new(status, body))
}

fn a_send() -> Action {
    Action::Send(send(Chat::new("5"), "hi", TextFormat::Markdown))
}

#[test]
fn what_succeeded() {
    let sent = r#"{"ok":true,"result":{"message_id":6558,"date":1,"chat":{"id":5,"type":"private"},"text":"hi"}}"#;
    assert_eq!(
        outcome(&a_send(), 200, sent),
        Outcome::Done(Some("6558".into()))
    );
    let edited = r#"{"ok":true,"result":{"message_id":41,"date":1,"chat":{"id":-100,"type":"supergroup"},"text":"done"}}"#;
    assert_eq!(
        outcome(&edit(), 200, edited),
        Outcome::Done(Some("41".into()))
    );
    assert_eq!(
        outcome(&edit(), 200, fixtures::OK_TRUE),
        Outcome::Done(Some("41".into()))
    );
    for action in [
        Action::Typing(Chat::new("5")),
        Action::AnswerPress("1".into()),
        Action::Setup(Setup::UsePolling),
        Action::Setup(Setup::UseWebhook("https://kelp.example/h".into())),
    ] {
        assert_eq!(
            outcome(&action, 200, fixtures::OK_TRUE),
            Outcome::Done(None),
            "{action:?}"
        );
    }
    let me = r#"{"ok":true,"result":{"id":777,"is_bot":true,"first_name":"Kelp","username":"kelp_bot","can_join_groups":true}}"#;
    assert_eq!(
        outcome(&Action::Setup(Setup::Identify), 200, me),
        Outcome::Identified(Identity {
            id: "777".into(),
            handle: Some("kelp_bot".into()),
            name: Some("Kelp".into()),
        })
    );
    // A success status without a Bot API answer: it happened, but nothing says what.
    assert!(matches!(
        outcome(&a_send(), 200, "<html>ok</html>"),
        Outcome::Failed(_)
    ));
}

#[test]
fn what_failed_and_what_to_do() {
    assert_eq!(
        outcome(&a_send(), 403, fixtures::ERROR_403_BOT_BLOCKED),
        Outcome::ChatClosed("HTTP 403: Forbidden: bot was blocked by the user".into())
    );
    assert_eq!(
        outcome(&a_send(), 429, fixtures::ERROR_RETRY_AFTER),
        Outcome::RateLimited(123456)
    );
    assert_eq!(
        outcome(&a_send(), 400, fixtures::ERROR_UNKNOWN),
        Outcome::Failed("HTTP 111: Unknown description that won't match anything".into())
    );
    let not_modified = r#"{"ok":false,"error_code":400,"description":"Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"}"#;
    assert_eq!(
        outcome(&edit(), 400, not_modified),
        Outcome::Done(Some("41".into()))
    );
    let bad_html = r#"{"ok":false,"error_code":400,"description":"Bad Request: can't parse entities: Unsupported start tag \"y\" at byte offset 9"}"#;
    assert_eq!(
        outcome(&a_send(), 400, bad_html),
        Outcome::BadFormat(
            "HTTP 400: Bad Request: can't parse entities: Unsupported start tag \"y\" at byte \
             offset 9"
                .into()
        )
    );
    let upgraded = r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001234567890}}"#;
    assert_eq!(
        outcome(&a_send(), 400, upgraded),
        Outcome::ChatMoved("-1001234567890".into())
    );
    let kicked = r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was kicked from the supergroup chat"}"#;
    assert!(matches!(
        outcome(&Action::Typing(Chat::new("-100")), 403, kicked),
        Outcome::ChatClosed(_)
    ));
    let gone = r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
    assert!(matches!(
        outcome(&a_send(), 400, gone),
        Outcome::ChatClosed(_)
    ));
    assert_eq!(
        outcome(
            &Action::Setup(Setup::Identify),
            401,
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
        ),
        Outcome::Unauthorized("HTTP 401: Unauthorized".into())
    );
    assert!(matches!(
        outcome(
            &Action::Setup(Setup::Identify),
            404,
            r#"{"ok":false,"error_code":404,"description":"Not Found"}"#
        ),
        Outcome::Unauthorized(why) if why.contains("BOT_TOKEN")
    ));
    assert!(matches!(
        outcome(&a_send(), 502, "<html>Bad Gateway</html>"),
        Outcome::Transient(_)
    ));
    let too_long =
        r#"{"ok":false,"error_code":400,"description":"Bad Request: message is too long"}"#;
    assert_eq!(
        outcome(&a_send(), 400, too_long),
        Outcome::Failed("HTTP 400: Bad Request: message is too long".into())
    );
}

#[test]
fn a_file_is_fetched_by_get_file_then_its_path_under_the_file_prefix() {
    let action = Action::FetchFile("AgACAgIAAxkBAAIB".into());
    assert_eq!(
        call(&action),
        ("getFile".into(), json!({ "file_id": "AgACAgIAAxkBAAIB" }))
    );
    // getFile's answer, as the Bot API documents its `File`.
    let answer = Response {
        status: 200,
        headers: Vec::new(),
        body: json!({"ok": true, "result": {
            "file_id": "AgACAgIAAxkBAAIB", "file_unique_id": "AQAD", "file_size": 51234,
            "file_path": "photos/file_7.jpg"}})
        .to_string()
        .into_bytes(),
    };
    let Outcome::Download(request) = read_file_answer(&api(), &answer) else {
        panic!("no download");
    };
    assert_eq!(request.method, "GET");
    // The host inserts the token after `file/bot`, where the manifest's second binding is.
    assert_eq!(
        request.url,
        "https://api.telegram.org/file/bot/photos/file_7.jpg"
    );
    // A path that would climb out of the prefix is refused, not followed.
    let hostile = Response {
        body: json!({"ok": true, "result": {"file_id": "x", "file_path": "../bot/getMe"}})
            .to_string()
            .into_bytes(),
        ..answer.clone()
    };
    assert!(matches!(
        read_file_answer(&api(), &hostile),
        Outcome::Failed(_)
    ));
    // Over 20 MB: Telegram answers without a path.
    let too_big = Response {
        body: json!({"ok": true, "result": {"file_id": "x", "file_size": 30000000}})
            .to_string()
            .into_bytes(),
        ..answer.clone()
    };
    assert!(
        matches!(read_file_answer(&api(), &too_big), Outcome::Failed(why) if why.contains("20 MB"))
    );
    let bad_id = Response {
        status: 400,
        headers: Vec::new(),
        body:
            json!({"ok": false, "error_code": 400, "description": "Bad Request: invalid file_id"})
                .to_string()
                .into_bytes(),
    };
    assert!(
        matches!(read_file_answer(&api(), &bad_id), Outcome::Failed(why) if why.contains("invalid file_id"))
    );
}
