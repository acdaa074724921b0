//! Usage over time: how often each key was presented, by outcome, and the credits its
//! valid requests spent, in minute, hour, day and month buckets.
//!
//! Verify adds to relaxed counters beside the ones it already touches (see
//! `store/cache.rs`); the flusher folds them, once per flush interval, into sparse
//! buckets in the `usage` tree of the index (one value per key per tier period, packed
//! with varints: [`codec`]), and rolls keys up into their owner, their project and the
//! whole store. [`crate::Store::usage`] answers a [`UsageQuery`] with a zero-filled
//! [`UsageReport`]. The tiers keep what [`UsageRetention`] says; a query reaching past a
//! tier is refused with [`InputError::UsagePastRetention`], naming what is kept.
//!
//! ```
//! use credstore::usage::{Granularity, UsageQuery, UsageSubject};
//! use credstore::{Config, ManualClock, NewKey, Store};
//! # fn main() -> Result<(), credstore::Error> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let clock = std::sync::Arc::new(ManualClock::new(1_800_000_000_000));
//! let store = Store::init(dir.path().join("data"), Config::new().clock(clock.clone()))?;
//! let created = store.create(NewKey::new("CI"))?;
//! store.verify(created.key.expose())?;
//! store.flush()?;
//! let now = 1_800_000_000_000;
//! let q = UsageQuery::new(UsageSubject::Key(created.record.id.clone()), now - 3_600_000, now + 1, Granularity::Hour);
//! let report = store.usage(&q)?;
//! assert_eq!(report.total.valid, 1);
//! assert_eq!(report.buckets.len(), 2);
//! # Ok(())
//! # }
//! ```

#[doc(hidden)]
pub mod codec;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::decision::Code;
use crate::error::InputError;
use crate::record::KeyId;

/// Whose usage a query asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageSubject {
    /// One key.
    Key(KeyId),
    /// Every key of an owner (its id).
    Owner(String),
    /// Every key of a project.
    Project(String),
    /// The whole store, presented keys that matched none (`MALFORMED`, `NOT_FOUND`)
    /// included.
    All,
}

impl UsageSubject {
    /// `key`, `owner`, `project` or `all`.
    pub fn kind(&self) -> &'static str {
        match self {
            UsageSubject::Key(_) => "key",
            UsageSubject::Owner(_) => "owner",
            UsageSubject::Project(_) => "project",
            UsageSubject::All => "all",
        }
    }

    /// The id of the key, owner or project (empty for [`UsageSubject::All`]).
    pub fn id(&self) -> &str {
        match self {
            UsageSubject::Key(id) => id.as_str(),
            UsageSubject::Owner(id) | UsageSubject::Project(id) => id,
            UsageSubject::All => "",
        }
    }
}

/// The codes a decision can deny with, in the order usage tables' and the fleet's
/// columns give them.
pub const DENIALS: [Code; 9] = [
    Code::Malformed,
    Code::NotFound,
    Code::Revoked,
    Code::Disabled,
    Code::Expired,
    Code::Forbidden,
    Code::InsufficientPermissions,
    Code::RateLimited,
    Code::BudgetExhausted,
];

/// The width of a bucket. Buckets start at whole minutes, hours, days and months, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One-minute buckets.
    Minute,
    /// One-hour buckets.
    Hour,
    /// One-day buckets (UTC).
    Day,
    /// Calendar-month buckets (UTC).
    Month,
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 4] = [
        Granularity::Minute,
        Granularity::Hour,
        Granularity::Day,
        Granularity::Month,
    ];

    /// `minute`, `hour`, `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }

    /// Parses `minute`, `hour`, `day` or `month`.
    ///
    /// # Errors
    /// [`InputError::InvalidGranularity`] naming the text.
    pub fn parse(text: &str) -> Result<Granularity, InputError> {
        Granularity::ALL
            .into_iter()
            .find(|g| g.as_str() == text)
            .ok_or_else(|| InputError::InvalidGranularity(text.to_string()))
    }

    /// How far back `credstore usage` and `GET /v1/usage` look when not told: an hour of
    /// minutes, a day of hours, 30 days, a year of months.
    pub fn default_since(self) -> &'static str {
        match self {
            Granularity::Minute => "1h",
            Granularity::Hour => "24h",
            Granularity::Day => "30d",
            Granularity::Month => "365d",
        }
    }

    /// The start of the bucket holding `ms`.
    pub fn start_of(self, ms: i64) -> i64 {
        match self {
            Granularity::Minute => ms - ms.rem_euclid(MINUTE_MS),
            Granularity::Hour => ms - ms.rem_euclid(HOUR_MS),
            Granularity::Day => ms - ms.rem_euclid(DAY_MS),
            Granularity::Month => {
                let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Granularity::Minute => start.saturating_add(MINUTE_MS),
            Granularity::Hour => start.saturating_add(HOUR_MS),
            Granularity::Day => start.saturating_add(DAY_MS),
            Granularity::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1).saturating_mul(DAY_MS)
            }
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most buckets one query may ask for (two days of minutes are 2,880; 90 days of
/// hours 2,160).
pub const MAX_BUCKETS: usize = 10_000;

/// What [`crate::Store::usage`] is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Whose usage.
    pub subject: UsageSubject,
    /// From (unix ms; the bucket holding it is the first).
    pub since: i64,
    /// Until (unix ms, exclusive: the last bucket is the one holding `until - 1`).
    pub until: i64,
    /// The buckets' width.
    pub by: Granularity,
}

impl UsageQuery {
    /// A query for `subject`'s usage from `since` to `until` (unix ms), by `by`.
    pub fn new(subject: UsageSubject, since: i64, until: i64, by: Granularity) -> Self {
        UsageQuery {
            subject,
            since,
            until,
            by,
        }
    }

    /// The starts of the buckets the query covers, checked against `retention` at `now`.
    ///
    /// # Errors
    /// [`InputError::InvalidUsageRange`] for an empty range or one of more than
    /// [`MAX_BUCKETS`] buckets; [`InputError::UsagePastRetention`] when `since` is older
    /// than the granularity's tier keeps.
    pub(crate) fn bucket_starts(&self, retention: &UsageRetention, now: i64) -> Result<Vec<i64>, InputError> {
        if self.since >= self.until {
            return Err(InputError::InvalidUsageRange(format!(
                "since ({}) is not before until ({})",
                crate::clock::fmt_time(self.since),
                crate::clock::fmt_time(self.until)
            )));
        }
        let kept = retention.of(self.by);
        let kept_ms = i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
        // A minute of slack: `--since 90d` computed by a client a moment before the store
        // reads its clock still falls inside 90 days.
        let oldest = self.by.start_of(now.saturating_sub(kept_ms).saturating_sub(MINUTE_MS));
        if self.since < oldest {
            return Err(InputError::UsagePastRetention {
                by: self.by.as_str(),
                kept: human_duration(kept),
                oldest: crate::clock::fmt_time(oldest),
            });
        }
        let mut starts = Vec::new();
        let mut start = self.by.start_of(self.since);
        while start < self.until {
            if starts.len() == MAX_BUCKETS {
                return Err(InputError::InvalidUsageRange(format!(
                    "more than {MAX_BUCKETS} {} buckets: ask for a coarser --by or a shorter range",
                    self.by
                )));
            }
            starts.push(start);
            start = self.by.next(start);
        }
        Ok(starts)
    }
}

/// Counts of one bucket (or a total): requests by outcome, and the credits valid
/// requests of live keys spent (their cost; test keys spend none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// `VALID` decisions.
    pub valid: u64,
    /// Denials by code (only codes with a count are present).
    pub denied: BTreeMap<Code, u64>,
    /// Credits spent by valid requests.
    pub spent: u64,
}

impl UsageCounts {
    /// Adds `other` into these counts (saturating).
    pub fn add(&mut self, other: &UsageCounts) {
        self.valid = self.valid.saturating_add(other.valid);
        self.spent = self.spent.saturating_add(other.spent);
        for (code, n) in &other.denied {
            let slot = self.denied.entry(*code).or_insert(0);
            *slot = slot.saturating_add(*n);
        }
    }

    /// Adds `n` decisions of `code` (and, for `VALID`, `spent` credits).
    pub fn count(&mut self, code: Code, n: u64, spent: u64) {
        if code == Code::Valid {
            self.valid = self.valid.saturating_add(n);
            self.spent = self.spent.saturating_add(spent);
        } else if n > 0 {
            let slot = self.denied.entry(code).or_insert(0);
            *slot = slot.saturating_add(n);
        }
    }

    /// Every denial, whatever its code.
    pub fn denied_total(&self) -> u64 {
        self.denied.values().fold(0, |a, n| a.saturating_add(*n))
    }

    /// Every decision, valid or denied.
    pub fn requests(&self) -> u64 {
        self.valid.saturating_add(self.denied_total())
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.valid == 0 && self.spent == 0 && self.denied.values().all(|n| *n == 0)
    }

    /// `{"valid", "denied": {CODE: n}, "spent"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "valid": self.valid,
            "denied": self.denied_json(),
            "spent": self.spent,
        })
    }

    fn denied_json(&self) -> Value {
        Value::Object(
            self.denied
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| (code.as_str().to_string(), json!(n)))
                .collect(),
        )
    }
}

/// One bucket of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    /// Its start, unix ms.
    pub start: i64,
    /// What was counted in it.
    pub counts: UsageCounts,
}

/// The answer to a [`UsageQuery`]: every bucket from `since` to `until`, zero-filled,
/// and their total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The buckets' width.
    pub by: Granularity,
    /// As asked.
    pub since: i64,
    /// As asked.
    pub until: i64,
    /// Every bucket in the range, oldest first, empty ones included.
    pub buckets: Vec<UsageBucket>,
    /// The sum of the buckets.
    pub total: UsageCounts,
    /// The anomalies raised in the range for the subject (`key.anomaly`), oldest first;
    /// for the whole store, `guessing` too.
    pub anomalies: Vec<crate::anomaly::LoggedAnomaly>,
}

impl UsageReport {
    /// DESIGN.md's document: `{"by", "since", "until", "buckets": [{"start", "valid",
    /// "denied": {CODE: n}, "spent"}], "total": {"valid", "denied", "spent"}}`, times as
    /// RFC 3339 text.
    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> = self
            .buckets
            .iter()
            .map(|b| {
                json!({
                    "start": crate::clock::fmt_time(b.start),
                    "valid": b.counts.valid,
                    "denied": b.counts.denied_json(),
                    "spent": b.counts.spent,
                })
            })
            .collect();
        json!({
            "by": self.by.as_str(),
            "since": crate::clock::fmt_time(self.since),
            "until": crate::clock::fmt_time(self.until),
            "buckets": buckets,
            "total": self.total.to_json(),
            "anomalies": self.anomalies.iter().map(crate::anomaly::LoggedAnomaly::to_json).collect::<Vec<_>>(),
        })
    }

    /// Zero-filled buckets at `starts`, with `found` (bucket start, counts) added in;
    /// counts outside the buckets are left out.
    pub(crate) fn build(
        q: &UsageQuery,
        starts: Vec<i64>,
        found: impl IntoIterator<Item = (i64, UsageCounts)>,
    ) -> UsageReport {
        let mut buckets: Vec<UsageBucket> = starts
            .into_iter()
            .map(|start| UsageBucket {
                start,
                counts: UsageCounts::default(),
            })
            .collect();
        let mut total = UsageCounts::default();
        for (start, counts) in found {
            if let Ok(i) = buckets.binary_search_by_key(&start, |b| b.start)
                && let Some(b) = buckets.get_mut(i)
            {
                b.counts.add(&counts);
                total.add(&counts);
            }
        }
        UsageReport {
            by: q.by,
            since: q.since,
            until: q.until,
            buckets,
            total,
            anomalies: Vec::new(),
        }
    }
}

/// How long each tier of buckets is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRetention {
    /// Minute buckets (default 48 hours).
    pub minutes: Duration,
    /// Hour buckets (default 90 days).
    pub hours: Duration,
    /// Day buckets (default 400 days).
    pub days: Duration,
    /// Month buckets (default 5 years, 1,826 days).
    pub months: Duration,
}

impl Default for UsageRetention {
    fn default() -> Self {
        UsageRetention {
            minutes: Duration::from_secs(48 * 3_600),
            hours: Duration::from_secs(90 * 86_400),
            days: Duration::from_secs(400 * 86_400),
            months: Duration::from_secs(1_826 * 86_400),
        }
    }
}

impl UsageRetention {
    /// How long buckets of `by` are kept.
    pub fn of(&self, by: Granularity) -> Duration {
        match by {
            Granularity::Minute => self.minutes,
            Granularity::Hour => self.hours,
            Granularity::Day => self.days,
            Granularity::Month => self.months,
        }
    }
}

/// `48 hours`, `90 days`: a retention as people read it.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 3 * 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The civil date (year, month 1-12, day 1-31) of a day counted from 1970-01-01.
///
/// Howard Hinnant's algorithm: integer arithmetic only, so the flusher, which places
/// every changed key in its month and year, needs no fallible calendar call (checked
/// against jiff in the tests).
pub(crate) fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // `m` is 1 to 12 and `d` 1 to 31 by construction.
    (y, u8::try_from(m).unwrap_or(1), u8::try_from(d).unwrap_or(1))
}

/// The day, counted from 1970-01-01, of a civil date (the inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_agrees_with_jiff() {
        let epoch = jiff::civil::date(1970, 1, 1);
        for days in (-800_000..800_000).step_by(997).chain([0, 59, 60, 365, 10_957, 11_016]) {
            let (y, m, d) = civil_from_days(days);
            let date = jiff::civil::Date::new(
                i16::try_from(y).unwrap(),
                i8::try_from(m).unwrap(),
                i8::try_from(d).unwrap(),
            )
            .unwrap();
            assert_eq!(i64::from(epoch.until(date).unwrap().get_days()), days, "{date}");
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn buckets_start_at_whole_units_and_months_follow_the_calendar() {
        let t = crate::clock::parse_time("2024-02-29T13:45:30.5Z").unwrap();
        let at = |s: &str| crate::clock::parse_time(s).unwrap();
        assert_eq!(Granularity::Minute.start_of(t), at("2024-02-29T13:45:00Z"));
        assert_eq!(Granularity::Hour.start_of(t), at("2024-02-29T13:00:00Z"));
        assert_eq!(Granularity::Day.start_of(t), at("2024-02-29T00:00:00Z"));
        assert_eq!(Granularity::Month.start_of(t), at("2024-02-01T00:00:00Z"));
        assert_eq!(
            Granularity::Month.next(at("2024-02-01T00:00:00Z")),
            at("2024-03-01T00:00:00Z")
        );
        assert_eq!(
            Granularity::Month.next(at("2024-12-01T00:00:00Z")),
            at("2025-01-01T00:00:00Z")
        );
        for g in Granularity::ALL {
            assert_eq!(Granularity::parse(g.as_str()), Ok(g));
        }
        assert!(Granularity::parse("week").is_err());
    }

    #[test]
    fn a_query_zero_fills_and_refuses_what_is_not_kept() {
        let retention = UsageRetention::default();
        let now = 1_800_000_000_000;
        let q = UsageQuery::new(UsageSubject::All, now - 3 * HOUR_MS, now, Granularity::Hour);
        let starts = q.bucket_starts(&retention, now).unwrap();
        assert!(starts.len() == 3 || starts.len() == 4, "{starts:?}");
        let report = UsageReport::build(&q, starts.clone(), [(starts[1], counts(2, 5))]);
        assert_eq!(report.buckets.len(), starts.len());
        assert_eq!(report.total, counts(2, 5));
        assert!(report.buckets[0].counts.is_empty());
        let old = UsageQuery::new(UsageSubject::All, now - 3 * DAY_MS, now, Granularity::Minute);
        let err = old.bucket_starts(&retention, now).unwrap_err();
        assert!(err.to_string().contains("48 hours"), "{err}");
        let empty = UsageQuery::new(UsageSubject::All, now, now, Granularity::Minute);
        assert!(matches!(
            empty.bucket_starts(&retention, now),
            Err(InputError::InvalidUsageRange(_))
        ));
    }

    fn counts(valid: u64, spent: u64) -> UsageCounts {
        UsageCounts {
            valid,
            spent,
            denied: BTreeMap::new(),
        }
    }
}
