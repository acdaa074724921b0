//! The CLI surfaces of rate limits, budgets and plans, and that one process's `verify`
//! and the next share one rate limit and one budget.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::process::{Command, Output};

fn run(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CREDSTORE_PEPPER")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn limits_and_budgets_are_shared_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(&data, &["init"]).status.success());
    let created = run(
        &data,
        &[
            "create",
            "--name",
            "metered",
            "--rate-limit",
            "3/1h:hourly",
            "--budget",
            "5",
            "--budget-period",
            "daily",
            "--json",
        ],
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = json(&created)["key"].as_str().unwrap().to_string();

    let first = run(&data, &["verify", &key, "--cost", "2", "--json"]);
    assert_eq!(first.status.code(), Some(0));
    let doc = json(&first);
    assert_eq!(doc["code"], "VALID");
    assert_eq!(doc["ratelimits"][0]["name"], "hourly");
    assert_eq!(doc["ratelimits"][0]["limit"], 3);
    assert_eq!(doc["ratelimits"][0]["remaining"], 2);
    // Times are RFC 3339 text with milliseconds, the reset and the period end alike.
    let reset: jiff::Timestamp = doc["ratelimits"][0]["reset"].as_str().unwrap().parse().unwrap();
    assert!(reset.as_second() > 1_700_000_000);
    assert_eq!(doc["budget"]["cap"], 5);
    assert_eq!(doc["budget"]["spent"], 2);
    let period_end: jiff::Timestamp = doc["budget"]["period_end"].as_str().unwrap().parse().unwrap();
    assert!(period_end > jiff::Timestamp::now());

    // The next process sees the same budget and limit.
    let second = json(&run(&data, &["verify", &key, "--cost", "2", "--json"]));
    assert_eq!(second["budget"]["spent"], 4);
    assert_eq!(second["ratelimits"][0]["remaining"], 1);
    let exhausted = run(&data, &["verify", &key, "--cost", "2", "--json"]);
    assert_eq!(exhausted.status.code(), Some(1));
    let doc = json(&exhausted);
    assert_eq!(doc["code"], "BUDGET_EXHAUSTED");
    assert_eq!(doc["status"], 402);
    assert_eq!(doc["budget"]["spent"], 4);
    assert_eq!(
        doc["ratelimits"][0]["remaining"], 1,
        "a denied request consumes nothing"
    );
    assert_eq!(
        json(&run(&data, &["verify", &key, "--cost", "1", "--json"]))["code"],
        "VALID"
    );
    let limited = run(&data, &["verify", &key, "--cost", "0", "--json"]);
    assert_eq!(limited.status.code(), Some(1));
    let doc = json(&limited);
    assert_eq!(doc["code"], "RATE_LIMITED");
    assert_eq!(doc["status"], 429);
    assert!(doc["retry_after"].as_u64().unwrap() > 0);
}

#[test]
fn plans_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(&data, &["init"]).status.success());
    let set = run(
        &data,
        &["plan", "set", "pro", "--rate-limit", "2/1m:minute", "--budget", "100"],
    );
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let plans = json(&run(&data, &["plan", "list", "--json"]));
    assert_eq!(plans[0]["name"], "pro");
    let created = json(&run(&data, &["create", "--name", "on pro", "--plan", "pro", "--json"]));
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(run(&data, &["verify", &key]).status.code(), Some(0));
    }
    assert_eq!(run(&data, &["verify", &key]).status.code(), Some(1));
    // Raising the plan lets the key through without touching the key.
    assert!(
        run(&data, &["plan", "set", "pro", "--rate-limit", "5/1m:minute"])
            .status
            .success()
    );
    assert_eq!(run(&data, &["verify", &key]).status.code(), Some(0));
    // A plan in use cannot be deleted; an unknown plan is bad input.
    assert_eq!(run(&data, &["plan", "delete", "pro"]).status.code(), Some(2));
    assert_eq!(
        run(&data, &["create", "--name", "x", "--plan", "nope"]).status.code(),
        Some(2)
    );
    assert!(run(&data, &["update", &id, "--no-plan"]).status.success());
    assert!(run(&data, &["plan", "delete", "pro"]).status.success());
}

#[test]
fn bad_limit_flags_are_usage_errors_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(&data, &["init"]).status.success());
    for args in [
        &["create", "--name", "x", "--rate-limit", "0/1m"][..],
        &["create", "--name", "x", "--rate-limit", "5/0s"],
        &["create", "--name", "x", "--rate-limit", "5/fortnight"],
        &["create", "--name", "x", "--budget", "-3"],
        &["create", "--name", "x", "--budget", "99999999999999999999"],
        &["create", "--name", "x", "--budget", "17592186044416"],
        &["create", "--name", "x", "--budget", "5", "--budget-period", "weekly"],
        &["create", "--name", "x", "--plan", "missing"],
    ] {
        let out = run(&data, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
    let list = json(&run(&data, &["list", "--json"]));
    // Only the admin key `init` issues.
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "bootstrap admin");
}

/// Issue 17, item 3: `verify --cost 7` on a budgeted key, `rotate`, and the new key showed
/// spent 0 for the same period. The new key keeps the budget and the rate limit's state.
#[test]
fn rotate_keeps_the_spend_and_the_requests_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(&data, &["init"]).status.success());
    let created = run(
        &data,
        &[
            "create",
            "--name",
            "metered",
            "--rate-limit",
            "5/1h:hourly",
            "--budget",
            "100",
            "--json",
        ],
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created = json(&created);
    let (key, id) = (created["key"].as_str().unwrap(), created["id"].as_str().unwrap());
    let charged = run(&data, &["verify", key, "--cost", "7", "--json"]);
    assert_eq!(json(&charged)["budget"]["spent"], 7);
    let rotated = run(&data, &["rotate", id, "--json"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let new = json(&rotated)["key"].as_str().unwrap().to_string();
    let checked = run(&data, &["verify", &new, "--cost", "0", "--json"]);
    assert_eq!(checked.status.code(), Some(0));
    let doc = json(&checked);
    assert_eq!(doc["budget"]["spent"], 7, "{doc}");
    assert_eq!(
        doc["ratelimits"][0]["remaining"], 3,
        "one request before, this one now: {doc}"
    );
}
