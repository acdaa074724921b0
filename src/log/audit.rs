//! The full audit of a log: every segment header, every record's framing and CRC, contiguous
//! sequence numbers, chain links within and across segments, the time index sidecars, and
//! the MAC'd head checkpoint. It stops at the first bad record and names it precisely
//! (file, byte offset, sequence number, what is wrong); a caller's hook sees every payload
//! in order for checks of its own (cross-references, say).
//!
//! ```no_run
//! use credstore::log::{Audit, head_key};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (dir, store_id, pepper) = (std::path::Path::new("data/log"), [0u8; 16], credstore::Pepper::from_bytes([0; 32]));
//! let report = Audit::new(dir, store_id)
//!     .head_key(head_key(&pepper))
//!     .inspect(|seq, payload| {
//!         credstore::Event::decode(payload).map(drop).map_err(|e| format!("record {seq}: {e}"))
//!     })
//!     .progress(|done, total| eprintln!("{done}/{total} bytes"))
//!     .run()?;
//! println!("{} records intact", report.records);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use super::frame::{self, FrameError};
use super::head::{self, Head, HeadError};
use super::recovery::{any_record_after, is_torn};
use super::segment::{SEGMENT_HEADER_LEN, SegmentBytes, SegmentHeader, genesis_hash, list_segments};
use super::timeindex::{SegmentTimes, Span, index_path};
use super::walk::Walk;
use super::{Corruption, LogError};

/// Bytes between two progress reports within a segment.
const PROGRESS_EVERY: usize = 4 << 20;

/// A caller's check of each record's payload, in order: `Err(reason)` fails the audit at
/// that record with [`AuditProblem::Rejected`].
type Inspect<'a> = Box<dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a>;
/// Progress: bytes checked so far and bytes in all.
type Progress<'a> = Box<dyn FnMut(u64, u64) + 'a>;

/// A full check of the log in a directory. Build it, then [`Audit::run`] it.
///
/// The hook ([`Audit::inspect`]) is the place for checks the log cannot make itself: the
/// store passes a closure that decodes each event and checks that every use or revoke
/// names a key created earlier. It is called once per record, oldest first, only for
/// records that passed every check of the log's own, so its verdict is reported at the
/// right record too.
pub struct Audit<'a> {
    dir: PathBuf,
    store_id: [u8; 16],
    head_key: Option<head::HeadKey>,
    inspect: Option<Inspect<'a>>,
    progress: Option<Progress<'a>>,
}

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Records checked.
    pub records: u64,
    /// Bytes of segments read.
    pub bytes: u64,
    /// Segments in the log.
    pub segments: usize,
    /// The last record's sequence number (0 for an empty log).
    pub last_seq: u64,
    /// The last record's chain hash (the genesis hash for an empty log).
    pub last_hash: [u8; 32],
    /// What the head checkpoint vouched for.
    pub head: HeadCheck,
    /// Bytes of an unfinished write at the end of the last segment, after every record the
    /// checkpoint covers: crash debris that recovery truncates at the next open, or a batch
    /// being written while the audit read the segment. Not counted as damage.
    pub torn_tail_bytes: u64,
}

/// What the audit could say of the head checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadCheck {
    /// No key was given: the checkpoint was not read. A tail cut off at a record
    /// boundary, or a history rewritten and re-chained, cannot be detected without it.
    NotChecked,
    /// The log holds the checkpointed record with the checkpointed hash. Records after it
    /// (`uncovered` of them) are chained but not yet vouched for by a checkpoint.
    Verified {
        /// The checkpointed sequence number.
        seq: u64,
        /// Records after it.
        uncovered: u64,
    },
    /// There is no checkpoint, and the log has no record for one to vouch for.
    EmptyLog,
}

/// Why an audit did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log could not be read.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The log is not intact: the first problem found.
    #[error("{0}")]
    Failed(Box<AuditFinding>),
}

/// The first bad record (or file) an audit found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} at {}:{offset} (seq {seq}): {problem}", .problem.name(), .file.display())]
pub struct AuditFinding {
    /// The segment (or the `HEAD` or `.idx` file) holding the problem.
    pub file: PathBuf,
    /// Byte offset of the bad record in it (0 for a header or a whole file).
    pub offset: u64,
    /// The sequence number the record there should have had.
    pub seq: u64,
    /// What is wrong.
    pub problem: AuditProblem,
}

/// What an audit found wrong, by kind of tampering or damage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditProblem {
    /// The record's bytes are damaged (a flipped byte): its CRC or length is wrong.
    #[error("the record's bytes are damaged ({0})")]
    Damaged(FrameError),
    /// Records are missing: the record found here carries `found`, so `seq..found` were
    /// deleted (or a whole segment was).
    #[error("{missing} record(s) missing: record {found} stands where {} belongs", .found - .missing)]
    Deleted {
        /// The sequence number found where `seq` was expected.
        found: u64,
        /// How many records are missing.
        missing: u64,
    },
    /// Two records are swapped: `found` (the next one) stands where `seq` should.
    #[error("records are out of order: {found} stands before the record it follows")]
    Reordered {
        /// The sequence number found.
        found: u64,
    },
    /// A sequence number repeats or goes back: a record replayed or moved.
    #[error("sequence number {found} repeats an earlier one")]
    Replayed {
        /// The sequence number found.
        found: u64,
    },
    /// A well-formed record with the right sequence number does not link to the record
    /// before it: it was taken from another store (or another history of this one) and
    /// spliced in.
    #[error("the record does not link to the previous one: spliced from another store or history")]
    Spliced,
    /// A segment's header names another store.
    #[error("the segment belongs to another store")]
    ForeignSegment,
    /// The first segment chains from another store's genesis hash.
    #[error("the log starts from another store's genesis hash")]
    ForeignGenesis,
    /// A segment's header does not continue the chain of the segment before it.
    #[error("the segment's header does not link to the previous segment's last record")]
    SegmentUnlinked,
    /// A segment's header is damaged or the file is not a segment.
    #[error("bad segment header: {0}")]
    BadHeader(String),
    /// The log ends before the record the head checkpoint vouches for: records were cut
    /// off the end.
    #[error("the log ends before record {checkpoint}, which the head checkpoint vouches for: the tail was cut off")]
    TruncatedTail {
        /// The checkpointed sequence number.
        checkpoint: u64,
    },
    /// The record the head checkpoint vouches for has another chain hash: the history up
    /// to it was rewritten.
    #[error("the chain hash of the checkpointed record differs from the checkpoint's: the log was rewritten")]
    Rewritten,
    /// The head checkpoint is missing though the log has records.
    #[error("the head checkpoint is missing")]
    HeadMissing,
    /// The head checkpoint is unreadable, another store's, or its MAC is wrong.
    #[error("bad head checkpoint: {0}")]
    BadHead(HeadError),
    /// A time index sidecar disagrees with its segment (time-range queries would skip
    /// events).
    #[error("the time index disagrees with the segment: {0}")]
    TimeIndex(String),
    /// The caller's hook refused the record.
    #[error("{0}")]
    Rejected(String),
}

impl AuditProblem {
    /// A short name for the kind of problem (`flipped byte`, `deleted record`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AuditProblem::Damaged(_) => "damaged record (flipped byte)",
            AuditProblem::Deleted { .. } => "deleted record",
            AuditProblem::Reordered { .. } => "reordered records",
            AuditProblem::Replayed { .. } => "replayed record",
            AuditProblem::Spliced => "spliced record",
            AuditProblem::ForeignSegment | AuditProblem::ForeignGenesis => "segment from another store",
            AuditProblem::SegmentUnlinked => "unlinked segment",
            AuditProblem::BadHeader(_) => "bad segment header",
            AuditProblem::TruncatedTail { .. } => "truncated tail",
            AuditProblem::Rewritten => "rewritten history",
            AuditProblem::HeadMissing => "missing head checkpoint",
            AuditProblem::BadHead(HeadError::BadMac) => "forged head checkpoint",
            AuditProblem::BadHead(_) => "bad head checkpoint",
            AuditProblem::TimeIndex(_) => "bad time index",
            AuditProblem::Rejected(_) => "rejected record",
        }
    }
}

impl<'a> Audit<'a> {
    /// An audit of the log in `dir` (`DATA/log`) of the store `store_id`.
    pub fn new(dir: &Path, store_id: [u8; 16]) -> Self {
        Audit {
            dir: dir.to_path_buf(),
            store_id,
            head_key: None,
            inspect: None,
            progress: None,
        }
    }

    /// Checks the head checkpoint too, with the key from [`head::head_key`]. Without it a
    /// cut-off tail or a re-chained history goes unnoticed ([`HeadCheck::NotChecked`]).
    pub fn head_key(mut self, key: [u8; 32]) -> Self {
        self.head_key = Some(head::HeadKey(key));
        self
    }

    /// Calls `check(seq, payload)` on every record, oldest first, after the log's own
    /// checks passed for it; an `Err(reason)` fails the audit there.
    pub fn inspect(mut self, check: impl FnMut(u64, &[u8]) -> Result<(), String> + 'a) -> Self {
        self.inspect = Some(Box::new(check));
        self
    }

    /// Calls `report(done, total)` as bytes are checked (every few MiB and per segment).
    pub fn progress(mut self, report: impl FnMut(u64, u64) + 'a) -> Self {
        self.progress = Some(Box::new(report));
        self
    }

    /// Runs the audit.
    ///
    /// # Errors
    /// [`AuditError::Failed`] with the first problem: damage or tampering of a record, a
    /// header, a sidecar or the checkpoint, or the hook's refusal. [`AuditError::Io`] if a
    /// file cannot be read. Never panics, whatever the files hold.
    pub fn run(mut self) -> Result<AuditReport, AuditError> {
        let io = |path: &Path, source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let head_path = head::head_path(&self.dir);
        // The checkpoint is read before the segments: the writer writes it only after the
        // records it vouches for are durable, so the segments read next hold them.
        let head = match &self.head_key {
            None => None,
            Some(key) => Some(match head::read_head_file(&self.dir).map_err(|e| io(&head_path, e))? {
                None => Err(AuditProblem::HeadMissing),
                Some(bytes) => Head::decode(&bytes, &self.store_id, &key.0).map_err(AuditProblem::BadHead),
            }),
        };
        let trusted = head.as_ref().and_then(|h| h.as_ref().ok()).copied();
        let segments = list_segments(&self.dir).map_err(|e| match e {
            LogError::Io { path, source } => io(&path, source),
            other => io(&self.dir, std::io::Error::other(other.to_string())),
        })?;
        let total: u64 = segments
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let Some(last_index) = segments.len().checked_sub(1) else {
            return Err(fail(
                &self.dir,
                0,
                1,
                AuditProblem::BadHeader("the log has no segment".into()),
            ));
        };
        let genesis = genesis_hash(&self.store_id);
        let mut walk_seq = 1u64;
        let mut prev = genesis;
        let mut done = 0u64;
        let mut records = 0u64;
        let mut torn_tail_bytes = 0u64;
        let mut end_offset = 0u64;
        // A sealed segment's time index is checked once the next segment's header shows
        // that the segment ended where it should: a record deleted from its end is named
        // as such, not as a time index that no longer fits.
        let mut unchecked_index: Option<(Span, u64)> = None;
        for (i, (_, path)) in segments.iter().enumerate() {
            let sealed = i < last_index;
            let data = SegmentBytes::load(path, sealed).map_err(|e| match e {
                LogError::Io { path, source } => io(&path, source),
                other => io(path, std::io::Error::other(other.to_string())),
            })?;
            let header = self.check_header(&data, path, walk_seq, &prev)?;
            if let Some((span, len)) = unchecked_index.take() {
                check_time_index(&self.dir, &span, len)?;
            }
            let mut walk = Walk::new(&data, SEGMENT_HEADER_LEN, header.first_seq, header.prev_hash);
            let mut span = Span::new(header.first_seq);
            let mut reported = 0usize;
            loop {
                let offset = walk.pos;
                let step = match walk.step() {
                    None => break,
                    Some(Ok(step)) => step,
                    Some(Err(c)) => match classify(&walk, c, !sealed, trusted.as_ref()) {
                        Verdict::Torn => {
                            torn_tail_bytes = walk.rest().len() as u64;
                            break;
                        }
                        Verdict::Bad(problem) => return Err(fail(path, offset, walk.next_seq, problem)),
                    },
                };
                let seq = step.frame.seq;
                if trusted.is_some_and(|h| h.seq == seq && h.hash != step.hash) {
                    return Err(fail(path, offset, seq, AuditProblem::Rewritten));
                }
                if let Some(inspect) = self.inspect.as_mut() {
                    inspect(seq, step.frame.payload)
                        .map_err(|why| fail(path, offset, seq, AuditProblem::Rejected(why)))?;
                }
                if sealed {
                    span.note(step.frame.payload);
                }
                records += 1;
                if walk.pos - reported >= PROGRESS_EVERY {
                    if let Some(progress) = self.progress.as_mut() {
                        progress(done + walk.pos as u64, total);
                    }
                    reported = walk.pos;
                }
            }
            if sealed {
                unchecked_index = Some((span, data.len() as u64));
            }
            walk_seq = walk.next_seq;
            prev = walk.prev;
            end_offset = walk.pos as u64;
            done += data.len() as u64;
            if let Some(progress) = self.progress.as_mut() {
                progress(done, total);
            }
        }
        let last_seq = walk_seq - 1;
        let last_path = segments.last().map_or_else(|| self.dir.clone(), |(_, p)| p.clone());
        let head = match head {
            None => HeadCheck::NotChecked,
            Some(Err(AuditProblem::HeadMissing)) if last_seq == 0 => HeadCheck::EmptyLog,
            Some(Err(problem)) => return Err(fail(&head_path, 0, 0, problem)),
            Some(Ok(h)) if h.seq > last_seq => {
                let problem = AuditProblem::TruncatedTail { checkpoint: h.seq };
                return Err(fail(&last_path, end_offset, walk_seq, problem));
            }
            Some(Ok(h)) if h.seq == 0 && h.hash != genesis => {
                return Err(fail(&head_path, 0, 0, AuditProblem::Rewritten));
            }
            Some(Ok(h)) => HeadCheck::Verified {
                seq: h.seq,
                uncovered: last_seq - h.seq,
            },
        };
        Ok(AuditReport {
            records,
            bytes: done,
            segments: segments.len(),
            last_seq,
            last_hash: prev,
            head,
            torn_tail_bytes,
        })
    }

    /// Checks a segment's header against the chain so far; returns it.
    fn check_header(
        &self,
        data: &[u8],
        path: &Path,
        walk_seq: u64,
        prev: &[u8; 32],
    ) -> Result<SegmentHeader, AuditError> {
        let header = SegmentHeader::decode(data, path, None).map_err(|e| {
            let reason = match e {
                LogError::BadHeader { reason, .. } => reason,
                other => other.to_string(),
            };
            fail(path, 0, walk_seq, AuditProblem::BadHeader(reason))
        })?;
        if header.store_id != self.store_id {
            return Err(fail(path, 0, walk_seq, AuditProblem::ForeignSegment));
        }
        let first = header.first_seq;
        if first > walk_seq {
            let problem = AuditProblem::Deleted {
                found: first,
                missing: first - walk_seq,
            };
            return Err(fail(path, 0, walk_seq, problem));
        }
        if first < walk_seq {
            return Err(fail(path, 0, walk_seq, AuditProblem::Replayed { found: first }));
        }
        if header.prev_hash != *prev {
            let problem = if first == 1 {
                AuditProblem::ForeignGenesis
            } else {
                AuditProblem::SegmentUnlinked
            };
            return Err(fail(path, 0, walk_seq, problem));
        }
        Ok(header)
    }
}

impl std::fmt::Debug for Audit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("dir", &self.dir)
            .field("head_key", &self.head_key)
            .finish_non_exhaustive()
    }
}

/// What a bad record at the walk's position amounts to.
enum Verdict {
    /// An unfinished write at the end of the active segment, after the checkpoint.
    Torn,
    /// Damage or tampering.
    Bad(AuditProblem),
}

/// Names the problem of the record at `walk`'s position.
fn classify(walk: &Walk<'_>, c: Corruption, active: bool, head: Option<&Head>) -> Verdict {
    let expected = walk.next_seq;
    let rest = walk.rest();
    match c {
        Corruption::Frame(e) => {
            // The recovery rule: a frame failing at the very end of the active segment, with
            // no valid record after it, is a write cut short: crash debris, unless the
            // checkpoint vouches for the record, which was durable before the checkpoint
            // was written; then a record cut short is a cut-off tail, and one whose bytes
            // are all there is damaged.
            if active && is_torn(rest, e) && !any_record_after(rest, expected) {
                return match (head, e) {
                    (Some(h), FrameError::Incomplete { .. }) if expected <= h.seq => {
                        Verdict::Bad(AuditProblem::TruncatedTail { checkpoint: h.seq })
                    }
                    (Some(h), _) if expected <= h.seq => Verdict::Bad(AuditProblem::Damaged(e)),
                    _ => Verdict::Torn,
                };
            }
            Verdict::Bad(AuditProblem::Damaged(e))
        }
        Corruption::SeqGap { found, .. } if found < expected => Verdict::Bad(AuditProblem::Replayed { found }),
        Corruption::SeqGap { found, .. } => {
            // The record after this one is the one expected here: the pair is swapped.
            let swapped = expected.checked_add(1) == Some(found)
                && frame::decode(rest)
                    .ok()
                    .and_then(|f| rest.get(f.encoded_len()..))
                    .and_then(|next| frame::decode(next).ok())
                    .is_some_and(|next| next.seq == expected);
            if swapped {
                Verdict::Bad(AuditProblem::Reordered { found })
            } else {
                Verdict::Bad(AuditProblem::Deleted {
                    found,
                    missing: found - expected,
                })
            }
        }
        Corruption::BrokenChain => Verdict::Bad(AuditProblem::Spliced),
    }
}

/// Checks a sealed segment's sidecar, if it has a valid one, against what the walk saw.
fn check_time_index(dir: &Path, span: &Span, len: u64) -> Result<(), AuditError> {
    let Some(stored) = SegmentTimes::read(dir, span.first_seq) else {
        // Missing or torn (sidecars are not fsync'd): rebuilt at the next open; queries
        // read the segment meanwhile.
        return Ok(());
    };
    let actual = span.times(len);
    if stored == actual {
        return Ok(());
    }
    let why = format!(
        "it says seq {}..={}, times {}..={}, {} bytes; the segment holds seq {}..={}, times {}..={}, {} bytes",
        stored.first_seq,
        stored.last_seq,
        stored.min_at,
        stored.max_at,
        stored.len,
        actual.first_seq,
        actual.last_seq,
        actual.min_at,
        actual.max_at,
        actual.len
    );
    Err(fail(
        &index_path(dir, span.first_seq),
        0,
        span.first_seq,
        AuditProblem::TimeIndex(why),
    ))
}

fn fail(file: &Path, offset: impl TryInto<u64>, seq: u64, problem: AuditProblem) -> AuditError {
    AuditError::Failed(Box::new(AuditFinding {
        file: file.to_path_buf(),
        offset: offset.try_into().unwrap_or(u64::MAX),
        seq,
        problem,
    }))
}
