//! The top-K sketch of networks presenting unknown keys, against a plain count (the
//! model): whatever arrives, it holds at most its capacity; each network it holds is
//! counted at least as often as it presented keys and at most its `error` more; every
//! network that presented more than 1/K of all keys is held (Space-Saving's guarantees);
//! and the counts per code add up.

use std::collections::HashMap;

use credstore::Code;
use credstore::anomaly::Network;
use credstore::anomaly::sketch::NetworkSketch;
use proptest::prelude::*;

fn network(n: u8) -> Network {
    Network::of(std::net::IpAddr::V4([203, 0, n, 1].into()))
}

proptest! {
    #[test]
    fn the_sketch_never_undercounts_and_keeps_every_heavy_network(
        capacity in 1usize..12,
        // Networks drawn from a skewed range: a few heavy ones, many light ones.
        stream in prop::collection::vec((0u8..40, any::<bool>(), any::<u64>()), 0..600),
    ) {
        let mut sketch = NetworkSketch::new(capacity);
        let mut model: HashMap<Network, (u64, u64)> = HashMap::new();
        for &(n, malformed, hash) in &stream {
            // Squares pile the stream onto the low networks.
            let net = network(n.saturating_mul(n) / 40);
            let code = if malformed { Code::Malformed } else { Code::NotFound };
            sketch.add(net, code, hash);
            let e = model.entry(net).or_default();
            if malformed { e.1 += 1 } else { e.0 += 1 }
        }
        let top = sketch.top();
        prop_assert!(top.len() <= capacity);
        prop_assert_eq!(top.len(), sketch.len());
        let total = stream.len() as u64;
        for entry in &top {
            let (nf, mal) = model.get(&entry.network).copied().unwrap_or_default();
            let truth = nf + mal;
            prop_assert!(entry.presented >= truth, "{:?} undercounted ({})", entry, truth);
            prop_assert!(entry.presented - entry.error <= truth, "{:?} over by more than its error ({})", entry, truth);
            // Codes are counted since the entry came in: never more than the truth.
            prop_assert!(entry.not_found <= nf && entry.malformed <= mal);
            prop_assert_eq!(entry.not_found + entry.malformed, entry.presented - entry.error);
        }
        for (net, (nf, mal)) in &model {
            if (nf + mal) * capacity as u64 > total {
                prop_assert!(top.iter().any(|e| e.network == *net), "heavy {} ({}) missing", net, nf + mal);
            }
        }
        // Most first.
        prop_assert!(top.windows(2).all(|w| w[0].presented >= w[1].presented));
    }
}
