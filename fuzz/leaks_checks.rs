//! The properties the `leaks_body` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/leaks_body.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`, which
//! runs every seed in `fuzz/corpus/leaks_body/` through them.
//!
//! An input is the body of `POST /v1/leaks`, bytes as they arrive. `parse_reports` must
//! accept exactly what a reference written from its docs accepts (a JSON array of 1 to
//! `MAX_LEAK_TOKENS` objects whose `token`, `type`, `url` and `source` are strings within
//! their bounds, other fields ignored, in a body of at most `MAX_LEAK_BODY_BYTES`), give
//! back those four values in order, and never repeat a value of the body in a refusal
//! (no quoted text; no secret-shaped run, `secret_echo.rs`; no string value of 12 bytes
//! or more).

#![allow(dead_code)]

use credstore::leaks::{
    MAX_LEAK_BODY_BYTES, MAX_LEAK_TOKENS, MAX_NAME_BYTES, MAX_TOKEN_BYTES, MAX_URL_BYTES, parse_reports,
};
use serde_json::Value;

use super::secret_echo;

/// Runs the checks on one body; returns whether it was accepted.
pub fn check_leaks_body(data: &[u8]) -> bool {
    let expected = reference(data);
    match parse_reports(data) {
        Ok(reports) => {
            let Some(expected) = expected else {
                panic!(
                    "accepted a body the reference refuses: {:?}",
                    String::from_utf8_lossy(data)
                );
            };
            let got: Vec<[String; 4]> = reports
                .iter()
                .map(|r| {
                    [
                        r.token.expose().to_string(),
                        r.token_type.clone(),
                        r.url.clone(),
                        r.source.clone(),
                    ]
                })
                .collect();
            assert_eq!(got, expected, "the reports are not the body's values");
            // Debug never shows a token.
            for r in &reports {
                let shown = format!("{r:?}");
                if r.token.expose().len() >= 12 {
                    assert!(!shown.contains(r.token.expose()), "Debug shows a token: {shown}");
                }
            }
            true
        }
        Err(e) => {
            assert!(
                expected.is_none(),
                "refused a body the reference accepts ({e}): {:?}",
                String::from_utf8_lossy(data)
            );
            assert!(
                matches!(e, credstore::InputError::InvalidLeakReport(_)),
                "not the leak report's error: {e:?}"
            );
            let message = e.to_string();
            assert!(!message.contains('"'), "a refusal quotes the body: {message}");
            assert!(
                secret_echo::secret_runs(&message).is_empty(),
                "a refusal repeats a secret-shaped run: {message}"
            );
            for value in long_strings(data) {
                assert!(!message.contains(&value), "a refusal repeats {value:?}: {message}");
            }
            false
        }
    }
}

/// What the docs say is accepted, with the four values of each item in order.
fn reference(data: &[u8]) -> Option<Vec<[String; 4]>> {
    if data.len() > MAX_LEAK_BODY_BYTES {
        return None;
    }
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) else {
        return None;
    };
    if items.is_empty() || items.len() > MAX_LEAK_TOKENS {
        return None;
    }
    let bounds = [
        ("token", MAX_TOKEN_BYTES),
        ("type", MAX_NAME_BYTES),
        ("url", MAX_URL_BYTES),
        ("source", MAX_NAME_BYTES),
    ];
    items
        .iter()
        .map(|item| {
            let object = item.as_object()?;
            let mut values: [String; 4] = Default::default();
            for (slot, (field, max)) in values.iter_mut().zip(bounds) {
                let text = object.get(field)?.as_str()?;
                if text.len() > max {
                    return None;
                }
                *slot = text.to_string();
            }
            Some(values)
        })
        .collect()
}

/// Every string in the body (if it is JSON) of 12 bytes or more.
fn long_strings(data: &[u8]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.len() >= 12 => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                if k.len() >= 12 {
                    out.push(k.clone());
                }
                walk(v, out);
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        walk(&v, &mut out);
    }
    out
}
