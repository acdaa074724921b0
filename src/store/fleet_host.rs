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
        if fleet.info()?.store_id != store_id {
            return Err(FleetError::OtherStore.into());
        }
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

    /// Tells the fleet this host is alive and has applied `applied_seq`, at most once a
    /// second.
    pub fn heartbeat_every_second(&mut self, applied_seq: u64) {
        if self
            .last_heartbeat
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_heartbeat = Some(Instant::now());
        // A missed heartbeat is only a stale line in `status`.
        let _ = self.fleet.heartbeat(&self.host, applied_seq);
    }
}

impl std::fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLink")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}
