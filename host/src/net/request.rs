//! Checks on the request exactly as the guest wrote it, before any policy applies.

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

use super::{OutboundError, OutboundRequest};

/// A guest request that parsed and passed the syntactic checks.
pub(crate) struct ParsedRequest {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// Headers that describe the connection or the framing rather than the request. The host (and
/// reqwest) set them; a guest setting them could smuggle a second request or reach a proxy.
pub(crate) fn is_forbidden_header(name: &str) -> bool {
    const FORBIDDEN: [&str; 8] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
    ];
    let lower = name.to_ascii_lowercase();
    FORBIDDEN.contains(&lower.as_str()) || lower.starts_with("proxy-")
}

pub(crate) fn parse(req: OutboundRequest) -> Result<ParsedRequest, OutboundError> {
    let invalid = |msg: String| OutboundError::InvalidRequest(format!("http: {msg}"));
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| invalid(format!("'{}' is not a valid HTTP method", req.method)))?;
    // CONNECT asks the server to become a tunnel to somewhere else: a way around the grants.
    if method == Method::CONNECT {
        return Err(invalid("the CONNECT method is not supported".into()));
    }
    let mut url = Url::parse(&req.url)
        .map_err(|e| invalid(format!("'{}' is not a valid URL: {e}", req.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme '{}' is not supported; use http or https",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(invalid(format!("URL '{}' has no host", req.url)));
    }
    // Never sent on the wire; dropping it keeps the checked URL equal to the one sent.
    url.set_fragment(None);
    for (name, value) in &req.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(format!("'{name}' is not a valid header name")));
        }
        if HeaderValue::from_bytes(value.as_bytes()).is_err() {
            return Err(invalid(format!(
                "the value of header '{name}' is not valid"
            )));
        }
        if is_forbidden_header(name) {
            return Err(OutboundError::Denied(format!(
                "http: header '{name}' is set only by the host, not by plugins"
            )));
        }
    }
    Ok(ParsedRequest {
        method,
        url,
        headers: req.headers,
        body: req.body,
    })
}
