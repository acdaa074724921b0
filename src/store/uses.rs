//! Use events: every verification outcome, handed off without a lock to the commit thread,
//! which writes them into the log in batches (never one fsync per use).
//!
//! Modes ([`UseLog`]): every request (key id, time, outcome code, client IP and endpoint
//! when given), a summary per key per flush interval (counts per outcome, first and last
//! time, last IP), or off. The hand-off is a bounded ring per verifying thread
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

use serde::ser::{SerializeStruct, SerializeStructVariant};
use serde::{Deserialize, Serialize, Serializer};

use crate::decision::{Code, Decision};
use crate::event::{
    Event, EventKind, MAX_ENDPOINT_BYTES_PER_RECORD, MAX_RECORDED_ENDPOINT, MAX_USES_PER_RECORD, Packer,
    USE_BATCH_SPAN_MS, UseId, UseSummary, UseView,
};
use crate::name::{InlineName, prefix_within};
use crate::record::KeyId;

use super::lock;

/// Uses one thread may have waiting for the commit thread (its ring's capacity, 128 bytes
/// each: 2.1 MB per verifying thread); more are dropped and counted. Drained every
/// [`BUSY_DRAIN`], that is 8 million uses per second per thread.
pub(crate) const USE_QUEUE: usize = 16_384;

/// How often the commit thread takes uses off the rings (at most the flush interval).
pub(crate) const BUSY_DRAIN: std::time::Duration = std::time::Duration::from_millis(2);

/// The commit thread writes the uses it took off the queue once per flush interval, with
/// the next batch of changes, or as soon as this many gathered.
pub(crate) const WRITE_USES_AT: usize = 16_384;

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
/// verify of the key writes) over to its core and back. Nothing in it is secret.
#[derive(Debug)]
pub(crate) struct Use {
    pub id: UseId,
    pub at: i64,
    pub code: Code,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<Endpoint>,
}

/// Endpoints (`METHOD PATH`) up to this many bytes travel inside the use; most do.
const INLINE_ENDPOINT: usize = 62;

/// A use's endpoint, `METHOD PATH`, cut to [`MAX_RECORDED_ENDPOINT`] bytes at a character
/// boundary. Inline when it fits: an endpoint allocated by the verifying thread and freed
/// by the commit thread lands in the verifying thread's arena as a freed chunk, which its
/// allocator then has to consolidate; under HTTP load that cost more than the use itself.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Inline(InlineName<INLINE_ENDPOINT>),
    Long(Box<str>),
}

impl Endpoint {
    fn new(method: &str, path: &str) -> Self {
        let method = prefix_within(method, MAX_RECORDED_ENDPOINT);
        let parts: &[&str] = if method.len() < MAX_RECORDED_ENDPOINT {
            &[
                method,
                " ",
                prefix_within(path, MAX_RECORDED_ENDPOINT - method.len() - 1),
            ]
        } else {
            &[method]
        };
        match InlineName::concat(parts) {
            Some(inline) => Endpoint::Inline(inline),
            None => Endpoint::Long(parts.concat().into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Endpoint::Inline(inline) => inline,
            Endpoint::Long(long) => long,
        }
    }
}

/// The verify side of the hand-off: a bounded ring per verifying thread (`rtrb`, single
/// producer and single consumer), which the commit thread empties. A verify pushes onto
/// its own thread's ring with a plain store of the ring's tail, no read-modify-write, and
/// no other verify touches that ring; the commit thread takes everything there in one
/// read and frees the slots with one store.
#[derive(Debug)]
pub(crate) struct UseSink {
    mode: UseLog,
    /// Tells this sink's rings apart from other stores' in a thread's list.
    id: u64,
    /// The reading end of every thread's ring, for the commit thread to drain.
    receivers: Mutex<Vec<rtrb::Consumer<Use>>>,
    /// Uses refused because their thread's ring was full.
    dropped: AtomicU64,
    /// Presented keys that matched none (MALFORMED, NOT_FOUND): counted, not queued, so
    /// a flood of garbage costs an atomic add, not a log record each.
    pub keyless: Keyless,
}

/// Tells sinks apart.
static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's writing end in each sink it has recorded to: (sink id, ring).
    static SENDERS: RefCell<Vec<(u64, rtrb::Producer<Use>)>> = const { RefCell::new(Vec::new()) };
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
            // Only every-request mode writes endpoints; a summary counts outcomes.
            endpoint: endpoint
                .filter(|_| self.mode == UseLog::Every)
                .map(|(m, p)| Endpoint::new(m, p)),
        };
        let sent = SENDERS.try_with(|list| {
            let mut list = list.borrow_mut();
            let pushed = match list.iter_mut().find(|(id, _)| *id == self.id) {
                Some((_, ring)) => ring.push(u),
                None => {
                    // This thread's first use of this sink: a ring of its own. Rings of
                    // stores closed since are let go here.
                    list.retain(|(_, ring)| !ring.is_abandoned());
                    let (mut ring, reader) = rtrb::RingBuffer::new(USE_QUEUE);
                    lock(&self.receivers).push(reader);
                    let pushed = ring.push(u);
                    list.push((self.id, ring));
                    pushed
                }
            };
            pushed.is_ok()
        });
        if sent != Ok(true) {
            // The ring was full, or the thread is exiting and its list is gone.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes every thread's uses since the last drain into `out`, showing each to the
    /// anomaly `detector` on the way; returns how many were dropped since then.
    pub fn drain_into(&self, out: &mut Gathered, detector: &crate::anomaly::Detector) -> u64 {
        let mut receivers = lock(&self.receivers);
        let mut keys = detector.enabled().then(|| detector.keys());
        receivers.retain_mut(|ring| {
            // Read before the drain: once the thread is gone (its ring abandoned, with
            // acquire ordering), everything it pushed is visible to the drain below.
            let gone = ring.is_abandoned();
            if let Ok(chunk) = ring.read_chunk(ring.slots()) {
                chunk.into_iter().for_each(|u| {
                    if let Some(keys) = keys.as_mut() {
                        detector.observe(keys, u.id, u.at, u.code, u.ip);
                    }
                    out.push(u);
                });
            }
            !(gone && ring.is_empty())
        });
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// The mode.
    pub fn mode(&self) -> UseLog {
        self.mode
    }
}

/// The uses taken off the rings and not yet written, kept as the mode writes them:
/// every-request mode packs each use into the open `key.uses` record as it is taken (no
/// list of uses is gathered first), summary mode adds it to its key's summary.
pub(crate) struct Gathered {
    mode: UseLog,
    count: usize,
    /// Every-request mode: the records filled, and the one being filled.
    records: Vec<Vec<u8>>,
    open: Option<OpenRecord>,
    /// Summary mode: each key's summary.
    summaries: BTreeMap<UseId, UseSummary>,
}

/// A `key.uses` record being filled: its uses packed, and the earliest and latest of them.
struct OpenRecord {
    packer: Packer,
    earliest: i64,
    latest: i64,
}

impl Gathered {
    pub fn new(mode: UseLog) -> Self {
        Gathered {
            mode,
            count: 0,
            records: Vec::new(),
            open: None,
            summaries: BTreeMap::new(),
        }
    }

    /// Uses gathered since the last [`take`](Self::take).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn push(&mut self, u: Use) {
        self.count += 1;
        match self.mode {
            UseLog::Off => {}
            UseLog::Every => self.pack(&u),
            UseLog::Summary => {
                let s = self.summaries.entry(u.id).or_insert_with(|| UseSummary {
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
        }
    }

    /// Packs `u` into the open record, first closing it when `u` would take it past a
    /// limit: [`MAX_USES_PER_RECORD`], [`MAX_ENDPOINT_BYTES_PER_RECORD`] of distinct
    /// endpoints (`u`'s endpoint counted as if new, so a record near the limit may close
    /// early, never late), or a use more than [`USE_BATCH_SPAN_MS`] from the earliest.
    fn pack(&mut self, u: &Use) {
        let endpoint = u.endpoint.as_ref().map(Endpoint::as_str);
        if let Some(open) = &self.open {
            let (lo, hi) = (open.earliest.min(u.at), open.latest.max(u.at));
            let endpoint_bytes = open.packer.endpoint_bytes() + endpoint.map_or(0, str::len);
            if open.packer.len() >= MAX_USES_PER_RECORD
                || endpoint_bytes > MAX_ENDPOINT_BYTES_PER_RECORD
                || hi.saturating_sub(lo) > USE_BATCH_SPAN_MS
            {
                self.close();
            }
        }
        let open = self.open.get_or_insert_with(|| OpenRecord {
            packer: Packer::new(),
            earliest: u.at,
            latest: u.at,
        });
        open.earliest = open.earliest.min(u.at);
        open.latest = open.latest.max(u.at);
        open.packer.push(UseView {
            id: u.id,
            at: u.at,
            code: u.code,
            ip: u.ip,
            endpoint,
        });
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            let packed = open.packer.finish();
            let record = UsesRecord {
                at: open.earliest,
                packed: &packed,
            };
            self.records.push(crate::event::encode_payload(&record));
        }
    }

    /// The log payloads for what was gathered, then for the presented keys that matched
    /// none (`keyless`: one `key.use_summary` without a key id, first, as the uses were
    /// always written) and the uses `dropped`; starts gathering afresh.
    pub fn take(&mut self, keyless: BTreeMap<Code, u64>, dropped: u64, now: i64) -> Vec<Vec<u8>> {
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
        self.close();
        records.append(&mut self.records);
        let mut events: Vec<Event> = std::mem::take(&mut self.summaries)
            .into_iter()
            .map(|(id, summary)| Event {
                at: summary.last_at,
                kind: EventKind::KeyUseSummary {
                    id: KeyId::parse(id.as_str()).ok(),
                    summary,
                },
            })
            .collect();
        if dropped > 0 {
            events.push(Event {
                at: now,
                kind: EventKind::UsesDropped { count: dropped },
            });
        }
        records.extend(events.iter().map(Event::encode));
        self.count = 0;
        records
    }
}

/// A `key.uses` record from uses packed as they were taken: serialises exactly as the
/// owned `Event { at, kind: EventKind::KeysUsed { uses } }` would (a test checks it),
/// without a `KeyUse` built per use.
struct UsesRecord<'a> {
    at: i64,
    packed: &'a [u8],
}

impl Serialize for UsesRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Kind<'a>(&'a [u8]);
        struct Packed<'a>(&'a [u8]);
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
                serializer.serialize_bytes(self.0)
            }
        }
        let mut v = serializer.serialize_struct("Event", 2)?;
        v.serialize_field("at", &self.at)?;
        v.serialize_field("kind", &Kind(self.packed))?;
        v.end()
    }
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
            endpoint: endpoint.map(|e| endpoint_of(&e)),
        }
    }

    /// An endpoint of this exact text (at most `MAX_RECORDED_ENDPOINT` bytes).
    fn endpoint_of(text: &str) -> Endpoint {
        assert!(text.len() <= MAX_RECORDED_ENDPOINT);
        InlineName::new(text).map_or_else(|| Endpoint::Long(text.into()), Endpoint::Inline)
    }

    /// The `key.uses` records the uses make, in every-request mode: (at, uses) each.
    fn records(uses: Vec<Use>) -> Vec<(i64, Vec<KeyUse>)> {
        let mut gathered = Gathered::new(UseLog::Every);
        uses.into_iter().for_each(|u| gathered.push(u));
        gathered
            .take(BTreeMap::new(), 0, 0)
            .iter()
            .map(|payload| match Event::decode(payload).unwrap() {
                Event {
                    at,
                    kind: EventKind::KeysUsed { uses },
                } => (at, uses),
                other => panic!("not a key.uses record: {other:?}"),
            })
            .collect()
    }

    fn sizes(uses: Vec<Use>) -> Vec<(i64, usize)> {
        records(uses).into_iter().map(|(at, uses)| (at, uses.len())).collect()
    }

    /// A distinct, well-formed key id for each `i`.
    fn id_of(i: usize) -> UseId {
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let digits: String = (0..4).map(|k| DIGITS[(i / 62usize.pow(k)) % 62] as char).collect();
        UseId::new(&format!("key_000000000000000000{digits}")).unwrap()
    }

    #[test]
    fn records_hold_their_uses_within_the_span_and_size_limits() {
        // Timed by the earliest use, even when it is not the first handed off.
        assert_eq!(
            sizes(vec![use_at(500, None), use_at(400, None), use_at(600, None)]),
            vec![(400, 3)]
        );
        // A use more than the span after the earliest starts a new record.
        let spread = vec![
            use_at(0, None),
            use_at(USE_BATCH_SPAN_MS, None),
            use_at(USE_BATCH_SPAN_MS + 1, None),
        ];
        assert_eq!(sizes(spread), vec![(0, 2), (USE_BATCH_SPAN_MS + 1, 1)]);
        // So does one that would make a record too many uses or too many bytes of
        // distinct endpoints; one endpoint repeated is stored once.
        let many: Vec<Use> = (0..MAX_USES_PER_RECORD + 1).map(|_| use_at(7, None)).collect();
        assert_eq!(sizes(many), vec![(7, MAX_USES_PER_RECORD), (7, 1)]);
        let n = MAX_ENDPOINT_BYTES_PER_RECORD / MAX_RECORDED_ENDPOINT;
        let long = |i: usize| Some(format!("{i:0width$}", width = MAX_RECORDED_ENDPOINT));
        let wide: Vec<Use> = (0..n + 1).map(|i| use_at(7, long(i))).collect();
        assert_eq!(sizes(wide), vec![(7, n), (7, 1)]);
        let same: Vec<Use> = (0..n + 1).map(|_| use_at(7, long(0))).collect();
        assert_eq!(sizes(same), vec![(7, n + 1)]);
        assert!(records(Vec::new()).is_empty());
        // Keys alternating, and a run of one, come back as they went in.
        let order = [0, 1, 1, 0, 2, 0, 0];
        let mixed: Vec<Use> = order
            .iter()
            .map(|&k| Use {
                id: id_of(k),
                ..use_at(7, None)
            })
            .collect();
        let back: Vec<String> = records(mixed)[0].1.iter().map(|u| u.id.as_str().to_string()).collect();
        let sent: Vec<String> = order.iter().map(|&k| id_of(k).as_str().to_string()).collect();
        assert_eq!(back, sent);
        // The largest record (every key, address and endpoint distinct, times spread over
        // the span) still fits a frame.
        let per = MAX_ENDPOINT_BYTES_PER_RECORD / MAX_USES_PER_RECORD;
        let worst: Vec<Use> = (0..MAX_USES_PER_RECORD)
            .map(|i| Use {
                id: id_of(i),
                at: if i % 2 == 0 { 0 } else { USE_BATCH_SPAN_MS },
                code: Code::BudgetExhausted,
                ip: Some(std::net::Ipv6Addr::from(u128::MAX - i as u128).into()),
                endpoint: Some(endpoint_of(&format!("{i:0per$}"))),
            })
            .collect();
        let mut gathered = Gathered::new(UseLog::Every);
        worst.into_iter().for_each(|u| gathered.push(u));
        let payloads = gathered.take(BTreeMap::new(), 0, 0);
        assert_eq!(payloads.len(), 1);
        assert!(
            payloads[0].len() < crate::log::frame::MAX_BODY_LEN,
            "{}",
            payloads[0].len()
        );
        match Event::decode(&payloads[0]).unwrap().kind {
            EventKind::KeysUsed { uses } => assert_eq!(uses.len(), MAX_USES_PER_RECORD),
            other => panic!("{other:?}"),
        }
    }

    /// The record written from uses packed as they were taken is byte for byte the owned
    /// event's, and decodes back to it.
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
                        endpoint: u.endpoint.as_ref().map(|e| e.as_str().to_string()),
                    })
                    .collect(),
            },
        };
        let mut gathered = Gathered::new(UseLog::Every);
        uses.into_iter().for_each(|u| gathered.push(u));
        assert_eq!(gathered.len(), 2);
        let payloads = gathered.take(BTreeMap::new(), 0, 0);
        assert_eq!(payloads, vec![owned.encode()]);
        assert_eq!(Event::decode(&payloads[0]).unwrap(), owned);
        assert_eq!(gathered.len(), 0);
    }

    #[test]
    fn summaries_count_each_keys_uses_and_dropped_uses_are_logged() {
        let mut gathered = Gathered::new(UseLog::Summary);
        let mut denied = use_at(300, None);
        denied.code = Code::RateLimited;
        denied.ip = Some("192.0.2.1".parse().unwrap());
        for u in [use_at(200, None), denied, use_at(100, None)] {
            gathered.push(u);
        }
        let keyless = BTreeMap::from([(Code::NotFound, 4)]);
        let events: Vec<Event> = gathered
            .take(keyless, 9, 500)
            .iter()
            .map(|p| Event::decode(p).unwrap())
            .collect();
        let kinds: Vec<&str> = events.iter().map(Event::kind_name).collect();
        assert_eq!(kinds, ["key.use_summary", "key.use_summary", "use.dropped"]);
        match &events[1].kind {
            EventKind::KeyUseSummary { id, summary } => {
                assert_eq!(id.as_ref().map(KeyId::as_str), Some(ID));
                assert_eq!((summary.first_at, summary.last_at), (100, 300));
                assert_eq!(
                    summary.counts,
                    BTreeMap::from([(Code::Valid, 2), (Code::RateLimited, 1)])
                );
                assert_eq!(summary.last_ip, Some("192.0.2.1".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(events[2].kind, EventKind::UsesDropped { count: 9 }));
        assert!(gathered.take(BTreeMap::new(), 0, 0).is_empty());
    }

    #[test]
    fn a_use_is_as_small_as_the_ring_sizing_says() {
        // USE_QUEUE's doc counts 128 bytes a slot.
        assert!(std::mem::size_of::<Use>() <= 128, "{}", std::mem::size_of::<Use>());
    }

    #[test]
    fn endpoints_are_cut_at_a_character_boundary() {
        let endpoint = Endpoint::new("GET", "/v1/x");
        assert!(matches!(endpoint, Endpoint::Inline(_)));
        assert_eq!(endpoint.as_str(), "GET /v1/x");
        let long = "é".repeat(MAX_RECORDED_ENDPOINT);
        let cut = Endpoint::new("GET", &long);
        assert!(matches!(cut, Endpoint::Long(_)));
        let cut = cut.as_str();
        assert!(cut.len() <= MAX_RECORDED_ENDPOINT && cut.len() >= MAX_RECORDED_ENDPOINT - 1);
        assert!(cut.starts_with("GET é"));
        let method = "M".repeat(MAX_RECORDED_ENDPOINT + 5);
        assert_eq!(Endpoint::new(&method, "/x").as_str().len(), MAX_RECORDED_ENDPOINT);
    }

    #[test]
    fn endpoints_inline_up_to_the_limit_and_spill_past_it() {
        let path = format!("/{}", "p".repeat(INLINE_ENDPOINT - 5));
        let at_limit = Endpoint::new("GET", &path);
        assert_eq!(at_limit.as_str().len(), INLINE_ENDPOINT);
        assert!(matches!(at_limit, Endpoint::Inline(_)));
        let past = Endpoint::new("POST", &path);
        assert!(matches!(past, Endpoint::Long(_)));
        assert_eq!(past.as_str(), format!("POST {path}"));
    }
}
