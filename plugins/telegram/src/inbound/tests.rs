use kelp_sdk::channel::{
    Attachment, AttachmentKind, ChannelError, Chat, ChatKind, Command, Event, EventKind, Message,
    Moved, Press, Sender,
};
use kelp_sdk::http::{Request, Response};
use serde_json::{Value, json};

use super::*;
use crate::fixtures;

fn bot() -> Bot {
    Bot {
        id: "777".into(),
        handle: Some("kelp_bot".into()),
    }
}

fn poll(status: u16, body: &str) -> Result<Batch, ChannelError> {
    parse_poll(&Response::new(status, body), Some(&bot()))
}

/// The one event of a webhook delivery of `body`.
fn deliver(body: &str, bot: Option<&Bot>) -> Event {
    let batch = webhook(
        &Request::post("https://kelp.test/hooks/channels/1").body(body),
        bot,
    );
    assert_eq!(batch.response.status, 200);
    assert!(batch.response.body.is_empty());
    assert_eq!(batch.events.len(), 1, "{:?}", batch.events);
    batch.events.into_iter().next().unwrap()
}

fn message_of(event: Event) -> Message {
    match event.kind {
        EventKind::Message(message) => message,
        other => panic!("not a message: {other:?}"),
    }
}

fn ignored(event: &Event) -> &str {
    match &event.kind {
        EventKind::Ignored(why) => why,
        other => panic!("not ignored: {other:?}"),
    }
}

#[test]
fn the_poll_asks_from_the_cursor_for_the_kinds_read_here() {
    let api = BotApi::new("https://api.telegram.org");
    let request = poll_request(&api, Some("892252935"), 50).unwrap();
    assert_eq!(request.url, "https://api.telegram.org/bot/getUpdates");
    let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "offset": 892252935,
            "timeout": 50,
            "allowed_updates": ["message", "edited_message", "callback_query", "my_chat_member"],
        })
    );

    let first = poll_request(&api, None, 0).unwrap();
    let body: Value = serde_json::from_slice(first.body.as_deref().unwrap()).unwrap();
    assert_eq!(body.get("offset"), None);

    assert!(matches!(
        poll_request(&api, Some("abc"), 10),
        Err(ChannelError::Invalid(_))
    ));
}

#[test]
fn a_malformed_update_is_ignored_and_the_cursor_moves_past_it() {
    let batch = poll(200, fixtures::UPDATES_WITH_MALFORMED).unwrap();
    assert_eq!(batch.next_cursor.as_deref(), Some("4"));
    let ids: Vec<&str> = batch.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3"]);
    assert_eq!(
        ignored(&batch.events[0]),
        "`poll_answer` updates are not handled"
    );
    assert_eq!(
        ignored(&batch.events[1]),
        "`something unknown to us` updates are not handled"
    );
    assert!(
        ignored(&batch.events[3]).starts_with("update 3: unreadable `message`: missing field"),
        "{:?}",
        batch.events[3]
    );

    let batch = poll(200, fixtures::UPDATES_POLL_ANSWER).unwrap();
    assert_eq!(batch.next_cursor.as_deref(), Some("1"));
    assert_eq!(batch.events.len(), 1);

    // Nothing new: the cursor stays where it is.
    let empty = poll(200, r#"{"ok":true,"result":[]}"#).unwrap();
    assert_eq!(empty, Batch::default());
}

#[test]
fn poll_errors_say_what_to_do() {
    assert_eq!(
        poll(409, fixtures::ERROR_409_TERMINATED).unwrap_err(),
        ChannelError::PollConflict(
            "HTTP 409: Conflict: terminated by other getUpdates request; make sure that only one \
             bot instance is running"
                .into()
        )
    );
    let webhook_set = r#"{"ok":false,"error_code":409,"description":"Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"}"#;
    assert!(matches!(
        poll(409, webhook_set).unwrap_err(),
        ChannelError::WebhookActive(text) if text.contains("webhook is active")
    ));
    assert_eq!(
        poll(429, fixtures::ERROR_RETRY_AFTER).unwrap_err(),
        ChannelError::RateLimited(123456)
    );
    assert_eq!(
        poll(
            401,
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
        )
        .unwrap_err(),
        ChannelError::Unauthorized("HTTP 401: Unauthorized".into())
    );
    assert!(matches!(
        poll(404, r#"{"ok":false,"error_code":404,"description":"Not Found"}"#).unwrap_err(),
        ChannelError::Unauthorized(text) if text.contains("BOT_TOKEN")
    ));
    assert_eq!(
        poll(403, fixtures::ERROR_403_BOT_BLOCKED).unwrap_err(),
        ChannelError::Unauthorized("HTTP 403: Forbidden: bot was blocked by the user".into())
    );
    assert_eq!(
        poll(400, fixtures::ERROR_UNKNOWN).unwrap_err(),
        ChannelError::Other("HTTP 111: Unknown description that won't match anything".into())
    );
    assert!(matches!(
        poll(502, "<html>Bad Gateway</html>").unwrap_err(),
        ChannelError::Transient(_)
    ));
    // An answer, but not to getUpdates.
    assert!(matches!(
        poll(200, fixtures::WEBHOOK_INFO).unwrap_err(),
        ChannelError::Invalid(text) if text.contains("not a list")
    ));
}

#[test]
fn a_private_message() {
    let message = message_of(deliver(fixtures::PRIVATE_TEXT_MESSAGE, None));
    assert_eq!(
        message,
        Message {
            chat: Chat::new("218485655"),
            chat_kind: ChatKind::Direct,
            sender: Sender {
                id: "218485655".into(),
                name: Some("Waffle".into()),
                handle: Some("WaffleLapkin".into()),
                is_bot: false,
            },
            id: "6557".into(),
            text: "hello there".into(),
            // A direct chat is always with the bot, known or not.
            addressed: true,
            command: None,
            reply_to: None,
            attachments: Vec::new(),
            timestamp_ms: 1_569_518_342_000,
        }
    );
    assert_eq!(
        deliver(fixtures::PRIVATE_TEXT_MESSAGE, None).id,
        "892252934"
    );
}

#[test]
fn a_command_in_a_supergroup_reply_thread() {
    let event = deliver(fixtures::SUPERGROUP_COMMAND_REPLY, Some(&bot()));
    assert_eq!(event.id, "439432600");
    let message = message_of(event);
    assert_eq!(message.chat_kind, ChatKind::Group);
    // `message_thread_id` without `is_topic_message` is a reply thread, not a forum topic.
    assert_eq!(message.chat, Chat::new("-1001293752024"));
    assert_eq!(message.id, "134546");
    assert_eq!(message.text, "/report");
    assert_eq!(
        message.command,
        Some(Command {
            name: "report".into(),
            args: String::new()
        })
    );
    // A command without a bot's name is for every bot in the group.
    assert!(message.addressed);
    assert_eq!(message.reply_to.as_deref(), Some("134545"));
    assert_eq!(message.sender.handle.as_deref(), Some("spacewhaleblues"));
    assert_eq!(message.sender.name.as_deref(), Some("the Cable Guy"));
    assert_eq!(message.timestamp_ms, 1_721_592_580_000);

    // Known or not, the bot takes a command addressed to no bot in particular.
    assert!(message_of(deliver(fixtures::SUPERGROUP_COMMAND_REPLY, None)).addressed);
}

#[test]
fn removed_from_a_chat() {
    let event = deliver(fixtures::MY_CHAT_MEMBER_KICKED, Some(&bot()));
    assert_eq!(
        event,
        Event {
            id: "0".into(),
            kind: EventKind::ChatClosed(Chat::new("0")),
        }
    );
    let joined = update(json!({
        "my_chat_member": {
            "chat": {"id": -5, "type": "group", "title": "G"},
            "from": {"id": 1, "first_name": "A"},
            "date": 1,
            "old_chat_member": {"user": {"id": 777, "is_bot": true, "first_name": "K"}, "status": "left"},
            "new_chat_member": {"user": {"id": 777, "is_bot": true, "first_name": "K"}, "status": "member"}
        }
    }));
    assert_eq!(ignored(&joined), "the bot is now `member` in chat -5");
}

#[test]
fn an_update_of_an_unknown_kind_is_ignored() {
    let event = deliver(fixtures::UNKNOWN_KIND, Some(&bot()));
    assert_eq!(event.id, "1");
    assert_eq!(ignored(&event), "`new_update_kind` updates are not handled");
}

#[test]
fn a_button_press() {
    let body = format!(
        r#"{{"update_id": 12, "callback_query": {}}}"#,
        fixtures::CALLBACK_QUERY
    );
    let event = deliver(&body, Some(&bot()));
    assert_eq!(event.id, "12");
    assert_eq!(
        event.kind,
        EventKind::Press(Press {
            id: "id".into(),
            // Under an inline-mode message: the presser's own chat with the bot.
            chat: Chat::new("12345"),
            sender: Sender {
                id: "12345".into(),
                name: Some("firstName".into()),
                handle: None,
                is_bot: false,
            },
            message_id: None,
            data: "some_data".into(),
        })
    );

    let in_topic = update(json!({
        "callback_query": {
            "id": "99", "chat_instance": "1", "data": "yes",
            "from": {"id": 5, "is_bot": false, "first_name": "Ada", "last_name": "L"},
            "message": {"message_id": 40, "date": 1, "message_thread_id": 3, "is_topic_message": true,
                        "chat": {"id": -100, "type": "supergroup"}}
        }
    }));
    let EventKind::Press(press) = in_topic.kind else {
        panic!("{in_topic:?}")
    };
    assert_eq!(
        press.chat,
        Chat {
            id: "-100".into(),
            thread: Some("3".into())
        }
    );
    assert_eq!(press.message_id.as_deref(), Some("40"));
    assert_eq!(press.sender.name.as_deref(), Some("Ada L"));
}

#[test]
fn a_body_that_is_not_an_update_is_still_answered_200() {
    let first = deliver("not json", Some(&bot()));
    assert!(ignored(&first).starts_with("a webhook body that is not JSON"));
    // The same bytes again are the same event, which the host then drops.
    assert_eq!(deliver("not json", Some(&bot())).id, first.id);
    assert_ne!(deliver("not json either", Some(&bot())).id, first.id);

    let no_id = deliver(r#"{"message": {}}"#, Some(&bot()));
    assert!(no_id.id.starts_with("unreadable-"));
    assert_eq!(ignored(&no_id), "an update without an update_id: an object");
}

/// An update with `fields` and id 1, delivered with the bot known.
fn update(mut fields: Value) -> Event {
    fields["update_id"] = 1.into();
    deliver(&fields.to_string(), Some(&bot()))
}

/// A group message with `text` and `more` fields.
fn group_message(text: &str, more: Value) -> Message {
    let mut message = json!({
        "message_id": 10,
        "date": 1_700_000_000,
        "chat": {"id": -42, "type": "group", "title": "Friends"},
        "from": {"id": 5, "is_bot": false, "first_name": "Ada"},
        "text": text,
    });
    for (key, value) in more.as_object().unwrap() {
        message[key] = value.clone();
    }
    message_of(update(json!({ "message": message })))
}

fn entity(kind: &str, offset: usize, length: usize) -> Value {
    json!({"type": kind, "offset": offset, "length": length})
}

#[test]
fn in_a_group_only_what_is_for_the_bot_is_addressed() {
    let plain = group_message("lunch at noon?", json!({}));
    assert!(!plain.addressed);
    assert_eq!(plain.chat_kind, ChatKind::Group);

    let mention = group_message(
        "@Kelp_Bot what's up",
        json!({"entities": [entity("mention", 0, 9)]}),
    );
    assert!(mention.addressed, "usernames ignore case");
    assert_eq!(mention.command, None);

    let other = group_message(
        "ask @other_bot",
        json!({"entities": [entity("mention", 4, 10)]}),
    );
    assert!(!other.addressed);

    // Offsets count UTF-16 units: the emoji is two.
    let after_emoji = group_message(
        "😀 @kelp_bot hi",
        json!({"entities": [entity("mention", 3, 9)]}),
    );
    assert!(after_emoji.addressed);

    let text_mention = group_message(
        "Kelp, hi",
        json!({"entities": [{"type": "text_mention", "offset": 0, "length": 4,
                             "user": {"id": 777, "is_bot": true, "first_name": "Kelp"}}]}),
    );
    assert!(text_mention.addressed);

    let reply_to_bot = group_message(
        "and then?",
        json!({"reply_to_message": {"message_id": 9, "date": 1, "chat": {"id": -42, "type": "group"},
                                    "from": {"id": 777, "is_bot": true, "first_name": "Kelp"}}}),
    );
    assert!(reply_to_bot.addressed);
    assert_eq!(reply_to_bot.reply_to.as_deref(), Some("9"));

    let reply_to_someone = group_message(
        "and then?",
        json!({"reply_to_message": {"message_id": 8, "date": 1, "chat": {"id": -42, "type": "group"},
                                    "from": {"id": 6, "is_bot": false, "first_name": "Bo"}}}),
    );
    assert!(!reply_to_someone.addressed);
}

#[test]
fn commands_name_their_bot() {
    let ours = group_message(
        "/new@kelp_bot  a fresh start ",
        json!({"entities": [entity("bot_command", 0, 13)]}),
    );
    assert!(ours.addressed);
    assert_eq!(
        ours.command,
        Some(Command {
            name: "new".into(),
            args: "a fresh start".into()
        })
    );

    let theirs = group_message(
        "/new@other_bot hello",
        json!({"entities": [entity("bot_command", 0, 14)]}),
    );
    assert!(!theirs.addressed);
    assert_eq!(theirs.command, None);

    // Only a command at the start is one.
    let later = group_message(
        "try /new",
        json!({"entities": [entity("bot_command", 4, 4)]}),
    );
    assert_eq!(later.command, None);
    assert!(!later.addressed);

    // In a direct chat a command is addressed to the bot like everything else.
    let direct = message_of(update(json!({"message": {
        "message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "first_name": "Ada"},
        "text": "/help", "entities": [entity("bot_command", 0, 5)]
    }})));
    assert!(direct.addressed);
    assert_eq!(direct.command.map(|c| c.name).as_deref(), Some("help"));
}

#[test]
fn a_named_command_waits_for_the_bot_to_know_its_name() {
    let body = json!({"update_id": 3, "message": {
        "message_id": 1, "date": 1, "chat": {"id": -1, "type": "supergroup"},
        "from": {"id": 5, "first_name": "Ada"},
        "text": "/new@kelp_bot", "entities": [entity("bot_command", 0, 13)]
    }});
    let message = message_of(deliver(&body.to_string(), None));
    assert!(!message.addressed);
    assert_eq!(message.command, None);
}

#[test]
fn topics_files_and_captions() {
    let message = message_of(update(json!({"message": {
        "message_id": 51, "date": 1, "message_thread_id": 50, "is_topic_message": true,
        "chat": {"id": -100, "type": "supergroup", "is_forum": true},
        "from": {"id": 5, "first_name": "Ada"},
        // Inside a topic, the topic's first message is "replied to" by every message.
        "reply_to_message": {"message_id": 50, "date": 1, "chat": {"id": -100, "type": "supergroup"},
                             "from": {"id": 777, "is_bot": true, "first_name": "Kelp"}},
        "caption": "/look@kelp_bot at this",
        "caption_entities": [entity("bot_command", 0, 14)],
        "photo": [
            {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 1000},
            {"file_id": "large", "file_unique_id": "l", "width": 1280, "height": 853, "file_size": 90000},
            {"file_id": "medium", "file_unique_id": "m", "width": 320, "height": 213}
        ],
        "document": {"file_id": "doc", "file_unique_id": "d", "file_name": "notes.pdf",
                     "mime_type": "application/pdf", "file_size": 2048}
    }})));
    assert_eq!(
        message.chat,
        Chat {
            id: "-100".into(),
            thread: Some("50".into())
        }
    );
    assert_eq!(message.reply_to, None);
    assert_eq!(message.text, "/look@kelp_bot at this");
    assert_eq!(
        message.command,
        Some(Command {
            name: "look".into(),
            args: "at this".into()
        })
    );
    assert!(message.addressed);
    assert_eq!(
        message.attachments,
        [
            Attachment {
                kind: AttachmentKind::Image,
                locator: "large".into(),
                name: None,
                mime_type: None,
                size: Some(90000),
            },
            Attachment {
                kind: AttachmentKind::Document,
                locator: "doc".into(),
                name: Some("notes.pdf".into()),
                mime_type: Some("application/pdf".into()),
                size: Some(2048),
            },
        ]
    );

    let voice = message_of(update(json!({"message": {
        "message_id": 2, "date": 1, "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "first_name": "Ada"},
        "voice": {"file_id": "v1", "file_unique_id": "v", "duration": 3, "mime_type": "audio/ogg"}
    }})));
    assert_eq!(voice.text, "");
    assert_eq!(voice.attachments[0].kind, AttachmentKind::Voice);
    assert_eq!(voice.attachments[0].locator, "v1");
}

#[test]
fn a_group_that_became_a_supergroup_moves() {
    let moved = update(json!({"message": {
        "message_id": 3, "date": 1, "chat": {"id": -42, "type": "group", "title": "Friends"},
        "from": {"id": 5, "first_name": "Ada"},
        "migrate_to_chat_id": -1_001_234_567_890_i64
    }}));
    assert_eq!(
        moved.kind,
        EventKind::ChatMoved(Moved {
            chat: Chat::new("-42"),
            to: "-1001234567890".into()
        })
    );
    let arrived = update(json!({"message": {
        "message_id": 1, "date": 1, "chat": {"id": -1_001_234_567_890_i64, "type": "supergroup"},
        "from": {"id": 5, "first_name": "Ada"},
        "migrate_from_chat_id": -42
    }}));
    assert!(matches!(arrived.kind, EventKind::Ignored(_)));
}

#[test]
fn edits_and_channel_posts() {
    let edited = update(json!({"edited_message": {
        "message_id": 7, "date": 1, "edit_date": 2, "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "first_name": "Ada"}, "text": "fixed typo"
    }}));
    let EventKind::Edited(message) = edited.kind else {
        panic!("{edited:?}")
    };
    assert_eq!(
        (message.id.as_str(), message.text.as_str()),
        ("7", "fixed typo")
    );

    let post = message_of(update(json!({"channel_post": {
        "message_id": 8, "date": 1,
        "chat": {"id": -1009, "type": "channel", "title": "News", "username": "news"},
        "sender_chat": {"id": -1009, "type": "channel", "title": "News", "username": "news"},
        "text": "out now"
    }})));
    assert_eq!(post.chat_kind, ChatKind::Broadcast);
    assert!(!post.addressed);
    assert_eq!(
        post.sender,
        Sender {
            id: "-1009".into(),
            name: Some("News".into()),
            handle: Some("news".into()),
            is_bot: false,
        }
    );
}
