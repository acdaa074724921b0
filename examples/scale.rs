//! The scale driver of issue 19: a store of N keys (10k, 100k, 1M), and what it costs.
//!
//! ```sh
//! cargo build --release --example scale
//! benches/scale.sh 10000 100000 1000000     # fill, probe under callgrind, report; prints the table
//! ```
//!
//! Subcommands (each on a fixture directory `DIR`, made by `fill`):
//!
//! - `fill DIR N`: a store in `DIR/store` with N keys, each with a rate limit and a monthly
//!   budget (created from many threads: group commit), the keys' secrets in `DIR/keys.txt`
//!   (0600: the fixture's throwaway keys, so that later runs can present them), 1,000
//!   well-formed keys of another store in `DIR/unknown.txt`, and the SQLite baseline
//!   `DIR/sqlite.db`: a table of N rows `(sha256 BLOB PRIMARY KEY, id TEXT)`.
//! - `probe DIR NAME OPS`: runs OPS operations of one kind inside `scale::measured`, for
//!   `valgrind --tool=callgrind --toggle-collect='scale::measured'` (instructions do not move
//!   with the host's load): `floor` (keyed BLAKE3 of the key and a `HashMap` lookup among N
//!   tags), `cached` (a verify of a key in the live map), `unknown` (a well-formed key of no
//!   store), `cold` (a verify of a key not in the live map: the store just opened),
//!   `sqlite` (SHA-256 of the key and an indexed `SELECT`). Prints `ops N`.
//! - `report DIR`: wall times and sizes: the index and log on disk as `fill` left them,
//!   `rebuild`, bytes per cached key in the live map (what the allocator holds before and
//!   after every key is verified once), cold verify latency (p50, p99) from those verifies,
//!   an idle store's CPU over 5 s with every key cached, `clear_cache`, `close` with every
//!   key cached, and the open after a SIGKILL (a child process holding the store open and
//!   busy is killed). One JSON object on stdout. Run it before the probes: the probes'
//!   verifies add use records to the log that `rebuild` would read.
//! - `hold DIR`: (the child `report` kills) opens the store, verifies keys until killed.
//! - `idle DIR`: each thread's share of a core over 5 s of an idle store with every key
//!   cached.
//! - `usage DIR ACTIVE DAYS`: what usage data costs on disk. On a manual clock (use log off,
//!   so the log does not grow), each simulated hour verifies each of the first ACTIVE keys
//!   once and flushes; DAYS days with usage counting off (the control: the counters alone),
//!   then DAYS days with it on. Reports the index's growth in each phase, their
//!   difference per active key per day, and the `usage` tree's own bytes (keys and values,
//!   per tier) read back with sled. One JSON object on stdout.

#![expect(
    unsafe_code,
    reason = "a counting global allocator (`GlobalAlloc` is an unsafe trait): the live map's bytes per key"
)]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark driver has no caller to return an error to: it panics on failure"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use credstore::limits::MAX_BUDGET;
use credstore::{Budget, Code, Config, NewKey, Pepper, Period, RateLimit, Store};
use sha2::{Digest, Sha256};

/// Threads creating keys at once (group commit: the commit thread takes up to 1,024 a batch).
const FILL_THREADS: usize = 64;
/// Well-formed keys of another store, for the unknown-key probe.
const UNKNOWN_KEYS: usize = 1_000;

/// The system allocator, counting the bytes held: what the live map holds per key, without
/// the resident-memory noise of pages the allocator keeps or reuses.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn config() -> Config {
    Config::new().pepper(Pepper::from_bytes([7; 32]))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "fill" => fill(Path::new(arg(1)), arg(2).parse().expect("N keys")),
        "probe" => probe(Path::new(arg(1)), arg(2), arg(3).parse().expect("OPS")),
        "report" => report(Path::new(arg(1))),
        "hold" => hold(Path::new(arg(1))),
        "idle" => idle(Path::new(arg(1))),
        "usage" => usage(
            Path::new(arg(1)),
            arg(2).parse().expect("ACTIVE keys"),
            arg(3).parse().expect("DAYS"),
        ),
        _ => {
            eprintln!("usage: scale fill DIR N | probe DIR NAME OPS | report DIR | hold DIR | usage DIR ACTIVE DAYS");
            std::process::exit(2);
        }
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("store")
}

fn read_lines(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).expect("open fixture file");
    std::io::BufReader::new(file).lines().map(Result::unwrap).collect()
}

fn limited_key(i: usize) -> NewKey {
    NewKey::new(format!("scale {i}"))
        .rate_limit(RateLimit::new("per_second", 1_000_000_000, 1_000).unwrap())
        .budget(Budget::new(MAX_BUDGET, Period::Monthly { anchor_day: 1 }).unwrap())
}

fn fill(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let started = Instant::now();
    let store = Store::init(store_path(dir), config()).unwrap();
    let next = AtomicUsize::new(0);
    let created: Vec<(String, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..FILL_THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        let key = store.create(limited_key(i)).unwrap();
                        mine.push((key.key.expose().to_string(), key.record.id.to_string()));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    store.close().unwrap();
    let fill_secs = started.elapsed().as_secs_f64();

    let mut keys = std::fs::OpenOptions::new();
    keys.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut keys, 0o600);
    let mut keys = std::io::BufWriter::new(keys.open(dir.join("keys.txt")).unwrap());
    for (key, _) in &created {
        writeln!(keys, "{key}").unwrap();
    }
    keys.flush().unwrap();

    // Keys of another store (another pepper): well formed, unknown here.
    let other_dir = dir.join("other");
    let other = Store::init(&other_dir, Config::new().pepper(Pepper::from_bytes([9; 32]))).unwrap();
    let unknown: Vec<String> = (0..UNKNOWN_KEYS)
        .map(|i| {
            other
                .create(NewKey::new(format!("other {i}")))
                .unwrap()
                .key
                .expose()
                .to_string()
        })
        .collect();
    other.close().unwrap();
    std::fs::remove_dir_all(&other_dir).unwrap();
    std::fs::write(dir.join("unknown.txt"), unknown.join("\n") + "\n").unwrap();

    let db_path = dir.join("sqlite.db");
    let _ = std::fs::remove_file(&db_path);
    let mut db = rusqlite::Connection::open(&db_path).unwrap();
    db.execute_batch("CREATE TABLE keys (sha256 BLOB PRIMARY KEY, id TEXT NOT NULL) WITHOUT ROWID;")
        .unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO keys (sha256, id) VALUES (?1, ?2)").unwrap();
        for (key, id) in &created {
            insert.execute((Sha256::digest(key.as_bytes()).as_slice(), id)).unwrap();
        }
    }
    tx.commit().unwrap();
    let path = store_path(dir);
    let filled = serde_json::json!({
        "keys": n,
        "fill_seconds": fill_secs,
        "keys_per_second": n as f64 / fill_secs,
        "index_bytes_per_key": dir_bytes(&path.join("index")) as f64 / n as f64,
        "log_bytes_per_key": dir_bytes(&path.join("log")) as f64 / n as f64,
    });
    std::fs::write(dir.join("fill.json"), filled.to_string()).unwrap();
    println!("{filled}");
}

/// The operations callgrind counts: everything else (opening, reading the fixture,
/// warming) runs outside this function.
#[inline(never)]
fn measured(ops: &mut dyn FnMut()) {
    ops();
}

fn probe(dir: &Path, name: &str, ops: usize) {
    let keys = read_lines(&dir.join("keys.txt"));
    let n = keys.len();
    assert!(ops <= n, "{ops} operations over {n} keys");
    match name {
        "floor" => {
            let pepper = [7u8; 32];
            let map: HashMap<[u8; 32], u64> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (*blake3::keyed_hash(&pepper, k.as_bytes()).as_bytes(), i as u64))
                .collect();
            let mut found = 0;
            measured(&mut || {
                for key in &keys[..ops] {
                    let tag = blake3::keyed_hash(&pepper, black_box(key).as_bytes());
                    found += usize::from(map.contains_key(tag.as_bytes()));
                }
            });
            assert_eq!(found, ops);
        }
        "cached" | "cold" | "unknown" => {
            let store = Store::open(store_path(dir), config()).unwrap();
            let expected = if name == "unknown" { Code::NotFound } else { Code::Valid };
            let presented = if name == "unknown" {
                let unknown = read_lines(&dir.join("unknown.txt"));
                unknown.into_iter().cycle().take(ops).collect()
            } else {
                keys[..ops].to_vec()
            };
            if name == "cached" {
                for key in &presented {
                    assert_eq!(store.verify(key).unwrap().code, Code::Valid);
                }
            } else if let Some(other) = keys.get(ops..).and_then(<[String]>::last) {
                // A key outside those presented, verified once before the count: the
                // process's one-time costs (the clock's calibration against the monotonic
                // clock, about 11 M instructions) are not a cold verify's.
                assert_eq!(store.verify(other).unwrap().code, Code::Valid);
            }
            let mut right = 0;
            measured(&mut || {
                for key in &presented {
                    right += usize::from(store.verify(black_box(key)).unwrap().code == expected);
                }
            });
            assert_eq!(right, ops, "{name}: every verify answered {expected:?}");
            store.close().unwrap();
        }
        "sqlite" => {
            let db = rusqlite::Connection::open(dir.join("sqlite.db")).unwrap();
            let mut select = db.prepare("SELECT id FROM keys WHERE sha256 = ?1").unwrap();
            let mut found = 0;
            measured(&mut || {
                for key in &keys[..ops] {
                    let hash = Sha256::digest(black_box(key).as_bytes());
                    let id: Option<String> = select.query_row([hash.as_slice()], |row| row.get(0)).ok();
                    found += usize::from(id.is_some());
                }
            });
            assert_eq!(found, ops);
        }
        other => panic!("unknown probe {other}: floor, cached, unknown, cold or sqlite"),
    }
    println!("ops {ops}");
}

/// Bytes this process holds from the allocator.
fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

/// CPU time (user + system) of this process, seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn report(dir: &Path) {
    let keys = read_lines(&dir.join("keys.txt"));
    let n = keys.len();
    let path = store_path(dir);
    let filled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fill.json")).unwrap()).unwrap();

    let started = Instant::now();
    Store::rebuild(&path, config()).unwrap();
    let rebuild_secs = started.elapsed().as_secs_f64();

    // The live map: bytes held before and after every key is verified once (each a miss).
    let started = Instant::now();
    let store = Store::open(&path, config()).unwrap();
    let open_secs = started.elapsed().as_secs_f64();
    let mut cold = Vec::with_capacity(n);
    let before = held();
    for key in &keys {
        let t = Instant::now();
        let code = store.verify(key).unwrap().code;
        cold.push(t.elapsed());
        assert_eq!(code, Code::Valid);
    }
    // `cold` was allocated before: what grew is the store's.
    let live_map_bytes_per_key = (held() - before) as f64 / n as f64;
    cold.sort();

    // An idle store with every key cached: what its background threads spend once the
    // flush of the warming's counters is done (3 s to settle, then 5 s measured).
    std::thread::sleep(Duration::from_secs(3));
    let cpu_before = cpu_secs();
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu_share = (cpu_secs() - cpu_before) / 5.0;

    let started = Instant::now();
    store.clear_cache().unwrap();
    let clear_cache_secs = started.elapsed().as_secs_f64();
    for key in &keys {
        store.verify(key).unwrap();
    }
    let started = Instant::now();
    store.close().unwrap();
    let close_secs = started.elapsed().as_secs_f64();

    // A crash: a child holds the store open, busy, and is killed.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("hold")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    let store = Store::open(&path, config()).unwrap();
    let open_after_kill_secs = started.elapsed().as_secs_f64();
    store.close().unwrap();

    println!(
        "{}",
        serde_json::json!({
            "keys": n,
            "index_bytes_per_key": filled["index_bytes_per_key"],
            "log_bytes_per_key": filled["log_bytes_per_key"],
            "live_map_bytes_per_key": live_map_bytes_per_key,
            "open_seconds": open_secs,
            "cold_verify_p50_us": percentile(&cold, 0.5),
            "cold_verify_p99_us": percentile(&cold, 0.99),
            "idle_cpu_share": idle_cpu_share,
            "clear_cache_seconds": clear_cache_secs,
            "close_seconds": close_secs,
            "rebuild_seconds": rebuild_secs,
            "open_after_kill_seconds": open_after_kill_secs,
        })
    );
}

/// Each thread's CPU over 5 s of an idle store with every key cached (after 3 s to settle):
/// which background work costs what.
fn idle(dir: &Path) {
    let keys = read_lines(&dir.join("keys.txt"));
    let store = Store::open(store_path(dir), config()).unwrap();
    for key in &keys {
        store.verify(key).unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let threads = || -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
            let Some(close) = stat.rfind(')') else { continue };
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let ticks: f64 = fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
            *out.entry(name.trim().to_string()).or_insert(0.0) += ticks / 100.0;
        }
        out
    };
    let before = threads();
    std::thread::sleep(Duration::from_secs(5));
    let after = threads();
    let mut shares: Vec<(String, f64)> = after
        .iter()
        .map(|(name, secs)| (name.clone(), (secs - before.get(name).copied().unwrap_or(0.0)) / 5.0))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("{}", serde_json::json!(shares));
    store.close().unwrap();
}

fn hold(dir: &Path) {
    let keys = read_lines(&dir.join("keys.txt"));
    let store = Store::open(store_path(dir), config()).unwrap();
    for key in keys.iter().take(10_000) {
        store.verify(key).unwrap();
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        for key in keys.iter().take(100_000) {
            store.verify(key).unwrap();
        }
    }
}

/// `usage DIR ACTIVE DAYS`: see the module's docs.
fn usage(dir: &Path, active: usize, days: i64) {
    let keys = read_lines(&dir.join("keys.txt"));
    let keys = &keys[..active.min(keys.len())];
    let path = store_path(dir);
    let index = path.join("index");
    // 2026-01-01T00:00Z, as a day boundary.
    let clock = std::sync::Arc::new(credstore::ManualClock::new(1_767_225_600_000));
    let phase = |counting: bool| -> (u64, f64) {
        let config = config()
            .clock(clock.clone())
            .use_log(credstore::UseLog::Off)
            .flush_interval(Duration::from_secs(86_400))
            .lifecycle_sweep(None)
            .usage_counting(counting);
        let store = Store::open(&path, config).unwrap();
        let before = dir_bytes(&index);
        let started = Instant::now();
        for _ in 0..days * 24 {
            for key in keys {
                assert_eq!(store.verify(key).unwrap().code, Code::Valid);
            }
            store.flush().unwrap();
            clock.advance(3_600_000);
        }
        store.close().unwrap();
        let grew = dir_bytes(&index).saturating_sub(before);
        (grew, started.elapsed().as_secs_f64())
    };
    let (control, control_secs) = phase(false);
    let (counted, counted_secs) = phase(true);
    // The usage tree's own bytes, per tier (its entries' first byte).
    let db = sled::open(&index).unwrap();
    let tree = db.open_tree("usage").unwrap();
    let mut tiers: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
    for item in tree.iter() {
        let (k, v) = item.unwrap();
        let tier = match k.first() {
            Some(b'm') => "minute",
            Some(b'h') => "hour",
            Some(b'd') => "day",
            _ => "month",
        };
        let kind = if k.get(1) == Some(&b'k') { "key" } else { "rollup" };
        let slot = tiers.entry(format!("{tier}/{kind}")).or_default();
        slot.0 += 1;
        slot.1 += (k.len() + v.len()) as u64;
    }
    let per_key_day = |bytes: u64| bytes as f64 / (keys.len() as f64 * days as f64);
    let out = serde_json::json!({
        "keys": read_lines(&dir.join("keys.txt")).len(),
        "active": keys.len(),
        "days": days,
        "control_index_growth_bytes": control,
        "counting_index_growth_bytes": counted,
        "usage_on_disk_bytes_per_active_key_per_day": per_key_day(counted.saturating_sub(control)),
        "usage_tree_entries_and_bytes_by_tier": tiers
            .iter()
            .map(|(t, (n, b))| (t.clone(), serde_json::json!({"entries": n, "bytes": b, "bytes_per_active_key_per_day": per_key_day(*b)})))
            .collect::<serde_json::Map<_, _>>(),
        "control_seconds": control_secs,
        "counting_seconds": counted_secs,
    });
    println!("{out}");
}
