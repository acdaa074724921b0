//! The CLI contract (DESIGN.md "The CLI contract"), through the real binary, each test on
//! its own data directory in a temp dir.
//!
//! Exit codes: 0 success (for `verify`: valid), 1 `verify` denied the key, 2 bad usage or
//! bad input (nothing written), 3 store error (I/O, corruption, locked).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{Cli, Run};

const HEADERS: [&str; 9] = [
    "ID",
    "Name",
    "Start",
    "Type",
    "Env",
    "Project",
    "Created",
    "Last used",
    "Status",
];

// The fixture is in `common`; these helpers are for this file's tests only.
impl Cli {
    /// Exit code of `verify KEY`.
    fn verify_code(&self, key: &str) -> Option<i32> {
        self.run(&["verify", key]).code
    }

    /// `create --json` with these extra arguments.
    #[track_caller]
    fn create(&self, name: &str, extra: &[&str]) -> Value {
        let mut args = vec!["create", "--name", name, "--json"];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    fn event_count(&self) -> usize {
        self.json(&["audit", "--json"]).as_array().expect("array").len()
    }

    /// `list --json`, without the admin key `init` issues.
    fn list(&self) -> Vec<Value> {
        let all = self.json(&["list", "--json"]).as_array().expect("array").clone();
        all.into_iter().filter(|k| k["name"] != BOOTSTRAP).collect()
    }
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// `YYYY-MM-DD HH:MM:SS`.
fn is_table_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

fn rfc3339_ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .as_millisecond()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The cells of each row of a comfy-table table (header first), trimmed, without the
/// admin key `init` issues.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| {
            l.trim_matches('│')
                .split(['┆', '│'])
                .map(|c| c.trim().to_string())
                .collect::<Vec<String>>()
        })
        .filter(|row| row.get(1).is_none_or(|name| name != BOOTSTRAP))
        .collect()
}

/// The name of the admin key `credstore init` issues and prints.
const BOOTSTRAP: &str = "bootstrap admin";

/// The key line of `create`'s human output: the one indented line that is the key.
fn key_in_human_output(stdout: &str, prefix: &str) -> String {
    let keys: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix) && !l.contains(' '))
        .collect();
    assert_eq!(keys.len(), 1, "exactly one key in:\n{stdout}");
    keys[0].to_string()
}

/// A copy of `key` with one character of its random part changed.
fn typo(key: &str, at: usize) -> String {
    let mut k = key.to_string();
    let c = if &k[at..at + 1] == "a" { "b" } else { "a" };
    k.replace_range(at..at + 1, c);
    k
}

fn log_segment(data: &Path) -> PathBuf {
    let segments: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().expect("one segment")
}

/// Flips a byte in the payload of record `seq` (which must not be the last record).
fn corrupt_record(data: &Path, seq: usize) {
    let path = log_segment(data);
    let mut bytes = std::fs::read(&path).expect("segment");
    let mut pos = 64;
    for _ in 1..seq {
        let body = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += 8 + body;
    }
    let body = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    assert!(pos + 8 + body < bytes.len(), "record {seq} is the last one");
    bytes[pos + 8 + body - 2] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write the damaged segment");
}

// ---------------------------------------------------------------------------------------

#[test]
fn init_creates_a_store_once() {
    let cli = Cli::empty();
    let run = cli.ok(&["init"]);
    assert!(run.stdout.contains("Initialised"), "{run:?}");
    assert!(run.stdout.contains("Development store"), "{run:?}");
    assert!(cli.data.join("STORE").is_file());
    assert!(cli.data.join("pepper.key").is_file());
    let again = cli.run(&["init"]);
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");

    // With CREDSTORE_PEPPER the pepper stays out of the data directory.
    let prod = Cli::empty();
    let run = Run::from(
        prod.command(&["init"])
            .env("CREDSTORE_PEPPER", "ab".repeat(32))
            .output()
            .expect("run"),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!run.stdout.contains("Development store"), "{run:?}");
    assert!(!prod.data.join("pepper.key").exists());
    // Without it, that store cannot be opened; with a malformed one, neither.
    assert_eq!(prod.run(&["list"]).code, Some(2));
    let bad = Run::from(
        prod.command(&["list"])
            .env("CREDSTORE_PEPPER", "not hex")
            .output()
            .expect("run"),
    );
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let good = Run::from(
        prod.command(&["list", "--json"])
            .env("CREDSTORE_PEPPER", "ab".repeat(32))
            .output()
            .expect("run"),
    );
    assert_eq!(good.code, Some(0), "{good:?}");
}

#[test]
fn create_prints_the_key_once_for_people_and_as_json() {
    let cli = Cli::init();
    let run = cli.ok(&["create", "--name", "CI pipeline", "--project", "acme"]);
    assert!(run.stdout.contains("Created key_"), "{run:?}");
    assert!(run.stdout.contains("(CI pipeline) in project acme, live"), "{run:?}");
    assert!(run.stdout.contains("shown only once"), "{run:?}");
    let key = key_in_human_output(&run.stdout, "sk_live_");
    assert_eq!(key.len(), 8 + 32 + 6);
    assert_eq!(cli.verify_code(&key), Some(0));

    let before = now_ms();
    let doc = cli.create("deploy bot", &["--meta", "team=infra", "--expires-in", "90d"]);
    for field in ["id", "key", "name", "start", "env", "project", "created_at"] {
        assert!(doc.get(field).is_some(), "{field} missing from {doc}");
    }
    let key = s(&doc, "key");
    assert!(s(&doc, "id").starts_with("key_") && s(&doc, "id").len() == 26, "{doc}");
    assert!(key.starts_with("sk_live_") && key.len() == 46, "{doc}");
    assert_eq!(s(&doc, "name"), "deploy bot");
    assert_eq!(s(&doc, "start"), &key[..12]);
    assert_eq!(s(&doc, "env"), "live");
    assert_eq!(s(&doc, "project"), "default");
    assert_eq!(doc["metadata"]["team"], "infra");
    let created = rfc3339_ms(s(&doc, "created_at"));
    assert!((before - 5_000..=now_ms() + 5_000).contains(&created), "{doc}");
    let expires = rfc3339_ms(s(&doc, "expires_at"));
    assert_eq!(expires - created, 90 * 86_400_000, "{doc}");

    let test = cli.create("tests", &["--env", "test", "--project", "acme"]);
    assert!(s(&test, "key").starts_with("sk_test_"), "{test}");
    assert_eq!(s(&test, "env"), "test");
    assert_eq!(s(&test, "project"), "acme");
    let cmp = cli.create("cmp", &["--prefix", "cmp_"]);
    assert!(
        s(&cmp, "key").starts_with("cmp_") && s(&cmp, "key").len() == 4 + 32 + 6,
        "{cmp}"
    );
    // The key is in the output once, and nowhere else ever again.
    let shown = cli.ok(&["show", s(&doc, "id"), "--json"]);
    assert!(!shown.stdout.contains(key), "show printed the key");
    let listed = cli.ok(&["list", "--json"]);
    assert!(!listed.stdout.contains(&key[12..]), "list printed the key");
}

#[test]
fn verify_exit_codes_and_json() {
    let cli = Cli::init();
    let doc = cli.create("svc", &["--project", "acme"]);
    let key = s(&doc, "key").to_string();
    let id = s(&doc, "id").to_string();

    let valid = cli.ok(&["verify", &key, "--json"]).json();
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["status"], 200);
    assert_eq!(valid["key_id"], id.as_str());
    assert_eq!(valid["name"], "svc");
    assert_eq!(valid["project"], "acme");
    assert_eq!(valid["env"], "live");
    let human = cli.ok(&["verify", &key]);
    assert!(
        human.stdout.contains("VALID (200)") && human.stdout.contains(&id),
        "{human:?}"
    );

    // Denied: exit 1, with the code.
    let denied = |presented: &str, code: &str| {
        let run = cli.run(&["verify", presented, "--json"]);
        assert_eq!(run.code, Some(1), "{presented}: {run:?}");
        let d = run.json();
        assert_eq!(d["valid"], false, "{d}");
        assert_eq!(d["code"], code, "{d}");
        assert_eq!(d["status"], 401, "{d}");
        d
    };
    let d = denied(&typo(&key, 12), "MALFORMED");
    assert!(d["key_id"].is_null());
    assert_eq!(d["reason"], "key checksum mismatch");
    denied("pk_live_nope", "MALFORMED");
    denied(&key[..key.len() - 1], "MALFORMED");
    let forged = credstore::Format::default_for(credstore::Env::Live).generate();
    let d = denied(forged.expose(), "NOT_FOUND");
    assert!(d["key_id"].is_null());
    cli.ok(&["disable", &id]);
    assert_eq!(denied(&key, "DISABLED")["key_id"], id.as_str());
    cli.ok(&["enable", &id]);
    cli.ok(&["revoke", &id, "--yes"]);
    assert_eq!(denied(&key, "REVOKED")["key_id"], id.as_str());

    // Bad usage: exit 2.
    assert_eq!(cli.run(&["verify"]).code, Some(2));
    assert_eq!(cli.run(&["verify", &key, "--no-such-flag"]).code, Some(2));
    assert_eq!(cli.run(&["no-such-command"]).code, Some(2));

    // Store error: exit 3 (a corrupt log).
    let other = Cli::init();
    let k = s(&other.create("a", &[]), "key").to_string();
    other.create("b", &[]);
    corrupt_record(&other.data, 2);
    let run = other.run(&["verify", &k]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("corrupt"), "{run:?}");
}

#[test]
fn verify_reads_the_key_from_stdin() {
    let cli = Cli::init();
    let doc = cli.create("stdin", &[]);
    let key = s(&doc, "key");
    let run = cli.run_with_stdin(&["verify", "-", "--json"], &format!("{key}\n"));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["key_id"], doc["id"]);
    // Without a trailing newline too.
    assert_eq!(cli.run_with_stdin(&["verify", "-"], key).code, Some(0));
    // A bad key on stdin is denied like one on the command line.
    let run = cli.run_with_stdin(&["verify", "-", "--json"], &format!("{}\n", typo(key, 14)));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.json()["code"], "MALFORMED");
    let run = cli.run_with_stdin(&["verify", "-", "--json"], "");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.json()["code"], "MALFORMED");
}

#[test]
fn list_as_a_table_and_as_json() {
    let cli = Cli::init();
    let a = cli.create("alpha", &["--project", "acme"]);
    let b = cli.create("beta", &["--project", "globex", "--env", "test"]);
    let c = cli.create("gamma", &["--project", "acme", "--prefix", "cmp_"]);
    cli.ok(&["revoke", s(&c, "id"), "--yes"]);

    let table = cli.ok(&["list"]);
    let rows = table_rows(&table.stdout);
    assert_eq!(rows.len(), 4, "{table:?}");
    assert_eq!(rows[0], HEADERS, "{table:?}");
    for (row, (doc, env, project, status)) in rows[1..].iter().zip([
        (&a, "live", "acme", "Active"),
        (&b, "test", "globex", "Active"),
        (&c, "live", "acme", "Revoked"),
    ]) {
        assert_eq!(row[0], s(doc, "id"));
        assert_eq!(row[1], s(doc, "name"));
        assert_eq!(row[2], format!("{}...", s(doc, "start")));
        assert_eq!(row[3], "service");
        assert_eq!(row[4], env);
        assert_eq!(row[5], project);
        assert!(is_table_time(&row[6]), "Created {:?}", row[6]);
        assert_eq!(row[7], "Never", "never used yet");
        assert_eq!(row[8], status);
    }
    // The table shows no secret.
    for doc in [&a, &b, &c] {
        assert!(!table.stdout.contains(&s(doc, "key")[s(doc, "start").len()..]));
    }

    let list = cli.list();
    assert_eq!(list.len(), 3);
    for (item, doc) in list.iter().zip([&a, &b, &c]) {
        for field in [
            "id",
            "name",
            "start",
            "env",
            "project",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
        ] {
            assert!(item.get(field).is_some(), "{field} missing from {item}");
        }
        assert_eq!(item["id"], doc["id"]);
        assert_eq!(item["start"], doc["start"]);
        assert_eq!(item["created_at"], doc["created_at"]);
        assert!(item["last_used_at"].is_null());
        assert!(item.get("key").is_none(), "list --json shows a key");
    }
    assert_eq!(list[2]["status"], "revoked");

    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        cli.json(&all)
            .as_array()
            .expect("array")
            .iter()
            .map(|k| s(k, "name").to_string())
            .collect()
    };
    assert_eq!(names(&["--project", "acme"]), ["alpha", "gamma"]);
    assert_eq!(names(&["--prefix", "sk_test_"]), ["beta"]);
    assert_eq!(names(&["--status", "revoked"]), ["gamma"]);
    assert_eq!(names(&["--status", "active"]), [BOOTSTRAP, "alpha", "beta"]);
    assert!(names(&["--project", "nobody"]).is_empty());
    assert_eq!(cli.run(&["list", "--status", "sleepy"]).code, Some(2));
}

#[test]
fn show_update_disable_enable_revoke() {
    let cli = Cli::init();
    let doc = cli.create("worker", &["--project", "acme", "--meta", "team=infra"]);
    let id = s(&doc, "id").to_string();
    let key = s(&doc, "key").to_string();

    let show = cli.ok(&["show", &id]);
    for expected in [id.as_str(), "worker", "acme", "Active", "Never", "team=infra"] {
        assert!(show.stdout.contains(expected), "{expected:?} missing:\n{show:?}");
    }
    let shown = cli.json(&["show", &id, "--json"]);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["metadata"]["team"], "infra");

    let updated = cli.json(&["update", &id, "--name", "worker 2", "--json"]);
    assert_eq!(updated["name"], "worker 2");
    assert_eq!(updated["metadata"]["team"], "infra", "a rename keeps the metadata");
    let updated = cli.json(&["update", &id, "--meta", "team=data", "--meta", "tier=gold", "--json"]);
    assert_eq!(updated["metadata"], serde_json::json!({"team": "data", "tier": "gold"}));
    let updated = cli.json(&["update", &id, "--expires-in", "1d", "--json"]);
    let expires = rfc3339_ms(s(&updated, "expires_at"));
    assert!((expires - now_ms() - 86_400_000).abs() < 60_000, "{updated}");
    let updated = cli.json(&["update", &id, "--no-expiry", "--clear-meta", "--json"]);
    assert!(updated["expires_at"].is_null(), "{updated}");
    assert_eq!(updated["metadata"], serde_json::json!({}));
    assert_eq!(cli.json(&["show", &id, "--json"])["name"], "worker 2");
    // Nothing to update, or nonsense: bad usage.
    let events = cli.event_count();
    assert_eq!(cli.run(&["update", &id]).code, Some(2));
    assert_eq!(cli.run(&["update", &id, "--name", ""]).code, Some(2));
    assert_eq!(
        cli.run(&["update", &id, "--expires-at", "2001-01-01T00:00:00Z"]).code,
        Some(2)
    );
    assert_eq!(cli.event_count(), events, "a refused update wrote something");

    let disabled = cli.json(&["disable", &id, "--json"]);
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(cli.verify_code(&key), Some(1));
    assert_eq!(cli.run(&["disable", &id]).code, Some(2), "disable twice");
    let enabled = cli.json(&["enable", &id, "--json"]);
    assert_eq!(enabled["status"], "active");
    assert_eq!(cli.verify_code(&key), Some(0));
    assert_eq!(cli.run(&["enable", &id]).code, Some(2), "enable an enabled key");

    let revoked = cli.json(&["revoke", &id, "--reason", "leaked", "--yes", "--json"]);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoke_reason"], "leaked");
    assert_eq!(cli.verify_code(&key), Some(1));
    let show = cli.ok(&["show", &id]);
    assert!(
        show.stdout.contains("Revoked") && show.stdout.contains("leaked"),
        "{show:?}"
    );
    let events = cli.event_count();
    assert_eq!(cli.run(&["revoke", &id, "--yes"]).code, Some(2), "revoke twice");
    assert_eq!(cli.run(&["enable", &id]).code, Some(2), "enable a revoked key");
    assert_eq!(cli.run(&["update", &id, "--name", "zombie"]).code, Some(2));
    assert_eq!(cli.event_count(), events);

    // Unknown and malformed ids.
    let ghost = cli.run(&["show", "key_0000000000000000000000"]);
    assert_eq!(ghost.code, Some(2), "{ghost:?}");
    assert!(ghost.stderr.contains("no key with id"), "{ghost:?}");
    assert_eq!(cli.run(&["show", "not-an-id"]).code, Some(2));
    assert_eq!(
        cli.run(&["revoke", "key_0000000000000000000000", "--yes"]).code,
        Some(2)
    );
}

#[test]
fn rotate_with_and_without_grace() {
    let cli = Cli::init();
    let doc = cli.create(
        "rotating",
        &[
            "--project",
            "acme",
            "--prefix",
            "comp_",
            "--length",
            "27",
            "--no-checksum",
        ],
    );
    let old_id = s(&doc, "id").to_string();
    let old_key = s(&doc, "key").to_string();

    let before = now_ms();
    let rotated = cli.json(&["rotate", &old_id, "--grace", "1h", "--json"]);
    for field in ["id", "key", "name", "start", "env", "project", "created_at"] {
        assert!(rotated.get(field).is_some(), "{field} missing from {rotated}");
    }
    assert_eq!(rotated["replaces"], old_id.as_str());
    assert_eq!(rotated["name"], "rotating");
    assert_eq!(rotated["project"], "acme");
    let new_key = s(&rotated, "key").to_string();
    let new_id = s(&rotated, "id").to_string();
    assert_ne!(new_key, old_key);
    assert!(
        new_key.starts_with("comp_") && new_key.len() == 32,
        "same shape: {new_key}"
    );
    let old_dies = rfc3339_ms(s(&rotated, "old_revoked_at"));
    assert!((old_dies - before - 3_600_000).abs() < 60_000, "{rotated}");
    // During the grace both keys work.
    assert_eq!(cli.verify_code(&old_key), Some(0));
    assert_eq!(cli.verify_code(&new_key), Some(0));
    let old = cli.json(&["show", &old_id, "--json"]);
    assert_eq!(old["rotated_to"], new_id.as_str());
    assert_eq!(cli.run(&["rotate", &old_id]).code, Some(2), "rotate twice");

    // Without a grace, the old key dies at once.
    let run = cli.ok(&["rotate", &new_id]);
    assert!(
        run.stdout.contains("Rotated") && run.stdout.contains(&new_id),
        "{run:?}"
    );
    let newest = key_in_human_output(&run.stdout, "comp_");
    assert_eq!(newest.len(), 32);
    assert_eq!(cli.verify_code(&new_key), Some(1));
    assert_eq!(cli.verify_code(&newest), Some(0));
    assert_eq!(cli.run(&["rotate", "key_0000000000000000000000"]).code, Some(2));
    assert_eq!(cli.run(&["rotate", &new_id, "--grace", "soon"]).code, Some(2));
}

#[test]
fn audit_lists_filters_verifies_and_exports() {
    let cli = Cli::init();
    let a = cli.create("a", &[]);
    let b = cli.create("b", &["--env", "test"]);
    let a_id = s(&a, "id").to_string();
    cli.ok(&["revoke", &a_id, "--yes", "--reason", "done"]);
    cli.ok(&["verify", s(&b, "key")]);

    let events = cli.json(&["audit", "--json"]);
    let events = events.as_array().expect("array");
    let kinds: Vec<&str> = events.iter().map(|e| s(e, "kind")).collect();
    // The bootstrap admin key registers the admin format (`csa_`), the first customer key
    // `sk_live_` (issue 17, item 14: admin keys have a format of their own).
    assert_eq!(
        kinds,
        [
            "format.registered",
            "key.created",
            "format.registered",
            "key.created",
            "format.registered",
            "key.created",
            "key.revoked",
            "key.used"
        ]
    );
    assert_eq!(events[0]["details"]["prefix"], "csa_", "{}", events[0]);
    assert_eq!(events[1]["details"]["name"], BOOTSTRAP);
    assert_eq!(events[2]["details"]["prefix"], "sk_live_", "{}", events[2]);
    assert_eq!(events[7]["details"]["code"], "VALID");
    assert_eq!(events[7]["details"]["key_id"], s(&b, "id"));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i + 1, "{e}");
        rfc3339_ms(s(e, "at"));
    }
    let revoked = cli.json(&["audit", "--kind", "key.revoked", "--json"]);
    let revoked = revoked.as_array().expect("array");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["details"]["key_id"], a_id.as_str());
    assert_eq!(revoked[0]["details"]["reason"], "done");
    let of_a = cli.json(&["audit", "--key", &a_id, "--json"]);
    let of_a: Vec<&str> = of_a.as_array().expect("array").iter().map(|e| s(e, "kind")).collect();
    assert_eq!(of_a, ["key.created", "key.revoked"]);
    let human = cli.ok(&["audit"]);
    assert_eq!(human.stdout.lines().count(), 8, "{human:?}");
    assert!(human.stdout.contains("key.revoked"), "{human:?}");
    assert_eq!(cli.run(&["audit", "--key", "nonsense"]).code, Some(2));

    let intact = cli.ok(&["audit", "verify"]);
    assert!(
        intact.stdout.contains("intact") && intact.stdout.contains("8 records"),
        "{intact:?}"
    );

    let export = cli.ok(&["audit", "export"]);
    let lines: Vec<&str> = export.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{export:?}");
    for (i, line) in lines.iter().enumerate() {
        let e: Value = serde_json::from_str(line).expect("each line is one JSON document");
        assert_eq!(e["seq"], i + 1);
        assert_eq!(e, events[i]);
    }
    // No key secret in the audit output: neither the key nor its random part.
    for doc in [&a, &b] {
        let key = s(doc, "key");
        let random = &key[8..40];
        for out in [&export.stdout, &human.stdout, &cli.ok(&["audit", "--json"]).stdout] {
            assert!(!out.contains(key) && !out.contains(random), "a key in the audit output");
        }
    }

    // A damaged record: non-zero, naming it.
    corrupt_record(&cli.data, 3);
    let broken = cli.run(&["audit", "verify"]);
    assert_ne!(broken.code, Some(0), "{broken:?}");
    assert_eq!(broken.code, Some(3), "{broken:?}");
    assert!(broken.stderr.contains("corrupt record"), "{broken:?}");
    assert!(
        broken.stderr.contains("seq 3"),
        "the bad record is not named: {broken:?}"
    );
    assert_eq!(cli.run(&["audit", "export"]).code, Some(3));
}

#[test]
fn rebuild_recreates_the_index_from_the_log() {
    let cli = Cli::init();
    let a = cli.create("a", &["--project", "acme", "--meta", "k=v"]);
    let b = cli.create("b", &["--prefix", "comp_", "--length", "27", "--no-checksum"]);
    cli.ok(&["verify", s(&a, "key")]);
    cli.ok(&["disable", s(&b, "id")]);
    cli.ok(&["update", s(&a, "id"), "--name", "a2"]);
    cli.ok(&["rotate", s(&a, "id"), "--grace", "1h"]);
    let before = cli.list();
    let events = cli.event_count();

    let run = cli.ok(&["rebuild"]);
    assert!(
        run.stdout.contains(&format!("from {events} log records")),
        "{run:?} ({events} events)"
    );
    assert_eq!(cli.list(), before, "rebuild changed the index");
    assert_eq!(cli.verify_code(s(&a, "key")), Some(0), "in its grace period");
    assert_eq!(cli.verify_code(s(&b, "key")), Some(1), "disabled");

    // From the log alone: the index directory gone entirely. Last-used times live only in
    // the index, so they are the one thing not recovered.
    std::fs::remove_dir_all(cli.data.join("index")).expect("remove the index");
    cli.ok(&["rebuild"]);
    let strip = |list: Vec<Value>| -> Vec<Value> {
        list.into_iter()
            .map(|mut k| {
                k["last_used_at"] = Value::Null;
                k
            })
            .collect()
    };
    assert_eq!(strip(cli.list()), strip(before));
    assert_eq!(cli.verify_code(s(&b, "key")), Some(1));
}

#[test]
fn demo_runs() {
    let cli = Cli::empty();
    let run = Run::from(cli.bare().arg("demo").output().expect("run demo"));
    assert_eq!(run.code, Some(0), "{run:?}");
    for code in [
        "VALID",
        "MALFORMED",
        "NOT_FOUND",
        "DISABLED",
        "EXPIRED",
        "REVOKED",
        "intact",
    ] {
        assert!(run.stdout.contains(code), "{code} missing from the demo:\n{run:?}");
    }
    // The throwaway store is thrown away.
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("throwaway store in "))
        .expect("the demo names its store");
    let dir = line.rsplit("throwaway store in ").next().expect("a path").trim();
    assert!(!Path::new(dir).exists(), "the demo left {dir} behind");
    assert!(!cli.data.exists());
}

#[test]
fn credstore_data_works_in_place_of_data() {
    let cli = Cli::empty();
    let env_run = |args: &[&str]| {
        Run::from(
            cli.bare()
                .env("CREDSTORE_DATA", &cli.data)
                .args(args)
                .output()
                .expect("run"),
        )
    };
    assert_eq!(env_run(&["init"]).code, Some(0));
    assert!(cli.data.join("STORE").is_file());
    assert!(
        !cli.tmp.path().join("credstore-data").exists(),
        "used the default directory"
    );
    let created = env_run(&["create", "--name", "via env", "--json"]);
    assert_eq!(created.code, Some(0), "{created:?}");
    let key = s(&created.json(), "key").to_string();
    assert_eq!(env_run(&["verify", &key]).code, Some(0));
    let list = env_run(&["list", "--json"]).json();
    let list: Vec<&Value> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|k| k["name"] != BOOTSTRAP)
        .collect();
    assert_eq!(list.len(), 1);
    // The same store through --data.
    assert_eq!(cli.list().len(), 1);
    // --data wins over the variable.
    let elsewhere = cli.tmp.path().join("elsewhere");
    let run = Run::from(
        cli.bare()
            .env("CREDSTORE_DATA", &cli.data)
            .arg("--data")
            .arg(&elsewhere)
            .arg("init")
            .output()
            .expect("run"),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(elsewhere.join("STORE").is_file());
    assert_eq!(cli.list().len(), 1);
    // Without either, ./credstore-data.
    let run = Run::from(cli.bare().arg("init").output().expect("run"));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(cli.tmp.path().join("credstore-data/STORE").is_file());
}

#[test]
fn a_comp_prefix_keeps_its_registered_shape() {
    let cli = Cli::init();
    let first = cli.create("client", &["--prefix", "comp_", "--length", "27", "--no-checksum"]);
    let key = s(&first, "key").to_string();
    assert!(key.starts_with("comp_") && key.len() == 32, "{first}");
    assert!(key[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
    // No --length: the registered shape, not the default one.
    let second = cli.create("client 2", &["--prefix", "comp_"]);
    let key2 = s(&second, "key").to_string();
    assert!(key2.starts_with("comp_") && key2.len() == 32, "{second}");
    assert_eq!(cli.verify_code(&key), Some(0));
    assert_eq!(cli.verify_code(&key2), Some(0));
    // The store registered the shape once.
    let formats = cli.json(&["audit", "--kind", "format.registered", "--json"]);
    let comp: Vec<&Value> = formats
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["details"]["prefix"] == "comp_")
        .collect();
    assert_eq!(comp.len(), 1, "{formats}");
    assert_eq!(comp[0]["details"]["random_len"], 27);
    assert_eq!(comp[0]["details"]["checksum"], false);
    // A comp_ key of the wrong length is malformed before any lookup.
    for bad in [&key[..31], &format!("{key}x")] {
        let run = cli.run(&["verify", bad, "--json"]);
        assert_eq!(run.code, Some(1), "{run:?}");
        let d = run.json();
        assert_eq!(d["code"], "MALFORMED");
        assert_eq!(d["reason"], "wrong key length");
    }
    // Under 128 bits is refused, and writes nothing.
    let events = cli.event_count();
    let weak = cli.run(&[
        "create",
        "--name",
        "weak",
        "--prefix",
        "comp_",
        "--length",
        "21",
        "--no-checksum",
    ]);
    assert_eq!(weak.code, Some(2), "{weak:?}");
    assert_eq!(cli.event_count(), events);
}

#[test]
fn last_used_written_by_verify_is_seen_by_the_next_process() {
    let cli = Cli::init();
    let doc = cli.create("used", &[]);
    let unused = cli.create("unused", &[]);
    let list = cli.list();
    assert!(list.iter().all(|k| k["last_used_at"].is_null()), "{list:?}");
    let before = now_ms();
    cli.ok(&["verify", s(&doc, "key")]);
    let list = cli.list();
    let used = rfc3339_ms(s(&list[0], "last_used_at"));
    assert!(used >= before - 1_000 && used <= now_ms() + 1_000, "{}", list[0]);
    assert!(used >= rfc3339_ms(s(&doc, "created_at")));
    assert!(list[1]["last_used_at"].is_null(), "{}", list[1]);
    let rows = table_rows(&cli.ok(&["list"]).stdout);
    assert!(is_table_time(&rows[1][7]), "Last used {:?}", rows[1][7]);
    assert_eq!(rows[2][7], "Never");
    let show = cli.ok(&["show", s(&doc, "id")]);
    assert!(!show.stdout.contains("Never"), "{show:?}");
    // A denied verify is not a use.
    cli.ok(&["disable", s(&unused, "id")]);
    assert_eq!(cli.verify_code(s(&unused, "key")), Some(1));
    let list = cli.list();
    assert_eq!(list[1]["id"], unused["id"]);
    assert!(list[1]["last_used_at"].is_null(), "{}", list[1]);
    // And a later use moves the time forward, across processes again.
    std::thread::sleep(std::time::Duration::from_millis(5));
    cli.ok(&["verify", s(&doc, "key")]);
    let again = rfc3339_ms(s(&cli.list()[0], "last_used_at"));
    assert!(again > used, "{again} <= {used}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let cli = Cli::init();
    cli.create("existing", &["--project", "acme"]);
    let events = cli.event_count();
    let list = cli.list();
    let long_name = "n".repeat(200);
    let cases: Vec<Vec<&str>> = vec![
        vec!["create", "--name", ""],
        vec!["create", "--name", &long_name],
        vec!["create", "--name", "bell\u{7}"],
        vec!["create", "--name", "x", "--length", "21"],
        vec!["create", "--name", "x", "--prefix", "bad"],
        vec!["create", "--name", "x", "--prefix", "sk_live_", "--env", "test"],
        vec!["create", "--name", "x", "--project", "a/b"],
        vec!["create", "--name", "x", "--expires-at", "2000-01-01T00:00:00Z"],
        vec!["create", "--name", "x", "--expires-at", "tomorrow"],
        vec!["create", "--name", "x", "--expires-in", "0d"],
        vec!["create", "--name", "x", "--expires-in", "forever"],
        vec!["create", "--name", "x", "--meta", "novalue"],
        vec!["create", "--name", "x", "--env", "staging"],
        vec!["create"],
    ];
    for args in &cases {
        let run = cli.run(args);
        assert_eq!(run.code, Some(2), "credstore {args:?}\n{run:?}");
        assert!(run.stdout.is_empty(), "credstore {args:?} printed a key?\n{run:?}");
        assert!(!run.stderr.trim().is_empty(), "credstore {args:?}: no message");
    }
    let big_meta = format!("k={}", "v".repeat(600));
    let run = cli.run(&["create", "--name", "x", "--meta", &big_meta]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("metadata"), "{run:?}");
    assert_eq!(cli.event_count(), events, "a refused command wrote an event");
    assert_eq!(cli.list(), list, "a refused command changed the keys");
}

#[test]
fn shell_completions_are_printed() {
    let cli = Cli::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.ok(&["completions", shell]);
        assert!(out.stdout.contains("credstore"), "{shell}");
        assert!(out.stdout.contains("rotate") && out.stdout.contains("vault"), "{shell}");
    }
    assert_eq!(cli.run(&["completions", "tcsh"]).code, Some(2));
}

/// Runs `command`, which must exit within 10 s: a `serve` that accepted a bad value would
/// serve until stopped.
#[track_caller]
fn run_refused(mut command: std::process::Command) -> Run {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn credstore");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("wait"));
            panic!("{command:?} was still running after 10 s: it took the value\n{run:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().expect("wait"))
}

#[test]
fn serve_refuses_bad_limits_naming_the_flag() {
    let cli = Cli::init();
    let cases: [(&[&str], &str); 8] = [
        (&["--header-timeout", "0s"], "--header-timeout"),
        (&["--header-timeout", "10"], "--header-timeout"),
        (&["--idle-timeout", "soon"], "--idle-timeout"),
        (&["--idle-timeout", "1.5m"], "--idle-timeout"),
        (&["--request-timeout=-5s"], "--request-timeout"),
        (&["--request-timeout", "30y"], "--request-timeout"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--max-connections", "many"], "--max-connections"),
    ];
    for (flag_args, flag) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(flag_args);
        let run = run_refused(cli.command(&args));
        assert_eq!(run.code, Some(2), "credstore {args:?}\n{run:?}");
        assert!(run.stdout.is_empty(), "credstore {args:?} started listening\n{run:?}");
        assert!(
            run.stderr.contains(flag),
            "credstore {args:?}: the error does not name {flag}\n{run:?}"
        );
    }
    // The same values from the environment name the flag they stand for.
    let mut command = cli.command(&["serve", "--listen", "127.0.0.1:0"]);
    command.env("CREDSTORE_IDLE_TIMEOUT", "soon");
    let run = run_refused(command);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--idle-timeout"), "{run:?}");
    assert!(run.stderr.contains("10s"), "the error shows no example: {run:?}");

    // The defaults are in the help.
    let help = cli.ok(&["serve", "--help"]).stdout;
    for default in [
        "CREDSTORE_HEADER_TIMEOUT=] [default: 10s]",
        "CREDSTORE_IDLE_TIMEOUT=] [default: 60s]",
        "CREDSTORE_REQUEST_TIMEOUT=] [default: 30s]",
        "CREDSTORE_MAX_CONNECTIONS=] [default: 512]",
    ] {
        assert!(help.contains(default), "{default} not in\n{help}");
    }
}

#[test]
fn the_fleet_settings_from_the_environment_are_checked() {
    let cli = Cli::init();
    for (var, value) in [
        ("CREDSTORE_FLEET_MAX_STALENESS", "soon"),
        ("CREDSTORE_FLEET_MAX_STALENESS", "0s"),
        ("CREDSTORE_FLEET_FAIL_OPEN", "maybe"),
    ] {
        let run = Run::from(cli.command(&["list"]).env(var, value).output().expect("run"));
        assert_eq!(run.code, Some(2), "{var}={value}: {run:?}");
        assert!(run.stderr.contains(var), "{var}={value}: {run:?}");
    }
    let run = Run::from(
        cli.command(&["list"])
            .env("CREDSTORE_FLEET_MAX_STALENESS", "5s")
            .env("CREDSTORE_FLEET_FAIL_OPEN", "true")
            .output()
            .expect("run"),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
}
