//! Outbound HTTP on behalf of plugins.
//!
//! Plugins never open sockets. A guest hands the host an [`OutboundRequest`]; the host's
//! [`OutboundClient`] (one per plugin instance) refuses anything the instance was not granted,
//! resolves DNS itself and refuses private addresses unless the operator approved them, pins the
//! connection to the addresses it checked, inserts secrets only at the positions the manifest
//! bound them to, and caps the response.

mod address;
mod client;
mod host_pattern;
mod request;
mod resolve;
mod secrets;

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use address::is_private_url_host;
pub use client::OutboundClient;
pub use host_pattern::{HostPattern, HostPatternError};
pub use resolve::{Resolve, SystemResolver};
pub use secrets::{BoundSecret, Redactor, SecretPosition, StreamRedactor};

/// A host a plugin instance may call: the manifest asked for it and the operator approved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// Which hosts (and ports) this grant covers.
    pub pattern: HostPattern,
    /// The operator explicitly approved private, loopback and link-local addresses for these
    /// hosts (a local Ollama at `127.0.0.1:11434` is the common case).
    pub allow_private: bool,
}

/// Everything an [`OutboundClient`] enforces for one plugin instance.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Hosts the instance may call.
    pub grants: Vec<HttpGrant>,
    /// The instance's secrets and where each is inserted.
    pub secrets: Vec<BoundSecret>,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// For [`OutboundClient::send`]: DNS, connect and the whole response. For
    /// [`OutboundClient::send_streaming`]: DNS, connect and the response headers.
    pub timeout: Duration,
    /// `User-Agent` sent unless the guest sets its own.
    pub user_agent: String,
}

/// An HTTP request as the guest wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Absolute `http` or `https` URL.
    pub url: String,
    /// Request headers in order; names are case-insensitive.
    pub headers: Vec<(String, String)>,
    /// Request body, if any.
    pub body: Option<Vec<u8>>,
}

/// A complete response. Redirects are not followed: a 3xx arrives here as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers in order (values decoded lossily as UTF-8).
    pub headers: Vec<(String, String)>,
    /// The body, at most `max_response_bytes` long.
    pub body: Vec<u8>,
}

/// A response whose body is read as it arrives (LLM token streams).
pub struct StreamingResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers in order (values decoded lossily as UTF-8).
    pub headers: Vec<(String, String)>,
    /// Body chunks as they arrive. Ends with `Err(TooLarge)` once the total would pass
    /// `max_response_bytes`; no idle timeout applies here, the caller owns that.
    pub body: BoxStream<'static, Result<Bytes, OutboundError>>,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Why an outbound request failed. Messages name the missing capability and never contain a
/// secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The instance lacks a capability (host not granted, private address not approved, a
    /// secret's position touched by the guest, …).
    #[error("{0}")]
    Denied(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// DNS, connect or response took longer than the policy's timeout.
    #[error("http: the request timed out")]
    Timeout,
    /// The response body exceeded this many bytes.
    #[error("http: the response body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// DNS failure, connection refused, TLS failure, connection dropped mid-body, ….
    #[error("{0}")]
    Connection(String),
}

/// The policy given to [`OutboundClient::new`] is unusable (the message says which part).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid outbound HTTP policy: {0}")]
pub struct PolicyError(pub String);

impl From<kelp_registry::manifest::SecretPosition> for SecretPosition {
    fn from(position: kelp_registry::manifest::SecretPosition) -> Self {
        use kelp_registry::manifest::SecretPosition as Manifest;
        match position {
            Manifest::Header { name, format } => SecretPosition::Header { name, format },
            Manifest::UrlPathPrefix(prefix) => SecretPosition::UrlPathPrefix(prefix),
            Manifest::Query(name) => SecretPosition::Query(name),
            Manifest::FormField(name) => SecretPosition::FormField(name),
        }
    }
}
