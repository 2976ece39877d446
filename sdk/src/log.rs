//! Write to the host's log, tagged with this plugin and instance.
//!
//! The host caps the volume per call and redacts secret values. Output printed to stdout or
//! stderr also reaches the log, but without a level.

use crate::__private::bindings::kelp::plugin::host::{self, LogLevel};

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Information useful when debugging the plugin.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something unexpected that the plugin recovered from.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    host::log(level, message.as_ref());
}

/// Writes `message` at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes `message` at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes `message` at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes `message` at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes `message` at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
