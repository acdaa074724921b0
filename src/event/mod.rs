//! The events the log records: every state change of the store.
//!
//! A payload on disk is one version byte ([`EVENT_FORMAT`]) followed by the event in
//! bincode 2 (standard configuration, via serde). Events carry a key's tag (its keyed hash)
//! so the index can be rebuilt from the log alone; nothing shown to people
//! ([`Event::to_json`]) ever includes it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::fmt_time;
use crate::dashboard::{Scopes, TokenHash};
use crate::decision::Code;
use crate::lifecycle::{ExpiredBecause, Lifecycle, Scope};
use crate::limits::{Budget, Plan, RateLimit};
use crate::owner::Owner;
use crate::policy::{EndpointAllowlist, IpAllowlist, PermissionSet, ReferrerAllowlist, Role, RoleName, User};
use crate::record::{KeyId, KeyRecord};
use crate::token::Format;
use crate::vault::SealedSecret;
use crate::webhook::{EventKinds, Position, WebhookId};

mod packed;
mod use_summary;
pub(crate) use packed::{
    MAX_ENDPOINT_BYTES_PER_RECORD, MAX_RECORDED_ENDPOINT, MAX_USES_PER_RECORD, Packer, UseId, UseView,
};
pub use use_summary::UseSummary;

/// The payload format version this build writes and reads.
pub const EVENT_FORMAT: u8 = 1;

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix ms when the change was made.
    pub at: i64,
    /// What changed.
    pub kind: EventKind,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// A key format was registered with the store.
    FormatRegistered {
        /// The format.
        format: Format,
    },
    /// A key was created.
    KeyCreated {
        /// The new record.
        record: KeyRecord,
        /// The key's tag (keyed hash). Never shown.
        tag: Tag,
    },
    /// A key's settings changed.
    KeyUpdated {
        /// The key.
        id: KeyId,
        /// What changed.
        changes: KeyChanges,
    },
    /// A key was disabled.
    KeyDisabled {
        /// The key.
        id: KeyId,
    },
    /// A key was enabled again.
    KeyEnabled {
        /// The key.
        id: KeyId,
    },
    /// A key was revoked (at once, or from `effective_at` after a rotation grace period).
    KeyRevoked {
        /// The key.
        id: KeyId,
        /// Unix ms from which the key is revoked.
        effective_at: i64,
        /// The reason given.
        reason: Option<String>,
    },
    /// A plan was created or changed.
    PlanSet {
        /// The plan as it now is.
        plan: Plan,
    },
    /// A plan was deleted.
    PlanDeleted {
        /// Its name.
        name: String,
    },
    /// A role was created or changed.
    RoleSet {
        /// The role as it now is.
        role: Role,
    },
    /// A role was deleted.
    RoleDeleted {
        /// Its name.
        name: String,
    },
    /// A user was created or changed (memberships and roles).
    UserSet {
        /// The user as it now is.
        user: User,
    },
    /// A user was removed: their personal tokens act with no role.
    UserRemoved {
        /// The user's id.
        id: String,
    },
    /// A master key version was registered with the vault (its public check value, so a
    /// wrong key is refused when the store opens).
    MasterKeyAdded {
        /// The version.
        version: u32,
        /// `MasterKey::check_value()`.
        check: [u8; 32],
    },
    /// Master key versions below this one may no longer decrypt.
    VaultMinVersion {
        /// The least version still accepted.
        version: u32,
    },
    /// A new version of a provider secret, sealed (never the value).
    SecretPut {
        /// The project.
        project: String,
        /// The secret's name.
        name: String,
        /// Its version (1, 2, ...).
        version: u32,
        /// The sealed blob.
        sealed: SealedSecret,
    },
    /// A secret version's data key was rewrapped under a newer master key.
    SecretRewrapped {
        /// The project.
        project: String,
        /// The secret's name.
        name: String,
        /// Its version.
        version: u32,
        /// The rewrapped blob (same data ciphertext).
        sealed: SealedSecret,
    },
    /// Every version of a secret was deleted.
    SecretDeleted {
        /// The project.
        project: String,
        /// The secret's name.
        name: String,
    },
    /// A secret was read (the value is never recorded).
    SecretRead {
        /// The project.
        project: String,
        /// The secret's name.
        name: String,
        /// The version read.
        version: u32,
    },
    /// A key was presented (`id` is `None` when no key matched: malformed or unknown).
    KeyUsed {
        /// The key, if one matched.
        id: Option<KeyId>,
        /// The outcome.
        code: Code,
        /// The client address, when the host gave it.
        ip: Option<IpAddr>,
        /// `METHOD PATH`, when the host gave it.
        endpoint: Option<String>,
    },
    /// A key's uses over one flush interval (summary mode).
    KeyUseSummary {
        /// The key, or `None` for presented keys that matched none.
        id: Option<KeyId>,
        /// Counts per outcome, first and last time, last address.
        summary: UseSummary,
    },
    /// Uses that could not be recorded because the hand-off queue was full.
    UsesDropped {
        /// How many.
        count: u64,
    },
    /// A key's budget high-water mark was raised: after a crash, spend restarts here.
    BudgetMark {
        /// The key.
        id: KeyId,
        /// The mark: period id and amount, packed as the budget counter packs them.
        mark: u64,
    },
    /// A key was rotated: `record` replaces `old`, which is revoked from `old_revoked_at`.
    KeyRotated {
        /// The key replaced.
        old: KeyId,
        /// When the old key stops working.
        old_revoked_at: i64,
        /// The new key's record.
        record: KeyRecord,
        /// The new key's tag. Never shown.
        tag: Tag,
    },
    /// [`EventKind::KeysUsed`] as the first builds with it wrote it, each use in full
    /// (about 40 bytes); read, never written.
    KeysUsedUnpacked {
        /// The uses, in hand-off order.
        uses: Vec<KeyUse>,
    },
    /// Keys used, one entry per request (every-request mode), as many as one hand-off
    /// drain brings, in one record: one frame, one chain hash and one write for them all.
    /// On disk the uses are packed (each key id, endpoint and address once, then about 5
    /// bytes a use; see FORMAT.md). The event's `at` is the earliest use's;
    /// [`USE_BATCH_SPAN_MS`] bounds the rest. [`Event::into_uses`] turns it into one
    /// `key.used` event per request.
    KeysUsed {
        /// The uses, in hand-off order.
        #[serde(with = "packed::serde_packed")]
        uses: Vec<KeyUse>,
    },
    /// An operator accepted the log as it is (`credstore reset-head`, after a restore
    /// from a backup): the head checkpoint and the witness vouch for it from here on.
    HeadReset {
        /// The record the head checkpoint in the data directory vouched for before, if it
        /// was a valid checkpoint of this store.
        head_was: Option<u64>,
        /// The record the witness vouched for before, if there was one.
        witness_was: Option<u64>,
        /// Why, as the operator said.
        reason: Option<String>,
    },
    /// A key's budget was given credit, or had it taken away, for the current period: its
    /// cap in period `period` is the budget's cap plus `credit` (never below zero).
    BudgetCredited {
        /// The key.
        id: KeyId,
        /// The budget period the credit is for (as the budget counter numbers periods).
        period: u32,
        /// The credit in that period after the change (the sum of every change in it).
        credit: i64,
        /// What was asked: `credits add` (an amount, negative to take away) or `credits
        /// set` (the remaining credit wanted).
        change: CreditChange,
        /// Why, as the operator said.
        reason: Option<String>,
    },
    /// A webhook was registered: the events after record `after` whose kind it lists are
    /// delivered to it. Its signing secret is derived, never recorded.
    WebhookAdded {
        /// Its id.
        id: WebhookId,
        /// Where deliveries go.
        url: String,
        /// The kinds delivered.
        kinds: EventKinds,
        /// The last durable record when it was added: delivery starts after it.
        after: u64,
    },
    /// A webhook was removed: nothing more is delivered to it.
    WebhookRemoved {
        /// Its id.
        id: WebhookId,
    },
    /// One attempt to deliver an event to a webhook. A delivered attempt moves the
    /// webhook's delivery position to the event: after a restart delivery resumes there.
    WebhookAttempt {
        /// The webhook.
        id: WebhookId,
        /// The event delivered (or tried).
        event: Position,
        /// The attempt's number for this event (1 for the first).
        attempt: u32,
        /// The receiver's HTTP status, when it answered.
        status: Option<u16>,
        /// What went wrong, when the attempt failed (a timeout, a refused connection).
        error: Option<String>,
        /// The receiver took it (a 2xx answer).
        delivered: bool,
    },
    /// A key's spend passed a share of its budget's cap in a period (80 or 100 percent;
    /// 100 also when a charge was refused for the budget): logged once per key, period
    /// and threshold.
    BudgetThreshold {
        /// The key whose budget it is.
        id: KeyId,
        /// The budget period (as the budget counter numbers periods).
        period: u32,
        /// The threshold passed, in percent of the cap.
        percent: u8,
        /// What the key had spent when it was noticed.
        spent: u64,
        /// The cap in force then (the budget's, moved by any credit).
        cap: u64,
    },
    /// An owner was created or changed.
    OwnerSet {
        /// The owner as it now is.
        owner: Owner,
    },
    /// A key was given to an owner: written in the commit that creates the key (a
    /// rotation's new key keeps its predecessor's owner without one).
    KeyOwned {
        /// The key.
        id: KeyId,
        /// The owner's id.
        owner: String,
    },
    /// Every key of an owner that was not revoked yet was revoked, in one operation.
    OwnerKeysRevoked {
        /// The owner's id.
        owner: String,
        /// The keys revoked.
        ids: Vec<KeyId>,
        /// The reason given.
        reason: Option<String>,
    },
    /// Every enabled, unrevoked key of an owner was disabled, in one operation.
    OwnerKeysDisabled {
        /// The owner's id.
        owner: String,
        /// The keys disabled.
        ids: Vec<KeyId>,
    },
    /// An owner's budget high-water mark was raised: after a crash, its spend restarts here.
    OwnerBudgetMark {
        /// The owner's id.
        owner: String,
        /// The mark: period id and amount, packed as the budget counter packs them.
        mark: u64,
    },
    /// An owner's budget was given credit, or had it taken away, for the current period
    /// (as [`EventKind::BudgetCredited`] for a key's).
    OwnerBudgetCredited {
        /// The owner's id.
        owner: String,
        /// The budget period the credit is for.
        period: u32,
        /// The credit in that period after the change.
        credit: i64,
        /// What was asked.
        change: CreditChange,
        /// Why, as the operator said.
        reason: Option<String>,
    },
    /// Keys of another system were imported by the unsalted SHA-256 that system kept of
    /// each (`credstore import`): stored under [`Tag::PENDING`] and found by their SHA-256
    /// until first presented. One record carries many keys (one frame, one chain hash).
    KeysImported {
        /// The keys, in import order.
        keys: Vec<ImportedKey>,
    },
    /// An imported key was presented and matched its SHA-256: from now on it is stored by
    /// its tag like any key, and its SHA-256 leaves the index.
    KeyRetagged {
        /// The key.
        id: KeyId,
        /// Its tag under the store's pepper. Never shown.
        tag: Tag,
        /// The SHA-256 it was imported by (to take out of the index). Never shown.
        sha256: Sha256Hash,
        /// Its displayable start, now that the key was seen: prefix plus four characters.
        start: String,
    },
    /// A lifecycle policy was set for a scope, replacing any it had.
    LifecycleSet {
        /// Where it applies.
        scope: Scope,
        /// The settings.
        policy: Lifecycle,
    },
    /// A scope's lifecycle policy was cleared.
    LifecycleCleared {
        /// The scope.
        scope: Scope,
    },
    /// A key expires within the notice period (`key.expiring`): logged by the lifecycle
    /// sweep once per deadline.
    KeyExpiring {
        /// The key.
        id: KeyId,
        /// When it expires, unix ms.
        expires_at: i64,
        /// What sets that time: the key's own expiry, or its policy's max lifetime.
        reason: ExpiredBecause,
    },
    /// A key was not used for the notice period (`key.unused`): logged by the lifecycle
    /// sweep once per last use (a use starts a new episode).
    KeyUnused {
        /// The key.
        id: KeyId,
        /// Its last use, unix ms (`None`: never used).
        last_used_at: Option<i64>,
        /// Unused since, unix ms: the last use, or the key's creation.
        since: i64,
    },
    /// A key expired (`key.expired`): logged by the lifecycle sweep once per deadline.
    KeyExpired {
        /// The key.
        id: KeyId,
        /// When it expired, unix ms.
        deadline: i64,
        /// Why.
        reason: ExpiredBecause,
    },
    /// A key was reported leaked (`POST /v1/leaks`); never the token itself.
    KeyLeaked {
        /// The key.
        id: KeyId,
        /// The token's type, as the reporter named it.
        token_type: String,
        /// Where it was found.
        url: String,
        /// Who found it (`github`, ...).
        source: String,
        /// Whether it was live (then revoked in the same batch) or already revoked.
        was_live: bool,
    },
    /// A host minted a customers' dashboard link for an owner (`dashboard.link_minted`):
    /// only the link token's hash is kept.
    DashboardLinkMinted {
        /// The link token's hash. Never shown.
        link: TokenHash,
        /// The owner whose keys the session will manage.
        owner: String,
        /// What the session may see and do.
        scopes: Scopes,
        /// When the link stops working, unix ms.
        expires_at: i64,
        /// How long the session lasts from the redemption, ms.
        session_ttl_ms: i64,
        /// Where the page's "Back" link leads.
        return_url: Option<String>,
    },
    /// A dashboard link was redeemed and a session started (`dashboard.session_started`).
    /// The first redemption in the log's order wins: a link works once, fleet-wide.
    DashboardSessionStarted {
        /// The link redeemed. Never shown.
        link: TokenHash,
        /// The session token's hash. Never shown.
        session: TokenHash,
        /// The session's public id (derived from the hash).
        id: String,
        /// When the session ends, unix ms.
        expires_at: i64,
    },
    /// A dashboard session was revoked (`dashboard.session_revoked`): by the host, or by
    /// the owner signing out.
    DashboardSessionRevoked {
        /// The session token's hash. Never shown.
        session: TokenHash,
        /// The session's public id.
        id: String,
    },
    /// A change made on the customers' dashboard (`dashboard.change`), written in the same
    /// commit as the change itself: its actor, the owner's session.
    DashboardChange {
        /// The session's public id.
        session: String,
        /// The session's owner.
        owner: String,
        /// What changed: the kind of the change's event (`key.created`, `key.revoked`,
        /// `key.rotated`, `key.updated`).
        action: String,
        /// The key changed (a rotation's or a create's new key).
        key: Option<KeyId>,
    },
    /// Something unusual about a key's traffic, or a network's (`key.anomaly`): one event
    /// per episode, raised off the hot path by the anomaly detector.
    KeyAnomaly {
        /// The key (`None` for `guessing`, which is about a network).
        id: Option<KeyId>,
        /// What was seen, with its figures.
        anomaly: crate::anomaly::Anomaly,
    },
}

/// One key of a [`EventKind::KeysImported`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedKey {
    /// The key's record (its `start` is its prefix alone until it is first used).
    pub record: KeyRecord,
    /// The unsalted SHA-256 of the key, as the other system kept it. Never shown.
    pub sha256: Sha256Hash,
}

/// The unsalted SHA-256 of a key of another system: as sensitive as a tag (an offline
/// guess at a weak key checks against it), so compared in constant time and never printed.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// The SHA-256 of `key`.
    pub fn of(key: &[u8]) -> Sha256Hash {
        use sha2::Digest;
        Sha256Hash(sha2::Sha256::digest(key).into())
    }
}

impl PartialEq for Sha256Hash {
    fn eq(&self, other: &Self) -> bool {
        // blake3::Hash's equality is constant-time, for any 32 bytes.
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for Sha256Hash {}

impl std::fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Hash(<redacted>)")
    }
}

/// A change of a budget's credit, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreditChange {
    /// Add this much to what is left (negative: take it away).
    Add(i64),
    /// Make what is left exactly this.
    Set(u64),
}

/// Encodes a value that serialises as an [`Event`] does into a log payload: the format
/// byte, then bincode. The use log writes `key.uses` records through this from borrowed
/// uses, without building the owned event.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![EVENT_FORMAT];
    // Encoding plain data into a Vec cannot fail; an error here would be a bug in bincode.
    if let Ok(bytes) = bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        out.extend_from_slice(&bytes);
    }
    out
}

/// The index of [`EventKind::KeysUsed`] among `EventKind`'s variants, as serde gives it to
/// bincode (a test checks the borrowed encoding against the owned one).
pub(crate) const KEYS_USED_VARIANT: u32 = 24;

/// The most a [`EventKind::KeysUsed`] record's uses lie after its `at` (the earliest of
/// them), ms: a time-range query reads records from this much before its start.
pub const USE_BATCH_SPAN_MS: i64 = 60_000;

/// One request with a key, in a [`EventKind::KeysUsed`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUse {
    /// The key.
    pub id: KeyId,
    /// When, unix ms.
    pub at: i64,
    /// The outcome.
    pub code: Code,
    /// The client address, when the host gave it.
    pub ip: Option<IpAddr>,
    /// `METHOD PATH`, when the host gave it.
    pub endpoint: Option<String>,
}

/// A change to a key's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChanges {
    /// A new name.
    pub name: Option<String>,
    /// New metadata, replacing the old.
    pub metadata: Option<BTreeMap<String, String>>,
    /// A new expiry (`Some(None)`: none).
    pub expires_at: Option<Option<i64>>,
    /// New rate limits of the key's own.
    pub rate_limits: Option<Vec<RateLimit>>,
    /// A new budget of the key's own (`Some(None)`: none).
    pub budget: Option<Option<Budget>>,
    /// A new plan (`Some(None)`: none).
    pub plan: Option<Option<String>>,
    /// A new role.
    pub role: Option<RoleName>,
    /// New extra permissions.
    pub permissions: Option<PermissionSet>,
    /// A new IP allowlist.
    pub allow_ips: Option<IpAllowlist>,
    /// A new referrer allowlist.
    pub allow_referrers: Option<ReferrerAllowlist>,
    /// A new endpoint allowlist.
    pub allow_endpoints: Option<EndpointAllowlist>,
}

impl KeyChanges {
    /// Applies the changes to a record.
    pub fn apply(&self, record: &mut KeyRecord) {
        if let Some(n) = &self.name {
            record.name.clone_from(n);
        }
        if let Some(m) = &self.metadata {
            record.metadata.clone_from(m);
        }
        if let Some(e) = self.expires_at {
            record.expires_at = e;
        }
        if let Some(l) = &self.rate_limits {
            record.rate_limits.clone_from(l);
        }
        if let Some(b) = self.budget {
            record.budget = b;
        }
        if let Some(p) = &self.plan {
            record.plan.clone_from(p);
        }
        if let Some(r) = &self.role {
            record.role = Some(r.clone());
        }
        if let Some(p) = &self.permissions {
            record.permissions.clone_from(p);
        }
        if let Some(l) = &self.allow_ips {
            record.allow_ips.clone_from(l);
        }
        if let Some(l) = &self.allow_referrers {
            record.allow_referrers.clone_from(l);
        }
        if let Some(l) = &self.allow_endpoints {
            record.allow_endpoints.clone_from(l);
        }
    }
}

/// A key's tag: `blake3::keyed_hash(pepper, token)`. Compared in constant time; `Debug`
/// prints nothing of it.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct Tag(pub [u8; 32]);

impl std::hash::Hash for Tag {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl PartialEq for Tag {
    fn eq(&self, other: &Self) -> bool {
        // blake3::Hash's equality is constant-time.
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for Tag {}

impl Tag {
    /// The tag of an imported key not yet presented ([`EventKind::KeysImported`]): no key
    /// hashes to it (keyed BLAKE3 gives 32 zero bytes with probability 2^-256), and the
    /// index keeps no `by_hash` entry for it.
    pub const PENDING: Tag = Tag([0; 32]);

    /// Whether this is [`Tag::PENDING`].
    pub fn is_pending(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tag(<redacted>)")
    }
}

impl Event {
    /// Encodes the event as a log payload.
    pub fn encode(&self) -> Vec<u8> {
        encode_payload(self)
    }

    /// Decodes a log payload.
    ///
    /// # Errors
    /// A message naming the problem: unknown version, undecodable or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Event, String> {
        let (&version, body) = payload.split_first().ok_or("empty payload")?;
        if version != EVENT_FORMAT {
            return Err(format!("unknown event format version {version}"));
        }
        let (event, used): (Event, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<{ 1 << 20 }>())
                .map_err(|e| e.to_string())?;
        if used != body.len() {
            return Err(format!("{} trailing bytes", body.len() - used));
        }
        Ok(event)
    }

    /// The event as the events it stands for: a [`EventKind::KeysUsed`] record as one
    /// `key.used` event per request (at the request's time), any other as itself.
    pub fn into_uses(self) -> Vec<Event> {
        match self.kind {
            EventKind::KeysUsed { uses } | EventKind::KeysUsedUnpacked { uses } => uses
                .into_iter()
                .map(|u| Event {
                    at: u.at,
                    kind: EventKind::KeyUsed {
                        id: Some(u.id),
                        code: u.code,
                        ip: u.ip,
                        endpoint: u.endpoint,
                    },
                })
                .collect(),
            kind => vec![Event { at: self.at, kind }],
        }
    }

    /// The event's kind as a dotted name (`key.created`).
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EventKind::FormatRegistered { .. } => "format.registered",
            EventKind::KeyCreated { .. } => "key.created",
            EventKind::KeyUpdated { .. } => "key.updated",
            EventKind::KeyDisabled { .. } => "key.disabled",
            EventKind::KeyEnabled { .. } => "key.enabled",
            EventKind::KeyRevoked { .. } => "key.revoked",
            EventKind::KeyRotated { .. } => "key.rotated",
            EventKind::PlanSet { .. } => "plan.set",
            EventKind::PlanDeleted { .. } => "plan.deleted",
            EventKind::BudgetMark { .. } => "budget.mark",
            EventKind::HeadReset { .. } => "head.reset",
            EventKind::BudgetCredited { .. } => "budget.credited",
            EventKind::RoleSet { .. } => "role.set",
            EventKind::RoleDeleted { .. } => "role.deleted",
            EventKind::UserSet { .. } => "user.set",
            EventKind::UserRemoved { .. } => "user.removed",
            EventKind::KeyUsed { .. } => "key.used",
            EventKind::KeyUseSummary { .. } => "key.use_summary",
            EventKind::UsesDropped { .. } => "use.dropped",
            EventKind::MasterKeyAdded { .. } => "vault.master_added",
            EventKind::VaultMinVersion { .. } => "vault.min_version",
            EventKind::SecretPut { .. } => "vault.put",
            EventKind::SecretRewrapped { .. } => "vault.rewrapped",
            EventKind::SecretDeleted { .. } => "vault.deleted",
            EventKind::SecretRead { .. } => "vault.read",
            EventKind::KeysUsed { .. } | EventKind::KeysUsedUnpacked { .. } => "key.uses",
            EventKind::WebhookAdded { .. } => "webhook.added",
            EventKind::WebhookRemoved { .. } => "webhook.removed",
            EventKind::WebhookAttempt { .. } => "webhook.attempt",
            EventKind::BudgetThreshold { .. } => "budget.threshold",
            EventKind::OwnerSet { .. } => "owner.set",
            EventKind::KeyOwned { .. } => "key.owned",
            EventKind::OwnerKeysRevoked { .. } => "owner.keys_revoked",
            EventKind::OwnerKeysDisabled { .. } => "owner.keys_disabled",
            EventKind::OwnerBudgetMark { .. } => "owner.budget_mark",
            EventKind::OwnerBudgetCredited { .. } => "owner.budget_credited",
            EventKind::KeysImported { .. } => "key.imported",
            EventKind::KeyRetagged { .. } => "key.retagged",
            EventKind::LifecycleSet { .. } => "lifecycle.set",
            EventKind::LifecycleCleared { .. } => "lifecycle.cleared",
            EventKind::KeyExpiring { .. } => "key.expiring",
            EventKind::KeyUnused { .. } => "key.unused",
            EventKind::KeyExpired { .. } => "key.expired",
            EventKind::KeyLeaked { .. } => "key.leaked",
            EventKind::DashboardLinkMinted { .. } => "dashboard.link_minted",
            EventKind::DashboardSessionStarted { .. } => "dashboard.session_started",
            EventKind::DashboardSessionRevoked { .. } => "dashboard.session_revoked",
            EventKind::DashboardChange { .. } => "dashboard.change",
            EventKind::KeyAnomaly { .. } => "key.anomaly",
        }
    }

    /// Every key the event concerns.
    pub fn key_ids(&self) -> Vec<&KeyId> {
        match &self.kind {
            EventKind::FormatRegistered { .. }
            | EventKind::HeadReset { .. }
            | EventKind::PlanSet { .. }
            | EventKind::PlanDeleted { .. }
            | EventKind::RoleSet { .. }
            | EventKind::RoleDeleted { .. }
            | EventKind::UserSet { .. }
            | EventKind::UserRemoved { .. }
            | EventKind::MasterKeyAdded { .. }
            | EventKind::VaultMinVersion { .. }
            | EventKind::SecretPut { .. }
            | EventKind::SecretRewrapped { .. }
            | EventKind::SecretDeleted { .. }
            | EventKind::SecretRead { .. }
            | EventKind::UsesDropped { .. }
            | EventKind::WebhookAdded { .. }
            | EventKind::WebhookRemoved { .. }
            | EventKind::WebhookAttempt { .. }
            | EventKind::OwnerSet { .. }
            | EventKind::OwnerBudgetMark { .. }
            | EventKind::OwnerBudgetCredited { .. }
            | EventKind::LifecycleSet { .. }
            | EventKind::LifecycleCleared { .. }
            | EventKind::DashboardLinkMinted { .. }
            | EventKind::DashboardSessionStarted { .. }
            | EventKind::DashboardSessionRevoked { .. } => vec![],
            EventKind::DashboardChange { key, .. } => key.iter().collect(),
            EventKind::KeyOwned { id, .. } => vec![id],
            EventKind::OwnerKeysRevoked { ids, .. } | EventKind::OwnerKeysDisabled { ids, .. } => ids.iter().collect(),
            EventKind::KeyExpiring { id, .. }
            | EventKind::KeyUnused { id, .. }
            | EventKind::KeyExpired { id, .. }
            | EventKind::KeyLeaked { id, .. } => vec![id],
            EventKind::KeyUsed { id, .. } | EventKind::KeyUseSummary { id, .. } | EventKind::KeyAnomaly { id, .. } => {
                id.iter().collect()
            }
            EventKind::KeysUsed { uses } | EventKind::KeysUsedUnpacked { uses } => uses.iter().map(|u| &u.id).collect(),
            EventKind::BudgetMark { id, .. }
            | EventKind::BudgetCredited { id, .. }
            | EventKind::BudgetThreshold { id, .. } => vec![id],
            EventKind::KeyCreated { record, .. } => vec![&record.id],
            EventKind::KeyUpdated { id, .. }
            | EventKind::KeyDisabled { id }
            | EventKind::KeyEnabled { id }
            | EventKind::KeyRevoked { id, .. } => vec![id],
            EventKind::KeyRotated { old, record, .. } => vec![old, &record.id],
            EventKind::KeysImported { keys } => keys.iter().map(|k| &k.record.id).collect(),
            EventKind::KeyRetagged { id, .. } => vec![id],
        }
    }

    /// The event as JSON for people and scripts, without any tag.
    pub fn to_json(&self, seq: u64) -> serde_json::Value {
        use serde_json::json;
        let details = match &self.kind {
            EventKind::FormatRegistered { format } => json!({
                "prefix": format.prefix(), "env": format.env(),
                "random_len": format.random_len(), "checksum": format.has_checksum(),
            }),
            EventKind::KeyCreated { record, .. } => json!({
                "key_id": record.id, "name": record.name, "start": record.start,
                "env": record.env(), "project": record.project,
                "expires_at": record.expires_at.map(fmt_time),
            }),
            EventKind::KeyUpdated { id, changes } => json!({
                "key_id": id, "name": changes.name, "metadata": changes.metadata,
                "expires_at": changes.expires_at.map(|e| e.map(fmt_time)),
                "rate_limits": changes.rate_limits,
                "budget": changes.budget.map(|b| b.as_ref().map(crate::limits::Budget::to_json)),
                "plan": changes.plan,
                "role": changes.role, "permissions": changes.permissions, "allow_ips": changes.allow_ips,
                "allow_referrers": changes.allow_referrers, "allow_endpoints": changes.allow_endpoints,
            }),
            EventKind::PlanSet { plan } => json!({
                "plan": plan.name, "rate_limits": plan.rate_limits,
                "budget": plan.budget.as_ref().map(crate::limits::Budget::to_json),
            }),
            EventKind::PlanDeleted { name } => json!({ "plan": name }),
            EventKind::RoleSet { role } => json!({ "role": role }),
            EventKind::RoleDeleted { name } => json!({ "role": name }),
            EventKind::UserSet { user } => json!({ "user": user.id, "memberships": user.memberships }),
            EventKind::UserRemoved { id } => json!({ "user": id }),
            EventKind::KeyUsed { id, code, ip, endpoint } => json!({
                "key_id": id, "code": code, "ip": ip, "endpoint": endpoint,
            }),
            EventKind::KeyUseSummary { id, summary } => json!({
                "key_id": id, "counts": summary.counts, "first_at": fmt_time(summary.first_at),
                "last_at": fmt_time(summary.last_at), "last_ip": summary.last_ip,
            }),
            EventKind::UsesDropped { count } => json!({ "count": count }),
            EventKind::HeadReset {
                head_was,
                witness_was,
                reason,
            } => json!({ "head_was": head_was, "witness_was": witness_was, "reason": reason }),
            EventKind::KeysUsed { uses } | EventKind::KeysUsedUnpacked { uses } => json!({
                "uses": uses.iter().map(|u| json!({
                    "key_id": u.id, "at": fmt_time(u.at), "code": u.code, "ip": u.ip, "endpoint": u.endpoint,
                })).collect::<Vec<_>>(),
            }),
            EventKind::MasterKeyAdded { version, .. } => json!({ "master_version": version }),
            EventKind::VaultMinVersion { version } => json!({ "min_version": version }),
            EventKind::SecretPut {
                project,
                name,
                version,
                sealed,
            }
            | EventKind::SecretRewrapped {
                project,
                name,
                version,
                sealed,
            } => json!({
                "project": project, "name": name, "version": version,
                "master_version": sealed.master_version(),
            }),
            EventKind::SecretDeleted { project, name } => json!({ "project": project, "name": name }),
            EventKind::SecretRead { project, name, version } => json!({
                "project": project, "name": name, "version": version,
            }),
            EventKind::BudgetMark { id, mark } => {
                let (period, amount) = crate::limits::budget::unpack(*mark);
                json!({ "key_id": id, "period": period, "mark": amount })
            }
            EventKind::BudgetCredited {
                id,
                period,
                credit,
                change,
                reason,
            } => {
                let (asked, amount) = match change {
                    CreditChange::Add(n) => ("add", json!(n)),
                    CreditChange::Set(n) => ("set", json!(n)),
                };
                json!({
                    "key_id": id, "period": period, "credit": credit, "change": asked,
                    "amount": amount, "reason": reason,
                })
            }
            EventKind::KeyDisabled { id } | EventKind::KeyEnabled { id } => json!({ "key_id": id }),
            EventKind::WebhookAdded { id, url, kinds, after } => json!({
                "webhook_id": id, "url": crate::redact::scrub(url), "events": kinds.as_slice(), "after": after,
            }),
            EventKind::WebhookRemoved { id } => json!({ "webhook_id": id }),
            EventKind::WebhookAttempt {
                id,
                event,
                attempt,
                status,
                error,
                delivered,
            } => json!({
                "webhook_id": id, "event_seq": event.seq, "event_part": event.part,
                "message_id": crate::webhook::message_id(id, *event), "attempt": attempt,
                "status": status, "error": error, "delivered": delivered,
            }),
            EventKind::BudgetThreshold {
                id,
                period,
                percent,
                spent,
                cap,
            } => json!({
                "key_id": id, "period": period, "percent": percent, "spent": spent, "cap": cap,
            }),
            EventKind::OwnerSet { owner } => json!({ "owner": owner.to_json() }),
            EventKind::KeyOwned { id, owner } => json!({ "key_id": id, "owner": owner }),
            EventKind::OwnerKeysRevoked { owner, ids, reason } => json!({
                "owner": owner, "key_ids": ids, "reason": reason,
            }),
            EventKind::OwnerKeysDisabled { owner, ids } => json!({ "owner": owner, "key_ids": ids }),
            EventKind::OwnerBudgetMark { owner, mark } => {
                let (period, amount) = crate::limits::budget::unpack(*mark);
                json!({ "owner": owner, "period": period, "mark": amount })
            }
            EventKind::OwnerBudgetCredited {
                owner,
                period,
                credit,
                change,
                reason,
            } => {
                let (asked, amount) = match change {
                    CreditChange::Add(n) => ("add", json!(n)),
                    CreditChange::Set(n) => ("set", json!(n)),
                };
                json!({
                    "owner": owner, "period": period, "credit": credit, "change": asked,
                    "amount": amount, "reason": reason,
                })
            }
            EventKind::KeyRevoked {
                id,
                effective_at,
                reason,
            } => json!({
                "key_id": id, "effective_at": fmt_time(*effective_at), "reason": reason,
            }),
            EventKind::KeyRotated {
                old,
                old_revoked_at,
                record,
                ..
            } => json!({
                "key_id": old, "new_key_id": record.id, "new_start": record.start,
                "old_revoked_at": fmt_time(*old_revoked_at),
            }),
            // Never the SHA-256 (nor, for the re-tag, the tag).
            EventKind::KeysImported { keys } => json!({
                "keys": keys.iter().map(|k| json!({
                    "key_id": k.record.id, "name": k.record.name, "start": k.record.start,
                    "env": k.record.env(), "project": k.record.project,
                    "expires_at": k.record.expires_at.map(fmt_time),
                })).collect::<Vec<_>>(),
            }),
            EventKind::KeyRetagged { id, start, .. } => json!({ "key_id": id, "start": start }),
            EventKind::LifecycleSet { scope, policy } => policy.to_json_in(scope),
            EventKind::LifecycleCleared { scope } => json!({ "scope": scope.name() }),
            EventKind::KeyExpiring { id, expires_at, reason } => json!({
                "key_id": id, "expires_at": fmt_time(*expires_at), "reason": reason.as_str(),
            }),
            EventKind::KeyUnused {
                id,
                last_used_at,
                since,
            } => json!({
                "key_id": id, "last_used_at": last_used_at.map(fmt_time), "unused_since": fmt_time(*since),
            }),
            EventKind::KeyExpired { id, deadline, reason } => json!({
                "key_id": id, "expired_at": fmt_time(*deadline), "reason": reason.as_str(),
            }),
            EventKind::KeyLeaked {
                id,
                token_type,
                url,
                source,
                was_live,
            } => json!({
                "key_id": id, "type": token_type, "url": url, "source": source, "was_live": was_live,
            }),
            EventKind::DashboardLinkMinted {
                owner,
                scopes,
                expires_at,
                session_ttl_ms,
                return_url,
                ..
            } => json!({
                "owner": owner, "scopes": scopes.names(), "expires_at": fmt_time(*expires_at),
                "session_ttl_s": session_ttl_ms / 1000, "return_url": return_url,
            }),
            EventKind::DashboardSessionStarted { id, expires_at, .. } => json!({
                "session": id, "expires_at": fmt_time(*expires_at),
            }),
            EventKind::DashboardSessionRevoked { id, .. } => json!({ "session": id }),
            EventKind::DashboardChange {
                session,
                owner,
                action,
                key,
            } => json!({
                "actor": { "session": session, "owner": owner }, "action": action, "key_id": key,
            }),
            EventKind::KeyAnomaly { id, anomaly } => anomaly.to_json(id.as_ref()),
        };
        json!({ "seq": seq, "at": fmt_time(self.at), "kind": self.kind_name(), "details": details })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Env;

    #[test]
    fn encode_decode_round_trip_and_refusals() {
        let e = Event {
            at: 123,
            kind: EventKind::FormatRegistered {
                format: Format::default_for(Env::Test),
            },
        };
        let bytes = e.encode();
        assert_eq!(Event::decode(&bytes).unwrap(), e);
        assert!(Event::decode(&[]).is_err());
        assert!(Event::decode(&[9, 1, 2]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Event::decode(&trailing).is_err());
        assert!(Event::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn tags_never_show() {
        let tag = Tag([0xAB; 32]);
        assert!(!format!("{tag:?}").to_lowercase().contains("ab"));
    }
}
