//! Invite codes, created and revoked by admins; `POST /api/auth/register` consumes them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use super::users::Role;
use crate::auth::AdminUser;
use crate::store::invites::{InviteRow, NewInvites};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invites, create_invite))
        .routes(routes!(create_invite_batch))
        .routes(routes!(revoke_invite))
}

/// Most codes one batch request makes.
const MAX_BATCH: u32 = 100;
/// Most uses one invite can allow; a code meant for a crowd is better several codes.
const MAX_USES: u32 = 10_000;
/// Longest validity: ten years. Longer is "never", which is the default.
const MAX_EXPIRY_HOURS: u32 = 10 * 366 * 24;

/// An invite as listed (never with its code).
#[derive(Debug, Serialize, ToSchema)]
pub struct Invite {
    pub id: String,
    /// The admin who created it.
    pub created_by: String,
    /// Role of the users who register with it: `admin` or `user`.
    pub role: String,
    pub max_uses: i64,
    pub uses: i64,
    /// When it stops working; `null` for never.
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
    pub created_at_ms: i64,
}

impl From<InviteRow> for Invite {
    fn from(row: InviteRow) -> Self {
        Invite {
            id: row.id,
            created_by: row.created_by,
            role: row.role,
            max_uses: row.max_uses,
            uses: row.uses,
            expires_at_ms: row.expires_at_ms,
            revoked: row.revoked,
            created_at_ms: row.created_at_ms,
        }
    }
}

/// A new invite: its code is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvite {
    #[serde(flatten)]
    pub info: Invite,
    pub code: String,
}

/// The terms of new invites.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteTerms {
    /// Role given to users who register with it (default `user`).
    #[serde(default)]
    pub role: Role,
    /// How many registrations it admits, 1–10000 (default 1).
    #[schema(minimum = 1, maximum = 10000)]
    pub max_uses: Option<u32>,
    /// Hours until it expires, 1–87840 (default: never).
    #[schema(minimum = 1, maximum = 87840)]
    pub expires_in_hours: Option<u32>,
}

/// Body of a batch of invites with the same terms.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBatch {
    /// How many codes, 1–100.
    #[schema(minimum = 1, maximum = 100)]
    pub count: u32,
    #[serde(default)]
    pub role: Role,
    /// As for one invite: 1–10000 (default 1).
    #[schema(minimum = 1, maximum = 10000)]
    pub max_uses: Option<u32>,
    /// As for one invite: 1–87840 (default: never).
    #[schema(minimum = 1, maximum = 87840)]
    pub expires_in_hours: Option<u32>,
}

/// The invites a batch request made.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvites {
    pub items: Vec<CreatedInvite>,
}

/// A new invite code: 128 random bits, so guessing one is hopeless and a fast hash may
/// store it.
fn new_code() -> (String, String) {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let code = format!("kinv_{}", hex::encode(bytes));
    let digest = crate::util::sha256_hex(code.as_bytes());
    (code, digest)
}

async fn make_invites(
    state: &AppState,
    admin: &AdminUser,
    terms: InviteTerms,
    count: u32,
) -> Result<Vec<CreatedInvite>, ApiError> {
    let max_uses = terms.max_uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&max_uses) {
        return Err(ApiError::bad_request(format!(
            "max_uses must be 1-{MAX_USES}"
        )));
    }
    let expires_at_ms = match terms.expires_in_hours {
        None => None,
        Some(hours) if (1..=MAX_EXPIRY_HOURS).contains(&hours) => {
            Some(crate::store::now_ms() + i64::from(hours) * 3_600_000)
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "expires_in_hours must be 1-{MAX_EXPIRY_HOURS}"
            )));
        }
    };
    let (codes, digests): (Vec<String>, Vec<String>) = (0..count).map(|_| new_code()).unzip();
    let rows = state
        .db()
        .create_invites(NewInvites {
            created_by: &admin.0.id,
            role: terms.role.as_str(),
            max_uses: i64::from(max_uses),
            expires_at_ms,
            code_sha256s: &digests,
        })
        .await?;
    Ok(rows
        .into_iter()
        .zip(codes)
        .map(|(row, code)| CreatedInvite {
            info: row.into(),
            code,
        })
        .collect())
}

/// Creates an invite code.
#[utoipa::path(post, path = "/api/invites", tag = "admin", request_body = InviteTerms,
    responses((status = 201, body = CreatedInvite), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_invite(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(terms): ApiJson<InviteTerms>,
) -> Result<(StatusCode, axum::Json<CreatedInvite>), ApiError> {
    let created = make_invites(&state, &admin, terms, 1)
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("no invite was created"))?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Creates up to 100 invite codes with the same terms.
#[utoipa::path(post, path = "/api/invites/batch", tag = "admin", request_body = InviteBatch,
    responses((status = 201, body = CreatedInvites), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_invite_batch(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(batch): ApiJson<InviteBatch>,
) -> Result<(StatusCode, axum::Json<CreatedInvites>), ApiError> {
    if !(1..=MAX_BATCH).contains(&batch.count) {
        return Err(ApiError::bad_request(format!(
            "count must be 1-{MAX_BATCH}"
        )));
    }
    let terms = InviteTerms {
        role: batch.role,
        max_uses: batch.max_uses,
        expires_in_hours: batch.expires_in_hours,
    };
    let items = make_invites(&state, &admin, terms, batch.count).await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedInvites { items })))
}

/// Every invite of the host, oldest first.
#[utoipa::path(get, path = "/api/invites", tag = "admin", params(PageQuery),
    responses((status = 200, body = Page<Invite>), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_invites(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Invite>>, ApiError> {
    let (items, total) = state.db().list_invites(page.limit(), page.offset()).await?;
    Ok(axum::Json(page.page(
        items.into_iter().map(Invite::from).collect(),
        total,
    )))
}

/// Revokes an invite: it admits no more registrations (accounts made with it stay).
#[utoipa::path(delete, path = "/api/invites/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_invite(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.db().revoke_invite(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("invite"))
    }
}
