//! The endpoint allowlist: [`EndpointAllowlist`], `METHOD GLOB` entries, and [`PathGlob`],
//! a path glob (`*` within a segment, `**` across segments) and its matching.

use serde::{Deserialize, Serialize};

use super::bytes::{ONES, eq_bytes, uppered_word};
use super::macros::{source_list_impls, text_impls};
use super::quote;
use crate::error::InputError;

/// The longest endpoint path glob, in bytes.
pub const MAX_GLOB_LEN: usize = 1024;
/// The longest HTTP method name in an endpoint entry, in bytes.
pub const MAX_METHOD_LEN: usize = 32;

/// The endpoints a key may call: entries `METHOD GLOB` such as `GET /v1/users/*`.
/// Empty means unrestricted.
///
/// - METHOD: a method name (letters, compared case-insensitively), or `*` or `ANY` for
///   every method. `GET` does not imply `HEAD`.
/// - GLOB: a [`PathGlob`], compared case-sensitively with the request path (its query
///   string and fragment ignored).
///
/// The path is matched as given: no percent-decoding and no removal of `.` / `..` or
/// doubled slashes. Pass the path your router resolved, so `/v1/users/../admin` cannot
/// slip through `/v1/users/**`. Serialises as its entries, as given.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EndpointAllowlist {
    sources: Vec<String>,
    rules: Vec<(Method, PathGlob)>,
}

impl EndpointAllowlist {
    /// Parses a list of `METHOD GLOB` entries.
    ///
    /// # Errors
    /// [`InputError::InvalidEndpoint`] for an entry that is not two words or whose method
    /// is not a method name, `*` or `ANY`; [`InputError::InvalidGlob`] for a bad glob.
    pub fn new<I, S>(entries: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = EndpointAllowlist::default();
        for entry in entries {
            let entry = entry.as_ref();
            let bad = |why: &str| InputError::InvalidEndpoint(format!("{}: {why}", quote(entry)));
            let mut words = entry.split_ascii_whitespace();
            let (Some(method), Some(glob), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(match entry.split_ascii_whitespace().count() {
                    0 => "it is empty; write METHOD GLOB, e.g. GET /v1/users/*",
                    1 if entry.trim_start().starts_with('/') => {
                        "it has no method; write e.g. GET /v1/users/* (ANY or * for every method)"
                    }
                    1 => "it has no path glob; write METHOD GLOB, e.g. GET /v1/users/*",
                    _ => "write exactly METHOD GLOB, e.g. GET /v1/users/*; a glob cannot contain spaces",
                }));
            };
            let method = if method == "*" || method.eq_ignore_ascii_case("any") {
                Method::Any
            } else if method.len() <= MAX_METHOD_LEN && method.bytes().all(|b| b.is_ascii_alphabetic()) {
                Method::Named(method.to_ascii_uppercase().into_boxed_str(), method_key(method))
            } else {
                return Err(bad(&format!(
                    "the method {} is not a method name (letters only), * or ANY",
                    quote(method)
                )));
            };
            let glob = PathGlob::parse(glob)?;
            list.rules.push((method, glob));
            list.sources.push(entry.to_string());
        }
        Ok(list)
    }

    /// True when the list is empty, or some entry matches `method` (any case) and `path`
    /// (case-sensitive; a `?query` or `#fragment` is ignored). Does not allocate.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        let key = method_key(method);
        self.rules.iter().any(|(m, glob)| {
            let method_ok = match m {
                Method::Any => true,
                Method::Named(_, Some(rule_key)) => key == Some(*rule_key),
                Method::Named(name, None) => name.eq_ignore_ascii_case(method),
            };
            method_ok && glob.matches(path)
        })
    }

    /// The entries, as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when the list is empty (unrestricted).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

source_list_impls!(EndpointAllowlist);

/// A path glob: `/` then segments separated by `/`, where
/// - `*` within a segment matches any run of characters other than `/` (empty included,
///   so `/v1/users/*` matches `/v1/users/`), and may appear several times (`/f/*.*`);
/// - `**` as a whole segment matches any number of segments, none included:
///   `/v1/**` matches `/v1`, `/v1/`, `/v1/a` and `/v1/a/b`; `/a/**/z` matches `/a/z`;
/// - every other character matches itself, case-sensitively.
///
/// Refused: an empty glob, one not starting with `/`, `**` inside a segment (`/a**`,
/// `***`), whitespace or control characters, `?` and `#`, more than [`MAX_GLOB_LEN`]
/// bytes. Serialises as its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathGlob {
    text: Box<str>,
    /// The text every matching path starts with: the glob up to its first `*`, less
    /// the `/` before a leading `**` (which may match no segment). The whole glob when
    /// it has no `*`.
    literal_prefix: Box<str>,
    /// How a path is matched, decided from the glob's shape when it is parsed.
    shape: GlobShape,
    segments: Box<[GlobSegment]>,
}

impl PathGlob {
    /// Parses a glob.
    ///
    /// # Errors
    /// [`InputError::InvalidGlob`] naming what is wrong (see the type's docs).
    pub fn parse(glob: &str) -> Result<Self, InputError> {
        let bad = |why: &str| InputError::InvalidGlob(format!("{}: {why}", quote(glob)));
        if glob.is_empty() {
            return Err(bad("it is empty; a glob starts with /, e.g. /v1/users/*"));
        }
        if glob.len() > MAX_GLOB_LEN {
            return Err(bad(&format!(
                "it is {} bytes long, the limit is {MAX_GLOB_LEN}",
                glob.len()
            )));
        }
        let Some(body) = glob.strip_prefix('/') else {
            return Err(bad("it must start with /, e.g. /v1/users/*"));
        };
        if let Some((i, c)) = glob.char_indices().find(|(_, c)| c.is_whitespace() || c.is_control()) {
            return Err(bad(&format!("character {c:?} at offset {i} is not allowed")));
        }
        if glob.contains(['?', '#']) {
            return Err(bad(
                "? and # are not allowed: the query string and fragment are ignored when matching",
            ));
        }
        let mut segments = Vec::new();
        for segment in body.split('/') {
            segments.push(if segment == "**" {
                GlobSegment::AnyDepth
            } else if segment.contains("**") {
                return Err(bad(&format!(
                    "{} in segment {}: ** must be a whole segment, as in /v1/**, and * matches within one",
                    if segment.contains("***") { "***" } else { "**" },
                    quote(segment)
                )));
            } else if segment.contains('*') {
                GlobSegment::Pattern(segment.into())
            } else {
                GlobSegment::Literal(segment.into())
            });
        }
        let literal_prefix = match glob.find('*') {
            None => glob,
            Some(star) => {
                let before = glob.get(..star).unwrap_or("");
                match glob.get(star..) {
                    Some(from_star) if from_star.starts_with("**") => before.strip_suffix('/').unwrap_or(before),
                    _ => before,
                }
            }
        };
        let stars = glob.bytes().filter(|&b| b == b'*').count();
        let shape = if stars == 0 {
            GlobShape::Exact
        } else if stars == 1 && glob.ends_with("/*") {
            GlobShape::LastSegment
        } else if stars == 2 && glob.ends_with("/**") {
            GlobShape::Subtree
        } else {
            GlobShape::General
        };
        Ok(PathGlob {
            text: glob.into(),
            literal_prefix: literal_prefix.into(),
            shape,
            segments: segments.into_boxed_slice(),
        })
    }

    /// True when `path` (its `?query` or `#fragment` ignored) matches. A path that does
    /// not start with `/` never matches. Does not allocate.
    ///
    /// Runs in O(glob length × path length) at worst: each level (`**` across segments,
    /// `*` within one) keeps a single backtrack point, as in the classic wildcard match.
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        let (prefix, path_bytes) = (self.literal_prefix.as_bytes(), path.as_bytes());
        let Some((head, rest)) = path_bytes.split_at_checked(prefix.len()) else {
            return false;
        };
        if !eq_bytes(head, prefix) {
            return false;
        }
        // `literal_prefix` holds no `?` or `#`, so a path starts with it exactly when the
        // path cut at its query does.
        match self.shape {
            GlobShape::Exact => matches!(rest.first(), None | Some(b'?' | b'#')),
            GlobShape::LastSegment => !matches!(rest.iter().find(|&&b| matches!(b, b'/' | b'?' | b'#')), Some(b'/')),
            GlobShape::Subtree => match rest.first() {
                None | Some(b'?' | b'#') => !self.literal_prefix.is_empty(),
                Some(b) => *b == b'/',
            },
            GlobShape::General => self.matches_segments(strip_query(path)),
        }
    }

    /// [`PathGlob::matches`] by walking the segments, for a path already cut at `?` / `#`.
    fn matches_segments(&self, path: &str) -> bool {
        if !path.starts_with(&*self.literal_prefix) {
            return false;
        }
        if self.literal_prefix.len() == self.text.len() {
            return path.len() == self.text.len();
        }
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let segments = &self.segments;
        // `pi`: next glob segment; `pos`: start of the next path segment (None: no more).
        let mut pi = 0usize;
        let mut pos = Some(0usize);
        // Where to resume after the latest `**`: the glob segment after it, and the path
        // position it has consumed up to.
        let mut resume: Option<(usize, Option<usize>)> = None;
        loop {
            match segments.get(pi) {
                Some(GlobSegment::AnyDepth) => {
                    pi += 1;
                    resume = Some((pi, pos));
                    continue;
                }
                Some(seg) => {
                    if let Some(start) = pos {
                        let (text, next) = segment_at(rest, start);
                        if seg.matches(text) {
                            pi += 1;
                            pos = next;
                            continue;
                        }
                    }
                }
                None if pos.is_none() => return true,
                None => {}
            }
            // Mismatch: let the latest `**` take one more segment, or fail.
            let Some((resume_pi, Some(start))) = resume else {
                return false;
            };
            let (_, next) = segment_at(rest, start);
            resume = Some((resume_pi, next));
            pi = resume_pi;
            pos = next;
        }
    }

    /// The glob, as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

text_impls!(PathGlob);

/// The method part of an endpoint entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    Any,
    /// Upper case, with its [`method_key`] when it has one.
    Named(Box<str>, Option<u64>),
}

/// A method name of up to 7 bytes as one integer: its bytes upper-cased, zero padded,
/// and its length in the top byte; `None` for a longer one. Two methods compare equal
/// case-insensitively exactly when their keys are equal (with a rule's method letters
/// only, upper-casing a request's method is what `eq_ignore_ascii_case` does).
fn method_key(method: &str) -> Option<u64> {
    let bytes = method.as_bytes();
    if bytes.len() > 7 {
        return None;
    }
    let packed = bytes.iter().rev().fold(0u64, |word, &b| (word << 8) | u64::from(b));
    if packed & (ONES * 0x80) != 0 {
        // Not ASCII: no method name. A length of 0xff stands for it, which no key has.
        return Some(0xff << 56);
    }
    Some(uppered_word(packed) | (u64::try_from(bytes.len()).unwrap_or(0) << 56))
}

/// The shape of a [`PathGlob`], for a match that needs no segment walk in the common
/// cases. In each, `literal_prefix` is the glob up to its only `*` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobShape {
    /// No `*`: the path is the glob.
    Exact,
    /// `{prefix}*`, the prefix ending with `/`: the path is the prefix and one segment.
    LastSegment,
    /// `{prefix}/**`: the path is the prefix, or the prefix and `/` and anything.
    Subtree,
    /// Anything else: the segment walk.
    General,
}

/// One segment of a [`PathGlob`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobSegment {
    /// `**`.
    AnyDepth,
    /// No `*`: compared as is.
    Literal(Box<str>),
    /// One or more `*`.
    Pattern(Box<str>),
}

impl GlobSegment {
    fn matches(&self, text: &str) -> bool {
        match self {
            GlobSegment::AnyDepth => true,
            GlobSegment::Literal(lit) => **lit == *text,
            GlobSegment::Pattern(pattern) => wildcard_match(pattern.as_bytes(), text.as_bytes()),
        }
    }
}

/// `path` up to its first `?` or `#`.
fn strip_query(path: &str) -> &str {
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}

/// The segment of `rest` starting at `start`, and where the one after it starts.
fn segment_at(rest: &str, start: usize) -> (&str, Option<usize>) {
    let tail = rest.get(start..).unwrap_or("");
    match tail.bytes().position(|b| b == b'/') {
        Some(i) => (tail.get(..i).unwrap_or(""), Some(start + i + 1)),
        None => (tail, None),
    }
}

/// `*` in `pattern` matches any run of bytes of `text` (which holds no `/`); other bytes
/// match themselves.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                p += 1;
                star = Some((p, t));
            }
            (Some(a), Some(b)) if a == b => {
                p += 1;
                t += 1;
            }
            _ => {
                let Some((sp, st)) = star else {
                    return false;
                };
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
        }
    }
    pattern.get(p..).is_some_and(|tail| tail.iter().all(|&b| b == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_glob_table() {
        for (glob, path, expected) in [
            ("/v1/users/*", "/v1/users/42", true),
            ("/v1/users/*", "/v1/users/", true),
            ("/v1/users/*", "/v1/users", false),
            ("/v1/users/*", "/v1/users/42/keys", false),
            ("/v1/users/*", "/V1/users/42", false),
            ("/v1/users/*", "/v1/users/42?x=/a/b", true),
            ("/v1/users/*", "/v1/users/42#a/b", true),
            ("/v1/**", "/v1", true),
            ("/v1/**", "/v1/", true),
            ("/v1/**", "/v1/a/b/c", true),
            ("/v1/**", "/v10", false),
            ("/v1/**", "/v2/a", false),
            ("/a/**/z", "/a/z", true),
            ("/a/**/z", "/a/b/c/z", true),
            ("/a/**/z", "/a/b/c/zz", false),
            ("/a/**/*.json", "/a/x/y.json", true),
            ("/a/**/*.json", "/a/y.json", true),
            ("/a/**/*.json", "/a/x/y.xml", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/**", "", false),
            ("/**", "relative/path", false),
            ("/", "/", true),
            ("/", "/a", false),
            ("/files/*-*.txt", "/files/a-b.txt", true),
            ("/files/*-*.txt", "/files/ab.txt", false),
            ("/*/b/**/c/*", "/a/b/c/d", true),
            ("/*/b/**/c/*", "/a/b/x/c/y/c/d", true),
            ("/*/b/**/c/*", "/a/b/x/c", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
        ] {
            assert_eq!(
                PathGlob::parse(glob).unwrap().matches(path),
                expected,
                "{glob} vs {path:?}"
            );
        }
    }

    #[test]
    fn path_glob_refuses_bad_globs() {
        for (glob, needle) in [
            ("", "empty"),
            ("v1/users", "start with /"),
            ("*", "start with /"),
            ("/v1/***", "***"),
            ("/v1/a**", "whole segment"),
            ("/v1/**b/c", "whole segment"),
            ("/v1/ users", "not allowed"),
            ("/v1/users?x=1", "query string"),
            ("/v1#x", "query string"),
        ] {
            match PathGlob::parse(glob) {
                Err(InputError::InvalidGlob(msg)) => assert!(msg.contains(needle), "{glob:?}: {msg}"),
                other => panic!("{glob:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            PathGlob::parse(&format!("/{}", "a".repeat(MAX_GLOB_LEN))),
            Err(InputError::InvalidGlob(_))
        ));
    }

    #[test]
    fn endpoint_allowlist_table() {
        let list =
            EndpointAllowlist::new(["GET /v1/users/*", "post /v1/jobs", "ANY /v1/public/**", "* /health"]).unwrap();
        for (method, path, expected) in [
            ("GET", "/v1/users/1", true),
            ("get", "/v1/users/1", true),
            ("HEAD", "/v1/users/1", false),
            ("POST", "/v1/users/1", false),
            ("POST", "/v1/jobs", true),
            ("Post", "/v1/jobs?async=1", true),
            ("GET", "/v1/jobs", false),
            ("DELETE", "/v1/public/a/b", true),
            ("PATCH", "/health", true),
            ("GET", "/healthz", false),
        ] {
            assert_eq!(list.allows(method, path), expected, "{method} {path}");
        }
        assert!(EndpointAllowlist::default().allows("DELETE", "/anything"));
    }

    #[test]
    fn endpoint_allowlist_refuses_bad_entries() {
        for (entry, variant_glob, needle) in [
            ("", false, "empty"),
            ("/v1/users", false, "no method"),
            ("GET", false, "no path glob"),
            ("GET /v1/a b", false, "exactly METHOD GLOB"),
            ("G3T /v1", false, "not a method name"),
            ("GET v1/users", true, "start with /"),
            ("GET /v1/***", true, "***"),
            ("GET /v1/users?x", true, "query string"),
        ] {
            match EndpointAllowlist::new([entry]) {
                Err(InputError::InvalidEndpoint(msg)) if !variant_glob => {
                    assert!(msg.contains(needle), "{entry:?}: {msg}")
                }
                Err(InputError::InvalidGlob(msg)) if variant_glob => assert!(msg.contains(needle), "{entry:?}: {msg}"),
                other => panic!("{entry:?} gave {other:?}"),
            }
        }
    }
}
