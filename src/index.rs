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
//! | `by_sha256`  | SHA-256 of an imported key (32 bytes) | key id (until its re-tag) |
//! | `meta`       | `applied_seq`, `formats`, `clean` | u64 BE; format list; 0/1 |
//! | `meta`       | `webhook/` + id; `threshold/` + key id | [`Webhook`]; period u32 BE, percent u8 |
//! | `meta`       | `owner_of/` + key id      | the key's owner id            |
//! | `meta`       | `owned/` + owner, 0, key id | empty                       |
//! | `meta`       | `owner_credit/` + owner   | period u32 BE, credit i64 BE  |
//! | `counters`   | `o/` + owner id           | the owner's [`Counters`]      |
//! | `marks`      | `o/` + owner id           | the owner's budget mark       |
//!
//! Every batch of log records is applied in one sled transaction across the trees,
//! together with `applied_seq`, the sequence number of the last record it reflects.
//!
//! # Mirrors
//!
//! Beside the trees, `crate::mirror` keeps memory-mapped mirrors of `keys` (by tag),
//! `counters` and `marks`, written after each transaction commits: what a cold verify
//! reads, without a walk of sled's B-tree. [`Index::open`] compares each with the sled
//! entries it checks (count and MAC sum) and rebuilds it from sled when they differ.
//!
//! # Sealed
//!
//! Every value is sealed: a format byte, a 16-byte MAC (keyed BLAKE3, with a key derived
//! from the pepper, over the tree's name, the entry's key and the payload), then the
//! payload. A read checks the MAC, so an entry written without the pepper is refused
//! before anything is served from it. The XOR of every entry's MAC is kept, sealed, in
//! `meta/seal` and updated in the same transaction as the entries; opening the index
//! checks every entry and that sum, so an entry removed, added, or put back to an older
//! sealed value (a replay) is found as well. Only a rollback of the whole index to an
//! earlier state of its own passes, and that older `applied_seq` makes open replay the
//! log past it. `docs/SECURITY.md` says what this does and does not stop.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::directory::{DirEntry, DirKey, Directory};
use crate::error::{IndexError, OpenError, Result};
use crate::event::Tag;
use crate::limits::budget::unpack;
use crate::mirror::{Mirror, Put, Summary};
use crate::record::{KeyId, KeyRecord};
use crate::secret::Pepper;
use crate::token::{Format, FormatSet};
use crate::vault::SealedSecret;
use crate::webhook::{Webhook, WebhookId};

/// The format byte of values this build writes (1 was unsealed).
const VALUE_FORMAT: u8 = 2;
/// Bytes of an entry's MAC.
const MAC_LEN: usize = 16;
/// The longest MAC input hashed in one call (one BLAKE3 chunk).
const ONE_SHOT: usize = 1024;
/// What derives the MAC key from the pepper.
const KEY_CONTEXT: &str = "credstore 2026 index mac v1";
/// The `meta` key of the sealed XOR of every other entry's MAC.
const SEAL: &[u8] = b"seal";
const APPLIED_SEQ: &[u8] = b"applied_seq";
/// The chain hash of record `applied_seq`: it ties the index to this log's history.
const APPLIED_HASH: &[u8] = b"applied_hash";
const FORMATS: &[u8] = b"formats";
const CLEAN: &[u8] = b"clean";
/// What the `meta` keys of webhooks start with.
const WEBHOOK_PREFIX: &[u8] = b"webhook/";
const VAULT_MIN: &[u8] = b"vault_min";
/// The prefixes imported keys were declared with (a list, bincode).
const IMPORT_PREFIXES: &[u8] = b"import_prefixes";

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
    /// Budget credits set: (period, credit).
    pub credits: &'a BTreeMap<KeyId, (u32, i64)>,
    /// Keys given to an owner.
    pub owned: &'a BTreeMap<KeyId, String>,
    /// Owners' raised budget marks.
    pub owner_marks: &'a BTreeMap<String, u64>,
    /// Owners' budget credits set: (period, credit).
    pub owner_credits: &'a BTreeMap<String, (u32, i64)>,
    /// Secret versions put (`Some`) or deleted (`None`), by `vault_key`.
    pub vault: &'a BTreeMap<Vec<u8>, Option<VaultEntry>>,
    /// Master key check values registered.
    pub masters: &'a BTreeMap<u32, [u8; 32]>,
    /// A new minimum decryption version.
    pub vault_min: Option<u32>,
    /// Webhooks added or changed (`Some`) or removed (`None`).
    pub webhooks: &'a BTreeMap<WebhookId, Option<Webhook>>,
    /// Budget thresholds logged: (period, percent).
    pub thresholds: &'a BTreeMap<KeyId, (u32, u8)>,
    /// Imported keys' SHA-256 entries added (`Some`) or removed at their re-tag (`None`).
    pub imported: &'a BTreeMap<[u8; 32], Option<KeyId>>,
    /// The prefixes imported keys were declared with, when they changed.
    pub import_prefixes: Option<&'a Vec<String>>,
    /// Lifecycle notices logged: (kind letter, key) -> the episode they were for.
    pub notices: &'a BTreeMap<(u8, KeyId), i64>,
    /// Anomalies logged (`key.anomaly`): when, the key, what.
    pub anomalies: &'a [(i64, Option<KeyId>, crate::anomaly::Anomaly)],
    pub applied_seq: u64,
    /// The chain hash of record `applied_seq`.
    pub applied_hash: [u8; 32],
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
    by_sha256: sled::Tree,
    meta: sled::Tree,
    /// Set when a batch could not be applied: why. The index then lacks a change the log
    /// holds, so it refuses reads and later batches until the store is reopened.
    behind: std::sync::OnceLock<String>,
    mac_key: [u8; 32],
    /// The XOR of every entry's MAC, as `meta/seal` holds it. Writers hold the lock across
    /// their transaction, so the sum and the entries move together.
    sum: std::sync::Mutex<Mac>,
    /// The directory, for [`crate::modes::restrict_tree`] on drop (`None`: a temporary
    /// index, which sled removes).
    dir: Option<std::path::PathBuf>,
    /// The tags `by_hash` holds, for [`Index::get_by_tag`] to answer a tag it lacks without
    /// reading sled. Built by [`Index::open`] as it checks every entry; `None` (every
    /// lookup reads sled) for an index opened otherwise.
    filter: Option<crate::tag_filter::TagFilter>,
    /// How many entries `by_sha256` held when [`Index::open`] checked them (imported keys
    /// not yet re-tagged); `None` for an index opened otherwise.
    sha256_at_open: Option<u64>,
    /// The memory-mapped mirrors a cold verify reads instead of sled (`crate::mirror`):
    /// checked against the sled trees by [`Index::open`]; `None` (every read goes to sled)
    /// for an index opened otherwise.
    mirrors: Option<Mirrors>,
    /// The keys `meta` holds, for the reads a cold verify makes of entries most keys lack
    /// (a budget credit, an owner): a key it lacks is absent without a read of sled.
    /// Built by [`Index::open`] like `filter`.
    meta_filter: Option<crate::tag_filter::TagFilter>,
}

/// The mirrors of the trees a cold verify reads.
struct Mirrors {
    /// `keys` by tag: tag -> (aux: key id) the key's sealed `keys` value. Keys whose tag
    /// is pending (imported, not yet presented) are not in it, as they are not in
    /// `by_hash`.
    by_tag: Mirror,
    /// `counters`, entry for entry.
    counters: Mirror,
    /// `marks`, entry for entry.
    marks: Mirror,
}

/// What [`Index::check_all`] gathers as it walks every entry.
#[derive(Default)]
struct Walk {
    /// The tags of `by_hash`.
    tags: Vec<[u8; 32]>,
    /// Entries of `by_sha256`.
    sha256_entries: u64,
    /// The key ids `by_sha256` names (keys whose tag is pending).
    pending: std::collections::HashSet<Vec<u8>>,
    /// `keys` entries of keys not pending, as the mirror by tag must hold them.
    keys: Summary,
    counters: Summary,
    marks: Summary,
    /// The filter words of every `meta` key.
    meta_keys: Vec<[u8; 32]>,
}

type Mac = [u8; MAC_LEN];

/// One sealed write of a batch: (tree index, key, value or `None` to remove).
type Write = (usize, Vec<u8>, Option<Vec<u8>>);

impl Index {
    /// Opens (or creates) the index in `dir`, sealed with a key derived from `pepper` and
    /// the store's id,
    /// and checks every entry and the sum of their MACs.
    ///
    /// # Errors
    /// [`IndexError::Tampered`] for an entry whose MAC fails, [`IndexError::SealMismatch`]
    /// when the entries do not add up to the seal; sled's errors.
    pub fn open(dir: &Path, pepper: &Pepper, store_id: [u8; 16]) -> Result<Self> {
        let mut index = Index::open_unchecked(dir, pepper, store_id)?;
        let mut walk = Walk::default();
        let sum = index.check_all(&mut walk)?;
        index.sha256_at_open = Some(walk.sha256_entries);
        *lock(&index.sum) = sum;
        let filter = crate::tag_filter::TagFilter::with_capacity(walk.tags.len());
        for tag in &walk.tags {
            filter.insert(tag);
        }
        index.filter = Some(filter);
        let meta_filter = crate::tag_filter::TagFilter::with_capacity(walk.meta_keys.len());
        for words in &walk.meta_keys {
            meta_filter.insert(words);
        }
        index.meta_filter = Some(meta_filter);
        index.mirrors = Some(index.open_mirrors(dir, &walk)?);
        Ok(index)
    }

    /// Opens the mirrors in `dir` and compares each with what the check of sled found
    /// (`walk`); a mirror that differs (a crash while it was written, an index of a build
    /// without mirrors, damage) is rebuilt from sled.
    fn open_mirrors(&self, dir: &Path, walk: &Walk) -> Result<Mirrors> {
        let io = |e| crate::error::Error::io(dir, e);
        let mirrors = Mirrors {
            by_tag: Mirror::open(dir, "by_tag").map_err(io)?,
            counters: Mirror::open(dir, "counters").map_err(io)?,
            marks: Mirror::open(dir, "marks").map_err(io)?,
        };
        if mirrors.by_tag.summary() != Some(walk.keys) {
            mirrors.by_tag.reset(walk.keys.count).map_err(io)?;
            let mut batch: Vec<([u8; 32], sled::IVec, sled::IVec)> = Vec::new();
            for item in self.keys.iter() {
                let (id, value) = item?;
                let stored: StoredKey = self.decode("keys", &id, &value)?;
                if !stored.tag.is_pending() {
                    batch.push((stored.tag.0, id, value));
                }
                if batch.len() == MIRROR_BATCH {
                    put_owned(&mirrors.by_tag, &batch).map_err(io)?;
                    batch.clear();
                }
            }
            put_owned(&mirrors.by_tag, &batch).map_err(io)?;
        }
        for (mirror, tree, expected) in [
            (&mirrors.counters, &self.counters, walk.counters),
            (&mirrors.marks, &self.marks, walk.marks),
        ] {
            if mirror.summary() == Some(expected) {
                continue;
            }
            mirror.reset(expected.count).map_err(io)?;
            let mut batch: Vec<(sled::IVec, sled::IVec)> = Vec::new();
            for item in tree.iter() {
                batch.push(item?);
                if batch.len() == MIRROR_BATCH {
                    let puts: Vec<Put<'_>> = batch.iter().map(|(k, v)| (k.as_ref(), &[][..], v.as_ref())).collect();
                    mirror.put_all(&puts).map_err(io)?;
                    batch.clear();
                }
            }
            let puts: Vec<Put<'_>> = batch.iter().map(|(k, v)| (k.as_ref(), &[][..], v.as_ref())).collect();
            mirror.put_all(&puts).map_err(io)?;
        }
        Ok(mirrors)
    }

    /// An index in a temporary directory that sled removes when it is dropped.
    pub fn temporary(pepper: &Pepper, store_id: [u8; 16]) -> Result<Self> {
        Index::on(sled::Config::new().temporary(true).open()?, None, pepper, store_id)
    }

    /// Opens the index in `dir` without checking it: only to name what a damaged or
    /// tampered index holds ([`Index::raw_keys`]), never to serve from.
    pub fn open_unchecked(dir: &Path, pepper: &Pepper, store_id: [u8; 16]) -> Result<Self> {
        Index::on(open_db(dir)?, Some(dir.to_path_buf()), pepper, store_id)
    }

    fn on(db: sled::Db, dir: Option<std::path::PathBuf>, pepper: &Pepper, store_id: [u8; 16]) -> Result<Self> {
        // The key is the store's own: an index of another store with the same pepper (a
        // fleet's hosts share one) does not check here.
        let mut material = zeroize::Zeroizing::new(Vec::with_capacity(48));
        material.extend_from_slice(pepper.bytes());
        material.extend_from_slice(&store_id);
        Ok(Index {
            keys: db.open_tree("keys")?,
            by_hash: db.open_tree("by_hash")?,
            by_prefix: db.open_tree("by_prefix")?,
            by_project: db.open_tree("by_project")?,
            counters: db.open_tree("counters")?,
            directory: db.open_tree("directory")?,
            marks: db.open_tree("marks")?,
            vault: db.open_tree("vault")?,
            by_sha256: db.open_tree("by_sha256")?,
            meta: db.open_tree("meta")?,
            db,
            behind: std::sync::OnceLock::new(),
            mac_key: blake3::derive_key(KEY_CONTEXT, material.as_slice()),
            sum: std::sync::Mutex::new([0; MAC_LEN]),
            dir,
            filter: None,
            sha256_at_open: None,
            mirrors: None,
            meta_filter: None,
        })
    }

    /// Every entry of the `keys` tree by id, as stored: `None` for one that fails its MAC
    /// or does not decode.
    pub fn raw_keys(&self) -> Result<BTreeMap<String, Option<StoredKey>>> {
        let mut out = BTreeMap::new();
        for item in self.keys.iter() {
            let (id, value) = item?;
            let held = self.decode("keys", &id, &value).ok();
            out.insert(String::from_utf8_lossy(&id).into_owned(), held);
        }
        Ok(out)
    }

    /// Checks every entry's MAC and that they add up to the seal; returns the sum.
    /// Gathers in `walk` what start-up needs of the entries (the tags of `by_hash`, the
    /// entries of `by_sha256`, what the mirrors must hold, the keys of `meta`): the walk
    /// start-up makes anyway. `by_sha256` is walked first, so the keys it names are known
    /// as pending when `keys` is walked.
    fn check_all(&self, walk: &mut Walk) -> Result<Mac> {
        let mut sum = [0; MAC_LEN];
        for tree in self.trees() {
            let name = tree_name(tree);
            for item in tree.iter() {
                let (key, value) = item?;
                if name == "meta" && key.as_ref() == SEAL {
                    continue;
                }
                let payload = self.unseal(name, &key, &value)?;
                xor(&mut sum, mac_of(&value));
                match name {
                    "by_hash" => {
                        if let Ok(tag) = <[u8; 32]>::try_from(key.as_ref()) {
                            walk.tags.push(tag);
                        }
                    }
                    "by_sha256" => {
                        walk.sha256_entries += 1;
                        walk.pending.insert(payload.to_vec());
                    }
                    "keys" if !walk.pending.contains(key.as_ref()) => walk.keys.add(&value),
                    "counters" => walk.counters.add(&value),
                    "marks" => walk.marks.add(&value),
                    "meta" => walk.meta_keys.push(filter_words(&key)),
                    _ => {}
                }
            }
        }
        let sealed = match self.meta.get(SEAL)? {
            Some(v) => to_mac(self.unseal("meta", SEAL, &v)?),
            None => [0; MAC_LEN],
        };
        if sealed != sum {
            return Err(IndexError::SealMismatch.into());
        }
        Ok(sum)
    }

    fn trees(&self) -> [&sled::Tree; 10] {
        [
            &self.by_sha256,
            &self.keys,
            &self.by_hash,
            &self.by_prefix,
            &self.by_project,
            &self.counters,
            &self.directory,
            &self.marks,
            &self.vault,
            &self.meta,
        ]
    }

    /// The MAC of an entry of `tree`.
    fn mac(&self, tree: &str, key: &[u8], payload: &[u8]) -> Mac {
        // Most entries fit one BLAKE3 chunk: one call of the one-shot keyed hash over the
        // same bytes (BLAKE3 hashes a stream: the split of the updates does not change the
        // output), about 2,000 instructions less per MAC than the hasher's five updates.
        let key_len = (key.len() as u64).to_le_bytes();
        let parts: [&[u8]; 5] = [tree.as_bytes(), &[0], &key_len, key, payload];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = [0u8; ONE_SHOT];
        if let Some(input) = buf.get_mut(..total) {
            let mut rest: &mut [u8] = input;
            for part in parts {
                let (head, tail) = rest.split_at_mut(part.len());
                head.copy_from_slice(part);
                rest = tail;
            }
            return to_mac(blake3::keyed_hash(&self.mac_key, input).as_bytes());
        }
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(tree.as_bytes());
        h.update(&[0]);
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(payload);
        // The first bytes of the 32-byte hash (the same bytes the XOF would give first,
        // without its output reader: about 580 instructions less a MAC).
        to_mac(h.finalize().as_bytes())
    }

    /// The value to store for `payload` under `key` in `tree`: format byte, MAC, payload.
    fn seal(&self, tree: &str, key: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + MAC_LEN + payload.len());
        out.push(VALUE_FORMAT);
        out.extend_from_slice(&self.mac(tree, key, payload));
        out.extend_from_slice(payload);
        out
    }

    /// The payload of a stored value, once its format and MAC check.
    fn unseal<'v>(&self, tree: &'static str, key: &[u8], value: &'v [u8]) -> Result<&'v [u8]> {
        let (&version, rest) = value.split_first().ok_or(IndexError::EmptyValue)?;
        if version != VALUE_FORMAT {
            return Err(IndexError::UnknownValueFormat(version).into());
        }
        let (mac, payload) = rest.split_at_checked(MAC_LEN).ok_or(IndexError::EmptyValue)?;
        if !constant_time_eq(mac, &self.mac(tree, key, payload)) {
            return Err(IndexError::Tampered {
                tree,
                key: printable(key),
            }
            .into());
        }
        Ok(payload)
    }

    /// A sealed value of `tree` decoded as `T`.
    fn decode<T: serde::de::DeserializeOwned>(&self, tree: &'static str, key: &[u8], value: &[u8]) -> Result<T> {
        let payload = self.unseal(tree, key, value)?;
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| IndexError::Undecodable(e).into())
    }

    /// A sealed value of `tree` holding a big-endian number of `N` bytes.
    fn number<const N: usize>(&self, tree: &'static str, key: &[u8], value: &[u8]) -> Result<[u8; N]> {
        let payload = self.unseal(tree, key, value)?;
        payload.try_into().map_err(|_| IndexError::EmptyValue.into())
    }

    /// The sequence number of the last log record applied.
    pub fn applied_seq(&self) -> Result<u64> {
        match self.meta.get(APPLIED_SEQ)? {
            Some(v) => Ok(u64::from_be_bytes(self.number("meta", APPLIED_SEQ, &v)?)),
            None => Ok(0),
        }
    }

    /// The chain hash of record `applied_seq`, as the index recorded it (`None` for an
    /// index that has applied nothing).
    pub fn applied_hash(&self) -> Result<Option<[u8; 32]>> {
        self.meta
            .get(APPLIED_HASH)?
            .map(|v| self.number("meta", APPLIED_HASH, &v))
            .transpose()
    }

    /// The registered key formats.
    pub fn formats(&self) -> Result<FormatSet> {
        match self.meta.get(FORMATS)? {
            Some(bytes) => Ok(FormatSet::new(self.decode::<Vec<Format>>("meta", FORMATS, &bytes)?)),
            None => Ok(FormatSet::default()),
        }
    }

    /// The greatest key id issued so far.
    pub fn last_id(&self) -> Result<Option<KeyId>> {
        match self.keys.last()? {
            Some((id, value)) => {
                self.unseal("keys", &id, &value)?;
                Ok(std::str::from_utf8(&id).ok().and_then(|s| KeyId::parse(s).ok()))
            }
            None => Ok(None),
        }
    }

    /// Refuses when a batch could not be applied (see [`Index::apply`]).
    fn check_current(&self) -> Result<()> {
        match self.behind.get() {
            Some(why) => Err(IndexError::Behind(why.clone()).into()),
            None => Ok(()),
        }
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Result<Option<StoredKey>> {
        self.check_current()?;
        let id = id.as_str().as_bytes();
        self.keys.get(id)?.map(|v| self.decode("keys", id, &v)).transpose()
    }

    /// The key with this tag: two reads, two MAC checks and a decode (the path a cache
    /// miss takes).
    pub fn get_by_tag(&self, tag: &Tag) -> Result<Option<StoredKey>> {
        self.check_current()?;
        if self.filter.as_ref().is_some_and(|f| !f.may_contain(&tag.0)) {
            return Ok(None);
        }
        // The mirror: one probe of a mapped table, one MAC check and a decode. The MAC
        // covers the key id the record names, not the tag it is filed under: the decoded
        // key must carry the tag looked up, or another key's sealed value was filed here.
        if let Some(mirrors) = &self.mirrors {
            let found = mirrors
                .by_tag
                .get(&tag.0, |id, value| self.decode::<StoredKey>("keys", id, value))
                .transpose()?;
            return match found {
                Some(stored) if stored.tag != *tag => Err(IndexError::Tampered {
                    tree: "by_tag",
                    key: hex::encode(tag.0),
                }
                .into()),
                found => Ok(found),
            };
        }
        let Some(sealed_id) = self.by_hash.get(tag.0)? else {
            return Ok(None);
        };
        let id = self.unseal("by_hash", &tag.0, &sealed_id)?;
        self.keys.get(id)?.map(|v| self.decode("keys", id, &v)).transpose()
    }

    /// The imported key with this SHA-256, while it is not yet re-tagged.
    pub fn get_by_sha256(&self, sha256: &[u8; 32]) -> Result<Option<StoredKey>> {
        match self.imported_id(sha256)? {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// The id of the imported key with this SHA-256, while it is not yet re-tagged.
    pub fn imported_id(&self, sha256: &[u8; 32]) -> Result<Option<KeyId>> {
        self.check_current()?;
        let Some(sealed) = self.by_sha256.get(sha256)? else {
            return Ok(None);
        };
        let id = self.unseal("by_sha256", sha256, &sealed)?;
        Ok(std::str::from_utf8(id).ok().and_then(|s| KeyId::parse(s).ok()))
    }

    /// How many imported keys are not yet re-tagged (counts the tree: for opening).
    pub fn imports_pending(&self) -> u64 {
        // sled's `len` walks the tree: the count taken by `open`'s check, when there was one.
        self.sha256_at_open.unwrap_or_else(|| self.by_sha256.len() as u64)
    }

    /// The prefixes imported keys were declared with.
    pub fn import_prefixes(&self) -> Result<Vec<String>> {
        match self.meta.get(IMPORT_PREFIXES)? {
            Some(bytes) => self.decode("meta", IMPORT_PREFIXES, &bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Every key, in id (creation) order, optionally only those of one project or prefix.
    pub fn list(&self, project: Option<&str>, prefix: Option<&str>) -> Result<Vec<StoredKey>> {
        self.check_current()?;
        let ids: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = match (project, prefix) {
            (Some(p), _) => Box::new(scan_ids(&self.by_project, p)),
            (None, Some(p)) => Box::new(scan_ids(&self.by_prefix, p)),
            (None, None) => Box::new(self.keys.iter().keys()),
        };
        let mut out = Vec::new();
        for id in ids {
            let id = id?;
            if let Some(v) = self.keys.get(&id)? {
                let stored: StoredKey = self.decode("keys", &id, &v)?;
                if prefix.is_none_or(|p| stored.record.prefix() == p)
                    && project.is_none_or(|p| stored.record.project == p)
                {
                    out.push(stored);
                }
            }
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(out)
    }

    /// Every plan, custom role and user.
    pub fn directory(&self) -> Result<Directory> {
        let mut entries: Vec<DirEntry> = Vec::new();
        for item in self.directory.iter() {
            let (k, v) = item?;
            entries.push(self.decode("directory", &k, &v)?);
        }
        Ok(Directory::from_entries(entries))
    }

    /// Every version of a secret, oldest first.
    pub fn vault_versions(&self, project: &str, name: &str) -> Result<Vec<(u32, VaultEntry)>> {
        let prefix = vault_key(project, name, None);
        let mut out = Vec::new();
        for item in self.vault.scan_prefix(&prefix) {
            let (k, v) = item?;
            let version = u32::from_be_bytes(crate::log::frame::to_array(k.get(prefix.len()..).unwrap_or_default()));
            out.push((version, self.decode("vault", &k, &v)?));
        }
        Ok(out)
    }

    /// Every secret version: (project, name, version, entry), in key order.
    pub fn vault_all(&self) -> Result<Vec<(String, String, u32, VaultEntry)>> {
        let mut out = Vec::new();
        for item in self.vault.iter() {
            let (k, v) = item?;
            let entry = self.decode("vault", &k, &v)?;
            let mut parts = k.splitn(3, |b| *b == 0);
            let project = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let version = u32::from_be_bytes(crate::log::frame::to_array(parts.next().unwrap_or_default()));
            out.push((project, name, version, entry));
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
            masters.insert(version, self.number("meta", &k, &v)?);
        }
        let min = match self.meta.get(VAULT_MIN)? {
            Some(v) => u32::from_be_bytes(self.number("meta", VAULT_MIN, &v)?),
            None => 0,
        };
        Ok((masters, min))
    }

    /// A key's budget credit: the period it is for and the amount, if it was ever given
    /// one.
    pub fn credit(&self, id: &KeyId) -> Result<Option<(u32, i64)>> {
        self.credit_at(&credit_key(id))
    }

    /// Every registered webhook, by id.
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.check_current()?;
        let mut out = Vec::new();
        for item in self.meta.scan_prefix(WEBHOOK_PREFIX) {
            let (k, v) = item?;
            out.push(self.decode("meta", &k, &v)?);
        }
        Ok(out)
    }

    /// The anomalies logged from `since` to before `until` (unix ms), oldest first: when,
    /// the key (none for `guessing`), what.
    pub fn anomalies(&self, since: i64, until: i64) -> Result<Vec<(i64, Option<KeyId>, crate::anomaly::Anomaly)>> {
        self.check_current()?;
        let mut out = Vec::new();
        for item in self.meta.range(anomaly_time_key(since)..anomaly_time_key(until)) {
            let (k, v) = item?;
            let time = k
                .get(ANOMALY_PREFIX.len()..ANOMALY_PREFIX.len() + 8)
                .unwrap_or_default();
            let at = time
                .try_into()
                .map_or(0, |b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64);
            let (id, anomaly): (Option<KeyId>, crate::anomaly::Anomaly) = self.decode("meta", &k, &v)?;
            out.push((at, id, anomaly));
        }
        Ok(out)
    }

    /// The owner of a key, if it has one.
    pub fn owner_of(&self, id: &KeyId) -> Result<Option<String>> {
        self.check_current()?;
        let key = owner_of_key(id);
        let Some(sealed) = self.meta_get(&key)? else {
            return Ok(None);
        };
        let owner = self.unseal("meta", &key, &sealed)?;
        Ok(Some(String::from_utf8_lossy(owner).into_owned()))
    }

    /// The ids of an owner's keys, in id (creation) order.
    pub fn keys_of_owner(&self, owner: &str) -> Result<Vec<KeyId>> {
        self.check_current()?;
        let prefix = owned_key(owner, None);
        let mut out = Vec::new();
        for item in self.meta.scan_prefix(&prefix) {
            let (k, v) = item?;
            self.unseal("meta", &k, &v)?;
            let id = std::str::from_utf8(k.get(prefix.len()..).unwrap_or_default()).unwrap_or_default();
            if let Ok(id) = KeyId::parse(id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// A registered webhook.
    pub fn webhook(&self, id: &WebhookId) -> Result<Option<Webhook>> {
        self.check_current()?;
        let key = webhook_key(id);
        match self.meta.get(&key)? {
            Some(v) => Ok(Some(self.decode("meta", &key, &v)?)),
            None => Ok(None),
        }
    }

    /// The last budget threshold logged for a key: (period, percent).
    pub fn threshold(&self, id: &KeyId) -> Result<Option<(u32, u8)>> {
        self.check_current()?;
        let key = threshold_key(id);
        let Some(sealed) = self.meta.get(&key)? else {
            return Ok(None);
        };
        let value: [u8; 5] = self.number("meta", &key, &sealed)?;
        let [a, b, c, d, percent] = value;
        Ok(Some((u32::from_be_bytes([a, b, c, d]), percent)))
    }

    /// An owner's budget credit: the period it is for and the amount, if ever given one.
    pub fn owner_credit(&self, owner: &str) -> Result<Option<(u32, i64)>> {
        self.credit_at(&owner_credit_key(owner))
    }

    /// A budget credit kept at `key` in `meta` (a key's or an owner's): its period and
    /// amount.
    fn credit_at(&self, key: &[u8]) -> Result<Option<(u32, i64)>> {
        self.check_current()?;
        let Some(sealed) = self.meta_get(key)? else {
            return Ok(None);
        };
        let value: [u8; 12] = self.number("meta", key, &sealed)?;
        let (period, credit) = value.split_at(4);
        let period: [u8; 4] = crate::log::frame::to_array(period);
        let credit: [u8; 8] = crate::log::frame::to_array(credit);
        Ok(Some((u32::from_be_bytes(period), i64::from_be_bytes(credit))))
    }

    /// An owner's persisted budget mark (packed), 0 if none.
    pub fn owner_mark(&self, owner: &str) -> Result<u64> {
        self.mark_at(&owner_counter_key(owner))
    }

    /// An owner's persisted counters.
    pub fn owner_counters(&self, owner: &str) -> Result<Option<Counters>> {
        self.counters_at(&owner_counter_key(owner))
    }

    /// A `meta` entry, as sled holds it; `None` without a read of sled when the filter of
    /// `meta`'s keys lacks `key`.
    fn meta_get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        if self
            .meta_filter
            .as_ref()
            .is_some_and(|f| !f.may_contain(&filter_words(key)))
        {
            return Ok(None);
        }
        Ok(self.meta.get(key)?)
    }

    /// The budget mark (packed) at `key` of `marks`, from its mirror when there is one.
    fn mark_at(&self, key: &[u8]) -> Result<u64> {
        let number = |v: &[u8]| self.number("marks", key, v).map(u64::from_be_bytes);
        match &self.mirrors {
            Some(m) => Ok(m.marks.get(key, |_, v| number(v)).transpose()?.unwrap_or(0)),
            None => Ok(self.marks.get(key)?.map(|v| number(&v)).transpose()?.unwrap_or(0)),
        }
    }

    /// The counters at `key` of `counters`, from its mirror when there is one.
    fn counters_at(&self, key: &[u8]) -> Result<Option<Counters>> {
        let decode = |v: &[u8]| self.decode("counters", key, v);
        match &self.mirrors {
            Some(m) => m.counters.get(key, |_, v| decode(v)).transpose(),
            None => self.counters.get(key)?.map(|v| decode(&v)).transpose(),
        }
    }

    /// Writes owners' counters in one transaction.
    pub fn write_owner_counters(&self, entries: &[(String, Counters)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let sealed: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(owner, counters)| {
                let key = owner_counter_key(owner);
                let value = self.seal("counters", &key, &encode(counters));
                (key, value)
            })
            .collect();
        self.write_sealed(false, &sealed)
    }

    /// The episode of the last lifecycle notice of `kind` (`x` expiring, `u` unused, `e`
    /// expired) logged for a key, if any: the deadline, or the time unused since.
    pub fn notice(&self, kind: u8, id: &KeyId) -> Result<Option<i64>> {
        self.check_current()?;
        let key = notice_key(kind, id);
        let Some(sealed) = self.meta.get(&key)? else {
            return Ok(None);
        };
        Ok(Some(i64::from_be_bytes(self.number("meta", &key, &sealed)?)))
    }

    /// A key's persisted budget mark (packed), 0 if none.
    pub fn mark(&self, id: &KeyId) -> Result<u64> {
        self.mark_at(id.as_str().as_bytes())
    }

    /// A key's persisted counters.
    pub fn counters(&self, id: &KeyId) -> Result<Option<Counters>> {
        self.counters_at(id.as_str().as_bytes())
    }

    /// Writes counters in one transaction.
    pub fn write_counters(&self, entries: &[(KeyId, Counters)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let sealed: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(id, counters)| {
                let id = id.as_str().as_bytes();
                (id.to_vec(), self.seal("counters", id, &encode(counters)))
            })
            .collect();
        self.write_sealed(false, &sealed)
    }

    /// After an unclean stop: raises every key's persisted spend to its budget mark (the
    /// spend acknowledged before the crash may have reached it), once, so later loads
    /// restore spend from the counters alone.
    pub fn restore_spend_to_marks(&self) -> Result<()> {
        let mut raised = Vec::new();
        let mut raised_owners = Vec::new();
        for item in self.marks.iter() {
            let (id, mark) = item?;
            let mark = u64::from_be_bytes(self.number("marks", &id, &mark)?);
            if let Some(owner) = id.strip_prefix(OWNER_COUNTER_PREFIX) {
                let owner = String::from_utf8_lossy(owner).into_owned();
                let mut counters = self.owner_counters(&owner)?.unwrap_or_default();
                let other_period = unpack(mark).0 != unpack(counters.spend).0;
                if mark > counters.spend || (other_period && mark != 0) {
                    counters.spend = mark;
                    raised_owners.push((owner, counters));
                }
                continue;
            }
            let Some(id) = std::str::from_utf8(&id).ok().and_then(|s| KeyId::parse(s).ok()) else {
                continue;
            };
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
        self.write_owner_counters(&raised_owners)?;
        self.db.flush()?;
        Ok(())
    }

    /// Whether the store was last closed cleanly (counters flushed exactly).
    pub fn was_clean(&self) -> Result<bool> {
        match self.meta.get(CLEAN)? {
            Some(v) => Ok(self.unseal("meta", CLEAN, &v)? == [1]),
            None => Ok(false),
        }
    }

    /// Records a clean close (`true`) or an open store (`false`), durably.
    /// The anomaly detector's state as the last close left it (see
    /// `anomaly::Detector::snapshot`), if it is there and its MAC checks.
    pub fn anomaly_state(&self) -> Result<Option<Vec<u8>>> {
        let tree = self.db.open_tree(ANOMALY_STATE_TREE)?;
        let Some(sealed) = tree.get(ANOMALY_STATE_KEY)? else {
            return Ok(None);
        };
        Ok(Some(
            self.unseal(ANOMALY_STATE_TREE, ANOMALY_STATE_KEY, &sealed)?.to_vec(),
        ))
    }

    /// Keeps the anomaly detector's state until the next open (sealed with a MAC of its
    /// own, outside the index's sum: it is no state the log makes).
    pub fn set_anomaly_state(&self, state: &[u8]) -> Result<()> {
        let tree = self.db.open_tree(ANOMALY_STATE_TREE)?;
        tree.insert(
            ANOMALY_STATE_KEY,
            self.seal(ANOMALY_STATE_TREE, ANOMALY_STATE_KEY, state),
        )?;
        Ok(())
    }

    pub fn set_clean(&self, clean: bool) -> Result<()> {
        let value = self.seal("meta", CLEAN, &[u8::from(clean)]);
        self.write_sealed(true, &[(CLEAN.to_vec(), value)])?;
        self.db.flush()?;
        Ok(())
    }

    /// Writes sealed entries of the counters (`in_meta` false) or meta tree in one
    /// transaction, under the sum's lock, with the new sum sealed into `meta/seal`.
    fn write_sealed(&self, in_meta: bool, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.check_current()?;
        if in_meta && let Some(filter) = &self.meta_filter {
            entries.iter().for_each(|(key, _)| filter.insert(&filter_words(key)));
        }
        let mut sum = lock(&self.sum);
        let result = (&self.counters, &self.meta).transaction(|(c, m)| {
            let mut next = *sum;
            for (key, value) in entries {
                put(&mut next, if in_meta { m } else { c }, key, value)?;
            }
            m.insert(SEAL, self.seal("meta", SEAL, &next))?;
            Ok(next)
        });
        *sum = result.map_err(transaction_error)?;
        if !in_meta && let Some(mirrors) = &self.mirrors {
            let puts: Vec<Put<'_>> = entries
                .iter()
                .map(|(k, v)| (k.as_slice(), &[][..], v.as_slice()))
                .collect();
            if let Err(e) = mirrors.counters.put_all(&puts) {
                let why = format!("the counters mirror could not be written: {e}");
                let _ = self.behind.set(why.clone());
                return Err(IndexError::Behind(why).into());
            }
        }
        Ok(())
    }

    /// Applies the effect of log records up to `applied_seq` in one transaction: the
    /// changed keys (with their tag, prefix and project entries), formats, directory, marks.
    ///
    /// # Errors
    /// The transaction's error; the index is then behind the log and refuses reads and
    /// every later batch ([`IndexError::Behind`]) until it is opened again.
    pub fn apply(&self, batch: &IndexBatch<'_>) -> Result<()> {
        self.check_current()?;
        let applied = self.apply_batch(batch);
        if let Err(e) = &applied {
            let _ = self
                .behind
                .set(format!("record {} could not be applied: {e}", batch.applied_seq));
        }
        applied
    }

    fn apply_batch(&self, batch: &IndexBatch<'_>) -> Result<()> {
        // Everything sealed before the transaction: (tree index, key, value or None to remove).
        let mut writes: Vec<Write> = Vec::new();
        let mut put_value = |tree: usize, name: &str, key: Vec<u8>, payload: Option<&[u8]>| {
            let value = payload.map(|p| self.seal(name, &key, p));
            // Before the entry is written, as for the tag filter.
            if tree == 4
                && let Some(filter) = &self.meta_filter
            {
                filter.insert(&filter_words(&key));
            }
            writes.push((tree, key, value));
        };
        for (id, stored) in batch.keys {
            let id = id.as_str().as_bytes();
            put_value(0, "keys", id.to_vec(), Some(&encode(stored)));
            // An imported key not yet presented is found by its SHA-256 instead.
            if !stored.tag.is_pending() {
                put_value(1, "by_hash", stored.tag.0.to_vec(), Some(id));
                // Before the entry is written: a reader that finds it passes the filter.
                if let Some(filter) = &self.filter {
                    filter.insert(&stored.tag.0);
                }
            }
            put_value(2, "by_prefix", join(stored.record.prefix(), id), Some(&[]));
            put_value(3, "by_project", join(&stored.record.project, id), Some(&[]));
        }
        if let Some(f) = batch.formats {
            put_value(
                4,
                "meta",
                FORMATS.to_vec(),
                Some(&encode(&f.iter().cloned().collect::<Vec<_>>())),
            );
        }
        for (key, entry) in batch.directory {
            put_value(5, "directory", key.encode(), entry.as_ref().map(encode).as_deref());
        }
        for (key, entry) in batch.vault {
            put_value(7, "vault", key.clone(), entry.as_ref().map(encode).as_deref());
        }
        for (version, check) in batch.masters {
            let mut key = b"master/".to_vec();
            key.extend_from_slice(&version.to_be_bytes());
            put_value(4, "meta", key, Some(check));
        }
        if let Some(min) = batch.vault_min {
            put_value(4, "meta", VAULT_MIN.to_vec(), Some(&min.to_be_bytes()));
        }
        for (id, mark) in batch.marks {
            put_value(6, "marks", id.as_str().as_bytes().to_vec(), Some(&mark.to_be_bytes()));
        }
        for (id, credit) in batch.credits {
            put_value(4, "meta", credit_key(id), Some(&credit_value(*credit)));
        }
        for (id, webhook) in batch.webhooks {
            put_value(4, "meta", webhook_key(id), webhook.as_ref().map(encode).as_deref());
        }
        for (id, (period, percent)) in batch.thresholds {
            let mut value = period.to_be_bytes().to_vec();
            value.push(*percent);
            put_value(4, "meta", threshold_key(id), Some(&value));
        }
        for (id, owner) in batch.owned {
            put_value(4, "meta", owner_of_key(id), Some(owner.as_bytes()));
            put_value(4, "meta", owned_key(owner, Some(id)), Some(&[]));
        }
        for (owner, mark) in batch.owner_marks {
            put_value(6, "marks", owner_counter_key(owner), Some(&mark.to_be_bytes()));
        }
        for (owner, credit) in batch.owner_credits {
            put_value(4, "meta", owner_credit_key(owner), Some(&credit_value(*credit)));
        }
        for (sha256, id) in batch.imported {
            put_value(
                8,
                "by_sha256",
                sha256.to_vec(),
                id.as_ref().map(|id| id.as_str().as_bytes()),
            );
        }
        if let Some(prefixes) = batch.import_prefixes {
            put_value(4, "meta", IMPORT_PREFIXES.to_vec(), Some(&encode(prefixes)));
        }
        for ((kind, id), episode) in batch.notices {
            put_value(4, "meta", notice_key(*kind, id), Some(&episode.to_be_bytes()));
        }
        for (at, id, anomaly) in batch.anomalies {
            put_value(
                4,
                "meta",
                anomaly_key(*at, id.as_ref(), anomaly),
                Some(&encode(&(id, anomaly))),
            );
        }
        put_value(4, "meta", APPLIED_SEQ.to_vec(), Some(&batch.applied_seq.to_be_bytes()));
        put_value(4, "meta", APPLIED_HASH.to_vec(), Some(&batch.applied_hash));
        let trees = (
            &self.keys,
            &self.by_hash,
            &self.by_prefix,
            &self.by_project,
            &self.meta,
            &self.directory,
            &self.marks,
            &self.vault,
            &self.by_sha256,
        );
        let mut sum = lock(&self.sum);
        let result: Result<Mac, TransactionError<()>> = trees.transaction(|(k, h, pre, proj, m, d, mk, vt, sh)| {
            let trees = [k, h, pre, proj, m, d, mk, vt, sh];
            let mut next = *sum;
            for (tree, key, value) in &writes {
                let Some(tree) = trees.get(*tree) else {
                    continue;
                };
                match value {
                    Some(v) => put(&mut next, tree, key, v)?,
                    None => {
                        if let Some(old) = tree.remove(key.as_slice())? {
                            xor(&mut next, mac_of(&old));
                        }
                    }
                }
            }
            m.insert(SEAL, self.seal("meta", SEAL, &next))?;
            Ok(next)
        });
        *sum = result.map_err(transaction_error)?;
        if let Some(mirrors) = &self.mirrors {
            self.mirror_batch(mirrors, batch, &writes)?;
        }
        Ok(())
    }

    /// The `usage` tree (see `usage/codec.rs`): counts, not state, so neither sealed nor
    /// in the seal's sum, and not rebuilt by a replay of changes (`Store::rebuild` replays
    /// the log's uses into it).
    pub fn usage_tree(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree("usage")?)
    }

    /// Writes a committed batch's `keys` and `marks` entries to their mirrors (still under
    /// the sum's lock: one writer at a time). `writes` are the batch's sealed entries: its
    /// `keys` entries (tree 0) in the order of `batch.keys`, one each.
    fn mirror_batch(&self, mirrors: &Mirrors, batch: &IndexBatch<'_>, writes: &[Write]) -> Result<()> {
        let io = |e| crate::error::Error::io(self.dir.clone().unwrap_or_default(), e);
        let key_writes = writes.iter().filter(|(tree, _, _)| *tree == 0);
        let keys: Vec<Put<'_>> = key_writes
            .zip(batch.keys.values())
            .filter(|(_, stored)| !stored.tag.is_pending())
            .filter_map(|((_, id, value), stored)| Some((stored.tag.0.as_slice(), id.as_slice(), value.as_deref()?)))
            .collect();
        let marks: Vec<Put<'_>> = writes
            .iter()
            .filter(|(tree, _, _)| *tree == 6)
            .filter_map(|(_, key, value)| Some((key.as_slice(), &[][..], value.as_deref()?)))
            .collect();
        mirrors.by_tag.put_all(&keys).map_err(io)?;
        mirrors.marks.put_all(&marks).map_err(io)
    }

    /// Flushes sled and the mirrors to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        if let Some(mirrors) = &self.mirrors {
            let io = |e| crate::error::Error::io(self.dir.clone().unwrap_or_default(), e);
            mirrors.by_tag.flush().map_err(io)?;
            mirrors.counters.flush().map_err(io)?;
            mirrors.marks.flush().map_err(io)?;
        }
        Ok(())
    }
}

/// Entries written to a mirror per `put_all` when it is rebuilt.
const MIRROR_BATCH: usize = 4096;

/// Writes `keys` entries to the mirror by tag: (tag, key id, sealed value).
fn put_owned(mirror: &Mirror, batch: &[([u8; 32], sled::IVec, sled::IVec)]) -> std::io::Result<()> {
    let puts: Vec<Put<'_>> = batch
        .iter()
        .map(|(tag, id, value)| (tag.as_slice(), id.as_ref(), value.as_ref()))
        .collect();
    mirror.put_all(&puts)
}

/// The filter words of a `meta` key: its keyed-free 64-bit hash spread over four words
/// (the filter takes a tag's uniformly random bytes; a `meta` key is text).
fn filter_words(key: &[u8]) -> [u8; 32] {
    let h = crate::mirror::hash_key(key);
    let mut words = [0u8; 32];
    for (i, chunk) in words.chunks_exact_mut(8).enumerate() {
        let spread = h.rotate_left(16 * i as u32).wrapping_mul(0x9e37_79b9_7f4a_7c15 | 1) ^ (i as u64);
        chunk.copy_from_slice(&spread.to_le_bytes());
    }
    words
}

/// Inserts a sealed `value` at `key` in `tree`, moving `sum` from the old entry's MAC to
/// the new one's.
fn put(
    sum: &mut Mac,
    tree: &TransactionalTree,
    key: &[u8],
    value: &[u8],
) -> Result<(), ConflictableTransactionError<()>> {
    if let Some(old) = tree.insert(key, value)? {
        xor(sum, mac_of(&old));
    }
    xor(sum, mac_of(value));
    Ok(())
}

/// The MAC bytes of a sealed value (zeros for a value too short to hold one: such a value
/// never passes `unseal`, and the sum then fails to match as well).
fn mac_of(value: &[u8]) -> Mac {
    value.get(1..=MAC_LEN).map_or([0; MAC_LEN], to_mac)
}

fn to_mac(bytes: &[u8]) -> Mac {
    crate::log::frame::to_array(bytes)
}

fn xor(sum: &mut Mac, mac: Mac) {
    for (s, m) in sum.iter_mut().zip(mac) {
        *s ^= m;
    }
}

/// Compares two MACs in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tree's name for MACs and messages.
fn tree_name(tree: &sled::Tree) -> &'static str {
    match tree.name().as_ref() {
        b"keys" => "keys",
        b"by_hash" => "by_hash",
        b"by_prefix" => "by_prefix",
        b"by_project" => "by_project",
        b"counters" => "counters",
        b"directory" => "directory",
        b"marks" => "marks",
        b"vault" => "vault",
        b"by_sha256" => "by_sha256",
        _ => "meta",
    }
}

/// An entry's key for a message: as text when it is printable, else in hex.
fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => s.to_string(),
        _ => hex::encode(key),
    }
}

fn transaction_error(e: TransactionError<()>) -> crate::error::Error {
    match e {
        TransactionError::Storage(e) => IndexError::Sled(e).into(),
        TransactionError::Abort(()) => IndexError::Aborted.into(),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// sled may have written files while the index was open (a blob for a large page); they
/// have the umask's modes, inside the 0700 directory. This brings them to 0600 on close.
impl Drop for Index {
    fn drop(&mut self) {
        // Best effort: what fails here is fixed by the next open, or fails it.
        let _ = self.db.flush();
        if let Some(dir) = &self.dir {
            let _ = crate::modes::restrict_tree(dir);
        }
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
    let mut cleared = false;
    loop {
        match sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open() {
            // sled 0.34 writes a snapshot at every open to `snap.N.generating`, then renames
            // it; a kill or a full disk in between leaves the partial file, which the next
            // open takes for the newest snapshot and fails on. sled's own data is sound:
            // remove the leftover once and open again (sled holds no lock on the directory
            // after a failed open), rather than rebuild and lose the counters.
            Err(sled::Error::Corruption { .. }) if !cleared && remove_partial_snapshots(dir)? => {
                cleared = true;
            }
            // sled reports the lock conflict as ErrorKind::Other with this text. It is no
            // sign of a damaged index (which `Store::open` would rebuild): say what it is.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(OpenError::Locked(dir.to_path_buf()).into());
                }
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

/// Removes the `snap.*.generating` files in `dir`; whether there were any.
fn remove_partial_snapshots(dir: &Path) -> Result<bool> {
    let io = |e| crate::error::Error::io(dir, e);
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(&path).map_err(io)?;
            removed = true;
        }
    }
    Ok(removed)
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

/// Where a key's budget credit is kept in `meta`.
/// The `meta` key of a lifecycle notice: `notice/`, the kind letter, `/`, the key id.
/// Where the anomalies are kept in `meta`: `anomaly/`, then the time (big-endian, so a
/// time range is a key range), the reason, the key or the network, and the window's
/// start, so that each anomaly a replay of the log applies again lands on its own entry
/// again.
const ANOMALY_PREFIX: &[u8] = b"anomaly/";

/// The tree, and its one key, of the anomaly detector's state at the last close.
const ANOMALY_STATE_TREE: &str = "anomaly_state";
const ANOMALY_STATE_KEY: &[u8] = b"tracks";

fn anomaly_key(at: i64, id: Option<&KeyId>, anomaly: &crate::anomaly::Anomaly) -> Vec<u8> {
    let mut key = anomaly_time_key(at);
    key.extend_from_slice(anomaly.reason.as_str().as_bytes());
    key.push(b'/');
    match (id, &anomaly.network) {
        (Some(id), _) => key.extend_from_slice(id.as_str().as_bytes()),
        (None, Some(network)) => key.extend_from_slice(network.to_string().as_bytes()),
        (None, None) => {}
    }
    // Two episodes of one reason and key logged by one batch differ in their windows.
    key.push(b'/');
    key.extend_from_slice(&anomaly.window_start.to_be_bytes());
    key
}

fn anomaly_time_key(at: i64) -> Vec<u8> {
    let mut key = ANOMALY_PREFIX.to_vec();
    // Offset so that times before 1970 sort before those after.
    key.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    key
}

fn notice_key(kind: u8, id: &KeyId) -> Vec<u8> {
    let mut key = b"notice/".to_vec();
    key.push(kind);
    key.push(b'/');
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

fn credit_key(id: &KeyId) -> Vec<u8> {
    prefixed(b"credit/", id.as_str())
}

/// Where a webhook is kept in `meta`.
fn webhook_key(id: &WebhookId) -> Vec<u8> {
    prefixed(WEBHOOK_PREFIX, id.as_str())
}

/// Where a key's owner is kept in `meta`.
fn owner_of_key(id: &KeyId) -> Vec<u8> {
    prefixed(b"owner_of/", id.as_str())
}

/// Where the last budget threshold logged for a key is kept in `meta`.
fn threshold_key(id: &KeyId) -> Vec<u8> {
    prefixed(b"threshold/", id.as_str())
}

/// Where an owner's key is listed in `meta` (`None`: the prefix of all its keys).
fn owned_key(owner: &str, id: Option<&KeyId>) -> Vec<u8> {
    let mut key = b"owned/".to_vec();
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    if let Some(id) = id {
        key.extend_from_slice(id.as_str().as_bytes());
    }
    key
}

/// Where an owner's budget credit is kept in `meta`.
fn owner_credit_key(owner: &str) -> Vec<u8> {
    prefixed(b"owner_credit/", owner)
}

/// What an owner's entries in `counters` and `marks` start with (key ids never do: they
/// start with `key_`).
const OWNER_COUNTER_PREFIX: &[u8] = b"o/";

/// An owner's entry in `counters` and `marks`.
fn owner_counter_key(owner: &str) -> Vec<u8> {
    prefixed(OWNER_COUNTER_PREFIX, owner)
}

/// A budget credit as `meta` keeps it: the period (u32) and the amount (i64), big-endian.
fn credit_value((period, credit): (u32, i64)) -> Vec<u8> {
    let mut value = period.to_be_bytes().to_vec();
    value.extend_from_slice(&credit.to_be_bytes());
    value
}

/// A `meta`, `counters` or `marks` key: a fixed prefix, then a name or id.
fn prefixed(prefix: &[u8], rest: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + rest.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(rest.as_bytes());
    key
}

/// The bincode payload of a value (sealed by the caller).
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MAC is the first 16 bytes of keyed BLAKE3 over tree, 0, key length, key and
    /// payload: the same bytes as the first 16 of the XOF, which format 2 was written with.
    #[test]
    fn the_mac_is_the_documented_prefix_of_keyed_blake3() {
        let index = Index::temporary(&Pepper::from_bytes([3; 32]), [5; 16]).unwrap();
        let mut h = blake3::Hasher::new_keyed(&index.mac_key);
        h.update(b"keys\0");
        h.update(&3u64.to_le_bytes());
        h.update(b"k_1");
        h.update(b"payload");
        let mut xof = [0u8; MAC_LEN];
        h.finalize_xof().fill(&mut xof);
        assert_eq!(index.mac("keys", b"k_1", b"payload"), xof);
        assert_ne!(
            index.mac("keys", b"k_1", b"payload"),
            index.mac("by_hash", b"k_1", b"payload")
        );
        // Inputs on both sides of the one-shot bound hash as the stream does.
        for len in [ONE_SHOT - 20, ONE_SHOT - 15, ONE_SHOT, 3 * ONE_SHOT] {
            let payload = vec![7u8; len];
            let mut h = blake3::Hasher::new_keyed(&index.mac_key);
            h.update(b"keys\0");
            h.update(&3u64.to_le_bytes());
            h.update(b"k_1");
            h.update(&payload);
            assert_eq!(
                index.mac("keys", b"k_1", &payload),
                to_mac(h.finalize().as_bytes()),
                "{len}"
            );
        }
    }
}
