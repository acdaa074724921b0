//! Use events: every verification outcome, handed off without a lock to the commit thread,
//! which writes them into the log in batches (never one fsync per use).
//!
//! Modes ([`UseLog`]): every request (key id, time, outcome code, client IP and endpoint
//! when given), a summary per key per flush interval (counts per outcome, first and last
//! time, last IP), or off. The hand-off is a bounded channel per verifying thread
//! ([`UseSink`]), which the commit thread empties every [`BUSY_DRAIN`] (2 ms) and writes once per
//! flush interval (or sooner); when the commit thread falls behind and one is full, uses are counted
//! as dropped and the count is logged with the next batch (`use.dropped`). Presented keys
//! that match no key (malformed or unknown) are only counted, and logged as one summary
//! per drain, so garbage sent at the server cannot make the log grow per request.
//!
//! In every-request mode a drain's uses go into the log as few `key.uses` records
//! ([`EventKind::KeysUsed`]), not one record per request: framing, the chain hash and the
//! write are paid per record, and were most of the cost of a use.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};

use serde::ser::{SerializeStruct, SerializeStructVariant};
use serde::{Deserialize, Serialize, Serializer};

use crate::decision::{Code, Decision};
use crate::event::{Event, EventKind, USE_BATCH_SPAN_MS, UseView, pack_uses};
use crate::name::{InlineName, prefix_within};
use crate::record::KeyId;

use super::lock;

/// Uses one thread may have waiting for the commit thread (its channel's capacity, about
/// 104 bytes each: 1.7 MB per verifying thread); more are dropped and counted. Drained every
/// [`BUSY_DRAIN`], that is 8 million uses per second per thread.
pub(crate) const USE_QUEUE: usize = 16_384;

/// How often the commit thread takes uses off the channels (at most the flush interval).
pub(crate) const BUSY_DRAIN: std::time::Duration = std::time::Duration::from_millis(2);

/// The commit thread writes the uses it took off the queue once per flush interval, with
/// the next batch of changes, or as soon as this many gathered.
pub(crate) const WRITE_USES_AT: usize = 16_384;

/// At most this many uses in one `key.uses` record.
const MAX_USES_PER_RECORD: usize = 4_096;

/// At most this many bytes of endpoints in one `key.uses` record (a record's body is at
/// most 1 MiB).
const MAX_ENDPOINT_BYTES_PER_RECORD: usize = 256 * 1024;

/// An endpoint longer than this is cut (at a character boundary) when recorded.
pub const MAX_RECORDED_ENDPOINT: usize = 1_024;

/// How verification outcomes are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UseLog {
    /// One event per request.
    #[default]
    Every,
    /// One event per key per flush interval: counts per outcome, first and last time.
    Summary,
    /// Nothing.
    Off,
}

/// What a verify hands off. The key's id is copied, not the record's `Arc`: the commit
/// thread dropping an `Arc` per use would pull the record's reference count (which every
/// verify of the key writes) over to its core and back.
pub(crate) struct Use {
    pub id: UseId,
    pub at: i64,
    pub code: Code,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<String>,
}

/// A key id, inline (ids are `key_` and 22 digits: 26 bytes), so that no `Arc` of the
/// record crosses to the commit thread.
type UseId = InlineName<32>;

/// The verify side of the hand-off: a bounded channel per verifying thread, which the
/// commit thread empties. A verify sends on its own thread's channel (`try_send`,
/// lock-free on the array flavour), which no other verify touches: no cache line is shared
/// between verifying threads, as the tail of one channel for all of them was.
#[derive(Debug)]
pub(crate) struct UseSink {
    mode: UseLog,
    /// Tells this sink's channels apart from other stores' in a thread's list.
    id: u64,
    /// The receiving end of every thread's channel, for the commit thread to drain.
    receivers: Mutex<Vec<Receiver<Use>>>,
    /// Uses refused because their thread's channel was full.
    dropped: AtomicU64,
    /// Presented keys that matched none (MALFORMED, NOT_FOUND): counted, not queued, so
    /// a flood of garbage costs an atomic add, not a log record each.
    pub keyless: Keyless,
}

/// Tells sinks apart.
static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's sending end in each sink it has recorded to: (sink id, sender).
    static SENDERS: RefCell<Vec<(u64, SyncSender<Use>)>> = const { RefCell::new(Vec::new()) };
}

/// Counts of presented keys that matched no key, between two drains.
#[derive(Debug, Default)]
pub(crate) struct Keyless {
    malformed: AtomicU64,
    not_found: AtomicU64,
}

impl Keyless {
    /// Takes the counts, resetting them.
    pub fn take(&self) -> BTreeMap<Code, u64> {
        let mut counts = BTreeMap::new();
        for (code, n) in [
            (Code::Malformed, self.malformed.swap(0, Ordering::Relaxed)),
            (Code::NotFound, self.not_found.swap(0, Ordering::Relaxed)),
        ] {
            if n > 0 {
                counts.insert(code, n);
            }
        }
        counts
    }
}

impl UseSink {
    /// A sink recording in `mode`.
    pub fn new(mode: UseLog) -> UseSink {
        UseSink {
            mode,
            id: NEXT_SINK.fetch_add(1, Ordering::Relaxed),
            receivers: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            keyless: Keyless::default(),
        }
    }

    /// Hands off one outcome, at the time the decision was made; never blocks.
    #[inline]
    pub fn record(&self, decision: &Decision, ip: Option<IpAddr>, endpoint: Option<(&str, &str)>) {
        if self.mode == UseLog::Off {
            return;
        }
        let Some(key) = &decision.key else {
            let counter = match decision.code {
                Code::Malformed => &self.keyless.malformed,
                _ => &self.keyless.not_found,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(id) = UseId::new(key.id.as_str()) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let u = Use {
            id,
            at: decision.at,
            code: decision.code,
            ip,
            endpoint: endpoint.map(|(m, p)| endpoint_text(m, p)),
        };
        let sent = SENDERS.try_with(|list| {
            let mut list = list.borrow_mut();
            let sent = match list.iter().find(|(id, _)| *id == self.id) {
                Some((_, tx)) => tx.try_send(u),
                None => {
                    // This thread's first use: a channel of its own.
                    let (tx, rx) = std::sync::mpsc::sync_channel(USE_QUEUE);
                    lock(&self.receivers).push(rx);
                    let sent = tx.try_send(u);
                    list.push((self.id, tx));
                    sent
                }
            };
            if let Err(TrySendError::Disconnected(_)) = sent {
                // A sink that is gone (only a store being dropped gets here).
                list.retain(|(id, _)| *id != self.id);
            }
            sent.is_ok()
        });
        if sent != Ok(true) {
            // The channel was full, or the thread is exiting and its list is gone.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves every thread's uses since the last drain to the end of `out`; returns how
    /// many were dropped since then.
    pub fn drain_into(&self, out: &mut Vec<Use>) -> u64 {
        let mut receivers = lock(&self.receivers);
        receivers.retain(|rx| {
            loop {
                match rx.try_recv() {
                    Ok(u) => out.push(u),
                    Err(TryRecvError::Empty) => break true,
                    // The thread exited and everything it sent has been taken.
                    Err(TryRecvError::Disconnected) => break false,
                }
            }
        });
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// The mode.
    pub fn mode(&self) -> UseLog {
        self.mode
    }
}

/// Turns drained uses into log payloads (encoded events); keys that matched none become
/// one summary (`key.use_summary` without a key id) per drain.
pub(crate) fn payloads(
    mode: UseLog,
    uses: &[Use],
    keyless: BTreeMap<Code, u64>,
    dropped: u64,
    now: i64,
) -> Vec<Vec<u8>> {
    // Keys that matched none first, as the uses were always written.
    let mut records = Vec::new();
    if !keyless.is_empty() {
        let event = Event {
            at: now,
            kind: EventKind::KeyUseSummary {
                id: None,
                summary: UseSummary {
                    first_at: now,
                    last_at: now,
                    counts: keyless,
                    last_ip: None,
                },
            },
        };
        records.push(event.encode());
    }
    let mut events = Vec::new();
    match mode {
        UseLog::Off => {}
        UseLog::Every => {
            for (earliest, range) in batches(uses) {
                let uses = uses.get(range).unwrap_or_default();
                records.push(crate::event::encode_payload(&UsesRecord { at: earliest, uses }));
            }
        }
        UseLog::Summary => {
            let mut by_key: BTreeMap<UseId, UseSummary> = BTreeMap::new();
            for u in uses {
                let s = by_key.entry(u.id).or_insert_with(|| UseSummary {
                    first_at: u.at,
                    last_at: u.at,
                    counts: BTreeMap::new(),
                    last_ip: None,
                });
                s.first_at = s.first_at.min(u.at);
                s.last_at = s.last_at.max(u.at);
                *s.counts.entry(u.code).or_insert(0) += 1;
                if u.ip.is_some() {
                    s.last_ip = u.ip;
                }
            }
            events.extend(by_key.into_iter().map(|(id, summary)| Event {
                at: summary.last_at,
                kind: EventKind::KeyUseSummary {
                    id: KeyId::parse(id.as_str()).ok(),
                    summary,
                },
            }));
        }
    }
    if dropped > 0 {
        events.push(Event {
            at: now,
            kind: EventKind::UsesDropped { count: dropped },
        });
    }
    records.extend(events.iter().map(Event::encode));
    records
}

/// A `key.uses` record written from borrowed uses: serialises exactly as the owned
/// `Event { at, kind: EventKind::KeysUsed { uses } }` would (a test checks it), packed
/// straight from the hand-off, without a `KeyUse` built per use.
struct UsesRecord<'a> {
    at: i64,
    uses: &'a [Use],
}

impl Serialize for UsesRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Kind<'a>(&'a [Use]);
        struct Packed<'a>(&'a [Use]);
        impl Serialize for Kind<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut v =
                    serializer.serialize_struct_variant("EventKind", crate::event::KEYS_USED_VARIANT, "KeysUsed", 1)?;
                v.serialize_field("uses", &Packed(self.0))?;
                v.end()
            }
        }
        impl Serialize for Packed<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let views = self.0.iter().map(|u| UseView {
                    id: u.id.as_str(),
                    at: u.at,
                    code: u.code,
                    ip: u.ip,
                    endpoint: u.endpoint.as_deref(),
                });
                serializer.serialize_bytes(&pack_uses(views))
            }
        }
        let mut v = serializer.serialize_struct("Event", 2)?;
        v.serialize_field("at", &self.at)?;
        v.serialize_field("kind", &Kind(self.uses))?;
        v.end()
    }
}

/// Every-request mode: how the uses split into `key.uses` records (the earliest use's time
/// and the range of uses), each within the size limits and with its uses no more than
/// [`USE_BATCH_SPAN_MS`] after its earliest.
fn batches(uses: &[Use]) -> Vec<(i64, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut earliest, mut latest, mut endpoint_bytes) = (i64::MAX, i64::MIN, 0);
    for (i, u) in uses.iter().enumerate() {
        let len = u.endpoint.as_ref().map_or(0, String::len);
        let (lo, hi) = (earliest.min(u.at), latest.max(u.at));
        let full = i - start >= MAX_USES_PER_RECORD || endpoint_bytes + len > MAX_ENDPOINT_BYTES_PER_RECORD;
        if i > start && (full || hi.saturating_sub(lo) > USE_BATCH_SPAN_MS) {
            out.push((earliest, start..i));
            start = i;
            (earliest, latest, endpoint_bytes) = (u.at, u.at, 0);
        } else {
            (earliest, latest) = (lo, hi);
        }
        endpoint_bytes += len;
    }
    if start < uses.len() {
        out.push((earliest, start..uses.len()));
    }
    out
}

/// `METHOD PATH`, cut to [`MAX_RECORDED_ENDPOINT`] bytes at a character boundary.
fn endpoint_text(method: &str, path: &str) -> String {
    let method = prefix_within(method, MAX_RECORDED_ENDPOINT);
    let path = prefix_within(path, MAX_RECORDED_ENDPOINT.saturating_sub(method.len() + 1));
    let mut text = String::with_capacity(method.len() + 1 + path.len());
    text.push_str(method);
    if method.len() < MAX_RECORDED_ENDPOINT {
        text.push(' ');
        text.push_str(path);
    }
    text
}

/// One key's uses over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseSummary {
    /// The first use, unix ms.
    pub first_at: i64,
    /// The last use, unix ms.
    pub last_at: i64,
    /// Uses per outcome.
    pub counts: BTreeMap<Code, u64>,
    /// The last client address seen.
    pub last_ip: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyUse;

    const ID: &str = "key_0NUqv2Kv3XaL3mB0cWj8vQ";

    fn use_at(at: i64, endpoint: Option<String>) -> Use {
        Use {
            id: UseId::new(ID).unwrap(),
            at,
            code: Code::Valid,
            ip: None,
            endpoint,
        }
    }

    fn sizes(uses: &[Use]) -> Vec<(i64, usize)> {
        batches(uses).into_iter().map(|(at, r)| (at, r.len())).collect()
    }

    #[test]
    fn batches_hold_their_uses_within_the_span_and_size_limits() {
        // Timed by the earliest use, even when it is not the first handed off.
        assert_eq!(
            sizes(&[use_at(500, None), use_at(400, None), use_at(600, None)]),
            vec![(400, 3)]
        );
        // A use more than the span after the earliest starts a new record.
        let spread = [
            use_at(0, None),
            use_at(USE_BATCH_SPAN_MS, None),
            use_at(USE_BATCH_SPAN_MS + 1, None),
        ];
        assert_eq!(sizes(&spread), vec![(0, 2), (USE_BATCH_SPAN_MS + 1, 1)]);
        // So does one that would make a record too many uses or too many bytes.
        let many: Vec<Use> = (0..MAX_USES_PER_RECORD + 1).map(|_| use_at(7, None)).collect();
        assert_eq!(sizes(&many), vec![(7, MAX_USES_PER_RECORD), (7, 1)]);
        let long = "x".repeat(MAX_RECORDED_ENDPOINT);
        let n = MAX_ENDPOINT_BYTES_PER_RECORD / MAX_RECORDED_ENDPOINT;
        let wide: Vec<Use> = (0..n + 1).map(|_| use_at(7, Some(long.clone()))).collect();
        assert_eq!(sizes(&wide), vec![(7, n), (7, 1)]);
        assert!(batches(&[]).is_empty());
        // The largest record still encodes well under the frame's limit.
        let full: Vec<Use> = (0..MAX_USES_PER_RECORD)
            .map(|_| use_at(7, Some("GET /".into())))
            .collect();
        let records = payloads(UseLog::Every, &full, BTreeMap::new(), 0, 0);
        assert_eq!(records.len(), 1);
        assert!(
            records[0].len() < crate::log::frame::MAX_BODY_LEN / 2,
            "{}",
            records[0].len()
        );
    }

    /// The borrowed encoding is byte for byte the owned event's, and decodes back to it.
    #[test]
    fn a_uses_record_encodes_as_the_owned_event_would() {
        let mut uses = vec![use_at(1_000, Some("GET /v1/x".into())), use_at(1_250, None)];
        uses[1].code = Code::RateLimited;
        uses[1].ip = Some("2001:db8::7".parse().unwrap());
        let owned = Event {
            at: 1_000,
            kind: EventKind::KeysUsed {
                uses: uses
                    .iter()
                    .map(|u| KeyUse {
                        id: KeyId::parse(ID).unwrap(),
                        at: u.at,
                        code: u.code,
                        ip: u.ip,
                        endpoint: u.endpoint.clone(),
                    })
                    .collect(),
            },
        };
        let records = payloads(UseLog::Every, &uses, BTreeMap::new(), 0, 0);
        assert_eq!(records, vec![owned.encode()]);
        assert_eq!(Event::decode(&records[0]).unwrap(), owned);
    }

    #[test]
    fn a_use_is_as_small_as_the_channel_sizing_says() {
        // USE_QUEUE's doc counts about 104 bytes a slot (the use and the slot's stamp).
        assert!(std::mem::size_of::<Use>() <= 96, "{}", std::mem::size_of::<Use>());
    }

    #[test]
    fn endpoints_are_cut_at_a_character_boundary() {
        assert_eq!(endpoint_text("GET", "/v1/x"), "GET /v1/x");
        let long = "é".repeat(MAX_RECORDED_ENDPOINT);
        let cut = endpoint_text("GET", &long);
        assert!(cut.len() <= MAX_RECORDED_ENDPOINT && cut.len() >= MAX_RECORDED_ENDPOINT - 1);
        assert!(cut.starts_with("GET é"));
        let method = "M".repeat(MAX_RECORDED_ENDPOINT + 5);
        assert_eq!(endpoint_text(&method, "/x").len(), MAX_RECORDED_ENDPOINT);
    }
}
