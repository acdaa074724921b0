//! The append-only event log: the source of truth for every state change.
//!
//! Records ([`frame`]) live in segment files under `DATA/log/`, named by their first
//! sequence number. A single [`LogWriter`] appends batches and fsyncs them (group commit);
//! [`recovery`] reopens the log after a crash, truncating a torn tail and refusing a
//! corrupt middle; [`LogReader`] walks the records in order (or newest first, or only the
//! segments a time range needs), checking framing, CRCs, sequence numbers and chain links
//! as it goes; [`Audit`] checks everything, the MAC'd head checkpoint ([`head`]) and the
//! time index sidecars ([`timeindex`]) included, and names the first bad record.
//!
//! Files in `DATA/log/` (`docs/FORMAT.md` has them byte by byte):
//!
//! ```text
//! {first_seq:020}.log   segments; all but the last are sealed: never written again, mapped to read
//! {first_seq:020}.idx   a sealed segment's time index (seq and event-time range)
//! HEAD                  the head checkpoint: last seq and chain hash, MAC'd with a key from the pepper
//! *.tmp                 a roll, sidecar or checkpoint being written; removed on open
//! ```

mod audit;
pub mod frame;
pub mod head;
mod reader;
pub mod recovery;
mod segment;
pub mod timeindex;
mod walk;
mod writer;

use std::path::{Path, PathBuf};

pub use audit::{Audit, AuditError, AuditFinding, AuditProblem, AuditReport, HeadCheck};
pub use frame::{Frame, FrameError};
pub use head::{Head, HeadError, head_key};
pub use reader::{LogReader, Record};
pub use recovery::{Recovered, RecoveryReport};
pub use segment::{SEGMENT_HEADER_LEN, SegmentHeader, genesis_hash};
pub use timeindex::SegmentTimes;
pub(crate) use writer::sync_dir;
pub use writer::{DEFAULT_HEAD_EVERY, DEFAULT_HEAD_EVERY_RECORDS, LogWriter};

/// One segment of a log, as [`segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Its first sequence number (from its name).
    pub first_seq: u64,
    /// Whether it is sealed (not the last segment).
    pub sealed: bool,
    /// Its time index, for a sealed segment that has a valid one.
    pub times: Option<SegmentTimes>,
}

/// The segments of the log in `dir`, oldest first, with their time indexes: what a
/// time-range query ([`LogReader::open_range`]) chooses from.
///
/// # Errors
/// [`LogError::Io`] if the directory cannot be listed.
pub fn segments(dir: &Path) -> Result<Vec<SegmentInfo>, LogError> {
    let list = segment::list_segments(dir)?;
    let last = list.len().saturating_sub(1);
    Ok(list
        .into_iter()
        .enumerate()
        .map(|(i, (first_seq, path))| {
            let sealed = i < last;
            SegmentInfo {
                times: if sealed {
                    SegmentTimes::read(dir, first_seq)
                } else {
                    None
                },
                path,
                first_seq,
                sealed,
            }
        })
        .collect())
}

/// The default size at which a segment is sealed and a new one begun.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// Everything that can go wrong reading or writing the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record before the tail is damaged: never skipped, always reported.
    #[error("corrupt record at {segment}:{offset} (expected seq {seq}): {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad record in it.
        offset: u64,
        /// The sequence number the record should have had.
        seq: u64,
        /// What was wrong.
        reason: Corruption,
    },
    /// A segment header is damaged or does not belong to this store.
    #[error("bad segment header in {segment}: {reason}")]
    BadHeader {
        /// The segment file.
        segment: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A record's payload could not be decoded.
    #[error("record {seq}: undecodable payload: {reason}")]
    BadPayload {
        /// The record.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
    /// A previous write failed; the log refuses further writes until reopened.
    #[error("the log writer failed earlier and was stopped; reopen the store")]
    Poisoned,
    /// The head checkpoint on disk disagrees with the log (see
    /// [`LogWriter::head_conflict`]); it is kept as evidence and not overwritten.
    #[error("the head checkpoint disagrees with the log: {0}")]
    HeadConflict(AuditProblem),
}

/// What was wrong with a corrupt record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The frame itself is bad.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The sequence number is not the next one.
    #[error("sequence number {found}, expected {expected}")]
    SeqGap {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// The record does not link to the previous one.
    #[error("chain link broken: prev hash does not match the previous record")]
    BrokenChain,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}
