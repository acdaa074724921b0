//! Rate limits, budgets and plans: steps 7 and 8 of the verification order.
//!
//! - [`RateLimit`]: `limit` requests per `window`, GCRA in one atomic word ([`gcra`]).
//! - [`Budget`]: a cap per period (monthly on a UTC calendar month from an anchor day,
//!   daily, or a lifetime total), counted in one atomic word ([`budget`]).
//! - [`Plan`]: a named tier holding rate limits and a budget; a key may follow a plan and
//!   override parts of it (a key's limit of the same name replaces the plan's; a key's
//!   budget replaces the plan's).

pub mod budget;
pub mod gcra;
pub mod share;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use budget::{Budget, BudgetCounter, MAX_BUDGET, Period};
pub use gcra::{Gcra, Quota};
pub use share::{Share, Shares};

use crate::error::InputError;
use crate::redact::quote;

/// Most rate limits on one key or plan.
pub const MAX_LIMITS: usize = 8;
/// Longest window: one year.
pub const MAX_WINDOW_MS: u64 = 366 * 86_400_000;

/// The longest rate-limit name, bytes.
pub const MAX_LIMIT_NAME_LEN: usize = 32;

/// `limit` requests (of weight 1) per `window_ms`, named for display and overriding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// A name (`per_minute`, or the window text by default).
    pub name: String,
    /// Requests per window; also the burst.
    pub limit: u32,
    /// The window, ms.
    pub window_ms: u64,
}

impl RateLimit {
    /// A checked limit.
    ///
    /// # Errors
    /// [`InputError::InvalidRateLimit`] for a zero limit, a zero or over-long window, or a
    /// bad name.
    pub fn new(name: impl Into<String>, limit: u32, window_ms: u64) -> Result<Self, InputError> {
        let name = name.into();
        let bad = |why: &str| InputError::InvalidRateLimit(format!("{}: {why}", quote(&name)));
        if limit == 0 {
            return Err(bad("the limit must be at least 1"));
        }
        if window_ms == 0 || window_ms > MAX_WINDOW_MS {
            return Err(bad("the window must be between 1ms and 366d"));
        }
        let name_ok = !name.is_empty()
            && name.len() <= MAX_LIMIT_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
        if !name_ok {
            return Err(bad("the name must be 1 to 32 characters of A-Z a-z 0-9 _ - . /"));
        }
        Ok(RateLimit { name, limit, window_ms })
    }

    /// Parses `N/DURATION[:name]`, e.g. `60/1m`, `1000/1h:hourly`. The name defaults to
    /// the duration text.
    ///
    /// # Errors
    /// [`InputError::InvalidRateLimit`] naming the text.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let bad = || InputError::InvalidRateLimit(format!("{}: expected N/DURATION[:name], e.g. 60/1m", quote(text)));
        let (spec, name) = match text.split_once(':') {
            Some((spec, name)) => (spec, Some(name)),
            None => (text, None),
        };
        let (n, window) = spec.split_once('/').ok_or_else(bad)?;
        let limit: u32 = n.trim().parse().map_err(|_| bad())?;
        let window_ms = crate::clock::parse_duration(window.trim()).map_err(|_| bad())?;
        let window_ms = u64::try_from(window_ms).map_err(|_| bad())?;
        RateLimit::new(name.unwrap_or(window.trim()), limit, window_ms)
    }

    /// The quota in nanoseconds.
    pub fn quota(&self) -> Quota {
        Quota::new(self.limit, self.window_ms)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}ms:{}", self.limit, self.window_ms, self.name)
    }
}

impl Budget {
    /// The budget as JSON for people and scripts (the CLI, the sidecar, the audit log's
    /// JSON): `{"cap": 1000, "period": "monthly", "anchor_day": 1}`, the period in the
    /// words `--budget-period` takes, `anchor_day` null unless monthly. Not its stored
    /// form: the index and the log keep serde's encoding (FORMAT.md).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cap": self.cap,
            "period": self.period.name(),
            "anchor_day": self.period.anchor_day(),
        })
    }

    /// A checked budget.
    ///
    /// # Errors
    /// [`InputError::InvalidBudget`] for a cap over [`MAX_BUDGET`] or a monthly anchor
    /// day outside 1–31.
    pub fn new(cap: u64, period: Period) -> Result<Self, InputError> {
        if cap > MAX_BUDGET {
            return Err(InputError::InvalidBudget(format!(
                "cap {cap} is over the largest, {MAX_BUDGET}"
            )));
        }
        if let Period::Monthly { anchor_day } = period
            && !(1..=31).contains(&anchor_day)
        {
            return Err(InputError::InvalidBudget(format!(
                "anchor day {anchor_day} is not 1-31"
            )));
        }
        Ok(Budget { cap, period })
    }
}

impl std::str::FromStr for Period {
    type Err = InputError;

    /// `monthly`, `monthly:15` (anchor day), `daily` or `total`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || InputError::InvalidBudget(format!("period {}: use monthly, monthly:DAY, daily or total", quote(s)));
        match s.split_once(':') {
            None if s == "monthly" => Ok(Period::Monthly { anchor_day: 1 }),
            None if s == "daily" => Ok(Period::Daily),
            None if s == "total" => Ok(Period::Total),
            Some(("monthly", day)) => {
                let anchor_day: u8 = day.parse().map_err(|_| bad())?;
                if (1..=31).contains(&anchor_day) {
                    Ok(Period::Monthly { anchor_day })
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }
}

/// A named tier: rate limits and a budget that keys on it follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The name.
    pub name: String,
    /// Rate limits.
    pub rate_limits: Vec<RateLimit>,
    /// The budget.
    pub budget: Option<Budget>,
}

impl Plan {
    /// The plan as JSON for people and scripts: `{"name", "rate_limits": [{"name",
    /// "limit", "window_ms"}], "budget"}`, the budget as [`Budget::to_json`] shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "rate_limits": self.rate_limits,
            "budget": self.budget.as_ref().map(Budget::to_json),
        })
    }

    /// A checked plan.
    ///
    /// # Errors
    /// [`InputError::InvalidPlan`] for a bad name; as [`check_limits`].
    pub fn new(
        name: impl Into<String>,
        rate_limits: Vec<RateLimit>,
        budget: Option<Budget>,
    ) -> Result<Self, InputError> {
        let name = name.into();
        validate_plan_name(&name)?;
        check_limits(&rate_limits)?;
        Ok(Plan {
            name,
            rate_limits,
            budget,
        })
    }
}

/// Checks a plan name: 1 to 64 characters of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`InputError::InvalidPlan`].
pub fn validate_plan_name(name: &str) -> Result<(), InputError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InputError::InvalidPlan(format!(
            "{}: use 1 to 64 characters of A-Z a-z 0-9 _ . -",
            quote(name)
        )))
    }
}

/// Checks a list of limits: at most [`MAX_LIMITS`], names distinct.
///
/// # Errors
/// [`InputError::InvalidRateLimit`].
pub fn check_limits(limits: &[RateLimit]) -> Result<(), InputError> {
    if limits.len() > MAX_LIMITS {
        return Err(InputError::InvalidRateLimit(format!(
            "{} limits, the most is {MAX_LIMITS}",
            limits.len()
        )));
    }
    let mut names: Vec<&str> = limits.iter().map(|l| l.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w.first() == w.get(1)) {
        return Err(InputError::InvalidRateLimit(format!(
            "two limits named {}: give one a name with N/DURATION:name",
            quote(w.first().copied().unwrap_or_default())
        )));
    }
    Ok(())
}

/// The effective limits of a key: the plan's, overridden by the key's own.
pub(crate) fn effective(
    own: &[RateLimit],
    own_budget: Option<Budget>,
    plan: Option<&Plan>,
) -> (Vec<RateLimit>, Option<Budget>) {
    let mut by_name: BTreeMap<&str, &RateLimit> = BTreeMap::new();
    for l in plan.map(|p| p.rate_limits.as_slice()).unwrap_or_default() {
        by_name.insert(&l.name, l);
    }
    for l in own {
        by_name.insert(&l.name, l);
    }
    let limits = by_name.into_values().cloned().collect();
    (limits, own_budget.or_else(|| plan.and_then(|p| p.budget)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rate_limits() {
        let l = RateLimit::parse("60/1m").unwrap();
        assert_eq!((l.limit, l.window_ms, l.name.as_str()), (60, 60_000, "1m"));
        let l = RateLimit::parse("1000/1h:hourly").unwrap();
        assert_eq!((l.limit, l.window_ms, l.name.as_str()), (1000, 3_600_000, "hourly"));
        for bad in [
            "0/1m",
            "-1/1m",
            "10/0s",
            "10/",
            "10",
            "x/1m",
            "10/1y",
            "10/1m:",
            "10/1m:bad name",
            "10/400d",
        ] {
            assert!(
                matches!(RateLimit::parse(bad), Err(InputError::InvalidRateLimit(_))),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn budgets_and_periods() {
        assert!(matches!(
            Budget::new(MAX_BUDGET + 1, Period::Daily),
            Err(InputError::InvalidBudget(_))
        ));
        assert_eq!(
            "monthly:15".parse::<Period>().unwrap(),
            Period::Monthly { anchor_day: 15 }
        );
        assert_eq!("monthly".parse::<Period>().unwrap(), Period::Monthly { anchor_day: 1 });
        assert!("monthly:0".parse::<Period>().is_err());
        assert!("weekly".parse::<Period>().is_err());
    }

    #[test]
    fn budgets_show_their_period_in_words() {
        let monthly = Budget::new(10, "monthly:15".parse().unwrap()).unwrap();
        assert_eq!(
            monthly.to_json(),
            serde_json::json!({"cap": 10, "period": "monthly", "anchor_day": 15})
        );
        let daily = Budget::new(5, Period::Daily).unwrap();
        assert_eq!(
            daily.to_json(),
            serde_json::json!({"cap": 5, "period": "daily", "anchor_day": null})
        );
        let plan = Plan::new("pro", vec![RateLimit::parse("60/1m").unwrap()], Some(daily)).unwrap();
        assert_eq!(
            plan.to_json(),
            serde_json::json!({"name": "pro", "rate_limits": [{"name": "1m", "limit": 60, "window_ms": 60_000}],
                               "budget": {"cap": 5, "period": "daily", "anchor_day": null}})
        );
    }

    #[test]
    fn keys_override_their_plan() {
        let plan = Plan::new(
            "pro",
            vec![
                RateLimit::parse("60/1m:minute").unwrap(),
                RateLimit::parse("1000/1h:hour").unwrap(),
            ],
            Some(Budget::new(100, Period::Daily).unwrap()),
        )
        .unwrap();
        let own = vec![RateLimit::parse("120/1m:minute").unwrap()];
        let (limits, budget) = effective(&own, None, Some(&plan));
        assert_eq!(limits.len(), 2);
        assert_eq!(limits.iter().find(|l| l.name == "minute").unwrap().limit, 120);
        assert_eq!(budget.unwrap().cap, 100);
        let dup = vec![RateLimit::parse("1/1m").unwrap(), RateLimit::parse("2/1m").unwrap()];
        assert!(check_limits(&dup).is_err());
        assert!(Plan::new("bad name", vec![], None).is_err());
    }
}
