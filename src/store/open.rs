//! Opening a store's index against its log: the catch-up replay of the records the index
//! has not applied, the rebuild of the whole index from the log, and what `Store::open`
//! does with an index that cannot be opened or read (set it aside and rebuild).

use std::path::Path;

use crate::error::{Error, OpenError, Result};
use crate::event::Event;
use crate::index::{Counters, Index};
use crate::log::{LogError, LogReader, LogWriter, RecoveryReport};
use crate::record::KeyId;
use crate::secret::Pepper;

use super::state_machine::Overlay;
use super::{Config, files};

/// Records replayed per sled transaction when catching the index up with the log.
const REPLAY_CHUNK: usize = 4096;

/// Applies log records from `from_seq` on to the index, in chunks of one transaction each.
pub(super) fn replay(index: &Index, log_dir: &Path, store_id: [u8; 16], from_seq: u64) -> Result<()> {
    let mut reader = LogReader::open(log_dir, store_id, from_seq)?;
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
            last = Some(record.seq);
        }
        let Some(last) = last else {
            return Ok(());
        };
        index.apply(&overlay.batch(last))?;
    }
}

/// Opens the index and the log, checks them against each other and catches the index up
/// with the log. Every failure of the index itself is an [`Error::Index`], which
/// [`Store::open`] answers with a rebuild.
pub(super) fn open_index(
    path: &Path,
    marker: &files::Marker,
    config: &Config,
    pepper: &Pepper,
) -> Result<(Index, LogWriter, RecoveryReport)> {
    let index = Index::open(&path.join("index"))?;
    let applied = index.applied_seq()?;
    let (log, recovery) = LogWriter::open(&path.join("log"), marker.store_id, config.segment_size, applied)?;
    // The MAC'd head checkpoint: a log rewritten, truncated or spliced behind the
    // store's back does not open.
    let log = log.with_head_key(crate::log::head_key(pepper));
    if let Some(problem) = log.head_conflict() {
        return Err(LogError::HeadConflict(problem.clone()).into());
    }
    if applied > log.durable_seq() {
        return Err(OpenError::IndexAhead(format!(
            "the index reflects record {applied} but the log ends at {}",
            log.durable_seq()
        ))
        .into());
    }
    replay(&index, &path.join("log"), marker.store_id, applied + 1)?;
    if !index.was_clean()? {
        // Spend acknowledged before a crash may have reached the budget marks.
        index.restore_spend_to_marks()?;
    }
    index.set_clean(false)?;
    // Read once here so that an unreadable directory or format list is found now.
    index.formats()?;
    index.directory()?;
    Ok((index, log, recovery))
}

/// Builds a new index from the log alone in `DATA/index.rebuild`, then puts it in place
/// of the old one. Counters (last used, rate-limit state, budget spend), which the log
/// does not hold, are carried over from the old index when it can be read; otherwise
/// spend restarts at the budget marks, which come from the log. The old index is
/// removed, or kept as `DATA/index.broken` when `set_aside` (it failed to open or read).
/// The caller holds the store's lock. Returns the last sequence number in the log.
pub(super) fn rebuild_index(path: &Path, marker: &files::Marker, config: &Config, set_aside: bool) -> Result<u64> {
    let log_dir = path.join("log");
    let index_dir = path.join("index");
    // An index that cannot be read carries nothing over: the rebuild needs only the log.
    let Carried {
        counters,
        was_clean,
        applied,
    } = carried_over(&index_dir).unwrap_or_default();
    // Recover first, so a torn tail is truncated and a corrupt log refuses the rebuild.
    let (log, _) = LogWriter::open(&log_dir, marker.store_id, config.segment_size, applied)?;
    let last = log.durable_seq();
    drop(log);
    let fresh = path.join("index.rebuild");
    files::remove_dir_if_exists(&fresh)?;
    {
        let index = Index::open(&fresh)?;
        replay(&index, &log_dir, marker.store_id, 1)?;
        index.write_counters(&counters)?;
        index.set_clean(was_clean)?;
    }
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
    Ok(last)
}

/// What a rebuild carries over from the old index.
#[derive(Default)]
struct Carried {
    /// Every key's counters, which the log does not hold.
    counters: Vec<(KeyId, Counters)>,
    /// Whether it was closed cleanly (its counters are exact).
    was_clean: bool,
    /// Its applied sequence number: log recovery never truncates at or before it.
    applied: u64,
}

/// What a rebuild carries over from the old index in `dir`; nothing if there is none.
fn carried_over(dir: &Path) -> Result<Carried> {
    if !dir.exists() {
        return Ok(Carried::default());
    }
    let old = Index::open(dir)?;
    let mut counters = Vec::new();
    for k in old.list(None, None)? {
        if let Some(c) = old.counters(&k.record.id)? {
            counters.push((k.record.id, c));
        }
    }
    Ok(Carried {
        counters,
        was_clean: old.was_clean()?,
        applied: old.applied_seq()?,
    })
}
