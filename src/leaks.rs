//! Leak reports: the body secret scanners send (GitHub's secret scanning partner format),
//! parsed into typed reports, and the label each token earns.
//!
//! A body is a JSON array of `{"token", "type", "url", "source"}` objects, at most
//! [`MAX_LEAK_TOKENS`] of them in at most [`MAX_LEAK_BODY_BYTES`]. Fields other than
//! those four are ignored (the format may grow). Each token is a [`Secret`] from the
//! moment it is read; no error message repeats a value from the body.

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::secret::Secret;

/// The largest leak report body read, bytes.
pub const MAX_LEAK_BODY_BYTES: usize = 256 * 1024;
/// The most tokens one report may hold.
pub const MAX_LEAK_TOKENS: usize = 1000;
/// The longest token read, bytes (longer is no key of any format).
pub const MAX_TOKEN_BYTES: usize = 1024;
/// The longest `url` kept, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// The longest `type` or `source` kept, bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// One token a scanner found.
#[derive(Debug, Clone)]
pub struct LeakReport {
    /// The token as found. Never logged, never stored; only echoed back to its sender.
    pub token: Secret,
    /// The token's type, as the scanner names it.
    pub token_type: String,
    /// Where it was found.
    pub url: String,
    /// Who found it (`content`, `commit`, `github`, ...).
    pub source: String,
}

/// One report's wire form.
#[derive(Deserialize)]
struct Wire {
    token: String,
    #[serde(rename = "type")]
    token_type: String,
    url: String,
    source: String,
}

/// What a token turned out to be: a live key of this store (now revoked), or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A live key of this store; it was revoked at once.
    TruePositive,
    /// Not a live key of this store: malformed, unknown, or revoked already.
    FalsePositive,
}

/// Parses a leak report body.
///
/// # Errors
/// [`InputError::InvalidLeakReport`] for a body over [`MAX_LEAK_BODY_BYTES`], not a JSON
/// array of objects with the four string fields, with no token or more than
/// [`MAX_LEAK_TOKENS`], or with a field over its bound. The message says where (a line
/// and column, an item's index and field), never a value.
pub fn parse_reports(body: &[u8]) -> Result<Vec<LeakReport>, InputError> {
    let bad = |why: String| InputError::InvalidLeakReport(why);
    if body.len() > MAX_LEAK_BODY_BYTES {
        return Err(bad(format!("the body is larger than {MAX_LEAK_BODY_BYTES} bytes")));
    }
    // Each item as a JSON value first: serde's derive would also take an item written as
    // an array of the four fields in order, a shape no scanner sends.
    let values: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| bad(describe(&e)))?;
    if values.len() > MAX_LEAK_TOKENS {
        return Err(bad(format!(
            "{} tokens; at most {MAX_LEAK_TOKENS} in one report",
            values.len()
        )));
    }
    let items = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if !v.is_object() {
                return Err(bad(format!("item {i} is not an object")));
            }
            serde_json::from_value::<Wire>(v).map_err(|e| bad(format!("item {i}: {}", describe_field(&e))))
        })
        .collect::<Result<Vec<Wire>, InputError>>()?;
    if items.is_empty() {
        return Err(bad("the list holds no token".into()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let too_long = |field: &str, max: usize| bad(format!("item {i}: {field} is longer than {max} bytes"));
            if w.token.len() > MAX_TOKEN_BYTES {
                return Err(too_long("token", MAX_TOKEN_BYTES));
            }
            if w.url.len() > MAX_URL_BYTES {
                return Err(too_long("url", MAX_URL_BYTES));
            }
            if w.token_type.len() > MAX_NAME_BYTES {
                return Err(too_long("type", MAX_NAME_BYTES));
            }
            if w.source.len() > MAX_NAME_BYTES {
                return Err(too_long("source", MAX_NAME_BYTES));
            }
            Ok(LeakReport {
                token: Secret::new(w.token),
                token_type: w.token_type,
                url: w.url,
                source: w.source,
            })
        })
        .collect()
}

/// serde_json's error without the value it quotes (`invalid type: string "sk_..."`): its
/// category and position, and the field's name for a missing one.
fn describe(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not valid JSON",
        _ => "expected a JSON array of objects with string fields token, type, url and source",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// An item's error: the missing field's name, or what every field must be.
fn describe_field(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("missing field") {
        return text.split(" at line").next().unwrap_or("missing field").to_string();
    }
    "token, type, url and source must be strings".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scanners_body_parses_and_bad_ones_are_refused_without_their_values() {
        let body =
            br#"[{"token":"sk_live_abc","type":"credstore_key","url":"https://x/y","source":"content","extra":1}]"#;
        let reports = parse_reports(body).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].token.expose(), "sk_live_abc");
        assert_eq!(
            (reports[0].token_type.as_str(), reports[0].source.as_str()),
            ("credstore_key", "content")
        );
        for bad in [
            &br#"[]"#[..],
            br#"{"token":"sk_live_secretvalue"}"#,
            br#"[{"token":"sk_live_secretvalue","type":"t","url":"u"}]"#,
            br#"[{"token":7,"type":"sk_live_secretvalue","url":"u","source":"s"}]"#,
            br#"["sk_live_secretvalue"]"#,
            br#"[["sk_live_secretvalue","t","u","s"]]"#,
            b"[{",
        ] {
            let e = parse_reports(bad).unwrap_err().to_string();
            assert!(!e.contains("secretvalue"), "{e}");
        }
        let many = format!(
            "[{}]",
            vec![r#"{"token":"a","type":"t","url":"u","source":"s"}"#; MAX_LEAK_TOKENS + 1].join(",")
        );
        assert!(parse_reports(many.as_bytes()).is_err());
        let long_url = format!(
            r#"[{{"token":"a","type":"t","url":"{}","source":"s"}}]"#,
            "u".repeat(MAX_URL_BYTES + 1)
        );
        assert!(
            parse_reports(long_url.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("url")
        );
    }
}
