//! Use events: every verification outcome, handed off without a lock to the commit thread,
//! which writes them into the log in batches (never one fsync per use).
//!
//! Modes ([`UseLog`]): every request (key id, time, outcome code, client IP and endpoint
//! when given), a summary per key per flush interval (counts per outcome, first and last
//! time, last IP), or off. The hand-off is a bounded channel per verifying thread
//! ([`UseSink`]), which the commit thread empties every [`BUSY_DRAIN`] (5 ms) and writes once per
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
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};

use serde::{Deserialize, Serialize};

use crate::decision::{Code, Decision};
use crate::event::{Event, EventKind, KeyUse, USE_BATCH_SPAN_MS};
use crate::record::{KeyId, KeyRecord};

/// Uses one thread may have waiting for the commit thread (its channel's capacity, about
/// 72 bytes each: 1.2 MB per verifying thread); more are dropped and counted. Drained every
/// [`BUSY_DRAIN`], that is over 3 million uses per second per thread.
pub(crate) const USE_QUEUE: usize = 16_384;

/// How often the commit thread takes uses off the channels (at most the flush interval).
pub(crate) const BUSY_DRAIN: std::time::Duration = std::time::Duration::from_millis(5);

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

/// What a verify hands off.
pub(crate) struct Use {
    pub key: Arc<KeyRecord>,
    pub at: i64,
    pub code: Code,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<String>,
}

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

    /// Hands off one outcome; never blocks.
    #[inline]
    pub fn record(&self, decision: &Decision, at: i64, ip: Option<IpAddr>, endpoint: Option<(&str, &str)>) {
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
        let u = Use {
            key: Arc::clone(key),
            at,
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

    /// Takes every thread's uses, and how many were dropped, since the last drain.
    pub fn drain(&self) -> (Vec<Use>, u64) {
        let mut out = Vec::new();
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
        (out, self.dropped.swap(0, Ordering::Relaxed))
    }

    /// The mode.
    pub fn mode(&self) -> UseLog {
        self.mode
    }
}

/// Turns drained uses into events for the log; keys that matched none become one
/// summary (`key.use_summary` without a key id) per drain.
pub(crate) fn events(mode: UseLog, uses: Vec<Use>, keyless: BTreeMap<Code, u64>, dropped: u64, now: i64) -> Vec<Event> {
    let mut out = Vec::new();
    if !keyless.is_empty() {
        out.push(Event {
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
        });
    }
    match mode {
        UseLog::Off => {}
        UseLog::Every => out.extend(batches(uses)),
        UseLog::Summary => {
            let mut by_key: BTreeMap<Option<KeyId>, UseSummary> = BTreeMap::new();
            for u in uses {
                let s = by_key.entry(Some(u.key.id.clone())).or_insert_with(|| UseSummary {
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
            out.extend(by_key.into_iter().map(|(id, summary)| Event {
                at: summary.last_at,
                kind: EventKind::KeyUseSummary { id, summary },
            }));
        }
    }
    if dropped > 0 {
        out.push(Event {
            at: now,
            kind: EventKind::UsesDropped { count: dropped },
        });
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the list leaves a valid Vec: carry on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every-request mode: the uses as `key.uses` records, each within the size limits and
/// with its uses no more than [`USE_BATCH_SPAN_MS`] after its earliest.
fn batches(uses: Vec<Use>) -> Vec<Event> {
    let mut out = Vec::new();
    let mut batch: Vec<KeyUse> = Vec::new();
    let (mut earliest, mut latest, mut endpoint_bytes) = (i64::MAX, i64::MIN, 0);
    let flush = |batch: &mut Vec<KeyUse>, out: &mut Vec<Event>, earliest: i64| {
        if !batch.is_empty() {
            out.push(Event {
                at: earliest,
                kind: EventKind::KeysUsed {
                    uses: std::mem::take(batch),
                },
            });
        }
    };
    for u in uses {
        let len = u.endpoint.as_ref().map_or(0, String::len);
        let (lo, hi) = (earliest.min(u.at), latest.max(u.at));
        let full = batch.len() >= MAX_USES_PER_RECORD || endpoint_bytes + len > MAX_ENDPOINT_BYTES_PER_RECORD;
        if !batch.is_empty() && (full || hi.saturating_sub(lo) > USE_BATCH_SPAN_MS) {
            flush(&mut batch, &mut out, earliest);
            (earliest, latest, endpoint_bytes) = (u.at, u.at, 0);
        } else {
            (earliest, latest) = (lo, hi);
        }
        endpoint_bytes += len;
        batch.push(KeyUse {
            id: u.key.id.clone(),
            at: u.at,
            code: u.code,
            ip: u.ip,
            endpoint: u.endpoint,
        });
    }
    flush(&mut batch, &mut out, earliest);
    out
}

/// `METHOD PATH`, cut to [`MAX_RECORDED_ENDPOINT`] bytes at a character boundary.
fn endpoint_text(method: &str, path: &str) -> String {
    let mut text = String::with_capacity((method.len() + 1 + path.len()).min(MAX_RECORDED_ENDPOINT));
    for part in [method, " ", path] {
        let room = MAX_RECORDED_ENDPOINT - text.len();
        let mut cut = part.len().min(room);
        while !part.is_char_boundary(cut) {
            cut -= 1;
        }
        text.push_str(part.get(..cut).unwrap_or_default());
        if cut < part.len() {
            break;
        }
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
    use crate::record::KeyRecord;

    fn record() -> Arc<KeyRecord> {
        let r: KeyRecord = serde_json::from_value(serde_json::json!({
            "id": "key_0000000000000000000000", "name": "n", "start": "sk_live_abcd",
            "format": crate::token::Format::default_for(crate::token::Env::Live),
            "project": "default", "created_at": 0, "expires_at": null, "disabled_at": null,
            "revoked": null, "metadata": {}, "rotated_from": null, "rotated_to": null,
            "rate_limits": [], "budget": null, "plan": null, "kind": "service", "role": null,
            "permissions": [], "allow_ips": [], "allow_referrers": [], "allow_endpoints": [],
        }))
        .unwrap();
        Arc::new(r)
    }

    fn use_at(key: &Arc<KeyRecord>, at: i64, endpoint: Option<String>) -> Use {
        Use {
            key: Arc::clone(key),
            at,
            code: Code::Valid,
            ip: None,
            endpoint,
        }
    }

    fn sizes(events: &[Event]) -> Vec<(i64, usize)> {
        events
            .iter()
            .map(|e| match &e.kind {
                EventKind::KeysUsed { uses } => (e.at, uses.len()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn batches_hold_their_uses_within_the_span_and_size_limits() {
        let key = record();
        // Timed by the earliest use, even when it is not the first handed off.
        let events = batches(vec![
            use_at(&key, 500, None),
            use_at(&key, 400, None),
            use_at(&key, 600, None),
        ]);
        assert_eq!(sizes(&events), vec![(400, 3)]);
        // A use more than the span after the earliest starts a new record.
        let events = batches(vec![
            use_at(&key, 0, None),
            use_at(&key, USE_BATCH_SPAN_MS, None),
            use_at(&key, USE_BATCH_SPAN_MS + 1, None),
        ]);
        assert_eq!(sizes(&events), vec![(0, 2), (USE_BATCH_SPAN_MS + 1, 1)]);
        // So does one that would make a record too many uses or too many bytes.
        let many = (0..MAX_USES_PER_RECORD + 1).map(|_| use_at(&key, 7, None)).collect();
        assert_eq!(sizes(&batches(many)), vec![(7, MAX_USES_PER_RECORD), (7, 1)]);
        let long = "x".repeat(MAX_RECORDED_ENDPOINT);
        let n = MAX_ENDPOINT_BYTES_PER_RECORD / MAX_RECORDED_ENDPOINT;
        let wide = (0..n + 1).map(|_| use_at(&key, 7, Some(long.clone()))).collect();
        assert_eq!(sizes(&batches(wide)), vec![(7, n), (7, 1)]);
        assert!(batches(Vec::new()).is_empty());
        // The largest record still encodes under the frame's limit.
        let full: Vec<Use> = (0..MAX_USES_PER_RECORD)
            .map(|_| use_at(&key, 7, Some("GET /".into())))
            .collect();
        let encoded = batches(full).first().unwrap().encode();
        assert!(encoded.len() < crate::log::frame::MAX_BODY_LEN / 2, "{}", encoded.len());
    }

    #[test]
    fn a_use_is_as_small_as_the_channel_sizing_says() {
        // USE_QUEUE's doc counts about 72 bytes a slot (the use and the slot's stamp).
        assert!(std::mem::size_of::<Use>() <= 64, "{}", std::mem::size_of::<Use>());
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
