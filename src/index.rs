//! The sled index: a cache of the log's state that can always be rebuilt from it.
//!
//! Trees (values carry a format byte, then bincode 2 via serde; `docs/FORMAT.md`):
//!
//! | tree         | key                       | value                         |
//! |--------------|---------------------------|-------------------------------|
//! | `keys`       | key id                    | [`StoredKey`]                 |
//! | `by_hash`    | tag (32 bytes)            | key id                        |
//! | `by_prefix`  | prefix, 0x00, key id      | empty                         |
//! | `by_project` | project, 0x00, key id     | empty                         |
//! | `counters`   | key id                    | [`Counters`]                  |
//! | `directory`  | `p/`, `r/`, `u/` + name   | a plan, custom role or user   |
//! | `marks`      | key id                    | budget mark, packed u64 BE    |
//! | `vault`      | project, 0, name, 0, version u32 BE | [`VaultEntry`]      |
//! | `meta`       | `applied_seq`, `formats`, `clean` | u64 BE; format list; 0/1 |
//!
//! Every batch of log records is applied in one sled transaction across the trees,
//! together with `applied_seq`, the sequence number of the last record it reflects.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::directory::{DirEntry, DirKey, Directory};
use crate::error::{IndexError, Result};
use crate::event::Tag;
use crate::limits::budget::unpack;
use crate::record::{KeyId, KeyRecord};
use crate::token::{Format, FormatSet};
use crate::vault::SealedSecret;

/// The format byte of values this build writes.
const VALUE_FORMAT: u8 = 1;
const APPLIED_SEQ: &[u8] = b"applied_seq";
const FORMATS: &[u8] = b"formats";
const CLEAN: &[u8] = b"clean";

/// A key's in-memory counters as the flusher persists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// Last use, unix ms (0: never).
    pub last_used: i64,
    /// Each rate limit's name, theoretical arrival time (unix ns) and the emission
    /// interval (ns) it was counted under.
    pub limits: Vec<(String, i64, i64)>,
    /// The budget spend word (period and spend packed).
    pub spend: u64,
}

/// One stored version of a provider secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VaultEntry {
    pub sealed: SealedSecret,
    /// Unix ms it was put.
    pub created_at: i64,
}

/// The `vault` tree key of a secret version (`None`: the prefix of all its versions).
pub(crate) fn vault_key(project: &str, name: &str, version: Option<u32>) -> Vec<u8> {
    let mut k = join(project, name.as_bytes());
    k.push(0);
    if let Some(v) = version {
        k.extend_from_slice(&v.to_be_bytes());
    }
    k
}

/// One commit's worth of changes to the index.
pub(crate) struct IndexBatch<'a> {
    pub keys: &'a BTreeMap<KeyId, StoredKey>,
    pub formats: Option<&'a FormatSet>,
    /// Plans, roles and users set (`Some`) or deleted (`None`).
    pub directory: &'a BTreeMap<DirKey, Option<DirEntry>>,
    /// Raised budget marks.
    pub marks: &'a BTreeMap<KeyId, u64>,
    /// Secret versions put (`Some`) or deleted (`None`), by `vault_key`.
    pub vault: &'a BTreeMap<Vec<u8>, Option<VaultEntry>>,
    /// Master key check values registered.
    pub masters: &'a BTreeMap<u32, [u8; 32]>,
    /// A new minimum decryption version.
    pub vault_min: Option<u32>,
    pub applied_seq: u64,
}

/// A key as the index keeps it: its record and its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    pub record: KeyRecord,
    pub tag: Tag,
}

/// The sled database and its trees.
pub(crate) struct Index {
    db: sled::Db,
    keys: sled::Tree,
    by_hash: sled::Tree,
    by_prefix: sled::Tree,
    by_project: sled::Tree,
    counters: sled::Tree,
    directory: sled::Tree,
    marks: sled::Tree,
    vault: sled::Tree,
    meta: sled::Tree,
    /// The directory, for [`crate::modes::restrict_tree`] on drop.
    dir: std::path::PathBuf,
}

impl Index {
    /// Opens (or creates) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = open_db(dir)?;
        Ok(Index {
            keys: db.open_tree("keys")?,
            by_hash: db.open_tree("by_hash")?,
            by_prefix: db.open_tree("by_prefix")?,
            by_project: db.open_tree("by_project")?,
            counters: db.open_tree("counters")?,
            directory: db.open_tree("directory")?,
            marks: db.open_tree("marks")?,
            vault: db.open_tree("vault")?,
            meta: db.open_tree("meta")?,
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// The sequence number of the last log record applied.
    pub fn applied_seq(&self) -> Result<u64> {
        Ok(self
            .meta
            .get(APPLIED_SEQ)?
            .map_or(0, |v| u64::from_be_bytes(crate::log::frame::to_array(&v))))
    }

    /// The registered key formats.
    pub fn formats(&self) -> Result<FormatSet> {
        match self.meta.get(FORMATS)? {
            Some(bytes) => Ok(FormatSet::new(decode::<Vec<Format>>(&bytes)?)),
            None => Ok(FormatSet::default()),
        }
    }

    /// The greatest key id issued so far.
    pub fn last_id(&self) -> Result<Option<KeyId>> {
        match self.keys.last()? {
            Some((id, _)) => Ok(std::str::from_utf8(&id).ok().and_then(|s| KeyId::parse(s).ok())),
            None => Ok(None),
        }
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Result<Option<StoredKey>> {
        self.keys.get(id.as_str())?.map(|v| decode(&v)).transpose()
    }

    /// The key with this tag: two reads and a decode (the path a cache miss takes).
    pub fn get_by_tag(&self, tag: &Tag) -> Result<Option<StoredKey>> {
        let Some(id) = self.by_hash.get(tag.0)? else {
            return Ok(None);
        };
        self.keys.get(&id)?.map(|v| decode(&v)).transpose()
    }

    /// Every key, in id (creation) order, optionally only those of one project or prefix.
    pub fn list(&self, project: Option<&str>, prefix: Option<&str>) -> Result<Vec<StoredKey>> {
        let ids: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = match (project, prefix) {
            (Some(p), _) => Box::new(scan_ids(&self.by_project, p)),
            (None, Some(p)) => Box::new(scan_ids(&self.by_prefix, p)),
            (None, None) => Box::new(self.keys.iter().keys()),
        };
        let mut out = Vec::new();
        for id in ids {
            let id = id?;
            if let Some(v) = self.keys.get(&id)? {
                let stored: StoredKey = decode(&v)?;
                if prefix.is_none_or(|p| stored.record.prefix() == p) {
                    out.push(stored);
                }
            }
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(out)
    }

    /// Every plan, custom role and user.
    pub fn directory(&self) -> Result<Directory> {
        let entries: Vec<DirEntry> = self
            .directory
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect::<Result<_>>()?;
        Ok(Directory::from_entries(entries))
    }

    /// Every version of a secret, oldest first.
    pub fn vault_versions(&self, project: &str, name: &str) -> Result<Vec<(u32, VaultEntry)>> {
        let prefix = vault_key(project, name, None);
        let mut out = Vec::new();
        for item in self.vault.scan_prefix(&prefix) {
            let (k, v) = item?;
            let version = u32::from_be_bytes(crate::log::frame::to_array(k.get(prefix.len()..).unwrap_or_default()));
            out.push((version, decode(&v)?));
        }
        Ok(out)
    }

    /// Every secret version: (project, name, version, entry), in key order.
    pub fn vault_all(&self) -> Result<Vec<(String, String, u32, VaultEntry)>> {
        let mut out = Vec::new();
        for item in self.vault.iter() {
            let (k, v) = item?;
            let mut parts = k.splitn(3, |b| *b == 0);
            let project = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let version = u32::from_be_bytes(crate::log::frame::to_array(parts.next().unwrap_or_default()));
            out.push((project, name, version, decode(&v)?));
        }
        Ok(out)
    }

    /// The master key versions registered, with their check values, and the minimum
    /// decryption version.
    pub fn vault_masters(&self) -> Result<(BTreeMap<u32, [u8; 32]>, u32)> {
        let mut masters = BTreeMap::new();
        for item in self.meta.scan_prefix(b"master/") {
            let (k, v) = item?;
            let version = u32::from_be_bytes(crate::log::frame::to_array(k.get(7..).unwrap_or_default()));
            masters.insert(version, crate::log::frame::to_array(&v));
        }
        let min = self
            .meta
            .get(b"vault_min")?
            .map_or(0, |v| u32::from_be_bytes(crate::log::frame::to_array(&v)));
        Ok((masters, min))
    }

    /// A key's persisted budget mark (packed), 0 if none.
    pub fn mark(&self, id: &KeyId) -> Result<u64> {
        Ok(self
            .marks
            .get(id.as_str())?
            .map_or(0, |v| u64::from_be_bytes(crate::log::frame::to_array(&v))))
    }

    /// A key's persisted counters.
    pub fn counters(&self, id: &KeyId) -> Result<Option<Counters>> {
        self.counters.get(id.as_str())?.map(|v| decode(&v)).transpose()
    }

    /// Writes counters in one batch.
    pub fn write_counters(&self, entries: &[(KeyId, Counters)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (id, counters) in entries {
            batch.insert(id.as_str(), encode(counters));
        }
        self.counters.apply_batch(batch)?;
        Ok(())
    }

    /// After an unclean stop: raises every key's persisted spend to its budget mark (the
    /// spend acknowledged before the crash may have reached it), once, so later loads
    /// restore spend from the counters alone.
    pub fn restore_spend_to_marks(&self) -> Result<()> {
        let mut raised = Vec::new();
        for item in self.marks.iter() {
            let (id, mark) = item?;
            let Some(id) = std::str::from_utf8(&id).ok().and_then(|s| KeyId::parse(s).ok()) else {
                continue;
            };
            let mark = u64::from_be_bytes(crate::log::frame::to_array(&mark));
            let mut counters = self.counters(&id)?.unwrap_or_default();
            // Spend moves to a new period only after a mark in it went through the log, so
            // a mark of another period is the newer word (or the budget changed kind since
            // the spend was flushed): either way the mark is what to restart from.
            let other_period = unpack(mark).0 != unpack(counters.spend).0;
            if mark > counters.spend || (other_period && mark != 0) {
                counters.spend = mark;
                raised.push((id, counters));
            }
        }
        self.write_counters(&raised)?;
        self.db.flush()?;
        Ok(())
    }

    /// Whether the store was last closed cleanly (counters flushed exactly).
    pub fn was_clean(&self) -> Result<bool> {
        Ok(self.meta.get(CLEAN)?.is_some_and(|v| v.as_ref() == [1]))
    }

    /// Records a clean close (`true`) or an open store (`false`), durably.
    pub fn set_clean(&self, clean: bool) -> Result<()> {
        self.meta.insert(CLEAN, &[u8::from(clean)])?;
        self.db.flush()?;
        Ok(())
    }

    /// Applies the effect of log records up to `applied_seq` in one transaction: the
    /// changed keys (with their tag, prefix and project entries), formats, directory, marks.
    pub fn apply(&self, batch: &IndexBatch<'_>) -> Result<()> {
        let encoded: Vec<(&KeyId, Vec<u8>, &StoredKey)> = batch.keys.iter().map(|(id, k)| (id, encode(k), k)).collect();
        let formats = batch.formats.map(|f| encode(&f.iter().cloned().collect::<Vec<_>>()));
        let directory: Vec<(Vec<u8>, Option<Vec<u8>>)> = batch
            .directory
            .iter()
            .map(|(k, e)| (k.encode(), e.as_ref().map(encode)))
            .collect();
        let vault: Vec<(&Vec<u8>, Option<Vec<u8>>)> =
            batch.vault.iter().map(|(k, e)| (k, e.as_ref().map(encode))).collect();
        let applied_seq = batch.applied_seq;
        let trees = (
            &self.keys,
            &self.by_hash,
            &self.by_prefix,
            &self.by_project,
            &self.meta,
            &self.directory,
            &self.marks,
            &self.vault,
        );
        let result: Result<(), TransactionError<()>> = trees.transaction(|(k, h, pre, proj, m, pl, mk, vt)| {
            for (id, value, stored) in &encoded {
                let id = id.as_str().as_bytes();
                k.insert(id, value.as_slice())?;
                h.insert(&stored.tag.0[..], id)?;
                pre.insert(join(stored.record.prefix(), id), &[][..])?;
                proj.insert(join(&stored.record.project, id), &[][..])?;
            }
            if let Some(f) = &formats {
                m.insert(FORMATS, f.as_slice())?;
            }
            for (key, entry) in &directory {
                match entry {
                    Some(e) => pl.insert(key.as_slice(), e.as_slice())?,
                    None => pl.remove(key.as_slice())?,
                };
            }
            for (key, entry) in &vault {
                match entry {
                    Some(e) => vt.insert(key.as_slice(), e.as_slice())?,
                    None => vt.remove(key.as_slice())?,
                };
            }
            for (version, check) in batch.masters {
                let mut key = b"master/".to_vec();
                key.extend_from_slice(&version.to_be_bytes());
                m.insert(key, &check[..])?;
            }
            if let Some(min) = batch.vault_min {
                m.insert(&b"vault_min"[..], &min.to_be_bytes()[..])?;
            }
            for (id, mark) in batch.marks {
                mk.insert(id.as_str().as_bytes(), &mark.to_be_bytes()[..])?;
            }
            m.insert(APPLIED_SEQ, &applied_seq.to_be_bytes()[..])?;
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        result.map_err(|e| match e {
            TransactionError::Storage(e) => IndexError::Sled(e).into(),
            TransactionError::Abort(()) => IndexError::Aborted.into(),
        })
    }

    /// Flushes sled to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// sled may have written files while the index was open (a blob for a large page); they
/// have the umask's modes, inside the 0700 directory. This brings them to 0600 on close.
impl Drop for Index {
    fn drop(&mut self) {
        // Best effort: what fails here is fixed by the next open, or fails it.
        let _ = self.db.flush();
        let _ = crate::modes::restrict_tree(&self.dir);
    }
}

/// Opens the sled database. The caller holds the store's own lock, so no other store can
/// have it open; but sled releases its file lock a few milliseconds after the last handle
/// of a just-closed store is dropped (its I/O threads finish first). A lock conflict is
/// therefore retried for a bounded time rather than reported.
///
/// sled gives its directories and files the umask's modes: the directory is made 0700
/// before sled opens it and everything in it 0700 / 0600 after, and again when the
/// [`Index`] is dropped (see `crate::modes`).
fn open_db(dir: &Path) -> Result<sled::Db> {
    crate::modes::private_dir(dir)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open() {
            // sled reports the lock conflict as ErrorKind::Other with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => {
                let db = other?;
                crate::modes::restrict_tree(dir)?;
                return Ok(db);
            }
        }
    }
}

fn join(head: &str, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(head.len() + 1 + id.len());
    k.extend_from_slice(head.as_bytes());
    k.push(0);
    k.extend_from_slice(id);
    k
}

fn scan_ids<'a>(tree: &'a sled::Tree, head: &str) -> impl Iterator<Item = sled::Result<sled::IVec>> + 'a {
    let start = head.len() + 1;
    tree.scan_prefix(join(head, b""))
        .keys()
        .map(move |k| k.map(|k| sled::IVec::from(k.get(start..).unwrap_or_default())))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_FORMAT];
    // Encoding plain data into a Vec cannot fail.
    if let Ok(bytes) = bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (&version, body) = bytes.split_first().ok_or(IndexError::EmptyValue)?;
    if version != VALUE_FORMAT {
        return Err(IndexError::UnknownValueFormat(version).into());
    }
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| IndexError::Undecodable(e).into())
}
