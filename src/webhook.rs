//! Webhooks: endpoints a store registers for kinds of events, and the Standard Webhooks
//! signature scheme their deliveries carry.
//!
//! A webhook is registered with [`crate::Store::webhook_add`] (a `webhook.added` event) and
//! removed with [`crate::Store::webhook_remove`]; `credstore serve` delivers the events
//! whose kind it asked for, in log order, and records each attempt as a `webhook.attempt`
//! event, whose successes move the webhook's delivery position ([`Webhook::delivered`]).
//!
//! Signing follows <https://www.standardwebhooks.com/>: the headers `webhook-id` (stable
//! for one event, across retries: [`message_id`]), `webhook-timestamp` (unix seconds of
//! the attempt) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 of
//! `id.timestamp.body` under the secret). The secret (`whsec_` + base64 of 32 bytes) is
//! never stored: the store derives it from its pepper and the webhook's id
//! ([`crate::Store::webhook_secret`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// What the text form of a signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// The most event kinds one webhook may list.
pub const MAX_KINDS: usize = 32;
/// The longest URL a webhook may have.
pub const MAX_URL_LEN: usize = 2048;
/// Kinds that are never delivered: a delivery's own record would be another event to
/// deliver, for ever.
pub const NEVER_DELIVERED: &str = "webhook.";

/// A webhook's id: `wh_` and 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WebhookId(String);

impl WebhookId {
    /// A fresh random id.
    pub fn random() -> WebhookId {
        let mut bytes = [0u8; 8];
        crate::token::fill_random(&mut bytes);
        WebhookId(format!("wh_{}", hex::encode(bytes)))
    }

    /// Parses an id as [`WebhookId::random`] makes them.
    ///
    /// # Errors
    /// [`InputError::InvalidWebhook`] naming the text.
    pub fn parse(text: &str) -> Result<WebhookId, InputError> {
        let ok = text.strip_prefix("wh_").is_some_and(|hex| {
            hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !ok {
            // Not repeated: an id is short, and a key pasted here must not reach a log.
            return Err(InputError::InvalidWebhook(format!(
                "id ({} bytes): a webhook id is wh_ and 16 hex digits",
                text.len()
            )));
        }
        Ok(WebhookId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a webhook's deliveries travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`: in clear, for loopback and private networks (docs/SECURITY.md).
    Http,
    /// `https://`: over TLS, the receiver's certificate checked against the host.
    Https,
}

impl Scheme {
    /// The port when the URL names none: 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where deliveries go: an `http://` or `https://` URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    text: String,
    scheme: Scheme,
    authority: String,
    path: String,
}

impl WebhookUrl {
    /// Parses `http://HOST[:PORT][/PATH][?QUERY]` or the same with `https://`. An https
    /// host must be a name a certificate can be for: a DNS name or an IP address.
    ///
    /// # Errors
    /// [`InputError::InvalidWebhook`] saying what is wrong, never repeating the URL (a URL
    /// may carry a token, in its path or its query).
    pub fn parse(text: &str) -> Result<WebhookUrl, InputError> {
        let bad = |why: &str| InputError::InvalidWebhook(format!("url ({} bytes): {why}", text.len()));
        if text.len() > MAX_URL_LEN {
            return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
        }
        if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("it holds spaces or control characters"));
        }
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (Scheme::Http, rest)
        } else {
            return Err(bad("give an https:// or http:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if path.contains('#') {
            return Err(bad("a fragment (#...) is never sent: leave it out"));
        }
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("give a host (and no user:password@)"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("give host or host:port"))?;
        if host.is_empty() {
            return Err(bad("give a host"));
        }
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        if scheme == Scheme::Https && server_name_of(host).is_none() {
            return Err(bad(
                "an https host must be a DNS name (letters, digits, hyphens, dots) or an IP address, as certificates name them",
            ));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(WebhookUrl {
            text: text.to_string(),
            scheme,
            authority: authority.to_string(),
            path,
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host[:port]`, for the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `host:port` to connect to (port 80 or 443 when none was given).
    pub fn connect_to(&self) -> String {
        match split_host_port(&self.authority) {
            Some((host, Some(port))) => format!("{host}:{port}"),
            _ => format!("{}:{}", self.authority, self.scheme.default_port()),
        }
    }

    /// The name the receiver's certificate must be valid for (and the TLS server name
    /// sent): the host, an IPv6 literal without its brackets. `None` for an `http://`
    /// URL, and for a host that is neither a DNS name nor an IP address (which
    /// [`WebhookUrl::parse`] refuses for `https://`).
    pub fn server_name(&self) -> Option<rustls_pki_types::ServerName<'static>> {
        if self.scheme != Scheme::Https {
            return None;
        }
        let (host, _) = split_host_port(&self.authority)?;
        server_name_of(host)
    }

    /// The path and query to request.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// The kinds of events a webhook is delivered: `*` for every kind, or kinds as
/// [`crate::Event::kind_name`] names them (`key.created`, `key.revoked`,
/// `budget.threshold`). `webhook.*` events are never delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventKinds(Vec<String>);

impl EventKinds {
    /// Parses a list of kinds: each `*` or lowercase dotted words (`a-z`, `0-9`, `_`),
    /// at most [`MAX_KINDS`], none of them `webhook.*`. Duplicates are dropped.
    ///
    /// # Errors
    /// [`InputError::InvalidWebhook`] naming the kind by its place in the list (never
    /// repeating it: a key pasted there must not reach a log).
    pub fn parse<S: AsRef<str>>(kinds: &[S]) -> Result<EventKinds, InputError> {
        if kinds.is_empty() {
            return Err(InputError::InvalidWebhook(
                "give at least one event kind (--event KIND, or * for all)".into(),
            ));
        }
        if kinds.len() > MAX_KINDS {
            return Err(InputError::InvalidWebhook(format!("at most {MAX_KINDS} event kinds")));
        }
        let mut out: Vec<String> = Vec::new();
        for (place, kind) in kinds.iter().enumerate() {
            let kind = kind.as_ref();
            let place = place + 1;
            let word = |w: &str| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            };
            let valid = kind == "*" || (kind.len() <= 64 && kind.split('.').count() >= 2 && kind.split('.').all(word));
            if !valid {
                return Err(InputError::InvalidWebhook(format!(
                    "event kind number {place}: give * or a kind such as key.created, key.revoked, budget.threshold"
                )));
            }
            if kind.starts_with(NEVER_DELIVERED) {
                return Err(InputError::InvalidWebhook(format!(
                    "event kind number {place}: webhook.* events are never delivered (a delivery would make another)"
                )));
            }
            if !out.iter().any(|k| k == kind) {
                out.push(kind.to_string());
            }
        }
        Ok(EventKinds(out))
    }

    /// Whether an event of `kind` is delivered.
    pub fn matches(&self, kind: &str) -> bool {
        !kind.starts_with(NEVER_DELIVERED) && self.0.iter().any(|k| k == "*" || k == kind)
    }

    /// The kinds, as given.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A point in the log's events: a record's sequence number and the event's place among
/// that record's events (a `key.uses` record holds one `key.used` event per use; any other
/// record holds one event, part 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The record.
    pub seq: u64,
    /// The event within it.
    pub part: u32,
}

impl Position {
    /// Every event of record `seq` and before.
    pub fn end_of(seq: u64) -> Position {
        Position { seq, part: u32::MAX }
    }
}

/// A registered webhook, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Where deliveries go (as given; parsed when it was added).
    pub url: String,
    /// The kinds delivered.
    pub kinds: EventKinds,
    /// When it was added, unix ms.
    pub created_at: i64,
    /// Every matching event up to here was delivered (at first: the log's end when it
    /// was added; only later events are delivered).
    pub delivered: Position,
    /// Failed attempts at the event after `delivered` so far (0 after a delivery).
    pub failed_attempts: u32,
}

/// The `webhook-id` of the event at `at` for webhook `id`: the same for every attempt, so
/// a receiver can drop a duplicate.
pub fn message_id(id: &WebhookId, at: Position) -> String {
    format!("msg_{}_{}_{}", id.as_str().trim_start_matches("wh_"), at.seq, at.part)
}

/// A signing secret in its text form: `whsec_` + base64.
pub fn secret_text(bytes: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))
}

/// The bytes of a signing secret given as `whsec_` + base64 (or the base64 alone).
///
/// # Errors
/// [`InputError::InvalidWebhook`] when it is not base64 (the text is never repeated).
pub fn secret_bytes(text: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, InputError> {
    let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    BASE64
        .decode(b64)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| InputError::InvalidWebhook("the signing secret is not whsec_ and base64".into()))
}

/// The `webhook-signature` header's value for one attempt: `v1,` + base64 of HMAC-SHA256
/// of `msg_id.timestamp.body` under `secret` (the decoded bytes).
pub fn sign(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// `host` (an `[IPv6]` literal with its brackets) and the port after `:`, if any; `None`
/// for an unclosed bracket or text after it that is not `:PORT`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => rest.strip_prefix(':').map(|port| (host, Some(port))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

/// `host` as a TLS server name: a DNS name, an IPv4 address or an `[IPv6]` literal.
fn server_name_of(host: &str) -> Option<rustls_pki_types::ServerName<'static>> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.len() != host.len() {
        // Bracketed: only an IPv6 address.
        let ip: std::net::Ipv6Addr = bare.parse().ok()?;
        return Some(rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::V6(ip).into()));
    }
    rustls_pki_types::ServerName::try_from(bare.to_string()).ok()
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs_as_published() {
        let secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn urls_parse_or_say_why_not() {
        let u = WebhookUrl::parse("http://127.0.0.1:9000/hooks?x=1").expect("url");
        assert_eq!(
            (u.authority(), u.path(), u.connect_to().as_str()),
            ("127.0.0.1:9000", "/hooks?x=1", "127.0.0.1:9000")
        );
        let u = WebhookUrl::parse("http://example.com").expect("url");
        assert_eq!((u.path(), u.connect_to().as_str()), ("/", "example.com:80"));
        let u = WebhookUrl::parse("http://[::1]:8080/x").expect("url");
        assert_eq!(u.connect_to(), "[::1]:8080");
        assert_eq!(
            WebhookUrl::parse("http://[::1]/x").expect("url").connect_to(),
            "[::1]:80"
        );
        let u = WebhookUrl::parse("HTTPS://hooks.example.com/in").expect("url");
        assert_eq!(
            (u.scheme(), u.connect_to().as_str(), u.path()),
            (Scheme::Https, "hooks.example.com:443", "/in")
        );
        assert_eq!(
            u.server_name().map(|n| n.to_str().into_owned()).as_deref(),
            Some("hooks.example.com")
        );
        let u = WebhookUrl::parse("https://[::1]:8443/x").expect("url");
        assert_eq!(
            (
                u.connect_to().as_str(),
                u.server_name().map(|n| n.to_str().into_owned())
            ),
            ("[::1]:8443", Some("::1".to_string()))
        );
        assert_eq!(WebhookUrl::parse("http://x/").expect("url").server_name(), None);
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https://exa mple/",
            "https://-x-/",
            "https://[zz]/",
            "http://",
            "http://u:p@x/",
            "http://x:0/",
            "http://x:99999/",
            "http://x/a b",
            "http://x/#f",
            "http://:80/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_match_by_name_and_never_webhook_events() {
        let all = EventKinds::parse(&["*"]).expect("kinds");
        assert!(all.matches("key.created") && !all.matches("webhook.attempt"));
        let some = EventKinds::parse(&["key.revoked", "key.revoked", "budget.threshold"]).expect("kinds");
        assert_eq!(some.as_slice().len(), 2);
        assert!(some.matches("key.revoked") && !some.matches("key.created"));
        for bad in [&[][..], &["webhook.attempt"], &["Key.created"], &["key"], &["key..x"]] {
            assert!(EventKinds::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_parse_as_made() {
        let id = WebhookId::random();
        assert_eq!(WebhookId::parse(id.as_str()).expect("id"), id);
        assert!(WebhookId::parse("wh_123").is_err());
        assert!(WebhookId::parse("wh_ABCDEF0123456789").is_err());
        assert!(message_id(&id, Position { seq: 7, part: 0 }).ends_with("_7_0"));
    }
}
