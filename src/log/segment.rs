//! Segment files: naming, the 64-byte header, and listing them in order.
//!
//! ```text
//! offset  size  field
//! 0       8     magic      b"credlog1"
//! 8       16    store_id   the store's random id (records spliced from another store fail)
//! 24      8     first_seq  u64 LE, sequence number of the segment's first record
//! 32      32    prev_hash  chain hash of the record before first_seq (genesis for seq 1)
//! ```

use std::fs::{self, File};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use super::LogError;
use super::frame::to_array;

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"credlog1";
const SUFFIX: &str = ".log";

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The store the segment belongs to.
    pub store_id: [u8; 16],
    /// The first record's sequence number.
    pub first_seq: u64,
    /// The chain hash before the first record.
    pub prev_hash: [u8; 32],
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..24].copy_from_slice(&self.store_id);
        out[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        out[32..64].copy_from_slice(&self.prev_hash);
        out
    }

    /// Parses a header, checking the magic and, when given, the store id and first seq.
    ///
    /// # Errors
    /// [`LogError::BadHeader`] naming the segment and the mismatch.
    pub fn decode(bytes: &[u8], path: &Path, store_id: Option<&[u8; 16]>) -> Result<Self, LogError> {
        let bad = |reason: &str| LogError::BadHeader {
            segment: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let head = bytes
            .get(..SEGMENT_HEADER_LEN)
            .ok_or_else(|| bad("file shorter than its header"))?;
        if head.get(..8) != Some(&MAGIC[..]) {
            return Err(bad("not a credstore log segment (bad magic)"));
        }
        let header = SegmentHeader {
            store_id: to_array(head.get(8..24).unwrap_or_default()),
            first_seq: u64::from_le_bytes(to_array(head.get(24..32).unwrap_or_default())),
            prev_hash: to_array(head.get(32..64).unwrap_or_default()),
        };
        if store_id.is_some_and(|id| *id != header.store_id) {
            return Err(bad("segment belongs to another store"));
        }
        if parse_name(path) != Some(header.first_seq) {
            return Err(bad("first sequence number does not match the file name"));
        }
        Ok(header)
    }
}

/// The chain hash before the first record of a store.
pub fn genesis_hash(store_id: &[u8; 16]) -> [u8; 32] {
    blake3::derive_key("credstore 2026 event log genesis v1", store_id)
}

/// The path of the segment starting at `first_seq`.
pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SUFFIX}"))
}

fn parse_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

/// A segment's bytes: mapped when the segment is sealed, read into memory when it is the
/// active (last) one.
pub(crate) enum SegmentBytes {
    /// A sealed segment, mapped read-only.
    Mapped(memmap2::Mmap),
    /// The active segment (or a file too short to map), read with a plain `read`.
    Read(Vec<u8>),
}

impl SegmentBytes {
    /// Loads the segment at `path`: mapped when `sealed`, read otherwise.
    ///
    /// `sealed` must be true only for a segment that is not the last one of its log: only
    /// the last segment is ever appended to or truncated (by recovery), so a sealed one
    /// does not change while it is mapped. See the `SAFETY` comment below.
    ///
    /// # Errors
    /// [`LogError::Io`] if the file cannot be opened, mapped or read.
    pub(crate) fn load(path: &Path, sealed: bool) -> Result<Self, LogError> {
        if !sealed {
            return fs::read(path)
                .map(SegmentBytes::Read)
                .map_err(|e| LogError::io(path, e));
        }
        let file = File::open(path).map_err(|e| LogError::io(path, e))?;
        let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
        if len < SEGMENT_HEADER_LEN as u64 {
            // Too short to be a segment: the header check reports it; nothing to map.
            return fs::read(path)
                .map(SegmentBytes::Read)
                .map_err(|e| LogError::io(path, e));
        }
        let map = map_sealed(&file).map_err(|e| LogError::io(path, e))?;
        // Records are read front to back; the advice only tunes read-ahead.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(SegmentBytes::Mapped(map))
    }

    /// Whether the bytes are a mapping (a sealed segment).
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, SegmentBytes::Mapped(_))
    }
}

impl Deref for SegmentBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SegmentBytes::Mapped(map) => map,
            SegmentBytes::Read(bytes) => bytes,
        }
    }
}

/// Maps a sealed segment read-only: the one `unsafe` block of the crate (`STYLE.md`).
#[expect(
    unsafe_code,
    reason = "mapping a sealed log segment, which is never truncated or rewritten"
)]
fn map_sealed(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a mapping is sound as long as no one truncates or rewrites the file while it
    // is mapped (truncation turns reads of the lost pages into SIGBUS; a rewrite changes
    // bytes behind a `&[u8]`). Callers map only *sealed* segments: every segment of the
    // log except the last. credstore writes only the last segment: `LogWriter` appends to
    // it and `recovery::recover` truncates only it; a segment stops being the last when the
    // writer begins the next one, after which nothing in credstore opens it for writing
    // again, and segments are never deleted or renamed. New segments only ever appear
    // after the existing ones, so a segment that was sealed when the reader listed the
    // directory stays sealed. What credstore cannot rule out is another program (or a
    // person) truncating or editing a sealed segment file in place while it is mapped;
    // that is outside the contract, as for any database file, and documented in
    // docs/FORMAT.md.
    unsafe { memmap2::Mmap::map(file) }
}

/// The segments in `dir`, oldest first, as (first_seq, path).
///
/// # Errors
/// [`LogError::Io`] if the directory cannot be read.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        if let Some(first) = parse_name(&path) {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let h = SegmentHeader {
            store_id: [3; 16],
            first_seq: 42,
            prev_hash: [9; 32],
        };
        let path = segment_path(Path::new("/x"), 42);
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes, &path, Some(&[3; 16])).unwrap(), h);
        assert!(SegmentHeader::decode(&bytes, &path, Some(&[4; 16])).is_err());
        assert!(SegmentHeader::decode(&bytes, &segment_path(Path::new("/x"), 41), None).is_err());
        assert!(SegmentHeader::decode(&bytes[..10], &path, None).is_err());
        let mut bad = bytes;
        bad[0] = b'x';
        assert!(SegmentHeader::decode(&bad, &path, None).is_err());
    }
}
