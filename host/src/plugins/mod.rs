//! The plugin runtime: one wasmtime engine, packages loaded and checked, instances with their
//! grants and secrets, and calls run under time, memory, log and output limits.
//!
//! - `engine.rs` — the engine, the pool sized from one capacity setting, the epoch ticker
//! - `contract/` — the `kelp:plugin` versions served: checked before compiling, bound, dispatched
//! - `cache.rs` — precompiled components on disk, HMAC-protected
//! - `channel.rs` — calling channel plugins: polls, webhook deliveries, actions
//! - `fair.rs` — a bound on one owner's calls in flight
//! - `grants.rs` — requested ∩ approved capabilities
//! - `state.rs` — per-call store data and the host imports
//! - `installed.rs` — what is installed: packages, instances, approvals, secrets
//! - `runtime.rs` — what runs: the engine and linker, loading instances, catching up, calls
//! - `workspace.rs` — where workspaces live, and their disk quota kept on the guest's writes

pub mod cache;
mod channel;
pub mod contract;
pub mod engine;
mod fair;
pub mod grants;
mod installed;
mod provider;
mod runtime;
pub mod settings;
mod state;
mod workspace;

use std::sync::Arc;

pub use kelp_registry::manifest::{Manifest, PluginKind, WorkspaceAccess};
use serde::Serialize;

pub use contract::channel::ChannelInfo;
pub use installed::{
    InstallOptions, InstalledPlugin, PackageReview, SecretUpdate, describe_requested,
    with_config_defaults,
};
pub use provider::{Probe, ProviderAddress, ProviderStream};
pub use runtime::{CallError, PluginRuntime, SecretValues};
pub use settings::{CallLimits, RuntimeSettings};

use crate::net::{OutboundClient, Redactor};
use crate::store::Db;
use grants::GrantSet;

/// A tool as a plugin describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the input, as text.
    pub input_schema: String,
}

/// An error the plugin itself returned (as opposed to one the host imposed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolFailure {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("{0}")]
    Failed(String),
}

impl ToolFailure {
    /// The same failure with a note from the host after the plugin's own message.
    pub fn noting(self, note: &str) -> ToolFailure {
        match self {
            ToolFailure::InvalidInput(m) => ToolFailure::InvalidInput(format!("{m} ({note})")),
            ToolFailure::Denied(m) => ToolFailure::Denied(format!("{m} ({note})")),
            ToolFailure::Failed(m) => ToolFailure::Failed(format!("{m} ({note})")),
        }
    }
}

/// What every call of one plugin instance shares: identity, config, grants, the outbound
/// HTTP client bound to those grants and secrets, and the database for `kv`.
pub struct InstanceContext {
    pub plugin: String,
    pub instance_id: String,
    pub config: serde_json::Map<String, serde_json::Value>,
    pub grants: GrantSet,
    pub limits: CallLimits,
    pub outbound: Option<Arc<OutboundClient>>,
    pub redactor: Redactor,
    pub db: Db,
}
