//! The kill loop at the binary level: the CLI and `credstore serve` under load, killed with
//! SIGKILL at random moments, cycle after cycle, against one development store. After every
//! cycle the store must open, every acknowledged create must be listed, every acknowledged
//! revoke must hold, and no acknowledged budget spend may be lost; at the end the log must
//! verify intact and a rebuild from it must give the index the kills left behind.
//!
//! What counts as acknowledged is what a caller could have acted on: a `create --json` whose
//! JSON was printed whole, a `revoke` that exited 0, a `verify --json` whose decision was
//! printed whole (its charge); for the sidecar, an answer read whole with `success: true`.
//! A command killed before that may or may not have landed: the `list --json` after each
//! cycle says which, and from then on it must stay so.
//!
//! `CREDSTORE_KILL_CYCLES` sets the number of cycles (300 by default, about a minute in a
//! debug build), `CREDSTORE_KILL_WINDOW_MS` the window kills land in (150 ms by default;
//! about 25 suits a release build), `CREDSTORE_KILL_SEED` replays a run's random choices
//! (the seed is printed when a run fails).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cli, Sidecar, http};
use serde_json::{Value, json};

/// Cycles when `CREDSTORE_KILL_CYCLES` is not set: sized for CI (about a minute in debug).
const DEFAULT_CYCLES: usize = 300;
/// Every this many cycles, the cycle runs `credstore serve` under HTTP load instead.
const SERVE_EVERY: usize = 10;
/// A kill lands at a random moment in this window after the command starts (after the
/// sidecar says it is listening), unless `CREDSTORE_KILL_WINDOW_MS` says otherwise: a
/// debug build's command takes about 50-100 ms, a release build's 10-20 ms.
const KILL_WINDOW_MS: u64 = 150;
/// Concurrent HTTP clients against the sidecar.
const CLIENTS: usize = 3;
/// Every key the loop issues has this total budget; its chunk (how far the persisted mark
/// runs ahead of spend, the most a crash may over-count) is `CAP / 64`.
const CAP: u64 = 64_000;
const CHUNK: u64 = CAP / 64;
/// Costs charged per verify.
const MAX_COST: u64 = 100;
/// Keys created by a command that is not killed, before the loop starts.
const SEED_KEYS: usize = 4;
/// What `credstore` exits with on a store error (I/O, corruption, locked).
const STORE_ERROR: i32 = 3;

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn acknowledged_work_survives_sigkill_of_the_cli_and_the_sidecar() {
    let cycles: usize = std::env::var("CREDSTORE_KILL_CYCLES")
        .map(|c| c.parse().expect("CREDSTORE_KILL_CYCLES must be a number"))
        .unwrap_or(DEFAULT_CYCLES);
    let window: u64 = std::env::var("CREDSTORE_KILL_WINDOW_MS")
        .map(|w| w.parse().expect("CREDSTORE_KILL_WINDOW_MS must be a number"))
        .unwrap_or(KILL_WINDOW_MS);
    let seed = seed();
    let cycle = Cell::new(0);
    let _note = FailureNote { seed, cycle: &cycle };
    eprintln!("kill_loop: {cycles} cycles, kills within {window} ms, CREDSTORE_KILL_SEED={seed}");
    let started = Instant::now();

    let mut run = Loop::new(seed, window);
    for c in 0..cycles {
        cycle.set(c);
        let changed_keys = if c % SERVE_EVERY == SERVE_EVERY - 1 {
            run.serve_cycle();
            true
        } else {
            run.cli_cycle()
        };
        // A verify changes no key: the `verify --cost 0` that reads its spend back is that
        // cycle's proof that the store opens.
        if changed_keys {
            run.check_listing();
        }
    }
    let loop_time = started.elapsed();
    run.final_checks();

    let s = &run.stats;
    eprintln!(
        "kill_loop: {cycles} cycles in {loop_time:.1?} (+ final checks: {:.1?} in all), seed {seed}\n\
         \x20 CLI commands killed / completed before the kill: create {}/{}, revoke {}/{}, verify {}/{}\n\
         \x20 sidecars killed under load: {} ({} requests answered, {} acknowledged creates, \
         {} revokes, {} verifies)\n\
         \x20 acknowledged: {} creates, {} revokes, {} charges; durable though unacknowledged: \
         {} creates, {} revokes\n\
         \x20 opens that rebuilt the index: {}; torn log tails truncated: {}",
        started.elapsed(),
        s.killed[0],
        s.completed[0],
        s.killed[1],
        s.completed[1],
        s.killed[2],
        s.completed[2],
        s.sidecars,
        s.http_answers,
        s.http_creates,
        s.http_revokes,
        s.http_verifies,
        s.acked_creates,
        s.acked_revokes,
        s.acked_charges,
        s.unacked_creates,
        s.unacked_revokes,
        s.index_rebuilds.len(),
        s.torn_tails.len(),
    );
    for note in s.index_rebuilds.iter().chain(&s.torn_tails) {
        eprintln!("  {note}");
    }
    // The loop must have done what it is for: kills that interrupted work, and acknowledged
    // work of every kind to check.
    if cycles >= 100 {
        for (kind, killed) in ["create", "revoke", "verify"].iter().zip(s.killed) {
            assert!(killed > 0, "no {kind} was ever killed");
        }
        assert!(s.acked_creates > 0 && s.acked_revokes > 0 && s.acked_charges > 0);
        assert!(s.sidecars > 0 && s.http_answers > 0, "the sidecar never answered");
    }
}

/// Prints the seed and the cycle when the test fails, so the run can be replayed.
struct FailureNote<'a> {
    seed: u64,
    cycle: &'a Cell<usize>,
}

impl Drop for FailureNote<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "kill_loop failed at cycle {}: replay with CREDSTORE_KILL_SEED={}",
                self.cycle.get(),
                self.seed
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the loop knows

/// A key as the loop knows it.
#[derive(Debug)]
struct Key {
    /// The secret, when a create was acknowledged; `None` for a create that was not
    /// acknowledged but turned out durable (the listing showed its id).
    secret: Option<String>,
    /// The admin key `init` issued: never revoked, never charged (it has no budget).
    admin: bool,
    /// Revoked: acknowledged, or shown by the store (a revoked key never comes back).
    revoked: bool,
    /// A revoke was sent but not acknowledged: the next listing says whether it landed.
    revoke_in_doubt: bool,
    spend: Spend,
}

/// What the loop knows of a key's budget spend.
#[derive(Debug, Default, Clone, Copy)]
struct Spend {
    /// The most spend an acknowledged charge reported: spend may never fall below it.
    acknowledged: u64,
    /// Spend as last read by a process that then closed the store cleanly.
    seen: u64,
    /// Processes killed (unclean stops) when `seen` was read.
    kills_at_seen: u64,
    /// Costs sent since `seen`, acknowledged or not, and how many charges.
    attempted: u64,
    attempts: u64,
}

impl Spend {
    fn new(kills: u64) -> Spend {
        Spend {
            kills_at_seen: kills,
            ..Spend::default()
        }
    }

    /// The most spend can be, `kills` processes into the run: what was seen, what was
    /// sent since, and a chunk for every unclean stop that found the persisted mark ahead
    /// of spend (the mark is ahead by at most a chunk, and is again only after a charge).
    fn ceiling(&self, kills: u64) -> u64 {
        let crashes = (kills - self.kills_at_seen).min(self.attempts + 1);
        self.seen + self.attempted + CHUNK * crashes
    }

    fn attempt(&mut self, cost: u64) {
        self.attempted += cost;
        self.attempts += 1;
    }
}

/// Counts for the closing report.
#[derive(Default)]
struct Stats {
    /// Per kind (create, revoke, verify): commands killed before they finished, and
    /// commands that finished before the kill landed.
    killed: [usize; 3],
    completed: [usize; 3],
    sidecars: usize,
    http_answers: usize,
    http_creates: usize,
    http_revokes: usize,
    http_verifies: usize,
    acked_creates: usize,
    acked_revokes: usize,
    acked_charges: usize,
    unacked_creates: usize,
    unacked_revokes: usize,
    /// The CLI's notes: why an open rebuilt the index, how much torn tail it truncated.
    index_rebuilds: Vec<String>,
    torn_tails: Vec<String>,
}

struct Loop {
    cli: Cli,
    rng: Rng,
    admin_key: String,
    /// Every key id the store has shown or acknowledged.
    keys: BTreeMap<String, Key>,
    stats: Stats,
    /// Processes killed so far: each may have left spend over-counted by a chunk.
    kills: u64,
    /// Kills land this many ms (at most) after a command starts.
    window_ms: u64,
    /// Names of created keys, so every create differs.
    serial: usize,
}

impl Loop {
    /// A development store made by `credstore init`, with a few budgeted keys.
    fn new(seed: u64, window_ms: u64) -> Loop {
        let cli = Cli::empty();
        let init = cli.ok(&["init"]);
        let admin_key = init
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("csa_"))
            .unwrap_or_else(|| panic!("init printed no admin key: {init:?}"))
            .to_string();
        let mut run = Loop {
            cli,
            rng: Rng(seed),
            admin_key,
            keys: BTreeMap::new(),
            stats: Stats::default(),
            kills: 0,
            window_ms,
            serial: 0,
        };
        let listed = run.cli.json(&["list", "--json"]);
        let admin = listed.as_array().expect("array")[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        run.keys.insert(
            admin,
            Key {
                secret: Some(run.admin_key.clone()),
                admin: true,
                revoked: false,
                revoke_in_doubt: false,
                spend: Spend::new(0),
            },
        );
        for _ in 0..SEED_KEYS {
            let name = run.next_name();
            let doc = run
                .cli
                .json(&create_args(&name).iter().map(String::as_str).collect::<Vec<_>>());
            run.acknowledge_create(&doc);
        }
        run
    }

    fn next_name(&mut self) -> String {
        self.serial += 1;
        format!("k{}", self.serial)
    }

    fn acknowledge_create(&mut self, doc: &Value) {
        let id = doc["id"].as_str().expect("id").to_string();
        let key = doc["key"].as_str().expect("key").to_string();
        let new = Key {
            secret: Some(key),
            admin: false,
            revoked: false,
            revoke_in_doubt: false,
            spend: Spend::new(self.kills),
        };
        assert!(self.keys.insert(id.clone(), new).is_none(), "id {id} issued twice");
        self.stats.acked_creates += 1;
    }

    /// Ids a revoke may target: known active keys, not the admin.
    fn revocable(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| !k.admin && !k.revoked && !k.revoke_in_doubt)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Keys a verify may charge (`revoked`: keys that must stay revoked): known secrets,
    /// budgeted, well under the cap even if every kill over-counted.
    fn verifiable(&self, revoked: bool) -> Vec<(String, String)> {
        self.keys
            .iter()
            .filter(|(_, k)| !k.admin && k.revoked == revoked && !k.revoke_in_doubt)
            .filter(|(_, k)| k.spend.ceiling(self.kills) + MAX_COST < CAP / 2)
            .filter_map(|(id, k)| Some((id.clone(), k.secret.clone()?)))
            .collect()
    }

    /// Counts the notes a process printed on stderr when it opened the store.
    fn note_recovery(&mut self, stderr: &str) {
        for line in stderr.lines() {
            if line.contains("rebuilt from the log") {
                self.stats.index_rebuilds.push(line.to_string());
            } else if line.contains("truncated a torn tail") {
                self.stats.torn_tails.push(line.to_string());
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // A CLI cycle

    /// One CLI command, chosen at random, killed at a random moment. False when it was a
    /// verify, which changes no key.
    fn cli_cycle(&mut self) -> bool {
        // One verify in five is of a revoked key.
        let revoked = self.rng.below(5) == 0;
        let mut targets = self.verifiable(revoked);
        if targets.is_empty() {
            targets = self.verifiable(!revoked);
        }
        let revocable = self.revocable();
        // 40% creates, 25% revokes, 35% verifies, as far as there are keys to use.
        let roll = self.rng.below(100);
        if roll >= 65 && !targets.is_empty() {
            let (id, key) = targets[self.rng.below(targets.len() as u64) as usize].clone();
            self.cli_verify(&id, &key);
            return false;
        }
        if roll >= 40 && !revocable.is_empty() {
            let id = revocable[self.rng.below(revocable.len() as u64) as usize].clone();
            self.cli_revoke(&id);
        } else {
            self.cli_create();
        }
        true
    }

    /// Runs `args`, SIGKILLs it at a random moment in its first `window_ms`, and
    /// returns its output and whether it finished by itself (`kind` indexes the counts).
    fn killed_command(&mut self, args: &[String], kind: usize) -> (Output, bool) {
        let delay = Duration::from_millis(self.rng.below(self.window_ms));
        let mut child = self
            .cli
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn credstore");
        let finished = kill_at(&mut child, delay);
        let out = child.wait_with_output().expect("wait for credstore");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "credstore {args:?} panicked:\n{stdout}\n{stderr}"
        );
        // Also one killed on its way out: a failure is printed before the exit.
        assert!(
            !stderr.contains("error: "),
            "credstore {args:?} failed:\n{stdout}\n{stderr}"
        );
        if finished {
            self.stats.completed[kind] += 1;
            let code = out.status.code();
            assert_ne!(code, Some(STORE_ERROR), "credstore {args:?}: store error\n{stderr}");
            // 0, or 1 for a verify that denied the key: nothing else is right here.
            assert!(
                code == Some(0) || (kind == 2 && code == Some(1)),
                "credstore {args:?} exited {code:?}:\n{stdout}\n{stderr}"
            );
        } else {
            self.stats.killed[kind] += 1;
            self.kills += 1;
        }
        self.note_recovery(&stderr);
        (out, finished)
    }

    fn cli_create(&mut self) {
        let name = self.next_name();
        let (out, _) = self.killed_command(&create_args(&name), 0);
        // Printed whole, the key was issued: whatever happened next (the kill may have
        // landed while the store closed), it must be there.
        if let Ok(doc) = serde_json::from_slice::<Value>(&out.stdout) {
            assert_eq!(doc["name"], name.as_str(), "{doc}");
            self.acknowledge_create(&doc);
        }
    }

    fn cli_revoke(&mut self, id: &str) {
        let args = ["revoke", id, "--yes", "--reason", "kill loop"].map(String::from);
        let (out, finished) = self.killed_command(&args, 1);
        let key = self.keys.get_mut(id).expect("a known key");
        if finished && out.status.success() {
            key.revoked = true;
            self.stats.acked_revokes += 1;
        } else {
            key.revoke_in_doubt = true;
        }
    }

    fn cli_verify(&mut self, id: &str, secret: &str) {
        let cost = self.rng.range(1, MAX_COST);
        let args = ["verify", "--json", "--cost", &cost.to_string(), secret].map(String::from);
        self.keys.get_mut(id).expect("known").spend.attempt(cost);
        let (out, _) = self.killed_command(&args, 2);
        if let Ok(decision) = serde_json::from_slice::<Value>(&out.stdout)
            && self.acknowledge_decision(id, &decision)
        {
            self.keys.get_mut(id).expect("known").revoked = true;
        }
        // Spend as the next process reads it (after a clean or an unclean stop).
        self.check_spend(id, secret);
    }

    /// A decision someone was told: it must agree with what the loop knows. True when it
    /// showed the key revoked, which makes the revoke durable (the log is written before
    /// the live map); the caller records that once it has checked every decision made
    /// at the same time.
    fn acknowledge_decision(&mut self, id: &str, decision: &Value) -> bool {
        let kills = self.kills;
        let key = self.keys.get_mut(id).expect("known");
        let code = decision["code"].as_str().expect("code");
        assert_eq!(decision["key_id"], id, "{decision}");
        match code {
            "VALID" => {
                assert!(!key.revoked, "{id}: revoked, yet verified VALID: {decision}");
                let spent = decision["budget"]["spent"].as_u64().expect("spent");
                assert!(
                    spent <= key.spend.ceiling(kills),
                    "{id}: spend {spent} above what was charged, {:?}",
                    key.spend
                );
                key.spend.acknowledged = key.spend.acknowledged.max(spent);
                self.stats.acked_charges += 1;
                false
            }
            "REVOKED" => {
                assert!(
                    key.revoked || key.revoke_in_doubt,
                    "{id}: REVOKED, yet never revoked: {decision}"
                );
                true
            }
            other => panic!("{id}: unexpected decision {other}: {decision}"),
        }
    }

    /// `verify --cost 0`, not killed: the key's status as known, spend never below what was
    /// acknowledged and never above what was sent.
    fn check_spend(&mut self, id: &str, secret: &str) {
        let run = self.cli.run(&["verify", "--json", "--cost", "0", secret]);
        self.note_recovery(&run.stderr);
        assert!(matches!(run.code, Some(0 | 1)), "verify {id}: {run:?}");
        let decision = run.json();
        let kills = self.kills;
        let key = self.keys.get_mut(id).expect("known");
        match decision["code"].as_str() {
            Some("VALID") => {
                assert!(!key.revoked, "{id}: an acknowledged revoke was lost: {decision}");
                let spent = decision["budget"]["spent"].as_u64().expect("spent");
                let spend = key.spend;
                assert!(
                    spent >= spend.acknowledged,
                    "{id}: acknowledged spend lost: {spent} < {}",
                    spend.acknowledged
                );
                assert!(
                    spent <= spend.ceiling(kills),
                    "{id}: spend {spent} over-counted: {spend:?}, {kills} kills"
                );
                key.spend = Spend {
                    acknowledged: spend.acknowledged,
                    seen: spent,
                    ..Spend::new(kills)
                };
            }
            Some("REVOKED") => {
                assert!(key.revoked || key.revoke_in_doubt, "{id}: revoked by no one");
                key.revoked = true;
            }
            _ => panic!("{id}: {decision}"),
        }
    }

    // -----------------------------------------------------------------------------------
    // A sidecar cycle

    /// `credstore serve` with concurrent clients creating, revoking and verifying, killed
    /// mid-load.
    fn serve_cycle(&mut self) {
        self.stats.sidecars += 1;
        let sidecar = Sidecar::start(&self.cli);
        // Each client revokes its own keys, so no two revoke one key (a 409 is a failure).
        let revocable = self.revocable();
        let mut verifiable = self.verifiable(false);
        verifiable.extend(self.verifiable(true));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let plan = ClientPlan {
                    addr: sidecar.addr,
                    admin: self.admin_key.clone(),
                    revoke: revocable.iter().skip(c).step_by(CLIENTS).cloned().collect(),
                    verify: verifiable.clone(),
                    name: format!("s{}c{c}", self.serial),
                    seed: self.rng.next(),
                };
                let stop = Arc::clone(&stop);
                thread::spawn(move || plan.run(&stop))
            })
            .collect();
        self.serial += 1;
        let stderr = sidecar.kill_after(Duration::from_millis(self.rng.below(self.window_ms)));
        self.kills += 1;
        stop.store(true, Ordering::Relaxed);
        self.note_recovery(&stderr);
        let saw: Vec<ClientSaw> = clients.into_iter().map(|c| c.join().expect("client thread")).collect();
        if let Some(problem) = saw.iter().find_map(|s| s.problem.as_ref()) {
            panic!("the sidecar answered wrongly under load: {problem}\n--- stderr\n{stderr}");
        }
        // What was sent, first: every charge may have landed, every revoke too.
        for s in &saw {
            self.stats.http_answers += s.answers;
            for (id, cost) in &s.charges_sent {
                self.keys.get_mut(id).expect("known").spend.attempt(*cost);
            }
            for id in &s.revokes_sent {
                self.keys.get_mut(id).expect("known").revoke_in_doubt = true;
            }
        }
        // Decisions, against what was known before this cycle: a key revoked in it may
        // have verified VALID before its revoke, in whatever order the clients are read.
        let mut shown_revoked = Vec::new();
        for s in &saw {
            for (id, decision) in &s.verified {
                if self.acknowledge_decision(id, decision) {
                    shown_revoked.push(id.clone());
                }
                self.stats.http_verifies += 1;
            }
        }
        for id in shown_revoked {
            self.keys.get_mut(&id).expect("known").revoked = true;
        }
        for s in saw {
            for doc in s.created {
                self.acknowledge_create(&doc);
                self.stats.http_creates += 1;
            }
            for id in s.revoked {
                let key = self.keys.get_mut(&id).expect("known");
                key.revoked = true;
                key.revoke_in_doubt = false;
                self.stats.acked_revokes += 1;
                self.stats.http_revokes += 1;
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // After every cycle, and at the end

    /// `list --json`, not killed: the store opens, every acknowledged key is there with the
    /// status it must have, and what the store showed before it still shows.
    fn check_listing(&mut self) {
        let run = self.cli.run(&["list", "--json"]);
        self.note_recovery(&run.stderr);
        assert_eq!(run.code, Some(0), "the store did not open after the kill: {run:?}");
        let listed: BTreeMap<String, String> = run
            .json()
            .as_array()
            .expect("array")
            .iter()
            .map(|k| {
                let id = k["id"].as_str().expect("id").to_string();
                (id, k["status"].as_str().expect("status").to_string())
            })
            .collect();
        for (id, key) in &mut self.keys {
            let status = listed
                .get(id)
                .unwrap_or_else(|| panic!("{id} is gone ({key:?})"))
                .as_str();
            let revoked = match status {
                "active" => false,
                "revoked" => true,
                other => panic!("{id}: status {other}"),
            };
            // Acknowledged or shown revoked, it stays revoked; never revoked, it stays
            // active; a revoke in doubt may have landed or not, and from now on it stays so.
            if key.revoked || !key.revoke_in_doubt {
                assert_eq!(revoked, key.revoked, "{id}: status {status}, expected {key:?}");
            }
            if key.revoke_in_doubt && revoked {
                self.stats.unacked_revokes += 1;
            }
            key.revoke_in_doubt = false;
            key.revoked = revoked;
        }
        for (id, status) in listed {
            if self.keys.contains_key(&id) {
                continue;
            }
            // A create that was killed after its record was durable, before it printed.
            assert_eq!(status, "active", "{id}: revoked by no one");
            self.stats.unacked_creates += 1;
            self.keys.insert(
                id,
                Key {
                    secret: None,
                    admin: false,
                    revoked: false,
                    revoke_in_doubt: false,
                    spend: Spend::new(self.kills),
                },
            );
        }
    }

    /// The log verifies, every known key verifies as it must through a sidecar that is
    /// stopped cleanly, and a rebuild from the log gives the same keys.
    fn final_checks(&mut self) {
        let audit = self.cli.ok(&["audit", "verify"]);
        assert!(audit.stdout.contains("log intact"), "{audit:?}");

        let sidecar = Sidecar::start(&self.cli);
        let mut checked = 0;
        for (id, key) in &self.keys {
            let Some(secret) = &key.secret else { continue };
            let reply = http(
                sidecar.addr,
                "POST",
                "/v1/keys.verify",
                None,
                Some(&json!({ "key": secret, "cost": 0 })),
            )
            .expect("verify through the sidecar");
            assert_eq!(reply.status, 200, "{reply:?}");
            let decision = &reply.body["data"];
            if key.admin {
                // An admin key is never a customer key (issue 17, item 14): it still opens
                // the management API.
                assert_eq!(decision["code"], "MALFORMED", "{id}: {decision}");
                let auth = format!("Bearer {secret}");
                let path = format!("/v1/api-keys/{id}");
                let shown = http(sidecar.addr, "GET", &path, Some(&auth), None).expect("show");
                assert_eq!(shown.status, 200, "{shown:?}");
                checked += 1;
                continue;
            }
            assert_eq!(decision["key_id"], id.as_str(), "{decision}");
            let expected = if key.revoked { "REVOKED" } else { "VALID" };
            assert_eq!(decision["code"], expected, "{id}: {decision}");
            if !key.revoked && !key.admin {
                let spent = decision["budget"]["spent"].as_u64().expect("spent");
                assert!(spent >= key.spend.acknowledged, "{id}: spend lost: {decision}");
                assert!(spent <= key.spend.ceiling(self.kills), "{id}: over-counted: {decision}");
            }
            checked += 1;
        }
        let (status, stderr) = sidecar.stop();
        assert!(
            status.success(),
            "the sidecar did not stop cleanly ({status}):\n{stderr}"
        );
        self.note_recovery(&stderr);
        assert!(checked > SEED_KEYS, "only {checked} keys checked");

        let before = self.cli.json(&["list", "--json"]);
        let rebuilt = self.cli.ok(&["rebuild"]);
        assert!(rebuilt.stdout.contains("Rebuilt"), "{rebuilt:?}");
        let after = self.cli.json(&["list", "--json"]);
        assert_eq!(
            before.as_array().map(Vec::len),
            Some(self.keys.len()),
            "the listing and the loop disagree"
        );
        assert_eq!(
            before, after,
            "the index rebuilt from the log differs from the live one"
        );
        let audit = self.cli.ok(&["audit", "verify"]);
        assert!(audit.stdout.contains("log intact"), "{audit:?}");
    }
}

/// `create --json` with a total budget of `CAP`.
fn create_args(name: &str) -> Vec<String> {
    [
        "create",
        "--json",
        "--name",
        name,
        "--budget",
        &CAP.to_string(),
        "--budget-period",
        "total",
    ]
    .map(String::from)
    .to_vec()
}

/// Waits until `child` exits or `delay` has passed, then SIGKILLs it (`Child::kill` sends
/// SIGKILL on unix). True when it exited by itself first.
fn kill_at(child: &mut Child, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            // It may exit between the check and the kill: its status says so.
            let _ = child.kill();
            let status = child.wait().expect("wait");
            return status.code().is_some();
        }
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------------
// The sidecar's clients

/// What one client does against the sidecar.
struct ClientPlan {
    addr: SocketAddr,
    admin: String,
    /// Ids this client revokes, in turn.
    revoke: Vec<String>,
    /// (id, secret) of keys it may charge.
    verify: Vec<(String, String)>,
    name: String,
    seed: u64,
}

/// What one client sent and what it was told.
#[derive(Default)]
struct ClientSaw {
    answers: usize,
    created: Vec<Value>,
    revokes_sent: Vec<String>,
    revoked: Vec<String>,
    charges_sent: Vec<(String, u64)>,
    verified: Vec<(String, Value)>,
    /// An answer no request of this loop should get (a 5xx, a conflict).
    problem: Option<String>,
}

impl ClientPlan {
    /// Sends requests until the sidecar stops answering (it was killed) or `stop`.
    fn run(mut self, stop: &AtomicBool) -> ClientSaw {
        let mut rng = Rng(self.seed);
        let mut saw = ClientSaw::default();
        let bearer = format!("Bearer {}", self.admin);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let roll = rng.below(100);
            let (method, path, auth, body, expect) = if roll < 35 || (roll < 55 && self.revoke.is_empty()) {
                n += 1;
                let body = json!({
                    "name": format!("{}-{n}", self.name),
                    "budget": CAP,
                    "budget_period": "total",
                });
                ("POST", "/v1/api-keys".to_string(), Some(&bearer), Some(body), 201)
            } else if roll < 55 {
                let id = self.revoke.pop().expect("a key to revoke");
                saw.revokes_sent.push(id.clone());
                let path = format!("/v1/api-keys/{id}?reason=kill-loop");
                ("DELETE", path, Some(&bearer), None, 200)
            } else if let Some((id, secret)) = pick(&mut rng, &self.verify) {
                let cost = rng.range(1, MAX_COST);
                saw.charges_sent.push((id.clone(), cost));
                let body = json!({ "key": secret, "cost": cost });
                ("POST", "/v1/keys.verify".to_string(), None, Some(body), 200)
            } else {
                continue;
            };
            let Ok(reply) = http(self.addr, method, &path, auth.map(String::as_str), body.as_ref()) else {
                // Killed: refused, reset or cut short. Nothing more to say.
                break;
            };
            saw.answers += 1;
            if reply.status != expect || reply.body["success"] != true {
                saw.problem = Some(format!("{method} {path}: {reply:?}"));
                break;
            }
            let data = reply.body["data"].clone();
            match (method, path.as_str()) {
                ("POST", "/v1/api-keys") => saw.created.push(data),
                ("DELETE", _) => {
                    let id = saw.revokes_sent.last().expect("sent").clone();
                    assert_eq!(data["status"], "revoked", "{data}");
                    saw.revoked.push(id);
                }
                _ => {
                    let id = data["key_id"].as_str().expect("key_id").to_string();
                    saw.verified.push((id, data));
                }
            }
        }
        saw
    }
}

fn pick<T: Clone>(rng: &mut Rng, from: &[T]) -> Option<T> {
    if from.is_empty() {
        return None;
    }
    Some(from[rng.below(from.len() as u64) as usize].clone())
}

// ---------------------------------------------------------------------------------------
// Randomness

/// splitmix64: enough randomness for moments and choices, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// `CREDSTORE_KILL_SEED`, or the clock.
fn seed() -> u64 {
    if let Ok(s) = std::env::var("CREDSTORE_KILL_SEED") {
        return s.parse().expect("CREDSTORE_KILL_SEED must be a u64");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    now.as_secs() ^ (u64::from(now.subsec_nanos()) << 32) ^ u64::from(std::process::id())
}
