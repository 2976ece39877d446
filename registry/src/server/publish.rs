//! Writes by publishers: claiming a namespace with its first key, growing its key log,
//! publishing a release, yanking and unyanking.
//!
//! Every check runs before anything is stored, and each refusal says which rule failed. The
//! package blob is written (content-addressed, so a failed publish leaves at most an unused
//! file) before the transaction that adds the release, its index line and its search entry.

use std::collections::BTreeSet;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};

use super::accounts::Account;
use super::db::is_unique_violation;
use super::{ApiError, AppState, Body, KNOWN_CONTRACTS, Path, now_ms};
use crate::contract::ContractUse;
use crate::index::{Index, IndexError, IndexLine, LineProblem};
use crate::keylog::{KeyLog, KeyLogEntry};
use crate::manifest::PluginName;
use crate::package::read_package;
use crate::publish::{check_publish_name, check_publishable};
use crate::signing::ReleaseStatement;
use crate::version::parse_release_version;

pub fn routes(state: &AppState) -> Router<AppState> {
    // A base64 package is 4/3 of its size; the statement and signature are small.
    let publish_limit = (state.limits.compressed_bytes as usize / 3 + 1) * 4 + 64 * 1024;
    Router::new()
        .route("/api/v1/namespaces", post(claim_namespace))
        .route("/api/v1/namespaces/{namespace}/keys", post(append_key))
        .route(
            "/api/v1/publish",
            post(publish).layer(DefaultBodyLimit::max(publish_limit)),
        )
        .route(
            "/api/v1/packages/{namespace}/{name}/versions/{version}/yank",
            post(yank),
        )
        .route(
            "/api/v1/packages/{namespace}/{name}/versions/{version}/unyank",
            post(unyank),
        )
}

/// Entries a namespace's key log may hold: every install verifies each one.
const MAX_KEY_LOG: u64 = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntryBody {
    entry: KeyLogEntry,
}

/// Checks `namespace` has the form of one (`namespace/name`'s first half).
fn check_namespace(namespace: &str) -> Result<(), ApiError> {
    format!("{namespace}/x")
        .parse::<PluginName>()
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("namespace `{namespace}`: {e}")))
}

/// The namespace's key log, verified; `None` if nobody claimed it.
pub async fn key_log(
    executor: impl sqlx::Executor<'_, Database = Any>,
    namespace: &str,
) -> Result<Option<KeyLog>, ApiError> {
    let rows = sqlx::query("SELECT entry FROM key_log WHERE namespace = $1 ORDER BY seq")
        .bind(namespace)
        .fetch_all(executor)
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let text: String = row.try_get("entry")?;
        entries.push(serde_json::from_str(&text).map_err(anyhow::Error::from)?);
    }
    // Stored entries were checked when appended; failing here means the database was
    // changed behind the registry's back, which no answer should paper over.
    KeyLog::verify(namespace, entries)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("stored key log of `{namespace}` does not verify: {e}").into())
}

async fn claim_namespace(
    State(state): State<AppState>,
    account: Account,
    Body(body): Body<KeyEntryBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let namespace = body.entry.namespace.clone();
    check_namespace(&namespace)?;
    check_publish_name(&format!("{namespace}/x").parse().expect("checked above"))
        .map_err(|e| ApiError::forbidden(e.to_string()))?;
    let log = KeyLog::verify(&namespace, vec![body.entry.clone()])
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO namespaces (name, owner_id, created_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&namespace)
    .bind(account.id)
    .bind(now_ms() as i64)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::conflict(format!(
            "the namespace `{namespace}` is taken"
        )));
    }
    insert_entry(&mut tx, &body.entry).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"namespace": namespace, "keys": log.current_keys(), "log_length": log.len()})),
    ))
}

async fn insert_entry(tx: &mut Transaction<'_, Any>, entry: &KeyLogEntry) -> Result<(), ApiError> {
    let written = sqlx::query("INSERT INTO key_log (namespace, seq, entry) VALUES ($1, $2, $3)")
        .bind(&entry.namespace)
        .bind(entry.seq as i64)
        .bind(serde_json::to_string(entry).map_err(anyhow::Error::from)?)
        .execute(&mut **tx)
        .await;
    match written {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(ApiError::conflict(format!(
            "entry {} of `{}`'s key log was written by someone else meanwhile; fetch the log \
             and sign again",
            entry.seq, entry.namespace
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Refuses unless `account` owns the namespace. With `lock`, inside a transaction, it also
/// locks the namespace's row until the transaction ends (an update that changes nothing, the
/// one row lock both databases take alike): a publish and a key revocation in the same
/// namespace then happen one after the other, so no release is accepted at a key-log
/// position a concurrent revocation has just passed.
async fn require_owner(
    executor: impl sqlx::Executor<'_, Database = Any>,
    namespace: &str,
    account: &Account,
    lock: bool,
) -> Result<(), ApiError> {
    let sql = if lock {
        "UPDATE namespaces SET owner_id = owner_id WHERE name = $1 RETURNING owner_id"
    } else {
        "SELECT owner_id FROM namespaces WHERE name = $1"
    };
    let owner: Option<i64> = sqlx::query(sql)
        .bind(namespace)
        .fetch_optional(executor)
        .await?
        .map(|row| row.try_get("owner_id"))
        .transpose()?;
    match owner {
        None => Err(ApiError::not_found(format!(
            "no namespace `{namespace}`: claim it first (POST /api/v1/namespaces)"
        ))),
        Some(owner) if owner == account.id => Ok(()),
        Some(_) => Err(ApiError::forbidden(format!(
            "the namespace `{namespace}` belongs to another account"
        ))),
    }
}

async fn append_key(
    State(state): State<AppState>,
    account: Account,
    Path(namespace): Path<String>,
    Body(body): Body<KeyEntryBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    require_owner(&mut *tx, &namespace, &account, true).await?;
    let mut log = key_log(&mut *tx, &namespace)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no namespace `{namespace}`")))?;
    if log.len() >= MAX_KEY_LOG {
        return Err(ApiError::bad_request(format!(
            "the key log of `{namespace}` has {MAX_KEY_LOG} entries, the most a namespace may \
             have (every host checks each of them)"
        )));
    }
    log.append(body.entry.clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    insert_entry(&mut tx, &body.entry).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"namespace": namespace, "keys": log.current_keys(), "log_length": log.len()})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    statement: ReleaseStatement,
    /// 128 lowercase hex digits.
    signature: String,
    /// The `.kelp` archive, standard base64.
    package: String,
}

/// Reads the package and checks what it holds can be published here.
fn read_and_check(
    bytes: &[u8],
    limits: &crate::package::PackageLimits,
) -> Result<crate::package::Package, ApiError> {
    let package =
        read_package(bytes, limits).map_err(|e| ApiError::bad_request(format!("package: {e}")))?;
    let manifest = &package.manifest;
    check_publishable(manifest).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(wasm) = &package.wasm {
        ContractUse::read(wasm)
            .and_then(|uses| uses.check(manifest, KNOWN_CONTRACTS))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "plugin.wasm: {e} (this registry accepts kelp:plugin {})",
                    KNOWN_CONTRACTS
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
    }
    Ok(package)
}

/// What differs between the statement a publisher sent and the one the package makes.
fn statement_mismatch(sent: &ReleaseStatement, actual: &ReleaseStatement) -> Vec<&'static str> {
    let mut differ = Vec::new();
    if sent.name != actual.name {
        differ.push("name");
    }
    if sent.version != actual.version {
        differ.push("version");
    }
    if sent.contract != actual.contract {
        differ.push("contract");
    }
    if sent.manifest_sha256 != actual.manifest_sha256 {
        differ.push("manifest_sha256");
    }
    if sent.wasm_sha256 != actual.wasm_sha256 {
        differ.push("wasm_sha256");
    }
    if sent.package_sha256 != actual.package_sha256 {
        differ.push("package_sha256");
    }
    differ
}

/// The package's index lines in order, as stored (`yanked` from its column).
pub async fn index_lines(
    executor: impl sqlx::Executor<'_, Database = Any>,
    package_id: i64,
) -> Result<Vec<IndexLine>, ApiError> {
    let rows = sqlx::query("SELECT line, yanked FROM releases WHERE package_id = $1 ORDER BY seq")
        .bind(package_id)
        .fetch_all(executor)
        .await?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let mut line: IndexLine = serde_json::from_str(&row.try_get::<String, _>("line")?)
            .map_err(anyhow::Error::from)?;
        line.yanked = row.try_get::<i64, _>("yanked")? == 1;
        lines.push(line);
    }
    Ok(lines)
}

fn index_refusal(error: IndexError) -> ApiError {
    match &error {
        IndexError::Line { problem, .. } if matches!(**problem, LineProblem::Republished) => {
            ApiError::conflict(format!(
                "{error}: a published version is immutable; publish a new version"
            ))
        }
        _ => ApiError::bad_request(error.to_string()),
    }
}

async fn publish(
    State(state): State<AppState>,
    account: Account,
    Body(body): Body<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state
        .rate
        .publishes
        .hit(&account.id.to_string())
        .map_err(|s| ApiError::too_many(format!("too many publishes; try again in {s} s")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.package.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("package: not standard base64: {e}")))?;
    drop(body.package);
    // Inflating and parsing a component is CPU work of up to the size limits: on the
    // blocking pool, two at a time.
    let (bytes, package) = {
        let _slot = state
            .unpacking
            .acquire()
            .await
            .map_err(anyhow::Error::from)?;
        let limits = state.limits;
        tokio::task::spawn_blocking(move || {
            let package = read_and_check(&bytes, &limits);
            (bytes, package)
        })
        .await
        .map_err(anyhow::Error::from)?
    };
    let package = package?;
    let manifest = &package.manifest;
    let actual = ReleaseStatement::for_package(&package, body.statement.key_id.clone());
    let differ = statement_mismatch(&body.statement, &actual);
    if !differ.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the release statement does not match the package ({} differ{}); sign the \
             statement made from this package",
            differ.join(", "),
            if differ.len() == 1 { "s" } else { "" }
        )));
    }
    let name = manifest.name.clone();
    let namespace = name.namespace().to_owned();
    // Checked here too, before the transaction: a stranger's publish stops early.
    require_owner(&state.db.pool, &namespace, &account, false).await?;

    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    require_owner(&mut *tx, &namespace, &account, true).await?;
    let keys = key_log(&mut *tx, &namespace)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no namespace `{namespace}`")))?;
    let existing = sqlx::query("SELECT id, kind, latest_version FROM packages WHERE name = $1")
        .bind(name.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    let lines = match &existing {
        Some(row) => index_lines(&mut *tx, row.try_get("id")?).await?,
        None => Vec::new(),
    };
    let seq = lines.len() as i64;
    let index = Index::verify(&name, lines, &keys)
        .map_err(|e| anyhow::anyhow!("stored index of `{name}` does not verify: {e}"))?;
    let line = IndexLine {
        statement: body.statement,
        signature: body.signature,
        key_log_position: keys.len(),
        previous: index.head(),
        yanked: false,
    };
    index
        .check_next(&name, &line, &keys)
        .map_err(index_refusal)?;
    Index::check_publish_position(&line, &keys).map_err(index_refusal)?;

    let now = now_ms() as i64;
    let kind = manifest.kind.as_str();
    let tags = manifest.tags.join(" ");
    // What search shows follows the newest release: a new package's first, or a newer one.
    let (package_id, shown): (i64, bool) = match &existing {
        Some(row) => {
            let id: i64 = row.try_get("id")?;
            let stored_kind: String = row.try_get("kind")?;
            if stored_kind != kind {
                return Err(ApiError::bad_request(format!(
                    "`{name}` is a {stored_kind}; a package's kind cannot change (publish a \
                     {kind} under another name)"
                )));
            }
            let latest: String = row.try_get("latest_version")?;
            let newest = parse_release_version(&latest).is_ok_and(|l| manifest.version > l);
            if newest {
                sqlx::query(
                    "UPDATE packages SET description = $1, tags = $2, latest_version = $3, \
                     updated_ms = $4 WHERE id = $5",
                )
                .bind(&manifest.description)
                .bind(&tags)
                .bind(manifest.version.to_string())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            (id, newest)
        }
        None => {
            let inserted = sqlx::query(
                "INSERT INTO packages (name, short_name, namespace, kind, description, tags, \
                 latest_version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                 $8) RETURNING id",
            )
            .bind(name.to_string())
            .bind(name.name())
            .bind(&namespace)
            .bind(kind)
            .bind(&manifest.description)
            .bind(&tags)
            .bind(manifest.version.to_string())
            .bind(now)
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(row) => (row.try_get("id")?, true),
                Err(e) if is_unique_violation(&e) => return Err(concurrent(&name)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    if shown {
        replace_search_entry(
            &mut tx,
            &state,
            package_id,
            &name,
            &manifest.description,
            &manifest.tags,
        )
        .await?;
    }
    let capabilities =
        serde_json::to_string(&manifest.capabilities).map_err(anyhow::Error::from)?;
    let flags = package
        .skill
        .as_ref()
        .map(crate::skill_risk::flag_parsed)
        .unwrap_or_default();
    let flags_json = serde_json::to_string(&flags).map_err(anyhow::Error::from)?;
    let stored_line = serde_json::to_string(&line).map_err(anyhow::Error::from)?;
    let inserted = sqlx::query(
        "INSERT INTO releases (package_id, seq, version, line, yanked, package_sha256, contract, \
         key_id, capabilities, size, published_ms, flags) VALUES ($1, $2, $3, $4, 0, $5, $6, $7, \
         $8, $9, $10, $11)",
    )
    .bind(package_id)
    .bind(seq)
    .bind(manifest.version.to_string())
    .bind(stored_line)
    .bind(&package.digest)
    .bind(line.statement.contract.as_ref().map(ToString::to_string))
    .bind(line.statement.key_id.as_str())
    .bind(&capabilities)
    .bind(bytes.len() as i64)
    .bind(now)
    .bind(&flags_json)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(concurrent(&name)),
        Err(e) => return Err(e.into()),
    }
    // The blob goes to disk once every check passed, before the commit that makes it a
    // release: a crash in between leaves an unreferenced file (never served), never a
    // release without its package.
    write_blob(&state, &package.digest, &bytes).await?;
    tx.commit().await?;
    tracing::info!(package = %name, version = %manifest.version, by = %account.username, "published");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": name,
            "version": manifest.version.to_string(),
            "package_sha256": package.digest,
            "contract": line.statement.contract.as_ref().map(ToString::to_string),
            "key_id": line.statement.key_id,
            "key_log_position": line.key_log_position,
            "index_position": seq,
            "capabilities": manifest.capabilities,
            "flags": flags,
        })),
    ))
}

fn concurrent(name: &PluginName) -> ApiError {
    ApiError::conflict(format!(
        "another release of `{name}` was published at the same moment; fetch the index and try \
         again"
    ))
}

/// Keeps the package's search entry equal to its newest release. PostgreSQL's `document`
/// column is generated from the row; SQLite's FTS5 table is written here.
async fn replace_search_entry(
    tx: &mut Transaction<'_, Any>,
    state: &AppState,
    package_id: i64,
    name: &PluginName,
    description: &str,
    tags: &[String],
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM package_tags WHERE package_id = $1")
        .bind(package_id)
        .execute(&mut **tx)
        .await?;
    let unique: BTreeSet<&String> = tags.iter().collect();
    for tag in unique {
        sqlx::query("INSERT INTO package_tags (package_id, tag) VALUES ($1, $2)")
            .bind(package_id)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    if state.db.backend == super::Backend::Sqlite {
        sqlx::query("DELETE FROM package_search WHERE rowid = $1")
            .bind(package_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO package_search (rowid, name, description, tags) VALUES ($1, $2, $3, $4)",
        )
        .bind(package_id)
        .bind(name.to_string())
        .bind(description)
        .bind(tags.join(" "))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Where the blob with hex digest `digest` lives.
pub fn blob_path(state: &AppState, digest: &str) -> std::path::PathBuf {
    state.blobs.join(&digest[..2]).join(digest)
}

async fn write_blob(state: &AppState, digest: &str, bytes: &[u8]) -> Result<(), ApiError> {
    let path = blob_path(state, digest);
    if tokio::fs::try_exists(&path).await? {
        return Ok(());
    }
    let dir = path.parent().expect("a blob path has a directory");
    tokio::fs::create_dir_all(dir).await?;
    // Written under a temporary name and renamed: a reader never sees half a blob.
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    let temporary = dir.join(format!(".{digest}.{}", hex::encode(suffix)));
    tokio::fs::write(&temporary, bytes).await?;
    let file = tokio::fs::File::open(&temporary).await?;
    file.sync_all().await?;
    tokio::fs::rename(&temporary, &path).await?;
    Ok(())
}

#[derive(Deserialize)]
struct VersionPath {
    namespace: String,
    name: String,
    version: String,
}

async fn set_yanked(
    state: &AppState,
    account: &Account,
    path: &VersionPath,
    yanked: bool,
) -> Result<Json<Value>, ApiError> {
    let name = format!("{}/{}", path.namespace, path.name);
    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    require_owner(&mut *tx, &path.namespace, account, true).await?;
    let changed = sqlx::query(
        "UPDATE releases SET yanked = $1 WHERE version = $2 AND package_id = \
         (SELECT id FROM packages WHERE name = $3)",
    )
    .bind(i64::from(yanked))
    .bind(&path.version)
    .bind(&name)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(ApiError::not_found(format!(
            "`{name}` has no release {}",
            path.version
        )));
    }
    tx.commit().await?;
    Ok(Json(
        json!({"name": name, "version": path.version, "yanked": yanked}),
    ))
}

async fn yank(
    State(state): State<AppState>,
    account: Account,
    Path(path): Path<VersionPath>,
) -> Result<Json<Value>, ApiError> {
    set_yanked(&state, &account, &path, true).await
}

async fn unyank(
    State(state): State<AppState>,
    account: Account,
    Path(path): Path<VersionPath>,
) -> Result<Json<Value>, ApiError> {
    set_yanked(&state, &account, &path, false).await
}
