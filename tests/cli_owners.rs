//! `credstore owner set|list|show|revoke-keys|disable-keys`, `create --owner`, `list
//! --owner` and `credits` on an owner, through the real binary (with `--json`).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;
use common::Cli;
use serde_json::json;

fn created(cli: &Cli, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create", "--name", name, "--json"];
    args.extend_from_slice(extra);
    let v = cli.json(&args);
    (
        v["id"].as_str().expect("id").to_string(),
        v["key"].as_str().expect("key").to_string(),
    )
}

#[test]
fn owners_are_set_listed_shown_and_their_keys_share_limits() {
    let cli = Cli::init();
    let set = cli.json(&[
        "owner",
        "set",
        "acme",
        "--name",
        "Acme",
        "--meta",
        "tier=gold",
        "--rate-limit",
        "3/1h",
        "--budget",
        "10",
        "--budget-period",
        "total",
        "--json",
    ]);
    assert_eq!(set["id"], "acme");
    assert_eq!(set["metadata"], json!({ "tier": "gold" }));
    assert_eq!(set["budget"]["cap"], 10);
    assert_eq!(set["budget_state"]["remaining"], 10);
    // A change keeps what it does not name.
    let renamed = cli.json(&["owner", "set", "acme", "--name", "Acme Corp", "--json"]);
    assert_eq!(renamed["rate_limits"][0]["limit"], 3);
    assert_eq!(renamed["metadata"]["tier"], "gold");
    let listed = cli.json(&["owner", "list", "--json"]);
    assert_eq!(listed.as_array().expect("array").len(), 1);
    assert_eq!(listed[0]["name"], "Acme Corp");
    let text = cli.ok(&["owner", "list"]);
    assert!(
        text.stdout.contains("acme") && text.stdout.contains("3/1h"),
        "{}",
        text.stdout
    );

    let (id1, key1) = created(&cli, "k1", &["--owner", "acme"]);
    let (_, key2) = created(&cli, "k2", &["--owner", "acme"]);
    let (plain, _) = created(&cli, "plain", &[]);
    let shown = cli.json(&["show", &id1, "--json"]);
    assert_eq!(shown["owner"], "acme");
    assert_eq!(cli.json(&["show", &plain, "--json"])["owner"], json!(null));
    let mine = cli.json(&["list", "--owner", "acme", "--json"]);
    let names: Vec<&str> = mine
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["k1", "k2"]);

    // The decision names the owner; the owner's 3 per hour hold over both keys.
    let d = cli.ok(&["verify", &key1, "--json"]).json();
    assert_eq!(d["owner"]["id"], "acme");
    assert_eq!(d["owner"]["name"], "Acme Corp");
    assert_eq!(d["owner"]["metadata"]["tier"], "gold");
    assert_eq!(d["owner"]["budget"]["spent"], 1);
    assert_eq!(d["ratelimits"][0]["name"], "owner:1h");
    cli.ok(&["verify", &key2]);
    cli.ok(&["verify", &key1]);
    let refused = cli.run(&["verify", &key2, "--json"]);
    assert_eq!(refused.code, Some(1));
    assert_eq!(refused.json()["code"], "RATE_LIMITED");
    let text = cli.run(&["verify", &key1]);
    assert!(text.stdout.contains("owner=acme"), "{}", text.stdout);

    let shown = cli.json(&["owner", "show", "acme", "--json"]);
    assert_eq!(shown["budget_state"]["spent"], 3);
    // Credit on the owner's budget: `credits` takes an owner id too.
    let credit = cli.json(&["credits", "add", "acme", "5", "--reason", "goodwill", "--json"]);
    assert_eq!(
        (credit["owner"].as_str(), credit["cap"].as_u64()),
        (Some("acme"), Some(15))
    );
}

#[test]
fn an_owners_keys_are_revoked_and_disabled_in_one_operation() {
    let cli = Cli::init();
    cli.ok(&["owner", "set", "acme"]);
    let (_, key1) = created(&cli, "k1", &["--owner", "acme"]);
    let (_, key2) = created(&cli, "k2", &["--owner", "acme"]);
    let (_, plain) = created(&cli, "plain", &[]);
    let disabled = cli.json(&["owner", "disable-keys", "acme", "--json"]);
    assert_eq!(disabled["key_ids"].as_array().expect("array").len(), 2);
    assert_eq!(cli.run(&["verify", &key1, "--json"]).json()["code"], "DISABLED");
    let revoked = cli.json(&["owner", "revoke-keys", "acme", "--reason", "churned", "--yes", "--json"]);
    assert_eq!(revoked["owner"], "acme");
    assert_eq!(revoked["key_ids"].as_array().expect("array").len(), 2);
    for key in [&key1, &key2] {
        assert_eq!(cli.run(&["verify", key, "--json"]).json()["code"], "REVOKED");
    }
    cli.ok(&["verify", &plain]);
    let events = cli.json(&["audit", "--json"]);
    let kinds: Vec<String> = events
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .filter(|k| k.starts_with("owner.") || k == "key.revoked" || k == "key.disabled")
        .collect();
    assert_eq!(kinds, ["owner.set", "owner.keys_disabled", "owner.keys_revoked"]);
    let text = cli.ok(&["owner", "revoke-keys", "acme", "--yes"]);
    assert!(text.stdout.contains("0 key(s)"), "{}", text.stdout);
}

#[test]
fn bad_owner_commands_are_refused_and_write_nothing() {
    let cli = Cli::init();
    let before = cli.ok(&["audit", "--json"]).stdout;
    for args in [
        &["owner", "set", "a/b"][..],
        &["owner", "set", "key_0000000000000000000001"],
        &["owner", "set", "acme", "--name", ""],
        &["owner", "set", "acme", "--rate-limit", "0/1m"],
        &["owner", "show", "nobody"],
        &["owner", "revoke-keys", "nobody", "--yes"],
        &["owner", "disable-keys", "nobody"],
        &["create", "--name", "k", "--owner", "nobody"],
        &["list", "--owner", "nobody"],
        &["credits", "add", "nobody", "5"],
    ] {
        let run = cli.run(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(!run.stderr.trim().is_empty(), "{args:?}: says why");
    }
    assert_eq!(cli.ok(&["audit", "--json"]).stdout, before, "nothing was written");
}
