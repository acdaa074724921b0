//! How a fleet host finds its share of every rate limit ([`crate::limits::Shares`]) from
//! the hosts' heartbeats.
//!
//! About once a second each host reads the list of hosts, takes the live ones (a heartbeat
//! within [`HOST_LIVE`]) with itself, sorted by name, as its view (its rank among `n`), and
//! enforces the smaller part under the view it had and the new one. In its heartbeat it
//! says how many hosts its view holds (`sees`). Only when every other live host says the
//! same number does its part grow to the new view's. A host that cannot send a heartbeat
//! for half of [`HOST_LIVE`] takes nothing, before the others, who count it gone after
//! all of [`HOST_LIVE`], can grow into its part. So the parts in force never add up to
//! more than the limit (`docs/LIMITS.md` has the argument and what it costs).

use std::time::Duration;

use crate::fleet::HostStatus;
use crate::limits::{Share, Shares};

/// A host whose last heartbeat is older than this is not counted.
pub(crate) const HOST_LIVE: Duration = Duration::from_secs(3);

/// The shares host `me` enforces next, having enforced `current`, given the hosts' list.
pub(crate) fn next(me: &str, hosts: &[HostStatus], current: Shares) -> Shares {
    let live = |h: &&HostStatus| h.host != me && !h.left && h.silent_for_secs < HOST_LIVE.as_secs_f64();
    let others: Vec<&HostStatus> = hosts.iter().filter(live).collect();
    let mut names: Vec<&str> = others.iter().map(|h| h.host.as_str()).collect();
    names.push(me);
    names.sort_unstable();
    let count = u32::try_from(names.len()).unwrap_or(u32::MAX);
    let rank = names
        .iter()
        .position(|n| *n == me)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let view = Share { rank, hosts: count };
    if others.iter().all(|h| h.sees == count) {
        return Shares::all(view);
    }
    if current.next == view {
        return current;
    }
    // A second new view before the fleet agreed on the first: parts under either may be in
    // force elsewhere; nothing is safe to keep until the fleet agrees.
    let settled = if current.settled == current.next {
        current.settled
    } else {
        Share::NOTHING
    };
    Shares { settled, next: view }
}

/// How long ago (seconds) another host last said it was alive, `None` if none ever did:
/// what a part this host gains may have been spent by then at the latest.
pub(crate) fn others_last_seen(me: &str, hosts: &[HostStatus]) -> Option<f64> {
    hosts
        .iter()
        .filter(|h| h.host != me)
        .map(|h| h.silent_for_secs.max(0.0))
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, silent: f64, sees: u32) -> HostStatus {
        HostStatus {
            host: name.to_string(),
            applied_seq: 0,
            silent_for_secs: silent,
            sees,
            left: false,
        }
    }

    #[test]
    fn alone_a_host_has_everything() {
        let got = next("a", &[host("a", 0.0, 1)], Shares::all(Share::NOTHING));
        assert_eq!(got, Shares::all(Share::WHOLE));
    }

    #[test]
    fn a_joining_host_takes_nothing_until_the_others_see_it() {
        let start = Shares::all(Share::NOTHING);
        // b has not seen c yet (sees 1... or 2 without c).
        let hosts = [host("a", 0.2, 2), host("b", 0.4, 2)];
        let joining = next("c", &hosts, start);
        assert_eq!(joining.quota(30, 1_000).limit, 0);
        // a and b each move to the view of three, shrinking at once.
        let a = next(
            "a",
            &[host("a", 0.0, 2), host("b", 0.4, 2), host("c", 0.1, 3)],
            Shares::all(Share { rank: 0, hosts: 2 }),
        );
        assert_eq!(a.quota(30, 1_000).limit, 10);
        // Once all say 3, c grows.
        let hosts = [host("a", 0.2, 3), host("b", 0.4, 3)];
        assert_eq!(next("c", &hosts, joining).quota(30, 1_000).limit, 10);
    }

    #[test]
    fn a_silent_host_is_dropped_and_the_rest_grow_when_they_agree() {
        let current = Shares::all(Share { rank: 0, hosts: 3 });
        let hosts = [host("a", 0.0, 3), host("b", 0.5, 3), host("c", 9.0, 3)];
        let waiting = next("a", &hosts, current);
        assert_eq!(waiting.quota(30, 1_000).limit, 10, "b still says 3");
        let hosts = [host("a", 0.0, 2), host("b", 0.5, 2), host("c", 9.0, 3)];
        assert_eq!(next("a", &hosts, waiting).quota(30, 1_000).limit, 15);
    }

    #[test]
    fn two_new_views_before_agreement_leave_nothing() {
        let moving = Shares {
            settled: Share { rank: 0, hosts: 2 },
            next: Share { rank: 0, hosts: 3 },
        };
        let hosts = [
            host("a", 0.0, 3),
            host("b", 0.1, 2),
            host("c", 0.1, 3),
            host("d", 0.1, 4),
        ];
        assert_eq!(next("a", &hosts, moving).quota(30, 1_000).limit, 0);
    }
}
