//! The referrer allowlist: [`ReferrerAllowlist`], host patterns matched against the host
//! of a `Referer` or `Origin` header, which [`referrer_host`] and the allowlist find in one
//! pass over the URL's authority.

use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::bytes::eq_lowered;
use super::macros::source_list_impls;
use super::quote;
use crate::error::InputError;

/// The longest host name in a referrer pattern, in bytes (as DNS allows).
pub const MAX_HOST_LEN: usize = 253;

/// The sites a key may be used from, by the host of the `Referer` or `Origin` header.
/// Empty means unrestricted.
///
/// Patterns, compared case-insensitively:
/// - `example.com`: exactly that host (not `www.example.com`);
/// - `*.example.com`: any subdomain at any depth (`a.example.com`, `a.b.example.com`),
///   but not the apex `example.com` itself: list both to allow both.
///
/// A pattern is a host name only: labels of 1 to 63 characters of `[a-z0-9_-]` (IDNs in
/// their `xn--` form), at most [`MAX_HOST_LEN`] bytes, no scheme, port, path or IPv6
/// literal. IPv4 literals (`127.0.0.1`) are accepted as exact hosts.
/// Serialises as its entries, as given.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ReferrerAllowlist {
    sources: Vec<String>,
    /// Exact hosts, lower case.
    exact: Vec<Box<str>>,
    /// Subdomain suffixes with their leading dot (`.example.com`), lower case.
    suffixes: Vec<Box<str>>,
}

impl ReferrerAllowlist {
    /// Parses a list of host patterns.
    ///
    /// # Errors
    /// [`InputError::InvalidReferrer`] for the first pattern that is not a host name or
    /// `*.` and a host name.
    pub fn new<I, S>(patterns: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = ReferrerAllowlist::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let (wildcard, host) = parse_host_pattern(pattern)
                .map_err(|why| InputError::InvalidReferrer(format!("{}: {why}", quote(pattern))))?;
            let host = host.to_ascii_lowercase();
            if wildcard {
                list.suffixes.push(format!(".{host}").into_boxed_str());
            } else {
                list.exact.push(host.into_boxed_str());
            }
            list.sources.push(pattern.to_string());
        }
        Ok(list)
    }

    /// True when the list is empty, or the host of `referrer` (a full URL or a bare
    /// host, as in a `Referer` or `Origin` header; see [`referrer_host`]) matches a
    /// pattern. A referrer whose host cannot be found is refused by a non-empty list;
    /// so is a missing header, passed as `""`. Does not allocate.
    ///
    /// One pass over the referrer finds and checks the host; an IPv6 literal is refused
    /// without parsing it, since no pattern can name one.
    pub fn allows(&self, referrer: &str) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        let bytes = referrer.trim_ascii().as_bytes();
        let Some(found) = scan_authority(bytes) else {
            return false;
        };
        // A bracketed host (an IPv6 literal, or junk) is never `host_ok`: `[` is no host
        // character. Patterns are host names, so it could not match anyway.
        if !found.host_ok || !found.port_ok {
            return false;
        }
        let Some(host) = bytes.get(found.host_start..found.name_end) else {
            return false;
        };
        self.exact.iter().any(|e| eq_lowered(host, e.as_bytes()))
            || self.suffixes.iter().any(|suffix| {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| eq_lowered(tail, suffix.as_bytes()))
            })
    }

    /// The patterns, as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when the list is empty (unrestricted).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

source_list_impls!(ReferrerAllowlist);

/// The host of a `Referer` / `Origin` value: `scheme://[userinfo@]host[:port][/path]`,
/// `//host...`, or a bare `host[:port][/path]`; surrounding whitespace is ignored and
/// the host keeps its case (and a trailing dot, if any). An IPv6 literal comes back in
/// its brackets (`[::1]`).
///
/// `None` when no well-formed host is there: an empty host (`file:///x`, `null`'s
/// cousins like `about:blank`), a host with characters outside `[A-Za-z0-9_.-]` or an
/// empty label, a port that is not digits, userinfo without a scheme. Does not allocate.
pub fn referrer_host(referrer: &str) -> Option<&str> {
    let s = referrer.trim_ascii();
    let bytes = s.as_bytes();
    let found = scan_authority(bytes)?;
    if bytes.get(found.host_start) == Some(&b'[') {
        let bracketed = s.get(found.host_start + 1..found.end)?;
        let (inner, after) = bracketed.split_once(']')?;
        if !valid_port_suffix(after) || Ipv6Addr::from_str(inner).is_err() {
            return None;
        }
        return s.get(found.host_start..found.host_start + inner.len() + 2);
    }
    if !(found.host_ok && found.port_ok) {
        return None;
    }
    s.get(found.host_start..found.host_end)
}

/// What one pass over a referrer's authority found (see [`scan_authority`]).
#[derive(Debug, Clone, Copy)]
struct Authority {
    /// Where the host starts: after the authority marker (`scheme://`, `//`) and the
    /// last `@`.
    host_start: usize,
    /// Where the host ends: the first `:` after `host_start`, else `end`.
    host_end: usize,
    /// `host_end`, less a trailing dot.
    name_end: usize,
    /// Where the authority ends: the first `/ ? #` or `\` after its start, else the end.
    end: usize,
    /// The host (a trailing dot set aside) is labels of 1 to 63 characters of
    /// `[A-Za-z0-9_-]` joined by dots, at most [`MAX_HOST_LEN`] bytes.
    host_ok: bool,
    /// What follows the host is nothing, or `:` and up to 5 digits.
    port_ok: bool,
}

/// Finds and checks the host of a trimmed referrer in one pass over its authority, which
/// runs to the first `/ ? #` (or `\`, which browsers read as `/`): the host starts after
/// the last `@` and ends at the first `:` after that. `None` for an `@` in a referrer
/// that has no `scheme://` or `//` (a bare `user@host` is no URL).
// Inlined into its callers: the found fields then stay in registers.
#[inline(always)]
fn scan_authority(bytes: &[u8]) -> Option<Authority> {
    // `scheme://` or `//` opens an authority, which may carry userinfo.
    let (start, has_authority_marker) = if bytes.starts_with(b"https://") {
        (8, true)
    } else if bytes.starts_with(b"http://") {
        (7, true)
    } else {
        match scheme_len(bytes) {
            Some(len) if bytes.get(len..len + 3) == Some(b"://") => (len + 3, true),
            _ if bytes.starts_with(b"//") => (2, true),
            _ => (0, false),
        }
    };
    let mut i = start;
    // Each turn reads one `[userinfo@]` candidate host; an `@` starts the next turn.
    loop {
        let host_start = i;
        let mut label_start = i;
        let mut host_bad = false;
        // The host: runs of host characters, split by dots, up to `:` or the end.
        let host_end = loop {
            while bytes.get(i).is_some_and(|&b| byte_class(b) & HOST_CHAR != 0) {
                i += 1;
            }
            match bytes.get(i) {
                Some(b'.') => {
                    host_bad |= i == label_start || i - label_start > 63;
                    i += 1;
                    label_start = i;
                }
                Some(b'@') => break None,
                Some(&b) if b != b':' && byte_class(b) & AUTHORITY_END == 0 => {
                    host_bad = true;
                    i += 1;
                }
                _ => break Some(i),
            }
        };
        let Some(host_end) = host_end else {
            if !has_authority_marker {
                return None;
            }
            i += 1;
            continue;
        };
        // The port: digits after the `:`, up to the end of the authority.
        let mut port_bad = false;
        if bytes.get(i) == Some(&b':') {
            i += 1;
            loop {
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(&b) if b != b'@' && byte_class(b) & AUTHORITY_END == 0 => {
                        port_bad = true;
                        i += 1;
                    }
                    _ => break,
                }
            }
            if bytes.get(i) == Some(&b'@') {
                if !has_authority_marker {
                    return None;
                }
                i += 1;
                continue;
            }
        }
        // The last label is checked here; an empty one is an empty host or a trailing
        // dot, which is set aside.
        host_bad |= host_end - label_start > 63;
        let name_end = if host_end == label_start && host_end > host_start {
            host_end - 1
        } else {
            host_end
        };
        let name_len = name_end - host_start;
        return Some(Authority {
            host_start,
            host_end,
            name_end,
            end: i,
            host_ok: !host_bad && name_len > 0 && name_len <= MAX_HOST_LEN,
            port_ok: !port_bad && i - host_end <= 6,
        });
    }
}

/// Byte class: `[A-Za-z0-9_-]`, a host name character.
const HOST_CHAR: u8 = 1;
/// Byte class: `[A-Za-z0-9+.-]`, a scheme character.
const SCHEME_CHAR: u8 = 2;
/// Byte class: `/ ? # \`, the end of a URL's authority.
const AUTHORITY_END: u8 = 4;

/// The classes of every byte, so the per-request referrer scan costs one load a byte.
static BYTE_CLASSES: [u8; 256] = byte_classes();

#[allow(clippy::indexing_slicing)] // `i < 256` is the loop condition; a fault would fail the build
const fn byte_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_alphanumeric() || b == b'-' {
            class |= HOST_CHAR | SCHEME_CHAR;
        }
        if b == b'_' {
            class |= HOST_CHAR;
        }
        if b == b'+' || b == b'.' {
            class |= SCHEME_CHAR;
        }
        if matches!(b, b'/' | b'?' | b'#' | b'\\') {
            class |= AUTHORITY_END;
        }
        table[i] = class;
        i += 1;
    }
    table
}

fn byte_class(b: u8) -> u8 {
    BYTE_CLASSES.get(usize::from(b)).copied().unwrap_or(0)
}

/// The length of the scheme `bytes` starts with (`[A-Za-z][A-Za-z0-9+.-]*`), if any.
fn scheme_len(bytes: &[u8]) -> Option<usize> {
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let len = bytes
        .iter()
        .position(|&b| byte_class(b) & SCHEME_CHAR == 0)
        .unwrap_or(bytes.len());
    Some(len)
}

/// `""` or `:` and up to 5 digits.
fn valid_port_suffix(after: &str) -> bool {
    match after.strip_prefix(':') {
        None => after.is_empty(),
        Some(port) => port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `(is_wildcard, host)` of a referrer pattern.
fn parse_host_pattern(pattern: &str) -> Result<(bool, &str), String> {
    if pattern.is_empty() {
        return Err("it is empty; use a host such as example.com or *.example.com".into());
    }
    if pattern.contains("://") || pattern.contains('/') {
        return Err("give the host only, without scheme or path (e.g. example.com or *.example.com)".into());
    }
    if pattern.contains(':') || pattern.contains('[') {
        return Err("ports and IPv6 literals are not part of a pattern; give a host name".into());
    }
    let (wildcard, host) = match pattern.strip_prefix("*.") {
        Some(host) => (true, host),
        None => (false, pattern),
    };
    if host.contains('*') {
        return Err(
            "a '*' may only stand for the leading labels, as in *.example.com (which does not match example.com)"
                .into(),
        );
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "the host is {} bytes long, the limit is {MAX_HOST_LEN}",
            host.len()
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(if c.is_ascii() {
            format!("character {c:?} is not allowed in a host name")
        } else {
            format!("character {c:?} is not allowed in a host name; write an international name in its xn-- form")
        });
    }
    if let Some(label) = host.split('.').find(|l| l.is_empty() || l.len() > 63) {
        return Err(if label.is_empty() {
            "a label is empty (leading, trailing or doubled '.')".into()
        } else {
            format!("the label {} is longer than 63 characters", quote(label))
        });
    }
    Ok((wildcard, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrer_host_extraction() {
        for (referrer, host) in [
            ("https://example.com/page?x=1", Some("example.com")),
            ("https://Example.COM", Some("Example.COM")),
            ("http://user:pass@example.com:8080/x", Some("example.com")),
            ("https://example.com:443", Some("example.com")),
            ("https://example.com.", Some("example.com.")),
            ("https://example.com#frag", Some("example.com")),
            ("https://example.com?q", Some("example.com")),
            ("//cdn.example.com/x.js", Some("cdn.example.com")),
            ("example.com", Some("example.com")),
            ("example.com:3000/path", Some("example.com")),
            ("example.com/redirect?to=https://evil.com", Some("example.com")),
            ("  https://example.com  ", Some("example.com")),
            ("http://[::1]:8080/", Some("[::1]")),
            ("http://127.0.0.1:5000/", Some("127.0.0.1")),
            ("android-app://com.example.app/", Some("com.example.app")),
            ("", None),
            ("null", Some("null")),
            ("about:blank", None),
            ("file:///etc/passwd", None),
            ("https://", None),
            ("https://example.com:http/", None),
            ("https://exa mple.com/", None),
            ("https://a..example.com/", None),
            ("https://.example.com/", None),
            ("https://evil.com\\.example.com/", Some("evil.com")),
            ("mailto:x@example.com", None),
            ("user@example.com", None),
            ("https://[not-v6]/", None),
            ("https://ex%61mple.com/", None),
        ] {
            assert_eq!(referrer_host(referrer), host, "{referrer:?}");
        }
    }

    #[test]
    fn referrer_allowlist_table() {
        let list = ReferrerAllowlist::new(["example.com", "*.Example.org", "localhost", "127.0.0.1"]).unwrap();
        for (referrer, expected) in [
            ("https://example.com/", true),
            ("https://EXAMPLE.com/x", true),
            ("https://example.com./x", true),
            ("example.com", true),
            ("https://www.example.com/", false),
            ("https://notexample.com/", false),
            ("https://example.com.evil.net/", false),
            ("https://evil.net/?example.com", false),
            ("https://example.com@evil.net/", false),
            ("https://a.example.org/", true),
            ("https://a.b.EXAMPLE.ORG:8443/", true),
            ("https://example.org/", false),
            ("https://xexample.org/", false),
            ("https://.example.org/", false),
            ("http://localhost:3000/", true),
            ("http://127.0.0.1/", true),
            ("http://[::1]/", false),
            ("", false),
            ("not a url", false),
        ] {
            assert_eq!(list.allows(referrer), expected, "{referrer:?}");
        }
        assert!(ReferrerAllowlist::default().allows(""));
        assert!(ReferrerAllowlist::default().allows("garbage ::"));
    }

    #[test]
    fn referrer_allowlist_refuses_bad_patterns() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_host = format!("{}com", "abcdefghi.".repeat(26));
        for (pattern, needle) in [
            ("", "empty"),
            ("https://example.com", "host only"),
            ("example.com/path", "host only"),
            ("example.com:8080", "ports"),
            ("[::1]", "IPv6"),
            ("*", "leading labels"),
            ("*example.com", "leading labels"),
            ("a.*.example.com", "leading labels"),
            ("*.*.example.com", "leading labels"),
            ("exa mple.com", "not allowed"),
            ("bücher.de", "xn--"),
            ("example..com", "empty"),
            (".example.com", "empty"),
            ("example.com.", "empty"),
            ("*.", "empty"),
            (long_label.as_str(), "longer than 63"),
            (long_host.as_str(), "limit is 253"),
        ] {
            match ReferrerAllowlist::new([pattern]) {
                Err(InputError::InvalidReferrer(msg)) => assert!(msg.contains(needle), "{pattern:?}: {msg}"),
                other => panic!("{pattern:?} gave {other:?}"),
            }
        }
    }
}
