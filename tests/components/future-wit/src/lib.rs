//! A tool built against `kelp:plugin@0.3.0`, which does not exist yet: the host must refuse it
//! with a message naming both versions, before calling anything.

wit_bindgen::generate!({ path: "wit", world: "tool-plugin" });

use exports::kelp::plugin::tool::Guest;
use kelp::plugin::types::{ToolError, ToolSpec};

struct FutureWit;

impl Guest for FutureWit {
    fn list() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "future".into(),
            description: "Exists only to be refused".into(),
            input_schema: r#"{"type":"object"}"#.into(),
        }]
    }

    fn call(_name: String, _input: String) -> Result<String, ToolError> {
        Ok("this component should never have been loaded".into())
    }
}

export!(FutureWit);
