//! The usage book: folds what verify counted into the `usage` tree's buckets, answers
//! queries from it, and prunes what the tiers no longer keep (see [`crate::usage`]).
//!
//! Only the flusher (and a flush the caller asks for) writes the tree, under one lock, so
//! a bucket's read-modify-write is never raced. A flush writes, per key used since the
//! last one, one entry per tier (four), and the same again per owner, project and the
//! store as a whole: work in what changed, not in the number of keys.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Code;
use crate::error::Result;
use crate::usage::codec::{self, Buckets};
use crate::usage::{Granularity, UsageCounts, UsageQuery, UsageReport, UsageRetention, UsageSubject};

use super::cache::KeyUsage;
use super::lock;

/// How many entries one flush looks at for pruning, from where the last one stopped: a
/// bounded step, so pruning costs each flush the same, and a whole pass over 10 million
/// entries takes under three hours at one flush a second.
const PRUNE_STEP: usize = 1_000;

/// The `usage` tree and what goes into it.
pub(crate) struct UsageBook {
    tree: sled::Tree,
    retention: UsageRetention,
    /// Whether verify counts at all ([`super::Config::usage_counting`]).
    pub counting: bool,
    /// Presented keys that matched none since the last flush: counted for the store as a
    /// whole (`all`).
    malformed: AtomicU64,
    not_found: AtomicU64,
    /// Held across a fold or a prune; holds where pruning goes on from, and a fleet
    /// host's counts not yet in the fleet.
    folding: Mutex<Folding>,
    /// A fleet host's fleet: counts are added to its rollups at each fold, and queries
    /// answer its sum.
    #[cfg(feature = "fleet")]
    fleet: Option<crate::fleet::Fleet>,
}

/// What folds carry from one to the next.
#[derive(Default)]
struct Folding {
    /// Where pruning goes on from.
    cursor: Vec<u8>,
    /// A fleet host: rows the fleet has not taken yet (it was unreachable), by subject,
    /// tier and bucket; sent with the next fold's.
    pending: BTreeMap<(UsageSubject, Granularity, i64), UsageCounts>,
    /// When the fleet's rollups were last pruned (clock ms; 0: not yet by this process).
    fleet_pruned_at: i64,
}

/// The most rows a fleet host keeps for a fleet it cannot reach (a day of a busy host's
/// minutes); past it the oldest are dropped (and lost to the fleet's sum, not to this
/// host's own tree).
#[cfg(feature = "fleet")]
const MAX_PENDING: usize = 500_000;

/// How often a fleet host prunes the fleet's rollups past their retention.
#[cfg(feature = "fleet")]
const FLEET_PRUNE_EVERY_MS: i64 = 3_600_000;

impl UsageBook {
    /// The book over `tree`.
    ///
    /// # Errors
    /// A fleet URL that does not parse ([`crate::fleet::FleetError::BadUrl`]).
    pub fn new(tree: sled::Tree, config: &super::Config) -> Result<UsageBook> {
        Ok(UsageBook {
            tree,
            retention: config.usage_retention,
            counting: config.usage_counting,
            malformed: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            folding: Mutex::new(Folding::default()),
            #[cfg(feature = "fleet")]
            fleet: config.fleet.as_deref().map(crate::fleet::Fleet::connect).transpose()?,
        })
    }

    /// Counts a presented key that matched none (`MALFORMED` or `NOT_FOUND`).
    #[inline]
    pub fn count_keyless(&self, code: Code) {
        let counter = if code == Code::Malformed {
            &self.malformed
        } else {
            &self.not_found
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Folds `used` (and the keyless counts) into the buckets holding `now`, keys rolled
    /// up into their owners, projects and the store; then prunes a step. Returns the
    /// per-subject deltas folded (for a fleet host to send on).
    ///
    /// # Errors
    /// sled's; the counts taken are then lost (at most one flush interval's).
    pub fn fold(&self, used: Vec<KeyUsage>, now: i64) -> Result<BTreeMap<UsageSubject, UsageCounts>> {
        let mut deltas: BTreeMap<UsageSubject, UsageCounts> = BTreeMap::new();
        let mut all = UsageCounts::default();
        for code in [Code::Malformed, Code::NotFound] {
            let counter = if code == Code::Malformed {
                &self.malformed
            } else {
                &self.not_found
            };
            all.count(code, counter.swap(0, Ordering::Relaxed), 0);
        }
        for u in used {
            all.add(&u.counts);
            add_to(&mut deltas, UsageSubject::Project(u.project), &u.counts);
            if let Some(owner) = u.owner {
                add_to(&mut deltas, UsageSubject::Owner(owner), &u.counts);
            }
            add_to(&mut deltas, UsageSubject::Key(u.id), &u.counts);
        }
        if !all.is_empty() {
            deltas.insert(UsageSubject::All, all);
        }
        let mut folding = lock(&self.folding);
        self.add(&deltas, now)?;
        #[cfg(feature = "fleet")]
        self.send_to_fleet(&mut folding, &deltas, now);
        self.prune(&mut folding.cursor, now)?;
        Ok(deltas)
    }

    /// A fleet host: adds `deltas` (and what the fleet did not take before) to the
    /// fleet's rollups in one statement. An unreachable fleet keeps them for the next
    /// fold; it never fails the fold (this host's own tree has them).
    #[cfg(feature = "fleet")]
    fn send_to_fleet(&self, folding: &mut Folding, deltas: &BTreeMap<UsageSubject, UsageCounts>, now: i64) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        for (subject, counts) in deltas {
            for tier in Granularity::ALL {
                folding
                    .pending
                    .entry((subject.clone(), tier, tier.start_of(now)))
                    .or_default()
                    .add(counts);
            }
        }
        while folding.pending.len() > MAX_PENDING {
            // The oldest bucket first: by bucket start, whatever the subject.
            let oldest = folding.pending.keys().min_by_key(|(_, _, bucket)| *bucket).cloned();
            match oldest {
                Some(key) => folding.pending.remove(&key),
                None => break,
            };
        }
        if !folding.pending.is_empty() {
            let rows: Vec<crate::fleet::UsageRow> = folding
                .pending
                .iter()
                .map(|((subject, tier, bucket), counts)| crate::fleet::UsageRow {
                    subject: subject.clone(),
                    tier: *tier,
                    bucket: *bucket,
                    counts: counts.clone(),
                })
                .collect();
            if fleet.add_usage(&rows).is_ok() {
                folding.pending.clear();
            }
        }
        if now.saturating_sub(folding.fleet_pruned_at) >= FLEET_PRUNE_EVERY_MS {
            let cutoffs: Vec<(Granularity, i64)> = Granularity::ALL
                .into_iter()
                .map(|tier| (tier, self.oldest_kept(tier, now)))
                .collect();
            if fleet.prune_usage(&cutoffs).is_ok() {
                folding.fleet_pruned_at = now;
            }
        }
    }

    /// The start of the oldest bucket of `tier` kept at `now`.
    fn oldest_kept(&self, tier: Granularity, now: i64) -> i64 {
        let kept = i64::try_from(self.retention.of(tier).as_millis()).unwrap_or(i64::MAX);
        tier.start_of(now.saturating_sub(kept).saturating_sub(60_000))
    }

    /// Adds `deltas` into the buckets of every tier holding `at`.
    pub fn add(&self, deltas: &BTreeMap<UsageSubject, UsageCounts>, at: i64) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (subject, counts) in deltas {
            for tier in Granularity::ALL {
                let (period, slot) = codec::period_and_slot(tier, at);
                let key = codec::entry_key(tier, subject, period);
                // A value that does not decode (damaged on disk) is started afresh.
                let mut buckets: Buckets = match self.tree.get(&key)? {
                    Some(v) => codec::decode(tier, &v).unwrap_or_default(),
                    None => Buckets::new(),
                };
                codec::add_into(&mut buckets, slot, counts);
                batch.insert(key, codec::encode(&buckets));
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Answers `q` at `now`.
    ///
    /// # Errors
    /// [`crate::InputError::InvalidUsageRange`], [`crate::InputError::UsagePastRetention`];
    /// sled's.
    pub fn query(&self, q: &UsageQuery, now: i64) -> Result<UsageReport> {
        let starts = q.bucket_starts(&self.retention, now)?;
        #[cfg(feature = "fleet")]
        if let Some(fleet) = &self.fleet {
            // The fleet's sum: every host's folded counts.
            let from = starts.first().copied().unwrap_or(q.since);
            let found = fleet.usage(&q.subject, q.by, from, q.until)?;
            return Ok(UsageReport::build(q, starts, found));
        }
        let found = self.read(q, &starts)?;
        Ok(UsageReport::build(q, starts, found))
    }

    /// The counted buckets of `q`'s subject and tier from the first of `starts` to `q.until`.
    pub fn read(&self, q: &UsageQuery, starts: &[i64]) -> Result<Vec<(i64, UsageCounts)>> {
        let tier = q.by;
        let Some(&first) = starts.first() else {
            return Ok(Vec::new());
        };
        let (from, _) = codec::period_and_slot(tier, first);
        let (to, _) = codec::period_and_slot(tier, q.until.saturating_sub(1));
        let lo = codec::entry_key(tier, &q.subject, from);
        let hi = codec::entry_key(tier, &q.subject, to);
        let mut found = Vec::new();
        for item in self.tree.range(lo..=hi) {
            let (key, value) = item?;
            let Some((_, period)) = codec::parse_entry_key(&key) else {
                continue;
            };
            // A damaged value reads as no counts rather than failing the whole query.
            for (slot, counts) in codec::decode(tier, &value).unwrap_or_default() {
                found.push((codec::slot_start(tier, period, slot), counts));
            }
        }
        Ok(found)
    }

    /// Removes, from the next [`PRUNE_STEP`] entries after `cursor`, those whose period
    /// ended before their tier's retention; moves `cursor` on (to the start after the last).
    fn prune(&self, cursor: &mut Vec<u8>, now: i64) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut seen = 0;
        let mut last = None;
        for item in self.tree.range(cursor.clone()..).take(PRUNE_STEP) {
            let (key, _) = item?;
            seen += 1;
            if let Some((tier, period)) = codec::parse_entry_key(&key) {
                let kept = i64::try_from(self.retention.of(tier).as_millis()).unwrap_or(i64::MAX);
                if codec::period_end(tier, period) < now.saturating_sub(kept) {
                    batch.remove(&key);
                }
            }
            last = Some(key);
        }
        self.tree.apply_batch(batch)?;
        match last {
            Some(key) if seen == PRUNE_STEP => {
                *cursor = key.to_vec();
                cursor.push(0);
            }
            _ => cursor.clear(),
        }
        Ok(())
    }
}

fn add_to(deltas: &mut BTreeMap<UsageSubject, UsageCounts>, subject: UsageSubject, counts: &UsageCounts) {
    deltas.entry(subject).or_default().add(counts);
}

/// Rebuilds the `usage` tree of `index` (a fresh index, its changes replayed) from the
/// uses in the log in `log_dir`: every `key.uses`/`key.used` use in the bucket of its own
/// time, every `key.use_summary` in the bucket of its last use (summary mode). The log
/// does not hold what requests cost, so credits spent come from `old` (the usage tree of
/// the index being replaced), where it can be read. Keys roll up into their owners and
/// projects as the replayed index has them.
///
/// # Errors
/// The log's ([`crate::LogError`]) and sled's.
pub(crate) fn rebuild(
    index: &crate::index::Index,
    log_dir: &std::path::Path,
    store_id: [u8; 16],
    old: Option<&sled::Tree>,
) -> Result<()> {
    use crate::event::{Event, EventKind};
    use crate::log::{LogError, LogReader};
    use crate::record::KeyId;

    let mut entries: BTreeMap<Vec<u8>, (Granularity, Buckets)> = BTreeMap::new();
    let mut place = |subject: &UsageSubject, at: i64, counts: &UsageCounts| {
        for tier in Granularity::ALL {
            let (period, slot) = codec::period_and_slot(tier, at);
            let (_, buckets) = entries
                .entry(codec::entry_key(tier, subject, period))
                .or_insert_with(|| (tier, Buckets::new()));
            codec::add_into(buckets, slot, counts);
        }
    };
    // Each key's subjects: itself, its project, its owner (if any).
    let mut subjects: std::collections::HashMap<KeyId, Vec<UsageSubject>> = std::collections::HashMap::new();
    let mut subjects_of = |id: &KeyId| -> Result<Vec<UsageSubject>> {
        if let Some(found) = subjects.get(id) {
            return Ok(found.clone());
        }
        let mut list = vec![UsageSubject::Key(id.clone()), UsageSubject::All];
        if let Some(stored) = index.get(id)? {
            list.push(UsageSubject::Project(stored.record.project));
        }
        if let Some(owner) = index.owner_of(id)? {
            list.push(UsageSubject::Owner(owner));
        }
        subjects.insert(id.clone(), list.clone());
        Ok(list)
    };
    for record in LogReader::open(log_dir, store_id, 1)? {
        let record = record?;
        let event = Event::decode(&record.payload).map_err(|reason| LogError::BadPayload {
            seq: record.seq,
            reason,
        })?;
        match event.kind {
            EventKind::KeysUsed { uses } | EventKind::KeysUsedUnpacked { uses } => {
                for u in uses {
                    let mut counts = UsageCounts::default();
                    counts.count(u.code, 1, 0);
                    for subject in subjects_of(&u.id)? {
                        place(&subject, u.at, &counts);
                    }
                }
            }
            EventKind::KeyUsed { id, code, .. } => {
                let mut counts = UsageCounts::default();
                counts.count(code, 1, 0);
                match id {
                    Some(id) => {
                        for subject in subjects_of(&id)? {
                            place(&subject, event.at, &counts);
                        }
                    }
                    None => place(&UsageSubject::All, event.at, &counts),
                }
            }
            EventKind::KeyUseSummary { id, summary } => {
                let mut counts = UsageCounts::default();
                for (code, n) in &summary.counts {
                    counts.count(*code, *n, 0);
                }
                match id {
                    Some(id) => {
                        for subject in subjects_of(&id)? {
                            place(&subject, summary.last_at, &counts);
                        }
                    }
                    None => place(&UsageSubject::All, summary.last_at, &counts),
                }
            }
            _ => {}
        }
    }
    // Credits spent, from the tree being replaced.
    if let Some(old) = old {
        for item in old.iter() {
            let (key, value) = item?;
            let Some((tier, _)) = codec::parse_entry_key(&key) else {
                continue;
            };
            for (slot, counts) in codec::decode(tier, &value).unwrap_or_default() {
                if counts.spent > 0 {
                    let spent = UsageCounts {
                        spent: counts.spent,
                        ..UsageCounts::default()
                    };
                    let (_, buckets) = entries.entry(key.to_vec()).or_insert_with(|| (tier, Buckets::new()));
                    codec::add_into(buckets, slot, &spent);
                }
            }
        }
    }
    let tree = index.usage_tree()?;
    tree.clear()?;
    let mut batch = sled::Batch::default();
    for (n, (key, (_, buckets))) in entries.into_iter().enumerate() {
        batch.insert(key, codec::encode(&buckets));
        if n % 10_000 == 9_999 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}
