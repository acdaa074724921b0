//! Use events: every verification outcome, handed off without a lock to the commit thread,
//! which writes them into the log in batches (never one fsync per use).
//!
//! Modes ([`UseLog`]): every request (key id, time, outcome code, client IP and endpoint
//! when given), a summary per key per flush interval (counts per outcome, first and last
//! time, last IP), or off. The hand-off is a bounded channel (`try_send`, lock-free on the
//! array flavour); when the commit thread falls behind and it is full, uses are counted
//! as dropped and the count is logged with the next batch (`use.dropped`). Presented keys
//! that match no key (malformed or unknown) are only counted, and logged as one summary
//! per drain, so garbage sent at the server cannot make the log grow per request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::{Deserialize, Serialize};

use crate::decision::{Code, Decision};
use crate::event::{Event, EventKind};
use crate::record::{KeyId, KeyRecord};

/// Uses buffered between the verify threads and the commit thread.
pub(crate) const USE_QUEUE: usize = 1 << 16;

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
    pub key: Option<Arc<KeyRecord>>,
    pub at: i64,
    pub code: Code,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<String>,
}

/// The verify side of the hand-off.
#[derive(Debug)]
pub(crate) struct UseSink {
    mode: UseLog,
    tx: Option<SyncSender<Use>>,
    dropped: Arc<AtomicU64>,
    /// Presented keys that matched none (MALFORMED, NOT_FOUND): counted, not queued, so
    /// a flood of garbage costs an atomic add, not a log record each.
    pub keyless: Arc<Keyless>,
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
    /// A sink and the receiver the commit thread drains.
    pub fn new(mode: UseLog) -> (UseSink, Receiver<Use>, Arc<AtomicU64>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(USE_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = UseSink {
            mode,
            tx: (mode != UseLog::Off).then_some(tx),
            dropped: Arc::clone(&dropped),
            keyless: Arc::default(),
        };
        (sink, rx, dropped)
    }

    /// Hands off one outcome; never blocks.
    #[inline]
    pub fn record(&self, decision: &Decision, at: i64, ip: Option<IpAddr>, endpoint: Option<(&str, &str)>) {
        let Some(tx) = &self.tx else {
            return;
        };
        if decision.key.is_none() {
            let counter = match decision.code {
                Code::Malformed => &self.keyless.malformed,
                _ => &self.keyless.not_found,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let u = Use {
            key: decision.key.clone(),
            at,
            code: decision.code,
            ip,
            endpoint: endpoint.map(|(m, p)| format!("{m} {p}")),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(u) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
        UseLog::Every => out.extend(uses.into_iter().map(|u| Event {
            at: u.at,
            kind: EventKind::KeyUsed {
                id: u.key.map(|k| k.id.clone()),
                code: u.code,
                ip: u.ip,
                endpoint: u.endpoint,
            },
        })),
        UseLog::Summary => {
            let mut by_key: BTreeMap<Option<KeyId>, UseSummary> = BTreeMap::new();
            for u in uses {
                let s = by_key.entry(u.key.map(|k| k.id.clone())).or_insert_with(|| UseSummary {
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
