//! Walking the log in order (oldest or newest first), checking everything on the way.
//!
//! Sealed segments (all but the last) are mapped with `memmap2`; the active one is read
//! with a plain `read`. A reader for a time range ([`LogReader::open_range`]) consults each
//! sealed segment's time index sidecar and does not open a segment that holds no event of
//! the range.

use std::path::{Path, PathBuf};

use super::segment::{SEGMENT_HEADER_LEN, SegmentBytes, SegmentHeader, genesis_hash, list_segments};
use super::timeindex::{SegmentTimes, event_time};
use super::walk::Walk;
use super::{Corruption, LogError};

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number.
    pub seq: u64,
    /// This record's chain hash.
    pub hash: [u8; 32],
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// An iterator over the records of a log directory. It checks segment headers, framing,
/// CRCs, contiguous sequence numbers and chain links, and stops at the first problem with
/// an error naming the record.
///
/// Oldest first by default; [`LogReader::newest_first`] reverses it. Where segments are
/// skipped (before `from_seq`, or outside a time range), the chain is picked up again from
/// the header of the next segment read; [`crate::log::Audit`] checks the whole chain.
pub struct LogReader {
    store_id: [u8; 16],
    /// The segments to read, oldest first.
    plan: Vec<Planned>,
    /// How many of `plan` have been loaded (from the front, or from the back when reading
    /// newest first).
    loaded: usize,
    newest_first: bool,
    filter: Filter,
    /// Oldest first: the segment being walked.
    current: Option<Current>,
    /// Newest first: the current segment's records still to yield (the next at the end).
    pending: Vec<Record>,
    /// Newest first: the header of the segment read before (the next newer one).
    newer: Option<(PathBuf, SegmentHeader)>,
    expected_seq: u64,
    prev_hash: [u8; 32],
    failed: bool,
    bytes_read: u64,
    segments_mapped: usize,
}

/// A segment the reader will read.
#[derive(Debug, Clone)]
struct Planned {
    path: PathBuf,
    /// Not the last segment: mapped, never written again.
    sealed: bool,
    /// The segment read just before it (oldest first) is the one directly before it in the
    /// log, so the chain must continue across the boundary. For the log's first segment:
    /// the chain starts at seq 1 from the genesis hash.
    continues: bool,
}

/// Which records a reader yields.
#[derive(Debug, Clone, Copy)]
struct Filter {
    from_seq: u64,
    since: Option<i64>,
    until: Option<i64>,
}

impl Filter {
    /// Whether a record at or after `from_seq` whose time is in range (or unknown).
    fn wants(&self, seq: u64, payload: &[u8]) -> bool {
        if seq < self.from_seq {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        event_time(payload).is_none_or(|at| self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u))
    }
}

/// The segment being walked oldest first, and where.
struct Current {
    path: PathBuf,
    data: SegmentBytes,
    pos: usize,
}

impl LogReader {
    /// A reader of the log in `dir` yielding records with `seq >= from_seq`, oldest first.
    ///
    /// Segments wholly before `from_seq` are not read: the chain is picked up from the
    /// header of the segment holding `from_seq`.
    ///
    /// # Errors
    /// [`LogError::Io`] if the directory cannot be listed.
    pub fn open(dir: &Path, store_id: [u8; 16], from_seq: u64) -> Result<Self, LogError> {
        LogReader::planned(dir, store_id, from_seq, None, None)
    }

    /// A reader of the log in `dir` yielding the records whose event time `at` (unix ms)
    /// lies in `since <= at < until` (an open bound is `None`), oldest first.
    ///
    /// A sealed segment whose time index says it holds no such event is not opened at
    /// all ([`LogReader::segments_planned`] tells how many are). Records whose payload has
    /// no readable time (not an event) are yielded whatever the range, for the caller to
    /// report.
    ///
    /// # Errors
    /// [`LogError::Io`] if the directory cannot be listed.
    pub fn open_range(
        dir: &Path,
        store_id: [u8; 16],
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Self, LogError> {
        LogReader::planned(dir, store_id, 1, since, until)
    }

    /// Reads newest first instead: each segment is walked (and checked) front to back,
    /// then its records are yielded in reverse, and the segments in reverse order. Call it
    /// before reading.
    pub fn newest_first(mut self) -> Self {
        if self.loaded == 0 {
            self.newest_first = true;
        }
        self
    }

    fn planned(
        dir: &Path,
        store_id: [u8; 16],
        from_seq: u64,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Self, LogError> {
        let segments = list_segments(dir)?;
        let last = segments.len().saturating_sub(1);
        // Start at the last segment whose first_seq <= from_seq.
        let start = segments
            .iter()
            .rposition(|(first, _)| *first <= from_seq.max(1))
            .unwrap_or(0);
        let ranged = since.is_some() || until.is_some();
        let mut plan = Vec::new();
        let mut previous: Option<usize> = None;
        for (i, (first, path)) in segments.into_iter().enumerate().skip(start) {
            let sealed = i < last;
            if ranged && sealed && !segment_may_overlap(dir, first, &path, since, until) {
                continue;
            }
            let continues = match previous {
                Some(p) => p + 1 == i,
                None => i == 0,
            };
            previous = Some(i);
            plan.push(Planned {
                path,
                sealed,
                continues,
            });
        }
        Ok(LogReader {
            store_id,
            plan,
            loaded: 0,
            newest_first: false,
            filter: Filter { from_seq, since, until },
            current: None,
            pending: Vec::new(),
            newer: None,
            expected_seq: 1,
            prev_hash: genesis_hash(&store_id),
            failed: false,
            bytes_read: 0,
            segments_mapped: 0,
        })
    }

    /// Bytes of the segments read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The sequence number the next record must carry (oldest first).
    pub fn next_seq(&self) -> u64 {
        self.expected_seq
    }

    /// Segments this reader reads in all: those a time range skips are not among them.
    pub fn segments_planned(&self) -> usize {
        self.plan.len()
    }

    /// Segments opened so far.
    pub fn segments_read(&self) -> usize {
        self.loaded
    }

    /// Segments opened so far through a memory map (sealed ones).
    pub fn segments_mapped(&self) -> usize {
        self.segments_mapped
    }

    /// Loads the next planned segment and checks its header; `None` when there is none.
    fn load(&mut self) -> Result<Option<(Planned, SegmentBytes, SegmentHeader)>, LogError> {
        let index = if self.newest_first {
            self.plan.len().checked_sub(self.loaded + 1)
        } else {
            Some(self.loaded).filter(|i| *i < self.plan.len())
        };
        let Some(planned) = index.and_then(|i| self.plan.get(i)).cloned() else {
            return Ok(None);
        };
        self.loaded += 1;
        let data = SegmentBytes::load(&planned.path, planned.sealed)?;
        self.segments_mapped += usize::from(data.is_mapped());
        self.bytes_read += data.len() as u64;
        let header = SegmentHeader::decode(&data, &planned.path, Some(&self.store_id))?;
        let log_start = planned.continues && index == Some(0);
        if log_start && header.first_seq != 1 {
            return Err(bad_header(
                &planned.path,
                &format!(
                    "the log's first segment starts at seq {}, not 1 (a segment is missing)",
                    header.first_seq
                ),
            ));
        }
        if planned.continues && header.first_seq == 1 && header.prev_hash != genesis_hash(&self.store_id) {
            return Err(bad_header(
                &planned.path,
                "the log starts from another store's genesis hash",
            ));
        }
        Ok(Some((planned, data, header)))
    }

    /// Oldest first: the next record.
    fn next_forward(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            let Some(current) = &mut self.current else {
                let Some((planned, data, header)) = self.load()? else {
                    return Ok(None);
                };
                if planned.continues {
                    if header.first_seq != self.expected_seq {
                        return Err(bad_header(
                            &planned.path,
                            &format!(
                                "segment starts at seq {}, expected {} (a segment is missing)",
                                header.first_seq, self.expected_seq
                            ),
                        ));
                    }
                    if header.prev_hash != self.prev_hash {
                        return Err(bad_header(
                            &planned.path,
                            "header's chain hash does not match the previous segment",
                        ));
                    }
                }
                self.expected_seq = header.first_seq;
                self.prev_hash = header.prev_hash;
                self.current = Some(Current {
                    path: planned.path,
                    data,
                    pos: SEGMENT_HEADER_LEN,
                });
                continue;
            };
            let mut walk = Walk::new(&current.data, current.pos, self.expected_seq, self.prev_hash);
            let step = match walk.step() {
                None => {
                    self.current = None;
                    continue;
                }
                Some(Err(reason)) => return Err(corrupt(&current.path, current.pos, self.expected_seq, reason)),
                Some(Ok(step)) => step,
            };
            current.pos = walk.pos;
            self.expected_seq = walk.next_seq;
            self.prev_hash = walk.prev;
            if self.filter.wants(step.frame.seq, step.frame.payload) {
                return Ok(Some(Record {
                    seq: step.frame.seq,
                    hash: step.hash,
                    payload: step.frame.payload.to_vec(),
                }));
            }
        }
    }

    /// Newest first: the next record.
    fn next_backward(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            if let Some(record) = self.pending.pop() {
                return Ok(Some(record));
            }
            let Some((planned, data, header)) = self.load()? else {
                return Ok(None);
            };
            let mut walk = Walk::new(&data, SEGMENT_HEADER_LEN, header.first_seq, header.prev_hash);
            loop {
                let offset = walk.pos;
                match walk.step() {
                    None => break,
                    Some(Err(reason)) => return Err(corrupt(&planned.path, offset, walk.next_seq, reason)),
                    Some(Ok(step)) if self.filter.wants(step.frame.seq, step.frame.payload) => {
                        self.pending.push(Record {
                            seq: step.frame.seq,
                            hash: step.hash,
                            payload: step.frame.payload.to_vec(),
                        })
                    }
                    Some(Ok(_)) => {}
                }
            }
            // The newer segment read before this one must continue where this one ends.
            if let Some((newer_path, newer)) = self.newer.take()
                && (newer.first_seq != walk.next_seq || newer.prev_hash != walk.prev)
            {
                return Err(bad_header(
                    &newer_path,
                    &format!(
                        "segment does not continue the one before it (which ends before seq {})",
                        walk.next_seq
                    ),
                ));
            }
            if planned.continues {
                self.newer = Some((planned.path, header));
            }
            // Oldest first, the chain position after this segment: kept for `next_seq`.
            self.expected_seq = walk.next_seq;
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = if self.newest_first {
            self.next_backward()
        } else {
            self.next_forward()
        };
        match next {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("segments_planned", &self.plan.len())
            .field("segments_read", &self.loaded)
            .field("newest_first", &self.newest_first)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// Whether a sealed segment may hold an event in the range: `false` only when its sidecar
/// is valid, matches the file's length, and says the segment's times lie outside.
fn segment_may_overlap(dir: &Path, first_seq: u64, path: &Path, since: Option<i64>, until: Option<i64>) -> bool {
    let Some(times) = SegmentTimes::read(dir, first_seq) else {
        return true;
    };
    let len_matches = std::fs::metadata(path).is_ok_and(|m| m.len() == times.len);
    !len_matches || times.may_overlap(since, until)
}

fn corrupt(path: &Path, offset: usize, seq: u64, reason: Corruption) -> LogError {
    LogError::Corrupt {
        segment: path.to_path_buf(),
        offset: offset as u64,
        seq,
        reason,
    }
}

fn bad_header(path: &Path, reason: &str) -> LogError {
    LogError::BadHeader {
        segment: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::event::{Event, EventKind};
    use crate::log::LogWriter;

    const ID: [u8; 16] = [6; 16];

    /// A log of `n` events at times 10, 20, 30, ... in segments of about 300 bytes.
    fn log(n: i64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), ID, 300).unwrap();
        for i in 1..=n {
            let event = Event {
                at: i * 10,
                kind: EventKind::PlanDeleted { name: format!("p{i}") },
            };
            w.append(&event.encode());
            w.commit().unwrap();
        }
        dir
    }

    fn seqs(reader: LogReader) -> Vec<u64> {
        reader.map(|r| r.unwrap().seq).collect()
    }

    #[test]
    fn sealed_segments_are_mapped_and_the_chain_is_checked_across_them() {
        let dir = log(40);
        let mut reader = LogReader::open(dir.path(), ID, 1).unwrap();
        let all: Vec<_> = reader.by_ref().map(|r| r.unwrap().seq).collect();
        assert_eq!(all, (1..=40).collect::<Vec<_>>());
        let segments = crate::log::segments(dir.path()).unwrap().len();
        assert!(segments >= 5, "{segments}");
        assert_eq!(reader.segments_read(), segments);
        assert_eq!(reader.segments_mapped(), segments - 1, "all but the active one");
        // A header whose chain hash does not continue the previous segment is refused
        // before any of its records is read.
        let third = &crate::log::segments(dir.path()).unwrap()[2];
        let mut bytes = fs::read(&third.path).unwrap();
        bytes[32] ^= 1;
        fs::write(&third.path, &bytes).unwrap();
        let err = LogReader::open(dir.path(), ID, 1).unwrap().find_map(Result::err);
        assert!(
            matches!(&err, Some(LogError::BadHeader { segment, .. }) if *segment == third.path),
            "{err:?}"
        );
    }

    #[test]
    fn newest_first_is_oldest_first_reversed() {
        let dir = log(25);
        let forward = seqs(LogReader::open(dir.path(), ID, 1).unwrap());
        let mut backward = seqs(LogReader::open(dir.path(), ID, 1).unwrap().newest_first());
        backward.reverse();
        assert_eq!(forward, backward);
        let tail = seqs(LogReader::open(dir.path(), ID, 18).unwrap().newest_first());
        assert_eq!(tail, (18..=25).rev().collect::<Vec<_>>());
        let range = seqs(
            LogReader::open_range(dir.path(), ID, Some(55), Some(120))
                .unwrap()
                .newest_first(),
        );
        assert_eq!(range, (6..=11).rev().collect::<Vec<_>>());
    }

    #[test]
    fn a_time_range_opens_only_the_segments_it_needs() {
        let dir = log(60);
        let segments = crate::log::segments(dir.path()).unwrap();
        assert!(segments.len() >= 8, "{}", segments.len());
        // Events 20..=29 (times 200..=290) lie in a few middle segments.
        let mut reader = LogReader::open_range(dir.path(), ID, Some(200), Some(300)).unwrap();
        let got: Vec<_> = reader.by_ref().map(|r| r.unwrap().seq).collect();
        assert_eq!(got, (20..=29).collect::<Vec<_>>());
        let needed = segments
            .iter()
            .filter(|s| s.times.is_none_or(|t| t.may_overlap(Some(200), Some(300))))
            .count();
        assert_eq!(reader.segments_planned(), needed);
        assert_eq!(reader.segments_read(), needed);
        assert!(
            needed <= 4 && needed < segments.len() / 2,
            "{needed} of {}",
            segments.len()
        );
        // Open bounds; a range before everything still reads the active segment only.
        assert_eq!(
            seqs(LogReader::open_range(dir.path(), ID, Some(595), None).unwrap()),
            [60]
        );
        let before = LogReader::open_range(dir.path(), ID, None, Some(5)).unwrap();
        assert_eq!(before.segments_planned(), 1);
        assert_eq!(seqs(before), Vec::<u64>::new());
        // Without the sidecars the same query reads every segment, with the same answer.
        for s in &segments {
            let _ = fs::remove_file(crate::log::timeindex::index_path(dir.path(), s.first_seq));
        }
        let mut reader = LogReader::open_range(dir.path(), ID, Some(200), Some(300)).unwrap();
        assert_eq!(reader.by_ref().map(|r| r.unwrap().seq).collect::<Vec<_>>(), got);
        assert_eq!(reader.segments_read(), segments.len());
    }

    #[test]
    fn reading_newest_first_still_reports_damage() {
        let dir = log(20);
        let segments = crate::log::segments(dir.path()).unwrap();
        let first = &segments[0].path;
        let mut bytes = fs::read(first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(first, &bytes).unwrap();
        let results: Vec<_> = LogReader::open(dir.path(), ID, 1).unwrap().newest_first().collect();
        let err = results.last().unwrap().as_ref().unwrap_err();
        assert!(
            matches!(err, LogError::Corrupt { segment, .. } if segment == first),
            "{err:?}"
        );
        assert!(results[..results.len() - 1].iter().all(Result::is_ok));
        // A log whose first segment is gone is refused, not read from the second.
        fs::remove_file(first).unwrap();
        assert!(matches!(
            LogReader::open(dir.path(), ID, 1).unwrap().next(),
            Some(Err(LogError::BadHeader { .. }))
        ));
    }
}
