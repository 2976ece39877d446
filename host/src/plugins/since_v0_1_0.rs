//! Bindings for the frozen contract `kelp:plugin@0.1.0`, and the conversions between its
//! generated types and the host's own. The rest of the host never names a generated type;
//! a new contract version gets a sibling module, not edits here.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use kelp::plugin::{host as host_import, http as http_import, kv as kv_import, types};

use super::ToolSpec;

impl From<types::ToolSpec> for ToolSpec {
    fn from(spec: types::ToolSpec) -> Self {
        ToolSpec {
            name: spec.name,
            description: spec.description,
            input_schema: spec.input_schema,
        }
    }
}

impl From<types::ToolError> for super::ToolFailure {
    fn from(error: types::ToolError) -> Self {
        match error {
            types::ToolError::InvalidInput(m) => super::ToolFailure::InvalidInput(m),
            types::ToolError::Denied(m) => super::ToolFailure::Denied(m),
            types::ToolError::Failed(m) => super::ToolFailure::Failed(m),
        }
    }
}
