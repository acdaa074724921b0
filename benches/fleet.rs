//! Fleet mode against an embedded store, each figure beside its baseline from the same run.
//! One private PostgreSQL cluster (`tests/common/pg.rs`, with `fsync` on unless
//! `FLEET_BENCH_PG_FSYNC=off`) serves every fleet below; a host closes when its part ends.
//!
//! - `fleet_verify/{embedded,fleet_host}`: `Store::verify` of a cached key (one rate limit, a
//!   budget, every use logged) on an embedded store and on a fleet host. Then, printed, the
//!   interleaved probe: `FLEET_VERIFY_ROUNDS` (default 30) rounds of a 200,000-verify batch on
//!   each in turn, so the two sides of the ratio are measured a fraction of a second apart.
//! - `fleet_create/{embedded,one_host,three_hosts}/{threads}`: keys created per second by 1
//!   and 8 threads on an embedded store, on one fleet host, and by 8 threads spread over
//!   three hosts of one fleet (3, 3 and 2 threads).
//! - Revocation propagation, printed (a latency distribution, not a criterion benchmark):
//!   three hosts A, B, C; `FLEET_PROPAGATION_ROUNDS` (default 300) times, a thread verifies
//!   the key on B and C in turn while the main thread revokes it on A; the time from the
//!   start of `revoke` until B, C, and both refuse it, and from the revocation's commit in
//!   PostgreSQL (its `credstore_log.at`, see [`CommitTimes`]) until both refuse it. Three
//!   variants: B and C in this process with the checker spinning (B and C record every use,
//!   so their commit threads write uses to the fleet every few milliseconds), the same with
//!   the checker pacing itself to one verify per host every 100 µs, and B and C as
//!   `credstore --fleet URL serve` processes checked over HTTP (spinning). Between rounds a
//!   random pause of 0-30 ms, so that revocations do not fall in step with the hosts' poll.
//!   Every host listens (the default): this measures the announced path, with the poll
//!   behind it; `FLEET_BENCH_LISTEN=off` measures the poll alone (every 20 ms).
//!
//! Without PostgreSQL it prints why and exits 0. Figures are in `docs/PERFORMANCE.md`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]

#[path = "../tests/common/pg.rs"]
mod pg;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use credstore::limits::MAX_BUDGET;
use credstore::{Budget, Code, Config, Decision, NewKey, Pepper, Period, RateLimit, Store};
use criterion::{Criterion, Throughput};

/// Threads creating keys at once when a part fills a store.
const FILL_THREADS: usize = 8;

fn main() {
    if !pg::PgServer::available() {
        println!("fleet benchmarks skipped: PostgreSQL is not installed (scripts/install-test-deps.sh installs it)");
        return;
    }
    let fsync = std::env::var("FLEET_BENCH_PG_FSYNC").map_or(true, |v| v != "off");
    let Some(server) = pg::PgServer::start_with(fsync) else {
        return;
    };
    println!(
        "PostgreSQL: private cluster on a Unix socket, fsync={}; hosts {}",
        if fsync { "on" } else { "off" },
        if listen() {
            "listen and poll"
        } else {
            "only poll (FLEET_BENCH_LISTEN=off)"
        }
    );
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    verify(&mut c, dir.path(), &url);
    create(&mut c, dir.path(), &url);
    c.final_summary();
    let rounds = env_usize("FLEET_PROPAGATION_ROUNDS", 300);
    if rounds > 0 {
        propagation(dir.path(), &url, rounds, None, false);
        propagation(dir.path(), &url, rounds, Some(Duration::from_micros(100)), false);
        propagation(dir.path(), &url, rounds, None, true);
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn base_config() -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([7; 32]))
        .fleet_fan_out(Duration::from_millis(20), listen())
}

/// Whether fleet hosts listen for announcements (`FLEET_BENCH_LISTEN=off`: they only poll,
/// every 20 ms, as before the listener, or as on an engine without LISTEN).
fn listen() -> bool {
    std::env::var("FLEET_BENCH_LISTEN").map_or(true, |v| v != "off")
}

/// An embedded store at `dir/name`, closed once after `init` and opened again (as
/// `benches/verify.rs` does: a store straight from `init` counts as not closed cleanly).
fn embedded(dir: &Path, name: &str) -> Store {
    let path = dir.join(name);
    Store::init(&path, base_config()).unwrap().close().unwrap();
    Store::open(&path, base_config()).unwrap()
}

/// A fleet host named `name` of the fleet at `url`, its replica at `dir/name`; the same
/// settings as [`embedded`] otherwise.
fn host(dir: &Path, url: &str, name: &str) -> Store {
    let path = dir.join(name);
    let config = base_config().fleet(url, name);
    Store::init(&path, config.clone()).unwrap().close().unwrap();
    Store::open(&path, config).unwrap()
}

/// A key as DESIGN.md's target has it: one rate limit and a budget no run can exhaust.
fn limited_key() -> NewKey {
    NewKey::new("bench")
        .rate_limit(RateLimit::new("per_second", 1_000_000_000, 1_000).unwrap())
        .budget(Budget::new(MAX_BUDGET, Period::Monthly { anchor_day: 1 }).unwrap())
}

fn assert_valid(decision: &Decision) {
    assert_eq!(decision.code, Code::Valid);
    assert_eq!(decision.ratelimits.len(), 1, "one rate limit checked");
    assert!(decision.budget.as_ref().is_some_and(|b| b.charged), "budget charged");
}

fn verify(c: &mut Criterion, dir: &Path, url: &str) {
    let local = embedded(dir, "verify-embedded");
    let fleet = host(dir, url, "verify-host");
    let local_key = local.create(limited_key()).unwrap().key.expose().to_string();
    let fleet_key = fleet.create(limited_key()).unwrap().key.expose().to_string();
    assert_valid(&local.verify(&local_key).unwrap());
    assert_valid(&fleet.verify(&fleet_key).unwrap());

    let mut group = c.benchmark_group("fleet_verify");
    group.bench_function("embedded", |b| b.iter(|| local.verify(black_box(&local_key)).unwrap()));
    group.bench_function("fleet_host", |b| {
        b.iter(|| fleet.verify(black_box(&fleet_key)).unwrap())
    });
    group.finish();

    // The probe: both in turn, batch after batch.
    const BATCH: u32 = 200_000;
    let rounds = env_usize("FLEET_VERIFY_ROUNDS", 30);
    let timed = |store: &Store, key: &str| {
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(store.verify(black_box(key)).unwrap());
        }
        start.elapsed().as_nanos() as f64 / f64::from(BATCH)
    };
    let (mut e, mut f, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other's use writes.
        let (a, b) = if round % 2 == 0 {
            let a = timed(&local, &local_key);
            (a, timed(&fleet, &fleet_key))
        } else {
            let b = timed(&fleet, &fleet_key);
            (timed(&local, &local_key), b)
        };
        e.push(a);
        f.push(b);
        ratios.push(b / a);
    }
    if rounds > 0 {
        println!(
            "\nfleet_verify probe ({rounds} rounds of {BATCH} verifies each, ns per verify):\n  \
             embedded    median {:7.1}  min {:7.1}  max {:7.1}\n  \
             fleet_host  median {:7.1}  min {:7.1}  max {:7.1}\n  \
             fleet_host / embedded: median of per-round ratios {:.3} (min {:.3}, max {:.3}); ratio of medians {:.3}; of mins {:.3}\n",
            median(&e),
            min(&e),
            max(&e),
            median(&f),
            min(&f),
            max(&f),
            median(&ratios),
            min(&ratios),
            max(&ratios),
            median(&f) / median(&e),
            min(&f) / min(&e),
        );
    }
    assert_valid(&local.verify(&local_key).unwrap());
    assert_valid(&fleet.verify(&fleet_key).unwrap());
    local.close().unwrap();
    fleet.close().unwrap();
}

/// `iters` creates shared out among `threads` threads, thread `t` on `stores[t % len]`.
fn create_on(stores: &[Store], threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = &stores[(t as usize) % stores.len()];
            let share = iters / threads + u64::from(t < iters % threads);
            s.spawn(move || {
                for _ in 0..share {
                    black_box(store.create(NewKey::new("bench")).unwrap());
                }
            });
        }
    });
    start.elapsed()
}

fn create(c: &mut Criterion, dir: &Path, url: &str) {
    let mut group = c.benchmark_group("fleet_create");
    // Creates wait on fsync and on PostgreSQL: fewer, longer samples.
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    // (name, threads, hosts): hosts 0 is an embedded store.
    let cases: [(&str, u64, usize); 5] = [
        ("embedded", 1, 0),
        ("embedded", 8, 0),
        ("one_host", 1, 1),
        ("one_host", 8, 1),
        ("three_hosts", 8, 3),
    ];
    for (case, (name, threads, hosts)) in cases.into_iter().enumerate() {
        // Fresh stores for each case, so none measures against another's keys.
        let stores: Vec<Store> = if hosts == 0 {
            vec![embedded(dir, &format!("create-{case}"))]
        } else {
            (0..hosts)
                .map(|h| host(dir, url, &format!("create-{case}-{h}")))
                .collect()
        };
        group.bench_function(format!("{name}/{threads}"), |b| {
            b.iter_custom(|iters| create_on(&stores, threads, iters));
        });
        // The last key, created on the first store, verifies on every one of them.
        let last = stores[0].create(NewKey::new("check")).unwrap();
        for store in &stores {
            eventually(store, last.key.expose(), Code::Valid);
        }
        for store in stores {
            store.close().unwrap();
        }
    }
    group.finish();
}

/// Waits (at most 10 s, a liveness bound) until `key` verifies as `code` on `store`.
fn eventually(store: &Store, key: &str, code: Code) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.verify(key).unwrap().code != code {
        assert!(Instant::now() < deadline, "not {code:?} after 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Revocation propagation: see the module's documentation. `pace`: `None` spins; else the
/// checker waits this long (spinning on the clock, not sleeping) after each pair of verifies.
/// `processes`: B and C are `credstore --fleet URL serve` processes, checked over HTTP
/// (`POST /v1/keys.verify` on a kept-alive connection each); else stores in this process.
fn propagation(dir: &Path, url: &str, rounds: usize, pace: Option<Duration>, processes: bool) {
    let tag = match pace {
        None => "spin".to_string(),
        Some(p) => format!("paced{}us", p.as_micros()),
    } + if processes { "-processes" } else { "" };
    let a_name = format!("prop-{tag}-a");
    let a = host(dir, url, &a_name);
    let commits = CommitTimes::connect(url);
    let checked = |name: &str| {
        if processes {
            Checked::Process(Sidecar::start(dir, url, &format!("prop-{tag}-{name}")))
        } else {
            Checked::Store(host(dir, url, &format!("prop-{tag}-{name}")))
        }
    };
    let (b, c) = (checked("b"), checked("c"));
    // The keys, made on A, each checked valid on B and C (which caches it there).
    let next = AtomicUsize::new(0);
    let mut keys: Vec<(credstore::KeyId, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..FILL_THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < rounds {
                        let k = a.create(NewKey::new("revoked")).unwrap();
                        mine.push((k.record.id.clone(), k.key.expose().to_string()));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    keys.sort();
    for (_, k) in &keys {
        for h in [&b, &c] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while h.code(k) != Code::Valid {
                assert!(Instant::now() < deadline, "not valid after 10 s");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    let mut rng = Rng::seeded();
    // Milliseconds: revoke call, B refuses, C refuses, both refuse.
    let (mut call, mut on_b, mut on_c, mut both) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Milliseconds from the revocation's commit in PostgreSQL until both refuse.
    let mut from_commit = Vec::new();
    for (id, key) in &keys {
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        let running = AtomicBool::new(false);
        let start = std::sync::OnceLock::<Instant>::new();
        let (tb, tc) = std::thread::scope(|s| {
            let checker = s.spawn(|| {
                let (mut tb, mut tc) = (None, None);
                let deadline = Instant::now() + Duration::from_secs(10);
                while tb.is_none() || tc.is_none() {
                    for (store, seen) in [(&b, &mut tb), (&c, &mut tc)] {
                        if seen.is_none() {
                            let code = store.code(key);
                            if code != Code::Valid {
                                assert_eq!(code, Code::Revoked);
                                *seen = Some((Instant::now(), SystemTime::now()));
                            }
                        }
                    }
                    running.store(true, Ordering::Release);
                    assert!(Instant::now() < deadline, "not refused everywhere after 10 s");
                    if let Some(p) = pace {
                        let until = Instant::now() + p;
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                }
                (tb.unwrap(), tc.unwrap())
            });
            while !running.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let t0 = *start.get_or_init(Instant::now);
            a.revoke(id, Some("bench")).unwrap();
            call.push(ms(t0.elapsed()));
            checker.join().unwrap()
        });
        let t0 = *start.get().unwrap();
        let (db, dc) = (ms(tb.0 - t0), ms(tc.0 - t0));
        on_b.push(db);
        on_c.push(dc);
        both.push(db.max(dc));
        let committed = commits.last_of(&a_name);
        let since = |seen: SystemTime| ms(seen.duration_since(committed).unwrap_or_default());
        from_commit.push(since(tb.1).max(since(tc.1)));
    }
    let hosts = if processes {
        "B and C `credstore serve` processes, checked over HTTP"
    } else {
        "A, B and C in this process"
    };
    println!(
        "\nrevocation propagation, checker {tag} ({hosts}; {rounds} revocations on A; ms from the start of `revoke`, last line from its commit):"
    );
    for (name, values) in [
        ("revoke call on A", &mut call),
        ("B refuses", &mut on_b),
        ("C refuses", &mut on_c),
        ("B and C refuse", &mut both),
        ("... from commit", &mut from_commit),
    ] {
        values.sort_by(f64::total_cmp);
        println!(
            "  {name:<18} p50 {:7.2}  p90 {:7.2}  p99 {:7.2}  min {:7.2}  max {:7.2}",
            quantile(values, 0.5),
            quantile(values, 0.9),
            quantile(values, 0.99),
            values[0],
            values[values.len() - 1],
        );
    }
    a.close().unwrap();
    b.close();
    c.close();
}

/// A host the checker asks: a store in this process, or a `credstore serve` process.
enum Checked {
    Store(Store),
    Process(Sidecar),
}

impl Checked {
    fn code(&self, key: &str) -> Code {
        match self {
            Checked::Store(store) => store.verify(key).unwrap().code,
            Checked::Process(sidecar) => sidecar.verify(key),
        }
    }

    fn close(self) {
        match self {
            Checked::Store(store) => store.close().unwrap(),
            Checked::Process(sidecar) => sidecar.stop(),
        }
    }
}

/// `credstore --fleet URL serve` as host `name`, its replica at `dir/name`, on a loopback
/// port; one kept-alive HTTP/1.1 connection to it.
struct Sidecar {
    child: std::process::Child,
    connection: std::sync::Mutex<std::io::BufReader<std::net::TcpStream>>,
}

impl Sidecar {
    fn start(dir: &Path, url: &str, name: &str) -> Sidecar {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_credstore"))
            .args(["--fleet", url, "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join(name))
            .env("CREDSTORE_PEPPER", "07".repeat(32))
            .env("CREDSTORE_HOST", name)
            .env("CREDSTORE_FLEET_LISTEN", listen().to_string())
            .env_remove("CREDSTORE_DATA")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        // The rest is drained, so that the pipe never fills.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = line.trim().strip_prefix("Listening on http://").unwrap().to_string();
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Sidecar {
            child,
            connection: std::sync::Mutex::new(std::io::BufReader::new(stream)),
        }
    }

    fn verify(&self, key: &str) -> Code {
        use std::io::{BufRead, Read, Write};
        let body = serde_json::json!({ "key": key }).to_string();
        let mut conn = self.connection.lock().unwrap();
        write!(
            conn.get_mut(),
            "POST /v1/keys.verify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut answer = vec![0; length];
        conn.read_exact(&mut answer).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        serde_json::from_value(answer["data"]["code"].clone()).unwrap()
    }

    /// SIGTERM: the sidecar closes its store and exits.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").arg(&pid).status().unwrap();
        assert!(
            self.child.wait().unwrap().success(),
            "credstore serve did not stop cleanly"
        );
    }
}

/// When PostgreSQL committed a host's last record, near enough: `credstore_log.at`, which
/// `credstore_append` sets to `now()`, the start of its transaction; the commit follows
/// within the append's own time (its inserts and the WAL fsync), so a delay measured from
/// it is at most that much too long, never too short. PostgreSQL and this process read the
/// same system clock.
struct CommitTimes {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl CommitTimes {
    fn connect(url: &str) -> CommitTimes {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .unwrap();
        // Driven while a query waits in `block_on`.
        runtime.spawn(connection);
        CommitTimes { runtime, client }
    }

    fn last_of(&self, host: &str) -> SystemTime {
        let seconds: f64 = self
            .runtime
            .block_on(self.client.query_one(
                "select extract(epoch from at)::float8 from credstore_log where host = $1 order by seq desc limit 1",
                &[&host],
            ))
            .unwrap()
            .get(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MAX, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}

/// xorshift64*: pauses between rounds need no better.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
