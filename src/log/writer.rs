//! The single writer: appends records to a buffer, then writes and fsyncs them as one
//! batch (group commit), rolling to a new segment past the size limit, sealing the full one
//! with its time index, and checkpointing the chain head (MAC'd) every so often.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::audit::AuditProblem;
use super::frame;
use super::head::{self, Head, HeadError, HeadKey};
use super::recovery::{RecoveryReport, recover};
use super::segment::{SEGMENT_HEADER_LEN, SegmentBytes, SegmentHeader, genesis_hash, list_segments, segment_path};
use super::timeindex::{SegmentTimes, Span};
use super::walk::Walk;
use super::{Corruption, LogError, LogReader};

/// Records after which a commit checkpoints the head, by default.
pub const DEFAULT_HEAD_EVERY_RECORDS: u64 = 1024;
/// Time after which a commit checkpoints the head, by default.
pub const DEFAULT_HEAD_EVERY: Duration = Duration::from_secs(1);

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
    /// The active segment's durable records, for its time index when it is sealed.
    span: Span,
    /// The buffered records' part of the span.
    pending: Span,
    /// The head checkpoint, once a key is given.
    head: Option<HeadState>,
    head_every_records: u64,
    head_every: Duration,
}

/// The writer's side of the head checkpoint.
#[derive(Debug)]
struct HeadState {
    key: HeadKey,
    /// The sequence number of the checkpoint on disk, if there is a valid one.
    written: Option<u64>,
    /// When it was written (or the key given).
    written_at: Instant,
    /// The checkpoint on disk disagrees with the log: it is kept as evidence, never
    /// overwritten, until [`LogWriter::reset_head`].
    conflict: Option<AuditProblem>,
    /// A copy of every checkpoint kept outside the data directory, if one was given.
    witness: Option<PathBuf>,
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
            len: SEGMENT_HEADER_LEN as u64,
            segment_size,
            next_seq: 1,
            last_hash: genesis,
            buf: Vec::new(),
            committed: (1, genesis),
            poisoned: false,
            span: Span::new(1),
            pending: Span::new(1),
            head: None,
            head_every_records: DEFAULT_HEAD_EVERY_RECORDS,
            head_every: DEFAULT_HEAD_EVERY,
        })
    }

    /// Opens the log in `dir` for appending, recovering it first; records through
    /// `keep_through` are known acknowledged and are never truncated, nor are records
    /// through the one the head checkpoint (`dir/HEAD`) claims. Leftover temporary files
    /// of an interrupted roll or checkpoint are removed, and a sealed segment whose time
    /// index sidecar is missing or torn gets it written again (reading that segment once).
    ///
    /// # Errors
    /// As [`recover`], plus [`LogError::Io`].
    pub fn open(
        dir: &Path,
        store_id: [u8; 16],
        segment_size: u64,
        keep_through: u64,
    ) -> Result<(Self, RecoveryReport), LogError> {
        remove_temporary_files(dir)?;
        let keep_through = keep_through.max(head::claimed_seq(dir, &store_id));
        let r = recover(dir, &store_id, keep_through)?;
        rebuild_time_indexes(dir, &r.segment);
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
            span: r.span,
            pending: Span::new(r.next_seq),
            head: None,
            head_every_records: DEFAULT_HEAD_EVERY_RECORDS,
            head_every: DEFAULT_HEAD_EVERY,
        };
        Ok((writer, r.report))
    }

    /// Gives the writer the key that MACs the head checkpoint ([`head::head_key`] of the
    /// pepper). From then on a commit checkpoints the head when
    /// [`DEFAULT_HEAD_EVERY_RECORDS`] records or [`DEFAULT_HEAD_EVERY`] have passed since the
    /// last checkpoint (see [`LogWriter::with_head_interval`]), and dropping the writer
    /// checkpoints whatever is left.
    ///
    /// The checkpoint already on disk is checked against the log first. If it disagrees
    /// (MAC wrong, another store's, missing while the log has records, ahead of the log,
    /// or vouching for a hash the log does not have at that record), it is evidence of
    /// tampering and is never overwritten: [`LogWriter::head_conflict`] says what is wrong,
    /// and only [`LogWriter::reset_head`] replaces it. A missing checkpoint of an empty log
    /// is written at once.
    pub fn with_head_key(mut self, key: [u8; 32]) -> Self {
        let key = HeadKey(key);
        let (written, conflict) = match self.check_head_on_disk(&key) {
            Ok(Some(seq)) => (Some(seq), None),
            Ok(None) if self.durable_seq() == 0 => (None, None),
            Ok(None) => (None, Some(AuditProblem::HeadMissing)),
            Err(problem) => (None, Some(problem)),
        };
        self.head = Some(HeadState {
            key,
            written,
            written_at: Instant::now(),
            conflict,
            witness: None,
        });
        if written.is_none() && self.head_conflict().is_none() {
            // An empty log: checkpoint it now, so a checkpoint exists before any record
            // does. If this fails, the first commit tries again.
            let _ = self.checkpoint_head();
        }
        self
    }

    /// Writes every head checkpoint to `path` too: a witness outside the data directory,
    /// which a rollback of the whole directory cannot take back with it. Call it after
    /// [`LogWriter::with_head_key`]; without a head key there is nothing to write.
    pub fn with_witness(mut self, path: PathBuf) -> Self {
        if let Some(head) = self.head.as_mut() {
            head.witness = Some(path);
        }
        self
    }

    /// Sets how often commits checkpoint the head: when `records` records or `every` have
    /// passed since the last checkpoint, whichever comes first. A checkpoint costs one
    /// small write, one fsync and a rename on the commit path.
    pub fn with_head_interval(mut self, records: u64, every: Duration) -> Self {
        self.head_every_records = records.max(1);
        self.head_every = every;
        self
    }

    /// What is wrong with the head checkpoint on disk, if [`LogWriter::with_head_key`]
    /// found it disagreeing with the log (it is then left as it is).
    pub fn head_conflict(&self) -> Option<&AuditProblem> {
        self.head.as_ref().and_then(|h| h.conflict.as_ref())
    }

    /// Writes the head checkpoint now (durably, directory included) if it is behind the
    /// log: for a clean close, or right after creating a store.
    ///
    /// # Errors
    /// [`LogError::HeadConflict`] if the checkpoint on disk disagrees with the log,
    /// [`LogError::Poisoned`], [`LogError::Io`]. Without a head key, nothing to do: `Ok`.
    pub fn checkpoint_head(&mut self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let (seq, hash) = (self.durable_seq(), self.committed.1);
        let Some(head) = self.head.as_mut() else {
            return Ok(());
        };
        if let Some(problem) = &head.conflict {
            return Err(LogError::HeadConflict(problem.clone()));
        }
        if head.written == Some(seq) {
            return Ok(());
        }
        write_head(&self.dir, self.store_id, head, seq, hash, true)
    }

    /// Replaces a conflicting head checkpoint with one of the log as it is now, accepting
    /// the log's current contents as genuine. Only after an audit has been reviewed: this
    /// erases the evidence [`LogWriter::head_conflict`] reported.
    ///
    /// # Errors
    /// [`LogError::Poisoned`], [`LogError::Io`]. Without a head key, nothing to do: `Ok`.
    pub fn reset_head(&mut self) -> Result<(), LogError> {
        if let Some(head) = self.head.as_mut() {
            head.conflict = None;
            head.written = None;
        }
        self.checkpoint_head()
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the last durable record (0 for an empty log).
    pub fn durable_seq(&self) -> u64 {
        self.committed.0 - 1
    }

    /// The chain hash of the last durable record (the genesis hash for an empty log).
    pub fn durable_hash(&self) -> [u8; 32] {
        self.committed.1
    }

    /// The chain hash of durable record `seq` (the genesis hash for 0), `None` past the end.
    ///
    /// # Errors
    /// What reading the record meets: [`LogError::Corrupt`], [`LogError::Io`].
    pub fn hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, LogError> {
        if seq > self.durable_seq() {
            return Ok(None);
        }
        if seq == self.durable_seq() {
            return Ok(Some(self.committed.1));
        }
        if seq == 0 {
            return Ok(Some(genesis_hash(&self.store_id)));
        }
        match LogReader::open(&self.dir, self.store_id, seq)?.next() {
            Some(Ok(record)) if record.seq == seq => Ok(Some(record.hash)),
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }

    /// Buffers a record and returns its sequence number. Nothing is durable until
    /// [`LogWriter::commit`] returns.
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        let seq = self.next_seq;
        self.last_hash = frame::encode(&mut self.buf, seq, &self.last_hash, payload);
        self.pending.note(payload);
        self.next_seq += 1;
        seq
    }

    /// Drops the records buffered since the last commit.
    pub fn discard(&mut self) {
        self.buf.clear();
        (self.next_seq, self.last_hash) = self.committed;
        self.pending = Span::new(self.committed.0);
    }

    /// Writes and fsyncs the buffered records as one batch. A segment that reached the
    /// segment size is sealed first (its time index written) and a new one begun, so the
    /// batch goes to the new segment; a head checkpoint follows when one is due.
    ///
    /// # Errors
    /// [`LogError::Io`] (after which the writer is poisoned: the file's state is unknown)
    /// or [`LogError::Poisoned`]. An error means the batch is not durable; a failed head
    /// checkpoint is no error (the batch is durable): it is tried again at the next commit.
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.len >= self.segment_size {
            self.roll().inspect_err(|_| self.poisoned = true)?;
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
        self.span.extend(&self.pending);
        self.pending = Span::new(self.next_seq);
        self.checkpoint_if_due();
        Ok(())
    }

    /// Seals the active segment (its time index, best effort: a missing one is rebuilt at
    /// the next open) and begins the next one at the next sequence number.
    fn roll(&mut self) -> Result<(), LogError> {
        let _ = self.span.times(self.len).write(&self.dir);
        let (first_seq, prev) = self.committed;
        let (file, path) = new_segment(&self.dir, self.store_id, first_seq, prev)?;
        self.file = file;
        self.path = path;
        self.len = SEGMENT_HEADER_LEN as u64;
        self.span = Span::new(first_seq);
        Ok(())
    }

    /// Checkpoints the head if a key was given and enough records or time have passed.
    fn checkpoint_if_due(&mut self) {
        let (seq, hash) = (self.durable_seq(), self.committed.1);
        let Some(head) = self.head.as_mut() else {
            return;
        };
        let due = head.conflict.is_none()
            && match head.written {
                None => true,
                Some(written) => {
                    seq > written
                        && (seq - written >= self.head_every_records || head.written_at.elapsed() >= self.head_every)
                }
            };
        if due {
            // The rename need not be durable at once: a crash brings back the previous
            // checkpoint, which is still true. A failure is retried at the next commit.
            let _ = write_head(&self.dir, self.store_id, head, seq, hash, false);
        }
    }

    /// Checks the checkpoint on disk against the log: `Some(seq)` if it is valid and the
    /// log holds record `seq` with its hash, `None` if there is none.
    fn check_head_on_disk(&self, key: &HeadKey) -> Result<Option<u64>, AuditProblem> {
        let bytes = match head::read_head_file(&self.dir) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(_) => return Err(AuditProblem::BadHead(HeadError::Malformed("unreadable"))),
        };
        let h = Head::decode(&bytes, &self.store_id, &key.0).map_err(AuditProblem::BadHead)?;
        let durable = self.durable_seq();
        if h.seq > durable {
            return Err(AuditProblem::TruncatedTail { checkpoint: h.seq });
        }
        let hash = if h.seq == durable {
            self.committed.1
        } else if h.seq == 0 {
            genesis_hash(&self.store_id)
        } else {
            match LogReader::open(&self.dir, self.store_id, h.seq).map(|mut r| r.next()) {
                Ok(Some(Ok(record))) if record.seq == h.seq => record.hash,
                Ok(Some(Err(LogError::Corrupt {
                    reason: Corruption::Frame(e),
                    ..
                }))) => return Err(AuditProblem::Damaged(e)),
                _ => return Err(AuditProblem::Rewritten),
            }
        };
        if hash != h.hash {
            return Err(AuditProblem::Rewritten);
        }
        Ok(Some(h.seq))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Errors at drop have nowhere to go; `checkpoint_head` reports them.
        if self.head.is_some() && !self.poisoned && self.head_conflict().is_none() {
            let _ = self.checkpoint_head();
        }
    }
}

/// Writes the checkpoint of record `seq` (chain hash `hash`) and notes it.
fn write_head(
    dir: &Path,
    store_id: [u8; 16],
    state: &mut HeadState,
    seq: u64,
    hash: [u8; 32],
    sync_dir: bool,
) -> Result<(), LogError> {
    let head = Head { store_id, seq, hash };
    head.write(dir, &state.key.0, sync_dir)
        .map_err(|e| LogError::io(head::head_path(dir), e))?;
    if let Some(witness) = &state.witness {
        head.write_to(witness, &state.key.0, sync_dir)
            .map_err(|e| LogError::io(witness, e))?;
    }
    state.written = Some(seq);
    state.written_at = Instant::now();
    Ok(())
}

/// Creates a segment file with its header, durable (file and directory fsync'd): written
/// under a temporary name and renamed, so a crash leaves either no segment or a whole
/// header, never a short file that would stop the log from opening.
fn new_segment(
    dir: &Path,
    store_id: [u8; 16],
    first_seq: u64,
    prev_hash: [u8; 32],
) -> Result<(File, PathBuf), LogError> {
    let path = segment_path(dir, first_seq);
    if path.exists() {
        let e = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "segment already exists");
        return Err(LogError::io(&path, e));
    }
    let tmp = path.with_extension("log.tmp");
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    let header = SegmentHeader {
        store_id,
        first_seq,
        prev_hash,
    };
    file.write_all(&header.encode())
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok((file, path))
}

/// Removes the temporary files of an interrupted segment roll, sidecar or checkpoint.
fn remove_temporary_files(dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Writes the time index of every sealed segment (all but `active`) that lacks a valid
/// one, reading the segment once. Best effort: a segment that cannot be read whole is left
/// without (queries then read it; `Audit` reports the damage).
fn rebuild_time_indexes(dir: &Path, active: &Path) {
    let Ok(segments) = list_segments(dir) else {
        return;
    };
    for (first_seq, path) in segments.iter().filter(|(_, p)| p != active) {
        let len = fs::metadata(path).map_or(0, |m| m.len());
        if SegmentTimes::read(dir, *first_seq).is_some_and(|t| t.len == len) {
            continue;
        }
        let Ok(data) = SegmentBytes::load(path, true) else {
            continue;
        };
        let Ok(header) = SegmentHeader::decode(&data, path, None) else {
            continue;
        };
        let mut walk = Walk::new(&data, SEGMENT_HEADER_LEN, header.first_seq, header.prev_hash);
        let mut span = Span::new(header.first_seq);
        let clean = loop {
            match walk.step() {
                None => break true,
                Some(Ok(step)) => span.note(step.frame.payload),
                Some(Err(_)) => break false,
            }
        };
        if clean {
            let _ = span.times(data.len() as u64).write(dir);
        }
    }
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

    fn event(at: i64) -> Vec<u8> {
        crate::event::Event {
            at,
            kind: crate::event::EventKind::PlanDeleted { name: format!("p{at}") },
        }
        .encode()
    }

    fn claimed(dir: &Path, key: &[u8; 32]) -> Option<u64> {
        let bytes = head::read_head_file(dir).unwrap()?;
        Some(Head::decode(&bytes, &[4; 16], key).unwrap().seq)
    }

    #[test]
    fn head_is_checkpointed_every_n_records_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let key = head::head_key_from_bytes(&[1; 32]);
        let mut w = LogWriter::create(dir.path(), [4; 16], 1 << 20)
            .unwrap()
            .with_head_key(key)
            .with_head_interval(4, Duration::from_secs(3600));
        assert_eq!(
            claimed(dir.path(), &key),
            Some(0),
            "an empty log is checkpointed at once"
        );
        for i in 1..=10 {
            w.append(&event(i));
            w.commit().unwrap();
            // Due when 4 records passed since the last checkpoint: at 4 and 8.
            assert_eq!(claimed(dir.path(), &key), Some(i as u64 / 4 * 4), "after record {i}");
        }
        drop(w);
        assert_eq!(claimed(dir.path(), &key), Some(10), "drop checkpoints the rest");
        // Reopened: the checkpoint agrees with the log and is taken up.
        let (w, _) = LogWriter::open(dir.path(), [4; 16], 1 << 20, 0).unwrap();
        let mut w = w.with_head_key(key).with_head_interval(1000, Duration::ZERO);
        assert_eq!(w.head_conflict(), None);
        w.append(&event(11));
        w.commit().unwrap();
        assert_eq!(
            claimed(dir.path(), &key),
            Some(11),
            "T elapsed: every commit checkpoints"
        );
    }

    #[test]
    fn a_conflicting_head_is_kept_as_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let key = head::head_key_from_bytes(&[1; 32]);
        let mut w = LogWriter::create(dir.path(), [4; 16], 1 << 20)
            .unwrap()
            .with_head_key(key);
        for i in 1..=5 {
            w.append(&event(i));
        }
        w.commit().unwrap();
        drop(w);
        let segment = segment_path(dir.path(), 1);
        let full = fs::read(&segment).unwrap();
        let record_len = (full.len() - SEGMENT_HEADER_LEN) / 5;
        // Cut the last two records off at a record boundary: a clean, shorter log.
        fs::write(&segment, &full[..full.len() - 2 * record_len]).unwrap();
        let (w, report) = LogWriter::open(dir.path(), [4; 16], 1 << 20, 0).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        let mut w = w.with_head_key(key);
        assert_eq!(w.head_conflict(), Some(&AuditProblem::TruncatedTail { checkpoint: 5 }));
        w.append(&event(4));
        w.commit().unwrap();
        assert!(matches!(w.checkpoint_head(), Err(LogError::HeadConflict(_))));
        drop(w);
        assert_eq!(claimed(dir.path(), &key), Some(5), "never overwritten");
        // Another pepper's checkpoint, or none for a log with records: conflicts too.
        let (w, _) = LogWriter::open(dir.path(), [4; 16], 1 << 20, 0).unwrap();
        let w = w.with_head_key([9; 32]);
        assert_eq!(w.head_conflict(), Some(&AuditProblem::BadHead(HeadError::BadMac)));
        drop(w);
        fs::remove_file(head::head_path(dir.path())).unwrap();
        let (w, _) = LogWriter::open(dir.path(), [4; 16], 1 << 20, 0).unwrap();
        let mut w = w.with_head_key(key);
        assert_eq!(w.head_conflict(), Some(&AuditProblem::HeadMissing));
        // Accepting the log as it is writes a fresh checkpoint.
        w.reset_head().unwrap();
        assert_eq!(w.head_conflict(), None);
        assert_eq!(claimed(dir.path(), &key), Some(4));
    }

    #[test]
    fn a_record_the_head_vouches_for_is_never_truncated_as_torn() {
        let dir = tempfile::tempdir().unwrap();
        let key = head::head_key_from_bytes(&[1; 32]);
        let mut w = LogWriter::create(dir.path(), [4; 16], 1 << 20)
            .unwrap()
            .with_head_key(key);
        for i in 1..=3 {
            w.append(&event(i));
        }
        w.commit().unwrap();
        drop(w);
        let segment = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&segment).unwrap();
        // A flipped bit in the last record looks like a torn write (docs/DURABILITY.md,
        // known limits); the checkpoint says it was durable, so it is corruption.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&segment, &bytes).unwrap();
        assert!(matches!(
            LogWriter::open(dir.path(), [4; 16], 1 << 20, 0),
            Err(LogError::Corrupt { seq: 3, .. })
        ));
        fs::remove_file(head::head_path(dir.path())).unwrap();
        let (w, report) = LogWriter::open(dir.path(), [4; 16], 1 << 20, 0).unwrap();
        assert!(report.truncated_bytes > 0, "without a checkpoint it is a torn tail");
        assert_eq!(w.durable_seq(), 2);
    }

    #[test]
    fn sealed_segments_get_time_indexes_rebuilt_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), [4; 16], 400).unwrap();
        for i in 0..30 {
            w.append(&event(1000 + i));
            w.commit().unwrap();
        }
        drop(w);
        let segments = super::super::segments(dir.path()).unwrap();
        assert!(segments.len() > 3);
        let mut next = 1;
        for s in &segments[..segments.len() - 1] {
            let t = s.times.unwrap();
            assert_eq!((t.first_seq, t.min_at), (next, 1000 + next as i64 - 1));
            assert_eq!(t.max_at, 1000 + t.last_seq as i64 - 1);
            assert_eq!(t.len, fs::metadata(&s.path).unwrap().len());
            assert!(t.all_timed);
            next = t.last_seq + 1;
        }
        assert_eq!(segments.last().unwrap().times, None, "the active segment has none");
        let expected: Vec<_> = segments.iter().map(|s| s.times).collect();
        // Lost (never fsync'd) or torn sidecars, and a stray temporary file, are dealt with
        // at open.
        fs::remove_file(super::super::timeindex::index_path(dir.path(), segments[0].first_seq)).unwrap();
        fs::write(
            super::super::timeindex::index_path(dir.path(), segments[1].first_seq),
            b"torn",
        )
        .unwrap();
        fs::write(dir.path().join("HEAD.tmp"), b"half").unwrap();
        let (w, _) = LogWriter::open(dir.path(), [4; 16], 400, 0).unwrap();
        drop(w);
        let again: Vec<_> = super::super::segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.times)
            .collect();
        assert_eq!(again, expected);
        assert!(!dir.path().join("HEAD.tmp").exists());
    }

    #[test]
    fn a_roll_leaves_no_temporary_file_and_never_overwrites_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), [4; 16], 100).unwrap();
        w.append(&[1; 80]);
        w.commit().unwrap();
        // The next segment's name is taken: the roll fails before writing anything.
        fs::write(segment_path(dir.path(), 2), b"someone else's").unwrap();
        w.append(&[2; 80]);
        assert!(matches!(w.commit(), Err(LogError::Io { .. })));
        assert_eq!(fs::read(segment_path(dir.path(), 2)).unwrap(), b"someone else's");
        assert!(matches!(w.commit(), Err(LogError::Poisoned)));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
