//! Chat channels: a channel plugin's instance, the agent it talks to and who may talk to it.
//!
//! - `model.rs` — what the host and a channel plugin say to each other, in the host's types
//! - `manager.rs` — running channels: the lease, polls stored exactly once, who may talk,
//!   a session per chat
//! - `reply.rs` — the agent's reply streamed to a chat, and the platform's answers acted on
//!
//! The host drives a channel plugin through `PluginRuntime::channel_poll`,
//! `channel_webhook` and `channel_act` (`plugins/channel.rs`).

pub mod manager;
pub mod model;
mod reply;

pub use manager::{
    Access, ChannelChange, ChannelManager, ChannelSettings, NewChannel, WebhookRefusal,
};
