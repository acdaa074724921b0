//! The fleet's schema in PostgreSQL, versioned: each migration is applied once, in order,
//! in one transaction under an advisory lock, and `credstore_schema` records the version.
//! A later credstore adds migrations at the end; it never edits one that has shipped.

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock every migration runs under, so two hosts starting together do not
/// both migrate.
pub(super) const MIGRATION_LOCK: i64 = 0x6372_6564_7374_6f72; // "credstor"

/// The migrations, version 1 first.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];

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

/// Version 2: budget leases, and the number of live hosts each host divides rate limits
/// by (`credstore_hosts.sees`). A budget's fleet-wide account is one row per budget and
/// period (`settled`: spend no host holds any more) plus a lease per host (`granted`: what
/// that host may spend); `settled` plus every lease never passes the cap. Version 1's
/// `credstore_leases` had no period and was never written: it is replaced.
const V2: &str = r#"
drop table credstore_leases;

-- How many live hosts this host divides every rate limit by, as of its last heartbeat,
-- and when it left the fleet (stopped), if it did: its row stays, so the others know how
-- recently it may have admitted requests.
alter table credstore_hosts add column sees int not null default 0;
alter table credstore_hosts add column left_at timestamptz;

create table credstore_budgets (
    budget_id text not null,
    period    bigint not null,
    settled   bigint not null default 0 check (settled >= 0),
    grants    bigint not null default 0,
    primary key (budget_id, period)
);

create table credstore_leases (
    budget_id  text not null,
    period     bigint not null,
    host       text not null,
    granted    bigint not null check (granted >= 0),
    expires_at timestamptz not null,
    primary key (budget_id, period, host)
);
create index credstore_leases_host on credstore_leases (host);

-- Leases up to `want` (at least `need`) of budget `b` in period `p` to host `h`, under
-- `cap`; returns what was granted (0 when less than `need` is left) and how much of the
-- budget is settled or leased now (what the fleet counts as used). The budget's row is
-- locked for the call, so leases of one budget are granted one at a time. Expired leases
-- (of hosts that died or lost the database) are settled first, counted as spent: what
-- such a host spent is not known, so the fleet assumes all of it. A grant is at most half
-- of what is left, so chunks shrink as the cap nears and other hosts still find some.
create function credstore_lease(b text, p bigint, h text, cap bigint, need bigint, want bigint, ttl_ms bigint)
returns bigint[] language plpgsql as $$
declare
    reclaimed bigint;
    held bigint;
    left_over bigint;
    amount bigint;
begin
    insert into credstore_budgets (budget_id, period) values (b, p) on conflict do nothing;
    perform 1 from credstore_budgets where budget_id = b and period = p for update;
    with gone as (
        delete from credstore_leases
        where budget_id = b and period = p and expires_at < clock_timestamp()
        returning granted
    )
    select coalesce(sum(granted), 0) into reclaimed from gone;
    update credstore_budgets set settled = settled + reclaimed where budget_id = b and period = p;
    select coalesce(sum(granted), 0) into held from credstore_leases where budget_id = b and period = p;
    select cap - settled - held into left_over from credstore_budgets where budget_id = b and period = p;
    if left_over <= 0 or left_over < need then
        return array[0, cap - left_over];
    end if;
    amount := least(want, greatest(need, left_over / 2), left_over);
    update credstore_budgets set grants = grants + 1 where budget_id = b and period = p;
    insert into credstore_leases (budget_id, period, host, granted, expires_at)
    values (b, p, h, amount, clock_timestamp() + ttl_ms * interval '1 millisecond')
    on conflict (budget_id, period, host) do update
        set granted = credstore_leases.granted + excluded.granted, expires_at = excluded.expires_at;
    return array[amount, cap - left_over + amount];
end
$$;

-- Ends host `h`'s leases of the budgets `bs` in periods `ps`; `unused[i]` of each was not
-- spent and goes back to the budget, the rest is settled.
create function credstore_release(h text, bs text[], ps bigint[], unused bigint[])
returns void language sql as $$
    with ended as (
        delete from credstore_leases l
        using unnest(bs, ps, unused) as u(b, p, n)
        where l.budget_id = u.b and l.period = u.p and l.host = h
        returning l.budget_id, l.period, l.granted - least(greatest(u.n, 0), l.granted) as spent
    )
    update credstore_budgets t set settled = t.settled + ended.spent
    from ended where t.budget_id = ended.budget_id and t.period = ended.period;
$$;

-- Settles every lease host `h` holds, as spent: a host starting again does not know what
-- it spent before it stopped.
create function credstore_settle_host(h text)
returns void language sql as $$
    with ended as (
        delete from credstore_leases where host = h returning budget_id, period, granted
    )
    update credstore_budgets t set settled = t.settled + ended.granted
    from ended where t.budget_id = ended.budget_id and t.period = ended.period;
$$;
"#;

/// Version 3: usage rollups. Each host adds what its keys were used for, once per flush
/// interval, into one row per subject, tier and bucket (one batched upsert a flush): a
/// row holds the fleet's sum. `subject` is `k:KEY_ID`, `o:OWNER`, `p:PROJECT` or `a:`
/// (the whole fleet); `tier` is `m`, `h`, `d` or `M` (minute, hour, day, month);
/// `bucket` its start, unix ms. The denial columns follow the codes' order.
const V3: &str = r#"
create table credstore_usage (
    subject  text not null,
    tier     text not null check (tier in ('m', 'h', 'd', 'M')),
    bucket   bigint not null,
    valid    bigint not null default 0,
    spent    bigint not null default 0,
    malformed bigint not null default 0,
    not_found bigint not null default 0,
    revoked  bigint not null default 0,
    disabled bigint not null default 0,
    expired  bigint not null default 0,
    forbidden bigint not null default 0,
    insufficient_permissions bigint not null default 0,
    rate_limited bigint not null default 0,
    budget_exhausted bigint not null default 0,
    primary key (subject, tier, bucket)
);
-- Pruning past each tier's retention.
create index credstore_usage_age on credstore_usage (tier, bucket);
"#;
