//! HTTP requests and responses.
//!
//! [`Request`] and [`Response`] are plain data: providers and channels return requests for the
//! host to send (sans-IO) and receive responses to decode. Tools send requests themselves with
//! [`send`] / [`Request::send`] (feature `tool`): the host allows only granted hosts, resolves and
//! checks addresses, inserts secrets at the positions the manifest binds, and returns redirects
//! instead of following them, so that every hop is checked again.

use std::fmt;

use serde::de::DeserializeOwned;

/// An HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ... (upper case).
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// A request with `method` (upper-cased) to `url`, no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into().to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A `GET` request to `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new("GET", url)
    }

    /// A `POST` request to `url`.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new("POST", url)
    }

    /// Adds a header (an existing one of the same name is kept).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Sends the request through the host and waits for the whole response.
    #[cfg(feature = "tool")]
    pub fn send(self) -> Result<Response, HttpError> {
        send(self)
    }
}

/// A whole HTTP response (the host caps its size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case when they come from the host) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no headers and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text; invalid UTF-8 is replaced with U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body deserialized from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The first value of header `name` in `headers`, compared case-insensitively.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Why the host could not complete a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host, address or secret position was not granted; the text names the capability.
    Denied(String),
    /// The request could not be parsed (bad URL, method or header).
    InvalidRequest(String),
    /// No answer within the host's timeout.
    Timeout,
    /// The response body exceeded the host's cap (bytes).
    TooLarge(u64),
    /// DNS, connect or TLS failure.
    Connection(String),
}

impl HttpError {
    /// The variant's name as in the WIT contract (`denied`, `timeout`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Denied(_) => "denied",
            HttpError::InvalidRequest(_) => "invalid-request",
            HttpError::Timeout => "timeout",
            HttpError::TooLarge(_) => "too-large",
            HttpError::Connection(_) => "connection",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(what) => write!(f, "http denied: {what}"),
            HttpError::InvalidRequest(why) => write!(f, "invalid http request: {why}"),
            HttpError::Timeout => f.write_str("http request timed out"),
            HttpError::TooLarge(cap) => write!(f, "http response larger than {cap} bytes"),
            HttpError::Connection(why) => write!(f, "http connection failed: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Sends `request` through the host and waits for the whole response.
///
/// Redirects come back as 3xx responses with a `location` header: follow them by sending a new
/// request, which the host checks against the grants again.
#[cfg(feature = "tool")]
pub fn send(request: Request) -> Result<Response, HttpError> {
    use crate::__private::bindings::kelp::plugin::http;
    http::send(&request.into())
        .map(Response::from)
        .map_err(HttpError::from)
}

/// Sends a `GET` request to `url`.
#[cfg(feature = "tool")]
pub fn get(url: impl Into<String>) -> Result<Response, HttpError> {
    send(Request::get(url))
}

#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
mod convert {
    use super::{HttpError, Request, Response};
    use crate::__private::bindings::wit;

    impl From<Request> for wit::HttpRequest {
        fn from(r: Request) -> Self {
            wit::HttpRequest {
                method: r.method,
                url: r.url,
                headers: r.headers,
                body: r.body,
            }
        }
    }

    impl From<wit::HttpRequest> for Request {
        fn from(r: wit::HttpRequest) -> Self {
            Request {
                method: r.method,
                url: r.url,
                headers: r.headers,
                body: r.body,
            }
        }
    }

    impl From<Response> for wit::HttpResponse {
        fn from(r: Response) -> Self {
            wit::HttpResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }
        }
    }

    impl From<wit::HttpResponse> for Response {
        fn from(r: wit::HttpResponse) -> Self {
            Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }
        }
    }

    impl From<wit::HttpError> for HttpError {
        fn from(err: wit::HttpError) -> Self {
            match err {
                wit::HttpError::Denied(what) => HttpError::Denied(what),
                wit::HttpError::InvalidRequest(why) => HttpError::InvalidRequest(why),
                wit::HttpError::Timeout => HttpError::Timeout,
                wit::HttpError::TooLarge(cap) => HttpError::TooLarge(cap),
                wit::HttpError::Connection(why) => HttpError::Connection(why),
            }
        }
    }
}
