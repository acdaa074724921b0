//! The commit pipeline: one thread turns requests into events, appends them to the log,
//! fsyncs the batch (group commit), applies it to sled in one transaction, updates the
//! live map, and only then answers the callers.
//!
//! Because one thread validates and applies every change, a request is checked against
//! the state it will change; two racing requests on one key cannot both pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use crate::error::{Error, InputError, Result, StateError};
use crate::event::{Event, EventKind, KeyChanges, Tag};
use crate::index::{Index, IndexBatch, StoredKey, VaultEntry, vault_key};
use crate::limits::Plan;
use crate::limits::budget::unless_later;
use crate::log::{LogError, LogWriter};
use crate::policy::{BUILTIN_ROLES, Role, User};
use crate::record::{Expiry, KeyId, KeyKind, KeyRecord, NewKey, Revocation, Status};
use crate::secret::Secret;
use crate::token::{Format, FormatSet};
use crate::vault::{SealedSecret, VaultError};

use super::Shared;
use super::directory::{DirEntry, DirKey, DirKind, Directory};
use super::uses::Gathered;

/// Most requests committed in one batch.
const MAX_BATCH: usize = 1024;

/// A request to the commit thread.
pub(crate) struct Request {
    pub op: Op,
    pub reply: SyncSender<Result<Outcome>>,
}

/// A state change, checked for everything that does not depend on the current state.
pub(crate) enum Op {
    Create(PreparedKey),
    Update {
        id: KeyId,
        /// Everything but the expiry, which is resolved against the batch's clock.
        changes: KeyChanges,
        expires: Option<Option<Expiry>>,
    },
    Disable(KeyId),
    Enable(KeyId),
    Revoke {
        id: KeyId,
        reason: Option<String>,
    },
    Rotate {
        id: KeyId,
        grace_ms: Option<i64>,
    },
    SetPlan(Plan),
    DeletePlan(String),
    SetRole(Role),
    DeleteRole(String),
    SetUser(User),
    RemoveUser(String),
    /// Seal and store a new version of a provider secret (sealed here, where the version
    /// is decided, because the version is bound into the ciphertext).
    VaultPut {
        project: String,
        name: String,
        plaintext: zeroize::Zeroizing<Vec<u8>>,
    },
    VaultDelete {
        project: String,
        name: String,
    },
    VaultRead {
        project: String,
        name: String,
        version: u32,
    },
    /// Register a master key version (its check value).
    VaultAddMaster {
        version: u32,
        check: [u8; 32],
    },
    /// Replace sealed blobs by their rewrapped forms, each only if still the same blob.
    VaultRewrap(Vec<Rewrap>),
    VaultMinVersion(u32),
    /// Raise a key's budget mark to at least `mark` (packed period and amount).
    RaiseMark {
        id: KeyId,
        mark: u64,
    },
}

/// One rewrapped secret version: the blob it replaces and the new one.
pub(crate) struct Rewrap {
    pub project: String,
    pub name: String,
    pub version: u32,
    pub old: SealedSecret,
    pub new: SealedSecret,
}

/// A new key, generated and hashed by the calling thread (off the commit thread).
pub(crate) struct PreparedKey {
    pub secret: Secret,
    pub tag: Tag,
    pub start: String,
    pub format: Format,
    pub project: String,
    /// The request, checked, with its role resolved (its format and project are above).
    /// Its expiry is resolved against the batch's clock, so a lifetime counts from
    /// `created_at`.
    pub new: NewKey,
}

/// What a committed request returns.
pub(crate) enum Outcome {
    Created(KeyRecord, Secret),
    Changed(KeyRecord),
    Rotated {
        old: Box<KeyRecord>,
        new: Box<KeyRecord>,
        secret: Secret,
    },
    Done,
    /// A secret version stored, or the number of blobs rewrapped.
    Count(u32),
}

/// What a planned request will return, read back from the state once its events apply.
enum Planned {
    Created(KeyId, Secret),
    Changed(KeyId),
    Rotated(KeyId, KeyId, Secret),
    Done,
    Count(u32),
}

/// Runs the commit loop until every sender is dropped. Between requests it wakes every
/// `every` to write the use events verify handed off.
pub(crate) fn run(
    shared: Arc<Shared>,
    mut log: LogWriter,
    requests: Receiver<Request>,
    last_id: u128,
    every: Duration,
) {
    let mut last_id = last_id;
    let mut last_uses = Instant::now();
    // Uses are taken off the queue every BUSY_DRAIN, so that it does not fill, and written
    // with the next batch of changes, once per interval, or as soon as enough gathered.
    let mut pending = Gathered::new(shared.uses.mode());
    let mut dropped = 0;
    // Drains are BUSY_DRAIN apart, start to start: the time a write takes does not
    // lengthen the time in which a ring fills.
    let mut last_drain = Instant::now();
    loop {
        let wait = every.min(super::uses::BUSY_DRAIN).saturating_sub(last_drain.elapsed());
        let (batch, closing) = match requests.recv_timeout(wait) {
            Ok(first) => {
                let mut batch = vec![first];
                batch.extend(requests.try_iter().take(MAX_BATCH - 1));
                (batch, false)
            }
            Err(RecvTimeoutError::Timeout) => (Vec::new(), false),
            Err(RecvTimeoutError::Disconnected) => (Vec::new(), true),
        };
        last_drain = Instant::now();
        dropped += shared.uses.drain_into(&mut pending);
        let write_uses =
            closing || !batch.is_empty() || pending.len() >= super::uses::WRITE_USES_AT || last_uses.elapsed() >= every;
        let use_events = if write_uses {
            last_uses = Instant::now();
            let keyless = shared.uses.keyless.take();
            let lost = std::mem::take(&mut dropped);
            pending.take(keyless, lost, shared.clock.now_ms())
        } else {
            Vec::new()
        };
        if !batch.is_empty() || !use_events.is_empty() {
            commit_batch(&shared, &mut log, &mut last_id, batch, &use_events);
        }
        if closing {
            // The last head checkpoint; an error here has no caller left to tell, and the
            // next open checks the head against the log anyway.
            let _ = log.checkpoint_head();
            return;
        }
    }
}

fn commit_batch(shared: &Shared, log: &mut LogWriter, last_id: &mut u128, batch: Vec<Request>, uses: &[Vec<u8>]) {
    let now = shared.clock.now_ms();
    let base_formats = shared.formats.load_full();
    let base_dir = shared.directory.load_full();
    let mut overlay = Overlay::new(&shared.index, &base_formats, &base_dir);
    // Uses first: they were handed off before the requests of this batch were taken.
    for payload in uses {
        log.append(payload);
    }
    let mut results = Vec::with_capacity(batch.len());
    for req in &batch {
        let result = plan(&overlay, &req.op, now, last_id, shared).and_then(|(events, planned)| {
            for event in &events {
                log.append(&event.encode());
                overlay.apply(event)?;
            }
            overlay.outcome(planned)
        });
        results.push(result);
    }
    let written = log.commit().map_err(Error::from).and_then(|()| {
        if overlay.is_empty() {
            return Ok(());
        }
        shared.index.apply(&overlay.batch(log.durable_seq()))
    });
    if let Err(e) = written {
        log.discard();
        let msg = e.to_string();
        for (req, result) in batch.into_iter().zip(results) {
            let failed = result.and(Err(Error::NotCommitted(msg.clone())));
            let _ = req.reply.send(failed);
        }
        return;
    }
    if let Some(formats) = overlay.changed_formats() {
        shared.formats.store(Arc::new(formats.clone()));
    }
    if let Some((dir, reresolve)) = overlay.changed_directory() {
        let dir = Arc::new(dir);
        shared.directory.store(Arc::clone(&dir));
        if reresolve {
            shared.cache.reresolve(&dir, shared.clock.now_ns());
        }
    }
    let dir = shared.directory.load();
    for id in &overlay.touched {
        if let Some(stored) = overlay.keys.get(id) {
            shared
                .cache
                .upsert(stored.tag, stored.record.clone(), &dir, shared.clock.now_ns(), || {
                    shared.load_state(&stored.record)
                });
        }
    }
    for (req, result) in batch.into_iter().zip(results) {
        // A caller that stopped waiting has nothing to be told.
        let _ = req.reply.send(result);
    }
}

/// Checks `op` against the current state and returns the events that carry it out.
fn plan(state: &Overlay<'_>, op: &Op, now: i64, last_id: &mut u128, shared: &Shared) -> Result<(Vec<Event>, Planned)> {
    let event = |kind| Event { at: now, kind };
    match op {
        Op::Create(key) => {
            let mut events = register_format(state, &key.format, now)?;
            let new = &key.new;
            let record = KeyRecord {
                id: KeyId::next(now, last_id),
                name: new.name.clone(),
                start: key.start.clone(),
                format: key.format.clone(),
                project: key.project.clone(),
                created_at: now,
                expires_at: new.expires.map(|e| e.resolve(now)).transpose()?,
                disabled_at: None,
                revoked: None,
                metadata: new.metadata.clone(),
                rotated_from: None,
                rotated_to: None,
                rate_limits: new.rate_limits.clone(),
                budget: new.budget,
                plan: new.plan.clone(),
                kind: new.kind.clone(),
                role: new.role.clone(),
                permissions: new.permissions.clone(),
                allow_ips: new.allow_ips.clone(),
                allow_referrers: new.allow_referrers.clone(),
                allow_endpoints: new.allow_endpoints.clone(),
            };
            if let Some(plan) = &record.plan {
                state.plan(plan)?;
            }
            if let Some(role) = &record.role {
                state.role(role.as_str())?;
            }
            if let KeyKind::Personal { user } = &record.kind {
                state.user(user)?;
            }
            let planned = Planned::Created(record.id.clone(), key.secret.clone());
            events.push(event(EventKind::KeyCreated { record, tag: key.tag }));
            Ok((events, planned))
        }
        Op::Update { id, changes, expires } => {
            let current = state.live(id, now)?;
            if let Some(Some(plan)) = &changes.plan {
                state.plan(plan)?;
            }
            if let Some(role) = &changes.role {
                if matches!(current.record.kind, KeyKind::Personal { .. }) {
                    return Err(InputError::KeyType(
                        "a personal token acts with its user's role; it takes none".into(),
                    )
                    .into());
                }
                state.role(role.as_str())?;
            }
            let expires_at = match expires {
                Some(Some(e)) => Some(Some(e.resolve(now)?)),
                Some(None) => Some(None),
                None => None,
            };
            let kind = EventKind::KeyUpdated {
                id: id.clone(),
                changes: KeyChanges {
                    expires_at,
                    ..changes.clone()
                },
            };
            Ok((vec![event(kind)], Planned::Changed(id.clone())))
        }
        Op::SetPlan(plan) => Ok((vec![event(EventKind::PlanSet { plan: plan.clone() })], Planned::Done)),
        Op::SetRole(role) => {
            if BUILTIN_ROLES.contains(&role.name().as_str()) {
                return Err(StateError::RoleInUse(role.name().to_string(), "it is built in".into()).into());
            }
            Ok((vec![event(EventKind::RoleSet { role: role.clone() })], Planned::Done))
        }
        Op::DeleteRole(name) => {
            if BUILTIN_ROLES.contains(&name.as_str()) {
                return Err(StateError::RoleInUse(name.clone(), "it is built in".into()).into());
            }
            state.role(name)?;
            let keys = state
                .index
                .list(None, None)?
                .iter()
                .filter(|k| {
                    state
                        .get_record(&k.record.id)
                        .is_some_and(|r| r.role.as_ref().is_some_and(|role| role.as_str() == name))
                })
                .count();
            let users = state
                .users()
                .filter(|u| u.memberships.values().any(|r| r.as_str() == name))
                .count();
            if keys + users > 0 {
                let why = format!("{keys} key(s) and {users} user(s) have it");
                return Err(StateError::RoleInUse(name.clone(), why).into());
            }
            Ok((
                vec![event(EventKind::RoleDeleted { name: name.clone() })],
                Planned::Done,
            ))
        }
        Op::VaultPut {
            project,
            name,
            plaintext,
        } => {
            let ring_guard = shared
                .vault_ring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ring = ring_guard.as_ref().ok_or(VaultError::NoMasterKey)?;
            let mut events = Vec::new();
            let current = ring.current();
            if !state.master_registered(current.version())? {
                events.push(event(EventKind::MasterKeyAdded {
                    version: current.version(),
                    check: current.check_value(),
                }));
            }
            let version = state
                .latest_secret_version(project, name)?
                .map_or(Ok(1), |v| v.checked_add(1).ok_or(VaultError::VersionsExhausted(v)))?;
            let sealed = crate::vault::seal(ring, project, name, version, plaintext)?;
            events.push(event(EventKind::SecretPut {
                project: project.clone(),
                name: name.clone(),
                version,
                sealed,
            }));
            Ok((events, Planned::Count(version)))
        }
        Op::VaultDelete { project, name } => {
            if state.latest_secret_version(project, name)?.is_none() {
                return Err(StateError::UnknownSecret(format!("{project}/{name}")).into());
            }
            let kind = EventKind::SecretDeleted {
                project: project.clone(),
                name: name.clone(),
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::VaultRead { project, name, version } => {
            let kind = EventKind::SecretRead {
                project: project.clone(),
                name: name.clone(),
                version: *version,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::VaultAddMaster { version, check } => {
            if state.master_registered(*version)? {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::MasterKeyAdded {
                version: *version,
                check: *check,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::VaultRewrap(rewraps) => {
            let mut events = Vec::new();
            for r in rewraps {
                // Skip a version deleted or replaced since it was read.
                if state
                    .secret(&r.project, &r.name, r.version)?
                    .is_some_and(|e| e.sealed == r.old)
                {
                    events.push(event(EventKind::SecretRewrapped {
                        project: r.project.clone(),
                        name: r.name.clone(),
                        version: r.version,
                        sealed: r.new.clone(),
                    }));
                }
            }
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            Ok((events, Planned::Count(count)))
        }
        Op::VaultMinVersion(version) => Ok((
            vec![event(EventKind::VaultMinVersion { version: *version })],
            Planned::Done,
        )),
        Op::SetUser(user) => {
            for role in user.memberships.values() {
                state.role(role.as_str())?;
            }
            Ok((vec![event(EventKind::UserSet { user: user.clone() })], Planned::Done))
        }
        Op::RemoveUser(id) => {
            state.user(id)?;
            Ok((vec![event(EventKind::UserRemoved { id: id.clone() })], Planned::Done))
        }
        Op::DeletePlan(name) => {
            state.plan(name)?;
            let users = state
                .index
                .list(None, None)?
                .iter()
                .filter(|k| {
                    state
                        .get_record(&k.record.id)
                        .is_some_and(|r| r.plan.as_deref() == Some(name))
                })
                .count();
            if users > 0 {
                return Err(StateError::PlanInUse(name.clone(), users).into());
            }
            Ok((
                vec![event(EventKind::PlanDeleted { name: name.clone() })],
                Planned::Done,
            ))
        }
        Op::RaiseMark { id, mark } => {
            state.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
            if state.current_mark(id, now)? >= *mark {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::BudgetMark {
                id: id.clone(),
                mark: *mark,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::Disable(id) => {
            if state.live(id, now)?.record.disabled_at.is_some() {
                return Err(StateError::AlreadyDisabled(id.to_string()).into());
            }
            Ok((
                vec![event(EventKind::KeyDisabled { id: id.clone() })],
                Planned::Changed(id.clone()),
            ))
        }
        Op::Enable(id) => {
            if state.live(id, now)?.record.disabled_at.is_none() {
                return Err(StateError::NotDisabled(id.to_string()).into());
            }
            Ok((
                vec![event(EventKind::KeyEnabled { id: id.clone() })],
                Planned::Changed(id.clone()),
            ))
        }
        Op::Revoke { id, reason } => {
            state.live(id, now)?;
            let kind = EventKind::KeyRevoked {
                id: id.clone(),
                effective_at: now,
                reason: reason.clone(),
            };
            Ok((vec![event(kind)], Planned::Changed(id.clone())))
        }
        Op::Rotate { id, grace_ms } => {
            let old = state.live(id, now)?.record;
            if let Some(next) = &old.rotated_to {
                return Err(StateError::AlreadyRotated(id.to_string(), next.to_string()).into());
            }
            // The grace period never outlives the old key's own expiry.
            let grace_end = now.saturating_add(grace_ms.unwrap_or(0));
            let old_revoked_at = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
            let secret = old.format.generate();
            let tag = shared.tag_of(secret.expose().as_bytes());
            let record = KeyRecord {
                id: KeyId::next(now, last_id),
                start: old.format.start_of(secret.expose()).to_string(),
                created_at: now,
                // The same lifetime the old key was given, counted from now.
                expires_at: old.expires_at.map(|e| now.saturating_add(e - old.created_at)),
                disabled_at: old.disabled_at.map(|_| now),
                revoked: None,
                rotated_from: Some(id.clone()),
                rotated_to: None,
                ..old
            };
            let planned = Planned::Rotated(id.clone(), record.id.clone(), secret);
            let kind = EventKind::KeyRotated {
                old: id.clone(),
                old_revoked_at,
                record,
                tag,
            };
            Ok((vec![event(kind)], planned))
        }
    }
}

fn register_format(state: &Overlay<'_>, format: &Format, now: i64) -> Result<Vec<Event>> {
    if state.formats().contains(format) {
        return Ok(vec![]);
    }
    if let Some(registered) = state.formats().env_of_prefix(format.prefix())
        && registered != format.env()
    {
        return Err(InputError::PrefixEnvironmentConflict {
            prefix: format.prefix().to_string(),
            registered,
        }
        .into());
    }
    Ok(vec![Event {
        at: now,
        kind: EventKind::FormatRegistered { format: format.clone() },
    }])
}

fn apply_rotation(old: &mut KeyRecord, revoked_at: i64, new_id: &KeyId) {
    old.revoked = Some(Revocation {
        at: revoked_at,
        reason: Some(format!("rotated to {new_id}")),
    });
    old.rotated_to = Some(new_id.clone());
}

/// The state as of the records applied so far in a batch: sled plus the batch's changes.
pub(crate) struct Overlay<'a> {
    index: &'a Index,
    base_formats: &'a FormatSet,
    base_dir: &'a Directory,
    /// Keys changed or created in this batch.
    pub keys: BTreeMap<KeyId, StoredKey>,
    /// Keys that existed before the batch and changed in it (the live map must learn).
    pub touched: BTreeSet<KeyId>,
    formats: Option<FormatSet>,
    /// Plans, roles and users set (`Some`) or deleted (`None`) in this batch.
    dir: BTreeMap<DirKey, Option<DirEntry>>,
    /// Budget marks raised in this batch.
    marks: BTreeMap<KeyId, u64>,
    /// Secret versions put or deleted in this batch.
    vault: BTreeMap<Vec<u8>, Option<VaultEntry>>,
    /// Master keys registered in this batch.
    masters: BTreeMap<u32, [u8; 32]>,
    vault_min: Option<u32>,
}

impl<'a> Overlay<'a> {
    pub fn new(index: &'a Index, base_formats: &'a FormatSet, base_dir: &'a Directory) -> Self {
        Overlay {
            index,
            base_formats,
            base_dir,
            keys: BTreeMap::new(),
            touched: BTreeSet::new(),
            formats: None,
            dir: BTreeMap::new(),
            marks: BTreeMap::new(),
            vault: BTreeMap::new(),
            masters: BTreeMap::new(),
            vault_min: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.formats.is_none()
            && self.dir.is_empty()
            && self.marks.is_empty()
            && self.vault.is_empty()
            && self.masters.is_empty()
            && self.vault_min.is_none()
    }

    /// The batch's changes, for the index.
    pub fn batch(&self, applied_seq: u64) -> IndexBatch<'_> {
        IndexBatch {
            keys: &self.keys,
            formats: self.formats.as_ref(),
            directory: &self.dir,
            marks: &self.marks,
            vault: &self.vault,
            masters: &self.masters,
            vault_min: self.vault_min,
            applied_seq,
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
        let reresolve = self.dir.keys().any(|k| k.kind != DirKind::User);
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
    fn plan(&self, name: &str) -> Result<Plan> {
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
    fn role(&self, name: &str) -> Result<Role> {
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
    fn user(&self, id: &str) -> Result<User> {
        let found = match self.entry(DirKind::User, id) {
            Some(Some(DirEntry::User(u))) => Some(u.clone()),
            Some(_) => None,
            None => self.base_dir.users.get(id).cloned(),
        };
        found.ok_or_else(|| StateError::UnknownUser(id.to_string()).into())
    }

    fn master_registered(&self, version: u32) -> Result<bool> {
        Ok(self.masters.contains_key(&version) || self.index.vault_masters()?.0.contains_key(&version))
    }

    /// The latest version of a secret as of this batch.
    fn latest_secret_version(&self, project: &str, name: &str) -> Result<Option<u32>> {
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
    fn secret(&self, project: &str, name: &str, version: u32) -> Result<Option<VaultEntry>> {
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
    fn users(&self) -> impl Iterator<Item = User> + '_ {
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

    fn mark(&self, id: &KeyId) -> Result<u64> {
        match self.marks.get(id) {
            Some(m) => Ok(*m),
            None => self.index.mark(id),
        }
    }

    /// The key's persisted mark as its effective budget at `at_ms` sees it
    /// ([`unless_later`]): a mark of another kind of period must not block the marks of
    /// the budget the key has now. Within one kind, marks only rise.
    fn current_mark(&self, id: &KeyId, at_ms: i64) -> Result<u64> {
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

    /// What a planned request returns, read from the state after its events applied.
    fn outcome(&self, planned: Planned) -> Result<Outcome> {
        let record = |id: &KeyId| -> Result<KeyRecord> {
            self.get(id)?
                .map(|k| k.record)
                .ok_or_else(|| StateError::UnknownKey(id.to_string()).into())
        };
        Ok(match planned {
            Planned::Created(id, secret) => Outcome::Created(record(&id)?, secret),
            Planned::Changed(id) => Outcome::Changed(record(&id)?),
            Planned::Rotated(old, new, secret) => Outcome::Rotated {
                old: Box::new(record(&old)?),
                new: Box::new(record(&new)?),
                secret,
            },
            Planned::Done => Outcome::Done,
            Planned::Count(n) => Outcome::Count(n),
        })
    }

    /// The key, refusing an unknown or revoked one.
    fn live(&self, id: &KeyId, now: i64) -> Result<StoredKey> {
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
            | EventKind::UsesDropped { .. } => {}
            EventKind::BudgetMark { id, mark } => {
                let current = self.current_mark(id, event.at)?;
                self.marks.insert(id.clone(), current.max(*mark));
            }
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
