//! The customers' dashboard (DESIGN.md, "Usage and the customers' dashboard"): the page an
//! API business's customers (owners) manage their own keys on, and the sessions they enter
//! it with.
//!
//! A host mints a link for an owner ([`crate::Store::mint_dashboard_link`], `credstore
//! dashboard link OWNER`, or `POST /v1/dashboard/sessions`); the link works once, before it
//! expires, and is exchanged for a session ([`crate::Store::redeem_dashboard_link`]) whose
//! token the page keeps in an `HttpOnly`, `SameSite=Strict` cookie. Mints, redemptions and
//! revocations are events in the log that carry only BLAKE3 hashes of the link and session
//! tokens, so a fleet's hosts all learn them, and a link is redeemed once fleet-wide: the
//! redemption is planned on the commit thread against the latest state, where a second one
//! finds the link used. Every change made through a session is logged with a
//! `dashboard.change` event naming the session as its actor, in the same commit.
//!
//! With the `http` feature, [`router`] is the page itself, an axum `Router` a host nests
//! under any path (`credstore serve --dashboard` at `/dashboard/`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::secret::Secret;

#[cfg(feature = "http")]
mod assets;
#[cfg(feature = "http")]
mod chart;
#[cfg(feature = "http")]
mod page;
#[cfg(feature = "http")]
mod router;

#[cfg(feature = "http")]
pub use router::{COOKIE_NAME, DashboardConfig, csrf_token, router};

/// The longest a link may stay valid before it is used.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// A link's lifetime when none is asked.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// A session's lifetime from the link's redemption, when none is asked.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The longest a session may last.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest return URL a link may carry.
pub const MAX_RETURN_URL: usize = 2048;

/// What a session may see and do: a set of [`Scopes::NAMES`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scopes(u8);

impl Scopes {
    /// `keys:read`: see the owner's keys.
    pub const KEYS_READ: Scopes = Scopes(1);
    /// `keys:create`: create keys.
    pub const KEYS_CREATE: Scopes = Scopes(2);
    /// `keys:revoke`: revoke keys.
    pub const KEYS_REVOKE: Scopes = Scopes(4);
    /// `keys:roll`: roll (rotate) keys.
    pub const KEYS_ROLL: Scopes = Scopes(8);
    /// `budget:set`: set a key's monthly budget cap.
    pub const BUDGET_SET: Scopes = Scopes(16);
    /// `usage:read`: see usage charts.
    pub const USAGE_READ: Scopes = Scopes(32);
    /// Every scope (the default).
    pub const ALL: Scopes = Scopes(63);
    /// No scope.
    pub const NONE: Scopes = Scopes(0);
    /// Each scope's name, as the CLI and the HTTP API take them.
    pub const NAMES: [(&'static str, Scopes); 6] = [
        ("keys:read", Scopes::KEYS_READ),
        ("keys:create", Scopes::KEYS_CREATE),
        ("keys:revoke", Scopes::KEYS_REVOKE),
        ("keys:roll", Scopes::KEYS_ROLL),
        ("budget:set", Scopes::BUDGET_SET),
        ("usage:read", Scopes::USAGE_READ),
    ];

    /// The scopes named (none named: [`Scopes::ALL`]).
    ///
    /// # Errors
    /// [`InputError::InvalidScope`] naming the first unknown name.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, InputError> {
        if names.is_empty() {
            return Ok(Scopes::ALL);
        }
        let mut out = Scopes::NONE;
        for name in names {
            let name = name.as_ref();
            let (_, scope) = Scopes::NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| InputError::InvalidScope(name.to_string()))?;
            out = out.with(*scope);
        }
        Ok(out)
    }

    /// Both sets.
    pub const fn with(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// Whether every scope of `other` is in this set.
    pub const fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the scopes in the set.
    pub fn names(self) -> Vec<&'static str> {
        Scopes::NAMES
            .iter()
            .filter(|(_, s)| self.contains(*s))
            .map(|(n, _)| *n)
            .collect()
    }

    /// The name of a single scope (`"scopes"` for a set of several).
    pub fn name(self) -> &'static str {
        Scopes::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("scopes", |(n, _)| n)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// The BLAKE3 hash of a link or session token: what the log and the index keep of it.
/// Compared in constant time; never printed.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(*blake3::hash(token.as_bytes()).as_bytes())
    }

    /// As the index names it (hex).
    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The public id of the session this hashes the token of: `ds_` and the first 8 bytes
    /// of the hash in hex. A hash of a hash: it says nothing of the token.
    pub(crate) fn session_id(self) -> String {
        let inner = blake3::hash(&self.0);
        let mut id = String::from("ds_");
        id.push_str(&hex::encode(inner.as_bytes().get(..8).unwrap_or_default()));
        id
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        // blake3::Hash's equality is constant-time.
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for TokenHash {}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// What a host asks for when it mints a link.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    /// The owner whose keys the session manages (it must exist).
    pub owner: String,
    /// How long the link stays valid before it is used (default 15 minutes, at most 24 h).
    pub ttl: Duration,
    /// How long the session lasts from the link's redemption (default 8 h, at most 7 days).
    pub session_ttl: Duration,
    /// What the session may see and do (default all).
    pub scopes: Scopes,
    /// Where the page's "Back" link leads (an `http(s)://` URL of the host's own site).
    pub return_url: Option<String>,
}

impl LinkRequest {
    /// A link for `owner` with the defaults.
    pub fn new(owner: impl Into<String>) -> LinkRequest {
        LinkRequest {
            owner: owner.into(),
            ttl: DEFAULT_LINK_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            scopes: Scopes::ALL,
            return_url: None,
        }
    }

    /// Checks everything that does not depend on the store.
    ///
    /// # Errors
    /// [`InputError::InvalidTime`] for a lifetime of zero or over its bound,
    /// [`InputError::InvalidUrl`] for a return URL that is not `http(s)://`, too long or
    /// holds a control character, [`InputError::InvalidScope`] for no scope at all.
    pub fn check(&self) -> Result<(), InputError> {
        crate::owner::validate_owner_id(&self.owner)?;
        if self.ttl.is_zero() || self.ttl > MAX_LINK_TTL {
            return Err(InputError::InvalidTime(format!(
                "a link's ttl must be between 1s and 24h, not {}s",
                self.ttl.as_secs()
            )));
        }
        if self.session_ttl.is_zero() || self.session_ttl > MAX_SESSION_TTL {
            return Err(InputError::InvalidTime(format!(
                "a session's ttl must be between 1s and 7d, not {}s",
                self.session_ttl.as_secs()
            )));
        }
        if self.scopes == Scopes::NONE {
            return Err(InputError::InvalidScope("(none)".into()));
        }
        if let Some(url) = &self.return_url {
            check_return_url(url)?;
        }
        Ok(())
    }
}

/// Checks a return URL: `http://` or `https://`, at most [`MAX_RETURN_URL`] bytes, no
/// control characters or spaces (it is put in an `href`).
///
/// # Errors
/// [`InputError::InvalidUrl`].
pub fn check_return_url(url: &str) -> Result<(), InputError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let chars_ok = !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if !scheme_ok || !chars_ok || url.len() > MAX_RETURN_URL || url.len() <= "https://".len() {
        return Err(InputError::InvalidUrl(crate::redact::quote(url).to_string()));
    }
    Ok(())
}

/// A link just minted: its token, shown once, and when it expires.
#[derive(Debug, Clone)]
pub struct MintedLink {
    /// The link's token (`cdl_` + 64 hex digits). The store keeps only its hash.
    pub token: Secret,
    /// When the link stops working, unix ms.
    pub expires_at: i64,
}

impl MintedLink {
    /// The link under the dashboard mounted at `base` (`https://api.example.com/dashboard`).
    pub fn url(&self, base: &str) -> String {
        format!("{}/enter/{}", base.trim_end_matches('/'), self.token.expose())
    }
}

/// A dashboard session, as the store knows it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its public id (`ds_` + 16 hex digits): the actor of the changes made through it.
    pub id: String,
    /// The owner whose keys it manages.
    pub owner: String,
    /// What it may see and do.
    pub scopes: Scopes,
    /// When it started (its link was redeemed), unix ms.
    pub started_at: i64,
    /// When it ends, unix ms.
    pub expires_at: i64,
    /// Where the page's "Back" link leads.
    pub return_url: Option<String>,
}

impl Session {
    /// The session as JSON: `{"id", "owner", "scopes", "started_at", "expires_at"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "owner": self.owner,
            "scopes": self.scopes.names(),
            "started_at": crate::clock::fmt_time(self.started_at),
            "expires_at": crate::clock::fmt_time(self.expires_at),
        })
    }
}

/// A session just started: its token (for the cookie) and the session.
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// The session's token (`cds_` + 64 hex digits). The store keeps only its hash.
    pub token: Secret,
    /// The session.
    pub session: Session,
}

/// A minted link as the index keeps it (under its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LinkEntry {
    pub hash: TokenHash,
    pub owner: String,
    pub scopes: Scopes,
    pub expires_at: i64,
    pub session_ttl_ms: i64,
    pub return_url: Option<String>,
    /// Redeemed already: a link works once.
    pub redeemed: bool,
}

/// A session as the index keeps it (under its token's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionEntry {
    pub hash: TokenHash,
    pub session: Session,
}

/// A fresh token: `prefix` and 32 bytes of the OS CSPRNG in hex.
pub(crate) fn new_token(prefix: &str) -> Secret {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    crate::token::fill_random(bytes.as_mut_slice());
    let mut text = String::with_capacity(prefix.len() + 64);
    text.push_str(prefix);
    text.push_str(&hex::encode(bytes.as_slice()));
    Secret::new(text)
}

/// What link tokens start with.
pub const LINK_PREFIX: &str = "cdl_";
/// What session tokens start with.
pub const SESSION_PREFIX: &str = "cds_";

/// Whether `token` is shaped like a token with `prefix` (the prefix and 64 lowercase hex
/// digits): anything else is refused before a lookup.
pub(crate) fn well_formed(token: &str, prefix: &str) -> bool {
    token
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_name() {
        assert_eq!(Scopes::parse::<&str>(&[]).unwrap(), Scopes::ALL);
        let s = Scopes::parse(&["keys:read", "usage:read"]).unwrap();
        assert!(s.contains(Scopes::KEYS_READ) && s.contains(Scopes::USAGE_READ));
        assert!(!s.contains(Scopes::KEYS_CREATE));
        assert_eq!(s.names(), vec!["keys:read", "usage:read"]);
        assert!(Scopes::parse(&["keys:write"]).is_err());
    }

    #[test]
    fn tokens_are_well_formed_and_hashes_redacted() {
        let t = new_token(LINK_PREFIX);
        assert!(well_formed(t.expose(), LINK_PREFIX));
        assert!(!well_formed(t.expose(), SESSION_PREFIX));
        assert!(!well_formed("cdl_xyz", LINK_PREFIX));
        let h = TokenHash::of(t.expose());
        assert!(!format!("{h:?}").contains(&h.to_hex()[..8]));
        assert!(h.session_id().starts_with("ds_") && h.session_id().len() == 19);
    }

    #[test]
    fn link_requests_are_checked() {
        assert!(LinkRequest::new("acme").check().is_ok());
        let mut r = LinkRequest::new("acme");
        r.ttl = Duration::ZERO;
        assert!(r.check().is_err());
        let mut r = LinkRequest::new("acme");
        r.return_url = Some("javascript:alert(1)".into());
        assert!(r.check().is_err());
        r.return_url = Some("https://example.com/account".into());
        assert!(r.check().is_ok());
    }
}
