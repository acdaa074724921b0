//! The detector: each key's recent traffic against its own baseline, and the networks
//! presenting keys that match none.
//!
//! Per key it keeps a few counters ([`Track`]): the current hour's and minute's counts,
//! a baseline per hour of the day (the mean of that hour over the previous days, then an
//! exponential average over [`Thresholds::settle`] days), the usual denials per hour, the
//! last dead presentation and the key's client networks (at most
//! [`Thresholds::max_networks`]). About 200 bytes per key seen, kept while the key is seen
//! within the settle period and a day. Keys whose hours went by unseen have those hours'
//! baselines caught up with zeros when they are next seen.
//!
//! An anomaly is raised when a window crosses its threshold, once per episode: a window
//! that follows one that was over its threshold continues that episode.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::sketch::{NetworkCount, NetworkSketch};
use super::{Anomaly, Network, Reason, Thresholds, ms};
use crate::decision::Code;
use crate::event::UseId;
use crate::record::KeyId;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// The most missed hours a key's baseline is caught up with at once: a week of them (after
/// that every hour's baseline has decayed to next to nothing anyway).
const CATCH_UP_HOURS: i64 = 7 * 24;

/// The format of [`Detector::snapshot`]; bump it when [`Track`] changes.
const SNAPSHOT_FORMAT: u8 = 1;

/// The usual denials per hour are an exponential average over about this many hours.
const DENIAL_HOURS: f32 = 24.0;

/// An anomaly found, to be logged as a `key.anomaly` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The key, for all but `guessing`.
    pub id: Option<KeyId>,
    /// What was seen.
    pub anomaly: Anomaly,
}

/// Tracks keys' traffic and the networks presenting unknown keys; see the module docs.
#[derive(Debug)]
pub(crate) struct Detector {
    t: Thresholds,
    settle_ms: i64,
    dead_quiet_ms: i64,
    keys: Mutex<Keys>,
    guessing: Mutex<Guessing>,
    /// Keyed per process: which bit of a network's bitmap a presented key sets cannot be
    /// steered from outside.
    hasher: RandomState,
}

/// The keys' tracks, and what was found since the last [`Detector::check`].
#[derive(Debug, Default)]
pub(crate) struct Keys {
    tracks: HashMap<UseId, Track>,
    found: Vec<Found>,
    pruned_at: i64,
}

/// The sketches of the current hour and the one before (to tell a new episode from one
/// that goes on).
#[derive(Debug)]
struct Guessing {
    window: i64,
    current: NetworkSketch,
    previous: NetworkSketch,
}

#[derive(Debug, Serialize, Deserialize)]
struct Track {
    first_seen: i64,
    last_seen: i64,
    /// The hour being counted (its start), and its requests and denials so far.
    hour: i64,
    hour_count: u64,
    hour_denials: u64,
    /// The baseline per hour of the day (UTC), in requests.
    by_hour: [f32; 24],
    /// Hours closed so far (for the averages' first steps).
    hours_closed: u32,
    /// The usual denials per hour.
    denials_per_hour: f32,
    /// The minute being counted, and its denials so far.
    minute: i64,
    minute_denials: u64,
    /// The last hour over the spike threshold, and the last minute over the denials one.
    spike_hour: i64,
    denials_minute: i64,
    /// The last time the key was presented dead (0: never).
    dead_last: i64,
    /// The last use a `dormant_reuse` was raised for (0: none).
    dormant_from: i64,
    networks: Vec<Network>,
    networks_changed: i64,
    roaming: bool,
}

impl Detector {
    /// A detector with these thresholds.
    pub fn new(t: &Thresholds) -> Detector {
        let capacity = t.sketch_networks.max(1);
        Detector {
            t: t.clone(),
            settle_ms: ms(t.settle),
            dead_quiet_ms: ms(t.dead_quiet),
            keys: Mutex::new(Keys::default()),
            guessing: Mutex::new(Guessing {
                window: 0,
                current: NetworkSketch::new(capacity),
                previous: NetworkSketch::new(capacity),
            }),
            hasher: RandomState::new(),
        }
    }

    /// Whether it detects anything.
    pub fn enabled(&self) -> bool {
        self.t.enabled
    }

    /// How long a key must have been unused for its next use to be a `dormant_reuse`, ms
    /// (`i64::MAX` when detection is off): the verify path compares against it.
    pub fn dormant_ms(&self) -> i64 {
        if self.t.enabled {
            ms(self.t.dormant_after).max(1)
        } else {
            i64::MAX
        }
    }

    /// The keys' tracks, locked, for feeding a drain's uses to [`Detector::observe`].
    pub fn keys(&self) -> MutexGuard<'_, Keys> {
        crate::store::lock(&self.keys)
    }

    /// One use of key `id` at `at` (unix ms) with outcome `code`, from `ip` if given.
    pub fn observe(&self, keys: &mut Keys, id: UseId, at: i64, code: Code, ip: Option<IpAddr>) {
        if !self.t.enabled {
            return;
        }
        let Keys { tracks, found, .. } = keys;
        let track = tracks.entry(id).or_insert_with(|| Track::new(at));
        track.roll(at, self.settle_ms);
        track.last_seen = track.last_seen.max(at);
        let key_id = || KeyId::parse(id.as_str()).ok();
        if matches!(code, Code::Revoked | Code::Disabled | Code::Expired) {
            if track.dead_last == 0 || at.saturating_sub(track.dead_last) > self.dead_quiet_ms {
                found.push(Found {
                    id: key_id(),
                    anomaly: Anomaly {
                        reason: Reason::DeadKeyPresented,
                        window_start: at,
                        window_end: at,
                        observed: 1,
                        baseline: 0,
                        network: ip.map(Network::of),
                    },
                });
            }
            track.dead_last = track.dead_last.max(at);
            return;
        }
        track.hour_count += 1;
        if code != Code::Valid {
            track.hour_denials += 1;
            track.minute_denials += 1;
            if let Some(anomaly) = track.denials(at, &self.t) {
                found.push(Found { id: key_id(), anomaly });
            }
        }
        if let Some(anomaly) = track.spike(at, &self.t, self.settle_ms) {
            found.push(Found { id: key_id(), anomaly });
        }
        if let Some(network) = ip.map(Network::of)
            && let Some(anomaly) = track.network(network, at, &self.t, self.settle_ms)
        {
            found.push(Found { id: key_id(), anomaly });
        }
    }

    /// A presented key that matched none (`code`: unknown or malformed), from `ip`:
    /// counted in the current hour's sketch of networks.
    pub fn note_keyless(&self, key: &str, code: Code, ip: Option<IpAddr>, now: i64) {
        let Some(ip) = ip.filter(|_| self.t.enabled) else {
            return;
        };
        let hash = self.hasher.hash_one(key);
        let mut g = crate::store::lock(&self.guessing);
        g.roll(now);
        g.current.add(Network::of(ip), code, hash);
    }

    /// Key `id`, last used at `last`, was used again at `now` after a dormancy of at least
    /// [`Detector::dormant_ms`]: raised once per last use (two threads may both see it).
    #[cold]
    pub fn note_dormant(&self, id: &KeyId, last: i64, now: i64) {
        let Some(use_id) = UseId::new(id.as_str()) else {
            return;
        };
        let mut keys = self.keys();
        let Keys { tracks, found, .. } = &mut *keys;
        let track = tracks.entry(use_id).or_insert_with(|| Track::new(now));
        if track.dormant_from == last {
            return;
        }
        track.dormant_from = last;
        found.push(Found {
            id: Some(id.clone()),
            anomaly: Anomaly {
                reason: Reason::DormantReuse,
                window_start: last,
                window_end: now,
                observed: u64::try_from(now.saturating_sub(last) / DAY).unwrap_or(0),
                baseline: u64::try_from(self.dormant_ms() / DAY).unwrap_or(0),
                network: None,
            },
        });
    }

    /// What was found since the last check, and the networks guessing now. Once an hour
    /// it also lets go of keys not seen within the settle period and a day.
    pub fn check(&self, now: i64) -> Vec<Found> {
        if !self.t.enabled {
            return Vec::new();
        }
        let mut out = {
            let mut keys = self.keys();
            if now.saturating_sub(keys.pruned_at) >= HOUR {
                keys.pruned_at = now;
                let keep_after = now.saturating_sub(self.settle_ms.saturating_add(DAY));
                keys.tracks
                    .retain(|_, t| t.last_seen >= keep_after || t.dead_last >= keep_after);
            }
            std::mem::take(&mut keys.found)
        };
        let mut g = crate::store::lock(&self.guessing);
        g.roll(now);
        let window = g.window;
        for (network, distinct) in g.current.flag_over(self.t.guessing_min) {
            // Over the threshold in the hour before too: the same episode.
            if g.previous.raised(&network) {
                continue;
            }
            out.push(Found {
                id: None,
                anomaly: Anomaly {
                    reason: Reason::Guessing,
                    window_start: window,
                    window_end: now.max(window),
                    observed: distinct,
                    baseline: g.previous.distinct_of(&network),
                    network: Some(network),
                },
            });
        }
        out
    }

    /// The networks that presented keys matching none in the current hour, most first.
    pub fn networks(&self, now: i64) -> Vec<NetworkCount> {
        let mut g = crate::store::lock(&self.guessing);
        g.roll(now);
        g.current.top()
    }

    /// The keys' tracks as bytes, to be [`Detector::restore`]d by the next open: a version
    /// byte ([`SNAPSHOT_FORMAT`]), then bincode of a sequence of (key id, track). The
    /// networks' sketches are not kept (an hour's worth, gone within the hour anyway).
    pub fn snapshot(&self) -> Vec<u8> {
        let keys = self.keys();
        let tracks: Vec<(&str, &Track)> = keys.tracks.iter().map(|(id, t)| (id.as_str(), t)).collect();
        let mut out = vec![SNAPSHOT_FORMAT];
        // Encoding plain data into a Vec cannot fail; an error would leave the snapshot
        // empty, and the next open would start afresh.
        if let Ok(bytes) = bincode::serde::encode_to_vec(&tracks, bincode::config::standard()) {
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Takes up the tracks a [`Detector::snapshot`] kept; a snapshot of another format, or
    /// one that does not decode, is ignored (the detector starts afresh, as a new one).
    pub fn restore(&self, snapshot: &[u8]) {
        let Some((&SNAPSHOT_FORMAT, body)) = snapshot.split_first() else {
            return;
        };
        let limit = bincode::config::standard().with_limit::<{ 1 << 30 }>();
        let Ok((tracks, _)) = bincode::serde::decode_from_slice::<Vec<(String, Track)>, _>(body, limit) else {
            return;
        };
        let mut keys = self.keys();
        for (id, track) in tracks {
            if let Some(id) = UseId::new(&id) {
                keys.tracks.insert(id, track);
            }
        }
    }

    /// How many keys it tracks.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.keys().tracks.len()
    }
}

impl Guessing {
    /// Moves to the hour of `now`: the current sketch becomes the previous one when an
    /// hour ends (an empty one when more than one ended).
    fn roll(&mut self, now: i64) {
        let hour = now - now.rem_euclid(HOUR);
        if hour <= self.window {
            return;
        }
        let capacity = self.current.capacity();
        let ended = std::mem::replace(&mut self.current, NetworkSketch::new(capacity));
        self.previous = if hour - self.window == HOUR {
            ended
        } else {
            NetworkSketch::new(capacity)
        };
        self.window = hour;
    }
}

impl Track {
    fn new(at: i64) -> Track {
        Track {
            first_seen: at,
            last_seen: at,
            hour: at - at.rem_euclid(HOUR),
            hour_count: 0,
            hour_denials: 0,
            by_hour: [0.0; 24],
            hours_closed: 0,
            denials_per_hour: 0.0,
            minute: at - at.rem_euclid(MINUTE),
            minute_denials: 0,
            spike_hour: i64::MIN,
            denials_minute: i64::MIN,
            dead_last: 0,
            dormant_from: 0,
            networks: Vec::new(),
            networks_changed: at,
            roaming: false,
        }
    }

    /// Closes the hours and the minute that ended before `at`, folding each closed hour
    /// into the baselines (missed hours as zeros, at most [`CATCH_UP_HOURS`] of them). A
    /// use older than the hour being counted (handed off late) counts in it.
    fn roll(&mut self, at: i64, settle_ms: i64) {
        let minute = at - at.rem_euclid(MINUTE);
        if minute > self.minute {
            self.minute = minute;
            self.minute_denials = 0;
        }
        let hour = at - at.rem_euclid(HOUR);
        if hour <= self.hour {
            return;
        }
        let days = (settle_ms / DAY).max(1);
        let missed = ((hour - self.hour) / HOUR).min(CATCH_UP_HOURS);
        let (mut count, mut denials) = (self.hour_count, self.hour_denials);
        for step in 0..missed {
            let closing = self.hour + step * HOUR;
            // A running mean over the days seen so far, then an exponential average over
            // the settle period's days.
            let day = (closing - self.first_seen).max(0) / DAY;
            let alpha = 1.0 / f32::from(u16::try_from((day + 1).min(days)).unwrap_or(u16::MAX));
            let slot = usize::try_from(closing.rem_euclid(DAY) / HOUR).unwrap_or(0);
            if let Some(b) = self.by_hour.get_mut(slot) {
                *b += alpha * (as_f32(count) - *b);
            }
            self.hours_closed = self.hours_closed.saturating_add(1);
            let alpha = 1.0 / (self.hours_closed as f32).min(DENIAL_HOURS);
            self.denials_per_hour += alpha * (as_f32(denials) - self.denials_per_hour);
            (count, denials) = (0, 0);
        }
        self.hour = hour;
        self.hour_count = 0;
        self.hour_denials = 0;
    }

    /// A `spike`, when this hour's requests just crossed the threshold.
    fn spike(&mut self, at: i64, t: &Thresholds, settle_ms: i64) -> Option<Anomaly> {
        if self.spike_hour == self.hour || self.hour.saturating_sub(self.first_seen) < settle_ms {
            return None;
        }
        let slot = usize::try_from(self.hour.rem_euclid(DAY) / HOUR).unwrap_or(0);
        let baseline = self.by_hour.get(slot).copied().unwrap_or(0.0);
        let threshold = t.spike_min.max(ceil(baseline * as_f32(t.spike_factor)));
        if self.hour_count < threshold {
            return None;
        }
        let continued = self.spike_hour == self.hour - HOUR;
        self.spike_hour = self.hour;
        (!continued).then(|| Anomaly {
            reason: Reason::Spike,
            window_start: self.hour,
            window_end: at,
            observed: self.hour_count,
            baseline: ceil(baseline),
            network: None,
        })
    }

    /// A `denials` burst, when this minute's denials just crossed the threshold.
    fn denials(&mut self, at: i64, t: &Thresholds) -> Option<Anomaly> {
        if self.denials_minute == self.minute {
            return None;
        }
        let usual = self.denials_per_hour / 60.0;
        let threshold = t.denials_min.max(ceil(usual * as_f32(t.denials_factor)));
        if self.minute_denials < threshold {
            return None;
        }
        let continued = self.denials_minute == self.minute - MINUTE;
        self.denials_minute = self.minute;
        (!continued).then(|| Anomaly {
            reason: Reason::Denials,
            window_start: self.minute,
            window_end: at,
            observed: self.minute_denials,
            baseline: ceil(usual),
            network: None,
        })
    }

    /// A `new_network`, when `network` is new to a key whose networks were settled.
    fn network(&mut self, network: Network, at: i64, t: &Thresholds, settle_ms: i64) -> Option<Anomaly> {
        if self.roaming || self.networks.contains(&network) {
            return None;
        }
        let settled = !self.networks.is_empty()
            && at.saturating_sub(self.networks_changed) >= settle_ms
            && at.saturating_sub(self.first_seen) >= settle_ms;
        let had = self.networks.len() as u64;
        let since = self.networks_changed;
        if self.networks.len() >= t.max_networks {
            // Seen from more networks than that: no network is new to it.
            self.roaming = true;
            self.networks = Vec::new();
        } else {
            self.networks.push(network);
        }
        self.networks_changed = at;
        (settled && !self.roaming).then(|| Anomaly {
            reason: Reason::NewNetwork,
            window_start: since,
            window_end: at,
            observed: had + 1,
            baseline: had,
            network: Some(network),
        })
    }
}

/// A count as a float (counts past 2^24 lose their last digits: fine for a threshold).
#[expect(clippy::cast_precision_loss, reason = "a threshold, not an account")]
fn as_f32(n: u64) -> f32 {
    n as f32
}

/// The least whole number at or above `x` (0 for negative or NaN).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "saturating by design"
)]
fn ceil(x: f32) -> u64 {
    x.ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    fn id(n: u32) -> UseId {
        UseId::new(&format!("key_{n:022}")).unwrap()
    }

    fn small() -> Thresholds {
        Thresholds {
            spike_min: 50,
            denials_min: 20,
            guessing_min: 20,
            ..Thresholds::default()
        }
    }

    /// Feeds `n` uses of key 1 at `at` with `code`.
    fn feed(d: &Detector, at: i64, n: u64, code: Code, ip: &str) {
        let mut keys = d.keys();
        for _ in 0..n {
            d.observe(&mut keys, id(1), at, code, Some(ip.parse().unwrap()));
        }
    }

    fn reasons(found: &[Found]) -> Vec<Reason> {
        found.iter().map(|f| f.anomaly.reason).collect()
    }

    #[test]
    fn a_steady_daily_cycle_is_quiet_and_a_tenfold_hour_is_one_spike() {
        let d = Detector::new(&small());
        for hour in 0..(14 * 24) {
            let at = T0 + hour * HOUR + 1_000;
            let n = 4 + u64::try_from(hour % 24).unwrap() / 3;
            feed(&d, at, n, Code::Valid, "192.0.2.1");
            assert!(d.check(at).is_empty(), "hour {hour}");
        }
        let at = T0 + 14 * 24 * HOUR + 5 * MINUTE;
        feed(&d, at, 200, Code::Valid, "192.0.2.1");
        let found = d.check(at);
        assert_eq!(reasons(&found), [Reason::Spike]);
        assert_eq!(found[0].anomaly.observed, 50);
        assert_eq!(found[0].anomaly.baseline, 4);
        // The next hour over the threshold too: the same episode.
        feed(&d, at + HOUR, 200, Code::Valid, "192.0.2.1");
        assert!(d.check(at + HOUR).is_empty());
    }

    #[test]
    fn denials_dead_keys_and_networks_are_one_event_per_episode() {
        let d = Detector::new(&small());
        feed(&d, T0, 30, Code::RateLimited, "192.0.2.1");
        feed(&d, T0 + MINUTE, 30, Code::RateLimited, "192.0.2.1");
        assert_eq!(reasons(&d.check(T0 + MINUTE)), [Reason::Denials]);
        feed(&d, T0 + 3 * MINUTE, 30, Code::Forbidden, "192.0.2.1");
        assert_eq!(reasons(&d.check(T0 + 3 * MINUTE)), [Reason::Denials]);
        // Settled on one network for a week, then one new network: one event.
        let later = T0 + 8 * DAY;
        feed(&d, later, 1, Code::Valid, "192.0.2.200");
        assert!(d.check(later).is_empty());
        feed(&d, later, 3, Code::Valid, "198.51.100.7");
        feed(&d, later + 1, 1, Code::Valid, "203.0.113.7");
        let found = d.check(later);
        assert_eq!(reasons(&found), [Reason::NewNetwork]);
        assert_eq!(found[0].anomaly.network.unwrap().to_string(), "198.51.100.0/24");
        // Dead: once per quiet period.
        feed(&d, later + HOUR, 5, Code::Revoked, "192.0.2.1");
        feed(&d, later + 2 * HOUR, 5, Code::Revoked, "192.0.2.1");
        assert_eq!(reasons(&d.check(later + 2 * HOUR)), [Reason::DeadKeyPresented]);
        feed(&d, later + 3 * DAY, 1, Code::Disabled, "192.0.2.1");
        assert_eq!(reasons(&d.check(later + 3 * DAY)), [Reason::DeadKeyPresented]);
    }

    #[test]
    fn guessing_is_distinct_keys_from_one_network_once_per_episode() {
        let d = Detector::new(&small());
        let ip = Some("203.0.113.9".parse().unwrap());
        for _ in 0..1_000 {
            d.note_keyless("sk_live_same", Code::NotFound, ip, T0);
        }
        assert!(d.check(T0).is_empty(), "one key retried is no guessing");
        for k in 0..200 {
            d.note_keyless(&format!("sk_live_{k}"), Code::NotFound, ip, T0 + 1);
        }
        let found = d.check(T0 + 2);
        assert_eq!(reasons(&found), [Reason::Guessing]);
        assert!(found[0].id.is_none());
        for k in 0..200 {
            d.note_keyless(&format!("sk_live_x{k}"), Code::Malformed, ip, T0 + HOUR);
        }
        assert!(d.check(T0 + HOUR).is_empty(), "the next hour goes on with the episode");
        assert_eq!(d.networks(T0 + HOUR)[0].malformed, 200);
    }

    #[test]
    fn a_snapshot_carries_the_baselines_and_networks_over_a_restart() {
        let d = Detector::new(&small());
        for hour in 0..(8 * 24) {
            feed(&d, T0 + hour * HOUR, 3, Code::Valid, "192.0.2.1");
        }
        let restored = Detector::new(&small());
        restored.restore(&d.snapshot());
        assert_eq!(restored.tracked(), 1);
        // Settled already: a new network right after the restart is one anomaly.
        let at = T0 + 8 * DAY + MINUTE;
        feed(&restored, at, 2, Code::Valid, "198.51.100.1");
        assert_eq!(reasons(&restored.check(at)), [Reason::NewNetwork]);
        // A snapshot of another format or garbage: a fresh detector.
        let fresh = Detector::new(&small());
        fresh.restore(&[9, 1, 2, 3]);
        fresh.restore(&[SNAPSHOT_FORMAT, 0xFF, 0xFF]);
        assert_eq!(fresh.tracked(), 0);
    }

    #[test]
    fn dormant_reuse_is_raised_once_per_last_use_and_off_means_nothing() {
        let d = Detector::new(&small());
        let key = KeyId::parse(id(1).as_str()).unwrap();
        d.note_dormant(&key, T0, T0 + 50 * DAY);
        d.note_dormant(&key, T0, T0 + 50 * DAY);
        let found = d.check(T0 + 50 * DAY);
        assert_eq!(reasons(&found), [Reason::DormantReuse]);
        assert_eq!((found[0].anomaly.observed, found[0].anomaly.baseline), (50, 45));
        let off = Detector::new(&Thresholds::off());
        assert_eq!(off.dormant_ms(), i64::MAX);
        feed(&off, T0, 500, Code::Revoked, "192.0.2.1");
        assert!(off.check(T0).is_empty());
        assert_eq!(off.tracked(), 0);
    }
}
