//! The Kelp plugin registry.
//!
//! The package format lives here because the host and the registry server must agree on it
//! byte for byte: [`manifest`] reads `kelp.toml`, [`package`] reads and writes `.kelp`
//! archives (and `SKILL.md`). Both are the one strict reader — nothing else in Kelp parses
//! these formats. So do the rules both sides apply to a release: [`contract`] reads which
//! `kelp:plugin` version a component uses, [`version`] refuses unreleasable versions and reads
//! install requirements, [`publish`] reserves namespaces, and [`signing`] lays out and checks
//! every signed message. The trust structures built on those signatures: [`keylog`] (a
//! namespace's hash-chained publisher keys), [`index`] (a package's hash-chained releases)
//! and [`trust`] (the registry's root and online keys, advisories, timestamp); [`resolve`]
//! is a host's decision, from what it fetched and pinned, of which release to install (or
//! why none), and its check of the downloaded bytes; `client` (feature `client`) fetches
//! what it decides on over HTTP. `server` (feature `server`, on by default) is
//! `kelp-registry serve`. [`skill_risk`] flags skill text that tries to make the agent or
//! the user fetch and run code. The host does not use the client yet (no `kelp registry` commands).

#[cfg(feature = "client")]
pub mod client;
pub mod contract;
pub mod index;
pub mod keylog;
pub mod manifest;
pub mod package;
pub mod publish;
pub mod resolve;
#[cfg(feature = "server")]
pub mod server;
pub mod signing;
pub mod skill_risk;
pub mod trust;
pub mod version;
