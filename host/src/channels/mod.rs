//! Chat channels: a channel plugin's instance, the agent it talks to and who may talk to it.
//!
//! - `model.rs` — what the host and a channel plugin say to each other, in the host's types
//!
//! The host drives a channel plugin through `PluginRuntime::channel_poll`,
//! `channel_webhook` and `channel_act` (`plugins/channel.rs`); the manager that runs
//! channels (the cursor, deduplication, sessions, the outbox, pairing) builds on those.

pub mod model;
