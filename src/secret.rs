//! Types for secret material: zeroized on drop, redacted in `Debug` and `Display`.
//!
//! Nothing in credstore prints, logs or serialises a [`Secret`] or a [`Pepper`] by accident:
//! neither implements `Serialize`, and their `Debug`/`Display` print `<redacted>`. The only
//! way to read one is to ask for it by name ([`Secret::expose`]).

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::error::InputError;

/// A secret string (an API key as issued), zeroized when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a string; the string is zeroized when the `Secret` is dropped.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret itself. Call this only where the secret must leave the process
    /// (shown once to the user who created the key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The 32-byte key of the keyed hash that turns a token into its tag.
///
/// Supplied by the host (config, or `CREDSTORE_PEPPER` as 64 hex characters); only a
/// development store keeps one in a 0600 `pepper.key` file beside the data.
#[derive(Clone)]
pub struct Pepper(Box<[u8; 32]>);

impl Pepper {
    /// A pepper from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Pepper(Box::new(bytes))
    }

    /// A fresh random pepper from the OS CSPRNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        crate::token::fill_random(&mut bytes);
        let pepper = Pepper::from_bytes(bytes);
        bytes.zeroize();
        pepper
    }

    /// Parses 64 hex characters (surrounding whitespace allowed).
    ///
    /// # Errors
    /// [`InputError::InvalidPepper`] when the text is not exactly 32 bytes of hex.
    pub fn from_hex(text: &str) -> Result<Self, InputError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| InputError::InvalidPepper)?;
        let pepper = Pepper::from_bytes(bytes);
        bytes.zeroize();
        Ok(pepper)
    }

    /// The pepper as 64 lowercase hex characters, zeroized on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(*self.0))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for Pepper {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new("sk_live_supersecretvalue".into());
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
        assert_eq!(s.expose(), "sk_live_supersecretvalue");
        let p = Pepper::from_bytes([7u8; 32]);
        assert!(!format!("{p:?}").contains("07"));
    }

    #[test]
    fn pepper_hex_round_trip_and_errors() {
        let p = Pepper::random();
        let q = Pepper::from_hex(&p.to_hex()).unwrap();
        assert_eq!(p.bytes(), q.bytes());
        assert_eq!(Pepper::from_hex("abc").unwrap_err(), InputError::InvalidPepper);
        assert_eq!(
            Pepper::from_hex(&"zz".repeat(32)).unwrap_err(),
            InputError::InvalidPepper
        );
    }
}
