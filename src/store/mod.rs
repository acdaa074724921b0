//! The [`Store`]: the facade that opens a data directory and issues, verifies, lists,
//! changes and revokes keys.
//!
//! Writes go through the commit thread ([`commit`]): log append, fsync, sled batch, live
//! map, then the reply. Reads of a key's state on the hot path go through the live map
//! ([`cache`]); a miss reads sled once.

mod anomaly_ops;
mod cache;
mod commit;
mod config;
mod counters;
mod dashboard_ops;
mod files;
#[cfg(feature = "fleet")]
mod fleet_host;
#[cfg(not(feature = "fleet"))]
#[path = "no_fleet.rs"]
mod fleet_host;
#[cfg(feature = "fleet")]
mod fleet_shares;
#[cfg(feature = "fleet")]
mod leases;
mod lifecycle_ops;
mod open;
mod plan;
mod request;
mod state_machine;
mod usage_book;
mod uses;
mod vault_ops;
mod webhooks;

pub use config::{Config, DEFAULT_LOCK_WAIT};
pub use counters::LatencyHistogram;
pub use request::VerifyRequest;
pub use uses::UseLog;
pub use vault_ops::{SecretInfo, parse_master_keys};
pub use webhooks::{Attempt, Subscription};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::decision::{BudgetState, RateLimitState};
use crate::decision::{Code, Decision, RateLimited};
use crate::directory::Directory;
use crate::error::{Error, IndexError, InputError, OpenError, Result, StateError};
use crate::event::KeyChanges;
use crate::event::{Event, Tag};
use crate::index::{Index, StoredKey};
use crate::limits::budget::{BudgetCounter, Charge};
use crate::limits::{Plan, check_limits};
use crate::log::{LogError, LogReader, LogWriter, RecoveryReport};
use crate::policy::{ADMIN_ROLE, Forbidden, PermissionQuery, Role, RoleName, User};
use crate::record::KeyKind;
use crate::record::{
    DEFAULT_PROJECT, Expiry, KeyId, KeyRecord, KeyUpdate, NewKey, Status, validate_metadata, validate_name,
    validate_project, validate_reason,
};
use crate::secret::{Pepper, Secret};
use crate::token::{Env, Format, FormatSet, Malformed};

use cache::{Cache, Grants, LiveState, Seed};
use commit::{Op, Outcome, PreparedKey, Request};
use open::{open_index, rebuild_index};

/// A key just issued: the secret, shown once, and its record.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The key itself. Show it once; the store keeps only its tag.
    pub key: Secret,
    /// The key's record.
    pub record: KeyRecord,
}

/// The result of a rotation.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new key, shown once.
    pub new: CreatedKey,
    /// The old key's record after the rotation (revoked now, or at the end of the grace).
    pub old: KeyRecord,
    /// When the grace asked for (none: zero) was below the lifecycle policy's least
    /// grace: the grace given instead.
    pub grace_raised_to: Option<Duration>,
}

/// A budget's credit after `credits add` or `credits set`, in the current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// The credit: what was added to (or, negative, taken from) the budget's cap.
    pub credit: i64,
    /// The cap in force this period: the budget's, moved by the credit.
    pub cap: u64,
    /// What is left to spend this period.
    pub remaining: u64,
}

/// A key's record with its status and last use, as `show` and `list` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The record.
    pub record: KeyRecord,
    /// The status now.
    pub status: Status,
    /// Last successful verification, unix ms; `None`: never.
    pub last_used_at: Option<i64>,
    /// The key's owner's id, if it has one.
    pub owner: Option<String>,
}

/// Which keys [`Store::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only keys of this project.
    pub project: Option<String>,
    /// Only keys with this prefix.
    pub prefix: Option<String>,
    /// Only keys with this status now.
    pub status: Option<Status>,
    /// Only keys of this owner.
    pub owner: Option<String>,
}

/// Which events [`Store::events`] returns.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events concerning this key.
    pub key: Option<KeyId>,
    /// Only events of this kind (`key.created`, ...).
    pub kind: Option<String>,
    /// Only events at or after this unix ms.
    pub since: Option<i64>,
    /// Only events before this unix ms.
    pub until: Option<i64>,
    /// Newest first (default: oldest first).
    pub newest_first: bool,
}

/// What a full check of the log found (see [`Store::verify_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogCheck {
    /// Records checked.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The ids of the keys whose state in the index the log does not produce (changed,
    /// added, missing or failing their MAC): the index cross-checked against a replay of
    /// the log. Empty for a sound store.
    pub index_differs: Vec<String>,
}

/// What [`Store::stats`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Keys whose live state (record, counters) is held in memory.
    pub cached_keys: usize,
    /// A fleet host that has not reached its fleet for longer than its staleness bound and
    /// fails closed: every verify answers [`Error::Stale`] until it catches up.
    pub fleet_stale: bool,
    /// Verifies whose key was not in the live map (cold or unknown keys), since the store
    /// opened: with the number of verifies, the live map's hit rate.
    pub cache_misses: u64,
    /// Uses that could not be recorded (the hand-off queue was full), since the store
    /// opened; each batch of them is also logged (`use.dropped`).
    pub uses_dropped: u64,
    /// How long commits (log append, fsync, index update; on a fleet host also the append to
    /// PostgreSQL) took, since the store opened.
    pub commit_latency: LatencyHistogram,
    /// A fleet host: how long since it was last in step with the fleet (its poll or its
    /// last commit). `None` for a local store.
    pub fleet_lag: Option<std::time::Duration>,
}

/// State shared by the caller threads, the commit thread and the flusher.
pub(crate) struct Shared {
    index: Index,
    cache: Cache,
    /// Every registered format (admin keys' included).
    formats: ArcSwap<FormatSet>,
    /// The formats customer verification accepts: `formats` without the admin format,
    /// restricted to [`Config::verify_prefixes`]. In an `Arc` so that each thread's cache of
    /// it (see [`Shared::tag_of_presented`]) can hold it.
    customer_formats: Arc<ArcSwap<FormatSet>>,
    /// [`Config::verify_prefixes`].
    verify_prefixes: Option<Vec<String>>,
    directory: ArcSwap<Directory>,
    pepper: Pepper,
    clock: Arc<dyn Clock>,
    /// The vault's master keys, if any were given.
    vault_ring: std::sync::RwLock<Option<crate::vault::MasterKeyring>>,
    /// Where verify hands off use events.
    uses: uses::UseSink,
    /// A fleet host that has not reached the fleet for longer than its staleness bound
    /// (and fails closed): every verify refuses. Set by the commit thread.
    fleet_stale: std::sync::atomic::AtomicBool,
    /// What [`Store::stats`] reports beyond the live map's size.
    counters: counters::Counters,
    /// A fleet host: its budgets are spent from leases of the fleet, not raised marks.
    fleet_host: bool,
    /// The last durable record, for the change feed ([`Store::wait_for_record`]): moved by
    /// the commit thread after every commit, waited on by readers of the feed.
    published: (Mutex<u64>, std::sync::Condvar),
    /// Imported keys not yet re-tagged: while none are, a miss costs nothing more.
    imports_pending: std::sync::atomic::AtomicU64,
    /// The prefixes imported keys were declared with: a key of no registered format is
    /// looked up by its SHA-256 only when it starts with one of them.
    import_prefixes: ArcSwap<Vec<String>>,
    /// Whether `import_prefixes` holds any: one relaxed load keeps the malformed-key path
    /// of a store that never imported as cheap as it was.
    any_imports: std::sync::atomic::AtomicBool,
    /// The lifecycle sweep's notice periods.
    notices: lifecycle_ops::NoticePeriods,
    /// The anomaly detector: fed by the commit thread's drain of the uses, asked by the
    /// flusher.
    anomalies: crate::anomaly::Detector,
    /// [`crate::anomaly::Detector::dormant_ms`], read by every valid verify.
    dormant_ms: i64,
    /// Usage over time: what verify counted, folded into buckets by the flusher.
    usage: usage_book::UsageBook,
}

impl Shared {
    /// The tag of a token: keyed BLAKE3 with the pepper.
    #[inline]
    fn tag_of(&self, key: &[u8]) -> Tag {
        Tag(*blake3::keyed_hash(self.pepper.bytes(), key).as_bytes())
    }

    /// Records that the log is durable up to `seq` and wakes the feed's readers.
    fn publish_seq(&self, seq: u64) {
        let (last, changed) = &self.published;
        let mut last = lock(last);
        if seq > *last {
            *last = seq;
            changed.notify_all();
        }
    }

    /// Publishes the registered formats, and the customer formats drawn from them.
    fn publish_formats(&self, formats: FormatSet) {
        let customer = formats.for_customers(self.verify_prefixes.as_deref());
        self.formats.store(Arc::new(formats));
        self.customer_formats.store(Arc::new(customer));
    }

    /// Steps 1 and 2's first half for the management API: parses a presented key under
    /// every registered format (admin keys issued before [`Format::admin`] existed are in
    /// customer formats) and returns its tag.
    fn tag_of_admin(&self, key: &str) -> std::result::Result<Tag, Malformed> {
        let formats = self.formats.load();
        formats.parse(key).map(|token| self.tag_of(token.as_bytes()))
    }

    /// Steps 1 and 2's first half: parses a presented key under the formats customer
    /// verification accepts and returns its tag. The formats are read through a per-thread
    /// [`arc_swap::Cache`]: one atomic load checks that it is current, where an `ArcSwap`
    /// guard would cost two read-modify-writes on every verify.
    #[inline]
    fn tag_of_presented(&self, key: &str) -> std::result::Result<Tag, Malformed> {
        type FormatsCache = arc_swap::Cache<Arc<ArcSwap<FormatSet>>, Arc<FormatSet>>;
        thread_local! {
            static FORMATS: std::cell::RefCell<Option<FormatsCache>> = const { std::cell::RefCell::new(None) };
        }
        let parse = |formats: &FormatSet| formats.parse(key).map(|token| self.tag_of(token.as_bytes()));
        FORMATS
            .try_with(|slot| {
                // Not reentrant: nothing below calls back into this function.
                let mut slot = slot.borrow_mut();
                if slot
                    .as_ref()
                    .is_some_and(|c| !std::ptr::eq(c.arc_swap(), &*self.customer_formats))
                {
                    *slot = None;
                }
                let cache = slot.get_or_insert_with(|| arc_swap::Cache::new(Arc::clone(&self.customer_formats)));
                parse(cache.load())
            })
            // The thread is exiting and its cache is gone: read the formats directly.
            .unwrap_or_else(|_| parse(&self.customer_formats.load()))
    }

    /// Whether a presented key that parsed against no registered format may still be an
    /// imported key (which keeps its own shape, re-tagged or not): it starts with a prefix
    /// imported keys were declared with (one customer verification accepts), is at most
    /// [`MAX_IMPORTED_KEY_LEN`] bytes and printable ASCII without spaces. Its tag if so.
    fn imported_candidate(&self, key: &str) -> Option<Tag> {
        if !self.any_imports.load(Ordering::Relaxed) {
            return None;
        }
        let prefixes = self.import_prefixes.load();
        if prefixes.is_empty() || key.len() > MAX_IMPORTED_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let accepted = |p: &String| self.verify_prefixes.as_ref().is_none_or(|allowed| allowed.contains(p));
        prefixes
            .iter()
            .any(|p| key.len() > p.len() && key.starts_with(p.as_str()) && accepted(p))
            .then(|| self.tag_of(key.as_bytes()))
    }

    /// The imported key not yet re-tagged that `key` is (its SHA-256 matches, and it starts
    /// with the key's declared prefix), if imported keys are pending.
    fn find_imported(&self, key: &str) -> Result<Option<(StoredKey, crate::event::Sha256Hash)>> {
        if self.imports_pending.load(Ordering::Relaxed) == 0 {
            return Ok(None);
        }
        let sha256 = crate::event::Sha256Hash::of(key.as_bytes());
        let found = self
            .index
            .get_by_sha256(&sha256.0)?
            .filter(|k| k.tag.is_pending() && key.starts_with(k.record.prefix()));
        Ok(found.map(|k| (k, sha256)))
    }

    /// A presented key that matched none: counted for its client network (`guessing`).
    #[cold]
    #[inline(never)]
    fn note_keyless(&self, req: &VerifyRequest<'_>, code: Code) {
        self.anomalies.note_keyless(req.key, code, req.ip, self.clock.now_ms());
    }

    fn flush_counters(&self) -> Result<()> {
        let (counters, used) = self.cache.take_dirty();
        self.index.write_counters(&counters)?;
        self.index.write_owner_counters(&self.cache.take_dirty_owners())?;
        self.usage.fold(used, self.clock.now_ms())?;
        Ok(())
    }

    /// An owner's live state built from what sled holds (its counters, mark and credit).
    fn build_owner(&self, owner: Arc<crate::owner::Owner>, dir: &Directory) -> cache::OwnerLive {
        // As for a key's state: a read error leaves the counters at zero (and the mark at
        // zero, so the first charge raises it through the log before spending).
        let counters = self.index.owner_counters(&owner.id).ok().flatten();
        let mark = self.index.owner_mark(&owner.id).unwrap_or(0);
        let credit = self.index.owner_credit(&owner.id).ok().flatten();
        let seed = Seed::Persisted {
            counters: counters.as_ref(),
            mark,
            credit,
            now_ns: self.clock.now_ns(),
        };
        let live = cache::OwnerLive::build(owner, dir, &seed);
        // On a fleet host only a lease from the fleet may be spent (as for a key's).
        if self.fleet_host
            && let Some(budget) = &live.budget
        {
            budget.counter.forfeit();
        }
        live
    }

    /// Owner `id`'s live state, from the live map's owners or built from sled.
    fn owner_live(&self, id: &str) -> Option<Arc<cache::OwnerLive>> {
        self.cache.owner(id, || {
            let dir = self.directory.load();
            let owner = dir.owners.get(id)?;
            Some(self.build_owner(Arc::clone(owner), &dir))
        })
    }

    /// What owner `id` has spent of its budget in `period`, as a decision would show it.
    fn owner_spent(&self, id: &str, period: u32) -> u64 {
        if let Some(budget) = self.owner_live(id).and_then(|o| o.budget.clone()) {
            return self.shown_spent(&budget.counter, period, budget.counter.spent(period));
        }
        0
    }

    /// The spend a decision shows, `local` being what `counter` has spent in `period`: on
    /// a fleet host the fleet's as of its last lease (when it has one), not its own.
    #[inline]
    fn shown_spent(&self, counter: &BudgetCounter, period: u32, local: u64) -> u64 {
        if self.fleet_host {
            counter.fleet_spent(period, local).unwrap_or(local)
        } else {
            local
        }
    }

    /// What key `stored` has spent of its budget in `period`, as a decision would show it:
    /// its live counter's, or the last flushed when the key is not in the live map.
    fn spent(&self, stored: &StoredKey, period: u32) -> u64 {
        if let Some(budget) = self.cache.get(&stored.tag).and_then(|s| s.budget.clone()) {
            return self.shown_spent(&budget.counter, period, budget.counter.spent(period));
        }
        let flushed = self
            .index
            .counters(&stored.record.id)
            .ok()
            .flatten()
            .map_or(0, |c| c.spend);
        match crate::limits::budget::unpack(flushed) {
            (p, spent) if p == period => spent,
            _ => 0,
        }
    }

    /// A key's live state, built from what sled holds, with its owner's.
    ///
    /// # Errors
    /// When the key's owner cannot be read: verify fails closed rather than pass a key
    /// without its owner's limits.
    fn load_state(&self, record: KeyRecord) -> Result<LiveState> {
        // A read error here leaves counters at zero; the key's record itself came from
        // sled a moment ago, so sled is readable and this is not expected.
        let counters = self.index.counters(&record.id).ok().flatten();
        let mark = self.index.mark(&record.id).unwrap_or(0);
        // Like the counters: a read error leaves the budget without its credit.
        let credit = self.index.credit(&record.id).ok().flatten();
        let seed = Seed::Persisted {
            counters: counters.as_ref(),
            mark,
            credit,
            now_ns: self.clock.now_ns(),
        };
        let record = Arc::new(record);
        let mut state = LiveState::build(Arc::clone(&record), &self.directory.load(), &seed);
        // On a fleet host only a lease from the fleet may be spent: whatever a counter
        // restored from disk held under its mark is not this host's any more.
        if self.fleet_host
            && let Some(budget) = &state.budget
        {
            budget.counter.forfeit();
        }
        // Like the record, read from sled a moment ago; a read error leaves the key charged
        // on its own counters.
        state.successor = record
            .rotated_to
            .as_ref()
            .and_then(|next| self.index.get(next).ok().flatten())
            .map(|k| k.tag);
        if let Some(owner) = self.index.owner_of(&record.id)? {
            let live = self
                .owner_live(&owner)
                .ok_or_else(|| IndexError::MissingKey(format!("owner {owner} of key {}", record.id)))?;
            state.owner = Some(live);
        }
        Ok(state)
    }
}

/// Keys per commit of [`Store::import`]: one fsync, one sled batch and a few log records
/// for this many keys.
pub const IMPORT_BATCH: usize = 4096;

/// The longest presented key looked up as an imported one (keys of other systems keep
/// their own shape, within this bound).
pub const MAX_IMPORTED_KEY_LEN: usize = 256;

/// An open store. Thread-safe: share it with `Arc<Store>`.
///
/// Dropping it flushes counters and closes it; [`Store::close`] does the same and reports
/// errors.
pub struct Store {
    shared: Arc<Shared>,
    path: PathBuf,
    store_id: [u8; 16],
    commits: Mutex<Option<Sender<Request>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop_flusher: Mutex<Option<Sender<()>>>,
    recovery: RecoveryReport,
    require_admin: bool,
    /// The vault's master keys came from the development store's `master.key`.
    dev_master_file: bool,
    /// Held by [`Store::import`] from its check of the index to its last commit.
    import_lock: Mutex<()>,
    _lock: std::fs::File,
}

impl Store {
    /// Creates a new store in `path` (missing or an empty directory) and opens it.
    ///
    /// Without a pepper in `config` this is a development store: a random pepper is made
    /// and kept in `path/pepper.key` (0600).
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`] when `path` holds anything; I/O errors.
    pub fn init(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let path = path.as_ref();
        config.check_verify_prefixes()?;
        if !files::is_missing_or_empty(path)? {
            return Err(OpenError::AlreadyExists(path.to_path_buf()).into());
        }
        // The hosts of a fleet share one pepper: a development store's own will not do.
        if config.fleet.is_some() && config.pepper.is_none() {
            return Err(OpenError::MissingPepper.into());
        }
        files::create_dir(path)?;
        let lock = files::lock(path, config.lock_wait)?;
        let pepper = match &config.pepper {
            Some(p) => p.clone(),
            None => {
                let p = Pepper::random();
                files::write_pepper_file(path, &p)?;
                p
            }
        };
        if config.pepper.is_none() && config.master_keys.is_none() {
            // A development store keeps its vault master key beside the data too.
            let ring = crate::vault::MasterKeyring::new(crate::vault::MasterKey::random(1)?);
            files::write_master_file(path, &ring)?;
        }
        let store_id = new_store_id(&config)?;
        let log_dir = path.join("log");
        files::create_dir(&log_dir)?;
        LogWriter::create(&log_dir, store_id, config.segment_size)?.with_head_key(crate::log::head_key(&pepper));
        Index::open(&path.join("index"), &pepper, store_id)?.flush()?;
        // Last: a directory with a STORE marker is a complete store.
        files::Marker::new(store_id, &pepper).write(path)?;
        drop(lock);
        Store::open(path, config)
    }

    /// Opens the store in `path`, recovering the log and catching the index up with it.
    ///
    /// # Errors
    /// [`OpenError::NotAStore`], [`OpenError::Locked`], [`OpenError::WrongPepper`],
    /// [`OpenError::MissingPepper`], [`LogError::Corrupt`] for a damaged log, I/O errors.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let path = path.as_ref();
        config.check_verify_prefixes()?;
        let marker = files::Marker::read(path)?;
        let lock = files::lock(path, config.lock_wait)?;
        let pepper = resolve_pepper(path, &config)?;
        marker.check_pepper(&pepper)?;
        // The index is a cache of the log: one that cannot be opened or read (a crash in the
        // middle of a sled snapshot, a full disk) is set aside and rebuilt, never fatal.
        let opened = match open_index(path, &marker, &config, &pepper) {
            Err(Error::Index(why)) => {
                let mut why = why.to_string();
                let rebuilt = rebuild_index(path, &marker, &config, &pepper, true)?;
                if !rebuilt.differing.is_empty() {
                    why.push_str("; keys whose indexed state the log does not produce: ");
                    why.push_str(&rebuilt.differing.join(", "));
                }
                let mut opened = open_index(path, &marker, &config, &pepper)?;
                opened.recovery.index_rebuilt = Some(why);
                opened
            }
            opened => opened?,
        };
        let open::Opened {
            index,
            log,
            recovery,
            fleet,
            formats,
            directory,
        } = opened;
        let vault_ring = vault_ops::load_ring(path, &config, &index)?;
        let use_sink = uses::UseSink::new(config.use_log);
        let import_prefixes = index.import_prefixes()?;
        let detector = crate::anomaly::Detector::new(&config.anomalies);
        // What the detector had learnt when the store last closed (none after a crash:
        // it learns again).
        if detector.enabled()
            && let Ok(Some(state)) = index.anomaly_state()
        {
            detector.restore(&state);
        }
        let shared = Arc::new(Shared {
            customer_formats: Arc::new(ArcSwap::from_pointee(
                formats.for_customers(config.verify_prefixes.as_deref()),
            )),
            formats: ArcSwap::from_pointee(formats),
            verify_prefixes: config.verify_prefixes.clone(),
            // A fleet host's first share of the rate limits is in it (`open::first_shares`).
            directory: ArcSwap::from_pointee(directory),
            cache: Cache::default(),
            pepper,
            clock: config.clock.clone(),
            vault_ring: std::sync::RwLock::new(vault_ring),
            uses: use_sink,
            fleet_stale: std::sync::atomic::AtomicBool::new(false),
            counters: counters::Counters::default(),
            fleet_host: config.fleet.is_some(),
            published: (Mutex::new(log.durable_seq()), std::sync::Condvar::new()),
            imports_pending: std::sync::atomic::AtomicU64::new(index.imports_pending()),
            any_imports: std::sync::atomic::AtomicBool::new(!import_prefixes.is_empty()),
            import_prefixes: ArcSwap::from_pointee(import_prefixes),
            usage: usage_book::UsageBook::new(index.usage_tree()?, &config)?,
            index,
            notices: lifecycle_ops::NoticePeriods {
                expiring_ms: i64::try_from(config.notice_expiring.as_millis()).unwrap_or(i64::MAX),
                unused_ms: i64::try_from(config.notice_unused.as_millis()).unwrap_or(i64::MAX),
            },
            dormant_ms: detector.dormant_ms(),
            anomalies: detector,
        });
        // New ids must sort after every id already issued, whatever the clock says.
        let last_id = shared.index.last_id()?.map_or(0, |id| id.value());
        let (tx, rx) = mpsc::channel();
        let every = config.flush_interval;
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("credstore-commit".into())
                .spawn(move || commit::run(shared, log, rx, last_id, every, fleet))
                .map_err(|e| Error::io(path, e))?
        };
        let (stop_tx, stop_rx) = mpsc::channel();
        let flusher = {
            let shared = Arc::clone(&shared);
            let every = config.flush_interval;
            let sweep = config.lifecycle_sweep;
            let commits = tx.clone();
            std::thread::Builder::new()
                .name("credstore-flush".into())
                .spawn(move || run_flusher(&shared, every, &stop_rx, &commits, sweep))
                .map_err(|e| Error::io(path, e))?
        };
        Ok(Store {
            shared,
            path: path.to_path_buf(),
            store_id: marker.store_id,
            commits: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![committer, flusher]),
            stop_flusher: Mutex::new(Some(stop_tx)),
            recovery,
            require_admin: config.require_admin,
            dev_master_file: config.master_keys.is_none() && path.join(files::MASTER_FILE).exists(),
            import_lock: Mutex::new(()),
            _lock: lock,
        })
    }

    /// Rebuilds the index of the (closed) store in `path` from its log alone. Counters
    /// (last used, rate-limit state, budget spend), which the log does not hold, are
    /// carried over from the old index if it opens; budget marks come from the log.
    ///
    /// # Errors
    /// As [`Store::open`]; a damaged log is reported, never skipped.
    pub fn rebuild(path: impl AsRef<Path>, config: Config) -> Result<u64> {
        let path = path.as_ref();
        let marker = files::Marker::read(path)?;
        let lock = files::lock(path, config.lock_wait)?;
        let pepper = resolve_pepper(path, &config)?;
        marker.check_pepper(&pepper)?;
        let last = rebuild_index(path, &marker, &config, &pepper, false)?.last;
        drop(lock);
        Ok(last)
    }

    /// Accepts the log of the (closed) store in `path` as it is, after an operator restored
    /// the data directory from a backup on purpose: the head checkpoint (and the witness,
    /// if [`Config::witness`] is set) are written anew for the log's last record, a
    /// `head.reset` event records it in the log, and the index is rebuilt from the log.
    /// This erases the evidence that [`LogError::HeadConflict`] and
    /// [`OpenError::RolledBack`] report: only after the restore has been reviewed. Returns
    /// the record the head now vouches for.
    ///
    /// # Errors
    /// As [`Store::rebuild`]; a damaged log is still an error.
    pub fn reset_head(path: impl AsRef<Path>, config: Config, reason: Option<&str>) -> Result<u64> {
        let path = path.as_ref();
        let marker = files::Marker::read(path)?;
        let lock = files::lock(path, config.lock_wait)?;
        let pepper = resolve_pepper(path, &config)?;
        marker.check_pepper(&pepper)?;
        let seq = open::reset_head(path, &marker, &config, &pepper, reason)?;
        rebuild_index(path, &marker, &config, &pepper, false)?;
        drop(lock);
        Ok(seq)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key formats registered with this store.
    pub fn formats(&self) -> FormatSet {
        FormatSet::clone(&self.shared.formats.load())
    }

    /// What log recovery did when the store was opened (a truncated torn tail, say).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Figures for monitoring (`credstore serve`'s `/metrics` and `/readyz`); no I/O.
    pub fn stats(&self) -> StoreStats {
        let counters = &self.shared.counters;
        StoreStats {
            cached_keys: self.shared.cache.len(),
            fleet_stale: self.shared.fleet_stale.load(Ordering::Relaxed),
            cache_misses: counters.cache_misses.load(Ordering::Relaxed),
            uses_dropped: counters.uses_dropped.load(Ordering::Relaxed),
            commit_latency: counters.commit_latency(),
            fleet_lag: match counters.fleet_synced_at_ms.load(Ordering::Relaxed) {
                0 => None,
                at => Some(std::time::Duration::from_millis(
                    u64::try_from(self.shared.clock.now_ms().saturating_sub(at)).unwrap_or(0),
                )),
            },
        }
    }

    /// Issues a key. The secret is in the result, once; only its tag is stored.
    ///
    /// # Errors
    /// [`Error::Input`] for a bad name, project, metadata, expiry or format (nothing is
    /// written); [`Error::State`] for an unknown plan, role or user, or
    /// [`StateError::NotAMember`] for a personal token whose user has no role in the
    /// token's project; [`Error::Log`] / [`Error::Index`] if the change could not be made
    /// durable.
    pub fn create(&self, new: NewKey) -> Result<CreatedKey> {
        let admin = new.role.as_ref().is_some_and(|r| r.as_str() == ADMIN_ROLE)
            || new.format.as_ref().is_some_and(Format::is_admin);
        if self.require_admin && admin {
            return Err(StateError::AdminRequired("creating an admin key").into());
        }
        self.create_unchecked(new)
    }

    /// Issues a key on the authority of `admin_key`, which must be an admin key of this
    /// store ([`Store::verify_admin`]). Stores opened with [`Config::require_admin`] need
    /// this to create admin keys.
    ///
    /// # Errors
    /// [`crate::StateError::AdminRequired`] when `admin_key` is not a valid admin key; as
    /// [`Store::create`].
    pub fn create_as(&self, admin_key: &str, new: NewKey) -> Result<CreatedKey> {
        self.authorize_admin(admin_key, "creating an admin key")?;
        self.create_unchecked(new)
    }

    /// Checks that `key` is a valid admin key of this store ([`Store::verify_admin`]): a
    /// service account with the built-in `admin` role. Personal tokens, extra permissions
    /// or a custom role granting `*` do not make a key an admin. The check charges no
    /// budget and takes nothing from rate limits; it gives no client address, so an admin
    /// key with an IP allowlist is refused here.
    ///
    /// # Errors
    /// [`crate::StateError::AdminRequired`] naming `what`.
    pub fn authorize_admin(&self, key: &str, what: &'static str) -> Result<Arc<KeyRecord>> {
        let everything = PermissionQuery::parse("*")?;
        let d = self.verify_admin(&VerifyRequest::new(key).cost(0).weight(0).require(&everything))?;
        let is_admin = d.role.as_ref().is_some_and(|r| r.as_str() == ADMIN_ROLE);
        match d.key {
            Some(record) if d.is_valid() && is_admin => Ok(record),
            _ => Err(StateError::AdminRequired(what).into()),
        }
    }

    fn create_unchecked(&self, new: NewKey) -> Result<CreatedKey> {
        let prepared = self.prepare_key(new)?;
        match self.submit(Op::Create(prepared))? {
            Outcome::Created(record, key) => Ok(CreatedKey { key, record }),
            _ => Err(Error::UnexpectedReply { request: "create" }),
        }
    }

    /// Checks a create's settings and generates the key and its tag (off the commit thread).
    fn prepare_key(&self, mut new: NewKey) -> Result<PreparedKey> {
        validate_name(&new.name)?;
        if let Some(owner) = &new.owner {
            crate::owner::validate_owner_id(owner)?;
        }
        validate_metadata(&new.metadata)?;
        check_limits(&new.rate_limits)?;
        if let Some(plan) = &new.plan {
            crate::limits::validate_plan_name(plan)?;
        }
        let project = new.project.take().unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        validate_project(&project)?;
        new.role = match (&new.kind, new.role.take()) {
            (KeyKind::Personal { user }, None) => {
                crate::policy::validate_user_id(user)?;
                None
            }
            (KeyKind::Personal { .. }, Some(_)) => {
                return Err(
                    InputError::KeyType("a personal token acts with its user's role; give it none".into()).into(),
                );
            }
            (KeyKind::Service, None) if new.format.as_ref().is_some_and(Format::is_admin) => {
                Some(RoleName::parse(ADMIN_ROLE)?)
            }
            (KeyKind::Service, role) => Some(role.map_or_else(|| RoleName::parse("member"), Ok)?),
        };
        let is_admin_role = new.role.as_ref().is_some_and(|r| r.as_str() == ADMIN_ROLE);
        // A service account with the admin role is an admin key, issued in the admin format.
        let format = new.format.take().unwrap_or_else(|| {
            if is_admin_role {
                Format::admin()
            } else {
                Format::default_for(Env::Live)
            }
        });
        check_admin_format(&format, &new.kind, new.role.as_ref())?;
        let secret = format.generate();
        Ok(PreparedKey {
            tag: self.shared.tag_of(secret.expose().as_bytes()),
            start: format.start_of(secret.expose()).to_string(),
            secret,
            format,
            project,
            new,
        })
    }

    /// Verifies a presented key as a request of cost 1 and weight 1.
    ///
    /// # Errors
    /// As [`Store::verify_with`].
    pub fn verify(&self, presented: &str) -> Result<Decision> {
        self.verify_with(&VerifyRequest::new(presented))
    }

    /// Verifies a request, in DESIGN.md's order: parse, tag and lookup, status and time,
    /// rate limits (all or nothing), budget (`spent + cost <= cap`, never a partial
    /// charge; test keys are never charged), then last used. Side effects happen only for
    /// a request that passes every check.
    ///
    /// # Errors
    /// When the index cannot be read on a cache miss, or a budget mark cannot be written
    /// (then nothing was charged). Every outcome for the key itself is a [`Decision`].
    pub fn verify_with(&self, req: &VerifyRequest<'_>) -> Result<Decision> {
        self.verify_for(req, Purpose::Customer)
    }

    /// Verifies a request to the management API (the sidecar's admin endpoints,
    /// [`Store::authorize_admin`]): only an admin key, a service account with the built-in
    /// `admin` role, can be `VALID` here; any other key that is found is `FORBIDDEN`
    /// (`not_admin_key`) at step 4. Step 1 parses against every registered format, the
    /// admin keys' ([`Format::admin`]) included, which [`Store::verify_with`] never accepts;
    /// [`Config::verify_prefixes`] does not apply. The other steps are the same.
    ///
    /// # Errors
    /// As [`Store::verify_with`].
    pub fn verify_admin(&self, req: &VerifyRequest<'_>) -> Result<Decision> {
        self.verify_for(req, Purpose::Management)
    }

    #[inline]
    fn verify_for(&self, req: &VerifyRequest<'_>, purpose: Purpose) -> Result<Decision> {
        // The decision is built where it is returned from, and recorded there: moved out of
        // a function of its own and wrapped again, its 350 bytes would be copied each time.
        let mut decided = Ok(Decision::not_found());
        if let Ok(decision) = &mut decided {
            match self.decide(req, decision, purpose) {
                Ok(()) => {
                    if decision.key.is_none() {
                        if self.shared.usage.counting {
                            self.shared.usage.count_keyless(decision.code);
                        }
                        // Unknown or malformed: counted per client network, for `guessing`.
                        self.shared.note_keyless(req, decision.code);
                    }
                    self.shared.uses.record(decision, req.ip, req.endpoint);
                }
                Err(e) => decided = Err(e),
            }
        }
        decided
    }

    /// Steps 1 to 9 of the verification order, without recording the use.
    #[inline]
    fn decide(&self, req: &VerifyRequest<'_>, decision: &mut Decision, purpose: Purpose) -> Result<()> {
        let shared = &*self.shared;
        if shared.fleet_stale.load(Ordering::Relaxed) {
            return Err(Error::Stale);
        }
        // 1. Parse: prefix, length, alphabet, checksum, against the formats the purpose
        //    accepts (customers: never the admin keys').
        // 2. Tag and lookup: the live map, or sled once.
        let parsed = match purpose {
            Purpose::Customer => shared.tag_of_presented(req.key),
            Purpose::Management => shared.tag_of_admin(req.key),
        };
        let (tag, malformed) = match parsed {
            Ok(tag) => (tag, None),
            // Keys imported from another system keep their own shape (see DESIGN.md).
            Err(why) => match shared.imported_candidate(req.key) {
                Some(tag) if purpose == Purpose::Customer => (tag, Some(why)),
                _ => {
                    decision.code = Code::Malformed;
                    decision.malformed = Some(why);
                    return Ok(());
                }
            },
        };
        if let Some(decided) = shared
            .cache
            .with(&tag, |state| self.decide_live(req, decision, state, purpose))
        {
            return decided;
        }
        shared.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let generation = shared.cache.generation();
        let Some(stored) = shared.index.get_by_tag(&tag)? else {
            if purpose == Purpose::Customer && shared.imports_pending.load(Ordering::Relaxed) > 0 {
                return self.decide_imported(req, decision, tag, malformed);
            }
            if let Some(why) = malformed {
                decision.code = Code::Malformed;
                decision.malformed = Some(why);
            }
            return Ok(());
        };
        let state = shared.cache.fill(tag, shared.load_state(stored.record)?, generation);
        self.decide_live(req, decision, &state, purpose)
    }

    /// Step 2 for a key found by neither its tag nor the live map while imported keys are
    /// pending: looks it up by its SHA-256. An imported key that matches and is active is
    /// re-tagged (logged; from then on it is found by its tag like any key) and decided as
    /// any key; one revoked, disabled or expired is decided on a state kept out of the live
    /// map, and stays as it is. No match: `NOT_FOUND`, or `MALFORMED` for a key that
    /// parsed against no registered format (`malformed`).
    #[cold]
    #[inline(never)]
    fn decide_imported(
        &self,
        req: &VerifyRequest<'_>,
        decision: &mut Decision,
        tag: Tag,
        malformed: Option<Malformed>,
    ) -> Result<()> {
        let shared = &*self.shared;
        let purpose = Purpose::Customer;
        // Not imported, or re-tagged by a verify racing this one: then found by its tag.
        if let Some((stored, sha256)) = shared.find_imported(req.key)? {
            let now = shared.clock.now_ms();
            if stored.record.status_at(now) != Status::Active {
                let state = shared.load_state(stored.record)?;
                return self.decide_live(req, decision, &state, purpose);
            }
            let prefix_len = stored.record.prefix().len();
            let start = req.key.get(..prefix_len + 4).unwrap_or(stored.record.prefix());
            self.submit(Op::Retag {
                id: stored.record.id.clone(),
                tag,
                sha256,
                start: start.to_string(),
            })?;
        }
        if let Some(decided) = shared
            .cache
            .with(&tag, |state| self.decide_live(req, decision, state, purpose))
        {
            return decided;
        }
        let generation = shared.cache.generation();
        let Some(stored) = shared.index.get_by_tag(&tag)? else {
            if let Some(why) = malformed {
                decision.code = Code::Malformed;
                decision.malformed = Some(why);
            }
            return Ok(());
        };
        let state = shared.cache.fill(tag, shared.load_state(stored.record)?, generation);
        self.decide_live(req, decision, &state, purpose)
    }

    /// Steps 3 to 9, for a key whose live state was found, and the decision counted in
    /// the key's usage.
    #[inline]
    fn decide_live(
        &self,
        req: &VerifyRequest<'_>,
        decision: &mut Decision,
        state: &LiveState,
        purpose: Purpose,
    ) -> Result<()> {
        self.check_live(req, decision, state, purpose)?;
        if self.shared.usage.counting {
            // Credits spent: a valid request's cost, as its budget is charged (test keys
            // never are).
            let spent = if decision.code == Code::Valid && state.record.env() == Env::Live {
                req.cost
            } else {
                0
            };
            self.shared.cache.count(state, decision.code, spent);
        }
        Ok(())
    }

    /// Steps 3 to 9, for a key whose live state was found.
    #[inline]
    fn check_live(
        &self,
        req: &VerifyRequest<'_>,
        decision: &mut Decision,
        state: &LiveState,
        purpose: Purpose,
    ) -> Result<()> {
        let shared = &*self.shared;
        let record = &state.record;
        // 3. Status and time.
        let now_ns = shared.clock.now_ns();
        let now = now_ns.div_euclid(1_000_000);
        decision.key = Some(Arc::clone(record));
        decision.owner = state.owner.as_ref().map(|o| Arc::clone(&o.owner));
        decision.at = now;
        if let Some(code) = Code::for_status(record.status_at(now)) {
            decision.code = code;
            return Ok(());
        }
        // The lifecycle policy: a deadline computed when the state was built, and the
        // unused expiry against the last use.
        if state.expired_by_policy(now) {
            decision.code = Code::Expired;
            return Ok(());
        }
        decision.code = Code::Valid;
        // 4. The key's purpose (admin keys for management only); the project and
        //    environment the request pins; a personal token's user must still belong to
        //    the key's project.
        // The directory only matters to personal tokens; service accounts resolved theirs.
        let dir = match &state.grants {
            Grants::Personal { .. } => Some(shared.directory.load()),
            Grants::Service { .. } => None,
        };
        let role = match &state.grants {
            Grants::Service { role, .. } => role.as_ref(),
            Grants::Personal { user } => dir
                .as_ref()
                .and_then(|d| d.users.get(user))
                .and_then(|u| u.role_in(&record.project)),
        };
        let pinned = if state.admin != (purpose == Purpose::Management) {
            // An admin key is for the management API only, and only it is.
            Some(if state.admin {
                Forbidden::AdminKey
            } else {
                Forbidden::NotAdminKey
            })
        } else if req.project.is_some_and(|p| p != record.project) {
            Some(Forbidden::Project)
        } else if req.env.is_some_and(|e| e != record.env()) {
            Some(Forbidden::Environment)
        } else if role.is_none() {
            // The real reason: a personal token's user is gone, or has no role here.
            Some(match &state.grants {
                Grants::Personal { user } if dir.as_ref().is_none_or(|d| !d.users.contains_key(user)) => {
                    Forbidden::UserRemoved
                }
                Grants::Personal { .. } => Forbidden::NotAMember,
                Grants::Service { .. } => Forbidden::Project,
            })
        } else {
            None
        };
        // 5. IP, referrer and endpoint allowlists; a request that does not say is refused
        //    by a key that restricts it.
        let forbidden = pinned.or_else(|| restriction(record, req));
        decision.role = role.cloned();
        if let Some(why) = forbidden {
            decision.code = Code::Forbidden;
            decision.forbidden = Some(why);
            return Ok(());
        }
        // 6. Required permissions, against the key's role (a personal token: its user's
        //    current role) and its own extra permissions.
        if let Some(query) = req.require {
            let allowed = match &state.grants {
                Grants::Service { permissions, .. } => permissions.satisfies(query),
                Grants::Personal { .. } => {
                    let granted = role.and_then(|r| dir.as_ref().and_then(|d| d.roles.get(r.as_str())));
                    query.evaluate_with(&|p| granted.is_some_and(|g| g.allows(p)) || record.permissions.allows(p))
                }
            };
            if !allowed {
                decision.code = Code::InsufficientPermissions;
                return Ok(());
            }
        }
        // Steps 7 and 8 charge the key's own counters; a rotated key still in its grace
        // period is charged to the key that replaced it, so the two share one budget.
        let successor = match state.successor {
            Some(tag) => self.successor_state(tag)?,
            None => None,
        };
        let charged: &LiveState = successor.as_deref().unwrap_or(state);
        // The key's owner: its limits and budget apply on top of the key's own.
        let owner = charged.owner.as_deref();
        // 7. Rate limits, all or nothing: the key's, then its owner's.
        let owner_limits = owner.map_or(&[][..], |o| &o.limits[..]);
        decision.ratelimits.reserve(charged.limits.len() + owner_limits.len());
        let all_limits = charged.limits.iter().chain(owner_limits);
        for (i, limit) in all_limits.clone().enumerate() {
            let outcome = limit.cell.check(limit.quota, now_ns, req.weight);
            if !outcome.admitted {
                all_limits
                    .clone()
                    .take(i)
                    .for_each(|l| l.cell.refund(l.quota, req.weight));
                decision.code = Code::RateLimited;
                // A request heavier than a limit's capacity is denied by some limit (that
                // one, or one before it): say it can never pass, with no retry time.
                let over = |l: &cache::ActiveLimit| req.weight > l.quota.limit;
                let retry = if state.limits.iter().chain(owner_limits).any(over) {
                    decision.rate_limited = Some(RateLimited::OverCapacity);
                    None
                } else {
                    decision.rate_limited = Some(RateLimited::Exhausted);
                    Some(secs_ceil(outcome.retry_after_ns))
                };
                decision.retry_after = retry;
                let report = |l: &cache::ActiveLimit| {
                    let o = l.cell.peek(l.quota, now_ns);
                    let denied_here = Arc::ptr_eq(&l.cell, &limit.cell);
                    let mut reported = limit_state(l, o, retry.filter(|_| denied_here));
                    reported.over_capacity = over(l);
                    reported
                };
                decision.ratelimits = state.limits.iter().map(report).collect();
                if let Some(o) = owner {
                    decision
                        .ratelimits
                        .extend(o.limits.iter().zip(&o.names).map(|(l, name)| RateLimitState {
                            name: *name,
                            ..report(l)
                        }));
                }
                return Ok(());
            }
            let mut reported = limit_state(limit, outcome, None);
            if let Some(name) = (i >= charged.limits.len())
                .then(|| owner.and_then(|o| o.names.get(i - charged.limits.len())))
                .flatten()
            {
                reported.name = *name;
            }
            decision.ratelimits.push(reported);
        }
        let refund_limits = || {
            charged
                .limits
                .iter()
                .chain(owner_limits)
                .for_each(|l| l.cell.refund(l.quota, req.weight));
        };
        // 8. Budgets, the key's then its owner's: charge last, all or nothing; test keys
        //    are never charged.
        let live = charged.record.env() == Env::Live;
        let cost = if live { req.cost } else { 0 };
        // The key's charge, to give back if the owner's budget refuses: its counter and
        // the period it was charged in.
        let mut key_charge: Option<(&BudgetCounter, u32)> = None;
        if let Some(active) = &charged.budget {
            let (period, period_end) = active.period_at(now);
            // The budget in force this period: its cap moved by any credit given.
            let budget = active.in_period(period);
            let charge = self.charge(Account::Key(&charged.record), active, &budget, period, cost);
            let (spent, exhausted, charged_in) = match charge {
                Ok(charged) => charged,
                Err(e) => {
                    refund_limits();
                    return Err(e);
                }
            };
            let spent = self.shared.shown_spent(&active.counter, period, spent);
            let cap = budget.cap;
            if cost > 0 {
                self.note_thresholds(&charged.record.id, active, period, spent, cap, exhausted);
            }
            decision.budget = Some(BudgetState {
                cap,
                spent,
                remaining: cap.saturating_sub(spent),
                period_end,
                charged: cost > 0 && !exhausted,
            });
            if exhausted {
                refund_limits();
                self.refuse_budget(decision, state, owner, now_ns);
                return Ok(());
            }
            if cost > 0 {
                key_charge = Some((&active.counter, charged_in));
            }
        }
        if let Some((o, active)) = owner.and_then(|o| o.budget.as_ref().map(|b| (o, b))) {
            let (period, period_end) = active.period_at(now);
            let budget = active.in_period(period);
            let give_back = |decision: &mut Decision| {
                if let Some((counter, period)) = key_charge {
                    counter.refund(period, cost);
                    if let Some(b) = &mut decision.budget {
                        b.spent = b.spent.saturating_sub(cost);
                        b.remaining = b.cap.saturating_sub(b.spent);
                        b.charged = false;
                    }
                }
            };
            let (spent, exhausted, _) = match self.charge(Account::Owner(&o.owner), active, &budget, period, cost) {
                Ok(charged) => charged,
                Err(e) => {
                    give_back(decision);
                    refund_limits();
                    return Err(e);
                }
            };
            let spent = self.shared.shown_spent(&active.counter, period, spent);
            decision.owner_budget = Some(BudgetState {
                cap: budget.cap,
                spent,
                remaining: budget.cap.saturating_sub(spent),
                period_end,
                charged: cost > 0 && !exhausted,
            });
            if exhausted {
                give_back(decision);
                refund_limits();
                self.refuse_budget(decision, state, owner, now_ns);
                return Ok(());
            }
        }
        if let Some(o) = owner {
            // Its counters changed: flushed under its own id.
            o.usage.touch();
        }
        // 9. Valid: last used.
        // A load and a plain store, not a read-modify-write: concurrent verifies of one key
        // store times within microseconds of each other, and any of them will do.
        let last_used = state.usage.last_used.load(Ordering::Relaxed);
        if last_used < now {
            state.usage.last_used.store(now, Ordering::Relaxed);
            // Used again after a long dormancy (never used: 0, not a reuse).
            if last_used > 0 && now - last_used >= shared.dormant_ms {
                shared.anomalies.note_dormant(&record.id, last_used, now);
            }
        }
        self.shared.cache.touch(state);
        if successor.is_some() {
            // Its counters changed: flushed under its own id.
            self.shared.cache.touch(charged);
        }
        Ok(())
    }

    /// A request a budget refused (the key's or its owner's): `BUDGET_EXHAUSTED`, with
    /// every limit as it stands after the request's weight was given back.
    fn refuse_budget(&self, decision: &mut Decision, state: &LiveState, owner: Option<&cache::OwnerLive>, now_ns: i64) {
        decision.code = Code::BudgetExhausted;
        decision.ratelimits = state
            .limits
            .iter()
            .map(|l| limit_state(l, l.cell.peek(l.quota, now_ns), None))
            .collect();
        if let Some(o) = owner {
            decision
                .ratelimits
                .extend(o.limits.iter().zip(&o.names).map(|(l, name)| RateLimitState {
                    name: *name,
                    ..limit_state(l, l.cell.peek(l.quota, now_ns), None)
                }));
        }
    }

    /// The live state a rotated key's requests are charged to: its successor's, or when
    /// that key was rotated as well, the last one's (at most [`MAX_ROTATION_HOPS`] on).
    /// `None` when the successor cannot be found, which a valid index never gives.
    ///
    /// # Errors
    /// When sled cannot be read on a miss.
    fn successor_state(&self, mut tag: Tag) -> Result<Option<Arc<LiveState>>> {
        let shared = &*self.shared;
        let mut found = None;
        for _ in 0..MAX_ROTATION_HOPS {
            let state = match shared.cache.get(&tag) {
                Some(state) => state,
                None => {
                    let generation = shared.cache.generation();
                    let Some(stored) = shared.index.get_by_tag(&tag)? else {
                        break;
                    };
                    shared.cache.fill(tag, shared.load_state(stored.record)?, generation)
                }
            };
            let next = state.successor;
            found = Some(state);
            match next {
                Some(next) => tag = next,
                None => break,
            }
        }
        Ok(found)
    }

    /// Charges a budget (a key's or an owner's), raising its persisted mark through the
    /// log first whenever the charge would pass it. Returns the spend, whether the budget
    /// was exhausted, and the period the charge was made in.
    fn charge(
        &self,
        account: Account<'_>,
        active: &cache::ActiveBudget,
        budget: &crate::limits::Budget,
        period: u32,
        cost: u64,
    ) -> Result<(u64, bool, u32)> {
        loop {
            match active.counter.charge_in(budget, period, cost) {
                (Charge::Charged(spent), charged_in) => return Ok((spent, false, charged_in)),
                (Charge::Exhausted(spent), charged_in) => return Ok((spent, true, charged_in)),
                #[cfg(feature = "fleet")]
                (Charge::NeedsMark(mark), _) if self.shared.fleet_host => {
                    if !self.lease(account, &active.counter, budget.cap, mark, cost)? {
                        return Ok((active.counter.spent(period), true, period));
                    }
                }
                (Charge::NeedsMark(mark), _) => {
                    let op = match account {
                        Account::Key(record) => Op::RaiseMark {
                            id: record.id.clone(),
                            mark,
                        },
                        Account::Owner(owner) => Op::RaiseOwnerMark {
                            owner: owner.id.clone(),
                            mark,
                        },
                    };
                    self.submit(op)?;
                    active.counter.raise_mark(mark, self.shared.clock.now_ns());
                }
            }
        }
    }

    /// Asks the commit thread, without waiting, to log the budget thresholds a charge
    /// reached: 80% of `cap`, and 100% (spent at the cap, or a charge refused for the
    /// budget), each once per key and period. Below 80% it costs two comparisons; past a
    /// threshold this process noted already, one atomic load more.
    fn note_thresholds(
        &self,
        id: &KeyId,
        active: &cache::ActiveBudget,
        period: u32,
        spent: u64,
        cap: u64,
        exhausted: bool,
    ) {
        let reached: u8 = if exhausted || spent >= cap {
            100
        } else if u128::from(spent) * 100 >= u128::from(cap) * 80 {
            80
        } else {
            return;
        };
        let word = |percent: u8| u64::from(period) << 8 | u64::from(percent);
        let noted = &active.threshold_noted;
        if noted.load(Ordering::Acquire) >= word(reached) {
            return;
        }
        let before = noted.fetch_max(word(reached), Ordering::AcqRel);
        for percent in [80, 100] {
            if percent <= reached && word(percent) > before {
                self.submit_detached(Op::BudgetThreshold {
                    id: id.clone(),
                    period,
                    percent,
                    spent,
                    cap,
                });
            }
        }
    }

    /// A fleet host's charge needs units past the counter's mark (`mark`: the packed
    /// period and the amount the charge would like the mark at): lease them from the fleet.
    /// `false` when the fleet has fewer than the charge needs left.
    #[cfg(feature = "fleet")]
    fn lease(
        &self,
        account: Account<'_>,
        counter: &Arc<BudgetCounter>,
        cap: u64,
        mark: u64,
        cost: u64,
    ) -> Result<bool> {
        let (period, wanted_mark) = crate::limits::budget::unpack(mark);
        let base = counter.lease_base(period);
        let need = counter.spent(period).saturating_add(cost).saturating_sub(base).max(1);
        let request = leases::LeaseRequest {
            budget_id: match account {
                Account::Key(record) => self.budget_id(record)?.to_string(),
                Account::Owner(owner) => owner.budget_id(),
            },
            period,
            cap,
            need,
            want: wanted_mark.saturating_sub(base).max(need),
            counter: Arc::clone(counter),
        };
        match self.submit(Op::Lease(request))? {
            Outcome::Leased(granted) => Ok(granted > 0),
            _ => Err(Error::UnexpectedReply { request: "lease" }),
        }
    }

    /// The id a key's budget has in the fleet: its rotation chain's first key's, since a
    /// rotated key's successor carries on its budget.
    #[cfg(feature = "fleet")]
    fn budget_id(&self, record: &KeyRecord) -> Result<KeyId> {
        let mut id = record.id.clone();
        let mut from = record.rotated_from.clone();
        for _ in 0..MAX_ROTATION_HOPS {
            let Some(previous) = from else { break };
            from = self.shared.index.get(&previous)?.and_then(|k| k.record.rotated_from);
            id = previous;
        }
        Ok(id)
    }

    /// The verify path without the live map: parse, tag, two sled reads, decode, status.
    /// No last-used update. It is the baseline the benchmarks measure `verify` against.
    ///
    /// # Errors
    /// When the index cannot be read.
    #[doc(hidden)]
    pub fn verify_uncached(&self, presented: &str) -> Result<Decision> {
        let shared = &*self.shared;
        let tag = match shared.tag_of_presented(presented) {
            Ok(tag) => tag,
            Err(why) => return Ok(Decision::malformed(why)),
        };
        let Some(stored) = shared.index.get_by_tag(&tag)? else {
            return Ok(Decision::not_found());
        };
        let now = shared.clock.now_ms();
        let code = Code::for_status(stored.record.status_at(now)).unwrap_or(Code::Valid);
        Ok(Decision::with_key(code, Arc::new(stored.record), now))
    }

    /// Flushes counters, then empties the live map; keys are read from sled again on
    /// their next verify. For memory pressure, and for measuring cold verifies.
    ///
    /// # Errors
    /// [`Error::Index`] if the counter flush fails (the map is then left as it was).
    pub fn clear_cache(&self) -> Result<()> {
        self.shared.flush_counters()?;
        self.shared.cache.clear();
        Ok(())
    }

    /// The key with this id.
    ///
    /// # Errors
    /// [`crate::StateError::UnknownKey`].
    pub fn get(&self, id: &KeyId) -> Result<KeyInfo> {
        let stored = self
            .shared
            .index
            .get(id)?
            .ok_or_else(|| crate::error::StateError::UnknownKey(id.to_string()))?;
        self.info(stored.record, &stored.tag)
    }

    /// The key a presented secret belongs to, whatever its status, found without verifying
    /// it: no use is recorded, no rate limit or budget is touched, the last-used time stays.
    /// For acting on a leaked key (`credstore revoke --key -`). `None` when the text is not
    /// a key of a registered format, or no key of this store has it.
    ///
    /// # Errors
    /// [`Error::Index`] if sled fails.
    pub fn find_by_key(&self, presented: &str) -> Result<Option<KeyInfo>> {
        let shared = &*self.shared;
        let tag = match shared.tag_of_presented(presented) {
            Ok(tag) => tag,
            Err(_) => match shared.imported_candidate(presented) {
                Some(tag) => tag,
                None => return Ok(None),
            },
        };
        if let Some(stored) = shared.index.get_by_tag(&tag)? {
            return self.info(stored.record, &tag).map(Some);
        }
        // An imported key not yet re-tagged (finding it does not re-tag it).
        match shared.find_imported(presented)? {
            Some((stored, _)) => self.info(stored.record, &stored.tag).map(Some),
            None => Ok(None),
        }
    }

    /// Imports keys of another system by the unsalted SHA-256 it kept of each
    /// ([`crate::import`]): the plaintext keys then verify as they did there. Each key is
    /// stored without a tag, found by its SHA-256, until it is first presented: then it is
    /// re-tagged under the pepper (a `key.retagged` event) and its SHA-256 leaves the index.
    ///
    /// Every key is checked before anything is written (its settings, its prefix's
    /// environment, its plan, role and user, a SHA-256 imported once only); then they are
    /// written [`IMPORT_BATCH`] at a time, each batch one commit (one fsync) of
    /// `key.imported` records. `progress` is called with the number imported so far after
    /// each batch.
    ///
    /// # Errors
    /// [`InputError::BadLine`] naming the key's line and field; nothing is written. A
    /// failure to write (I/O) or a change of the store's state racing the import after the
    /// check refuses that batch and the ones after it: the batches before it are imported
    /// (the error says how many keys).
    pub fn import(
        &self,
        keys: Vec<crate::import::ImportKey>,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<KeyRecord>> {
        let formats = self.shared.formats.load_full();
        let mut prepared = Vec::with_capacity(keys.len());
        for key in keys {
            prepared.push(self.prepare_import(key, &formats)?);
        }
        // The checks that depend on the state, all of them before the first write.
        let base_dir = self.shared.directory.load_full();
        let check = state_machine::Overlay::new(&self.shared.index, &formats, &base_dir);
        // One import at a time: the commit thread then need not look each hash up again.
        let _importing = lock(&self.import_lock);
        plan::check_import(&check, &prepared, self.shared.clock.now_ms(), true)?;
        let mut records = Vec::with_capacity(prepared.len());
        let mut rest = prepared.into_iter().peekable();
        while rest.peek().is_some() {
            let batch: Vec<_> = rest.by_ref().take(IMPORT_BATCH).collect();
            match self.submit(Op::Import(batch)) {
                Ok(Outcome::Imported(done)) => records.extend(done),
                Ok(_) => return Err(Error::UnexpectedReply { request: "import" }),
                Err(e) if records.is_empty() => return Err(e),
                Err(e) => {
                    return Err(Error::NotCommitted(format!(
                        "{e}; the first {} key(s) were imported before this",
                        records.len()
                    )));
                }
            }
            progress(records.len());
        }
        Ok(records)
    }

    /// How many imported keys were never presented yet (still found by their SHA-256).
    pub fn imports_pending(&self) -> u64 {
        self.shared.imports_pending.load(Ordering::SeqCst)
    }

    /// The key the index holds under this SHA-256 (an imported key not yet re-tagged), as
    /// the `by_sha256` tree has it: for tests that check an entry leaves it.
    ///
    /// # Errors
    /// [`Error::Index`] if sled fails.
    #[doc(hidden)]
    pub fn indexed_sha256(&self, sha256: &crate::event::Sha256Hash) -> Result<Option<KeyId>> {
        self.shared.index.imported_id(&sha256.0)
    }

    /// An import key checked for everything but the store's state, its role resolved.
    fn prepare_import(&self, key: crate::import::ImportKey, formats: &FormatSet) -> Result<commit::PreparedImport> {
        let line = key.line;
        let at_line = |field: &str, e: Error| crate::import::bad_line(line, field, e.to_string());
        let mut new = key.new;
        let project = new.project.take().unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        new.role = match (&new.kind, new.role.take()) {
            (KeyKind::Personal { .. }, None) => None,
            (KeyKind::Personal { .. }, Some(_)) => {
                let why = "a personal token acts with its user's role; give it none".to_string();
                return Err(crate::import::bad_line(line, "role", why).into());
            }
            (KeyKind::Service, role) => Some(role.map_or_else(|| RoleName::parse("member"), Ok)?),
        };
        if new.role.as_ref().is_some_and(|r| r.as_str() == ADMIN_ROLE) {
            let why = "admin keys cannot be imported: create them".to_string();
            return Err(crate::import::bad_line(line, "role", why).into());
        }
        let env = key
            .env
            .or_else(|| formats.env_of_prefix(&key.prefix))
            .unwrap_or_else(|| Env::guess_from_prefix(&key.prefix));
        let format = Format::new(&key.prefix, env, crate::token::DEFAULT_RANDOM_LEN, true)
            .map_err(|e| at_line("prefix", e.into()))?;
        Ok(commit::PreparedImport {
            line,
            sha256: key.sha256,
            format,
            project,
            new,
        })
    }

    /// Keys matching `filter`, in creation order.
    ///
    /// # Errors
    /// [`Error::Index`] if sled fails.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        let of_owner = match &filter.owner {
            Some(owner) => {
                self.owner(owner)?;
                Some(self.shared.index.keys_of_owner(owner)?)
            }
            None => None,
        };
        for stored in self
            .shared
            .index
            .list(filter.project.as_deref(), filter.prefix.as_deref())?
        {
            if of_owner
                .as_ref()
                .is_some_and(|ids| ids.binary_search(&stored.record.id).is_err())
            {
                continue;
            }
            let info = self.info(stored.record, &stored.tag)?;
            if filter.status.is_none_or(|s| s == info.status) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Changes a key's name, metadata or expiry.
    ///
    /// # Errors
    /// [`Error::Input`] for bad values, [`Error::State`] for an unknown or revoked key.
    pub fn update(&self, id: &KeyId, update: KeyUpdate) -> Result<KeyInfo> {
        if self.require_admin && update.role.as_ref().is_some_and(|r| r.as_str() == "admin") {
            return Err(StateError::AdminRequired("giving a key the admin role").into());
        }
        if let Some(name) = &update.name {
            validate_name(name)?;
        }
        if let Some(metadata) = &update.metadata {
            validate_metadata(metadata)?;
        }
        if let Some(limits) = &update.rate_limits {
            check_limits(limits)?;
        }
        if let Some(Some(plan)) = &update.plan {
            crate::limits::validate_plan_name(plan)?;
        }
        self.change(Op::Update {
            id: id.clone(),
            changes: KeyChanges {
                name: update.name,
                metadata: update.metadata,
                expires_at: None,
                rate_limits: update.rate_limits,
                budget: update.budget,
                plan: update.plan,
                role: update.role,
                permissions: update.permissions,
                allow_ips: update.allow_ips,
                allow_referrers: update.allow_referrers,
                allow_endpoints: update.allow_endpoints,
            },
            expires: update.expires,
        })
    }

    /// Adds `amount` to what key `id` has left of its budget this period (a negative amount
    /// takes credit away, never below nothing left), logged with `reason`. The credit lasts
    /// until the period ends; the next starts from the budget's cap again.
    ///
    /// # Errors
    /// [`Error::State`]: an unknown key, one without a budget
    /// ([`crate::StateError::NoBudget`]), one rotated to another
    /// ([`crate::StateError::CreditRotated`]).
    pub fn credits_add(&self, id: &KeyId, amount: i64, reason: Option<String>) -> Result<Credit> {
        self.credit(id, crate::event::CreditChange::Add(amount), reason)
    }

    /// Makes what key `id` has left of its budget this period exactly `remaining`, logged
    /// with `reason`.
    ///
    /// # Errors
    /// As [`Store::credits_add`].
    pub fn credits_set(&self, id: &KeyId, remaining: u64, reason: Option<String>) -> Result<Credit> {
        self.credit(id, crate::event::CreditChange::Set(remaining), reason)
    }

    fn credit(&self, id: &KeyId, change: crate::event::CreditChange, reason: Option<String>) -> Result<Credit> {
        crate::record::validate_reason(reason.as_deref())?;
        match self.submit(Op::Credit {
            id: id.clone(),
            change,
            reason,
        })? {
            Outcome::Credited(credit) => Ok(credit),
            _ => Err(Error::UnexpectedReply { request: "credit" }),
        }
    }

    /// The change feed: the events of the records after record `after`, oldest first, each
    /// with its record's sequence number, from at most `max_records` records (a `key.uses`
    /// record gives one `key.used` event per use). Empty when there is nothing new: wait
    /// with [`Store::wait_for_record`]. Follow the feed by passing the last sequence number
    /// seen.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn events_after(&self, after: u64, max_records: usize) -> Result<Vec<(u64, Event)>> {
        // Only what is durable: the writer may be appending past it.
        let last = *lock(&self.shared.published.0);
        let mut out = Vec::new();
        if after >= last || max_records == 0 {
            return Ok(out);
        }
        let reader = LogReader::open(&self.path.join("log"), self.store_id, after + 1)?;
        for record in reader.take(max_records) {
            let record = record?;
            if record.seq > last {
                break;
            }
            let event = Event::decode(&record.payload).map_err(|reason| LogError::BadPayload {
                seq: record.seq,
                reason,
            })?;
            out.extend(event.into_uses().into_iter().map(|e| (record.seq, e)));
        }
        Ok(out)
    }

    /// The sequence number of the last durable record of the log.
    pub fn last_seq(&self) -> u64 {
        *lock(&self.shared.published.0)
    }

    /// Waits until the log holds a durable record after record `after`, at most `timeout`;
    /// returns the last durable record's sequence number (`after` or less: none came).
    pub fn wait_for_record(&self, after: u64, timeout: Duration) -> u64 {
        let (last, changed) = &self.shared.published;
        let guard = lock(last);
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |seq| *seq <= after)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }

    /// Creates owner `id` with `update`'s settings, or changes it; returns it as it now is.
    /// Its keys follow new limits and budget at once; counters carry over (by limit name,
    /// and for a budget with the same kind of period).
    ///
    /// # Errors
    /// [`InputError::InvalidOwner`] (also for an id that is a key of a registered format)
    /// and the other [`Error::Input`]s for a bad setting (nothing is written).
    pub fn set_owner(&self, id: &str, update: crate::owner::OwnerUpdate) -> Result<crate::owner::Owner> {
        crate::owner::validate_owner_id(id)?;
        // A key pasted where an owner id goes is refused, not kept and shown as one.
        if self.shared.formats.load().parse(id).is_ok() {
            return Err(InputError::InvalidOwner(id.to_string()).into());
        }
        update.check()?;
        match self.submit(Op::SetOwner {
            id: id.to_string(),
            update,
        })? {
            Outcome::Owner(owner) => Ok(*owner),
            _ => Err(Error::UnexpectedReply { request: "owner set" }),
        }
    }

    /// Owner `id`.
    ///
    /// # Errors
    /// [`StateError::UnknownOwner`].
    pub fn owner(&self, id: &str) -> Result<crate::owner::Owner> {
        self.shared
            .directory
            .load()
            .owners
            .get(id)
            .map(|o| crate::owner::Owner::clone(o))
            .ok_or_else(|| StateError::UnknownOwner(id.to_string()).into())
    }

    /// Every owner, by id.
    pub fn owners(&self) -> Vec<crate::owner::Owner> {
        self.shared
            .directory
            .load()
            .owners
            .values()
            .map(|o| crate::owner::Owner::clone(o))
            .collect()
    }

    /// What owner `id` has spent of its budget in the current period, and the cap in
    /// force (moved by any credit): `None` when it has no budget.
    ///
    /// # Errors
    /// [`StateError::UnknownOwner`].
    pub fn owner_budget(&self, id: &str) -> Result<Option<BudgetState>> {
        let owner = self.owner(id)?;
        let Some(live) = self.shared.owner_live(&owner.id) else {
            return Ok(None);
        };
        let Some(active) = &live.budget else {
            return Ok(None);
        };
        let now = self.shared.clock.now_ms();
        let (period, period_end) = active.period_at(now);
        let cap = active.in_period(period).cap;
        let spent = self.shared.owner_spent(id, period);
        Ok(Some(BudgetState {
            cap,
            spent,
            remaining: cap.saturating_sub(spent),
            period_end,
            charged: false,
        }))
    }

    /// Revokes every key of owner `id` not revoked yet, at once and for good, in one
    /// logged operation (`owner.keys_revoked`); returns the keys revoked (none: nothing
    /// is logged).
    ///
    /// # Errors
    /// [`StateError::UnknownOwner`]; [`Error::Input`] for an overlong reason.
    pub fn revoke_owner_keys(&self, id: &str, reason: Option<&str>) -> Result<Vec<KeyId>> {
        validate_reason(reason)?;
        self.owner_keys(id, true, reason.map(str::to_string))
    }

    /// Disables every enabled, unrevoked key of owner `id` in one logged operation
    /// (`owner.keys_disabled`); each can be enabled again on its own. Returns the keys
    /// disabled.
    ///
    /// # Errors
    /// [`StateError::UnknownOwner`].
    pub fn disable_owner_keys(&self, id: &str) -> Result<Vec<KeyId>> {
        self.owner_keys(id, false, None)
    }

    fn owner_keys(&self, owner: &str, revoke: bool, reason: Option<String>) -> Result<Vec<KeyId>> {
        match self.submit(Op::OwnerKeys {
            owner: owner.to_string(),
            revoke,
            reason,
        })? {
            Outcome::Keys(ids) => Ok(ids),
            _ => Err(Error::UnexpectedReply { request: "owner keys" }),
        }
    }

    /// Adds `amount` to what owner `id` has left of its budget this period (negative takes
    /// credit away, never below nothing left), logged with `reason`; as
    /// [`Store::credits_add`] for a key.
    ///
    /// # Errors
    /// [`StateError::UnknownOwner`], [`StateError::OwnerNoBudget`].
    pub fn owner_credits_add(&self, id: &str, amount: i64, reason: Option<String>) -> Result<Credit> {
        self.owner_credit(id, crate::event::CreditChange::Add(amount), reason)
    }

    /// Makes what owner `id` has left of its budget this period exactly `remaining`.
    ///
    /// # Errors
    /// As [`Store::owner_credits_add`].
    pub fn owner_credits_set(&self, id: &str, remaining: u64, reason: Option<String>) -> Result<Credit> {
        self.owner_credit(id, crate::event::CreditChange::Set(remaining), reason)
    }

    fn owner_credit(&self, owner: &str, change: crate::event::CreditChange, reason: Option<String>) -> Result<Credit> {
        crate::record::validate_reason(reason.as_deref())?;
        match self.submit(Op::OwnerCredit {
            owner: owner.to_string(),
            change,
            reason,
        })? {
            Outcome::Credited(credit) => Ok(credit),
            _ => Err(Error::UnexpectedReply {
                request: "owner credit",
            }),
        }
    }

    /// Disables a key (reversible with [`Store::enable`]).
    ///
    /// # Errors
    /// [`Error::State`]: unknown, revoked or already disabled.
    pub fn disable(&self, id: &KeyId) -> Result<KeyInfo> {
        self.change(Op::Disable(id.clone()))
    }

    /// Enables a disabled key.
    ///
    /// # Errors
    /// [`Error::State`]: unknown, revoked or not disabled.
    pub fn enable(&self, id: &KeyId) -> Result<KeyInfo> {
        self.change(Op::Enable(id.clone()))
    }

    /// Revokes a key, at once and for good: the very next verify in any thread refuses it.
    ///
    /// # Errors
    /// [`Error::Input`] for an overlong reason, [`Error::State`]: unknown or already revoked.
    pub fn revoke(&self, id: &KeyId, reason: Option<&str>) -> Result<KeyInfo> {
        validate_reason(reason)?;
        self.change(Op::Revoke {
            id: id.clone(),
            reason: reason.map(str::to_string),
        })
    }

    /// Issues a new key with the same settings and revokes the old one, at once or after
    /// `grace` (never later than the old key's own expiry). The new key gets the same
    /// lifetime the old one was given, counted from now, and takes over the old key's
    /// budget (spend and mark) and rate-limit state; until the old key stops working, its
    /// requests are charged to the new key's.
    ///
    /// # Errors
    /// [`Error::State`]: unknown, revoked, or already rotated.
    pub fn rotate(&self, id: &KeyId, grace: Option<Duration>) -> Result<Rotated> {
        let asked_ms = grace
            .map(|g| i64::try_from(g.as_millis()).map_err(|_| InputError::InvalidTime(format!("{g:?}"))))
            .transpose()?;
        // A grace below the lifecycle policy's least grace is raised to it, and said so.
        let min_grace = match self.shared.index.get(id)? {
            Some(stored) => self
                .shared
                .directory
                .load()
                .lifecycle
                .for_record(&stored.record)
                .min_grace
                .map(|s| s.ms),
            None => None,
        };
        let (grace_ms, grace_raised_to) = match min_grace {
            Some(min) if asked_ms.unwrap_or(0) < min => (Some(min), Some(Duration::from_millis(min.unsigned_abs()))),
            _ => (asked_ms, None),
        };
        match self.submit(Op::Rotate {
            id: id.clone(),
            grace_ms,
        })? {
            Outcome::Rotated { old, new, secret } => Ok(Rotated {
                new: CreatedKey {
                    key: secret,
                    record: *new,
                },
                old: *old,
                grace_raised_to,
            }),
            _ => Err(Error::UnexpectedReply { request: "rotate" }),
        }
    }

    /// Creates or replaces a plan. Every key on it follows the new limits at once.
    ///
    /// # Errors
    /// [`Error::Log`] / [`Error::Index`] if the change could not be made durable.
    pub fn set_plan(&self, plan: Plan) -> Result<()> {
        crate::limits::validate_plan_name(&plan.name)?;
        check_limits(&plan.rate_limits)?;
        self.submit(Op::SetPlan(plan)).map(drop)
    }

    /// Deletes a plan no key follows.
    ///
    /// # Errors
    /// [`crate::StateError::UnknownPlan`], [`crate::StateError::PlanInUse`].
    pub fn delete_plan(&self, name: &str) -> Result<()> {
        self.submit(Op::DeletePlan(name.to_string())).map(drop)
    }

    /// Every plan, by name.
    pub fn plans(&self) -> Vec<Plan> {
        self.shared
            .directory
            .load()
            .plans
            .values()
            .map(|p| Plan::clone(p))
            .collect()
    }

    /// Creates or replaces a custom role. Service accounts with it follow it at once.
    ///
    /// # Errors
    /// [`crate::StateError::RoleInUse`] for a built-in role's name.
    pub fn set_role(&self, role: Role) -> Result<()> {
        self.submit(Op::SetRole(role)).map(drop)
    }

    /// Deletes a custom role no key and no user has.
    ///
    /// # Errors
    /// [`crate::StateError::UnknownRole`], [`crate::StateError::RoleInUse`].
    pub fn delete_role(&self, name: &str) -> Result<()> {
        self.submit(Op::DeleteRole(name.to_string())).map(drop)
    }

    /// Every role, built-in and custom, by name.
    pub fn roles(&self) -> Vec<Role> {
        self.shared.directory.load().roles.values().cloned().collect()
    }

    /// Creates or replaces a user and their memberships. Their personal tokens act with
    /// the new roles from the very next verify, in every thread.
    ///
    /// # Errors
    /// [`crate::StateError::UnknownRole`] for a membership naming no role;
    /// [`InputError::InvalidProject`].
    pub fn set_user(&self, user: User) -> Result<()> {
        if self.require_admin && user.memberships.values().any(|r| r.as_str() == "admin") {
            return Err(StateError::AdminRequired("making a user an admin").into());
        }
        self.set_user_unchecked(user)
    }

    /// [`Store::set_user`] on the authority of an admin key of this store.
    ///
    /// # Errors
    /// [`crate::StateError::AdminRequired`]; as [`Store::set_user`].
    pub fn set_user_as(&self, admin_key: &str, user: User) -> Result<()> {
        self.authorize_admin(admin_key, "making a user an admin")?;
        self.set_user_unchecked(user)
    }

    fn set_user_unchecked(&self, user: User) -> Result<()> {
        crate::policy::validate_user_id(&user.id)?;
        for project in user.memberships.keys() {
            validate_project(project)?;
        }
        self.submit(Op::SetUser(user)).map(drop)
    }

    /// Removes a user: their personal tokens are refused (`FORBIDDEN`, `user_removed`) from
    /// the next verify.
    ///
    /// # Errors
    /// [`crate::StateError::UnknownUser`].
    pub fn remove_user(&self, id: &str) -> Result<()> {
        self.submit(Op::RemoveUser(id.to_string())).map(drop)
    }

    /// Every user, by id.
    pub fn users(&self) -> Vec<User> {
        self.shared.directory.load().users.values().cloned().collect()
    }

    /// Events from the log matching `filter`, oldest first, with their sequence numbers.
    ///
    /// # Errors
    /// [`Error::Log`] for a damaged log.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<(u64, Event)>> {
        let mut out = Vec::new();
        // Sealed segments wholly outside the time range are not read. A `key.uses` record
        // is timed by its earliest use, so records from a little before `since` are read.
        let since = filter.since.map(|t| t.saturating_sub(crate::event::USE_BATCH_SPAN_MS));
        let mut reader = LogReader::open_range(&self.path.join("log"), self.store_id, since, filter.until)?;
        if filter.newest_first {
            reader = reader.newest_first();
        }
        for record in reader {
            let record = record?;
            let event = Event::decode(&record.payload).map_err(|reason| LogError::BadPayload {
                seq: record.seq,
                reason,
            })?;
            if filter.key.as_ref().is_some_and(|k| !event.key_ids().contains(&k)) {
                continue;
            }
            let events = event.into_uses();
            let first = out.len();
            for event in events {
                let keep = filter.key.as_ref().is_none_or(|k| event.key_ids().contains(&k))
                    && filter.kind.as_deref().is_none_or(|k| event.kind_name() == k)
                    && filter.since.is_none_or(|t| event.at >= t)
                    && filter.until.is_none_or(|t| event.at < t);
                if keep {
                    out.push((record.seq, event));
                }
            }
            if filter.newest_first {
                // Records come newest first; the uses inside one record, oldest first.
                out.get_mut(first..).unwrap_or_default().reverse();
            }
        }
        Ok(out)
    }

    /// Checks the whole log: segment headers, framing, CRCs, contiguous sequence numbers,
    /// chain links, the MAC'd head checkpoint, that every payload decodes, and that every
    /// event naming a key names one created earlier.
    ///
    /// # Errors
    /// [`Error::Audit`] naming the first bad record.
    pub fn verify_log(&self) -> Result<LogCheck> {
        self.verify_log_with_progress(|_, _| {})
    }

    /// [`Store::verify_log`], calling `progress(bytes_done, bytes_total)` as it goes.
    ///
    /// # Errors
    /// As [`Store::verify_log`].
    pub fn verify_log_with_progress(&self, progress: impl FnMut(u64, u64)) -> Result<LogCheck> {
        let mut known: std::collections::HashSet<KeyId> = std::collections::HashSet::new();
        let report = crate::log::Audit::new(&self.path.join("log"), self.store_id)
            .head_key(crate::log::head_key(&self.shared.pepper))
            .inspect(move |_seq, payload| {
                let event = Event::decode(payload)?;
                match &event.kind {
                    crate::event::EventKind::KeyCreated { record, .. } => {
                        known.insert(record.id.clone());
                    }
                    crate::event::EventKind::KeyRotated { old, record, .. } => {
                        if !known.contains(old) {
                            return Err(format!("rotation of {old}, which was never created"));
                        }
                        known.insert(record.id.clone());
                    }
                    crate::event::EventKind::KeysImported { keys } => {
                        known.extend(keys.iter().map(|k| k.record.id.clone()));
                    }
                    _ => {
                        if let Some(id) = event.key_ids().into_iter().find(|id| !known.contains(*id)) {
                            return Err(format!("{} names {id}, which was never created", event.kind_name()));
                        }
                    }
                }
                Ok(())
            })
            .progress(progress)
            .run()?;
        let shared = &self.shared;
        let index_differs =
            open::keys_the_log_does_not_produce(&shared.index, &self.path.join("log"), self.store_id, &shared.pepper)?;
        Ok(LogCheck {
            records: report.records,
            bytes: report.bytes,
            index_differs,
        })
    }

    /// Usage over time: `q.subject`'s decisions by outcome and the credits they spent, in
    /// `q.by` buckets from `q.since` to `q.until`, every bucket present (zero-filled).
    /// Counts reach the buckets at each flush (every [`Config::flush_interval`], or
    /// [`Store::flush`]); a bucket holds what was counted while it was current.
    ///
    /// # Errors
    /// [`InputError::InvalidUsageRange`] (an empty range, too many buckets),
    /// [`InputError::UsagePastRetention`] (older than the tier keeps; the error says what
    /// is kept); [`StateError::UnknownKey`] for a key id the store does not hold,
    /// [`StateError::UnknownOwner`] for an owner it does not;
    /// [`Error::Index`] if the tree cannot be read.
    pub fn usage(&self, q: &crate::usage::UsageQuery) -> Result<crate::usage::UsageReport> {
        match &q.subject {
            crate::usage::UsageSubject::Key(id) if self.shared.index.get(id)?.is_none() => {
                return Err(StateError::UnknownKey(id.as_str().to_string()).into());
            }
            crate::usage::UsageSubject::Owner(id) => {
                crate::owner::validate_owner_id(id)?;
                self.owner(id)?;
            }
            crate::usage::UsageSubject::Project(p) => validate_project(p)?,
            _ => {}
        }
        let mut report = self.shared.usage.query(q, self.shared.clock.now_ms())?;
        report.anomalies = self.anomalies_of(&q.subject, q.since, q.until)?;
        Ok(report)
    }

    /// Writes in-memory counters (last used) to sled and flushes sled.
    ///
    /// # Errors
    /// [`Error::Index`].
    pub fn flush(&self) -> Result<()> {
        self.shared.flush_counters()?;
        self.shared.index.flush()
    }

    /// Stops the background threads, flushes counters and closes the store.
    ///
    /// # Errors
    /// [`Error::Index`] if the final flush fails.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        // What the detector found since the flusher last asked (a one-shot CLI verify of a
        // revoked key, say) is logged before the commit thread stops; a failure here
        // loses those anomalies only.
        if self.shared.anomalies.enabled() && lock(&self.commits).is_some() {
            let _ = self.check_anomalies();
        }
        let was_open = lock(&self.commits).take().is_some();
        lock(&self.stop_flusher).take();
        for handle in lock(&self.threads).drain(..) {
            // A panicked background thread has nothing more to give back.
            let _ = handle.join();
        }
        if !was_open {
            return Ok(());
        }
        self.shared.flush_counters()?;
        if self.shared.anomalies.enabled() {
            // Lost, the detector learns baselines and networks again: not worth failing
            // the close for.
            let _ = self.shared.index.set_anomaly_state(&self.shared.anomalies.snapshot());
        }
        // Counters are exact now: the next open restores spend as flushed, not at the mark.
        self.shared.index.set_clean(true)
    }

    fn submit(&self, op: Op) -> Result<Outcome> {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let commits = lock(&self.commits);
            let sender = commits.as_ref().ok_or(Error::Closed)?;
            sender.send(Request { op, reply }).map_err(|_| Error::Closed)?;
        }
        answer.recv().map_err(|_| Error::Closed)?
    }

    /// Hands `op` to the commit thread without waiting for its answer (the verify path
    /// noting a budget threshold must not wait for a commit).
    fn submit_detached(&self, op: Op) {
        let (reply, _answer) = mpsc::sync_channel(1);
        if let Some(sender) = lock(&self.commits).as_ref() {
            // A closed store has nobody left to log it for.
            let _ = sender.send(Request { op, reply });
        }
    }

    fn change(&self, op: Op) -> Result<KeyInfo> {
        match self.submit(op)? {
            Outcome::Changed(record) => {
                let tag = self.shared.index.get(&record.id)?.map(|k| k.tag);
                match tag {
                    Some(tag) => self.info(record, &tag),
                    None => Err(IndexError::MissingKey(record.id.to_string()).into()),
                }
            }
            _ => Err(Error::UnexpectedReply { request: "change" }),
        }
    }

    fn info(&self, record: KeyRecord, tag: &Tag) -> Result<KeyInfo> {
        let cached = self
            .shared
            .cache
            .get(tag)
            .map_or(0, |l| l.usage.last_used.load(Ordering::Relaxed));
        let stored = self.shared.index.counters(&record.id)?.map_or(0, |c| c.last_used);
        let last = cached.max(stored);
        let now = self.shared.clock.now_ms();
        let mut status = record.status_at(now);
        if status == Status::Active {
            // Expired by the lifecycle policy, as a verify would find it.
            let policy = self.shared.directory.load().lifecycle.for_record(&record);
            let (deadline, _) = policy.deadline(&record);
            let since = last.max(record.created_at);
            if now >= deadline || now.saturating_sub(since) >= policy.unused_ms() {
                status = Status::Expired;
            }
        }
        Ok(KeyInfo {
            status,
            last_used_at: (last > 0).then_some(last),
            owner: self.shared.index.owner_of(&record.id)?,
            record,
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Errors at drop have nowhere to go; `close` reports them.
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Flushes counters every `every` until stopped, and hands what the anomaly detector
/// found to the commit thread; with `sweep`, runs the lifecycle sweep every so often too,
/// handing its notices to the commit thread.
fn run_flusher(
    shared: &Shared,
    every: Duration,
    stop: &Receiver<()>,
    commits: &Sender<Request>,
    sweep: Option<Duration>,
) {
    let mut last_sweep = std::time::Instant::now();
    loop {
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {
                // A failed flush is retried at the next tick; counters stay in memory.
                let _ = shared.flush_counters();
                let found = shared.anomalies.check(shared.clock.now_ms());
                if !found.is_empty() {
                    let (reply, answer) = mpsc::sync_channel(1);
                    if commits
                        .send(Request {
                            op: Op::Anomalies(found),
                            reply,
                        })
                        .is_ok()
                    {
                        // Not logged (a full disk): dropped; the detector moved on.
                        let _ = answer.recv();
                    }
                }
                if let Some(interval) = sweep
                    && last_sweep.elapsed() >= interval
                {
                    last_sweep = std::time::Instant::now();
                    // A failed sweep is tried again at the next interval: the notices it
                    // would have logged are still due then.
                    if let Ok(notices) = lifecycle_ops::due_notices(shared)
                        && !notices.is_empty()
                    {
                        let (reply, answer) = mpsc::sync_channel(1);
                        let op = Op::Notices(notices);
                        if commits.send(Request { op, reply }).is_ok() {
                            let _ = answer.recv();
                        }
                    }
                }
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How far [`Store::successor_state`] follows a chain of rotations made within one grace
/// period.
const MAX_ROTATION_HOPS: usize = 16;

/// Whose budget a charge is made to.
#[derive(Clone, Copy)]
enum Account<'a> {
    Key(&'a KeyRecord),
    Owner(&'a crate::owner::Owner),
}

/// What a verification is for: a customer's request, or the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Customer,
    Management,
}

/// The admin format is for admin keys only, and admin keys (service accounts with the
/// `admin` role) are issued in it: `csa_` keys stay out of customer verification, and
/// customer formats hold no admin key.
fn check_admin_format(format: &Format, kind: &KeyKind, role: Option<&RoleName>) -> Result<(), InputError> {
    let admin_role = role.is_some_and(|r| r.as_str() == ADMIN_ROLE);
    if format.is_admin() {
        if *format != Format::admin() {
            return Err(InputError::ReservedPrefix {
                prefix: format.prefix().to_string(),
                why: "no other format may use it",
            });
        }
        if matches!(kind, KeyKind::Personal { .. }) || role.is_some_and(|r| r.as_str() != ADMIN_ROLE) {
            return Err(InputError::KeyType(
                "a csa_ key is an admin key: a service account with the admin role".into(),
            ));
        }
    } else if admin_role && matches!(kind, KeyKind::Service) {
        return Err(InputError::KeyType(format!(
            "a service account with the admin role is an admin key, issued with the {} prefix: give no other prefix or format",
            crate::token::ADMIN_PREFIX
        )));
    }
    Ok(())
}

/// Step 5: the first allowlist of `record` the request misses, if any.
fn restriction(record: &KeyRecord, req: &VerifyRequest<'_>) -> Option<Forbidden> {
    if !record.allow_ips.is_empty() && !req.ip.is_some_and(|ip| record.allow_ips.allows(ip)) {
        return Some(Forbidden::Ip);
    }
    if !record.allow_referrers.is_empty() && !req.referrer.is_some_and(|r| record.allow_referrers.allows(r)) {
        return Some(Forbidden::Referrer);
    }
    if !record.allow_endpoints.is_empty() && !req.endpoint.is_some_and(|(m, p)| record.allow_endpoints.allows(m, p)) {
        return Some(Forbidden::Endpoint);
    }
    None
}

/// Nanoseconds to whole seconds, rounded up.
fn secs_ceil(ns: i64) -> u64 {
    u64::try_from(ns.max(0)).unwrap_or(0).div_ceil(1_000_000_000)
}

fn limit_state(
    limit: &cache::ActiveLimit,
    outcome: crate::limits::gcra::LimitOutcome,
    retry_after: Option<u64>,
) -> RateLimitState {
    RateLimitState {
        name: limit.name,
        limit: limit.quota.limit,
        window_ms: limit.window_ms,
        remaining: outcome.remaining,
        reset: secs_ceil(outcome.reset_ns),
        retry_after,
        over_capacity: false,
    }
}

fn resolve_pepper(path: &Path, config: &Config) -> Result<Pepper> {
    if let Some(p) = &config.pepper {
        return Ok(p.clone());
    }
    files::read_pepper_file(path)?.ok_or_else(|| OpenError::MissingPepper.into())
}

/// A new store's id: random, or, for a fleet host, the fleet's (the fleet is created if
/// the database holds none yet).
fn new_store_id(config: &Config) -> Result<[u8; 16]> {
    #[cfg(feature = "fleet")]
    if let Some(url) = &config.fleet {
        return Ok(crate::fleet::Fleet::connect(url)?.init_new()?.store_id);
    }
    #[cfg(not(feature = "fleet"))]
    let _ = config;
    let mut store_id = [0u8; 16];
    crate::token::fill_random(&mut store_id);
    Ok(store_id)
}

/// Locks `m`; a panic while it was held left valid data, so a poisoned lock is taken as is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds an [`Expiry`] from CLI-style text: a duration (`90d`) or an RFC 3339 time.
///
/// # Errors
/// [`InputError::InvalidTime`].
pub fn parse_expiry(text: &str) -> Result<Expiry, InputError> {
    crate::clock::parse_duration(text)
        .map(Expiry::In)
        .or_else(|_| crate::clock::parse_time(text).map(Expiry::At))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds before admin keys had a format of their own issued them in a customer format
    /// (`create` refuses that now): such a key is still an admin key, refused to customers,
    /// and a rotation moves it into the admin format.
    #[test]
    fn an_admin_key_in_a_customer_format_is_refused_to_customers_and_rotates_into_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path().join("data"), Config::new()).unwrap();
        let format = Format::default_for(Env::Live);
        let secret = format.generate();
        let prepared = PreparedKey {
            tag: store.shared.tag_of(secret.expose().as_bytes()),
            start: format.start_of(secret.expose()).to_string(),
            secret: secret.clone(),
            format,
            project: DEFAULT_PROJECT.into(),
            new: NewKey::new("old bootstrap").role(RoleName::parse(ADMIN_ROLE).unwrap()),
        };
        let Ok(Outcome::Created(record, _)) = store.submit(Op::Create(prepared)) else {
            panic!("the old admin key was not created");
        };
        let key = secret.expose();
        let d = store.verify(key).unwrap();
        assert_eq!((d.code, d.forbidden), (Code::Forbidden, Some(Forbidden::AdminKey)));
        assert!(store.authorize_admin(key, "test").is_ok());
        let rotated = store.rotate(&record.id, None).unwrap();
        assert!(rotated.new.record.format.is_admin(), "{:?}", rotated.new.record.format);
        assert!(rotated.new.key.expose().starts_with(crate::token::ADMIN_PREFIX));
        assert!(store.authorize_admin(rotated.new.key.expose(), "test").is_ok());
        assert_eq!(store.verify(rotated.new.key.expose()).unwrap().code, Code::Malformed);
        assert_eq!(store.verify(key).unwrap().code, Code::Revoked);
    }
}
