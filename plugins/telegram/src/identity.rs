//! Who the bot is. In a group a message is for the bot when it mentions the bot's username,
//! replies to one of its messages or names it in a command, so reading updates needs the bot's
//! id and username: `getMe` (the host's `identify`) tells them, and they are kept in the
//! instance's key-value store, since every call runs in a fresh instance.

use kelp_sdk::channel::Identity;
use kelp_sdk::kv::{self, KvError};
use serde::{Deserialize, Serialize};

const KEY: &str = "bot";

/// The bot's own user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bot {
    /// Its user id.
    pub id: String,
    /// Its username, without `@`.
    pub handle: Option<String>,
}

impl Bot {
    /// The bot as `getMe` last told, if it has been asked. A store that cannot be read is
    /// logged and counts as not knowing: direct chats work without it, and a group message then
    /// reaches the bot only as a command without a bot's name.
    pub fn stored() -> Option<Bot> {
        kv::get_json(KEY).unwrap_or_else(|err| {
            kelp_sdk::log::warn(format!(
                "cannot read who the bot is, so group messages that mention it or reply to it \
                 are not taken as addressed: {err}"
            ));
            None
        })
    }

    /// Keeps `identity` for the calls to come.
    pub fn remember(identity: &Identity) -> Result<(), KvError> {
        kv::set_json(
            KEY,
            &Bot {
                id: identity.id.clone(),
                handle: identity.handle.clone(),
            },
        )
    }

    /// Whether `handle` (without `@`) is this bot's; Telegram usernames ignore case.
    pub fn is_named(&self, handle: &str) -> bool {
        self.handle
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(handle))
    }
}
