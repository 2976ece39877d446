//! Tool plugins: functions the agent's model can call.

use std::fmt;

use serde_json::Value;

/// A tool the plugin offers to the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Must match `^[a-zA-Z0-9_-]{1,64}$`: model vendors reject other characters.
    pub name: String,
    /// What the tool does and when to use it; the model reads this.
    pub description: String,
    /// A JSON Schema of the input; the host validates every call's input against it.
    pub input_schema: Value,
}

impl ToolSpec {
    /// A tool named `name`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
    ) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            input_schema,
        }
    }
}

/// Why a tool call failed. The message goes back to the model, so make it useful to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The input did not fit the tool's schema or made no sense.
    InvalidInput(String),
    /// The plugin lacks a capability it needed; the text names it.
    Denied(String),
    /// Anything else.
    Failed(String),
}

impl ToolError {
    /// The error for a call to a tool this plugin does not offer.
    pub fn unknown_tool(name: &str) -> Self {
        ToolError::InvalidInput(format!("unknown tool `{name}`"))
    }

    /// An [`InvalidInput`](ToolError::InvalidInput) error.
    pub fn invalid(message: impl Into<String>) -> Self {
        ToolError::InvalidInput(message.into())
    }

    /// A [`Failed`](ToolError::Failed) error.
    pub fn failed(message: impl Into<String>) -> Self {
        ToolError::Failed(message.into())
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            ToolError::Denied(m) => write!(f, "denied: {m}"),
            ToolError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for ToolError {}

/// Lets `serde_json::from_value::<Args>(input)?` reject malformed input in one line.
impl From<serde_json::Error> for ToolError {
    fn from(err: serde_json::Error) -> Self {
        ToolError::InvalidInput(err.to_string())
    }
}

impl From<crate::http::HttpError> for ToolError {
    fn from(err: crate::http::HttpError) -> Self {
        match err {
            crate::http::HttpError::Denied(what) => {
                ToolError::Denied(format!("http capability: {what}"))
            }
            other => ToolError::Failed(other.to_string()),
        }
    }
}

#[cfg(any(feature = "tool", feature = "channel"))]
impl From<crate::kv::KvError> for ToolError {
    fn from(err: crate::kv::KvError) -> Self {
        match err {
            crate::kv::KvError::Denied(what) => ToolError::Denied(format!("kv capability: {what}")),
            other => ToolError::Failed(other.to_string()),
        }
    }
}

/// What a tool returns: JSON, or text (prose, Markdown, ...) handed to the model as is.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutput {
    /// Serialized as JSON text.
    Json(Value),
    /// Passed through unchanged.
    Text(String),
}

impl ToolOutput {
    /// The text the host receives.
    pub fn into_text(self) -> String {
        match self {
            ToolOutput::Json(value) => value.to_string(),
            ToolOutput::Text(text) => text,
        }
    }
}

impl From<Value> for ToolOutput {
    fn from(value: Value) -> Self {
        ToolOutput::Json(value)
    }
}

impl From<String> for ToolOutput {
    fn from(text: String) -> Self {
        ToolOutput::Text(text)
    }
}

impl From<&str> for ToolOutput {
    fn from(text: &str) -> Self {
        ToolOutput::Text(text.to_owned())
    }
}

/// A tool plugin. Implement it on a unit struct and register it with
/// [`export_tool!`](crate::export_tool).
pub trait Tool {
    /// The tools this plugin offers.
    fn tools() -> Vec<ToolSpec>;

    /// Runs tool `name` with `input`, which the host has already validated against the tool's
    /// input schema.
    fn call(name: &str, input: Value) -> Result<ToolOutput, ToolError>;
}

/// Registers a [`Tool`] implementation as the component's `tool` export.
///
/// Use it once, in the plugin crate (built with the `tool` feature). On targets other than
/// `wasm32` it expands to nothing, so a plugin's unit tests run natively.
#[macro_export]
macro_rules! export_tool {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __KelpToolExport = $crate::__private::ToolExport<$ty>;
            $crate::__private::bindings::__kelp_export_tool!(
                __KelpToolExport with_types_in $crate::__private::bindings
            );
        };
        // Elsewhere (native unit tests) there is no component to export to; referring to the
        // implementation keeps it from being reported as dead code.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::tool::Tool>::tools;
            let _ = <$ty as $crate::tool::Tool>::call;
        };
    };
}

#[cfg(feature = "tool")]
#[doc(hidden)]
pub struct ToolExport<T>(std::marker::PhantomData<T>);

#[cfg(feature = "tool")]
impl<T: Tool> crate::__private::bindings::exports::kelp::plugin::tool::Guest for ToolExport<T> {
    fn list() -> Vec<crate::__private::bindings::wit::ToolSpec> {
        T::tools().into_iter().map(Into::into).collect()
    }

    fn call(
        name: String,
        input: String,
    ) -> Result<String, crate::__private::bindings::wit::ToolError> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|err| ToolError::InvalidInput(format!("input is not JSON: {err}")))?;
        T::call(&name, input)
            .map(ToolOutput::into_text)
            .map_err(Into::into)
    }
}

#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
mod convert {
    use super::{ToolError, ToolSpec};
    use crate::__private::bindings::wit;

    impl From<ToolSpec> for wit::ToolSpec {
        fn from(spec: ToolSpec) -> Self {
            wit::ToolSpec {
                name: spec.name,
                description: spec.description,
                input_schema: spec.input_schema.to_string(),
            }
        }
    }

    impl From<wit::ToolSpec> for ToolSpec {
        fn from(spec: wit::ToolSpec) -> Self {
            // The host sends schemas it has parsed itself; fall back to a string only so that
            // nothing is lost if it ever does not.
            let input_schema = serde_json::from_str(&spec.input_schema)
                .unwrap_or(serde_json::Value::String(spec.input_schema));
            ToolSpec {
                name: spec.name,
                description: spec.description,
                input_schema,
            }
        }
    }

    impl From<ToolError> for wit::ToolError {
        fn from(err: ToolError) -> Self {
            match err {
                ToolError::InvalidInput(m) => wit::ToolError::InvalidInput(m),
                ToolError::Denied(m) => wit::ToolError::Denied(m),
                ToolError::Failed(m) => wit::ToolError::Failed(m),
            }
        }
    }
}
