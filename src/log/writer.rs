//! The single writer: appends records to a buffer, then writes and fsyncs them as one
//! batch (group commit), rolling to a new segment past the size limit.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::LogError;
use super::frame;
use super::recovery::{RecoveryReport, recover};
use super::segment::{SegmentHeader, genesis_hash, segment_path};

/// Appends to the log. Not shared: one thread owns it.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    store_id: [u8; 16],
    file: File,
    path: PathBuf,
    len: u64,
    segment_size: u64,
    next_seq: u64,
    last_hash: [u8; 32],
    buf: Vec<u8>,
    /// Sequence number and hash as of the last durable commit, to roll back a failed batch.
    committed: (u64, [u8; 32]),
    poisoned: bool,
}

impl LogWriter {
    /// Creates a new, empty log in `dir` (which must exist) with its first segment.
    ///
    /// # Errors
    /// [`LogError::Io`].
    pub fn create(dir: &Path, store_id: [u8; 16], segment_size: u64) -> Result<Self, LogError> {
        let genesis = genesis_hash(&store_id);
        let (file, path) = new_segment(dir, store_id, 1, genesis)?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            store_id,
            file,
            path,
            len: super::SEGMENT_HEADER_LEN as u64,
            segment_size,
            next_seq: 1,
            last_hash: genesis,
            buf: Vec::new(),
            committed: (1, genesis),
            poisoned: false,
        })
    }

    /// Opens the log in `dir` for appending, recovering it first; records through
    /// `keep_through` are known acknowledged and are never truncated.
    ///
    /// # Errors
    /// As [`recover`], plus [`LogError::Io`].
    pub fn open(
        dir: &Path,
        store_id: [u8; 16],
        segment_size: u64,
        keep_through: u64,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let r = recover(dir, &store_id, keep_through)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&r.segment)
            .map_err(|e| LogError::io(&r.segment, e))?;
        let writer = LogWriter {
            dir: dir.to_path_buf(),
            store_id,
            file,
            path: r.segment,
            len: r.len,
            segment_size,
            next_seq: r.next_seq,
            last_hash: r.last_hash,
            buf: Vec::new(),
            committed: (r.next_seq, r.last_hash),
            poisoned: false,
        };
        Ok((writer, r.report))
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the last durable record (0 for an empty log).
    pub fn durable_seq(&self) -> u64 {
        self.committed.0 - 1
    }

    /// Buffers a record and returns its sequence number. Nothing is durable until
    /// [`LogWriter::commit`] returns.
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        let seq = self.next_seq;
        self.last_hash = frame::encode(&mut self.buf, seq, &self.last_hash, payload);
        self.next_seq += 1;
        seq
    }

    /// Drops the records buffered since the last commit.
    pub fn discard(&mut self) {
        self.buf.clear();
        (self.next_seq, self.last_hash) = self.committed;
    }

    /// Writes and fsyncs the buffered records as one batch; rolls the segment if full.
    ///
    /// # Errors
    /// [`LogError::Io`] (after which the writer is poisoned: the file's state is unknown)
    /// or [`LogError::Poisoned`].
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| LogError::io(&self.path, e));
        if let Err(e) = result {
            self.poisoned = true;
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        self.committed = (self.next_seq, self.last_hash);
        if self.len >= self.segment_size {
            let (file, path) = new_segment(&self.dir, self.store_id, self.next_seq, self.last_hash)
                .inspect_err(|_| self.poisoned = true)?;
            self.file = file;
            self.path = path;
            self.len = super::SEGMENT_HEADER_LEN as u64;
        }
        Ok(())
    }
}

/// Creates a segment file with its header, durable (file and directory fsync'd).
fn new_segment(
    dir: &Path,
    store_id: [u8; 16],
    first_seq: u64,
    prev_hash: [u8; 32],
) -> Result<(File, PathBuf), LogError> {
    let path = segment_path(dir, first_seq);
    let mut opts = OpenOptions::new();
    opts.create_new(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&path).map_err(|e| LogError::io(&path, e))?;
    let header = SegmentHeader {
        store_id,
        first_seq,
        prev_hash,
    };
    file.write_all(&header.encode())
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io(&path, e))?;
    sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok((file, path))
}

/// Fsyncs a directory so a new entry in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::super::{LogReader, recovery::recover};
    use super::*;

    #[test]
    fn write_reopen_read_and_roll() {
        let dir = tempfile::tempdir().unwrap();
        let id = [5u8; 16];
        let mut w = LogWriter::create(dir.path(), id, 300).unwrap();
        for i in 0..20u8 {
            w.append(&[i; 30]);
            if i % 3 == 0 {
                w.commit().unwrap();
            }
        }
        w.commit().unwrap();
        drop(w);
        let (mut w, report) = LogWriter::open(dir.path(), id, 300, 20).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert!(report.segments > 3);
        assert_eq!(w.next_seq(), 21);
        w.append(b"after reopen");
        w.commit().unwrap();
        let records: Vec<_> = LogReader::open(dir.path(), id, 1)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 21);
        assert_eq!(records[20].payload, b"after reopen");
        let tail: Vec<_> = LogReader::open(dir.path(), id, 15)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tail.first().unwrap().seq, 15);
        assert_eq!(tail.len(), 7);
    }

    #[test]
    fn torn_tail_is_truncated_corrupt_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let id = [1u8; 16];
        let mut w = LogWriter::create(dir.path(), id, 1 << 20).unwrap();
        for i in 0..5u8 {
            w.append(&[i; 10]);
        }
        w.commit().unwrap();
        let path = w.path.clone();
        drop(w);
        let full = fs::read(&path).unwrap();
        // Cut the last record in half: torn.
        fs::write(&path, &full[..full.len() - 20]).unwrap();
        assert!(
            matches!(recover(dir.path(), &id, 5), Err(LogError::Corrupt { seq: 5, .. })),
            "an acknowledged record is never truncated"
        );
        let r = recover(dir.path(), &id, 4).unwrap();
        assert_eq!(r.next_seq, 5);
        assert!(r.report.truncated_bytes > 0);
        // Flip a byte in the second record: corrupt middle.
        let mut bad = full.clone();
        bad[64 + 58 + 20] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            recover(dir.path(), &id, 0),
            Err(LogError::Corrupt { seq: 2, .. })
        ));
        // A flipped length in a middle record that points past the end: later records
        // are still there, so it is corruption, not a torn tail.
        let mut long = full.clone();
        long[64 + 58 + 1] = 0x7f;
        fs::write(&path, &long).unwrap();
        assert!(matches!(
            recover(dir.path(), &id, 0),
            Err(LogError::Corrupt { seq: 2, .. })
        ));
        // A foreign store id is refused.
        fs::write(&path, &full).unwrap();
        assert!(matches!(
            recover(dir.path(), &[2u8; 16], 0),
            Err(LogError::BadHeader { .. })
        ));
    }
}
