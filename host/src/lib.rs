//! Kelp: a self-hosted AI agent host whose tools, skills, channels and model providers are
//! sandboxed WebAssembly components.
//!
//! Layout: `plugins/` (engine, packages, grants, host imports, calls), `net/` (outbound HTTP
//! under grants, secret injection), `store/` (SQLite/PostgreSQL), `api/` (HTTP server),
//! `cli/` (the `kelp` command), `secrets.rs` (keys, encryption at rest).

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod llm;
pub mod net;
pub mod plugins;
pub mod schema;
pub mod secrets;
pub mod store;
pub mod util;

/// The SDK, templates and WIT, embedded for `kelp plugin new`.
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}
