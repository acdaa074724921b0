//! One log record on disk: a length-prefixed, CRC32C-checked frame whose body is chained to
//! the previous record by BLAKE3. `docs/FORMAT.md` gives the layout byte by byte.
//!
//! ```text
//! offset  size  field
//! 0       4     body_len  u32 LE, 40 ..= MAX_BODY_LEN
//! 4       4     crc32c    u32 LE, CRC32C of the body
//! 8       8     seq       u64 LE   \
//! 16      32    prev      [u8; 32]  > body
//! 48      n     payload   n bytes  /
//! ```
//!
//! The record's chain hash is `blake3(body)`; the next record's `prev` must equal it.

/// Bytes before the body: length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;
/// Bytes of the body before the payload: seq and prev.
pub const BODY_FIXED_LEN: usize = 40;
/// The largest body accepted (1 MiB); anything larger is corruption.
pub const MAX_BODY_LEN: usize = 1 << 20;

/// A record decoded from bytes, borrowing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Chain hash of the previous record.
    pub prev: [u8; 32],
    /// The payload (an encoded event).
    pub payload: &'a [u8],
    /// The whole body (seq, prev, payload), whose BLAKE3 is this record's chain hash.
    pub body: &'a [u8],
}

impl Frame<'_> {
    /// This record's chain hash.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(self.body).as_bytes()
    }

    /// Bytes the frame takes on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body.len()
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The buffer ends before the frame does; `needed` is the frame's declared size.
    #[error("record truncated: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the frame needs (header included), or 8 if even the header is cut.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The declared body length is impossible.
    #[error("impossible record length {0}")]
    BadLength(u32),
    /// The CRC does not match the body.
    #[error("CRC32C mismatch")]
    BadCrc,
}

/// Appends one encoded frame to `out` and returns its chain hash.
pub fn encode(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let body_len = BODY_FIXED_LEN + payload.len();
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + body_len);
    // Payloads are bounded by the encoder (events are small); a body over u32 would be a bug.
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let body_start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(payload);
    let body = out.get(body_start..).unwrap_or_default();
    let crc = crc32c::crc32c(body);
    let hash = *blake3::hash(body).as_bytes();
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    hash
}

/// Decodes the frame at the start of `buf`.
///
/// # Errors
/// [`FrameError`]: incomplete, impossible length, or CRC mismatch. Never panics.
pub fn decode(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let header = buf.get(..FRAME_HEADER_LEN).ok_or(FrameError::Incomplete {
        needed: FRAME_HEADER_LEN,
        available: buf.len(),
    })?;
    let (len_bytes, crc_bytes) = header.split_at(4);
    let body_len = u32::from_le_bytes(to_array(len_bytes));
    let body_len_usize = body_len as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len_usize) {
        return Err(FrameError::BadLength(body_len));
    }
    let body = buf
        .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + body_len_usize)
        .ok_or(FrameError::Incomplete {
            needed: FRAME_HEADER_LEN + body_len_usize,
            available: buf.len(),
        })?;
    if crc32c::crc32c(body) != u32::from_le_bytes(to_array(crc_bytes)) {
        return Err(FrameError::BadCrc);
    }
    let (seq_bytes, rest) = body.split_at(8);
    let (prev_bytes, payload) = rest.split_at(32);
    Ok(Frame {
        seq: u64::from_le_bytes(to_array(seq_bytes)),
        prev: to_array(prev_bytes),
        payload,
        body,
    })
}

/// Copies a slice of known length into an array (zero-filled if it is short).
pub(crate) fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_chain() {
        let mut buf = Vec::new();
        let h1 = encode(&mut buf, 1, &[0; 32], b"hello");
        let first_len = buf.len();
        let h2 = encode(&mut buf, 2, &h1, b"");
        let f1 = decode(&buf).unwrap();
        assert_eq!((f1.seq, f1.payload, f1.hash()), (1, &b"hello"[..], h1));
        let f2 = decode(&buf[first_len..]).unwrap();
        assert_eq!((f2.seq, f2.prev, f2.hash()), (2, h1, h2));
    }

    #[test]
    fn damage_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, &[1; 32], b"payload");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Err(FrameError::Incomplete { .. })),
                "cut {cut}"
            );
        }
        for i in 8..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert_eq!(decode(&b), Err(FrameError::BadCrc), "flip at {i}");
        }
        let mut b = buf.clone();
        b[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode(&b), Err(FrameError::BadLength(3)));
    }
}
