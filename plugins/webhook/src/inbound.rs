//! A delivery from the service, read into an event.
//!
//! The service POSTs one message per request:
//!
//! ```json
//! {"id": "m-1", "chat": "c-1", "sender": {"id": "u-1", "name": "Ada"}, "text": "hi", "thread": "t-1"}
//! ```
//!
//! `id` must be unique and stay the same when the service delivers the message again; `sender`
//! and `thread` may be left out. Ids may be strings or numbers.

use kelp_sdk::channel::{Chat, ChatKind, Event, EventKind, Message, Sender, WebhookBatch};
use kelp_sdk::http::{Request, Response};
use serde::Deserialize;
use serde_json::Value;

/// Reads a delivery, received at `now_ms`, and answers it `200 {"ok":true}`. A body this plugin
/// cannot read is still an event (`Ignored`, saying why) and still answered 200: the host
/// stores it, so the operator can see what came, and a service that retries on errors would
/// otherwise send the same unreadable body forever.
pub fn delivery(request: &Request, now_ms: u64) -> WebhookBatch {
    let body = request.body.as_deref().unwrap_or_default();
    let event = match serde_json::from_slice::<Value>(body) {
        Ok(value) => event(&value, now_ms, body),
        Err(err) => Event {
            id: unreadable_id(body),
            kind: EventKind::Ignored(format!("a body that is not JSON: {err}")),
        },
    };
    WebhookBatch {
        events: vec![event],
        response: Response::new(200, &br#"{"ok":true}"#[..])
            .with_header("content-type", "application/json"),
    }
}

fn event(value: &Value, now_ms: u64, body: &[u8]) -> Event {
    let id = value.get("id").and_then(id_text);
    let kind = match Delivery::deserialize(value) {
        Ok(delivery) => EventKind::Message(message(delivery, now_ms)),
        Err(err) => EventKind::Ignored(format!("a body that is not a message: {err}")),
    };
    Event {
        id: id.unwrap_or_else(|| unreadable_id(body)),
        kind,
    }
}

fn message(delivery: Delivery, now_ms: u64) -> Message {
    let chat = delivery.chat.into_text();
    // A service that names no sender has one person per chat.
    let sender = match delivery.sender {
        Some(sender) => Sender {
            id: sender.id.into_text(),
            name: sender.name,
            handle: None,
            is_bot: false,
        },
        None => Sender {
            id: chat.clone(),
            name: None,
            handle: None,
            is_bot: false,
        },
    };
    Message {
        chat: Chat {
            id: chat,
            thread: delivery.thread.map(Id::into_text),
        },
        // Every conversation is one person and the agent, so every message is for it.
        chat_kind: ChatKind::Direct,
        sender,
        id: delivery.id.into_text(),
        text: delivery.text,
        addressed: true,
        command: None,
        reply_to: None,
        attachments: Vec::new(),
        // The format carries no time: the message is as old as its delivery.
        timestamp_ms: now_ms,
    }
}

#[derive(Deserialize)]
struct Delivery {
    id: Id,
    chat: Id,
    sender: Option<From>,
    text: String,
    thread: Option<Id>,
}

#[derive(Deserialize)]
struct From {
    id: Id,
    name: Option<String>,
}

/// An id, written as a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(serde_json::Number),
}

impl Id {
    fn into_text(self) -> String {
        match self {
            Id::Text(text) => text,
            Id::Number(number) => number.to_string(),
        }
    }
}

fn id_text(value: &Value) -> Option<String> {
    Id::deserialize(value).ok().map(Id::into_text)
}

/// An event id for a delivery without a readable `id`, the same for the same bytes so that a
/// re-delivery is still dropped: FNV-1a, enough to tell deliveries apart, not a defence.
fn unreadable_id(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("unreadable-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn deliver(body: &str) -> Event {
        let batch = delivery(
            &Request::post("https://kelp.test/hooks/channels/2").body(body),
            NOW,
        );
        assert_eq!(batch.response.status, 200);
        assert_eq!(batch.response.body, br#"{"ok":true}"#);
        assert_eq!(
            batch.response.header("content-type"),
            Some("application/json")
        );
        assert_eq!(batch.events.len(), 1);
        batch.events.into_iter().next().unwrap()
    }

    #[test]
    fn a_message() {
        let event = deliver(
            r#"{"id": "m-1", "chat": "c-1", "sender": {"id": "u-1", "name": "Ada"},
                "text": "hello <there> & you", "thread": "t-9"}"#,
        );
        assert_eq!(
            event,
            Event {
                id: "m-1".into(),
                kind: EventKind::Message(Message {
                    chat: Chat {
                        id: "c-1".into(),
                        thread: Some("t-9".into()),
                    },
                    chat_kind: ChatKind::Direct,
                    sender: Sender {
                        id: "u-1".into(),
                        name: Some("Ada".into()),
                        handle: None,
                        is_bot: false,
                    },
                    id: "m-1".into(),
                    text: "hello <there> & you".into(),
                    addressed: true,
                    command: None,
                    reply_to: None,
                    attachments: Vec::new(),
                    timestamp_ms: NOW,
                }),
            }
        );
    }

    #[test]
    fn sender_and_thread_are_optional_and_ids_may_be_numbers() {
        let event = deliver(r#"{"id": 42, "chat": 7, "text": "hi", "extra": true}"#);
        assert_eq!(event.id, "42");
        let EventKind::Message(message) = event.kind else {
            panic!("{event:?}")
        };
        assert_eq!(message.chat, Chat::new("7"));
        assert_eq!(message.sender.id, "7");
        assert_eq!(message.sender.name, None);
        assert_eq!(message.id, "42");
    }

    #[test]
    fn what_cannot_be_read_is_ignored_but_answered() {
        let no_text = deliver(r#"{"id": "m-2", "chat": "c-1"}"#);
        assert_eq!(no_text.id, "m-2");
        assert!(
            matches!(&no_text.kind, EventKind::Ignored(why) if why.contains("missing field `text`")),
            "{no_text:?}"
        );

        let not_json = deliver("id=m-3&text=hi");
        assert!(not_json.id.starts_with("unreadable-"));
        assert!(matches!(&not_json.kind, EventKind::Ignored(why) if why.contains("not JSON")));
        // The same bytes delivered again are the same event, which the host then drops.
        assert_eq!(deliver("id=m-3&text=hi").id, not_json.id);
        assert_ne!(deliver("id=m-4&text=hi").id, not_json.id);

        let no_id = deliver(r#"{"chat": "c-1", "text": "hi"}"#);
        assert!(no_id.id.starts_with("unreadable-"));
        assert!(matches!(no_id.kind, EventKind::Ignored(_)));
    }
}
