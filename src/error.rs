//! Error types: one enum per family of failure, so a caller can match on what went wrong.
//!
//! [`Error`] is what every public [`crate::Store`] operation returns. Its variants are
//! families: [`Error::Input`] (the caller's input was refused, nothing was written),
//! [`Error::State`] (the request does not fit the key's current state, nothing was written),
//! [`Error::Open`] (the data directory cannot be opened as a store), [`Error::Log`]
//! (the event log is damaged or cannot be written) and [`Error::Io`].
//!
//! No error message ever contains a key, a pepper or a tag, nor repeats a secret-shaped
//! input: an input an error names is shown through [`crate::redact`] (whole when short and
//! harmless, else only its public start), in `Display` and in `Debug` alike. The variants
//! still hold the input as given, for a caller that matches on them.

use std::fmt;
use std::path::PathBuf;

use crate::log::LogError;
use crate::redact;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; nothing was written.
    #[error("invalid input: {0}")]
    Input(#[from] InputError),
    /// The operation does not fit the current state of the key; nothing was written.
    #[error("{0}")]
    State(#[from] StateError),
    /// The data directory could not be opened as a store.
    #[error("{0}")]
    Open(#[from] OpenError),
    /// The event log is damaged or could not be written.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// A full check of the log found a problem; it names the first bad record.
    #[error("log audit: {0}")]
    Audit(#[from] crate::log::AuditError),
    /// The sled index failed, or holds a value this build cannot read.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// A change was refused because the batch it was in could not be made durable; it
    /// was not applied.
    #[error("the change was not committed: {0}")]
    NotCommitted(String),
    /// A fleet host that has not reached its fleet for longer than its staleness bound
    /// refuses to verify (it fails closed): its replica may miss a revocation.
    #[error(
        "this fleet host has not reached the fleet for longer than its staleness bound: it refuses to verify from a replica that may miss a revocation"
    )]
    Stale,
    /// The store has been closed, or its writer thread stopped after an I/O failure.
    #[error("the store is closed")]
    Closed,
    /// The commit thread answered a request with a reply of another kind. An invariant of
    /// the store is broken (a bug); the store is not closed.
    #[error("internal error: the commit thread answered a {request} request with a reply of another kind")]
    UnexpectedReply {
        /// The request that got the wrong reply.
        request: &'static str,
    },
    /// Fleet mode's PostgreSQL refused, or holds no fleet of this store.
    #[cfg(feature = "fleet")]
    #[error("fleet: {0}")]
    Fleet(#[from] crate::fleet::FleetError),
    /// The vault refused: no or wrong master key, a retired key, a damaged blob.
    #[error("vault: {0}")]
    Vault(#[from] crate::vault::VaultError),
    /// An I/O error outside the log.
    #[error("I/O error on {}: {source}", redact::path(.path))]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// True when the caller's request was at fault (bad input, unknown id, wrong state):
    /// nothing was written and retrying the same request fails the same way.
    pub fn is_caller_error(&self) -> bool {
        match self {
            Error::Input(_) | Error::State(_) => true,
            Error::Vault(v) => v.is_caller_error(),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Index(IndexError::Sled(e))
    }
}

/// What went wrong in the sled index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// sled itself failed (I/O, corruption, a collection it could not open).
    #[error(transparent)]
    Sled(#[from] sled::Error),
    /// A stored value is empty: it was never written by credstore.
    #[error("empty value")]
    EmptyValue,
    /// A stored value starts with a format byte this build does not write.
    #[error("unknown value format {0}")]
    UnknownValueFormat(u8),
    /// A stored value does not decode as the type its tree holds.
    #[error("undecodable value")]
    Undecodable(#[source] bincode::error::DecodeError),
    /// A key the commit thread just changed is not in the index: an invariant is broken.
    #[error("key {0} is missing from the index after it was committed")]
    MissingKey(String),
    /// An entry whose MAC does not check: it was written without the pepper.
    #[error("entry {key} of tree {tree} fails its MAC: it was changed without the pepper")]
    Tampered {
        /// The tree.
        tree: &'static str,
        /// The entry's key (text, or hex for binary keys).
        key: String,
    },
    /// Every entry checks, but together they do not add up to the index's seal: an entry
    /// was removed, added or put back to an older value of its own (a replay).
    #[error("the entries do not add up to the index's seal: one was removed, added or replayed")]
    SealMismatch,
    /// The index's record of the last log record it applied does not match the log: it
    /// was made from another history of the store (a copy of a fork).
    #[error("the index was built from another history than this log (at record {0})")]
    OtherHistory(u64),
    /// A batch durable in the log could not be applied to the index, which now lacks it:
    /// reads are refused until the store is reopened (replay then applies it).
    #[error("the index is behind the log ({0}); reopen the store")]
    Behind(String),
    /// A transaction was aborted without a storage error (none of ours aborts).
    #[error("transaction aborted")]
    Aborted,
}

/// A refused input. Each variant names the field that was wrong.
///
/// `Debug` shows what `Display` shows: a derived `Debug` would print the input whole.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The key name is empty.
    #[error("name must not be empty")]
    EmptyName,
    /// The key name is longer than [`crate::record::MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes long, the limit is {max}")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a control character.
    #[error("name must not contain control characters")]
    NameControlChar,
    /// The metadata is larger than the limits allow.
    #[error("metadata too large: {0}")]
    MetadataTooLarge(String),
    /// A project name is not 1 to 64 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid project {}: use 1 to 64 characters of A-Z a-z 0-9 _ . -", redact::quote(.0))]
    InvalidProject(String),
    /// An owner id that is not 1 to 64 characters of `[A-Za-z0-9_.:@-]`, or that has the
    /// shape of a key id (`key_` and 22 digits), which `credits` could not tell apart.
    #[error("invalid owner id {}: use 1 to 64 characters of A-Z a-z 0-9 _ . : @ -, not shaped like a key id", redact::quote(.0))]
    InvalidOwner(String),
    /// An expiry that is not in the future.
    #[error("expiry {0} is not in the future")]
    ExpiryInPast(String),
    /// A duration or time that could not be parsed or is out of range.
    #[error("invalid time or duration {}", redact::quote(.0))]
    InvalidTime(String),
    /// A point in time (`audit --since`, `--until`) that is neither an RFC 3339 time, nor
    /// a date, nor a duration before now.
    #[error(
        "invalid time {}: give an RFC 3339 time (2026-12-02T10:00:00Z), a date (2026-12-02, from midnight UTC) or a duration before now (90m, 1h, 7d)",
        redact::quote(.0)
    )]
    InvalidInstant(String),
    /// An expiry later than [`crate::record::LATEST_EXPIRY`], given as a time or as a
    /// lifetime.
    #[error(
        "expiry later than the latest supported, {}: leave the expiry out for a key that never expires",
        crate::record::LATEST_EXPIRY
    )]
    ExpiryTooLate,
    /// A key prefix that is not 1 to 24 characters of `[A-Za-z0-9_]` ending in `_`.
    #[error("invalid prefix {}: use 1 to 24 characters of A-Z a-z 0-9 _, ending in _", redact::quote(.0))]
    InvalidPrefix(String),
    /// A random part too short to carry 128 bits, or longer than the format allows.
    #[error("random part of {len} characters refused: it must be {min} to {max} base62 characters (at least 128 bits)")]
    InvalidRandomLength {
        /// The requested length.
        len: usize,
        /// The least accepted length.
        min: usize,
        /// The greatest accepted length.
        max: usize,
    },
    /// The prefix is already registered with the other environment.
    #[error("prefix {} is registered for the {registered} environment", redact::quote(.prefix))]
    PrefixEnvironmentConflict {
        /// The prefix.
        prefix: String,
        /// The environment it is registered with.
        registered: crate::token::Env,
    },
    /// A new key's format names none, or several, of the formats registered for its
    /// prefix, and no further format for the prefix was asked for.
    #[error("{}", format_not_registered(.prefix, .registered, *.matching))]
    FormatNotRegistered {
        /// The prefix.
        prefix: String,
        /// The prefix's registered formats, described.
        registered: Vec<String>,
        /// How many of them matched the request (0, or more than 1).
        matching: usize,
    },
    /// A total key length that leaves a random part outside 22 to 64 characters.
    #[error("invalid total length {0}")]
    InvalidTotalLength(String),
    /// `CREDSTORE_LOCK_WAIT` that is neither a duration nor `0`.
    #[error("invalid CREDSTORE_LOCK_WAIT {}: give a duration such as 10s or 500ms, or 0 not to wait", redact::quote(.0))]
    InvalidLockWait(String),
    /// A fleet setting from the environment that does not parse: its variable and value.
    #[error("invalid {variable} {}: give a duration such as 30s or 20ms for the staleness bound and the poll, or true/false for fail-open and listening", redact::quote(.value))]
    InvalidFleetSetting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A pepper that is not 32 bytes written as 64 hex characters.
    #[error("the pepper must be 64 hex characters (32 bytes)")]
    InvalidPepper,
    /// An environment other than `live` or `test`.
    #[error("invalid environment {}: use live or test", redact::quote(.0))]
    InvalidEnv(String),
    /// A rate limit that is not a positive count per positive window, or a bad list.
    #[error("invalid rate limit {0}")]
    InvalidRateLimit(String),
    /// A budget whose cap or period is out of range.
    #[error("invalid budget: {0}")]
    InvalidBudget(String),
    /// A bad plan name.
    #[error("invalid plan {0}")]
    InvalidPlan(String),
    /// A lifecycle setting from the environment that does not parse: its variable and value.
    #[error("invalid {variable} {}: give a duration such as 7d or 10m (CREDSTORE_LIFECYCLE_SWEEP also takes off)", redact::quote(.value))]
    InvalidLifecycleSetting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A bad lifecycle policy (the message says what).
    #[error("invalid lifecycle policy: {0}")]
    InvalidPolicy(String),
    /// A bad leak report body (`POST /v1/leaks`; the message says what, never a token).
    #[error("invalid leak report: {0}")]
    InvalidLeakReport(String),
    /// A key id that is not of the form `key_` plus 22 base62 characters.
    #[error("invalid key id {}: use key_ and 22 base62 characters", redact::quote(.0))]
    InvalidKeyId(String),
    /// A permission that is not `resource:action` (or `*`) of 1 to 64 characters of
    /// `[a-z0-9_.-]`, a `*` standing for a whole segment. The text names the input and
    /// what is wrong.
    #[error("invalid permission {0}")]
    InvalidPermission(String),
    /// A permission query that does not parse or is too large. The text names the
    /// offending token, its byte offset and what is wrong.
    #[error("invalid permission query: {0}")]
    InvalidQuery(String),
    /// A role name that is not 1 to 32 characters of `[a-z0-9_-]`.
    #[error("invalid role {0}")]
    InvalidRole(String),
    /// An IP allowlist entry that is neither an IP address nor a CIDR range.
    #[error("invalid CIDR {0}")]
    InvalidCidr(String),
    /// A referrer pattern that is neither a host name nor `*.` and a host name.
    #[error("invalid referrer pattern {0}")]
    InvalidReferrer(String),
    /// An endpoint allowlist entry that is not `METHOD GLOB`, or has a bad method.
    #[error("invalid endpoint {0}")]
    InvalidEndpoint(String),
    /// An endpoint path glob that does not start with `/` or misuses `*` or `**`.
    #[error("invalid path glob {0}")]
    InvalidGlob(String),
    /// A user id that is not 1 to 128 characters of `[A-Za-z0-9_.@+-]`.
    #[error("invalid user {0}")]
    InvalidUser(String),
    /// A personal token needs a user; a service account has none.
    #[error("{0}")]
    KeyType(String),
    /// A provider secret with no bytes.
    #[error("the secret must not be empty")]
    EmptySecret,
    /// A provider secret longer than [`crate::vault::MAX_SECRET_LEN`] bytes.
    #[error("the secret is {len} bytes long, the limit is {max}")]
    SecretTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A vault secret name that is not 1 to 128 characters of `[A-Za-z0-9_.-]`. The name
    /// itself is not repeated: a secret pasted in the wrong place must not reach a log.
    #[error("invalid secret name ({len} bytes): use 1 to 128 characters of A-Z a-z 0-9 _ . -")]
    InvalidSecretName {
        /// Its length in bytes.
        len: usize,
    },
    /// A webhook's URL, event kinds, id or secret that cannot be used; the message says
    /// which and why (a URL is quoted with secret-shaped tokens scrubbed).
    #[error("invalid webhook {0}")]
    InvalidWebhook(String),
    /// A master key that is not 32 bytes written as 64 hex characters.
    #[error("the master key must be 64 hex characters (32 bytes)")]
    InvalidMasterKey,
    /// A master key version of 0 (versions start at 1).
    #[error("master key versions start at 1")]
    InvalidMasterKeyVersion,
    /// The admin keys' prefix ([`crate::token::ADMIN_PREFIX`]) in a customer format, in
    /// another shape than [`crate::Format::admin`], or among the prefixes customer
    /// verification accepts.
    #[error("prefix {} is reserved for admin keys (csa_, 32 random characters, checksum): {}", redact::quote(.prefix), .why)]
    ReservedPrefix {
        /// The prefix.
        prefix: String,
        /// What was asked of it.
        why: &'static str,
    },
    /// A line of an import or a bulk create or revoke (JSON Lines) was refused; nothing
    /// was written. Never quotes a key or a hash.
    #[error("line {line}: {field}: {why}")]
    BadLine {
        /// The line's number, from 1.
        line: usize,
        /// The field at fault (`line` for the line as a whole).
        field: String,
        /// Why.
        why: String,
    },

    /// A usage query's range is empty, or has too many buckets.
    #[error("invalid usage range: {0}")]
    InvalidUsageRange(String),

    /// A usage query reaches past what its granularity's tier keeps.
    #[error("{by} buckets are kept for {kept} (the oldest starts {oldest}): ask for a coarser --by or a later --since")]
    UsagePastRetention {
        /// The granularity asked for.
        by: &'static str,
        /// How long its buckets are kept.
        kept: String,
        /// The start of the oldest bucket kept.
        oldest: String,
    },

    /// Not a granularity of usage buckets.
    #[error("invalid granularity {}: use minute, hour, day or month", redact::quote(.0))]
    InvalidGranularity(String),
}

/// The request does not fit the key's current state.
///
/// `Debug` shows what `Display` shows: a derived `Debug` would print a name whole.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// No key has this id.
    #[error("no key with id {0}")]
    UnknownKey(String),
    /// The key is revoked: revocation cannot be undone and a revoked key cannot change.
    #[error("key {0} is revoked")]
    Revoked(String),
    /// No plan has this name.
    #[error("no plan named {}", redact::quote(.0))]
    UnknownPlan(String),
    /// The plan still has keys on it.
    #[error("plan {} is still used by {} key(s)", redact::quote(.0), .1)]
    PlanInUse(String, usize),
    /// No role has this name.
    #[error("no role named {}", redact::quote(.0))]
    UnknownRole(String),
    /// The role is built in, or still used by keys or users.
    #[error("role {} cannot be changed or deleted: {}", redact::quote(.0), .1)]
    RoleInUse(String, String),
    /// No secret has this name (or this version).
    #[error("no secret {}", redact::scrub_parts(.0, '/'))]
    UnknownSecret(String),
    /// Secrets are still wrapped under a master key version being retired.
    #[error("{0} secret version(s) are still wrapped under an older master key: run rotate-master first")]
    MasterKeyInUse(usize),
    /// No user has this id.
    #[error("no user {}", redact::quote(.0))]
    UnknownUser(String),
    /// A personal token for a user who has no role in the token's project: it could never
    /// verify. Make the user a member of the project first.
    #[error(
        "user {} is not a member of project {}: give them a role there first (user set --member PROJECT=ROLE)",
        redact::quote(.user),
        redact::quote(.project)
    )]
    NotAMember {
        /// The user.
        user: String,
        /// The token's project.
        project: String,
    },
    /// The operation is sensitive and the store requires an admin key for it.
    #[error("{0} requires an admin key of this store")]
    AdminRequired(&'static str),
    /// The key was rotated already; rotate its successor instead.
    #[error("key {0} was already rotated to {1}")]
    AlreadyRotated(String, String),
    /// Credit for a key that has no budget (of its own or from its plan).
    #[error("key {0} has no budget to credit: give it one (update --budget) or a plan with one")]
    NoBudget(String),
    /// Credit for a key that was rotated: its budget is its successor's now.
    #[error("key {0} was rotated to {1}: its budget is that key's now; credit it instead")]
    CreditRotated(String, String),
    /// The key is already disabled.
    #[error("key {0} is already disabled")]
    AlreadyDisabled(String),
    /// The key is not disabled.
    #[error("key {0} is not disabled")]
    NotDisabled(String),
    /// No webhook has this id (never added, or removed).
    #[error("no webhook {0}")]
    UnknownWebhook(String),
    /// No owner has this id.
    #[error("no owner {}", redact::quote(.0))]
    UnknownOwner(String),
    /// Credit for an owner that has no budget.
    #[error("owner {} has no budget to credit: give it one (owner set --budget)", redact::quote(.0))]
    OwnerNoBudget(String),
    /// An expiry later than the lifecycle policy in force allows.
    #[error(
        "an expiry {asked} is beyond the max lifetime of {max} that the lifecycle policy of {scope} sets: give an earlier one, or none to get the longest"
    )]
    BeyondMaxLifetime {
        /// What was asked (a time, or `none`).
        asked: String,
        /// The max lifetime (`366d`).
        max: String,
        /// The scope whose policy sets it (`project "web"`).
        scope: String,
    },
    /// No lifecycle policy is set for this scope.
    #[error("no lifecycle policy is set for {0}")]
    NoLifecyclePolicy(String),
}

/// Why a data directory could not be opened as a store.
///
/// `Debug` shows what `Display` shows: a derived `Debug` would print a path whole.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory does not hold a credstore store.
    #[error("{} is not a credstore store (no STORE marker); run `credstore init` first", redact::path(.0))]
    NotAStore(PathBuf),
    /// `init` was asked for a directory that already holds a store, or other files.
    #[error("{} already exists and is not empty", redact::path(.0))]
    AlreadyExists(PathBuf),
    /// The log is behind, or another history than, what the witness outside the data
    /// directory saw: the directory was rolled back or replaced. After a deliberate restore
    /// from a backup, `credstore reset-head` accepts the log as it is.
    #[error("{0}; if this data directory was restored from a backup on purpose, run `credstore reset-head`")]
    RolledBack(String),
    /// Another process (or another `Store` in this process) holds the store's lock.
    #[error("the store at {} is locked by another process", redact::path(.0))]
    Locked(PathBuf),
    /// The store was written by an incompatible version of credstore.
    #[error("unsupported store format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// The pepper does not match the one the store was created with.
    #[error("wrong pepper: this store was created with a different pepper")]
    WrongPepper,
    /// No pepper was given and the store keeps none.
    #[error("no pepper: set CREDSTORE_PEPPER (64 hex characters) or pass one in the config")]
    MissingPepper,
    /// The master key given does not match the one the vault registered for its version.
    #[error("wrong master key for version {0}: the vault was written with another key")]
    WrongMasterKey(u32),
    /// The index is inconsistent with the log (e.g. it has applied records the log lacks).
    #[error("index and log disagree: {0}; run `credstore rebuild`")]
    IndexAhead(String),
    /// The marker or pepper file is damaged.
    #[error("damaged store file {}", redact::path(.0))]
    Damaged(PathBuf),
}

/// `Debug` for an error whose fields hold input: the type's name and its `Display`, which
/// shows inputs through [`crate::redact`].
macro_rules! debug_as_display {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($t)).field(&format_args!("{self}")).finish()
            }
        }
    )*};
}

debug_as_display!(InputError, StateError, OpenError);

/// [`InputError::FormatNotRegistered`]'s message.
fn format_not_registered(prefix: &str, registered: &[String], matching: usize) -> String {
    let explicitly =
        "or ask for a further format for the prefix explicitly (--new-format; \"new_format\": true over HTTP)";
    match registered {
        [one] => format!(
            "prefix {} has the format {one}, which the length or checksum asked for does not match: \
             leave them out (or ask for that shape) to issue a key in it, {explicitly}",
            redact::quote(prefix)
        ),
        _ if matching > 1 => format!(
            "prefix {} has {} formats that fit the request: {}; give the length (--length or --total-length) \
             of the one to use, {explicitly}",
            redact::quote(prefix),
            registered.len(),
            registered.join("; ")
        ),
        _ => format!(
            "prefix {} has {} formats, none of the shape asked for: {}; ask for one of them, {explicitly}",
            redact::quote(prefix),
            registered.len(),
            registered.join("; ")
        ),
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
