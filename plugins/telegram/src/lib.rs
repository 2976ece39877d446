//! `kelp/telegram`: a Telegram bot through the Bot API, by long polling (`getUpdates`) or a
//! webhook (`setWebhook`).
//!
//! Sans-IO like every channel: `inbound` reads updates into events, `outbound` turns actions
//! into Bot API calls and their answers into outcomes, `html` writes Markdown as Telegram HTML.
//! The host sends every request, inserts the bot token into the URL where the manifest binds
//! it, and checks the webhook's secret header; this plugin never sees either secret.

mod api;
mod html;
mod identity;
mod inbound;
mod outbound;

#[cfg(test)]
mod fixtures;

use kelp_sdk::channel::{
    Action, Batch, Channel, ChannelError, Features, Info, Mode, Outcome, WebhookBatch,
};
use kelp_sdk::http::{Request, Response};

use crate::api::BotApi;
use crate::identity::Bot;

struct Telegram;

/// What the host needs to drive a Telegram bot.
fn info() -> Info {
    Info {
        // Polling needs no public URL, so it is what a new bot starts with.
        modes: vec![Mode::Poll, Mode::Webhook],
        features: Features {
            edit: true,
            typing: true,
            buttons: true,
            threads: true,
            attachments: true,
            markdown: true,
        },
        // Telegram's limit on a message's text, counted in UTF-16 code units.
        max_text_units: 4096,
        // Telegram allows a bot about one message a second in a chat (and 20 a minute in a
        // group) and counts edits with them: a reply streamed faster is answered with 429s,
        // which the host then waits out.
        min_edit_interval_ms: 1000,
        // "typing" shows for 5 seconds (or until the bot's next message): repeated every 4,
        // it does not flicker off while the agent works.
        typing_interval_ms: 4000,
        // Telegram holds a long poll as long as asked; 50 s stays under the 60 s after which
        // proxies and load balancers commonly drop an idle connection.
        max_poll_wait_s: 50,
    }
}

impl Channel for Telegram {
    fn describe() -> Info {
        info()
    }

    fn poll_request(cursor: Option<String>, wait_seconds: u32) -> Result<Request, ChannelError> {
        let wait = wait_seconds.min(info().max_poll_wait_s);
        inbound::poll_request(&bot_api()?, cursor.as_deref(), wait)
    }

    fn parse_poll(response: Response) -> Result<Batch, ChannelError> {
        inbound::parse_poll(&response, Bot::stored().as_ref())
    }

    fn handle_webhook(request: Request) -> Result<WebhookBatch, ChannelError> {
        Ok(inbound::webhook(&request, Bot::stored().as_ref()))
    }

    fn prepare(action: Action) -> Result<Vec<Request>, ChannelError> {
        outbound::prepare(&bot_api()?, &action)
    }

    fn read_response(action: Action, _index: u32, response: Response) -> Outcome {
        let outcome = match &action {
            // The answer to getFile names the path the file downloads from.
            Action::FetchFile(_) => match bot_api() {
                Ok(api) => outbound::read_file_answer(&api, &response),
                Err(err) => Outcome::Failed(format!("{err:?}")),
            },
            _ => outbound::read_response(&action, &response),
        };
        if let Outcome::Identified(identity) = &outcome
            && let Err(err) = Bot::remember(identity)
        {
            // Without it no group message that mentions the bot or replies to it reaches it:
            // better a setup that fails saying why than a bot that half works.
            return Outcome::Failed(format!(
                "cannot keep who the bot is in the key-value store (the plugin needs `kv`): {err}"
            ));
        }
        outcome
    }
}

fn bot_api() -> Result<BotApi, ChannelError> {
    // The host fills in the schema's default, and binds the bot token to this same value:
    // without it there is nowhere a request may go.
    kelp_sdk::config::<String>("api_base")
        .map(|base| BotApi::new(&base))
        .ok_or_else(|| ChannelError::Invalid("the instance's config has no `api_base`".into()))
}

kelp_sdk::export_channel!(Telegram);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_what_telegram_can_do() {
        let info = Telegram::describe();
        assert_eq!(info.modes, [Mode::Poll, Mode::Webhook]);
        let f = info.features;
        assert!(f.edit && f.typing && f.buttons && f.threads && f.attachments && f.markdown);
        assert_eq!(info.max_text_units, 4096);
        assert_eq!(info.max_poll_wait_s, 50);
    }
}
