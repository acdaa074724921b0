//! A Bloom filter of the tags the index holds, in memory: a well-formed key of no store
//! (a guess, a typo, another service's key) is answered `NOT_FOUND` from a few bit tests,
//! without a read of sled (issue 19).
//!
//! Tags are keyed BLAKE3 outputs, uniformly random, so the probes are the tag's own bytes:
//! no second hash. Bits are only ever set (tags never leave the index: a revoked key is
//! still found), so a filter never says "absent" for a tag it was given; "present" may be
//! wrong (a false positive), and then the lookup reads sled as it did before.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits per tag the filter is sized for: with [`PROBES`] probes, about 0.24% false
/// positives at that load (twice as many tags: about 2.4%).
const BITS_PER_TAG: usize = 16;
/// Bits tested per tag.
const PROBES: usize = 4;
/// The least size, bits (128 KiB): a small store grows a long way before it matters.
const MIN_BITS: usize = 1 << 20;

/// The filter; inserts and tests from any thread.
#[derive(Debug)]
pub(crate) struct TagFilter {
    words: Box<[AtomicU64]>,
    /// `bits - 1`: the bit count is a power of two.
    mask: u64,
}

impl TagFilter {
    /// A filter sized for `tags` tags (and room to grow to twice as many).
    pub fn with_capacity(tags: usize) -> TagFilter {
        let bits = tags
            .saturating_mul(2 * BITS_PER_TAG)
            .max(MIN_BITS)
            .checked_next_power_of_two()
            .unwrap_or(MIN_BITS);
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        TagFilter {
            words,
            mask: (bits as u64) - 1,
        }
    }

    /// The bit positions of a tag: four 64-bit words of it, each reduced to the size.
    fn positions(&self, tag: &[u8; 32]) -> [u64; PROBES] {
        let word = |i: usize| {
            let mut bytes = [0; 8];
            if let Some(chunk) = tag.get(i * 8..i * 8 + 8) {
                bytes.copy_from_slice(chunk);
            }
            u64::from_le_bytes(bytes) & self.mask
        };
        [word(0), word(1), word(2), word(3)]
    }

    /// Adds a tag. Release: a thread that sees the index entry written after this sees
    /// the bits too.
    pub fn insert(&self, tag: &[u8; 32]) {
        for bit in self.positions(tag) {
            if let Some(w) = self.words.get((bit / 64) as usize) {
                w.fetch_or(1 << (bit % 64), Ordering::Release);
            }
        }
    }

    /// Whether the tag may be in the index: `false` means it is not.
    #[inline]
    pub fn may_contain(&self, tag: &[u8; 32]) -> bool {
        self.positions(tag).iter().all(|&bit| {
            self.words
                .get((bit / 64) as usize)
                .is_none_or(|w| w.load(Ordering::Acquire) & (1 << (bit % 64)) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(i: u64) -> [u8; 32] {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn every_tag_inserted_is_found_and_few_others_are() {
        let filter = TagFilter::with_capacity(10_000);
        for i in 0..10_000 {
            filter.insert(&tag(i));
        }
        assert!((0..10_000).all(|i| filter.may_contain(&tag(i))));
        let false_positives = (10_000..110_000).filter(|&i| filter.may_contain(&tag(i))).count();
        // Sized for 20,000 at 16 bits each (rounded up to 2^20 bits): well under 1%.
        assert!(false_positives < 1_000, "{false_positives} of 100,000");
    }

    #[test]
    fn an_empty_filter_contains_nothing() {
        let filter = TagFilter::with_capacity(0);
        assert!(!(0..1_000).any(|i| filter.may_contain(&tag(i))));
    }
}
