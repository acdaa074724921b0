//! How to open a store: [`Config`], and what `CREDSTORE_*` variables set in it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{InputError, Result};
use crate::log::DEFAULT_SEGMENT_SIZE;
use crate::secret::Pepper;
use crate::token::{Env, Format};

use super::UseLog;
use super::parse_master_keys;

/// How to open a store.
#[derive(Clone)]
pub struct Config {
    /// The pepper. `None`: a development store's `pepper.key` (created by `init`).
    pub pepper: Option<Pepper>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// How often in-memory counters (last used, rate limits, budget spend) are flushed to sled.
    pub flush_interval: Duration,
    /// The size at which a log segment is sealed.
    pub segment_size: u64,
    /// Sensitive operations (creating admin keys, vault writes) need an admin key.
    pub require_admin: bool,
    /// The vault's master keys. `None`: a development store's `master.key`, if any.
    pub master_keys: Option<crate::vault::MasterKeyring>,
    /// How verification outcomes are recorded in the log.
    pub use_log: UseLog,
    /// A file outside the data directory that keeps a copy of every head checkpoint: a
    /// rollback of the whole data directory (a restored copy, a snapshot put back) is
    /// found against it at open. `None`: no witness.
    pub witness: Option<PathBuf>,
    /// Fleet mode: the PostgreSQL URL of the fleet this store is a host of. Every change
    /// commits there first; other hosts' changes arrive within a poll interval. `None`: a
    /// local store. Never shown in `Debug` (it may hold a password).
    pub fleet: Option<String>,
    /// Fleet mode: this host's name in the fleet (default: `$HOSTNAME` and the process id).
    pub host: Option<String>,
    /// Fleet mode: how long a host that cannot reach the fleet keeps verifying from its
    /// replica before it refuses ([`crate::Error::Stale`]), unless `fleet_fail_open`.
    pub fleet_max_staleness: Duration,
    /// Fleet mode: keep verifying from the replica however stale it is (fail open).
    pub fleet_fail_open: bool,
    /// Fleet mode: how long a budget lease lasts unless the host renews it (it renews every
    /// second). A host that dies holding leases blocks their units this long; a host that
    /// cannot renew stops spending them 30% of this before they expire.
    pub fleet_lease_ttl: Duration,
    /// Fleet mode: a passive host (the CLI's throwaway replica) is not counted among the
    /// hosts that share rate limits: it sends no heartbeat and holds no part of any limit,
    /// so it refuses requests on rate-limited keys (`RATE_LIMITED`) rather than take a part
    /// from the serving hosts for a moment. Budgets it spends from leases as any host.
    pub fleet_passive: bool,
    /// Fleet mode: how often an idle host reads the fleet's head to learn of other hosts'
    /// changes while no listener is in effect (20 ms by default). With one in effect
    /// (`fleet_listen`), a change is announced at once and the head is read every 100 ms
    /// or this, whichever is longer. The poll alone is correct: the listener only hurries it.
    pub fleet_poll: Duration,
    /// Fleet mode: listen for the fleet's announcements of new records (PostgreSQL's
    /// `LISTEN credstore_log`, on a connection of its own), so that a change reaches this
    /// host without waiting for its poll. On by default; off for an engine without `LISTEN`
    /// (CockroachDB: the listener stops by itself there) or behind a pooler in transaction
    /// mode, which swallows notifications.
    pub fleet_listen: bool,
    /// How long opening waits for the store's lock while another process (or another
    /// `Store` of this one) holds it, before [`crate::OpenError::Locked`]; zero fails at once.
    pub lock_wait: Duration,
    /// The key prefixes customer verification ([`super::Store::verify_with`], and so `credstore
    /// verify`, the layer and the sidecar's `keys.verify`) accepts, of the registered
    /// formats: a key of another registered format is `MALFORMED` (unknown prefix), as
    /// one of an unregistered format is. `None`: every registered format. Admin keys
    /// ([`Format::admin`]) are never accepted there, whatever this says; naming their
    /// prefix is refused at open.
    pub verify_prefixes: Option<Vec<String>>,
    /// How often the lifecycle sweep runs in the background (`None`: never; call
    /// [`super::Store::sweep_lifecycle`]). It reads every key, so it runs seldom; the
    /// first run is one interval after open.
    pub lifecycle_sweep: Option<Duration>,
    /// The lifecycle sweep logs `key.expiring` for a key expiring within this long.
    pub notice_expiring: Duration,
    /// The lifecycle sweep logs `key.unused` for a key unused this long.
    pub notice_unused: Duration,
    /// When a `key.anomaly` is raised (spikes, denial bursts, dormant reuse, dead keys
    /// presented, new networks, guessing); [`crate::anomaly::Thresholds::off`] for never.
    pub anomalies: crate::anomaly::Thresholds,
    /// How long usage buckets are kept, per tier ([`crate::usage`]).
    pub usage_retention: crate::usage::UsageRetention,
    /// Whether verify counts usage (on by default; off only to measure what counting costs).
    pub usage_counting: bool,
}

/// A positive duration (`500ms`, `30s`) from a fleet setting's variable.
fn fleet_duration(variable: &'static str, text: String) -> Result<Duration> {
    let ms = crate::clock::parse_duration(text.trim())
        .ok()
        .filter(|&ms| ms > 0)
        .ok_or(InputError::InvalidFleetSetting { variable, value: text })?;
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// A positive duration (`7d`, `10m`) from a lifecycle setting's variable.
fn lifecycle_duration(variable: &'static str, text: String) -> Result<Duration> {
    let ms = crate::clock::parse_duration(text.trim())
        .map_err(|_| InputError::InvalidLifecycleSetting { variable, value: text })?;
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// [`Config::lock_wait`]'s default: long enough for a queue of CLI commands on one store
/// to take turns, short enough that a store held for good (by `credstore serve`) is
/// reported soon.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

impl Config {
    /// System clock, counters flushed every second, 64 MiB segments, no pepper given.
    pub fn new() -> Self {
        Config {
            pepper: None,
            clock: Arc::new(SystemClock),
            flush_interval: Duration::from_secs(1),
            segment_size: DEFAULT_SEGMENT_SIZE,
            require_admin: false,
            master_keys: None,
            use_log: UseLog::Every,
            witness: None,
            fleet: None,
            host: None,
            fleet_max_staleness: Duration::from_secs(30),
            fleet_fail_open: false,
            fleet_lease_ttl: Duration::from_secs(10),
            fleet_passive: false,
            fleet_poll: Duration::from_millis(20),
            fleet_listen: true,
            lock_wait: DEFAULT_LOCK_WAIT,
            verify_prefixes: None,
            lifecycle_sweep: Some(Duration::from_secs(300)),
            notice_expiring: Duration::from_secs(7 * 86_400),
            notice_unused: Duration::from_secs(30 * 86_400),
            anomalies: crate::anomaly::Thresholds::default(),
            usage_retention: crate::usage::UsageRetention::default(),
            usage_counting: true,
        }
    }

    /// [`Config::new`], with the pepper from `CREDSTORE_PEPPER`, the vault's master keys from
    /// `CREDSTORE_MASTER_KEY`, the witness from `CREDSTORE_WITNESS`, the lock wait from
    /// `CREDSTORE_LOCK_WAIT` (a duration, `0` not to wait), the prefixes customer
    /// verification accepts from `CREDSTORE_VERIFY_PREFIXES` (separated by commas), and a
    /// fleet host's staleness bound and fail-open from `CREDSTORE_FLEET_MAX_STALENESS` (a
    /// duration) and `CREDSTORE_FLEET_FAIL_OPEN` (`true`/`false`), its poll interval from
    /// `CREDSTORE_FLEET_POLL` (a duration) and whether it listens from
    /// `CREDSTORE_FLEET_LISTEN` (`true`/`false`), and the lifecycle sweep's interval and
    /// notice periods from `CREDSTORE_LIFECYCLE_SWEEP` (a duration, or `off`),
    /// `CREDSTORE_NOTICE_EXPIRING` and `CREDSTORE_NOTICE_UNUSED` (durations) when they are
    /// set.
    ///
    /// # Errors
    /// [`InputError::InvalidPepper`] when the variable is set but not 64 hex characters;
    /// [`InputError::InvalidLockWait`].
    pub fn from_env() -> Result<Self> {
        let mut config = Config::new();
        if let Ok(hex) = std::env::var("CREDSTORE_PEPPER") {
            config.pepper = Some(Pepper::from_hex(&hex)?);
        }
        if let Ok(text) = std::env::var("CREDSTORE_MASTER_KEY") {
            config.master_keys = Some(parse_master_keys(&text)?);
        }
        if let Some(path) = std::env::var_os("CREDSTORE_WITNESS") {
            config.witness = Some(PathBuf::from(path));
        }
        if let Ok(text) = std::env::var("CREDSTORE_LOCK_WAIT") {
            config.lock_wait = parse_lock_wait(&text)?;
        }
        if let Ok(text) = std::env::var("CREDSTORE_FLEET_MAX_STALENESS") {
            config.fleet_max_staleness = fleet_duration("CREDSTORE_FLEET_MAX_STALENESS", text)?;
        }
        if let Ok(text) = std::env::var("CREDSTORE_FLEET_LEASE_TTL") {
            config.fleet_lease_ttl = fleet_duration("CREDSTORE_FLEET_LEASE_TTL", text)?;
        }
        if let Ok(text) = std::env::var("CREDSTORE_FLEET_FAIL_OPEN") {
            config.fleet_fail_open = parse_switch("CREDSTORE_FLEET_FAIL_OPEN", text)?;
        }
        if let Ok(text) = std::env::var("CREDSTORE_FLEET_POLL") {
            let ms = crate::clock::parse_duration(text.trim()).map_err(|_| InputError::InvalidFleetSetting {
                variable: "CREDSTORE_FLEET_POLL",
                value: text.clone(),
            })?;
            config.fleet_poll = Duration::from_millis(ms.unsigned_abs());
        }
        if let Ok(text) = std::env::var("CREDSTORE_FLEET_LISTEN") {
            config.fleet_listen = parse_switch("CREDSTORE_FLEET_LISTEN", text)?;
        }
        if let Ok(text) = std::env::var("CREDSTORE_LIFECYCLE_SWEEP") {
            config.lifecycle_sweep = match text.trim() {
                "off" => None,
                _ => Some(lifecycle_duration("CREDSTORE_LIFECYCLE_SWEEP", text)?),
            };
        }
        if let Ok(text) = std::env::var("CREDSTORE_NOTICE_EXPIRING") {
            config.notice_expiring = lifecycle_duration("CREDSTORE_NOTICE_EXPIRING", text)?;
        }
        if let Ok(text) = std::env::var("CREDSTORE_NOTICE_UNUSED") {
            config.notice_unused = lifecycle_duration("CREDSTORE_NOTICE_UNUSED", text)?;
        }
        if let Ok(list) = std::env::var("CREDSTORE_VERIFY_PREFIXES") {
            config.verify_prefixes = Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        Ok(config)
    }

    /// Makes the store a host of the fleet at `url` ([`Config::fleet`]).
    pub fn fleet(mut self, url: impl Into<String>, host: impl Into<String>) -> Self {
        self.fleet = Some(url.into());
        self.host = Some(host.into());
        self
    }

    /// How long a fleet host cut off from its fleet keeps verifying from its replica
    /// (`max`), and whether it then keeps on anyway (`fail_open`) instead of refusing.
    pub fn fleet_staleness(mut self, max: Duration, fail_open: bool) -> Self {
        self.fleet_max_staleness = max;
        self.fleet_fail_open = fail_open;
        self
    }

    /// How often a fleet host reads the fleet's head ([`Config::fleet_poll`]) and whether
    /// it listens for announcements ([`Config::fleet_listen`]).
    pub fn fleet_fan_out(mut self, poll: Duration, listen: bool) -> Self {
        self.fleet_poll = poll;
        self.fleet_listen = listen;
        self
    }

    /// This host's name in its fleet.
    #[cfg(feature = "fleet")]
    pub(crate) fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            let name = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
            format!("{name}-{}", std::process::id())
        })
    }

    /// Keeps a copy of every head checkpoint in `path`, outside the data directory
    /// ([`Config::witness`]).
    pub fn witness(mut self, path: impl Into<PathBuf>) -> Self {
        self.witness = Some(path.into());
        self
    }

    /// Sets the pepper.
    pub fn pepper(mut self, pepper: Pepper) -> Self {
        self.pepper = Some(pepper);
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how often the lifecycle sweep runs in the background (`None`: never).
    pub fn lifecycle_sweep(mut self, every: Option<Duration>) -> Self {
        self.lifecycle_sweep = every;
        self
    }

    /// Sets the notice periods of the lifecycle sweep: `key.expiring` for keys expiring
    /// within `expiring` (default 7 days), `key.unused` for keys unused for `unused`
    /// (default 30 days).
    pub fn lifecycle_notices(mut self, expiring: Duration, unused: Duration) -> Self {
        self.notice_expiring = expiring;
        self.notice_unused = unused;
        self
    }

    /// Sets when anomalies are raised ([`crate::anomaly::Thresholds`]).
    pub fn anomalies(mut self, thresholds: crate::anomaly::Thresholds) -> Self {
        self.anomalies = thresholds;
        self
    }

    /// Sets how long each tier of usage buckets is kept.
    pub fn usage_retention(mut self, retention: crate::usage::UsageRetention) -> Self {
        self.usage_retention = retention;
        self
    }

    /// Turns usage counting on (the default) or off.
    pub fn usage_counting(mut self, on: bool) -> Self {
        self.usage_counting = on;
        self
    }

    /// Sets the counter flush interval.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Requires an admin key for sensitive operations ([`super::Store::create_as`]).
    pub fn require_admin(mut self, on: bool) -> Self {
        self.require_admin = on;
        self
    }

    /// Sets how verification outcomes are recorded.
    pub fn use_log(mut self, mode: UseLog) -> Self {
        self.use_log = mode;
        self
    }

    /// Sets the vault's master keys.
    pub fn master_keys(mut self, ring: crate::vault::MasterKeyring) -> Self {
        self.master_keys = Some(ring);
        self
    }

    /// Sets the segment size.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets how long opening waits for the store's lock ([`Config::lock_wait`]).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Restricts customer verification to keys with these prefixes
    /// ([`Config::verify_prefixes`]).
    pub fn verify_prefixes<S: Into<String>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.verify_prefixes = Some(prefixes.into_iter().map(Into::into).collect());
        self
    }

    /// Checks [`Config::verify_prefixes`]: each a well-formed prefix, none the admin keys'.
    pub(super) fn check_verify_prefixes(&self) -> Result<()> {
        for prefix in self.verify_prefixes.iter().flatten() {
            if prefix == crate::token::ADMIN_PREFIX {
                return Err(InputError::ReservedPrefix {
                    prefix: prefix.clone(),
                    why: "admin keys are never accepted by customer verification",
                }
                .into());
            }
            // The prefix rules are the formats': a format with it must be possible.
            Format::new(prefix, Env::Live, crate::token::DEFAULT_RANDOM_LEN, true)?;
        }
        Ok(())
    }
}

/// A `true`/`false` fleet setting from the environment (`1`/`0` and `yes`/`no` too).
fn parse_switch(variable: &'static str, text: String) -> Result<bool> {
    match text.trim() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(InputError::InvalidFleetSetting { variable, value: text }.into()),
    }
}

/// `CREDSTORE_LOCK_WAIT`: a duration (`10s`, `500ms`), or `0`.
fn parse_lock_wait(text: &str) -> Result<Duration> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    crate::clock::parse_duration(text)
        .map(|ms| Duration::from_millis(ms.unsigned_abs()))
        .map_err(|_| InputError::InvalidLockWait(text.to_string()).into())
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("pepper", &self.pepper)
            .field("flush_interval", &self.flush_interval)
            .field("segment_size", &self.segment_size)
            .field("master_keys", &self.master_keys)
            .field("witness", &self.witness)
            .field("lock_wait", &self.lock_wait)
            .field("verify_prefixes", &self.verify_prefixes)
            .finish_non_exhaustive()
    }
}
