//! `credstore import FILE | -`, `create --from FILE` and `revoke --from FILE` through the
//! real binary, on the store and through a running server: imported keys verify by their
//! plaintext, bulk-created keys are printed once each (JSON Lines), bulk revocation by id
//! or key value, `--json` output, and bad lines refused by number with nothing written.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use base64::Engine;
use common::{Cli, Sidecar};
use serde_json::Value;
use sha2::Digest;

fn legacy_key(n: usize) -> String {
    format!("legacy_{n:04}-Zq8vR2-kT9xW4mP7nB3cL6hJ1gF5dS0aE")
}

fn import_lines(keys: &[String]) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let digest = sha2::Sha256::digest(key.as_bytes());
            let hash = if i % 2 == 0 {
                format!(r#""sha256":"{}""#, hex::encode(digest))
            } else {
                format!(
                    r#""sha256_base64":"{}""#,
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            };
            format!("{{{hash},\"prefix\":\"legacy_\",\"name\":\"old {i}\",\"rate_limits\":[\"100/1m\"]}}\n")
        })
        .collect()
}

fn write(cli: &Cli, name: &str, text: &str) -> String {
    let path = cli.tmp.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().into_owned()
}

fn records(cli: &Cli) -> usize {
    cli.ok(&["audit", "export"]).stdout.lines().count()
}

#[test]
fn import_from_a_file_and_from_stdin_then_the_plaintext_keys_verify() {
    let cli = Cli::init();
    let keys: Vec<String> = (0..4).map(legacy_key).collect();
    let file = write(&cli, "keys.jsonl", &import_lines(&keys[..2]));
    let done = cli.json(&["import", &file, "--json"]);
    assert_eq!(done["imported"], 2, "{done}");
    assert_eq!(done["keys"][1]["line"], 2);
    assert_eq!(done["keys"][0]["prefix"], "legacy_");

    let piped = cli.run_with_stdin(&["import", "-"], &import_lines(&keys[2..]).replace("old ", "piped "));
    assert_eq!(piped.code, Some(0), "{piped:?}");
    assert!(piped.stdout.contains("Imported 2 key(s)"), "{piped:?}");

    for key in &keys {
        let v = cli.json(&["verify", key, "--json"]);
        assert_eq!(v["code"], "VALID", "{v}");
        assert_eq!(v["ratelimits"][0]["limit"], 100, "the line's settings apply: {v}");
    }
    let retagged = cli.json(&["audit", "--kind", "key.retagged", "--json"]);
    assert_eq!(retagged.as_array().expect("array").len(), 4);
    // Neither the keys nor their hashes are anywhere in the audit log's output.
    let export = cli.ok(&["audit", "export"]).stdout;
    for key in &keys {
        assert!(!export.contains(key.as_str()));
        assert!(!export.contains(&hex::encode(sha2::Sha256::digest(key.as_bytes()))));
    }
}

#[test]
fn bad_import_lines_are_refused_by_number_and_nothing_is_written() {
    let cli = Cli::init();
    let before = records(&cli);
    let mut text = import_lines(&[legacy_key(1), legacy_key(2)]);
    text.push('\n'); // a blank line is skipped but counted
    text.push_str("{\"sha256\":\"00ff\",\"prefix\":\"legacy_\",\"name\":\"short\"}\n");
    let file = write(&cli, "bad.jsonl", &text);
    let refused = cli.run(&["import", &file]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("line 4: sha256:"), "{refused:?}");
    assert_eq!(records(&cli), before, "nothing written");
    let missing = cli.run(&["import", "no-such-file.jsonl"]);
    assert_eq!(missing.code, Some(2), "{missing:?}");
}

#[test]
fn create_from_prints_each_key_once_and_revoke_from_takes_ids_and_keys() {
    let cli = Cli::init();
    let text = "{\"name\":\"a\",\"project\":\"p1\"}\n{\"name\":\"b\",\"prefix\":\"cmp_\",\"env\":\"test\"}\n\n{\"name\":\"c\",\"metadata\":{\"team\":\"x\"}}\n";
    let file = write(&cli, "new.jsonl", text);
    let created = cli.ok(&["create", "--from", &file]);
    let docs: Vec<Value> = created
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line per key"))
        .collect();
    assert_eq!(docs.len(), 3, "{created:?}");
    assert_eq!(
        docs.iter().map(|d| d["line"].as_u64()).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(4)]
    );
    assert_eq!(docs[0]["project"], "p1");
    assert!(docs[1]["key"].as_str().expect("key").starts_with("cmp_"));
    assert_eq!(docs[1]["env"], "test");
    for d in &docs {
        assert_eq!(
            cli.json(&["verify", d["key"].as_str().expect("key"), "--json"])["code"],
            "VALID"
        );
    }
    // The keys are on stdout once, never on stderr.
    for d in &docs {
        let key = d["key"].as_str().expect("key");
        assert_eq!(created.stdout.matches(key).count(), 1);
        assert!(!created.stderr.contains(key));
    }

    // A bad create line: refused by number, nothing created.
    let before = records(&cli);
    let bad = write(
        &cli,
        "bad.jsonl",
        "{\"name\":\"ok\"}\n{\"name\":\"x\",\"budget_period\":\"daily\"}\n",
    );
    let refused = cli.run(&["create", "--from", &bad]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("line 2: budget_period"), "{refused:?}");
    assert_eq!(records(&cli), before);

    // Revoke one by id and one by its key; the third stays.
    let revoke = format!(
        "{{\"id\":\"{}\",\"reason\":\"offboarding\"}}\n{{\"key\":\"{}\"}}\n",
        docs[0]["id"].as_str().expect("id"),
        docs[1]["key"].as_str().expect("key"),
    );
    let done = cli.run_with_stdin(&["revoke", "--from", "-", "--json"], &revoke);
    assert_eq!(done.code, Some(0), "{done:?}");
    let done = done.json();
    assert_eq!(
        (done["revoked"].as_u64(), done["already_revoked"].as_u64()),
        (Some(2), Some(0))
    );
    for (i, code) in [(0, "REVOKED"), (1, "REVOKED"), (2, "VALID")] {
        let v = cli
            .run(&["verify", docs[i]["key"].as_str().expect("key"), "--json"])
            .json();
        assert_eq!(v["code"], code, "{v}");
    }
    // Again: counted as revoked already. A line naming no key refuses the whole file.
    let again = cli.run_with_stdin(&["revoke", "--from", "-", "--json"], &revoke).json();
    assert_eq!(again["already_revoked"], 2, "{again}");
    let unknown = format!(
        "{{\"id\":\"{}\"}}\n{{\"key\":\"sk_live_notakeyofthisstore\"}}\n",
        docs[2]["id"].as_str().expect("id")
    );
    let refused = cli.run_with_stdin(&["revoke", "--from", "-"], &unknown);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("line 2: key"), "{refused:?}");
    assert_eq!(
        cli.json(&["verify", docs[2]["key"].as_str().expect("key"), "--json"])["code"],
        "VALID"
    );
}

#[test]
fn import_create_and_revoke_from_files_work_through_a_running_server() {
    let cli = Cli::init();
    let keys = vec![legacy_key(1), legacy_key(2)];
    let file = write(&cli, "keys.jsonl", &import_lines(&keys));
    let new = write(&cli, "new.jsonl", "{\"name\":\"served\"}\n");
    let server = Sidecar::start(&cli);
    let through = |args: &[&str], stdin: Option<&str>| {
        let mut c = cli.command(args);
        c.env("CREDSTORE_LOCK_WAIT", "0");
        match stdin {
            Some(input) => {
                use std::io::Write;
                let mut child = c
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("write");
                common::Run::from(child.wait_with_output().expect("wait"))
            }
            None => common::Run::from(c.output().expect("run")),
        }
    };
    let imported = through(&["import", &file, "--json"], None);
    assert_eq!(imported.code, Some(0), "{imported:?}");
    assert_eq!(imported.json()["imported"], 2);
    let created = through(&["create", "--from", &new], None);
    assert_eq!(created.code, Some(0), "{created:?}");
    let doc: Value = serde_json::from_str(created.stdout.lines().next().expect("a line")).expect("json");
    let v = through(&["verify", &keys[0], "--json"], None);
    assert_eq!(v.json()["code"], "VALID", "{v:?}");
    let revoke = format!(
        "{{\"key\":\"{}\"}}\n{{\"id\":\"{}\"}}\n",
        keys[1],
        doc["id"].as_str().expect("id")
    );
    let done = through(&["revoke", "--from", "-", "--yes", "--json"], Some(&revoke));
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.json()["revoked"], 2);
    assert_eq!(through(&["verify", &keys[1], "--json"], None).json()["code"], "REVOKED");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    for key in &keys {
        assert!(!stderr.contains(key.as_str()), "the server logged a key");
    }
}

#[test]
fn the_sidecar_imports_a_json_array_for_admin_keys_and_refuses_bad_lines_by_number() {
    let (cli, admin) = Cli::init_with_admin();
    let keys = vec![legacy_key(1), legacy_key(2)];
    let items: Vec<Value> = import_lines(&keys)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let server = Sidecar::start(&cli);
    let auth = format!("Bearer {admin}");
    let post = |body: &Value| {
        common::http(server.addr, "POST", "/v1/api-keys/import", Some(&auth), Some(body)).expect("answer")
    };
    let mut bad = items.clone();
    bad[1]["prefix"] = Value::from("not a prefix");
    let refused = post(&Value::from(bad));
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert!(
        refused.body.to_string().contains("line 2: prefix"),
        "{:?}",
        refused.body
    );

    let done = post(&Value::from(items));
    assert_eq!(done.status, 201, "{:?}", done.body);
    assert_eq!(done.body["success"], true);
    assert_eq!(
        done.body["data"]["imported"], 2,
        "only the good body imported: {:?}",
        done.body
    );
    for key in &keys {
        let v = common::http(
            server.addr,
            "POST",
            "/v1/keys.verify",
            None,
            Some(&serde_json::json!({ "key": key })),
        )
        .expect("answer");
        assert_eq!(v.body["data"]["code"], "VALID", "{:?}", v.body);
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}
