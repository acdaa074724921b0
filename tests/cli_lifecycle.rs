//! `credstore policy set|show|clear` through the real binary, on the store itself and
//! through a running server (DATA/serve.sock): settings merge per scope, keys created
//! afterwards get the max lifetime, a longer expiry is refused (exit 2, nothing written),
//! a rotation's grace is raised and said so, and bad input changes nothing.

mod common;

use common::{Cli, Sidecar};
use serde_json::json;

#[test]
fn policy_set_show_and_clear_and_what_they_do_to_create_and_rotate() {
    let cli = Cli::init();
    let empty = cli.ok(&["policy", "show"]).stdout;
    assert!(empty.contains("No lifecycle policy"), "{empty}");
    assert_eq!(cli.json(&["policy", "show", "--json"]), json!({ "policies": [] }));

    let set = cli.ok(&["policy", "set", "--max-lifetime", "366d"]).stdout;
    assert!(set.contains("the store") && set.contains("max lifetime 366d"), "{set}");
    // A second set of the same scope keeps what it does not name.
    let merged = cli.json(&["policy", "set", "--min-grace", "1h", "--json"]);
    assert_eq!(
        merged,
        json!({ "scope": "store", "max_lifetime": "366d", "unused_expiry": null, "min_grace": "1h" })
    );
    cli.ok(&[
        "policy",
        "set",
        "--project",
        "web",
        "--max-lifetime",
        "30d",
        "--unused-expiry",
        "90d",
    ]);
    let shown = cli.json(&["policy", "show", "--json"]);
    let scopes: Vec<&str> = shown["policies"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["scope"].as_str().expect("scope"))
        .collect();
    assert_eq!(scopes, ["store", "project/web"]);

    // Create: no expiry gets the max lifetime of the most specific scope.
    let web = cli.json(&["create", "--name", "w", "--project", "web", "--json"]);
    let store_key = cli.json(&["create", "--name", "s", "--json"]);
    let days = |v: &serde_json::Value| {
        let at = |f: &str| v[f].as_str().expect(f).parse::<jiff::Timestamp>().expect("a time");
        (at("expires_at").as_second() - at("created_at").as_second()) / 86_400
    };
    assert_eq!((days(&web), days(&store_key)), (30, 366));
    // Beyond it: refused, nothing written.
    let before = cli.ok(&["list", "--json"]).stdout;
    let refused = cli.run(&["create", "--name", "long", "--project", "web", "--expires-in", "40d"]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("30d") && refused.stderr.contains("web"),
        "{refused:?}"
    );
    assert_eq!(cli.ok(&["list", "--json"]).stdout, before);

    // Rotate: the grace is raised to the least grace, and the output says so.
    let id = store_key["id"].as_str().expect("id");
    let rotated = cli.ok(&["rotate", id]).stdout;
    assert!(rotated.contains("raised to 1h"), "{rotated}");
    let new_id = cli
        .json(&["list", "--json"])
        .as_array()
        .expect("keys")
        .last()
        .expect("a key")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let again = cli.json(&["rotate", &new_id, "--grace", "2h", "--json"]);
    assert_eq!(again["grace_raised_to"], serde_json::Value::Null);

    // Clear, and clear again: there is none.
    cli.ok(&["policy", "clear", "--project", "web"]);
    let none = cli.run(&["policy", "clear", "--project", "web"]);
    assert_eq!(none.code, Some(2), "{none:?}");
    assert!(none.stderr.contains("no lifecycle policy"), "{none:?}");
}

#[test]
fn bad_policy_input_is_refused_and_changes_nothing() {
    let cli = Cli::init();
    let before = cli.json(&["policy", "show", "--json"]);
    for args in [
        &["policy", "set"][..],
        &["policy", "set", "--max-lifetime", "0d"],
        &["policy", "set", "--max-lifetime", "soon"],
        &[
            "policy",
            "set",
            "--project",
            "web",
            "--format",
            "sk_live_",
            "--min-grace",
            "1h",
        ],
        &["policy", "set", "--format", "no-prefix", "--min-grace", "1h"],
        &["policy", "set", "--unused-expiry", "40000d"],
    ] {
        let run = cli.run(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
    }
    assert_eq!(cli.json(&["policy", "show", "--json"]), before);
}

#[test]
fn policy_commands_work_through_a_running_server() {
    let cli = Cli::init();
    let server = Sidecar::start(&cli);
    cli.ok(&["policy", "set", "--format", "sk_live_", "--max-lifetime", "7d"]);
    let shown = cli.json(&["policy", "show", "--json"]);
    assert_eq!(shown["policies"][0]["scope"], "format/sk_live_");
    let created = cli.json(&["create", "--name", "k", "--json"]);
    assert!(created["expires_at"].is_string(), "{created}");
    cli.ok(&["policy", "clear", "--format", "sk_live_"]);
    assert_eq!(cli.json(&["policy", "show", "--json"]), json!({ "policies": [] }));
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn the_policy_api_sets_shows_and_clears_and_an_http_rotation_says_its_grace_was_raised() {
    let (cli, admin) = Cli::init_with_admin();
    let created = cli.json(&["create", "--name", "svc", "--json"]);
    let server = Sidecar::start(&cli);
    let bearer = format!("Bearer {admin}");
    let call = |method: &str, path: &str, body: Option<serde_json::Value>| {
        common::http(server.addr, method, path, Some(&bearer), body.as_ref()).expect("an answer")
    };
    let set = call(
        "PUT",
        "/v1/policy",
        Some(json!({ "min_grace": "1h", "max_lifetime": "30d" })),
    );
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["data"]["scope"], "store");
    let bad = call("PUT", "/v1/policy", Some(json!({ "max_lifetime": "forever" })));
    assert_eq!(
        (bad.status, bad.body["error"]["code"].as_str()),
        (400, Some("INVALID_INPUT"))
    );
    let unknown_field = call("PUT", "/v1/policy", Some(json!({ "max_lifetimes": "1d" })));
    assert_eq!(unknown_field.status, 400);
    let shown = call("GET", "/v1/policy", None);
    assert_eq!(
        shown.body["data"]["policies"][0]["max_lifetime"], "30d",
        "{:?}",
        shown.body
    );

    let id = created["id"].as_str().expect("id");
    let rotated = call("POST", &format!("/v1/api-keys/{id}/rotate"), None);
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["data"]["grace_raised_to"], "1h");

    let cleared = call("DELETE", "/v1/policy", None);
    assert_eq!(cleared.body["data"], json!({ "scope": "store", "cleared": true }));
    let again = call("DELETE", "/v1/policy", None);
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(call("GET", "/v1/policy", None).body["data"], json!({ "policies": [] }));
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}
