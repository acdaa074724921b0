//! The live map: tag -> the key's current state and its in-memory counters.
//!
//! A verify that misses reads sled once and fills the map with `or_insert`, so it can never
//! replace an entry. Every change to an existing key is written to sled first and then
//! upserted here, unconditionally. Whichever of a racing fill and a change reaches the map
//! last, the map ends up holding the changed record: no stale entry can serve a request.
//!
//! A key's [`LiveState`] is its record with its effective rate limits and budget resolved
//! (its own, over its plan's). Limit and budget counters are `Arc`s carried from one state
//! to the next, so a change of settings keeps what was already consumed.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::event::Tag;
use crate::index::Counters;
use crate::limits::budget::{BudgetCounter, pack, unpack};
use crate::limits::{Budget, Gcra, Quota, RateLimit, effective};
use crate::policy::{PermissionSet, RoleName};
use crate::record::KeyKind;

use super::directory::Directory;
use crate::record::{KeyId, KeyRecord};

/// One key's live state and counters.
#[derive(Debug)]
pub(crate) struct LiveKey {
    pub state: ArcSwap<LiveState>,
    /// Last use, unix ms (0: never).
    pub last_used: AtomicI64,
    /// Set when a counter changed since the last flush.
    pub dirty: AtomicBool,
}

impl LiveKey {
    /// Marks the counters for the next flush (a load first: no write when already set).
    #[inline]
    pub fn touch(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// A snapshot of the counters for persisting.
    pub fn counters(&self) -> Counters {
        let state = self.state.load();
        Counters {
            last_used: self.last_used.load(Ordering::Relaxed),
            limits: state
                .limits
                .iter()
                .map(|l| (l.name.to_string(), l.cell.tat(), l.quota.interval_ns))
                .collect(),
            spend: state.budget.as_ref().map_or(0, |b| b.counter.spend_word()),
        }
    }
}

/// A key's record with its limits and budget resolved.
#[derive(Debug)]
pub(crate) struct LiveState {
    pub record: Arc<KeyRecord>,
    pub grants: Grants,
    pub limits: Vec<ActiveLimit>,
    pub budget: Option<ActiveBudget>,
}

/// What a key may do.
#[derive(Debug)]
pub(crate) enum Grants {
    /// A service account: its role, and the role's permissions merged with its own.
    Service {
        role: Option<RoleName>,
        permissions: PermissionSet,
    },
    /// A personal token: resolved at every verify from its user's current role.
    Personal { user: String },
}

/// One effective rate limit and its counter.
#[derive(Debug, Clone)]
pub(crate) struct ActiveLimit {
    pub name: Arc<str>,
    pub window_ms: u64,
    pub quota: Quota,
    pub cell: Arc<Gcra>,
}

/// The effective budget and its counter.
#[derive(Debug, Clone)]
pub(crate) struct ActiveBudget {
    pub budget: Budget,
    pub counter: Arc<BudgetCounter>,
    /// The last period computed, so the calendar arithmetic runs once per period.
    period: Arc<ArcSwap<PeriodWindow>>,
}

/// A budget period: id, and the unix ms range `[start, end)` it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeriodWindow {
    id: u32,
    start: i64,
    end: Option<i64>,
}

impl ActiveBudget {
    /// The period holding `now_ms` (id and end), computed once per period.
    #[inline]
    pub fn period_at(&self, now_ms: i64) -> (u32, Option<i64>) {
        let cached = **self.period.load();
        if now_ms >= cached.start && cached.end.is_none_or(|end| now_ms < end) {
            return (cached.id, cached.end);
        }
        let (id, end) = self.budget.period.at(now_ms);
        // The period started at or before now; `now` is a valid lower bound to cache.
        let start = if cached.id == id {
            cached.start.min(now_ms)
        } else {
            now_ms
        };
        self.period.store(Arc::new(PeriodWindow { id, start, end }));
        (id, end)
    }
}

/// Where a new state's counters come from.
pub(crate) enum Seed<'a> {
    /// The state it replaces, at `now_ns`: counters carry over by limit name (rescaled
    /// when the quota changed) and budget period kind.
    Previous(&'a LiveState, i64),
    /// Persisted counters and budget mark (a fill from sled). After an unclean stop, open
    /// has already raised persisted spend to the mark.
    Persisted {
        counters: Option<&'a Counters>,
        mark: u64,
        now_ns: i64,
    },
}

impl LiveState {
    /// Resolves `record` against the directory (plan, role), seeding counters from `seed`.
    pub fn build(record: Arc<KeyRecord>, dir: &Directory, seed: &Seed<'_>) -> LiveState {
        let plan = record.plan.as_ref().and_then(|p| dir.plans.get(p));
        let (specs, budget) = effective(&record.rate_limits, record.budget, plan.map(Arc::as_ref));
        let limits = specs.iter().map(|spec| active_limit(spec, seed)).collect();
        let budget = budget.map(|b| active_budget(b, seed));
        let grants = match &record.kind {
            KeyKind::Personal { user } => Grants::Personal { user: user.clone() },
            KeyKind::Service => {
                let role = record.role.clone();
                let from_role = role
                    .as_ref()
                    .and_then(|r| dir.roles.get(r.as_str()))
                    .map(|r| r.permissions().clone())
                    .unwrap_or_default();
                Grants::Service {
                    permissions: from_role.union(&record.permissions),
                    role,
                }
            }
        };
        LiveState {
            record,
            grants,
            limits,
            budget,
        }
    }
}

fn active_limit(spec: &RateLimit, seed: &Seed<'_>) -> ActiveLimit {
    let quota = spec.quota();
    let cell = match seed {
        Seed::Previous(prev, now_ns) => prev.limits.iter().find(|l| *l.name == *spec.name).map(|l| {
            if l.quota == quota {
                Arc::clone(&l.cell)
            } else {
                Arc::new(Gcra::new(rescale(
                    l.cell.tat(),
                    l.quota.interval_ns,
                    quota.interval_ns,
                    *now_ns,
                )))
            }
        }),
        Seed::Persisted { counters, now_ns, .. } => counters
            .and_then(|c| c.limits.iter().find(|(n, _, _)| *n == spec.name))
            .map(|(_, tat, interval)| Arc::new(Gcra::new(rescale(*tat, *interval, quota.interval_ns, *now_ns)))),
    };
    ActiveLimit {
        name: Arc::from(spec.name.as_str()),
        window_ms: spec.window_ms,
        quota,
        cell: cell.unwrap_or_default(),
    }
}

/// Carries what a limit has consumed (requests, not time) over to a new interval: an
/// arrival time `tat - now` ahead under interval `from` is as many requests ahead under
/// interval `to`.
fn rescale(tat: i64, from: i64, to: i64, now_ns: i64) -> i64 {
    if from == to || tat <= now_ns || from <= 0 {
        return tat;
    }
    let ahead = i128::from(tat - now_ns) * i128::from(to) / i128::from(from);
    now_ns.saturating_add(i64::try_from(ahead).unwrap_or(i64::MAX))
}

fn active_budget(budget: Budget, seed: &Seed<'_>) -> ActiveBudget {
    let counter = match seed {
        Seed::Previous(prev, _) => prev
            .budget
            .as_ref()
            .filter(|b| std::mem::discriminant(&b.budget.period) == std::mem::discriminant(&budget.period))
            .map(|b| Arc::clone(&b.counter)),
        Seed::Persisted { counters, mark, .. } => {
            let spend = counters.map_or(0, |c| c.spend);
            let word = spend;
            // Never restore above the cap.
            let (period, amount) = unpack(word);
            let word = pack(period, amount.min(budget.cap));
            Some(Arc::new(BudgetCounter::new(word, *mark)))
        }
    };
    ActiveBudget {
        budget,
        counter: counter.unwrap_or_default(),
        // An empty window: the first request computes the period.
        period: Arc::new(ArcSwap::from_pointee(PeriodWindow {
            id: 0,
            start: i64::MAX,
            end: Some(i64::MIN),
        })),
    }
}

/// The concurrent map from tag to live key.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    map: DashMap<Tag, Arc<LiveKey>, BuildHasherDefault<TagHasher>>,
    /// Bumped by [`Cache::clear`]; a fill that read sled before a clear does not insert.
    epoch: AtomicU64,
}

impl Cache {
    /// The live key for `tag`, if cached.
    #[inline]
    pub fn get(&self, tag: &Tag) -> Option<Arc<LiveKey>> {
        self.map.get(tag).map(|e| Arc::clone(e.value()))
    }

    /// The epoch to pass to [`Cache::fill`]; read it before reading sled.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Inserts a state built from sled during `epoch`, unless the tag is present; returns
    /// what is in the map. If the map was cleared since, the entry is returned uncached:
    /// a change upserted and then cleared away must not be shadowed by an older read.
    pub fn fill(&self, tag: Tag, state: impl FnOnce() -> LiveState, last_used: i64, epoch: u64) -> Arc<LiveKey> {
        let fresh = || {
            Arc::new(LiveKey {
                state: ArcSwap::from_pointee(state()),
                last_used: AtomicI64::new(last_used),
                dirty: AtomicBool::new(false),
            })
        };
        match self.map.entry(tag) {
            dashmap::Entry::Occupied(e) => Arc::clone(e.get()),
            // Checked under the shard lock, so a concurrent clear either sees this entry or
            // has already bumped the epoch.
            dashmap::Entry::Vacant(e) if self.epoch.load(Ordering::SeqCst) == epoch => {
                Arc::clone(e.insert(fresh()).value())
            }
            dashmap::Entry::Vacant(_) => fresh(),
        }
    }

    /// Replaces the record for `tag` (keeping its counters), or inserts a state for it;
    /// called after the change is in sled.
    pub fn upsert(
        &self,
        tag: Tag,
        record: KeyRecord,
        dir: &Directory,
        now_ns: i64,
        load: impl FnOnce() -> (LiveState, i64),
    ) {
        let record = Arc::new(record);
        match self.map.entry(tag) {
            dashmap::Entry::Occupied(e) => {
                e.get()
                    .state
                    .rcu(|prev| LiveState::build(Arc::clone(&record), dir, &Seed::Previous(prev, now_ns)));
            }
            dashmap::Entry::Vacant(e) => {
                let (state, last_used) = load();
                e.insert(Arc::new(LiveKey {
                    state: ArcSwap::from_pointee(state),
                    last_used: AtomicI64::new(last_used),
                    dirty: AtomicBool::new(false),
                }));
            }
        }
    }

    /// Re-resolves every cached key against a directory whose plans or roles the store
    /// has just changed and published. Bumping the epoch first keeps a fill that resolved
    /// against the old directory from inserting afterwards.
    pub fn reresolve(&self, dir: &Directory, now_ns: i64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for entry in &self.map {
            entry
                .value()
                .state
                .rcu(|prev| LiveState::build(Arc::clone(&prev.record), dir, &Seed::Previous(prev, now_ns)));
        }
    }

    /// Empties the map.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
    }

    /// Counters changed since the last flush, marking them flushed.
    pub fn take_dirty(&self) -> Vec<(KeyId, Counters)> {
        let mut out = Vec::new();
        for entry in &self.map {
            let live = entry.value();
            if live.dirty.swap(false, Ordering::AcqRel) {
                out.push((live.state.load().record.id.clone(), live.counters()));
            }
        }
        out
    }
}

/// Tags are already uniformly random (keyed BLAKE3 output), so the map hashes a tag by
/// folding its bytes: no second hash on the hot path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(crate::log::frame::to_array(chunk));
        }
    }
}
