//! The CLI works while `credstore serve` runs on the same data directory (issue 16, item
//! 3): it finds the server on `DATA/serve.sock` and the server runs the command, with the
//! same output and the same exit code as without a server (DESIGN.md's CLI contract).
//!
//! A store is copied twice; the same commands run on one copy through a server and on the
//! other with no server, and their stdout, stderr and exit codes are compared: byte for
//! byte for reads and verifies, and for writes with what differs by nature (new keys' ids
//! and random parts, the times of new events) masked.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{Cli, Run, Sidecar, copy_dir};

/// The vault secret the setup stores, and the one the script stores.
const PROVIDER_SECRET: &str = "prov-secret-0f7a1c9d2e";
const PROVIDER_SECRET_2: &str = "prov-secret-2-b81e44aa";
/// A master key for `vault rotate-master` from stdin.
const MASTER_HEX: &str = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5";

/// Runs `credstore --data DATA args` with `stdin`, and with CREDSTORE_LOCK_WAIT=0: a
/// command that tried to open a store the server holds would fail at once with "locked".
fn run(cli: &Cli, args: &[String], stdin: Option<&str>) -> Run {
    run_with(cli, args, stdin, &[])
}

/// [`run`], with more environment.
fn run_with(cli: &Cli, args: &[String], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut child = cli
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("CREDSTORE_LOCK_WAIT", "0")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn credstore");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    Run::from(child.wait_with_output().expect("wait"))
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

/// One command of a script: its arguments, stdin and environment.
struct Step {
    args: Vec<String>,
    stdin: Option<String>,
    env: &'static [(&'static str, &'static str)],
}

fn step(words: &[&str]) -> Step {
    Step {
        args: args(words),
        stdin: None,
        env: &[],
    }
}

fn step_in(words: &[&str], stdin: &str) -> Step {
    Step {
        stdin: Some(stdin.to_string()),
        ..step(words)
    }
}

fn step_env(words: &[&str], env: &'static [(&'static str, &'static str)]) -> Step {
    Step { env, ..step(words) }
}

/// The store both copies start from, and what the script needs to know of it.
struct Setup {
    cli: Cli,
    /// Key name -> (id, key).
    keys: HashMap<&'static str, (String, String)>,
    /// A well-formed key of another store: NOT_FOUND here.
    foreign_key: String,
}

impl Setup {
    fn new() -> Setup {
        let cli = Cli::init();
        cli.ok(&["plan", "set", "gold", "--rate-limit", "100/1m", "--budget", "1000"]);
        cli.ok(&["role", "set", "support", "--permission", "tickets:read"]);
        cli.ok(&["user", "set", "dana", "--member", "default=support"]);
        cli.ok(&[
            "owner",
            "set",
            "acme",
            "--meta",
            "tier=gold",
            "--rate-limit",
            "100/1m",
            "--budget",
            "500",
        ]);
        let mut keys = HashMap::new();
        for (name, extra) in [
            (
                "alpha",
                &["--project", "p1", "--budget", "100", "--meta", "team=core"][..],
            ),
            ("beta", &[]),
            ("gamma", &[]),
            ("delta", &["--plan", "gold"]),
            ("eps", &["--expires-in", "30d"]),
            ("zeta", &[]),
            ("pt", &["--type", "personal", "--user", "dana"]),
            ("owned", &["--owner", "acme"]),
            ("owned2", &["--owner", "acme"]),
        ] {
            let mut words = vec!["create", "--name", name, "--json"];
            words.extend_from_slice(extra);
            let created = cli.json(&words);
            let id = created["id"].as_str().expect("id").to_string();
            let key = created["key"].as_str().expect("key").to_string();
            keys.insert(name, (id, key));
        }
        cli.ok(&["disable", &keys["beta"].0]);
        cli.ok(&["revoke", &keys["gamma"].0, "--yes", "--reason", "leaked"]);
        cli.ok(&["verify", &keys["alpha"].1, "--cost", "5"]);
        let put = cli.run_with_stdin(&["vault", "put", "openai", "--project", "p1"], PROVIDER_SECRET);
        assert_eq!(put.code, Some(0), "{put:?}");
        let other = Cli::init();
        let foreign = other.json(&["create", "--name", "elsewhere", "--json"]);
        let foreign_key = foreign["key"].as_str().expect("key").to_string();
        Setup { cli, keys, foreign_key }
    }

    fn id(&self, name: &str) -> &str {
        &self.keys[name].0
    }

    fn key(&self, name: &str) -> &str {
        &self.keys[name].1
    }

    /// A copy of the store, as it is now.
    fn copy(&self) -> Cli {
        let twin = Cli::empty();
        copy_dir(&self.cli.data, &twin.data);
        twin
    }

    /// Reads of every kind, then verifies (which record uses: last, so that no read sees
    /// the time of one): nothing in their output differs by nature between the copies.
    fn reads(&self) -> Vec<Step> {
        let (a, b, g) = (self.id("alpha"), self.id("beta"), self.id("gamma"));
        let unknown_id = "key_0000000000000000000000";
        vec![
            step(&["list"]),
            step(&["list", "--json"]),
            step(&["list", "--project", "p1"]),
            // The table fits the CLI's width, not the server's.
            step_env(&["list"], &[("COLUMNS", "72")]),
            step_env(&["list"], &[("COLUMNS", "40")]),
            step(&["list", "--status", "revoked", "--json"]),
            step(&["list", "--status", "bogus"]),
            step(&["show", a]),
            step(&["show", a, "--json"]),
            step(&["show", b]),
            step(&["show", g, "--json"]),
            step(&["show", self.id("pt"), "--json"]),
            step(&["show", unknown_id]),
            step(&["show", "not-an-id"]),
            step(&["plan", "list"]),
            step(&["plan", "list", "--json"]),
            step(&["owner", "list"]),
            step(&["owner", "list", "--json"]),
            step(&["owner", "show", "acme"]),
            step(&["owner", "show", "acme", "--json"]),
            step(&["owner", "show", "nobody"]),
            step(&["list", "--owner", "acme", "--json"]),
            step(&["show", self.id("owned"), "--json"]),
            step(&["role", "list"]),
            step(&["role", "list", "--json"]),
            step(&["user", "list"]),
            step(&["user", "list", "--json"]),
            step(&["policy", "show"]),
            step(&["audit"]),
            step(&["audit", "--json"]),
            step(&["audit", "--key", a, "--json"]),
            step(&["audit", "--kind", "key.revoked", "--newest-first"]),
            step(&["audit", "--since", "not-a-time"]),
            step(&["audit", "export"]),
            step(&["audit", "verify"]),
            step(&["vault", "list"]),
            step(&["vault", "list", "--json"]),
            step(&["vault", "get", "openai", "--project", "p1"]),
            step(&["vault", "get", "missing"]),
            step(&["webhook", "list"]),
            step(&["webhook", "list", "--json"]),
            step(&["webhook", "remove", "wh_0123456789abcdef"]),
            step(&["webhook", "add", "ftp://nowhere", "--event", "key.created"]),
            step(&["update", a]),
            step(&["verify", self.key("alpha"), "--json"]),
            step(&["verify", self.key("alpha")]),
            step(&["verify", self.key("alpha"), "--cost", "1000", "--json"]),
            step(&["verify", self.key("alpha"), "--project", "p2", "--json"]),
            step(&["verify", self.key("beta")]),
            step(&["verify", self.key("gamma"), "--json"]),
            step(&["verify", &self.foreign_key, "--json"]),
            step(&["verify", "sk_live_short"]),
            step(&["verify", self.key("zeta"), "--require", "(bad"]),
            step(&["verify", self.key("pt"), "--json"]),
            step_in(&["verify", "-", "--json"], &format!("{}\n", self.key("zeta"))),
            step_in(&["verify", "-"], "not a key\n"),
        ]
    }

    /// Changes of every kind, on keys the setup made (the same ids in both copies). The
    /// audit log is compared apart ([`changes`]): a server records the uses of the keys it
    /// verifies in batches, a CLI command on its own store one by one, so the records'
    /// sequence numbers differ after a verify.
    fn writes(&self) -> Vec<Step> {
        let (a, e) = (self.id("alpha"), self.id("eps"));
        vec![
            // Owned keys show the owner's rate limit, whose reset is a time: compared masked.
            step(&["verify", self.key("owned"), "--json"]),
            step(&["verify", self.key("owned2")]),
            step(&["create", "--name", "new1", "--json"]),
            step(&[
                "create",
                "--name",
                "new2",
                "--env",
                "test",
                "--project",
                "p1",
                "--rate-limit",
                "10/1m",
            ]),
            step(&["create", "--name", "bad", "--expires-in", "soon"]),
            step(&["update", e, "--name", "eps2", "--meta", "a=b", "--json"]),
            step(&["update", e, "--budget", "70"]),
            step(&["disable", e]),
            step(&["enable", e, "--json"]),
            step(&["rotate", e, "--grace", "1h", "--json"]),
            step(&["revoke", a, "--yes", "--reason", "done", "--json"]),
            step(&["revoke", a, "--yes"]),
            step(&["revoke", self.id("delta")]),
            step_in(
                &["revoke", "--key", "-", "--yes", "--json"],
                &format!("{}\n", self.key("zeta")),
            ),
            step_in(&["revoke", "--key", "-", "--yes"], "sk_live_unknown\n"),
            step(&["owner", "set", "beta-co", "--name", "Beta", "--json"]),
            step(&["owner", "set", "acme", "--budget", "900", "--json"]),
            step(&["owner", "set", "bad/id"]),
            step(&["create", "--name", "owned3", "--owner", "beta-co", "--json"]),
            step(&["credits", "add", "acme", "10", "--reason", "goodwill", "--json"]),
            step(&["credits", "set", "beta-co", "10"]),
            step(&["owner", "disable-keys", "acme", "--json"]),
            step(&["owner", "revoke-keys", "acme", "--yes", "--reason", "churned"]),
            step(&["owner", "revoke-keys", "nobody", "--yes"]),
            step(&["plan", "set", "silver", "--budget", "50", "--budget-period", "daily"]),
            step(&["plan", "delete", "silver"]),
            step(&["plan", "delete", "gold"]),
            step(&["role", "set", "auditor", "--permission", "audit:read"]),
            step(&["role", "delete", "auditor"]),
            step(&["role", "delete", "admin"]),
            step(&["user", "set", "eve", "--member", "p1=viewer"]),
            step(&["user", "remove", "eve"]),
            step(&[
                "policy",
                "set",
                "--project",
                "p1",
                "--max-lifetime",
                "30d",
                "--min-grace",
                "1h",
            ]),
            step(&["policy", "set", "--max-lifetime", "0s"]),
            step(&["policy", "show", "--json"]),
            step(&["policy", "clear", "--project", "p1"]),
            step(&["policy", "clear", "--project", "p1"]),
            step_in(&["vault", "put", "anthropic"], "anthropic-secret\n"),
            step_in(
                &["vault", "put", "openai", "--project", "p1", "--json"],
                PROVIDER_SECRET_2,
            ),
            step_in(&["vault", "put", "empty"], ""),
            step(&["vault", "delete", "anthropic"]),
            step_in(&["vault", "rotate-master"], MASTER_HEX),
            step(&["vault", "get", "openai", "--project", "p1"]),
            step(&["list", "--json"]),
            step(&["list", "--status", "revoked"]),
        ]
    }
}

/// Runs `steps` on `served` (through its server) and on `direct` (no server) and checks
/// each pair: the same exit code, and the same stdout and stderr once `mask`ed.
fn compare(served: &Cli, direct: &Cli, steps: &[Step], mask: bool) -> Vec<Run> {
    let (mut ids_s, mut ids_d) = (HashMap::new(), HashMap::new());
    let mut runs = Vec::new();
    for step in steps {
        let through = run_with(served, &step.args, step.stdin.as_deref(), step.env);
        let here = run_with(direct, &step.args, step.stdin.as_deref(), step.env);
        assert!(
            !through.stderr.contains("locked"),
            "{:?} did not go through the server:\n{through:?}",
            step.args
        );
        assert_eq!(
            through.code, here.code,
            "{:?}: exit codes differ\n--- through the server\n{through:?}\n--- without\n{here:?}",
            step.args
        );
        let (out_s, out_d, err_s, err_d) = if mask {
            (
                masked(&through.stdout, &mut ids_s),
                masked(&here.stdout, &mut ids_d),
                masked(&through.stderr, &mut ids_s),
                masked(&here.stderr, &mut ids_d),
            )
        } else {
            (
                through.stdout.clone(),
                here.stdout.clone(),
                through.stderr.clone(),
                here.stderr.clone(),
            )
        };
        assert_eq!(out_s, out_d, "{:?}: stdout differs", step.args);
        assert_eq!(err_s, err_d, "{:?}: stderr differs", step.args);
        runs.push(through);
    }
    runs
}

/// `text` with what differs by nature between two copies masked, keeping every length (the
/// tables' layout): digits of times, the random part of keys (and of their `start`), and
/// key ids, numbered in order of appearance.
fn masked(text: &str, ids: &mut HashMap<String, usize>) -> String {
    let mut out: Vec<char> = text.chars().collect();
    let at = |chars: &[char], i: usize, pattern: &str| {
        pattern.chars().enumerate().all(|(k, p)| {
            chars
                .get(i + k)
                .is_some_and(|&c| if p == 'd' { c.is_ascii_digit() } else { c == p })
        })
    };
    let mut i = 0;
    while i < out.len() {
        // 2026-12-03T13:31:47.481Z or 2026-12-03 13:31:47
        if at(&out, i, "dddd-dd-ddTdd:dd:dd") || at(&out, i, "dddd-dd-dd dd:dd:dd") {
            let mut end = i + 19;
            while end < out.len() && (out[end].is_ascii_digit() || out[end] == '.') {
                end += 1;
            }
            for c in &mut out[i..end] {
                if c.is_ascii_digit() {
                    *c = '0';
                }
            }
            i = end;
            continue;
        }
        let rest: String = out[i..].iter().take(8).collect();
        let prefix = ["sk_live_", "sk_test_", "csa_"]
            .into_iter()
            .find(|p| rest.starts_with(p));
        if let Some(prefix) = prefix {
            let mut end = i + prefix.len();
            while end < out.len() && out[end].is_ascii_alphanumeric() {
                out[end] = '*';
                end += 1;
            }
            i = end;
            continue;
        }
        if at(&out, i, "key_") && out.len() >= i + 26 && out[i + 4..i + 26].iter().all(char::is_ascii_alphanumeric) {
            let id: String = out[i..i + 26].iter().collect();
            let n = ids.len();
            let n = *ids.entry(id).or_insert(n);
            let number: Vec<char> = format!("{n:022}").chars().collect();
            out[i + 4..i + 26].copy_from_slice(&number);
            i += 26;
            continue;
        }
        i += 1;
    }
    out.into_iter().collect()
}

#[test]
fn every_command_answers_through_the_server_as_it_does_without_one() {
    let setup = Setup::new();
    let (served, direct) = (setup.copy(), setup.copy());
    let server = Sidecar::start(&served);

    let reads = compare(&served, &direct, &setup.reads(), false);
    // The comparison saw every outcome: success, a denied key, bad input.
    let codes: Vec<Option<i32>> = reads.iter().map(|r| r.code).collect();
    for code in [0, 1, 2] {
        assert!(codes.contains(&Some(code)), "no exit {code} among {codes:?}");
    }
    let writes = compare(&served, &direct, &setup.writes(), true);
    let codes: Vec<Option<i32>> = writes.iter().map(|r| r.code).collect();
    assert!(codes.contains(&Some(0)) && codes.contains(&Some(2)), "{codes:?}");

    // The server stops cleanly, and its stderr holds none of the secrets the commands read
    // or printed.
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let mut secrets: Vec<String> = [PROVIDER_SECRET, PROVIDER_SECRET_2, MASTER_HEX, "anthropic-secret"]
        .into_iter()
        .map(str::to_string)
        .collect();
    secrets.extend(setup.keys.values().map(|(_, key)| key.clone()));
    for run in &writes {
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&run.stdout)
            && let Some(key) = doc["key"].as_str()
        {
            secrets.push(key.to_string());
        }
    }
    assert!(secrets.len() > 10, "{secrets:?}");
    for secret in &secrets {
        assert!(
            !stderr.contains(secret.as_str()),
            "{secret} in the server's stderr:\n{stderr}"
        );
    }
    // What the served copy holds is what the other holds, and both logs are intact.
    let list = |cli: &Cli| masked(&run(cli, &args(&["list", "--json"]), None).stdout, &mut HashMap::new());
    assert_eq!(list(&served), list(&direct));
    assert_eq!(changes(&served), changes(&direct));
    assert!(changes(&served).len() > 30);
    for cli in [&served, &direct] {
        cli.ok(&["audit", "verify"]);
    }
}

/// The store's audit log without its records of use (`key.used`, `key.use_summary`,
/// `budget.mark`), each event without its sequence number, masked. Anomalies come last,
/// sorted: the flusher logs them when it next looks, so where they fall among the changes
/// depends on its timing, not on the commands.
fn changes(cli: &Cli) -> Vec<String> {
    let audit = cli.json(&["audit", "--json"]);
    let mut ids = HashMap::new();
    let (anomalies, others): (Vec<_>, Vec<_>) = audit
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| {
            !matches!(
                e["kind"].as_str(),
                Some("key.used" | "key.use_summary" | "budget.mark" | "owner.budget_mark")
            )
        })
        .partition(|e| e["kind"] == "key.anomaly");
    let mut shown = |e: &serde_json::Value| {
        let mut e = e.clone();
        e.as_object_mut().expect("object").remove("seq");
        masked(&e.to_string(), &mut ids)
    };
    let mut out: Vec<String> = others.iter().map(|e| shown(e)).collect();
    let mut anomalies: Vec<String> = anomalies.iter().map(|e| shown(e)).collect();
    anomalies.sort();
    out.extend(anomalies);
    out
}

#[test]
fn the_socket_is_private_and_a_killed_server_leaves_the_cli_working() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "k", "--json"]);
    let key = created["key"].as_str().expect("key").to_string();
    let socket = cli.data.join("serve.sock");
    let verify = args(&["verify", &key, "--json"]);

    let server = Sidecar::start(&cli);
    let meta = std::fs::symlink_metadata(&socket).expect("the server's socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let through = run(&cli, &verify, None);
    assert_eq!(through.code, Some(0), "{through:?}");

    // Commands that need the store to themselves are refused at once, naming the server;
    // not after the lock wait (5 s by default).
    for (words, code) in [
        (&["rebuild"][..], 3),
        (&["reset-head", "--yes"], 3),
        (&["serve", "--listen", "127.0.0.1:0"], 3),
        (&["init"], 2),
    ] {
        let started = Instant::now();
        let refused = cli.run(words);
        assert_eq!(refused.code, Some(code), "{words:?}: {refused:?}");
        assert!(
            refused.stderr.contains("`credstore serve` (pid ") && refused.stderr.contains("serving"),
            "{words:?}: {refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{words:?} waited for the lock"
        );
    }

    // Killed, the server leaves its socket behind; the CLI finds no one there and opens the
    // store itself.
    let _ = server.kill_after(Duration::ZERO);
    assert!(socket.exists(), "a killed server cannot remove its socket");
    let here = run(&cli, &verify, None);
    assert_eq!(here.code, Some(0), "{here:?}");
    cli.ok(&["audit", "verify"]);

    // The next server replaces the stale socket, and a clean stop removes it.
    let server = Sidecar::start(&cli);
    let meta = std::fs::symlink_metadata(&socket).expect("the server's socket");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let through = run(&cli, &verify, None);
    assert_eq!(through.code, Some(0), "{through:?}");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(!socket.exists(), "a clean stop removes the socket");
    assert!(!stderr.contains(&key), "{stderr}");
    // The uses after the kill are recorded (the one before it may not be: a server hands
    // use events to its log writer, and a SIGKILL can come first, as for HTTP verifies).
    let audit = cli.json(&["audit", "--kind", "key.used", "--json"]);
    let uses = audit.as_array().map_or(0, Vec::len);
    assert!((2..=3).contains(&uses), "{audit}");
}

#[test]
fn commands_from_many_clis_run_at_once_through_one_server() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "k", "--json"]);
    let key = created["key"].as_str().expect("key").to_string();
    let server = Sidecar::start(&cli);
    let children: Vec<_> = (0..12)
        .map(|i| {
            let words = if i % 2 == 0 {
                vec!["verify".to_string(), key.clone(), "--json".into()]
            } else {
                args(&["create", "--name", &format!("n{i}"), "--json"])
            };
            cli.command(&words.iter().map(String::as_str).collect::<Vec<_>>())
                .env("CREDSTORE_LOCK_WAIT", "0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn credstore")
        })
        .collect();
    for child in children {
        let done = Run::from(child.wait_with_output().expect("wait"));
        assert_eq!(done.code, Some(0), "{done:?}");
        assert!(done.json().is_object(), "{done:?}");
    }
    let listed = run(&cli, &args(&["list", "--json"]), None);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    // The bootstrap admin, k, and six new keys.
    assert_eq!(listed.json().as_array().map(Vec::len), Some(8), "{listed:?}");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let audit = cli.json(&["audit", "--kind", "key.used", "--json"]);
    assert_eq!(audit.as_array().map(Vec::len), Some(6), "{audit}");
}
