//! Byte-string helpers for the per-request checks: ASCII comparison and case mapping,
//! eight bytes at a time.

/// True when `text` lower-cased is `lower`, which is lower case already. Eight bytes at
/// a time; `text` must be ASCII (a checked host is).
pub(super) fn eq_lowered(text: &[u8], lower: &[u8]) -> bool {
    eq_by_words(text, lower, u8::to_ascii_lowercase, lowered_word)
}

/// `a == b`, eight bytes at a time, inline (no call to `bcmp` for these short strings).
pub(super) fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    eq_by_words(a, b, |&x| x, |x| x)
}

/// True when `text` with `byte` / `word` applied is `other`: byte by byte below eight
/// bytes, else by whole words and then the last eight bytes (overlapping the previous
/// word). `word` must be `byte` on each of its bytes.
fn eq_by_words(text: &[u8], other: &[u8], byte: impl Fn(&u8) -> u8, word: impl Fn(u64) -> u64) -> bool {
    if text.len() != other.len() {
        return false;
    }
    if text.len() < 8 {
        return text.iter().zip(other).all(|(t, &o)| byte(t) == o);
    }
    let load = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let same = |at: usize| word(load(text, at)) == load(other, at);
    (0..text.len() / 8).all(|k| same(k * 8)) && same(text.len() - 8)
}

/// One in every byte of a word.
pub(super) const ONES: u64 = 0x0101_0101_0101_0101;

/// The eight ASCII bytes of `w` lower-cased: `A-Z` gain 0x20, others stay.
fn lowered_word(w: u64) -> u64 {
    w | (in_range_word(w, b'A', b'Z') >> 2)
}

/// The eight ASCII bytes of `w` upper-cased: `a-z` lose 0x20, others stay.
pub(super) fn uppered_word(w: u64) -> u64 {
    w & !(in_range_word(w, b'a', b'z') >> 2)
}

/// 0x80 in each byte of `w` (all ASCII) that lies in `low..=high`, 0 in the others.
fn in_range_word(w: u64, low: u8, high: u8) -> u64 {
    // Per byte (each below 0x80, so no carry crosses bytes): the high bit of `ge_low` is
    // set from `low` up, that of `gt_high` above `high`.
    let ge_low = w.wrapping_add(ONES * (0x80 - u64::from(low)));
    let gt_high = w.wrapping_add(ONES * (0x7f - u64::from(high)));
    ge_low & !gt_high & (ONES * 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowered_words_and_comparison() {
        for b in 0u8..0x80 {
            for filler in [b'a', b'Z', b'0', b'.'] {
                let mut word = [filler; 8];
                for at in 0..8 {
                    word[at] = b;
                    let lowered = lowered_word(u64::from_le_bytes(word)).to_le_bytes();
                    assert_eq!(lowered, word.map(|c| c.to_ascii_lowercase()), "{b:#x} at {at}");
                    let uppered = uppered_word(u64::from_le_bytes(word)).to_le_bytes();
                    assert_eq!(uppered, word.map(|c| c.to_ascii_uppercase()), "{b:#x} at {at}");
                    word[at] = filler;
                }
            }
        }
        for (text, lower, expected) in [
            ("", "", true),
            ("Ab", "ab", true),
            ("Ab", "aB", false),
            (".EXAMPLE.com", ".example.com", true),
            (".EXAMPLE.con", ".example.com", false),
            ("XAMPLE.COM", "xample.com", true),
            ("EXAMPLE", "example", true),
            ("EXAMPLE-", "example_", false),
            ("abcdefgh", "abcdefgh", true),
            ("abcdefghi", "abcdefgh", false),
        ] {
            assert_eq!(
                eq_lowered(text.as_bytes(), lower.as_bytes()),
                expected,
                "{text} {lower}"
            );
        }
    }
}
