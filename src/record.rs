//! What the store keeps per key: [`KeyRecord`], its [`KeyId`], its [`Status`], and the
//! requests that create ([`NewKey`]) and change ([`KeyUpdate`]) one, with their limits.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::limits::{Budget, RateLimit};
use crate::policy::{EndpointAllowlist, IpAllowlist, PermissionSet, ReferrerAllowlist, RoleName};
use crate::token::{BASE62, Env, Format, base62_fixed, fill_random};

/// Longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most metadata entries per key.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 512;
/// Most metadata bytes per key, keys and values together.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest revocation reason, in bytes.
pub const MAX_REASON_LEN: usize = 512;
/// The project of a key created without one.
pub const DEFAULT_PROJECT: &str = "default";

const ID_PREFIX: &str = "key_";
const ID_DIGITS: usize = 22;

/// A key's id: `key_` plus 22 base62 digits of a 128-bit number whose top 48 bits are the
/// creation time in milliseconds, so ids sort by creation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Parses an id.
    ///
    /// # Errors
    /// [`InputError::InvalidKeyId`] when it is not `key_` plus 22 base62 characters.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let ok = text.len() == ID_PREFIX.len() + ID_DIGITS
            && text.starts_with(ID_PREFIX)
            && text.bytes().skip(ID_PREFIX.len()).all(|b| BASE62.contains(&b));
        if ok {
            Ok(KeyId(text.to_string()))
        } else {
            Err(InputError::InvalidKeyId(text.to_string()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 128-bit number the id encodes.
    pub(crate) fn value(&self) -> u128 {
        self.0
            .bytes()
            .skip(ID_PREFIX.len())
            .map(|b| BASE62.iter().position(|&d| d == b).unwrap_or(0) as u128)
            .fold(0u128, |n, d| n.wrapping_mul(62).wrapping_add(d))
    }

    /// A new id for `now_ms`, strictly greater than `*last` (which is updated), so ids
    /// issued by one writer sort in issue order even within a millisecond.
    pub(crate) fn next(now_ms: i64, last: &mut u128) -> KeyId {
        let mut random = [0u8; 10];
        fill_random(&mut random);
        let mut low = 0u128;
        for b in random {
            low = (low << 8) | u128::from(b);
        }
        let ms = u128::from(u64::try_from(now_ms.max(0)).unwrap_or(0) & ((1 << 48) - 1));
        let mut n = (ms << 80) | low;
        if n <= *last {
            n = last.saturating_add(1);
        }
        *last = n;
        KeyId(format!("{ID_PREFIX}{}", base62_fixed(n, ID_DIGITS)))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key's status at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Usable.
    Active,
    /// Turned off, reversibly.
    Disabled,
    /// Past its expiry.
    Expired,
    /// Revoked, for good.
    Revoked,
}

impl Status {
    /// `Active`, `Disabled`, `Expired` or `Revoked`, as dashboards show it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Active => "Active",
            Status::Disabled => "Disabled",
            Status::Expired => "Expired",
            Status::Revoked => "Revoked",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(Status::Active),
            "disabled" => Ok(Status::Disabled),
            "expired" => Ok(Status::Expired),
            "revoked" => Ok(Status::Revoked),
            _ => Err(format!(
                "unknown status {}: use active, disabled, expired or revoked",
                crate::redact::quote(s)
            )),
        }
    }
}

/// When and why a key was (or will be, at the end of a rotation grace period) revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Unix ms from which the key is revoked.
    pub at: i64,
    /// The reason given, if any.
    pub reason: Option<String>,
}

/// Everything the store keeps about a key, except its tag and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The id.
    pub id: KeyId,
    /// A human name.
    pub name: String,
    /// Prefix plus the first four random characters: safe to display.
    pub start: String,
    /// The key's format (prefix, environment, shape); a rotation issues the same shape.
    pub format: Format,
    /// The project the key acts in.
    pub project: String,
    /// Unix ms of creation.
    pub created_at: i64,
    /// Unix ms of expiry, if any.
    pub expires_at: Option<i64>,
    /// Unix ms since when the key is disabled, if it is.
    pub disabled_at: Option<i64>,
    /// The revocation, if any (possibly scheduled in the future by a rotation grace).
    pub revoked: Option<Revocation>,
    /// Free-form metadata, bounded in size.
    pub metadata: BTreeMap<String, String>,
    /// The key this one replaced, if it came from a rotation.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one, if it was rotated.
    pub rotated_to: Option<KeyId>,
    /// The key's own rate limits (overriding its plan's of the same name).
    pub rate_limits: Vec<RateLimit>,
    /// The key's own budget (overriding its plan's).
    pub budget: Option<Budget>,
    /// The plan the key follows.
    pub plan: Option<String>,
    /// A service account, or a personal token acting with its user's role.
    pub kind: KeyKind,
    /// A service account's role (`None` for personal tokens).
    pub role: Option<RoleName>,
    /// Permissions granted beyond the role.
    pub permissions: PermissionSet,
    /// Client addresses the key may be used from (empty: any).
    pub allow_ips: IpAllowlist,
    /// Referrer hosts the key may be used from (empty: any).
    pub allow_referrers: ReferrerAllowlist,
    /// Endpoints the key may call (empty: any).
    pub allow_endpoints: EndpointAllowlist,
}

/// What kind of identity a key is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// An identity of its own, with its own role.
    Service,
    /// A person's token: acts with `user`'s current role in the key's project.
    Personal {
        /// The user.
        user: String,
    },
}

impl KeyKind {
    /// `service` or `personal`.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyKind::Service => "service",
            KeyKind::Personal { .. } => "personal",
        }
    }
}

impl KeyRecord {
    /// Live or test, from the key's format.
    pub fn env(&self) -> Env {
        self.format.env()
    }

    /// The key's prefix.
    pub fn prefix(&self) -> &str {
        self.format.prefix()
    }

    /// The status at `now_ms`: revoked beats disabled beats expired.
    pub fn status_at(&self, now_ms: i64) -> Status {
        if self.revoked.as_ref().is_some_and(|r| r.at <= now_ms) {
            Status::Revoked
        } else if self.disabled_at.is_some() {
            Status::Disabled
        } else if self.expires_at.is_some_and(|e| e <= now_ms) {
            Status::Expired
        } else {
            Status::Active
        }
    }
}

/// The latest expiry a key may have, for a time and a lifetime alike: the start of the
/// year 9999 (a key that should never expire has no expiry).
pub const LATEST_EXPIRY: &str = "9999-01-01T00:00:00Z";
/// [`LATEST_EXPIRY`] in unix ms.
pub const LATEST_EXPIRY_MS: i64 = 253_370_764_800_000;

/// An expiry: a point in time, or a lifetime from creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Expires at this unix ms.
    At(i64),
    /// Expires this many ms after the change is made.
    In(i64),
}

impl Expiry {
    /// The absolute expiry, refusing one that is not in the future or is later than
    /// [`LATEST_EXPIRY`] (a time and a lifetime are held to the same bound).
    ///
    /// # Errors
    /// [`InputError::ExpiryInPast`], [`InputError::ExpiryTooLate`].
    pub fn resolve(self, now_ms: i64) -> Result<i64, InputError> {
        let at = match self {
            Expiry::At(at) => Some(at),
            Expiry::In(ms) => now_ms.checked_add(ms),
        };
        let at = at
            .filter(|&at| at <= LATEST_EXPIRY_MS)
            .ok_or(InputError::ExpiryTooLate)?;
        if at <= now_ms {
            return Err(InputError::ExpiryInPast(crate::clock::fmt_time(at)));
        }
        Ok(at)
    }
}

/// A request to create a key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// A human name (1 to 128 bytes, no control characters).
    pub name: String,
    /// The format; `None` means `sk_live_`, 32 random characters, with a checksum, or for a
    /// service account with the `admin` role [`Format::admin`] (`csa_`): an admin key.
    pub format: Option<Format>,
    /// The project; `None` means `default`.
    pub project: Option<String>,
    /// When it expires, if ever.
    pub expires: Option<Expiry>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Rate limits of its own.
    pub rate_limits: Vec<RateLimit>,
    /// A budget of its own.
    pub budget: Option<Budget>,
    /// A plan to follow.
    pub plan: Option<String>,
    /// Service account (default) or personal token.
    pub kind: KeyKind,
    /// A service account's role; `None`: `member`. Personal tokens take none.
    pub role: Option<RoleName>,
    /// Permissions beyond the role.
    pub permissions: PermissionSet,
    /// Client addresses the key may be used from (empty: any).
    pub allow_ips: IpAllowlist,
    /// Referrer hosts the key may be used from (empty: any).
    pub allow_referrers: ReferrerAllowlist,
    /// Endpoints the key may call (empty: any).
    pub allow_endpoints: EndpointAllowlist,
    /// The owner the key belongs to (an existing owner's id); `None`: none.
    pub owner: Option<String>,
}

impl NewKey {
    /// A request for a key with this name and every default.
    pub fn new(name: impl Into<String>) -> Self {
        NewKey {
            name: name.into(),
            format: None,
            project: None,
            expires: None,
            metadata: BTreeMap::new(),
            rate_limits: Vec::new(),
            budget: None,
            plan: None,
            kind: KeyKind::Service,
            role: None,
            permissions: PermissionSet::default(),
            allow_ips: IpAllowlist::default(),
            allow_referrers: ReferrerAllowlist::default(),
            allow_endpoints: EndpointAllowlist::default(),
            owner: None,
        }
    }

    /// The key belongs to owner `owner` (which must exist).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets a service account's role.
    pub fn role(mut self, role: RoleName) -> Self {
        self.role = Some(role);
        self
    }

    /// Makes the key a personal token of `user`.
    pub fn personal(mut self, user: impl Into<String>) -> Self {
        self.kind = KeyKind::Personal { user: user.into() };
        self
    }

    /// Grants permissions beyond the role.
    pub fn permissions(mut self, permissions: PermissionSet) -> Self {
        self.permissions = permissions;
        self
    }

    /// Restricts client addresses.
    pub fn allow_ips(mut self, list: IpAllowlist) -> Self {
        self.allow_ips = list;
        self
    }

    /// Restricts referrers.
    pub fn allow_referrers(mut self, list: ReferrerAllowlist) -> Self {
        self.allow_referrers = list;
        self
    }

    /// Restricts endpoints.
    pub fn allow_endpoints(mut self, list: EndpointAllowlist) -> Self {
        self.allow_endpoints = list;
        self
    }

    /// Adds a rate limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limits.push(limit);
        self
    }

    /// Sets the budget.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Puts the key on a plan.
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.plan = Some(plan.into());
        self
    }

    /// Sets the format.
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Sets the project.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Sets the expiry.
    pub fn expires(mut self, expiry: Expiry) -> Self {
        self.expires = Some(expiry);
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A change to a key's name, metadata or expiry; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// A new name.
    pub name: Option<String>,
    /// New metadata, replacing the old.
    pub metadata: Option<BTreeMap<String, String>>,
    /// A new expiry; `Some(None)` removes the expiry.
    pub expires: Option<Option<Expiry>>,
    /// New rate limits of its own, replacing the old.
    pub rate_limits: Option<Vec<RateLimit>>,
    /// A new budget of its own; `Some(None)` removes it.
    pub budget: Option<Option<Budget>>,
    /// A new plan; `Some(None)` takes the key off its plan.
    pub plan: Option<Option<String>>,
    /// A new role (service accounts only).
    pub role: Option<RoleName>,
    /// New extra permissions, replacing the old.
    pub permissions: Option<PermissionSet>,
    /// A new IP allowlist.
    pub allow_ips: Option<IpAllowlist>,
    /// A new referrer allowlist.
    pub allow_referrers: Option<ReferrerAllowlist>,
    /// A new endpoint allowlist.
    pub allow_endpoints: Option<EndpointAllowlist>,
}

impl KeyUpdate {
    /// Whether it changes nothing (every field left as it is).
    pub fn is_empty(&self) -> bool {
        // Destructured, so that a field added later cannot be forgotten here.
        let KeyUpdate {
            name,
            metadata,
            expires,
            rate_limits,
            budget,
            plan,
            role,
            permissions,
            allow_ips,
            allow_referrers,
            allow_endpoints,
        } = self;
        name.is_none()
            && metadata.is_none()
            && expires.is_none()
            && rate_limits.is_none()
            && budget.is_none()
            && plan.is_none()
            && role.is_none()
            && permissions.is_none()
            && allow_ips.is_none()
            && allow_referrers.is_none()
            && allow_endpoints.is_none()
    }
}

/// Checks a key name.
///
/// # Errors
/// [`InputError::EmptyName`], [`InputError::NameTooLong`], [`InputError::NameControlChar`].
pub fn validate_name(name: &str) -> Result<(), InputError> {
    if name.trim().is_empty() {
        return Err(InputError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InputError::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(InputError::NameControlChar);
    }
    Ok(())
}

/// Checks a project name: 1 to 64 characters of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`InputError::InvalidProject`].
pub fn validate_project(project: &str) -> Result<(), InputError> {
    let ok = !project.is_empty()
        && project.len() <= 64
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InputError::InvalidProject(project.to_string()))
    }
}

/// Checks metadata against the size limits.
///
/// # Errors
/// [`InputError::MetadataTooLarge`] naming the limit exceeded.
pub fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), InputError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(InputError::MetadataTooLarge(format!(
            "{} entries, the limit is {MAX_METADATA_ENTRIES}",
            metadata.len()
        )));
    }
    let mut total = 0;
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_LEN {
            return Err(InputError::MetadataTooLarge(format!(
                "key {} must be 1 to {MAX_METADATA_KEY_LEN} bytes",
                crate::redact::quote(k)
            )));
        }
        if v.len() > MAX_METADATA_VALUE_LEN {
            return Err(InputError::MetadataTooLarge(format!(
                "value of {} is {} bytes, the limit is {MAX_METADATA_VALUE_LEN}",
                crate::redact::quote(k),
                v.len()
            )));
        }
        total += k.len() + v.len();
    }
    if total > MAX_METADATA_BYTES {
        return Err(InputError::MetadataTooLarge(format!(
            "{total} bytes in all, the limit is {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}

/// Checks a revocation reason.
///
/// # Errors
/// [`InputError::MetadataTooLarge`] when over [`MAX_REASON_LEN`] bytes.
pub fn validate_reason(reason: Option<&str>) -> Result<(), InputError> {
    match reason {
        Some(r) if r.len() > MAX_REASON_LEN => Err(InputError::MetadataTooLarge(format!(
            "reason is {} bytes, the limit is {MAX_REASON_LEN}",
            r.len()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_is_held_to_the_latest_one_whether_a_time_or_a_lifetime() {
        assert_eq!(crate::clock::parse_time(LATEST_EXPIRY), Ok(LATEST_EXPIRY_MS));
        let now = 1_767_225_600_000;
        assert_eq!(Expiry::At(LATEST_EXPIRY_MS).resolve(now), Ok(LATEST_EXPIRY_MS));
        assert_eq!(
            Expiry::At(LATEST_EXPIRY_MS + 1).resolve(now),
            Err(InputError::ExpiryTooLate)
        );
        assert_eq!(Expiry::In(LATEST_EXPIRY_MS - now).resolve(now), Ok(LATEST_EXPIRY_MS));
        assert_eq!(
            Expiry::In(LATEST_EXPIRY_MS - now + 1).resolve(now),
            Err(InputError::ExpiryTooLate)
        );
        assert_eq!(Expiry::In(i64::MAX).resolve(now), Err(InputError::ExpiryTooLate));
        assert!(matches!(Expiry::At(now).resolve(now), Err(InputError::ExpiryInPast(_))));
    }

    #[test]
    fn ids_sort_by_creation_and_parse_back() {
        let mut last = 0;
        let a = KeyId::next(1_000, &mut last);
        let b = KeyId::next(1_000, &mut last);
        let c = KeyId::next(999, &mut last);
        let d = KeyId::next(5_000, &mut last);
        assert!(a < b && b < c && c < d);
        assert_eq!(KeyId::parse(a.as_str()).unwrap(), a);
        assert_eq!(d.value(), last);
        assert!(KeyId::parse("key_short").is_err());
        assert!(KeyId::parse("abc_0000000000000000000000").is_err());
    }

    #[test]
    fn status_precedence() {
        let mut r = KeyRecord {
            id: KeyId::parse("key_0000000000000000000000").unwrap(),
            name: "n".into(),
            start: "sk_live_abcd".into(),
            format: Format::default_for(Env::Live),
            project: DEFAULT_PROJECT.into(),
            created_at: 0,
            expires_at: Some(100),
            disabled_at: None,
            revoked: None,
            metadata: BTreeMap::new(),
            rotated_from: None,
            rotated_to: None,
            rate_limits: vec![],
            budget: None,
            plan: None,
            kind: KeyKind::Service,
            role: None,
            permissions: PermissionSet::default(),
            allow_ips: IpAllowlist::default(),
            allow_referrers: ReferrerAllowlist::default(),
            allow_endpoints: EndpointAllowlist::default(),
        };
        assert_eq!(r.status_at(50), Status::Active);
        assert_eq!(r.status_at(100), Status::Expired);
        r.disabled_at = Some(10);
        assert_eq!(r.status_at(150), Status::Disabled);
        r.revoked = Some(Revocation { at: 200, reason: None });
        assert_eq!(r.status_at(150), Status::Disabled);
        assert_eq!(r.status_at(200), Status::Revoked);
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert_eq!(validate_name(""), Err(InputError::EmptyName));
        assert_eq!(validate_name("  "), Err(InputError::EmptyName));
        assert!(matches!(
            validate_name(&"x".repeat(129)),
            Err(InputError::NameTooLong { len: 129, .. })
        ));
        assert_eq!(validate_name("a\nb"), Err(InputError::NameControlChar));
        assert!(validate_name("CI Pipeline").is_ok());
        assert!(validate_project("acme-prod.eu_1").is_ok());
        assert!(validate_project("").is_err());
        assert!(validate_project("a/b").is_err());
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "v".repeat(513));
        assert!(matches!(validate_metadata(&m), Err(InputError::MetadataTooLarge(_))));
        let many: BTreeMap<_, _> = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_metadata(&many).is_err());
        let big: BTreeMap<_, _> = (0..10).map(|i| (format!("k{i}"), "v".repeat(500))).collect();
        assert!(validate_metadata(&big).is_err());
        assert_eq!(Expiry::In(10).resolve(5), Ok(15));
        assert!(matches!(Expiry::At(5).resolve(5), Err(InputError::ExpiryInPast(_))));
    }
}
