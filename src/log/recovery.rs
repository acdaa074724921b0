//! Reopening the log after a crash.
//!
//! Only the last segment can hold a partial write: segments are sealed (fsync'd) before a
//! new one begins. Recovery checks every segment header, then walks the last segment's
//! records. A record that fails at the very end of the file (its declared extent reaches
//! the end of the file, or only zero bytes follow) is a torn tail from an unacknowledged
//! batch: it is truncated and reported. A failure with valid-looking data after it is
//! corruption in the middle: an error, never skipped.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::frame::{self, FrameError};
use super::segment::{SEGMENT_HEADER_LEN, SegmentHeader, list_segments};
use super::timeindex::Span;
use super::{Corruption, LogError};

/// Where the log ends after recovery.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The last segment.
    pub segment: PathBuf,
    /// Its valid length in bytes.
    pub len: u64,
    /// The next sequence number to write.
    pub next_seq: u64,
    /// The chain hash of the last record.
    pub last_hash: [u8; 32],
    /// What recovery did.
    pub report: RecoveryReport,
    /// The last segment's records so far, for its time index when it is sealed.
    pub(crate) span: Span,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Bytes of a torn tail that were truncated (0 for a clean log).
    pub truncated_bytes: u64,
    /// Segments in the log.
    pub segments: usize,
    /// Set by the store when opening found an index it could not open or read: why. That
    /// index was set aside (`DATA/index.broken`) and a new one rebuilt from the log.
    pub index_rebuilt: Option<String>,
}

/// Recovers the log in `dir`, truncating a torn tail.
///
/// `keep_through` is the last sequence number known to have been acknowledged (the
/// index's `applied_seq`): a failure at or before it is corruption, never truncated.
/// A failure with any valid record after it is corruption too.
///
/// # Errors
/// [`LogError::BadHeader`] for a damaged or foreign segment header or no segment at all,
/// [`LogError::Corrupt`] for a damaged record before the tail, [`LogError::Io`]. On
/// error nothing has been written.
pub fn recover(dir: &Path, store_id: &[u8; 16], keep_through: u64) -> Result<Recovered, LogError> {
    let segments = list_segments(dir)?;
    let Some(((_, last_path), sealed)) = segments.split_last() else {
        return Err(LogError::BadHeader {
            segment: dir.to_path_buf(),
            reason: "the log has no segment".into(),
        });
    };
    for (_, path) in sealed {
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let mut f = fs::File::open(path).map_err(|e| LogError::io(path, e))?;
        std::io::Read::read_exact(&mut f, &mut head).map_err(|e| LogError::io(path, e))?;
        SegmentHeader::decode(&head, path, Some(store_id))?;
    }
    let data = fs::read(last_path).map_err(|e| LogError::io(last_path, e))?;
    let header = SegmentHeader::decode(&data, last_path, Some(store_id))?;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut next_seq = header.first_seq;
    let mut last_hash = header.prev_hash;
    let mut truncate_at = None;
    let mut span = Span::new(header.first_seq);
    while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
        let corrupt = |reason: Corruption| LogError::Corrupt {
            segment: last_path.clone(),
            offset: pos as u64,
            seq: next_seq,
            reason,
        };
        match frame::decode(rest) {
            Ok(f) if f.seq == next_seq && f.prev == last_hash => {
                span.note(f.payload);
                last_hash = f.hash();
                next_seq = next_seq.saturating_add(1);
                pos += f.encoded_len();
            }
            Ok(f) if f.seq != next_seq => {
                return Err(corrupt(Corruption::SeqGap {
                    expected: next_seq,
                    found: f.seq,
                }));
            }
            Ok(_) => return Err(corrupt(Corruption::BrokenChain)),
            Err(e) if next_seq > keep_through && is_torn(rest, e) && !any_record_after(rest, next_seq) => {
                truncate_at = Some(pos);
                break;
            }
            Err(e) => return Err(corrupt(e.into())),
        }
    }
    let mut report = RecoveryReport {
        segments: segments.len(),
        ..RecoveryReport::default()
    };
    if let Some(at) = truncate_at {
        report.truncated_bytes = (data.len() - at) as u64;
        let f = OpenOptions::new()
            .write(true)
            .open(last_path)
            .map_err(|e| LogError::io(last_path, e))?;
        f.set_len(at as u64).map_err(|e| LogError::io(last_path, e))?;
        f.sync_all().map_err(|e| LogError::io(last_path, e))?;
    }
    Ok(Recovered {
        segment: last_path.clone(),
        len: pos as u64,
        next_seq,
        last_hash,
        report,
        span,
    })
}

/// Whether a valid frame with a sequence number of at least `seq` starts anywhere in
/// `rest` after its first byte: then the failure before it is damage in the middle (a
/// flipped length, say), not a torn tail. Runs only when recovery meets a bad frame.
pub(crate) fn any_record_after(rest: &[u8], seq: u64) -> bool {
    // Only a frame whose sequence number is plausibly a later record of this log is worth
    // its CRC: reading the seq field first keeps a hostile tail (every offset declaring a
    // 1 MiB body) from costing a CRC over a megabyte at every byte.
    const PLAUSIBLE: u64 = 1 << 32;
    (1..rest.len()).any(|i| {
        let Some(r) = rest.get(i..) else {
            return false;
        };
        let declared = r.get(8..16).map(|b| u64::from_le_bytes(frame::to_array(b)));
        if !declared.is_some_and(|s| s >= seq && s - seq < PLAUSIBLE) {
            return false;
        }
        frame::decode(r).is_ok_and(|f| f.seq >= seq)
    })
}

/// Whether a decode failure at the start of `rest` is a torn tail rather than corruption.
pub(crate) fn is_torn(rest: &[u8], err: FrameError) -> bool {
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    match err {
        FrameError::Incomplete { .. } => true,
        // A frame whose declared extent reaches the end of the file (a CRC failure, or a
        // length no record has): the last write was cut short or never completed. A bad
        // frame with more bytes after it is corruption.
        FrameError::BadCrc | FrameError::BadLength(_) => {
            let declared = rest
                .get(..4)
                .map(|b| u32::from_le_bytes(frame::to_array(b)) as usize)
                .unwrap_or(0);
            frame::FRAME_HEADER_LEN.saturating_add(declared) >= rest.len()
        }
    }
}
