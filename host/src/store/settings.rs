//! Per-user settings: a JSON object checked against [`schema`], stored as only what the user
//! set; defaults fill in the rest when read, so a changed default reaches everyone who never
//! chose otherwise.

use std::sync::LazyLock;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::{Db, now_ms};

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "User settings",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "default_agent_id": {
                "description": "Agent given to new sessions that name none; one of your agents, or null.",
                "type": ["string", "null"],
                "maxLength": 64,
                "default": null
            },
            "theme": {
                "description": "Colour scheme of the web UI.",
                "type": "string",
                "enum": ["light", "dark", "system"],
                "default": "system"
            },
            "timezone": {
                "description": "IANA time zone name, e.g. `Europe/Berlin` or `UTC`.",
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": "^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$",
                "default": "UTC"
            },
            "budget": {
                "description": "Spending limits: `daily_limit_usd`, `monthly_limit_usd` (null for none) and `alert_thresholds` (fractions of a limit). Also at /api/settings/budget.",
                "type": "object",
                "default": {}
            },
            "locale": {
                "description": "BCP 47 language tag, e.g. `en` or `pt-BR`.",
                "type": "string",
                "minLength": 2,
                "maxLength": 35,
                "pattern": "^[A-Za-z]{2}[A-Za-z0-9]{0,6}(-[A-Za-z0-9]{1,8})*$",
                "default": "en"
            }
        }
    })
});

/// The JSON Schema of a user's settings.
pub fn schema() -> &'static Value {
    &SCHEMA
}

/// Every setting at its default.
pub fn defaults() -> Map<String, Value> {
    properties(schema())
        .iter()
        .map(|(k, s)| (k.clone(), s.get("default").cloned().unwrap_or(Value::Null)))
        .collect()
}

fn properties(schema: &Value) -> &Map<String, Value> {
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&EMPTY)
}

/// Applies an RFC 7396 JSON merge patch: `null` removes a key, objects merge, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Checks `value` against [`schema`]; the shapes its patterns give are checked again here for
/// an error message a person can act on. The error names the offending field (`settings.theme`).
pub fn validate(value: &Value) -> Result<(), String> {
    static COMPILED: LazyLock<crate::schema::Schema> = LazyLock::new(|| {
        crate::schema::Schema::compile(schema()).expect("the settings schema compiles")
    });
    COMPILED.validate(value, "settings")?;
    if let Some(zone) = value.get("timezone").and_then(Value::as_str) {
        // Shape only: the names themselves change with tzdata releases.
        let ok = zone.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
        });
        if !ok {
            return Err(
                "settings.timezone must be an IANA time zone name like `Europe/Berlin`".into(),
            );
        }
    }
    if let Some(budget) = value.get("budget") {
        let budget: crate::agent::budget::BudgetSettings =
            serde_json::from_value(budget.clone()).map_err(|e| format!("settings.budget: {e}"))?;
        budget
            .validate()
            .map_err(|e| format!("settings.budget.{e}"))?;
    }
    if let Some(locale) = value.get("locale").and_then(Value::as_str) {
        let ok = locale.split('-').all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        }) && locale.as_bytes()[..2].iter().all(u8::is_ascii_alphabetic);
        if !ok {
            return Err(
                "settings.locale must be a BCP 47 language tag like `en` or `pt-BR`".into(),
            );
        }
    }
    Ok(())
}

/// The defaults overlaid with `stored` (what a user set); keys no longer in the schema are
/// left out.
pub fn with_defaults(stored: Value) -> Map<String, Value> {
    let mut merged = defaults();
    if let Value::Object(stored) = stored {
        for (key, value) in stored {
            if let Some(slot) = merged.get_mut(&key) {
                *slot = value;
            }
        }
    }
    merged
}

impl Db {
    /// What the user set (not merged with defaults); an empty object if nothing.
    pub async fn stored_settings(&self, user_id: &str) -> Result<Value> {
        let row = sqlx::query("SELECT settings_json FROM user_settings WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let text: String = row.try_get("settings_json")?;
                serde_json::from_str(&text).with_context(|| format!("settings of user {user_id}"))
            }
            None => Ok(json!({})),
        }
    }

    /// The user's settings: defaults overlaid with what they set. Keys no longer in the
    /// schema are left out.
    pub async fn user_settings(&self, user_id: &str) -> Result<Map<String, Value>> {
        Ok(with_defaults(self.stored_settings(user_id).await?))
    }

    /// Merges `patch` into what the user set and stores the result if [`validate`] accepts
    /// it; `Ok(Err(message))` if not. The row is upserted first so that, on PostgreSQL,
    /// concurrent patches of one user wait for each other instead of losing one.
    pub async fn patch_settings(
        &self,
        user_id: &str,
        patch: &Value,
    ) -> Result<Result<Map<String, Value>, String>> {
        let now = now_ms();
        {
            let _w = self.write_lock().await;
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO user_settings (user_id, settings_json, updated_at_ms) VALUES ($1, '{}', $2) \
                 ON CONFLICT (user_id) DO UPDATE SET updated_at_ms = excluded.updated_at_ms",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let text: String =
                sqlx::query("SELECT settings_json FROM user_settings WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("settings_json")?;
            let mut stored: Value = serde_json::from_str(&text)
                .with_context(|| format!("settings of user {user_id}"))?;
            merge_patch(&mut stored, patch);
            if let Err(message) = validate(&stored) {
                return Ok(Err(message));
            }
            sqlx::query("UPDATE user_settings SET settings_json = $1 WHERE user_id = $2")
                .bind(serde_json::to_string(&stored)?)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(Ok(self.user_settings(user_id).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        assert_eq!(validate(&Value::Object(defaults())), Ok(()));
        for (bad, field) in [
            (json!({"theme": "pink"}), ".theme"),
            (json!({"theme": 1}), ".theme"),
            (json!({"timezone": "../etc"}), ".timezone"),
            (json!({"locale": "e"}), ".locale"),
            (json!({"colour": "red"}), ".colour"),
            (json!({"default_agent_id": false}), ".default_agent_id"),
            (json!([]), ""),
        ] {
            let message = validate(&bad).unwrap_err();
            assert!(
                message.starts_with(&format!("settings{field}")),
                "{bad}: {message}"
            );
        }
    }
}
