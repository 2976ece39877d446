//! Kelp: a self-hosted AI agent host whose tools, skills, channels and model providers are
//! sandboxed WebAssembly components.
//!
//! Layout: `plugins/` (engine, packages, grants, host imports, calls), `net/` (outbound HTTP
//! under grants, secret injection), `store/` (SQLite/PostgreSQL), `api/` (HTTP server),
//! `cli/` (the `kelp` command), `secrets.rs` (keys, encryption at rest).

pub mod agent;
pub mod api;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod config;
pub mod llm;
pub mod net;
pub mod plugins;
pub mod schema;
pub mod secrets;
pub mod store;
pub mod util;

/// What `host/build.rs` embeds: the SDK, templates and WIT for `kelp plugin new`, and the
/// first-party plugins `kelp serve` installs on a new database.
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

    /// A first-party plugin as built with this binary.
    pub struct FirstPartyPlugin {
        /// Its directory under `plugins/`.
        pub dir: &'static str,
        /// `kelp.toml`.
        pub manifest: &'static str,
        /// The component.
        pub wasm: &'static [u8],
        pub readme: Option<&'static str>,
    }

    impl FirstPartyPlugin {
        /// The `.kelp` package, as `kelp plugin build` would pack it.
        pub fn package(&self) -> anyhow::Result<Vec<u8>> {
            Ok(kelp_registry::package::write_package(
                self.manifest,
                Some(self.wasm),
                None,
                self.readme,
            )?)
        }
    }
}
