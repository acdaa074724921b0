//! `credstore webhook add | list | remove` and `GET|POST /v1/webhooks`, `DELETE
//! /v1/webhooks/{id}`: the signing secret is shown once and never again (not in a list,
//! the audit log or any file of the store), registration and removal are logged, and bad
//! input is refused with a message naming it, changing nothing.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

mod common;

use std::path::Path;

use common::{Cli, Sidecar, http};
use serde_json::{Value, json};

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if entry.file_type().expect("type").is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn event_count(cli: &Cli) -> usize {
    cli.ok(&["events", "--json"]).stdout.lines().count()
}

#[test]
fn a_webhook_is_added_listed_and_removed_its_secret_shown_once() {
    let cli = Cli::init();
    let added = cli.ok(&["webhook", "add", "http://127.0.0.1:9/hook", "--event", "key.created"]);
    let secret = added
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .expect("the secret is shown")
        .to_string();
    assert_eq!(added.stdout.matches("whsec_").count(), 1, "{}", added.stdout);
    let id = added
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("wh_"))
        .expect("the id is shown")
        .to_string();

    let json = cli.json(&["webhook", "add", "http://127.0.0.1:9/other", "--event", "*", "--json"]);
    let other = json["id"].as_str().expect("id").to_string();
    assert!(json["secret"].as_str().expect("secret").starts_with("whsec_"));
    assert_eq!(json["events"], json!(["*"]));
    assert_ne!(json["secret"].as_str(), Some(secret.as_str()));

    let list = cli.json(&["webhook", "list", "--json"]);
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|w| w["id"].as_str().expect("id"))
        .collect();
    let mut want = [id.as_str(), other.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert_eq!(
        list[0]["url"].as_str().map(|u| u.starts_with("http://127.0.0.1:9/")),
        Some(true)
    );
    let human = cli.ok(&["webhook", "list"]).stdout;
    assert!(human.contains(&id) && human.contains("key.created"), "{human}");

    // Never again: not in a list, the log, the audit or any file of the store.
    let random_part = &secret["whsec_".len()..];
    let everywhere = [
        list.to_string(),
        human,
        cli.ok(&["events", "--json"]).stdout,
        cli.ok(&["audit", "--json"]).stdout,
    ]
    .concat();
    assert!(!everywhere.contains(random_part));
    assert!(
        !contains(&all_bytes(&cli.data), random_part.as_bytes()),
        "the secret is on disk"
    );
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(random_part)
        .expect("base64");
    assert!(!contains(&all_bytes(&cli.data), &raw), "the secret's bytes are on disk");

    cli.ok(&["webhook", "remove", &id]);
    let list = cli.json(&["webhook", "list", "--json"]);
    assert_eq!(list.as_array().expect("list").len(), 1);
    let kinds: Vec<String> = cli
        .json(&["audit", "--json"])
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .filter(|k| k.starts_with("webhook."))
        .collect();
    assert_eq!(kinds, ["webhook.added", "webhook.added", "webhook.removed"]);

    // The index is a cache of the log: rebuilt from it, the webhooks are the same.
    cli.ok(&["audit", "verify"]);
    cli.ok(&["rebuild"]);
    assert_eq!(cli.json(&["webhook", "list", "--json"]), list);
}

#[test]
fn bad_webhooks_are_refused_naming_what_is_wrong_and_change_nothing() {
    let cli = Cli::init();
    let before = event_count(&cli);
    for (args, says) in [
        (
            vec!["ftp://127.0.0.1/x", "--event", "key.created"],
            "https:// or http://",
        ),
        (vec!["https://-bad-/x", "--event", "key.created"], "an https host"),
        (vec!["http://u:p@example.com/x", "--event", "key.created"], "host"),
        (vec!["http://example.com:0/x", "--event", "key.created"], "port"),
        (
            vec!["http://example.com/x", "--event", "webhook.attempt"],
            "never delivered",
        ),
        (vec!["http://example.com/x", "--event", "Key Created"], "event kind"),
        (vec!["http://example.com/x"], "--event"),
    ] {
        let run = cli.run(&[&["webhook", "add"][..], &args].concat());
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?} should say {says}: {run:?}");
    }
    let run = cli.run(&["webhook", "remove", "wh_0123456789abcdef"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("no webhook wh_0123456789abcdef"), "{run:?}");
    let run = cli.run(&["webhook", "remove", "nonsense"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("wh_"), "{run:?}");
    assert_eq!(event_count(&cli), before, "a refusal wrote nothing");
    assert_eq!(cli.json(&["webhook", "list", "--json"]), json!([]));
}

#[test]
fn the_sidecar_adds_lists_and_removes_webhooks_and_the_cli_goes_through_it() {
    let (cli, admin) = Cli::init_with_admin();
    let sidecar = Sidecar::start(&cli);
    let auth = format!("Bearer {admin}");
    let call = |method: &str, path: &str, body: Option<&Value>| {
        http(sidecar.addr, method, path, Some(&auth), body).expect("an answer")
    };

    let added = call(
        "POST",
        "/v1/webhooks",
        Some(&json!({ "url": "http://127.0.0.1:9/hook", "events": ["key.revoked", "budget.threshold"] })),
    );
    assert_eq!(added.status, 201, "{:?}", added.body);
    let data = &added.body["data"];
    let id = data["id"].as_str().expect("id").to_string();
    assert!(data["secret"].as_str().expect("secret").starts_with("whsec_"));
    assert_eq!(data["events"], json!(["key.revoked", "budget.threshold"]));
    // The CLI, through the server's socket, sees it.
    let through = cli.json(&["webhook", "list", "--json"]);
    assert_eq!(through[0]["id"], id.as_str());

    let listed = call("GET", "/v1/webhooks", None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    assert!(listed.body["data"][0].get("secret").is_none(), "{:?}", listed.body);

    for (body, status) in [
        (json!({ "url": "ftp://x", "events": ["key.created"] }), 400),
        (json!({ "url": "http://x/", "events": [] }), 400),
        (
            json!({ "url": "http://x/", "events": ["key.created"], "extra": 1 }),
            400,
        ),
    ] {
        let reply = call("POST", "/v1/webhooks", Some(&body));
        assert_eq!(reply.status, status, "{body}: {:?}", reply.body);
    }
    assert_eq!(
        call("GET", "/v1/webhooks", None).body["data"]
            .as_array()
            .expect("list")
            .len(),
        1
    );

    let removed = call("DELETE", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    assert_eq!(removed.body["data"]["removed"], id.as_str());
    let again = call("DELETE", &format!("/v1/webhooks/{id}"), None);
    assert_eq!((again.status, &again.body["error"]["code"]), (404, &json!("NOT_FOUND")));
    assert_eq!(call("DELETE", "/v1/webhooks/nonsense", None).status, 400);
    let none = http(sidecar.addr, "GET", "/v1/webhooks", None, None).expect("an answer");
    assert_eq!(none.status, 401);
    assert_eq!(cli.json(&["webhook", "list", "--json"]), json!([]));
}
