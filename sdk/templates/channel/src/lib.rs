//! A polling chat channel for a made-up JSON API; replace the URLs and the parsing with your
//! platform's. The API it speaks:
//!
//! - `GET {base_url}/updates?after=<id>&wait=<seconds>` → `[{"id", "chat", "from": {"id",
//!   "name"}, "text", "time_ms"}, ...]`, the updates after `after`, waiting up to `wait`
//!   seconds for one;
//! - `POST {base_url}/messages` with `{"chat", "text", "reply_to"}` → `{"id"}`;
//! - `GET {base_url}/me` → `{"id", "handle", "name"}`, who the bot is;
//! - errors as a status with the reason as text, and `retry-after` on 429.

use kelp_sdk::channel::{
    Action, Batch, Channel, ChannelError, Chat, ChatKind, Event, EventKind, Features, Identity,
    Info, Message, Mode, Outcome, Sender, Setup,
};
use kelp_sdk::http::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

struct Plugin;

#[derive(Deserialize)]
struct Update {
    chat: String,
    from: Author,
    text: String,
    time_ms: u64,
}

#[derive(Deserialize)]
struct Author {
    id: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

#[derive(Deserialize)]
struct Me {
    id: String,
    handle: Option<String>,
    name: Option<String>,
}

fn base_url() -> Result<String, ChannelError> {
    kelp_sdk::config::<String>("base_url")
        .map(|url| url.trim_end_matches('/').to_owned())
        .ok_or_else(|| ChannelError::Invalid("config `base_url` is not set".into()))
}

fn retry_after(response: &Response) -> Option<u32> {
    response.header("retry-after")?.trim().parse().ok()
}

/// One update as an event. An update that is not a message this plugin reads is still an
/// event (`Ignored`), so that the cursor moves past it.
fn event(update: Value) -> Option<Event> {
    let id = update.get("id")?.as_u64()?.to_string();
    let kind = match serde_json::from_value::<Update>(update) {
        Ok(u) => EventKind::Message(Message {
            chat: Chat::new(u.chat),
            // The made-up platform has only one-to-one chats, so every message is for the bot.
            chat_kind: ChatKind::Direct,
            sender: Sender {
                id: u.from.id,
                name: u.from.name,
                handle: None,
                is_bot: false,
            },
            id: id.clone(),
            text: u.text,
            addressed: true,
            command: None,
            reply_to: None,
            attachments: Vec::new(),
            timestamp_ms: u.time_ms,
        }),
        Err(err) => EventKind::Ignored(format!("update {id}: {err}")),
    };
    Some(Event { id, kind })
}

impl Channel for Plugin {
    fn describe() -> Info {
        Info {
            modes: vec![Mode::Poll],
            features: Features::default(),
            max_text_units: 4000,
            min_edit_interval_ms: 1000,
            typing_interval_ms: 5000,
            max_poll_wait_s: 25,
        }
    }

    fn poll_request(cursor: Option<String>, wait_seconds: u32) -> Result<Request, ChannelError> {
        let after = cursor.unwrap_or_else(|| "0".into());
        Ok(Request::get(format!(
            "{}/updates?after={after}&wait={wait_seconds}",
            base_url()?
        )))
    }

    fn parse_poll(response: Response) -> Result<Batch, ChannelError> {
        if !response.is_success() {
            return Err(ChannelError::from_status(
                response.status,
                retry_after(&response),
                &response.text(),
                ChannelError::PollConflict,
            ));
        }
        let updates: Vec<Value> = response
            .json()
            .map_err(|err| ChannelError::Invalid(format!("the updates are not a list: {err}")))?;
        // An update without an id cannot be told apart from its redelivery: it is skipped.
        let events: Vec<Event> = updates.into_iter().filter_map(event).collect();
        Ok(Batch {
            next_cursor: events.last().map(|e| e.id.clone()),
            events,
        })
    }

    fn prepare(action: Action) -> Result<Vec<Request>, ChannelError> {
        match action {
            Action::Send(out) => {
                let body =
                    json!({ "chat": out.chat.id, "text": out.text, "reply_to": out.reply_to });
                Ok(vec![
                    Request::post(format!("{}/messages", base_url()?)).json(&body),
                ])
            }
            Action::Setup(Setup::Identify) => Ok(vec![Request::get(format!("{}/me", base_url()?))]),
            // The platform always holds updates for polling: nothing to switch.
            Action::Setup(Setup::UsePolling) => Ok(Vec::new()),
            // `describe` offers no edits, typing, buttons or webhooks, so the host does not ask.
            other => Err(ChannelError::Invalid(format!("not supported: {other:?}"))),
        }
    }

    fn read_response(action: Action, _index: u32, response: Response) -> Outcome {
        if !response.is_success() {
            return Outcome::from_status(response.status, retry_after(&response), &response.text());
        }
        match action {
            Action::Send(_) => match response.json::<Sent>() {
                Ok(sent) => Outcome::Done(Some(sent.id)),
                Err(err) => Outcome::Failed(format!("unexpected answer to a send: {err}")),
            },
            Action::Setup(Setup::Identify) => match response.json::<Me>() {
                Ok(me) => Outcome::Identified(Identity {
                    id: me.id,
                    handle: me.handle,
                    name: me.name,
                }),
                Err(err) => Outcome::Failed(format!("unexpected answer to /me: {err}")),
            },
            _ => Outcome::Done(None),
        }
    }
}

kelp_sdk::export_channel!(Plugin);

#[cfg(test)]
mod tests {
    use kelp_sdk::channel::{Outbound, TextFormat};

    use super::*;

    #[test]
    fn reads_updates_and_skips_what_it_cannot() {
        let body = r#"[
            {"id": 7, "chat": "c1", "from": {"id": "u1", "name": "Ada"}, "text": "hi", "time_ms": 1700000000000},
            {"id": 8, "chat": "c1", "sticker": "cat"}
        ]"#;
        let batch = Plugin::parse_poll(Response::new(200, body)).unwrap();
        assert_eq!(batch.next_cursor.as_deref(), Some("8"));
        assert_eq!(batch.events.len(), 2);
        let EventKind::Message(message) = &batch.events[0].kind else {
            panic!("{:?}", batch.events[0]);
        };
        assert_eq!(
            (message.chat.id.as_str(), message.text.as_str()),
            ("c1", "hi")
        );
        assert!(matches!(batch.events[1].kind, EventKind::Ignored(_)));
    }

    #[test]
    fn errors_say_what_to_do() {
        let busy = Response::new(429, "slow down").with_header("retry-after", "3");
        assert_eq!(
            Plugin::parse_poll(busy).unwrap_err(),
            ChannelError::RateLimited(3)
        );

        let send = Action::Send(Outbound {
            chat: Chat::new("c1"),
            text: "hello".into(),
            format: TextFormat::Plain,
            reply_to: None,
            buttons: Vec::new(),
            idempotency_key: "k1".into(),
        });
        let sent = Plugin::read_response(send.clone(), 0, Response::new(200, r#"{"id":"m9"}"#));
        assert_eq!(sent, Outcome::Done(Some("m9".into())));
        let refused = Plugin::read_response(send, 0, Response::new(401, "bad token"));
        assert_eq!(refused, Outcome::Unauthorized("HTTP 401: bad token".into()));
    }
}
