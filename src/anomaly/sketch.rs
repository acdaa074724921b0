//! A bounded top-K sketch of the client networks that present keys matching none
//! (unknown or malformed): Space-Saving (Metwally, Agrawal and El Abbadi, 2005), so an
//! attacker's traffic from ever new networks replaces the least counted entry instead of
//! growing a map. With `K` entries, any network presenting more than `N / K` of the `N`
//! keys counted is in the sketch, and each count is over by at most its entry's `error`.
//!
//! Each entry also estimates how many *distinct* keys its network presented (linear
//! counting over a 256-bit bitmap of a keyed hash of each key): a client retrying one
//! stale key is one key, an enumeration is many.
//!
//! No crate was a fit: the Rust top-K crates count items only (no per-entry payload for
//! the codes and the distinct estimate) and pull in hashing and allocation strategies of
//! their own; the structure is forty lines.

use std::collections::HashMap;

use super::Network;
use crate::decision::Code;

/// Bits in an entry's distinct-key bitmap.
const BITS: u32 = 256;

/// The most distinct keys an entry's bitmap can tell apart (all bits set): about
/// `256 * ln 256`.
pub const MAX_DISTINCT: u64 = 1_420;

/// One network's counts in a [`NetworkSketch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCount {
    /// The network.
    pub network: Network,
    /// Keys it presented that matched none (an overestimate by at most `error`).
    pub presented: u64,
    /// How much `presented` may be over: the count of the entry it replaced.
    pub error: u64,
    /// Of them, unknown (`NOT_FOUND`) ...
    pub not_found: u64,
    /// ... and malformed (`MALFORMED`), since it entered the sketch.
    pub malformed: u64,
    /// Distinct keys among them, estimated (at most [`MAX_DISTINCT`]).
    pub distinct: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    network: Network,
    count: u64,
    error: u64,
    not_found: u64,
    malformed: u64,
    bits: [u64; 4],
    /// A `guessing` anomaly was raised (or continued) for it in this window.
    raised: bool,
}

impl Entry {
    fn distinct(&self) -> u64 {
        let set: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        let zeros = BITS - set;
        if zeros == 0 {
            return MAX_DISTINCT;
        }
        // Linear counting: n = m ln(m / zeros).
        let n = f64::from(BITS) * (f64::from(BITS) / f64::from(zeros)).ln();
        // Rounded, and at most MAX_DISTINCT: the cast cannot truncate.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "0 <= n <= 1420")]
        let n = n.round() as u64;
        n.min(MAX_DISTINCT)
    }
}

/// The top-K networks presenting keys that match none, with their codes and distinct
/// keys, in bounded memory: at most `capacity` entries, ever.
#[derive(Debug, Clone)]
pub struct NetworkSketch {
    capacity: usize,
    entries: Vec<Entry>,
    index: HashMap<Network, usize>,
}

impl NetworkSketch {
    /// An empty sketch of at most `capacity` networks (at least one).
    pub fn new(capacity: usize) -> NetworkSketch {
        let capacity = capacity.max(1);
        NetworkSketch {
            capacity,
            entries: Vec::with_capacity(capacity.min(4096)),
            index: HashMap::new(),
        }
    }

    /// Counts one presented key from `network` that matched none: `code` is
    /// [`Code::NotFound`] or [`Code::Malformed`], `key_hash` a keyed hash of the key.
    pub fn add(&mut self, network: Network, code: Code, key_hash: u64) {
        let slot = match self.index.get(&network) {
            Some(&i) => i,
            None if self.entries.len() < self.capacity => {
                self.entries.push(Entry {
                    network,
                    count: 0,
                    error: 0,
                    not_found: 0,
                    malformed: 0,
                    bits: [0; 4],
                    raised: false,
                });
                let i = self.entries.len() - 1;
                self.index.insert(network, i);
                i
            }
            None => {
                // Space-Saving: the least counted entry makes room, and the newcomer
                // inherits its count as its possible overcount.
                let Some((i, min)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.count) else {
                    return;
                };
                let (old, count) = (min.network, min.count);
                self.index.remove(&old);
                self.index.insert(network, i);
                if let Some(e) = self.entries.get_mut(i) {
                    *e = Entry {
                        network,
                        count,
                        error: count,
                        not_found: 0,
                        malformed: 0,
                        bits: [0; 4],
                        raised: false,
                    };
                }
                i
            }
        };
        let Some(e) = self.entries.get_mut(slot) else {
            return;
        };
        e.count += 1;
        match code {
            Code::Malformed => e.malformed += 1,
            _ => e.not_found += 1,
        }
        let bit = key_hash % u64::from(BITS);
        if let Some(word) = e.bits.get_mut(usize::try_from(bit / 64).unwrap_or(0)) {
            *word |= 1 << (bit % 64);
        }
    }

    /// The networks counted, most first.
    pub fn top(&self) -> Vec<NetworkCount> {
        let mut out: Vec<NetworkCount> = self
            .entries
            .iter()
            .map(|e| NetworkCount {
                network: e.network,
                presented: e.count,
                error: e.error,
                not_found: e.not_found,
                malformed: e.malformed,
                distinct: e.distinct(),
            })
            .collect();
        out.sort_by(|a, b| b.presented.cmp(&a.presented).then(a.network.cmp(&b.network)));
        out
    }

    /// The most networks it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many networks it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `network` was flagged in this sketch's window.
    pub(crate) fn raised(&self, network: &Network) -> bool {
        self.index
            .get(network)
            .and_then(|&i| self.entries.get(i))
            .is_some_and(|e| e.raised)
    }

    /// The networks with at least `min` distinct keys not flagged yet in this window,
    /// with their estimate; flags them.
    pub(crate) fn flag_over(&mut self, min: u64) -> Vec<(Network, u64)> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            if !e.raised {
                let distinct = e.distinct();
                if distinct >= min {
                    e.raised = true;
                    out.push((e.network, distinct));
                }
            }
        }
        out
    }

    /// The distinct keys `network` presented in this window, estimated (0: not held).
    pub(crate) fn distinct_of(&self, network: &Network) -> u64 {
        self.index
            .get(network)
            .and_then(|&i| self.entries.get(i))
            .map_or(0, Entry::distinct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(k: u64) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(k)
    }

    fn net(i: u32) -> Network {
        Network::of(std::net::IpAddr::V4((i << 8).into()))
    }

    #[test]
    fn memory_stays_bounded_and_heavy_networks_stay_in() {
        let mut s = NetworkSketch::new(16);
        // One heavy network among 100k one-off networks.
        for i in 0..100_000u32 {
            s.add(net(1_000 + i), Code::NotFound, u64::from(i));
            if i % 10 == 0 {
                s.add(net(7), Code::Malformed, hash(u64::from(i)));
            }
        }
        assert_eq!(s.len(), 16);
        let top = s.top();
        assert_eq!(top[0].network, net(7));
        assert!(top[0].presented >= 10_000);
        assert!(top[0].presented - top[0].error <= 10_000);
        assert_eq!(top[0].distinct, MAX_DISTINCT);
    }

    #[test]
    fn one_key_retried_is_one_distinct_key() {
        let mut s = NetworkSketch::new(4);
        for _ in 0..500 {
            s.add(net(1), Code::NotFound, 42);
        }
        for k in 0..100 {
            s.add(net(2), Code::NotFound, hash(k));
        }
        let top = s.top();
        assert_eq!((top[0].presented, top[0].distinct), (500, 1));
        assert!((70..=130).contains(&top[1].distinct), "{:?}", top[1]);
    }
}
