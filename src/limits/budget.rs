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
//!
//! How far a raise takes the mark past spend (the chunk) is what a crash can over-count,
//! and a raise is a durable log write. So the chunk follows the key's pace: each raise
//! measures the spend and time since the one before, and the next chunk is about one second
//! of that spend ([`CHUNK_SPAN_NS`]), clamped between `cap/1000` and `cap/64`
//! ([`Budget::chunk`]). A hot key raises its mark about once a second, a slow one every
//! `cap/1000` of spend, and a crash over-counts at most the larger of the two (or the
//! request's cost). Only a raise touches the pace; a charge that fits under the mark is
//! still one load and one compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// Bits of the packed word that hold the spend.
const SPEND_BITS: u32 = 44;
/// The largest cap (and spend) a budget can count: 2^44 − 1.
pub const MAX_BUDGET: u64 = (1 << SPEND_BITS) - 1;
/// Period ids must fit in the 20 remaining bits.
const MAX_PERIOD: u32 = (1 << (64 - SPEND_BITS)) - 1;
/// The high-water mark runs ahead of spend by at most `max(1, cap / MAX_CHUNK_DIVISOR)`
/// (a key that would spend its whole cap in 64 seconds)...
pub const MAX_CHUNK_DIVISOR: u64 = 64;
/// ...and at least `max(1, cap / MIN_CHUNK_DIVISOR)`: at most about 1000 raises per period.
pub const MIN_CHUNK_DIVISOR: u64 = 1000;
/// Between the two, a chunk is this much time of the key's spend at its last measured pace:
/// about one raise per span, and at most a span of spend over-counted by a crash.
pub const CHUNK_SPAN_NS: i64 = 1_000_000_000;

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

    /// The anchor day of a monthly period; `None` for the others.
    pub fn anchor_day(self) -> Option<u8> {
        match self {
            Period::Monthly { anchor_day } => Some(anchor_day),
            Period::Daily | Period::Total => None,
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
    /// The least a mark raise runs ahead of spend: `max(1, cap/1000)`.
    pub fn min_chunk(&self) -> u64 {
        (self.cap / MIN_CHUNK_DIVISOR).max(1)
    }

    /// The most a mark raise runs ahead of spend (a request's cost aside): `max(1, cap/64)`.
    pub fn max_chunk(&self) -> u64 {
        (self.cap / MAX_CHUNK_DIVISOR).max(1)
    }

    /// How far a mark raise runs ahead of spend for a key that spends `per_span` in
    /// [`CHUNK_SPAN_NS`]: `per_span` clamped to [`Budget::min_chunk`]..=[`Budget::max_chunk`].
    pub fn chunk(&self, per_span: u64) -> u64 {
        // Not `clamp`, which panics when its bounds cross (they never do: 1000 > 64).
        per_span.max(self.min_chunk()).min(self.max_chunk())
    }
}

/// `spent` over `elapsed_ns` as spend per [`CHUNK_SPAN_NS`], rounded up, so that a chunk
/// of it lasts at least a span at that pace. Spend in no time (or in time the clock stepped
/// back over) is as fast as it gets: `u64::MAX`.
pub fn per_span(spent: u64, elapsed_ns: i64) -> u64 {
    if spent == 0 {
        return 0;
    }
    let Ok(elapsed) = u128::try_from(elapsed_ns) else {
        return u64::MAX;
    };
    if elapsed == 0 {
        return u64::MAX;
    }
    let span = u128::from(CHUNK_SPAN_NS.unsigned_abs());
    u64::try_from((u128::from(spent) * span).div_ceil(elapsed)).unwrap_or(u64::MAX)
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
    /// The key's spend per [`CHUNK_SPAN_NS`] as last measured (0: not yet measured), which
    /// sizes the next raise. Read only when a charge needs a raise.
    per_span: AtomicU64,
    /// When the mark was last raised (ns) and the packed spend then; `None` before the
    /// first raise. Only the thread whose raise moved the mark takes it.
    last_raise: Mutex<Option<(i64, u64)>>,
    /// On a fleet host: what the fleet counted as used at this counter's last lease (packed
    /// like spend), for showing spend fleet-wide; 0 elsewhere.
    fleet_used: AtomicU64,
}

impl BudgetCounter {
    /// A counter at (period, spend) with the mark (period, mark).
    pub fn new(spend: u64, mark: u64) -> Self {
        BudgetCounter {
            spend: AtomicU64::new(spend),
            mark: AtomicU64::new(mark),
            ..BudgetCounter::default()
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

    /// Raises the mark (never lowers it) once `word` is durable, at `now_ns`. The raise
    /// that moves the mark also measures the key's pace since the previous one, which sizes
    /// the next raise.
    pub fn raise_mark(&self, word: u64, now_ns: i64) {
        if self.mark.fetch_max(word, Ordering::AcqRel) >= word {
            // Another thread's raise got here first (a charge that needed the same mark, or a
            // higher one): it measures.
            return;
        }
        let mut last = match self.last_raise.try_lock() {
            Ok(last) => last,
            // Nothing in the section panics; were it to, the pair is still a usable estimate.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Two raises at once: the other measures, and the next raise spans both.
            Err(TryLockError::WouldBlock) => return,
        };
        let (period, (p1, s1)) = (unpack(word).0, unpack(self.spend.load(Ordering::Acquire)));
        if let Some((at, before)) = *last {
            let (p0, s0) = unpack(before);
            // Across a new period, what was spent is unknown: keep the last pace.
            if p0 == p1 && p1 == period {
                self.per_span.store(
                    per_span(s1.saturating_sub(s0), now_ns.saturating_sub(at)),
                    Ordering::Relaxed,
                );
            }
        }
        // The first raise of a new period comes before its first charge: the period's spend
        // starts from zero now.
        let spend = if period > p1 { pack(period, 0) } else { pack(p1, s1) };
        *last = Some((now_ns, spend));
    }

    /// The amount in `period` that a fleet lease builds on: the mark, or the spend when a
    /// counter restored from disk is past it (whatever the host held then is not its to
    /// spend again). A lease of `g` units moves the mark to this plus `g`.
    pub fn lease_base(&self, period: u32) -> u64 {
        let in_period = |word: u64| match unpack(word) {
            (p, amount) if p == period => amount,
            _ => 0,
        };
        in_period(self.mark.load(Ordering::Acquire)).max(in_period(self.spend.load(Ordering::Acquire)))
    }

    /// Records what the fleet counted as used at a lease (a packed period and amount).
    pub fn note_fleet_used(&self, word: u64) {
        self.fleet_used.store(word, Ordering::Release);
    }

    /// The budget's spend fleet-wide in `period` as this host knows it, `spent` being this
    /// counter's own spend in it (the caller has it already: verify, from its charge): what
    /// the fleet counted as used at the last lease, less what this host has not spent of its
    /// lease. `None` before a lease in this period. Two loads, on the verify path of a
    /// fleet host.
    #[inline]
    pub fn fleet_spent(&self, period: u32, spent: u64) -> Option<u64> {
        let (p, used) = unpack(self.fleet_used.load(Ordering::Acquire));
        if p != period || used == 0 {
            return None;
        }
        let mark = match unpack(self.mark.load(Ordering::Acquire)) {
            (mp, m) if mp == period => m,
            _ => 0,
        };
        Some(used.saturating_sub(mark.saturating_sub(spent)))
    }

    /// Gives up what is left under the mark: moves spend up to the mark, in one
    /// compare-and-swap, so no charge can use it afterwards, and returns how much that was.
    /// A fleet host does this before it returns a lease's unspent part, and when a lease
    /// may have expired (spend never passes the mark, so after this nothing of the lease
    /// is spent here any more).
    pub fn forfeit(&self) -> u64 {
        let mut current = self.spend.load(Ordering::Acquire);
        loop {
            let (p, s) = unpack(current);
            let (mp, m) = unpack(self.mark.load(Ordering::Acquire));
            // A mark of another period leaves nothing of this one to spend; in the mark's
            // own period, spend that has not started counts as zero.
            let spent = match p.cmp(&mp) {
                std::cmp::Ordering::Equal => s,
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Greater => return 0,
            };
            if m <= spent {
                return 0;
            }
            match self
                .spend
                .compare_exchange_weak(current, pack(mp, m), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return m - spent,
                Err(seen) => current = seen,
            }
        }
    }

    /// Charges `cost` in `period` against `budget`, unless that would pass the cap, or the
    /// persisted mark (then the caller raises the mark through the log and retries).
    ///
    /// A counter never moves back to an older period: a request that read the time just
    /// before a period ended, and reaches the counter after another request started the
    /// next period, is charged in the newer one. (Moving back would start the older
    /// period's spend from zero and then the newer one's again: a budget spent twice.)
    pub fn charge(&self, budget: &Budget, period: u32, cost: u64) -> Charge {
        self.charge_in(budget, period, cost).0
    }

    /// [`BudgetCounter::charge`], also saying which period the charge was made in (a
    /// later one than `period` when the counter has moved on), for
    /// [`BudgetCounter::refund`].
    pub fn charge_in(&self, budget: &Budget, period: u32, cost: u64) -> (Charge, u32) {
        if cost == 0 {
            // Cost 0 only checks: spend + 0 <= cap unless spend is already past the cap
            // (a cap lowered below spend).
            let spent = self.spent(period);
            let outcome = if spent <= budget.cap {
                Charge::Charged(spent)
            } else {
                Charge::Exhausted(spent)
            };
            return (outcome, period);
        }
        let mut current = self.spend.load(Ordering::Acquire);
        loop {
            let (p, s) = unpack(current);
            let period = period.max(p);
            let spent = if p == period { s } else { 0 };
            let Some(new) = spent.checked_add(cost).filter(|n| *n <= budget.cap) else {
                return (Charge::Exhausted(spent), period);
            };
            let (mp, m) = unpack(self.mark.load(Ordering::Acquire));
            let mark = if mp == period { m } else { 0 };
            if new > mark {
                // The pace moves only when a raise is made, so the threads that need a raise
                // at this spend ask for the same word, and the log gets one event for them.
                let chunk = budget.chunk(self.per_span.load(Ordering::Relaxed)).max(cost);
                return (Charge::NeedsMark(pack(period, spent.saturating_add(chunk))), period);
            }
            match self
                .spend
                .compare_exchange_weak(current, pack(period, new), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (Charge::Charged(new), period),
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives back `cost` charged in `period` (the period [`BudgetCounter::charge_in`]
    /// named), for a request another check refused after the charge: all or nothing. A
    /// counter that has moved on to a later period since keeps its spend (the charge
    /// belongs to a period that is over).
    pub fn refund(&self, period: u32, cost: u64) {
        let mut current = self.spend.load(Ordering::Acquire);
        loop {
            let (p, s) = unpack(current);
            if p != period || cost == 0 {
                return;
            }
            match self.spend.compare_exchange_weak(
                current,
                pack(p, s.saturating_sub(cost)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
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
    fn a_forfeited_lease_cannot_be_spent() {
        let b = Budget {
            cap: 100,
            period: Period::Daily,
        };
        let c = BudgetCounter::new(pack(3, 4), pack(3, 10));
        assert_eq!(c.lease_base(3), 10);
        assert_eq!(c.forfeit(), 6, "10 held, 4 spent");
        assert_eq!(c.spent(3), 10);
        assert!(matches!(c.charge(&b, 3, 1), Charge::NeedsMark(_)));
        assert_eq!(c.forfeit(), 0, "nothing left to give up");
        // Restored from disk past its mark: the lease builds on the spend.
        let restored = BudgetCounter::new(pack(3, 7), pack(3, 2));
        assert_eq!(restored.lease_base(3), 7);
        assert_eq!(restored.lease_base(4), 0, "another period starts from zero");
        // Spend of an older period than the mark: all of the mark is unspent.
        let older = BudgetCounter::new(pack(2, 50), pack(3, 5));
        assert_eq!(older.forfeit(), 5);
        assert_eq!(unpack(older.spend_word()), (3, 5));
    }

    #[test]
    fn a_late_request_for_the_older_period_is_charged_in_the_newer_one() {
        let b = Budget {
            cap: 10,
            period: Period::Daily,
        };
        let c = BudgetCounter::new(pack(7, 9), pack(7, 10));
        c.raise_mark(pack(8, 10), 0);
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
        c.raise_mark(pack(0, 5), 0);
        assert_eq!(c.charge(&b, 0, 3), Charge::Charged(3));
        assert_eq!(c.charge(&b, 0, 3), Charge::NeedsMark(pack(0, 6)));
        c.raise_mark(pack(0, 10), 0);
        assert_eq!(c.charge(&b, 0, 3), Charge::Charged(6));
        assert_eq!(c.charge(&b, 0, 5), Charge::Exhausted(6));
        assert_eq!(c.charge(&b, 0, 4), Charge::Charged(10));
        assert_eq!(c.charge(&b, 0, 0), Charge::Charged(10), "cost 0 only checks");
        // A new period starts from zero, lazily.
        c.raise_mark(pack(1, 10), 0);
        assert_eq!(c.charge(&b, 1, 2), Charge::Charged(2));
        assert_eq!(c.spent(1), 2);
        assert_eq!(unpack(pack(5, 7)), (5, 7));
    }

    #[test]
    fn a_raise_sizes_the_next_chunk_to_a_second_of_spend() {
        let b = Budget {
            cap: 2_000_000,
            period: Period::Total,
        };
        let c = BudgetCounter::default();
        let spend = |n: u64| {
            for _ in 0..n {
                assert!(matches!(c.charge(&b, 0, 5), Charge::Charged(_)));
            }
        };
        // Nothing measured yet: cap/1000.
        assert_eq!(c.charge(&b, 0, 5), Charge::NeedsMark(pack(0, 2_000)));
        c.raise_mark(pack(0, 2_000), 0);
        spend(400);
        assert_eq!(c.charge(&b, 0, 5), Charge::NeedsMark(pack(0, 4_000)));
        c.raise_mark(pack(0, 4_000), 400_000_000);
        // 2,000 spent in 0.4 s: 5,000 a second.
        assert_eq!(c.per_span.load(Ordering::Relaxed), 5_000);
        spend(400);
        assert_eq!(c.charge(&b, 0, 5), Charge::NeedsMark(pack(0, 9_000)));
        // A raise that does not move the mark (a thread that needed the same one, or an
        // older one) measures nothing.
        c.raise_mark(pack(0, 4_000), 401_000_000);
        assert_eq!(c.per_span.load(Ordering::Relaxed), 5_000);
        // 2,000 spent in 1 ms: past cap/64 a second, so the chunk stops at cap/64.
        c.raise_mark(pack(0, 9_000), 401_000_000);
        spend(1_000);
        assert_eq!(c.charge(&b, 0, 5), Charge::NeedsMark(pack(0, 9_000 + 31_250)));
        // A request costlier than the chunk gets a mark that admits it.
        let slow = BudgetCounter::new(pack(0, 10), pack(0, 10));
        assert_eq!(slow.charge(&b, 0, 9_999), Charge::NeedsMark(pack(0, 10_009)));
    }

    #[test]
    fn a_new_period_keeps_the_measured_pace() {
        let b = Budget {
            cap: 2_000_000,
            period: Period::Daily,
        };
        let c = BudgetCounter::new(pack(7, 0), pack(7, 0));
        c.raise_mark(pack(7, 2_000), 0);
        assert_eq!(c.charge(&b, 7, 2_000), Charge::Charged(2_000));
        c.raise_mark(pack(7, 12_000), 1_000_000_000);
        assert_eq!(c.per_span.load(Ordering::Relaxed), 2_000);
        // Day 8: its spend restarts at zero, which says nothing of the pace.
        assert_eq!(c.charge(&b, 8, 1), Charge::NeedsMark(pack(8, 2_000)));
        c.raise_mark(pack(8, 2_000), 1_500_000_000);
        assert_eq!(c.per_span.load(Ordering::Relaxed), 2_000);
        // The next raise measures from the start of day 8: 2,000 in 0.5 s.
        assert_eq!(c.charge(&b, 8, 2_000), Charge::Charged(2_000));
        c.raise_mark(pack(8, 4_000), 2_000_000_000);
        assert_eq!(c.per_span.load(Ordering::Relaxed), 4_000);
    }

    /// Charges from several threads, each raise made durable in a model of the log before
    /// the counter learns of it: no charge ever passes the durable mark, none is lost, and
    /// the threads that need one raise write one event.
    #[test]
    fn concurrent_charges_never_pass_the_durable_mark() {
        const THREADS: u64 = 4;
        const EACH: u64 = 20_000;
        let b = Budget {
            cap: 1_000_000,
            period: Period::Total,
        };
        let c = BudgetCounter::default();
        let durable = AtomicU64::new(0);
        let events = AtomicU64::new(0);
        let clock = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..EACH {
                        // A microsecond per charge: a million a second.
                        let now = clock.fetch_add(1_000, Ordering::Relaxed);
                        loop {
                            match c.charge(&b, 0, 1) {
                                Charge::Charged(spent) => {
                                    assert!(spent <= unpack(durable.load(Ordering::Acquire)).1);
                                    break;
                                }
                                Charge::NeedsMark(word) => {
                                    if durable.fetch_max(word, Ordering::AcqRel) < word {
                                        events.fetch_add(1, Ordering::Relaxed);
                                    }
                                    c.raise_mark(word, now);
                                }
                                Charge::Exhausted(spent) => panic!("exhausted at {spent}"),
                            }
                        }
                    }
                });
            }
        });
        let spent = c.spent(0);
        assert_eq!(spent, THREADS * EACH);
        assert!(spent <= unpack(durable.load(Ordering::Acquire)).1);
        // 80,000 spent in 80 ms: from the second raise on, chunks of cap/64 (15,625).
        let events = events.load(Ordering::Relaxed);
        assert!((2..=12).contains(&events), "{events} mark events");
    }

    proptest::proptest! {
        /// The chunk against the bound: never past one span of spend or cap/1000 (what a
        /// crash may over-count), never more than cap/64 (the old chunk), never less than
        /// cap/1000 (at most about 1000 raises a period), and a whole span of spend unless
        /// that is past cap/64 (at most about one raise a span).
        #[test]
        fn a_chunk_is_a_span_of_spend_within_its_bounds(cap in 0..=MAX_BUDGET, per in proptest::num::u64::ANY) {
            let b = Budget { cap, period: Period::Total };
            let chunk = b.chunk(per);
            proptest::prop_assert!(chunk >= 1);
            proptest::prop_assert!(chunk <= per.max((cap / 1000).max(1)));
            proptest::prop_assert!(chunk <= (cap / 64).max(1));
            proptest::prop_assert!(chunk >= (cap / 1000).max(1));
            proptest::prop_assert!(chunk >= per.min((cap / 64).max(1)));
        }

        /// The pace is spend per span rounded up: no less than the truth, and less than one
        /// more.
        #[test]
        fn the_pace_is_spend_per_span_rounded_up(spent in 0..=MAX_BUDGET, elapsed in 1..=i64::MAX) {
            let per = u128::from(per_span(spent, elapsed));
            let (spent, elapsed) = (u128::from(spent), u128::try_from(elapsed).unwrap());
            let truth = spent * 1_000_000_000;
            if per < u128::from(u64::MAX) {
                proptest::prop_assert!(per * elapsed >= truth);
                proptest::prop_assert!(per == 0 || (per - 1) * elapsed < truth);
            } else {
                proptest::prop_assert!(truth.div_ceil(elapsed) >= per);
            }
        }

        /// A key spending `cost` every `step_ns`, each raise made durable at once: at every
        /// moment (any could be a crash) the durable mark is at most one span of spend at
        /// that pace, or cap/1000, or the cost, ahead of the spend, and raises come about
        /// once a chunk.
        #[test]
        fn a_steady_pace_over_counts_at_most_a_span(
            cap in 1_000..=10_000_000_u64,
            cost in 1..=500_u64,
            step_ns in 1_000..=50_000_000_i64,
        ) {
            let b = Budget { cap, period: Period::Total };
            let c = BudgetCounter::default();
            let pace = per_span(cost, step_ns);
            let bound = b.chunk(pace).max(cost);
            let (mut now, mut raises) = (0i64, 0u64);
            for _ in 0..4_000 {
                let spent = loop {
                    match c.charge(&b, 0, cost) {
                        Charge::Charged(spent) | Charge::Exhausted(spent) => break spent,
                        Charge::NeedsMark(word) => {
                            raises += 1;
                            c.raise_mark(word, now);
                        }
                    }
                };
                let mark = unpack(c.mark.load(Ordering::Acquire)).1;
                proptest::prop_assert!(mark >= spent);
                // The first raise is cap/1000, before anything is measured.
                proptest::prop_assert!(mark - spent <= bound.max(b.min_chunk()), "{} ahead of {}, bound {}", mark - spent, spent, bound);
                now += step_ns;
            }
            // Two raises to measure the pace, then one per chunk of spend (less what of the
            // chunk is too little for one more request).
            let spent = c.spent(0);
            let per_raise = b.chunk(pace).saturating_sub(cost - 1).max(cost);
            proptest::prop_assert!(raises <= 2 + spent.div_ceil(per_raise), "{raises} raises for {spent}");
        }
    }
}
