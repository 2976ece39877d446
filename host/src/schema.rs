//! A small JSON Schema validator for the subset Kelp's own schemas use (plugin instance
//! config, user settings): `type`, `properties`, `required`, `additionalProperties: false`,
//! `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `items`. Keywords outside the subset
//! are ignored, so a schema using them validates less, never wrongly refuses.

use serde_json::Value;

/// Checks `value` against `schema`; the error names the offending path (`config.base_url`).
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(expected) = schema.get("type") {
        let types: Vec<&str> = match expected {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            return Err(format!("{path} must be of type {}", types.join(" or ")));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!("{path} must be one of {}", list.join(", ")));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{path} must be at least {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{path} must be at most {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            return Err(format!("{path} must be at least {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            return Err(format!("{path} must be at most {max} characters"));
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            validate(items, item, &format!("{path}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for key in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(key) {
                    return Err(format!("{path}.{key} is required"));
                }
            }
        }
        for (key, item) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => validate(sub, item, &format!("{path}.{key}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}.{key} is not a known field"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_the_subset_and_names_the_path() {
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
        assert_eq!(validate(&schema, &ok, "config"), Ok(()));
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
            assert_eq!(
                validate(&schema, &bad, "config"),
                Err(message.to_owned()),
                "{bad}"
            );
        }
    }
}
