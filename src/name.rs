//! Short names kept inline: role names and rate-limit names, which every verify copies
//! into its decision. Copying at most 33 bytes costs less than an `Arc`'s clone and drop
//! (two atomic read-modify-writes on a line every verify of the key writes).

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};

/// A string of at most `N` (< 256) bytes, stored inline. Bytes past the length are zero,
/// and equality, order and hashing are the text's.
#[derive(Clone, Copy)]
pub struct InlineName<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineName<N> {
    /// `text`, if it is at most `N` bytes.
    pub fn new(text: &str) -> Option<Self> {
        let mut bytes = [0u8; N];
        bytes.get_mut(..text.len())?.copy_from_slice(text.as_bytes());
        Some(InlineName {
            len: u8::try_from(text.len()).ok()?,
            bytes,
        })
    }

    /// The parts one after the other, if they come to at most `N` bytes.
    pub fn concat(parts: &[&str]) -> Option<Self> {
        let mut bytes = [0u8; N];
        let mut len = 0;
        for part in parts {
            let end = len + part.len();
            bytes.get_mut(len..end)?.copy_from_slice(part.as_bytes());
            len = end;
        }
        Some(InlineName {
            len: u8::try_from(len).ok()?,
            bytes,
        })
    }

    /// `text`, cut to at most `N` bytes at a character boundary.
    pub fn lossy(text: &str) -> Self {
        let cut = prefix_within(text, N.min(usize::from(u8::MAX)));
        InlineName::new(cut).unwrap_or(InlineName { len: 0, bytes: [0; N] })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Copied whole from a `str` in `new`.
        std::str::from_utf8(self.bytes.get(..usize::from(self.len)).unwrap_or_default()).unwrap_or_default()
    }
}

impl<const N: usize> Deref for InlineName<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for InlineName<N> {
    fn eq(&self, other: &Self) -> bool {
        // Bytes past the length are zero: the same text is the same bytes (and no UTF-8
        // check, which `as_str` makes).
        self.len == other.len && self.bytes == other.bytes
    }
}

impl<const N: usize> Eq for InlineName<N> {}

impl<const N: usize> PartialOrd for InlineName<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for InlineName<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl<const N: usize> std::hash::Hash for InlineName<N> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl<const N: usize> fmt::Debug for InlineName<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for InlineName<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> Serialize for InlineName<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
pub(crate) fn prefix_within(text: &str, max: usize) -> &str {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.get(..cut).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn names_compare_order_and_hash_as_their_text() {
        let texts = ["", "a", "ab", "b", "per_minute", "é", &"z".repeat(32)];
        for x in texts {
            let nx = InlineName::<32>::new(x).unwrap();
            assert_eq!(nx.as_str(), x);
            assert_eq!(&*nx, x);
            assert_eq!(nx.to_string(), x);
            assert_eq!(format!("{nx:?}"), format!("{x:?}"));
            assert_eq!(serde_json::to_string(&nx).unwrap(), serde_json::to_string(x).unwrap());
            assert_eq!(hash(&nx), hash(x), "hashes as the str does");
            for y in texts {
                let ny = InlineName::<32>::new(y).unwrap();
                assert_eq!(nx == ny, x == y);
                assert_eq!(nx.cmp(&ny), x.cmp(y), "{x} vs {y}");
            }
        }
        assert!(InlineName::<32>::new(&"z".repeat(33)).is_none());
        assert_eq!(InlineName::<4>::lossy("abcdef").as_str(), "abcd");
        assert_eq!(
            InlineName::<4>::lossy("abcé").as_str(),
            "abc",
            "cut at a character boundary"
        );
        assert_eq!(InlineName::<4>::lossy("ab").as_str(), "ab");
    }
}
