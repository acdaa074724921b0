//! The head checkpoint: the last durable record's sequence number and chain hash, MAC'd with
//! a key derived from the pepper, in `DATA/log/HEAD`, apart from the segments.
//!
//! ```text
//! offset  size  field
//! 0       8     magic     b"credhed1"
//! 8       16    store_id
//! 24      8     seq       u64 LE, the last record the checkpoint vouches for (0: none)
//! 32      32    hash      that record's chain hash (the genesis hash for seq 0)
//! 64      32    mac       keyed BLAKE3 (key: head_key(pepper)) of store_id || seq LE || hash
//! ```
//!
//! The chain hash alone is no protection against someone who can write the files: BLAKE3
//! is unkeyed, so a rewritten history can be re-chained end to end, and records cut off
//! the end leave a shorter, perfectly valid chain. The MAC'd head pins the chain: without
//! the pepper nobody can make a checkpoint that a rewritten or shortened log agrees with.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use super::frame::to_array;
use crate::secret::Pepper;

/// The head checkpoint's file name, in the log directory.
pub const HEAD_FILE: &str = "HEAD";
/// Bytes of the head checkpoint file.
pub const HEAD_LEN: usize = 96;
const MAGIC: &[u8; 8] = b"credhed1";
const KEY_CONTEXT: &str = "credstore 2026 log head mac v1";

/// The key that MACs the head checkpoint: `blake3::derive_key("credstore 2026 log head mac
/// v1", pepper)`. Pass it to `LogWriter::with_head_key` and `Audit::head_key`.
pub fn head_key(pepper: &Pepper) -> [u8; 32] {
    head_key_from_bytes(pepper.bytes())
}

/// [`head_key`] from the pepper's 32 bytes.
pub fn head_key_from_bytes(pepper: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(KEY_CONTEXT, pepper)
}

/// A head checkpoint: the log held record `seq` with chain hash `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The store the checkpoint belongs to.
    pub store_id: [u8; 16],
    /// The last record it vouches for (0: an empty log).
    pub seq: u64,
    /// That record's chain hash (the genesis hash for seq 0).
    pub hash: [u8; 32],
}

/// Why a head checkpoint file is not a valid checkpoint of this store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Not a head checkpoint at all (wrong length or magic).
    #[error("not a head checkpoint: {0}")]
    Malformed(&'static str),
    /// A checkpoint of another store.
    #[error("the head checkpoint belongs to another store")]
    Foreign,
    /// The MAC does not match: forged, damaged, or made with another pepper.
    #[error("the head checkpoint's MAC is wrong (forged, damaged, or made with another pepper)")]
    BadMac,
}

impl Head {
    /// The MAC of the checkpoint under `key`.
    pub fn mac(&self, key: &[u8; 32]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&self.store_id);
        h.update(&self.seq.to_le_bytes());
        h.update(&self.hash);
        *h.finalize().as_bytes()
    }

    /// The file's bytes, MAC'd with `key`.
    pub fn encode(&self, key: &[u8; 32]) -> [u8; HEAD_LEN] {
        let mut out = [0u8; HEAD_LEN];
        let fields: [(usize, &[u8]); 5] = [
            (0, MAGIC),
            (8, &self.store_id),
            (24, &self.seq.to_le_bytes()),
            (32, &self.hash),
            (64, &self.mac(key)),
        ];
        for (at, bytes) in fields {
            if let Some(slot) = out.get_mut(at..at + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
        }
        out
    }

    /// Parses a checkpoint of `store_id`, checking its MAC under `key` (constant time).
    ///
    /// # Errors
    /// [`HeadError`].
    pub fn decode(bytes: &[u8], store_id: &[u8; 16], key: &[u8; 32]) -> Result<Head, HeadError> {
        let (head, mac) = Head::decode_unverified(bytes)?;
        if head.store_id != *store_id {
            return Err(HeadError::Foreign);
        }
        if blake3::Hash::from_bytes(head.mac(key)) != blake3::Hash::from_bytes(mac) {
            return Err(HeadError::BadMac);
        }
        Ok(head)
    }

    /// Parses a checkpoint without checking its MAC; returns it and the MAC it carries.
    ///
    /// # Errors
    /// [`HeadError::Malformed`].
    pub fn decode_unverified(bytes: &[u8]) -> Result<(Head, [u8; 32]), HeadError> {
        if bytes.len() != HEAD_LEN {
            return Err(HeadError::Malformed("wrong length"));
        }
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(HeadError::Malformed("bad magic"));
        }
        let field = |from: usize, to: usize| bytes.get(from..to).unwrap_or_default();
        let head = Head {
            store_id: to_array(field(8, 24)),
            seq: u64::from_le_bytes(to_array(field(24, 32))),
            hash: to_array(field(32, 64)),
        };
        Ok((head, to_array(field(64, 96))))
    }

    /// Writes the checkpoint to `dir/HEAD`: a temporary file, fsync'd, renamed over the old
    /// one, so after a crash the file is the old checkpoint or the new one, whole. With
    /// `sync_dir` the directory is fsync'd too, making the rename itself durable (without
    /// it a crash may bring back the previous checkpoint, which is still valid).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, dir: &Path, key: &[u8; 32], sync_dir: bool) -> std::io::Result<()> {
        self.write_to(&head_path(dir), key, sync_dir)
    }

    /// [`Head::write`] to the file `path` (a witness outside the data directory, say),
    /// through `path` with `.tmp` added.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_to(&self, path: &Path, key: &[u8; 32], sync_dir: bool) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&tmp)?;
        file.write_all(&self.encode(key))?;
        file.sync_data()?;
        drop(file);
        fs::rename(&tmp, path)?;
        if sync_dir && let Some(dir) = path.parent() {
            super::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// The head checkpoint's path in the log directory `dir`.
pub fn head_path(dir: &Path) -> PathBuf {
    dir.join(HEAD_FILE)
}

/// The bytes of `dir/HEAD`, or `None` if there is no such file.
///
/// # Errors
/// I/O errors other than "not found".
pub(crate) fn read_head_file(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(head_path(dir)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The sequence number `dir/HEAD` claims for `store_id`, MAC unchecked (0 without one).
/// Recovery uses it only to refuse truncating a record the checkpoint says was durable: a
/// forged claim can make it refuse a genuine torn tail (open fails; `audit` names the
/// forged checkpoint), never make it drop a record.
pub(crate) fn claimed_seq(dir: &Path, store_id: &[u8; 16]) -> u64 {
    read_head_file(dir)
        .ok()
        .flatten()
        .and_then(|bytes| Head::decode_unverified(&bytes).ok())
        .filter(|(head, _)| head.store_id == *store_id)
        .map_or(0, |(head, _)| head.seq)
}

/// A MAC key held by the writer: wiped on drop, never printed.
#[derive(Clone)]
pub(crate) struct HeadKey(pub(crate) [u8; 32]);

impl Drop for HeadKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for HeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_and_tampering() {
        let key = head_key_from_bytes(&[7; 32]);
        let head = Head {
            store_id: [1; 16],
            seq: 42,
            hash: [9; 32],
        };
        let bytes = head.encode(&key);
        assert_eq!(Head::decode(&bytes, &[1; 16], &key), Ok(head));
        assert_eq!(Head::decode(&bytes, &[2; 16], &key), Err(HeadError::Foreign));
        let other = head_key_from_bytes(&[8; 32]);
        assert_eq!(Head::decode(&bytes, &[1; 16], &other), Err(HeadError::BadMac));
        for i in 8..HEAD_LEN {
            let mut b = bytes;
            b[i] ^= 1;
            assert!(Head::decode(&b, &[1; 16], &key).is_err(), "flip at {i}");
        }
        assert!(matches!(
            Head::decode(&bytes[..95], &[1; 16], &key),
            Err(HeadError::Malformed(_))
        ));
        // A forger who knows everything but the pepper cannot make a valid MAC.
        let forged = Head { seq: 41, ..head }.encode(&[0; 32]);
        assert_eq!(Head::decode(&forged, &[1; 16], &key), Err(HeadError::BadMac));
    }

    #[test]
    fn write_replaces_atomically_and_claimed_seq_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = head_key(&Pepper::from_bytes([3; 32]));
        assert_eq!(claimed_seq(dir.path(), &[1; 16]), 0);
        for seq in [1, 5] {
            Head {
                store_id: [1; 16],
                seq,
                hash: [0; 32],
            }
            .write(dir.path(), &key, seq == 5)
            .unwrap();
            assert_eq!(claimed_seq(dir.path(), &[1; 16]), seq);
        }
        assert_eq!(claimed_seq(dir.path(), &[2; 16]), 0);
        assert!(!dir.path().join("HEAD.tmp").exists());
        assert_eq!(format!("{:?}", HeadKey(key)), "HeadKey(<redacted>)");
    }
}
