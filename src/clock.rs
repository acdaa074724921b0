//! Time, injected: the store asks a [`Clock`] for the time so tests can move it.
//!
//! Times are unix milliseconds (`i64`) inside the store; [`fmt_time`] and
//! [`parse_time`] convert to and from RFC 3339 at the edges.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::error::InputError;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> i64;

    /// Nanoseconds since the unix epoch (rate limits count in nanoseconds). The default
    /// is [`Clock::now_ms`] scaled.
    fn now_ns(&self) -> i64 {
        self.now_ms().saturating_mul(1_000_000)
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        self.now_ns() / 1_000_000
    }

    fn now_ns(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock set to `ms` milliseconds since the epoch.
    pub fn new(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats unix milliseconds as RFC 3339 in UTC (`2026-11-22T13:45:00.123Z`).
pub fn fmt_time(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Formats unix milliseconds as `YYYY-MM-DD HH:MM:SS` in UTC, as key dashboards show it.
pub fn fmt_table_time(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Parses an RFC 3339 timestamp into unix milliseconds.
///
/// # Errors
/// [`InputError::InvalidTime`] naming the text.
pub fn parse_time(text: &str) -> Result<i64, InputError> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| InputError::InvalidTime(text.to_string()))
}

/// Parses a duration such as `90d`, `12h`, `30m`, `45s` or `1500ms` into milliseconds.
///
/// # Errors
/// [`InputError::InvalidTime`] for anything else, for zero, and for overflow.
pub fn parse_duration(text: &str) -> Result<i64, InputError> {
    let bad = || InputError::InvalidTime(text.to_string());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_refuse() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400_000));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration("30m"), Ok(30 * 60_000));
        assert_eq!(parse_duration("45s"), Ok(45_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        for bad in ["", "d", "0s", "-5s", "5", "5y", "99999999999999999999d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn times_round_trip() {
        let ms = parse_time("2026-11-22T13:45:00.123Z").unwrap();
        assert_eq!(fmt_time(ms), "2026-11-22T13:45:00.123Z");
        assert_eq!(fmt_table_time(ms), "2026-11-22 13:45:00");
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set(7);
        assert_eq!(c.now_ms(), 7);
    }
}
