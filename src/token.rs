//! The key format: `{prefix}{random}{checksum}`, and the [`Token`] that exists only when a
//! presented key parsed.
//!
//! - prefix: 1 to 24 characters of `[A-Za-z0-9_]` ending in `_` (`sk_live_`, `cmp_`);
//! - random: base62 (`0-9A-Za-z`) from the OS CSPRNG, at least 22 characters (128 bits);
//! - checksum (optional): CRC32 (IEEE) of prefix and random, in base62, most significant
//!   digit first, left-padded with `0` to 6 characters, as GitHub's token format does.
//!
//! The checksum rejects typos and fakes before any lookup and lets secret scanners
//! confirm a match offline; it is no security control.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::secret::Secret;

/// The base62 alphabet, in ASCII order (so fixed-width base62 sorts like the number).
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// The fewest random characters a format may carry: 22 base62 characters carry 130 bits.
pub const MIN_RANDOM_LEN: usize = 22;
/// The most random characters a format may carry.
pub const MAX_RANDOM_LEN: usize = 64;
/// The default number of random characters (about 190 bits).
pub const DEFAULT_RANDOM_LEN: usize = 32;
/// The longest prefix.
pub const MAX_PREFIX_LEN: usize = 24;
/// Random characters shown in a key's `start`.
const START_RANDOM_CHARS: usize = 4;
/// The prefix of admin keys ("credstore admin"): keys for the management API, never
/// accepted by customer verification. No customer format may use it.
pub const ADMIN_PREFIX: &str = "csa_";

/// The environment a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// Production keys.
    Live,
    /// Test keys: never charged.
    Test,
}

impl Env {
    /// `live` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Live => "live",
            Env::Test => "test",
        }
    }

    /// The environment a prefix suggests: `test` when it has a `test` segment, else `live`.
    pub fn guess_from_prefix(prefix: &str) -> Env {
        if prefix.split('_').any(|part| part.eq_ignore_ascii_case("test")) {
            Env::Test
        } else {
            Env::Live
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Env {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Env::Live),
            "test" => Ok(Env::Test),
            other => Err(InputError::InvalidEnv(other.to_string())),
        }
    }
}

/// A key format: prefix, environment, random length and whether a checksum follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Format {
    prefix: String,
    env: Env,
    random_len: u8,
    checksum: bool,
}

/// Checks a key prefix: 1 to 24 characters of `[A-Za-z0-9_]` ending in `_`.
///
/// # Errors
/// [`InputError::InvalidPrefix`].
pub fn validate_prefix(prefix: &str) -> Result<(), InputError> {
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix.ends_with('_')
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !prefix_ok {
        return Err(InputError::InvalidPrefix(prefix.to_string()));
    }
    Ok(())
}

impl Format {
    /// A format, checked.
    ///
    /// # Errors
    /// [`InputError::InvalidPrefix`] for a prefix that is not 1 to 24 characters of
    /// `[A-Za-z0-9_]` ending in `_`; [`InputError::InvalidRandomLength`] for a random part
    /// under 22 characters (128 bits) or over 64.
    pub fn new(prefix: &str, env: Env, random_len: usize, checksum: bool) -> Result<Self, InputError> {
        validate_prefix(prefix)?;
        if !(MIN_RANDOM_LEN..=MAX_RANDOM_LEN).contains(&random_len) {
            return Err(InputError::InvalidRandomLength {
                len: random_len,
                min: MIN_RANDOM_LEN,
                max: MAX_RANDOM_LEN,
            });
        }
        Ok(Format {
            prefix: prefix.to_string(),
            env,
            // In range 22..=64, checked above.
            random_len: random_len as u8,
            checksum,
        })
    }

    /// `sk_live_` (or `sk_test_`), 32 random characters, with a checksum.
    pub fn default_for(env: Env) -> Self {
        let prefix = match env {
            Env::Live => "sk_live_",
            Env::Test => "sk_test_",
        };
        Format {
            prefix: prefix.to_string(),
            env,
            random_len: DEFAULT_RANDOM_LEN as u8,
            checksum: true,
        }
    }

    /// The admin keys' format: [`ADMIN_PREFIX`], live, 32 random characters and a
    /// checksum. A key in it is an admin key: a service account with the `admin` role,
    /// for the management API only.
    pub fn admin() -> Self {
        Format {
            prefix: ADMIN_PREFIX.to_string(),
            env: Env::Live,
            random_len: DEFAULT_RANDOM_LEN as u8,
            checksum: true,
        }
    }

    /// Whether this is a format of admin keys (its prefix is [`ADMIN_PREFIX`]).
    pub fn is_admin(&self) -> bool {
        self.prefix == ADMIN_PREFIX
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The environment of keys in this format.
    pub fn env(&self) -> Env {
        self.env
    }

    /// Random characters per key.
    pub fn random_len(&self) -> usize {
        usize::from(self.random_len)
    }

    /// Whether keys end in a checksum.
    pub fn has_checksum(&self) -> bool {
        self.checksum
    }

    /// Total length of a key in this format.
    pub fn total_len(&self) -> usize {
        self.prefix.len() + self.random_len() + if self.checksum { CHECKSUM_LEN } else { 0 }
    }

    /// Bits of randomness a key carries.
    pub fn random_bits(&self) -> f64 {
        self.random_len() as f64 * 62f64.log2()
    }

    /// The displayable start of a key in this format: the prefix plus the first four
    /// random characters.
    pub fn start_of<'k>(&self, key: &'k str) -> &'k str {
        let end = self.prefix.len() + START_RANDOM_CHARS;
        key.get(..end).unwrap_or_default()
    }

    /// Issues a fresh key in this format from the OS CSPRNG.
    pub fn generate(&self) -> Secret {
        let mut text = String::with_capacity(self.total_len());
        text.push_str(&self.prefix);
        let mut random = vec![0u8; self.random_len()];
        fill_base62(&mut random);
        // fill_base62 writes only ASCII alphanumerics.
        text.extend(random.iter().map(|&b| char::from(b)));
        if self.checksum {
            text.push_str(&checksum(text.as_bytes()));
        }
        zeroize::Zeroize::zeroize(&mut random);
        Secret::new(text)
    }

    /// Parses `text` as a key of this format.
    ///
    /// # Errors
    /// [`Malformed`] naming the first check that failed.
    pub fn parse<'a>(&'a self, text: &'a str) -> Result<Token<'a>, Malformed> {
        let bytes = text.as_bytes();
        if !bytes.starts_with(self.prefix.as_bytes()) {
            return Err(Malformed::UnknownPrefix);
        }
        if bytes.len() != self.total_len() {
            return Err(Malformed::WrongLength);
        }
        let body = bytes.get(self.prefix.len()..).ok_or(Malformed::WrongLength)?;
        if !all_base62(body) {
            return Err(Malformed::BadAlphabet);
        }
        if self.checksum {
            let split = self.prefix.len() + self.random_len();
            let (head, sum) = bytes.split_at(split);
            if checksum_bytes(head) != sum {
                return Err(Malformed::BadChecksum);
            }
        }
        Ok(Token { text, format: self })
    }
}

impl fmt::Display for Format {
    /// `comp_ + 27 random, no checksum (32 characters, live)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checksum = if self.checksum { "checksum" } else { "no checksum" };
        write!(
            f,
            "{} + {} random, {checksum} ({} characters, {})",
            self.prefix,
            self.random_len,
            self.total_len(),
            self.env
        )
    }
}

/// Why a presented key is malformed. No variant carries the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The key is empty.
    #[error("empty key")]
    Empty,
    /// No registered format has this prefix.
    #[error("unknown key prefix")]
    UnknownPrefix,
    /// The length does not fit any registered format with this prefix.
    #[error("wrong key length")]
    WrongLength,
    /// A character outside base62 after the prefix.
    #[error("invalid character in key")]
    BadAlphabet,
    /// The checksum does not match.
    #[error("key checksum mismatch")]
    BadChecksum,
}

impl Malformed {
    /// How far a key got through [`Format::parse`]'s checks before this one failed: of
    /// the failures against several formats sharing a prefix, the furthest is the one to
    /// report (a `comp_` key of the right length with a `!` in it has a bad character,
    /// though it is also the wrong length for a longer `comp_` format).
    fn specificity(self) -> u8 {
        match self {
            Malformed::Empty | Malformed::UnknownPrefix => 0,
            Malformed::WrongLength => 1,
            Malformed::BadAlphabet => 2,
            Malformed::BadChecksum => 3,
        }
    }
}

/// A key that parsed against a registered format. Downstream code takes a `Token`, never
/// a `&str` it must re-check.
#[derive(Clone, Copy)]
pub struct Token<'a> {
    text: &'a str,
    format: &'a Format,
}

impl<'a> Token<'a> {
    /// The whole key, for hashing.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The format it parsed against.
    pub fn format(&self) -> &'a Format {
        self.format
    }

    /// The prefix plus the first four random characters: safe to display.
    pub fn start(&self) -> &'a str {
        self.format.start_of(self.text)
    }
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}...)", self.start())
    }
}

/// The formats a store has registered; `verify` accepts keys of these only.
#[derive(Debug, Clone, Default)]
pub struct FormatSet {
    /// Longest prefix first, so `sk_live_` is tried before a hypothetical `sk_`.
    formats: Vec<Format>,
}

impl FormatSet {
    /// A set of the given formats.
    pub fn new(formats: impl IntoIterator<Item = Format>) -> Self {
        let mut set = FormatSet::default();
        for f in formats {
            set.insert(f);
        }
        set
    }

    /// Adds a format (no-op if present).
    pub fn insert(&mut self, format: Format) {
        if self.formats.contains(&format) {
            return;
        }
        self.formats.push(format);
        self.formats.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
    }

    /// Whether the set holds this format.
    pub fn contains(&self, format: &Format) -> bool {
        self.formats.contains(format)
    }

    /// The environment registered for `prefix`, if any.
    pub fn env_of_prefix(&self, prefix: &str) -> Option<Env> {
        self.formats.iter().find(|f| f.prefix == prefix).map(|f| f.env)
    }

    /// The registered formats with this prefix.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Format> + 'a {
        self.formats.iter().filter(move |f| f.prefix == prefix)
    }

    /// The format for a new key, as `credstore create` and the sidecar choose it.
    ///
    /// - The prefix is the one asked for, else the environment's default (live when none
    ///   is given).
    /// - Once the prefix has registered formats, a request names one of them: the one
    ///   whose shape matches what was asked (its random or total length when one is
    ///   given; no checksum when [`FormatRequest::no_checksum`]; leaving both out matches
    ///   every format). No match, or several, is an error unless
    ///   [`FormatRequest::new_format`] asks for a further format of the prefix
    ///   explicitly.
    /// - Otherwise a format of the shape asked for: length default
    ///   [`DEFAULT_RANDOM_LEN`] random characters; environment the one given, else the
    ///   prefix's registered one, else a guess from the prefix.
    ///
    /// # Errors
    /// [`InputError::PrefixEnvironmentConflict`] when the environment contradicts the
    /// prefix's registered formats; [`InputError::FormatNotRegistered`] when the prefix's
    /// registered formats do not name exactly one and no new format was asked for;
    /// [`InputError::InvalidTotalLength`] for a total length that leaves a random part
    /// out of range; [`Format::new`]'s errors for a bad shape.
    pub fn choose(&self, request: &FormatRequest<'_>) -> Result<Format, InputError> {
        // The admin keys' prefix has one format, whatever else is registered or asked.
        if request.prefix == Some(ADMIN_PREFIX) {
            let other_shape = request.length.is_some() || request.no_checksum || request.new_format;
            if other_shape || request.env.is_some_and(|e| e != Env::Live) {
                return Err(InputError::ReservedPrefix {
                    prefix: ADMIN_PREFIX.to_string(),
                    why: "no other format may use it",
                });
            }
            return Ok(Format::admin());
        }
        let env = request.env;
        let prefix = request.prefix.map_or_else(
            || Format::default_for(env.unwrap_or(Env::Live)).prefix().to_string(),
            str::to_string,
        );
        let registered: Vec<&Format> = self.with_prefix(&prefix).collect();
        if let Some(conflict) = registered.iter().find(|f| env.is_some_and(|e| e != f.env())) {
            return Err(InputError::PrefixEnvironmentConflict {
                prefix: prefix.clone(),
                registered: conflict.env(),
            });
        }
        if let Some(FormatLength::Random(len)) = request.length
            && !(MIN_RANDOM_LEN..=MAX_RANDOM_LEN).contains(&len)
        {
            return Err(InputError::InvalidRandomLength {
                len,
                min: MIN_RANDOM_LEN,
                max: MAX_RANDOM_LEN,
            });
        }
        if !request.new_format && !registered.is_empty() {
            let matching: Vec<&&Format> = registered.iter().filter(|f| request.matches(f)).collect();
            if let [only] = matching.as_slice() {
                return Ok((**only).clone());
            }
            return Err(InputError::FormatNotRegistered {
                prefix: prefix.clone(),
                registered: registered.iter().map(|f| f.to_string()).collect(),
                matching: matching.len(),
            });
        }
        let env = env
            .or_else(|| registered.first().map(|f| f.env()))
            .unwrap_or_else(|| Env::guess_from_prefix(&prefix));
        let checksum = !request.no_checksum;
        let random_len = match request.length {
            None => DEFAULT_RANDOM_LEN,
            Some(FormatLength::Random(n)) => n,
            Some(FormatLength::Total(total)) => random_len_for_total(&prefix, total, checksum)?,
        };
        Format::new(&prefix, env, random_len, checksum)
    }

    /// The registered formats.
    pub fn iter(&self) -> impl Iterator<Item = &Format> {
        self.formats.iter()
    }

    /// The formats customer verification accepts: every format but the admin keys', and
    /// of those only the ones whose prefix `allowed` names, when it is given.
    pub fn for_customers(&self, allowed: Option<&[String]>) -> FormatSet {
        let accepted = |f: &&Format| !f.is_admin() && allowed.is_none_or(|a| a.contains(&f.prefix));
        FormatSet::new(self.formats.iter().filter(accepted).cloned())
    }

    /// Parses `text` against the registered formats.
    ///
    /// # Errors
    /// [`Malformed`]: the most specific failure among the formats whose prefix matched
    /// (a bad checksum over a bad character over a wrong length: the one that got
    /// furthest, whatever order the formats are tried in), or [`Malformed::UnknownPrefix`]
    /// when none did.
    pub fn parse<'a>(&'a self, text: &'a str) -> Result<Token<'a>, Malformed> {
        if text.is_empty() {
            return Err(Malformed::Empty);
        }
        let mut most_specific = Malformed::UnknownPrefix;
        for format in &self.formats {
            match format.parse(text) {
                Ok(token) => return Ok(token),
                Err(e) if e.specificity() > most_specific.specificity() => most_specific = e,
                Err(_) => {}
            }
        }
        Err(most_specific)
    }
}

/// How long a new key's format is asked to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatLength {
    /// Random characters (`--length`).
    Random(usize),
    /// The whole key: prefix, random part and checksum (`--total-length`).
    Total(usize),
}

/// What `credstore create` (and the sidecar's `POST /v1/api-keys`) asks of a new key's
/// format; [`FormatSet::choose`] answers it. The default asks for nothing: the default
/// prefix's format.
#[derive(Debug, Clone, Copy, Default)]
pub struct FormatRequest<'a> {
    /// The prefix (default: `sk_live_`, or `sk_test_` for the test environment).
    pub prefix: Option<&'a str>,
    /// The environment.
    pub env: Option<Env>,
    /// The random or total length.
    pub length: Option<FormatLength>,
    /// No checksum (`--no-checksum`).
    pub no_checksum: bool,
    /// Register a further format for a prefix that has one (`--new-format`).
    pub new_format: bool,
}

impl FormatRequest<'_> {
    /// Whether a registered format of the prefix has the shape asked for.
    fn matches(&self, format: &Format) -> bool {
        let length = match self.length {
            None => true,
            Some(FormatLength::Random(n)) => format.random_len() == n,
            Some(FormatLength::Total(n)) => format.total_len() == n,
        };
        length && !(self.no_checksum && format.has_checksum())
    }
}

/// The random characters a key of `total` characters has after `prefix` (and the
/// checksum).
fn random_len_for_total(prefix: &str, total: usize, checksum: bool) -> Result<usize, InputError> {
    let fixed = prefix.len() + if checksum { CHECKSUM_LEN } else { 0 };
    let random = total.saturating_sub(fixed);
    let fits = |random: usize| (MIN_RANDOM_LEN..=MAX_RANDOM_LEN).contains(&random);
    if fits(random) {
        return Ok(random);
    }
    let after = if checksum {
        format!(
            "the prefix {} and the {CHECKSUM_LEN}-character checksum",
            crate::redact::quote(prefix)
        )
    } else {
        format!("the prefix {}", crate::redact::quote(prefix))
    };
    let hint = if checksum && fits(total.saturating_sub(prefix.len())) {
        "; without a checksum (--no-checksum) it fits"
    } else {
        ""
    };
    Err(InputError::InvalidTotalLength(format!(
        "{total} leaves {random} random characters after {after}: the random part must be \
         {MIN_RANDOM_LEN} to {MAX_RANDOM_LEN} characters, the total {} to {}{hint}",
        fixed + MIN_RANDOM_LEN,
        fixed + MAX_RANDOM_LEN,
    )))
}

/// The 6-character base62 CRC32 checksum of `head`.
pub fn checksum(head: &[u8]) -> String {
    let digits = checksum_bytes(head);
    // checksum_bytes yields base62 ASCII only.
    digits.iter().map(|&b| char::from(b)).collect()
}

fn checksum_bytes(head: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(head);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = digit((n % 62) as usize);
        n /= 62;
    }
    out
}

/// Whether every byte is an ASCII letter or digit. Branch-free and without an early exit,
/// so the compiler vectorises it: a key is checked 16 or 32 bytes at a time, where a loop
/// stopping at the first bad byte took about 7 instructions a byte on the verify path.
fn all_base62(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        ok & (digit | letter)
    })
}

/// The base62 digit of value `i` (`i < 62`).
fn digit(i: usize) -> u8 {
    BASE62.get(i).copied().unwrap_or(b'0')
}

/// Fills `buf` with uniformly random base62 characters from the OS CSPRNG.
pub(crate) fn fill_base62(buf: &mut [u8]) {
    let mut pool = [0u8; 64];
    let mut filled = 0;
    while filled < buf.len() {
        fill_random(&mut pool);
        for &b in &pool {
            // 248 = 4 * 62: rejecting 248..=255 keeps every character equally likely.
            if b < 248
                && let Some(slot) = buf.get_mut(filled)
            {
                *slot = digit(usize::from(b % 62));
                filled += 1;
            }
        }
    }
    zeroize::Zeroize::zeroize(&mut pool);
}

/// Fills `buf` from the OS CSPRNG.
///
/// # Panics
/// If the operating system has no usable random source: issuing predictable keys is
/// never an acceptable fallback.
pub(crate) fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// Encodes `n` as fixed-width base62 (`width` digits, most significant first).
pub(crate) fn base62_fixed(mut n: u128, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = digit((n % 62) as usize);
        n /= 62;
    }
    out.into_iter().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_keys_format_is_the_registered_one_or_the_shape_asked_for() {
        let comp = Format::new("comp_", Env::Live, 27, false).unwrap();
        let set = FormatSet::new([Format::default_for(Env::Live), comp.clone()]);
        let ask = |prefix, env, length, no_checksum, new_format| {
            set.choose(&FormatRequest {
                prefix,
                env,
                length,
                no_checksum,
                new_format,
            })
        };
        assert_eq!(
            set.choose(&FormatRequest::default()).unwrap(),
            Format::default_for(Env::Live)
        );
        assert_eq!(
            ask(None, Some(Env::Test), None, false, false).unwrap(),
            Format::default_for(Env::Test)
        );
        // The one format registered for a prefix, when no shape is asked for.
        assert_eq!(
            ask(Some("sk_live_"), None, None, false, false).unwrap(),
            Format::default_for(Env::Live)
        );
        assert!(matches!(
            ask(Some("sk_live_"), Some(Env::Test), None, false, false),
            Err(InputError::PrefixEnvironmentConflict { .. })
        ));
        // The registered format, named by its random or its total length.
        assert_eq!(ask(Some("comp_"), None, None, false, false).unwrap(), comp);
        assert_eq!(
            ask(Some("comp_"), None, Some(FormatLength::Random(27)), true, false).unwrap(),
            comp
        );
        assert_eq!(
            ask(Some("comp_"), None, Some(FormatLength::Total(32)), false, false).unwrap(),
            comp
        );
        // Another shape for a registered prefix: refused unless asked for explicitly.
        assert!(matches!(
            ask(Some("comp_"), None, Some(FormatLength::Random(40)), false, false),
            Err(InputError::FormatNotRegistered { matching: 0, .. })
        ));
        let longer = ask(Some("comp_"), None, Some(FormatLength::Random(40)), false, true).unwrap();
        assert_eq!(
            (
                longer.prefix(),
                longer.env(),
                longer.random_len(),
                longer.has_checksum()
            ),
            ("comp_", Env::Live, 40, true)
        );
        // A new prefix: the shape asked for, by total length too.
        let cmp = ask(Some("cmp_"), None, Some(FormatLength::Total(42)), false, false).unwrap();
        assert_eq!((cmp.random_len(), cmp.has_checksum(), cmp.total_len()), (32, true, 42));
        assert!(matches!(
            ask(Some("new_"), None, Some(FormatLength::Total(31)), false, false),
            Err(InputError::InvalidTotalLength(_))
        ));
        assert_eq!(
            ask(Some("new_"), None, Some(FormatLength::Total(31)), true, false)
                .unwrap()
                .random_len(),
            27
        );
        assert!(
            ask(Some("x"), None, Some(FormatLength::Random(1)), false, false).is_err(),
            "too few random characters"
        );
        // Two formats for one prefix: a request must say which.
        let two = FormatSet::new([comp.clone(), Format::new("comp_", Env::Live, 40, true).unwrap()]);
        assert!(matches!(
            two.choose(&FormatRequest {
                prefix: Some("comp_"),
                ..FormatRequest::default()
            }),
            Err(InputError::FormatNotRegistered { matching: 2, .. })
        ));
        assert_eq!(
            two.choose(&FormatRequest {
                prefix: Some("comp_"),
                length: Some(FormatLength::Total(32)),
                ..FormatRequest::default()
            })
            .unwrap(),
            comp
        );
    }

    #[test]
    fn the_most_specific_fault_wins_whatever_the_order_of_the_formats() {
        let short = Format::new("comp_", Env::Live, 27, false).unwrap();
        let long = Format::new("comp_", Env::Live, 40, true).unwrap();
        let mut bad = short.generate().expose().to_string();
        bad.replace_range(10..11, "!");
        for set in [
            FormatSet::new([short.clone(), long.clone()]),
            FormatSet::new([long.clone(), short.clone()]),
        ] {
            assert_eq!(set.parse(&bad).unwrap_err(), Malformed::BadAlphabet);
        }
    }

    #[test]
    fn customers_never_get_the_admin_format_and_may_be_restricted_by_prefix() {
        let comp = Format::new("comp_", Env::Live, 27, false).unwrap();
        let all = FormatSet::new([Format::admin(), Format::default_for(Env::Live), comp.clone()]);
        let prefixes = |set: &FormatSet| set.iter().map(|f| f.prefix().to_string()).collect::<Vec<_>>();
        assert_eq!(prefixes(&all.for_customers(None)), ["sk_live_", "comp_"]);
        let only = ["comp_".to_string(), ADMIN_PREFIX.to_string()];
        assert_eq!(prefixes(&all.for_customers(Some(&only))), ["comp_"]);
        assert!(Format::admin().is_admin() && !comp.is_admin());
        // `choose` gives the admin format for its prefix, registered or not.
        assert_eq!(
            FormatSet::default()
                .choose(&FormatRequest {
                    prefix: Some(ADMIN_PREFIX),
                    ..FormatRequest::default()
                })
                .unwrap(),
            Format::admin()
        );
    }

    #[test]
    fn the_alphabet_check_agrees_with_the_standard_library_on_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(all_base62(&[b]), b.is_ascii_alphanumeric(), "byte {b}");
            let mut key = *b"abcdefghijklmnopqrstuvwxyz0123456789ABCD";
            for at in [0, 17, 39] {
                let mut k = key;
                k[at] = b;
                assert_eq!(all_base62(&k), b.is_ascii_alphanumeric(), "byte {b} at {at}");
            }
            key[0] = b'A';
            assert!(all_base62(&key));
        }
        assert!(all_base62(b""));
    }

    fn live() -> Format {
        Format::default_for(Env::Live)
    }

    #[test]
    fn generated_keys_parse_and_have_the_right_shape() {
        let f = live();
        for _ in 0..100 {
            let key = f.generate();
            let text = key.expose();
            assert_eq!(text.len(), 8 + 32 + 6);
            assert!(text.starts_with("sk_live_"));
            let token = f.parse(text).unwrap();
            assert_eq!(token.start(), &text[..12]);
        }
    }

    #[test]
    fn seed_shapes_are_expressible() {
        let comp = Format::new("comp_", Env::Live, 27, false).unwrap();
        assert_eq!(comp.total_len(), 32);
        assert_eq!(comp.generate().expose().len(), 32);
        let cmp = Format::new("cmp_", Env::Live, 32, true).unwrap();
        assert!(cmp.parse(cmp.generate().expose()).is_ok());
        let test = Format::default_for(Env::Test);
        assert!(test.generate().expose().starts_with("sk_test_"));
        assert_eq!(Env::guess_from_prefix("sk_test_"), Env::Test);
        assert_eq!(Env::guess_from_prefix("sk_live_"), Env::Live);
    }

    #[test]
    fn formats_under_128_bits_or_with_bad_prefixes_are_refused() {
        assert!(matches!(
            Format::new("cmp_", Env::Live, 21, true),
            Err(InputError::InvalidRandomLength { len: 21, .. })
        ));
        assert!(Format::new("cmp_", Env::Live, 22, true).unwrap().random_bits() >= 128.0);
        for bad in ["", "cmp", "c-p_", "toolongprefix_abcdefghijk_", "sk live_"] {
            assert!(
                matches!(Format::new(bad, Env::Live, 32, true), Err(InputError::InvalidPrefix(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_malformation_is_named() {
        let f = live();
        let set = FormatSet::new([f.clone()]);
        let key = f.generate();
        let text = key.expose();
        assert_eq!(set.parse("").unwrap_err(), Malformed::Empty);
        assert_eq!(set.parse("pk_live_abc").unwrap_err(), Malformed::UnknownPrefix);
        assert_eq!(set.parse(&text[..text.len() - 1]).unwrap_err(), Malformed::WrongLength);
        let mut bad_char = text.to_string();
        bad_char.replace_range(10..11, "-");
        assert_eq!(set.parse(&bad_char).unwrap_err(), Malformed::BadAlphabet);
        let mut typo = text.to_string();
        let c = if &typo[10..11] == "a" { "b" } else { "a" };
        typo.replace_range(10..11, c);
        assert_eq!(set.parse(&typo).unwrap_err(), Malformed::BadChecksum);
    }

    #[test]
    fn checksum_matches_a_known_value() {
        // CRC32("sk_live_") = 0x8d8b8bd0 per the IEEE polynomial; recompute in base62.
        let mut n = crc32fast::hash(b"sk_live_");
        let mut expected = String::new();
        for _ in 0..6 {
            expected.insert(0, char::from(digit((n % 62) as usize)));
            n /= 62;
        }
        assert_eq!(checksum(b"sk_live_"), expected);
        assert_eq!(checksum(b"").len(), 6);
        assert_eq!(checksum(b""), "000000");
    }

    #[test]
    fn base62_fixed_sorts_like_numbers() {
        let a = base62_fixed(1000, 22);
        let b = base62_fixed(1001, 22);
        let c = base62_fixed(u128::from(u64::MAX), 22);
        assert!(a < b && b < c);
        assert_eq!(base62_fixed(0, 3), "000");
        assert_eq!(base62_fixed(61, 2), "0z");
    }
}
