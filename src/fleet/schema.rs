//! The fleet's schema in PostgreSQL, versioned: each migration is applied once, in order,
//! in one transaction under an advisory lock, and `credstore_schema` records the version.
//! A later credstore adds migrations at the end; it never edits one that has shipped.

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock every migration runs under, so two hosts starting together do not
/// both migrate.
pub(super) const MIGRATION_LOCK: i64 = 0x6372_6564_7374_6f72; // "credstor"

/// The migrations, version 1 first.
pub(super) const MIGRATIONS: &[&str] = &[V1];

/// Version 1: the fleet's identity, its log with the head row, the keys' current state,
/// budget leases, and the hosts with their heartbeats.
const V1: &str = r#"
create table credstore_fleet (
    id         int primary key check (id = 1),
    store_id   bytea not null check (length(store_id) = 16),
    created_at timestamptz not null default now()
);

-- The head row: the last record's sequence number and chain hash. Appends move it with a
-- compare-and-set, so the log is gap-free and in commit order.
create table credstore_head (
    id   int primary key check (id = 1),
    seq  bigint not null,
    hash bytea not null check (length(hash) = 32)
);

-- The fleet log: the same records, chained the same way (BLAKE3, computed by the writer
-- and checked by every reader), as every host's local log.
create table credstore_log (
    seq     bigint primary key check (seq > 0),
    hash    bytea not null check (length(hash) = 32),
    payload bytea not null,
    host    text not null,
    at      timestamptz not null default now()
);

-- Each key's current state, as of record `seq` (a convenience for operators; the log is
-- the truth).
create table credstore_keys (
    id     text primary key,
    record bytea not null,
    seq    bigint not null
);

-- Budget chunks leased by hosts.
create table credstore_leases (
    key_id     text not null,
    host       text not null,
    amount     bigint not null check (amount >= 0),
    expires_at timestamptz not null,
    primary key (key_id, host)
);

-- Hosts and their heartbeats: the record each has applied, and when it last said so.
create table credstore_hosts (
    host         text primary key,
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    applied_seq  bigint not null default 0
);

-- Appends records after (prev_seq, prev_hash) in one round trip: moves the head only if
-- it is still there (else returns -1: the caller catches up and tries again), inserts the
-- records, and notifies listeners with the new head's sequence number.
create function credstore_append(prev_seq bigint, prev_hash bytea, hashes bytea[], payloads bytea[], writer text)
returns bigint language plpgsql as $$
declare
    n bigint := coalesce(array_length(payloads, 1), 0);
begin
    if n = 0 or array_length(hashes, 1) is distinct from n then
        raise exception 'credstore_append: % hashes for % payloads', array_length(hashes, 1), n;
    end if;
    update credstore_head set seq = prev_seq + n, hash = hashes[n]
        where id = 1 and seq = prev_seq and hash = prev_hash;
    if not found then
        return -1;
    end if;
    insert into credstore_log (seq, hash, payload, host)
        select prev_seq + i, hashes[i], payloads[i], writer from generate_series(1, n) as i;
    perform pg_notify('credstore_log', (prev_seq + n)::text);
    return prev_seq + n;
end
$$;
"#;
