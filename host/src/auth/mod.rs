//! Authentication: argon2id passwords, random bearer tokens stored as SHA-256, login sessions
//! carried by an HttpOnly cookie (or as a bearer token), the extractors handlers use, and the
//! event streams open on a credential.

pub mod streams;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use rand::RngCore;

use crate::api::{ApiError, AppState};
use crate::store::Db;
use crate::store::users::UserRow;

/// Name of the login session cookie.
pub const SESSION_COOKIE: &str = "kelp_session";
/// How long a login session lasts.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// Hashes a password with argon2id (the crate's default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?
        .to_string())
}

/// Checks a password against a stored argon2 hash.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new 256-bit random token: `(plain text shown once, SHA-256 to store)`.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let plain = format!("kelp_{}", hex::encode(bytes));
    let digest = crate::util::sha256_hex(plain.as_bytes());
    (plain, digest)
}

/// What a request authenticated with, by SHA-256: asked again later, it says whether a
/// stream opened with it may go on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// An API token or a login session's token, sent as `Authorization: Bearer`.
    Bearer(String),
    /// A login session's cookie.
    Cookie(String),
}

impl Credential {
    /// The active user the credential belongs to now, if it is still valid.
    pub async fn user(&self, db: &Db) -> anyhow::Result<Option<UserRow>> {
        match self {
            Credential::Bearer(digest) => db.user_by_bearer(digest).await,
            Credential::Cookie(digest) => db.user_by_login_session(digest).await,
        }
    }
}

/// The authenticated user of a request, and the credential it came with.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub UserRow, Credential);

impl CurrentUser {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn credential(&self) -> &Credential {
        &self.1
    }

    pub fn is_admin(&self) -> bool {
        self.0.role == "admin"
    }
}

fn cookie_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A cookie-authenticated write must come from a page of this server: the browser's
/// `Origin` must name the host the request was sent to (or one of its public names). Bearer
/// tokens are not sent by browsers on their own, so they need no such check.
pub(crate) fn same_origin(headers: &HeaderMap, state: &AppState) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    state.http.is_own_origin(origin, host)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in or send a valid bearer token",
            )
        };
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let db = state.db();
        if let Some(token) = bearer {
            let digest = crate::util::sha256_hex(token.as_bytes());
            // The login endpoint hands its session token to API clients too.
            let user = db
                .user_by_bearer(&digest)
                .await
                .map_err(ApiError::internal)?;
            return user
                .map(|user| CurrentUser(user, Credential::Bearer(digest)))
                .ok_or_else(unauthorized);
        }
        let Some(cookie) = cookie_value(parts, SESSION_COOKIE) else {
            return Err(unauthorized());
        };
        let digest = crate::util::sha256_hex(cookie.as_bytes());
        let user = db
            .user_by_login_session(&digest)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(unauthorized)?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe && !same_origin(&parts.headers, state) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "cookie-authenticated writes must come from this server's own origin",
            ));
        }
        Ok(CurrentUser(user, Credential::Cookie(digest)))
    }
}

/// The authenticated user, who must be an admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub UserRow);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an admin",
            ));
        }
        Ok(AdminUser(user.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_are_random() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        let (a, da) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
        assert_eq!(da, crate::util::sha256_hex(a.as_bytes()));
    }
}
