use kelp_sdk::tool::{Tool, ToolError, ToolOutput, ToolSpec};
use serde::Deserialize;
use serde_json::{Value, json};

struct Plugin;

#[derive(Deserialize)]
struct GreetInput {
    name: String,
}

impl Tool for Plugin {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "greet",
            "Greet someone by name.",
            json!({
                "type": "object",
                "properties": { "name": { "type": "string", "description": "Who to greet" } },
                "required": ["name"]
            }),
        )]
    }

    fn call(name: &str, input: Value) -> Result<ToolOutput, ToolError> {
        match name {
            "greet" => {
                let input: GreetInput = serde_json::from_value(input)?;
                // Edit this line to make the tool your own.
                Ok(format!("Hello, {}!", input.name).into())
            }
            other => Err(ToolError::unknown_tool(other)),
        }
    }
}

kelp_sdk::export_tool!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets() {
        let out = Plugin::call("greet", json!({ "name": "Ada" })).unwrap();
        assert_eq!(out, ToolOutput::Text("Hello, Ada!".into()));
    }
}
