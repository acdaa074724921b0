//! A fleet host's budget leases: it spends a budget only as far as the fleet leased it.
//!
//! A key's live budget counter works as on an embedded store, except that its mark (how
//! far spend may go before the next raise) is this host's lease: a charge that would pass
//! it asks the commit thread for more ([`Leases::acquire`], one round trip to the fleet),
//! and the fleet never leases more than the cap minus what is settled (`credstore_lease`).
//! Units stay in the counter's own terms: the mark rises by exactly what was granted.
//!
//! The commit thread tends the leases between batches ([`Leases::tend`]):
//! - about once a second it extends them (`Config::fleet_lease_ttl` from now); a lease the fleet did
//!   not extend (expired) is forfeited here at once;
//! - a lease unused for [`IDLE_RETURN`] goes back to the fleet, its unspent part freed for
//!   the other hosts, so once the hosts settle, a budget can be spent to its last unit;
//! - if no renewal has reached the fleet for 70% of the time to live, every
//!   lease is forfeited: the host stops spending before the fleet may settle its leases
//!   as spent and lease the rest to others (the margin covers the round trip and clock rate
//!   differences; the times are the host's own monotonic clock, not wall clocks).
//!
//! Forfeiting moves a counter's spend up to its mark ([`BudgetCounter::forfeit`]), one
//! compare-and-swap, so no charge in flight can spend what was given back.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, LeaseAsk, Returned};
use crate::limits::budget::{BudgetCounter, pack};

/// How long a lease may go unused before it is given back.
pub(crate) const IDLE_RETURN: Duration = Duration::from_secs(1);
/// How often leases are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often [`Leases::tend`] looks at the leases at all.
const TEND_EVERY: Duration = Duration::from_millis(100);

/// A lease request from a charge: a budget's id (its rotation chain's first key), period,
/// cap, the units the charge needs beyond the counter's mark, the units wanted, and the
/// counter whose mark the grant raises.
pub(crate) struct LeaseRequest {
    pub budget_id: String,
    pub period: u32,
    pub cap: u64,
    pub need: u64,
    pub want: u64,
    pub counter: Arc<BudgetCounter>,
}

struct Held {
    counter: Arc<BudgetCounter>,
    /// Unspent units of counters this lease was charged through before `counter` (a key
    /// whose live state was rebuilt from disk gets a new counter): given back with it.
    unused_elsewhere: u64,
    spend_seen: u64,
    active_at: Instant,
}

/// The leases a host holds, by budget and period.
pub(crate) struct Leases {
    /// How long a lease lasts unless renewed.
    ttl: Duration,
    held: HashMap<(String, u32), Held>,
    /// When the last renewal (or first grant) that reached the fleet was sent: every lease
    /// held is good until at least `ttl` after it.
    good_from: Option<Instant>,
    last_renewal: Option<Instant>,
    last_tend: Option<Instant>,
}

impl Leases {
    /// No leases yet; each will last `ttl` unless renewed.
    pub fn new(ttl: Duration) -> Leases {
        Leases {
            ttl,
            held: HashMap::new(),
            good_from: None,
            last_renewal: None,
            last_tend: None,
        }
    }

    /// Asks the fleet for units of `req`'s budget and raises the counter's mark by what
    /// it grants; returns that (0: the budget is spent fleet-wide).
    pub fn acquire(&mut self, fleet: &Fleet, host: &str, req: &LeaseRequest, now_ns: i64) -> crate::Result<u64> {
        if self.expiring() {
            self.forfeit_all();
        }
        let sent = Instant::now();
        let ask = LeaseAsk {
            budget_id: &req.budget_id,
            period: req.period,
            cap: req.cap,
            need: req.need,
            want: req.want,
        };
        // The base is stable while the call runs: only this thread moves marks, and
        // charges never take spend past the mark.
        let base = req.counter.lease_base(req.period);
        let lease = fleet.lease(host, &ask, self.ttl)?;
        let granted = lease.granted;
        if granted == 0 {
            req.counter.note_fleet_used(pack(req.period, lease.used));
            return Ok(0);
        }
        if self.held.is_empty() {
            self.good_from = Some(sent);
        }
        req.counter
            .raise_mark(pack(req.period, base.saturating_add(granted)), now_ns);
        req.counter.note_fleet_used(pack(req.period, lease.used));
        let spend_seen = req.counter.spend_word();
        match self.held.entry((req.budget_id.clone(), req.period)) {
            Entry::Vacant(slot) => {
                slot.insert(Held {
                    counter: Arc::clone(&req.counter),
                    unused_elsewhere: 0,
                    spend_seen,
                    active_at: sent,
                });
            }
            Entry::Occupied(mut slot) => {
                let held = slot.get_mut();
                if !Arc::ptr_eq(&held.counter, &req.counter) {
                    held.unused_elsewhere = held.unused_elsewhere.saturating_add(held.counter.forfeit());
                    held.counter = Arc::clone(&req.counter);
                }
                held.spend_seen = spend_seen;
                held.active_at = sent;
            }
        }
        Ok(granted)
    }

    /// Renews, returns idle leases and forfeits expiring ones; see the module's docs. Cheap
    /// when nothing is due.
    pub fn tend(&mut self, fleet: &Fleet, host: &str) {
        if self.held.is_empty() || self.last_tend.is_some_and(|at| at.elapsed() < TEND_EVERY) {
            return;
        }
        self.last_tend = Some(Instant::now());
        if self.expiring() {
            self.forfeit_all();
            return;
        }
        if self.last_renewal.is_none_or(|at| at.elapsed() >= RENEW_EVERY) {
            let sent = Instant::now();
            self.last_renewal = Some(sent);
            // A failed renewal changes nothing here: the leases run out at their expiry,
            // and `expiring` stops their spending before that.
            if let Ok(alive) = fleet.renew_leases(host, self.ttl) {
                self.good_from = Some(sent);
                let alive: std::collections::HashSet<(String, u32)> = alive.into_iter().collect();
                self.held.retain(|key, held| {
                    let keep = alive.contains(key);
                    if !keep {
                        held.counter.forfeit();
                    }
                    keep
                });
            }
        }
        let mut idle = Vec::new();
        for (key, held) in &mut self.held {
            let spend = held.counter.spend_word();
            if spend != held.spend_seen {
                held.spend_seen = spend;
                held.active_at = Instant::now();
            } else if held.active_at.elapsed() >= IDLE_RETURN {
                idle.push(key.clone());
            }
        }
        let returned: Vec<Returned> = idle.iter().filter_map(|key| self.give_back(key)).collect();
        // If the fleet does not hear of it, the lease expires and is settled as spent: the
        // budget loses the unspent part, and is never overspent.
        let _ = fleet.release_leases(host, &returned);
    }

    /// Gives every lease back (the host is stopping: nothing is charged any more).
    pub fn release_all(&mut self, fleet: &Fleet, host: &str) {
        let keys: Vec<(String, u32)> = self.held.keys().cloned().collect();
        let returned: Vec<Returned> = keys.iter().filter_map(|key| self.give_back(key)).collect();
        let _ = fleet.release_leases(host, &returned);
    }

    fn give_back(&mut self, key: &(String, u32)) -> Option<Returned> {
        let held = self.held.remove(key)?;
        Some(Returned {
            budget_id: key.0.clone(),
            period: key.1,
            unused: held.counter.forfeit().saturating_add(held.unused_elsewhere),
        })
    }

    /// Whether the leases may expire soon without this host having heard otherwise.
    fn expiring(&self) -> bool {
        // The margin (30%) covers the renewal's round trip, a commit thread busy elsewhere
        // for a moment, and clocks that run at slightly different rates.
        self.good_from.is_some_and(|at| at.elapsed() >= self.ttl.mul_f64(0.7))
    }

    fn forfeit_all(&mut self) {
        for held in self.held.values() {
            held.counter.forfeit();
        }
        self.held.clear();
        self.good_from = None;
    }
}
