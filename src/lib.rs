//! credstore: an embedded, persistent store for API credentials.
//!
//! It issues API keys and keeps only keyed hashes of them, verifies a presented key in
//! well under a microsecond, revokes and rotates keys with immediate effect, and writes
//! every change into an append-only, hash-chained event log that is the source of truth
//! (a sled index is rebuilt from it at will).
//!
//! # A short tour
//!
//! ```
//! use credstore::{Code, Config, NewKey, Store};
//!
//! # fn main() -> Result<(), credstore::Error> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! // A development store: the pepper is generated and kept in `pepper.key`.
//! let store = Store::init(dir.path().join("data"), Config::new())?;
//!
//! // Issue a key: the secret is shown once, only its tag is stored.
//! let created = store.create(NewKey::new("CI pipeline").project("acme"))?;
//! let key = created.key.expose().to_string();
//! assert!(key.starts_with("sk_live_"));
//!
//! // Verify it on every request.
//! let decision = store.verify(&key)?;
//! assert_eq!(decision.code, Code::Valid);
//! assert_eq!(decision.key.as_ref().map(|k| k.project.as_str()), Some("acme"));
//!
//! // A typo is rejected by the checksum, before any lookup.
//! let typo = key.replace(&key[10..11], if &key[10..11] == "a" { "b" } else { "a" });
//! assert_eq!(store.verify(&typo)?.code, Code::Malformed);
//!
//! // Revoke it: the very next verify refuses it, in every thread.
//! store.revoke(&created.record.id, Some("leaked in a screenshot"))?;
//! assert_eq!(store.verify(&key)?.code, Code::Revoked);
//!
//! // Every change, and every use, is in the audit log.
//! let kinds: Vec<_> = store
//!     .events(&Default::default())?
//!     .iter()
//!     .map(|(_, e)| e.kind_name())
//!     .collect();
//! // (A use of a key that matched none, like the typo, is counted in a summary.)
//! assert_eq!(kinds, ["format.registered", "key.created", "key.use_summary", "key.used", "key.revoked"]);
//! store.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! Design: `docs/DESIGN.md` (the architecture as built), `docs/FORMAT.md` (bytes on disk),
//! `docs/DURABILITY.md` (what is durable when), `docs/SECURITY.md`, `docs/PERFORMANCE.md`.

// Lints: the `[lints]` table in Cargo.toml, for every target alike.

pub mod anomaly;
pub mod clock;
pub mod dashboard;
pub mod decision;
mod directory;
pub mod error;
pub mod event;
#[cfg(feature = "fleet")]
pub mod fleet;
#[cfg(feature = "http")]
pub mod http;
pub mod import;
mod index;
pub mod leaks;
pub mod lifecycle;
pub mod limits;
pub mod log;
mod mirror;
mod modes;
pub mod name;
pub mod owner;
pub mod policy;
pub mod record;
pub mod redact;
pub mod secret;
mod store;
mod tag_filter;
pub mod token;
pub mod usage;
pub mod vault;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{BudgetState, Code, Decision, LimitName, RateLimitState, RateLimited, RateLimits};
pub use error::{Error, IndexError, InputError, OpenError, Result, StateError};
pub use event::{CreditChange, Event, EventKind, KeyChanges, KeyUse, USE_BATCH_SPAN_MS, UseSummary};
pub use limits::{Budget, Period, Plan, RateLimit};
pub use log::LogError;
pub use owner::{Owner, OwnerUpdate};
pub use record::{Expiry, KeyId, KeyRecord, KeyUpdate, NewKey, Status};
pub use secret::{Pepper, Secret};
pub use store::{
    Attempt, Config, CreatedKey, Credit, DEFAULT_LOCK_WAIT, EventFilter, IMPORT_BATCH, KeyInfo, LatencyHistogram,
    ListFilter, LogCheck, Rotated, SecretInfo, Store, StoreStats, Subscription, UseLog, VerifyRequest, parse_expiry,
    parse_master_keys,
};
pub use token::{Env, Format, FormatLength, FormatRequest, FormatSet, Malformed, Token};
pub use usage::{Granularity, UsageBucket, UsageCounts, UsageQuery, UsageReport, UsageRetention, UsageSubject};
