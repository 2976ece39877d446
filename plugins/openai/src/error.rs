//! OpenAI's error document, `{"error": {"message", "type", "code"}}`, as a [`ProviderError`].
//! It comes as the body of an error status, or as a `data:` chunk in the middle of a stream.

use kelp_sdk::provider::{ProviderError, error_from_status};
use serde_json::Value;

/// An error status's body; `body` need not be JSON (a proxy's HTML page, for one).
pub(crate) fn from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    let document: Option<Value> = serde_json::from_slice(body).ok();
    match document.as_ref().and_then(|d| d.get("error")) {
        Some(error) => from_error(Some(status), headers, error),
        None => {
            let text = String::from_utf8_lossy(body);
            error_from_status(status, headers, text.trim().as_bytes())
        }
    }
}

/// The value of an `error` key. OpenAI sends an object; some compatible servers send a bare
/// string, or put the HTTP status in `code`.
pub(crate) fn from_error(
    status: Option<u16>,
    headers: &[(String, String)],
    error: &Value,
) -> ProviderError {
    let code = error["code"].as_str();
    let kind = error["type"].as_str();
    let message = error["message"]
        .as_str()
        .or(error.as_str())
        .filter(|m| !m.is_empty())
        .or(kind)
        .map_or_else(|| error.to_string(), str::to_owned);

    // Both come with statuses (400, 429) that would otherwise say "malformed" and "try later",
    // and neither is fixed by retrying.
    if code == Some("context_length_exceeded") {
        return ProviderError::ContextLength(message);
    }
    if code == Some("insufficient_quota") || kind == Some("insufficient_quota") {
        return ProviderError::Auth(format!(
            "the account has no quota left, check its plan and billing details ({message})"
        ));
    }

    let status = status.or_else(|| {
        error["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
    });
    if let Some(status) = status {
        return error_from_status(status, headers, message.as_bytes());
    }
    match code.or(kind).unwrap_or_default() {
        "rate_limit_exceeded" | "rate_limit_error" => ProviderError::RateLimited(None),
        "invalid_api_key" | "authentication_error" | "permission_error" => {
            ProviderError::Auth(message)
        }
        "invalid_request_error" => ProviderError::InvalidRequest(message),
        _ => ProviderError::Other(message),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(kind: &str, code: Option<&str>, message: &str) -> Vec<u8> {
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn statuses() {
        let none: &[(String, String)] = &[];
        let cases = [
            (
                401,
                body(
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    "Incorrect API key provided: sk-…",
                ),
                ProviderError::Auth("Incorrect API key provided: sk-…".into()),
            ),
            (
                403,
                body(
                    "invalid_request_error",
                    Some("unsupported_country_region_territory"),
                    "Country not supported",
                ),
                ProviderError::Auth("Country not supported".into()),
            ),
            (
                429,
                body(
                    "requests",
                    Some("rate_limit_exceeded"),
                    "Rate limit reached",
                ),
                ProviderError::RateLimited(None),
            ),
            (
                400,
                body(
                    "invalid_request_error",
                    None,
                    "'messages' is a required property",
                ),
                ProviderError::InvalidRequest("'messages' is a required property".into()),
            ),
            (
                404,
                body(
                    "invalid_request_error",
                    Some("model_not_found"),
                    "The model `gpt-9` does not exist",
                ),
                ProviderError::InvalidRequest("The model `gpt-9` does not exist".into()),
            ),
            (
                422,
                body("invalid_request_error", None, "bad"),
                ProviderError::InvalidRequest("bad".into()),
            ),
            (
                500,
                body("server_error", None, "The server had an error"),
                ProviderError::Other("HTTP 500: The server had an error".into()),
            ),
            (
                502,
                b"<html>Bad Gateway</html>\n".to_vec(),
                ProviderError::Other("HTTP 502: <html>Bad Gateway</html>".into()),
            ),
            (
                503,
                body("server_error", None, "The engine is currently overloaded"),
                ProviderError::Overloaded,
            ),
            (529, b"".to_vec(), ProviderError::Overloaded),
        ];
        for (status, body, expected) in cases {
            assert_eq!(from_response(status, none, &body), expected, "{status}");
        }
    }

    #[test]
    fn retry_after_header() {
        let headers = [("Retry-After".to_owned(), "20".to_owned())];
        assert_eq!(
            from_response(
                429,
                &headers,
                &body("requests", Some("rate_limit_exceeded"), "slow down")
            ),
            ProviderError::RateLimited(Some(20))
        );
    }

    #[test]
    fn codes_win_over_statuses() {
        let none: &[(String, String)] = &[];
        assert_eq!(
            from_response(
                400,
                none,
                &body(
                    "invalid_request_error",
                    Some("context_length_exceeded"),
                    "This model's maximum context length is 128000 tokens."
                )
            ),
            ProviderError::ContextLength(
                "This model's maximum context length is 128000 tokens.".into()
            )
        );
        assert_eq!(
            from_response(
                429,
                none,
                &body(
                    "insufficient_quota",
                    Some("insufficient_quota"),
                    "You exceeded your current quota."
                )
            ),
            ProviderError::Auth(
                "the account has no quota left, check its plan and billing details \
                 (You exceeded your current quota.)"
                    .into()
            )
        );
    }

    #[test]
    fn compatible_servers_shapes() {
        let none: &[(String, String)] = &[];
        // vLLM puts the status in `code`; some servers send a bare string.
        let vllm = json!({ "object": "error", "message": "model x not found", "type": "NotFoundError", "code": 404 });
        assert_eq!(
            from_error(None, none, &vllm),
            ProviderError::InvalidRequest("model x not found".into())
        );
        assert_eq!(
            from_response(500, none, br#"{"error":"llama runner crashed"}"#),
            ProviderError::Other("HTTP 500: llama runner crashed".into())
        );
    }

    #[test]
    fn mid_stream_errors_without_status() {
        let none: &[(String, String)] = &[];
        let error =
            |kind: &str, code: Option<&str>| json!({ "message": "m", "type": kind, "code": code });
        assert_eq!(
            from_error(None, none, &error("server_error", None)),
            ProviderError::Other("m".into())
        );
        assert_eq!(
            from_error(None, none, &error("tokens", Some("rate_limit_exceeded"))),
            ProviderError::RateLimited(None)
        );
        assert_eq!(
            from_error(None, none, &error("invalid_request_error", None)),
            ProviderError::InvalidRequest("m".into())
        );
        assert_eq!(
            from_error(None, none, &json!({ "type": "server_error" })),
            ProviderError::Other("server_error".into())
        );
    }
}
