//! The properties the `http_input` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/http_input.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`,
//! which runs every seed in `fuzz/corpus/http_input/` through them. It builds on the
//! policy and time checks (`policy_checks.rs`, `time_checks.rs`, siblings here): a value
//! that arrives in a header, a query string or a JSON body goes through the same checks.
//!
//! An input is a selector byte and the rest:
//!
//! | byte | input | code under test |
//! | --- | --- | --- |
//! | `k` | `Authorization` value, then `\n` and an `X-API-Key` value | `KeySource::find` (the layer's and the sidecar's key extraction) |
//! | `x` | trusted proxies (`,`-separated), the peer, then `X-Forwarded-For` fields, one a line | `TrustedProxies::client_ip` |
//! | `q` | a query string | the sidecar's `?project=&prefix=&status=`, `?reason=` and `?key=&kind=&since=&until=`, decoded as axum's `Query` does, then `Status`, `KeyId::parse`, `parse_time` |
//! | `v` | a `POST /v1/keys.verify` body | its JSON decoding, then `PermissionQuery`, `Env`, the endpoint split and `Store::verify_with` on a fixture store |
//! | `c` | a `POST /v1/api-keys` body | its JSON decoding, then every parser `create` calls before it writes |
//! | `r` | a `DELETE` (revoke) or `rotate` body | the optional-JSON rule, then `validate_reason`, `parse_duration` |
//! | `o` | an owner id, then `\n` and a `PUT /v1/owners/{id}` body | `validate_owner_id` against a reference reading of its rule, the body's JSON decoding, then `OwnerUpdate::check` against the parsers of each field |
//!
//! The sidecar's request types are private to the binary (`src/bin/credstore/serve.rs`),
//! so [`VerifyBody`], [`CreateBody`] and the others here mirror them field for field, with
//! the same serde attributes: keep them in step.
//!
//! The key found in the headers is the one a reference reading of `KeySource`'s docs finds.
//! The client address is the one the reference walk of `X-Forwarded-For` finds, and an
//! entry a client puts in front of the header never changes it unless every hop after it
//! is trusted. A query string decodes to the fields a reference form-urlencoded decoding
//! gives (unknown or repeated fields refused) and re-encoded decodes to the same. A JSON
//! body decodes only if it is an object of known fields, and re-serialised decodes to the
//! same; then a verify comes to the decision the verification order (DESIGN.md) implies
//! for the fixture's keys, and never shows the key in its `Debug`. A refused body's error
//! never repeats the presented key (the `key` field) when that key appears nowhere else.

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use credstore::http::{KeySource, TrustedProxies};
use credstore::policy::{
    EndpointAllowlist, Forbidden, IpAllowlist, PermissionQuery, PermissionSet, ReferrerAllowlist, RoleName,
    builtin_role,
};
use credstore::record::{validate_name, validate_project, validate_reason};
use credstore::token::BASE62;
use credstore::{
    Budget, Code, Config, Env, Format, FormatLength, FormatRequest, FormatSet, InputError, KeyId, NewKey, Pepper,
    Period, Status, Store, UseLog, VerifyRequest,
};
use serde::{Deserialize, Serialize};

use super::policy_checks::{self, PolicyInput};
use super::secret_echo::{self, Echo, TextParser};
use super::time_checks::{self, TimeInput};

/// Which kind of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpInput {
    KeyHeaders,
    ForwardedFor,
    QueryString,
    VerifyBody,
    CreateBody,
    RevokeOrRotateBody,
    OwnerBody,
}

impl HttpInput {
    const ALL: [HttpInput; 7] = [
        HttpInput::KeyHeaders,
        HttpInput::ForwardedFor,
        HttpInput::QueryString,
        HttpInput::VerifyBody,
        HttpInput::CreateBody,
        HttpInput::RevokeOrRotateBody,
        HttpInput::OwnerBody,
    ];

    /// The kind a selector byte picks.
    pub fn from_selector(byte: u8) -> HttpInput {
        match byte {
            b'k' => HttpInput::KeyHeaders,
            b'x' => HttpInput::ForwardedFor,
            b'q' => HttpInput::QueryString,
            b'v' => HttpInput::VerifyBody,
            b'c' => HttpInput::CreateBody,
            b'r' => HttpInput::RevokeOrRotateBody,
            b'o' => HttpInput::OwnerBody,
            other => HttpInput::ALL[usize::from(other) % HttpInput::ALL.len()],
        }
    }
}

// ---------------------------------------------------------------------------------------
// The sidecar's request types, mirrored from src/bin/credstore/serve/ (verify.rs, keys.rs,
// audit.rs)

/// `POST /v1/keys.verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub key: String,
    pub cost: Option<u64>,
    pub weight: Option<u32>,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<String>,
    pub referrer: Option<String>,
    pub require: Option<String>,
    pub project: Option<String>,
    pub env: Option<String>,
}

/// `GET /v1/api-keys` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub project: Option<String>,
    pub prefix: Option<String>,
    pub status: Option<String>,
    pub owner: Option<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
}

/// `POST /v1/api-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    pub prefix: Option<String>,
    pub env: Option<String>,
    pub length: Option<usize>,
    pub total_length: Option<usize>,
    #[serde(default = "yes")]
    pub checksum: bool,
    #[serde(default)]
    pub new_format: bool,
    pub project: Option<String>,
    pub expires_in: Option<String>,
    pub expires_at: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub rate_limits: Vec<String>,
    pub budget: Option<u64>,
    pub budget_period: Option<String>,
    pub plan: Option<String>,
    pub owner: Option<String>,
    #[serde(rename = "type")]
    pub key_type: Option<String>,
    pub user: Option<String>,
    pub role: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub allow_ips: Vec<String>,
    #[serde(default)]
    pub allow_referrers: Vec<String>,
    #[serde(default)]
    pub allow_endpoints: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `DELETE /v1/api-keys/{id}`, as a body or a query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub reason: Option<String>,
}

/// `POST /v1/api-keys/{id}/rotate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    pub grace: Option<String>,
}

/// `PUT /v1/owners/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    pub name: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub rate_limits: Option<Vec<String>>,
    pub budget: Option<u64>,
    pub budget_period: Option<String>,
    #[serde(default)]
    pub no_budget: bool,
}

/// `GET /v1/audit` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub key: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub newest_first: Option<String>,
    pub limit: Option<String>,
}

/// The sidecar's `parse_json`: the error message it answers 400 with.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("invalid JSON body: expected a JSON object".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// The sidecar's `parse_optional_json`: a body of ASCII whitespace is the default.
fn parse_optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// A sidecar endpoint that decodes a body or a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/keys.verify` (body).
    Verify,
    /// `POST /v1/api-keys` (body).
    Create,
    /// `DELETE /v1/api-keys/{id}` (optional body, or query).
    Revoke,
    /// `POST /v1/api-keys/{id}/rotate` (optional body).
    Rotate,
    /// `GET /v1/api-keys` (query).
    List,
    /// `GET /v1/audit` (query).
    Audit,
}

/// The message the sidecar answers 400 with for `body` at `endpoint`, by the mirrored
/// types; `None` when the body decodes.
pub fn body_refusal(endpoint: Endpoint, body: &[u8]) -> Option<String> {
    match endpoint {
        Endpoint::Verify => parse_json::<VerifyBody>(body).err(),
        Endpoint::Create => parse_json::<CreateBody>(body).err(),
        Endpoint::Revoke => parse_optional_json::<RevokeBody>(body).err(),
        Endpoint::Rotate => parse_optional_json::<RotateBody>(body).err(),
        Endpoint::List | Endpoint::Audit => None,
    }
}

/// The message the sidecar answers 400 with for the query of `uri` at `endpoint`, by the
/// mirrored types; `None` when it decodes.
pub fn query_refusal(endpoint: Endpoint, uri: &Uri) -> Option<String> {
    let text = |r: axum::extract::rejection::QueryRejection| r.body_text();
    match endpoint {
        Endpoint::List => Query::<ListQuery>::try_from_uri(uri).err().map(text),
        Endpoint::Revoke => Query::<RevokeBody>::try_from_uri(uri).err().map(text),
        Endpoint::Audit => Query::<AuditQuery>::try_from_uri(uri).err().map(text),
        Endpoint::Verify | Endpoint::Create | Endpoint::Rotate => None,
    }
}

/// The parsers of the sidecar's input that the policy and time tables do not hold, and
/// what their refusals do with the input today.
pub fn text_parsers() -> Vec<TextParser> {
    fn message<T>(r: Result<T, InputError>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }
    vec![
        TextParser {
            // The mirror's raw serde and axum messages: the sidecar scrubs them at its edge
            // (`redact::scrub`), which the mirrored-request test checks on the real binary.
            name: "sidecar JSON body (a value of the wrong type)",
            echo: Echo::Repeats,
            refuse: |s| {
                let body = serde_json::json!({ "key": "x", "cost": s }).to_string();
                parse_json::<VerifyBody>(body.as_bytes()).err()
            },
        },
        TextParser {
            name: "sidecar query string (an unknown parameter)",
            echo: Echo::Repeats,
            refuse: |s| {
                let uri = Uri::from_str(&format!("/v1/api-keys?{}", percent_encode(s))).ok()?;
                Query::<ListQuery>::try_from_uri(&uri).err().map(|e| e.body_text())
            },
        },
        TextParser {
            name: "validate_owner_id",
            echo: Echo::Never,
            refuse: |s| message(credstore::owner::validate_owner_id(s)),
        },
        TextParser {
            name: "Env::from_str",
            echo: Echo::Never,
            refuse: |s| message(Env::from_str(s)),
        },
        TextParser {
            name: "Status::from_str",
            echo: Echo::Never,
            refuse: |s| Status::from_str(s).err(),
        },
        TextParser {
            name: "KeyId::parse",
            echo: Echo::Never,
            refuse: |s| message(KeyId::parse(s)),
        },
        TextParser {
            name: "Period::from_str",
            echo: Echo::Never,
            refuse: |s| message(Period::from_str(s)),
        },
        TextParser {
            name: "FormatSet::choose (prefix)",
            echo: Echo::Never,
            refuse: |s| {
                message(FormatSet::new([]).choose(&FormatRequest {
                    prefix: Some(s),
                    ..FormatRequest::default()
                }))
            },
        },
        TextParser {
            name: "validate_project",
            echo: Echo::Never,
            refuse: |s| message(validate_project(s)),
        },
        TextParser {
            name: "validate_name",
            echo: Echo::Never,
            refuse: |s| message(validate_name(s)),
        },
        TextParser {
            name: "validate_reason",
            echo: Echo::Never,
            refuse: |s| message(validate_reason(Some(&s.repeat(513 / s.len().max(1) + 1)))),
        },
    ]
}

fn parser(name: &str) -> TextParser {
    match text_parsers().into_iter().find(|p| p.name == name) {
        Some(p) => p,
        None => panic!("no parser {name} in the table"),
    }
}

// ---------------------------------------------------------------------------------------
// The fixture store

/// A key of the fixture store.
pub struct FixtureKey {
    /// What a seed writes in place of the key: `$plain`, `$restricted`, ...
    pub placeholder: &'static str,
    pub secret: String,
    pub record: credstore::KeyRecord,
    pub revoked: bool,
}

/// A store with a few keys, for verify bodies; created once and reused.
pub struct Scratch {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub keys: Vec<FixtureKey>,
}

impl Scratch {
    /// Creates the fixture store (in `/dev/shm` when there is one), without use logging.
    pub fn new() -> Self {
        let ok = |what: &str, e: credstore::Error| -> ! { panic!("{what}: {e}") };
        let shm = std::path::Path::new("/dev/shm");
        let dir = match tempfile::Builder::new().prefix("credstore-http-").tempdir_in(shm) {
            Ok(dir) if shm.is_dir() => dir,
            _ => tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
        };
        let config = Config::new().pepper(Pepper::from_bytes([7; 32])).use_log(UseLog::Off);
        let store = Store::init(dir.path().join("data"), config).unwrap_or_else(|e| ok("init", e));
        let mut restricted = NewKey::new("restricted")
            .project("acme")
            .role(RoleName::parse("viewer").unwrap_or_else(|e| ok("role", e.into())))
            .permissions(PermissionSet::parse(["jobs:run"]).unwrap_or_else(|e| ok("permissions", e.into())));
        restricted.allow_ips =
            IpAllowlist::new(["10.0.0.0/8", "2001:db8::/32"]).unwrap_or_else(|e| ok("ips", e.into()));
        restricted.allow_referrers = ReferrerAllowlist::new(["*.example.com"]).unwrap_or_else(|e| ok("refs", e.into()));
        restricted.allow_endpoints =
            EndpointAllowlist::new(["GET /v1/**", "POST /v1/jobs/*"]).unwrap_or_else(|e| ok("endpoints", e.into()));
        let test_format = Format::new("sk_test_", Env::Test, 32, true).unwrap_or_else(|e| ok("format", e.into()));
        let specs: [(&'static str, NewKey, bool); 4] = [
            ("$plain", NewKey::new("plain"), false),
            ("$restricted", restricted, false),
            ("$test", NewKey::new("test").format(test_format), false),
            ("$revoked", NewKey::new("revoked"), true),
        ];
        let mut keys = Vec::new();
        for (placeholder, new, revoke) in specs {
            let created = store.create(new).unwrap_or_else(|e| ok("create", e));
            if revoke {
                store
                    .revoke(&created.record.id, Some("fixture"))
                    .unwrap_or_else(|e| ok("revoke", e));
            }
            keys.push(FixtureKey {
                placeholder,
                secret: created.key.expose().to_string(),
                record: created.record,
                revoked: revoke,
            });
        }
        Scratch { _dir: dir, store, keys }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Every check on one input (see the module docs). Returns whether it was accepted: a key
/// found, a client address other than the peer, a query string some endpoint decodes, a
/// verify body whose key is valid for the request, a create body every parser accepts, a
/// revoke or rotate body that decodes.
pub fn check_http_input(scratch: &Scratch, data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    match HttpInput::from_selector(selector) {
        HttpInput::KeyHeaders => check_key_headers(rest),
        HttpInput::ForwardedFor => check_forwarded_for(&String::from_utf8_lossy(rest)),
        HttpInput::QueryString => check_query_string(&String::from_utf8_lossy(rest)),
        HttpInput::VerifyBody => check_verify_body(scratch, rest),
        HttpInput::CreateBody => check_create_body(scratch, rest),
        HttpInput::RevokeOrRotateBody => check_revoke_or_rotate_body(rest),
        HttpInput::OwnerBody => check_owner_body(rest),
    }
}

// ---------------------------------------------------------------------------------------
// Key extraction

/// The key in a header value by `KeySource`'s docs: for `Bearer`, the scheme (any case)
/// before the first space; the rest, ASCII whitespace trimmed, if non-empty and all
/// visible ASCII (or tabs).
fn reference_key(value: &[u8], bearer: bool) -> Option<&str> {
    let key = if bearer {
        let space = value.iter().position(|&b| b == b' ')?;
        if !value[..space].eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        &value[space..]
    } else {
        value
    };
    let key = key.trim_ascii();
    let visible = key.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    (visible && !key.is_empty()).then(|| std::str::from_utf8(key).ok())?
}

fn check_key_headers(data: &[u8]) -> bool {
    let (authorization, api_key) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let mut headers = HeaderMap::new();
    let authorization = HeaderValue::from_bytes(authorization).ok();
    let api_key = api_key.and_then(|v| HeaderValue::from_bytes(v).ok());
    if let Some(v) = &authorization {
        headers.insert(HeaderName::from_static("authorization"), v.clone());
    }
    if let Some(v) = &api_key {
        headers.insert(HeaderName::from_static("x-api-key"), v.clone());
    }
    let bearer = KeySource::Bearer.find(&headers);
    let by_header = KeySource::x_api_key().find(&headers);
    let want_bearer = authorization.as_ref().and_then(|v| reference_key(v.as_bytes(), true));
    let want_header = api_key.as_ref().and_then(|v| reference_key(v.as_bytes(), false));
    assert_eq!(bearer, want_bearer, "Bearer in {authorization:?}");
    assert_eq!(by_header, want_header, "X-API-Key {api_key:?}");
    // As the layer and the sidecar look: Bearer first.
    let sources = [KeySource::Bearer, KeySource::x_api_key()];
    let found = sources.iter().find_map(|s| s.find(&headers));
    assert_eq!(found, want_bearer.or(want_header));
    // Another header name holds nothing.
    let custom = KeySource::Header(HeaderName::from_static("x-custom-key"));
    assert_eq!(custom.find(&headers), None);
    found.is_some()
}

// ---------------------------------------------------------------------------------------
// X-Forwarded-For

/// The trusted proxies when the input's first line is not a valid list.
const DEFAULT_PROXIES: [&str; 2] = ["10.0.0.0/8", "::1"];
/// The peer when the input's second line is not an address.
const DEFAULT_PEER: &str = "10.0.0.2";

/// One `X-Forwarded-For` entry by the docs: an address, possibly with a port.
fn reference_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = match IpAddr::from_str(entry) {
        Ok(ip) => ip,
        Err(_) => std::net::SocketAddr::from_str(entry).ok()?.ip(),
    };
    Some(ip.to_canonical())
}

/// The client by `TrustedProxies`' docs: the peer unless it is trusted; then the
/// entries, all fields as one list, from the right, skipping trusted ones; an entry that
/// is no address stops at the last address vouched for.
fn reference_client(proxies: &TrustedProxies, peer: IpAddr, fields: &[HeaderValue]) -> IpAddr {
    let peer = peer.to_canonical();
    if !proxies.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = fields
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        match reference_entry(entry) {
            Some(ip) if proxies.contains(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

fn check_forwarded_for(text: &str) -> bool {
    let mut lines = text.split('\n');
    let proxy_line = lines.next().unwrap_or("");
    let entries: Vec<&str> = proxy_line.split(',').filter(|e| !e.is_empty()).collect();
    let proxies = TrustedProxies::new(&entries)
        .or_else(|_| TrustedProxies::new(DEFAULT_PROXIES))
        .unwrap_or_else(|e| panic!("default proxies: {e}"));
    let peer = lines
        .next()
        .and_then(|l| IpAddr::from_str(l.trim()).ok())
        .unwrap_or_else(|| IpAddr::from_str(DEFAULT_PEER).unwrap_or(IpAddr::from([0, 0, 0, 0])));
    let fields: Vec<HeaderValue> = lines.filter_map(|l| HeaderValue::from_str(l).ok()).collect();
    let headers = |fields: &[HeaderValue]| {
        let mut map = HeaderMap::new();
        for v in fields {
            map.append(HeaderName::from_static("x-forwarded-for"), v.clone());
        }
        map
    };
    let client = proxies.client_ip(peer, &headers(&fields));
    assert_eq!(client, reference_client(&proxies, peer, &fields), "client of {text:?}");
    if !proxies.contains(peer.to_canonical()) {
        assert_eq!(client, peer.to_canonical(), "an untrusted peer's header was believed");
    }
    // A client's own entry in front of the header changes nothing, unless every hop
    // after it is trusted: then it is the client, which is what it says.
    let forged = IpAddr::from([6, 6, 6, 6]);
    let mut with_forged = fields.clone();
    let first = with_forged
        .first()
        .map_or(String::new(), |v| v.to_str().unwrap_or("\u{1}").to_string());
    let forged_field = if with_forged.is_empty() {
        "6.6.6.6".to_string()
    } else {
        format!("6.6.6.6, {first}")
    };
    if let Ok(value) = HeaderValue::from_str(&forged_field) {
        match with_forged.first_mut() {
            Some(slot) => *slot = value,
            None => with_forged.push(value),
        }
        let after = proxies.client_ip(peer, &headers(&with_forged));
        let all_trusted = proxies.contains(peer.to_canonical())
            && fields
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("").split(','))
                .all(|e| reference_entry(e).is_some_and(|ip| proxies.contains(ip)));
        if after != client {
            assert!(all_trusted, "a forged entry moved the client from {client} to {after}");
            assert_eq!(after, forged);
        }
    }
    client != peer.to_canonical()
}

// ---------------------------------------------------------------------------------------
// Query strings

/// Percent-encodes every byte but the unreserved ones.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space,
/// `%XY` a byte (a `%` not followed by two hex digits is itself), UTF-8 lossily.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex(bytes[i + 1]).is_some() && hex(bytes[i + 2]).is_some() => {
                let (hi, lo) = (hex(bytes[i + 1]).unwrap_or(0), hex(bytes[i + 2]).unwrap_or(0));
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields of a query string for an endpoint taking `names`: `None` when a name is
/// unknown or given twice.
fn reference_query_fields(query: &str, names: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (form_decode(name), form_decode(value));
        if !names.contains(&name.as_str()) || fields.insert(name, value).is_some() {
            return None;
        }
    }
    Some(fields)
}

/// A decoded query's fields by name, `None` for those not given.
type QueryFields = Vec<(&'static str, Option<String>)>;

/// Decodes the query of `uri` as `T`, checks it against the reference, and that it
/// re-encodes to a query that decodes the same.
fn check_query_as<T>(uri: &Uri, names: &[&str], fields_of: fn(&T) -> QueryFields) -> Option<T>
where
    T: serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    let query = uri.query().unwrap_or("");
    let want = reference_query_fields(query, names);
    let got = Query::<T>::try_from_uri(uri).map(|Query(q)| q);
    let decoded = match (got, want) {
        (Ok(q), Some(want)) => {
            let fields: BTreeMap<String, String> = fields_of(&q)
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
                .collect();
            assert_eq!(fields, want, "query {query:?}");
            q
        }
        (Err(rejection), None) => {
            let message = rejection.body_text();
            secret_echo::check_refusal(
                "sidecar query string (an unknown parameter)",
                Echo::Repeats,
                query,
                &message,
            );
            return None;
        }
        (got, want) => panic!("query {query:?}: decoded {got:?}, the reference says {want:?}"),
    };
    let again: String = fields_of(&decoded)
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n}={}", percent_encode(&v))))
        .collect::<Vec<_>>()
        .join("&");
    let uri_again = Uri::from_str(&format!("/v1/x?{again}")).unwrap_or_else(|e| panic!("{again}: {e}"));
    match Query::<T>::try_from_uri(&uri_again) {
        Ok(Query(back)) => assert_eq!(back, decoded, "{again} decodes to another query"),
        Err(e) => panic!("{again} does not decode: {}", e.body_text()),
    }
    Some(decoded)
}

fn check_query_string(text: &str) -> bool {
    let Ok(uri) = Uri::from_str(&format!("/v1/api-keys?{text}")) else {
        // No server gets this far with it.
        return false;
    };
    let list = check_query_as::<ListQuery>(&uri, &["project", "prefix", "status", "limit", "after"], |q| {
        vec![
            ("project", q.project.clone()),
            ("prefix", q.prefix.clone()),
            ("status", q.status.clone()),
            ("limit", q.limit.clone()),
            ("after", q.after.clone()),
        ]
    });
    if let Some(status) = list.as_ref().and_then(|q| q.status.as_deref()) {
        let want = ["active", "disabled", "expired", "revoked"]
            .iter()
            .find(|s| s.eq_ignore_ascii_case(status));
        match Status::from_str(status) {
            Ok(got) => assert_eq!(
                Some(got.label().to_ascii_lowercase()).as_deref(),
                want.copied(),
                "status {status:?}"
            ),
            Err(e) => {
                assert_eq!(want, None, "status {status:?} refused: {e}");
                secret_echo::refuses(&parser("Status::from_str"), status);
            }
        }
    }
    if let Some(after) = list.as_ref().and_then(|q| q.after.as_deref()) {
        check_key_id(after);
    }
    let revoke = check_query_as::<RevokeBody>(&uri, &["reason"], |q| vec![("reason", q.reason.clone())]);
    if let Some(reason) = revoke.as_ref().and_then(|q| q.reason.as_deref()) {
        check_reason(reason);
    }
    let audit = check_query_as::<AuditQuery>(&uri, &["key", "kind", "since", "until", "newest_first", "limit"], |q| {
        vec![
            ("key", q.key.clone()),
            ("kind", q.kind.clone()),
            ("since", q.since.clone()),
            ("until", q.until.clone()),
            ("newest_first", q.newest_first.clone()),
            ("limit", q.limit.clone()),
        ]
    });
    if let Some(q) = &audit {
        if let Some(key) = q.key.as_deref() {
            check_key_id(key);
        }
        for time in [&q.since, &q.until].into_iter().flatten() {
            time_checks::check_time_text(TimeInput::Time, time);
        }
    }
    list.is_some() || revoke.is_some() || audit.is_some()
}

fn check_key_id(text: &str) {
    let want = text.len() == 26 && text.starts_with("key_") && text.bytes().skip(4).all(|b| BASE62.contains(&b));
    match KeyId::parse(text) {
        Ok(id) => {
            assert!(want, "key id {text:?} accepted");
            assert_eq!(id.as_str(), text);
        }
        Err(e) => {
            assert!(!want, "key id {text:?} refused: {e}");
            secret_echo::refuses(&parser("KeyId::parse"), text);
        }
    }
}

fn check_reason(reason: &str) {
    match validate_reason(Some(reason)) {
        Ok(()) => assert!(reason.len() <= 512, "a reason of {} bytes accepted", reason.len()),
        Err(e) => {
            assert!(reason.len() > 512, "a reason of {} bytes refused: {e}", reason.len());
            secret_echo::refuses(&parser("validate_reason"), reason);
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON bodies

/// The members of a JSON object, in order, repeats included.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The fields of a body type, for the reference: their names, the ones that must be
/// given, and how many leading fields an array form must hold.
struct Shape<'a> {
    names: &'a [&'a str],
    required: &'a [&'a str],
    /// The fields up to the last one without a serde default.
    positional: usize,
}

/// What a body must be to decode: an object, each member known and given once, the
/// required ones present; or (serde's derive takes it too, and the sidecar with it) an
/// array of the fields in order, all of them but trailing ones that have a default.
fn reference_body_shape(body: &[u8], shape: &Shape<'_>) -> bool {
    if let Ok(values) = serde_json::from_slice::<Vec<serde_json::Value>>(body) {
        return (shape.positional..=shape.names.len()).contains(&values.len());
    }
    let Ok(Members(members)) = serde_json::from_slice::<Members>(body) else {
        return false;
    };
    let mut seen = std::collections::BTreeSet::new();
    members
        .iter()
        .all(|(n, _)| shape.names.contains(&n.as_str()) && seen.insert(n.clone()))
        && shape.required.iter().all(|r| seen.contains(*r))
}

/// Decodes `body` as `T`; an accepted body must have the reference's shape, and serialise
/// to JSON that decodes equal; a body of the wrong shape must be refused.
fn check_body<T>(body: &[u8], shape: &Shape<'_>) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + Serialize + std::fmt::Debug + PartialEq,
{
    let decoded = parse_json::<T>(body);
    let shape_ok = reference_body_shape(body, shape);
    match &decoded {
        Ok(value) => {
            assert!(
                shape_ok,
                "{} decoded, but it is no object of the known fields (nor an array of them)",
                String::from_utf8_lossy(body)
            );
            let json = serde_json::to_string(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(
                parse_json::<T>(json.as_bytes()).as_ref(),
                Ok(value),
                "{json} decodes to another body"
            );
        }
        Err(message) => {
            // Only the presented key is defended: a wrong-typed value elsewhere is quoted.
            if let Ok(Members(members)) = serde_json::from_slice::<Members>(body) {
                let text = String::from_utf8_lossy(body);
                for (_, value) in members.iter().filter(|(n, _)| n == "key") {
                    let Some(key) = value.as_str() else { continue };
                    for run in secret_echo::secret_runs(key) {
                        if text.matches(run).count() == 1 {
                            assert!(!message.contains(run), "a refused body repeats the key: {message}");
                        }
                    }
                }
            }
        }
    }
    decoded
}

const VERIFY_FIELDS: [&str; 9] = [
    "key", "cost", "weight", "ip", "endpoint", "referrer", "require", "project", "env",
];

/// The decision the verification order implies for the fixture's keys.
fn reference_decision(scratch: &Scratch, req: &VerifyRequest<'_>) -> (Code, Option<Forbidden>) {
    let Some(key) = scratch.keys.iter().find(|k| k.secret == req.key) else {
        let parses = scratch.store.formats().parse(req.key).is_ok();
        return (if parses { Code::NotFound } else { Code::Malformed }, None);
    };
    let record = &key.record;
    if key.revoked {
        return (Code::Revoked, None);
    }
    let forbidden = if req.project.is_some_and(|p| p != record.project) {
        Some(Forbidden::Project)
    } else if req.env.is_some_and(|e| e != record.format.env()) {
        Some(Forbidden::Environment)
    } else if !record.allow_ips.is_empty() && !req.ip.is_some_and(|ip| record.allow_ips.allows(ip)) {
        Some(Forbidden::Ip)
    } else if !record.allow_referrers.is_empty() && !req.referrer.is_some_and(|r| record.allow_referrers.allows(r)) {
        Some(Forbidden::Referrer)
    } else if !record.allow_endpoints.is_empty()
        && !req.endpoint.is_some_and(|(m, p)| record.allow_endpoints.allows(m, p))
    {
        Some(Forbidden::Endpoint)
    } else {
        None
    };
    if forbidden.is_some() {
        return (Code::Forbidden, forbidden);
    }
    let role = record.role.as_ref().map_or("member", |r| r.as_str());
    let grants = builtin_role(role)
        .map(|r| r.permissions().clone())
        .unwrap_or_default()
        .union(&record.permissions);
    if req.require.is_some_and(|q| !q.evaluate(&grants)) {
        return (Code::InsufficientPermissions, None);
    }
    (Code::Valid, None)
}

fn check_verify_body(scratch: &Scratch, body: &[u8]) -> bool {
    verify_outcome(scratch, body) == Some((Code::Valid, None))
}

/// Checks a verify body as [`check_http_input`] does; returns the decision's code and
/// restriction, or `None` when the sidecar would answer 400 before verifying.
pub fn verify_outcome(scratch: &Scratch, body: &[u8]) -> Option<(Code, Option<Forbidden>)> {
    let Ok(mut body) = check_body::<VerifyBody>(
        body,
        &Shape {
            names: &VERIFY_FIELDS,
            required: &["key"],
            positional: VERIFY_FIELDS.len(),
        },
    ) else {
        return None;
    };
    // A seed names a fixture key by its placeholder.
    if let Some(key) = scratch.keys.iter().find(|k| k.placeholder == body.key.trim()) {
        body.key = body.key.replace(key.placeholder, &key.secret);
    }
    // As the handler: each field parsed, then one verify.
    let require = match body.require.as_deref() {
        Some(q) => {
            if !policy_checks::check_policy_text(PolicyInput::Query, q) {
                return None;
            }
            Some(PermissionQuery::parse(q).unwrap_or_else(|e| panic!("{q:?} checked, yet {e}")))
        }
        None => None,
    };
    let env = match body.env.as_deref().map(Env::from_str).transpose() {
        Ok(env) => env,
        Err(e) => {
            let env = body.env.as_deref().unwrap_or("");
            assert!(env != "live" && env != "test", "{env:?} refused: {e}");
            secret_echo::refuses(&parser("Env::from_str"), env);
            return None;
        }
    };
    let endpoint = match body.endpoint.as_deref() {
        Some(e) => match e.trim().split_once(' ') {
            Some((method, path)) => Some((method, path.trim())),
            None => return None,
        },
        None => None,
    };
    if let Some(referrer) = body.referrer.as_deref() {
        policy_checks::check_policy_text(PolicyInput::RefererHeader, referrer);
    }
    let key = body.key.trim();
    let mut req = VerifyRequest::new(key)
        .cost(body.cost.unwrap_or(1))
        .weight(body.weight.unwrap_or(1));
    req.ip = body.ip;
    req.referrer = body.referrer.as_deref();
    req.endpoint = endpoint;
    req.require = require.as_ref();
    req.project = body.project.as_deref();
    req.env = env;
    let decision = scratch
        .store
        .verify_with(&req)
        .unwrap_or_else(|e| panic!("verify {body:?}: {e}"));
    let (code, forbidden) = reference_decision(scratch, &req);
    assert_eq!(
        (decision.code, decision.forbidden),
        (code, forbidden),
        "verify {body:?}"
    );
    let found = scratch.keys.iter().find(|k| k.secret == key);
    assert_eq!(
        decision.key.as_ref().map(|k| &k.id),
        found.map(|k| &k.record.id),
        "the decision's key"
    );
    assert_eq!(decision.malformed.is_some(), code == Code::Malformed);
    let shown = format!("{decision:?}");
    if let Some(k) = found {
        assert!(!shown.contains(&k.secret[8..]), "a decision's Debug shows the key");
    }
    for run in secret_echo::secret_runs(key) {
        assert!(!shown.contains(run), "a decision's Debug shows the presented key");
    }
    Some((decision.code, decision.forbidden))
}

const CREATE_FIELDS: [&str; 20] = [
    "name",
    "prefix",
    "env",
    "length",
    "checksum",
    "project",
    "expires_in",
    "expires_at",
    "metadata",
    "rate_limits",
    "budget",
    "budget_period",
    "plan",
    "type",
    "user",
    "role",
    "permissions",
    "allow_ips",
    "allow_referrers",
    "allow_endpoints",
];

/// A list of texts through one policy parser: accepted exactly when each is, alone.
fn check_list<T>(list: &[String], input: PolicyInput, parse: fn(&[String]) -> Result<T, InputError>) -> Option<T> {
    let each: Vec<bool> = list
        .iter()
        .map(|t| policy_checks::check_policy_text(input, t))
        .collect();
    match parse(list) {
        Ok(parsed) => {
            assert!(each.iter().all(|ok| *ok), "{list:?} accepted with a bad entry");
            Some(parsed)
        }
        Err(_) => {
            assert!(each.iter().any(|ok| !ok), "{list:?} refused, yet each entry parses");
            None
        }
    }
}

fn check_create_body(scratch: &Scratch, body: &[u8]) -> bool {
    let Ok(body) = check_body::<CreateBody>(
        body,
        &Shape {
            names: &CREATE_FIELDS,
            required: &["name"],
            // Up to `role`: `permissions` and the allowlists after it have defaults.
            positional: 16,
        },
    ) else {
        return false;
    };
    let mut ok = true;
    // The handler's parsers, in its order; each refusal ends a real request, here the
    // checks go on to the next field.
    let env = body.env.as_deref().map(|e| {
        let parsed = Env::from_str(e);
        assert_eq!(parsed.is_ok(), e == "live" || e == "test", "env {e:?}");
        if parsed.is_err() {
            secret_echo::refuses(&parser("Env::from_str"), e);
        }
        parsed
    });
    let env = match env.transpose() {
        Ok(env) => env,
        Err(_) => {
            ok = false;
            None
        }
    };
    let formats = scratch.store.formats();
    let length = match (body.length, body.total_length) {
        (Some(_), Some(_)) => {
            ok = false;
            None
        }
        (Some(n), None) => Some(FormatLength::Random(n)),
        (None, Some(n)) => Some(FormatLength::Total(n)),
        (None, None) => None,
    };
    let request = FormatRequest {
        prefix: body.prefix.as_deref(),
        env,
        length,
        no_checksum: !body.checksum,
        new_format: body.new_format,
    };
    match formats.choose(&request) {
        Ok(format) => {
            if let Some(prefix) = body.prefix.as_deref() {
                assert_eq!(format.prefix(), prefix, "choose picked another prefix");
            }
            if let Some(len) = body.length {
                assert_eq!(format.random_len(), len, "choose picked another length");
            }
            if let Some(len) = body.total_length {
                assert_eq!(format.total_len(), len, "choose picked another total length");
            }
            assert_eq!(format.has_checksum(), body.checksum, "choose ignored the checksum");
            if let Some(env) = env {
                assert_eq!(format.env(), env, "choose picked another environment");
            }
        }
        Err(_) => {
            ok = false;
            if let Some(prefix) = body.prefix.as_deref() {
                secret_echo::refuses(&parser("FormatSet::choose (prefix)"), prefix);
            }
        }
    }
    for limit in &body.rate_limits {
        ok &= time_checks::check_time_text(TimeInput::RateLimit, limit);
    }
    let period_text = body.budget_period.as_deref().unwrap_or("monthly");
    match Period::from_str(period_text) {
        Ok(period) => {
            let want = match period_text.split_once(':') {
                None => ["monthly", "daily", "total"].contains(&period_text),
                Some(("monthly", day)) => day.parse::<u8>().is_ok_and(|d| (1..=31).contains(&d)),
                Some(_) => false,
            };
            assert!(want, "budget period {period_text:?} accepted");
            if let Some(cap) = body.budget {
                let want = cap <= credstore::limits::MAX_BUDGET;
                assert_eq!(Budget::new(cap, period).is_ok(), want, "a budget of {cap}");
                ok &= want;
            }
        }
        Err(_) => {
            ok = false;
            secret_echo::refuses(&parser("Period::from_str"), period_text);
        }
    }
    if let Some(role) = body.role.as_deref() {
        ok &= policy_checks::check_policy_text(PolicyInput::Role, role);
    }
    if let Some(user) = body.user.as_deref() {
        policy_checks::check_policy_text(PolicyInput::User, user);
    }
    let permissions = check_list(&body.permissions, PolicyInput::Permission, |l| PermissionSet::parse(l));
    if let Some(set) = &permissions {
        let texts: Vec<&str> = set.permissions().iter().map(|p| p.as_str()).collect();
        assert_eq!(texts, body.permissions.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let ips = check_list(&body.allow_ips, PolicyInput::Cidr, |l| IpAllowlist::new(l));
    let referrers = check_list(&body.allow_referrers, PolicyInput::Referrer, |l| {
        ReferrerAllowlist::new(l)
    });
    let endpoints = check_list(&body.allow_endpoints, PolicyInput::Endpoint, |l| {
        EndpointAllowlist::new(l)
    });
    for (sources, list) in [
        (ips.as_ref().map(IpAllowlist::sources), &body.allow_ips),
        (
            referrers.as_ref().map(ReferrerAllowlist::sources),
            &body.allow_referrers,
        ),
        (
            endpoints.as_ref().map(EndpointAllowlist::sources),
            &body.allow_endpoints,
        ),
    ] {
        if let Some(sources) = sources {
            assert_eq!(sources, list.as_slice(), "an allowlist's sources");
        }
    }
    ok &= permissions.is_some() && ips.is_some() && referrers.is_some() && endpoints.is_some();
    match (&body.expires_in, &body.expires_at) {
        (Some(_), Some(_)) => ok = false,
        (Some(d), None) => ok &= time_checks::check_time_text(TimeInput::Duration, d),
        (None, Some(t)) => ok &= time_checks::check_time_text(TimeInput::Time, t),
        (None, None) => {}
    }
    // What `create` checks before it writes.
    let name_ok = !body.name.trim().is_empty() && body.name.len() <= 128 && !body.name.chars().any(char::is_control);
    match validate_name(&body.name) {
        Ok(()) => assert!(name_ok, "name {:?} accepted", body.name),
        Err(e) => {
            assert!(!name_ok, "name {:?} refused: {e}", body.name);
            secret_echo::refuses(&parser("validate_name"), &body.name);
        }
    }
    ok &= name_ok;
    if let Some(project) = body.project.as_deref() {
        let want = !project.is_empty()
            && project.len() <= 64
            && project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        match validate_project(project) {
            Ok(()) => assert!(want, "project {project:?} accepted"),
            Err(e) => {
                assert!(!want, "project {project:?} refused: {e}");
                secret_echo::refuses(&parser("validate_project"), project);
            }
        }
        ok &= want;
    }
    ok
}

/// An owner id by the rule's words: 1 to 64 characters of `A-Z a-z 0-9 _ . : @ -`, and
/// not `key_` followed by 22 base62 characters (a key id, which `credits` takes too).
fn reference_owner_id(id: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b);
    let key_id = id.len() == 26 && id.starts_with("key_") && id.bytes().skip(4).all(|b| BASE62.contains(&b));
    (1..=64).contains(&id.len()) && id.bytes().all(allowed) && !key_id
}

fn check_owner_body(data: &[u8]) -> bool {
    let (id, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let id = String::from_utf8_lossy(id);
    let id_ok = credstore::owner::validate_owner_id(&id).is_ok();
    assert_eq!(id_ok, reference_owner_id(&id), "owner id {id:?}");
    if !id_ok {
        secret_echo::refuses(&parser("validate_owner_id"), &id);
    }
    let shape = Shape {
        names: &[
            "name",
            "metadata",
            "rate_limits",
            "budget",
            "budget_period",
            "no_budget",
        ],
        required: &[],
        positional: 5,
    };
    let Ok(owner) = check_body::<OwnerBody>(body, &shape) else {
        return false;
    };
    // The handler's reading of the body, field by field, as `owner set` reads its flags.
    let mut ok = true;
    let limits: Option<Vec<credstore::RateLimit>> = owner.rate_limits.as_ref().map(|texts| {
        texts
            .iter()
            .filter_map(|t| credstore::RateLimit::parse(t).ok())
            .collect()
    });
    if let (Some(texts), Some(parsed)) = (&owner.rate_limits, &limits) {
        ok &= texts.len() == parsed.len();
    }
    let budget = match (owner.budget, owner.budget_period.as_deref()) {
        (Some(cap), period) => match period.unwrap_or("monthly").parse::<Period>() {
            Ok(period) => Budget::new(cap, period).ok(),
            Err(_) => None,
        },
        (None, _) => None,
    };
    ok &= owner.budget.is_none_or(|_| budget.is_some());
    ok &= owner.budget.is_some() || owner.budget_period.is_none();
    ok &= !(owner.budget.is_some() && owner.no_budget);
    if !ok {
        return false;
    }
    let update = credstore::OwnerUpdate {
        name: owner.name.clone(),
        metadata: owner.metadata.clone(),
        rate_limits: limits,
        budget: match (budget, owner.no_budget) {
            (Some(b), _) => Some(Some(b)),
            (None, true) => Some(None),
            (None, false) => None,
        },
    };
    // `OwnerUpdate::check` refuses exactly what one of the parsers of its fields refuses.
    let fields_ok = owner.name.as_deref().is_none_or(|n| validate_name(n).is_ok())
        && owner
            .metadata
            .as_ref()
            .is_none_or(|m| credstore::record::validate_metadata(m).is_ok())
        && update
            .rate_limits
            .as_deref()
            .is_none_or(|l| credstore::limits::check_limits(l).is_ok());
    assert_eq!(update.check().is_ok(), fields_ok, "{owner:?}");
    fields_ok && id_ok
}

fn check_revoke_or_rotate_body(body: &[u8]) -> bool {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let revoke = parse_optional_json::<RevokeBody>(body);
    let rotate = parse_optional_json::<RotateBody>(body);
    if blank {
        assert_eq!(revoke, Ok(RevokeBody::default()));
        assert_eq!(rotate, Ok(RotateBody::default()));
        return true;
    }
    let one = |name| Shape {
        names: std::slice::from_ref(name),
        required: &[],
        positional: 1,
    };
    let revoke = check_body::<RevokeBody>(body, &one(&"reason"));
    let rotate = check_body::<RotateBody>(body, &one(&"grace"));
    if let Ok(RevokeBody { reason: Some(reason) }) = &revoke {
        check_reason(reason);
    }
    if let Ok(RotateBody { grace: Some(grace) }) = &rotate
        && time_checks::check_time_text(TimeInput::Duration, grace)
    {
        let ms = credstore::clock::parse_duration(grace).unwrap_or_else(|e| panic!("{e}"));
        // The handler keeps the old key valid this long: never zero.
        assert!(std::time::Duration::from_millis(ms.unsigned_abs()) > std::time::Duration::ZERO);
    }
    revoke.is_ok() || rotate.is_ok()
}
