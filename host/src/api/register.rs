//! Registration with an invite code.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{SessionGrant, start_session, validate_password, validate_username};
use super::common::{ApiError, ApiJson, ErrorEnvelope};
use super::http::ClientInfo;
use super::users::{display_name, hash_off_thread, username_taken};
use crate::store::invites::InviteRefusal;
use crate::store::users::RegistrationRefusal;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register))
}

/// Body of registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The invite code an admin handed out.
    pub invite: String,
    /// 1–64 characters of a-z, 0-9, `.`, `_`, `-`.
    #[schema(pattern = r"^[a-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub username: String,
    /// 8–1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    /// 1–100 characters, not all spaces (trimmed); defaults to the username.
    #[schema(pattern = r"\S", max_length = 100)]
    pub display_name: Option<String>,
}

fn refused(refusal: InviteRefusal) -> ApiError {
    let (code, message) = match refusal {
        InviteRefusal::Unknown => ("invite_unknown", "no such invite code"),
        InviteRefusal::Revoked => ("invite_revoked", "this invite was revoked"),
        InviteRefusal::Expired => ("invite_expired", "this invite has expired"),
        InviteRefusal::UsedUp => ("invite_used_up", "this invite has been used up"),
    };
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

/// Creates an account with an invite code and signs it in. The account gets the invite's
/// role; the invite's use is counted in the same transaction that creates the account.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = Registration,
    responses((status = 201, body = SessionGrant), (status = 400, body = ErrorEnvelope),
        (status = 403, description = "`invite_unknown`, `invite_revoked`, `invite_expired` or `invite_used_up`", body = ErrorEnvelope),
        (status = 409, description = "username taken", body = ErrorEnvelope)))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<Registration>,
) -> Result<Response, ApiError> {
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    let display_name = match &body.display_name {
        Some(name) => display_name(name)?,
        None => &body.username,
    };
    let digest = crate::util::sha256_hex(body.invite.trim().as_bytes());
    // Refuse a bad code before spending an argon2 hash on it: registration is open to
    // anyone, and hashing is the expensive part.
    state.db().check_invite(&digest).await?.map_err(refused)?;
    let hash = hash_off_thread(body.password).await?;
    let user = state
        .db()
        .register_with_invite(&digest, &body.username, display_name, &hash)
        .await?
        .map_err(|refusal| match refusal {
            RegistrationRefusal::Invite(r) => refused(r),
            RegistrationRefusal::UsernameTaken => username_taken(),
        })?;
    start_session(&state, user, StatusCode::CREATED, &client).await
}
