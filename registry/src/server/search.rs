//! Search, package detail, downloads, ratings, and the admins' verified flag and advisories.
//!
//! **Ranking.** Full text over name, tags and description (SQLite FTS5 `bm25`, PostgreSQL
//! `ts_rank`; every word of the query must match, each as a prefix). A package whose name
//! (`acme/weather` or just `weather`) is the query comes first. The rest are ordered by
//! relevance × (1 + bonus), where the bonus is capped at 0.5 and made of:
//! - downloads: ln(1 + unique downloads in the last 30 days) / 25, at most 0.3;
//! - rating: a Bayesian average (five phantom 3-star ratings, so one 5-star review does not
//!   beat a hundred 4.8s), mapped from 1..5 to -0.2..+0.2;
//! - verified by the registry's admins: +0.1.
//!
//! So popularity reorders packages of similar relevance but never lifts a weak match over a
//! strong one. The bonus is a column, kept current by the writes that change its inputs.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::accounts::{Account, client_key};
use super::db::{Backend, Db};
use super::keys::{Resigned, resign};
use super::{ApiError, AppState, Body, Params, Path, now_ms};
use crate::manifest::PluginName;
use crate::signing::Sha256Digest;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/packages/{namespace}/{name}", get(detail))
        .route("/api/v1/packages/{namespace}/{name}/rating", put(rate))
        .route(
            "/api/v1/admin/packages/{namespace}/{name}/verified",
            put(set_verified),
        )
        .route("/api/v1/admin/advisories", post(add_advisory))
        .route("/api/v1/admin/advisories/{id}", delete(remove_advisory))
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Downloads within this many days count as recent.
const RECENT_DAYS: i64 = 30;
const PRIOR_RATINGS: f64 = 5.0;
const PRIOR_STARS: f64 = 3.0;
/// Search pages hold at most this many packages.
const MAX_LIMIT: i64 = 100;
/// Words of a query used; more are ignored (each is a prefix match).
const MAX_TERMS: usize = 8;

/// The Bayesian average of a package's ratings.
fn bayesian_average(sum: i64, count: i64) -> f64 {
    (PRIOR_RATINGS * PRIOR_STARS + sum as f64) / (PRIOR_RATINGS + count as f64)
}

/// Search's multiplier bonus (see the module docs).
fn bonus(recent_downloads: i64, rating_sum: i64, rating_count: i64, verified: bool) -> f64 {
    let downloads = ((1 + recent_downloads.max(0)) as f64).ln() / 25.0;
    let rating = (bayesian_average(rating_sum, rating_count) - 3.0) / 2.0 * 0.2;
    let verified = if verified { 0.1 } else { 0.0 };
    (downloads.min(0.3) + rating + verified).min(0.5)
}

/// Recomputes a package's bonus from its columns.
async fn update_bonus(executor: &mut sqlx::AnyConnection, package_id: i64) -> Result<(), ApiError> {
    let row = sqlx::query(
        "SELECT downloads_recent, rating_sum, rating_count, verified FROM packages WHERE id = $1",
    )
    .bind(package_id)
    .fetch_one(&mut *executor)
    .await?;
    let value = bonus(
        row.try_get("downloads_recent")?,
        row.try_get("rating_sum")?,
        row.try_get("rating_count")?,
        row.try_get::<i64, _>("verified")? == 1,
    );
    sqlx::query("UPDATE packages SET bonus = $1 WHERE id = $2")
        .bind(value)
        .bind(package_id)
        .execute(&mut *executor)
        .await?;
    Ok(())
}

fn today() -> i64 {
    (now_ms() / DAY_MS) as i64
}

/// The package a blob is a release of, if any.
pub async fn release_of_blob(state: &AppState, digest: &str) -> Result<Option<i64>, ApiError> {
    Ok(
        sqlx::query("SELECT package_id FROM releases WHERE package_sha256 = $1 LIMIT 1")
            .bind(digest)
            .fetch_optional(&state.db.pool)
            .await?
            .map(|row| row.try_get("package_id"))
            .transpose()?,
    )
}

/// Counts a download of the package, once per client address and day. A failure is logged,
/// not answered: the download itself goes ahead.
pub async fn count_download(state: &AppState, package_id: i64, address: &SocketAddr) {
    if let Err(e) = try_count_download(state, package_id, address).await {
        tracing::warn!("counting a download: {e:?}");
    }
}

async fn try_count_download(
    state: &AppState,
    package_id: i64,
    address: &SocketAddr,
) -> Result<(), ApiError> {
    let day = today();
    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO downloads (package_id, day, client) VALUES ($1, $2, $3) \
         ON CONFLICT (package_id, day, client) DO NOTHING",
    )
    .bind(package_id)
    .bind(day)
    .bind(client_key(address))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE packages SET downloads_total = downloads_total + 1, downloads_recent = \
         (SELECT COUNT(*) FROM downloads WHERE package_id = $1 AND day > $2) WHERE id = $1",
    )
    .bind(package_id)
    .bind(day - RECENT_DAYS)
    .execute(&mut *tx)
    .await?;
    update_bonus(&mut tx, package_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Drops download records too old to be recent (their totals stay on the packages), and
/// recounts recent downloads and the search bonus of the packages whose count fell.
pub async fn forget_old_downloads(db: &Db) -> anyhow::Result<()> {
    let _lock = db.write_lock().await;
    let mut tx = db.pool.begin().await?;
    let horizon = today() - RECENT_DAYS;
    sqlx::query("DELETE FROM downloads WHERE day <= $1")
        .bind(horizon)
        .execute(&mut *tx)
        .await?;
    let stale = sqlx::query(
        "SELECT p.id, (SELECT COUNT(*) FROM downloads d WHERE d.package_id = p.id) AS n \
         FROM packages p WHERE p.downloads_recent > 0",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in stale {
        let (id, recent): (i64, i64) = (row.try_get("id")?, row.try_get("n")?);
        sqlx::query(
            "UPDATE packages SET downloads_recent = $1 WHERE id = $2 AND downloads_recent <> $1",
        )
        .bind(recent)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        update_bonus(&mut tx, id)
            .await
            .map_err(|e| anyhow::anyhow!("updating a package's bonus: {e:?}"))?;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    kind: Option<String>,
    tag: Option<String>,
    verified: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// The query's words: letters and digits, lowercased, at most [`MAX_TERMS`]. Everything
/// else separates words, so no query syntax of either backend gets through.
fn terms(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_TERMS)
        .map(str::to_lowercase)
        .collect()
}

fn summary(row: &AnyRow) -> Result<Value, ApiError> {
    let sum: i64 = row.try_get("rating_sum")?;
    let count: i64 = row.try_get("rating_count")?;
    let tags: String = row.try_get("tags")?;
    Ok(json!({
        "name": row.try_get::<String, _>("name")?,
        "kind": row.try_get::<String, _>("kind")?,
        "description": row.try_get::<String, _>("description")?,
        "tags": tags.split_whitespace().collect::<Vec<_>>(),
        "version": row.try_get::<String, _>("latest_version")?,
        "verified": row.try_get::<i64, _>("verified")? == 1,
        "downloads": row.try_get::<i64, _>("downloads_total")?,
        "rating": rating_json(sum, count),
    }))
}

fn rating_json(sum: i64, count: i64) -> Value {
    let average = (count > 0).then(|| (sum as f64 / count as f64 * 100.0).round() / 100.0);
    json!({"average": average, "count": count})
}

const SUMMARY_COLUMNS: &str = "p.name, p.kind, p.description, p.tags, p.latest_version, \
     p.verified, p.downloads_total, p.rating_sum, p.rating_count";

async fn search(
    State(state): State<AppState>,
    Params(query): Params<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1 to {MAX_LIMIT}")));
    }
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("offset: 0 or more"));
    }
    if let Some(kind) = &query.kind
        && !["tool", "provider", "channel", "skill"].contains(&kind.as_str())
    {
        return Err(ApiError::bad_request(
            "kind: one of tool, provider, channel, skill",
        ));
    }
    let words = terms(&query.q);
    let backend = state.db.backend;
    // Parameters: $1 the query as typed (exact-name match), $2 the full-text query, then
    // the filters in order.
    let mut filters = String::new();
    let mut binds: Vec<String> = Vec::new();
    let mut next = 3;
    if let Some(kind) = &query.kind {
        let _ = write!(filters, " AND p.kind = ${next}");
        binds.push(kind.clone());
        next += 1;
    }
    if let Some(tag) = &query.tag {
        let _ = write!(
            filters,
            " AND EXISTS (SELECT 1 FROM package_tags t WHERE t.package_id = p.id AND t.tag = ${next})"
        );
        binds.push(tag.clone());
        next += 1;
    }
    match query.verified {
        Some(true) => filters.push_str(" AND p.verified = 1"),
        Some(false) => filters.push_str(" AND p.verified = 0"),
        None => {}
    }
    let (from, matched, score, text) = if words.is_empty() {
        (
            "packages p".to_owned(),
            "1 = 1".to_owned(),
            "p.bonus",
            String::new(),
        )
    } else {
        match backend {
            Backend::Sqlite => (
                "package_search JOIN packages p ON p.id = package_search.rowid".to_owned(),
                "package_search MATCH $2".to_owned(),
                // bm25 is lower for better matches; columns: name, description, tags.
                "(-bm25(package_search, 10.0, 1.0, 4.0)) * (1.0 + p.bonus)",
                words
                    .iter()
                    .map(|w| format!("\"{w}\"*"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Backend::Postgres => (
                "packages p".to_owned(),
                "p.document @@ to_tsquery('simple', $2)".to_owned(),
                "ts_rank(p.document, to_tsquery('simple', $2)) * (1.0 + p.bonus)",
                words
                    .iter()
                    .map(|w| format!("{w}:*"))
                    .collect::<Vec<_>>()
                    .join(" & "),
            ),
        }
    };
    let exact = "CASE WHEN p.name = $1 OR p.short_name = $1 THEN 1 ELSE 0 END";
    // $1 and $2 appear in every statement (a no-op comparison when unused) so that the
    // filters' numbers do not depend on whether there is a query.
    let guard = "($1 = $1 AND $2 = $2)";
    // The total comes with the page (a window over the matches), so the full-text match
    // and its ranking run once; only a page past the end needs a count of its own.
    // (The window is outside the matching query: SQLite allows FTS5's bm25 only in a plain
    // query over the match.) Without a query, the order is the `packages_popular` index's
    // and the count a separate one, so neither sorts every package.
    let sql = if words.is_empty() {
        format!(
            "SELECT {SUMMARY_COLUMNS} FROM packages p WHERE {guard}{filters} \
             ORDER BY p.bonus DESC, p.downloads_total DESC, p.name \
             LIMIT ${next} OFFSET ${}",
            next + 1
        )
    } else {
        format!(
            "SELECT m.*, COUNT(*) OVER () AS n FROM (\
         SELECT {SUMMARY_COLUMNS}, {exact} AS exact, {score} AS score \
         FROM {from} WHERE {matched} AND {guard}{filters}) m \
         ORDER BY m.exact DESC, m.score DESC, m.downloads_total DESC, m.name \
         LIMIT ${next} OFFSET ${}",
            next + 1
        )
    };
    let typed = query.q.trim().to_lowercase();
    let mut select = sqlx::query::<Any>(&sql).bind(&typed).bind(&text);
    for value in &binds {
        select = select.bind(value);
    }
    let rows = select
        .bind(limit)
        .bind(offset)
        .fetch_all(&state.db.pool)
        .await?;
    let total: i64 = match rows.first() {
        Some(row) if !words.is_empty() => row.try_get("n")?,
        None if offset == 0 => 0,
        _ => {
            let count_sql =
                format!("SELECT COUNT(*) AS n FROM {from} WHERE {matched} AND {guard}{filters}");
            let mut count = sqlx::query::<Any>(&count_sql).bind(&typed).bind(&text);
            for value in &binds {
                count = count.bind(value);
            }
            count.fetch_one(&state.db.pool).await?.try_get("n")?
        }
    };
    let items = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
    let next_offset =
        (offset + (items.len() as i64) < total).then_some(offset + items.len() as i64);
    Ok(Json(
        json!({"items": items, "total": total, "next_offset": next_offset}),
    ))
}

/// A package's id and owning account.
async fn package_row(
    executor: impl sqlx::Executor<'_, Database = Any>,
    name: &str,
) -> Result<AnyRow, ApiError> {
    sqlx::query(&format!(
        "SELECT p.id, {SUMMARY_COLUMNS}, p.namespace, p.downloads_recent, p.created_ms, \
         p.updated_ms, n.owner_id, a.username AS publisher FROM packages p \
         JOIN namespaces n ON n.name = p.namespace JOIN accounts a ON a.id = n.owner_id \
         WHERE p.name = $1"
    ))
    .bind(name)
    .fetch_optional(executor)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no package `{name}`")))
}

async fn detail(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let full = format!("{namespace}/{name}");
    let row = package_row(&state.db.pool, &full).await?;
    let id: i64 = row.try_get("id")?;
    let mut view = summary(&row)?;
    let releases = sqlx::query(
        "SELECT version, yanked, package_sha256, contract, key_id, capabilities, size, \
         published_ms, flags FROM releases WHERE package_id = $1 ORDER BY seq DESC",
    )
    .bind(id)
    .fetch_all(&state.db.pool)
    .await?;
    let mut versions = Vec::with_capacity(releases.len());
    for release in &releases {
        let capabilities: Value =
            serde_json::from_str(&release.try_get::<String, _>("capabilities")?)
                .map_err(anyhow::Error::from)?;
        let flags: Value = serde_json::from_str(&release.try_get::<String, _>("flags")?)
            .map_err(anyhow::Error::from)?;
        versions.push(json!({
            "version": release.try_get::<String, _>("version")?,
            "yanked": release.try_get::<i64, _>("yanked")? == 1,
            "package_sha256": release.try_get::<String, _>("package_sha256")?,
            "contract": release.try_get::<Option<String>, _>("contract")?,
            "key_id": release.try_get::<String, _>("key_id")?,
            "capabilities": capabilities,
            "flags": flags,
            "size": release.try_get::<i64, _>("size")?,
            "published_ms": release.try_get::<i64, _>("published_ms")?,
        }));
    }
    let latest = view["version"].clone();
    let newest = versions.iter().find(|v| v["version"] == latest);
    let capabilities = newest.map_or(Value::Null, |v| v["capabilities"].clone());
    let flags = newest.map_or(Value::Null, |v| v["flags"].clone());
    let reviews = sqlx::query(
        "SELECT a.username, r.stars, r.comment, r.updated_ms FROM ratings r \
         JOIN accounts a ON a.id = r.account_id WHERE r.package_id = $1 \
         ORDER BY r.updated_ms DESC LIMIT 20",
    )
    .bind(id)
    .fetch_all(&state.db.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(json!({
            "user": r.try_get::<String, _>("username")?,
            "stars": r.try_get::<i64, _>("stars")?,
            "comment": r.try_get::<Option<String>, _>("comment")?,
            "updated_ms": r.try_get::<i64, _>("updated_ms")?,
        }))
    })
    .collect::<Result<Vec<_>, ApiError>>()?;
    let object = view.as_object_mut().expect("a summary is an object");
    object.insert(
        "publisher".into(),
        json!(row.try_get::<String, _>("publisher")?),
    );
    object.insert(
        "recent_downloads".into(),
        json!(row.try_get::<i64, _>("downloads_recent")?),
    );
    object.insert("capabilities".into(), capabilities);
    object.insert("flags".into(), flags);
    object.insert("versions".into(), json!(versions));
    object.insert("reviews".into(), json!(reviews));
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rating {
    stars: i64,
    #[serde(default)]
    comment: Option<String>,
}

/// Longest review comment, in characters.
const MAX_COMMENT: usize = 2000;

async fn rate(
    State(state): State<AppState>,
    account: Account,
    Path((namespace, name)): Path<(String, String)>,
    Body(rating): Body<Rating>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=5).contains(&rating.stars) {
        return Err(ApiError::bad_request("stars: 1 to 5"));
    }
    let comment = rating
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT)
    {
        return Err(ApiError::bad_request(format!(
            "comment: at most {MAX_COMMENT} characters"
        )));
    }
    let full = format!("{namespace}/{name}");
    let row = package_row(&state.db.pool, &full).await?;
    if row.try_get::<i64, _>("owner_id")? == account.id {
        return Err(ApiError::forbidden(format!(
            "`{full}` is in your own namespace; ratings are for other people's packages"
        )));
    }
    state
        .rate
        .ratings
        .hit(&account.id.to_string())
        .map_err(|s| ApiError::too_many(format!("too many ratings; try again in {s} s")))?;
    let id: i64 = row.try_get("id")?;
    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    // One rating per account and package: a second replaces the first.
    sqlx::query(
        "INSERT INTO ratings (package_id, account_id, stars, comment, updated_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (package_id, account_id) DO UPDATE SET \
         stars = excluded.stars, comment = excluded.comment, updated_ms = excluded.updated_ms",
    )
    .bind(id)
    .bind(account.id)
    .bind(rating.stars)
    .bind(comment.clone())
    .bind(now_ms() as i64)
    .execute(&mut *tx)
    .await?;
    let totals = sqlx::query(
        "SELECT CAST(COALESCE(SUM(stars), 0) AS BIGINT) AS total, COUNT(*) AS n FROM ratings \
         WHERE package_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let (sum, count): (i64, i64) = (totals.try_get("total")?, totals.try_get("n")?);
    sqlx::query("UPDATE packages SET rating_sum = $1, rating_count = $2 WHERE id = $3")
        .bind(sum)
        .bind(count)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    update_bonus(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "name": full,
        "rating": rating_json(sum, count),
        "yours": {"stars": rating.stars, "comment": comment},
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verified {
    verified: bool,
}

async fn set_verified(
    State(state): State<AppState>,
    account: Account,
    Path((namespace, name)): Path<(String, String)>,
    Body(body): Body<Verified>,
) -> Result<Json<Value>, ApiError> {
    account.require_admin()?;
    let full = format!("{namespace}/{name}");
    let _lock = state.db.write_lock().await;
    let mut tx = state.db.pool.begin().await?;
    let id: i64 = package_row(&mut *tx, &full).await?.try_get("id")?;
    sqlx::query("UPDATE packages SET verified = $1 WHERE id = $2")
        .bind(i64::from(body.verified))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    update_bonus(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(json!({"name": full, "verified": body.verified})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdvisory {
    name: String,
    versions: String,
    #[serde(default)]
    package_sha256: Option<String>,
    reason: String,
}

async fn add_advisory(
    State(state): State<AppState>,
    account: Account,
    Body(body): Body<NewAdvisory>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    account.require_admin()?;
    body.name
        .parse::<PluginName>()
        .map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    semver::VersionReq::parse(&body.versions).map_err(|e| {
        ApiError::bad_request(format!(
            "versions: not a semver requirement ({e}); e.g. `=1.2.3`, `<1.4.0` or `*`"
        ))
    })?;
    if let Some(digest) = &body.package_sha256 {
        digest
            .parse::<Sha256Digest>()
            .map_err(|e| ApiError::bad_request(format!("package_sha256: {e}")))?;
    }
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(ApiError::bad_request("reason: 1 to 1000 characters"));
    }
    // The advisory and the signed list that carries it commit together, so an advisory is
    // never stored without hosts being able to see it.
    let id = loop {
        let _lock = state.db.write_lock().await;
        let mut tx = state.db.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO advisories (name, versions, package_sha256, reason, created_ms) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&body.name)
        .bind(&body.versions)
        .bind(&body.package_sha256)
        .bind(reason)
        .bind(now_ms() as i64)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        if resign(&mut tx, &state.keys, true).await? == Resigned::Written {
            tx.commit().await?;
            break id;
        }
    };
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

async fn remove_advisory(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    account.require_admin()?;
    loop {
        let _lock = state.db.write_lock().await;
        let mut tx = state.db.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM advisories WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Err(ApiError::not_found(format!("no advisory {id}")));
        }
        if resign(&mut tx, &state.keys, true).await? == Resigned::Written {
            tx.commit().await?;
            break;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bonus_is_capped_and_one_review_does_not_beat_many() {
        assert!(bonus(i64::MAX / 2, 500, 100, true) <= 0.5);
        let one_five_star = bonus(0, 5, 1, false);
        let many_good = bonus(0, 480, 100, false);
        assert!(many_good > one_five_star, "{many_good} vs {one_five_star}");
        assert!(bonus(0, 0, 0, false).abs() < 1e-9);
        assert!(bonus(0, 100, 100, false) < 0.0);
    }

    #[test]
    fn query_words_carry_no_syntax() {
        assert_eq!(
            terms("acme/weather-now \"OR\" * NEAR(x) :*"),
            ["acme", "weather", "now", "or", "near", "x"]
        );
        assert!(terms("  ").is_empty());
    }
}
