//! What every handler shares: the error envelope, a JSON extractor whose rejections use it,
//! and pagination.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserializer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The error envelope: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// Inside the envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_json`, `unauthorized`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The `x-request-id` of the request, to find it in the server's log.
    pub request_id: Option<String>,
}

/// An API error. Renders as the envelope; the request-id middleware fills `request_id`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A failure of the server itself: logged in full, answered without internals.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %error, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError::internal(format!("{error:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                request_id: None,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// `Json<T>` whose rejections (malformed JSON, wrong types, missing fields, wrong content
/// type, oversized body) answer with the error envelope and a 4xx.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(json_rejection(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected request with `Content-Type: application/json`".to_owned(),
            ));
        }
        // The body limit applies here (413).
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| json_rejection(rejection.status(), rejection.body_text()))?;
        // Every body of this API is an object. serde would also read a struct from an array
        // of its fields in order (`[null, null]`), a form the document does not have.
        let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        // The common case: parsed once, straight into `T`.
        if object && let Ok(value) = serde_json::from_slice::<T>(&bytes) {
            return Ok(ApiJson(value));
        }
        // Refused or not an object: parsed again only to say why.
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            json_rejection(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse the request body as JSON: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(json_rejection(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object".to_owned(),
            ));
        }
        let first = match T::deserialize(&value) {
            Ok(value) => return Ok(ApiJson(value)),
            Err(e) => e,
        };
        // JSON Schema counts `3.0` as an integer, and so do clients whose JSON writer prints
        // every number as a float: the document promises integers, so a whole-valued float
        // is one. Tried only after the body failed as sent, so free-form fields keep the
        // numbers they were given.
        let mut normalized = value;
        if whole_floats_to_integers(&mut normalized)
            && let Ok(value) = T::deserialize(&normalized)
        {
            return Ok(ApiJson(value));
        }
        Err(json_rejection(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Failed to deserialize the JSON body into the target type: {first}"),
        ))
    }
}

/// `application/json`, or a `+json` type, as axum's own `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_fields",
        _ => "invalid_json",
    };
    ApiError::new(status, code, message)
}

/// Rewrites every float with no fractional part that fits an `i64`/`u64` as that integer;
/// true if anything changed.
fn whole_floats_to_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // 2^63 and 2^64 are exact as f64; below them every whole float converts exactly.
            if f.fract() == 0.0
                && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
            {
                *value = Value::from(f as i64);
                true
            } else if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *value = Value::from(f as u64);
                true
            } else {
                false
            }
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            whole_floats_to_integers(item) | changed
        }),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, item| {
            whole_floats_to_integers(item) | changed
        }),
        _ => false,
    }
}

/// `Query<T>` whose rejections answer with the error envelope.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// `?limit=&offset=` of list endpoints. Out-of-range values are refused (`400`), as the
/// document says, rather than quietly clamped.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–200 (default 50).
    #[serde(default, deserialize_with = "page_limit")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "page_offset")]
    #[param(minimum = 0, value_type = Option<i64>)]
    pub offset: Option<u64>,
}

fn page_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let limit = u32::deserialize(d)?;
    if !(1..=200).contains(&limit) {
        return Err(serde::de::Error::custom("limit: must be 1-200"));
    }
    Ok(Some(limit))
}

fn page_offset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    // Offsets are SQL `OFFSET`s, signed 64-bit there.
    let offset = i64::deserialize(d)?;
    u64::try_from(offset)
        .map(Some)
        .map_err(|_| serde::de::Error::custom("offset: must be 0 or more"))
}

impl PageQuery {
    pub fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(50))
    }

    pub fn offset(&self) -> i64 {
        self.offset.unwrap_or(0) as i64
    }

    /// This page's slice of a list held in memory (short host-wide lists: plugins,
    /// instances, providers).
    pub fn window<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = &'a T> {
        items
            .iter()
            .skip(self.offset() as usize)
            .take(self.limit() as usize)
    }

    /// Wraps one page of `total` items.
    pub fn page<T>(&self, items: Vec<T>, total: i64) -> Page<T> {
        let next = self.offset() + items.len() as i64;
        Page {
            next_offset: (next < total).then_some(next),
            items,
            total,
        }
    }
}

/// A page of a list: `{"items": [...], "total": N, "next_offset": N|null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub next_offset: Option<i64>,
}
