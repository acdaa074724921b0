//! What the store counts for its operators ([`super::Store::stats`]): relaxed atomics,
//! touched on the cold paths (a live-map miss, dropped uses, a commit, a fleet sync),
//! never on a cached verify.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit-latency buckets, seconds: a commit is one fsync (0.1 to a few
/// ms on an SSD), a fleet host's also a round trip to PostgreSQL.
pub(crate) const COMMIT_BUCKETS_SECS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The counters, in [`super::Shared`].
#[derive(Default)]
pub(crate) struct Counters {
    /// Verifies whose key was not in the live map (cold and unknown keys).
    pub cache_misses: AtomicU64,
    /// Uses that could not be recorded (hand-off queue full, or carried records past their
    /// bound).
    pub uses_dropped: AtomicU64,
    /// Commits per bucket of [`COMMIT_BUCKETS_SECS`], the last slot past the last bound.
    commit_buckets: [AtomicU64; COMMIT_BUCKETS_SECS.len() + 1],
    commit_count: AtomicU64,
    commit_nanos: AtomicU64,
    /// A fleet host: the store clock's ms when it was last in step with the fleet (0: not a
    /// fleet host).
    pub fleet_synced_at_ms: AtomicI64,
}

impl Counters {
    /// Records one commit (log append, fsync, index update) that took `took`.
    pub fn commit_took(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = COMMIT_BUCKETS_SECS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(COMMIT_BUCKETS_SECS.len());
        if let Some(bucket) = self.commit_buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The commit latencies so far.
    pub fn commit_latency(&self) -> LatencyHistogram {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(COMMIT_BUCKETS_SECS.len() + 1);
        let bounds = COMMIT_BUCKETS_SECS.iter().copied().chain([f64::INFINITY]);
        for (bound, count) in bounds.zip(&self.commit_buckets) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((bound, cumulative));
        }
        // Read after the buckets: a commit counted in between shows in `count` and not yet
        // in a bucket, never the other way round.
        let count = self.commit_count.load(Ordering::Relaxed).max(cumulative);
        #[expect(clippy::cast_precision_loss, reason = "a sum of nanoseconds shown in seconds")]
        let sum_secs = self.commit_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        LatencyHistogram {
            count,
            sum_secs,
            buckets,
        }
    }
}

/// A latency histogram as Prometheus shows one: cumulative counts per upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// Observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_secs: f64,
    /// `(upper bound in seconds, observations at or below it)`, ascending; the last bound
    /// is infinity.
    pub buckets: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_fall_into_cumulative_buckets() {
        let counters = Counters::default();
        counters.commit_took(Duration::from_micros(50));
        counters.commit_took(Duration::from_millis(3));
        counters.commit_took(Duration::from_secs(2));
        let h = counters.commit_latency();
        assert_eq!(h.count, 3);
        assert!((h.sum_secs - 2.003_05).abs() < 1e-9, "{}", h.sum_secs);
        let at = |bound: f64| h.buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
        assert_eq!(at(0.000_1), Some(1));
        assert_eq!(at(0.002_5), Some(1));
        assert_eq!(at(0.005), Some(2));
        assert_eq!(at(1.0), Some(2));
        assert_eq!(at(f64::INFINITY), Some(3));
    }
}
