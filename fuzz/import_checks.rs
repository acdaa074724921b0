//! The checks of the `import_line` fuzz target, shared with `tests/fuzz_corpus.rs`: the
//! JSON Lines parsers of `credstore import`, `create --from` and `revoke --from`
//! (`credstore::import`). A selector byte says which (`i` import, `c` create, `r` revoke);
//! the rest is the line. Each parser must never panic; what it accepts must agree with a
//! reference reading of the documented fields; what it refuses it refuses as
//! `InputError::BadLine` naming the line given, without repeating a hash or a key.

use credstore::import::{RevokeTarget, parse_create_line, parse_import_line, parse_revoke_line};
use credstore::{FormatSet, InputError};

/// The line number the checks pass (any will do: it must come back in refusals).
const LINE: usize = 41;

/// Runs one input through its parser and checks it; whether the line was accepted.
pub fn check_import_input(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return false;
    };
    match selector {
        b'c' => check_create(text),
        b'r' => check_revoke(text),
        _ => check_import(text),
    }
}

fn check_import(text: &str) -> bool {
    let reference = reference_import(text);
    match parse_import_line(text, LINE) {
        Ok(key) => {
            let (sha256, prefix, name) =
                reference.unwrap_or_else(|| panic!("accepted what the reference refuses: {text:?}"));
            assert_eq!(key.sha256.0, sha256, "another hash than the line's");
            assert_eq!(key.prefix, prefix);
            assert_eq!(key.new.name, name);
            assert_eq!(key.line, LINE);
            true
        }
        Err(e) => {
            check_refusal(&e, text);
            false
        }
    }
}

fn check_create(text: &str) -> bool {
    match parse_create_line(text, LINE, &FormatSet::default()) {
        Ok(new) => {
            let fields = object(text).unwrap_or_else(|| panic!("accepted a line that is no object: {text:?}"));
            assert!(!fields.contains_key("sha256") && !fields.contains_key("sha256_base64"));
            assert_eq!(fields.get("name").and_then(|v| v.as_str()), Some(new.name.as_str()));
            assert!(new.format.is_some(), "a create line's key has a format");
            true
        }
        Err(e) => {
            check_refusal(&e, text);
            false
        }
    }
}

fn check_revoke(text: &str) -> bool {
    match parse_revoke_line(text, LINE) {
        Ok(line) => {
            let fields = object(text).unwrap_or_else(|| panic!("accepted a line that is no object: {text:?}"));
            match &line.target {
                RevokeTarget::Id(id) => assert_eq!(fields.get("id").and_then(|v| v.as_str()), Some(id.as_str())),
                RevokeTarget::Key(key) => {
                    let given = fields.get("key").and_then(|v| v.as_str()).unwrap_or_default();
                    assert_eq!(given.trim(), key.expose());
                }
            }
            true
        }
        Err(e) => {
            check_refusal(&e, text);
            false
        }
    }
}

/// A refusal names the line given, and repeats no hash or key of the line.
fn check_refusal(e: &InputError, text: &str) {
    let InputError::BadLine { line, .. } = e else {
        panic!("refused with another error than BadLine: {e}");
    };
    assert_eq!(*line, LINE);
    let message = e.to_string();
    if let Some(fields) = object(text) {
        for secret in ["sha256", "sha256_base64", "key"] {
            if let Some(value) = fields.get(secret).and_then(|v| v.as_str())
                && value.len() >= 16
            {
                assert!(!message.contains(value), "the refusal repeats {secret}: {message}");
            }
        }
    }
}

fn object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The documented reading of an import line's hash, prefix and name: exactly one of
/// `sha256` (64 hex digits) and `sha256_base64` (base64 of 32 bytes, either alphabet,
/// padding optional); a prefix of 1 to 24 of `[A-Za-z0-9_]` ending in `_`, not `csa_`; a
/// name. `None`: the line must be refused.
fn reference_import(text: &str) -> Option<([u8; 32], String, String)> {
    let fields = object(text)?;
    let sha = match (fields.get("sha256"), fields.get("sha256_base64")) {
        (Some(hex), None) => from_hex(hex.as_str()?.trim())?,
        (None, Some(b64)) => from_base64(b64.as_str()?.trim())?,
        _ => return None,
    };
    let prefix = fields.get("prefix")?.as_str()?.to_string();
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 24
        && prefix.ends_with('_')
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && prefix != "csa_";
    let name = fields.get("name")?.as_str()?.to_string();
    prefix_ok.then_some((sha, prefix, name))
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Base64 of 32 bytes by hand: 43 characters of one alphabet, then `=` or nothing.
fn from_base64(text: &str) -> Option<[u8; 32]> {
    let body = text.strip_suffix('=').unwrap_or(text);
    if body.len() != 43 {
        return None;
    }
    let standard = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    let url = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !standard && !url {
        return None;
    }
    let value = |b: u8| -> u32 {
        match b {
            b'A'..=b'Z' => u32::from(b - b'A'),
            b'a'..=b'z' => u32::from(b - b'a') + 26,
            b'0'..=b'9' => u32::from(b - b'0') + 52,
            b'+' | b'-' => 62,
            _ => 63,
        }
    };
    let mut bits = 0u64;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(32);
    for b in body.bytes() {
        bits = (bits << 6) | u64::from(value(b));
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    // 43 characters hold 258 bits: the last 2 must be zero (canonical).
    if bits & ((1 << nbits) - 1) != 0 {
        return None;
    }
    out.try_into().ok()
}
