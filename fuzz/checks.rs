//! The properties the fuzz targets defend, shared word for word by the targets
//! (`fuzz/fuzz_targets/*.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`, which runs
//! every seed corpus file through them as an ordinary test. This file holds the token and
//! log record checks; the other targets' live beside it, one file each: `log_file_check.rs`,
//! `policy_checks.rs`, `time_checks.rs`, `log_meta_checks.rs` and `http_checks.rs` (with
//! `secret_echo.rs`, shared by the input checks).
//!
//! A check returns normally or panics: a panic in a check is a finding, whether the library
//! panicked or a property failed.
//!
//! - [`check_token_input`]: `FormatSet::parse` never panics, and it accepts exactly what an
//!   independent re-check accepts (prefix, length, base62, CRC32 checksum recomputed with
//!   `token::checksum`); a well-formed head given its correct checksum always parses.
//! - [`check_log_input`]: `frame::decode` never panics and agrees with an independent parse
//!   of the frame (length bounds, CRC32C); `Event::decode` never panics on a frame's payload
//!   or on raw bytes, and what it decodes re-encodes to the same event. Then the bytes
//!   become the tail of a real log segment (after three valid records) in a scratch
//!   directory, and `recover` and `LogReader` must never panic, never accept a record an
//!   independent walk of the file rejects (bad CRC, length, sequence number or chain
//!   link), and never drop one it accepts: recovery truncates exactly a torn tail and
//!   reports anything else as corruption at the right offset.
//!
//! Running a target on the stable toolchain (address sanitizer needs nightly), with a
//! scratch working corpus so that `fuzz/corpus/` keeps only the seeds:
//!
//! ```sh
//! cd fuzz && mkdir -p /tmp/fuzz-work/log_record
//! cargo fuzz run --sanitizer none log_record /tmp/fuzz-work/log_record corpus/log_record -- \
//!     -max_total_time=240 -max_len=8192 -artifact_prefix=/tmp/fuzz-work/
//! ```

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use credstore::log::frame::{self, FrameError};
use credstore::log::recovery::recover;
use credstore::log::{LogError, LogReader, SEGMENT_HEADER_LEN, SegmentHeader, genesis_hash};
use credstore::token::{self, BASE62};
use credstore::{
    Budget, Code, Config, Env, Event, EventFilter, Format, FormatSet, KeyUpdate, Malformed, ManualClock, NewKey,
    Pepper, Period, Plan, RateLimit, Store,
};

// ---------------------------------------------------------------------------------------
// Token parser
// ---------------------------------------------------------------------------------------

/// The key shapes the seeds use: `sk_live_`, `sk_test_` and `cmp_` (32 random characters
/// and a checksum), `comp_` (27 random characters, no checksum: 32 in all).
pub fn seed_formats() -> FormatSet {
    let format = |prefix, env, len, checksum| match Format::new(prefix, env, len, checksum) {
        Ok(f) => f,
        Err(e) => panic!("seed format {prefix} refused: {e}"),
    };
    FormatSet::new([
        format("sk_live_", Env::Live, 32, true),
        format("sk_test_", Env::Test, 32, true),
        format("cmp_", Env::Live, 32, true),
        format("comp_", Env::Live, 27, false),
    ])
}

/// Parses arbitrary bytes (as text when they are UTF-8, lossily otherwise) and checks the
/// outcome against an independent re-check.
pub fn check_token_input(set: &FormatSet, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_token_text(set, &text);
}

/// [`check_token_input`] for text.
pub fn check_token_text(set: &FormatSet, text: &str) {
    let expected = reference_parse(set, text);
    match set.parse(text) {
        Ok(token) => {
            let format = token.format();
            assert!(set.contains(format), "parsed against a format not in the set");
            assert_eq!(token.as_bytes(), text.as_bytes(), "token is not the presented text");
            assert!(
                accepts(format, text),
                "parse accepted {text:?} as {format:?}, the re-check refuses it"
            );
            let start_len = format.prefix().len() + 4;
            assert_eq!(token.start(), &text[..start_len], "start is not prefix + 4 characters");
            assert!(
                !format!("{token:?}").contains(&text[start_len..]),
                "Debug shows the key"
            );
        }
        Err(why) => {
            assert!(
                expected.is_none(),
                "parse refused {text:?} ({why:?}), the re-check accepts it as {expected:?}"
            );
            let prefix_known = set.iter().any(|f| text.starts_with(f.prefix()));
            let expected_kind = if text.is_empty() {
                Some(Malformed::Empty)
            } else if !prefix_known {
                Some(Malformed::UnknownPrefix)
            } else {
                None
            };
            match expected_kind {
                Some(kind) => assert_eq!(why, kind, "wrong reason for {text:?}"),
                None => assert!(
                    !matches!(why, Malformed::Empty | Malformed::UnknownPrefix),
                    "{text:?} has a registered prefix, yet the reason is {why:?}"
                ),
            }
        }
    }
    check_repaired(set, text);
}

/// The first format of `set` (in its order) that accepts `text`, by an independent check.
fn reference_parse<'a>(set: &'a FormatSet, text: &str) -> Option<&'a Format> {
    set.iter().find(|f| accepts(f, text))
}

/// Whether `format` accepts `text`: re-derived from the key format, not from the parser.
fn accepts(format: &Format, text: &str) -> bool {
    let bytes = text.as_bytes();
    let head_len = format.prefix().len() + format.random_len();
    let total = head_len + if format.has_checksum() { token::CHECKSUM_LEN } else { 0 };
    if bytes.len() != total || !bytes.starts_with(format.prefix().as_bytes()) {
        return false;
    }
    if !bytes[format.prefix().len()..].iter().all(|b| BASE62.contains(b)) {
        return false;
    }
    !format.has_checksum() || token::checksum(&bytes[..head_len]).as_bytes() == &bytes[head_len..]
}

/// Random input almost never carries a right checksum, so give it one: whenever `text`
/// starts with a well-formed head of some format, that head plus its checksum must parse.
fn check_repaired(set: &FormatSet, text: &str) {
    for format in set.iter() {
        let head_len = format.prefix().len() + format.random_len();
        let Some(head) = text.get(..head_len) else {
            continue;
        };
        let body_ok = head.as_bytes()[format.prefix().len()..]
            .iter()
            .all(|b| BASE62.contains(b));
        if !head.starts_with(format.prefix()) || !body_ok {
            continue;
        }
        let mut candidate = head.to_string();
        if format.has_checksum() {
            candidate.push_str(&token::checksum(head.as_bytes()));
        }
        match set.parse(&candidate) {
            Ok(token) => assert_eq!(token.as_bytes(), candidate.as_bytes()),
            Err(why) => panic!("well-formed {candidate:?} refused: {why:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Log records
// ---------------------------------------------------------------------------------------

/// The store id of the scratch log.
pub const STORE_ID: [u8; 16] = *b"credstore-fuzzer";

/// Events produced by the library: a throwaway store (fixed pepper and clock) goes through
/// every kind of change, and its log is read back. Built from the public API rather than
/// by hand, so new record fields and event kinds arrive here on their own.
pub fn sample_events() -> Vec<Event> {
    let ok = |what: &str, e: credstore::Error| -> ! { panic!("{what}: {e}") };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config = Config::new()
        .pepper(Pepper::from_bytes([9; 32]))
        .clock(Arc::new(ManualClock::new(1_767_225_600_000)));
    let store = Store::init(dir.path().join("data"), config).unwrap_or_else(|e| ok("init", e));
    let limit = RateLimit::new("per_minute", 60, 60_000).unwrap_or_else(|e| ok("limit", e.into()));
    let budget = Budget::new(10_000, Period::Monthly { anchor_day: 15 }).unwrap_or_else(|e| ok("budget", e.into()));
    let plan = Plan::new("pro", vec![limit.clone()], Some(budget)).unwrap_or_else(|e| ok("plan", e.into()));
    store.set_plan(plan).unwrap_or_else(|e| ok("set plan", e));
    let live = store
        .create(
            NewKey::new("CI pipeline")
                .project("acme")
                .meta("team", "infra")
                .rate_limit(limit)
                .budget(budget),
        )
        .unwrap_or_else(|e| ok("create", e));
    let comp_format = Format::new("comp_", Env::Live, 27, false).unwrap_or_else(|e| ok("format", e.into()));
    let comp = store
        .create(NewKey::new("client").format(comp_format).plan("pro"))
        .unwrap_or_else(|e| ok("create comp_", e));
    // The first charge raises the budget's mark through the log.
    let decision = store.verify(live.key.expose()).unwrap_or_else(|e| ok("verify", e));
    assert_eq!(decision.code, Code::Valid);
    let id = &comp.record.id;
    let update = KeyUpdate {
        name: Some("renamed".into()),
        ..KeyUpdate::default()
    };
    store.update(id, update).unwrap_or_else(|e| ok("update", e));
    store.disable(id).unwrap_or_else(|e| ok("disable", e));
    store.enable(id).unwrap_or_else(|e| ok("enable", e));
    store
        .rotate(&live.record.id, Some(Duration::from_secs(600)))
        .unwrap_or_else(|e| ok("rotate", e));
    store.revoke(id, Some("leaked")).unwrap_or_else(|e| ok("revoke", e));
    let trial = Plan::new("trial", vec![], None).unwrap_or_else(|e| ok("plan", e.into()));
    store.set_plan(trial).unwrap_or_else(|e| ok("set plan", e));
    store.delete_plan("trial").unwrap_or_else(|e| ok("delete plan", e));
    let events = store
        .events(&EventFilter::default())
        .unwrap_or_else(|e| ok("events", e));
    events.into_iter().map(|(_, event)| event).collect()
}

/// Records the fixture segment holds before the fuzzed tail.
pub const PREFIX_RECORDS: usize = 3;

/// The payloads of the fixture's records: fixed bytes, so the prefix (and with it the
/// chain hash the seed records link to) is the same in every process and every version
/// of the event encoding. Recovery and the reader never look inside a payload.
fn prefix_payloads() -> Vec<Vec<u8>> {
    (1..=PREFIX_RECORDS)
        .map(|i| format!("credstore fuzz fixture record {i}").into_bytes())
        .collect()
}

/// Encodes `payloads` as records `first_seq..`, chained from `prev`; returns the bytes
/// and the chain hash of the last record.
pub fn encode_records(first_seq: u64, prev: [u8; 32], payloads: &[Vec<u8>]) -> (Vec<u8>, [u8; 32]) {
    let mut out = Vec::new();
    let mut hash = prev;
    for (seq, payload) in (first_seq..).zip(payloads) {
        hash = frame::encode(&mut out, seq, &hash, payload);
    }
    (out, hash)
}

/// The fixture segment before the tail: header and [`PREFIX_RECORDS`] records.
/// Returns the bytes and the chain hash of the last record.
pub fn segment_prefix() -> (Vec<u8>, [u8; 32]) {
    let header = SegmentHeader {
        store_id: STORE_ID,
        first_seq: 1,
        prev_hash: genesis_hash(&STORE_ID),
    };
    let (records, hash) = encode_records(1, header.prev_hash, &prefix_payloads());
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(&records);
    (bytes, hash)
}

/// A directory for the scratch log, reused between inputs.
pub struct Scratch {
    dir: tempfile::TempDir,
    prefix: Vec<u8>,
    prefix_hash: [u8; 32],
}

impl Scratch {
    /// A fresh scratch directory (in `/dev/shm` when there is one: it is rewritten for
    /// every input).
    pub fn new() -> Self {
        let shm = Path::new("/dev/shm");
        let builder = tempfile::Builder::new().prefix("credstore-fuzz-").tempdir_in(shm);
        let dir = match builder {
            Ok(dir) if shm.is_dir() => dir,
            _ => tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
        };
        let (prefix, prefix_hash) = segment_prefix();
        Scratch {
            dir,
            prefix,
            prefix_hash,
        }
    }

    fn segment(&self) -> PathBuf {
        self.dir.path().join(format!("{:020}.log", 1))
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Every check on one input: the frame decoder, the event decoder, and the input as the
/// tail of a segment, raw and framed as the next valid record.
///
/// The raw tail follows the fixture's records, which recovery is told were acknowledged;
/// for an input of odd length it is told the next record was acknowledged too, so a torn
/// tail there must be refused as corruption, never truncated.
pub fn check_log_input(scratch: &Scratch, data: &[u8]) {
    check_frame(data);
    check_event(data);
    let acknowledged = PREFIX_RECORDS as u64 + (data.len() % 2) as u64;
    let _ = check_segment_tail(scratch, data, acknowledged);
    let mut framed = Vec::new();
    frame::encode(&mut framed, PREFIX_RECORDS as u64 + 1, &scratch.prefix_hash, data);
    let outcome = check_segment_tail(scratch, &framed, PREFIX_RECORDS as u64 + 1);
    assert_eq!(
        outcome,
        TailOutcome::Clean {
            records: PREFIX_RECORDS + 1
        },
        "a good record after good records was not kept"
    );
}

/// `frame::decode` on arbitrary bytes agrees with an independent parse, and a payload it
/// returns goes through the event checks.
pub fn check_frame(data: &[u8]) {
    let result = frame::decode(data);
    match (result, oracle_frame(data)) {
        (Ok(f), OracleFrame::Valid { len }) => {
            assert_eq!(f.encoded_len(), frame::FRAME_HEADER_LEN + len);
            assert_eq!(f.body, &data[8..8 + len]);
            assert_eq!(f.seq.to_le_bytes(), data[8..16]);
            assert_eq!(f.prev, data[16..48]);
            assert_eq!(f.payload, &data[48..8 + len]);
            assert_eq!(f.hash(), *blake3::hash(f.body).as_bytes());
            check_event(f.payload);
        }
        (Err(FrameError::Incomplete { available, .. }), OracleFrame::Incomplete) => {
            assert_eq!(available, data.len());
        }
        (Err(FrameError::BadLength(len)), OracleFrame::BadLength) => {
            assert_eq!(len.to_le_bytes(), data[..4]);
        }
        (Err(FrameError::BadCrc), OracleFrame::BadCrc) => {}
        (got, want) => panic!("frame::decode gave {got:?}, an independent parse says {want:?}"),
    }
}

/// `Event::decode` never panics; an event it returns re-encodes to itself.
pub fn check_event(payload: &[u8]) {
    if let Ok(event) = Event::decode(payload) {
        let again = Event::decode(&event.encode());
        assert_eq!(again.as_ref(), Ok(&event), "event does not survive a round trip");
        let _ = event.to_json(1);
        let _ = event.key_ids();
    }
}

/// What an independent reading of `docs/FORMAT.md` says of the frame at the start of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OracleFrame {
    Incomplete,
    BadLength,
    BadCrc,
    Valid { len: usize },
}

fn oracle_frame(data: &[u8]) -> OracleFrame {
    if data.len() < 8 {
        return OracleFrame::Incomplete;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if !(40..=1 << 20).contains(&len) {
        return OracleFrame::BadLength;
    }
    if data.len() < 8 + len {
        return OracleFrame::Incomplete;
    }
    let crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if crc32c::crc32c(&data[8..8 + len]) != crc {
        return OracleFrame::BadCrc;
    }
    OracleFrame::Valid { len }
}

/// A record the independent walk accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Walked {
    seq: u64,
    hash: [u8; 32],
    payload: Vec<u8>,
}

/// Where the independent walk of a segment stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Clean end of file.
    End,
    /// A frame that decodes (good length and CRC) but has the wrong seq or prev hash.
    Misplaced,
    /// A frame that does not decode and is a torn tail by the recovery rule: it comes after
    /// the last acknowledged record, the file ends inside it or right at its declared end
    /// (or only zero bytes follow), and no valid frame with a sequence number as high
    /// starts anywhere after it.
    Torn,
    /// A frame that does not decode and is no torn tail: corruption.
    Damaged,
}

/// Walks a single segment's records independently of the library; `keep_through` is the
/// last sequence number known acknowledged.
fn walk(segment: &[u8], mut prev: [u8; 32], keep_through: u64) -> (Vec<Walked>, usize, Stop) {
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    loop {
        let rest = &segment[pos..];
        if rest.is_empty() {
            return (records, pos, Stop::End);
        }
        let next_seq = records.len() as u64 + 1;
        let len = match oracle_frame(rest) {
            OracleFrame::Valid { len } => len,
            bad => {
                let declared = rest
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                let reaches_end = match bad {
                    OracleFrame::Incomplete => true,
                    _ => 8 + declared >= rest.len(),
                };
                let zeros = rest.iter().all(|&b| b == 0);
                let later_record = (1..rest.len()).any(|i| match oracle_frame(&rest[i..]) {
                    OracleFrame::Valid { .. } => {
                        // A later record of this log: seq at or after next_seq, and not
                        // absurdly far ahead (recovery ignores seqs 2^32 or more ahead).
                        let seq = u64::from_le_bytes(rest[i + 8..i + 16].try_into().unwrap());
                        seq >= next_seq && seq - next_seq < (1 << 32)
                    }
                    _ => false,
                });
                let torn = next_seq > keep_through && (zeros || reaches_end) && !later_record;
                return (records, pos, if torn { Stop::Torn } else { Stop::Damaged });
            }
        };
        let body = &rest[8..8 + len];
        if body[..8] != next_seq.to_le_bytes() || body[8..40] != prev {
            return (records, pos, Stop::Misplaced);
        }
        prev = *blake3::hash(body).as_bytes();
        records.push(Walked {
            seq: next_seq,
            hash: prev,
            payload: body[40..].to_vec(),
        });
        pos += 8 + len;
    }
}

/// What recovery did with a segment tail (after the checks agreed with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailOutcome {
    /// Every byte was a good record: `records` in all.
    Clean { records: usize },
    /// A torn tail of `bytes` was truncated after `records` good records.
    Truncated { records: usize, bytes: usize },
    /// Corruption after `records` good records: refused, nothing changed.
    Refused { records: usize },
}

/// Writes the fixture prefix plus `tail` as the only segment, then checks `recover` (told
/// that records through `keep_through` were acknowledged) and `LogReader` against the
/// independent walk.
pub fn check_segment_tail(scratch: &Scratch, tail: &[u8], keep_through: u64) -> TailOutcome {
    clear_dir(scratch.dir.path());
    let path = scratch.segment();
    let mut original = scratch.prefix.clone();
    original.extend_from_slice(tail);
    fs::write(&path, &original).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));

    let genesis = genesis_hash(&STORE_ID);
    let (walked, stop_at, stop) = walk(&original, genesis, keep_through);
    assert!(
        walked.len() >= PREFIX_RECORDS,
        "the walk refused the fixture's own records"
    );

    let recovered = recover(scratch.dir.path(), &STORE_ID, keep_through);
    let after = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let outcome = match (&recovered, &stop) {
        (Ok(r), Stop::End | Stop::Torn) => {
            assert_eq!(r.len as usize, stop_at, "recovery ends elsewhere than the walk");
            assert_eq!(r.next_seq, walked.len() as u64 + 1);
            assert_eq!(r.last_hash, walked.last().map_or(genesis, |w| w.hash));
            assert_eq!(r.report.truncated_bytes as usize, original.len() - stop_at);
            assert_eq!(r.report.segments, 1);
            assert_eq!(
                after,
                original[..stop_at],
                "recovery did more than truncate the torn tail"
            );
            match original.len() - stop_at {
                0 => TailOutcome::Clean { records: walked.len() },
                bytes => TailOutcome::Truncated {
                    records: walked.len(),
                    bytes,
                },
            }
        }
        (Err(LogError::Corrupt { offset, seq, .. }), Stop::Misplaced | Stop::Damaged) => {
            assert_eq!(*offset as usize, stop_at, "corruption reported at the wrong offset");
            assert_eq!(*seq, walked.len() as u64 + 1);
            assert_eq!(after, original, "recovery changed a log it refused");
            TailOutcome::Refused { records: walked.len() }
        }
        (got, stop) => panic!(
            "recover gave {got:?}; the walk stopped at {stop_at} ({stop:?}) after {} records",
            walked.len()
        ),
    };

    // The reader sees the file as recovery left it: every record the walk accepts, in
    // order, then an error if anything but a clean end follows, and nothing more.
    let (walked, stop_at, stop) = walk(&after, genesis, keep_through);
    let reader = LogReader::open(scratch.dir.path(), STORE_ID, 1).unwrap_or_else(|e| panic!("open reader: {e}"));
    let mut read = Vec::new();
    let mut failure = None;
    for item in reader {
        match item {
            Ok(record) => read.push(Walked {
                seq: record.seq,
                hash: record.hash,
                payload: record.payload,
            }),
            Err(e) => {
                assert!(failure.is_none(), "reader yielded after an error");
                failure = Some(e);
            }
        }
    }
    assert_eq!(read, walked, "the reader and the walk disagree on the records");
    match (failure, stop) {
        (None, Stop::End) => {}
        (Some(LogError::Corrupt { offset, .. }), Stop::Misplaced | Stop::Damaged | Stop::Torn) => {
            assert_eq!(offset as usize, stop_at);
        }
        (got, stop) => panic!("reader ended with {got:?}, the walk with {stop:?} at {stop_at}"),
    }
    let prefix = prefix_payloads();
    for (record, payload) in read.iter().zip(&prefix) {
        assert_eq!(&record.payload, payload, "the reader changed a fixture record");
    }
    for record in read.iter().skip(prefix.len()) {
        check_event(&record.payload);
    }
    outcome
}

fn clear_dir(dir: &Path) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let _ = fs::remove_file(entry.path());
    }
}
