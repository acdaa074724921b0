//! The live map: tag -> the key's current state and its in-memory counters.
//!
//! A verify that misses reads sled once and fills the map with `or_insert`, so it can never
//! replace an entry. Every change to an existing key is written to sled first and then
//! upserted here, unconditionally. Whichever of a racing fill and a change reaches the map
//! last, the map ends up holding the changed record: no stale entry can serve a request.
//!
//! A key's [`LiveState`] is its record with its effective rate limits and budget resolved
//! (its own, over its plan's). A change replaces the map's `Arc<LiveState>` under the
//! shard's lock; a verify holds the state it looked up until it is done, and each thread
//! keeps the states it looked up last until the map's generation moves (see [`Cache`]). Limit and budget
//! counters and the last use are `Arc`s carried from one state to the next, so a change of
//! settings keeps what was already consumed.

use std::cell::RefCell;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::decision::Code;
use crate::event::Tag;
use crate::index::Counters;
use crate::limits::budget::{BudgetCounter, pack, unless_later, unpack};
use crate::limits::{Budget, Gcra, Quota, RateLimit, Shares, effective};
use crate::owner::Owner;
use crate::policy::{ADMIN_ROLE, PermissionSet, RoleName};
use crate::record::KeyKind;
use crate::usage::UsageCounts;

use super::lock;
use crate::directory::Directory;
use crate::record::{KeyId, KeyRecord};

/// A key's last use and whether its counters changed since the last flush; shared by
/// every state of the key.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// Last use, unix ms (0: never).
    pub last_used: AtomicI64,
    /// Set when a counter changed since the last flush.
    pub dirty: AtomicBool,
    /// `VALID` decisions since the last flush (usage: [`crate::usage`]).
    pub valid: AtomicU64,
    /// Credits valid requests spent since the last flush.
    pub spent: AtomicU64,
    /// Denials since the last flush, by [`denial_slot`] of their code.
    pub denied: [AtomicU32; DENIAL_SLOTS],
}

/// Denial codes a found key can be given (every code but `VALID`; `MALFORMED` and
/// `NOT_FOUND` only for an imported key's odd cases).
pub(crate) const DENIAL_SLOTS: usize = 9;

/// The slot of a denial `code` in [`Usage::denied`]: its byte in the usage values, less one.
#[inline]
fn denial_slot(code: Code) -> usize {
    usize::from(code.byte().saturating_sub(1))
}

/// What a key was used for since the last flush, as [`Cache::take_dirty`] hands it to
/// the usage book.
#[derive(Debug)]
pub(crate) struct KeyUsage {
    pub id: KeyId,
    pub project: String,
    pub owner: Option<String>,
    pub counts: UsageCounts,
}

impl Usage {
    /// Marks the counters for the next flush (a load first: no write when already set).
    #[inline]
    pub fn touch(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Takes the usage counted since the last take (resetting it), or `None` when none was.
    fn take_counts(&self) -> Option<UsageCounts> {
        let mut counts = UsageCounts {
            valid: self.valid.swap(0, Ordering::Relaxed),
            spent: self.spent.swap(0, Ordering::Relaxed),
            ..UsageCounts::default()
        };
        for (slot, n) in self.denied.iter().enumerate() {
            let n = n.swap(0, Ordering::Relaxed);
            if n > 0
                && let Some(code) = u8::try_from(slot + 1).ok().and_then(Code::from_byte)
            {
                counts.count(code, u64::from(n), 0);
            }
        }
        (!counts.is_empty()).then_some(counts)
    }
}

/// A key's record with its limits and budget resolved, and its counters.
#[derive(Debug)]
pub(crate) struct LiveState {
    pub record: Arc<KeyRecord>,
    pub grants: Grants,
    /// An admin key: a service account with the built-in `admin` role. Only the management
    /// API accepts it; customer verification refuses it.
    pub admin: bool,
    /// A rotated key's successor (its tag): while the rotated key is still valid (a grace
    /// period), its requests are charged to the successor's rate limits and budget, so the
    /// two keys never hold two budgets.
    pub successor: Option<Tag>,
    pub limits: Vec<ActiveLimit>,
    pub budget: Option<ActiveBudget>,
    pub usage: Arc<Usage>,
    /// The tag the map holds this state under ([`Tag::PENDING`] until it is put in the
    /// map): what [`Cache::touch`] queues for the next flush.
    pub tag: Tag,
    /// The key's owner, whose limits and budget apply on top of the key's own: held here
    /// so that verify reaches it without a lookup.
    pub owner: Option<Arc<OwnerLive>>,
    /// When the key expires, unix ms (`i64::MAX`: never): its own expiry or its creation
    /// plus its lifecycle policy's max lifetime, whichever is first. Computed here, so a
    /// verify compares once.
    pub deadline: i64,
    /// Its lifecycle policy's unused expiry, ms (`i64::MAX`: none): a key unused this
    /// long since its last use (or creation) is expired.
    pub unused_ms: i64,
}

/// An owner with its limits and budget resolved, and their counters, shared by the live
/// states of all its keys.
#[derive(Debug)]
pub(crate) struct OwnerLive {
    pub owner: Arc<Owner>,
    pub limits: Vec<ActiveLimit>,
    /// Each limit's name as decisions report it: `owner:` and the limit's name.
    pub names: Vec<crate::decision::LimitName>,
    pub budget: Option<ActiveBudget>,
    /// Only its `dirty` flag is used: set when a counter changed since the last flush.
    pub usage: Arc<Usage>,
}

impl OwnerLive {
    /// Resolves `owner` (its limits under this host's share), seeding counters from `seed`
    /// ([`Seed::Carried`] from the owner's previous state, or [`Seed::Persisted`]).
    pub fn build(owner: Arc<Owner>, dir: &Directory, seed: &Seed<'_>) -> OwnerLive {
        let limits: Vec<ActiveLimit> = owner
            .rate_limits
            .iter()
            .map(|spec| active_limit(spec, dir, seed))
            .collect();
        let names = limits
            .iter()
            .map(|l| crate::decision::LimitName::lossy(&format!("owner:{}", l.name)))
            .collect();
        let budget = owner.budget.map(|b| active_budget(b, seed));
        let usage = match seed {
            Seed::Carried { usage: Some(u), .. } => Arc::clone(u),
            _ => Arc::new(Usage::default()),
        };
        OwnerLive {
            owner,
            limits,
            names,
            budget,
            usage,
        }
    }

    /// A snapshot of the counters for persisting.
    pub fn counters(&self) -> Counters {
        Counters {
            last_used: 0,
            limits: self
                .limits
                .iter()
                .map(|l| (l.name.to_string(), l.cell.tat(), l.quota.interval_ns))
                .collect(),
            spend: self.budget.as_ref().map_or(0, |b| b.counter.spend_word()),
        }
    }
}

impl LiveState {
    /// Whether the lifecycle policy expired the key by `now` (unix ms): past its deadline,
    /// or unused for its unused expiry. Two comparisons, and a load of the last use only
    /// under an unused expiry.
    #[inline]
    pub fn expired_by_policy(&self, now: i64) -> bool {
        now >= self.deadline
            || (self.unused_ms != i64::MAX && now.saturating_sub(self.unused_since()) >= self.unused_ms)
    }

    /// Unused since: the last use, or the key's creation when it was never used.
    pub fn unused_since(&self) -> i64 {
        self.usage.last_used.load(Ordering::Relaxed).max(self.record.created_at)
    }

    /// A snapshot of the counters for persisting.
    pub fn counters(&self) -> Counters {
        Counters {
            last_used: self.usage.last_used.load(Ordering::Relaxed),
            limits: self
                .limits
                .iter()
                .map(|l| (l.name.to_string(), l.cell.tat(), l.quota.interval_ns))
                .collect(),
            spend: self.budget.as_ref().map_or(0, |b| b.counter.spend_word()),
        }
    }
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
    pub name: crate::decision::LimitName,
    pub window_ms: u64,
    pub quota: Quota,
    pub cell: Arc<Gcra>,
}

/// The effective budget and its counter.
#[derive(Debug, Clone)]
pub(crate) struct ActiveBudget {
    pub budget: Budget,
    pub counter: Arc<BudgetCounter>,
    /// The last period computed, so the calendar arithmetic runs once per period: packed
    /// `id << 32 | end`, the end in days since the epoch (`u32::MAX`: no end; the word 0:
    /// nothing computed yet). Periods end at midnight UTC.
    period: Arc<AtomicU64>,
    /// The budget's credit (`credits add`, `credits set`): its period and amount, packed
    /// by [`pack_credit`]; 0 when none. Shared like the counter.
    pub credit: Arc<AtomicU64>,
    /// The highest budget threshold this process asked the commit thread to log, packed
    /// `period << 8 | percent`: verify asks once per threshold, not at every request past
    /// it (the commit thread's own check against the index makes it once per key, period
    /// and threshold across restarts). Shared like the counter.
    pub threshold_noted: Arc<AtomicU64>,
}

/// Bits of a packed credit that hold the amount (two's complement); the period has the rest.
const CREDIT_BITS: u32 = 44;
const CREDIT_MASK: u64 = (1 << CREDIT_BITS) - 1;
/// The largest credit, either way, a budget can hold.
pub(crate) const MAX_CREDIT: i64 = (1 << (CREDIT_BITS - 1)) - 1;

/// A credit of `amount` (clamped to [`MAX_CREDIT`] either way) in `period`, in one word.
pub(crate) fn pack_credit(period: u32, amount: i64) -> u64 {
    let amount = amount.clamp(-MAX_CREDIT, MAX_CREDIT);
    (u64::from(period) << CREDIT_BITS) | (amount.cast_unsigned() & CREDIT_MASK)
}

/// `budget` in `period`, its cap moved by `credit` if that is the period's.
#[inline]
fn in_period(budget: Budget, credit: &AtomicU64, period: u32) -> Budget {
    let (p, credit) = unpack_credit(credit.load(Ordering::Acquire));
    if p != period || credit == 0 {
        return budget;
    }
    let cap = i64::try_from(budget.cap).unwrap_or(i64::MAX).saturating_add(credit);
    Budget {
        cap: u64::try_from(cap.max(0)).unwrap_or(0).min(crate::limits::MAX_BUDGET),
        ..budget
    }
}

/// The period and amount of a packed credit.
pub(crate) fn unpack_credit(word: u64) -> (u32, i64) {
    let period = u32::try_from(word >> CREDIT_BITS).unwrap_or(u32::MAX);
    // Sign-extend the amount's 44 bits.
    let amount = ((word & CREDIT_MASK) << (64 - CREDIT_BITS)).cast_signed() >> (64 - CREDIT_BITS);
    (period, amount)
}

const DAY_MS: i64 = 86_400_000;
const NO_END: u32 = u32::MAX;

impl ActiveBudget {
    /// The budget in force in `period`: its cap moved by the period's credit, if any (never
    /// below zero nor past the largest budget).
    #[inline]
    pub fn in_period(&self, period: u32) -> Budget {
        in_period(self.budget, &self.credit, period)
    }

    /// The period holding `now_ms` (id and end), computed once per period. The period never
    /// moves back: a time before the cached period's start (a clock stepped back) stays in
    /// it, as [`BudgetCounter::charge`] would.
    #[inline]
    pub fn period_at(&self, now_ms: i64) -> (u32, Option<i64>) {
        let cached = self.period.load(Ordering::Relaxed);
        let id = u32::try_from(cached >> 32).unwrap_or(u32::MAX);
        let end_day = u32::try_from(cached & u64::from(u32::MAX)).unwrap_or(NO_END);
        let end = (end_day != NO_END).then(|| i64::from(end_day) * DAY_MS);
        if cached != 0 && end.is_none_or(|end| now_ms < end) {
            return (id, end);
        }
        let (id, end) = self.budget.period.at(now_ms);
        let end_day = match end {
            None => Some(NO_END),
            Some(end) if end % DAY_MS == 0 => u32::try_from(end / DAY_MS).ok().filter(|d| *d != NO_END),
            Some(_) => None,
        };
        if let Some(end_day) = end_day {
            // Only ever forward: a racing thread may have stored a later period already.
            self.period
                .fetch_max((u64::from(id) << 32) | u64::from(end_day), Ordering::Relaxed);
        }
        (id, end)
    }
}

/// Where a new state's counters come from.
pub(crate) enum Seed<'a> {
    /// The state it replaces, at `now_ns`: counters carry over by limit name (rescaled
    /// when the quota changed) and budget period kind.
    Previous(&'a LiveState, i64),
    /// The state of the key it was rotated from, at `now_ns`: rate-limit and budget
    /// counters are shared with it as with [`Seed::Previous`]; the last use is its own.
    Inherit(&'a LiveState, i64),
    /// Persisted counters and budget mark (a fill from sled). After an unclean stop, open
    /// has already raised persisted spend to the mark.
    Persisted {
        counters: Option<&'a Counters>,
        mark: u64,
        /// The budget's credit: its period and amount (`credits add`, `credits set`).
        credit: Option<(u32, i64)>,
        now_ns: i64,
    },
    /// An owner's previous counters, at `now_ns`: carried over as [`Seed::Previous`]
    /// carries a key's.
    Carried {
        limits: &'a [ActiveLimit],
        budget: Option<&'a ActiveBudget>,
        usage: Option<&'a Arc<Usage>>,
        now_ns: i64,
    },
}

impl Seed<'_> {
    /// The time the seed was taken at.
    fn now_ns(&self) -> i64 {
        match self {
            Seed::Previous(_, now_ns)
            | Seed::Inherit(_, now_ns)
            | Seed::Persisted { now_ns, .. }
            | Seed::Carried { now_ns, .. } => *now_ns,
        }
    }

    /// The counters a seed carries over from a previous state, if it does: its limits,
    /// its budget and the time.
    fn carried(&self) -> Option<(&[ActiveLimit], Option<&ActiveBudget>, i64)> {
        match self {
            Seed::Previous(prev, now_ns) | Seed::Inherit(prev, now_ns) => {
                Some((&prev.limits, prev.budget.as_ref(), *now_ns))
            }
            Seed::Carried {
                limits, budget, now_ns, ..
            } => Some((limits, *budget, *now_ns)),
            Seed::Persisted { .. } => None,
        }
    }
}

impl LiveState {
    /// Resolves `record` against the directory (plan, role), seeding counters from `seed`.
    pub fn build(record: Arc<KeyRecord>, dir: &Directory, seed: &Seed<'_>) -> LiveState {
        let plan = record.plan.as_ref().and_then(|p| dir.plans.get(p));
        let (specs, budget) = effective(&record.rate_limits, record.budget, plan.map(Arc::as_ref));
        let limits = specs.iter().map(|spec| active_limit(spec, dir, seed)).collect();
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
        let usage = match seed {
            Seed::Previous(prev, _) => Arc::clone(&prev.usage),
            Seed::Inherit(..) | Seed::Carried { .. } => Arc::new(Usage::default()),
            Seed::Persisted { counters, .. } => Arc::new(Usage {
                last_used: AtomicI64::new(counters.map_or(0, |c| c.last_used)),
                ..Usage::default()
            }),
        };
        let successor = match seed {
            Seed::Previous(prev, _) => prev.successor,
            Seed::Inherit(..) | Seed::Persisted { .. } | Seed::Carried { .. } => None,
        };
        // A rotation's new key keeps its predecessor's owner; a key read from sled is
        // given its owner by the caller.
        let owner = match seed {
            Seed::Previous(prev, _) | Seed::Inherit(prev, _) => prev.owner.clone(),
            Seed::Persisted { .. } | Seed::Carried { .. } => None,
        };
        let admin = matches!(&grants, Grants::Service { role: Some(r), .. } if r.as_str() == ADMIN_ROLE);
        let policy = dir.lifecycle.for_record(&record);
        let (deadline, _) = policy.deadline(&record);
        let unused_ms = policy.unused_ms();
        LiveState {
            deadline,
            unused_ms,
            record,
            grants,
            admin,
            successor,
            limits,
            budget,
            usage,
            tag: Tag::PENDING,
            owner,
        }
    }
}

fn active_limit(spec: &RateLimit, dir: &Directory, seed: &Seed<'_>) -> ActiveLimit {
    let quota = dir.share.quota(spec.limit, spec.window_ms);
    let cell = match (seed.carried(), seed) {
        (Some((prev_limits, _, now_ns)), _) => {
            let now_ns = &now_ns;
            prev_limits.iter().find(|l| *l.name == *spec.name).map(|l| {
                if l.quota == quota {
                    Arc::clone(&l.cell)
                } else {
                    let tat = rescale(l.cell.tat(), l.quota.interval_ns, quota.interval_ns, *now_ns);
                    // The quota changed with the share (or the limit): what the part gained
                    // may have been spent, on top of what this host spent.
                    let latest = dir.share_changes.last().map(std::slice::from_ref).unwrap_or_default();
                    let gained = gained_tat(spec, quota, latest, *now_ns);
                    let tat = match gained {
                        0 => tat,
                        gained => tat.max(*now_ns).saturating_add(gained - *now_ns),
                    };
                    Arc::new(Gcra::new(tat))
                }
            })
        }
        (None, Seed::Persisted { counters, now_ns, .. }) => counters
            .and_then(|c| c.limits.iter().find(|(n, _, _)| *n == spec.name))
            .map(|(_, tat, interval)| Arc::new(Gcra::new(rescale(*tat, *interval, quota.interval_ns, *now_ns)))),
        (None, _) => None,
    };
    ActiveLimit {
        // Names are checked to fit when a limit is made.
        name: crate::decision::LimitName::lossy(&spec.name),
        window_ms: spec.window_ms,
        quota,
        // A key this host has no counters for starts empty, except for a part of the limit
        // the host gained lately.
        cell: cell.unwrap_or_else(|| Arc::new(Gcra::new(gained_tat(spec, quota, &dir.share_changes, seed.now_ns())))),
    }
}

/// A part of a limit that a fleet host gained in a change of its share came from other
/// hosts, which may have spent it until they were last seen alive: taken as consumed then,
/// refilling since. The latest such time of `changes` (0 when all is refilled).
fn gained_tat(spec: &RateLimit, quota: Quota, changes: &[(i64, Shares)], now_ns: i64) -> i64 {
    changes
        .iter()
        .map(|(seen, before)| {
            let gained = quota
                .limit
                .saturating_sub(before.quota(spec.limit, spec.window_ms).limit);
            seen.saturating_add(i64::from(gained).saturating_mul(quota.interval_ns))
        })
        .filter(|tat| *tat > now_ns)
        .max()
        .unwrap_or(0)
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
    // The state replaced, or rotated from, carries its counter and credit over when its
    // budget has the same kind of period.
    let carried = seed
        .carried()
        .and_then(|(_, prev, _)| prev)
        .filter(|b| std::mem::discriminant(&b.budget.period) == std::mem::discriminant(&budget.period));
    let credit = match (carried, seed) {
        (Some(prev), _) => Arc::clone(&prev.credit),
        (
            None,
            Seed::Persisted {
                credit: Some((period, amount)),
                ..
            },
        ) => Arc::new(AtomicU64::new(pack_credit(*period, *amount))),
        (None, _) => Arc::default(),
    };
    let counter = match seed {
        Seed::Previous(..) | Seed::Inherit(..) | Seed::Carried { .. } => carried.map(|b| Arc::clone(&b.counter)),
        Seed::Persisted {
            counters, mark, now_ns, ..
        } => {
            let (current, _) = budget.period.at(now_ns.div_euclid(1_000_000));
            let (period, amount) = unpack(unless_later(counters.map_or(0, |c| c.spend), current));
            // Never restore above the cap (a crash restores spend to the mark, which may run
            // past it), unless the period had credit: spend may then have gone up to a cap
            // an earlier credit raised, before a later one lowered it.
            let (credit_period, credit_amount) = unpack_credit(credit.load(Ordering::Acquire));
            let cap = if credit_period == period && credit_amount != 0 {
                crate::limits::MAX_BUDGET
            } else {
                budget.cap
            };
            let word = pack(period, amount.min(cap));
            Some(Arc::new(BudgetCounter::new(word, unless_later(*mark, current))))
        }
    };
    ActiveBudget {
        budget,
        counter: counter.unwrap_or_default(),
        // Nothing computed: the first request computes the period.
        period: Arc::new(AtomicU64::new(0)),
        threshold_noted: carried.map_or_else(Arc::default, |b| Arc::clone(&b.threshold_noted)),
        credit,
    }
}

/// The concurrent map from tag to live key, with a small front of it per thread.
///
/// A lookup in the map takes the shard's read lock and clones the state's `Arc`: four
/// atomic read-modify-writes, on cache lines every thread verifying those keys writes.
/// Each thread keeps the states it looked up last ([`FRONT_SLOTS`], by tag) and uses one
/// without touching the map while the map's `generation` is unchanged. Every change of
/// states (`upsert`, `reresolve`, `clear`) bumps the generation after the map holds the
/// new state and before the change is acknowledged, so a verify that starts after a
/// revoke returned never uses the state from before it.
#[derive(Debug)]
pub(crate) struct Cache {
    map: DashMap<Tag, Arc<LiveState>, BuildHasherDefault<TagHasher>>,
    /// Bumped after every change of states, and also before a change of many
    /// ([`Cache::clear`], [`Cache::reresolve`]): a thread's front entry from before a bump
    /// is not used, and a fill that read sled before a bump does not insert.
    generation: AtomicU64,
    /// Tells caches apart in a thread's front (a process may open several stores).
    id: u64,
    /// Owners' live states, by id: filled on the first verify of one of their keys, and
    /// replaced (counters carried over) when an owner changes.
    owners: DashMap<String, Arc<OwnerLive>>,
    /// Keys whose counters changed since the last flush, queued by [`Cache::touch`] as
    /// their `dirty` flag is set: a flush visits these, not the whole map.
    dirty: Mutex<Vec<Tag>>,
}

/// States each thread keeps in front of the map, chosen by a tag's first byte.
const FRONT_SLOTS: usize = 8;

/// A state a thread looked up, and the map's generation when it did.
struct FrontEntry {
    cache: u64,
    generation: u64,
    tag: Tag,
    state: Arc<LiveState>,
}

thread_local! {
    static FRONT: RefCell<[Option<FrontEntry>; FRONT_SLOTS]> = const { RefCell::new([const { None }; FRONT_SLOTS]) };
}

/// Tells caches apart.
static NEXT_CACHE: AtomicU64 = AtomicU64::new(1);

impl Default for Cache {
    fn default() -> Self {
        Cache {
            map: DashMap::default(),
            generation: AtomicU64::new(0),
            id: NEXT_CACHE.fetch_add(1, Ordering::Relaxed),
            owners: DashMap::default(),
            dirty: Mutex::new(Vec::new()),
        }
    }
}

impl Cache {
    /// Calls `f` with the live state for `tag`, if cached: from this thread's front of the
    /// map while it is current, else from the map (and keeps it in front).
    #[inline]
    pub fn with<R>(&self, tag: &Tag, f: impl FnOnce(&LiveState) -> R) -> Option<R> {
        // Read before the map: a state found after a bump is kept under the older number,
        // and looked up again next time.
        let generation = self.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        // `Some(found)` when the front could be used: `found` is `None` for a tag the map
        // does not hold either.
        let from_front = FRONT.try_with(|front| {
            // Already borrowed only if `f` looked up a state itself; the map serves that.
            let mut front = front.try_borrow_mut().ok()?;
            let entry = front.get_mut(usize::from(tag.0[0]) % FRONT_SLOTS)?;
            let current = entry
                .as_ref()
                .is_some_and(|e| e.cache == self.id && e.generation == generation && e.tag == *tag);
            if !current {
                let Some(state) = self.get(tag) else {
                    return Some(None);
                };
                *entry = Some(FrontEntry {
                    cache: self.id,
                    generation,
                    tag: *tag,
                    state,
                });
            }
            let f = f.take()?;
            Some(entry.as_ref().map(|e| f(&e.state)))
        });
        match from_front {
            Ok(Some(found)) => found,
            // The thread's front is gone (the thread is exiting) or in use.
            _ => {
                let f = f.take()?;
                self.get(tag).map(|state| f(&state))
            }
        }
    }

    /// The live state for `tag`, if cached.
    #[inline]
    pub fn get(&self, tag: &Tag) -> Option<Arc<LiveState>> {
        self.map.get(tag).map(|e| Arc::clone(e.value()))
    }

    /// How many keys' live states are held (a monitoring figure: it locks each shard in turn).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The generation to pass to [`Cache::fill`]; read it before reading sled.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Inserts a state built from sled during `generation`, unless the tag is present;
    /// returns what is in the map. If the map changed since, the entry is returned
    /// uncached (and the next verify reads sled again): a change upserted and then cleared
    /// away, or a plan changed, must not be shadowed by an older read.
    pub fn fill(&self, tag: Tag, mut state: LiveState, generation: u64) -> Arc<LiveState> {
        state.tag = tag;
        match self.map.entry(tag) {
            dashmap::Entry::Occupied(e) => Arc::clone(e.get()),
            // Checked under the shard lock, so a concurrent clear either sees this entry or
            // has already bumped the generation.
            dashmap::Entry::Vacant(e) if self.generation.load(Ordering::SeqCst) == generation => {
                Arc::clone(e.insert(Arc::new(state)).value())
            }
            dashmap::Entry::Vacant(_) => Arc::new(state),
        }
    }

    /// Replaces the record for `tag` (keeping its counters; `successor`: the tag of the
    /// key it was rotated to, if any), or inserts a state for it; called after the change
    /// is in sled.
    pub fn upsert(
        &self,
        tag: Tag,
        record: KeyRecord,
        successor: Option<Tag>,
        dir: &Directory,
        now_ns: i64,
        load: impl FnOnce() -> Option<LiveState>,
    ) {
        let record = Arc::new(record);
        match self.map.entry(tag) {
            dashmap::Entry::Occupied(mut e) => {
                let mut next = LiveState::build(record, dir, &Seed::Previous(e.get(), now_ns));
                next.successor = successor;
                next.tag = tag;
                e.insert(Arc::new(next));
            }
            dashmap::Entry::Vacant(e) => {
                // A state that could not be loaded is left out: the next verify reads sled.
                if let Some(mut state) = load() {
                    state.tag = tag;
                    e.insert(Arc::new(state));
                }
            }
        }
        // The map holds the new state: fronts holding an older one are out of date. Also
        // when the entry was missing: a `clear` running at the same time may have taken
        // it out of the map, but not yet bumped the generation, after a thread put the
        // old state in its front.
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Re-resolves every cached key against a directory whose plans, roles or owners the
    /// store has just changed and published (owners' live states first: see
    /// [`Cache::set_owner`]). Bumping the generation first keeps a fill that resolved
    /// against the old directory from inserting afterwards.
    pub fn reresolve(&self, dir: &Directory, now_ns: i64) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for mut entry in self.map.iter_mut() {
            let prev = entry.value();
            let mut next = LiveState::build(Arc::clone(&prev.record), dir, &Seed::Previous(prev, now_ns));
            next.tag = prev.tag;
            next.owner = prev.owner.as_ref().map(|o| {
                self.owners
                    .get(&o.owner.id)
                    .map_or_else(|| Arc::clone(o), |e| Arc::clone(e.value()))
            });
            *entry.value_mut() = Arc::new(next);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The live state of owner `id`, built by `load` (from the directory and sled) on the
    /// first call; a racing fill keeps the first.
    pub fn owner(&self, id: &str, load: impl FnOnce() -> Option<OwnerLive>) -> Option<Arc<OwnerLive>> {
        if let Some(found) = self.owners.get(id) {
            return Some(Arc::clone(found.value()));
        }
        let built = load()?;
        Some(Arc::clone(
            self.owners
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(built))
                .value(),
        ))
    }

    /// The live state of owner `id`, if held.
    pub fn owner_if_held(&self, id: &str) -> Option<Arc<OwnerLive>> {
        self.owners.get(id).map(|e| Arc::clone(e.value()))
    }

    /// Puts owner `owner`'s new settings in force (after they are in sled): its live state
    /// is rebuilt with the counters it had, or built by `load` when none was held. The
    /// caller then re-resolves the keys ([`Cache::reresolve`]), which picks it up.
    pub fn set_owner(&self, owner: Arc<Owner>, dir: &Directory, now_ns: i64, load: impl FnOnce() -> OwnerLive) {
        match self.owners.entry(owner.id.clone()) {
            dashmap::Entry::Occupied(mut e) => {
                let prev = e.get();
                let seed = Seed::Carried {
                    limits: &prev.limits,
                    budget: prev.budget.as_ref(),
                    usage: Some(&prev.usage),
                    now_ns,
                };
                let next = OwnerLive::build(owner, dir, &seed);
                e.insert(Arc::new(next));
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(Arc::new(load()));
            }
        }
    }

    /// Re-resolves every owner's live state against a directory whose shares changed.
    pub fn reresolve_owners(&self, dir: &Directory, now_ns: i64) {
        for mut entry in self.owners.iter_mut() {
            let prev = entry.value();
            let seed = Seed::Carried {
                limits: &prev.limits,
                budget: prev.budget.as_ref(),
                usage: Some(&prev.usage),
                now_ns,
            };
            let next = OwnerLive::build(Arc::clone(&prev.owner), dir, &seed);
            *entry.value_mut() = Arc::new(next);
        }
    }

    /// Owners' counters changed since the last flush, marking them flushed.
    pub fn take_dirty_owners(&self) -> Vec<(String, Counters)> {
        let mut out = Vec::new();
        for entry in &self.owners {
            let live = entry.value();
            if live.usage.dirty.swap(false, Ordering::AcqRel) {
                out.push((live.owner.id.clone(), live.counters()));
            }
        }
        out
    }

    /// Puts a state for a key just created (a rotation's new key, sharing its
    /// predecessor's counters) in the map, replacing any; called after the key is in sled.
    pub fn insert(&self, tag: Tag, mut state: LiveState) {
        state.tag = tag;
        self.map.insert(tag, Arc::new(state));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Empties the map (owners' live states stay: keys read again find them).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks a key's counters for the next flush: sets its `dirty` flag and, when the flag
    /// was clear, queues its tag (once per key per flush; a load only when already set).
    #[inline]
    pub fn touch(&self, state: &LiveState) {
        let dirty = &state.usage.dirty;
        if !dirty.load(Ordering::Relaxed) && !dirty.swap(true, Ordering::AcqRel) {
            lock(&self.dirty).push(state.tag);
        }
    }

    /// Counts a decision of `code` on a key (and for `VALID`, the `spent` credits) in its
    /// usage counters, and queues the key for the next flush. Relaxed adds on the key's
    /// own counters, beside the last use verify writes anyway.
    #[inline]
    pub fn count(&self, state: &LiveState, code: Code, spent: u64) {
        let usage = &state.usage;
        if code == Code::Valid {
            usage.valid.fetch_add(1, Ordering::Relaxed);
            if spent > 0 {
                usage.spent.fetch_add(spent, Ordering::Relaxed);
            }
        } else if let Some(slot) = usage.denied.get(denial_slot(code)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        self.touch(state);
    }

    /// Counters changed since the last flush, marking them flushed, and the usage counted
    /// since: the keys queued by [`Cache::touch`], so a flush costs what changed, not the
    /// size of the map. A key queued and then cleared from the map was flushed by the
    /// clear ([`Cache::clear`]'s callers flush first); a state never put in the map has
    /// nothing to flush.
    pub fn take_dirty(&self) -> (Vec<(KeyId, Counters)>, Vec<KeyUsage>) {
        let queued = std::mem::take(&mut *lock(&self.dirty));
        let mut out = Vec::with_capacity(queued.len());
        let mut used = Vec::with_capacity(queued.len());
        for tag in queued {
            if let Some(entry) = self.map.get(&tag) {
                let live = entry.value();
                if live.usage.dirty.swap(false, Ordering::AcqRel) {
                    out.push((live.record.id.clone(), live.counters()));
                    if let Some(counts) = live.usage.take_counts() {
                        used.push(KeyUsage {
                            id: live.record.id.clone(),
                            project: live.record.project.clone(),
                            owner: live.owner.as_ref().map(|o| o.owner.id.clone()),
                            counts,
                        });
                    }
                }
            }
        }
        (out, used)
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
