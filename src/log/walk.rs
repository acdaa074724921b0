//! Walking the records of one segment's bytes in order, checking each frame (length, CRC),
//! its sequence number and its chain link. The reader, recovery's helpers and the audit all
//! walk segments this way; what they do at a bad record differs.

use super::Corruption;
use super::frame::{self, Frame};

/// A position in a segment and what the next record there must carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk<'a> {
    data: &'a [u8],
    /// Byte offset of the next record in the segment.
    pub pos: usize,
    /// The sequence number the next record must carry.
    pub next_seq: u64,
    /// The chain hash the next record's `prev` must equal.
    pub prev: [u8; 32],
}

/// A record the walk accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step<'a> {
    /// The decoded record.
    pub frame: Frame<'a>,
    /// Its chain hash.
    pub hash: [u8; 32],
}

impl<'a> Walk<'a> {
    /// A walk of `data` from byte `pos`, expecting record `next_seq` linked to `prev`.
    pub(crate) fn new(data: &'a [u8], pos: usize, next_seq: u64, prev: [u8; 32]) -> Self {
        Walk {
            data,
            pos,
            next_seq,
            prev,
        }
    }

    /// The bytes from the walk's position to the end of the segment.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// The next record: `None` at the end of the bytes, `Some(Err)` at a bad record (the
    /// walk then stays where it is, at the bad record's offset).
    pub(crate) fn step(&mut self) -> Option<Result<Step<'a>, Corruption>> {
        let rest = self.rest();
        if rest.is_empty() {
            return None;
        }
        let frame = match frame::decode(rest) {
            Ok(f) => f,
            Err(e) => return Some(Err(e.into())),
        };
        if frame.seq != self.next_seq {
            return Some(Err(Corruption::SeqGap {
                expected: self.next_seq,
                found: frame.seq,
            }));
        }
        if frame.prev != self.prev {
            return Some(Err(Corruption::BrokenChain));
        }
        let hash = frame.hash();
        self.pos += frame.encoded_len();
        // A header can claim any first_seq; saturate rather than overflow at u64::MAX.
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev = hash;
        Some(Ok(Step { frame, hash }))
    }
}
