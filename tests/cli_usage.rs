//! `credstore usage` (a table with a bar per row, `--json`, `--csv`), the same through a
//! running server's socket, and `GET /v1/usage` for admin keys (DESIGN.md, "Usage and the
//! customers' dashboard").

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cli, Sidecar, http};

/// Creates a key and returns (id, key).
fn key(cli: &Cli, name: &str) -> (String, String) {
    let created = cli.json(&["create", "--name", name, "--json"]);
    (
        created["id"].as_str().expect("id").to_string(),
        created["key"].as_str().expect("key").to_string(),
    )
}

#[test]
fn usage_prints_a_table_with_bars_json_and_csv() {
    let cli = Cli::init();
    let (id, k) = key(&cli, "shop");
    for _ in 0..3 {
        cli.ok(&["verify", &k]);
    }
    cli.run(&["verify", "sk_live_garbage"]);

    let doc = cli.json(&["usage", &id, "--by", "hour", "--since", "2h", "--json"]);
    assert_eq!(doc["by"], "hour");
    assert_eq!(doc["total"]["valid"], 3);
    assert_eq!(doc["total"]["spent"], 3);
    let buckets = doc["buckets"].as_array().expect("buckets");
    assert!((2..=3).contains(&buckets.len()), "{doc}");
    assert_eq!(buckets.last().expect("bucket")["valid"], 3);
    assert!(buckets[..buckets.len() - 1].iter().all(|b| b["valid"] == 0));

    let all = cli.json(&["usage", "--all", "--by", "day", "--since", "1d", "--json"]);
    assert_eq!(all["total"]["valid"], 3);
    assert_eq!(all["total"]["denied"]["MALFORMED"], 1);

    let csv = cli
        .ok(&["usage", "--all", "--by", "hour", "--since", "1h", "--csv"])
        .stdout;
    let mut lines = csv.lines();
    let header = lines.next().expect("header");
    assert!(
        header.starts_with("start,valid,spent,denied,MALFORMED,NOT_FOUND,"),
        "{header}"
    );
    let last = lines.last().expect("a row");
    let cells: Vec<&str> = last.split(',').collect();
    assert_eq!(cells.len(), header.split(',').count());
    assert_eq!(&cells[1..5], ["3", "3", "1", "1"], "{csv}");

    // A terminal's table has a bar per row; a pipe's has none.
    let plain = cli.ok(&["usage", &id, "--by", "hour", "--since", "2h"]).stdout;
    assert!(
        plain.contains("Total") && plain.contains(&format!("key {id}")),
        "{plain}"
    );
    assert!(!plain.contains('█'), "{plain}");
    let wide = cli
        .command(&["usage", &id, "--by", "hour", "--since", "2h"])
        .env("COLUMNS", "120")
        .output()
        .expect("run");
    let wide = String::from_utf8(wide.stdout).expect("utf-8");
    assert!(wide.contains(&"█".repeat(30)), "the busiest row fills its bar:\n{wide}");

    // Bad input: a clear message, exit 2, nothing printed on stdout.
    for (args, says) in [
        (
            vec!["usage", "--by", "minute", "--since", "3d"],
            "minute buckets are kept for 48 hours",
        ),
        (vec!["usage", "--by", "week"], "week"),
        (vec!["usage", "--since", "soon"], "soon"),
        (vec!["usage", "key_nonsense"], "invalid key id"),
        (vec!["usage", "--owner", "a", "--project", "b"], "cannot be used with"),
    ] {
        let run = cli.run(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
}

#[test]
fn usage_goes_through_a_running_server_and_over_http_for_admin_keys() {
    let (cli, admin) = Cli::init_with_admin();
    let (id, k) = key(&cli, "shop");
    let server = Sidecar::start(&cli);
    for _ in 0..2 {
        cli.ok(&["verify", &k]);
    }
    // The server folds counts into buckets once per flush interval (1 s): wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let through = loop {
        let run = cli.run(&["usage", &id, "--by", "minute", "--json"]);
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(!run.stderr.contains("locked"), "{run:?}");
        let doc = run.json();
        if doc["total"]["valid"] == 2 || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(through["total"]["valid"], 2, "{through}");

    let bearer = format!("Bearer {admin}");
    let get = |path: &str, auth: Option<&str>| http(server.addr, "GET", path, auth, None).expect("answer");
    let reply = get(&format!("/v1/usage?key={id}&by=minute&since=1h"), Some(&bearer));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["success"], true);
    let data = &reply.body["data"];
    // The same document as `usage --json`.
    let fields = |doc: &serde_json::Value| doc.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(fields(data), fields(&through), "{data}");
    assert!(data["anomalies"].is_array(), "{data}");
    assert_eq!(data["by"], "minute");
    assert_eq!(data["total"]["valid"], 2);
    assert!(
        matches!(data["buckets"].as_array().map(Vec::len), Some(60 | 61)),
        "{data}"
    );
    let all = get("/v1/usage?by=day", Some(&bearer));
    assert_eq!(all.body["data"]["total"]["valid"], 2, "{all:?}");

    for (bad, status, says) in [
        ("/v1/usage?by=week", 400, "week"),
        ("/v1/usage?by=minute&since=3d", 400, "kept for 48 hours"),
        ("/v1/usage?key=nonsense", 400, "invalid key id"),
        ("/v1/usage?owner=a&project=b", 400, "at most one"),
        ("/v1/usage?colour=red", 400, "colour"),
        ("/v1/usage?key=key_0000000000000000000000", 404, "no key"),
    ] {
        let reply = get(bad, Some(&bearer));
        assert_eq!(reply.status, status, "{bad}: {reply:?}");
        assert_eq!(reply.body["success"], false, "{bad}: {reply:?}");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{bad}: {reply:?}");
    }
    assert_eq!(get("/v1/usage", None).status, 401);
    assert_eq!(get("/v1/usage", Some(&format!("Bearer {k}"))).status, 403);
    drop(server);
}

#[test]
fn after_a_kill_a_rebuild_counts_exactly_the_uses_the_log_holds() {
    let cli = Cli::init();
    let (id, k) = key(&cli, "busy");
    let server = Sidecar::start(&cli);
    let body = serde_json::json!({ "key": k });
    let mut valid = 0;
    for i in 0..200 {
        let presented = if i % 5 == 0 {
            serde_json::json!({ "key": "sk_live_garbage" })
        } else {
            body.clone()
        };
        let reply = http(server.addr, "POST", "/v1/keys.verify", None, Some(&presented)).expect("answer");
        valid += u64::from(reply.body["data"]["code"] == "VALID");
    }
    assert_eq!(valid, 160);
    // Killed at once: the uses of the last flush interval may not be in the log.
    server.kill_after(Duration::from_millis(1_500));
    cli.ok(&["rebuild"]);
    let logged = cli
        .json(&["audit", "--key", &id, "--kind", "key.used", "--json"])
        .as_array()
        .map_or(0, Vec::len);
    let doc = cli.json(&["usage", &id, "--by", "hour", "--since", "2h", "--json"]);
    assert_eq!(doc["total"]["valid"], logged, "every logged use, and only those");
    assert!(logged > 0 && logged <= 160, "{logged}");
}
