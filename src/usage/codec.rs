//! The `usage` tree's entries, byte by byte (docs/FORMAT.md, "The usage tree"). Public
//! only for the fuzzer (`fuzz/usage_checks.rs`): not part of the API.
//!
//! One entry holds one subject's buckets of one tier over one *period*: a key's minutes of
//! one hour, its hours of one day, its days of one month, its months of one year. Only
//! buckets with a count are written, so an idle key costs nothing and a key used in a
//! few hours of a day costs a few bytes per hour.
//!
//! Entry key: `tier` (1 byte: `m`, `h`, `d`, `M`), `kind` (1 byte: `k` key, `o` owner,
//! `p` project, `a` all), the id's length (1 byte) and the id, then the period's start
//! (unix ms, 8 bytes big-endian with the sign bit flipped, so entries sort by time).
//!
//! Entry value: a format byte ([`VALUE_FORMAT`]), then each bucket with a count in
//! ascending slot order: the slot (1 byte: minute of the hour, hour of the day, day of
//! the month less one, month less one), `valid` and `spent` as LEB128 varints, the number
//! of denial codes (1 byte), and each code (1 byte, [`Code::byte`]) with its count (varint).

use crate::decision::Code;

use super::{DAY_MS, Granularity, HOUR_MS, MINUTE_MS, UsageCounts, UsageSubject, civil_from_days, days_from_civil};

/// The first byte of every value.
pub(crate) const VALUE_FORMAT: u8 = 1;

/// Why a stored value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value ends inside a bucket.
    #[error("usage value truncated")]
    Truncated,
    /// The format byte is not [`VALUE_FORMAT`].
    #[error("unknown usage value format {0}")]
    UnknownFormat(u8),
    /// A slot out of its tier's range, or slots not ascending.
    #[error("usage value has a bad slot {0}")]
    BadSlot(u8),
    /// A code byte that names no code.
    #[error("usage value has an unknown code byte {0}")]
    BadCode(u8),
    /// A varint longer than 10 bytes.
    #[error("usage value has an overlong number")]
    Overlong,
}

/// The tier's byte in an entry key.
fn tier_byte(tier: Granularity) -> u8 {
    match tier {
        Granularity::Minute => b'm',
        Granularity::Hour => b'h',
        Granularity::Day => b'd',
        Granularity::Month => b'M',
    }
}

/// The subject's bytes in an entry key: kind, length, id.
fn subject_bytes(out: &mut Vec<u8>, subject: &UsageSubject) {
    let kind = match subject {
        UsageSubject::Key(_) => b'k',
        UsageSubject::Owner(_) => b'o',
        UsageSubject::Project(_) => b'p',
        UsageSubject::All => b'a',
    };
    let id = subject.id().as_bytes();
    // Ids are at most 64 bytes (keys, owners and projects are checked so).
    let id = id.get(..255).unwrap_or(id);
    out.push(kind);
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id);
}

/// The start of the period holding `ms` in `tier` (the hour for minutes, the day for
/// hours, the month for days, the year for months), and the bucket's slot in it.
pub(crate) fn period_and_slot(tier: Granularity, ms: i64) -> (i64, u8) {
    let slot = |n: i64| u8::try_from(n).unwrap_or(0);
    match tier {
        Granularity::Minute => {
            let start = ms - ms.rem_euclid(HOUR_MS);
            (start, slot((ms - start) / MINUTE_MS))
        }
        Granularity::Hour => {
            let start = ms - ms.rem_euclid(DAY_MS);
            (start, slot((ms - start) / HOUR_MS))
        }
        Granularity::Day => {
            let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
            (days_from_civil(y, m, 1) * DAY_MS, d - 1)
        }
        Granularity::Month => {
            let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
            (days_from_civil(y, 1, 1) * DAY_MS, m - 1)
        }
    }
}

/// The start of bucket `slot` of the period starting at `period` in `tier`.
pub(crate) fn slot_start(tier: Granularity, period: i64, slot: u8) -> i64 {
    let n = i64::from(slot);
    match tier {
        Granularity::Minute => period + n * MINUTE_MS,
        Granularity::Hour => period + n * HOUR_MS,
        Granularity::Day => period + n * DAY_MS,
        Granularity::Month => {
            let (y, _, _) = civil_from_days(period.div_euclid(DAY_MS));
            days_from_civil(y, slot + 1, 1) * DAY_MS
        }
    }
}

/// The end of the period starting at `period` in `tier`.
pub(crate) fn period_end(tier: Granularity, period: i64) -> i64 {
    match tier {
        Granularity::Minute => period + HOUR_MS,
        Granularity::Hour => period + DAY_MS,
        Granularity::Day => Granularity::Month.next(period),
        Granularity::Month => {
            let (y, _, _) = civil_from_days(period.div_euclid(DAY_MS));
            days_from_civil(y + 1, 1, 1) * DAY_MS
        }
    }
}

/// How many slots a period of `tier` has at most.
fn slots(tier: Granularity) -> u8 {
    match tier {
        Granularity::Minute => 60,
        Granularity::Hour => 24,
        Granularity::Day => 31,
        Granularity::Month => 12,
    }
}

/// The entry key of `subject`'s period starting at `period` in `tier`.
pub(crate) fn entry_key(tier: Granularity, subject: &UsageSubject, period: i64) -> Vec<u8> {
    let mut out = subject_prefix(tier, subject);
    out.extend_from_slice(&time_bytes(period));
    out
}

/// The part of an entry key before the period: every entry of `subject` in `tier` starts so.
pub(crate) fn subject_prefix(tier: Granularity, subject: &UsageSubject) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + subject.id().len() + 8);
    out.push(tier_byte(tier));
    subject_bytes(&mut out, subject);
    out
}

fn time_bytes(ms: i64) -> [u8; 8] {
    (ms.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

/// The tier and period of an entry key (`None` for a key not shaped as one).
pub(crate) fn parse_entry_key(key: &[u8]) -> Option<(Granularity, i64)> {
    let tier = match key.first()? {
        b'm' => Granularity::Minute,
        b'h' => Granularity::Hour,
        b'd' => Granularity::Day,
        b'M' => Granularity::Month,
        _ => return None,
    };
    let len = usize::from(*key.get(2)?);
    let time: [u8; 8] = key.get(3 + len..)?.try_into().ok()?;
    Some((tier, (u64::from_be_bytes(time) ^ (1 << 63)).cast_signed()))
}

/// The buckets of one entry: (slot, counts), slots ascending.
pub type Buckets = Vec<(u8, UsageCounts)>;

/// Adds `counts` into the bucket at `slot` of `buckets`.
pub(crate) fn add_into(buckets: &mut Buckets, slot: u8, counts: &UsageCounts) {
    match buckets.binary_search_by_key(&slot, |(s, _)| *s) {
        Ok(i) => {
            if let Some((_, c)) = buckets.get_mut(i) {
                c.add(counts);
            }
        }
        Err(i) => buckets.insert(i, (slot, counts.clone())),
    }
}

/// Encodes an entry's value.
pub fn encode(buckets: &Buckets) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + buckets.len() * 6);
    out.push(VALUE_FORMAT);
    for (slot, c) in buckets {
        out.push(*slot);
        varint(&mut out, c.valid);
        varint(&mut out, c.spent);
        let denied: Vec<_> = c.denied.iter().filter(|(_, n)| **n > 0).collect();
        out.push(u8::try_from(denied.len()).unwrap_or(0));
        for (code, n) in denied {
            out.push(code.byte());
            varint(&mut out, *n);
        }
    }
    out
}

/// Decodes an entry's value of `tier`.
///
/// # Errors
/// [`CodecError`] for a value not written by [`encode`].
pub fn decode(tier: Granularity, value: &[u8]) -> Result<Vec<(u8, UsageCounts)>, CodecError> {
    let (&format, mut rest) = value.split_first().ok_or(CodecError::Truncated)?;
    if format != VALUE_FORMAT {
        return Err(CodecError::UnknownFormat(format));
    }
    let mut out: Buckets = Vec::new();
    while let Some((&slot, after)) = rest.split_first() {
        rest = after;
        if slot >= slots(tier) || out.last().is_some_and(|(s, _)| *s >= slot) {
            return Err(CodecError::BadSlot(slot));
        }
        let mut counts = UsageCounts {
            valid: read_varint(&mut rest)?,
            spent: read_varint(&mut rest)?,
            ..UsageCounts::default()
        };
        let (&n, after) = rest.split_first().ok_or(CodecError::Truncated)?;
        rest = after;
        for _ in 0..n {
            let (&byte, after) = rest.split_first().ok_or(CodecError::Truncated)?;
            rest = after;
            let code = Code::from_byte(byte)
                .filter(|c| *c != Code::Valid)
                .ok_or(CodecError::BadCode(byte))?;
            let count = read_varint(&mut rest)?;
            counts.count(code, count, 0);
        }
        out.push((slot, counts));
    }
    Ok(out)
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(u8::try_from(n & 0x7f).unwrap_or(0) | 0x80);
        n >>= 7;
    }
    out.push(u8::try_from(n).unwrap_or(0));
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, CodecError> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(CodecError::Truncated)?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(CodecError::Overlong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let mut buckets = Buckets::new();
        let mut c = UsageCounts::default();
        c.count(Code::Valid, 300, 12_345);
        c.count(Code::RateLimited, 7, 0);
        c.count(Code::Revoked, 1, 0);
        add_into(&mut buckets, 23, &c);
        add_into(&mut buckets, 0, &c);
        add_into(&mut buckets, 23, &c);
        let bytes = encode(&buckets);
        let back = decode(Granularity::Hour, &bytes).unwrap();
        assert_eq!(back, buckets);
        assert_eq!(back[1].1.valid, 600);
        assert_eq!(decode(Granularity::Month, &bytes), Err(CodecError::BadSlot(23)));
        for cut in 1..bytes.len() - 1 {
            // A value cut short is refused or reads as fewer buckets, never a panic.
            let _ = decode(Granularity::Hour, &bytes[..cut]);
        }
        assert_eq!(decode(Granularity::Hour, &[2]), Err(CodecError::UnknownFormat(2)));
    }

    #[test]
    fn periods_and_slots_place_every_bucket() {
        let t = crate::clock::parse_time("2025-12-31T23:59:30Z").unwrap();
        for tier in Granularity::ALL {
            let (period, slot) = period_and_slot(tier, t);
            assert_eq!(slot_start(tier, period, slot), tier.start_of(t), "{tier}");
            assert!(period_end(tier, period) > t);
            let key = entry_key(tier, &UsageSubject::Owner("acme".into()), period);
            assert_eq!(parse_entry_key(&key), Some((tier, period)));
        }
        assert!(time_bytes(-1) < time_bytes(0));
        assert!(time_bytes(0) < time_bytes(1));
    }
}
