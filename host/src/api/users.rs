//! Admin management of user accounts, and a user's own password change.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{User, validate_password, validate_username};
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use super::http::ClientInfo;
use crate::auth::{AdminUser, CurrentUser, SESSION_COOKIE, hash_password, verify_password};
use crate::store::users::{AccountChange, NewUser, UserRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_password))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(activate_user))
        .routes(routes!(deactivate_user))
}

/// A role on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// Checks a display name (trimmed) and returns it.
pub(super) fn display_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "display_name must be 1-100 characters",
        ));
    }
    Ok(name)
}

/// Hashes off the async workers: argon2id takes tens of milliseconds of CPU.
pub(super) async fn hash_off_thread(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// The SHA-256 of the login session a request is made with (bearer or cookie), if any.
fn request_session_sha256(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == SESSION_COOKIE)
            .map(|(_, v)| v)
    };
    // The same precedence as the `CurrentUser` extractor: a bearer token wins.
    bearer
        .or_else(cookie)
        .map(|t| crate::util::sha256_hex(t.as_bytes()))
}

/// Body of a password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// 8–1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub new_password: String,
}

/// Changes the signed-in user's password. Every other login session of theirs ends, with the
/// event streams opened with it; the one making the call (if it is a login session, not an
/// API token) stays signed in. API tokens
/// stay valid: revoke them with `DELETE /api/tokens/{id}`. A wrong current password answers
/// 403 `wrong_password` (not 401, which would read as "signed out"); failures count towards
/// the sign-in rate limit.
#[utoipa::path(post, path = "/api/auth/change-password", tag = "auth", request_body = PasswordChange,
    responses((status = 204, description = "changed"), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, description = "wrong current password", body = ErrorEnvelope),
        (status = 429, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    user: CurrentUser,
    client: ClientInfo,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let attempt = state
        .login_limiter
        .attempt(Some(&user.0.username), client.address)
        .await?;
    validate_password(&body.new_password)?;
    let stored = state
        .db()
        .password_hash(user.id())
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let current_ok = tokio::task::spawn_blocking({
        let password = body.current_password;
        move || verify_password(&password, &stored)
    })
    .await
    .map_err(ApiError::internal)?;
    if !current_ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "the current password is wrong",
        ));
    }
    attempt.succeeded();
    let hash = hash_off_thread(body.new_password).await?;
    let keep = request_session_sha256(&headers);
    state
        .db()
        .set_password(user.id(), &hash, keep.as_deref())
        .await?;
    state.streams.credentials_changed(user.id());
    Ok(StatusCode::NO_CONTENT)
}

/// Every user of the host.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", params(PageQuery),
    responses((status = 200, body = Page<User>), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<User>>, ApiError> {
    let (items, total) = state.db().list_users(page.limit(), page.offset()).await?;
    Ok(axum::Json(
        page.page(items.into_iter().map(User::from).collect(), total),
    ))
}

/// Body of user creation by an admin.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// 1–64 characters of a-z, 0-9, `.`, `_`, `-`.
    #[schema(pattern = r"^[a-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub username: String,
    /// 8–1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    /// 1–100 characters, not all spaces (trimmed); defaults to the username.
    #[schema(pattern = r"\S", max_length = 100)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role: Role,
}

/// Creates a user.
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = NewAccount,
    responses((status = 201, body = User), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 409, description = "username taken", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<(StatusCode, axum::Json<User>), ApiError> {
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    let name = match &body.display_name {
        Some(name) => display_name(name)?,
        None => &body.username,
    };
    let hash = hash_off_thread(body.password).await?;
    let created = state
        .db()
        .create_user(NewUser {
            username: &body.username,
            display_name: name,
            password_hash: &hash,
            role: body.role.as_str(),
        })
        .await?
        .ok_or_else(username_taken)?;
    Ok((StatusCode::CREATED, axum::Json(created.into())))
}

pub(super) fn username_taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "username_taken",
        "that username is taken",
    )
}

/// One user.
#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    let user = state
        .db()
        .get_user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(axum::Json(user.into()))
}

/// Fields an admin may change about a user (absent fields stay as they are).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountUpdate {
    /// 1–100 characters, not all spaces (trimmed).
    #[schema(pattern = r"\S", max_length = 100)]
    pub display_name: Option<String>,
    pub role: Option<Role>,
}

/// Answers an account change: the refusals an admin can meet are 404 and two 409s.
fn account_change(change: AccountChange<UserRow>) -> Result<UserRow, ApiError> {
    match change {
        AccountChange::Done(user) => Ok(user),
        AccountChange::NotFound => Err(ApiError::not_found("user")),
        AccountChange::OwnAccount => Err(ApiError::new(
            StatusCode::CONFLICT,
            "own_account",
            "admins cannot deactivate, demote or delete themselves; ask another admin",
        )),
        AccountChange::LastAdmin => Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin",
            "this is the last active admin; make another admin first",
        )),
    }
}

/// Changes a user's display name or role. An admin cannot demote themselves, nor the last
/// active admin be demoted (409).
#[utoipa::path(patch, path = "/api/admin/users/{id}", tag = "admin", params(("id" = String, Path)), request_body = AccountUpdate,
    responses((status = 200, body = User), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`own_account` or `last_admin`", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_user(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AccountUpdate>,
) -> Result<axum::Json<User>, ApiError> {
    let name = body.display_name.as_deref().map(display_name).transpose()?;
    let role = body.role.map(Role::as_str);
    let change = state.db().update_user(&admin.0.id, &id, name, role).await?;
    Ok(axum::Json(account_change(change)?.into()))
}

/// Deletes a user and everything they own. An admin cannot delete themselves, nor the last
/// active admin be deleted (409).
#[utoipa::path(delete, path = "/api/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "`own_account` or `last_admin`", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The user's runs stop before their rows go, so none keeps calling a provider on behalf
    // of a deleted account. (Deleting oneself is refused below, and the acting admin is
    // always another active admin, so "last admin" cannot refuse this delete.)
    if id != admin.0.id {
        state.agent.stop_user(&id).await?;
    }
    // Read before the rows cascade away; the directories go only if the delete happened.
    let sessions = state.db().session_ids(&id).await?;
    account_change(state.db().delete_user(&admin.0.id, &id).await?)?;
    state.streams.credentials_changed(&id);
    for session in sessions {
        if let Ok(dir) = state.runtime.session_workspace_path(&session)
            && let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), "removing a deleted user's workspace: {e}");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Lets a deactivated user sign in again.
#[utoipa::path(post, path = "/api/admin/users/{id}/activate", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn activate_user(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    let change = state.db().set_user_active(&admin.0.id, &id, true).await?;
    Ok(axum::Json(account_change(change)?.into()))
}

/// Deactivates a user: their sessions and event streams end and their API tokens stop
/// working at once. An admin cannot deactivate themselves, nor the last active admin be
/// deactivated (409).
#[utoipa::path(post, path = "/api/admin/users/{id}/deactivate", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "`own_account` or `last_admin`", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn deactivate_user(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    let change = state.db().set_user_active(&admin.0.id, &id, false).await?;
    let user = account_change(change)?;
    state.streams.credentials_changed(&id);
    Ok(axum::Json(user.into()))
}
