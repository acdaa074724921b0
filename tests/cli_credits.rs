//! `credstore credits add|set`: a budget's credit this period, through the real binary:
//! what is left moves as asked, `verify` spends against it, each change is an audit event
//! with its reason, and bad requests change nothing.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;
use common::Cli;

fn created(cli: &Cli, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create", "--name", "metered", "--json"];
    args.extend_from_slice(extra);
    let v = cli.json(&args);
    (
        v["id"].as_str().expect("id").to_string(),
        v["key"].as_str().expect("key").to_string(),
    )
}

#[test]
fn credits_move_what_is_left_and_are_audited() {
    let cli = Cli::init();
    let (id, key) = created(&cli, &["--budget", "100"]);
    let added = cli.json(&["credits", "add", &id, "50", "--reason", "ticket 7", "--json"]);
    assert_eq!(
        (added["cap"].as_u64(), added["remaining"].as_u64()),
        (Some(150), Some(150))
    );
    // Spend 120 of the 150.
    let spent = cli.ok(&["verify", &key, "--cost", "120", "--json"]).json();
    assert_eq!(spent["budget"]["remaining"], 30, "{spent}");
    let taken = cli.json(&["credits", "add", &id, "-20", "--json"]);
    assert_eq!(taken["remaining"], 10);
    let set = cli.ok(&["credits", "set", &id, "70"]);
    assert!(set.stdout.contains("70 left this period"), "{}", set.stdout);
    let refused = cli.run(&["verify", &key, "--cost", "71"]);
    assert_eq!(refused.code, Some(1), "more than is left is refused: {refused:?}");
    cli.ok(&["verify", &key, "--cost", "70"]);

    let events = cli.json(&["audit", "--kind", "budget.credited", "--json"]);
    let events = events.as_array().expect("array");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["details"]["reason"], "ticket 7");
    assert_eq!(events[1]["details"]["amount"], -20);
    assert_eq!(events[2]["details"]["change"], "set");
}

#[test]
fn credits_for_a_key_without_a_budget_or_an_unknown_key_change_nothing() {
    let cli = Cli::init();
    let (id, _) = created(&cli, &[]);
    let before = cli.ok(&["audit", "export"]).stdout;
    let no_budget = cli.run(&["credits", "add", &id, "5"]);
    assert_eq!(no_budget.code, Some(2), "{no_budget:?}");
    assert!(no_budget.stderr.contains("has no budget"), "{no_budget:?}");
    let unknown = cli.run(&["credits", "set", "key_0000000000000000000000", "5"]);
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    let bad = cli.run(&["credits", "set", &id, "-5"]);
    assert_eq!(bad.code, Some(2), "a negative remaining is a usage error: {bad:?}");
    assert_eq!(cli.ok(&["audit", "export"]).stdout, before, "nothing was written");
}

#[test]
fn the_sidecar_gives_credit_as_the_cli_does() {
    let (cli, admin) = Cli::init_with_admin();
    let (id, _) = created(&cli, &["--budget", "100"]);
    let (plain, _) = created(&cli, &[]);
    let sidecar = common::Sidecar::start(&cli);
    let auth = format!("Bearer {admin}");
    let post = |id: &str, body: serde_json::Value| {
        common::http(
            sidecar.addr,
            "POST",
            &format!("/v1/api-keys/{id}/credits"),
            Some(&auth),
            Some(&body),
        )
        .expect("an answer")
    };
    let added = post(&id, serde_json::json!({ "add": 25, "reason": "goodwill" }));
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.body["data"]["remaining"], 125);
    let set = post(&id, serde_json::json!({ "set": 10 }));
    assert_eq!(
        (
            set.body["data"]["remaining"].as_u64(),
            set.body["data"]["credit"].as_i64()
        ),
        (Some(10), Some(-90))
    );
    let both = post(&id, serde_json::json!({ "add": 1, "set": 1 }));
    assert_eq!(both.status, 400, "{:?}", both.body);
    let no_budget = post(&plain, serde_json::json!({ "add": 1 }));
    assert_eq!(
        (no_budget.status, &no_budget.body["error"]["code"]),
        (409, &serde_json::json!("CONFLICT"))
    );
    let unknown = post("key_0000000000000000000000", serde_json::json!({ "add": 1 }));
    assert_eq!(unknown.status, 404);
}
