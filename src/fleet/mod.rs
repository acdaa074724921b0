//! Fleet mode's engine: the fleet's source of truth in PostgreSQL (feature `fleet`).
//!
//! Every host of a fleet keeps its embedded store as a replica; PostgreSQL holds the
//! fleet log, the same records chained the same way as a local log, behind a head row that
//! appends move with a compare-and-set ([`Fleet::append`]): gap-free, in commit order, one
//! round trip. Readers check every record's chain hash ([`Fleet::records_after`]), so
//! a record changed in the database is refused like one changed on disk.
//!
//! This is the engine only: `docs/FLEET.md` says what is built on it and what is not yet.
//!
//! [`Fleet`] is blocking: it owns a small tokio runtime and a connection pool, for the CLI
//! and for a host's own threads. Do not call it from inside another tokio runtime.

mod lease;
mod listen;
mod schema;
mod usage;

pub use lease::{BudgetAccount, Lease, LeaseAsk, Returned};
pub use listen::{CHANNEL, ListenState, Listener};
pub use schema::SCHEMA_VERSION;
pub use usage::UsageRow;

use std::str::FromStr;

use crate::log::frame;
use crate::log::genesis_hash;

/// What the fleet engine can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The fleet URL could not be parsed (the URL itself is not repeated: it may hold a
    /// password).
    #[error("invalid fleet URL: {0}")]
    BadUrl(String),
    /// PostgreSQL refused or the connection failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("no PostgreSQL connection: {0}")]
    Pool(String),
    /// PostgreSQL did not answer within [`ROUND_TRIP_LIMIT`].
    #[error("PostgreSQL did not answer within {} s", ROUND_TRIP_LIMIT.as_secs())]
    Timeout,
    /// The runtime that drives the client could not start.
    #[error("fleet client runtime: {0}")]
    Runtime(String),
    /// The database holds no fleet.
    #[error("the database holds no credstore fleet: run `credstore --fleet URL init`")]
    NotAFleet,
    /// The database holds the fleet of another store.
    #[error("the database holds the fleet of another store")]
    OtherStore,
    /// The schema is newer than this build.
    #[error("the fleet's schema is version {found}, this build knows up to {supported}: upgrade credstore")]
    SchemaTooNew {
        /// The version found.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// This host's log holds records the fleet's does not: it was written apart from the
    /// fleet (a fork). The host refuses to serve rather than serve another history.
    #[error(
        "this host's log has a record {seq} that the fleet's log does not have (a fork): it will not serve another history; move its data directory aside and let it sync from the fleet"
    )]
    Fork {
        /// The first record the fleet does not have.
        seq: u64,
    },
    /// A record of the fleet log does not chain: it was changed in the database.
    #[error("the fleet log does not chain at record {seq}: {reason}")]
    BadChain {
        /// The record.
        seq: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The fleet's identity and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetInfo {
    /// The store the fleet serves.
    pub store_id: [u8; 16],
    /// The schema version.
    pub schema_version: i32,
    /// The last record's sequence number (0: none).
    pub head_seq: u64,
    /// Its chain hash (the genesis hash for an empty log).
    pub head_hash: [u8; 32],
}

/// A record of the fleet log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Its chain hash.
    pub hash: [u8; 32],
    /// The encoded event.
    pub payload: Vec<u8>,
    /// The host that wrote it.
    pub host: String,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The records are committed; the head is now this record, with this hash.
    Committed {
        /// The last record's sequence number.
        seq: u64,
        /// Its chain hash.
        hash: [u8; 32],
    },
    /// The head had moved past the record the writer built on: catch up and try again.
    Conflict,
}

/// A host as the fleet sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// Its name.
    pub host: String,
    /// The last record it has applied.
    pub applied_seq: u64,
    /// Seconds since its last heartbeat.
    pub silent_for_secs: f64,
    /// How many live hosts it divides rate limits by.
    pub sees: u32,
    /// Whether it has left the fleet (stopped cleanly).
    pub left: bool,
}

/// A connection to a fleet's PostgreSQL.
pub struct Fleet {
    runtime: tokio::runtime::Runtime,
    pool: deadpool_postgres::Pool,
    /// For a connection of its own ([`Fleet::listen`]).
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, FleetError>;

/// The longest one call to PostgreSQL (connecting included) may take.
pub const ROUND_TRIP_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Fleet {
    /// Connects to PostgreSQL at `url` (`postgresql://user@host/db`, `?host=/socket/dir`
    /// for a Unix socket). Nothing is read or written yet.
    ///
    /// # Errors
    /// [`FleetError::BadUrl`], [`FleetError::Runtime`].
    pub fn connect(url: &str) -> Result<Fleet> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| FleetError::BadUrl(e.to_string()))?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(8)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| FleetError::Pool(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FleetError::Runtime(e.to_string()))?;
        Ok(Fleet { runtime, pool, config })
    }

    /// Starts listening for the fleet's announcements of new records ([`Listener`]), on
    /// a connection of its own (not the pool's) and a thread of its own. A hint only: it
    /// never replaces reading the head ([`Fleet::head`]).
    ///
    /// # Errors
    /// [`FleetError::Runtime`] when its thread cannot start. Connecting is not waited
    /// for: it happens, and happens again, in the background.
    pub fn listen(&self) -> Result<Listener> {
        Listener::start(self.config.clone())
    }

    /// [`Fleet::init`] for a new store with a random id; on a database that is already a
    /// fleet, its identity is kept and returned.
    ///
    /// # Errors
    /// As [`Fleet::init`].
    pub fn init_new(&self) -> Result<FleetInfo> {
        match self.info() {
            Ok(info) => self.init(info.store_id),
            Err(FleetError::NotAFleet) => {
                let mut store_id = [0u8; 16];
                crate::token::fill_random(&mut store_id);
                self.init(store_id)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates (or migrates forward) the schema and makes the database the fleet of
    /// `store_id`, its log empty. Idempotent for the same store.
    ///
    /// # Errors
    /// [`FleetError::OtherStore`] if it is another store's fleet; PostgreSQL's errors.
    pub fn init(&self, store_id: [u8; 16]) -> Result<FleetInfo> {
        self.migrate()?;
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "insert into credstore_fleet (id, store_id) values (1, $1) on conflict (id) do nothing",
                    &[&store_id.as_slice()],
                )
                .await?;
            client
                .execute(
                    "insert into credstore_head (id, seq, hash) values (1, 0, $1) on conflict (id) do nothing",
                    &[&genesis_hash(&store_id).as_slice()],
                )
                .await?;
            Ok::<_, FleetError>(())
        })?;
        let info = self.info()?;
        if info.store_id != store_id {
            return Err(FleetError::OtherStore);
        }
        Ok(info)
    }

    /// Applies the migrations the database has not had yet; returns the schema version.
    ///
    /// # Errors
    /// [`FleetError::SchemaTooNew`]; PostgreSQL's errors (nothing is half applied: each
    /// migration runs in one transaction).
    pub fn migrate(&self) -> Result<i32> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("select pg_advisory_xact_lock($1)", &[&schema::MIGRATION_LOCK])
                .await?;
            tx.batch_execute("create table if not exists credstore_schema (version int not null)")
                .await?;
            let found: i32 = tx
                .query_opt("select version from credstore_schema", &[])
                .await?
                .map_or(0, |row| row.get(0));
            if found > SCHEMA_VERSION {
                return Err(FleetError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            let start = usize::try_from(found).unwrap_or(0);
            for migration in schema::MIGRATIONS.iter().skip(start) {
                tx.batch_execute(migration).await?;
            }
            tx.execute("delete from credstore_schema", &[]).await?;
            tx.execute("insert into credstore_schema (version) values ($1)", &[&SCHEMA_VERSION])
                .await?;
            tx.commit().await?;
            Ok(SCHEMA_VERSION)
        })
    }

    /// The fleet's identity, schema version and head.
    ///
    /// # Errors
    /// [`FleetError::NotAFleet`]; PostgreSQL's errors.
    pub fn info(&self) -> Result<FleetInfo> {
        self.run(async {
            let client = self.client().await?;
            let exists: bool = client
                .query_one("select to_regclass('credstore_fleet') is not null", &[])
                .await?
                .get(0);
            if !exists {
                return Err(FleetError::NotAFleet);
            }
            let row = client
                .query_opt(
                    "select f.store_id, h.seq, h.hash, (select version from credstore_schema)
                     from credstore_fleet f, credstore_head h where f.id = 1 and h.id = 1",
                    &[],
                )
                .await?
                .ok_or(FleetError::NotAFleet)?;
            Ok(FleetInfo {
                store_id: fixed(row.get::<_, &[u8]>(0)),
                head_seq: seq_of(row.get(1)),
                head_hash: fixed(row.get::<_, &[u8]>(2)),
                schema_version: row.get(3),
            })
        })
    }

    /// Appends `payloads` after record `after` (whose chain hash is `after_hash`), as
    /// `writer`, in one round trip. The chain hashes are computed here, as a local log
    /// computes them.
    ///
    /// # Errors
    /// PostgreSQL's errors. A head that moved is not an error: [`Appended::Conflict`].
    pub fn append(&self, after: u64, after_hash: [u8; 32], payloads: &[Vec<u8>], writer: &str) -> Result<Appended> {
        if payloads.is_empty() {
            return Ok(Appended::Committed {
                seq: after,
                hash: after_hash,
            });
        }
        let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(payloads.len());
        let mut prev = after_hash;
        let mut scratch = Vec::new();
        for (i, payload) in (1u64..).zip(payloads) {
            scratch.clear();
            prev = frame::encode(&mut scratch, after + i, &prev, payload);
            hashes.push(prev.to_vec());
        }
        let last = prev;
        let after_sql = i64::try_from(after).unwrap_or(i64::MAX);
        let committed: i64 = self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "select credstore_append($1, $2, $3, $4, $5)",
                    &[&after_sql, &after_hash.as_slice(), &hashes, &payloads, &writer],
                )
                .await?;
            Ok::<i64, FleetError>(row.get(0))
        })?;
        Ok(match committed {
            -1 => Appended::Conflict,
            seq => Appended::Committed {
                seq: seq_of(seq),
                hash: last,
            },
        })
    }

    /// Up to `limit` records after record `after` (whose chain hash is `after_hash`),
    /// oldest first, each checked against the chain.
    ///
    /// # Errors
    /// [`FleetError::BadChain`] for a record that does not chain (changed, missing, out
    /// of order); PostgreSQL's errors.
    pub fn records_after(&self, after: u64, after_hash: [u8; 32], limit: u32) -> Result<Vec<FleetRecord>> {
        let after_sql = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "select seq, hash, payload, host from credstore_log where seq > $1 order by seq limit $2",
                    &[&after_sql, &i64::from(limit)],
                )
                .await?;
            Ok::<_, FleetError>(rows)
        })?;
        let mut prev = after_hash;
        let mut scratch = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for (expected, row) in (after + 1..).zip(rows) {
            let seq = seq_of(row.get(0));
            if seq != expected {
                return Err(FleetError::BadChain {
                    seq: expected,
                    reason: "a record is missing",
                });
            }
            let payload: Vec<u8> = row.get(2);
            scratch.clear();
            let hash = frame::encode(&mut scratch, seq, &prev, &payload);
            if row.get::<_, &[u8]>(1) != hash.as_slice() {
                return Err(FleetError::BadChain {
                    seq,
                    reason: "its hash is not the chain's",
                });
            }
            out.push(FleetRecord {
                seq,
                hash,
                payload,
                host: row.get(3),
            });
            prev = hash;
        }
        Ok(out)
    }

    /// The head row: the last record's sequence number and chain hash.
    ///
    /// # Errors
    /// [`FleetError::NotAFleet`]; PostgreSQL's errors.
    pub fn head(&self) -> Result<(u64, [u8; 32])> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt("select seq, hash from credstore_head where id = 1", &[])
                .await?
                .ok_or(FleetError::NotAFleet)?;
            Ok((seq_of(row.get(0)), fixed(row.get::<_, &[u8]>(1))))
        })
    }

    /// The chain hash of record `seq` in the fleet log, `None` if it has no such record.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt("select hash from credstore_log where seq = $1", &[&seq])
                .await?;
            Ok(row.map(|r| fixed(r.get::<_, &[u8]>(0))))
        })
    }

    /// Records that `host` is alive, has applied record `applied_seq`, and divides rate
    /// limits by `sees` live hosts.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn heartbeat(&self, host: &str, applied_seq: u64, sees: u32) -> Result<()> {
        let applied = i64::try_from(applied_seq).unwrap_or(i64::MAX);
        let sees = i32::try_from(sees).unwrap_or(i32::MAX);
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "insert into credstore_hosts (host, applied_seq, sees) values ($1, $2, $3)
                     on conflict (host) do update
                     set heartbeat_at = now(), applied_seq = excluded.applied_seq, sees = excluded.sees,
                         left_at = null",
                    &[&host, &applied, &sees],
                )
                .await?;
            Ok(())
        })
    }

    /// Marks `host` as gone from the fleet: it has stopped. Its row stays (its last
    /// heartbeat says how recently it may have admitted requests).
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn leave(&self, host: &str) -> Result<()> {
        self.run(async {
            let client = self.client().await?;
            client
                .execute("update credstore_hosts set left_at = now() where host = $1", &[&host])
                .await?;
            Ok(())
        })
    }

    /// Every host that has sent a heartbeat, by name.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn hosts(&self) -> Result<Vec<HostStatus>> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "select host, applied_seq, extract(epoch from now() - heartbeat_at)::float8, sees,
                            left_at is not null
                     from credstore_hosts order by host",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| HostStatus {
                    host: row.get(0),
                    applied_seq: seq_of(row.get(1)),
                    silent_for_secs: row.get(2),
                    sees: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                    left: row.get(4),
                })
                .collect())
        })
    }

    /// Runs `work` on the client's runtime, giving up after [`ROUND_TRIP_LIMIT`]: a
    /// partitioned database must not hang a host's commit thread.
    fn run<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.runtime
            .block_on(async { tokio::time::timeout(ROUND_TRIP_LIMIT, work).await })
            .unwrap_or(Err(FleetError::Timeout))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => FleetError::Postgres(e),
            other => FleetError::Pool(other.to_string()),
        })
    }
}

/// A sequence number from PostgreSQL's `bigint` (never negative in these tables).
fn seq_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A fixed-size value from a `bytea` whose length the schema checks.
fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    crate::log::frame::to_array(bytes)
}
