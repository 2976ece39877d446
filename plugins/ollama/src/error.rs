//! Ollama's error document, `{"error": "..."}`, as a [`ProviderError`]. It comes as the body of
//! an error status, or as a line in the middle of a stream.

use kelp_sdk::provider::{ProviderError, error_from_status};
use serde_json::Value;

/// An error status's body; `body` need not be JSON (a proxy's page, for one).
pub(crate) fn from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    let document: Option<Value> = serde_json::from_slice(body).ok();
    let message = match document.as_ref().and_then(|d| d.get("error")) {
        Some(error) => message(error),
        None => String::from_utf8_lossy(body).trim().to_owned(),
    };
    error_from_status(status, headers, message.as_bytes())
}

/// `{"error": "..."}` holds a string; anything else is quoted as JSON.
pub(crate) fn message(error: &Value) -> String {
    error
        .as_str()
        .map_or_else(|| error.to_string(), str::to_owned)
}
