//! The Kelp plugin registry.
//!
//! The package format lives here because the host and the registry server must agree on it
//! byte for byte: [`manifest`] reads `kelp.toml`, [`package`] reads and writes `.kelp`
//! archives. Both are the one strict reader — nothing else in Kelp parses these formats.
//! The server, protocol types and client are not built yet.

pub mod manifest;
pub mod package;
