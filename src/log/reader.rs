//! Walking the log in order, checking everything on the way.

use std::fs;
use std::path::{Path, PathBuf};

use super::frame;
use super::segment::{SEGMENT_HEADER_LEN, SegmentHeader, genesis_hash, list_segments};
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

/// An iterator over the records of a log directory, oldest first, from a given sequence
/// number. It checks segment headers, framing, CRCs, contiguous sequence numbers and chain
/// links, and stops at the first problem with an error naming the record.
pub struct LogReader {
    store_id: [u8; 16],
    segments: std::vec::IntoIter<(u64, PathBuf)>,
    current: Option<(PathBuf, Vec<u8>)>,
    pos: usize,
    expected_seq: u64,
    prev_hash: [u8; 32],
    from_seq: u64,
    failed: bool,
    bytes_read: u64,
}

impl LogReader {
    /// A reader of the log in `dir` yielding records with `seq >= from_seq`.
    ///
    /// Segments wholly before `from_seq` are not read: the chain is picked up from the
    /// header of the segment holding `from_seq`.
    ///
    /// # Errors
    /// [`LogError::Io`] if the directory cannot be listed.
    pub fn open(dir: &Path, store_id: [u8; 16], from_seq: u64) -> Result<Self, LogError> {
        let mut segments = list_segments(dir)?;
        // Keep the last segment whose first_seq <= from_seq, and all after it.
        let skip = segments
            .iter()
            .rposition(|(first, _)| *first <= from_seq.max(1))
            .unwrap_or(0);
        segments.drain(..skip);
        let first_seq = segments.first().map_or(1, |(first, _)| *first);
        Ok(LogReader {
            store_id,
            segments: segments.into_iter(),
            current: None,
            pos: 0,
            expected_seq: first_seq,
            prev_hash: genesis_hash(&store_id),
            from_seq,
            failed: false,
            bytes_read: 0,
        })
    }

    /// Bytes of the segments read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The sequence number the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.expected_seq
    }

    fn load_next_segment(&mut self) -> Result<bool, LogError> {
        let Some((first, path)) = self.segments.next() else {
            return Ok(false);
        };
        let data = fs::read(&path).map_err(|e| LogError::io(&path, e))?;
        let header = SegmentHeader::decode(&data, &path, Some(&self.store_id))?;
        let bad = |reason: String| LogError::BadHeader {
            segment: path.clone(),
            reason,
        };
        if header.first_seq != self.expected_seq {
            return Err(bad(format!(
                "segment starts at seq {first}, expected {} (a segment is missing)",
                self.expected_seq
            )));
        }
        // The first segment of a walk that skipped earlier ones takes the chain from its header.
        let chain_known = self.current.is_some() || header.first_seq == 1;
        if chain_known && header.prev_hash != self.prev_hash {
            return Err(bad("header's chain hash does not match the previous segment".into()));
        }
        self.prev_hash = header.prev_hash;
        self.bytes_read += data.len() as u64;
        self.current = Some((path, data));
        self.pos = SEGMENT_HEADER_LEN;
        Ok(true)
    }

    fn next_record(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            let Some((path, data)) = &self.current else {
                if !self.load_next_segment()? {
                    return Ok(None);
                }
                continue;
            };
            let rest = data.get(self.pos..).unwrap_or_default();
            if rest.is_empty() {
                self.current = None;
                if !self.load_next_segment()? {
                    return Ok(None);
                }
                continue;
            }
            let corrupt = |reason: Corruption| LogError::Corrupt {
                segment: path.clone(),
                offset: self.pos as u64,
                seq: self.expected_seq,
                reason,
            };
            let f = frame::decode(rest).map_err(|e| corrupt(e.into()))?;
            if f.seq != self.expected_seq {
                return Err(corrupt(Corruption::SeqGap {
                    expected: self.expected_seq,
                    found: f.seq,
                }));
            }
            if f.prev != self.prev_hash {
                return Err(corrupt(Corruption::BrokenChain));
            }
            let hash = f.hash();
            self.pos += f.encoded_len();
            self.prev_hash = hash;
            self.expected_seq += 1;
            if f.seq >= self.from_seq {
                return Ok(Some(Record {
                    seq: f.seq,
                    hash,
                    payload: f.payload.to_vec(),
                }));
            }
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
