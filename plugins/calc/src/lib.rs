//! `kelp/calc`: exact arithmetic and JSON extraction, so the model does not do either in its
//! head.

mod eval;
mod query;

use kelp_sdk::tool::{Tool, ToolError, ToolOutput, ToolSpec};
use serde::Deserialize;
use serde_json::{Value, json};

struct Calc;

#[derive(Deserialize)]
struct CalcInput {
    expression: String,
}

#[derive(Deserialize)]
struct QueryInput {
    document: Value,
    path: String,
}

/// Integral results print as integers (`4`, not `4.0`) where f64 holds them exactly.
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() <= EXACT {
        json!(value as i64)
    } else {
        json!(value)
    }
}

impl Tool for Calc {
    fn tools() -> Vec<ToolSpec> {
        vec![
            ToolSpec::new(
                "calc",
                "Evaluate an arithmetic expression exactly. Operators: + - * / % ^ (power), \
                 parentheses, unary minus. Functions: sqrt, abs, ln, log10, sin, cos, tan \
                 (radians), min, max, round(x[, digits]), floor, ceil. Constants: pi, e.",
                json!({
                    "type": "object",
                    "properties": {
                        "expression": {
                            "type": "string",
                            "description": "For example `(3 + 4) * 2 ^ 10 / sqrt(2)`."
                        }
                    },
                    "required": ["expression"],
                    "additionalProperties": false
                }),
            ),
            ToolSpec::new(
                "json_query",
                "Extract values from a JSON document by path: `.a.b[0].c`, `[-1]` for the last \
                 element, `[\"key.with.dots\"]`, and `[*]` for every element (the result is then \
                 an array of all matches).",
                json!({
                    "type": "object",
                    "properties": {
                        "document": {
                            "description": "The JSON document, as JSON or as a string of JSON text."
                        },
                        "path": { "type": "string", "description": "For example `.items[*].id`." }
                    },
                    "required": ["document", "path"],
                    "additionalProperties": false
                }),
            ),
        ]
    }

    fn call(name: &str, input: Value) -> Result<ToolOutput, ToolError> {
        match name {
            "calc" => {
                let input: CalcInput = serde_json::from_value(input)?;
                let value = eval::evaluate(&input.expression)
                    .map_err(|err| ToolError::invalid(err.to_string()))?;
                Ok(json!({ "expression": input.expression, "result": number(value) }).into())
            }
            "json_query" => {
                let input: QueryInput = serde_json::from_value(input)?;
                // Models often pass the document as the text they received.
                let document = match input.document {
                    Value::String(text) => {
                        serde_json::from_str(&text).unwrap_or(Value::String(text))
                    }
                    other => other,
                };
                query::query(&document, &input.path)
                    .map(ToolOutput::Json)
                    .map_err(ToolError::invalid)
            }
            other => Err(ToolError::unknown_tool(other)),
        }
    }
}

kelp_sdk::export_tool!(Calc);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calc_returns_integers_when_exact() {
        let out = Calc::call("calc", json!({"expression": "2 + 2"})).unwrap();
        assert_eq!(
            out,
            ToolOutput::Json(json!({"expression": "2 + 2", "result": 4}))
        );
        let out = Calc::call("calc", json!({"expression": "1 / 4"})).unwrap();
        assert_eq!(
            out,
            ToolOutput::Json(json!({"expression": "1 / 4", "result": 0.25}))
        );
    }

    #[test]
    fn calc_errors_are_invalid_input() {
        let err = Calc::call("calc", json!({"expression": "1/0"})).unwrap_err();
        assert_eq!(
            err,
            ToolError::InvalidInput("division by zero at position 2".into())
        );
    }

    #[test]
    fn json_query_accepts_document_as_text() {
        let out = Calc::call(
            "json_query",
            json!({"document": "{\"a\": [1, 2]}", "path": ".a[1]"}),
        )
        .unwrap();
        assert_eq!(out, ToolOutput::Json(json!(2)));
    }
}
