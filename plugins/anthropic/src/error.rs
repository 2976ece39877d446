//! Anthropic's error document, `{"type": "error", "error": {"type", "message"}}`, as a
//! [`ProviderError`]. It comes as the body of an error status, or as an `error` event in the
//! middle of a stream (overloaded while streaming, for one).

use kelp_sdk::http::header_value;
use kelp_sdk::provider::{ProviderError, error_from_status};
use serde::Deserialize;

#[derive(Deserialize)]
struct Document {
    error: ApiError,
}

/// The `error` object of the document.
#[derive(Deserialize)]
pub(crate) struct ApiError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// An error status's body; `body` need not be JSON (a proxy's HTML page, for one).
pub(crate) fn from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    let Ok(document) = serde_json::from_slice::<Document>(body) else {
        let text = String::from_utf8_lossy(body);
        return error_from_status(status, headers, text.trim().as_bytes());
    };
    let retry_after = header_value(headers, "retry-after").and_then(|v| v.trim().parse().ok());
    from_api_error(document.error, retry_after)
        .unwrap_or_else(|message| error_from_status(status, headers, message.as_bytes()))
}

/// The error by its type; an unknown type gives back the message, for the caller to judge by
/// the HTTP status if it has one.
pub(crate) fn from_api_error(
    error: ApiError,
    retry_after: Option<u32>,
) -> Result<ProviderError, String> {
    let ApiError { kind, message } = error;
    let message = if message.is_empty() {
        kind.clone()
    } else {
        message
    };
    Ok(match kind.as_str() {
        "overloaded_error" => ProviderError::Overloaded,
        "rate_limit_error" => ProviderError::RateLimited(retry_after),
        // A billing problem, like a bad key, needs the operator and no retry fixes it.
        "authentication_error" | "permission_error" | "billing_error" => {
            ProviderError::Auth(message)
        }
        "invalid_request_error" if is_context_length(&message) => {
            ProviderError::ContextLength(message)
        }
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            ProviderError::InvalidRequest(message)
        }
        "api_error" | "timeout_error" => ProviderError::Other(message),
        _ => return Err(message),
    })
}

/// Anthropic has no code for it, only these messages: "prompt is too long: 215000 tokens >
/// 200000 maximum" and, when the prompt fits but `max_tokens` does not, "input length and
/// `max_tokens` exceed context limit: …".
fn is_context_length(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("prompt is too long") || message.contains("exceed context limit")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(kind: &str, message: &str) -> Vec<u8> {
        json!({ "type": "error", "error": { "type": kind, "message": message }, "request_id": "req_1" })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn statuses_and_types() {
        let none: &[(String, String)] = &[];
        let cases = [
            (
                400,
                body(
                    "invalid_request_error",
                    "messages: at least one message is required",
                ),
                ProviderError::InvalidRequest("messages: at least one message is required".into()),
            ),
            (
                400,
                body(
                    "invalid_request_error",
                    "prompt is too long: 215000 tokens > 200000 maximum",
                ),
                ProviderError::ContextLength(
                    "prompt is too long: 215000 tokens > 200000 maximum".into(),
                ),
            ),
            (
                400,
                body(
                    "invalid_request_error",
                    "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000",
                ),
                ProviderError::ContextLength(
                    "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000"
                        .into(),
                ),
            ),
            (
                401,
                body("authentication_error", "invalid x-api-key"),
                ProviderError::Auth("invalid x-api-key".into()),
            ),
            (
                403,
                body("permission_error", "Your API key does not have permission"),
                ProviderError::Auth("Your API key does not have permission".into()),
            ),
            (
                402,
                body("billing_error", "Your credit balance is too low"),
                ProviderError::Auth("Your credit balance is too low".into()),
            ),
            (
                404,
                body("not_found_error", "model: claude-9"),
                ProviderError::InvalidRequest("model: claude-9".into()),
            ),
            (
                413,
                body(
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                ),
                ProviderError::InvalidRequest(
                    "Request exceeds the maximum allowed number of bytes.".into(),
                ),
            ),
            (
                429,
                body(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
                ProviderError::RateLimited(None),
            ),
            (
                500,
                body("api_error", "Internal server error"),
                ProviderError::Other("Internal server error".into()),
            ),
            (
                529,
                body("overloaded_error", "Overloaded"),
                ProviderError::Overloaded,
            ),
            // Unknown types fall back to the status.
            (
                503,
                body("brand_new_error", "later"),
                ProviderError::Overloaded,
            ),
            (
                418,
                body("brand_new_error", "teapot"),
                ProviderError::Other("HTTP 418: teapot".into()),
            ),
            (
                502,
                b"<html>bad gateway</html>".to_vec(),
                ProviderError::Other("HTTP 502: <html>bad gateway</html>".into()),
            ),
            (529, Vec::new(), ProviderError::Overloaded),
        ];
        for (status, body, expected) in cases {
            assert_eq!(from_response(status, none, &body), expected, "{status}");
        }
    }

    #[test]
    fn retry_after_header() {
        let headers = [("retry-after".to_owned(), "13".to_owned())];
        assert_eq!(
            from_response(429, &headers, &body("rate_limit_error", "slow down")),
            ProviderError::RateLimited(Some(13))
        );
        // Without a document the status alone still says to wait.
        assert_eq!(
            from_response(429, &headers, b""),
            ProviderError::RateLimited(Some(13))
        );
    }
}
