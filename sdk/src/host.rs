use serde::de::DeserializeOwned;

use crate::__private::bindings::kelp::plugin::host;

/// Wall-clock time from the host, in milliseconds since the Unix epoch.
///
/// Use this rather than `std::time::SystemTime`: the host decides what a plugin may observe.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// One key of this plugin instance's configuration (the `[config]` schema of `kelp.toml`),
/// deserialized from the JSON the host holds.
///
/// `None` when the key is not set, or when its value does not deserialize into `T`; the latter
/// is also logged as a warning, since it means the instance was configured against another
/// version of the schema.
pub fn config<T: DeserializeOwned>(key: &str) -> Option<T> {
    let text = host::config(key)?;
    match serde_json::from_str(&text) {
        Ok(value) => Some(value),
        Err(err) => {
            crate::log::warn(format!("config key `{key}` has an unexpected shape: {err}"));
            None
        }
    }
}
