//! Checks of the usage tree's value codec (`credstore::usage::codec`), shared by the
//! `usage_value` fuzz target and `tests/fuzz_corpus.rs`. The values live in the index
//! unsealed, so a damaged or tampered file can hand the decoder any bytes.
//!
//! The input's first byte picks the tier (its value modulo 4: minute, hour, day, month),
//! the rest is the value. Decoding never panics; what decodes encodes to bytes that decode
//! to the same buckets, and encode again to the same bytes.

use credstore::Granularity;
use credstore::usage::codec;

/// Runs the checks on `data`; returns whether the value decoded.
pub fn check_usage_value(data: &[u8]) -> bool {
    let Some((&pick, value)) = data.split_first() else {
        return false;
    };
    let Some(&tier) = Granularity::ALL.get(usize::from(pick % 4)) else {
        return false;
    };
    let Ok(buckets) = codec::decode(tier, value) else {
        return false;
    };
    let bytes = codec::encode(&buckets);
    let again = codec::decode(tier, &bytes);
    assert_eq!(again.as_ref(), Ok(&buckets), "decode(encode(buckets)) == buckets");
    let again = again.unwrap_or_default();
    assert_eq!(codec::encode(&again), bytes, "encoding is stable");
    assert!(
        buckets.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0)),
        "slots ascend"
    );
    true
}
