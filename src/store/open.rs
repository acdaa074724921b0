//! Opening a store's index against its log: the catch-up replay of the records the index
//! has not applied, the rebuild of the whole index from the log, and what `Store::open`
//! does with an index that cannot be opened or read (set it aside and rebuild).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, IndexError, OpenError, Result};
use crate::event::Event;
use crate::index::{Counters, Index, StoredKey};
use crate::log::{Head, LogError, LogReader, LogWriter, RecoveryReport};
use crate::record::KeyId;
use crate::secret::Pepper;

use super::fleet_host::FleetLink;
use super::state_machine::Overlay;
use super::{Config, files};

/// Records replayed per sled transaction when catching the index up with the log.
const REPLAY_CHUNK: usize = 4096;

/// Applies log records from `from_seq` on to the index, in chunks of one transaction each.
pub(super) fn replay(index: &Index, log_dir: &Path, store_id: [u8; 16], from_seq: u64) -> Result<()> {
    replay_through(index, log_dir, store_id, from_seq, u64::MAX)
}

/// [`replay`], stopping after record `through`.
fn replay_through(index: &Index, log_dir: &Path, store_id: [u8; 16], from_seq: u64, through: u64) -> Result<()> {
    let mut reader =
        LogReader::open(log_dir, store_id, from_seq)?.take_while(|r| r.as_ref().map_or(true, |r| r.seq <= through));
    loop {
        let formats = index.formats()?;
        let dir = index.directory()?;
        let mut overlay = Overlay::new(index, &formats, &dir);
        let mut last = None;
        for record in reader.by_ref().take(REPLAY_CHUNK) {
            let record = record?;
            let event = Event::decode(&record.payload).map_err(|reason| LogError::BadPayload {
                seq: record.seq,
                reason,
            })?;
            overlay.apply(&event)?;
            last = Some((record.seq, record.hash));
        }
        let Some((seq, hash)) = last else {
            return Ok(());
        };
        index.apply(&overlay.batch(seq, hash))?;
    }
}

/// What opening the index against the log gives `Store::open`.
pub(super) struct Opened {
    pub index: Index,
    pub log: LogWriter,
    pub recovery: RecoveryReport,
    pub fleet: Option<FleetLink>,
    /// The registered formats and the directory, read (and so checked) once, here.
    pub formats: crate::token::FormatSet,
    pub directory: crate::directory::Directory,
}

/// Opens the index and the log, checks them against each other and catches the index up
/// with the log. Every failure of the index itself is an [`Error::Index`], which
/// [`Store::open`] answers with a rebuild.
pub(super) fn open_index(path: &Path, marker: &files::Marker, config: &Config, pepper: &Pepper) -> Result<Opened> {
    let index = Index::open(&path.join("index"), pepper, marker.store_id)?;
    let applied = index.applied_seq()?;
    let (log, recovery) = LogWriter::open(&path.join("log"), marker.store_id, config.segment_size, applied)?;
    // The MAC'd head checkpoint: a log rewritten, truncated or spliced behind the
    // store's back does not open.
    let log = log.with_head_key(crate::log::head_key(pepper));
    if let Some(problem) = log.head_conflict() {
        return Err(LogError::HeadConflict(problem.clone()).into());
    }
    let mut log = match &config.witness {
        Some(witness) => {
            check_witness(witness, &log, marker.store_id, pepper)?;
            log.with_witness(witness.clone())
        }
        None => log,
    };
    let mut fleet = connect_fleet(config, &mut log, marker.store_id)?;
    if applied > log.durable_seq() {
        return Err(OpenError::IndexAhead(format!(
            "the index reflects record {applied} but the log ends at {}",
            log.durable_seq()
        ))
        .into());
    }
    // The index must have come from this log: a copy from a fork of the store (same
    // pepper and id, another history) holds states this log does not produce.
    if applied > 0 && index.applied_hash()? != log.hash_at(applied)? {
        return Err(IndexError::OtherHistory(applied).into());
    }
    replay(&index, &path.join("log"), marker.store_id, applied + 1)?;
    if !index.was_clean()? {
        // Spend acknowledged before a crash may have reached the budget marks.
        index.restore_spend_to_marks()?;
    }
    index.set_clean(false)?;
    // Read here, so that an unreadable directory or format list is an index failure.
    let formats = index.formats()?;
    let mut directory = index.directory()?;
    if let Some(link) = fleet.as_mut() {
        first_shares(link, &mut directory, log.durable_seq(), config);
    }
    Ok(Opened {
        index,
        log,
        recovery,
        fleet,
        formats,
        directory,
    })
}

/// A fleet host's link, its local log brought up to the fleet's head first.
#[cfg(feature = "fleet")]
fn connect_fleet(config: &Config, log: &mut LogWriter, store_id: [u8; 16]) -> Result<Option<FleetLink>> {
    let Some(url) = &config.fleet else {
        return Ok(None);
    };
    let link = FleetLink::connect(url, config.host_name(), store_id, config)?;
    link.sync_log(log, store_id)?;
    Ok(Some(link))
}

/// A fleet host's first part of every rate limit, before it serves: nothing until the
/// fleet agrees on it, except for a host alone in its fleet, which has all of it at once.
fn first_shares(link: &mut FleetLink, directory: &mut crate::directory::Directory, applied: u64, config: &Config) {
    directory.share = crate::limits::Shares::all(crate::limits::Share::NOTHING);
    if let Some((shares, others_seen)) = link.refresh_shares() {
        directory.change_share(shares, others_seen, config.clock.now_ns());
    }
    link.heartbeat(applied);
}

/// Without the `fleet` feature there is no fleet to connect to.
#[cfg(not(feature = "fleet"))]
fn connect_fleet(_: &Config, _: &mut LogWriter, _: [u8; 16]) -> Result<Option<FleetLink>> {
    Ok(None)
}

/// Checks the log against the witness outside the data directory: the log must hold the
/// record the witness last saw, with the same chain hash. A missing witness is written now.
fn check_witness(witness: &Path, log: &LogWriter, store_id: [u8; 16], pepper: &Pepper) -> Result<()> {
    let key = crate::log::head_key(pepper);
    let bytes = match std::fs::read(witness) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let head = Head {
                store_id,
                seq: log.durable_seq(),
                hash: log.durable_hash(),
            };
            return head.write_to(witness, &key, true).map_err(|e| Error::io(witness, e));
        }
        Err(e) => return Err(Error::io(witness, e)),
    };
    let seen = Head::decode(&bytes, &store_id, &key).map_err(|e| {
        OpenError::RolledBack(format!(
            "the witness {} is not a checkpoint of this store ({e})",
            witness.display()
        ))
    })?;
    match log.hash_at(seen.seq)? {
        Some(hash) if hash == seen.hash => Ok(()),
        Some(_) => Err(OpenError::RolledBack(format!(
            "the log holds another history than the witness {} saw at record {}",
            witness.display(),
            seen.seq
        ))
        .into()),
        None => Err(OpenError::RolledBack(format!(
            "the log ends at record {} but the witness {} saw record {}: the data directory was rolled back",
            log.durable_seq(),
            witness.display(),
            seen.seq
        ))
        .into()),
    }
}

/// The log part of `Store::reset_head`: the head checkpoint and the witness written for
/// the log's last record, and a `head.reset` event appended. Returns the record vouched for.
pub(super) fn reset_head(
    path: &Path,
    marker: &files::Marker,
    config: &Config,
    pepper: &Pepper,
    reason: Option<&str>,
) -> Result<u64> {
    let key = crate::log::head_key(pepper);
    let was = |bytes: Option<Vec<u8>>| {
        bytes
            .and_then(|b| Head::decode(&b, &marker.store_id, &key).ok())
            .map(|h| h.seq)
    };
    let log_dir = path.join("log");
    let head_was = was(std::fs::read(crate::log::head::head_path(&log_dir)).ok());
    let witness_was = was(config.witness.as_ref().and_then(|w| std::fs::read(w).ok()));
    // Nothing the old index applied is trusted: a torn tail is truncated as in any open.
    let (log, _) = LogWriter::open(&log_dir, marker.store_id, config.segment_size, 0)?;
    let mut log = log.with_head_key(key);
    if let Some(witness) = &config.witness {
        log = log.with_witness(witness.clone());
    }
    log.reset_head()?;
    let event = Event {
        at: config.clock.now_ms(),
        kind: crate::event::EventKind::HeadReset {
            head_was,
            witness_was,
            reason: reason.map(str::to_string),
        },
    };
    log.append(&event.encode());
    log.commit()?;
    log.checkpoint_head()?;
    Ok(log.durable_seq())
}

/// What a rebuild did.
pub(super) struct Rebuilt {
    /// The last sequence number in the log.
    pub last: u64,
    /// The keys whose state in the old index the log does not produce (changed, added,
    /// missing, or failing their MAC), when the old index could be read at all.
    pub differing: Vec<String>,
}

/// Builds a new index from the log alone in `DATA/index.rebuild`, then puts it in place
/// of the old one. Counters (last used, rate-limit state, budget spend), which the log
/// does not hold, are carried over from the old index when it opens and checks; otherwise
/// spend restarts at the budget marks, which come from the log. The old index is
/// removed, or kept as `DATA/index.broken` when `set_aside` (it failed to open or read).
/// The caller holds the store's lock.
pub(super) fn rebuild_index(
    path: &Path,
    marker: &files::Marker,
    config: &Config,
    pepper: &Pepper,
    set_aside: bool,
) -> Result<Rebuilt> {
    let log_dir = path.join("log");
    let index_dir = path.join("index");
    // An index that cannot be read carries nothing over: the rebuild needs only the log.
    let Carried {
        counters,
        owner_counters,
        was_clean,
        applied,
    } = carried_over(&index_dir, pepper, marker.store_id).unwrap_or_default();
    // Recover first, so a torn tail is truncated and a corrupt log refuses the rebuild.
    let (log, _) = LogWriter::open(&log_dir, marker.store_id, config.segment_size, applied)?;
    let last = log.durable_seq();
    drop(log);
    let fresh = path.join("index.rebuild");
    files::remove_dir_if_exists(&fresh)?;
    let differing = match build_fresh(
        &fresh,
        &log_dir,
        &index_dir,
        marker.store_id,
        pepper,
        (&counters, &owner_counters),
        was_clean,
    ) {
        Ok(differing) => differing,
        Err(e) => {
            // A rebuild that failed (a full disk) leaves no half-built index taking space.
            let _ = files::remove_dir_if_exists(&fresh);
            return Err(e);
        }
    };
    if set_aside {
        let broken = path.join("index.broken");
        files::remove_dir_if_exists(&broken)?;
        if index_dir.exists() {
            std::fs::rename(&index_dir, &broken).map_err(|e| Error::io(&index_dir, e))?;
        }
    } else {
        files::remove_dir_if_exists(&index_dir)?;
    }
    std::fs::rename(&fresh, &index_dir).map_err(|e| Error::io(&index_dir, e))?;
    crate::log::sync_dir(path).map_err(|e| Error::io(path, e))?;
    Ok(Rebuilt { last, differing })
}

/// Every key's counters, by id.
type KeyCounters = [(KeyId, Counters)];
/// Every owner's counters, by id.
type OwnerCounters = [(String, Counters)];

/// Builds the index in `fresh` from the log, with the counters carried over; returns the
/// keys whose state in the old index (if sled can still read it) the log does not give.
fn build_fresh(
    fresh: &Path,
    log_dir: &Path,
    index_dir: &Path,
    store_id: [u8; 16],
    pepper: &Pepper,
    (counters, owner_counters): (&KeyCounters, &OwnerCounters),
    was_clean: bool,
) -> Result<Vec<String>> {
    let index = Index::open(fresh, pepper, store_id)?;
    replay(&index, log_dir, store_id, 1)?;
    index.write_counters(counters)?;
    index.write_owner_counters(owner_counters)?;
    index.set_clean(was_clean)?;
    let old = index_dir
        .exists()
        .then(|| Index::open_unchecked(index_dir, pepper, store_id))
        .and_then(Result::ok);
    let old_usage = old.as_ref().and_then(|old| old.usage_tree().ok());
    super::usage_book::rebuild(&index, log_dir, store_id, old_usage.as_ref())?;
    match old {
        Some(old) => Ok(differing_keys(&old.raw_keys()?, &index.list(None, None)?)),
        None => Ok(Vec::new()),
    }
}

/// The cross-check of `Store::verify_log`: the keys whose state in `index` the log does not
/// produce, found by replaying the log into a temporary index, up to the record the
/// index has applied.
pub(super) fn keys_the_log_does_not_produce(
    index: &Index,
    log_dir: &Path,
    store_id: [u8; 16],
    pepper: &Pepper,
) -> Result<Vec<String>> {
    let mut tries = 0;
    loop {
        let through = index.applied_seq()?;
        let fresh = Index::temporary(pepper, store_id)?;
        replay_through(&fresh, log_dir, store_id, 1, through)?;
        let indexed = index.raw_keys()?;
        tries += 1;
        // A store that never stops committing is compared as it is after ten tries: a
        // key changed during the last one may then be named.
        if index.applied_seq()? == through || tries == 10 {
            return Ok(differing_keys(&indexed, &fresh.list(None, None)?));
        }
    }
}

/// The ids of the keys whose entry in `indexed` (`None`: it fails its MAC or does not
/// decode) is not what the log gives in `rebuilt`, or that only one of them has.
fn differing_keys(indexed: &BTreeMap<String, Option<StoredKey>>, rebuilt: &[StoredKey]) -> Vec<String> {
    let rebuilt: BTreeMap<&str, &StoredKey> = rebuilt.iter().map(|k| (k.record.id.as_str(), k)).collect();
    let mut ids: Vec<String> = indexed
        .iter()
        .filter(|(id, held)| rebuilt.get(id.as_str()).copied() != held.as_ref())
        .map(|(id, _)| id.clone())
        .collect();
    ids.extend(
        rebuilt
            .keys()
            .filter(|id| !indexed.contains_key(**id))
            .map(|id| id.to_string()),
    );
    ids.sort();
    ids
}

/// What a rebuild carries over from the old index.
#[derive(Default)]
struct Carried {
    /// Every key's counters, which the log does not hold.
    counters: Vec<(KeyId, Counters)>,
    /// Every owner's counters, likewise.
    owner_counters: Vec<(String, Counters)>,
    /// Whether it was closed cleanly (its counters are exact).
    was_clean: bool,
    /// Its applied sequence number: log recovery never truncates at or before it.
    applied: u64,
}

/// What a rebuild carries over from the old index in `dir`; nothing if there is none.
fn carried_over(dir: &Path, pepper: &Pepper, store_id: [u8; 16]) -> Result<Carried> {
    if !dir.exists() {
        return Ok(Carried::default());
    }
    let old = Index::open(dir, pepper, store_id)?;
    let mut counters = Vec::new();
    for k in old.list(None, None)? {
        if let Some(c) = old.counters(&k.record.id)? {
            counters.push((k.record.id, c));
        }
    }
    let mut owner_counters = Vec::new();
    for id in old.directory()?.owners.keys() {
        if let Some(c) = old.owner_counters(id)? {
            owner_counters.push((id.clone(), c));
        }
    }
    Ok(Carried {
        counters,
        owner_counters,
        was_clean: old.was_clean()?,
        applied: old.applied_seq()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewKey, Store};

    /// Three keys as the index holds them, from a real store.
    fn three_keys() -> Vec<StoredKey> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path().join("data"), Config::new()).unwrap();
        for name in ["a", "b", "c"] {
            store.create(NewKey::new(name)).unwrap();
        }
        let keys = store.shared.index.list(None, None).unwrap();
        store.close().unwrap();
        keys
    }

    fn by_id(keys: &[StoredKey]) -> BTreeMap<String, Option<StoredKey>> {
        keys.iter()
            .map(|k| (k.record.id.to_string(), Some(k.clone())))
            .collect()
    }

    #[test]
    fn the_same_keys_differ_in_nothing() {
        let keys = three_keys();
        assert!(differing_keys(&by_id(&keys), &keys).is_empty());
    }

    #[test]
    fn changed_added_missing_and_unreadable_keys_are_named() {
        let keys = three_keys();
        let [a, b, c] = [0, 1, 2].map(|i| keys[i].record.id.to_string());
        let mut indexed = by_id(&keys);
        // a: another state; b: fails its MAC; c: not in the index; d: only in the index.
        if let Some(Some(k)) = indexed.get_mut(&a) {
            k.record.revoked = None;
            k.record.name = "renamed".into();
        }
        indexed.insert(b.clone(), None);
        indexed.remove(&c);
        indexed.insert("key_only_in_the_index".into(), Some(keys[0].clone()));
        let mut expected = vec![a, b, c, "key_only_in_the_index".to_string()];
        expected.sort();
        assert_eq!(differing_keys(&indexed, &keys), expected);
    }
}
