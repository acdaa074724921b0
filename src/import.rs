//! Lines of JSON (JSON Lines) that import, create or revoke keys in bulk: `credstore
//! import`, `create --from` and `revoke --from`, and the sidecar's import.
//!
//! An import line names a key of another system by the unsalted SHA-256 that system kept
//! of it (`"sha256"`: 64 hex digits, or `"sha256_base64"`: 44 characters of base64, the
//! standard or the URL-safe alphabet, padding optional), its `"prefix"`, and `create`'s
//! settings. A create line holds `create`'s settings only. A revoke line holds `"id"` or
//! `"key"`, and an optional `"reason"`. Every line is one JSON object; unknown fields are
//! refused. A refusal is [`InputError::BadLine`]: the line's number, the field and why,
//! never the value of a field that may hold a secret (a key, a hash).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::InputError;
use crate::event::Sha256Hash;
use crate::limits::{Budget, Period, RateLimit};
use crate::policy::{EndpointAllowlist, IpAllowlist, PermissionSet, ReferrerAllowlist, RoleName};
use crate::record::{Expiry, KeyKind, NewKey};
use crate::token::{Env, Format, FormatLength, FormatRequest, FormatSet};

/// The longest line the parsers take, in bytes.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// A key of another system to import: its SHA-256, its prefix, its settings.
#[derive(Debug, Clone)]
pub struct ImportKey {
    /// The line it came from (1-based), for errors.
    pub line: usize,
    /// The unsalted SHA-256 of the key.
    pub sha256: Sha256Hash,
    /// The key's prefix (`legacy_`): a valid credstore prefix the key starts with.
    pub prefix: String,
    /// The environment; `None`: the prefix's registered one, else a guess from it.
    pub env: Option<Env>,
    /// The settings, as `create` takes them (its `format` is ignored).
    pub new: NewKey,
}

/// One key to revoke, by id or by the key itself.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// A key id, `key_...`.
    Id(crate::record::KeyId),
    /// The key itself (credstore's, or an imported one).
    Key(crate::secret::Secret),
}

/// One line of `revoke --from`.
#[derive(Debug, Clone)]
pub struct RevokeLine {
    /// The line it came from (1-based).
    pub line: usize,
    /// Which key.
    pub target: RevokeTarget,
    /// Why, if the line says.
    pub reason: Option<String>,
}

/// The fields of an import or create line: `create`'s settings, and an import's hash.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyLine {
    name: Option<String>,
    sha256: Option<String>,
    sha256_base64: Option<String>,
    prefix: Option<String>,
    env: Option<String>,
    length: Option<usize>,
    total_length: Option<usize>,
    checksum: Option<bool>,
    #[serde(default)]
    new_format: bool,
    project: Option<String>,
    expires_in: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    rate_limits: Vec<String>,
    budget: Option<u64>,
    budget_period: Option<String>,
    plan: Option<String>,
    #[serde(rename = "type")]
    key_type: Option<String>,
    user: Option<String>,
    role: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    #[serde(default)]
    allow_referrers: Vec<String>,
    #[serde(default)]
    allow_endpoints: Vec<String>,
}

/// The fields of a revoke line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeFields {
    id: Option<String>,
    key: Option<String>,
    reason: Option<String>,
}

/// Whether a line holds nothing to do: empty, or blank (skipped, still counted).
pub fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// Parses one import line.
///
/// # Errors
/// [`InputError::BadLine`] naming the line, the field and why.
pub fn parse_import_line(text: &str, line: usize) -> Result<ImportKey, InputError> {
    let fields: KeyLine = parse_object(text, line)?;
    let bad = |field: &str, why: String| bad_line(line, field, why);
    for (given, field) in [
        (fields.length.is_some(), "length"),
        (fields.total_length.is_some(), "total_length"),
        (fields.checksum.is_some(), "checksum"),
        (fields.new_format, "new_format"),
    ] {
        if given {
            return Err(bad(
                field,
                "an imported key keeps the shape it has: leave it out".into(),
            ));
        }
    }
    let sha256 = match (&fields.sha256, &fields.sha256_base64) {
        (Some(_), Some(_)) => return Err(bad("sha256", "give sha256 or sha256_base64, not both".into())),
        (None, None) => return Err(bad("sha256", "missing: give sha256 (hex) or sha256_base64".into())),
        (Some(hex), None) => decode_hex(hex).ok_or_else(|| bad("sha256", "not 64 hex digits (32 bytes)".into()))?,
        (None, Some(b64)) => decode_base64(b64).ok_or_else(|| bad("sha256_base64", "not base64 of 32 bytes".into()))?,
    };
    let prefix = fields
        .prefix
        .clone()
        .ok_or_else(|| bad("prefix", "missing: give the keys' prefix, e.g. legacy_".into()))?;
    let env = parse_env(fields.env.as_deref(), line)?;
    // The shape is checked here so that a bad prefix names its line.
    Format::new(
        &prefix,
        env.unwrap_or_else(|| Env::guess_from_prefix(&prefix)),
        32,
        true,
    )
    .map_err(|e| bad("prefix", e.to_string()))?;
    if prefix == crate::token::ADMIN_PREFIX {
        return Err(bad(
            "prefix",
            "reserved for admin keys, which cannot be imported".into(),
        ));
    }
    let new = settings(&fields, line)?;
    Ok(ImportKey {
        line,
        sha256: Sha256Hash(sha256),
        prefix,
        env,
        new,
    })
}

/// Parses one line of `create --from`: `create`'s settings, with the key's format chosen
/// among `formats` as `create` chooses it.
///
/// # Errors
/// [`InputError::BadLine`] naming the line, the field and why.
pub fn parse_create_line(text: &str, line: usize, formats: &FormatSet) -> Result<NewKey, InputError> {
    let fields: KeyLine = parse_object(text, line)?;
    if fields.sha256.is_some() || fields.sha256_base64.is_some() {
        return Err(bad_line(
            line,
            "sha256",
            "a create line issues a new key: import keys with `credstore import`".into(),
        ));
    }
    let env = parse_env(fields.env.as_deref(), line)?;
    let length = match (fields.length, fields.total_length) {
        (Some(_), Some(_)) => return Err(bad_line(line, "length", "give length or total_length, not both".into())),
        (Some(n), None) => Some(FormatLength::Random(n)),
        (None, Some(n)) => Some(FormatLength::Total(n)),
        (None, None) => None,
    };
    let mut new = settings(&fields, line)?;
    let request = FormatRequest {
        prefix: fields.prefix.as_deref(),
        env,
        length,
        no_checksum: fields.checksum == Some(false),
        new_format: fields.new_format,
    };
    let asks_nothing =
        request.prefix.is_none() && env.is_none() && length.is_none() && !request.no_checksum && !request.new_format;
    let admin = new
        .role
        .as_ref()
        .is_some_and(|r| r.as_str() == crate::policy::ADMIN_ROLE);
    let format = if admin && asks_nothing {
        Format::admin()
    } else {
        formats
            .choose(&request)
            .map_err(|e| bad_line(line, "prefix", e.to_string()))?
    };
    new.format = Some(format);
    Ok(new)
}

/// Parses one line of `revoke --from`.
///
/// # Errors
/// [`InputError::BadLine`] naming the line, the field and why.
pub fn parse_revoke_line(text: &str, line: usize) -> Result<RevokeLine, InputError> {
    let fields: RevokeFields = parse_object(text, line)?;
    let target = match (fields.id, fields.key) {
        (Some(_), Some(_)) => return Err(bad_line(line, "id", "give id or key, not both".into())),
        (None, None) => return Err(bad_line(line, "id", "missing: give id or key".into())),
        (Some(id), None) => {
            RevokeTarget::Id(crate::record::KeyId::parse(&id).map_err(|e| bad_line(line, "id", e.to_string()))?)
        }
        (None, Some(key)) if key.trim().is_empty() => return Err(bad_line(line, "key", "empty".into())),
        (None, Some(key)) => RevokeTarget::Key(crate::secret::Secret::new(key.trim().to_string())),
    };
    if let Some(reason) = &fields.reason {
        crate::record::validate_reason(Some(reason)).map_err(|e| bad_line(line, "reason", e.to_string()))?;
    }
    Ok(RevokeLine {
        line,
        target,
        reason: fields.reason,
    })
}

/// `InputError::BadLine`.
pub(crate) fn bad_line(line: usize, field: &str, why: String) -> InputError {
    InputError::BadLine {
        line,
        field: field.to_string(),
        why,
    }
}

/// Parses a line as one JSON object of `T`'s fields. serde's message may quote a value
/// (which may be a key pasted in the wrong field): it is scrubbed of anything key-shaped.
fn parse_object<T: serde::de::DeserializeOwned>(text: &str, line: usize) -> Result<T, InputError> {
    if text.len() > MAX_LINE_LEN {
        return Err(bad_line(line, "line", format!("longer than {MAX_LINE_LEN} bytes")));
    }
    serde_json::from_str(text).map_err(|e| {
        let field = unknown_field(&e.to_string()).unwrap_or_else(|| "line".to_string());
        let why = crate::redact::scrub(&e.to_string()).into_owned();
        bad_line(line, &field, why)
    })
}

/// The field serde names in an "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let name = rest.split('`').next()?;
    (name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then(|| name.to_string())
}

fn parse_env(text: Option<&str>, line: usize) -> Result<Option<Env>, InputError> {
    text.map(str::parse::<Env>)
        .transpose()
        .map_err(|e| bad_line(line, "env", e.to_string()))
}

/// `create`'s settings of a line, as a [`NewKey`] without a format.
fn settings(fields: &KeyLine, line: usize) -> Result<NewKey, InputError> {
    let bad = |field: &'static str| move |e: InputError| bad_line(line, field, e.to_string());
    let name = fields
        .name
        .clone()
        .ok_or_else(|| bad_line(line, "name", "missing".into()))?;
    crate::record::validate_name(&name).map_err(bad("name"))?;
    let mut new = NewKey::new(name);
    new.project.clone_from(&fields.project);
    if let Some(p) = &new.project {
        crate::record::validate_project(p).map_err(bad("project"))?;
    }
    crate::record::validate_metadata(&fields.metadata).map_err(bad("metadata"))?;
    new.metadata.clone_from(&fields.metadata);
    new.rate_limits = fields
        .rate_limits
        .iter()
        .map(|r| RateLimit::parse(r))
        .collect::<Result<_, _>>()
        .map_err(bad("rate_limits"))?;
    crate::limits::check_limits(&new.rate_limits).map_err(bad("rate_limits"))?;
    new.budget = match (fields.budget, fields.budget_period.as_deref()) {
        (None, Some(_)) => return Err(bad_line(line, "budget_period", "goes with a budget".into())),
        (None, None) => None,
        (Some(cap), period) => {
            let period: Period = period.unwrap_or("monthly").parse().map_err(bad("budget_period"))?;
            Some(Budget::new(cap, period).map_err(bad("budget"))?)
        }
    };
    if let Some(plan) = &fields.plan {
        crate::limits::validate_plan_name(plan).map_err(bad("plan"))?;
    }
    new.plan.clone_from(&fields.plan);
    new.kind = match (fields.key_type.as_deref().unwrap_or("service"), &fields.user) {
        ("service", None) => KeyKind::Service,
        ("personal", Some(user)) => {
            crate::policy::validate_user_id(user).map_err(bad("user"))?;
            KeyKind::Personal { user: user.clone() }
        }
        ("personal", None) => return Err(bad_line(line, "user", "a personal token needs a user".into())),
        ("service", Some(_)) => {
            return Err(bad_line(line, "user", "is for personal tokens (type personal)".into()));
        }
        (_, _) => return Err(bad_line(line, "type", "use service or personal".into())),
    };
    new.role = fields
        .role
        .as_deref()
        .map(RoleName::parse)
        .transpose()
        .map_err(bad("role"))?;
    new.permissions = PermissionSet::parse(&fields.permissions).map_err(bad("permissions"))?;
    new.allow_ips = IpAllowlist::new(&fields.allow_ips).map_err(bad("allow_ips"))?;
    new.allow_referrers = ReferrerAllowlist::new(&fields.allow_referrers).map_err(bad("allow_referrers"))?;
    new.allow_endpoints = EndpointAllowlist::new(&fields.allow_endpoints).map_err(bad("allow_endpoints"))?;
    new.expires = match (&fields.expires_in, &fields.expires_at) {
        (Some(_), Some(_)) => {
            return Err(bad_line(
                line,
                "expires_in",
                "give expires_in or expires_at, not both".into(),
            ));
        }
        (Some(d), None) => Some(Expiry::In(crate::clock::parse_duration(d).map_err(bad("expires_in"))?)),
        (None, Some(t)) => Some(Expiry::At(crate::clock::parse_time(t).map_err(bad("expires_at"))?)),
        (None, None) => None,
    };
    Ok(new)
}

/// 64 hex digits (either case) as 32 bytes.
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Base64 of 32 bytes: the standard or the URL-safe alphabet, padded or not.
fn decode_base64(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .and_then(|bytes| bytes.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn hex_and_base64_give_the_same_hash() {
        let a = parse_import_line(&format!(r#"{{"sha256":"{HEX}","prefix":"legacy_","name":"a"}}"#), 1).unwrap();
        let b64 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
        let b = parse_import_line(
            &format!(r#"{{"sha256_base64":"{b64}","prefix":"legacy_","name":"a"}}"#),
            2,
        )
        .unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.sha256, Sha256Hash::of(b"test"));
        let url = b64.replace('+', "-").replace('/', "_").replace('=', "");
        let c = parse_import_line(
            &format!(r#"{{"sha256_base64":"{url}","prefix":"legacy_","name":"a"}}"#),
            3,
        )
        .unwrap();
        assert_eq!(a.sha256, c.sha256);
    }

    #[test]
    fn bad_lines_name_their_line_and_field_and_never_the_hash() {
        let cases = [
            (r#"{"prefix":"legacy_","name":"a"}"#, "sha256"),
            (r#"{"sha256":"abc","prefix":"legacy_","name":"a"}"#, "sha256"),
            (&format!(r#"{{"sha256":"{HEX}","name":"a"}}"#) as &str, "prefix"),
            (&format!(r#"{{"sha256":"{HEX}","prefix":"leg-","name":"a"}}"#), "prefix"),
            (&format!(r#"{{"sha256":"{HEX}","prefix":"legacy_"}}"#), "name"),
            (
                &format!(r#"{{"sha256":"{HEX}","prefix":"legacy_","name":"a","colour":1}}"#),
                "colour",
            ),
            (
                &format!(r#"{{"sha256":"{HEX}","prefix":"legacy_","name":"a","length":40}}"#),
                "length",
            ),
            (
                &format!(r#"{{"sha256":"{HEX}","prefix":"legacy_","name":"a","rate_limits":["x"]}}"#),
                "rate_limits",
            ),
            ("not json", "line"),
        ];
        for (text, field) in cases {
            match parse_import_line(text, 7) {
                Err(InputError::BadLine { line: 7, field: f, why }) => {
                    assert_eq!(f, field, "{text}: {why}");
                    assert!(!why.contains(HEX), "{why}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn revoke_lines_take_an_id_or_a_key() {
        let id = "key_0000000000000000000001";
        assert!(matches!(
            parse_revoke_line(&format!(r#"{{"id":"{id}","reason":"leak"}}"#), 1)
                .unwrap()
                .target,
            RevokeTarget::Id(_)
        ));
        assert!(matches!(
            parse_revoke_line(r#"{"key":"legacy_abc"}"#, 1).unwrap().target,
            RevokeTarget::Key(_)
        ));
        assert!(parse_revoke_line(r#"{}"#, 1).is_err());
        assert!(parse_revoke_line(&format!(r#"{{"id":"{id}","key":"x"}}"#), 1).is_err());
    }
}
