//! How an error shows what a caller typed, without ever showing a secret.
//!
//! A key pasted where an id, a CIDR, a duration or a name goes must not reach stderr, a
//! log or an HTTP answer whole. Every error of this crate that repeats its input passes
//! it through [`quote`] (or [`path`] for a path); text that embeds input this crate does
//! not word itself (clap's and serde's messages) passes through [`scrub`].
//!
//! # What is secret-shaped
//!
//! A *token* is a run of characters other than white space and the quotes, brackets and
//! separators ``' " ` , ; ( ) [ ] { } < >``. A token is secret-shaped when it holds
//!
//! - [`SECRET_RUN`] (16) or more ASCII letters and digits in a row: a key's random part
//!   has at least 22, hex and base64 secrets far more; or
//! - [`SECRET_WORD`] (32) or more characters of `[A-Za-z0-9_-]` in a row: UUID-style keys
//!   (`8-4-4-4-12` hex digits) and base64url secrets broken up by `-` and `_`.
//!
//! Of a secret-shaped token only its public start is shown, then `…`: for a token that is
//! a key prefix (up to 24 characters of `[A-Za-z0-9_]` ending in `_`, as `sk_live_`)
//! followed by the long run, the prefix and the run's first four characters, which is
//! what a key's `start` shows; for any other, its first four characters. What follows the
//! start in the token is dropped, never shown in part.
//!
//! Ordinary input rarely holds such a run; when it does (a 20-letter word in a path
//! glob), an error shows its start only and still names the field and what is wrong. A
//! key id (`key_` and 22 base62 characters) is secret-shaped by this rule: an error about
//! a key the store knows prints its parsed id whole, not through this module.

use std::borrow::Cow;
use std::path::Path;

/// The fewest ASCII letters and digits in a row that make a token secret-shaped.
pub const SECRET_RUN: usize = 16;
/// The fewest characters of `[A-Za-z0-9_-]` in a row that make a token secret-shaped.
pub const SECRET_WORD: usize = 32;
/// Characters of a secret-shaped run shown after its prefix, as a key's `start` shows.
const SHOWN_SECRET_CHARS: usize = 4;
/// Characters of an input shown before it is cut, so hostile input stays small.
const SHOWN_CHARS: usize = 64;
/// The longest key prefix (as [`crate::token::MAX_PREFIX_LEN`]).
const MAX_PREFIX_LEN: usize = crate::token::MAX_PREFIX_LEN;

/// `input` quoted for an error message: whole when it is short and harmless; else cut to
/// 64 characters, every secret-shaped token cut to its public start, with its length in
/// bytes after it.
///
/// ```
/// use credstore::redact::quote;
///
/// assert_eq!(quote("10.0.0.0/33"), r#""10.0.0.0/33""#);
/// let key = "sk_live_9sN6LPwJvmAVZlXQQx9o89hC4IbeRFto3ciZeQ";
/// assert_eq!(quote(key), r#""sk_live_9sN6…" (46 bytes)"#);
/// assert_eq!(quote(&format!("GET {key}")), r#""GET sk_live_9sN6…" (50 bytes)"#);
/// ```
pub fn quote(input: &str) -> String {
    let shown = scrub(input);
    match shown.char_indices().nth(SHOWN_CHARS) {
        None if shown == input => format!("{input:?}"),
        None => format!("{shown:?} ({} bytes)", input.len()),
        Some((cut, _)) => {
            let head = shown.get(..cut).unwrap_or_default();
            format!("{:?} ({} bytes)", format!("{head}…"), input.len())
        }
    }
}

/// `text` with every secret-shaped token cut to its public start and `…`; the rest of
/// the text as it was. For messages that embed input verbatim (clap's, serde's).
///
/// ```
/// use credstore::redact::scrub;
///
/// let key = "sk_live_9sN6LPwJvmAVZlXQQx9o89hC4IbeRFto3ciZeQ";
/// assert_eq!(
///     scrub(&format!("invalid value '{key}' for '--ip <IP>'")),
///     "invalid value 'sk_live_9sN6…' for '--ip <IP>'"
/// );
/// assert_eq!(scrub("nothing to hide"), "nothing to hide");
/// ```
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for (at, token) in tokens(text) {
        if let Some(start) = public_start(token) {
            out.push_str(text.get(copied..at).unwrap_or_default());
            out.push_str(start);
            out.push('…');
            copied = at + token.len();
        }
    }
    if out.is_empty() {
        return Cow::Borrowed(text);
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Cow::Owned(out)
}

/// A path for an error message, each secret-shaped component cut to its public start.
pub fn path(path: &Path) -> String {
    scrub_parts(&path.display().to_string(), std::path::MAIN_SEPARATOR)
}

/// [`scrub`] applied to each part of `text` between `separator`s, so that a key in one
/// part leaves the others readable (`acme/sk_live_9sN6…`). Only for text whose parts
/// cannot hold the separator themselves (a path, `project/name`): `/` is no token
/// separator for [`scrub`], because base64 secrets contain it.
pub fn scrub_parts(text: &str, separator: char) -> String {
    let parts: Vec<Cow<'_, str>> = text.split(separator).map(scrub).collect();
    parts.join(separator.encode_utf8(&mut [0; 4]))
}

/// The tokens of `text` with their byte offsets.
fn tokens(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let base = text.as_ptr() as usize;
    text.split(is_separator)
        .filter(|token| !token.is_empty())
        .map(move |token| (token.as_ptr() as usize - base, token))
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\'' | '"' | '`' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>'
        )
}

/// The part of a secret-shaped token that may be shown; `None` for a harmless token.
fn public_start(token: &str) -> Option<&str> {
    let mut run = 0;
    let mut word = 0;
    let mut long_word = false;
    for (i, b) in token.bytes().enumerate() {
        run = if b.is_ascii_alphanumeric() { run + 1 } else { 0 };
        word = if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            word + 1
        } else {
            0
        };
        long_word |= word >= SECRET_WORD;
        if run >= SECRET_RUN {
            let run_start = i + 1 - run;
            let prefix = token.get(..run_start).unwrap_or_default();
            return Some(if is_key_prefix(prefix) {
                token.get(..run_start + SHOWN_SECRET_CHARS).unwrap_or(prefix)
            } else {
                first_chars(token, SHOWN_SECRET_CHARS)
            });
        }
    }
    long_word.then(|| first_chars(token, SHOWN_SECRET_CHARS))
}

/// A key prefix's shape: 1 to 24 characters of `[A-Za-z0-9_]` ending in `_`.
fn is_key_prefix(text: &str) -> bool {
    text.len() <= MAX_PREFIX_LEN && text.ends_with('_') && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((end, _)) => text.get(..end).unwrap_or_default(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_live_9sN6LPwJvmAVZlXQQx9o89hC4IbeRFto3ciZeQ";
    const RANDOM: &str = "9sN6LPwJvmAVZlXQQx9o89hC4IbeRFto3ciZeQ";

    #[test]
    fn short_harmless_input_is_quoted_whole() {
        for input in [
            "",
            "10.0.0.0/33",
            "docs:Read",
            "GET /v1/users/**x",
            "2026-01-01T00:00:00Z",
            "ümlaut",
        ] {
            assert_eq!(quote(input), format!("{input:?}"));
            assert_eq!(scrub(input), input);
        }
        // Short runs are harmless; a key id's 22 characters are not (see the module docs).
        assert_eq!(scrub("a:b AND c:d 12d3-a456"), "a:b AND c:d 12d3-a456");
        assert_eq!(scrub("key_0000000000000000000000"), "key_0000…");
    }

    #[test]
    fn a_key_shows_its_prefix_and_four_characters() {
        assert_eq!(quote(KEY), r#""sk_live_9sN6…" (46 bytes)"#);
        assert_eq!(quote("cmp_0123456789abcdefABCDEF"), r#""cmp_0123…" (26 bytes)"#);
        // Inside other text, each secret token is cut and the rest kept.
        assert_eq!(
            quote(&format!("a:b AND {KEY} OR c:d")),
            r#""a:b AND sk_live_9sN6… OR c:d" (61 bytes)"#
        );
        assert_eq!(
            scrub(&format!("'{KEY}', \"{KEY}\"")),
            "'sk_live_9sN6…', \"sk_live_9sN6…\""
        );
        // Scrubbing is idempotent: what it shows is harmless.
        assert_eq!(scrub(&scrub(KEY)), scrub(KEY));
    }

    #[test]
    fn other_secret_shapes_show_four_characters() {
        let cases = [
            // A random run with no key prefix before it in the token.
            (format!("10.0.0.1/{KEY}"), "10.0…"),
            (format!("k={KEY}"), "k=sk…"),
            (RANDOM.to_string(), "9sN6…"),
            // A UUID-style key: runs of at most 12, one word of 36.
            ("123e4567-e89b-12d3-a456-426614174000".to_string(), "123e…"),
            // base64 with / and +: one token, its longest run over 16.
            ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(), "wJal…"),
            // A prefix too long to be a key prefix.
            (format!("abcdefghij_klmnopqrst_uvwxyz_{RANDOM}"), "abcd…"),
        ];
        for (input, shown) in cases {
            assert_eq!(scrub(&input), shown, "{input}");
        }
    }

    #[test]
    fn long_input_is_cut() {
        let long = "a.".repeat(100);
        assert_eq!(quote(&long), format!("{:?} (200 bytes)", format!("{}…", &long[..64])));
    }

    #[test]
    fn no_window_of_the_random_part_survives() {
        for input in [
            KEY.to_string(),
            format!("  {KEY}\n"),
            format!("GET /v1/{KEY}"),
            format!("{KEY}:name"),
            format!("x {KEY} y {KEY}"),
            format!("{}{KEY}", "p".repeat(70)),
        ] {
            for shown in [quote(&input), scrub(&input).into_owned(), path(Path::new(&input))] {
                for window in RANDOM.as_bytes().windows(5) {
                    let window = std::str::from_utf8(window).unwrap();
                    assert!(!shown.contains(window), "{window} in {shown}");
                }
            }
        }
    }

    #[test]
    fn paths_keep_their_other_components() {
        let p = Path::new("/tmp/x").join(KEY).join("STORE");
        assert_eq!(path(&p), "/tmp/x/sk_live_9sN6…/STORE");
        assert_eq!(path(Path::new("/var/lib/credstore")), "/var/lib/credstore");
    }
}
