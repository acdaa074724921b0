//! The properties the `time_parsers` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/time_parsers.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`,
//! which runs every seed in `fuzz/corpus/time_parsers/` through them.
//!
//! An input is a selector byte and the rest (text, UTF-8 lossily, except for `f`):
//!
//! | byte | input | parser |
//! | --- | --- | --- |
//! | `d` | a duration (`90d`, `1500ms`) | `clock::parse_duration` |
//! | `t` | an RFC 3339 time | `clock::parse_time`, then `fmt_time` |
//! | `x` | an expiry (a duration or a time) | `parse_expiry`, `Expiry::resolve` |
//! | `l` | a rate limit (`N/DURATION[:name]`) | `RateLimit::parse` |
//! | `f` | 8 bytes, unix ms little-endian | `clock::fmt_time`, `fmt_table_time` |
//!
//! A duration is parsed exactly as a reference from its docs says (digits, a unit of
//! `ms s m h d w`, no zero, no overflow), and `{ms}ms` parses back to the same. A time the
//! reference can read (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) must parse to the instant
//! it names; any time that parses is formatted by `fmt_time` as text that parses back to
//! the same millisecond. An expiry is the duration if there is one, else the time, and
//! resolves as its docs say. A rate limit is the reference's, and its `Display` parses back
//! equal. A refusal is `InvalidTime` (`InvalidRateLimit`); for a parser marked
//! `Echo::Never` in [`text_parsers`] it does not repeat secret-shaped input.

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use credstore::clock::{fmt_table_time, fmt_time, parse_duration, parse_time};
use credstore::limits::{MAX_LIMIT_NAME_LEN, MAX_WINDOW_MS};
use credstore::record::LATEST_EXPIRY_MS;
use credstore::{Expiry, InputError, RateLimit, parse_expiry};

use super::secret_echo::{self, Echo, TextParser};

/// Which parser an input goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInput {
    Duration,
    Time,
    Expiry,
    RateLimit,
    Format,
}

impl TimeInput {
    const ALL: [TimeInput; 5] = [
        TimeInput::Duration,
        TimeInput::Time,
        TimeInput::Expiry,
        TimeInput::RateLimit,
        TimeInput::Format,
    ];

    /// The parser a selector byte picks.
    pub fn from_selector(byte: u8) -> TimeInput {
        match byte {
            b'd' => TimeInput::Duration,
            b't' => TimeInput::Time,
            b'x' => TimeInput::Expiry,
            b'l' => TimeInput::RateLimit,
            b'f' => TimeInput::Format,
            other => TimeInput::ALL[usize::from(other) % TimeInput::ALL.len()],
        }
    }
}

/// The time parsers of untrusted text and what their refusals do with it today.
pub fn text_parsers() -> Vec<TextParser> {
    fn message<T>(r: Result<T, InputError>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }
    vec![
        TextParser {
            name: "clock::parse_duration",
            echo: Echo::Never,
            refuse: |s| message(parse_duration(s)),
        },
        TextParser {
            name: "clock::parse_time",
            echo: Echo::Never,
            refuse: |s| message(parse_time(s)),
        },
        TextParser {
            name: "parse_expiry",
            echo: Echo::Never,
            refuse: |s| message(parse_expiry(s)),
        },
        TextParser {
            name: "RateLimit::parse",
            echo: Echo::Never,
            refuse: |s| message(RateLimit::parse(s)),
        },
    ]
}

fn parser(name: &str) -> TextParser {
    match text_parsers().into_iter().find(|p| p.name == name) {
        Some(p) => p,
        None => panic!("no parser {name} in the table"),
    }
}

/// The instant expiries are resolved against: 2026-01-01T00:00:00Z.
pub const NOW_MS: i64 = 1_767_225_600_000;

/// Every check on one input (see the module docs). Returns whether the parser accepted it
/// (for `f`, whether the instant is in the calendar's range).
pub fn check_time_input(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    let input = TimeInput::from_selector(selector);
    if input == TimeInput::Format {
        let mut ms = [0u8; 8];
        ms.iter_mut().zip(rest).for_each(|(slot, b)| *slot = *b);
        return check_format(i64::from_le_bytes(ms));
    }
    check_time_text(input, &String::from_utf8_lossy(rest))
}

/// [`check_time_input`] for a text parser.
pub fn check_time_text(input: TimeInput, text: &str) -> bool {
    match input {
        TimeInput::Duration => check_duration(text),
        TimeInput::Time => check_time(text).is_some(),
        TimeInput::Expiry => check_expiry(text),
        TimeInput::RateLimit => check_rate_limit(text),
        TimeInput::Format => check_format(text.parse().unwrap_or(0)),
    }
}

// ---------------------------------------------------------------------------------------
// Durations

/// A duration by `parse_duration`'s docs: ASCII digits then one of `ms s m h d w`, more
/// than zero milliseconds, no overflow.
fn reference_duration(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).filter(|&ms| ms > 0)
}

fn check_duration(text: &str) -> bool {
    let expected = reference_duration(text);
    match parse_duration(text) {
        Ok(ms) => {
            assert_eq!(Some(ms), expected, "{text:?} parsed as {ms} ms");
            assert_eq!(parse_duration(&format!("{ms}ms")), Ok(ms), "{ms}ms does not parse back");
            true
        }
        Err(e) => {
            assert_eq!(expected, None, "{text:?} refused ({e}), the reference reads it");
            assert!(matches!(e, InputError::InvalidTime(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("clock::parse_duration"), text);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// Times

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian), by Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The instant of an RFC 3339 time in its plainest form, `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction of 1 to 9 digits, and `Z` or `±HH:MM`, for years 0001 to 9998 (clear
/// of the calendar's edges) and seconds up to 59: unix ms, truncated toward zero as
/// `jiff`'s `as_millisecond` does. `None` for anything else (which may still parse).
fn reference_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = text.get(from..from + len)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, s) = (
        num(0, 4)?,
        num(5, 2)?,
        num(8, 2)?,
        num(11, 2)?,
        num(14, 2)?,
        num(17, 2)?,
    );
    if !(1..=9998).contains(&y) || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let frac = num(at + 1, digits)?;
        nanos = frac * 10i64.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset_s = match &b[at..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    let total_nanos = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    i64::try_from(total_nanos / 1_000_000).ok()
}

/// Checks `parse_time` on `text`; returns the millisecond it parsed to.
fn check_time(text: &str) -> Option<i64> {
    let expected = reference_time(text);
    match parse_time(text) {
        Ok(ms) => {
            if let Some(want) = expected {
                assert_eq!(ms, want, "{text:?} names another instant");
            }
            let formatted = fmt_time(ms);
            assert_eq!(
                parse_time(&formatted),
                Ok(ms),
                "{text:?}: {formatted} does not parse back"
            );
            assert_eq!(fmt_time(ms), formatted);
            Some(ms)
        }
        Err(e) => {
            assert_eq!(expected, None, "{text:?} refused ({e}), the reference reads it");
            assert!(matches!(e, InputError::InvalidTime(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("clock::parse_time"), text);
            None
        }
    }
}

/// `fmt_time` and `fmt_table_time` of any millisecond: in the calendar's range the two
/// agree and the RFC 3339 text parses back to the same millisecond; outside it both give
/// the number, which is no time.
fn check_format(ms: i64) -> bool {
    let rfc = fmt_time(ms);
    let table = fmt_table_time(ms);
    if rfc == ms.to_string() {
        assert_eq!(table, rfc, "out of range, yet a table time");
        assert!(parse_time(&rfc).is_err(), "{rfc} is no time, yet it parses");
        return false;
    }
    assert_eq!(parse_time(&rfc), Ok(ms), "{rfc} does not parse back to {ms}");
    assert!(rfc.ends_with('Z'), "{rfc} is not in UTC");
    // `YYYY-MM-DDTHH:MM:SS...Z` and `YYYY-MM-DD HH:MM:SS`, for the years of four digits.
    if rfc.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        assert_eq!(rfc.get(10..11), Some("T"), "{rfc}");
        assert_eq!(
            Some(table.as_str()),
            rfc.get(..19).map(|t| t.replacen('T', " ", 1)).as_deref()
        );
    }
    true
}

// ---------------------------------------------------------------------------------------
// Expiries and rate limits

fn check_expiry(text: &str) -> bool {
    let duration = reference_duration(text);
    let expiry = match parse_expiry(text) {
        Ok(expiry) => expiry,
        Err(e) => {
            assert_eq!(duration, None, "{text:?} is a duration, yet refused: {e}");
            assert!(parse_time(text).is_err(), "{text:?} is a time, yet refused: {e}");
            assert!(
                matches!(e, InputError::InvalidTime(_) | InputError::ExpiryTooLate),
                "{text:?}: {e:?}"
            );
            secret_echo::refuses(&parser("parse_expiry"), text);
            return false;
        }
    };
    match (duration, expiry) {
        (Some(ms), Expiry::In(got)) => {
            assert_eq!(got, ms);
            // One bound for a lifetime and a time alike: no later than LATEST_EXPIRY.
            match NOW_MS.checked_add(ms).filter(|&at| at <= LATEST_EXPIRY_MS) {
                Some(at) => assert_eq!(expiry.resolve(NOW_MS), Ok(at)),
                None => assert_eq!(expiry.resolve(NOW_MS), Err(InputError::ExpiryTooLate)),
            }
        }
        (None, Expiry::At(at)) if at > LATEST_EXPIRY_MS => {
            assert_eq!(expiry.resolve(NOW_MS), Err(InputError::ExpiryTooLate), "{text:?}");
        }
        (None, Expiry::At(at)) => {
            assert_eq!(parse_time(text), Ok(at), "{text:?}: the expiry is not the time");
            match expiry.resolve(NOW_MS) {
                Ok(resolved) => {
                    assert_eq!(resolved, at);
                    assert!(at > NOW_MS, "{text:?}: an expiry in the past resolved");
                }
                Err(e) => {
                    assert!(at <= NOW_MS, "{text:?}: a future expiry refused: {e}");
                    assert!(matches!(e, InputError::ExpiryInPast(_)), "{e:?}");
                }
            }
        }
        (duration, expiry) => panic!("{text:?}: the duration is {duration:?}, the expiry {expiry:?}"),
    }
    true
}

/// A rate limit by `RateLimit::parse`'s docs: `N/DURATION[:name]`, `N` a count of at least
/// 1 (spaces around it and the duration ignored), the window at most 366 days, the name
/// (by default the duration's text) 1 to 32 of `[A-Za-z0-9_./-]`.
fn reference_rate_limit(text: &str) -> Option<(u32, u64, &str)> {
    let (spec, name) = match text.split_once(':') {
        Some((spec, name)) => (spec, Some(name)),
        None => (text, None),
    };
    let (n, window) = spec.split_once('/')?;
    let limit: u32 = n.trim().parse().ok().filter(|&n| n > 0)?;
    let window_ms = u64::try_from(reference_duration(window.trim())?).ok()?;
    let name = name.unwrap_or(window.trim());
    let name_ok = !name.is_empty()
        && name.len() <= MAX_LIMIT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    (window_ms <= MAX_WINDOW_MS && name_ok).then_some((limit, window_ms, name))
}

fn check_rate_limit(text: &str) -> bool {
    let expected = reference_rate_limit(text);
    match RateLimit::parse(text) {
        Ok(limit) => {
            let Some((n, window_ms, name)) = expected else {
                panic!("{text:?} accepted as {limit:?}, the reference refuses it");
            };
            assert_eq!(
                (limit.limit, limit.window_ms, limit.name.as_str()),
                (n, window_ms, name)
            );
            let shown = limit.to_string();
            assert_eq!(
                RateLimit::parse(&shown).as_ref(),
                Ok(&limit),
                "{shown} does not parse back"
            );
            assert_eq!(RateLimit::new(name, n, window_ms).as_ref(), Ok(&limit));
            true
        }
        Err(e) => {
            assert_eq!(expected, None, "{text:?} refused ({e}), the reference reads it");
            assert!(matches!(e, InputError::InvalidRateLimit(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("RateLimit::parse"), text);
            false
        }
    }
}
