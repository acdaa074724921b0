//! A fleet host's share of every rate limit.
//!
//! Each live host of a fleet enforces a part of each limit: of `hosts` hosts, sorted by
//! name, the one of rank `rank` gets `limit / hosts`, plus one if `rank < limit % hosts`,
//! so the parts add up to the limit exactly (burst and rate alike), and the fleet as a
//! whole never admits more than one host holding the whole limit would.
//!
//! While hosts join and leave, two views of the fleet meet: a host keeps the smaller of
//! its part under the view it had and under the new one ([`Shares`]) until every live host
//! says it has taken the new view; only then does its part grow. A host that joins starts
//! from nothing. So parts shrink at once and grow only when none can still be counting on
//! the old view (`store::fleet_host` has the protocol).

use super::Quota;

/// A part of each rate limit: the `rank`-th of `hosts` hosts' (`hosts` 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This host's place among the live hosts sorted by name.
    pub rank: u32,
    /// How many live hosts share the limits.
    pub hosts: u32,
}

impl Share {
    /// All of every limit: an embedded store, or a fleet of one.
    pub const WHOLE: Share = Share { rank: 0, hosts: 1 };
    /// Nothing: a fleet host that has not agreed on its part yet, or has lost the fleet.
    pub const NOTHING: Share = Share { rank: 0, hosts: 0 };

    /// This share's part of `limit`.
    pub fn of(self, limit: u32) -> u32 {
        match self.hosts {
            0 => 0,
            hosts => limit / hosts + u32::from(self.rank < limit % hosts),
        }
    }
}

/// The share a host enforces: the smaller part under each of two views of the fleet (the
/// same view twice once the fleet agrees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// The view the host had.
    pub settled: Share,
    /// The view it is moving to.
    pub next: Share,
}

impl Default for Shares {
    fn default() -> Self {
        Shares::all(Share::WHOLE)
    }
}

impl Shares {
    /// One view.
    pub fn all(share: Share) -> Shares {
        Shares {
            settled: share,
            next: share,
        }
    }

    /// Whether this is all of every limit (nothing to divide).
    pub fn is_whole(self) -> bool {
        self == Shares::all(Share::WHOLE)
    }

    /// The quota this host enforces of `quota` (`limit` per `window_ms`): its part of the
    /// limit over the same window. A part of 0 admits nothing.
    pub fn quota(self, limit: u32, window_ms: u64) -> Quota {
        if self.is_whole() {
            return Quota::new(limit, window_ms);
        }
        let part = self.settled.of(limit).min(self.next.of(limit));
        Quota::new(part, window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_limit() {
        for limit in [1u32, 2, 3, 7, 10, 100, 1_000_001] {
            for hosts in 1..=9u32 {
                let sum: u32 = (0..hosts).map(|rank| Share { rank, hosts }.of(limit)).sum();
                assert_eq!(sum, limit, "{limit} over {hosts} hosts");
            }
        }
        assert_eq!(Share::NOTHING.of(50), 0);
    }

    #[test]
    fn a_part_of_nothing_admits_nothing() {
        let q = Shares::all(Share::NOTHING).quota(10, 1_000);
        let cell = crate::limits::Gcra::new(0);
        assert!(!cell.check(q, 1_000_000_000, 1).admitted);
        let half = Shares::all(Share { rank: 1, hosts: 2 }).quota(10, 1_000);
        assert_eq!(half.limit, 5);
        let admitted = (0..20).filter(|_| cell.check(half, 1_000_000_000, 1).admitted).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn between_two_views_the_smaller_part_holds() {
        // Rank 0 of 2 gets 6 of 11; rank 1 of 3 gets 4: while moving, 4.
        let moving = Shares {
            settled: Share { rank: 0, hosts: 2 },
            next: Share { rank: 1, hosts: 3 },
        };
        assert_eq!(moving.quota(11, 1_000).limit, 4);
        assert_eq!(Shares::default().quota(11, 1_000).limit, 11);
    }
}
