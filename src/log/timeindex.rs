//! The per-segment time index: when a segment is sealed, a 64-byte sidecar file beside it
//! records the segment's sequence numbers and the range of its events' times, so a query
//! for a time range opens only the segments that can hold matching events.
//!
//! ```text
//! DATA/log/{first_seq:020}.idx
//! offset  size  field
//! 0       8     magic      b"credidx1"
//! 8       8     first_seq  u64 LE, the segment's first record
//! 16      8     last_seq   u64 LE, its last record (first_seq - 1 if it has none)
//! 24      8     min_at     i64 LE, the earliest event time (unix ms) in the segment
//! 32      8     max_at     i64 LE, the latest event time
//! 40      8     len        u64 LE, the segment's length in bytes when it was sealed
//! 48      4     flags      u32 LE, bit 0: every record's time is known
//! 52      8     reserved   zero
//! 60      4     crc32c     CRC32C of bytes 0..60
//! ```
//!
//! Times are the minimum and maximum, not the first and last: a clock may step back.
//! A sidecar is an optimisation, never trusted for correctness: a missing or damaged one
//! (its CRC fails) means "read the segment"; `LogWriter::open` writes the missing ones
//! again, and `Audit` checks every valid one against its segment.
//!
//! This is the one place the log looks inside a payload: an event's first field is its
//! time (`Event { at: i64, .. }`), so the time is read without decoding the whole event.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::frame::to_array;

/// Bytes of a sidecar file.
pub const TIME_INDEX_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"credidx1";
const FLAG_ALL_TIMED: u32 = 1;

/// What a sealed segment's sidecar says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTimes {
    /// The segment's first sequence number.
    pub first_seq: u64,
    /// Its last record's sequence number (`first_seq - 1` for a segment with no record).
    pub last_seq: u64,
    /// The earliest event time (unix ms) among its records (`i64::MAX` if none has one).
    pub min_at: i64,
    /// The latest event time (`i64::MIN` if none has one).
    pub max_at: i64,
    /// The segment's length in bytes when it was sealed.
    pub len: u64,
    /// Whether every record's time is known; if not, the segment is always read.
    pub all_timed: bool,
}

impl SegmentTimes {
    /// Whether the segment may hold an event with `since <= at < until` (a bound that is
    /// `None` is open). A segment with a record of unknown time may hold anything.
    pub fn may_overlap(&self, since: Option<i64>, until: Option<i64>) -> bool {
        if !self.all_timed {
            return true;
        }
        if self.last_seq < self.first_seq {
            return false;
        }
        since.is_none_or(|s| self.max_at >= s) && until.is_none_or(|u| self.min_at < u)
    }

    /// The sidecar's bytes.
    pub fn encode(&self) -> [u8; TIME_INDEX_LEN] {
        let mut out = [0u8; TIME_INDEX_LEN];
        let fields: [(usize, &[u8]); 7] = [
            (0, MAGIC),
            (8, &self.first_seq.to_le_bytes()),
            (16, &self.last_seq.to_le_bytes()),
            (24, &self.min_at.to_le_bytes()),
            (32, &self.max_at.to_le_bytes()),
            (40, &self.len.to_le_bytes()),
            (48, &u32::from(self.all_timed).to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(slot) = out.get_mut(at..at + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
        }
        let crc = crc32c::crc32c(out.get(..60).unwrap_or_default());
        if let Some(slot) = out.get_mut(60..64) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        out
    }

    /// Parses a sidecar; `None` unless it is exactly one well-formed sidecar (magic, CRC).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != TIME_INDEX_LEN || bytes.get(..8) != Some(&MAGIC[..]) {
            return None;
        }
        let field = |at: usize| to_array::<8>(bytes.get(at..at + 8).unwrap_or_default());
        let crc = u32::from_le_bytes(to_array(bytes.get(60..64).unwrap_or_default()));
        if crc32c::crc32c(bytes.get(..60).unwrap_or_default()) != crc {
            return None;
        }
        let flags = u32::from_le_bytes(to_array(bytes.get(48..52).unwrap_or_default()));
        Some(SegmentTimes {
            first_seq: u64::from_le_bytes(field(8)),
            last_seq: u64::from_le_bytes(field(16)),
            min_at: i64::from_le_bytes(field(24)),
            max_at: i64::from_le_bytes(field(32)),
            len: u64::from_le_bytes(field(40)),
            all_timed: flags & FLAG_ALL_TIMED != 0,
        })
    }

    /// The sidecar of the segment starting at `first_seq` in `dir`, if there is a valid one
    /// that names that segment.
    pub fn read(dir: &Path, first_seq: u64) -> Option<Self> {
        let bytes = fs::read(index_path(dir, first_seq)).ok()?;
        SegmentTimes::decode(&bytes).filter(|t| t.first_seq == first_seq)
    }

    /// Writes the sidecar through a temporary file and a rename, so a reader sees the old
    /// file, no file, or the whole new one. Not fsync'd: a sidecar lost or torn by a crash
    /// fails its CRC and is written again when the log is next opened.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = index_path(dir, self.first_seq);
        let tmp = path.with_extension("idx.tmp");
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&tmp)?.write_all(&self.encode())?;
        fs::rename(&tmp, &path)
    }
}

/// The sidecar path of the segment starting at `first_seq`.
pub(crate) fn index_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.idx"))
}

/// An event's time from its payload (one format byte, then the event in bincode, whose
/// first field is `at`), without decoding the rest; `None` if the payload is no event.
pub fn event_time(payload: &[u8]) -> Option<i64> {
    let (&version, body) = payload.split_first()?;
    if version != crate::event::EVENT_FORMAT {
        return None;
    }
    bincode::serde::decode_from_slice::<i64, _>(body, bincode::config::standard())
        .ok()
        .map(|(at, _)| at)
}

/// The running summary of a segment's records, kept while writing or reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The segment's first sequence number.
    pub first_seq: u64,
    /// Records noted.
    pub records: u64,
    /// Earliest time seen.
    pub min_at: i64,
    /// Latest time seen.
    pub max_at: i64,
    /// Whether a record without a readable time was seen.
    pub untimed: bool,
}

impl Span {
    /// An empty span of the segment starting at `first_seq`.
    pub(crate) fn new(first_seq: u64) -> Self {
        Span {
            first_seq,
            records: 0,
            min_at: i64::MAX,
            max_at: i64::MIN,
            untimed: false,
        }
    }

    /// Notes one more record.
    pub(crate) fn note(&mut self, payload: &[u8]) {
        self.records += 1;
        match event_time(payload) {
            Some(at) => {
                self.min_at = self.min_at.min(at);
                self.max_at = self.max_at.max(at);
            }
            None => self.untimed = true,
        }
    }

    /// Adds the records of `later`, which follow this span's.
    pub(crate) fn extend(&mut self, later: &Span) {
        self.records += later.records;
        self.min_at = self.min_at.min(later.min_at);
        self.max_at = self.max_at.max(later.max_at);
        self.untimed |= later.untimed;
    }

    /// The sidecar for the segment once sealed at `len` bytes.
    pub(crate) fn times(&self, len: u64) -> SegmentTimes {
        SegmentTimes {
            first_seq: self.first_seq,
            last_seq: self.first_seq.saturating_add(self.records).saturating_sub(1),
            min_at: self.min_at,
            max_at: self.max_at,
            len,
            all_timed: !self.untimed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};

    #[test]
    fn sidecar_round_trip_and_damage() {
        let t = SegmentTimes {
            first_seq: 11,
            last_seq: 20,
            min_at: -5,
            max_at: 1_767_225_600_000,
            len: 4096,
            all_timed: true,
        };
        let bytes = t.encode();
        assert_eq!(SegmentTimes::decode(&bytes), Some(t));
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert_eq!(SegmentTimes::decode(&b), None, "flip at {i}");
        }
        assert_eq!(SegmentTimes::decode(&bytes[..63]), None);
    }

    #[test]
    fn overlap_is_half_open_and_unknown_times_always_overlap() {
        let t = Span {
            first_seq: 1,
            records: 3,
            min_at: 100,
            max_at: 200,
            untimed: false,
        }
        .times(1000);
        assert!(t.may_overlap(None, None));
        assert!(t.may_overlap(Some(200), None));
        assert!(!t.may_overlap(Some(201), None));
        assert!(t.may_overlap(None, Some(101)));
        assert!(!t.may_overlap(None, Some(100)));
        assert!(t.may_overlap(Some(150), Some(160)));
        let untimed = SegmentTimes { all_timed: false, ..t };
        assert!(untimed.may_overlap(Some(1000), None));
        let empty = Span::new(5).times(64);
        assert_eq!((empty.first_seq, empty.last_seq), (5, 4));
        assert!(!empty.may_overlap(None, None));
    }

    #[test]
    fn event_time_reads_the_first_field_of_an_event() {
        for at in [0, 1, -1, 63, 64, -65, 1_767_225_600_000, i64::MIN, i64::MAX] {
            let payload = Event {
                at,
                kind: EventKind::PlanDeleted { name: "pro".into() },
            }
            .encode();
            assert_eq!(event_time(&payload), Some(at));
        }
        assert_eq!(event_time(b""), None);
        assert_eq!(event_time(&[2, 0]), None);
        assert_eq!(event_time(&[crate::event::EVENT_FORMAT]), None);
        let mut span = Span::new(1);
        span.note(
            &Event {
                at: 7,
                kind: EventKind::PlanDeleted { name: String::new() },
            }
            .encode(),
        );
        span.note(
            &Event {
                at: 3,
                kind: EventKind::PlanDeleted { name: String::new() },
            }
            .encode(),
        );
        assert_eq!((span.min_at, span.max_at, span.untimed), (3, 7, false));
        span.note(b"not an event");
        assert!(span.untimed);
    }
}
