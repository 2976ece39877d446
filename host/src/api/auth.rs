//! First-run setup, login and logout, the current user, and API tokens.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use super::http::ClientInfo;
use crate::auth::{
    CurrentUser, SESSION_COOKIE, SESSION_TTL_MS, hash_password, new_token, verify_password,
};
use crate::store::users::{ApiTokenRow, NewUser, UserRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(setup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(get_me, put_me))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    /// `admin` or `user`.
    pub role: String,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            username: row.username,
            display_name: row.display_name,
            role: row.role,
            active: row.active,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

/// Body of setup and user creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
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

/// What login and setup return: the user and a session token (also set as an HttpOnly cookie).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionGrant {
    pub user: User,
    /// Send as `Authorization: Bearer <token>` from API clients.
    pub token: String,
}

/// Checks the shape of a username (case-insensitive names would invite look-alike accounts,
/// so they are lower case only).
pub fn validate_username(username: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
        ))
    }
}

/// Checks a new password.
pub fn validate_password(password: &str) -> Result<(), ApiError> {
    if !(8..=1024).contains(&password.chars().count()) {
        return Err(ApiError::bad_request(
            "password must be 8 to 1024 characters",
        ));
    }
    Ok(())
}

/// The session cookie's `Set-Cookie` value: `Secure` when the client reached Kelp over
/// HTTPS (as a trusted proxy says), so the browser never sends it over plain HTTP.
fn session_cookie(value: &str, max_age_s: i64, client: &ClientInfo) -> String {
    let secure = if client.https { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}{secure}")
}

/// Starts a login session for `user`: the response carries the token and the cookie.
pub async fn start_session(
    state: &AppState,
    user: UserRow,
    status: StatusCode,
    client: &ClientInfo,
) -> Result<Response, ApiError> {
    let (token, digest) = new_token();
    state
        .db()
        .create_login_session(&user.id, &digest, SESSION_TTL_MS)
        .await?;
    let cookie = session_cookie(&token, SESSION_TTL_MS / 1000, client);
    let mut response = (
        status,
        axum::Json(SessionGrant {
            user: user.into(),
            token,
        }),
    )
        .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Creates the first admin. Open only while no user exists.
#[utoipa::path(post, path = "/api/auth/setup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = SessionGrant), (status = 400, body = ErrorEnvelope), (status = 409, description = "already set up", body = ErrorEnvelope)))]
pub async fn setup(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    // Checked like every other display name (setup used to store any string given).
    let display_name = match &body.display_name {
        Some(name) => super::users::display_name(name)?,
        None => &body.username,
    };
    let hash = hash_password(&body.password)?;
    let created = state
        .db()
        .create_first_admin(NewUser {
            username: &body.username,
            display_name,
            password_hash: &hash,
            role: "admin",
        })
        .await?;
    let Some(user) = created else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_set_up",
            "setup is done; sign in instead",
        ));
    };
    start_session(&state, user, StatusCode::CREATED, &client).await
}

/// Body of login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password",
    )
}

/// Signs in. Failed attempts are limited per username and client address, per client
/// address, and paced per username (see docs/api.md).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = SessionGrant), (status = 401, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    // A name no account can have counts against the client only: keeping a counter for
    // every made-up name would let a flood of them push real counters out.
    let possible = validate_username(&body.username).is_ok();
    let attempt = state
        .login_limiter
        .attempt(possible.then_some(body.username.as_str()), client.address)
        .await?;
    if !possible {
        return Err(invalid_credentials());
    }
    let found = state.db().user_with_password(&body.username).await?;
    // Verify against a fixed hash when the user does not exist, so response time does not
    // reveal which usernames exist.
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, super::DUMMY_HASH.clone()),
    };
    let password_ok = tokio::task::spawn_blocking({
        let password = body.password.clone();
        move || verify_password(&password, &hash)
    })
    .await
    .map_err(ApiError::internal)?;
    match user {
        Some(user) if password_ok && user.active => {
            attempt.succeeded();
            start_session(&state, user, StatusCode::OK, &client).await
        }
        _ => Err(invalid_credentials()),
    }
}

/// Ends the current login session (cookie or bearer session token), and the event streams
/// opened with it.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v);
    for token in [bearer, cookie].into_iter().flatten() {
        state
            .db()
            .delete_login_session(&crate::util::sha256_hex(token.as_bytes()))
            .await?;
    }
    state.streams.credentials_changed(user.id());
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session_cookie("", 0, &client)).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/me", tag = "auth",
    responses((status = 200, body = User), (status = 401, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn get_me(user: CurrentUser) -> axum::Json<User> {
    axum::Json(user.0.into())
}

/// Fields a user may change about themselves.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeUpdate {
    /// 1–100 characters, not all spaces (trimmed).
    #[schema(pattern = r"\S", max_length = 100)]
    pub display_name: String,
}

/// Updates the signed-in user's profile.
#[utoipa::path(put, path = "/api/me", tag = "auth", request_body = MeUpdate,
    responses((status = 200, body = User), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn put_me(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<MeUpdate>,
) -> Result<axum::Json<User>, ApiError> {
    let name = body.display_name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "display_name must be 1-100 characters",
        ));
    }
    let updated = state
        .db()
        .set_display_name(user.id(), name)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(axum::Json(updated.into()))
}

/// An API token as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked: bool,
}

impl From<ApiTokenRow> for ApiToken {
    fn from(row: ApiTokenRow) -> Self {
        ApiToken {
            id: row.id,
            name: row.name,
            created_at_ms: row.created_at_ms,
            last_used_at_ms: row.last_used_at_ms,
            revoked: row.revoked,
        }
    }
}

/// Body of token creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for, e.g. `laptop script`: 1–100 characters, not all spaces.
    #[schema(pattern = r"\S", max_length = 100)]
    pub name: String,
}

/// A new token: its value is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: ApiToken,
    pub token: String,
}

/// The signed-in user's API tokens.
#[utoipa::path(get, path = "/api/tokens", tag = "auth", params(PageQuery),
    responses((status = 200, body = Page<ApiToken>), (status = 401, body = ErrorEnvelope)), security(("bearer" = []), ("cookie" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<ApiToken>>, ApiError> {
    let (items, total) = state
        .db()
        .list_api_tokens(user.id(), page.limit(), page.offset())
        .await?;
    Ok(axum::Json(page.page(
        items.into_iter().map(ApiToken::from).collect(),
        total,
    )))
}

/// Creates an API token (256-bit random; stored as its SHA-256).
#[utoipa::path(post, path = "/api/tokens", tag = "auth", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1-100 characters"));
    }
    let (token, digest) = new_token();
    let row = state
        .db()
        .create_api_token(user.id(), name, &digest)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            info: row.into(),
            token,
        }),
    ))
}

/// Revokes one of the signed-in user's tokens; event streams opened with it end.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.db().revoke_api_token(user.id(), &id).await? {
        state.streams.credentials_changed(user.id());
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token"))
    }
}
