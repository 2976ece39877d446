//! `kelp/webhook`: a chat channel for any service that can POST JSON. Messages come in to the
//! host's hook URL, signed; replies go out as JSON to the instance's `reply_url`.
//!
//! Sans-IO like every channel: `inbound` reads a delivery into an event, `outbound` writes a
//! reply as a request and reads what the service answered. The host checks the delivery's
//! signature (and strips it) before this plugin sees it, and adds the optional reply token.

mod inbound;
mod outbound;

use kelp_sdk::channel::{
    Action, Channel, ChannelError, Features, Info, Mode, Outcome, WebhookBatch,
};
use kelp_sdk::http::{Request, Response};

struct Webhook;

/// What the host needs to drive the channel.
fn info() -> Info {
    Info {
        // The service calls in; there is nothing to poll.
        modes: vec![Mode::Webhook],
        // Plain text and nothing more, so any service can show it. Without edits the host
        // sends each reply whole, once, rather than streaming it.
        features: Features::default(),
        // A JSON body has no length limit of its own; this only keeps one reply in one request
        // of a reasonable size.
        max_text_units: 65_536,
        min_edit_interval_ms: 0,
        typing_interval_ms: 0,
        max_poll_wait_s: 0,
    }
}

impl Channel for Webhook {
    fn describe() -> Info {
        info()
    }

    fn handle_webhook(request: Request) -> Result<WebhookBatch, ChannelError> {
        Ok(inbound::delivery(&request, kelp_sdk::now_ms()))
    }

    fn prepare(action: Action) -> Result<Vec<Request>, ChannelError> {
        let reply_url = match action {
            Action::Send(_) => kelp_sdk::config::<String>("reply_url"),
            _ => None,
        };
        outbound::prepare(&action, reply_url.as_deref())
    }

    fn read_response(_action: Action, _index: u32, response: Response) -> Outcome {
        outbound::read_response(&response)
    }
}

kelp_sdk::export_channel!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_plain_webhook() {
        let info = Webhook::describe();
        assert_eq!(info.modes, [Mode::Webhook]);
        assert_eq!(info.features, Features::default());
        assert_eq!(info.max_poll_wait_s, 0);
        assert!(info.max_text_units >= 65_536);
    }
}
