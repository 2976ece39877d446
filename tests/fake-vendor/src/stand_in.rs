//! The stand-in model of the README: it calls the `calc` tool for a question with arithmetic
//! in it and then answers with the tool's result. A rule instead of a script, so it answers
//! any number of conversations.

use serde_json::Value;

use crate::{FakeVendor, Flavor, Reply};

/// A fake vendor of `flavor` on `address` that answers by [`respond`] and records nothing
/// (it may run for hours).
pub async fn start(flavor: Flavor, address: &str) -> FakeVendor {
    let vendor = FakeVendor::start_on(flavor, address).await;
    vendor.set_recording(false);
    vendor.set_responder(respond);
    vendor
}

/// The text of the last message, for each vendor's message shape.
fn last_message(body: &Value) -> (String, String) {
    let Some(last) = body["messages"].as_array().and_then(|m| m.last()) else {
        return (String::new(), String::new());
    };
    let role = last["role"].as_str().unwrap_or_default().to_owned();
    let text = match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("tool_result") => {
                    // Anthropic carries tool results in a user message.
                    format!("[tool]{}", p["content"].as_str().unwrap_or_default())
                }
                _ => p["text"].as_str().unwrap_or_default().to_owned(),
            })
            .collect(),
        _ => String::new(),
    };
    (role, text)
}

/// The arithmetic in a question: the longest run of digits, operators and spaces.
fn expression(text: &str) -> Option<String> {
    let mut best = String::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || "+-*/^(). ".contains(c) {
            current.push(c);
        } else {
            if current.trim().len() > best.trim().len() {
                best = current.clone();
            }
            current.clear();
        }
    }
    if current.trim().len() > best.trim().len() {
        best = current;
    }
    let best = best.trim().trim_end_matches(['.', ' ']).to_owned();
    (best.chars().any(|c| c.is_ascii_digit()) && best.chars().any(|c| "+-*/^".contains(c)))
        .then_some(best)
}

pub fn respond(body: &Value) -> Reply {
    let (role, text) = last_message(body);
    let has_calc = body["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .any(|t| t["function"]["name"] == "calc" || t["name"] == "calc")
    });
    if role == "tool" || text.starts_with("[tool]") {
        let result = text.trim_start_matches("[tool]");
        let value = serde_json::from_str::<Value>(result)
            .ok()
            .and_then(|v| v.get("result").cloned())
            .map_or_else(|| result.to_owned(), |v| v.to_string());
        return Reply::text(format!("The calc tool says: {value}."));
    }
    match expression(&text) {
        Some(expr) if has_calc => Reply::ToolCalls {
            text: Some("Let me calculate that. ".into()),
            calls: vec![(
                "calc".into(),
                serde_json::json!({"expression": expr}).to_string(),
            )],
        },
        _ => Reply::text(format!("You said: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_arithmetic() {
        assert_eq!(expression("What is 6 * 7?").as_deref(), Some("6 * 7"));
        assert_eq!(
            expression("compute (2+3)^2 please").as_deref(),
            Some("(2+3)^2")
        );
        assert_eq!(expression("hello there"), None);
    }
}
