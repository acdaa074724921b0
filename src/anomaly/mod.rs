//! Anomalies: a key's traffic against its own baseline, and store-wide guessing.
//!
//! Each episode raises one `key.anomaly` event ([`crate::EventKind::KeyAnomaly`]), for
//! one of six [`Reason`]s: a volume `spike` (a key's hour far above the same hour of its
//! previous days), a burst of `denials`, `dormant_reuse` (a key used again after a long
//! dormancy), `dead_key_presented` (a revoked, disabled or expired key still presented),
//! `new_network` (a client network new to a key whose networks were settled) and
//! `guessing` (one network presenting many distinct unknown keys).
//!
//! The verify path does nothing for it on a valid key but one comparison it already has
//! the operands of (the dormancy, against the key's last use); a presented key that
//! matches none is noted in a bounded top-K sketch of client networks ([`sketch`]). The
//! rest runs off the hot path: the commit thread feeds the uses it takes off the hand-off
//! rings to the [`Detector`], and the flusher asks it, once per flush interval, for what
//! it found. The thresholds are [`Thresholds`]; DESIGN.md says why each default is what
//! it is.

pub mod sketch;

mod detector;

pub(crate) use detector::{Detector, Found};

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::fmt_time;
use crate::record::KeyId;

/// Why an anomaly was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reason {
    /// A key's requests in the last hour far above the same hour of its previous days.
    Spike,
    /// A burst of denials (forbidden, insufficient permissions, rate limited, budget
    /// exhausted) for a key within a minute.
    Denials,
    /// A key used again after a long dormancy.
    DormantReuse,
    /// A revoked, disabled or expired key still presented.
    DeadKeyPresented,
    /// A client network new to a key whose set of networks was settled.
    NewNetwork,
    /// One client network presenting many distinct unknown or malformed keys.
    Guessing,
}

impl Reason {
    /// Every reason, in order.
    pub const ALL: [Reason; 6] = [
        Reason::Spike,
        Reason::Denials,
        Reason::DormantReuse,
        Reason::DeadKeyPresented,
        Reason::NewNetwork,
        Reason::Guessing,
    ];

    /// The reason as printed: `spike`, `dead_key_presented`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Spike => "spike",
            Reason::Denials => "denials",
            Reason::DormantReuse => "dormant_reuse",
            Reason::DeadKeyPresented => "dead_key_presented",
            Reason::NewNetwork => "new_network",
            Reason::Guessing => "guessing",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client network: the /24 of an IPv4 address, the /48 of an IPv6 one (an IPv4-mapped
/// IPv6 address counts as its IPv4 address). Only this much of a client's address is
/// kept by the anomaly detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Network(IpAddr);

impl Network {
    /// The network `ip` is in.
    pub fn of(ip: IpAddr) -> Network {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Network(IpAddr::V4((u32::from(v4) & 0xFFFF_FF00).into())),
            IpAddr::V6(v6) => Network(IpAddr::V6((u128::from(v6) & (u128::MAX << 80)).into())),
        }
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.0
    }

    /// Its prefix length: 24 or 48.
    pub fn prefix_len(&self) -> u8 {
        if self.0.is_ipv4() { 24 } else { 48 }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.prefix_len())
    }
}

/// What was observed, in a `key.anomaly` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Why.
    pub reason: Reason,
    /// The window the figures are of, unix ms: its start ...
    pub window_start: i64,
    /// ... and its end (the time the anomaly was noticed, for a window still open).
    pub window_end: i64,
    /// The figure observed in the window: requests (`spike`), denials (`denials`), days
    /// dormant (`dormant_reuse`), presentations (`dead_key_presented`), networks with the
    /// new one (`new_network`), distinct unknown keys (`guessing`).
    pub observed: u64,
    /// What was expected instead: the key's usual figure for the same window, or the
    /// networks it had (`new_network`); 0 where nothing was expected.
    pub baseline: u64,
    /// The client network concerned (`new_network`, `guessing`).
    pub network: Option<Network>,
}

impl Anomaly {
    /// The event's details as JSON: `{"key_id"?, "reason", "window": {"start", "end"},
    /// "observed", "baseline", "network"?}`.
    pub fn to_json(&self, key_id: Option<&KeyId>) -> serde_json::Value {
        let mut out = serde_json::json!({
            "reason": self.reason.as_str(),
            "window": { "start": fmt_time(self.window_start), "end": fmt_time(self.window_end) },
            "observed": self.observed,
            "baseline": self.baseline,
        });
        if let Some(map) = out.as_object_mut() {
            if let Some(id) = key_id {
                map.insert("key_id".into(), serde_json::json!(id));
            }
            if let Some(network) = &self.network {
                map.insert("network".into(), serde_json::json!(network.to_string()));
            }
        }
        out
    }
}

/// An anomaly as logged: when, for which key, what (the `anomalies` of a usage report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedAnomaly {
    /// When it was raised, unix ms.
    pub at: i64,
    /// The key (none for `guessing`).
    pub key_id: Option<KeyId>,
    /// What was seen.
    pub anomaly: Anomaly,
}

impl LoggedAnomaly {
    /// As [`Anomaly::to_json`], with `"at"`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = self.anomaly.to_json(self.key_id.as_ref());
        if let Some(map) = out.as_object_mut() {
            map.insert("at".into(), serde_json::json!(fmt_time(self.at)));
        }
        out
    }
}

/// When an anomaly is raised. The defaults, and why each is what it is, are in DESIGN.md
/// ("Usage and anomalies").
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Thresholds {
    /// Detect anomalies at all (default: on).
    pub enabled: bool,
    /// `spike`: an hour's requests at least this many times the key's baseline for that
    /// hour of the day (default 10).
    pub spike_factor: u64,
    /// `spike`: and at least this many requests in the hour (default 1,000).
    pub spike_min: u64,
    /// `spike` and `new_network`: the history a key needs before either is judged
    /// (default 7 days): its baseline is the same hour of this many previous days, and
    /// its networks are settled when none was added for this long.
    pub settle: Duration,
    /// `denials`: denials of a key within one minute, at least (default 100) ...
    pub denials_min: u64,
    /// ... and at least this many times its usual denials per minute (default 10).
    pub denials_factor: u64,
    /// `dormant_reuse`: a key unused for this long, used again (default 45 days).
    pub dormant_after: Duration,
    /// `dead_key_presented`: presentations of a dead key this far apart are separate
    /// episodes (default 24 hours).
    pub dead_quiet: Duration,
    /// `new_network`: a key seen from more networks than this roams; no network is new
    /// to it (default 8).
    pub max_networks: usize,
    /// `guessing`: distinct unknown or malformed keys from one network within an hour,
    /// at least (default 50).
    pub guessing_min: u64,
    /// `guessing`: networks the top-K sketch keeps per hour (default 256).
    pub sketch_networks: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            enabled: true,
            spike_factor: 10,
            spike_min: 1_000,
            settle: Duration::from_secs(7 * 86_400),
            denials_min: 100,
            denials_factor: 10,
            dormant_after: Duration::from_secs(45 * 86_400),
            dead_quiet: Duration::from_secs(86_400),
            max_networks: 8,
            guessing_min: 50,
            sketch_networks: 256,
        }
    }
}

impl Thresholds {
    /// Anomaly detection off: nothing is tracked, nothing raised.
    pub fn off() -> Self {
        Thresholds {
            enabled: false,
            ..Thresholds::default()
        }
    }
}

/// Milliseconds of a duration, saturating.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_the_24_and_the_48() {
        let n = Network::of("203.0.113.77".parse().unwrap());
        assert_eq!(n.to_string(), "203.0.113.0/24");
        assert_eq!(n, Network::of("203.0.113.1".parse().unwrap()));
        assert_ne!(n, Network::of("203.0.114.1".parse().unwrap()));
        let mapped = Network::of("::ffff:203.0.113.9".parse().unwrap());
        assert_eq!(mapped, n);
        let v6 = Network::of("2001:db8:aa:bb::1".parse().unwrap());
        assert_eq!(v6.to_string(), "2001:db8:aa::/48");
        assert_eq!(v6, Network::of("2001:db8:aa:ffff::9".parse().unwrap()));
        assert_ne!(v6, Network::of("2001:db8:ab::1".parse().unwrap()));
    }

    #[test]
    fn the_json_names_the_reason_and_the_figures() {
        let a = Anomaly {
            reason: Reason::Guessing,
            window_start: 0,
            window_end: 3_600_000,
            observed: 120,
            baseline: 0,
            network: Some(Network::of("198.51.100.3".parse().unwrap())),
        };
        let j = a.to_json(None);
        assert_eq!(j["reason"], "guessing");
        assert_eq!(j["network"], "198.51.100.0/24");
        assert_eq!(j["observed"], 120);
        assert!(j.get("key_id").is_none());
        assert_eq!(j["window"]["end"], "1970-01-01T01:00:00.000Z");
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "spike",
                "denials",
                "dormant_reuse",
                "dead_key_presented",
                "new_network",
                "guessing"
            ]
        );
    }
}
