//! The state machine that commit, replay and rebuild share: [`Overlay`] applies events,
//! one at a time, on top of the index, and answers what the state is after them.
//!
//! The commit thread applies each planned event to it before the batch is durable (so a
//! later request in the batch sees the earlier ones); opening a store replays the log's
//! tail past the index's applied sequence through it; `rebuild` replays the whole log
//! through it into an empty index. One `apply` for all three means the index a crash
//! recovery or a rebuild produces is the one the live store produced.

use std::collections::{BTreeMap, BTreeSet};

use crate::directory::{DirEntry, DirKey, DirKind, Directory};
use crate::error::{Error, Result, StateError};
use crate::event::{Event, EventKind, Tag};
use crate::index::{Index, IndexBatch, StoredKey, VaultEntry, vault_key};
use crate::limits::Plan;
use crate::limits::budget::unless_later;
use crate::log::LogError;
use crate::owner::Owner;
use crate::policy::{Role, User};
use crate::record::{KeyId, KeyRecord, Revocation, Status};
use crate::token::FormatSet;
use crate::webhook::{Position, Webhook, WebhookId};

/// The state as of the records applied so far in a batch: sled plus the batch's changes.
pub(crate) struct Overlay<'a> {
    index: &'a Index,
    base_formats: &'a FormatSet,
    base_dir: &'a Directory,
    /// Keys changed or created in this batch.
    pub keys: BTreeMap<KeyId, StoredKey>,
    /// Keys that existed before the batch and changed in it (the live map must learn).
    pub touched: BTreeSet<KeyId>,
    /// Rotations in this batch: (old key, new key). The live map carries the old key's
    /// counters over to the new one.
    pub rotations: Vec<(KeyId, KeyId)>,
    formats: Option<FormatSet>,
    /// Plans, roles and users set (`Some`) or deleted (`None`) in this batch.
    dir: BTreeMap<DirKey, Option<DirEntry>>,
    /// Budget marks raised in this batch.
    marks: BTreeMap<KeyId, u64>,
    /// Budget credits set in this batch: (period, credit).
    pub credits: BTreeMap<KeyId, (u32, i64)>,
    /// Keys given to an owner in this batch.
    pub owned: BTreeMap<KeyId, String>,
    /// Owners' budget marks raised in this batch.
    owner_marks: BTreeMap<String, u64>,
    /// Owners' budget credits set in this batch: (period, credit).
    pub owner_credits: BTreeMap<String, (u32, i64)>,
    /// Secret versions put or deleted in this batch.
    vault: BTreeMap<Vec<u8>, Option<VaultEntry>>,
    /// Master keys registered in this batch.
    masters: BTreeMap<u32, [u8; 32]>,
    vault_min: Option<u32>,
    /// Webhooks added or changed (`Some`) or removed (`None`) in this batch.
    webhooks: BTreeMap<WebhookId, Option<Webhook>>,
    /// Budget thresholds logged in this batch: (period, percent).
    thresholds: BTreeMap<KeyId, (u32, u8)>,
    /// Imported keys' SHA-256 entries added (`Some`) or taken out at their re-tag (`None`).
    pub imported: BTreeMap<[u8; 32], Option<KeyId>>,
    /// The prefixes imported keys were declared with, when this batch added one.
    import_prefixes: Option<Vec<String>>,
    /// How the number of imported keys not yet re-tagged moved in this batch.
    pub pending_delta: i64,
    /// Lifecycle notices logged in this batch: (kind letter, key) -> episode.
    notices: BTreeMap<(u8, KeyId), i64>,
    /// Anomalies logged in this batch: when, the key, what.
    anomalies: Vec<(i64, Option<KeyId>, crate::anomaly::Anomaly)>,
}

/// The kind letters of lifecycle notices, as the index keys them.
pub(crate) const NOTICE_EXPIRING: u8 = b'x';
/// See [`NOTICE_EXPIRING`].
pub(crate) const NOTICE_UNUSED: u8 = b'u';
/// See [`NOTICE_EXPIRING`].
pub(crate) const NOTICE_EXPIRED: u8 = b'e';

impl<'a> Overlay<'a> {
    pub fn new(index: &'a Index, base_formats: &'a FormatSet, base_dir: &'a Directory) -> Self {
        Overlay {
            index,
            base_formats,
            base_dir,
            keys: BTreeMap::new(),
            touched: BTreeSet::new(),
            rotations: Vec::new(),
            formats: None,
            dir: BTreeMap::new(),
            marks: BTreeMap::new(),
            credits: BTreeMap::new(),
            owned: BTreeMap::new(),
            owner_marks: BTreeMap::new(),
            owner_credits: BTreeMap::new(),
            vault: BTreeMap::new(),
            masters: BTreeMap::new(),
            vault_min: None,
            webhooks: BTreeMap::new(),
            thresholds: BTreeMap::new(),
            imported: BTreeMap::new(),
            import_prefixes: None,
            pending_delta: 0,
            notices: BTreeMap::new(),
            anomalies: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.formats.is_none()
            && self.dir.is_empty()
            && self.marks.is_empty()
            && self.credits.is_empty()
            && self.owned.is_empty()
            && self.owner_marks.is_empty()
            && self.owner_credits.is_empty()
            && self.vault.is_empty()
            && self.masters.is_empty()
            && self.vault_min.is_none()
            && self.webhooks.is_empty()
            && self.thresholds.is_empty()
            && self.imported.is_empty()
            && self.import_prefixes.is_none()
            && self.notices.is_empty()
            && self.anomalies.is_empty()
    }

    /// The batch's changes, for the index.
    pub fn batch(&self, applied_seq: u64, applied_hash: [u8; 32]) -> IndexBatch<'_> {
        IndexBatch {
            keys: &self.keys,
            formats: self.formats.as_ref(),
            directory: &self.dir,
            marks: &self.marks,
            credits: &self.credits,
            owned: &self.owned,
            owner_marks: &self.owner_marks,
            owner_credits: &self.owner_credits,
            vault: &self.vault,
            masters: &self.masters,
            vault_min: self.vault_min,
            webhooks: &self.webhooks,
            thresholds: &self.thresholds,
            imported: &self.imported,
            import_prefixes: self.import_prefixes.as_ref(),
            notices: &self.notices,
            anomalies: &self.anomalies,
            applied_seq,
            applied_hash,
        }
    }

    /// The directory after this batch, if it changed, and whether keys must be
    /// re-resolved (a plan or role changed; users are resolved at every verify).
    pub fn changed_directory(&self) -> Option<(Directory, bool)> {
        if self.dir.is_empty() {
            return None;
        }
        let mut dir = self.base_dir.clone();
        for (key, entry) in &self.dir {
            dir.apply(key, entry.as_ref());
        }
        // Users are resolved at every verify; dashboard links and sessions concern no key.
        let reresolve = self
            .dir
            .keys()
            .any(|k| !matches!(k.kind, DirKind::User | DirKind::DashLink | DirKind::DashSession));
        Some((dir, reresolve))
    }

    fn entry(&self, kind: DirKind, name: &str) -> Option<Option<&DirEntry>> {
        self.dir
            .get(&DirKey {
                kind,
                name: name.to_string(),
            })
            .map(Option::as_ref)
    }

    /// A plan as of this batch.
    ///
    /// # Errors
    /// [`StateError::UnknownPlan`].
    pub(super) fn plan(&self, name: &str) -> Result<Plan> {
        let found = match self.entry(DirKind::Plan, name) {
            Some(Some(DirEntry::Plan(p))) => Some(p.clone()),
            Some(_) => None,
            None => self.base_dir.plans.get(name).map(|p| Plan::clone(p)),
        };
        found.ok_or_else(|| StateError::UnknownPlan(name.to_string()).into())
    }

    /// A role as of this batch.
    ///
    /// # Errors
    /// [`StateError::UnknownRole`].
    pub(super) fn role(&self, name: &str) -> Result<Role> {
        let found = match self.entry(DirKind::Role, name) {
            Some(Some(DirEntry::Role(r))) => Some(r.clone()),
            Some(_) => None,
            None => self.base_dir.roles.get(name).cloned(),
        };
        found.ok_or_else(|| StateError::UnknownRole(name.to_string()).into())
    }

    /// A user as of this batch.
    ///
    /// # Errors
    /// [`StateError::UnknownUser`].
    pub(super) fn user(&self, id: &str) -> Result<User> {
        let found = match self.entry(DirKind::User, id) {
            Some(Some(DirEntry::User(u))) => Some(u.clone()),
            Some(_) => None,
            None => self.base_dir.users.get(id).cloned(),
        };
        found.ok_or_else(|| StateError::UnknownUser(id.to_string()).into())
    }

    /// An owner as of this batch.
    ///
    /// # Errors
    /// [`StateError::UnknownOwner`].
    pub(super) fn owner(&self, id: &str) -> Result<Owner> {
        self.owner_if_any(id)?
            .ok_or_else(|| StateError::UnknownOwner(id.to_string()).into())
    }

    /// An owner as of this batch, if it exists.
    pub(super) fn owner_if_any(&self, id: &str) -> Result<Option<Owner>> {
        Ok(match self.entry(DirKind::Owner, id) {
            Some(Some(DirEntry::Owner(o))) => Some(o.clone()),
            Some(_) => None,
            None => self.base_dir.owners.get(id).map(|o| Owner::clone(o)),
        })
    }

    /// The ids of the owners set in this batch.
    pub fn changed_owners(&self) -> impl Iterator<Item = &str> + '_ {
        self.dir
            .keys()
            .filter(|k| k.kind == DirKind::Owner)
            .map(|k| k.name.as_str())
    }

    /// A key's owner as of this batch.
    pub(super) fn owner_of(&self, id: &KeyId) -> Result<Option<String>> {
        match self.owned.get(id) {
            Some(owner) => Ok(Some(owner.clone())),
            None => self.index.owner_of(id),
        }
    }

    /// An owner's keys as of this batch, in id order.
    pub(super) fn keys_of_owner(&self, owner: &str) -> Result<Vec<KeyId>> {
        let mut ids: BTreeSet<KeyId> = self.index.keys_of_owner(owner)?.into_iter().collect();
        ids.extend(
            self.owned
                .iter()
                .filter(|(_, o)| o.as_str() == owner)
                .map(|(id, _)| id.clone()),
        );
        Ok(ids.into_iter().collect())
    }

    /// An owner's budget credit in `period` as of this batch (0 when none was given in it).
    pub(super) fn owner_credit(&self, owner: &str, period: u32) -> Result<i64> {
        let current = match self.owner_credits.get(owner) {
            Some(c) => Some(*c),
            None => self.index.owner_credit(owner)?,
        };
        Ok(current.filter(|(p, _)| *p == period).map_or(0, |(_, c)| c))
    }

    /// An owner's persisted mark as its budget at `at_ms` sees it (as
    /// [`Overlay::current_mark`] for a key's).
    pub(super) fn current_owner_mark(&self, owner: &str, at_ms: i64) -> Result<u64> {
        let mark = match self.owner_marks.get(owner) {
            Some(m) => *m,
            None => self.index.owner_mark(owner)?,
        };
        let current = self
            .owner_if_any(owner)?
            .and_then(|o| o.budget)
            .map_or(0, |b| b.period.at(at_ms).0);
        Ok(unless_later(mark, current))
    }

    /// The lifecycle policies as of this batch.
    pub(super) fn lifecycle(&self) -> crate::lifecycle::Policies {
        let mut policies = self.base_dir.lifecycle.clone();
        for (key, entry) in self.dir.iter().filter(|(k, _)| k.kind == DirKind::Lifecycle) {
            match entry {
                Some(DirEntry::Lifecycle(scope, policy)) => policies.set(scope.clone(), *policy),
                _ => {
                    if let Some(scope) = crate::lifecycle::Scope::from_name(&key.name) {
                        policies.clear(&scope);
                    }
                }
            }
        }
        policies
    }

    /// The episode of the last notice of `kind` logged for key `id`, as of this batch.
    pub(super) fn notice(&self, kind: u8, id: &KeyId) -> Result<Option<i64>> {
        match self.notices.get(&(kind, id.clone())) {
            Some(e) => Ok(Some(*e)),
            None => self.index.notice(kind, id),
        }
    }

    pub(super) fn master_registered(&self, version: u32) -> Result<bool> {
        Ok(self.masters.contains_key(&version) || self.index.vault_masters()?.0.contains_key(&version))
    }

    /// The latest version of a secret as of this batch.
    pub(super) fn latest_secret_version(&self, project: &str, name: &str) -> Result<Option<u32>> {
        let prefix = vault_key(project, name, None);
        let mut versions: BTreeMap<u32, bool> = self
            .index
            .vault_versions(project, name)?
            .into_iter()
            .map(|(v, _)| (v, true))
            .collect();
        for (key, entry) in self.vault.range(prefix.clone()..) {
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            versions.insert(u32::from_be_bytes(crate::log::frame::to_array(rest)), entry.is_some());
        }
        Ok(versions.iter().rev().find(|(_, live)| **live).map(|(v, _)| *v))
    }

    /// A secret version as of this batch.
    pub(super) fn secret(&self, project: &str, name: &str, version: u32) -> Result<Option<VaultEntry>> {
        let key = vault_key(project, name, Some(version));
        match self.vault.get(&key) {
            Some(entry) => Ok(entry.clone()),
            None => Ok(self
                .index
                .vault_versions(project, name)?
                .into_iter()
                .find(|(v, _)| *v == version)
                .map(|(_, e)| e)),
        }
    }

    /// Every user as of this batch.
    pub(super) fn users(&self) -> impl Iterator<Item = User> + '_ {
        let base = self.base_dir.users.values().filter(|u| {
            !self.dir.contains_key(&DirKey {
                kind: DirKind::User,
                name: u.id.clone(),
            })
        });
        let changed = self.dir.values().filter_map(|e| match e {
            Some(DirEntry::User(u)) => Some(u),
            _ => None,
        });
        base.chain(changed).cloned()
    }

    fn get_record(&self, id: &KeyId) -> Option<KeyRecord> {
        self.get(id).ok().flatten().map(|k| k.record)
    }

    /// How many of the index's keys match `pred` as of this batch.
    pub(super) fn count_keys(&self, pred: impl Fn(&KeyRecord) -> bool) -> Result<usize> {
        let keys = self.index.list(None, None)?;
        Ok(keys
            .iter()
            .filter(|k| self.get_record(&k.record.id).is_some_and(|r| pred(&r)))
            .count())
    }

    /// The key's budget credit in `period` as of this batch (0 when none was given in it).
    pub(super) fn credit(&self, id: &KeyId, period: u32) -> Result<i64> {
        let current = match self.credits.get(id) {
            Some(c) => Some(*c),
            None => self.index.credit(id)?,
        };
        Ok(current.filter(|(p, _)| *p == period).map_or(0, |(_, c)| c))
    }

    /// A dashboard link as of this batch.
    pub(super) fn dash_link(&self, hash: &crate::dashboard::TokenHash) -> Option<crate::dashboard::LinkEntry> {
        let name = hash.to_hex();
        match self.entry(DirKind::DashLink, &name) {
            Some(Some(DirEntry::DashLink(l))) => Some(l.clone()),
            Some(_) => None,
            None => self
                .base_dir
                .dash_links
                .get(&name)
                .map(|l| crate::dashboard::LinkEntry::clone(l)),
        }
    }

    /// A dashboard session as of this batch, by its token's hash.
    pub(super) fn dash_session(&self, hash: &crate::dashboard::TokenHash) -> Option<crate::dashboard::SessionEntry> {
        let name = hash.to_hex();
        match self.entry(DirKind::DashSession, &name) {
            Some(Some(DirEntry::DashSession(s))) => Some(s.clone()),
            Some(_) => None,
            None => self
                .base_dir
                .dash_sessions
                .get(&name)
                .map(|s| crate::dashboard::SessionEntry::clone(s)),
        }
    }

    /// A dashboard session as of this batch, by its public id.
    pub(super) fn dash_session_by_id(&self, id: &str) -> Option<crate::dashboard::SessionEntry> {
        let in_batch = self.dir.iter().find_map(|(k, e)| match e {
            Some(DirEntry::DashSession(s)) if k.kind == DirKind::DashSession && s.session.id == id => Some(s.clone()),
            _ => None,
        });
        in_batch.or_else(|| {
            self.base_dir
                .dash_sessions
                .values()
                .find(|s| s.session.id == id)
                .and_then(|s| self.dash_session(&s.hash))
        })
    }

    /// A webhook as of this batch.
    pub(super) fn webhook(&self, id: &WebhookId) -> Result<Option<Webhook>> {
        match self.webhooks.get(id) {
            Some(w) => Ok(w.clone()),
            None => self.index.webhook(id),
        }
    }

    /// The last budget threshold logged for a key as of this batch: (period, percent).
    pub(super) fn threshold(&self, id: &KeyId) -> Result<Option<(u32, u8)>> {
        match self.thresholds.get(id) {
            Some(t) => Ok(Some(*t)),
            None => self.index.threshold(id),
        }
    }

    fn mark(&self, id: &KeyId) -> Result<u64> {
        match self.marks.get(id) {
            Some(m) => Ok(*m),
            None => self.index.mark(id),
        }
    }

    /// The key's persisted mark as its effective budget at `at_ms` sees it
    /// ([`unless_later`]): a mark of another kind of period must not block the marks of
    /// the budget the key has now. Within one kind, marks only rise.
    pub(super) fn current_mark(&self, id: &KeyId, at_ms: i64) -> Result<u64> {
        let mark = self.mark(id)?;
        let Some(stored) = self.get(id)? else {
            return Ok(mark);
        };
        let record = &stored.record;
        let plan = match &record.plan {
            Some(name) => self.plan(name).ok(),
            None => None,
        };
        let (_, budget) = crate::limits::effective(&record.rate_limits, record.budget, plan.as_ref());
        let current = budget.map_or(0, |b| b.period.at(at_ms).0);
        Ok(unless_later(mark, current))
    }

    /// The key imported by this SHA-256 and not yet re-tagged, as of this batch.
    pub(super) fn imported_id(&self, sha256: &[u8; 32]) -> Result<Option<KeyId>> {
        match self.imported.get(sha256) {
            Some(id) => Ok(id.clone()),
            None => self.index.imported_id(sha256),
        }
    }

    /// The prefixes imported keys were declared with, as of this batch.
    pub fn import_prefixes(&self) -> Result<Vec<String>> {
        match &self.import_prefixes {
            Some(p) => Ok(p.clone()),
            None => self.index.import_prefixes(),
        }
    }

    /// The prefixes, when this batch changed them.
    pub fn changed_import_prefixes(&self) -> Option<&Vec<String>> {
        self.import_prefixes.as_ref()
    }

    pub fn formats(&self) -> &FormatSet {
        self.formats.as_ref().unwrap_or(self.base_formats)
    }

    pub fn changed_formats(&self) -> Option<&FormatSet> {
        self.formats.as_ref()
    }

    pub fn get(&self, id: &KeyId) -> Result<Option<StoredKey>> {
        match self.keys.get(id) {
            Some(k) => Ok(Some(k.clone())),
            None => self.index.get(id),
        }
    }

    /// The key, refusing an unknown or revoked one.
    pub(super) fn live(&self, id: &KeyId, now: i64) -> Result<StoredKey> {
        let stored = self.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
        if stored.record.status_at(now) == Status::Revoked {
            return Err(StateError::Revoked(id.to_string()).into());
        }
        Ok(stored)
    }

    /// Applies one event. The only failure is an event naming a key that does not exist,
    /// which a valid log never holds.
    pub fn apply(&mut self, event: &Event) -> Result<()> {
        match &event.kind {
            EventKind::FormatRegistered { format } => {
                let mut set = self.formats().clone();
                set.insert(format.clone());
                self.formats = Some(set);
            }
            EventKind::KeyCreated { record, tag } => self.insert_new(record, *tag),
            EventKind::KeyUpdated { id, changes } => self.modify(id, |r| changes.apply(r))?,
            EventKind::PlanSet { plan } => self.set(DirEntry::Plan(plan.clone())),
            EventKind::RoleSet { role } => self.set(DirEntry::Role(role.clone())),
            EventKind::UserSet { user } => self.set(DirEntry::User(user.clone())),
            EventKind::PlanDeleted { name } => self.delete(DirKind::Plan, name),
            EventKind::RoleDeleted { name } => self.delete(DirKind::Role, name),
            EventKind::UserRemoved { id } => self.delete(DirKind::User, id),
            EventKind::MasterKeyAdded { version, check } => {
                self.masters.insert(*version, *check);
            }
            EventKind::VaultMinVersion { version } => self.vault_min = Some(*version),
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
            } => {
                let created_at = match &event.kind {
                    EventKind::SecretRewrapped { .. } => {
                        self.secret(project, name, *version)?.map_or(event.at, |e| e.created_at)
                    }
                    _ => event.at,
                };
                let entry = VaultEntry {
                    sealed: sealed.clone(),
                    created_at,
                };
                self.vault.insert(vault_key(project, name, Some(*version)), Some(entry));
            }
            EventKind::SecretDeleted { project, name } => {
                let versions: Vec<u32> = self
                    .index
                    .vault_versions(project, name)?
                    .into_iter()
                    .map(|(v, _)| v)
                    .chain(self.vault.keys().filter_map(|k| {
                        k.strip_prefix(vault_key(project, name, None).as_slice())
                            .map(|rest| u32::from_be_bytes(crate::log::frame::to_array(rest)))
                    }))
                    .collect();
                for v in versions {
                    self.vault.insert(vault_key(project, name, Some(v)), None);
                }
            }
            EventKind::SecretRead { .. }
            | EventKind::KeyUsed { .. }
            | EventKind::KeysUsed { .. }
            | EventKind::KeysUsedUnpacked { .. }
            | EventKind::KeyUseSummary { .. }
            | EventKind::UsesDropped { .. }
            | EventKind::HeadReset { .. } => {}
            EventKind::BudgetMark { id, mark } => {
                let current = self.current_mark(id, event.at)?;
                self.marks.insert(id.clone(), current.max(*mark));
            }
            // Not a change of the record: the live map learns it from `credits`.
            EventKind::BudgetCredited { id, period, credit, .. } => {
                self.credits.insert(id.clone(), (*period, *credit));
            }
            EventKind::WebhookAdded { id, url, kinds, after } => {
                let webhook = Webhook {
                    id: id.clone(),
                    url: url.clone(),
                    kinds: kinds.clone(),
                    created_at: event.at,
                    delivered: Position::end_of(*after),
                    failed_attempts: 0,
                };
                self.webhooks.insert(id.clone(), Some(webhook));
            }
            EventKind::WebhookRemoved { id } => {
                self.webhooks.insert(id.clone(), None);
            }
            // An attempt for a webhook removed since changes nothing.
            EventKind::WebhookAttempt {
                id,
                event: at,
                delivered,
                ..
            } => {
                if let Some(mut webhook) = self.webhook(id)? {
                    if *delivered {
                        if *at > webhook.delivered {
                            webhook.delivered = *at;
                            webhook.failed_attempts = 0;
                        }
                    } else if *at > webhook.delivered {
                        webhook.failed_attempts = webhook.failed_attempts.saturating_add(1);
                    }
                    self.webhooks.insert(id.clone(), Some(webhook));
                }
            }
            EventKind::BudgetThreshold {
                id, period, percent, ..
            } => {
                let now = self
                    .threshold(id)?
                    .map_or((*period, *percent), |t| t.max((*period, *percent)));
                self.thresholds.insert(id.clone(), now);
            }
            EventKind::OwnerSet { owner } => self.set(DirEntry::Owner(owner.clone())),
            EventKind::KeyOwned { id, owner } => {
                self.owned.insert(id.clone(), owner.clone());
            }
            EventKind::OwnerKeysRevoked { ids, reason, .. } => {
                for id in ids {
                    self.modify(id, |r| {
                        r.revoked = Some(Revocation {
                            at: event.at,
                            reason: reason.clone(),
                        });
                    })?;
                }
            }
            EventKind::OwnerKeysDisabled { ids, .. } => {
                for id in ids {
                    self.modify(id, |r| r.disabled_at = Some(event.at))?;
                }
            }
            EventKind::OwnerBudgetMark { owner, mark } => {
                let current = self.current_owner_mark(owner, event.at)?;
                self.owner_marks.insert(owner.clone(), current.max(*mark));
            }
            EventKind::OwnerBudgetCredited {
                owner, period, credit, ..
            } => {
                self.owner_credits.insert(owner.clone(), (*period, *credit));
            }
            EventKind::LifecycleSet { scope, policy } => self.set(DirEntry::Lifecycle(scope.clone(), *policy)),
            EventKind::LifecycleCleared { scope } => self.delete(DirKind::Lifecycle, &scope.name()),
            EventKind::KeyExpiring { id, expires_at, .. } => {
                self.notices.insert((NOTICE_EXPIRING, id.clone()), *expires_at);
            }
            EventKind::KeyUnused { id, since, .. } => {
                self.notices.insert((NOTICE_UNUSED, id.clone()), *since);
            }
            EventKind::KeyExpired { id, deadline, .. } => {
                self.notices.insert((NOTICE_EXPIRED, id.clone()), *deadline);
            }
            // The revocation a leak brings is an event of its own.
            EventKind::KeyLeaked { .. } | EventKind::DashboardChange { .. } => {}
            EventKind::DashboardLinkMinted {
                link,
                owner,
                scopes,
                expires_at,
                session_ttl_ms,
                return_url,
            } => self.set(DirEntry::DashLink(crate::dashboard::LinkEntry {
                hash: *link,
                owner: owner.clone(),
                scopes: *scopes,
                expires_at: *expires_at,
                session_ttl_ms: *session_ttl_ms,
                return_url: return_url.clone(),
                redeemed: false,
            })),
            // The first redemption in the log's order marks the link used; planning refuses
            // a second, and a replay applies the log's order again.
            EventKind::DashboardSessionStarted {
                link,
                session,
                id,
                expires_at,
            } => {
                let Some(mut entry) = self.dash_link(link) else {
                    return Ok(());
                };
                if entry.redeemed {
                    return Ok(());
                }
                entry.redeemed = true;
                let started = crate::dashboard::Session {
                    id: id.clone(),
                    owner: entry.owner.clone(),
                    scopes: entry.scopes,
                    started_at: event.at,
                    expires_at: *expires_at,
                    return_url: entry.return_url.clone(),
                };
                self.set(DirEntry::DashLink(entry));
                self.set(DirEntry::DashSession(crate::dashboard::SessionEntry {
                    hash: *session,
                    session: started,
                }));
            }
            EventKind::DashboardSessionRevoked { session, .. } => {
                self.dir.insert(
                    DirKey {
                        kind: DirKind::DashSession,
                        name: session.to_hex(),
                    },
                    None,
                );
            }
            // Kept by time, for `usage` to show.
            EventKind::KeyAnomaly { id, anomaly } => self.anomalies.push((event.at, id.clone(), anomaly.clone())),
            EventKind::KeyDisabled { id } => self.modify(id, |r| r.disabled_at = Some(event.at))?,
            EventKind::KeyEnabled { id } => self.modify(id, |r| r.disabled_at = None)?,
            EventKind::KeyRevoked {
                id,
                effective_at,
                reason,
            } => self.modify(id, |r| {
                r.revoked = Some(Revocation {
                    at: *effective_at,
                    reason: reason.clone(),
                });
            })?,
            EventKind::KeyRotated {
                old,
                old_revoked_at,
                record,
                tag,
            } => {
                self.modify(old, |r| apply_rotation(r, *old_revoked_at, &record.id))?;
                self.insert_new(record, *tag);
                // The new key keeps the old key's owner.
                if let Some(owner) = self.owner_of(old)? {
                    self.owned.insert(record.id.clone(), owner);
                }
                // The new key takes over the old one's budget: its mark starts at the old
                // key's (same budget, so same period), so after a crash its spend restarts
                // no lower than what the old key had spent.
                let mark = self.current_mark(old, event.at)?;
                if mark > 0 {
                    self.marks.insert(record.id.clone(), mark);
                }
                self.rotations.push((old.clone(), record.id.clone()));
            }
            EventKind::KeysImported { keys } => {
                let mut prefixes = self.import_prefixes()?;
                for key in keys {
                    self.insert_new(&key.record, Tag::PENDING);
                    self.imported.insert(key.sha256.0, Some(key.record.id.clone()));
                    self.pending_delta += 1;
                    let prefix = key.record.prefix();
                    if !prefixes.iter().any(|p| p == prefix) {
                        prefixes.push(prefix.to_string());
                        self.import_prefixes = Some(prefixes.clone());
                    }
                }
            }
            EventKind::KeyRetagged { id, tag, sha256, start } => {
                self.modify(id, |r| r.start.clone_from(start))?;
                if let Some(stored) = self.keys.get_mut(id) {
                    stored.tag = *tag;
                }
                self.imported.insert(sha256.0, None);
                self.pending_delta -= 1;
            }
        }
        Ok(())
    }

    fn set(&mut self, entry: DirEntry) {
        self.dir.insert(entry.key(), Some(entry));
    }

    fn delete(&mut self, kind: DirKind, name: &str) {
        self.dir.insert(
            DirKey {
                kind,
                name: name.to_string(),
            },
            None,
        );
    }

    fn insert_new(&mut self, record: &KeyRecord, tag: Tag) {
        self.keys.insert(
            record.id.clone(),
            StoredKey {
                record: record.clone(),
                tag,
            },
        );
    }

    fn modify(&mut self, id: &KeyId, change: impl FnOnce(&mut KeyRecord)) -> Result<()> {
        let mut stored = self.get(id)?.ok_or_else(|| {
            Error::Log(LogError::BadPayload {
                seq: 0,
                reason: format!("an event names unknown key {id}"),
            })
        })?;
        change(&mut stored.record);
        self.touched.insert(id.clone());
        self.keys.insert(id.clone(), stored);
        Ok(())
    }
}

fn apply_rotation(old: &mut KeyRecord, revoked_at: i64, new_id: &KeyId) {
    old.revoked = Some(Revocation {
        at: revoked_at,
        reason: Some(format!("rotated to {new_id}")),
    });
    old.rotated_to = Some(new_id.clone());
}
