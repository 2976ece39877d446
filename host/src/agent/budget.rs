//! Prices, costs and spending limits.
//!
//! Before each provider call a run reserves the call's estimated cost; the check counts what
//! the ledger holds plus every reservation still open, on every host sharing the database, so
//! concurrent runs cannot overspend together. The call's step write deletes the reservation
//! and adds the real cost to the ledger in one transaction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::llm::Usage;
use crate::store::budgets::{Limits, Standing};
use crate::store::{Db, now_ms};

/// An amount of US dollars, held as whole micro-dollars (the ledger's unit). In JSON it is a
/// decimal string (`"0.000764"`, `"5.00"`): exact, where a float would answer
/// `0.0007639999999999999`, and still plain dollars to a reader. Reading also takes a JSON
/// number, which is how settings written before this type held their limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usd(pub i64);

impl Usd {
    pub fn micros(self) -> i64 {
        self.0
    }

    /// Whole dollars and at least two decimals, at most six (no digit is lost: the unit is
    /// a micro-dollar).
    pub fn to_decimal(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let mut fraction = format!("{:06}", abs % 1_000_000);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        format!("{sign}{}.{fraction}", abs / 1_000_000)
    }

    /// A non-negative decimal with at most six decimals (`"5"`, `"0.25"`, `"0.000001"`).
    pub fn parse_decimal(text: &str) -> Result<Usd, String> {
        let bad = || {
            format!(
                "`{text}` is not an amount of dollars: write a non-negative decimal with at most six decimals, e.g. \"5.00\""
            )
        };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 6 {
            return Err(bad());
        }
        if text.contains('.') && fraction.is_empty() {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(fraction))
            .map(Usd)
            .ok_or_else(bad)
    }
}

impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}", self.to_decimal())
    }
}

impl Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Usd::parse_decimal(&s).map_err(serde::de::Error::custom),
            // Budgets stored before money became strings.
            Value::Number(n) => match n.as_f64() {
                Some(v) if (0.0..9e12).contains(&v) => Ok(Usd((v * 1e6).round() as i64)),
                _ => Err(serde::de::Error::custom(format!(
                    "{n} is not an amount of dollars"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected dollars as a decimal string such as \"5.00\", not {other}"
            ))),
        }
    }
}

impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^[0-9]+(\.[0-9]{1,6})?$"))
            .description(Some(
                "US dollars as a decimal string, exact to the micro-dollar (e.g. \"0.000764\")",
            ))
            .examples([serde_json::json!("0.000764")])
            .into()
    }
}

impl ToSchema for Usd {}

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    /// Cost in millionths of a dollar. One dollar per million tokens is exactly one
    /// micro-dollar per token, so the arithmetic is per token.
    pub fn cost_micros(&self, usage: &Usage) -> i64 {
        let cached = usage.cache_read_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let micros = fresh as f64 * self.input
            + cached as f64 * self.cache_read.unwrap_or(self.input)
            + usage.cache_write_tokens as f64 * self.cache_write.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output;
        micros.round() as i64
    }
}

/// How the calls of one provider instance and model are priced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pricing {
    /// `[agent.prices]` prices this instance's model (`"instance/model" = {…}`).
    Instance(Price),
    /// The price table has the model: built in, or `[agent.prices]` by model id.
    Table(Price),
    /// The instance talks to a server on a local or private address and nothing prices it:
    /// its calls cost nothing, whatever the model is called (a local `gpt-4o-mini` is not
    /// OpenAI's).
    Local,
    /// No price: calls are recorded as costing nothing, and no budget limits them.
    Unpriced,
}

impl Pricing {
    /// The price to charge, if calls cost anything.
    pub fn price(&self) -> Option<Price> {
        match self {
            Pricing::Instance(p) | Pricing::Table(p) => Some(*p),
            Pricing::Local | Pricing::Unpriced => None,
        }
    }

    /// The name the API uses: `instance`, `table`, `local` or `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Pricing::Instance(_) => "instance",
            Pricing::Table(_) => "table",
            Pricing::Local => "local",
            Pricing::Unpriced => "none",
        }
    }
}

/// Built-in prices of well-known models (USD per million tokens, list prices when written);
/// the operator's `[agent.prices]` entries replace or extend them.
pub fn default_prices() -> BTreeMap<String, Price> {
    let p = |input, output, cache_read| Price {
        input,
        output,
        cache_read: Some(cache_read),
        cache_write: None,
    };
    [
        ("gpt-4o", p(2.5, 10.0, 1.25)),
        ("gpt-4o-mini", p(0.15, 0.6, 0.075)),
        ("gpt-4.1", p(2.0, 8.0, 0.5)),
        ("gpt-4.1-mini", p(0.4, 1.6, 0.1)),
        ("o4-mini", p(1.1, 4.4, 0.275)),
        ("claude-opus-4-1", p(15.0, 75.0, 1.5)),
        ("claude-sonnet-4-5", p(3.0, 15.0, 0.3)),
        ("claude-haiku-4-5", p(1.0, 5.0, 0.1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A user's spending limits (`GET/PUT /api/settings/budget`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// US dollars per UTC day (a decimal string); `null` for no limit.
    #[serde(default)]
    pub daily_limit_usd: Option<Usd>,
    /// US dollars per calendar month (UTC, a decimal string); `null` for no limit.
    #[serde(default)]
    pub monthly_limit_usd: Option<Usd>,
    /// Fractions of a limit, each in (0, 1] (e.g. `[0.5, 0.8]`), at which a run emits a
    /// `budget-alert` event.
    #[serde(default)]
    pub alert_thresholds: Vec<f64>,
}

impl BudgetSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self
            .alert_thresholds
            .iter()
            .any(|t| !(t.is_finite() && *t > 0.0 && *t <= 1.0))
        {
            return Err("alert_thresholds must be fractions in (0, 1]".into());
        }
        Ok(())
    }

    pub fn from_settings(settings: &serde_json::Map<String, Value>) -> BudgetSettings {
        settings
            .get("budget")
            .and_then(|b| serde_json::from_value(b.clone()).ok())
            .unwrap_or_default()
    }

    fn limited(&self) -> bool {
        self.daily_limit_usd.is_some() || self.monthly_limit_usd.is_some()
    }
}

/// Start of the current UTC day and month, in epoch milliseconds.
pub fn period_starts(now_ms: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let day_start = now_ms - now_ms.rem_euclid(DAY);
    let (y, m, _) = civil_from_days(day_start / DAY);
    let month_start = days_from_civil(y, m, 1) * DAY;
    (day_start, month_start)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// well-known algorithm, written out here to avoid a calendar dependency).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Why a call may not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BudgetExceeded(pub String);

/// Reserves provider calls' estimated costs in the database, where every host sharing it
/// counts them (`store/budgets.rs`).
pub struct Budgets {
    host_id: String,
}

/// A call's reservation. The write of its call's step deletes it (the step's `releases`). One
/// whose write failed, or whose run ended some other way, stays in the database until it
/// expires: the call may have cost money the ledger does not show.
pub struct Reservation {
    id: String,
}

impl Reservation {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl BudgetSettings {
    fn limits(&self, now_ms: i64) -> Limits {
        let (day_start_ms, month_start_ms) = period_starts(now_ms);
        Limits {
            daily: self.daily_limit_usd.map(Usd::micros),
            day_start_ms,
            monthly: self.monthly_limit_usd.map(Usd::micros),
            month_start_ms,
        }
    }
}

impl Budgets {
    pub fn new(host_id: String) -> Budgets {
        Budgets { host_id }
    }

    /// Whether a call estimated at `estimate` fits the owner's limits now, without reserving
    /// it: the refusal before a run starts. The call itself reserves ([`Budgets::reserve`]).
    pub async fn check(
        &self,
        db: &Db,
        owner: &str,
        settings: &BudgetSettings,
        estimate: i64,
    ) -> anyhow::Result<Result<(), BudgetExceeded>> {
        if !settings.limited() {
            return Ok(Ok(()));
        }
        let now = now_ms();
        let limits = settings.limits(now);
        let standing = db.budget_standing(owner, limits, now).await?;
        Ok(match exceeded(settings, limits, standing, estimate) {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// Reserves `estimate` micro-dollars for `owner`, or says which limit it would exceed.
    /// `None` when the owner has no limits (nothing to reserve against).
    pub async fn reserve(
        &self,
        db: &Db,
        owner: &str,
        settings: &BudgetSettings,
        estimate: i64,
    ) -> anyhow::Result<Result<Option<Reservation>, BudgetExceeded>> {
        if !settings.limited() {
            return Ok(Ok(None));
        }
        let now = now_ms();
        let limits = settings.limits(now);
        let id = crate::util::new_id();
        if db
            .reserve_budget(&id, owner, &self.host_id, estimate, limits, now)
            .await?
        {
            return Ok(Ok(Some(Reservation { id })));
        }
        // Refused: read the figures for the message (they may have moved since, which only
        // matters to the message).
        let standing = db.budget_standing(owner, limits, now).await?;
        Ok(Err(exceeded(settings, limits, standing, estimate).unwrap_or_else(|| {
            BudgetExceeded(format!(
                "the budget would be exceeded by runs in progress: this call is estimated at {}",
                Usd(estimate)
            ))
        })))
    }
}

/// The first limit that `estimate` on top of `standing` would break.
fn exceeded(
    settings: &BudgetSettings,
    limits: Limits,
    standing: Standing,
    estimate: i64,
) -> Option<BudgetExceeded> {
    let checks = [
        (
            "daily",
            settings.daily_limit_usd,
            limits.daily,
            standing.spent_today,
        ),
        (
            "monthly",
            settings.monthly_limit_usd,
            limits.monthly,
            standing.spent_this_month,
        ),
    ];
    checks
        .into_iter()
        .find_map(|(name, usd_limit, limit, spent)| {
            let (usd_limit, limit) = (usd_limit?, limit?);
            (spent + standing.reserved + estimate > limit).then(|| {
                BudgetExceeded(format!(
                    "the {name} budget of {usd_limit} would be exceeded: {} spent, \
                 {} reserved by runs in progress, this call is estimated at {}",
                    Usd(spent),
                    Usd(standing.reserved),
                    Usd(estimate)
                ))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-1000, 0, 59, 60, 365, 11_016, 20_000, 20_779] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2026-11-22
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        let (day, month) = period_starts(20_779 * 86_400_000 + 5_000);
        assert_eq!(day, 20_779 * 86_400_000);
        assert_eq!(month, days_from_civil(2026, 11, 1) * 86_400_000);
    }

    #[test]
    fn dollars_are_exact_decimal_strings() {
        assert_eq!(Usd(764).to_decimal(), "0.000764");
        assert_eq!(Usd(5_000_000).to_decimal(), "5.00");
        assert_eq!(Usd(100_000).to_decimal(), "0.10");
        assert_eq!(Usd(0).to_decimal(), "0.00");
        assert_eq!(serde_json::to_value(Usd(764)).unwrap(), "0.000764");
        for (text, micros) in [("5", 5_000_000), ("0.25", 250_000), ("0.000001", 1)] {
            assert_eq!(Usd::parse_decimal(text), Ok(Usd(micros)), "{text}");
        }
        for bad in ["", "-1", "1.", ".5", "1.0000001", "1e3", "NaN", " 1"] {
            assert!(Usd::parse_decimal(bad).is_err(), "{bad}");
        }
        // Settings written when limits were numbers still mean the same limits.
        let old: BudgetSettings =
            serde_json::from_value(serde_json::json!({"daily_limit_usd": 0.5})).unwrap();
        assert_eq!(old.daily_limit_usd, Some(Usd(500_000)));
        assert!(serde_json::from_value::<Usd>(serde_json::json!(-1)).is_err());
    }

    #[test]
    fn cost_counts_each_token_kind_at_its_price() {
        let price = Price {
            input: 2.0,
            output: 10.0,
            cache_read: Some(0.5),
            cache_write: None,
        };
        let usage = Usage {
            input_tokens: 1000,
            output_tokens: 100,
            cache_read_tokens: 400,
            cache_write_tokens: 0,
        };
        assert_eq!(price.cost_micros(&usage), 600 * 2 + 400 / 2 + 100 * 10);
    }
}
