//! One rate limit's state: GCRA (the generic cell rate algorithm) in one atomic word.
//!
//! A quota of `limit` requests per `window` has an emission interval `T = window / limit`
//! (rounded up to whole nanoseconds) and admits a burst of `limit`. The state is the
//! theoretical arrival time `tat` (unix ns). A request of weight `w` at `now` is admitted
//! iff `max(tat, now) + w*T <= now + limit*T`, and then `tat` becomes that sum. The
//! update is one compare-and-swap; no lock.
//!
//! What "N per window" admits: a burst of N at once, then one every window/N. In any
//! rolling window of length `window` at most 2N − 1 requests pass (a full burst, plus
//! the N − 1 the steady rate releases during the window); over a long run, at most N per
//! window on average. A denied request changes nothing.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// A quota in nanoseconds, derived from a `RateLimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Requests per window (the burst).
    pub limit: u32,
    /// Emission interval `T`, ns (at least 1).
    pub interval_ns: i64,
}

impl Quota {
    /// `limit` requests per `window_ms`. Both must be positive (checked by `RateLimit`).
    pub fn new(limit: u32, window_ms: u64) -> Self {
        let window_ns = i128::from(window_ms) * 1_000_000;
        let limit_i = i128::from(limit.max(1));
        let interval = (window_ns + limit_i - 1) / limit_i;
        Quota {
            limit,
            interval_ns: i64::try_from(interval.max(1)).unwrap_or(i64::MAX),
        }
    }

    /// `limit * T`: how far ahead of now the arrival time may run.
    pub fn horizon_ns(&self) -> i64 {
        self.interval_ns.saturating_mul(i64::from(self.limit))
    }
}

/// What a limit says after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOutcome {
    /// Whether the request was admitted.
    pub admitted: bool,
    /// Requests of weight 1 that would still pass now.
    pub remaining: u32,
    /// Unix ns when the limit is full again.
    pub reset_ns: i64,
    /// When denied: ns until a request of this weight would pass.
    pub retry_after_ns: i64,
}

/// The atomic GCRA state of one limit of one key.
#[derive(Debug, Default)]
pub struct Gcra {
    tat: AtomicI64,
}

impl Gcra {
    /// A limiter whose theoretical arrival time is `tat_ns` (0: full).
    pub fn new(tat_ns: i64) -> Self {
        Gcra {
            tat: AtomicI64::new(tat_ns),
        }
    }

    /// The current theoretical arrival time, for persisting.
    pub fn tat(&self) -> i64 {
        self.tat.load(Ordering::Relaxed)
    }

    /// Admits a request of `weight` at `now_ns` if the quota allows, consuming it.
    pub fn check(&self, quota: Quota, now_ns: i64, weight: u32) -> LimitOutcome {
        let cost = quota.interval_ns.saturating_mul(i64::from(weight));
        let horizon = quota.horizon_ns();
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = current.max(now_ns).saturating_add(cost);
            if new_tat - now_ns > horizon {
                return LimitOutcome {
                    admitted: false,
                    remaining: remaining(quota, current, now_ns),
                    reset_ns: current.max(now_ns),
                    retry_after_ns: new_tat - now_ns - horizon,
                };
            }
            match self
                .tat
                .compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return LimitOutcome {
                        admitted: true,
                        remaining: remaining(quota, new_tat, now_ns),
                        reset_ns: new_tat,
                        retry_after_ns: 0,
                    };
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// The state now, consuming nothing.
    pub fn peek(&self, quota: Quota, now_ns: i64) -> LimitOutcome {
        let tat = self.tat.load(Ordering::Acquire);
        LimitOutcome {
            admitted: true,
            remaining: remaining(quota, tat, now_ns),
            reset_ns: tat.max(now_ns),
            retry_after_ns: 0,
        }
    }

    /// Gives back what an admitted [`Gcra::check`] of `weight` consumed, because another
    /// limit of the same request denied it. Subtracting the same amount leaves the state
    /// as if the request had never come (a `tat` that was behind `now` stays at most `now`,
    /// which every later check treats the same).
    pub fn refund(&self, quota: Quota, weight: u32) {
        let cost = quota.interval_ns.saturating_mul(i64::from(weight));
        self.tat.fetch_sub(cost, Ordering::AcqRel);
    }
}

fn remaining(quota: Quota, tat: i64, now_ns: i64) -> u32 {
    let slack = quota.horizon_ns() - (tat.max(now_ns) - now_ns);
    u32::try_from((slack / quota.interval_ns).max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn burst_then_steady_rate() {
        let q = Quota::new(3, 1_000);
        let g = Gcra::default();
        let t0 = 100 * SEC;
        for left in [2, 1, 0] {
            let o = g.check(q, t0, 1);
            assert!(o.admitted);
            assert_eq!(o.remaining, left);
        }
        let denied = g.check(q, t0, 1);
        assert!(!denied.admitted);
        assert!(denied.retry_after_ns > 0 && denied.retry_after_ns <= SEC / 3 + 1);
        // After one interval, exactly one more.
        assert!(g.check(q, t0 + q.interval_ns, 1).admitted);
        assert!(!g.check(q, t0 + q.interval_ns, 1).admitted);
        // After a full window, full again.
        let later = t0 + 2 * SEC;
        assert_eq!(g.peek(q, later).remaining, 3);
    }

    #[test]
    fn weights_and_refunds() {
        let q = Quota::new(10, 1_000);
        let g = Gcra::default();
        let t = 50 * SEC;
        assert!(g.check(q, t, 7).admitted);
        assert!(!g.check(q, t, 4).admitted);
        assert!(g.check(q, t, 3).admitted);
        g.refund(q, 3);
        assert_eq!(g.peek(q, t).remaining, 3);
        assert!(!g.check(q, t, 11).admitted, "a weight above the limit never passes");
    }
}
