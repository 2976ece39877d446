//! What the signed-in user's runs cost, and their spending limits. Days and months are UTC.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope};
use crate::agent::budget::{BudgetSettings, Pricing, Usd, civil_from_days, period_starts};
use crate::auth::CurrentUser;
use crate::store::now_ms;
use crate::store::runs::LedgerRow;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(today))
        .routes(routes!(history))
        .routes(routes!(breakdown))
        .routes(routes!(get_budget, put_budget))
}

const DAY_MS: i64 = 86_400_000;

/// Totals of some ledger rows.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Totals {
    pub cost_usd: Usd,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Provider calls.
    pub calls: i64,
    /// Of those, calls whose stream ended without reporting usage (aborted, broken off):
    /// counted at their estimated tokens and cost.
    pub estimated_calls: i64,
}

impl Totals {
    fn add(&mut self, row: &LedgerRow) {
        self.cost_usd.0 += row.cost_micros;
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
        self.calls += 1;
        self.estimated_calls += i64::from(row.estimated);
    }
}

fn date_of(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today's spending against the limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct Today {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub month_cost_usd: Usd,
    pub daily_limit_usd: Option<Usd>,
    pub monthly_limit_usd: Option<Usd>,
    /// Alert thresholds reached, as `{"limit": "daily"|"monthly", "threshold": 0.8}`.
    pub alerts: Vec<serde_json::Value>,
    /// Models used this month that have no price: their calls count as free here and no
    /// budget limits them. (Models of a provider on a local address are free, not unpriced.)
    pub unpriced_models: Vec<String>,
}

/// Today's cost, tokens and calls, this month's cost, and the limits.
#[utoipa::path(get, path = "/api/costs/today", tag = "costs",
    responses((status = 200, body = Today), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn today(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<axum::Json<Today>, ApiError> {
    let now = now_ms();
    let (day_start, month_start) = period_starts(now);
    let rows = state.db().ledger_since(user.id(), month_start).await?;
    let mut totals = Totals::default();
    let mut month = 0i64;
    let mut unpriced = std::collections::BTreeSet::new();
    for row in &rows {
        if state.agent.pricing(&row.provider, &row.model) == Pricing::Unpriced {
            unpriced.insert(row.model.clone());
        }
        month += row.cost_micros;
        if row.created_at_ms >= day_start {
            totals.add(row);
        }
    }
    let budget = state.agent.budget_settings(user.id()).await?;
    let month_cost_usd = Usd(month);
    let mut alerts = Vec::new();
    for (name, limit, spent) in [
        ("daily", budget.daily_limit_usd, totals.cost_usd),
        ("monthly", budget.monthly_limit_usd, month_cost_usd),
    ] {
        let Some(limit) = limit.filter(|l| l.micros() > 0) else {
            continue;
        };
        for t in &budget.alert_thresholds {
            if spent.micros() as f64 >= limit.micros() as f64 * t {
                alerts.push(json!({"limit": name, "threshold": t}));
            }
        }
    }
    Ok(axum::Json(Today {
        date: date_of(now),
        totals,
        month_cost_usd,
        daily_limit_usd: budget.daily_limit_usd,
        monthly_limit_usd: budget.monthly_limit_usd,
        alerts,
        unpriced_models: unpriced.into_iter().collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Days back, including today: 1–366 (default 30).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<i64>,
}

/// One day of the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Day {
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Cost per day for the last `days` days, oldest first; days without calls are included.
#[utoipa::path(get, path = "/api/costs/history", tag = "costs", params(HistoryQuery),
    responses((status = 200, body = Vec<Day>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn history(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<axum::Json<Vec<Day>>, ApiError> {
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::bad_request("days: between 1 and 366"));
    }
    let (day_start, _) = period_starts(now_ms());
    let first = day_start - (days - 1) * DAY_MS;
    let rows = state.db().ledger_since(user.id(), first).await?;
    let mut out: Vec<Day> = (0..days)
        .map(|i| Day {
            date: date_of(first + i * DAY_MS),
            totals: Totals::default(),
        })
        .collect();
    for row in &rows {
        let i = ((row.created_at_ms - first) / DAY_MS) as usize;
        if let Some(day) = out.get_mut(i) {
            day.totals.add(row);
        }
    }
    Ok(axum::Json(out))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakdownQuery {
    /// `day` (today), `week` (the last 7 days) or `month` (this calendar month).
    #[param(pattern = "^(day|week|month)$")]
    pub period: Option<String>,
}

/// Spending of one provider and model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCost {
    pub provider: String,
    pub model: String,
    /// Whether its calls have a price (`pricing` is not `none`); without one they count as
    /// free and no budget limits them.
    pub priced: bool,
    /// How its calls are priced: `instance` (`[agent.prices]` names this provider and
    /// model), `table` (the price table has the model), `local` (the provider is on a local
    /// or private address: free) or `none`. By the provider's address now.
    pub pricing: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The breakdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct Breakdown {
    pub period: String,
    pub since_ms: i64,
    pub total: Totals,
    /// Most expensive first.
    pub by_model: Vec<ModelCost>,
}

/// Cost by provider and model over a period.
#[utoipa::path(get, path = "/api/costs/breakdown", tag = "costs", params(BreakdownQuery),
    responses((status = 200, body = Breakdown), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn breakdown(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(query): ApiQuery<BreakdownQuery>,
) -> Result<axum::Json<Breakdown>, ApiError> {
    let period = query.period.unwrap_or_else(|| "day".into());
    let (day_start, month_start) = period_starts(now_ms());
    let since = match period.as_str() {
        "day" => day_start,
        "week" => day_start - 6 * DAY_MS,
        "month" => month_start,
        _ => return Err(ApiError::bad_request("period: day, week or month")),
    };
    let rows = state.db().ledger_since(user.id(), since).await?;
    let mut total = Totals::default();
    let mut by: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for row in &rows {
        total.add(row);
        by.entry((row.provider.clone(), row.model.clone()))
            .or_default()
            .add(row);
    }
    let mut by_model: Vec<ModelCost> = by
        .into_iter()
        .map(|((provider, model), totals)| {
            let pricing = state.agent.pricing(&provider, &model);
            ModelCost {
                priced: pricing != Pricing::Unpriced,
                pricing: pricing.as_str().to_owned(),
                provider,
                model,
                totals,
            }
        })
        .collect();
    by_model.sort_by_key(|m| std::cmp::Reverse(m.totals.cost_usd));
    Ok(axum::Json(Breakdown {
        period,
        since_ms: since,
        total,
        by_model,
    }))
}

/// Your spending limits.
#[utoipa::path(get, path = "/api/settings/budget", tag = "costs",
    responses((status = 200, body = BudgetSettings), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_budget(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<axum::Json<BudgetSettings>, ApiError> {
    Ok(axum::Json(state.agent.budget_settings(user.id()).await?))
}

/// Replaces your spending limits. A run whose next provider call would exceed a limit is
/// refused before the call (`402 budget_exceeded` when sending a message, an `error` event
/// with that code mid-run). Runs in progress reserve their estimated cost, so concurrent runs
/// cannot overspend together. Models without a price (see `[agent.prices]`) and providers on
/// a local address cost nothing. Limits are decimal strings of dollars (`"5.00"`).
#[utoipa::path(put, path = "/api/settings/budget", tag = "costs", request_body = BudgetSettings,
    responses((status = 200, body = BudgetSettings), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 422, description = "`invalid_fields`: a limit that is not dollars as a decimal string with at most six decimals (`\"5.00\"`), a field of the wrong type, or an unknown one", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn put_budget(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<BudgetSettings>,
) -> Result<axum::Json<BudgetSettings>, ApiError> {
    body.validate().map_err(ApiError::bad_request)?;
    let patch = json!({"budget": {
        "daily_limit_usd": body.daily_limit_usd,
        "monthly_limit_usd": body.monthly_limit_usd,
        "alert_thresholds": body.alert_thresholds,
    }});
    match state.db().patch_settings(user.id(), &patch).await? {
        Ok(settings) => Ok(axum::Json(BudgetSettings::from_settings(&settings))),
        Err(message) => Err(ApiError::bad_request(message)),
    }
}
