//! A memory-mapped mirror of one sled tree: an open-addressing hash table from an entry's
//! key to its sealed value, so that a cold verify finds a key's record, counters and
//! budget mark without walking sled's B-tree (issue 19).
//!
//! Two files per mirror in the index directory (`docs/FORMAT.md` gives every byte):
//!
//! - `NAME.slots`: a 64-byte header, then a power-of-two number of 16-byte slots, each the
//!   64-bit hash of an entry's key and the offset of its record (0: empty). Linear
//!   probing; grown by rehashing into twice the slots when three quarters are taken.
//! - `NAME.records`: a 16-byte header, then records appended one after another: key
//!   length (u16), aux length (u16), value length (u32), the key, the aux bytes (the key id
//!   for the mirror by tag) and the value, exactly the sealed bytes sled holds (format
//!   byte, MAC, payload). A changed entry appends a new record and moves its slot; the old
//!   record is garbage until the file is compacted (when garbage outgrows the live
//!   records, at the moment the file would grow).
//!
//! A mirror is derived data, like the sled trees it mirrors: it is written after the sled
//! transaction of the same batch commits, never synced on its own, and never trusted at
//! open. [`Mirror::summary`] walks it (every record's bounds and key hash) and sums its
//! values' MACs; `Index::open` compares that with the sum of the sled entries it checks
//! anyway, and rebuilds the mirror from sled when they differ (`docs/DURABILITY.md`).
//! Entries are never removed: the trees mirrored (`keys` by tag, `counters`, `marks`)
//! never remove theirs.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What a slots file starts with.
const SLOTS_MAGIC: &[u8; 8] = b"csmirror";
/// What a records file starts with.
const RECORDS_MAGIC: &[u8; 8] = b"csrecord";
/// The layout this build writes (header, slot and record as in the module docs).
const VERSION: u32 = 1;
/// Bytes of the slots file's header.
const SLOTS_HEADER: usize = 64;
/// Bytes of the records file's header; the first record's offset (so 0 means empty).
const RECORDS_HEADER: usize = 16;
/// Bytes of a slot: hash u64, offset u64.
const SLOT: usize = 16;
/// Bytes of a record's head: key length u16, aux length u16, value length u32.
const RECORD_HEAD: usize = 8;
/// The fewest slots a mirror has.
const MIN_SLOTS: u64 = 1 << 10;
/// The least size of a records file (it then doubles).
const MIN_RECORDS: u64 = 1 << 16;
/// Bytes of a value's MAC, after its format byte (`index.rs`).
const MAC_LEN: usize = 16;

/// A mirror's count of entries and the XOR of their values' MACs: what `Index::open`
/// compares with the sled tree's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Summary {
    pub count: u64,
    pub macs: [u8; MAC_LEN],
}

impl Summary {
    /// Adds an entry whose sealed value is `value`.
    pub fn add(&mut self, value: &[u8]) {
        self.count += 1;
        if let Some(mac) = value.get(1..=MAC_LEN) {
            for (s, m) in self.macs.iter_mut().zip(mac) {
                *s ^= m;
            }
        }
    }
}

/// One entry to write: key, aux bytes, sealed value.
pub(crate) type Put<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// A mirror, shared by readers (a cold verify) and the index's one writer at a time.
pub(crate) struct Mirror {
    files: RwLock<Files>,
}

/// The mapped files and what their headers say.
struct Files {
    records_path: PathBuf,
    slots_file: File,
    slots: memmap2::MmapMut,
    records_file: File,
    records: memmap2::MmapMut,
    /// Slots (a power of two).
    capacity: u64,
    /// Slots taken.
    count: u64,
    /// Bytes of the records file in use (header included): where the next record goes.
    used: u64,
    /// Bytes of the records the slots point at.
    live: u64,
}

impl Mirror {
    /// Opens the mirror `name` in `dir`, or makes an empty one; files that are not a
    /// mirror of this layout (missing, short, another version) are replaced by an empty
    /// mirror, which `Index::open`'s comparison then finds wanting and rebuilds.
    ///
    /// # Errors
    /// The file system's.
    pub fn open(dir: &Path, name: &str) -> std::io::Result<Mirror> {
        let slots_path = dir.join(format!("{name}.slots"));
        let records_path = dir.join(format!("{name}.records"));
        let slots_file = open_rw(&slots_path)?;
        let records_file = open_rw(&records_path)?;
        // Never map an empty file (a fresh mirror): a header's worth of zeros, which
        // `read_headers` refuses, so the mirror is made empty below.
        for (file, least) in [(&slots_file, SLOTS_HEADER), (&records_file, RECORDS_HEADER)] {
            if file.metadata()?.len() < least as u64 {
                allocate(file, least as u64)?;
            }
        }
        let slots = map(&slots_file)?;
        let records = map(&records_file)?;
        let mut files = Files {
            records_path,
            slots_file,
            slots,
            records_file,
            records,
            capacity: 0,
            count: 0,
            used: 0,
            live: 0,
        };
        if !files.read_headers() {
            files.reset(0)?;
        }
        Ok(Mirror {
            files: RwLock::new(files),
        })
    }

    /// Empties the mirror, sized for `entries` entries.
    ///
    /// # Errors
    /// The file system's.
    pub fn reset(&self, entries: u64) -> std::io::Result<()> {
        self.write().reset(entries)
    }

    /// Walks every slot: `None` when a slot points outside the records in use, at a record
    /// that does not fit, or at a record whose key does not hash to the slot's hash (a
    /// torn or foreign file); else the count and the XOR of the values' MACs.
    pub fn summary(&self) -> Option<Summary> {
        let files = self.read();
        let mut summary = Summary::default();
        for i in 0..files.capacity {
            let (hash, offset) = files.slot(i)?;
            if offset == 0 {
                continue;
            }
            if offset >= files.used {
                return None;
            }
            let record = files.record(offset)?;
            if hash_key(record.key) != hash || record.end > files.used {
                return None;
            }
            summary.add(record.value);
        }
        (summary.count == files.count).then_some(summary)
    }

    /// The aux bytes and value of the entry at `key`, given to `read` (under the read
    /// lock: the bytes are the mapped file's).
    pub fn get<R>(&self, key: &[u8], read: impl FnOnce(&[u8], &[u8]) -> R) -> Option<R> {
        let files = self.read();
        let offset = files.find(key, hash_key(key))?.1;
        let record = files.record(offset)?;
        Some(read(record.aux, record.value))
    }

    /// Writes entries (each replacing the entry at its key, if any).
    ///
    /// # Errors
    /// The file system's (a full disk as the files grow). The mirror then lacks some of
    /// `entries`: the caller must stop serving from it (the index refuses reads until it
    /// is reopened, and open rebuilds the mirror).
    pub fn put_all(&self, entries: &[Put<'_>]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut files = self.write();
        for &(key, aux, value) in entries {
            files.put(key, aux, value)?;
        }
        files.write_header();
        Ok(())
    }

    /// Starts writing both mappings to disk, without waiting for it (close). Not needed
    /// for correctness, which never trusts a mirror it did not check; it narrows the
    /// window in which a power loss costs the next open a rebuild. A synchronous `msync`
    /// here made a close of 1M cached keys wait for hundreds of MB of mapped pages.
    ///
    /// # Errors
    /// The file system's.
    pub fn flush(&self) -> std::io::Result<()> {
        let files = self.read();
        files.records.flush_async()?;
        files.slots.flush_async()
    }

    /// Bytes of records no slot points at.
    #[cfg(test)]
    fn garbage(&self) -> u64 {
        let files = self.read();
        files.used - RECORDS_HEADER as u64 - files.live
    }

    fn read(&self) -> RwLockReadGuard<'_, Files> {
        self.files.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Files> {
        self.files.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A record's parts, borrowed from the mapping.
struct Record<'a> {
    key: &'a [u8],
    aux: &'a [u8],
    value: &'a [u8],
    /// The offset just past it.
    end: u64,
}

impl Files {
    /// Reads both headers; `false` when either is not this layout or disagrees with the
    /// files' sizes.
    fn read_headers(&mut self) -> bool {
        let (Some(slots_head), Some(records_head)) =
            (self.slots.get(..SLOTS_HEADER), self.records.get(..RECORDS_HEADER))
        else {
            return false;
        };
        if slots_head.get(..8) != Some(SLOTS_MAGIC.as_slice())
            || records_head.get(..8) != Some(RECORDS_MAGIC.as_slice())
            || u32_at(slots_head, 8) != Some(VERSION)
            || u32_at(records_head, 8) != Some(VERSION)
        {
            return false;
        }
        let (Some(capacity), Some(count), Some(used), Some(live)) = (
            u64_at(slots_head, 16),
            u64_at(slots_head, 24),
            u64_at(slots_head, 32),
            u64_at(slots_head, 40),
        ) else {
            return false;
        };
        let slots_len = capacity
            .checked_mul(SLOT as u64)
            .and_then(|b| b.checked_add(SLOTS_HEADER as u64));
        if !capacity.is_power_of_two()
            || slots_len != Some(self.slots.len() as u64)
            || count > capacity
            || used < RECORDS_HEADER as u64
            || used > self.records.len() as u64
            || live > used
        {
            return false;
        }
        self.capacity = capacity;
        self.count = count;
        self.used = used;
        self.live = live;
        true
    }

    /// Writes the slots file's header from the fields.
    fn write_header(&mut self) {
        let mut head = [0u8; SLOTS_HEADER];
        write_at(&mut head, 0, SLOTS_MAGIC);
        write_at(&mut head, 8, &VERSION.to_le_bytes());
        write_at(&mut head, 16, &self.capacity.to_le_bytes());
        write_at(&mut head, 24, &self.count.to_le_bytes());
        write_at(&mut head, 32, &self.used.to_le_bytes());
        write_at(&mut head, 40, &self.live.to_le_bytes());
        write_at(&mut self.slots, 0, &head);
    }

    /// Both files emptied, with slots for `entries` at most half full.
    fn reset(&mut self, entries: u64) -> std::io::Result<()> {
        let capacity = entries.saturating_mul(2).max(MIN_SLOTS).next_power_of_two();
        self.resize_slots(capacity)?;
        self.slots.fill(0);
        self.capacity = capacity;
        self.count = 0;
        self.records_file.set_len(0)?;
        self.remap_records(MIN_RECORDS)?;
        let mut head = [0u8; RECORDS_HEADER];
        write_at(&mut head, 0, RECORDS_MAGIC);
        write_at(&mut head, 8, &VERSION.to_le_bytes());
        write_at(&mut self.records, 0, &head);
        self.used = RECORDS_HEADER as u64;
        self.live = 0;
        self.write_header();
        Ok(())
    }

    /// Slot `i`: (hash, offset).
    fn slot(&self, i: u64) -> Option<(u64, u64)> {
        let at = SLOTS_HEADER + usize::try_from(i).ok()? * SLOT;
        Some((u64_at(&self.slots, at)?, u64_at(&self.slots, at + 8)?))
    }

    fn set_slot(&mut self, i: u64, hash: u64, offset: u64) {
        let at = SLOTS_HEADER + usize::try_from(i).unwrap_or(usize::MAX / 2) * SLOT;
        write_at(&mut self.slots, at, &hash.to_le_bytes());
        write_at(&mut self.slots, at + 8, &offset.to_le_bytes());
    }

    /// The slot holding `key` (`Ok`: its index and record offset) or the empty slot where
    /// it would go (`Err`). `None` only for a full table, which `put` never lets happen.
    fn probe(&self, key: &[u8], hash: u64) -> Option<Result<(u64, u64), u64>> {
        let mask = self.capacity.checked_sub(1)?;
        let mut i = hash & mask;
        for _ in 0..self.capacity {
            let (h, offset) = self.slot(i)?;
            if offset == 0 {
                return Some(Err(i));
            }
            if h == hash && self.record(offset).is_some_and(|r| r.key == key) {
                return Some(Ok((i, offset)));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The slot and record offset of `key`, if it is in the mirror.
    fn find(&self, key: &[u8], hash: u64) -> Option<(u64, u64)> {
        self.probe(key, hash)?.ok()
    }

    /// The record at `offset`, if one fits in the file there.
    fn record(&self, offset: u64) -> Option<Record<'_>> {
        let at = usize::try_from(offset).ok()?;
        let head = self.records.get(at..at.checked_add(RECORD_HEAD)?)?;
        let key_len = usize::from(u16::from_le_bytes([*head.first()?, *head.get(1)?]));
        let aux_len = usize::from(u16::from_le_bytes([*head.get(2)?, *head.get(3)?]));
        let value_len = usize::try_from(u32_at(head, 4)?).ok()?;
        let key_at = at + RECORD_HEAD;
        let aux_at = key_at.checked_add(key_len)?;
        let value_at = aux_at.checked_add(aux_len)?;
        let end = value_at.checked_add(value_len)?;
        Some(Record {
            key: self.records.get(key_at..aux_at)?,
            aux: self.records.get(aux_at..value_at)?,
            value: self.records.get(value_at..end)?,
            end: end as u64,
        })
    }

    /// Appends a record for `key` and points its slot at it.
    fn put(&mut self, key: &[u8], aux: &[u8], value: &[u8]) -> std::io::Result<()> {
        let (Ok(key_len), Ok(aux_len), Ok(value_len)) = (
            u16::try_from(key.len()),
            u16::try_from(aux.len()),
            u32::try_from(value.len()),
        ) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "entry too large for a mirror",
            ));
        };
        let size = (RECORD_HEAD + key.len() + aux.len() + value.len()) as u64;
        if (self.count + 1) * 4 > self.capacity * 3 {
            self.grow_slots()?;
        }
        if self.used + size > self.records.len() as u64 {
            self.make_room(size)?;
        }
        let offset = self.used;
        let at = usize::try_from(offset).unwrap_or(usize::MAX / 2);
        write_at(&mut self.records, at, &key_len.to_le_bytes());
        write_at(&mut self.records, at + 2, &aux_len.to_le_bytes());
        write_at(&mut self.records, at + 4, &value_len.to_le_bytes());
        write_at(&mut self.records, at + RECORD_HEAD, key);
        write_at(&mut self.records, at + RECORD_HEAD + key.len(), aux);
        write_at(&mut self.records, at + RECORD_HEAD + key.len() + aux.len(), value);
        self.used += size;
        let hash = hash_key(key);
        match self.probe(key, hash) {
            Some(Ok((i, old))) => {
                let old_size = self.record(old).map_or(0, |r| r.end - old);
                self.live = self.live - old_size.min(self.live) + size;
                self.set_slot(i, hash, offset);
            }
            Some(Err(i)) => {
                self.live += size;
                self.count += 1;
                self.set_slot(i, hash, offset);
            }
            None => return Err(std::io::Error::other("mirror table full")),
        }
        Ok(())
    }

    /// Twice the slots, every entry rehashed into them.
    fn grow_slots(&mut self) -> std::io::Result<()> {
        let taken: Vec<(u64, u64)> = (0..self.capacity)
            .filter_map(|i| self.slot(i))
            .filter(|&(_, offset)| offset != 0)
            .collect();
        let capacity = (self.capacity * 2).max(MIN_SLOTS);
        self.resize_slots(capacity)?;
        self.slots.fill(0);
        self.capacity = capacity;
        let mask = capacity - 1;
        for (hash, offset) in taken {
            let mut i = hash & mask;
            while self.slot(i).is_some_and(|(_, o)| o != 0) {
                i = (i + 1) & mask;
            }
            self.set_slot(i, hash, offset);
        }
        self.write_header();
        Ok(())
    }

    /// Room for `size` more bytes of records: the live records compacted into a new file
    /// when garbage outweighs them, else the file doubled.
    fn make_room(&mut self, size: u64) -> std::io::Result<()> {
        let garbage = self.used - RECORDS_HEADER as u64 - self.live;
        if garbage > self.live && garbage > MIN_RECORDS {
            self.compact()?;
            if self.used + size <= self.records.len() as u64 {
                return Ok(());
            }
        }
        let len = (self.records.len() as u64)
            .saturating_mul(2)
            .max(self.used + size)
            .max(MIN_RECORDS);
        self.remap_records(len)
    }

    /// Copies the live records into a new records file, renamed over the old one, and
    /// points the slots at the copies. A crash part way leaves files that `summary` or the
    /// MAC sum refuses, and open rebuilds.
    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.records_path.with_extension("records.tmp");
        let len = (RECORDS_HEADER as u64 + self.live).saturating_mul(2).max(MIN_RECORDS);
        let file = open_rw(&tmp)?;
        file.set_len(0)?;
        allocate(&file, len)?;
        let mut fresh = map(&file)?;
        let mut head = [0u8; RECORDS_HEADER];
        write_at(&mut head, 0, RECORDS_MAGIC);
        write_at(&mut head, 8, &VERSION.to_le_bytes());
        write_at(&mut fresh, 0, &head);
        let mut used = RECORDS_HEADER as u64;
        for i in 0..self.capacity {
            let Some((hash, offset)) = self.slot(i) else { continue };
            if offset == 0 {
                continue;
            }
            let Some(end) = self.record(offset).map(|r| r.end) else {
                continue;
            };
            let bytes = self
                .records
                .get(offset as usize..end as usize)
                .unwrap_or_default()
                .to_vec();
            write_at(&mut fresh, used as usize, &bytes);
            self.set_slot(i, hash, used);
            used += bytes.len() as u64;
        }
        std::fs::rename(&tmp, &self.records_path)?;
        self.records_file = file;
        self.records = fresh;
        self.used = used;
        self.live = used - RECORDS_HEADER as u64;
        self.write_header();
        Ok(())
    }

    /// The slots file resized to `capacity` slots and mapped again.
    fn resize_slots(&mut self, capacity: u64) -> std::io::Result<()> {
        let len = SLOTS_HEADER as u64 + capacity * SLOT as u64;
        allocate(&self.slots_file, len)?;
        self.slots = map(&self.slots_file)?;
        Ok(())
    }

    /// The records file set to `len` bytes and mapped again.
    fn remap_records(&mut self, len: u64) -> std::io::Result<()> {
        allocate(&self.records_file, len)?;
        self.records = map(&self.records_file)?;
        Ok(())
    }
}

/// The 64-bit hash of an entry's key: FNV-1a, then SplitMix64's finaliser for the low
/// bits the slot index takes. Written here rather than taken from `std` (whose hasher may
/// change between releases): the hash is part of the file format.
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Sets `file`'s length to `len`, writing the bytes it gains (zeros) rather than leaving a
/// hole: a write through the mapping into a hole the disk has no room for is a SIGBUS,
/// where a write here is an `ENOSPC` the caller can report.
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    const CHUNK: usize = 1 << 20;
    let mut at = file.metadata()?.len();
    if len <= at {
        return file.set_len(len);
    }
    let zeros = vec![0u8; CHUNK];
    let mut writer = file;
    writer.seek(SeekFrom::Start(at))?;
    while at < len {
        let n = usize::try_from(len - at).map_or(CHUNK, |left| left.min(CHUNK));
        writer.write_all(zeros.get(..n).unwrap_or_default())?;
        at += n as u64;
    }
    Ok(())
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Maps a mirror file for reading and writing.
#[expect(
    unsafe_code,
    reason = "mapping the index's own mirror files, which only the store holding the data directory's lock writes"
)]
fn map(file: &File) -> std::io::Result<memmap2::MmapMut> {
    // SAFETY: a mapping is sound as long as no one else truncates or writes the file while
    // it is mapped. The mirror files live in the index directory (0700) of a store whose
    // lock this process holds (`Store::open` takes it before the index is opened), so no
    // other credstore process opens them; within this process every access goes through
    // the `RwLock` of the one `Mirror` that owns the mapping, and the file is resized only
    // under its write lock, with the old mapping replaced before any read. Another program
    // truncating or editing the files behind the store is outside the contract, as for the
    // log's sealed segments and sled's own files (docs/FORMAT.md).
    unsafe { memmap2::MmapMut::map_mut(file) }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(crate::log::frame::to_array(b)))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(crate::log::frame::to_array(b)))
}

/// Copies `src` into `dst` at `at`; callers size the mapping first, so a write out of
/// bounds (which would be a bug here) is dropped rather than a panic.
fn write_at(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = at.checked_add(src.len()).and_then(|end| dst.get_mut(at..end)) {
        d.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: u64, version: u8) -> Vec<u8> {
        let mut v = vec![2];
        v.extend_from_slice(&blake3::hash(&[i.to_le_bytes().as_slice(), &[version]].concat()).as_bytes()[..16]);
        v.extend_from_slice(&i.to_le_bytes());
        v
    }

    #[test]
    fn entries_put_are_read_back_after_growth_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "m").unwrap();
        let keys: Vec<Vec<u8>> = (0..5_000u64).map(|i| format!("key_{i}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = (0..5_000).map(|i| value(i, 0)).collect();
        let puts: Vec<Put<'_>> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_slice(), b"aux".as_slice(), v.as_slice()))
            .collect();
        mirror.put_all(&puts).unwrap();
        let mut expected = Summary::default();
        values.iter().for_each(|v| expected.add(v));
        assert_eq!(mirror.summary(), Some(expected));
        drop(mirror);
        let mirror = Mirror::open(dir.path(), "m").unwrap();
        assert_eq!(mirror.summary(), Some(expected));
        for (k, v) in keys.iter().zip(&values) {
            assert_eq!(
                mirror.get(k, |a, b| (a.to_vec(), b.to_vec())),
                Some((b"aux".to_vec(), v.clone()))
            );
        }
        assert_eq!(mirror.get(b"key_5000", |_, _| ()), None);
    }

    #[test]
    fn a_replaced_entry_reads_its_new_value_and_garbage_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "m").unwrap();
        for version in 0..50u8 {
            let values: Vec<Vec<u8>> = (0..1_000).map(|i| value(i, version)).collect();
            let keys: Vec<Vec<u8>> = (0..1_000u64).map(|i| i.to_be_bytes().to_vec()).collect();
            let puts: Vec<Put<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| (k.as_slice(), b"".as_slice(), v.as_slice()))
                .collect();
            mirror.put_all(&puts).unwrap();
        }
        for i in 0..1_000u64 {
            assert_eq!(mirror.get(&i.to_be_bytes(), |_, v| v.to_vec()), Some(value(i, 49)));
        }
        assert_eq!(mirror.summary().map(|s| s.count), Some(1_000));
        // 50 versions of 1,000 entries of 41 bytes were written: compaction kept the
        // garbage at most about the live bytes (plus the least file size).
        let records = std::fs::metadata(dir.path().join("m.records")).unwrap().len();
        assert!(records < 4 * MIN_RECORDS + 4 * 41_000, "records file {records} bytes");
        assert!(mirror.garbage() <= 41_000 + MIN_RECORDS, "garbage {}", mirror.garbage());
    }

    #[test]
    fn damaged_files_open_empty_or_fail_the_summary_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "m").unwrap();
        let keys: Vec<Vec<u8>> = (0..100u64).map(|i| i.to_be_bytes().to_vec()).collect();
        let values: Vec<Vec<u8>> = (0..100).map(|i| value(i, 0)).collect();
        let puts: Vec<Put<'_>> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_slice(), b"".as_slice(), v.as_slice()))
            .collect();
        mirror.put_all(&puts).unwrap();
        drop(mirror);
        // A slot's offset pointed past the records in use: the summary refuses.
        let slots_path = dir.path().join("m.slots");
        let mut slots = std::fs::read(&slots_path).unwrap();
        let taken = (0..(slots.len() - SLOTS_HEADER) / SLOT)
            .map(|i| SLOTS_HEADER + i * SLOT)
            .find(|&at| slots[at + 8..at + 16] != [0; 8])
            .unwrap();
        slots[taken + 8..taken + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&slots_path, &slots).unwrap();
        assert_eq!(Mirror::open(dir.path(), "m").unwrap().summary(), None);
        // A header of another layout: opened empty.
        slots[0] = b'X';
        std::fs::write(&slots_path, &slots).unwrap();
        assert_eq!(
            Mirror::open(dir.path(), "m").unwrap().summary(),
            Some(Summary::default())
        );
        // Truncated files: opened empty.
        std::fs::write(&slots_path, b"short").unwrap();
        assert_eq!(
            Mirror::open(dir.path(), "m").unwrap().summary(),
            Some(Summary::default())
        );
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // Part of the file format: a change here must change VERSION.
        // Computed by hand from the definition (FNV-1a 64, then SplitMix64's finaliser).
        assert_eq!(hash_key(b"key_1"), 0x9caa_4889_2cec_5c14);
    }

    proptest::proptest! {
        /// Whatever bytes the files hold, opening, summing, reading and writing never
        /// panic, and a mirror whose summary passes reads every key its slots name.
        #[test]
        fn any_file_bytes_are_refused_or_read_never_a_panic(
            slots in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            records in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            header in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (mut slots, mut records) = (slots, records);
            if header {
                // A valid header in front, so the walk reaches the slots and records.
                let mut head = vec![0u8; SLOTS_HEADER];
                head[..8].copy_from_slice(SLOTS_MAGIC);
                head[8..12].copy_from_slice(&VERSION.to_le_bytes());
                head[16..24].copy_from_slice(&16u64.to_le_bytes());
                head[32..40].copy_from_slice(&((RECORDS_HEADER + records.len()) as u64).to_le_bytes());
                slots.resize(16 * SLOT, 0);
                head.extend_from_slice(&slots);
                slots = head;
                let mut rhead = vec![0u8; RECORDS_HEADER];
                rhead[..8].copy_from_slice(RECORDS_MAGIC);
                rhead[8..12].copy_from_slice(&VERSION.to_le_bytes());
                rhead.extend_from_slice(&records);
                records = rhead;
            }
            std::fs::write(dir.path().join("t.slots"), &slots).unwrap();
            std::fs::write(dir.path().join("t.records"), &records).unwrap();
            let mirror = Mirror::open(dir.path(), "t").unwrap();
            let _ = mirror.summary();
            let _ = mirror.get(b"k", |a, v| a.len() + v.len());
            // Garbage slots may fill the table: then the write is refused, never a panic.
            if mirror.put_all(&[(b"k".as_slice(), b"".as_slice(), [2u8; 20].as_slice())]).is_ok() {
                proptest::prop_assert_eq!(mirror.get(b"k", |_, v| v.to_vec()), Some(vec![2u8; 20]));
            }
        }
    }
}
