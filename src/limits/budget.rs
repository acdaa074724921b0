//! Spend budgets: a cap per period, counted in one atomic word.
//!
//! The word packs the period id (high 20 bits) and the spend in it (low 44 bits), so a
//! charge is one compare-and-swap and a new period starts lazily, on the first charge
//! after it begins: the old spend simply belongs to another period id. Concurrent charges
//! can never push spend past the cap: each CAS re-checks `spend + cost <= cap`.
//!
//! A second word holds the high-water mark persisted through the log (same packing).
//! Spend never passes the mark: before it would, the caller raises the mark through the
//! log (see `Store::verify`), so after a crash spend restarts at the mark.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// Bits of the packed word that hold the spend.
const SPEND_BITS: u32 = 44;
/// The largest cap (and spend) a budget can count: 2^44 − 1.
pub const MAX_BUDGET: u64 = (1 << SPEND_BITS) - 1;
/// Period ids must fit in the 20 remaining bits.
const MAX_PERIOD: u32 = (1 << (64 - SPEND_BITS)) - 1;
/// The high-water mark runs ahead of spend by `max(1, cap / CHUNK_DIVISOR)`.
pub const CHUNK_DIVISOR: u64 = 64;

/// How a budget's periods run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Period {
    /// A calendar month in UTC starting on `anchor_day` (1–31, clamped to the month's end).
    Monthly {
        /// The day of the month a period starts.
        anchor_day: u8,
    },
    /// A UTC day.
    Daily,
    /// One period for the key's whole life.
    Total,
}

impl Period {
    /// `monthly`, `daily` or `total`.
    pub fn name(self) -> &'static str {
        match self {
            Period::Monthly { .. } => "monthly",
            Period::Daily => "daily",
            Period::Total => "total",
        }
    }

    /// The period holding `now_ms`: its id and its end (unix ms; `None` for `Total`).
    pub fn at(self, now_ms: i64) -> (u32, Option<i64>) {
        let Ok(ts) = jiff::Timestamp::from_millisecond(now_ms) else {
            return (0, None);
        };
        let today = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
        match self {
            Period::Total => (0, None),
            Period::Daily => {
                let days = now_ms.div_euclid(86_400_000);
                let end = (days + 1) * 86_400_000;
                (clamp_id(days), Some(end))
            }
            Period::Monthly { anchor_day } => {
                let this_anchor = anchor_in(today.year(), today.month(), anchor_day);
                let start = if today >= this_anchor {
                    this_anchor
                } else {
                    let (y, m) = prev_month(today.year(), today.month());
                    anchor_in(y, m, anchor_day)
                };
                let (ny, nm) = next_month(start.year(), start.month());
                let end = anchor_in(ny, nm, anchor_day);
                let id = i64::from(start.year()) * 12 + i64::from(start.month()) - 1;
                (clamp_id(id), Some(millis_of(end)))
            }
        }
    }
}

fn clamp_id(id: i64) -> u32 {
    u32::try_from(id.clamp(0, i64::from(MAX_PERIOD))).unwrap_or(MAX_PERIOD)
}

/// The anchor day in a month, clamped to the month's last day.
fn anchor_in(year: i16, month: i8, anchor_day: u8) -> Date {
    let first = Date::new(year, month, 1).unwrap_or_default();
    let day = i8::try_from(anchor_day).unwrap_or(1).clamp(1, first.days_in_month());
    Date::new(year, month, day).unwrap_or(first)
}

fn prev_month(year: i16, month: i8) -> (i16, i8) {
    if month == 1 { (year - 1, 12) } else { (year, month - 1) }
}

fn next_month(year: i16, month: i8) -> (i16, i8) {
    if month == 12 { (year + 1, 1) } else { (year, month + 1) }
}

fn millis_of(date: Date) -> i64 {
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map_or(0, |z| z.timestamp().as_millisecond())
}

/// A budget: a cap per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Budget {
    /// The most that may be spent in one period.
    pub cap: u64,
    /// How periods run.
    pub period: Period,
}

impl Budget {
    /// How far the persisted mark runs ahead of spend.
    pub fn chunk(&self) -> u64 {
        (self.cap / CHUNK_DIVISOR).max(1)
    }
}

/// Packs a period id and an amount into one word.
pub fn pack(period: u32, amount: u64) -> u64 {
    (u64::from(period) << SPEND_BITS) | (amount & MAX_BUDGET)
}

/// Unpacks a word into (period id, amount).
pub fn unpack(word: u64) -> (u32, u64) {
    (
        u32::try_from(word >> SPEND_BITS).unwrap_or(MAX_PERIOD),
        word & MAX_BUDGET,
    )
}

/// `word` (a packed spend or mark), or 0 when its period lies after `current`, the period
/// the budget is in now. A counter never moves back to an older period, so such a word is
/// not this budget's: it was written under another kind of period (monthly ids are larger
/// than daily ones), and following it would charge, or look for marks, in the wrong period.
pub fn unless_later(word: u64, current: u32) -> u64 {
    if unpack(word).0 > current { 0 } else { word }
}

/// The outcome of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged; spend is now this.
    Charged(u64),
    /// `spend + cost > cap`: nothing charged; spend is this.
    Exhausted(u64),
    /// The charge would pass the persisted mark: raise it to this packed (period, mark)
    /// word first, then retry.
    NeedsMark(u64),
}

/// The live counter of one key's budget.
#[derive(Debug, Default)]
pub struct BudgetCounter {
    spend: AtomicU64,
    mark: AtomicU64,
}

impl BudgetCounter {
    /// A counter at (period, spend) with the mark (period, mark).
    pub fn new(spend: u64, mark: u64) -> Self {
        BudgetCounter {
            spend: AtomicU64::new(spend),
            mark: AtomicU64::new(mark),
        }
    }

    /// Spend in `period` now (in the counter's period, if that is newer).
    pub fn spent(&self, period: u32) -> u64 {
        let (p, s) = unpack(self.spend.load(Ordering::Acquire));
        if p >= period { s } else { 0 }
    }

    /// The packed spend word, for persisting.
    pub fn spend_word(&self) -> u64 {
        self.spend.load(Ordering::Acquire)
    }

    /// Raises the mark (never lowers it).
    pub fn raise_mark(&self, word: u64) {
        self.mark.fetch_max(word, Ordering::AcqRel);
    }

    /// Charges `cost` in `period` against `budget`, unless that would pass the cap, or the
    /// persisted mark (then the caller raises the mark through the log and retries).
    ///
    /// A counter never moves back to an older period: a request that read the time just
    /// before a period ended, and reaches the counter after another request started the
    /// next period, is charged in the newer one. (Moving back would start the older
    /// period's spend from zero and then the newer one's again: a budget spent twice.)
    pub fn charge(&self, budget: &Budget, period: u32, cost: u64) -> Charge {
        if cost == 0 {
            // Cost 0 only checks: spend + 0 <= cap unless spend is already past the cap
            // (a cap lowered below spend).
            let spent = self.spent(period);
            return if spent <= budget.cap {
                Charge::Charged(spent)
            } else {
                Charge::Exhausted(spent)
            };
        }
        let mut current = self.spend.load(Ordering::Acquire);
        loop {
            let (p, s) = unpack(current);
            let period = period.max(p);
            let spent = if p == period { s } else { 0 };
            let Some(new) = spent.checked_add(cost).filter(|n| *n <= budget.cap) else {
                return Charge::Exhausted(spent);
            };
            let (mp, m) = unpack(self.mark.load(Ordering::Acquire));
            let mark = if mp == period { m } else { 0 };
            if new > mark {
                return Charge::NeedsMark(pack(period, spent.saturating_add(budget.chunk().max(cost))));
            }
            match self
                .spend
                .compare_exchange_weak(current, pack(period, new), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Charge::Charged(new),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        crate::clock::parse_time(text).unwrap()
    }

    #[test]
    fn monthly_periods_clamp_the_anchor_to_the_month_end() {
        let p = Period::Monthly { anchor_day: 31 };
        // 2028 is a leap year: the period that began on Jan 31 ends on Feb 29, and the
        // one that begins on Feb 29 runs to Mar 31.
        let (feb, end) = p.at(ms("2028-02-29T12:00:00Z"));
        assert_eq!(end, Some(ms("2028-03-31T00:00:00Z")));
        let (jan, jan_end) = p.at(ms("2028-02-28T23:59:59Z"));
        assert_eq!(jan_end, Some(ms("2028-02-29T00:00:00Z")));
        assert_ne!(jan, feb);
        let (_, feb_end) = p.at(ms("2028-02-29T00:00:00Z"));
        assert_eq!(feb_end, Some(ms("2028-03-31T00:00:00Z")));
        let first = Period::Monthly { anchor_day: 1 };
        let (dec, dec_end) = first.at(ms("2026-12-31T23:59:59Z"));
        let (jan1, _) = first.at(ms("2027-01-01T00:00:00Z"));
        assert_eq!(dec_end, Some(ms("2027-01-01T00:00:00Z")));
        assert_eq!(jan1, dec + 1);
    }

    #[test]
    fn daily_and_total() {
        let (d1, end) = Period::Daily.at(ms("2026-11-22T23:59:59.999Z"));
        let (d2, _) = Period::Daily.at(ms("2026-11-23T00:00:00Z"));
        assert_eq!(d2, d1 + 1);
        assert_eq!(end, Some(ms("2026-11-23T00:00:00Z")));
        assert_eq!(Period::Total.at(ms("2026-11-22T00:00:00Z")), (0, None));
    }

    #[test]
    fn words_of_a_later_period_are_not_this_budgets() {
        assert_eq!(
            unless_later(pack(7, 40), 8),
            pack(7, 40),
            "an older period: kept, reads as 0 spend"
        );
        assert_eq!(unless_later(pack(8, 40), 8), pack(8, 40));
        // A monthly id (24,324) seen by a daily budget (day 20,414): dropped.
        assert_eq!(unless_later(pack(24_324, 40), 20_414), 0);
    }

    #[test]
    fn a_late_request_for_the_older_period_is_charged_in_the_newer_one() {
        let b = Budget {
            cap: 10,
            period: Period::Daily,
        };
        let c = BudgetCounter::new(pack(7, 9), pack(7, 10));
        c.raise_mark(pack(8, 10));
        // Day 8 has begun: its first request starts from zero.
        assert_eq!(c.charge(&b, 8, 4), Charge::Charged(4));
        // A request that read the time on day 7 arrives after it: charged in day 8, not
        // against day 7's spend (9) and not by resetting the counter to day 7.
        assert_eq!(c.charge(&b, 7, 1), Charge::Charged(5));
        assert_eq!(c.spent(7), 5);
        assert_eq!(unpack(c.spend_word()), (8, 5));
        assert_eq!(c.charge(&b, 7, 6), Charge::Exhausted(5));
        // The mark it asks for is day 8's.
        let c = BudgetCounter::new(pack(8, 4), pack(8, 4));
        assert_eq!(c.charge(&b, 7, 1), Charge::NeedsMark(pack(8, 5)));
    }

    #[test]
    fn charges_never_pass_the_cap_or_the_mark() {
        let b = Budget {
            cap: 10,
            period: Period::Total,
        };
        let c = BudgetCounter::default();
        assert_eq!(c.charge(&b, 0, 3), Charge::NeedsMark(pack(0, 3)));
        c.raise_mark(pack(0, 5));
        assert_eq!(c.charge(&b, 0, 3), Charge::Charged(3));
        assert_eq!(c.charge(&b, 0, 3), Charge::NeedsMark(pack(0, 6)));
        c.raise_mark(pack(0, 10));
        assert_eq!(c.charge(&b, 0, 3), Charge::Charged(6));
        assert_eq!(c.charge(&b, 0, 5), Charge::Exhausted(6));
        assert_eq!(c.charge(&b, 0, 4), Charge::Charged(10));
        assert_eq!(c.charge(&b, 0, 0), Charge::Charged(10), "cost 0 only checks");
        // A new period starts from zero, lazily.
        c.raise_mark(pack(1, 10));
        assert_eq!(c.charge(&b, 1, 2), Charge::Charged(2));
        assert_eq!(c.spent(1), 2);
        assert_eq!(unpack(pack(5, 7)), (5, 7));
    }
}
