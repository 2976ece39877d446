//! The plugin instance's durable key-value store (needs `kv = true` in `kelp.toml`).
//!
//! Scoped to (plugin instance, owner). Writes made during one call are committed together when
//! the call succeeds; a call that returns an error or traps leaves the store as it was, so a
//! plugin can write first and fail later without cleaning up.

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

use crate::__private::bindings::kelp::plugin::kv as wit;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The `kv` capability was not granted; the text names it.
    Denied(String),
    /// The write would take this instance over its byte quota (the number is the quota).
    QuotaExceeded(u64),
    /// Empty or over-long key, or over-long value.
    Invalid(String),
    /// [`get_json`] found a value that is not the JSON of the requested type, or [`set_json`]
    /// could not serialize one. Raised by the SDK, never by the host.
    Json(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Denied(what) => write!(f, "key-value store denied: {what}"),
            KvError::QuotaExceeded(quota) => {
                write!(f, "key-value store quota of {quota} bytes exceeded")
            }
            KvError::Invalid(why) => write!(f, "invalid key-value operation: {why}"),
            KvError::Json(why) => write!(f, "stored value is not the expected JSON: {why}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<wit::KvError> for KvError {
    fn from(err: wit::KvError) -> Self {
        match err {
            wit::KvError::Denied(what) => KvError::Denied(what),
            wit::KvError::QuotaExceeded(quota) => KvError::QuotaExceeded(quota),
            wit::KvError::Invalid(why) => KvError::Invalid(why),
        }
    }
}

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    Ok(wit::get(key)?)
}

/// Stores `value` under `key`, replacing any previous value.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
    Ok(wit::set(key, value.as_ref())?)
}

/// Removes `key`; removing an absent key is not an error.
pub fn delete(key: &str) -> Result<(), KvError> {
    Ok(wit::delete(key)?)
}

/// Sets `key` to `new` (`None` deletes it) only if its current value is `expected` (`None`:
/// absent). Returns whether it was swapped.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<bool, KvError> {
    Ok(wit::compare_and_swap(key, expected, new)?)
}

/// Keys starting with `prefix`, in order.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    Ok(wit::list_keys(prefix)?)
}

/// The JSON value stored under `key`, deserialized into `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| KvError::Json(err.to_string())),
    }
}

/// Stores `value` under `key` as JSON.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|err| KvError::Json(err.to_string()))?;
    set(key, bytes)
}
