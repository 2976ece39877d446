//! JSON Schema validation of tool inputs, plugin instance configuration and user settings,
//! through the `jsonschema` crate: every keyword of the schema's draft (2020-12 unless it says
//! otherwise with `$schema`) is enforced — `pattern`, `oneOf`, `anyOf`, local `$ref`s,
//! `const`, `format` and the rest — so a third-party tool gets exactly the input its schema
//! describes.
//!
//! A schema is compiled once, when the plugin (or the process) loads, and a schema that does
//! not compile is refused. Compiling never reaches the network or the file system: a `$ref` to
//! anything outside the schema fails to compile. `pattern`s run on the `regex` engine, which
//! matches in linear time, so a hostile schema cannot make each call backtrack for seconds on
//! the async workers; a pattern that needs backtracking (look-around, back-references) does
//! not compile.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{PatternOptions, ValidationError, Validator};
use serde_json::Value;

/// Longest message a validation error gives: a message may quote the offending value, and a
/// model's input can be large.
const MAX_MESSAGE: usize = 300;

/// A compiled schema.
pub struct Schema {
    validator: Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles `schema`; the error says what is wrong with it (and where).
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        let validator = jsonschema::options()
            .offline()
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map_err(|e| {
                let at = e.schema_path().as_str();
                let text = bounded(e.masked().to_string());
                if at.is_empty() {
                    text
                } else {
                    format!("{text} (at {at})")
                }
            })?;
        Ok(Schema { validator })
    }

    /// Checks `value`; the error names the offending field from `root` (`config.base_url`,
    /// `input.items[2]`) and says why, in words.
    pub fn validate(&self, value: &Value, root: &str) -> Result<(), String> {
        match self.validator.validate(value) {
            Ok(()) => Ok(()),
            Err(e) => Err(bounded(describe(&e, value, root))),
        }
    }
}

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut at = MAX_MESSAGE;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        message.push('…');
    }
    message
}

/// `root` followed by the error's instance location, written as a reader would:
/// `config.tags[0]` rather than `/tags/0`.
fn field_path(error: &ValidationError<'_>, value: &Value, root: &str) -> String {
    let mut path = root.to_owned();
    let mut current = Some(value);
    let pointer = error.instance_path().as_str();
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match current {
            Some(Value::Array(items)) => {
                current = segment.parse::<usize>().ok().and_then(|i| items.get(i));
                path.push_str(&format!("[{segment}]"));
            }
            other => {
                current = other.and_then(|v| v.get(&segment));
                path.push('.');
                path.push_str(&segment);
            }
        }
    }
    path
}

fn describe(error: &ValidationError<'_>, value: &Value, root: &str) -> String {
    let path = field_path(error, value, root);
    let list = |values: &Value| match values {
        Value::Array(items) => items
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    match error.kind() {
        ValidationErrorKind::Type { kind } => {
            let types = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("{path} must be of type {types}")
        }
        ValidationErrorKind::Enum { options } => format!("{path} must be one of {}", list(options)),
        ValidationErrorKind::Constant { expected_value } => {
            format!("{path} must be {expected_value}")
        }
        ValidationErrorKind::Minimum { limit } => format!("{path} must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("{path} must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("{path} must be greater than {limit}")
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("{path} must be less than {limit}")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("{path} must be at least {limit} characters")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("{path} must be at most {limit} characters")
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("{path} must have at least {limit} items")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("{path} must have at most {limit} items")
        }
        ValidationErrorKind::Required { property } => match property.as_str() {
            Some(name) => format!("{path}.{name} is required"),
            None => format!("{path}.{property} is required"),
        },
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            format!("{path}.{} is not a known field", unexpected.join(", "))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{path} must match the pattern {pattern}")
        }
        ValidationErrorKind::Format { format } => format!("{path} must be a valid {format}"),
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            format!("{path} matches none of the allowed forms")
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            format!("{path} matches more than one of the forms of which exactly one is allowed")
        }
        ValidationErrorKind::Not { .. } => format!("{path} has a form that is not allowed"),
        ValidationErrorKind::FalseSchema => format!("{path} is not allowed"),
        // The library's own words, without the value (which a model may have made large).
        _ => format!("{path}: {}", error.masked()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: &Value, value: &Value) -> Result<(), String> {
        Schema::compile(schema).unwrap().validate(value, "config")
    }

    #[test]
    fn names_the_path_and_the_reason() {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["base_url"],
            "properties": {
                "base_url": {"type": "string", "minLength": 1},
                "mode": {"enum": ["a", "b"]},
                "n": {"type": "integer", "minimum": 1, "maximum": 5},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        });
        let ok = json!({"base_url": "http://x", "mode": "a", "n": 3, "tags": ["t"]});
        assert_eq!(check(&schema, &ok), Ok(()));
        for (bad, message) in [
            (json!({}), "config.base_url is required"),
            (
                json!({"base_url": 1}),
                "config.base_url must be of type string",
            ),
            (
                json!({"base_url": "x", "mode": "c"}),
                "config.mode must be one of \"a\", \"b\"",
            ),
            (
                json!({"base_url": "x", "n": 9}),
                "config.n must be at most 5",
            ),
            (
                json!({"base_url": "x", "n": 1.5}),
                "config.n must be of type integer",
            ),
            (
                json!({"base_url": "x", "tags": [1]}),
                "config.tags[0] must be of type string",
            ),
            (
                json!({"base_url": "x", "extra": 1}),
                "config.extra is not a known field",
            ),
            (json!([]), "config must be of type object"),
        ] {
            assert_eq!(check(&schema, &bad), Err(message.to_owned()), "{bad}");
        }
    }

    #[test]
    fn enforces_the_keywords_a_hand_written_subset_ignored() {
        let schema = json!({
            "type": "object",
            "$defs": {"id": {"type": "string", "pattern": "^[a-z]+$"}},
            "properties": {
                "id": {"$ref": "#/$defs/id"},
                "kind": {"const": "file"},
                "when": {"type": "string", "format": "date"},
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}
            }
        });
        assert_eq!(
            check(&schema, &json!({"id": "abc", "kind": "file"})),
            Ok(())
        );
        for (bad, message) in [
            (
                json!({"id": "ABC"}),
                "config.id must match the pattern ^[a-z]+$",
            ),
            (json!({"kind": "dir"}), "config.kind must be \"file\""),
            (
                json!({"when": "yesterday"}),
                "config.when must be a valid date",
            ),
            (
                json!({"either": true}),
                "config.either matches none of the allowed forms",
            ),
        ] {
            assert_eq!(check(&schema, &bad), Err(message.to_owned()), "{bad}");
        }
    }

    #[test]
    fn refuses_a_schema_that_does_not_compile_and_never_fetches() {
        for schema in [
            json!({"type": "strin"}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"$ref": "file:///etc/passwd"}),
            json!({"type": "string", "pattern": "(?<=a)b"}),
            json!({"minLength": -1}),
        ] {
            assert!(Schema::compile(&schema).is_err(), "{schema}");
        }
    }

    #[test]
    fn messages_are_bounded() {
        let schema = json!({"type": "object", "additionalProperties": false});
        let unexpected: serde_json::Map<String, Value> = (0..100)
            .map(|n| (format!("{n}{}", "x".repeat(100)), json!(1)))
            .collect();
        let message = check(&schema, &Value::Object(unexpected)).unwrap_err();
        assert!(message.len() <= MAX_MESSAGE + 3, "{}", message.len());
    }
}
