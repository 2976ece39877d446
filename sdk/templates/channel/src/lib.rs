//! A polling chat channel for a made-up JSON API; replace the URLs and the parsing with your
//! platform's.

use kelp_sdk::channel::{Channel, ChannelError, InboundMessage, OutboundMessage, PollBatch};
use kelp_sdk::http::{Request, Response};
use serde::Deserialize;
use serde_json::json;

struct Plugin;

#[derive(Deserialize)]
struct Update {
    id: u64,
    chat: String,
    from: String,
    text: String,
    time_ms: u64,
}

fn base_url() -> Result<String, ChannelError> {
    kelp_sdk::config::<String>("base_url")
        .map(|url| url.trim_end_matches('/').to_owned())
        .ok_or_else(|| ChannelError::Invalid("config `base_url` is not set".into()))
}

impl Channel for Plugin {
    fn poll_request(cursor: Option<String>) -> Result<Request, ChannelError> {
        let after = cursor.unwrap_or_else(|| "0".into());
        Ok(Request::get(format!(
            "{}/updates?after={after}&wait=25",
            base_url()?
        )))
    }

    fn parse_poll(response: Response) -> Result<PollBatch, ChannelError> {
        match response.status {
            200 => {}
            401 | 403 => return Err(ChannelError::Auth(response.text())),
            429 => return Err(ChannelError::RateLimited(None)),
            status => return Err(ChannelError::Other(format!("HTTP {status}"))),
        }
        let updates: Vec<Update> = response
            .json()
            .map_err(|err| ChannelError::Invalid(format!("bad updates: {err}")))?;
        Ok(PollBatch {
            next_cursor: updates.last().map(|u| u.id.to_string()),
            messages: updates
                .into_iter()
                .map(|u| InboundMessage {
                    chat_id: u.chat,
                    sender_id: u.from,
                    sender_name: None,
                    message_id: u.id.to_string(),
                    text: u.text,
                    reply_to: None,
                    thread_id: None,
                    timestamp_ms: u.time_ms,
                })
                .collect(),
        })
    }

    fn send_requests(message: OutboundMessage) -> Result<Vec<Request>, ChannelError> {
        let body = json!({ "chat": message.chat_id, "text": message.text });
        Ok(vec![
            Request::post(format!("{}/messages", base_url()?)).json(&body),
        ])
    }
}

kelp_sdk::export_channel!(Plugin);
