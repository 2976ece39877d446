//! # kelp-sdk
//!
//! Write [Kelp](https://github.com/kelp) plugins in Rust. A plugin is a WebAssembly component
//! (`wasm32-wasip2`) of one kind; enable the Cargo feature of that kind:
//!
//! | feature    | implement                     | register with                     |
//! |------------|-------------------------------|-----------------------------------|
//! | `tool`     | [`Tool`](tool::Tool)          | [`export_tool!`](crate::export_tool)         |
//! | `provider` | [`Provider`](provider::Provider) + [`Decoder`](provider::Decoder) | [`export_provider!`](crate::export_provider) |
//! | `channel`  | [`Channel`](channel::Channel) | [`export_channel!`](crate::export_channel)   |
//!
//! The host's services are plain functions: [`log`], [`now_ms`], [`config`], and, where the
//! plugin's kind may use them, [`kv`] and [`http`]. Providers and channels are *sans-IO*: they
//! build [`http::Request`]s and decode bytes, and the host does the network I/O; the
//! [`stream`] parsers help providers with the decoding, and [`channel::split_text`] and
//! [`channel::Outcome::from_status`] help channels with length limits and error statuses.
//!
//! ```ignore
//! use kelp_sdk::tool::{Tool, ToolError, ToolOutput, ToolSpec};
//! use serde_json::{Value, json};
//!
//! struct Hello;
//!
//! impl Tool for Hello {
//!     fn tools() -> Vec<ToolSpec> {
//!         vec![ToolSpec::new("greet", "Greet someone by name", json!({
//!             "type": "object",
//!             "properties": { "name": { "type": "string" } },
//!             "required": ["name"],
//!         }))]
//!     }
//!
//!     fn call(name: &str, input: Value) -> Result<ToolOutput, ToolError> {
//!         match name {
//!             "greet" => Ok(format!("Hello, {}!", input["name"].as_str().unwrap_or("stranger")).into()),
//!             other => Err(ToolError::unknown_tool(other)),
//!         }
//!     }
//! }
//!
//! kelp_sdk::export_tool!(Hello);
//! ```
#![deny(missing_docs)]

// Lets the paths that wit-bindgen writes into the plugin's crate (`kelp_sdk::__private::…`)
// resolve inside this crate as well.
extern crate self as kelp_sdk;

pub mod channel;
pub mod http;
pub mod provider;
pub mod stream;
pub mod tool;

#[cfg(any(feature = "tool", feature = "channel"))]
pub mod kv;
#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
pub mod log;

#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
mod host;
#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
pub use host::{config, now_ms};

#[doc(hidden)]
pub mod __private;
