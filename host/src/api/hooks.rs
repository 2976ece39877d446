//! Webhook deliveries from chat platforms. Public: a delivery carries its own proof (the
//! header its channel plugin's `webhook-auth` names), checked by the host before the plugin
//! sees anything. The platform is answered only once the delivery's events are stored, so
//! one it sends again after no answer is not lost, and not handled twice.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ErrorEnvelope};
use crate::channels::WebhookRefusal;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

/// A chat platform's delivery to a channel in webhook mode.
#[utoipa::path(post, path = "/hooks/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "The channel's id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The delivery exactly as the platform sends it, in any content type"),
    responses(
        (status = 200, description = "Stored; the body and headers are what the channel's plugin answers its platform"),
        (status = 400, body = ErrorEnvelope, description = "`invalid_delivery`: the channel's plugin could not read it"),
        (status = 403, body = ErrorEnvelope, description = "`forbidden`: the channel's signature header is missing or wrong; nothing was stored"),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no such channel"),
        (status = 413, body = ErrorEnvelope, description = "`payload_too_large`: larger than 1 MiB"),
        (status = 503, body = ErrorEnvelope, description = "`channel_unavailable`: the channel is stopped or its plugin is not loaded; deliver again later")))]
pub async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = crate::net::OutboundRequest {
        method: "POST".into(),
        url: format!("/hooks/channels/{id}"),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Some(body.to_vec()),
    };
    let batch =
        state
            .channels
            .receive_webhook(&id, request)
            .await
            .map_err(|refusal| match refusal {
                WebhookRefusal::NotFound => ApiError::not_found("channel"),
                WebhookRefusal::Forbidden(why) => {
                    ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
                }
                WebhookRefusal::Invalid(why) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_delivery", why)
                }
                WebhookRefusal::Unavailable(why) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "channel_unavailable", why)
                }
                WebhookRefusal::Internal(e) => ApiError::from(e),
            })?;
    // What the plugin answers is the platform's business, but always a success: the events
    // are stored, and a failure status would make the platform deliver them again.
    let status = StatusCode::from_u16(batch.status)
        .ok()
        .filter(StatusCode::is_success)
        .unwrap_or(StatusCode::OK);
    let mut response = (status, batch.body).into_response();
    for (name, value) in batch.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
