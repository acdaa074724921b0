//! The commit pipeline: one thread turns requests into events, appends them to the log,
//! fsyncs the batch (group commit), applies it to sled in one transaction, updates the
//! live map, and only then answers the callers.
//!
//! Because one thread validates and applies every change, a request is checked against
//! the state it will change; two racing requests on one key cannot both pass.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::event::{KeyChanges, Tag};
use crate::limits::Plan;
use crate::log::LogError;
use crate::log::LogWriter;
use crate::policy::{Role, User};
use crate::record::{Expiry, KeyId, KeyRecord, NewKey};
use crate::secret::Secret;
use crate::token::Format;
use crate::vault::SealedSecret;

use super::Shared;
use super::cache::{LiveState, Seed};
use super::fleet_host::{Appended, FleetLink, Poll};
use super::plan::plan;
use super::state_machine::Overlay;
use super::uses::Gathered;
use crate::directory::Directory;
use crate::index::{Counters, StoredKey};

/// Most requests committed in one batch.
const MAX_BATCH: usize = 1024;
/// Most use records kept for the next batch when a batch could not commit (each holds up
/// to `MAX_USES_PER_RECORD` uses): about a minute of a busy host's uses at the default
/// flush interval.
const MAX_CARRIED: usize = 4096;
/// How often a fleet host plans a batch again after another host committed first.
const MAX_FLEET_CONFLICTS: usize = 64;

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
    /// Give a key's budget credit for the current period, or take it away.
    Credit {
        id: KeyId,
        change: crate::event::CreditChange,
        reason: Option<String>,
    },
    /// Create or change an owner.
    SetOwner {
        id: String,
        update: crate::owner::OwnerUpdate,
    },
    /// Revoke (or disable) every key of an owner, in one event.
    OwnerKeys {
        owner: String,
        revoke: bool,
        reason: Option<String>,
    },
    /// Give an owner's budget credit for the current period, or take it away.
    OwnerCredit {
        owner: String,
        change: crate::event::CreditChange,
        reason: Option<String>,
    },
    /// Raise an owner's budget mark to at least `mark`.
    RaiseOwnerMark {
        owner: String,
        mark: u64,
    },
    /// Raise a key's budget mark to at least `mark` (packed period and amount).
    RaiseMark {
        id: KeyId,
        mark: u64,
    },
    /// Register a webhook (its id made by the caller).
    WebhookAdd {
        id: crate::webhook::WebhookId,
        url: String,
        kinds: crate::webhook::EventKinds,
    },
    WebhookRemove(crate::webhook::WebhookId),
    /// Record one delivery attempt (and, delivered, the webhook's new position).
    WebhookAttempt {
        id: crate::webhook::WebhookId,
        event: crate::webhook::Position,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        delivered: bool,
    },
    /// Log that a key's spend passed `percent` of its cap in `period`, unless it was
    /// logged already.
    BudgetThreshold {
        id: KeyId,
        period: u32,
        percent: u8,
        spent: u64,
        cap: u64,
    },
    /// Set a scope's lifecycle policy.
    SetLifecycle(crate::lifecycle::Scope, crate::lifecycle::Lifecycle),
    /// Clear a scope's lifecycle policy.
    ClearLifecycle(crate::lifecycle::Scope),
    /// Log the lifecycle sweep's notices, each unless already logged for its episode.
    Notices(Vec<Notice>),
    /// Log what the anomaly detector found, one `key.anomaly` each (none: a round trip that
    /// drains the uses handed off so far into the detector).
    Anomalies(Vec<crate::anomaly::Found>),
    /// A key was reported leaked: log it, and revoke it if it is live.
    Leak {
        id: KeyId,
        token_type: String,
        url: String,
        source: String,
    },
    /// A fleet host's charge needs more of a budget: lease it from the fleet (nothing is
    /// logged; the fleet keeps the account).
    #[cfg(feature = "fleet")]
    Lease(super::leases::LeaseRequest),
    /// Import keys of another system by their SHA-256 (checked, in order).
    Import(Vec<PreparedImport>),
    /// An imported key was presented and matched: store it by its tag from now on (a
    /// no-op when a racing verify did it first).
    Retag {
        id: KeyId,
        tag: Tag,
        sha256: crate::event::Sha256Hash,
        start: String,
    },
    /// Mint a customers' dashboard link.
    DashMint {
        link: crate::dashboard::TokenHash,
        owner: String,
        scopes: crate::dashboard::Scopes,
        ttl_ms: i64,
        session_ttl_ms: i64,
        return_url: Option<String>,
    },
    /// Redeem a dashboard link for a session: once, before it expires.
    DashRedeem {
        link: crate::dashboard::TokenHash,
        session: crate::dashboard::TokenHash,
    },
    /// Revoke a dashboard session (by its token's hash, or its public id).
    DashRevoke {
        session: Option<crate::dashboard::TokenHash>,
        id: Option<String>,
    },
    /// A change made through a dashboard session: checked against the session (live, its
    /// scope, its owner's key) and logged with the session as its actor.
    AsSession(Box<SessionOp>),
}

/// A change made through a dashboard session ([`Op::AsSession`]).
pub(crate) struct SessionOp {
    /// The session's token hash.
    pub session: crate::dashboard::TokenHash,
    /// The scope the change needs.
    pub scope: crate::dashboard::Scopes,
    /// The key changed, which must be the session owner's (none for a create).
    pub key: Option<KeyId>,
    /// For a create, or a roll that keeps the old key for a grace period: the most
    /// unrevoked keys the owner may have.
    pub max_keys: Option<u32>,
    /// The change.
    pub op: Op,
}

/// A key to import, checked for everything that does not depend on the store's state.
pub(crate) struct PreparedImport {
    /// Its line, for errors.
    pub line: usize,
    pub sha256: crate::event::Sha256Hash,
    /// The format rotations of it issue keys in (its prefix and environment).
    pub format: Format,
    pub project: String,
    /// The settings, with the role resolved.
    pub new: NewKey,
}

/// A lifecycle notice the sweep found due; the commit thread logs it once per episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The key expires at `expires_at`, within the notice period.
    Expiring {
        id: KeyId,
        expires_at: i64,
        reason: crate::lifecycle::ExpiredBecause,
    },
    /// The key was not used since `since` (its last use, or its creation).
    Unused {
        id: KeyId,
        last_used_at: Option<i64>,
        since: i64,
    },
    /// The key expired at `deadline`.
    Expired {
        id: KeyId,
        deadline: i64,
        reason: crate::lifecycle::ExpiredBecause,
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
    /// A budget's credit changed: what is left of it in the current period now.
    Credited(super::Credit),
    /// An owner as it now is.
    Owner(Box<crate::owner::Owner>),
    /// The keys an operation on an owner's keys changed.
    Keys(Vec<KeyId>),
    /// Budget units leased from the fleet (0: none left).
    #[cfg(feature = "fleet")]
    Leased(u64),
    /// Keys imported, in order.
    Imported(Vec<KeyRecord>),
    /// A dashboard link minted: when it expires.
    At(i64),
    /// A dashboard session started.
    Session(Box<crate::dashboard::Session>),
}

/// Runs the commit loop until every sender is dropped. Between requests it wakes every
/// `every` to write the use events verify handed off.
pub(crate) fn run(
    shared: Arc<Shared>,
    mut log: LogWriter,
    requests: Receiver<Request>,
    last_id: u128,
    every: Duration,
    mut fleet: Option<FleetLink>,
) {
    let mut last_id = last_id;
    let mut last_uses = Instant::now();
    // Uses are taken off the queue every BUSY_DRAIN, so that it does not fill, and written
    // with the next batch of changes, once per interval, or as soon as enough gathered.
    let mut pending = Gathered::new(shared.uses.mode());
    let mut dropped = 0;
    // Use records a batch could not commit (a fleet out of reach, a full disk): written
    // with the next batch, ahead of newer ones; past MAX_CARRIED records they are counted
    // as dropped instead (`carried_uses` is how many uses they hold).
    let mut carried: Vec<Vec<u8>> = Vec::new();
    let mut carried_uses = 0u64;
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
        let batch = lease(&shared, batch, fleet.as_mut());
        let lost_now = shared.uses.drain_into(&mut pending, &shared.anomalies);
        shared.counters.uses_dropped.fetch_add(lost_now, Ordering::Relaxed);
        dropped += lost_now;
        let write_uses =
            closing || !batch.is_empty() || pending.len() >= super::uses::WRITE_USES_AT || last_uses.elapsed() >= every;
        let use_events = if write_uses {
            last_uses = Instant::now();
            let keyless = shared.uses.keyless.take();
            let lost = std::mem::take(&mut dropped);
            carried_uses += pending.len() as u64 + lost + keyless.values().sum::<u64>();
            let mut events = std::mem::take(&mut carried);
            events.extend(pending.take(keyless, lost, shared.clock.now_ms()));
            events
        } else {
            Vec::new()
        };
        if !batch.is_empty() || !use_events.is_empty() {
            if commit_batch(&shared, &mut log, &mut last_id, batch, &use_events, fleet.as_mut()) {
                carried_uses = 0;
            } else if use_events.len() > MAX_CARRIED {
                let lost_now = std::mem::take(&mut carried_uses);
                shared.counters.uses_dropped.fetch_add(lost_now, Ordering::Relaxed);
                dropped += lost_now;
            } else {
                carried = use_events;
            }
        } else {
            follow(&shared, &mut log, &mut last_id, fleet.as_mut());
        }
        // Also when busy with batches, which may keep `follow` from running for as long as
        // the fleet is out of reach: a host cut off must still stop serving at its bound,
        // and stop spending leases before they expire.
        if let Some(link) = fleet.as_mut() {
            shared.fleet_stale.store(link.stale(), Ordering::Relaxed);
            let synced_ago = i64::try_from(link.synced_ago().as_millis()).unwrap_or(i64::MAX);
            let synced_at = shared.clock.now_ms().saturating_sub(synced_ago).max(1);
            shared.counters.fleet_synced_at_ms.store(synced_at, Ordering::Relaxed);
            link.tend_leases();
        }
        if closing {
            // Nothing charges any more: the leases' unspent parts go back to the fleet.
            if let Some(link) = fleet.as_mut() {
                link.release_leases();
                link.leave();
            }
            // The last head checkpoint; an error here has no caller left to tell, and the
            // next open checks the head against the log anyway.
            let _ = log.checkpoint_head();
            return;
        }
    }
}

fn commit_batch(
    shared: &Shared,
    log: &mut LogWriter,
    last_id: &mut u128,
    batch: Vec<Request>,
    uses: &[Vec<u8>],
    mut fleet: Option<&mut FleetLink>,
) -> bool {
    let mut conflicts = 0;
    let started = Instant::now();
    let results = loop {
        // A fleet host plans on the fleet's latest state: what other hosts committed first.
        if let Some(link) = fleet.as_deref()
            && let Err(e) = catch_up(shared, log, last_id, link)
        {
            refuse(batch, &e.to_string());
            return false;
        }
        let now = shared.clock.now_ms();
        let base_formats = shared.formats.load_full();
        let base_dir = shared.directory.load_full();
        let mut overlay = Overlay::new(&shared.index, &base_formats, &base_dir);
        // What this batch appends, in order, for the fleet (empty for a local store).
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        // Uses first: they were handed off before the requests of this batch were taken.
        for payload in uses {
            log.append(payload);
            if fleet.is_some() {
                payloads.push(payload.clone());
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        for req in &batch {
            let result = plan(&overlay, &req.op, now, last_id, shared).and_then(|(events, planned)| {
                for event in &events {
                    let payload = event.encode();
                    log.append(&payload);
                    overlay.apply(event)?;
                    if fleet.is_some() {
                        payloads.push(payload);
                    }
                }
                planned.into_outcome(&overlay)
            });
            results.push(result);
        }
        // A fleet host commits to the fleet first; a head that moved means another host
        // committed first: catch up and plan again.
        if let Some(link) = fleet.as_deref_mut() {
            match link.append(log, &payloads) {
                Ok(Appended::Committed { .. }) => link.mark_synced(),
                Ok(Appended::Conflict) if conflicts < MAX_FLEET_CONFLICTS => {
                    log.discard();
                    conflicts += 1;
                    continue;
                }
                Ok(Appended::Conflict) => {
                    log.discard();
                    refuse(batch, "the fleet's head kept moving; try again");
                    return false;
                }
                Err(e) => {
                    log.discard();
                    refuse(batch, &unanswered(&e));
                    return false;
                }
            }
        }
        if let Err(e) = log.commit() {
            log.discard();
            let msg = e.to_string();
            for (req, result) in batch.into_iter().zip(results) {
                let failed = result.and(Err(Error::NotCommitted(msg.clone())));
                let _ = req.reply.send(failed);
            }
            return false;
        }
        apply_and_publish(shared, log, &overlay);
        shared.counters.commit_took(started.elapsed());
        break results;
    };
    for (req, result) in batch.into_iter().zip(results) {
        // A caller that stopped waiting has nothing to be told.
        let _ = req.reply.send(result);
    }
    true
}

/// Why a fleet append failed, for the callers. A request that timed out may still have
/// reached PostgreSQL and commit there later (the host then applies it like any other
/// host's record): say so, so that nobody retries a create blindly.
fn unanswered(e: &Error) -> String {
    match e {
        #[cfg(feature = "fleet")]
        Error::Fleet(crate::fleet::FleetError::Timeout) => {
            format!("{e}: the change may still commit in the fleet; check (list, audit) before trying again")
        }
        _ => e.to_string(),
    }
}

/// Answers every request of `batch` with [`Error::NotCommitted`]: nothing was written.
fn refuse(batch: Vec<Request>, why: &str) {
    for req in batch {
        let _ = req.reply.send(Err(Error::NotCommitted(why.to_string())));
    }
}

/// Applies a durable batch's changes to the index, and publishes them: formats, the
/// directory, and the live map's keys.
fn apply_and_publish(shared: &Shared, log: &LogWriter, overlay: &Overlay<'_>) {
    apply(shared, log, overlay);
    // After the live map: a reader of the feed woken now sees the state the records made.
    shared.publish_seq(log.durable_seq());
}

/// [`apply_and_publish`]'s first part: the index, formats, the directory, the live map.
fn apply(shared: &Shared, log: &LogWriter, overlay: &Overlay<'_>) {
    // The batch is durable: from here on it is acknowledged, whatever the index does. An
    // index that fails to take it (a full disk) marks itself behind: it refuses reads and
    // later batches, so it never records an applied_seq past a batch it lacks, and the next
    // open replays the log from where it stopped. The error is kept there, not lost.
    if !overlay.is_empty() {
        let _ = shared
            .index
            .apply(&overlay.batch(log.durable_seq(), log.durable_hash()));
    }
    if let Some(formats) = overlay.changed_formats() {
        shared.publish_formats(formats.clone());
    }
    if let Some((dir, reresolve)) = overlay.changed_directory() {
        let dir = Arc::new(dir);
        shared.directory.store(Arc::clone(&dir));
        // Owners first: re-resolving the keys points them at their owners' new states.
        for id in overlay.changed_owners() {
            if let Some(owner) = dir.owners.get(id) {
                shared
                    .cache
                    .set_owner(Arc::clone(owner), &dir, shared.clock.now_ns(), || {
                        shared.build_owner(Arc::clone(owner), &dir)
                    });
            }
        }
        if reresolve {
            shared.cache.reresolve(&dir, shared.clock.now_ns());
        }
    }
    // After the index holds the batch: a verify that sees the count finds the keys.
    if let Some(prefixes) = overlay.changed_import_prefixes() {
        shared.import_prefixes.store(Arc::new(prefixes.clone()));
        shared
            .any_imports
            .store(!prefixes.is_empty(), std::sync::atomic::Ordering::Release);
    }
    if overlay.pending_delta > 0 {
        shared.imports_pending.fetch_add(
            overlay.pending_delta.unsigned_abs(),
            std::sync::atomic::Ordering::SeqCst,
        );
    } else if overlay.pending_delta < 0 {
        shared.imports_pending.fetch_sub(
            overlay.pending_delta.unsigned_abs(),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
    let dir = shared.directory.load();
    // Credits given in the batch reach the live states that hold the keys' budgets.
    for (id, (period, credit)) in &overlay.credits {
        let tag = overlay.get(id).ok().flatten().map(|k| k.tag);
        if let Some(budget) = tag
            .and_then(|tag| shared.cache.get(&tag))
            .and_then(|s| s.budget.clone())
        {
            budget.credit.store(
                super::cache::pack_credit(*period, *credit),
                std::sync::atomic::Ordering::Release,
            );
        }
    }
    // Owners' credits likewise reach their live states.
    for (owner, (period, credit)) in &overlay.owner_credits {
        if let Some(budget) = shared.cache.owner_if_held(owner).and_then(|o| o.budget.clone()) {
            budget.credit.store(
                super::cache::pack_credit(*period, *credit),
                std::sync::atomic::Ordering::Release,
            );
        }
    }
    // Before the old keys' states change: requests in flight on them still count.
    for (old, new) in &overlay.rotations {
        if let (Some(old), Some(new)) = (overlay.keys.get(old), overlay.keys.get(new)) {
            carry_counters(shared, &dir, old, new);
        }
    }
    for id in &overlay.touched {
        // An imported key not yet presented has no live state: it is found by its SHA-256.
        if let Some(stored) = overlay.keys.get(id).filter(|k| !k.tag.is_pending()) {
            let successor = stored
                .record
                .rotated_to
                .as_ref()
                .and_then(|next| overlay.get(next).ok().flatten())
                .map(|k| k.tag);
            shared.cache.upsert(
                stored.tag,
                stored.record.clone(),
                successor,
                &dir,
                shared.clock.now_ns(),
                || shared.load_state(stored.record.clone()).ok(),
            );
        }
    }
}

/// A rotation's new key takes over the old key's rate-limit and budget counters (not its
/// last use). In sled it starts from them, for the next open (the log carried the budget
/// mark already, for an open after a crash); in the live map, when the old key is there,
/// it shares them, so a request in flight on the old key counts for the new one too.
fn carry_counters(shared: &Shared, dir: &Directory, old: &StoredKey, new: &StoredKey) {
    let previous = shared.cache.get(&old.tag);
    let counters = match &previous {
        Some(state) => Some(state.counters()),
        // A read error leaves the new key with the mark the log carried.
        None => shared.index.counters(&old.record.id).ok().flatten(),
    };
    if let Some(counters) = counters {
        let carried = Counters {
            last_used: 0,
            ..counters
        };
        // As for the flusher: a failed write leaves spend at the mark after a restart.
        let _ = shared.index.write_counters(&[(new.record.id.clone(), carried)]);
    }
    if let Some(previous) = previous {
        let seed = Seed::Inherit(&previous, shared.clock.now_ns());
        let state = LiveState::build(Arc::new(new.record.clone()), dir, &seed);
        shared.cache.insert(new.tag, state);
    }
}

/// Between batches: a fleet host applies what other hosts committed, once a poll interval
/// says the fleet's head moved; refuses verifies while the fleet has been out of reach for
/// longer than its staleness bound (failing closed); says it is alive about once a second.
fn follow(shared: &Shared, log: &mut LogWriter, last_id: &mut u128, fleet: Option<&mut FleetLink>) {
    let Some(link) = fleet else {
        return;
    };
    if let Poll::Behind = link.poll(log.durable_seq())
        && catch_up(shared, log, last_id, link).is_ok()
    {
        link.mark_synced();
    }
    if let Some((shares, others_seen)) = link.refresh_shares() {
        let mut dir = Directory::clone(&shared.directory.load());
        dir.change_share(shares, others_seen, shared.clock.now_ns());
        let dir = Arc::new(dir);
        shared.directory.store(Arc::clone(&dir));
        shared.cache.reresolve_owners(&dir, shared.clock.now_ns());
        shared.cache.reresolve(&dir, shared.clock.now_ns());
    }
    // After the shares are in force: the heartbeat tells the others they are.
    link.heartbeat(log.durable_seq());
}

/// Answers the lease requests of `batch` (one round trip to the fleet each) and returns
/// the rest. Leases are not changes to the log: they never wait for a batch to commit.
#[cfg(feature = "fleet")]
fn lease(shared: &Shared, batch: Vec<Request>, mut fleet: Option<&mut FleetLink>) -> Vec<Request> {
    // Most batches hold none: they pass through untouched.
    if !batch.iter().any(|r| matches!(r.op, Op::Lease(_))) {
        return batch;
    }
    let (leases, rest): (Vec<Request>, Vec<Request>) = batch.into_iter().partition(|r| matches!(r.op, Op::Lease(_)));
    for req in leases {
        let Op::Lease(ask) = &req.op else { continue };
        let result = match fleet.as_deref_mut() {
            Some(link) => link.lease(ask, shared.clock.now_ns()).map(Outcome::Leased),
            None => Err(Error::NotCommitted("a budget lease needs a fleet".to_string())),
        };
        let _ = req.reply.send(result);
    }
    rest
}

/// Without a fleet there are no leases.
#[cfg(not(feature = "fleet"))]
fn lease(_: &Shared, batch: Vec<Request>, _: Option<&mut FleetLink>) -> Vec<Request> {
    batch
}

/// Appends what the fleet committed past the local log, applies it to the index and the
/// live map, and moves `last_id` past every key id it issued.
fn catch_up(shared: &Shared, log: &mut LogWriter, last_id: &mut u128, link: &FleetLink) -> Result<()> {
    loop {
        let records = link.records_after(log)?;
        if records.is_empty() {
            return Ok(());
        }
        let base_formats = shared.formats.load_full();
        let base_dir = shared.directory.load_full();
        let mut overlay = Overlay::new(&shared.index, &base_formats, &base_dir);
        let applied = records.iter().try_for_each(|r| {
            log.append(&r.payload);
            let event = Event::decode(&r.payload).map_err(|reason| LogError::BadPayload { seq: r.seq, reason })?;
            overlay.apply(&event)
        });
        if let Err(e) = applied.and_then(|()| log.commit().map_err(Error::from)) {
            log.discard();
            return Err(e);
        }
        apply_and_publish(shared, log, &overlay);
        if let Some(id) = shared.index.last_id()? {
            *last_id = (*last_id).max(id.value());
        }
    }
}
