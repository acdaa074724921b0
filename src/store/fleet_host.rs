//! A fleet host's side of fleet mode: the local store is a replica of the fleet log.
//!
//! - At open, the local log is checked to be a prefix of the fleet's (else a fork: the host
//!   refuses to serve another history) and brought up to the fleet's head, record for
//!   record, before the index replays it.
//! - The commit thread commits every batch to the fleet first ([`FleetLink::append`], a
//!   compare-and-set on the fleet's head) and only then locally; a head that moved means
//!   another host committed first: the thread catches up and plans the batch again.
//! - Between batches the commit thread asks [`FleetLink::poll`] whether the fleet has
//!   records the replica lacks, and applies them (`commit::catch_up`). Two ways to know:
//!   a listener (`LISTEN credstore_log` on a connection of its own, [`Listener`]) that
//!   PostgreSQL tells of every append, read with one atomic load and no round trip; and
//!   a read of the fleet's head by sequence number every `Config::fleet_poll` (20 ms),
//!   every 100 ms while the listener is in effect. The poll is the correct path and alone
//!   suffices (no LISTEN on CockroachDB, a dropped connection, a pooler that swallows
//!   notifications): the listener only makes a change arrive sooner.
//! - A host that cannot reach the fleet for longer than `Config::fleet_max_staleness`
//!   refuses to verify ([`crate::Error::Stale`]: fail closed), unless
//!   `Config::fleet_fail_open`; writes fail at once; it catches up when the fleet answers.

use std::time::{Duration, Instant};

use crate::error::Result;
pub(crate) use crate::fleet::Appended;
use crate::fleet::{Fleet, FleetError, FleetRecord, Listener};
use crate::log::{LogWriter, genesis_hash};

use super::leases::{LeaseRequest, Leases};
use crate::limits::{Share, Shares};

/// The shortest interval between two reads of the fleet's head while a listener is in
/// effect: changes are announced, the poll is the safety net.
const POLL_WHILE_LISTENING: Duration = Duration::from_millis(100);
/// Records fetched per round trip when catching up.
const CATCH_UP_CHUNK: u32 = 1024;

/// A host's connection to its fleet.
pub(crate) struct FleetLink {
    fleet: Fleet,
    host: String,
    /// Announcements of new records; `None` when `Config::fleet_listen` is off.
    listener: Option<Listener>,
    /// The announced sequence number last acted on: each is acted on once.
    chased: u64,
    /// How often the head is read while no listener is in effect (`Config::fleet_poll`).
    poll_every: Duration,
    last_poll: Instant,
    last_heartbeat: Option<Instant>,
    /// When the replica was last known to hold everything the fleet had.
    synced_at: Instant,
    max_staleness: Duration,
    fail_open: bool,
    /// The budget leases this host holds.
    leases: Leases,
    /// Its shares of the rate limits now.
    shares: Shares,
    /// When the last heartbeat that reached the fleet was sent.
    beat_ok: Option<Instant>,
    /// Not counted among the hosts ([`super::Config::fleet_passive`]).
    passive: bool,
}

/// What a poll of the fleet's head found.
pub(crate) enum Poll {
    /// Not time to ask yet.
    NotDue,
    /// The replica holds everything the fleet has.
    UpToDate,
    /// The fleet has records the replica does not.
    Behind,
    /// The fleet did not answer.
    Unreachable,
}

impl FleetLink {
    /// Connects to the fleet at `url` as `host` and checks that it serves `store_id`.
    ///
    /// # Errors
    /// [`FleetError::NotAFleet`], [`FleetError::OtherStore`], connection errors.
    pub fn connect(url: &str, host: String, store_id: [u8; 16], config: &super::Config) -> Result<FleetLink> {
        let fleet = Fleet::connect(url)?;
        let info = fleet.info()?;
        if info.store_id != store_id {
            return Err(FleetError::OtherStore.into());
        }
        // A fleet made by an older build lacks the newer tables (usage rollups, version
        // 3): the first host of this build to open adds them (migrations are idempotent
        // and run under an advisory lock).
        if info.schema_version < crate::fleet::SCHEMA_VERSION {
            fleet.migrate()?;
        }
        // Leases this host held before it stopped: what it spent of them is not known here.
        fleet.settle_host(&host)?;
        let listener = if config.fleet_listen {
            Some(fleet.listen()?)
        } else {
            None
        };
        Ok(FleetLink {
            fleet,
            host,
            listener,
            chased: 0,
            poll_every: config.fleet_poll,
            last_poll: Instant::now(),
            last_heartbeat: None,
            synced_at: Instant::now(),
            max_staleness: config.fleet_max_staleness,
            fail_open: config.fleet_fail_open,
            leases: Leases::new(config.fleet_lease_ttl),
            shares: Shares::all(Share::NOTHING),
            beat_ok: None,
            passive: config.fleet_passive,
        })
    }

    /// Checks that the local log is a prefix of the fleet's and appends the fleet's
    /// records past it, durably.
    ///
    /// # Errors
    /// [`FleetError::Fork`] when the local log has a record the fleet's does not;
    /// [`FleetError::BadChain`]; the log's and PostgreSQL's errors.
    pub fn sync_log(&self, log: &mut LogWriter, store_id: [u8; 16]) -> Result<()> {
        let (seq, hash) = (log.durable_seq(), log.durable_hash());
        let (fleet_seq, _) = self.fleet.head()?;
        if seq > fleet_seq {
            return Err(FleetError::Fork { seq: fleet_seq + 1 }.into());
        }
        let on_chain = match seq {
            0 => hash == genesis_hash(&store_id),
            _ => self.fleet.hash_at(seq)? == Some(hash),
        };
        if !on_chain {
            return Err(FleetError::Fork { seq }.into());
        }
        loop {
            let records = self.records_after(log)?;
            if records.is_empty() {
                return Ok(());
            }
            for r in &records {
                log.append(&r.payload);
            }
            log.commit()?;
        }
    }

    /// The fleet's records past the local log's durable end (checked against its chain).
    ///
    /// # Errors
    /// [`FleetError::BadChain`] (which, from the local head, is also how a fork shows);
    /// PostgreSQL's errors.
    pub fn records_after(&self, log: &LogWriter) -> Result<Vec<FleetRecord>> {
        Ok(self
            .fleet
            .records_after(log.durable_seq(), log.durable_hash(), CATCH_UP_CHUNK)?)
    }

    /// Commits `payloads` to the fleet after the local log's durable end, in one round
    /// trip. The chain hashes are the ones the local log gives the same records.
    ///
    /// # Errors
    /// PostgreSQL's errors. A moved head is [`Appended::Conflict`].
    pub fn append(&self, log: &LogWriter, payloads: &[Vec<u8>]) -> Result<Appended> {
        Ok(self
            .fleet
            .append(log.durable_seq(), log.durable_hash(), payloads, &self.host)?)
    }

    /// Is the replica, at `local_seq`, behind the fleet? Behind at once, without a round
    /// trip, when the listener heard of a record past it (each announcement is acted on
    /// once); otherwise the fleet's head is read once a poll interval has passed.
    pub fn poll(&mut self, local_seq: u64) -> Poll {
        let mut every = self.poll_every;
        let mut announced = None;
        if let Some(listener) = &self.listener {
            let notified = listener.notified();
            if notified > local_seq && notified > self.chased {
                self.chased = notified;
                return Poll::Behind;
            }
            if listener.is_listening() {
                every = every.max(POLL_WHILE_LISTENING);
                announced = Some(notified);
            }
        }
        if self.last_poll.elapsed() < every {
            return Poll::NotDue;
        }
        self.last_poll = Instant::now();
        match self.fleet.head() {
            Ok((seq, _)) if seq > local_seq => Poll::Behind,
            Ok((seq, _)) => {
                // An announcement past the head was no append's: it must not hide real
                // ones (each is acted on only if higher than the last).
                if let (Some(listener), Some(notified)) = (&self.listener, announced) {
                    listener.correct(notified, seq);
                    self.chased = self.chased.min(seq);
                }
                self.mark_synced();
                Poll::UpToDate
            }
            Err(_) => Poll::Unreachable,
        }
    }

    /// The replica holds everything the fleet had a moment ago.
    pub fn mark_synced(&mut self) {
        self.synced_at = Instant::now();
    }

    /// Whether verifies must be refused: the fleet has not been reached for longer than
    /// the staleness bound, and the host fails closed.
    pub fn stale(&self) -> bool {
        !self.fail_open && self.synced_at.elapsed() > self.max_staleness
    }

    /// How long since the host was last in step with the fleet.
    pub fn synced_ago(&self) -> Duration {
        self.synced_at.elapsed()
    }

    /// About once a second: reads the hosts' list and returns this host's shares of the
    /// rate limits when they changed ([`super::fleet_shares`]), with how long ago another
    /// host was last alive (what it held may have been spent until then); the caller puts
    /// them in force, then calls [`FleetLink::heartbeat`], which tells the fleet it did.
    /// A host that has not sent a heartbeat for half of `HOST_LIVE` takes nothing.
    pub fn refresh_shares(&mut self) -> Option<(Shares, Option<Duration>)> {
        if !self.heartbeat_due() {
            return None;
        }
        let cut_off = self
            .beat_ok
            .is_none_or(|at| at.elapsed() >= super::fleet_shares::HOST_LIVE / 2);
        let (next, others_seen) = match self.fleet.hosts() {
            Ok(hosts) => (
                super::fleet_shares::next(&self.host, &hosts, self.shares),
                super::fleet_shares::others_last_seen(&self.host, &hosts).map(Duration::from_secs_f64),
            ),
            Err(_) if cut_off => (Shares::all(Share::NOTHING), None),
            Err(_) => (self.shares, None),
        };
        (next != self.shares).then(|| {
            self.shares = next;
            (next, others_seen)
        })
    }

    /// Whether a heartbeat round (the hosts' list, then a heartbeat) is due: about once a
    /// second, never for a passive host.
    fn heartbeat_due(&self) -> bool {
        !self.passive
            && self
                .last_heartbeat
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
    }

    /// Tells the fleet this host is alive, has applied `applied_seq` and divides rate limits
    /// by the hosts of its newest view, at most once a second.
    pub fn heartbeat(&mut self, applied_seq: u64) {
        if !self.heartbeat_due() {
            return;
        }
        let sent = Instant::now();
        self.last_heartbeat = Some(sent);
        if self
            .fleet
            .heartbeat(&self.host, applied_seq, self.shares.next.hosts)
            .is_ok()
        {
            self.beat_ok = Some(sent);
        }
    }

    /// Takes this host off the fleet's list: it has stopped (the others' shares grow).
    pub fn leave(&mut self) {
        if self.passive {
            return;
        }
        // If the fleet does not hear it, the host is dropped after `HOST_LIVE` of silence.
        let _ = self.fleet.leave(&self.host);
    }
}

impl FleetLink {
    /// Leases units of a budget for a charge; returns the units granted (0: the budget is
    /// spent fleet-wide).
    ///
    /// # Errors
    /// PostgreSQL's errors (the charge fails: nothing was granted).
    pub fn lease(&mut self, req: &LeaseRequest, now_ns: i64) -> Result<u64> {
        self.leases.acquire(&self.fleet, &self.host, req, now_ns)
    }

    /// Renews leases, returns idle ones, forfeits those that may expire.
    pub fn tend_leases(&mut self) {
        self.leases.tend(&self.fleet, &self.host);
    }

    /// Gives every lease back: the host is stopping.
    pub fn release_leases(&mut self) {
        self.leases.release_all(&self.fleet, &self.host);
    }
}

impl std::fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLink")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}
