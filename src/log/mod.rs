//! The append-only event log: the source of truth for every state change.
//!
//! Records ([`frame`]) live in segment files under `DATA/log/`, named by their first
//! sequence number. A single [`LogWriter`] appends batches and fsyncs them (group commit);
//! [`recovery`] reopens the log after a crash, truncating a torn tail and refusing a
//! corrupt middle; [`LogReader`] walks the records in order, checking framing, CRCs,
//! sequence numbers and chain links as it goes.

pub mod frame;
mod reader;
pub mod recovery;
mod segment;
mod writer;

use std::path::PathBuf;

pub use frame::{Frame, FrameError};
pub use reader::{LogReader, Record};
pub use recovery::{Recovered, RecoveryReport};
pub use segment::{SEGMENT_HEADER_LEN, SegmentHeader, genesis_hash};
pub use writer::LogWriter;
pub(crate) use writer::sync_dir;

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
