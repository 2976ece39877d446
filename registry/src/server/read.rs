//! What hosts fetch. Every answer here is a pure function of the registry's state, so the
//! whole tree can be mirrored as static files: `/.well-known/kelp-registry.json`,
//! `/index/{namespace}/{name}`, `/keys/{namespace}`, `/blobs/sha256/{digest}`,
//! `/advisories.json`, `/timestamp.json`. Nothing here needs an account; nothing here is
//! trusted by a host without checking the signatures it carries.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::Row;

use super::keys::signed_state;
use super::publish::{blob_path, index_lines};
use super::{ApiError, AppState, KNOWN_CONTRACTS, Path};
use crate::signing::encode_public_key;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/.well-known/kelp-registry.json", get(well_known))
        .route("/index/{namespace}/{name}", get(index))
        .route("/keys/{namespace}", get(keys))
        .route("/blobs/sha256/{digest}", get(blob))
        .route("/advisories.json", get(advisories))
        .route("/timestamp.json", get(timestamp))
}

/// Short: an index or key log changes when someone publishes.
const SHORT_CACHE: &str = "public, max-age=60";
/// The timestamp is what tells a host the rest is current: never cached.
const NO_CACHE: &str = "no-cache";

async fn well_known(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "protocol": 1,
        "root_key": encode_public_key(&state.keys.root),
        "root_key_id": state.keys.root_id(),
        "certificate": state.keys.certificate,
        "contracts": KNOWN_CONTRACTS.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "max_package_bytes": state.limits.compressed_bytes,
        "paths": {
            "index": "/index/{namespace}/{name}",
            "keys": "/keys/{namespace}",
            "blobs": "/blobs/sha256/{digest}",
            "advisories": "/advisories.json",
            "timestamp": "/timestamp.json",
            "api": "/api/v1",
        },
    }))
}

fn json_lines(lines: impl Iterator<Item = String>, cache: &'static str) -> Response {
    let mut body = String::new();
    for line in lines {
        body.push_str(&line);
        body.push('\n');
    }
    (
        [
            (CONTENT_TYPE, "application/x-ndjson"),
            (CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

async fn index(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let full = format!("{namespace}/{name}");
    let id: i64 = sqlx::query("SELECT id FROM packages WHERE name = $1")
        .bind(&full)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no package `{full}`")))?
        .try_get("id")?;
    let lines = index_lines(&state.db.pool, id).await?;
    let lines = lines
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::from)?;
    Ok(json_lines(lines.into_iter(), SHORT_CACHE))
}

async fn keys(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
) -> Result<Response, ApiError> {
    // Served as stored (each entry was verified when appended): a read costs no
    // signature checks, whatever the log's length.
    let rows = sqlx::query("SELECT entry FROM key_log WHERE namespace = $1 ORDER BY seq")
        .bind(&namespace)
        .fetch_all(&state.db.pool)
        .await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no namespace `{namespace}`")));
    }
    let lines = rows
        .iter()
        .map(|row| row.try_get::<String, _>("entry"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_lines(lines.into_iter(), SHORT_CACHE))
}

async fn blob(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::bad_request(
            "a blob is named by its SHA-256: 64 lowercase hex digits",
        ));
    }
    // Only blobs of releases are served: a publish refused after its blob was written
    // leaves a file nobody may fetch, so the registry is not a free file host.
    let package_id = super::search::release_of_blob(&state, &digest)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no release has the package {digest}")))?;
    let path = blob_path(&state, &digest);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!("no blob {digest}")));
        }
        Err(e) => return Err(e.into()),
    };
    let length = file.metadata().await?.len();
    super::search::count_download(&state, package_id, &address).await;
    // Streamed: a download holds a small buffer, not the whole package.
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_owned()),
            (CONTENT_LENGTH, length.to_string()),
            // Content-addressed: the bytes behind a digest never change.
            (
                CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
        ],
        body,
    )
        .into_response())
}

async fn advisories(State(state): State<AppState>) -> Result<Response, ApiError> {
    let signed = signed_state(&state.db).await?;
    Ok((
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, NO_CACHE),
        ],
        signed.advisories,
    )
        .into_response())
}

async fn timestamp(State(state): State<AppState>) -> Result<Response, ApiError> {
    let signed = signed_state(&state.db).await?;
    Ok((
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, NO_CACHE),
        ],
        signed.timestamp,
    )
        .into_response())
}
