//! Publisher accounts and their API tokens.
//!
//! A token is 256 random bits, shown once and stored as its SHA-256; passwords are argon2id
//! (hashed on the blocking pool: it costs tens of milliseconds and 19 MiB on purpose). Sign-up
//! and sign-in are rate-limited per client address, and sign-in per username too.

use std::net::SocketAddr;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::db::is_unique_violation;
use super::{ApiError, AppState, Body, now_ms};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/accounts", post(sign_up))
        .route("/api/v1/tokens", post(sign_in))
        .route("/api/v1/me", get(me))
}

/// The account a request's bearer token belongs to.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
}

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "sign in first: send `Authorization: Bearer TOKEN` (POST /api/v1/tokens \
                     gives one)",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer TOKEN`"))?;
        let row = sqlx::query(
            "SELECT a.id, a.username, a.is_admin FROM tokens t \
             JOIN accounts a ON a.id = t.account_id WHERE t.token_sha256 = $1",
        )
        .bind(sha256_hex(token.trim().as_bytes()))
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token is unknown or was revoked"))?;
        Ok(Account {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            is_admin: row.try_get::<i64, _>("is_admin")? == 1,
        })
    }
}

impl Account {
    /// Refuses anyone but a registry admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("only a registry admin may do this"))
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A client's address as a short hash: what limits and download counts key on, so neither
/// stores addresses.
pub fn client_key(address: &SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        // One IPv6 client usually has a whole /64: keyed by address, it would have 2^64
        // budgets.
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    };
    sha256_hex(ip.as_bytes())[..32].to_owned()
}

/// Runs argon2 on the blocking pool, at most [`HASHING_AT_ONCE`] at a time: each takes
/// 19 MiB and tens of milliseconds, so sign-ins from many addresses must not run them all
/// at once. A request that finds every slot taken is told to retry.
async fn hashing<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = state.hashing.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many sign-ins at this moment; try again in a second",
        )
    })?;
    Ok(tokio::task::spawn_blocking(work)
        .await
        .map_err(anyhow::Error::from)?)
}

/// Password hashes computed at once.
pub const HASHING_AT_ONCE: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

fn check_username(username: &str) -> Result<(), ApiError> {
    let ok = (1..=39).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !username.starts_with('-')
        && !username.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username: 1-39 of a-z, 0-9 and `-`, not starting or ending with `-`",
        ))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if !(8..=256).contains(&password.chars().count()) {
        return Err(ApiError::bad_request("password: 8 to 256 characters"));
    }
    Ok(())
}

fn new_token() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    let token = format!("kreg_{}", hex::encode(bytes));
    let digest = sha256_hex(token.as_bytes());
    Ok((token, digest))
}

async fn store_token(state: &AppState, account_id: i64) -> Result<String, ApiError> {
    let (token, digest) = new_token()?;
    let _lock = state.db.write_lock().await;
    sqlx::query("INSERT INTO tokens (token_sha256, account_id, created_ms) VALUES ($1, $2, $3)")
        .bind(digest)
        .bind(account_id)
        .bind(now_ms() as i64)
        .execute(&state.db.pool)
        .await?;
    Ok(token)
}

fn rate_limited(what: &str, seconds: u64) -> ApiError {
    ApiError::too_many(format!("too many {what}; try again in {seconds} s"))
}

async fn sign_up(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Body(credentials): Body<Credentials>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_username(&credentials.username)?;
    check_password(&credentials.password)?;
    state
        .rate
        .accounts
        .hit(&client_key(&address))
        .map_err(|s| rate_limited("new accounts from this address", s))?;
    let password = credentials.password;
    let hash = hashing(&state, move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
    })
    .await??;
    let inserted = {
        let _lock = state.db.write_lock().await;
        sqlx::query(
            "INSERT INTO accounts (username, password_hash, is_admin, created_ms) \
         VALUES ($1, $2, 0, $3) RETURNING id",
        )
        .bind(&credentials.username)
        .bind(hash)
        .bind(now_ms() as i64)
        .fetch_one(&state.db.pool)
        .await
    };
    let id: i64 = match inserted {
        Ok(row) => row.try_get("id")?,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(format!(
                "the username `{}` is taken",
                credentials.username
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let token = store_token(&state, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"username": credentials.username, "token": token})),
    ))
}

async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Body(credentials): Body<Credentials>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let wrong = || ApiError::unauthorized("wrong username or password");
    // Checked before it keys a limiter: a long made-up name must not take memory there.
    if check_username(&credentials.username).is_err() {
        return Err(wrong());
    }
    for key in [
        format!("address:{}", client_key(&address)),
        format!("user:{}", credentials.username),
    ] {
        state
            .rate
            .sign_ins
            .hit(&key)
            .map_err(|s| rate_limited("sign-in attempts", s))?;
    }
    let row = sqlx::query("SELECT id, password_hash FROM accounts WHERE username = $1")
        .bind(&credentials.username)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(wrong)?;
    let id: i64 = row.try_get("id")?;
    let stored: String = row.try_get("password_hash")?;
    let password = credentials.password;
    let matches = hashing(&state, move || {
        PasswordHash::new(&stored).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    })
    .await?;
    if !matches {
        return Err(wrong());
    }
    let token = store_token(&state, id).await?;
    Ok((StatusCode::CREATED, Json(json!({"token": token}))))
}

async fn me(State(state): State<AppState>, account: Account) -> Result<Json<Value>, ApiError> {
    let namespaces: Vec<String> =
        sqlx::query("SELECT name FROM namespaces WHERE owner_id = $1 ORDER BY name")
            .bind(account.id)
            .fetch_all(&state.db.pool)
            .await?
            .iter()
            .map(|row| row.try_get("name"))
            .collect::<Result<_, _>>()?;
    Ok(Json(json!({
        "username": account.username,
        "admin": account.is_admin,
        "namespaces": namespaces,
    })))
}
