//! Time, injected: the store asks a [`Clock`] for the time so tests can move it.
//!
//! Times are unix milliseconds (`i64`) inside the store; [`fmt_time`] and
//! [`parse_time`] convert to and from RFC 3339 at the edges. Every time the CLI, the
//! sidecar and the audit log's JSON show is [`fmt_time`]'s one shape,
//! `2026-12-02T13:44:00.000Z` (DESIGN.md, "The CLI contract").

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

/// The system's wall clock, read through the CPU's time-stamp counter.
///
/// Every verify reads the clock once, and `clock_gettime` costs about as much as a rate-limit
/// check itself. This clock reads the counter through [`quanta`] (calibrated against the
/// monotonic clock once per process, about a millisecond) and adds an offset to the wall
/// clock, taken again whenever a second has passed since it was last taken. So it follows
/// the wall clock within the counter's drift over one second (microseconds), including the
/// wall clock's own steps; like the wall clock it may step back by that much, which every
/// user of the time tolerates (rate limits take `max(tat, now)`, budgets never move a
/// counter to an older period, last use is a maximum).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        self.now_ns().div_euclid(1_000_000)
    }

    #[inline]
    fn now_ns(&self) -> i64 {
        ANCHORED.now_ns()
    }
}

/// How long an offset between the counter and the wall clock is used before it is taken
/// again, ns.
const REANCHOR_NS: i64 = 1_000_000_000;

/// The counter-based clock behind [`SystemClock`], one per process.
static ANCHORED: std::sync::LazyLock<Anchored> = std::sync::LazyLock::new(Anchored::new);

struct Anchored {
    clock: quanta::Clock,
    /// The counter's reading at start; times are counted from it.
    origin: u64,
    /// Wall-clock ns minus counter ns, as last taken.
    offset_ns: AtomicI64,
    /// Counter ns when the offset was last taken.
    anchored_at: AtomicI64,
}

impl Anchored {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        let anchored = Anchored {
            clock,
            origin,
            offset_ns: AtomicI64::new(0),
            anchored_at: AtomicI64::new(0),
        };
        anchored.reanchor(0);
        anchored
    }

    /// Counter ns since the origin.
    #[inline]
    fn mono_ns(&self) -> i64 {
        i64::try_from(self.clock.delta_as_nanos(self.origin, self.clock.raw())).unwrap_or(i64::MAX)
    }

    #[inline]
    fn now_ns(&self) -> i64 {
        let mono = self.mono_ns();
        if mono.saturating_sub(self.anchored_at.load(Ordering::Relaxed)) >= REANCHOR_NS {
            self.reanchor(mono);
        }
        mono.saturating_add(self.offset_ns.load(Ordering::Relaxed))
    }

    /// Takes the offset again. Threads that race here store offsets a few ns apart.
    #[cold]
    fn reanchor(&self, mono: i64) {
        self.offset_ns.store(wall_ns().saturating_sub(mono), Ordering::Relaxed);
        self.anchored_at.store(mono, Ordering::Relaxed);
    }
}

/// The wall clock itself, ns since the epoch.
fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
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

/// Formats unix milliseconds as RFC 3339 in UTC, always with three fractional digits
/// (`2026-11-22T13:45:00.120Z`, `2026-11-22T13:45:00.000Z`): one fixed shape, so times
/// compare as text and parse with one pattern.
pub fn fmt_time(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Serialises unix seconds as [`fmt_time`] text, for serde's `serialize_with`.
pub(crate) fn serialize_secs<S: serde::Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
    let ms = i64::try_from(*secs)
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .unwrap_or(i64::MAX);
    s.serialize_str(&fmt_time(ms))
}

/// Serialises optional unix milliseconds as [`fmt_time`] text or null, for serde's
/// `serialize_with`.
pub(crate) fn serialize_opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&fmt_time(*ms)),
        None => s.serialize_none(),
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
/// Times up to the end of the year 9999 parse, though jiff's timestamps end a day earlier
/// (9999-12-30T22:00Z): `9999-12-31T23:59:59Z` is a valid time, which an expiry is then
/// refused for as later than the latest one supported rather than as unreadable.
///
/// # Errors
/// [`InputError::InvalidTime`] naming the text.
pub fn parse_time(text: &str) -> Result<i64, InputError> {
    match text.parse::<jiff::Timestamp>() {
        Ok(t) => Ok(t.as_millisecond()),
        Err(_) => beyond_timestamps(text).ok_or_else(|| InputError::InvalidTime(text.to_string())),
    }
}

/// The unix ms of an RFC 3339 time that is valid but outside jiff's timestamps (the
/// last day of the year 9999, the first of -9999), counted from its civil date, time
/// and offset; `None` for anything else.
fn beyond_timestamps(text: &str) -> Option<i64> {
    let pieces = jiff::fmt::temporal::Pieces::parse(text).ok()?;
    let time = pieces.time()?;
    let offset = pieces.to_numeric_offset()?;
    let epoch = jiff::civil::date(1970, 1, 1);
    let days = i64::from(epoch.until(pieces.date()).ok()?.get_days());
    let of_day = i64::from(time.hour()) * 3_600_000
        + i64::from(time.minute()) * 60_000
        + i64::from(time.second()) * 1_000
        + i64::from(time.millisecond());
    let ms = days * 86_400_000 + of_day - i64::from(offset.seconds()) * 1_000;
    let inside = (jiff::Timestamp::MIN.as_millisecond()..=jiff::Timestamp::MAX.as_millisecond()).contains(&ms);
    (!inside).then_some(ms)
}

/// Parses a point in time as `audit --since` and `--until` take it: an RFC 3339 time
/// (`2026-12-02T10:00:00Z`), a date (`2026-12-02`: its start, midnight UTC), or a
/// duration (`90m`, `1h`, `7d`, as [`parse_duration`]) counted back from `now_ms`.
///
/// # Errors
/// [`InputError::InvalidInstant`] naming the text and the three forms.
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, InputError> {
    if let Ok(ms) = parse_duration(text) {
        return Ok(now_ms.saturating_sub(ms));
    }
    if let Ok(date) = jiff::civil::Date::strptime("%Y-%m-%d", text)
        && let Ok(start) = date.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(start.timestamp().as_millisecond());
    }
    parse_time(text).map_err(|_| InputError::InvalidInstant(text.to_string()))
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
    fn instants_are_times_dates_or_durations_ago() {
        let now = parse_time("2026-12-02T10:00:00Z").unwrap();
        assert_eq!(parse_instant("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_instant("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_instant("2026-12-02", now), parse_time("2026-12-02T00:00:00Z"));
        assert_eq!(
            parse_instant("2026-12-02T09:30:00+01:00", now),
            parse_time("2026-12-02T08:30:00Z")
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-12-02T10:00", "1.5h", "0s"] {
            assert!(
                matches!(parse_instant(bad, now), Err(InputError::InvalidInstant(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_last_day_of_9999_is_a_time() {
        assert_eq!(parse_time("9999-12-31T23:59:59Z"), Ok(253_402_300_799_000));
        assert_eq!(parse_time("9999-12-31T23:59:59.5+01:00"), Ok(253_402_297_199_500));
        assert!(parse_time("9999-12-32T00:00:00Z").is_err());
        assert!(parse_time("9999-12-31T23:59:59").is_err(), "no offset");
        assert_eq!(parse_time("9999-12-30T00:00:00Z"), Ok(253_402_128_000_000));
    }

    #[test]
    fn times_round_trip() {
        let ms = parse_time("2026-11-22T13:45:00.123Z").unwrap();
        assert_eq!(fmt_time(ms), "2026-11-22T13:45:00.123Z");
        assert_eq!(fmt_table_time(ms), "2026-11-22 13:45:00");
        // One fixed precision: trailing zeros stay.
        assert_eq!(
            fmt_time(parse_time("2026-12-02T13:44:00Z").unwrap()),
            "2026-12-02T13:44:00.000Z"
        );
        assert_eq!(
            fmt_time(parse_time("2026-12-02T13:44:19.7Z").unwrap()),
            "2026-12-02T13:44:19.700Z"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn system_clock_follows_the_wall_clock() {
        let c = SystemClock;
        for _ in 0..1_000 {
            let before = wall_ns();
            let now = c.now_ns();
            let after = wall_ns();
            // Within a millisecond of the wall clock read around it (the offset is taken
            // again every second; the counter drifts by microseconds in that time).
            assert!(
                now >= before - 1_000_000 && now <= after + 1_000_000,
                "{before} {now} {after}"
            );
        }
        assert_eq!(c.now_ms(), c.now_ns().div_euclid(1_000_000));
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
